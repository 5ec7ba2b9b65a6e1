"""Observability costs with 10,000 routes: sampling, memory for rates, scrapes, latency.

In a namespace with a1 a2 a3 and N exact IPv4 routes (default 10,000), one
run measures and prints:

* ``sample``: one steady sample (one MFC netlink dump + the VIF counters +
  rates against the previous sample), CPU time in-process inside the
  namespace (median of ``--repeat``), and what it costs at the default
  interval (10 s) as a share of one core;
* ``cpu``: the daemon's CPU time (all processes and threads, schedstat) over
  ``--window`` seconds idle with sampling at the default interval versus
  ``--sample-interval 0`` (no sampling): the difference as a share of a core;
* ``memory``: bytes per kernel entry the sample arrays hold (exact), and the
  main process's RSS with sampling versus without, per route (noisy: RSS
  moves in pages and arenas);
* ``scrape``: wall time of one ``GET /metrics`` (1,000 route series, the
  default cap) from inside the namespace, median and max of
  ``--scrapes`` scrapes one second apart;
* ``latency``: control-socket round trip (a raw ``show pending`` request on
  the UNIX socket, no process start) every 20 ms, p50/p99/max: without
  sampling or metrics (the baseline), then with ``--metrics`` at the
  default sampling interval, without scrapes and while a scraper pulls
  every second; next to it one whole
  ``smcroutectl show groups`` process for ours and for Debian's smcrouted
  (the original has no sampling or metrics).

The machine may be shared: figures are medians, and the load average is
printed.  Prints figures, asserts nothing.  Needs root.
Usage: ``sudo .venv/bin/python bench/observe_bench.py [-n 10000] [--window 30]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(BENCH))

from everyday_bench import cpu_ns, rss_by_role  # noqa: E402
from netns import (  # noqa: E402
    ORIGINAL_CTL,
    ORIGINAL_DAEMON,
    OUR_CTL,
    OUR_DAEMON,
    Daemon,
    count_mfc,
    process_tree,
    wait_until,
)
from startup_bench import bench_topology, make_config, time_ctl  # noqa: E402

from smcroute.stats import DEFAULT_INTERVAL  # noqa: E402

PORT = 9108
PY = str(REPO / ".venv" / "bin" / "python")

SAMPLE_CODE = """
import json, statistics, sys, time
from smcroute.netlink import Netlink
from smcroute.stats import Sampler
nl = Netlink()
names = {i: n for i, n in enumerate(["lo", "a1", "a2", "a3"], 1)}
s = Sampler(nl, (4, 6), 0, 10)
s.next_due = time.monotonic()
times = []
for _ in range(int(sys.argv[1])):
    t0 = time.process_time()
    s.sample(time.monotonic(), names)
    times.append(time.process_time() - t0)
print(json.dumps({"median": statistics.median(times), "entries": len(s.last)}))
"""

SCRAPE_CODE = """
import json, sys, time, urllib.request
n, gap, port = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
times, series = [], 0
for _ in range(n):
    t0 = time.perf_counter()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read()
    times.append(time.perf_counter() - t0)
    series = body.count(b"smcroute_route_packets_total{")
    time.sleep(max(0.0, gap - times[-1]))
print(json.dumps({"times": times, "series": series}))
"""


def start(topo, conf: str, *extra: str, binary: str = OUR_DAEMON, ctl: str = OUR_CTL) -> Daemon:
    d = Daemon(topo["R"], binary, conf, ctl_binary=ctl, extra_args=["-l", "notice", *extra])
    d.start(timeout=120)
    wait_until(lambda: count_mfc(topo["R"], 4) >= conf.count("\n") - 1, timeout=120)
    return d


def raw_request(path: str) -> float:
    t0 = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b'{"cmd":"show","args":["pending"],"detail":false}\n')
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return time.perf_counter() - t0


def latencies(path: str, seconds: float) -> list[float]:
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out.append(raw_request(path))
        time.sleep(0.02)
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10000, help="routes (default 10000)")
    ap.add_argument("--window", type=float, default=30.0, help="CPU window, s (default 30)")
    ap.add_argument("--repeat", type=int, default=20, help="timed samples (default 20)")
    ap.add_argument("--scrapes", type=int, default=20, help="scrapes (default 20)")
    args = ap.parse_args(argv)
    conf = make_config(args.n)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows: list[tuple[str, str, str]] = []
    with bench_topology() as topo:
        ns = topo["R"]
        # -- sampling cost in-process, and CPU / memory of the daemon with and without
        d0 = start(topo, conf, "--sample-interval", "0")
        out = ns.run(PY, "-c", SAMPLE_CODE, str(args.repeat)).stdout
        one = json.loads(out)
        share = one["median"] / DEFAULT_INTERVAL * 100
        note = f"{one['entries']} entries; every {DEFAULT_INTERVAL} s: {share:.2f} % of a core"
        rows.append(("one sample (dump + VIFs + rates)", ms(one["median"]), note + " (< 1 %)"))
        time.sleep(2)
        rss_off = rss_by_role(d0.pid)["main"]
        c0 = cpu_ns(process_tree(d0.pid))
        time.sleep(args.window)
        cpu_off = (cpu_ns(process_tree(d0.pid)) - c0) / 1e9 / args.window
        base = latencies(d0.sock, 15)  # no sampling, no metrics: the baseline
        d0.stop()
        d1 = start(topo, conf)  # the default interval
        time.sleep(2 * DEFAULT_INTERVAL + 1)  # two samples: rates exist
        rss_on = rss_by_role(d1.pid)["main"]
        c1 = cpu_ns(process_tree(d1.pid))
        time.sleep(args.window)
        cpu_on = (cpu_ns(process_tree(d1.pid)) - c1) / 1e9 / args.window
        d1.stop()
        note = (
            f"without sampling {cpu_off * 100:.2f} %: sampling adds "
            f"{(cpu_on - cpu_off) * 100:.2f} % (target < 1 %)"
        )
        name = f"daemon CPU idle, sampling every {DEFAULT_INTERVAL} s"
        rows.append((name, f"{cpu_on * 100:.2f} % of a core", note))
        rows.append(("memory for counters and rates", "44 B per entry",
                     "the sample's arrays: key 8, packets 8, bytes 8, wrong_if 8, "
                     "idle 4, pps 4, bps 4 (target < 64 B)"))  # fmt: skip
        per = (rss_on - rss_off) * 1024 / args.n
        rows.append(("main RSS with sampling - without", f"{per:.0f} B per route",
                     f"{rss_off} KiB -> {rss_on} KiB (RSS: pages and arenas, noisy)"))  # fmt: skip
        # -- scrapes, and control latency with and without them
        d2 = start(topo, conf, "--metrics", str(PORT))  # the default sampling interval
        time.sleep(1.0)
        quiet = latencies(d2.sock, 15)
        ours, _ = time_ctl(OUR_CTL, d2.sock, ["show", "groups"], 10)
        box: dict[str, object] = {}

        def scraper() -> None:
            out = ns.run(PY, "-c", SCRAPE_CODE, str(args.scrapes), "1.0", str(PORT), timeout=600)
            box["out"] = out.stdout

        t = threading.Thread(target=scraper)
        t.start()
        time.sleep(0.5)
        busy = latencies(d2.sock, max(5.0, args.scrapes - 2.0))
        t.join()
        scr = json.loads(str(box["out"]))
        st = scr["times"]
        note = f"max {ms(max(st))}, {scr['series']} route series (target < 0.3 s)"
        rows.append(("one scrape of /metrics", ms(statistics.median(st)), note))
        note = f"p99 {ms(pct(base, 0.99))}, max {ms(max(base))}, {len(base)} requests"
        rows.append(("control round trip, no sampling/metrics", ms(statistics.median(base)), note))
        note = f"p99 {ms(pct(quiet, 0.99))}, max {ms(max(quiet))}, {len(quiet)} requests"
        rows.append(("... --metrics, no scrapes", ms(statistics.median(quiet)), note))
        rows.append(("... while scraping every second", ms(statistics.median(busy)),
                     f"p99 {ms(pct(busy, 0.99))}, max {ms(max(busy))}, {len(busy)} requests "
                     "(target: within 100 ms)"))  # fmt: skip
        d2.stop()
        orig = None
        if os.access(ORIGINAL_DAEMON, os.X_OK):
            d3 = start(topo, conf, binary=ORIGINAL_DAEMON, ctl=ORIGINAL_CTL)
            orig, _ = time_ctl(ORIGINAL_CTL, d3.sock, ["show", "groups"], 10)
            d3.stop()
        ratio = f"{ours / orig:.2f}" if ours and orig else "n/a"
        rows.append(("smcroutectl show groups (whole process)", f"ours {ms(ours or 0)}",
                     f"original {ms(orig or 0)}, ours/original {ratio} (client start-up: "
                     "everyday_bench.py; the original has no metrics)"))  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"{args.n} IPv4 routes")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>22}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
