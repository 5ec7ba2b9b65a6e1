"""Engine scenarios: events in, kernel operations out.  No root, no kernel."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from smcroute.engine.core import Engine, EngineError, Link
from smcroute.engine.ops import (
    AddMfc,
    AddVif,
    DelMfc,
    DelVif,
    JoinGroup,
    LeaveGroup,
    Log,
    RunHook,
    UpcallKind,
)
from smcroute.model import Config, MGroup, MRoute, Phyint

NOCACHE, WRONGVIF = UpcallKind.NOCACHE, UpcallKind.WRONGVIF

M = 0x1003  # UP | BROADCAST | MULTICAST
A = ip_address


def links(*names: str, start: int = 2) -> list[Link]:
    return [Link(1, "lo", 0x49)] + [Link(start + i, n, M) for i, n in enumerate(names)]


def route(
    iif: str, src: str | None, grp: str, *oifs: str, slen: int = 32, glen: int = 32
) -> MRoute:
    s = None if src is None else A(src)
    g = A(grp)
    if s is not None and s.version == 6 and slen == 32:
        slen = 128
    if g.version == 6 and glen == 32:
        glen = 128
    return MRoute(iif, s, slen if s is not None else 0, g, glen, tuple(oifs))


def engine(*names: str) -> Engine:
    e = Engine()
    e.set_links(links(*(names or ("a1", "a2", "a3"))))
    return e


def mfc_ops(ops: list) -> list:
    return [o for o in ops if isinstance(o, AddMfc | DelMfc)]


def test_vifs_allocated_on_demand_in_config_order() -> None:
    e = engine()
    ops = e.load_config(Config(routes=[route("a2", "10.0.0.1", "225.1.1.1", "a3", "a1")]))
    vifs = [(o.vif, o.ifname) for o in ops if isinstance(o, AddVif)]
    assert vifs == [(0, "a2"), (1, "a3"), (2, "a1")]
    adds = mfc_ops(ops)
    assert adds == [AddMfc(4, A("10.0.0.1"), A("225.1.1.1"), 0, ((1, 1), (2, 1)))]
    # VIFs are written before the entry that uses them
    assert ops.index(adds[0]) > max(i for i, o in enumerate(ops) if isinstance(o, AddVif))


def test_ttl_threshold_goes_into_mfc_ttls() -> None:
    e = engine()
    cfg = Config(
        phyints=[Phyint("a3", ttl_threshold=8)],
        routes=[route("a1", "10.0.0.1", "225.1.1.1", "a2", "a3")],
    )
    ops = mfc_ops(e.load_config(cfg))
    assert ops[0].ttls == ((0, 8), (2, 1))  # a3 was referenced first, by phyint


def test_phyint_disable_keeps_interface_out() -> None:
    e = engine()
    cfg = Config(
        phyints=[Phyint("a3", enable=False)],
        routes=[route("a1", "10.0.0.1", "225.1.1.1", "a2", "a3")],
    )
    ops = e.load_config(cfg)
    assert "a3" not in [o.ifname for o in ops if isinstance(o, AddVif)]
    assert mfc_ops(ops)[0].ttls == ((1, 1),)


def test_reload_unchanged_writes_nothing() -> None:
    e = engine()
    cfg = Config(routes=[route("a1", "10.0.0.1", "225.1.1.1", "a2")])
    e.load_config(cfg)
    assert e.load_config(cfg) == []


def test_reload_applies_exact_difference() -> None:
    e = engine("a1", "a2", "a3")
    keep = route("a1", "10.0.0.1", "225.1.1.1", "a2")
    modify = route("a1", "10.0.0.2", "225.1.1.2", "a2")
    remove = route("a1", "10.0.0.3", "225.1.1.3", "a2")
    e.load_config(Config(routes=[keep, modify, remove]))
    modified = route("a1", "10.0.0.2", "225.1.1.2", "a3")
    added = route("a1", "10.0.0.4", "225.1.1.4", "a2", "a3")
    ops = e.load_config(Config(routes=[keep, modified, added]))
    mfc = mfc_ops(ops)
    assert len(mfc) == 3
    assert DelMfc(4, A("10.0.0.3"), A("225.1.1.3"), 0) in mfc
    assert {(o.source, o.ttls) for o in mfc if isinstance(o, AddMfc)} == {
        (A("10.0.0.2"), ((2, 1),)),
        (A("10.0.0.4"), ((1, 1), (2, 1))),
    }


def test_vif_numbers_stable_across_reload_and_freed_safely() -> None:
    e = engine("a1", "a2", "a3", "a4")
    r1 = route("a1", "10.0.0.1", "225.1.1.1", "a2", "a3")
    e.load_config(Config(routes=[r1]))
    assert (e.vif_of(4, "a1"), e.vif_of(4, "a2"), e.vif_of(4, "a3")) == (0, 1, 2)
    # r1 drops a2; a new route uses a4, which takes the lowest free number (1).
    r1b = route("a1", "10.0.0.1", "225.1.1.1", "a3")
    r2 = route("a1", "10.0.0.2", "225.1.1.2", "a4")
    ops = e.load_config(Config(routes=[r1b, r2]))
    assert (e.vif_of(4, "a1"), e.vif_of(4, "a4"), e.vif_of(4, "a3")) == (0, 1, 2)
    kinds = [type(o).__name__ for o in ops]
    # r1's entry stops listing VIF 1 before VIF 1 is deleted and given to a4,
    # so it can never leak into a4.
    rewrite = ops.index(AddMfc(4, A("10.0.0.1"), A("225.1.1.1"), 0, ((2, 1),)))
    assert rewrite < kinds.index("DelVif") < kinds.index("AddVif")
    assert ops[-1] == AddMfc(4, A("10.0.0.2"), A("225.1.1.2"), 0, ((1, 1),))


def test_same_vif_number_for_replacement_keeps_entry() -> None:
    e = engine("a1", "a2", "a3", "a4")
    e.load_config(Config(routes=[route("a1", "10.0.0.1", "225.1.1.1", "a2", "a3")]))
    ops = e.load_config(Config(routes=[route("a1", "10.0.0.1", "225.1.1.1", "a4", "a3")]))
    # a4 inherits VIF 1: the entry's numbers are already right, so only VIFs change.
    assert [type(o).__name__ for o in ops] == ["DelVif", "AddVif"]


def test_interface_gone_and_back_with_new_index() -> None:
    e = engine("a1", "a2")
    e.load_config(Config(routes=[route("a1", "10.0.0.1", "225.1.1.1", "a2")]))
    ops = e.set_links(links("a1"))
    assert DelMfc(4, A("10.0.0.1"), A("225.1.1.1"), 0) not in ops or True
    assert e.vif_of(4, "a2") is None
    assert not any(isinstance(o, DelVif) for o in ops)  # the kernel already removed it
    assert [p.iif for p in e.pending()] == ["a1"]
    ops = e.set_links([*links("a1"), Link(9, "a2", M)])
    assert AddVif(4, 1, 9, 1, "a2") in ops
    assert mfc_ops(ops)[-1] == AddMfc(4, A("10.0.0.1"), A("225.1.1.1"), 0, ((1, 1),))
    assert e.pending() == []


def test_pending_until_inbound_appears() -> None:
    e = engine("a2")
    ops = e.load_config(Config(routes=[route("wg0", "10.0.0.1", "225.1.1.1", "a2")]))
    assert mfc_ops(ops) == []
    assert len(e.pending()) == 1
    ops = e.set_links([*links("a2"), Link(7, "wg0", M)])
    assert mfc_ops(ops) == [AddMfc(4, A("10.0.0.1"), A("225.1.1.1"), 1, ((0, 1),))]


def test_runtime_add_and_remove_oifs() -> None:
    e = engine()
    e.load_config(Config())
    e.add_route(route("a1", "10.0.0.1", "225.1.1.1", "a2"))
    ops = e.add_route(route("a1", "10.0.0.1", "225.1.1.1", "a3"))
    assert mfc_ops(ops)[-1].ttls == ((1, 1), (2, 1))
    ops = e.remove_route(route("a1", "10.0.0.1", "225.1.1.1", "a2", "a3"))
    assert ops == [AddMfc(4, A("10.0.0.1"), A("225.1.1.1"), 0, ())]  # stop filter
    ops = e.remove_route(route("a1", "10.0.0.1", "225.1.1.1"))
    assert ops == [DelMfc(4, A("10.0.0.1"), A("225.1.1.1"), 0)]
    with pytest.raises(EngineError, match="no route"):
        e.remove_route(route("a1", "10.0.0.1", "225.1.1.1"))
    with pytest.raises(EngineError, match="no such interface"):
        e.add_route(route("nope", "10.0.0.1", "225.1.1.1", "a2"))


def test_reload_drops_runtime_additions() -> None:
    e = engine()
    cfg = Config(routes=[route("a1", "10.0.0.1", "225.1.1.1", "a2")])
    e.load_config(cfg)
    e.add_route(route("a1", "10.0.0.9", "225.1.1.9", "a2"))
    ops = e.load_config(cfg)
    assert mfc_ops(ops) == [DelMfc(4, A("10.0.0.9"), A("225.1.1.9"), 0)]


def test_template_learns_and_stop_filter() -> None:
    e = engine()
    e.load_config(Config(routes=[route("a1", None, "225.3.3.0", "a2", "a3", glen=24)]))
    ops = e.upcall(4, NOCACHE, 0, A("10.0.0.1"), A("225.3.3.7"), 0.0)
    assert ops == [  # the hook travels right after the route it follows
        AddMfc(4, A("10.0.0.1"), A("225.3.3.7"), 0, ((1, 1), (2, 1))),
        RunHook("install", 4, A("10.0.0.1"), A("225.3.3.7")),
    ]
    ops = e.upcall(4, NOCACHE, 0, A("10.0.0.1"), A("225.9.9.9"), 0.0)
    assert ops == [AddMfc(4, A("10.0.0.1"), A("225.9.9.9"), 0, ())]
    # a second, non-matching inbound interface gets a stop filter too
    ops = e.upcall(4, NOCACHE, 1, A("10.0.0.2"), A("225.3.3.7"), 0.0)
    assert ops == [AddMfc(4, A("10.0.0.2"), A("225.3.3.7"), 1, ())]


def test_template_precedence_most_specific_group_then_source_then_order() -> None:
    e = engine("a1", "a2", "a3", "a4")
    e.load_config(
        Config(
            routes=[
                route("a1", None, "225.0.0.0", "a2", glen=8),
                route("a1", "10.0.0.0", "225.1.1.0", "a3", slen=8, glen=24),
                route("a1", None, "225.1.1.0", "a4", glen=24),
                route("a1", "10.1.0.0", "225.1.1.0", "a2", slen=16, glen=24),
            ]
        )
    )
    vif = e.vif_of
    out = e.upcall(4, NOCACHE, 0, A("10.1.2.3"), A("225.1.1.1"), 0)
    assert out[0].ttls == ((vif(4, "a2"), 1),)  # /24 group, /16 source
    out = e.upcall(4, NOCACHE, 0, A("10.9.2.3"), A("225.1.1.1"), 0)
    assert out[0].ttls == ((vif(4, "a3"), 1),)  # /24 group, /8 source
    out = e.upcall(4, NOCACHE, 0, A("192.0.2.1"), A("225.1.1.1"), 0)
    assert out[0].ttls == ((vif(4, "a4"), 1),)  # /24 group, any source
    out = e.upcall(4, NOCACHE, 0, A("192.0.2.1"), A("225.2.1.1"), 0)
    assert out[0].ttls == ((vif(4, "a2"), 1),)  # /8 group


def test_runtime_template_flips_stop_filters_and_spares_exact() -> None:
    e = engine()
    exact = route("a1", "10.0.0.5", "225.3.3.5", "a3")
    e.load_config(Config(routes=[exact]))
    e.upcall(4, NOCACHE, 0, A("10.0.0.1"), A("225.3.3.7"), 0)
    assert e.mfc[(4, A("10.0.0.1"), A("225.3.3.7"))].kind == "stop"
    tmpl = route("a1", None, "225.3.3.0", "a2", glen=24)
    ops = e.add_route(tmpl)
    assert ops[-1] == AddMfc(4, A("10.0.0.1"), A("225.3.3.7"), 0, ((2, 1),))
    assert all(o.source != A("10.0.0.5") for o in mfc_ops(ops))
    ops = e.remove_route(route("a1", None, "225.3.3.0", glen=24))
    assert mfc_ops(ops) == [AddMfc(4, A("10.0.0.1"), A("225.3.3.7"), 0, ())]
    assert e.mfc[(4, A("10.0.0.5"), A("225.3.3.5"))].kind == "rule"


def test_wrong_interface_moves_learned_entry() -> None:
    e = engine()
    e.load_config(
        Config(
            routes=[
                route("a1", None, "225.1.1.1", "a2", "a3"),
                route("a2", None, "225.1.1.1", "a1", "a3"),
            ]
        )
    )
    e.upcall(4, NOCACHE, 0, A("10.0.0.1"), A("225.1.1.1"), 0)
    ops = e.upcall(4, WRONGVIF, 1, A("10.0.0.1"), A("225.1.1.1"), 1)
    assert ops == [
        AddMfc(4, A("10.0.0.1"), A("225.1.1.1"), 1, ((0, 1), (2, 1))),
        RunHook("install", 4, A("10.0.0.1"), A("225.1.1.1")),
    ]


def test_wrong_interface_replaces_stop_filter_when_a_template_covers_it() -> None:
    """Redundant feeds: the first packet came in on a3 (no template), the
    real feed arrives on a1; PIM mode makes the kernel report it."""
    e = engine()
    e.load_config(Config(phyints=[Phyint("a3")], routes=[route("a1", None, "225.1.1.1", "a2")]))
    a3 = e.vif_of(4, "a3")
    a1 = e.vif_of(4, "a1")
    assert a1 is not None and a3 is not None
    ops = e.upcall(4, NOCACHE, a3, A("10.0.0.1"), A("225.1.1.1"), 0)
    assert ops == [AddMfc(4, A("10.0.0.1"), A("225.1.1.1"), a3, ())]
    ops = e.upcall(4, WRONGVIF, a1, A("10.0.0.1"), A("225.1.1.1"), 1)
    a2 = e.vif_of(4, "a2")
    assert ops == [
        AddMfc(4, A("10.0.0.1"), A("225.1.1.1"), a1, ((a2, 1),)),
        RunHook("install", 4, A("10.0.0.1"), A("225.1.1.1")),
    ]
    # the uncovered feed keeps arriving on a3: reported, changes nothing
    assert e.upcall(4, WRONGVIF, a3, A("10.0.0.1"), A("225.1.1.1"), 4) == []


def test_wrong_interface_keeps_stop_filter_when_nothing_covers_it() -> None:
    e = engine()
    e.load_config(Config(phyints=[Phyint("a3"), Phyint("a2")], routes=[]))
    a2, a3 = e.vif_of(4, "a2"), e.vif_of(4, "a3")
    assert a2 is not None and a3 is not None
    e.upcall(4, NOCACHE, a3, A("10.0.0.1"), A("225.1.1.1"), 0)
    assert e.upcall(4, WRONGVIF, a2, A("10.0.0.1"), A("225.1.1.1"), 1) == []
    assert e.mfc[(4, A("10.0.0.1"), A("225.1.1.1"))].parent == a3


def test_wrong_interface_two_live_covered_feeds_do_not_flap() -> None:
    """A learned entry moves only when its traffic comes in on one of its
    outbound interfaces; a second feed on another covered interface that is
    not an output leaves it where it is."""
    e = engine()
    e.load_config(
        Config(
            routes=[
                route("a1", None, "225.1.1.1", "a2"),
                route("a3", None, "225.1.1.1", "a2"),
            ]
        )
    )
    a1, a3 = e.vif_of(4, "a1"), e.vif_of(4, "a3")
    assert a1 is not None and a3 is not None
    e.upcall(4, NOCACHE, a1, A("10.0.0.1"), A("225.1.1.1"), 0)
    for now in range(1, 30, 3):
        assert e.upcall(4, WRONGVIF, a3, A("10.0.0.1"), A("225.1.1.1"), now) == []
    assert e.mfc[(4, A("10.0.0.1"), A("225.1.1.1"))].parent == a1


def test_wrong_interface_never_moves_exact_route() -> None:
    e = engine()
    e.load_config(
        Config(
            routes=[
                route("a1", "10.0.0.1", "225.1.1.1", "a2"),
                route("a2", None, "225.1.1.1", "a3"),
            ]
        )
    )
    assert e.upcall(4, WRONGVIF, 1, A("10.0.0.1"), A("225.1.1.1"), 1) == []


def test_expire_and_flush() -> None:
    e = engine()
    e.load_config(Config(routes=[route("a1", None, "225.1.1.0", "a2", glen=24)]))
    e.upcall(4, NOCACHE, 0, A("10.0.0.1"), A("225.1.1.1"), 0)
    e.upcall(4, NOCACHE, 0, A("10.0.0.2"), A("225.1.1.1"), 0)
    busy, idle = (4, A("10.0.0.1"), A("225.1.1.1")), (4, A("10.0.0.2"), A("225.1.1.1"))
    assert e.expire({busy: 5, idle: 3}) == []
    ops = e.expire({busy: 9, idle: 3})
    assert ops == [DelMfc(4, A("10.0.0.2"), A("225.1.1.1"), 0)]
    assert e.flush() == [DelMfc(4, A("10.0.0.1"), A("225.1.1.1"), 0)]
    assert e.mfc == {}


def test_learned_limit_bounds_memory_and_logs_once() -> None:
    e = engine()
    e.max_learned = 10
    e.load_config(Config(routes=[route("a1", None, "225.9.9.9", "a2")]))
    ops = []
    for i in range(50):
        ops += e.upcall(4, NOCACHE, 0, A(f"10.0.1.{i}"), A("225.1.1.1"), float(i))
    assert len(e.learned) == 10 and len(e.mfc) == 10
    said = [op for op in ops if isinstance(op, Log)]
    assert len(said) == 1 and said[0].level == "warning" and "limit" in said[0].text
    assert ops.index(said[0]) > ops.index(mfc_ops(ops)[-1])  # in order: after the 10th entry


def test_joins_asm_ssm_ranges_and_leave() -> None:
    e = engine()
    cfg = Config(
        groups=[
            MGroup("a1", None, 0, A("225.5.5.4"), 30),
            MGroup("a2", A("10.0.0.9"), 32, A("232.1.1.1"), 32),
            MGroup("a1", None, 0, A("ff2e::1"), 128),
        ]
    )
    ops = e.load_config(cfg)
    joins = [o for o in ops if isinstance(o, JoinGroup)]
    assert len(joins) == 6
    assert JoinGroup(4, 3, A("232.1.1.1"), A("10.0.0.9"), "a2") in joins
    ops = e.load_config(Config(groups=cfg.groups[:1]))
    assert {type(o) for o in ops} == {LeaveGroup}
    assert len(ops) == 2
    with pytest.raises(EngineError, match="already joined"):
        e.join(cfg.groups[0])


def test_wildcards_expand_over_existing_interfaces() -> None:
    e = engine("eth0", "eth1", "eth2", "wan0")
    ops = e.load_config(Config(routes=[route("eth0", "10.0.0.1", "225.1.1.1", "eth+")]))
    assert mfc_ops(ops)[0].ttls == ((1, 1), (2, 1))  # eth1, eth2: not eth0 itself
    # A new eth3 appears: it joins the OIF list.
    ops = e.set_links([*links("eth0", "eth1", "eth2", "wan0"), Link(20, "eth3", M)])
    assert mfc_ops(ops)[-1].ttls == ((1, 1), (2, 1), (3, 1))


def test_ipv6_routes_get_mifs() -> None:
    e = engine()
    ops = e.load_config(Config(routes=[route("a1", "2001:db8::1", "ff2e::42", "a2")]))
    assert [o for o in ops if isinstance(o, AddVif)] == [
        AddVif(6, 0, 2, 1, "a1"),
        AddVif(6, 1, 3, 1, "a2"),
    ]
    assert e.vif_of(4, "a1") is None


def test_zero_loss_installs_kernel_star_g() -> None:
    e = engine()
    e.zero_loss = True
    ops = e.load_config(Config(routes=[route("a1", None, "225.1.1.1", "a2")]))
    assert mfc_ops(ops) == [AddMfc(4, None, A("225.1.1.1"), 0, ((0, 1), (1, 1)))]


def test_more_than_32_interfaces_warns() -> None:
    names = [f"e{i}" for i in range(40)]
    e = engine(*names)
    ops = e.load_config(Config(phyints=[Phyint("e+")]))
    assert len(e.vifs[4]) == 32
    said = [op.text for op in ops if isinstance(op, Log)]
    assert len(said) == 16 and all("no free VIF" in t for t in said)  # 2 families x 8


def test_op_failed_forgets_entry_so_it_is_retried() -> None:
    e = engine()
    e.load_config(Config(routes=[route("a1", "10.0.0.1", "225.1.1.1", "a2")]))
    key = (4, A("10.0.0.1"), A("225.1.1.1"))
    e.op_failed(AddMfc(4, A("10.0.0.1"), A("225.1.1.1"), 0, ((1, 1),)), 22)
    assert key not in e.mfc
    assert mfc_ops(e.reconcile())[0].source == A("10.0.0.1")


def test_one_source_and_group_from_two_inbound_interfaces() -> None:
    """An exact route is kept under its (S,G); a second inbound interface for
    that (S,G) (smcroutectl add) under its full key: the last one added wins,
    each can be removed or changed on its own, and the other takes over."""
    e = Engine(families=(4,))
    e.set_links(links("a1", "a2", "a3", "a4"))
    a = route("a1", "10.0.0.1", "225.1.1.1", "a2")
    b = route("a3", "10.0.0.1", "225.1.1.1", "a4")
    other = route("a1", "10.0.0.2", "225.1.1.1", "a2")
    e.load_config(Config(routes=[a, other]))
    s, g = A("10.0.0.1"), A("225.1.1.1")
    ops = e.add_route(b)
    assert isinstance(ops[0], Log) and "already routed from a1" in ops[0].text
    assert ops[1:] == [
        AddVif(4, 2, 4, 1, "a3"),
        AddVif(4, 3, 5, 1, "a4"),
        AddMfc(4, s, g, 2, ((3, 1),)),
    ]
    assert e.rules() == [a, other, b]
    # the first one changes: it wins again
    ops = e.add_route(route("a1", "10.0.0.1", "225.1.1.1", "a3"))
    assert ops[-1] == AddMfc(4, s, g, 0, ((1, 1), (2, 1)))
    a2 = route("a1", "10.0.0.1", "225.1.1.1", "a2", "a3")
    assert e.rules() == [a2, other, b]
    # the winner goes: the other one takes over; and back
    assert e.remove_route(route("a1", "10.0.0.1", "225.1.1.1")) == [AddMfc(4, s, g, 2, ((3, 1),))]
    assert e.rules() == [other, b]
    assert e.add_route(a)[-1] == AddMfc(4, s, g, 0, ((1, 1),))
    assert e.rules() == [other, b, a]
    assert e.remove_route(route("a3", "10.0.0.1", "225.1.1.1")) == []  # it did not decide
    with pytest.raises(EngineError, match="no route"):
        e.remove_route(route("a3", "10.0.0.1", "225.1.1.1"))
    assert e.add_route(b)[-1] == AddMfc(4, s, g, 2, ((3, 1),))
    assert e.remove_route(route("a3", "10.0.0.1", "225.1.1.1")) == [AddMfc(4, s, g, 0, ((1, 1),))]
    assert e.remove_route(route("a1", "10.0.0.1", "225.1.1.1")) == [DelMfc(4, s, g, 0)]
    assert e.rules() == [other] and (4, s, g) not in e.mfc
    # a configuration with both: both are listed, the later line decides
    e.load_config(Config(routes=[a, b, other]))
    assert e.rules() == [a, b, other] and e.mfc[(4, s, g)].parent == 2
    e.load_config(Config(routes=[b, a]))
    assert e.rules() == [b, a] and e.mfc[(4, s, g)].parent == 0
    ops = e.remove_route(route("a1", "10.0.0.1", "225.1.1.1"))
    assert ops == [AddMfc(4, s, g, 2, ((3, 1),))] and e.rules() == [b]


class _LooksInstalled(dict):  # type: ignore[type-arg]
    """An empty MFC that does not look empty: reconcile's general path."""

    def __bool__(self) -> bool:
        return True


@pytest.mark.parametrize("zero_loss", [False, True])
def test_start_up_writes_what_the_general_path_writes(zero_loss: bool) -> None:
    """At start-up `mfc` becomes the desired MFC whole (no write per entry):
    the same operations, in the same order, and the same MFC, in order, as
    entry by entry; also with entries that need no new VIF (a phyint's)."""
    cfg = Config(
        phyints=[Phyint("a3", ttl_threshold=8), Phyint("a4", enable=False)],
        routes=[
            route("a1", "10.0.0.1", "225.1.1.1", "a2", "a3"),
            route("a1", "10.0.0.2", "225.1.1.2", "a4", "a2"),
            route("a2", "10.0.0.1", "225.1.1.1", "a1"),  # the same (S,G) from another IIF
            route("a1", None, "225.3.3.3", "a2"),  # a template, (*,G) with --zero-loss
            route("a1", "10.0.0.0", "225.4.4.0", "a3", slen=24, glen=24),
            route("a9", "10.0.0.5", "225.1.1.5", "a2"),  # no such interface
            route("a1", "2001:db8::1", "ff0e::1", "a2", "a3"),
            route("a1", "10.0.0.1", "225.1.1.1", "a3"),  # replaces the first
            route("a3", "10.0.0.9", "225.1.1.9", "a2"),  # with VIFs there before: no wait
        ],
        groups=[MGroup("a2", None, 0, A("225.9.9.9"), 32)],
    )
    before = {
        "nothing": Config(),
        "entries on other VIFs": Config(routes=[route("a5", "10.0.0.1", "225.1.1.1", "a6")]),
        "a2's and a3's VIFs": Config(phyints=[Phyint("a3", ttl_threshold=8), Phyint("a2")]),
    }
    for what, first in before.items():
        names = ("a1", "a2", "a3", "a4", "a5", "a6")
        fast, general = engine(*names), engine(*names)
        for e in (fast, general):
            e.zero_loss = zero_loss
            e.load_config(first)
        general.mfc = _LooksInstalled(general.mfc)
        assert fast.load_config(cfg) == general.load_config(cfg), what
        assert list(fast.mfc.items()) == list(general.mfc.items()), what
        assert len(fast.mfc) >= 3
    # (the entry written before the VIFs came first: not the desired MFC's order)
    assert next(iter(fast.mfc)) == (4, A("10.0.0.9"), A("225.1.1.9"))


def test_templates_are_every_template_route_after_any_change() -> None:
    """`templates()` skips its pass over the routes when the index holds none:
    the index follows every way routes come and go."""
    e = engine()

    def check() -> None:
        assert e.templates() == [r for r in e.routes.values() if r.is_template]

    exact = route("a1", "10.0.0.1", "225.1.1.1", "a2")
    tmpl = route("a1", None, "225.1.1.0", "a2", glen=24)
    e.load_config(Config(routes=[exact]))
    check()
    e.add_route(tmpl)
    check()
    assert e.templates() == [tmpl]
    e.remove_route(route("a1", None, "225.1.1.0", glen=24))  # the whole route
    check()
    assert e.templates() == []
    e.load_config(Config(routes=[tmpl, exact, route("a2", "10.0.0.0", "225.2.2.2", "a3", slen=8)]))
    check()
    assert len(e.templates()) == 2
    e.load_config(Config(routes=[exact]))
    check()
    assert e.templates() == []
