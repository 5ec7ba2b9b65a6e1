"""Engine scenarios for live configuration: reloads and interfaces over time.

Events in, kernel operations out; no root, no kernel.  Each test here
started as the failing reproduction of a bug found end to end
(tests/test_e2e_reload.py).
"""

from __future__ import annotations

from ipaddress import ip_address

from smcroute.engine.core import Engine, Link
from smcroute.engine.ops import AddMfc, AddVif, DelMfc, DelVif
from smcroute.model import Config, MRoute

M = 0x1003  # UP | BROADCAST | MULTICAST
A = ip_address


def route(iif: str, src: str, grp: str, *oifs: str) -> MRoute:
    return MRoute(iif, A(src), 32, A(grp), 32, tuple(oifs))


def test_renamed_interface_gives_back_its_vif() -> None:
    """`ip link set a2 name z2`: the device (and the kernel's VIF on it) stays.

    The engine must delete that VIF itself -- the kernel only removes VIFs of
    deleted devices -- or its number stays taken in the kernel while the engine
    hands it out again: the re-add fails with EADDRINUSE, and any entry written
    for the new owner of the number would forward to the renamed device.
    """
    e = Engine(families=(4,))
    e.set_links([Link(2, "a1", M), Link(3, "a2", M), Link(4, "a3", M)])
    e.load_config(Config(routes=[route("a1", "10.0.0.1", "225.1.1.1", "a2", "a3")]))
    assert e.vif_of(4, "a2") == 1
    ops = e.set_links([Link(2, "a1", M), Link(3, "z2", M), Link(4, "a3", M)])
    rewrite = AddMfc(4, A("10.0.0.1"), A("225.1.1.1"), 0, ((2, 1),))
    assert ops == [rewrite, DelVif(4, 1, 3, "a2")]  # entry first, then the VIF
    # renamed back: VIF 1 is free in the kernel again and is re-added
    ops = e.set_links([Link(2, "a1", M), Link(3, "a2", M), Link(4, "a3", M)])
    assert ops == [
        AddVif(4, 1, 3, 1, "a2"),
        AddMfc(4, A("10.0.0.1"), A("225.1.1.1"), 0, ((1, 1), (2, 1))),
    ]


def test_renamed_to_a_configured_name_moves_the_vif() -> None:
    """a2 renamed to a4 (named by the config): one VIF per device, never two."""
    e = Engine(families=(4,))
    e.set_links([Link(2, "a1", M), Link(3, "a2", M)])
    r1 = route("a1", "10.0.0.1", "225.1.1.1", "a2")
    r2 = route("a1", "10.0.0.2", "225.1.1.2", "a4")
    e.load_config(Config(routes=[r1, r2]))
    ops = e.set_links([Link(2, "a1", M), Link(3, "a4", M)])
    vif_ops = [o for o in ops if isinstance(o, AddVif | DelVif)]
    assert vif_ops == [DelVif(4, 1, 3, "a2"), AddVif(4, 1, 3, 1, "a4")]
    # r1 lost its only OIF (pending): its entry is rewritten without outputs
    # (kept, with its inbound interface) before VIF 1 changes hands
    assert ops.index(AddMfc(4, A("10.0.0.1"), A("225.1.1.1"), 0, ())) < ops.index(vif_ops[0])
    assert ops[-1] == AddMfc(4, A("10.0.0.2"), A("225.1.1.2"), 0, ((1, 1),))


def test_only_outbound_interface_vanishes_and_returns() -> None:
    """The route stays in the kernel with its inbound interface and no outputs
    (as the original does), and gets its OIF back when the link returns, with
    a new ifindex or the same one (deleted and re-created between two scans)."""
    e = Engine(families=(4,))
    e.set_links([Link(2, "a1", M), Link(3, "a2", M), Link(4, "a3", M)])
    r1 = route("a1", "10.0.0.1", "225.1.1.1", "a2")
    r2 = route("a1", "10.0.0.2", "225.1.1.2", "a2", "a3")
    e.load_config(Config(routes=[r1, r2]))
    ops = e.set_links([Link(2, "a1", M), Link(4, "a3", M)])
    assert ops == [
        AddMfc(4, A("10.0.0.1"), A("225.1.1.1"), 0, ()),
        AddMfc(4, A("10.0.0.2"), A("225.1.1.2"), 0, ((2, 1),)),
    ]  # no DelVif: the kernel dropped the deleted device's VIF itself
    assert e.routes and [r for r in e.pending()] == [r1, r2]
    ops = e.set_links([Link(2, "a1", M), Link(7, "a2", M), Link(4, "a3", M)])
    assert ops == [
        AddVif(4, 1, 7, 1, "a2"),
        AddMfc(4, A("10.0.0.1"), A("225.1.1.1"), 0, ((1, 1),)),
        AddMfc(4, A("10.0.0.2"), A("225.1.1.2"), 0, ((1, 1), (2, 1))),
    ]
    # deleted and re-created with the same ifindex before the next scan
    same = [Link(2, "a1", M), Link(7, "a2", M), Link(4, "a3", M)]
    assert e.set_links(same) == []
    ops = e.set_links(same, vanished=[7])
    assert AddVif(4, 1, 7, 1, "a2") in ops
    assert ops[-2:] == [
        AddMfc(4, A("10.0.0.1"), A("225.1.1.1"), 0, ((1, 1),)),
        AddMfc(4, A("10.0.0.2"), A("225.1.1.2"), 0, ((1, 1), (2, 1))),
    ]


def test_inbound_interface_vanishes_and_returns() -> None:
    e = Engine(families=(4,))
    e.set_links([Link(2, "a1", M), Link(3, "a2", M)])
    r1 = route("a1", "10.0.0.1", "225.1.1.1", "a2")
    e.load_config(Config(routes=[r1]))
    ops = e.set_links([Link(3, "a2", M)])
    assert ops == [DelMfc(4, A("10.0.0.1"), A("225.1.1.1"), 0)]  # no VIF, no entry
    assert e.routes and e.pending() == [r1]
    ops = e.set_links([Link(9, "a1", M), Link(3, "a2", M)])
    assert ops == [AddVif(4, 0, 9, 1, "a1"), AddMfc(4, A("10.0.0.1"), A("225.1.1.1"), 0, ((1, 1),))]


def test_reload_that_removes_most_routes_keeps_what_stays() -> None:
    """A reload that removes most entries makes the engine's containers anew
    (their memory back): everything that stays must stay, exactly, and the
    next changes must be the same differences as without that."""
    from smcroute.engine.ops import JoinGroup, LeaveGroup, UpcallKind
    from smcroute.model import MGroup

    e = Engine(families=(4,))
    e.set_links([Link(2, "a1", M), Link(3, "a2", M), Link(4, "a3", M)])
    many = [route("a1", f"10.0.{i >> 8}.{i & 255}", "225.1.1.1", "a2") for i in range(200)]
    keep = route("a1", "10.9.9.9", "225.9.9.9", "a2", "a3")
    tmpl = MRoute("a2", None, 0, A("225.7.0.0"), 16, ("a3",))
    join = MGroup("a1", None, 0, A("225.5.5.5"), 32)
    ops = e.load_config(Config(routes=[*many, keep, tmpl], groups=[join]))
    assert sum(isinstance(o, AddMfc) for o in ops) == 201
    learned = e.upcall(4, UpcallKind.NOCACHE, 1, A("10.1.1.1"), A("225.7.1.1"), 0.0)
    assert AddMfc(4, A("10.1.1.1"), A("225.7.1.1"), 1, ((2, 1),)) in learned
    vifs = {n: (v.vif, v.ifindex) for n, v in e.vifs[4].items()}

    ops = e.load_config(Config(routes=[keep, tmpl], groups=[join]))
    assert len(ops) == 200 and all(isinstance(o, DelMfc) for o in ops)
    assert {n: (v.vif, v.ifindex) for n, v in e.vifs[4].items()} == vifs
    assert list(e.routes.values()) == [keep, tmpl]
    assert set(e.mfc) == {(4, A("10.9.9.9"), A("225.9.9.9")), (4, A("10.1.1.1"), A("225.7.1.1"))}
    assert (4, A("10.1.1.1"), A("225.7.1.1")) in e.learned
    assert list(e.joins.values()) == ["a1"]
    # the next changes: only their differences, as before
    ops = e.set_links([Link(2, "a1", M), Link(3, "a2", M)])  # a3 is gone
    assert AddMfc(4, A("10.9.9.9"), A("225.9.9.9"), 0, ((1, 1),)) in ops
    ops = e.set_links([Link(2, "a1", M), Link(3, "a2", M), Link(4, "a3", M)])
    assert AddMfc(4, A("10.9.9.9"), A("225.9.9.9"), 0, ((1, 1), (2, 1))) in ops
    whole = MRoute(keep.iif, keep.source, 32, keep.group, 32, ())
    assert e.remove_route(whole) == [DelMfc(4, A("10.9.9.9"), A("225.9.9.9"), 0)]
    assert e.leave(join) == [LeaveGroup(4, 2, A("225.5.5.5"), None, "a1")]
    assert e.join(join) == [JoinGroup(4, 2, A("225.5.5.5"), None, "a1")]
    again = e.load_config(Config(routes=[*many, keep, tmpl], groups=[join]))
    want = [AddMfc(4, r.source, r.group, 0, ((1, 1),)) for r in many]
    want.append(AddMfc(4, A("10.9.9.9"), A("225.9.9.9"), 0, ((1, 1), (2, 1))))
    assert sorted(again, key=repr) == sorted(want, key=repr)


def test_compact_after_a_big_removal_keeps_the_state() -> None:
    """`compact()` (the daemon calls it once a reload removed most entries and
    its operations are freed) makes every container anew: same contents."""
    e = Engine(families=(4,))
    e.set_links([Link(2, "a1", M), Link(3, "a2", M), Link(4, "a3", M)])
    many = [route("a1", "10.0.0.1", f"225.1.{i // 256}.{i % 256}", "a2") for i in range(300)]
    keep = route("a1", "10.0.0.2", "225.9.9.9", "a3")
    e.load_config(Config(routes=[*many, keep]))
    ops = e.load_config(Config(routes=[keep]))
    assert sum(isinstance(op, DelMfc) for op in ops) == 300

    def state() -> tuple[object, ...]:
        return dict(e.routes), dict(e.mfc), {f: dict(v) for f, v in e.vifs.items()}, e.rules()

    before = state()
    e.compact()
    assert state() == before
    assert e.load_config(Config(routes=[keep])) == []  # nothing to write: the same state
    ops = e.add_route(route("a1", "10.0.0.3", "225.9.9.9", "a3"))
    assert ops == [AddMfc(4, A("10.0.0.3"), A("225.9.9.9"), 0, ((2, 1),))]
