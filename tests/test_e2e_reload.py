"""Live configuration end to end: atomic, hitless, exact reloads and interfaces
that come, go and come back (doc/SPEC.md §4 show pending, §5 pending, §6 reload;
doc/KERNEL.md "Interfaces and VIFs over time").

Every test drives *our* smcrouted in throw-away namespaces (S -- R -- X1..Xn)
and reads the kernel's own state (/proc ip_mr_cache, ip6_mr_cache, igmp,
igmp6) and real multicast received in the receiver namespaces.  Nothing is
timed: the tests wait for states (with generous limits) and then compare
exact values, so they fail when the behaviour breaks, not when a machine is
slow.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from netns import (
    OUR_CTL,
    OUR_DAEMON,
    Daemon,
    Receiver,
    RouterTopology,
    count_mfc,
    read_vifs,
    send,
    wait_until,
)
from reload_support import (
    BackgroundSender,
    MrouteMonitor,
    add_veth,
    age_pidfile,
    kernel,
    memberships,
    packets,
    pid_mtime,
    sighup_and_wait,
    start_daemon,
    write_conf,
)

Topo = Callable[..., RouterTopology]
FAMILIES = [pytest.param(4, id="ipv4"), pytest.param(6, id="ipv6")]
GPREFIX = {4: "225.", 6: "ff2e::"}


def grp(family: int, n: int) -> str:
    return f"225.1.1.{n}" if family == 4 else f"ff2e::1:{n:x}"


def jgrp(family: int, n: int) -> str:
    """A group joined with mgroup (a range apart from routed groups)."""
    return f"225.9.9.{n}" if family == 4 else f"ff2e::9:{n:x}"


def mroute(topo: RouterTopology, family: int, n: int, iif: str, *oifs: str) -> str:
    src, oif = topo.source(family), " ".join(oifs)
    return f"mroute from {iif} source {src} group {grp(family, n)} to {oif}\n"


def expect(topo: RouterTopology, family: int, routes: dict[int, tuple[str, ...]], iif: str = "a1"):
    """Kernel state that routes {n: oifs} (all from ``iif``) must produce."""
    return {
        (topo.source(family), grp(family, n)): (iif, tuple(sorted(o))) for n, o in routes.items()
    }


def reload(d: Daemon, how: str) -> None:
    """Reload and return once it is done: ``smcroutectl reload`` answers after the
    reload; for SIGHUP we wait for the PID file to be touched (doc/SPEC.md §1)."""
    if how in ("ctl", "restart"):
        d.ctl("reload" if how == "ctl" else "restart")  # restart: the original's alias
        return
    before = age_pidfile(d)
    d.reload()
    wait_until(lambda: pid_mtime(d) != before, timeout=60, what="PID file touched by SIGHUP")


# --------------------------------------------------------------------------
# Exact reloads
# --------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["sighup", "ctl", "restart"])
@pytest.mark.parametrize("family", FAMILIES)
def test_reload_modifies_adds_removes_routes_and_joins(
    topology: Topo, family: int, how: str
) -> None:
    topo = topology(3)
    R = topo.router
    conf1 = (
        mroute(topo, family, 1, "a1", "a2")  # unchanged
        + mroute(topo, family, 2, "a1", "a2", "a3")  # OIFs modified
        + mroute(topo, family, 3, "a1", "a3")  # removed
        + mroute(topo, family, 4, "a1", "a4")  # removed, and its VIF goes away
        + f"mgroup from a2 group {jgrp(family, 1)}\n"  # kept
        + f"mgroup from a3 group {jgrp(family, 2)}\n"  # left
    )
    d = start_daemon(R, conf1, topo=topo)
    assert kernel(R, family) == expect(
        topo, family, {1: ("a2",), 2: ("a2", "a3"), 3: ("a3",), 4: ("a4",)}
    )
    assert memberships(R, family, GPREFIX[family] + ("9" if family == 4 else "")) >= {
        ("a2", jgrp(family, 1)),
        ("a3", jgrp(family, 2)),
    }
    conf2 = (
        "# reordered, commented, one route modified, one added, two removed\n"
        + f"mgroup from a2 group {jgrp(family, 3)}\n"  # joined
        + mroute(topo, family, 2, "a1", "a4")
        + mroute(topo, family, 5, "a1", "a2", "a3")  # added
        + mroute(topo, family, 1, "a1", "a2")
        + f"mgroup from a2 group {jgrp(family, 1)}\n"
    )
    write_conf(d, conf2)
    reload(d, how)
    assert kernel(R, family) == expect(topo, family, {1: ("a2",), 2: ("a4",), 5: ("a2", "a3")})
    joined = {
        m for m in memberships(R, family, GPREFIX[family]) if m[1].startswith(jgrp(family, 0)[:-1])
    }
    assert joined == {("a2", jgrp(family, 1)), ("a2", jgrp(family, 3))}
    # and back: the reverse difference is exact too
    write_conf(d, conf1)
    reload(d, "ctl" if how == "sighup" else "sighup")
    assert kernel(R, family) == expect(
        topo, family, {1: ("a2",), 2: ("a2", "a3"), 3: ("a3",), 4: ("a4",)}
    )
    joined = {
        m for m in memberships(R, family, GPREFIX[family]) if m[1].startswith(jgrp(family, 0)[:-1])
    }
    assert joined == {("a2", jgrp(family, 1)), ("a3", jgrp(family, 2))}
    assert d.running()


@pytest.mark.parametrize("family", FAMILIES)
def test_reload_writes_only_the_difference(topology: Topo, family: int) -> None:
    """One modified, one added, one removed line: exactly three MFC writes."""
    topo = topology(2)
    R = topo.router
    base = {n: ("a2",) for n in range(1, 21)}
    conf1 = "".join(mroute(topo, family, n, "a1", *o) for n, o in base.items())
    d = start_daemon(R, conf1, topo=topo)
    mon = MrouteMonitor(R, (family,)).start()
    topo.on_close(mon.stop)
    new = dict(base)
    new[5] = ("a2", "a3")
    del new[6]
    new[30] = ("a3",)
    write_conf(d, "".join(mroute(topo, family, n, "a1", *o) for n, o in new.items()))
    d.ctl("reload")
    events = mon.events()
    src = topo.source(family)
    assert sorted((e["op"], e["group"]) for e in events) == sorted(
        [("add", grp(family, 5)), ("del", grp(family, 6)), ("add", grp(family, 30))]
    )
    assert all(e["source"] == src for e in events)
    assert kernel(R, family) == expect(topo, family, new)
    # an unchanged file writes nothing at all
    d.ctl("reload")
    assert len(mon.events()) == 3


@pytest.mark.parametrize("family", FAMILIES)
def test_repeated_reloads_are_hitless_for_unchanged_routes(topology: Topo, family: int) -> None:
    """Traffic through an unchanged route while reloads add/remove/modify other routes
    (and VIFs): its counter never resets and the receiver sees every sequence number."""
    topo = topology(3)
    R = topo.router
    steady = mroute(topo, family, 1, "a1", "a2")
    variants = [
        steady + mroute(topo, family, 2, "a1", "a3"),
        steady + mroute(topo, family, 2, "a1", "a3", "a4") + mroute(topo, family, 3, "a1", "a4"),
        mroute(topo, family, 3, "a1", "a3") + steady,  # a4's VIF is removed
        steady + f"mgroup from a3 group {jgrp(family, 1)}\n",
    ]
    d = start_daemon(R, variants[0], topo=topo)
    rx = Receiver(topo.receivers[0], "r0", [grp(family, 1)], topology=topo).start()
    rate = 200.0
    tx = BackgroundSender(topo.sender, "s0", grp(family, 1), count=int(rate * 600), rate=rate)
    topo.track(tx.proc)
    key = (topo.source(family), grp(family, 1))
    wait_until(lambda: packets(R, family).get(key, 0) > 0, timeout=30, what="traffic flowing")
    samples = [packets(R, family)[key]]
    for i in range(12):
        write_conf(d, variants[(i + 1) % len(variants)])
        if i % 2:
            reload(d, "sighup")
        else:
            d.ctl("reload")
        assert kernel(R, family)[key] == ("a1", ("a2",))
        samples.append(packets(R, family)[key])
        time.sleep(0.05)  # spread the reloads over the flow
    assert tx.running(), "the flow ended before the reloads did"
    tx.kill()
    result = rx.stop()
    seqs = result.seqs(topo.source(family), grp(family, 1))
    assert samples == sorted(samples), f"packet counter went back (entry re-added): {samples}"
    assert samples[-1] > samples[0]
    assert seqs == list(range(len(seqs))), "a gap in the sequence numbers"
    assert packets(R, family)[key] == len(seqs) >= samples[-1]


@pytest.mark.parametrize("family", FAMILIES)
def test_broken_file_is_rejected_as_a_whole(topology: Topo, family: int) -> None:
    topo = topology(2)
    R = topo.router
    conf1 = mroute(topo, family, 1, "a1", "a2") + f"mgroup from a2 group {jgrp(family, 1)}\n"
    d = start_daemon(R, conf1, topo=topo)
    before_k, before_j = kernel(R, family), memberships(R, family, GPREFIX[family])
    broken = (
        mroute(topo, family, 1, "a1", "a3")  # would modify
        + mroute(topo, family, 2, "a1", "a2")  # would add
        + "mroute from a1 group 10.1.1.1 to a2\n"  # line 3: not a multicast group
        + f"mgroup from a3 group {jgrp(family, 2)}\n"
        + "frobnicate\n"  # line 5
    )
    write_conf(d, broken)
    mtime = age_pidfile(d)
    p = d.ctl("reload", check=False)
    assert p.returncode == 1
    assert f"{d.conf}:3:" in p.stderr and f"{d.conf}:5:" in p.stderr, p.stderr
    assert p.stderr.startswith("smcroutectl: ")
    assert kernel(R, family) == before_k
    assert memberships(R, family, GPREFIX[family]) == before_j
    assert pid_mtime(d) == mtime, "a rejected reload must not touch the PID file"
    # SIGHUP: same, errors logged with file and line
    sighup_and_wait(d, "reload rejected")
    assert f"{d.conf}:5:" in d.log()
    assert kernel(R, family) == before_k
    assert memberships(R, family, GPREFIX[family]) == before_j
    # the daemon still works: a good file is applied afterwards
    write_conf(d, mroute(topo, family, 2, "a1", "a2"))
    d.ctl("reload")
    assert kernel(R, family) == expect(topo, family, {2: ("a2",)})


@pytest.mark.parametrize("how", ["sighup", "ctl"])
def test_pidfile_touched_on_reload(topology: Topo, how: str) -> None:
    topo = topology(1)
    d = start_daemon(topo.router, mroute(topo, 4, 1, "a1", "a2"), topo=topo)
    assert Path(d.pidfile).read_text().strip() == str(d.pid)
    old = age_pidfile(d)
    if how == "ctl":
        d.ctl("reload")
    else:
        d.reload()
        wait_until(lambda: pid_mtime(d) != old, timeout=60, what="PID file touched")
    assert pid_mtime(d) > old
    assert Path(d.pidfile).read_text().strip() == str(d.pid)


@pytest.mark.parametrize("family", FAMILIES)
def test_runtime_additions_are_dropped_on_reload(topology: Topo, family: int) -> None:
    topo = topology(2)
    R = topo.router
    conf = mroute(topo, family, 1, "a1", "a2") + f"mgroup from a2 group {jgrp(family, 1)}\n"
    d = start_daemon(R, conf, topo=topo)
    src = topo.source(family)
    d.ctl("add", "a1", src, grp(family, 2), "a3")
    d.ctl("add", "a1", src, grp(family, 1), "a3")  # more OIFs for a configured route
    d.ctl("join", "a3", jgrp(family, 2))
    assert kernel(R, family) == expect(topo, family, {1: ("a2", "a3"), 2: ("a3",)})
    assert ("a3", jgrp(family, 2)) in memberships(R, family, GPREFIX[family])
    d.ctl("reload")
    assert kernel(R, family) == expect(topo, family, {1: ("a2",)})
    mine = memberships(R, family, GPREFIX[family])
    assert ("a3", jgrp(family, 2)) not in mine and ("a2", jgrp(family, 1)) in mine


# --------------------------------------------------------------------------
# Interfaces that come, go and come back
# --------------------------------------------------------------------------


def forwarded(topo: RouterTopology, family: int, n: int, rx_index: int, count: int = 10) -> int:
    """Send ``count`` packets to route n's group; packets received by receiver rx_index."""
    rx = Receiver(topo.receivers[rx_index], "r0", [grp(family, n)], topology=topo).start()
    send(topo.sender, "s0", grp(family, n), count=count)
    res = rx.stop()
    return res.count(topo.source(family), grp(family, n))


@pytest.mark.parametrize("family", FAMILIES)
def test_pending_routes_activate_when_links_appear(topology: Topo, family: int) -> None:
    topo = topology(1)
    R = topo.router
    Y = topo.add_ns("Y")  # behind the missing outbound b1
    Z = topo.add_ns("Z")  # a second sender, behind the missing inbound c1
    zsrc = topo.addr(9, 2, family)
    conf = (
        mroute(topo, family, 1, "a1", "a2")
        + mroute(topo, family, 2, "a1", "b1")  # outbound missing
        + f"mroute from c1 source {zsrc} group {grp(family, 3)} to a2\n"  # inbound missing
        + f"mgroup from b1 group {jgrp(family, 1)}\n"
    )
    d = start_daemon(R, conf, topo=topo)
    # route 2's inbound interface exists: it is in the kernel without OIFs
    assert kernel(R, family) == expect(topo, family, {1: ("a2",), 2: ()})
    src = topo.source(family)
    text = d.ctl("-p", "show", "pending").stdout
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("=")]
    assert lines == [
        "PENDING ROUTES AND GROUPS",
        f"mroute  from a1 source {src} group {grp(family, 2)} to b1",
        f"mroute  from c1 source {zsrc} group {grp(family, 3)} to a2",
        f"mgroup  from b1 group {jgrp(family, 1)}",
    ]
    doc = json.loads(d.ctl("-j", "show", "pending").stdout)
    pending = [
        {k: e[k] for k in ("kind", "iif", "source", "group", "oifs") if k in e}
        for e in doc["pending"]
    ]
    assert pending == [
        {"kind": "mroute", "iif": "a1", "source": src, "group": grp(family, 2), "oifs": ["b1"]},
        {"kind": "mroute", "iif": "c1", "source": zsrc, "group": grp(family, 3), "oifs": ["a2"]},
        {"kind": "mgroup", "iif": "b1", "source": None, "group": jgrp(family, 1)},
    ]
    # the links appear at run time: no reload
    add_veth(topo, "b1", Y, "r0", 8)
    add_veth(topo, "c1", Z, "s0", 9)
    want = expect(topo, family, {1: ("a2",), 2: ("b1",)})
    want[(zsrc, grp(family, 3))] = ("c1", ("a2",))
    wait_until(lambda: kernel(R, family) == want, timeout=30, what=f"pending activated: {want}")
    assert json.loads(d.ctl("-j", "show", "pending").stdout) == {"pending": []}
    assert d.ctl("-p", "show", "pending").stdout.strip() == "No pending routes or groups"
    assert ("b1", jgrp(family, 1)) in memberships(R, family, GPREFIX[family])
    # traffic flows through both activated routes
    rx = Receiver(Y, "r0", [grp(family, 2)], topology=topo).start()
    assert send(topo.sender, "s0", grp(family, 2), count=10) == 10
    assert rx.stop().count(src, grp(family, 2)) == 10
    rx = Receiver(topo.receivers[0], "r0", [grp(family, 3)], topology=topo).start()
    assert send(Z, "s0", grp(family, 3), count=10) == 10
    assert rx.stop().count(zsrc, grp(family, 3)) == 10
    assert "reloading" not in d.log()


@pytest.mark.parametrize(
    "index", ["new", "same", "at-once"], ids=["new-ifindex", "same-ifindex", "same-at-once"]
)
@pytest.mark.parametrize("which", ["inbound", "outbound"])
@pytest.mark.parametrize("family", FAMILIES)
def test_interface_deleted_and_recreated(
    topology: Topo, family: int, which: str, index: str
) -> None:
    """An interface that vanishes takes only itself out of the routes.

    Route 1 (a1 -> a2 a3) keeps forwarding to a3 while a2 is gone; route 2
    (a1 -> a2, its only OIF) stays in the kernel with its inbound interface
    and no OIFs; both stay configured (`show`).  An inbound interface that
    vanishes takes its routes out of the kernel (no VIF, no entry).  When the
    interface comes back, with a new or the same ifindex, every route that
    names it gets it back, with no reload.
    """
    topo = topology(2)
    R = topo.router
    conf = (
        mroute(topo, family, 1, "a1", "a2", "a3")
        + mroute(topo, family, 2, "a1", "a2")
        + f"mgroup from a2 group {jgrp(family, 1)}\n"
    )
    d = start_daemon(R, conf, topo=topo)
    both = expect(topo, family, {1: ("a2", "a3"), 2: ("a2",)})
    assert kernel(R, family) == both
    assert forwarded(topo, family, 1, 0) == 10
    gone, peer, peer_if, net = (
        ("a1", topo.sender, "s0", 1) if which == "inbound" else ("a2", topo.receivers[0], "r0", 2)
    )
    old_index = R.ifindex(gone)
    if index == "at-once":
        # Deleted and re-created with the same ifindex while the daemon's main
        # process is stopped, so it rescans only after both: the link list
        # looks unchanged, but the kernel dropped the VIF (the daemon must act
        # on the RTM_DELLINK).
        os.kill(d.pid, signal.SIGSTOP)
        try:
            R.ip_batch(
                [
                    f"link del {gone}",
                    f"link add {gone} index {old_index} type veth peer name {peer_if} "
                    f"netns {peer.name}",
                ]
            )
            add_veth(topo, gone, peer, peer_if, net, old_index, exists=True)
        finally:
            os.kill(d.pid, signal.SIGCONT)
        wait_until(lambda: kernel(R, family) == both, timeout=30, what="routes restored")
        assert forwarded(topo, family, 1, 0) == 10
        assert forwarded(topo, family, 2, 0) == 10
        return
    R.ip("link", "del", gone)  # also removes the peer's end
    # no entry keeps using the vanished VIF (its number could be reused)
    left = {} if which == "inbound" else expect(topo, family, {1: ("a3",), 2: ()})
    wait_until(lambda: kernel(R, family) == left, timeout=30, what=f"routes without {gone}")
    assert gone not in {v.name for v in read_vifs(R, family)}
    if which == "outbound":
        assert forwarded(topo, family, 1, 1) == 10  # the other OIF keeps forwarding
    src = topo.source(family)
    pending = d.ctl("-p", "show", "pending").stdout.splitlines()
    assert f"mroute  from a1 source {src} group {grp(family, 1)} to a2 a3" in pending
    assert f"mroute  from a1 source {src} group {grp(family, 2)} to a2" in pending
    assert (f"mgroup  from a2 group {jgrp(family, 1)}" in pending) == (gone == "a2")
    configured = json.loads(d.ctl("-j", "show").stdout)["routes"]["ssm"]
    assert sorted(r["group"] for r in configured) == sorted([grp(family, 1), grp(family, 2)])
    add_veth(topo, gone, peer, peer_if, net, old_index if index == "same" else None)
    assert (R.ifindex(gone) == old_index) == (index == "same")
    wait_until(lambda: kernel(R, family) == both, timeout=30, what="routes restored")
    assert ("a2", jgrp(family, 1)) in memberships(R, family, GPREFIX[family])
    assert forwarded(topo, family, 1, 0) == 10
    assert forwarded(topo, family, 1, 1) == 10
    assert forwarded(topo, family, 2, 0) == 10
    assert "reloading" not in d.log()


@pytest.mark.parametrize("family", FAMILIES)
def test_reused_vif_number_never_misdirects(topology: Topo, family: int) -> None:
    topo = topology(3)
    R = topo.router
    d = start_daemon(R, mroute(topo, family, 1, "a1", "a2", "a3"), topo=topo)
    vifs = {v.name: v.index for v in read_vifs(R, family)}
    assert set(vifs) == {"a1", "a2", "a3"}
    write_conf(d, mroute(topo, family, 1, "a1", "a3") + mroute(topo, family, 2, "a1", "a4"))
    d.ctl("reload")
    new = {v.name: v.index for v in read_vifs(R, family)}
    assert new["a4"] == vifs["a2"], f"test premise: a4 takes a2's VIF number ({vifs} -> {new})"
    assert kernel(R, family) == expect(topo, family, {1: ("a3",), 2: ("a4",)})
    # route1 traffic: a3 gets it, a4 (a2's old VIF number) gets nothing
    rx3 = Receiver(topo.receivers[1], "r0", [grp(family, 1)], topology=topo).start()
    rx4 = Receiver(topo.receivers[2], "r0", [grp(family, 1), grp(family, 2)], topology=topo).start()
    send(topo.sender, "s0", grp(family, 1), count=20)
    send(topo.sender, "s0", grp(family, 2), count=5)
    got3, got4 = rx3.stop(), rx4.stop()
    src = topo.source(family)
    assert got3.count(src, grp(family, 1)) == 20
    assert got4.count(src, grp(family, 1)) == 0, "route1 traffic leaked to a4"
    assert got4.count(src, grp(family, 2)) == 5


@pytest.mark.parametrize("family", FAMILIES)
def test_link_down_up_keeps_vifs(topology: Topo, family: int) -> None:
    topo = topology(2)
    R = topo.router
    start_daemon(R, mroute(topo, family, 1, "a1", "a2", "a3"), topo=topo)
    vifs = [(v.index, v.name) for v in read_vifs(R, family)]
    state = kernel(R, family)
    R.ip("link", "set", "a2", "down")
    topo.receivers[0].ip("link", "set", "r0", "down")
    # give the daemon the link events; nothing may change
    assert forwarded(topo, family, 1, 1) == 10
    assert [(v.index, v.name) for v in read_vifs(R, family)] == vifs
    assert kernel(R, family) == state
    R.ip("link", "set", "a2", "up")
    topo.receivers[0].ip("link", "set", "r0", "up")
    topo.wait_link_ready()
    assert [(v.index, v.name) for v in read_vifs(R, family)] == vifs
    assert kernel(R, family) == state
    assert forwarded(topo, family, 1, 0) == 10


# --------------------------------------------------------------------------
# Start-up
# --------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_startup_with_broken_lines_applies_the_valid_ones(topology: Topo, family: int) -> None:
    topo = topology(2)
    R = topo.router
    conf = (
        mroute(topo, family, 1, "a1", "a2")
        + "mroute from a1 group 10.1.1.1 to a2\n"  # line 2: not multicast
        + f"mgroup from a3 group {jgrp(family, 1)}\n"
        + "this is not a directive\n"  # line 4
        + mroute(topo, family, 2, "a1", "a3")
    )
    d = start_daemon(R, conf, topo=topo)
    assert kernel(R, family) == expect(topo, family, {1: ("a2",), 2: ("a3",)})
    assert ("a3", jgrp(family, 1)) in memberships(R, family, GPREFIX[family])
    log = d.log()
    assert f"{d.conf}:2:" in log and f"{d.conf}:4:" in log, log
    assert d.running()
    assert forwarded(topo, family, 2, 1) == 10


def test_missing_config_file_starts_empty(topology: Topo) -> None:
    topo = topology(2)
    R = topo.router
    d = start_daemon(R, None, topo=topo)
    assert not os.path.exists(d.conf)
    assert d.running()
    assert kernel(R, 4) == {} and kernel(R, 6) == {}
    assert json.loads(d.ctl("-j", "show").stdout)["routes"]["kernel"] == []
    write_conf(d, mroute(topo, 4, 1, "a1", "a2"))
    d.ctl("reload")
    assert kernel(R, 4) == expect(topo, 4, {1: ("a2",)})


def test_startup_delay(topology: Topo) -> None:
    topo = topology(1)
    R = topo.router
    delay = 3
    t0 = time.monotonic()
    d = start_daemon(
        R,
        mroute(topo, 4, 1, "a1", "a2"),
        topo=topo,
        extra=["-l", "debug", "-d", str(delay)],
        wait=False,
    )
    wait_until(lambda: "waiting" in d.log(), timeout=30, what="-d announced")
    # while it waits: no socket, nothing in the kernel
    assert not os.path.exists(d.sock)
    assert kernel(R, 4) == {}
    wait_until(d.socket_ready, timeout=60, what="socket after the delay")
    assert time.monotonic() - t0 >= delay
    assert kernel(R, 4) == expect(topo, 4, {1: ("a2",)})


# --------------------------------------------------------------------------
# Scale
# --------------------------------------------------------------------------


def test_reload_of_10000_routes(topology: Topo) -> None:
    topo = topology(2)
    R = topo.router
    src = topo.source4

    def conf(groups: range, oif: str = "a2") -> str:
        return "".join(
            f"mroute from a1 source {src} group 225.20.{i // 256}.{i % 256} to {oif}\n"
            for i in groups  # i < 65536
        )

    d = start_daemon(R, "", topo=topo)
    write_conf(d, conf(range(10_000)))
    d.ctl("reload", timeout=300)
    assert count_mfc(R, 4) == 10_000
    # half replaced, a quarter modified
    write_conf(d, conf(range(5_000, 7_500), "a3") + conf(range(7_500, 15_000)))
    d.ctl("reload", timeout=300)
    state = kernel(R, 4)
    assert len(state) == 10_000
    assert sum(1 for v in state.values() if v == ("a1", ("a3",))) == 2_500
    assert (src, "225.20.0.0") not in state and (src, "225.20.58.151") in state  # 15_000 - 1
    write_conf(d, "")
    d.ctl("reload", timeout=300)
    assert count_mfc(R, 4) == 0
    # The counter sample right after gives back the pages of the object
    # pools the routes held (smcroute.free_pools) ...
    given = re.compile(r"gave back (\d+) KiB of free object pools")
    wait_until(lambda: given.search(d.log()), timeout=60, what="the free pools given back")
    match = given.search(d.log())
    assert match and int(match.group(1)) > 0, d.log()[-2000:]
    # ... and the daemon goes on with its memory sound: the routes again, shown
    write_conf(d, conf(range(10_000)))
    d.ctl("reload", timeout=300)
    state = kernel(R, 4)
    assert len(state) == 10_000 and set(state.values()) == {("a1", ("a2",))}
    shown = d.ctl("show", timeout=60).stdout
    routes = {line.split(")")[0] + ")" for line in shown.splitlines() if "225.20." in line}
    assert routes == {f"({src}, 225.20.{i // 256}.{i % 256})" for i in range(10_000)}


@pytest.mark.parametrize("family", FAMILIES)
def test_renamed_interface_gives_back_its_vif(topology: Topo, family: int) -> None:
    """A renamed device keeps its kernel VIF unless the daemon deletes it; then its
    number must not be handed to another interface while still taken."""
    topo = topology(3)
    R = topo.router
    d = start_daemon(R, mroute(topo, family, 1, "a1", "a2", "a3"), topo=topo)
    R.ip("link", "set", "a2", "down")
    R.ip("link", "set", "a2", "name", "z2")
    wait_until(
        lambda: kernel(R, family) == expect(topo, family, {1: ("a3",)}),
        timeout=30,
        what="route rewritten without a2",
    )
    wait_until(
        lambda: {v.name for v in read_vifs(R, family)} == {"a1", "a3"},
        timeout=30,
        what="VIF of the renamed device deleted",
    )
    # a4 now takes the lowest free number (a2's) -- it must really be free
    write_conf(d, mroute(topo, family, 1, "a1", "a2", "a3") + mroute(topo, family, 2, "a1", "a4"))
    d.ctl("reload")
    assert {v.name for v in read_vifs(R, family)} == {"a1", "a3", "a4"}
    assert kernel(R, family) == expect(topo, family, {1: ("a3",), 2: ("a4",)})
    assert forwarded(topo, family, 2, 2) == 10
    R.ip("link", "set", "z2", "name", "a2")
    R.ip("link", "set", "a2", "up")
    topo.wait_link_ready()
    wait_until(
        lambda: kernel(R, family) == expect(topo, family, {1: ("a2", "a3"), 2: ("a4",)}),
        timeout=30,
        what="route restored after the name came back",
    )
    assert forwarded(topo, family, 1, 0) == 10
    assert forwarded(topo, family, 2, 2) == 10
    assert "failed" not in d.log()


@pytest.mark.parametrize("what", ["file", "include", "folder"])
def test_unreadable_config_at_startup_exits_78(topology: Topo, what: str) -> None:
    """The main process reads the configuration unprivileged: an existing file,
    include or include folder it may not read is an error naming the file,
    the user and the fix, and the daemon exits 78 -- never a silently empty
    (or half) router, since the original reads it as root."""
    topo = topology(1)
    d = Daemon(topo.router, OUR_DAEMON, "", ctl_binary=OUR_CTL)
    inc = d.dir / "conf.d"
    inc.mkdir()
    (inc / "a.conf").write_text(mroute(topo, 4, 1, "a1", "a2"))
    write_conf(d, f"include {inc}/*.conf\n")
    inc.chmod(0o755)
    (inc / "a.conf").chmod(0o644)
    bad = {"file": Path(d.conf), "include": inc / "a.conf", "folder": inc}[what]
    bad.chmod(0o700 if what == "folder" else 0o600)  # root's only
    topo.on_close(d.stop)
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(timeout=30) == 78
    log = d.log()
    line = next((ln for ln in log.splitlines() if f"{bad}: the daemon's main process" in ln), "")
    assert "runs as " in line and "cannot read this" in line, log
    assert f"chmod {'o+rx' if what == 'folder' else 'o+r'} {bad}" in line, log
    assert "not found" not in log and "]: ready: " not in log, log
    assert kernel(topo.router, 4) == {}
    # -F as root: valid (exit 0), with a warning naming the file, the user and the fix
    r = topo.router.run(OUR_DAEMON, "-F", d.conf, check=False)
    assert r.returncode == 0, r.stderr
    assert f"{bad}: the daemon's main process runs as " in r.stderr, r.stderr
    assert "(warning)" in r.stderr
    bad.chmod(0o755 if what == "folder" else 0o644)
    r = topo.router.run(OUR_DAEMON, "-F", d.conf, check=False)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_unreadable_config_on_reload_is_rejected(topology: Topo) -> None:
    topo = topology(2)
    R = topo.router
    d = start_daemon(R, mroute(topo, 4, 1, "a1", "a2"), topo=topo)
    assert kernel(R, 4) == expect(topo, 4, {1: ("a2",)})
    write_conf(d, mroute(topo, 4, 1, "a1", "a3"))
    os.chmod(d.conf, 0o600)
    r = d.ctl("reload", check=False)
    assert r.returncode == 1
    assert f"{d.conf}: the daemon's main process runs as " in r.stderr, r.stderr
    assert "reload rejected" in r.stderr
    assert kernel(R, 4) == expect(topo, 4, {1: ("a2",)})  # unchanged
    assert forwarded(topo, 4, 1, 0) == 10
    os.chmod(d.conf, 0o644)
    d.ctl("restart")
    assert kernel(R, 4) == expect(topo, 4, {1: ("a3",)})


def test_sighup_during_startup_delay_does_not_kill(topology: Topo) -> None:
    """A reload requested while `-d` waits (e.g. a service manager's reload
    during boot) must not terminate the daemon: the config is read after anyway."""
    topo = topology(1)
    R = topo.router
    extra = ["-l", "debug", "-d", "2"]
    d = start_daemon(R, mroute(topo, 4, 1, "a1", "a2"), topo=topo, extra=extra, wait=False)
    wait_until(lambda: "waiting" in d.log(), timeout=30, what="-d announced")
    d.reload()
    wait_until(d.socket_ready, timeout=60, what="socket after the delay")
    assert kernel(R, 4) == expect(topo, 4, {1: ("a2",)})
    d.ctl("reload")
    assert d.running()
