"""`show` of N routes and one `smcroutectl` call, daemons side by side, many rounds.

`everyday_bench.py --only show` times each form 5 times with one daemon at a
time, minutes apart from the other daemon's figures; on a shared machine that
moves by more than the changes being measured.  This starts the original and
each of ours given (this tree's wheel in a fresh venv, and any other tree's,
e.g. a worktree of `main` before a change) at once, each with N exact (S,G)
routes (`startup_bench.py`'s configuration), then runs round after round
every command once per daemon, in turn: the original's plain `show`, ours'
plain, `-d` and `-j` (each twice in a row: right after another form, and the
same again at once), `show` with no daemon, and `python3 -c 'import click'`
(our floor).  With `--change`, a route is added or removed (untimed, in
turn) before each show but the "again" ones, the original's too: every such
show follows a change, as the "after a change" rows of `everyday_bench.py`.
Prints each command's median wall time and median CPU time (user + system
of the client process), the ratio of the wall medians to the original's
plain `show` (both of its runs), and the load average before and after.
Also, per daemon of ours, the daemon's own answer time: a request sent on a
connected socket until the last byte of the reply (what the client
waits for once it is ready), and the daemon's CPU time for it (its main
process, all threads: what the load of a shared machine inflates least).
Prints figures, asserts nothing.  Needs root.

    .venv/bin/python bench/show_rounds.py                          # 10,000 routes, 15 rounds
    .venv/bin/python bench/show_rounds.py --tree before=../main-before --rounds 21
    .venv/bin/python bench/show_rounds.py --change --tree before=../main-before
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(BENCH))

import startup_bench  # noqa: E402
from everyday_bench import cpu_ns  # noqa: E402
from netns import ORIGINAL_CTL, ORIGINAL_DAEMON, Daemon, count_mfc, wait_until  # noqa: E402


def install(tree: Path, where: Path) -> tuple[str, str, str]:
    """`tree`'s wheel in a fresh venv (as everyday_bench.py installs ours); the
    dependencies come from this tree's .venv.  Returns smcrouted, smcroutectl, python."""
    venv, wheels = where / "venv", where / "wheels"
    pip = ["-m", "pip", "-q", "--disable-pip-version-check"]

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)

    run(sys.executable, *pip, "wheel", "--no-deps", "-w", str(wheels), str(tree))
    run(sys.executable, "-m", "venv", str(venv))
    py = str(venv / "bin" / "python")
    run(py, *pip, "install", "--no-deps", "--no-index", str(next(wheels.glob("smcroute-*.whl"))))
    deps = next((REPO / ".venv").glob("lib/python3*/site-packages"))
    next(venv.glob("lib/python3*/site-packages")).joinpath("bench-deps.pth").write_text(f"{deps}\n")
    return str(venv / "bin" / "smcrouted"), str(venv / "bin" / "smcroutectl"), py


def answer_time(sock_path: str, detail: bool, fmt: str) -> float:
    """A `show` request on a connected socket until the last byte of its reply."""
    req = {"cmd": "show", "args": ["routes"], "detail": detail, "format": fmt}
    line = json.dumps(req, separators=(",", ":")).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock_path)
        t0 = time.perf_counter()
        s.sendall(line)
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise RuntimeError("no reply")
            buf += chunk
        head, _, rest = buf.partition(b"\n")
        need = json.loads(head)["text"] - len(rest)
        while need > 0:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise RuntimeError("short reply")
            need -= len(chunk)
        return time.perf_counter() - t0


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--routes", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument(
        "--tree", action="append", default=[], metavar="NAME=PATH", help="another tree of ours"
    )
    ap.add_argument(
        "--change",
        action="store_true",
        help="a route added or removed (untimed) before each show that is not 'again', "
        "as everyday_bench.py's 'after a change' rows do",
    )
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="show-rounds-"))
    tmp.chmod(0o755)  # our daemon's main process reads its modules unprivileged
    try:
        trees = {"ours": REPO} | {
            name: Path(path).resolve() for name, _, path in (t.partition("=") for t in a.tree)
        }
        builds = {}
        for name, tree in trees.items():
            print(f"... installing {name} ({tree})", flush=True)
            (tmp / name).mkdir()
            builds[name] = install(tree, tmp / name)
        return run(a, builds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(a: argparse.Namespace, builds: dict[str, tuple[str, str, str]]) -> int:
    loads = [load()]
    cmds: list[tuple[str, list[str]]] = []
    socks: dict[str, str] = {}
    pids: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        daemons = {"original": (ORIGINAL_DAEMON, ORIGINAL_CTL)} | {
            n: (d, c) for n, (d, c, _py) in builds.items()
        }
        for name, (daemon, ctl) in daemons.items():
            topo = stack.enter_context(startup_bench.bench_topology())
            d = stack.enter_context(
                Daemon(topo["R"], daemon, startup_bench.make_config(a.routes), ctl_binary=ctl,
                       extra_args=[])
            )  # fmt: skip
            wait_until(lambda t=topo: count_mfc(t["R"], 4) >= a.routes, timeout=120)
            socks[name] = d.sock
            pids[name] = d.pid
            forms = [[]] if name == "original" else [[], ["-d"], ["-j"]]
            cmds += [(f"{name} {' '.join([*f, 'show'])}", [ctl, "-u", d.sock, *f, "show"])
                     for f in forms]  # fmt: skip
            if name != "original":
                cmds.append((f"{name} show, no daemon", [ctl, "-u", "/nonexistent/s", "show"]))
        flip: dict[str, bool] = {}

        def change(name: str) -> None:  # one route in or out, untimed
            flip[name] = not flip.get(name, False)
            cmd = "add" if flip[name] else "remove"
            route = ["a1", "10.9.9.9", "225.9.9.9", "a2"]
            subprocess.run([daemons[name][1], "-u", socks[name], cmd, *route],
                           capture_output=True, check=False, timeout=60)  # fmt: skip

        py = next(iter(builds.values()))[2]
        cmds.append(("python3 -c 'import click'", [py, "-c", "import click"]))
        # A show right after another form (what the daemon must render) and the
        # same show again at once (what it may have kept: see daemon_show).
        cmds = [(lab + again, argv) for lab, argv in cmds
                for again in (("", ", again") if lab.endswith("show") else ("",))]  # fmt: skip
        wall: dict[str, list[float]] = {label: [] for label, _ in cmds}
        cpu: dict[str, list[float]] = {label: [] for label, _ in cmds}
        answer: dict[str, list[float]] = {}
        answer_cpu: dict[str, list[float]] = {}
        for r in range(a.rounds + 1):  # one warm-up round
            for label, argv in cmds:
                name = label.split()[0]
                if a.change and name in socks and label.endswith("show"):
                    change(name)
                u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                proc = subprocess.run(argv, capture_output=True, check=False)
                t1 = time.perf_counter()
                u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                if proc.returncode != 0 and "no daemon" not in label:
                    print(f"{label}: exit {proc.returncode}: {proc.stderr[:200]!r}")
                if r:
                    wall[label].append(t1 - t0)
                    cpu[label].append(u1.ru_utime - u0.ru_utime + u1.ru_stime - u0.ru_stime)
            for name in builds:
                for detail, fmt in ((False, "text"), (True, "text"), (False, "json")):
                    for again in ("", ", again"):
                        if a.change and not again:
                            change(name)
                        c0 = cpu_ns([pids[name]])
                        t = answer_time(socks[name], detail, fmt)
                        c1 = cpu_ns([pids[name]])
                        if r:
                            d, j = "-d " if detail else "", "-j " if fmt == "json" else ""
                            key = f"{name} {d}{j}show{again}"
                            answer.setdefault(key, []).append(t)
                            answer_cpu.setdefault(key, []).append((c1 - c0) / 1e9)
    loads.append(load())
    orig = statistics.median(wall["original show"] + wall["original show, again"])
    after = ", a change before each but 'again'" if a.change else ""
    print(f"\nshow of {a.routes:,} routes{after}, {a.rounds} rounds, load {loads[0]} -> {loads[1]}")
    print(f"{'command':40} {'wall':>9} {'CPU':>9} {'/ orig. show':>13}")
    for label, _ in cmds:
        w, c = statistics.median(wall[label]), statistics.median(cpu[label])
        print(f"{label:40} {w * 1e3:7.1f}ms {c * 1e3:7.1f}ms {w / orig:12.2f}x")
    print("\nthe daemon's answer (request sent on a connected socket -> last byte; its CPU):")
    for key, ts in answer.items():
        c = statistics.median(answer_cpu[key])
        print(f"{key:40} {statistics.median(ts) * 1e3:7.1f}ms {c * 1e3:7.1f}ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
