"""Proof that the netns harness works, driven by a real smcrouted.

The scenarios are plain functions taking the daemon (and smcroutectl)
binary, so the same checks run against Debian's original 2.5.6 (the
default) and against ours (``pytest --daemon=ours`` or ``--daemon=both``).
They count exact packet numbers and compare exact kernel state, so they
fail when forwarding breaks. The parser tests at the end need no root.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from netns import (
    Daemon,
    Mfc,
    Receiver,
    RouterTopology,
    Topology,
    Vif,
    cap_eff,
    parse_igmp,
    parse_igmp6,
    parse_mcfilter,
    parse_mcfilter6,
    parse_mfc,
    parse_mroute_json,
    parse_vifs,
    read_memberships,
    read_mfc,
    read_mroutes,
    read_routes,
    read_source_filters,
    read_vifs,
    rss_kib,
    run,
    send,
    wait_until,
)

GROUP = {4: "225.1.2.3", 6: "ff2e::123"}
StartDaemon = Callable[..., Daemon]


# --------------------------------------------------------------------------
# Scenario helpers (daemon-agnostic)
# --------------------------------------------------------------------------


def receive_on_all(
    topo: RouterTopology, group: str, count: int, *, source: str | None = None
) -> list[int]:
    """Join ``group`` in every receiver namespace, send ``count`` packets, return counts.

    Also checks that a receiver that got packets got exactly the sequence
    0..count-1 from the topology's sender.
    """
    family = 6 if ":" in group else 4
    src = topo.source(family)
    receivers = [
        Receiver(ns, "r0", [group], source=source, topology=topo).start() for ns in topo.receivers
    ]
    assert send(topo.sender, "s0", group, count=count, ttl=8) == count
    counts = []
    for rx in receivers:
        result = rx.stop()
        n = result.count(src, group)
        if n:
            assert result.seqs(src, group) == list(range(count)), "lost or reordered packets"
            assert result.flows[(src, group)].ttls == [7], "TTL not decremented once"
        assert result.total == n, f"unexpected traffic: {result.flows}"
        counts.append(n)
    return counts


def scenario_sg_route(start: StartDaemon, topo: RouterTopology, family: int) -> Daemon:
    """An (S,G) route to a2 only: X1 gets every packet, X2 none; kernel state exact."""
    src, grp = topo.source(family), GROUP[family]
    d = start(topo.router, f"mroute from a1 source {src} group {grp} to a2\n")
    wait_until(lambda: read_mfc(topo.router, family), what="route in the kernel")
    assert read_routes(topo.router, family) == {(src, grp, "a1", ("a2",))}
    assert receive_on_all(topo, grp, 25) == [25, 0]
    (entry,) = read_mfc(topo.router, family)
    assert (entry.packets, entry.wrong_if) == (25, 0)
    return d


# --------------------------------------------------------------------------
# End-to-end tests (root, network namespaces)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_sg_route_forwards_to_listed_receiver_only(
    daemon: StartDaemon, router_topo: RouterTopology, family: int
) -> None:
    scenario_sg_route(daemon, router_topo, family)


def test_sg_route_to_other_receiver_and_both(
    daemon: StartDaemon, router_topo: RouterTopology
) -> None:
    topo = router_topo
    s4, s6 = topo.source4, topo.source6
    conf = (
        f"mroute from a1 source {s4} group 225.1.2.3 to a3\n"
        f"mroute from a1 source {s6} group ff2e::123 to a2 a3\n"
    )
    daemon(topo.router, conf)
    wait_until(lambda: read_mfc(topo.router, 4) and read_mfc(topo.router, 6))
    assert receive_on_all(topo, "225.1.2.3", 10) == [0, 10]
    assert receive_on_all(topo, "ff2e::123", 10) == [10, 10]


def test_no_route_no_forwarding(daemon: StartDaemon, router_topo: RouterTopology) -> None:
    """Negative control: the harness does not see packets that were not routed."""
    daemon(router_topo.router, "mroute from a1 source 10.9.9.9 group 225.1.2.3 to a2 a3\n")
    assert receive_on_all(router_topo, "225.1.2.3", 10) == [0, 0]
    assert receive_on_all(router_topo, "ff2e::123", 10) == [0, 0]


def test_runtime_add_and_remove(daemon: StartDaemon, router_topo: RouterTopology) -> None:
    topo = router_topo
    d = daemon(topo.router, "")
    src = topo.source4
    d.ctl("add", "a1", src, "225.1.2.3", "a2", "a3")
    wait_until(lambda: read_mfc(topo.router, 4), what="route added with smcroutectl")
    assert read_routes(topo.router, 4) == {(src, "225.1.2.3", "a1", ("a2", "a3"))}
    assert receive_on_all(topo, "225.1.2.3", 10) == [10, 10]
    d.ctl("remove", "a1", src, "225.1.2.3")
    wait_until(lambda: not read_mfc(topo.router, 4), what="route removed")
    assert receive_on_all(topo, "225.1.2.3", 10) == [0, 0]


def test_joins_appear_in_proc(daemon: StartDaemon, router_topo: RouterTopology) -> None:
    topo = router_topo
    s4, s6 = topo.source4, topo.source6
    conf = (
        "mgroup from a1 group 225.5.5.5\n"
        f"mgroup from a2 source {s4} group 225.6.6.6\n"
        "mgroup from a1 group ff2e::55\n"
        f"mgroup from a3 source {s6} group ff2e::66\n"
    )
    d = daemon(topo.router, conf)

    def joined() -> bool:
        g4 = {(m.ifname, m.group) for m in read_memberships(topo.router, 4)}
        g6 = {(m.ifname, m.group) for m in read_memberships(topo.router, 6)}
        return {("a1", "225.5.5.5"), ("a2", "225.6.6.6")} <= g4 and {
            ("a1", "ff2e::55"),
            ("a3", "ff2e::66"),
        } <= g6

    wait_until(joined, what="joins in /proc/net/igmp{,6}")
    f4 = [f for f in read_source_filters(topo.router, 4) if f.group.startswith("225.")]
    f6 = [f for f in read_source_filters(topo.router, 6) if f.group.startswith("ff2e")]
    assert [(f.ifname, f.group, f.source, f.include, f.exclude) for f in f4] == [
        ("a2", "225.6.6.6", s4, 1, 0)
    ]
    assert [(f.ifname, f.group, f.source, f.include, f.exclude) for f in f6] == [
        ("a3", "ff2e::66", s6, 1, 0)
    ]
    d.stop()
    assert d.returncode == 0
    left = [m for m in read_memberships(topo.router, 4) if m.group.startswith("225.")]
    left6 = [m for m in read_memberships(topo.router, 6) if m.group.startswith("ff2e")]
    assert (left, left6) == ([], [])


def test_kernel_readers_agree(daemon: StartDaemon, router_topo: RouterTopology) -> None:
    """/proc readers and ``ip mroute show table all`` describe the same routes."""
    topo = router_topo
    conf = (
        f"mroute from a1 source {topo.source4} group 225.1.2.3 to a2 a3\n"
        f"mroute from a1 source {topo.source6} group ff2e::123 to a3\n"
    )
    daemon(topo.router, conf)
    wait_until(lambda: read_mfc(topo.router, 4) and read_mfc(topo.router, 6))
    # Interfaces used by the routes must have VIFs/MIFs (the original gives
    # every interface one; ours allocates them on demand, doc/SPEC.md section 5).
    used = {4: {"a1", "a2", "a3"}, 6: {"a1", "a3"}}
    for family in (4, 6):
        vifs = {v.name for v in read_vifs(topo.router, family)}
        assert used[family] <= vifs
        proc = {
            (e.source, e.group, e.iif, tuple(sorted(e.oifs))) for e in read_mfc(topo.router, family)
        }
        ip = {
            (r.source, r.group, r.iif, tuple(sorted(r.oifs)))
            for r in read_mroutes(topo.router, family)
        }
        assert proc == ip
        assert all(r.state == "resolved" for r in read_mroutes(topo.router, family))


def test_other_table(daemon: StartDaemon, router_topo: RouterTopology) -> None:
    """With ``-t 1`` routes live in table 1: /proc shows nothing, ip mroute does."""
    topo = router_topo
    topo.router.ip("mrule", "add", "iif", "a1", "lookup", "1", "pref", "100")
    conf = f"mroute from a1 source {topo.source4} group 225.1.2.3 to a2\n"
    daemon(topo.router, conf, extra_args=["-t", "1"])
    wait_until(lambda: read_mroutes(topo.router, 4), what="route in table 1")
    assert [(r.table, r.source, r.group, r.iif, r.oifs) for r in read_mroutes(topo.router, 4)] == [
        ("1", topo.source4, "225.1.2.3", "a1", {"a2": 1})
    ]
    assert read_mfc(topo.router, 4) == []
    assert receive_on_all(topo, "225.1.2.3", 10) == [10, 0]


def test_stop_cleans_kernel_and_processes(daemon: StartDaemon, router_topo: RouterTopology) -> None:
    topo = router_topo
    d = scenario_sg_route(daemon, topo, 4)
    pids = d.pids()
    assert pids and all(rss_kib(p) > 0 for p in pids)
    assert any(cap_eff(p) != 0 for p in pids)  # some process keeps the capabilities to route
    d.stop()
    assert d.returncode == 0
    assert read_mfc(topo.router, 4) == []
    assert read_vifs(topo.router, 4) == []
    assert not [p for p in pids if _alive(p)]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.netns
def test_topology_teardown_leaves_nothing(uid: str) -> None:
    with Topology(uid) as topo:
        a, b = topo.add_ns("A"), topo.add_ns("B")
        topo.veth(a, "v0", b, "v1")
        proc = topo.track(a.popen(["sleep", "60"]))
        names = [a.name, b.name]
    assert proc.poll() is not None
    listed = run(["ip", "netns", "list"]).stdout
    assert not [n for n in names if n in listed.split()]


# --------------------------------------------------------------------------
# Parsers (pure; text captured from Linux 6.18 with the original installed)
# --------------------------------------------------------------------------

IP_MR_VIF = """\
Interface      BytesIn  PktsIn  BytesOut PktsOut Flags Local    Remote
 0 a1              360      10         0       0 00008 00000002 00000000
 1 a2                0       0       360      10 00008 00000003 00000000
"""
IP_MR_CACHE = """\
Group    Origin   Iif     Pkts    Bytes    Wrong Oifs
010101E1 0201000A 0         10      360        0  1:1    2:3
020101E1 0201000A 0          4      144        0
"""
IP6_MR_CACHE = (
    "Group                            Origin                           "
    "Iif      Pkts  Bytes     Wrong  Oifs\n"
    "ff2e:0000:0000:0000:0000:0000:0000:0042 fd00:0001:0000:0000:0000:0000:0000:0002 "
    "0          5      280        0  1:1\n"
)
IGMP = """\
Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter
1\tlo        :     1      V3
\t\t\t\t010000E0     1 0:00000000\t\t0
2\ta1        :     3      V3
\t\t\t\t060606E1     1 0:00000000\t\t0
\t\t\t\t050505E1     2 0:00000000\t\t0
"""
MCFILTER = """\
Idx Device        MCA        SRC    INC    EXC
  2     a1 0xe1060606 0x0a000102      1      0
"""
IGMP6 = """\
1    lo              ff020000000000000000000000000001     1 0000000C 0
2    a1              ff2e0000000000000000000000000066     1 00000004 0
"""
MCFILTER6 = """\
Idx Device                Multicast Address                   Source Address    INC    EXC
  2     a1 ff2e0000000000000000000000000066 fd000001000000000000000000000002      1      0
"""


def test_parse_vifs_and_mfc() -> None:
    vifs = parse_vifs(IP_MR_VIF)
    assert vifs == [Vif(0, "a1", 360, 10, 0, 0, 8), Vif(1, "a2", 0, 0, 360, 10, 8)]
    assert parse_mfc(IP_MR_CACHE, vifs, 4) == [
        Mfc("10.0.1.2", "225.1.1.1", "a1", {"a2": 1, "vif2": 3}, 10, 360, 0),
        Mfc("10.0.1.2", "225.1.1.2", "a1", {}, 4, 144, 0),
    ]
    assert parse_mfc(IP6_MR_CACHE, vifs, 6)[0].route == (
        "fd00:1::2",
        "ff2e::42",
        "a1",
        {"a2": 1},
    )


def test_parse_memberships() -> None:
    assert [tuple(m) for m in parse_igmp(IGMP)] == [
        ("lo", "224.0.0.1", 1),
        ("a1", "225.6.6.6", 1),
        ("a1", "225.5.5.5", 2),
    ]
    assert [tuple(f) for f in parse_mcfilter(MCFILTER)] == [("a1", "225.6.6.6", "10.0.1.2", 1, 0)]
    assert [tuple(m) for m in parse_igmp6(IGMP6)] == [("lo", "ff02::1", 1), ("a1", "ff2e::66", 1)]
    assert [tuple(f) for f in parse_mcfilter6(MCFILTER6)] == [("a1", "ff2e::66", "fd00:1::2", 1, 0)]


def test_parse_mroute_json() -> None:
    text = (
        '[{"src":"10.0.1.2","dst":"225.1.1.1","iif":"a1","multipath":[{"oif":"a2"},'
        '{"oif":"a3","ttl":4}],"state":"resolved","table":"1"}]'
    )
    (r,) = parse_mroute_json(text, 4)
    assert (r.table, r.source, r.group, r.iif, r.oifs, r.state) == (
        "1",
        "10.0.1.2",
        "225.1.1.1",
        "a1",
        {"a2": 1, "a3": 4},
        "resolved",
    )
