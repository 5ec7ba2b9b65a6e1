"""Is the operator served while other clients attack the control socket?
Ours versus Debian's original, side by side (issue 12, part 3).

    sudo .venv/bin/python bench/ctl_attack_bench.py                 # both daemons
    sudo .venv/bin/python bench/ctl_attack_bench.py --impl ours --seconds 5

For each daemon, in a fresh network namespace, with one route configured, and
for each attack of tests/ctl_attack.py:

- `none`: nothing (the baseline);
- `idle 100`: 100 connections opened and never used;
- `reconnecting 64 + storm N/s`: 64 idle connections re-opened as soon as the
  daemon closes one, plus a client connecting and closing N times a second;
- `storm max`: one client connecting and closing as fast as it can;
- `10 MB line` / `10 MB requests`: a client sending 10 MB in one line, or
  10 MB of `show` requests whose answers it never reads;

it runs `smcroutectl show` (from the host: the socket is a path) `--repeat`
times during the attack and prints how many succeeded, their median and worst
wall time (including smcroutectl's own start-up: compare with `none`), the
main process's CPU use over the attack (percent of one core: utime + stime
from /proc), and the rate of the storm's connections.  Prints figures, never
asserts; the machine may be loaded by other work: repeat and compare medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import ctl_attack
import netns

IMPLS = {
    "ours": (netns.OUR_DAEMON, netns.OUR_CTL),
    "original": (netns.ORIGINAL_DAEMON, netns.ORIGINAL_CTL),
}
TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


class Attack:
    """One attack, started and stopped around the operator's commands."""

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path
        self.parts: list[ctl_attack.Idle | ctl_attack.Storm] = []
        self.sender: threading.Thread | None = None
        self.storm: ctl_attack.Storm | None = None

    def start(self) -> None:
        n = self.name
        if n == "idle 100":
            self.parts.append(ctl_attack.Idle(self.path, 100).start())
        elif n.startswith("reconnecting"):
            rate = float(n.rsplit(" ", 1)[1].removesuffix("/s"))
            self.parts.append(ctl_attack.Idle(self.path, 64, reconnect=True).start())
            self.storm = ctl_attack.Storm(self.path, rate).start()
            self.parts.append(self.storm)
        elif n == "storm max":
            self.storm = ctl_attack.Storm(self.path).start()
            self.parts.append(self.storm)
        elif n.startswith("10 MB"):
            pipelined = n == "10 MB requests"
            self.sender = threading.Thread(
                target=ctl_attack.send_big,
                args=(self.path, 10 << 20),
                kwargs={"pipelined": pipelined},
            )
            self.sender.start()

    def stop(self) -> None:
        for p in self.parts:
            p.stop()
        if self.sender is not None:
            self.sender.join(timeout=60)


def operator(ctl: str, sock: str, repeat: int, gap: float) -> tuple[int, list[float]]:
    ok, times = 0, []
    for _ in range(repeat):
        t = time.perf_counter()
        try:
            r = subprocess.run([ctl, "-u", sock, "show"], capture_output=True, timeout=10)
            good = r.returncode == 0 and b"225.1.1.1" in r.stdout
        except subprocess.TimeoutExpired:
            good = False
        times.append(time.perf_counter() - t)
        ok += good
        time.sleep(gap)
    return ok, times


def run(impl: str, attacks: list[str], args: argparse.Namespace) -> dict[str, str]:
    binary, ctl = IMPLS[impl]
    out: dict[str, str] = {}
    with netns.router_topology(1) as topo:
        conf = f"mroute from a1 source {topo.source4} group 225.1.1.1 to a2\n"
        for name in attacks:
            d = netns.Daemon(topo.router, binary, conf, ctl_binary=ctl, extra_args=[])
            d.start()
            try:
                attack = Attack(name, d.sock)
                attack.start()
                time.sleep(0.5)  # let it settle (connections made, storm running)
                c0, t0 = cpu_ticks(d.pid), time.monotonic()
                n0 = attack.storm.count if attack.storm else 0
                gap = max(0.0, args.seconds / args.repeat - 0.05)
                ok, times = operator(ctl, d.sock, args.repeat, gap)
                c1, t1 = cpu_ticks(d.pid), time.monotonic()
                n1 = attack.storm.count if attack.storm else 0
                attack.stop()
                cpu = 100.0 * (c1 - c0) / TICK / (t1 - t0)
                rate = f"{(n1 - n0) / (t1 - t0):6.0f}/s" if attack.storm else "      -"
                alive = "" if d.running() else "  DAEMON DIED"
                out[name] = (
                    f"{ok}/{args.repeat} ok  median {statistics.median(times) * 1000:7.1f} ms  "
                    f"worst {max(times) * 1000:7.1f} ms  main CPU {cpu:5.1f} %  storm {rate}{alive}"
                )
            finally:
                d.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--impl", choices=["ours", "original", "both"], default="both")
    p.add_argument("--seconds", type=float, default=4.0, help="attack length (default 4)")
    p.add_argument("--repeat", type=int, default=8, help="operator commands per attack")
    p.add_argument("--storm", type=int, default=300, help="rate of the storm with idle clients")
    args = p.parse_args()
    netns.require_root()
    attacks = [
        "none",
        "idle 100",
        f"reconnecting 64 + storm {args.storm}/s",
        "storm max",
        "10 MB line",
        "10 MB requests",
    ]
    impls = ["ours", "original"] if args.impl == "both" else [args.impl]
    results = {impl: run(impl, attacks, args) for impl in impls}
    print(f"operator: smcroutectl show x{args.repeat} over ~{args.seconds:g} s per attack")
    for name in attacks:
        print(f"\n{name}")
        for impl in impls:
            print(f"  {impl:8s} {results[impl][name]}")


if __name__ == "__main__":
    main()
