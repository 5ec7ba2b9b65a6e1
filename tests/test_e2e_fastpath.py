"""End to end: the privileged helper installs template-matched sources itself.

The main process pushes the helper a rule table (`Engine.helper_rules`); on a
NOCACHE upcall the helper writes the (S,G) at once and tells the main process
afterwards.  These tests stop the main process (SIGSTOP) so that only the
helper can have installed anything, then let it go on and check that it
recorded what the helper did (`show`), that a reload which removes the
template ends the helper's installs, and that exact routes a template covers
stay the main process's decision.  Needs root; each test in its own
namespaces (tests/netns.py).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from netns import Daemon, Netns, RouterTopology, wait_until
from test_e2e_templates import (
    FAMILIES,
    S,
    StartDaemon,
    flood,
    grp,
    kernel_rows,
    mfc,
    norm,
    started_receiver,
    wait_mfc,
)


@contextmanager
def main_stopped(d: Daemon) -> Iterator[None]:
    """The main process stopped (the helper and the janitor run on)."""
    os.kill(d.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(d.pid, signal.SIGCONT)


def never(predicate: Callable[[], bool], seconds: float) -> bool:
    """True if `predicate` stays false for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return False
        time.sleep(0.02)
    return True


def resolved(ns: Netns, fam: int) -> dict[tuple[str, str], tuple[str | None, tuple[str, ...]]]:
    """The kernel's resolved (S,G) entries (unresolved ones have no iif)."""
    return {k: v for k, v in mfc(ns, fam).items() if v[0] is not None}


def rows(d: Daemon) -> dict[tuple[str, str], tuple[str, tuple[str, ...]]]:
    return {(r["source"], r["group"]): (r["iif"], tuple(r["oifs"])) for r in kernel_rows(d)}


@FAMILIES
def test_helper_installs_while_main_process_is_stopped(
    fam: int, router_topo: RouterTopology, ours: StartDaemon
) -> None:
    topo = router_topo
    g, g_prefix = grp(fam, "7.1" if fam == 4 else "701"), grp(fam, "8.0" if fam == 4 else "800")
    g_in = grp(fam, "8.9" if fam == 4 else "809")
    plen = 24 if fam == 4 else 120
    d = ours(
        topo.router,
        f"mroute from a1 group {g} to a2\nmroute from a1 group {g_prefix}/{plen} to a2 a3\n",
    )
    rx1, rx2 = started_receiver(topo, 0, [g, g_in]), started_receiver(topo, 1, [g, g_in])
    src = S(fam, 1, 0x61)
    with main_stopped(d):
        flood(topo.sender, "s0", g, src, count=3)
        flood(topo.sender, "s0", g_in, src, count=3)
        wait_mfc(topo.router, fam, (norm(src), norm(g)), ("a1", ("a2",)), "helper install (*,G)")
        wait_mfc(topo.router, fam, (norm(src), norm(g_in)), ("a1", ("a2", "a3")), "(*,G/LEN)")
        flood(topo.sender, "s0", g, src, count=2, first=3)
        r1, r2 = rx1.stop(), rx2.stop()  # every packet arrived while it was stopped
    # the first packets too: queued, then released (sorted: the sender's packets
    # may enter the router's forwarding path from two CPUs' backlogs, out of order)
    assert sorted(r1.seqs(src, g)) == [0, 1, 2, 3, 4]
    assert sorted(r1.seqs(src, g_in)) == sorted(r2.seqs(src, g_in)) == [0, 1, 2]
    assert r2.count(src, g) == 0
    # the main process catches up: it shows what the helper installed, and
    # wrote nothing itself (the kernel's entries are the helper's, unchanged)
    want = {
        (norm(src), norm(g)): ("a1", ("a2",)),
        (norm(src), norm(g_in)): ("a1", ("a2", "a3")),
    }
    wait_until(lambda: rows(d) == want, timeout=10, what="show lists the helper's installs")
    assert "failed" not in d.log()
    # flush takes them away like any learned entry
    d.ctl("flush")
    wait_until(lambda: not resolved(topo.router, fam), timeout=10, what="flushed")


@FAMILIES
def test_reload_without_the_template_ends_helper_installs(
    fam: int, router_topo: RouterTopology, ours: StartDaemon
) -> None:
    topo = router_topo
    g = grp(fam, "7.2" if fam == 4 else "702")
    d = ours(topo.router, f"phyint a2 enable\nmroute from a1 group {g} to a2\n")
    src1, src2 = S(fam, 1, 0x62), S(fam, 1, 0x63)
    with main_stopped(d):
        flood(topo.sender, "s0", g, src1, count=2)
        wait_mfc(topo.router, fam, (norm(src1), norm(g)), ("a1", ("a2",)), "helper install")
    wait_until(lambda: len(rows(d)) == 1, timeout=10, what="main process caught up")
    d.write_conf("phyint a1 enable\nphyint a2 enable\n")
    d.ctl("reload")
    with main_stopped(d):
        flood(topo.sender, "s0", g, src2, count=2)
        # nothing may install src2 while the main process is stopped
        assert never(lambda: (norm(src2), norm(g)) in resolved(topo.router, fam), 1.5)
    # the main process decides: no template, a stop filter
    wait_mfc(topo.router, fam, (norm(src2), norm(g)), ("a1", ()), "stop filter")


@FAMILIES
def test_exact_route_a_template_covers_stays_the_main_process_decision(
    fam: int, router_topo: RouterTopology, ours: StartDaemon
) -> None:
    topo = router_topo
    g = grp(fam, "7.3" if fam == 4 else "703")
    g2 = grp(fam, "7.4" if fam == 4 else "704")
    exact, other = S(fam, 1, 0x64), S(fam, 1, 0x65)
    d = ours(
        topo.router,
        f"mroute from a1 group {g} to a2\n"
        f"mroute from a1 group {g2} to a2\n"
        f"mroute from a1 source {exact} group {g} to a3\n",
    )
    # the exact route is in the kernel; it is removed at run time (the OIF),
    # which makes it a stop filter for (exact, g): still the main process's
    d.ctl("remove", "a1", exact, g, "a3")
    wait_mfc(topo.router, fam, (norm(exact), norm(g)), ("a1", ()), "exact route, no OIFs")
    d.ctl("remove", "a1", exact, g)
    wait_until(lambda: not resolved(topo.router, fam), timeout=10, what="exact route gone")
    d.ctl("add", "a1", exact, g, "a3")  # back, covered by the (*,g) template
    wait_mfc(topo.router, fam, (norm(exact), norm(g)), ("a1", ("a3",)), "exact route back")
    d.ctl("remove", "a1", exact, g, "a3")  # a stop filter again, and covered
    wait_mfc(topo.router, fam, (norm(exact), norm(g)), ("a1", ()), "stop filter")
    with main_stopped(d):
        # the (*,g) template covers an exact route: the helper leaves its
        # group (and the templates after it) to the main process
        flood(topo.sender, "s0", g, other, count=2)
        flood(topo.sender, "s0", g2, other, count=2)
        assert never(lambda: len(resolved(topo.router, fam)) > 1, 1.5)
    wait_mfc(topo.router, fam, (norm(other), norm(g)), ("a1", ("a2",)), "main process learns")
    wait_mfc(topo.router, fam, (norm(other), norm(g2)), ("a1", ("a2",)), "main process learns")
    assert mfc(topo.router, fam)[(norm(exact), norm(g))] == ("a1", ())  # the stop filter won
