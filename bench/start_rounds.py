"""Start-up with N routes, daemons in turn, many rounds: medians side by side.

`everyday_bench.py --only start` starts each daemon once per size, which on
a shared machine moves by more than a change of a few tens of ms.  This
starts each daemon given (ours, the original, and any other build, e.g. a
worktree of `main` before a change) once per round, in turn, with the same
topology and configuration as `startup_bench.py` (exact (S,G) routes from
a1 to a2 a3), and prints each one's median and minimum time from exec
until all N entries are in the kernel, and the median against the
original's, and each one's CPU time from exec until then (schedstat, every
thread; medians): the main process and, for ours, the helper and janitor
together -- on a loaded machine, where wall times move by tens of ms from
round to round, the CPU a start costs moves far less.  Prints figures,
asserts nothing.  Needs root.

    .venv/bin/python bench/start_rounds.py                        # 1,000 IPv4, 11 rounds
    .venv/bin/python bench/start_rounds.py --family 6 --rounds 21
    .venv/bin/python bench/start_rounds.py --daemon before=/tmp/base/.venv/bin/smcrouted
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import startup_bench


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--routes", type=int, default=1000)
    ap.add_argument("--family", type=int, choices=(4, 6), default=4)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument(
        "--daemon", action="append", default=[], metavar="NAME=PATH", help="another smcrouted"
    )
    a = ap.parse_args(argv)
    daemons = {"ours": startup_bench.IMPLS["ours"], "original": startup_bench.IMPLS["original"]}
    for spec in a.daemon:
        name, _, path = spec.partition("=")
        daemons[name] = (os.path.abspath(path), startup_bench.IMPLS["ours"][1])
    startup_bench.IMPLS.update(daemons)
    args = argparse.Namespace(timeout=a.timeout, stop_timeout=30, show_routes=-1, repeat=1)
    times: dict[str, list[float]] = {name: [] for name in daemons}
    cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in daemons}
    notes: dict[str, str] = {}
    for _ in range(a.rounds):
        for name in daemons:
            res = startup_bench.run_one(name, a.routes, args, a.family)
            if res.ready_s is None:
                notes[name] = res.status
            else:
                times[name].append(res.ready_s)
            if res.cpu_ms is not None:
                cpu[name].append(res.cpu_ms)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"start, {a.routes:,} IPv{a.family} routes, {a.rounds} rounds (load {load}):")
    orig = statistics.median(times["original"]) if times["original"] else None
    for name, ts in times.items():
        if not ts:
            print(f"  {name:10} {notes.get(name, 'no run')}")
            continue
        med = statistics.median(ts)
        ratio = f"  {med / orig:5.2f} x original" if orig and name != "original" else ""
        print(f"  {name:10} median {med:.3f} s  min {min(ts):.3f} s{ratio}  {notes.get(name, '')}")
    print("CPU from exec until all are in (medians, ms): main process / the others")
    for name, pairs in cpu.items():
        if pairs:
            main_ms = statistics.median(p[0] for p in pairs)
            rest_ms = statistics.median(p[1] for p in pairs)
            print(f"  {name:10} {main_ms:7.1f} / {rest_ms:5.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
