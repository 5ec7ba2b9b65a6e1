"""Upcall benchmark: how fast new sources get a route, ours versus Debian's smcrouted.

Topology (tests/netns.py): S --(s0|a1)-- R --(a2|r0)-- X1. The router runs
one daemon at a time with the equivalent config ``mroute from a1 group G to
a2`` (a (*,G) template). Traffic is written as raw frames by
``tests/mcast_flood.py`` (any source address, no configuration needed).

1. **First packet -> installed entry**, one new source at a time, at 1,000
   and 20,000 packets per second: ``--trials`` sources, each a stream of
   ``--stream-ms`` of packets.  The latency is from the moment the sender
   wrote the source's first frame (CLOCK_MONOTONIC, printed by the sender)
   to the RTM_NEWROUTE notification of the *resolved* (S,G) (a watcher on
   RTNLGRP_IPV4_MROUTE in the router's namespace; the kernel's own
   unresolved-entry notification is skipped).  "lost at start" is the number
   of sequence numbers missing at the receiver per stream (the kernel queues
   4 packets while a (S,G) is unresolved and drops the rest).
2. **1,000 new sources back to back** (one packet each, flat out): share of
   first packets delivered to the receiver, and when the last entry was in.
3. **50,000-source flood** (one packet each, flat out): CPU (utime+stime
   from /proc/PID/stat, from just before the flood until the MFC has been
   stable for 2 s) and peak RSS of every daemon process (ours: the parent
   and ``smcrouted: privileged helper``), and how many entries got
   installed (ours caps learned entries at ``--max-learned``, default
   20000).

Daemons: ``original`` (/usr/sbin/smcrouted, Debian 2.5.6), ``ours``
(.venv/bin/smcrouted) and ``ours-zl`` (ours with ``--zero-loss``: a kernel
(*,G) entry, so no upcall and no install at all -- section 1 reports its
losses only).  Prints figures, asserts nothing. Needs root.

Usage: ``bench/upcall_bench.py [--impl original,ours,ours-zl] [--trials 40]
[--flood 50000]``
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from netns import (  # noqa: E402  (the harness lives with the tests)
    ORIGINAL_CTL,
    ORIGINAL_DAEMON,
    OUR_CTL,
    OUR_DAEMON,
    Daemon,
    Netns,
    Receiver,
    RouterTopology,
    cmdline,
    process_tree,
    read_mfc,
    router_topology,
)

FLOOD = REPO / "tests" / "mcast_flood.py"
GROUP = "225.1.1.1"
IMPLS: dict[str, tuple[str, str, list[str]]] = {
    "original": (ORIGINAL_DAEMON, ORIGINAL_CTL, []),
    "ours": (OUR_DAEMON, OUR_CTL, []),
    "ours-zl": (OUR_DAEMON, OUR_CTL, ["--zero-loss"]),
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def flood(ns: Netns, source: str, group: str = GROUP, **kw: object) -> dict[str, object]:
    argv = [sys.executable, str(FLOOD), "flood", "--iface", "s0", "--group", group]
    argv += ["--source", source]
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        argv += [flag] if v is True else [flag, str(v)]
    out = ns.run(*argv, timeout=600).stdout
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


class Watcher:
    """`mcast_flood.py watch` in the router's namespace: resolved-entry times.

    `prompt`: the watcher is woken by resolved entries only and runs at
    once (see `first_packet`)."""

    def __init__(self, ns: Netns, prompt: bool = False) -> None:
        self.proc = ns.popen(
            [
                sys.executable,
                str(FLOOD),
                "watch",
                *(["--resolved", "--realtime"] if prompt else []),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "READY":
            raise RuntimeError("watcher failed")

    def stop(self) -> dict[str, int]:
        """First resolved RTM_NEWROUTE time (ns) per source."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        self.proc.wait()
        first: dict[str, int] = {}
        for line in out.splitlines():
            kind, _fam, src, _grp, t = line.split()
            if kind == "NEW" and src not in first:
                first[src] = int(t)
        return first


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


@dataclass
class Stream:
    rate: int
    lat_ms: list[float]
    lost: list[int]
    sent: int


def first_packet(
    topo: RouterTopology,
    impl: str,
    rate: int,
    trials: int,
    stream_ms: int,
    base: int,
    group: str = GROUP,
) -> Stream:
    """`trials` new sources, one after the other, each streaming for `stream_ms`.

    The watcher is prompt: the kernel announces each new source's unresolved
    entry along with its upcall, and the resolved one from within the
    daemon's write, which wakes the receiver of the released packets as well.
    A watcher that handled the first (~150-220 us of Python) competed with the
    daemon for the CPUs and timed the second only once done with it; one that
    waited for its turn after the receiver and the rest of the daemon's work
    timed those too.  Filtered and SCHED_FIFO, it is woken by the resolved
    entry alone and runs at once: the figure is the write plus ~50 us (the
    watcher's own wake-up and read), for any daemon."""
    count = max(8, rate * stream_ms // 1000)
    rx = Receiver(topo.receivers[0], "r0", [group], topology=topo).start()
    w = Watcher(topo.router, prompt=True)
    t0: dict[str, int] = {}
    for t in range(trials):
        if ":" in group:
            src = str(ipaddress.ip_address(f"fd00:{base:x}::{t // 250:x}:{t % 250 + 1:x}"))
        else:
            src = f"10.{base}.{t // 250}.{t % 250 + 1}"
        res = flood(topo.sender, src, group, count=count, rate=rate, times=True)
        t0[src] = res["t0"][0]  # type: ignore[index]
        time.sleep(0.05)
    time.sleep(0.3)
    installed = w.stop()
    got = rx.stop(linger_ms=300)
    lat = [(installed[s] - t0[s]) / 1e6 for s in t0 if s in installed]
    lost = [count - len(set(got.seqs(s, group))) for s in t0]
    return Stream(rate, lat, lost, count)


def burst(topo: RouterTopology, n: int, base: int) -> tuple[float, float]:
    """n new sources back to back: (share of first packets delivered, seconds to last install)."""
    rx = Receiver(topo.receivers[0], "r0", [GROUP], topology=topo).start()
    w = Watcher(topo.router)
    t_start = time.monotonic_ns()
    flood(topo.sender, f"10.{base}.0.1", sources=n)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if sum(1 for e in read_mfc(topo.router) if e.iif is not None) >= n:
            break
        time.sleep(0.05)
    time.sleep(0.5)
    got = rx.stop(linger_ms=1000)
    installed = w.stop()
    delivered = sum(1 for f in got.flows.values() if 0 in f.seqs)
    last = (max(installed.values()) - t_start) / 1e9 if installed else float("nan")
    return delivered / n, last


def ctl_rtt(sock_path: str) -> float | None:
    """One control request (`show interfaces`) over our daemon's socket: ms."""
    from smcroute.ipc.codec import encode_request

    t = time.perf_counter()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(sock_path)
            s.sendall(encode_request("show", ["interfaces"]))
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    return None
                buf += chunk
    except OSError:
        return None
    return (time.perf_counter() - t) * 1000


def flood_cost(d: Daemon, topo: RouterTopology, n: int, base: int) -> dict[str, object]:
    pids = process_tree(d.pid)
    names = {
        p: "helper" if "privileged helper" in t else "janitor" if "janitor" in t else "daemon"
        for p, t in ((p, cmdline(p)) for p in pids)
    }  # the janitor (idle) must not hide the main process's figures
    before = {p: cpu_ticks(p) for p in pids}
    peak = {p: rss(p) for p in pids}
    start_rss = dict(peak)
    argv = [sys.executable, str(FLOOD), "flood", "--iface", "s0", "--group", GROUP]
    argv += ["--source", f"10.{base}.0.1", "--sources", str(n)]
    t0 = time.monotonic()
    sender = topo.sender.popen(argv, stdout=subprocess.DEVNULL)
    last_count, stable_since = -1, time.monotonic()
    count = 0
    rtts: list[float] = []
    ours = len(pids) > 1  # our daemon: parent + privileged helper
    while True:
        if ours and sender.poll() is None:
            rtt = ctl_rtt(d.sock)
            rtts.append(rtt if rtt is not None else float("inf"))
        for p in pids:
            with contextlib.suppress(OSError):
                peak[p] = max(peak[p], rss(p))
        with open(topo.router.proc_path("ip_mr_cache"), "rb") as fh:
            count = max(fh.read().count(b"\n") - 1, 0)
        now = time.monotonic()
        if count != last_count:
            last_count, stable_since = count, now
        if sender.poll() is not None and now - stable_since >= 2.0:
            break
        if now - t0 > 120:
            break
        time.sleep(0.1)
    resolved = sum(1 for e in read_mfc(topo.router) if e.iif is not None)
    out: dict[str, object] = {"resolved": resolved, "wall_s": stable_since - t0, "rtts": rtts}
    for p in pids:
        with contextlib.suppress(OSError):
            out[names[p]] = (
                (cpu_ticks(p) - before[p]) / CLK_TCK,
                start_rss[p],
                peak[p],
            )
    return out


def run_impl(impl: str, args: argparse.Namespace) -> None:
    binary, ctl, extra = IMPLS[impl]
    if not os.access(binary, os.X_OK):
        print(f"{impl}: {binary} missing, skipped")
        return
    conf = f"mroute from a1 group {GROUP} to a2\n"
    with router_topology(1) as topo:
        d = Daemon(topo.router, binary, conf, ctl_binary=ctl, extra_args=["-l", "notice", *extra])
        with d:
            time.sleep(0.5)
            for i, rate in enumerate(args.rates):
                s = first_packet(topo, impl, rate, args.trials, args.stream_ms, 20 + i)
                lat = (
                    f"p50 {pct(s.lat_ms, 0.5):7.2f} ms  p99 {pct(s.lat_ms, 0.99):7.2f} ms"
                    if s.lat_ms
                    else "no install (kernel (*,G))"
                )
                print(
                    f"{impl:9} {rate:6} pps  first packet -> installed: {lat}  "
                    f"lost at start: mean {statistics.mean(s.lost):5.1f} max {max(s.lost):3} "
                    f"of {s.sent} ({len(s.lat_ms)}/{args.trials} timed)",
                    flush=True,
                )
            d.ctl("flush", check=False)
            time.sleep(0.5)
            share, last = burst(topo, args.burst, 30)
            print(
                f"{impl:9} {args.burst} new sources back to back: first packets delivered "
                f"{share * 100:5.1f}%  last entry at {last:5.2f} s",
                flush=True,
            )
            d.ctl("flush", check=False)
            time.sleep(11)  # let the kernel's unresolved entries of the burst expire
        for flavour, more in (("", []), (" --max-learned 60000", ["--max-learned", "60000"])):
            if impl == "original" and more:
                continue
            if impl == "ours-zl":
                break  # same learning path as ours
            d = Daemon(
                topo.router,
                binary,
                conf,
                ctl_binary=ctl,
                extra_args=["-l", "notice", *extra, *more],
            )
            with d:
                time.sleep(0.5)
                res = flood_cost(d, topo, args.flood, 40)
                procs = "  ".join(
                    f"{k}: cpu {v[0]:5.2f} s rss {v[1] / 1024:5.1f}->{v[2] / 1024:5.1f} MiB"
                    for k, v in res.items()
                    if isinstance(v, tuple)
                )
                rtts = res["rtts"]
                assert isinstance(rtts, list)
                ctl = (
                    f"  control socket during the flood: p50 {pct(rtts, 0.5):.1f} ms "
                    f"p99 {pct(rtts, 0.99):.1f} ms max {max(rtts):.1f} ms ({len(rtts)} requests)"
                    if rtts
                    else ""
                )
                print(
                    f"{impl + flavour:26} {args.flood} sources: {res['resolved']:6} installed, "
                    f"settled {res['wall_s']:5.1f} s  {procs}{ctl}",
                    flush=True,
                )
            time.sleep(11)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--impl", default="original,ours,ours-zl")
    p.add_argument("--rates", default="1000,20000")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--stream-ms", type=int, default=50)
    p.add_argument("--burst", type=int, default=1000)
    p.add_argument("--flood", type=int, default=50000)
    args = p.parse_args()
    args.rates = [int(r) for r in args.rates.split(",")]
    print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs; group {GROUP}, (*,G) a1 -> a2")
    for impl in args.impl.split(","):
        run_impl(impl, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
