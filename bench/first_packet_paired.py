"""First packet of a new source, daemons side by side under the same load.

`everyday_bench.py --only first` measures one daemon, then the other, a
minute apart: on a shared machine the load moves in between, and the
original's own p50 moves 2x from run to run.  Here every daemon runs at
once, each in its own router topology (tests/netns.py), and the new sources
alternate between them (source i to each daemon in turn), so each trial of
one daemon has a trial of every other one within ~0.3 s.  Figures as in
`upcall_bench.first_packet`: first packet sent -> resolved (S,G)
notification, p50/p99; packets lost at stream start (mean per stream); the
ratio to the original's figure of the same run.  Prints figures, asserts
nothing.  Needs root.

Usage: ``sudo .venv/bin/python bench/first_packet_paired.py [--family 4|6]
[--rate 1000] [--trials 40] [--daemon NAME=PATH ...]`` (ours is
``.venv/bin/smcrouted`` unless a daemon named ``ours`` is given).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests")]  # the harness: tests/netns.py

import netns  # noqa: E402
import upcall_bench  # noqa: E402

QUIET = ["-l", "notice"]  # as everyday_bench: no log line per new source

CONF = "mroute from a1 group 225.1.1.1 to a2\nmroute from a1 group ff2e::1 to a2\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", type=int, choices=(4, 6), default=4)
    p.add_argument("--rate", type=int, default=1000, help="packets per second per stream")
    p.add_argument("--trials", type=int, default=40, help="new sources per daemon")
    p.add_argument("--daemon", action="append", default=[], metavar="NAME=PATH")
    p.add_argument(
        "--plain-watcher",
        action="store_true",
        help="time with a watcher woken by every announcement, at normal priority (as before "
        "2026-11-29; see upcall_bench.first_packet)",
    )
    args = p.parse_args(argv)
    daemons = {
        "ours": (netns.OUR_DAEMON, netns.OUR_CTL),
        "original": (netns.ORIGINAL_DAEMON, netns.ORIGINAL_CTL),
    }
    for spec in args.daemon:
        name, _, path = spec.partition("=")
        daemons[name] = (path, str(Path(path).with_name("smcroutectl")))
    group = "225.1.1.1" if args.family == 4 else "ff2e::1"
    count = max(8, args.rate * 50 // 1000)  # a 50 ms stream
    load = [Path("/proc/loadavg").read_text().split()[0]]
    with contextlib.ExitStack() as stack:
        runs = {}
        for name, (binary, ctl) in daemons.items():
            topo = stack.enter_context(netns.router_topology(1))
            stack.enter_context(
                netns.Daemon(topo.router, binary, CONF, ctl_binary=ctl, extra_args=QUIET)
            )
            rx = netns.Receiver(topo.receivers[0], "r0", [group], topology=topo).start()
            watcher = upcall_bench.Watcher(topo.router, prompt=not args.plain_watcher)
            runs[name] = (topo, rx, watcher, dict[str, int]())
        time.sleep(0.5)
        for t in range(args.trials):
            if args.family == 6:
                src = str(ipaddress.ip_address(f"fd00:21::{t // 250:x}:{t % 250 + 1:x}"))
            else:
                src = f"10.21.{t // 250}.{t % 250 + 1}"
            for topo, _rx, _w, t0 in runs.values():
                res = upcall_bench.flood(topo.sender, src, group, count=count, rate=args.rate,
                                         times=True)  # fmt: skip
                t0[src] = res["t0"][0]  # type: ignore[index]
                time.sleep(0.05)
        time.sleep(0.3)
        figures = {}
        for name, (_topo, rx, watcher, t0) in runs.items():
            resolved, got = watcher.stop(), rx.stop(linger_ms=300)
            lat = [(resolved[s] - t0[s]) / 1e6 for s in t0 if s in resolved]
            lost = statistics.mean(count - len(set(got.seqs(s, group))) for s in t0)
            figures[name] = (upcall_bench.pct(lat, 0.5), upcall_bench.pct(lat, 0.99), lost)
    load.append(Path("/proc/loadavg").read_text().split()[0])
    base = figures["original"]
    how = "plain" if args.plain_watcher else "prompt"
    print(f"IPv{args.family}, {args.rate} pps, {args.trials} new sources per daemon, {how} watcher")
    print(f"{'daemon':10} {'p50 ms':>8} {'p99 ms':>8} {'lost':>6}  p50/orig p99/orig")
    for name, (p50, p99, lost) in figures.items():
        ratios = f"{p50 / base[0]:8.2f} {p99 / base[1]:8.2f}"
        print(f"{name:10} {p50:8.3f} {p99:8.3f} {lost:6.2f}  {ratios}")
    print(f"load average: {' -> '.join(load)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
