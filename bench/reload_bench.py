"""Reload benchmark: ours versus Debian's smcrouted, a 3-line change in 10,000 routes.

For each daemon, in fresh network namespaces S -- R -- X1, X2 (tests/netns.py;
the router's interfaces are a1, a2, a3):

1. write N (default 10,000) exact IPv4 (S,G) routes ``mroute from a1 source
   10.0.1.2 group 225.20.x.y to a2``, start ``smcrouted -n`` and wait until
   the kernel MFC holds all N;
2. send ``--packets`` datagrams from S to each of ``--sample`` groups (routes
   that stay unchanged) so their kernel packet counters are non-zero;
3. start a netlink monitor in R (tests/mroute_monitor.py, subscribed to
   RTNLGRP_IPV4_MROUTE): it records every MFC add/replace/delete the kernel
   announces, i.e. every kernel MFC write, with a timestamp;
4. **3-line change**: rewrite the file with one route's OIFs modified (to
   ``a2 a3``), one route added, one removed; SIGHUP; measure
   * ``visible``: SIGHUP until ``/proc/net/ip_mr_cache`` of R shows all three
     changes (polled as fast as the file can be read; ``poll`` is the
     median time of one read+check, the resolution),
   * ``done``: SIGHUP until the PID file is touched (doc/SPEC.md §1: touched after
     each reload) -- the reload is over,
   * ``writes``: MFC writes the kernel announced from SIGHUP until the
     monitor has been quiet for ``--quiet`` seconds after ``done``
     (adds/replaces + deletes), and the last one's time (``last write``),
   * ``rewritten``: entries of unchanged routes that were written at all
     (any netlink event for their key: replaced in place, or deleted),
   * ``disrupted``: entries of unchanged routes that were deleted (and
     re-added), plus sampled entries whose packet counter went back
     (``counters reset``: K of the sampled routes that carried traffic);
5. **unchanged reload**: SIGHUP with the file untouched; ``done`` and
   ``writes`` as above.

Prints figures, asserts nothing.  Needs root.  Usage::

    sudo .venv/bin/python bench/reload_bench.py [-n 10000] [--impl ours,original]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from netns import (  # noqa: E402  (the harness lives with the tests)
    ORIGINAL_DAEMON,
    OUR_DAEMON,
    HarnessError,
    count_mfc,
    read_mfc,
    router_topology,
)
from reload_support import MrouteMonitor, start_daemon  # noqa: E402

IMPLS = {"ours": OUR_DAEMON, "original": ORIGINAL_DAEMON}
SOURCE = "10.0.1.2"

SENDER = """
import socket, struct, sys
groups = sys.argv[2:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
             struct.pack("=4s4si", bytes(4), bytes(4), socket.if_nametoindex("s0")))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 8)
for _ in range(int(sys.argv[1])):
    for g in groups:
        s.sendto(b"smct bench", (g, 5000))
"""


def group(i: int) -> str:
    """The i-th route's group (distinct for i < 65536)."""
    return f"225.20.{i // 256}.{i % 256}"


def line(i: int, oifs: str = "a2") -> str:
    return f"mroute from a1 source {SOURCE} group {group(i)} to {oifs}\n"


def proc_hex(addr: str) -> str:
    """How /proc/net/ip_mr_cache prints an IPv4 address (%08X of the __be32)."""
    return f"{int.from_bytes(ipaddress.IPv4Address(addr).packed, sys.byteorder):08X}"


@dataclass
class Result:
    impl: str
    error: str = ""
    start: float = 0.0
    visible: float | None = None
    poll: float = 0.0
    done: float | None = None
    last_write: float | None = None
    adds: int = 0
    dels: int = 0
    rewritten: int = 0
    disrupted: int = 0
    reset: int = 0
    sampled: int = 0
    touched: list[str] = field(default_factory=list)
    same_done: float | None = None
    same_adds: int = 0
    same_dels: int = 0
    same_last: float | None = None
    lost: bool = False


def wait_pid_touched(pidfile: str, before: int, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.stat(pidfile).st_mtime_ns != before:
                return time.monotonic()
        except FileNotFoundError:
            pass
        time.sleep(0.0005)
    return None


def settle(mon: MrouteMonitor, quiet: float, timeout: float) -> list[dict[str, object]]:
    """Events until none arrived for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    n = -1
    events = mon.events()
    while len(events) != n and time.monotonic() < deadline:
        n = len(events)
        time.sleep(quiet)
        events = mon.events()
    return events


def age(path: str) -> int:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 3600 * 10**9))
    return os.stat(path).st_mtime_ns


def measure(impl: str, n: int, args: argparse.Namespace) -> Result:
    res = Result(impl)
    binary = IMPLS[impl]
    if not os.access(binary, os.X_OK):
        res.error = f"{binary} missing"
        return res
    with router_topology(2) as topo:
        R = topo.router
        conf = "".join(line(i) for i in range(n))
        t0 = time.monotonic()
        try:
            d = start_daemon(R, conf, binary=binary, extra=["-l", "notice"], topo=topo)
        except HarnessError as e:
            res.error = str(e).splitlines()[0]
            return res
        deadline = t0 + args.timeout
        while count_mfc(R) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        if count_mfc(R) < n:
            res.error = f"only {count_mfc(R)} of {n} routes after {args.timeout} s"
            return res
        res.start = time.monotonic() - t0
        # traffic on a sample of routes that stay unchanged
        sample = list(range(0, n - 3, max(1, (n - 3) // args.sample)))[: args.sample]
        topo.sender.run(
            sys.executable, "-c", SENDER, str(args.packets), *(group(i) for i in sample)
        )
        before = {(e.source, e.group): e.packets for e in read_mfc(R)}
        res.sampled = sum(1 for i in sample if before.get((SOURCE, group(i)), 0) > 0)

        mon = MrouteMonitor(R, (4,)).start()
        topo.on_close(mon.stop)
        # the 3-line change: modify n-3, remove n-2, add n
        mod, rem, add = n - 3, n - 2, n
        new = "".join(line(i) for i in range(n) if i not in (mod, rem))
        new += line(mod, "a2 a3") + line(add)
        tmp = Path(d.conf + ".new")
        tmp.write_text(new)
        os.chmod(tmp, 0o644)
        os.replace(tmp, d.conf)
        src_hex = proc_hex(SOURCE)
        h_mod, h_rem, h_add = (f"{proc_hex(group(i))} {src_hex}" for i in (mod, rem, add))
        path = R.proc_path("ip_mr_cache")
        pid_before = age(d.pidfile)

        def changed() -> bool:
            with open(path) as fh:
                text = fh.read()
            rows = {ln[:17]: ln for ln in text.splitlines()}
            m = rows.get(h_mod)
            return h_add in rows and h_rem not in rows and m is not None and m.count(":") == 2

        polls: list[float] = []
        t_hup = time.monotonic()
        os.kill(d.pid, signal.SIGHUP)
        while time.monotonic() - t_hup < args.timeout:
            p0 = time.monotonic()
            ok = changed()
            polls.append(time.monotonic() - p0)
            if ok:
                res.visible = time.monotonic() - t_hup
                break
        res.poll = statistics.median(polls) if polls else 0.0
        t_done = wait_pid_touched(d.pidfile, pid_before, args.timeout)
        res.done = None if t_done is None else t_done - t_hup
        events = settle(mon, args.quiet, args.timeout)
        res.lost = any(e["op"] == "lost" for e in events)
        changed_keys = {group(i) for i in (mod, rem, add)}
        res.adds = sum(1 for e in events if e["op"] == "add")
        res.dels = sum(1 for e in events if e["op"] == "del")
        if events:
            res.last_write = max(float(e["t"]) for e in events if "t" in e) - t_hup
        unchanged_written = {str(e["group"]) for e in events if e.get("group") not in changed_keys}
        unchanged_deleted = {
            str(e["group"])
            for e in events
            if e["op"] == "del" and e.get("group") not in changed_keys
        }
        res.touched = sorted(
            f"{e['op']} {e.get('group')}" for e in events if e.get("group") in changed_keys
        )
        after = {(e.source, e.group): e.packets for e in read_mfc(R)}
        res.reset = sum(
            1
            for i in sample
            if after.get((SOURCE, group(i)), 0) < before.get((SOURCE, group(i)), 0)
        )
        reset_groups = {
            group(i)
            for i in sample
            if after.get((SOURCE, group(i)), 0) < before.get((SOURCE, group(i)), 0)
        }
        res.rewritten = len(unchanged_written)
        res.disrupted = len(unchanged_deleted | reset_groups)

        # the whole file again, unchanged
        n_before = len(events)
        pid_before = age(d.pidfile)
        t_hup = time.monotonic()
        os.kill(d.pid, signal.SIGHUP)
        t_done = wait_pid_touched(d.pidfile, pid_before, args.timeout)
        res.same_done = None if t_done is None else t_done - t_hup
        events = settle(mon, args.quiet, args.timeout)[n_before:]
        res.same_adds = sum(1 for e in events if e["op"] == "add")
        res.same_dels = sum(1 for e in events if e["op"] == "del")
        if events:
            res.same_last = max(float(e["t"]) for e in events if "t" in e) - t_hup
        res.lost = res.lost or any(e["op"] == "lost" for e in events)
        d.stop(timeout=args.timeout)
    return res


def fmt(t: float | None) -> str:
    return "-" if t is None else f"{t:.3f}s"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=10_000, help="routes (< 65533)")
    p.add_argument("--impl", default="ours,original")
    p.add_argument("--sample", type=int, default=50, help="unchanged routes carrying traffic")
    p.add_argument("--packets", type=int, default=5, help="packets per sampled route")
    p.add_argument("--quiet", type=float, default=1.0, help="monitor silence that ends a reload")
    p.add_argument("--timeout", type=float, default=300)
    args = p.parse_args()
    if os.geteuid() != 0:
        print("reload_bench: needs root (network namespaces)", file=sys.stderr)
        return 1
    results = []
    for impl in args.impl.split(","):
        print(f"measuring {impl} ...", file=sys.stderr, flush=True)
        results.append(measure(impl, args.n, args))
    print(f"\n{args.n} (S,G) routes; 3-line change (1 OIF list modified, 1 added, 1 removed)")
    head = (
        f"{'daemon':<9} {'start':>8} {'visible':>8} {'poll':>7} {'done':>8} "
        f"{'last write':>10} {'writes':>16} {'rewritten':>9} {'disrupted':>9} "
        f"{'counters reset':>14}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        if r.error:
            print(f"{r.impl:<9} error: {r.error}")
            continue
        writes = f"{r.adds + r.dels} ({r.adds}+/{r.dels}-)"
        print(
            f"{r.impl:<9} {fmt(r.start):>8} {fmt(r.visible):>8} {fmt(r.poll):>7} "
            f"{fmt(r.done):>8} {fmt(r.last_write):>10} {writes:>16} {r.rewritten:>9} "
            f"{r.disrupted:>9} {f'{r.reset} of {r.sampled}':>14}"
        )
    print("\nwrites on the 3 changed keys:")
    for r in results:
        if not r.error:
            summary = ", ".join(r.touched[:8]) + (" ..." if len(r.touched) > 8 else "")
            print(f"  {r.impl:<9} {summary}")
    print(f"\nunchanged file, SIGHUP ({args.n} routes)")
    head2 = f"{'daemon':<9} {'done':>8} {'last write':>10} {'writes':>16}"
    print(head2)
    print("-" * len(head2))
    for r in results:
        if not r.error:
            writes = f"{r.same_adds + r.same_dels} ({r.same_adds}+/{r.same_dels}-)"
            print(f"{r.impl:<9} {fmt(r.same_done):>8} {fmt(r.same_last):>10} {writes:>16}")
    if any(r.lost for r in results):
        print("\nwarning: the netlink monitor lost events (ENOBUFS); write counts are low bounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
