"""Everyday operations, ours versus Debian's smcrouted, side by side in one run.

One command measures every figure of "light and quick where users feel it"
for both daemons and prints one table with the ratio ours / original:

* ``ctl``: one whole ``smcroutectl`` process (median of ``--runs``):
  ``show`` with 10 routes, ``add`` of one route, a command with no daemon
  running; next to ``python3 -c 'import click'`` in the same environment
  (the floor our client is measured against).  Both daemons run at once and
  every command runs once per round, so all share the same load.
* ``show``: ``smcroutectl show`` of 10,000 routes, plain, ``-d`` and ``-j``
  (median of ``--repeat``), each against the original's plain ``show``;
  again with a route added or removed before each one (ours then cannot
  send the show it kept).
* ``start``: exec until all N routes are in the kernel MFC, N = 1,000 IPv4,
  1,000 IPv6, 10,000 and 100,000 IPv4 (the original gets ``--timeout``
  seconds; it needs minutes for 100,000).
* ``memory``: RSS of each process; the main process per route
  ((RSS with N routes - RSS with none) / N) and after all N routes are
  removed again (a reload of an empty configuration), against its idle RSS.
* ``first packet``: one new source at a time streaming at 1,000 pps (IPv4
  and IPv6): first packet sent -> resolved (S,G) in the kernel, p50/p99;
  at 20,000 pps the packets lost at stream start (mean per stream).
* ``cpu``: 1,000 new sources at 1,000 pps, one packet each: CPU time of all
  the daemon's processes (``/proc/PID/task/*/schedstat``, nanoseconds) per
  learned source.

Our modules are byte-compiled first (as the Debian package installs them).
Needs root (network namespaces from ``tests/netns.py``).  The machine may be
shared: every timing is a median, and the load average is printed with the
table.  Prints figures, asserts nothing.

Usage: ``sudo .venv/bin/python bench/everyday_bench.py [--only ctl,show,...]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(BENCH))

import startup_bench  # noqa: E402
import upcall_bench  # noqa: E402
from netns import (  # noqa: E402  (the harness lives with the tests)
    ORIGINAL_CTL,
    ORIGINAL_DAEMON,
    OUR_CTL,
    OUR_DAEMON,
    Daemon,
    Topology,
    cmdline,
    count_mfc,
    process_tree,
    router_topology,
    rss_kib,
    wait_until,
)
from startup_bench import cpu_ns  # noqa: E402

IMPLS = {"ours": (OUR_DAEMON, OUR_CTL), "original": (ORIGINAL_DAEMON, ORIGINAL_CTL)}
SECTIONS = ("ctl", "show", "start", "memory", "first", "cpu")
GROUP4, GROUP6 = "225.1.1.1", "ff2e::1"
PYTHON = [sys.executable]  # ours' interpreter (see install_ours)


@dataclass
class Row:
    figure: str
    unit: str
    values: dict[str, float | None] = field(default_factory=dict)
    goal: str = ""
    note: str = ""
    ratio_to: str = ""  # compare ours with this row's original instead of our own row's


ROWS: dict[str, Row] = {}


def put(figure: str, impl: str, value: float | None, unit: str, goal: str = "", **kw: str) -> None:
    row = ROWS.setdefault(figure, Row(figure, unit, goal=goal, **kw))
    row.values[impl] = value


# --- measuring ---------------------------------------------------------------


def rss_by_role(pid: int) -> dict[str, int]:
    """KiB per process: ours has a main process, the privileged helper and a janitor."""
    out: dict[str, int] = {}
    for p in process_tree(pid):
        title = cmdline(p)
        role = (
            "helper"
            if "privileged helper" in title
            else "janitor"
            if "janitor" in title
            else "main"
        )
        out[role] = out.get(role, 0) + rss_kib(p)
    return out


def install_ours(where: Path) -> tuple[str, str, str]:
    """Ours as users run it: this tree's wheel installed into a fresh venv
    (byte-compiled, like the Debian package).  The development .venv holds an
    editable install, whose import hook (setuptools' finder: pathlib,
    ipaddress, urllib, re, ...) every process started from it runs first:
    ~14 ms no installed package pays.  The dependencies (click, lark,
    python-prctl) are .venv's, through one path line.  Returns the paths of
    smcrouted, smcroutectl and python."""
    venv, wheels, py = where / "venv", where / "wheels", str(where / "venv" / "bin" / "python")

    def run(*argv: str) -> None:
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)

    pip = ("-m", "pip", "-q", "--disable-pip-version-check")
    run(sys.executable, *pip, "wheel", "--no-deps", "-w", str(wheels), str(REPO))
    run(sys.executable, "-m", "venv", str(venv))
    run(py, *pip, "install", "--no-deps", "--no-index", str(next(wheels.glob("smcroute-*.whl"))))
    deps = next((REPO / ".venv").glob("lib/python3*/site-packages"))
    next(venv.glob("lib/python3*/site-packages")).joinpath("bench-deps.pth").write_text(f"{deps}\n")
    return str(venv / "bin" / "smcrouted"), str(venv / "bin" / "smcroutectl"), py


# --- sections --------------------------------------------------------------------


def section_ctl(impls: list[str], args: argparse.Namespace) -> None:
    """Every smcroutectl figure of both daemons and the click floor, interleaved:
    round after round, each command once (medians), so that the load others
    put on the machine meanwhile weighs on all of them alike."""
    goal = "<= import click + 10 ms"
    cmds: list[tuple[str, str, list[str], tuple[int, ...]]] = [
        ("python3 -c 'import click' (ours' floor)", "ours", [PYTHON[0], "-c", "import click"],
         (0,)),
    ]  # fmt: skip
    with contextlib.ExitStack() as stack:
        for impl in impls:
            daemon_bin, ctl = IMPLS[impl]
            topo = stack.enter_context(startup_bench.bench_topology())
            d = stack.enter_context(
                Daemon(topo["R"], daemon_bin, startup_bench.make_config(10), ctl_binary=ctl,
                       extra_args=[])
            )  # fmt: skip
            wait_until(lambda t=topo: count_mfc(t["R"], 4) >= 10, timeout=30)
            add = [ctl, "-u", d.sock, "add", "a1", "10.9.9.9", "225.9.9.9", "a2"]
            cmds += [
                ("smcroutectl show, 10 routes", impl, [ctl, "-u", d.sock], (0,)),
                ("smcroutectl add (one route)", impl, add, (0, 1)),
                ("smcroutectl, no daemon", impl, [ctl, "-u", "/nonexistent/s.sock", "show"], (1,)),
            ]
        times: list[list[float]] = [[] for _ in cmds]
        cpu: list[list[float]] = [[] for _ in cmds]
        failed: set[int] = set()
        for r in range(args.runs + 2):  # two warm-up rounds
            for i, (_fig, _impl, argv, ok) in enumerate(cmds):
                u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                proc = subprocess.run(argv, capture_output=True, check=False)
                t1 = time.perf_counter()
                u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                if r >= 2:
                    times[i].append(t1 - t0)
                    cpu[i].append(u1.ru_utime - u0.ru_utime + u1.ru_stime - u0.ru_stime)
                if proc.returncode not in ok:
                    failed.add(i)
    for i, (fig, impl, _argv, _ok) in enumerate(cmds):
        g = "" if fig.startswith("python3") else goal
        put(fig, impl, None if i in failed else statistics.median(times[i]), "ms", g)
        # CPU time (user + system) of the process: what a loaded machine inflates least.
        put(fig + " (CPU)", impl, None if i in failed else statistics.median(cpu[i]), "ms", g)
    floor = "python3 -c 'import click' (ours' floor)"
    for fig in (floor, floor + " (CPU)"):
        ROWS[fig].values.setdefault("original", None)


def _show_times(d: Daemon, impl: str, repeat: int) -> None:
    """Each form `repeat` times in a row, then each right after a route is added or removed.

    Ours keeps the last show it rendered while nothing in it changed, so the
    first rows are mostly that copy; the "after a change" rows render anew
    every time (the original renders every show either way).
    """
    _, ctl = IMPLS[impl]
    goal = "<= 1.5 x original plain"
    flip = [False]

    def change() -> None:  # one route in or out: untimed, before each timed show
        cmd = "remove" if flip[0] else "add"
        flip[0] = not flip[0]
        subprocess.run(
            [ctl, "-u", d.sock, cmd, "a1", "10.9.9.9", "225.9.9.9", "a2"],
            capture_output=True,
            timeout=60,
            check=False,
        )

    for after, before in (("", None), (", after a change", change)):
        for label, opts in (("", []), (" -d", ["-d"]), (" -j", ["-j"])):
            t, note = startup_bench.time_ctl(ctl, d.sock, [*opts, "show"], repeat, before)
            put(
                f"show{label}, 10,000 routes{after}",
                impl,
                t,
                "s",
                goal,
                ratio_to="show, 10,000 routes",
                note=note if impl == "ours" else "",
            )


def _remove_all(d: Daemon, topo: Topology, res: startup_bench.Result, family: int) -> None:
    """Reload an empty configuration; RSS once the MFC is empty."""
    d.write_conf("# empty\n")
    d.reload()
    with contextlib.suppress(Exception):
        wait_until(lambda: count_mfc(topo["R"], family) == 0, timeout=120)
    time.sleep(1.0)
    res.rss.append(("after removal", rss_by_role(d.pid).get("main", 0)))


def section_start(impl: str, args: argparse.Namespace, memory: bool, show: bool) -> None:
    idle: dict[str, int] = {}
    args = argparse.Namespace(**vars(args))
    show_at, args.show_routes = args.show_routes, -1  # run_one's own show timing: not here
    sizes = [(n, 4) for n in args.sizes] + [(1000, 6)]
    if memory:
        r0 = startup_bench.run_one(
            impl, 0, args, 4, lambda d, t, r: idle.update(rss_by_role(d.pid))
        )
        del r0
    for n, fam in sorted(set(sizes), key=lambda x: (x[0], x[1])):
        if impl == "original" and n > args.original_max:
            put(f"start, {n:,} IPv{fam} routes", impl, None, "s", note="skipped (--original-max)")
            continue
        rss_now: dict[str, int] = {}

        def during(
            d: Daemon,
            topo: Topology,
            res: startup_bench.Result,
            n: int = n,
            fam: int = fam,
            rss_now: dict[str, int] = rss_now,
        ) -> None:
            rss_now.update(rss_by_role(d.pid))
            if show and n == show_at and fam == 4:
                _show_times(d, impl, args.repeat)
            if memory and n == max(args.sizes) and fam == 4:
                _remove_all(d, topo, res, fam)

        saved = args.timeout
        args.timeout = limit = args.timeout if impl == "ours" else args.original_timeout
        res = startup_bench.run_one(impl, n, args, fam, during)
        args.timeout = saved
        goal = "<= 2 x original" if n <= 1000 else "linear; >= 10 x faster"
        value, note = res.ready_s, ""
        if res.status.startswith("timeout"):
            value, note = limit, f"more than: {res.status}"  # a lower bound
        elif res.status != "ok":
            note = res.status
        put(f"start, {n:,} IPv{fam} routes", impl, value, "s", goal, note=note)
        if not memory or not rss_now or fam != 4 or not n:
            continue
        if "helper" in rss_now:
            put(f"RSS helper, {n:,} routes", impl, rss_now["helper"] / 1024, "MiB", "<= 10 MiB")
        if idle.get("main"):
            put(
                f"RSS main per route, {n:,} routes",
                impl,
                (rss_now["main"] - idle["main"]) * 1024 / n,
                "B",
                "<= 512 B",
            )
            after = dict(res.rss).get("after removal")
            if after:
                put(
                    f"RSS main after removing {n:,} / idle",
                    impl,
                    after / idle["main"],
                    "x",
                    "<= 1.10",
                )
    if memory and idle:
        put("RSS main, idle", impl, idle.get("main", 0) / 1024, "MiB")
        if "janitor" in idle:
            put("RSS janitor, idle", impl, idle["janitor"] / 1024, "MiB")


def section_upcalls(impl: str, args: argparse.Namespace, first: bool, cpu: bool) -> None:
    daemon_bin, ctl = IMPLS[impl]
    conf = f"mroute from a1 group {GROUP4} to a2\nmroute from a1 group {GROUP6} to a2\n"
    with router_topology(1) as topo:
        d = Daemon(topo.router, daemon_bin, conf, ctl_binary=ctl, extra_args=["-l", "notice"])
        with d:
            time.sleep(0.5)
            base = 20
            for fam, group in ((4, GROUP4), (6, GROUP6)) if first else ():
                for rate in (1000, 20000):
                    base += 1
                    s = upcall_bench.first_packet(
                        topo, impl, rate, args.trials, 50, base, group=group
                    )
                    if rate == 1000:
                        for q in (0.5, 0.99):
                            v = upcall_bench.pct(s.lat_ms, q) if s.lat_ms else None
                            put(
                                f"first packet -> installed p{round(q * 100)}, IPv{fam} 1k pps",
                                impl,
                                v,
                                "ms",
                                "<= 1.5 x original",
                            )
                    else:
                        put(
                            f"lost at stream start, IPv{fam} 20k pps",
                            impl,
                            statistics.mean(s.lost),
                            "pkts",
                            "<= original",
                        )
                    d.ctl("flush", check=False)
                    time.sleep(0.3)
            if cpu:
                time.sleep(11 if first else 0)  # the kernel's unresolved entries expire
                pids = process_tree(d.pid)
                before = cpu_ns(pids)
                upcall_bench.flood(topo.sender, "10.60.0.1", GROUP4, sources=1000, rate=1000)
                last, stable = -1, time.monotonic()
                while time.monotonic() - stable < 1.0:
                    n = sum(1 for e in upcall_bench.read_mfc(topo.router) if e.iif is not None)
                    if n != last:
                        last, stable = n, time.monotonic()
                    time.sleep(0.1)
                spent = cpu_ns(pids) - before
                learned = max(last, 1)
                put(
                    "CPU per learned source (all processes)",
                    impl,
                    spent / 1e6 / learned,
                    "ms",
                    "<= 2 x original",
                    note=f"{learned} learned" if impl == "ours" else "",
                )


# --- the table -----------------------------------------------------------------------


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "ms":
        return f"{v:.3f} ms" if v < 1 else f"{v:.1f} ms"
    if unit == "s":
        return f"{v:.3f} s"
    if unit in ("MiB", "x", "pkts"):
        return f"{v:.2f} {unit}".rstrip()
    return f"{v:.0f} {unit}"


def print_table(loads: list[str]) -> None:
    order = ("python3", "smcroutectl", "show", "start", "RSS", "first", "lost", "CPU")
    rows = sorted(ROWS.values(), key=lambda r: next(
        (i for i, p in enumerate(order) if r.figure.startswith(p)), len(order)))  # fmt: skip
    for r in rows:  # ms figures are measured in seconds
        if r.unit == "ms" and not r.figure.startswith(("first", "CPU")):
            r.values = {k: (None if v is None else v * 1000) for k, v in r.values.items()}
    w = max(len(r.figure) for r in rows)
    head = f"{'figure':{w}}  {'original':>12}  {'ours':>12}  {'ours/orig':>9}  goal"
    print("\n" + head)
    print("-" * len(head))
    floors = {
        "": ROWS.get("python3 -c 'import click' (ours' floor)"),
        " (CPU)": ROWS.get("python3 -c 'import click' (ours' floor) (CPU)"),
    }
    for r in rows:
        o, u = r.values.get("original"), r.values.get("ours")
        if r.ratio_to:
            o = ROWS[r.ratio_to].values.get("original")
        ratio = f"{u / o:.2f}" if u is not None and o else "-"
        if ratio != "-" and r.note.startswith("more than"):
            ratio = "< " + ratio  # the original's figure is a lower bound
        extra = ""
        floor = floors[" (CPU)" if r.figure.endswith(" (CPU)") else ""]
        if r.figure.startswith("smcroutectl") and floor and u is not None:
            f0 = floor.values.get("ours")
            if f0 is not None:
                extra = f" ({u - f0:+.1f} ms over import click)"
        note = f"  [{r.note}]" if r.note else ""
        orig = fmt(r.values.get("original"), r.unit) if not r.ratio_to else "(plain)"
        print(
            f"{r.figure:{w}}  {orig:>12}  {fmt(u, r.unit):>12}  {ratio:>9}  {r.goal}{extra}{note}"
        )
    print(f"\nload average: {' -> '.join(loads)} ({os.cpu_count()} CPUs)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join(SECTIONS), help="sections: " + ",".join(SECTIONS))
    p.add_argument("--impl", default="original,ours")
    p.add_argument("--runs", type=int, default=10, help="runs per smcroutectl timing")
    p.add_argument("--repeat", type=int, default=5, help="runs per show of 10,000 routes")
    p.add_argument("--sizes", default="1000,10000,100000", help="IPv4 start-up sizes")
    p.add_argument("--show-routes", type=int, default=10000)
    p.add_argument("--original-max", type=int, default=100000, help="largest N for the original")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds for our start-up")
    p.add_argument("--original-timeout", type=float, default=60.0)
    p.add_argument("--stop-timeout", type=float, default=30.0)
    p.add_argument("--trials", type=int, default=40, help="new sources per first-packet figure")
    p.add_argument(
        "--dev-venv",
        action="store_true",
        help="measure .venv's editable install as it is (default: this tree installed)",
    )
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("everyday_bench: needs root (network namespaces)", file=sys.stderr)
        return 1
    args.sizes = [int(x) for x in args.sizes.split(",") if x]
    only = set(args.only.split(","))
    impls = [i for i in args.impl.split(",") if i]
    # Byte-compile our modules first, as the package does at install: with
    # PYTHONDONTWRITEBYTECODE set (as here), every start would compile them.
    for pkg in ("smcroute", "parser", "privsep", "grammar"):
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(REPO / pkg)],
            stdout=subprocess.DEVNULL,
            check=False,
        )
    tmp = Path(tempfile.mkdtemp(prefix="everyday-"))
    tmp.chmod(0o755)  # our daemon's main process reads its modules unprivileged
    try:
        return _run(args, only, impls, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args: argparse.Namespace, only: set[str], impls: list[str], tmp: Path) -> int:
    ours = OUR_DAEMON
    if "ours" in impls and not args.dev_venv:
        print("... installing ours (wheel into a fresh venv)", flush=True)
        ours, ctl, PYTHON[0] = install_ours(tmp)
        IMPLS["ours"] = startup_bench.IMPLS["ours"] = (ours, ctl)
        for name, (_d, _c, extra) in list(upcall_bench.IMPLS.items()):
            if name.startswith("ours"):
                upcall_bench.IMPLS[name] = (ours, ctl, extra)
    loads = [Path("/proc/loadavg").read_text().split()[0]]
    print(f"kernel {os.uname().release}; ours {ours}, original {ORIGINAL_DAEMON}")
    hooks = list((REPO / ".venv" / "lib").glob("python3*/site-packages/__editable__*finder.py"))
    if "ours" in impls and args.dev_venv and hooks:
        print("note: .venv's editable install runs an import hook in every process (~14 ms)")
    for impl in list(impls):
        if not os.access(IMPLS[impl][0], os.X_OK):
            print(f"{impl}: {IMPLS[impl][0]} missing, skipped")
            impls.remove(impl)
    # Section by section, both daemons one right after the other (the load of
    # a shared machine drifts: minutes apart, the same figure is not comparable).
    try:
        if "ctl" in only:
            print("... smcroutectl (interleaved)", flush=True)
            section_ctl(impls, args)
        for impl in impls:
            if only & {"start", "memory", "show"}:
                print(f"... {impl}: start-up, memory, show", flush=True)
                section_start(impl, args, "memory" in only, "show" in only)
        for impl in impls:
            if only & {"first", "cpu"}:
                print(f"... {impl}: new sources", flush=True)
                section_upcalls(impl, args, "first" in only, "cpu" in only)
    except KeyboardInterrupt:
        print("interrupted; partial results:")
    loads.append(Path("/proc/loadavg").read_text().split()[0])
    print_table(loads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
