"""Where a new source's first packet waits: the installing process, traced.

Starts one daemon (``upcall_bench``'s router topology and template), sends
``--trials`` new sources one at a time (a 50 ms stream each) and records,
with ftrace (an instance of its own under /sys/kernel/tracing/instances,
clock ``mono`` like the sender's timestamps), the scheduler wake-ups and
system calls of the process that writes the (S,G): ours' privileged helper,
the original's daemon.  Prints the median of each phase per source, in us:

    wake      the kernel wakes it (upcall queued) -> its poll/select returns
    to_read   -> the read/recvmsg of the upcall begins
    read      the read itself
    to_write  -> setsockopt(MRT_ADD_MFC) begins (decoding, matching)
    write     MRT_ADD_MFC (the kernel forwards the queued packets)
    to_sleep  -> back in poll/select (what follows the write)
    t0_write  the sender's first frame -> MRT_ADD_MFC done
    t0_seen   (``--watcher``) the sender's first frame -> the resolved entry's
              time as ``upcall_bench``'s watcher takes it, with a receiver of
              the group running as in ``upcall_bench.first_packet``: ``plain``
              is the watcher as it was before 2026-11-29 (woken by every
              announcement, normal priority), ``prompt`` as it is now

With several ``--impl`` (``NAME=PATH`` names a build), the daemons run at
once, each in its own topology, and the new sources alternate between them
(as ``first_packet_paired.py``): the machine's load, which moves these
figures more than most changes do, is then the same for each.

Tracing costs about 1 us per event.  Prints figures, asserts nothing.
Needs root and tracefs.

Usage: ``sudo .venv/bin/python bench/upcall_trace.py [--impl ours|original|PATH|NAME=PATH ...]
[--family 4|6] [--trials 30] [--watcher plain|prompt]``
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import itertools
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests")]  # the harness: tests/netns.py

import netns  # noqa: E402
import upcall_bench  # noqa: E402

QUIET = ["-l", "notice"]  # as everyday_bench: no log line per new source

EVENTS = ("sched/sched_wakeup", "raw_syscalls/sys_enter", "raw_syscalls/sys_exit")
SYSCALLS = {0: "read", 7: "poll", 23: "select", 45: "recvfrom", 47: "recvmsg", 54: "setsockopt",
            232: "epoll_wait", 270: "pselect6", 271: "ppoll", 281: "epoll_pwait"}  # fmt: skip
WAITS = {"poll", "select", "pselect6", "ppoll", "epoll_wait", "epoll_pwait"}
READS = {"read", "recvfrom", "recvmsg"}
LINE = re.compile(r"\s*.+?-(\d+)\s+\[\d+\].*?\s([\d.]+): (\w+): (.*)")


class Trace:
    """An ftrace instance recording `tids`' wake-ups and system calls."""

    def __init__(self, tids: list[int]) -> None:
        self.dir = Path(f"/sys/kernel/tracing/instances/smcroute-bench-{os.getpid()}")
        self.dir.mkdir()
        self.w("trace_clock", "mono")
        self.w("buffer_size_kb", "8192")
        self.w("events/sched/sched_wakeup/filter", " || ".join(f"pid == {t}" for t in tids))
        for e in EVENTS[1:]:
            self.w(f"events/{e}/filter", " || ".join(f"common_pid == {t}" for t in tids))
        for e in EVENTS:
            self.w(f"events/{e}/enable", "1")

    def w(self, name: str, value: str) -> None:
        (self.dir / name).write_text(value)

    def stop(self) -> list[tuple[int, int, str, str]]:
        """(ns, tid, event, details) in time order; removes the instance."""
        self.w("tracing_on", "0")
        out = []
        for line in (self.dir / "trace").read_text().splitlines():
            m = LINE.match(line)
            if m and not line.startswith("#"):
                tid, ts, name, rest = m.groups()
                out.append((round(float(ts) * 1e9), int(tid), name, rest))
        for e in EVENTS:
            self.w(f"events/{e}/enable", "0")
        self.dir.rmdir()
        return sorted(out)


def phases(
    events: list[tuple[int, int, str, str]], t0: int, tids: set[int]
) -> dict[str, float] | None:
    """The phases (us) of the first upcall `tids` handled after `t0`, or None."""
    marks: dict[str, int] = {}
    order = ["wake", "woke", "read", "read_done", "write", "write_done", "sleep"]
    for ts, tid, name, rest in events:
        if ts < t0 or not (tid in tids or (name == "sched_wakeup" and wakes(rest, tids))):
            continue
        step = order[len(marks)] if len(marks) < len(order) else None
        if step is None:
            break
        nr = int(m.group(1)) if (m := re.search(r"NR (\d+)", rest)) else -1
        call = SYSCALLS.get(nr, "")
        hit = {
            "wake": name == "sched_wakeup",
            "woke": name == "sys_exit" and call in WAITS,
            "read": name == "sys_enter" and call in READS,
            "read_done": name == "sys_exit" and call in READS,
            "write": name == "sys_enter" and call == "setsockopt",
            "write_done": name == "sys_exit" and call == "setsockopt",
            "sleep": name == "sys_enter" and call in WAITS,
        }[step]
        if hit:
            marks[step] = ts
    if len(marks) < len(order):
        return None
    us = [(marks[b] - marks[a]) / 1000 for a, b in itertools.pairwise(order)]
    names = ("wake", "to_read", "read", "to_write", "write", "to_sleep")
    return {**dict(zip(names, us, strict=True)), "t0_write": (marks["write_done"] - t0) / 1000}


def wakes(rest: str, tids: set[int]) -> bool:
    """A sched_wakeup's details name one of `tids`."""
    m = re.search(r"\bpid=(\d+)", rest)
    return m is not None and int(m.group(1)) in tids


def binaries(spec: str) -> tuple[str, str, str]:
    """(name, smcrouted, smcroutectl) of `ours`, `original`, a path or NAME=PATH."""
    name, _, path = spec.rpartition("=")
    known = {
        "ours": (netns.OUR_DAEMON, netns.OUR_CTL),
        "original": (netns.ORIGINAL_DAEMON, netns.ORIGINAL_CTL),
    }
    binary, ctl = known.get(path, (path, str(Path(path).with_name("smcroutectl"))))
    return name or path, binary, ctl


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--impl",
        action="append",
        help="ours, original, a smcrouted path or NAME=PATH; repeat it to run them at once",
    )
    p.add_argument("--family", type=int, choices=(4, 6), default=4)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--watcher", choices=("plain", "prompt"), help="time as the bench does, too")
    args = p.parse_args(argv)
    impls = [binaries(spec) for spec in args.impl or ["ours"]]
    group = "225.1.1.1" if args.family == 4 else "ff2e::1"
    conf = "mroute from a1 group 225.1.1.1 to a2\nmroute from a1 group ff2e::1 to a2\n"
    load = [Path("/proc/loadavg").read_text().split()[0]]
    srcs: list[str] = []
    seen: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        runs: dict[str, tuple[netns.RouterTopology, set[int], list[int]]] = {}
        watch: dict[str, tuple[netns.Receiver, upcall_bench.Watcher]] = {}
        for name, binary, ctl in impls:
            topo = stack.enter_context(netns.router_topology(1))
            d = stack.enter_context(
                netns.Daemon(topo.router, binary, conf, ctl_binary=ctl, extra_args=QUIET)
            )
            time.sleep(0.5)
            tree = netns.process_tree(d.pid)
            helper = [p for p in tree if "privileged helper" in netns.cmdline(p)]
            pid = helper[0] if helper else d.pid
            runs[name] = (topo, {int(t) for t in os.listdir(f"/proc/{pid}/task")}, [])
            if args.watcher:
                rx = netns.Receiver(topo.receivers[0], "r0", [group], topology=topo).start()
                watch[name] = (rx, upcall_bench.Watcher(topo.router, args.watcher == "prompt"))
        trace = Trace(sorted(set().union(*(tids for _topo, tids, _t0 in runs.values()))))
        try:
            for t in range(args.trials):
                if args.family == 6:
                    src = str(ipaddress.ip_address(f"fd00:21::{t % 250 + 1:x}"))
                else:
                    src = f"10.21.0.{t % 250 + 1}"
                srcs.append(src)
                for topo, _tids, t0 in runs.values():
                    res = upcall_bench.flood(
                        topo.sender, src, group, count=50, rate=1000, times=True
                    )
                    t0.append(res["t0"][0])  # type: ignore[index]
                    time.sleep(0.05)
        finally:
            events = trace.stop()
        time.sleep(0.3)
        for name, (rx, watcher) in watch.items():
            resolved, t0 = watcher.stop(), runs[name][2]
            rx.stop(linger_ms=100)
            pairs = zip(srcs, t0, strict=True)
            seen[name] = [(resolved[s] - t) / 1000 for s, t in pairs if s in resolved]
    load.append(Path("/proc/loadavg").read_text().split()[0])
    names = ("wake", "to_read", "read", "to_write", "write", "to_sleep", "t0_write")
    found = {
        name: [ph for ph in (phases(events, t, tids) for t in t0) if ph is not None]
        for name, (_topo, tids, t0) in runs.items()
    }
    print(f"IPv{args.family}, {args.trials} sources per daemon; medians, us (sources traced)")
    print(f"{'':9} " + " ".join(f"{n[:12]:>12}" for n in found))
    for step in names:
        cells = (statistics.median(ph[step] for ph in f) if f else math.nan for f in found.values())
        print(f"{step:9} " + " ".join(f"{c:12.1f}" for c in cells))
    if seen:
        cells = (statistics.median(seen[n]) if seen[n] else math.nan for n in found)
        print(f"{'t0_seen':9} " + " ".join(f"{c:12.1f}" for c in cells))
    print(f"{'traced':9} " + " ".join(f"{len(f):12}" for f in found.values()))
    print(f"load average: {' -> '.join(load)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
