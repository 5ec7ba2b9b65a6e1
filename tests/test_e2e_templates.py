"""End to end: source-less and prefix routes through the real kernel (needs root).

Templates ((*,G), (*,G/LEN), (S/LEN,G/LEN)), stop filters, wrong-interface
repair, expiry (-c), flush, the -e hook, bursts of new sources, zero-loss
mode (kernel (*,G) entries), the learned-entry limit, and wire IGMP/MLD that
must never be taken for an upcall.  Every test drives *our* daemon
(netns.OUR_DAEMON) in its own namespaces, so they run in parallel.

Traffic from arbitrary source addresses is written as raw Ethernet frames by
``mcast_flood.py`` (no address has to be configured on the sender); the
receivers are ``netns.Receiver`` processes that count per (source, group)
and record sequence numbers, so "the first packet arrived" is exact.

The standard topology: S --(s0|a1)-- R --(a2|r0)-- X1, R --(a3|r0)-- X2.
Where a second inbound interface is needed, X2 acts as a sender behind a3.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from netns import (
    Daemon,
    Netns,
    Receiver,
    RouterTopology,
    count_mfc,
    read_mfc,
    read_routes,
    rss_kib,
    send,
    wait_until,
)

FLOOD = Path(__file__).resolve().parent / "mcast_flood.py"
FAMILIES = pytest.mark.parametrize("fam", [4, 6], ids=["ipv4", "ipv6"])

# Per family: group "prefixes" (the tests append a last part) and addresses.
G = {4: "225.1.{}", 6: "ff2e::1:{}"}


def grp(fam: int, sub: str) -> str:
    """225.1.<sub> or ff2e::1:<sub> (``sub`` like "2.7" / "207" by family)."""
    return G[fam].format(sub)


def S(fam: int, link: int, host: int) -> str:
    """An address on link ``link``'s subnet (10.0.L.H / fd00:L::H)."""
    return f"10.0.{link}.{host}" if fam == 4 else f"fd00:{link:x}::{host:x}"


StartDaemon = Callable[..., Daemon]


def flood(
    ns: Netns,
    iface: str,
    group: str,
    source: str,
    *,
    sources: int = 1,
    count: int = 1,
    first: int = 0,
    rate: float = 0.0,
    order: str = "seq",
    ttl: int = 8,
) -> int:
    """Send ``count`` packets from each of ``sources`` consecutive addresses."""
    out = ns.run(
        sys.executable, str(FLOOD), "flood", "--iface", iface, "--group", group,
        "--source", source, "--sources", str(sources), "--count", str(count),
        "--first", str(first), "--rate", str(rate), "--order", order, "--ttl", str(ttl),
    ).stdout  # fmt: skip
    return int(json.loads(out.strip().splitlines()[-1])["sent"])


def kernel_rows(d: Daemon) -> list[dict[str, Any]]:
    """``smcroutectl -j show`` kernel table."""
    rows: list[dict[str, Any]] = json.loads(d.ctl("-j", "show").stdout)["routes"]["kernel"]
    return rows


def mfc(ns: Netns, fam: int) -> dict[tuple[str, str], tuple[str | None, tuple[str, ...]]]:
    """/proc MFC as {(source, group): (iif, sorted oifs)}."""
    return {(s, g): (i, o) for s, g, i, o in read_routes(ns, fam)}


def wait_mfc(ns: Netns, fam: int, key: tuple[str, str], want: Any, what: str = "") -> None:
    wait_until(lambda: mfc(ns, fam).get(key) == want, timeout=10, what=what or f"{key} -> {want}")


def resolved(ns: Netns, fam: int) -> list[Any]:
    """Resolved MFC entries (/proc also lists unresolved ones, with no iif)."""
    return [e for e in read_mfc(ns, fam) if e.iif is not None]


def norm(addr: str) -> str:
    import ipaddress

    return str(ipaddress.ip_address(addr))


def started_receiver(topo: RouterTopology, i: int, groups: list[str]) -> Receiver:
    return Receiver(topo.receivers[i], "r0", groups, topology=topo).start()


# ---------------------------------------------------------------------------
# (*,G) templates learn new sources; the first packet arrives
# ---------------------------------------------------------------------------


@FAMILIES
def test_star_g_learns_new_source_and_first_packet_arrives(
    fam: int, router_topo: RouterTopology, ours: StartDaemon
) -> None:
    topo = router_topo
    g = grp(fam, "1.1" if fam == 4 else "101")
    d = ours(topo.router, f"mroute from a1 group {g} to a2\n")
    rx1 = started_receiver(topo, 0, [g])
    rx2 = started_receiver(topo, 1, [g])
    src = S(fam, 1, 0x50)
    # Three packets flat out: all three are queued by the kernel while the
    # (S,G) is unresolved and released when the daemon installs it.
    flood(topo.sender, "s0", g, src, count=3)
    wait_mfc(topo.router, fam, (norm(src), norm(g)), ("a1", ("a2",)))
    flood(topo.sender, "s0", g, src, count=2, first=3)
    r1, r2 = rx1.stop(), rx2.stop()
    assert r1.seqs(src, g) == [0, 1, 2, 3, 4]
    assert r2.total == 0
    rows = kernel_rows(d)
    assert {(r["source"], r["group"], r["iif"], tuple(r["oifs"])) for r in rows} == {
        (norm(src), norm(g), "a1", ("a2",))
    }
    tmpl = json.loads(d.ctl("-j", "show").stdout)["routes"]["asm"]
    assert [(t["source"], t["group"], t["oifs"]) for t in tmpl] == [(None, norm(g), ["a2"])]


# ---------------------------------------------------------------------------
# (*,G/LEN) and (S/LEN,G/LEN): exactly what they cover
# ---------------------------------------------------------------------------


@FAMILIES
def test_prefix_templates_forward_exactly_what_they_cover(
    fam: int, router_topo: RouterTopology, ours: StartDaemon
) -> None:
    topo = router_topo
    if fam == 4:
        conf = (
            "mroute from a1 group 225.1.2.0/24 to a2\n"
            "mroute from a1 source 10.0.1.0/28 group 225.1.3.0/24 to a3\n"
        )
        g_star, g_ssm, g_none = "225.1.2.7", "225.1.3.9", "225.1.4.1"
    else:
        conf = (
            "mroute from a1 group ff2e::1:200/120 to a2\n"
            "mroute from a1 source fd00:1::/124 group ff2e::1:300/120 to a3\n"
        )
        g_star, g_ssm, g_none = "ff2e::1:207", "ff2e::1:309", "ff2e::1:401"
    d = ours(topo.router, conf)
    groups = [g_star, g_ssm, g_none]
    rx1, rx2 = started_receiver(topo, 0, groups), started_receiver(topo, 1, groups)
    inside, outside = S(fam, 1, 5), S(fam, 1, 20)  # in / out of the /28 (/124)
    cases = [(inside, g_star), (outside, g_star), (inside, g_ssm), (outside, g_ssm),
             (inside, g_none)]  # fmt: skip
    for src, g in cases:
        flood(topo.sender, "s0", g, src, count=2)
    want = {
        (norm(inside), norm(g_star)): ("a1", ("a2",)),
        (norm(outside), norm(g_star)): ("a1", ("a2",)),
        (norm(inside), norm(g_ssm)): ("a1", ("a3",)),
        (norm(outside), norm(g_ssm)): ("a1", ()),  # stop filter
        (norm(inside), norm(g_none)): ("a1", ()),  # stop filter
    }
    wait_until(lambda: mfc(topo.router, fam) == want, timeout=10, what="5 entries")
    for src, g in cases:
        flood(topo.sender, "s0", g, src, count=2, first=2)
    r1, r2 = rx1.stop(), rx2.stop()
    assert {k: f.seqs for k, f in r1.flows.items()} == {
        (norm(inside), norm(g_star)): [0, 1, 2, 3],
        (norm(outside), norm(g_star)): [0, 1, 2, 3],
    }
    assert {k: f.seqs for k, f in r2.flows.items()} == {(norm(inside), norm(g_ssm)): [0, 1, 2, 3]}
    # Stop filters are listed in `show` with no OIFs, like the kernel has them.
    rows = {(r["source"], r["group"]): (r["iif"], tuple(r["oifs"])) for r in kernel_rows(d)}
    assert rows == want
    plain = d.ctl("-p", "show").stdout
    assert f"({norm(outside)}, {norm(g_ssm)})" in plain


# ---------------------------------------------------------------------------
# Same group from a second, non-matching inbound interface
# ---------------------------------------------------------------------------


@FAMILIES
def test_second_inbound_interface_is_blocked(
    fam: int, router_topo: RouterTopology, ours: StartDaemon
) -> None:
    topo = router_topo
    g = grp(fam, "6.6" if fam == 4 else "606")
    # a3 needs a VIF to be an inbound interface at all
    ours(topo.router, f"phyint a3 enable\nmroute from a1 group {g} to a2\n")
    rx1 = started_receiver(topo, 0, [g])
    good, bad = S(fam, 1, 0x33), S(fam, 3, 0x33)
    flood(topo.receivers[1], "r0", g, bad, count=3)  # X2 sends into a3
    flood(topo.sender, "s0", g, good, count=3)
    wait_until(
        lambda: (
            mfc(topo.router, fam)
            == {(norm(good), norm(g)): ("a1", ("a2",)), (norm(bad), norm(g)): ("a3", ())}
        ),
        timeout=10,
        what="forwarding entry + stop filter",
    )
    flood(topo.receivers[1], "r0", g, bad, count=3, first=3)
    flood(topo.sender, "s0", g, good, count=3, first=3)
    r1 = rx1.stop()
    assert r1.seqs(good, g) == [0, 1, 2, 3, 4, 5]
    assert r1.count(bad, g) == 0
    assert set(r1.flows) == {(norm(good), norm(g))}


@FAMILIES
def test_redundant_feeds_stop_filter_gives_way_to_covered_interface(
    fam: int, router_topo: RouterTopology, ours: StartDaemon
) -> None:
    """Upstream issue #143: one (S,G) on two interfaces.  The first packets
    come in on a3, which no template covers (a stop filter on a3); then the
    real feed arrives on a1.  PIM mode makes the kernel report it, and the
    stop filter is replaced by a forwarding entry from a1 -- no flush, no
    waiting for -c (the default 60 s)."""
    topo = router_topo
    g = grp(fam, "6.8" if fam == 4 else "608")
    ours(topo.router, f"phyint a3 enable\nmroute from a1 group {g} to a2\n")
    rx1 = started_receiver(topo, 0, [g])
    s = S(fam, 9, 0x43)  # the same source behind both interfaces
    key = (norm(s), norm(g))
    flood(topo.receivers[1], "r0", g, s, count=3)  # X2 sends into a3 first
    wait_mfc(topo.router, fam, key, ("a3", ()), "stop filter on a3")
    sent = [0]

    def forwarding() -> bool:
        flood(topo.sender, "s0", g, s, count=1, first=sent[0])
        flood(topo.receivers[1], "r0", g, s, count=1, first=500 + sent[0])  # still alive
        sent[0] += 1
        return mfc(topo.router, fam).get(key) == ("a1", ("a2",))

    t0 = time.monotonic()
    wait_until(forwarding, timeout=10, interval=0.2, what="stop filter replaced from a1")
    took = time.monotonic() - t0
    flood(topo.sender, "s0", g, s, count=3, first=1000)
    flood(topo.receivers[1], "r0", g, s, count=3, first=2000)  # the a3 feed goes on
    time.sleep(0.5)
    assert mfc(topo.router, fam).get(key) == ("a1", ("a2",))  # and changes nothing
    r = rx1.stop()
    got = r.seqs(s, g)
    assert [x for x in got if x >= 1000] == [1000, 1001, 1002]
    assert all(x < 500 or x >= 1000 for x in got)  # nothing from the a3 feed
    print(f"IPv{fam}: forwarding from a1 {took:.2f} s after the feed started")


def test_wrong_interface_flood_on_stop_filters_keeps_serving(
    router_topo: RouterTopology, ours: StartDaemon
) -> None:
    """2,000 stop filters on a3, then their (S,G)s arrive on a1 and a2 too:
    in PIM mode the kernel reports each entry's wrong-interface traffic once
    per 3 s.  The control socket keeps answering, an exact route keeps
    forwarding, and the daemon's memory does not grow with the reports."""
    topo = router_topo
    fam = 4
    g, g_cfg = grp(fam, "15.1"), grp(fam, "15.2")
    exact = topo.source(fam)
    conf = (
        "phyint a2 enable\nphyint a3 enable\n"
        f"mroute from a1 group 225.1.16.0/24 to a2\n"  # a template that covers none of them
        f"mroute from a1 source {exact} group {g_cfg} to a3\n"
    )
    d = ours(topo.router, conf)
    rx2 = started_receiver(topo, 1, [g_cfg])
    base, n = "10.3.0.1", 2000

    def argv(iface: str, count: int, rate: int) -> list[str]:
        return [sys.executable, str(FLOOD), "flood", "--iface", iface, "--group", g,
                "--source", base, "--sources", str(n), "--count", str(count), "--order", "rr",
                "--rate", str(rate)]  # fmt: skip

    topo.receivers[1].run(*argv("r0", 1, 4000))  # X2 into a3: the stop filters
    wait_until(lambda: len(resolved(topo.router, fam)) >= n + 1, timeout=20, what="stop filters")
    rss0 = rss_kib(d.pid)
    flooders = [
        topo.track(ns.popen(argv(i, 4, 2000), stdout=subprocess.PIPE))
        for ns, i in ((topo.sender, "s0"), (topo.receivers[0], "r0"))
    ]
    latencies, seq = [], 0
    while any(f.poll() is None for f in flooders):
        t0 = time.monotonic()
        d.ctl("-j", "show", "interfaces")
        latencies.append(time.monotonic() - t0)
        send(topo.sender, "s0", g_cfg, count=2, first=seq)
        seq += 2
    assert all(f.wait() == 0 for f in flooders)
    time.sleep(1)
    rss1 = rss_kib(d.pid)
    wrong = sum(e.wrong_if for e in read_mfc(topo.router, fam) if e.group == g)
    print(f"wrong-interface packets {wrong}; smcroutectl during the flood: {len(latencies)} "
          f"calls, max {max(latencies) * 1000:.0f} ms; RSS {rss0} -> {rss1} KiB")  # fmt: skip
    assert wrong >= n  # the reports really came
    assert rss1 - rss0 < 8 * 1024
    send(topo.sender, "s0", g_cfg, count=2, first=seq)
    r = rx2.stop()
    assert r.seqs(exact, g_cfg) == list(range(seq + 2))
    stops = [e for e in resolved(topo.router, fam) if e.group == g]
    assert len(stops) == n and all(e.iif == "a3" and not e.oifs for e in stops)
    assert d.running()


# ---------------------------------------------------------------------------
# Runtime add/remove of a template flips stop filters; exact (S,G) untouched
# ---------------------------------------------------------------------------


def _mfc_entry(ns: Netns, fam: int, src: str, g: str) -> Any:
    for e in read_mfc(ns, fam):
        if (e.source, e.group) == (norm(src), norm(g)):
            return e
    return None


@FAMILIES
def test_runtime_template_flips_stop_filters_exact_route_keeps_forwarding(
    fam: int, router_topo: RouterTopology, ours: StartDaemon
) -> None:
    topo = router_topo
    g = grp(fam, "5.5" if fam == 4 else "505")
    prefix = "225.1.5.0/24" if fam == 4 else "ff2e::1:500/120"
    exact, learned = S(fam, 1, 9), S(fam, 1, 0x20)
    d = ours(topo.router, f"mroute from a1 source {exact} group {g} to a2\n")
    rx = started_receiver(topo, 0, [g])
    key_e, key_l = (norm(exact), norm(g)), (norm(learned), norm(g))
    seq = 0
    exact_pkts: list[int] = []

    def burst() -> None:
        nonlocal seq
        flood(topo.sender, "s0", g, exact, count=2, first=seq)
        flood(topo.sender, "s0", g, learned, count=2, first=seq)
        seq += 2

    def exact_counter_grows() -> None:
        e = _mfc_entry(topo.router, fam, exact, g)
        assert e is not None and e.oifs == {"a2": 1} and e.iif == "a1"
        exact_pkts.append(e.packets)
        assert exact_pkts == sorted(exact_pkts)  # never re-created (counter never resets)

    burst()  # phase 1: no template -> stop filter for `learned`
    wait_mfc(topo.router, fam, key_l, ("a1", ()), "stop filter")
    exact_counter_grows()
    burst()
    d.ctl("add", "a1", prefix, "a2")  # phase 2: the stop filter becomes forwarding
    wait_mfc(topo.router, fam, key_l, ("a1", ("a2",)), "stop filter -> forwarding")
    exact_counter_grows()
    burst()
    d.ctl("remove", "a1", prefix)  # phase 3: back to a stop filter
    wait_mfc(topo.router, fam, key_l, ("a1", ()), "forwarding -> stop filter")
    exact_counter_grows()
    burst()
    assert mfc(topo.router, fam)[key_e] == ("a1", ("a2",))
    exact_counter_grows()
    r = rx.stop()
    assert r.seqs(exact, g) == list(range(8))
    assert r.seqs(learned, g) == [4, 5]  # only while the template existed
    assert exact_pkts[-1] >= 8


# ---------------------------------------------------------------------------
# Wrong-interface repair
# ---------------------------------------------------------------------------


@FAMILIES
def test_wrong_interface_repair_follows_the_source(
    fam: int, router_topo: RouterTopology, ours: StartDaemon
) -> None:
    """One source address behind a1 (S) and behind a3 (X2).

    Mutual templates (a1 -> a2 a3, a3 -> a2 a1) put the other inbound
    interface in the OIF list: traffic of the learned entry coming back in on
    one of its outputs is what moves it (in PIM mode the kernel reports
    every wrong-interface arrival, doc/KERNEL.md; the engine moves a learned
    entry only for these).  When the stream moves from a1 to a3, the entry
    must be re-installed with a3 as inbound interface.
    """
    topo = router_topo
    g = grp(fam, "7.7" if fam == 4 else "707")
    ours(topo.router, f"mroute from a1 group {g} to a2 a3\nmroute from a3 group {g} to a2 a1\n")
    rx1 = started_receiver(topo, 0, [g])
    src = S(fam, 9, 9)  # the shared address, on neither link's subnet
    key = (norm(src), norm(g))
    flood(topo.sender, "s0", g, src, count=2)
    wait_mfc(topo.router, fam, key, ("a1", ("a2", "a3")), "learned from a1")
    sent = [2]

    def moved() -> bool:
        flood(topo.receivers[1], "r0", g, src, count=1, first=100 + sent[0])
        sent[0] += 1
        return mfc(topo.router, fam).get(key) == ("a3", ("a1", "a2"))

    wait_until(moved, timeout=15, interval=0.2, what="entry moved to a3")
    e = _mfc_entry(topo.router, fam, src, g)
    assert e.wrong_if >= 1  # it was the WRONGVIF path, not expiry + relearn
    flood(topo.receivers[1], "r0", g, src, count=3, first=1000)
    r = rx1.stop()
    assert [s for s in r.seqs(src, g) if s >= 1000] == [1000, 1001, 1002]
    assert r.seqs(src, g)[:2] == [0, 1]


# ---------------------------------------------------------------------------
# Expiry (-c), flush
# ---------------------------------------------------------------------------


@FAMILIES
def test_cache_timeout_removes_idle_keeps_busy(
    fam: int, router_topo: RouterTopology, ours: StartDaemon
) -> None:
    topo = router_topo
    g = grp(fam, "8.8" if fam == 4 else "808")
    g_stop = grp(fam, "9.9" if fam == 4 else "909")
    exact = S(fam, 1, 7)
    ours(
        topo.router,
        f"mroute from a1 group {g} to a2\nmroute from a1 source {exact} group {g_stop} to a2\n",
        "-c",
        "2",
    )
    busy, idle = S(fam, 1, 0x40), S(fam, 1, 0x41)
    flood(topo.sender, "s0", g, busy)
    flood(topo.sender, "s0", g, idle)
    flood(topo.sender, "s0", g_stop, idle)  # a stop filter, idle too
    kb, ki, ks = (norm(busy), norm(g)), (norm(idle), norm(g)), (norm(idle), norm(g_stop))
    ke = (norm(exact), norm(g_stop))
    wait_until(lambda: {kb, ki, ks, ke} <= set(mfc(topo.router, fam)), timeout=10, what="learned")
    # Keep `busy` busy (10 packets/s) until the idle ones are gone, then for
    # two more expiry periods.
    argv = [sys.executable, str(FLOOD), "flood", "--iface", "s0", "--group", g, "--source", busy,
            "--count", "100", "--first", "1", "--rate", "10"]  # fmt: skip
    sender = topo.track(topo.sender.popen(argv, stdout=subprocess.DEVNULL))
    try:
        wait_until(lambda: not ({ki, ks} & set(mfc(topo.router, fam))), timeout=15, what="expiry")
        assert kb in mfc(topo.router, fam)
        t_end = time.monotonic() + 4.5
        while time.monotonic() < t_end:  # two more -c periods: busy survives each check
            assert kb in mfc(topo.router, fam), "busy learned entry expired"
            time.sleep(0.1)
        assert ke in mfc(topo.router, fam)  # configured routes never expire
    finally:
        sender.kill()
        sender.wait()
    wait_until(lambda: kb not in mfc(topo.router, fam), timeout=15, what="busy expires once idle")
    assert set(mfc(topo.router, fam)) == {ke}


@FAMILIES
def test_flush_drops_learned_and_stop_filters_only(
    fam: int, router_topo: RouterTopology, ours: StartDaemon
) -> None:
    topo = router_topo
    g = grp(fam, "10.1" if fam == 4 else "a01")
    g_other = grp(fam, "10.2" if fam == 4 else "a02")
    exact = S(fam, 1, 7)
    d = ours(
        topo.router,
        f"mroute from a1 group {g} to a2\nmroute from a1 source {exact} group {g_other} to a3\n",
    )
    flood(topo.sender, "s0", g, S(fam, 1, 0x60), sources=5)
    flood(topo.sender, "s0", g_other, S(fam, 1, 0x70), sources=5)  # stop filters
    wait_until(lambda: count_mfc(topo.router, fam) == 11, timeout=10, what="11 entries")
    assert len(kernel_rows(d)) == 11
    d.ctl("flush")
    assert mfc(topo.router, fam) == {(norm(exact), norm(g_other)): ("a1", ("a3",))}
    assert [(r["source"], r["group"]) for r in kernel_rows(d)] == [(norm(exact), norm(g_other))]
    # learning works again after a flush
    rx = started_receiver(topo, 0, [g])
    flood(topo.sender, "s0", g, S(fam, 1, 0x60), count=2)
    assert rx.stop().seqs(S(fam, 1, 0x60), g) == [0, 1]


# ---------------------------------------------------------------------------
# -e hook
# ---------------------------------------------------------------------------


@pytest.fixture
def hook_dir() -> Iterator[Path]:
    """A directory with a hook that records its arguments, environment and privileges."""
    top = Path(tempfile.mkdtemp(prefix="smct-hook-"))
    top.chmod(0o755)
    out = top / "out"
    out.mkdir()
    out.chmod(0o1777)
    script = top / "hook.sh"
    script.write_text(  # privileges first: the test waits for the calls line
        "#!/bin/sh\n"
        f'echo "$(id -u) $(grep -E "^(CapEff|NoNewPrivs)" /proc/self/status | tr -s "\\t\\n" " ")"'
        f" >> {out}/privs\n"
        f'echo "$1 $source $group" >> {out}/calls\n'
    )
    script.chmod(0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


@FAMILIES
def test_event_hook_install_and_reload(
    fam: int, router_topo: RouterTopology, ours: StartDaemon, hook_dir: Path
) -> None:
    topo = router_topo
    g = grp(fam, "11.1" if fam == 4 else "b01")
    g_stop = grp(fam, "11.2" if fam == 4 else "b02")
    d = ours(topo.router, f"mroute from a1 group {g} to a2\n", "-e", str(hook_dir / "hook.sh"))
    calls = hook_dir / "out" / "calls"

    def lines() -> list[str]:
        return [ln.strip() for ln in calls.read_text().splitlines()] if calls.exists() else []

    wait_until(lambda: lines() == ["reload"], timeout=10, what="reload hook at start-up")
    src = S(fam, 1, 0x50)
    flood(topo.sender, "s0", g, src)
    flood(topo.sender, "s0", g_stop, src)  # a stop filter: no install hook
    wait_until(lambda: len(lines()) >= 2, timeout=10, what="install hook")
    d.reload()
    wait_until(lambda: len(lines()) >= 3, timeout=10, what="reload hook")
    assert lines() == ["reload", f"install {norm(src)} {norm(g)}", "reload"]
    # It ran from the privileged helper: uid 0 with exactly CAP_NET_ADMIN and
    # CAP_NET_RAW (enough for conntrack) and no-new-privs, every time.
    privs = (hook_dir / "out" / "privs").read_text().splitlines()
    assert len(privs) == 3
    for line in privs:
        assert line.split() == ["0", "CapEff:", "0000000000003000", "NoNewPrivs:", "1"], line


# ---------------------------------------------------------------------------
# Bursts of new sources
# ---------------------------------------------------------------------------


@FAMILIES
def test_thousand_new_sources_back_to_back_all_learned(
    fam: int, router_topo: RouterTopology, ours: StartDaemon
) -> None:
    topo = router_topo
    g = grp(fam, "12.1" if fam == 4 else "c01")
    d = ours(topo.router, f"mroute from a1 group {g} to a2\n")
    rx = started_receiver(topo, 0, [g])
    base = "10.1.0.1" if fam == 4 else "fd00:99::1"
    flood(topo.sender, "s0", g, base, sources=1000)  # one packet each, flat out
    wait_until(lambda: len(resolved(topo.router, fam)) == 1000, timeout=30, what="1000 learned")
    entries = resolved(topo.router, fam)
    # every first packet was queued by the kernel and released by the install
    assert [e.packets for e in entries] == [1] * 1000
    assert all(e.iif == "a1" and e.oifs == {"a2": 1} for e in entries)
    r = rx.stop(linger_ms=1000)
    assert len(r.flows) == 1000
    assert all(f.seqs == [0] for f in r.flows.values())
    rows = kernel_rows(d)
    assert len(rows) == 1000 and all(r["oifs"] == ["a2"] for r in rows)


# ---------------------------------------------------------------------------
# Zero-loss mode: kernel (*,G), no upcall, no learned entry
# ---------------------------------------------------------------------------


@FAMILIES
def test_zero_loss_mode_uses_kernel_star_g(
    fam: int, router_topo: RouterTopology, ours: StartDaemon
) -> None:
    topo = router_topo
    g = grp(fam, "13.1" if fam == 4 else "d01")
    any_src = "0.0.0.0" if fam == 4 else "::"
    d = ours(topo.router, f"mroute from a1 group {g} to a2\n", "--zero-loss")
    star = (any_src, norm(g))
    wait_until(lambda: star in mfc(topo.router, fam), timeout=10, what="kernel (*,G)")
    iif, oifs = mfc(topo.router, fam)[star]
    assert iif == "a1" and "a2" in oifs and "a3" not in oifs
    rx1, rx2 = started_receiver(topo, 0, [g]), started_receiver(topo, 1, [g])
    srcs = [S(fam, 1, 0x50 + i) for i in range(5)]
    for src in srcs:
        flood(topo.sender, "s0", g, src, count=20)
    r1, r2 = rx1.stop(), rx2.stop()
    for src in srcs:
        assert r1.seqs(src, g) == list(range(20))  # nothing lost, not even the first
    assert r2.total == 0
    assert set(mfc(topo.router, fam)) == {star}  # no (S,G) was ever learned
    assert [e.packets for e in read_mfc(topo.router, fam)] == [100]
    rows = kernel_rows(d)
    assert [(r["source"], r["group"]) for r in rows] == [(None, norm(g))]


# ---------------------------------------------------------------------------
# The learned-entry limit
# ---------------------------------------------------------------------------


@FAMILIES
def test_learned_limit_bounds_entries_and_keeps_serving(
    fam: int, router_topo: RouterTopology, ours: StartDaemon
) -> None:
    topo = router_topo
    g = grp(fam, "14.1" if fam == 4 else "e01")
    g_cfg = grp(fam, "14.2" if fam == 4 else "e02")
    exact = topo.source(fam)  # what netns.send uses
    conf = f"mroute from a1 group {g} to a2\nmroute from a1 source {exact} group {g_cfg} to a3\n"
    d = ours(topo.router, conf, "--max-learned", "100")
    rx2 = started_receiver(topo, 1, [g_cfg])
    base = "10.2.0.1" if fam == 4 else "fd00:98::1"
    argv = [sys.executable, str(FLOOD), "flood", "--iface", "s0", "--group", g, "--source", base,
            "--sources", "5000", "--count", "3", "--order", "rr", "--rate", "5000"]  # fmt: skip
    flooder = topo.track(topo.sender.popen(argv, stdout=subprocess.PIPE))
    latencies = []
    seq = 0
    while flooder.poll() is None:  # while the flood runs: control socket and exact route
        t = time.monotonic()
        out = d.ctl("-j", "show").stdout
        latencies.append(time.monotonic() - t)
        assert len(json.loads(out)["routes"]["kernel"]) <= 101
        send(topo.sender, "s0", g_cfg, count=5, first=seq)
        seq += 5
    assert flooder.wait() == 0
    print(f"smcroutectl show during the flood: {len(latencies)} calls, "
          f"max {max(latencies) * 1000:.0f} ms")  # fmt: skip
    send(topo.sender, "s0", g_cfg, count=5, first=seq)
    seq += 5
    r = rx2.stop()
    assert r.seqs(topo.source(fam), g_cfg) == list(range(seq))
    assert len(resolved(topo.router, fam)) == 101  # 100 learned + the configured route
    assert d.log().count("learned-entry limit (100) reached") == 1
    assert d.running()


# ---------------------------------------------------------------------------
# Wire IGMP / MLD never reaches the decision logic
# ---------------------------------------------------------------------------


@FAMILIES
def test_wire_igmp_mld_is_not_an_upcall(
    fam: int, router_topo: RouterTopology, ours: StartDaemon
) -> None:
    topo = router_topo
    prefix = "225.1.15.0/24" if fam == 4 else "ff2e::1:f00/120"
    g = grp(fam, "15.1" if fam == 4 else "f01")
    d = ours(
        topo.router, f"mroute from a1 group {prefix} to a2\nmroute from a2 group {prefix} to a1\n"
    )
    tool = "igmp" if fam == 4 else "mld"
    src = topo.source(fam) if fam == 4 else "fe80::2"
    for iface_ns, iface in ((topo.sender, "s0"), (topo.receivers[0], "r0")):
        iface_ns.run(sys.executable, str(FLOOD), tool, "--iface", iface, "--group", g,
                     "--source", src, "--count", "5")  # fmt: skip
    # and the kernel's own reports: a host joining the group behind a1 and a2
    joined = [
        Receiver(topo.sender, "s0", [g], topology=topo).start(),
        started_receiver(topo, 0, [g]),
    ]
    probe = grp(fam, "15.2" if fam == 4 else "f02")
    # A data packet afterwards proves the upcall path was alive all along.
    flood(topo.sender, "s0", probe, S(fam, 1, 0x77))
    wait_until(lambda: count_mfc(topo.router, fam) == 1, timeout=10, what="the probe's entry")
    for rx in joined:
        rx.stop(linger_ms=50)
    assert set(mfc(topo.router, fam)) == {(norm(S(fam, 1, 0x77)), norm(probe))}
    assert [(r["source"], r["group"]) for r in kernel_rows(d)] == [
        (norm(S(fam, 1, 0x77)), norm(probe))
    ]
    # dropped by the kernel-side filter, not even handed to the decoder
    assert "bad IPv" not in d.log()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v", *sys.argv[1:]]))
