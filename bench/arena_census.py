"""What keeps the main process's memory after a big removal: pymalloc's arenas, block by block.

Starts our daemon (this tree installed from its wheel, as `everyday_bench.py`
does) in a network namespace, first with no routes (idle), then with N
routes (default 100,000) followed by a reload of an empty configuration.
Each time it prints the RSS (anonymous memory and the heap apart), then
attaches gdb to the main process -- read only: nothing runs inside the
daemon, whose memory is not touched -- and walks CPython's small-object
allocator: every arena (1 MiB) with its pools (16 KiB): how many are carved
(touched once, so resident), free and in use, and the blocks in use; for
the arenas that hold few blocks, every allocated block with its type and,
for floats, ints, ASCII strings and tuples, its value.  A block on one of
CPython's free lists (floats, tuples, lists: freed objects kept for reuse)
shows as `free-listed`.  Prints figures, asserts nothing.

    sudo .venv/bin/python bench/arena_census.py
    sudo .venv/bin/python bench/arena_census.py --routes 10000 --wait 1,12,60 --detail 2000

Needs root, gdb, and an interpreter with debug symbols (pymalloc's arena
table is a static variable of the interpreter): the pyenv-built python3.11
here has them; for Debian's interpreter install its -dbg symbols.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))
sys.path.insert(0, str(BENCH))

import everyday_bench  # noqa: E402
import startup_bench  # noqa: E402
from netns import Daemon, count_mfc, wait_until  # noqa: E402

# Runs inside gdb (its own Python), reading the daemon's memory.  CPython 3.11
# layouts: a pool header is (ref.count, freeblock, nextpool, prevpool: 8 bytes
# each; arenaindex, szidx, nextoffset, maxnextoffset: 4 each); an object is
# (ob_refcnt, ob_type), GC objects after a 16-byte header.
GDB_SCRIPT = r"""
import gdb, os, struct
POOL = 16 * 1024
out = open(os.environ["CENSUS_OUT"], "w")
detail = int(os.environ["CENSUS_DETAIL"])
inf = gdb.selected_inferior()

def mem(a, n):
    return bytes(inf.read_memory(a, n))

def u64(a):
    return struct.unpack("=Q", mem(a, 8))[0]

def addr(sym):
    return int(gdb.parse_and_eval(f"(unsigned long)&{sym}"))

TYPE, STR, INT, TUPLE, FLOAT = (addr(s) for s in (
    "PyType_Type", "PyUnicode_Type", "PyLong_Type", "PyTuple_Type", "PyFloat_Type"))
names = {}

def type_name(tp):
    if tp not in names:
        name = None
        try:
            meta = u64(tp + 8)
            if meta == TYPE or u64(meta + 8) == TYPE:
                s = mem(u64(tp + 24), 64).split(b"\0")[0].decode("ascii", "replace")
                name = s if s and s.isprintable() and " " not in s else None
        except gdb.MemoryError:
            pass
        names[tp] = name
    return names[tp]

def value(obj, tp, name, depth=0):
    try:
        if tp == FLOAT:
            return f"float {struct.unpack('=d', mem(obj + 16, 8))[0]!r}"
        if tp == INT:
            size = struct.unpack("=q", mem(obj + 16, 8))[0]
            if abs(size) > 2:
                return f"int ({abs(size)} digits)"
            v = sum(d << (30 * i) for i, d in enumerate(
                struct.unpack("=" + "I" * abs(size), mem(obj + 24, 4 * abs(size)))))
            return f"int {-v if size < 0 else v}"
        if tp == STR:
            n = u64(obj + 16)
            state = struct.unpack("=I", mem(obj + 32, 4))[0]
            if state & 0x60 == 0x60:  # compact ASCII
                return "str " + repr(mem(obj + 40, min(n, 40)).decode("ascii"))
            return f"str (len {n})"
        if tp == TUPLE and depth == 0:
            n = u64(obj + 16)
            items = [u64(obj + 24 + 8 * i) for i in range(min(n, 4))]
            return "tuple (" + ", ".join(
                value(i, u64(i + 8), type_name(u64(i + 8)) or "?", 1) for i in items) + ")"
        if name == "list" and depth == 0:
            return f"list len {u64(obj + 16)}"
    except gdb.MemoryError:
        pass
    return name

rows = []
arenas = gdb.parse_and_eval("arenas")
for i in range(int(gdb.parse_and_eval("maxarenas"))):
    ao = arenas[i]
    base = int(ao["address"])
    if not base:
        continue
    pools, p = [], (base + POOL - 1) & ~(POOL - 1)
    while p < int(ao["pool_address"]):
        count, fb, _n, _p, _a, szidx, nextoff, _m = struct.unpack("=QQQQIIII", mem(p, 48))
        pools.append((p, count & 0xFFFFFFFF, (szidx + 1) * 16, fb, nextoff))
        p += POOL
    rows.append((sum(x[1] for x in pools), i, int(ao["ntotalpools"]), int(ao["nfreepools"]), pools))
rows.sort()
for blocks, i, total, free, pools in rows:
    used = [x for x in pools if x[1]]
    out.write(f"arena {i}: {total} pools, {len(pools)} carved, {free} free, "
              f"{len(used)} in use, {blocks} blocks\n")
    if blocks > detail:
        continue
    for p, count, size, fb, nextoff in used:
        data = mem(p, POOL)
        freed, b = set(), fb
        while b and p <= b < p + POOL and len(freed) < 2000:
            freed.add(b)
            b = struct.unpack_from("=Q", data, b - p)[0]
        out.write(f"  pool {p:#x}: {size}-byte blocks, {count} in use\n")
        for blk in range(p + 48, p + nextoff, size):
            if blk in freed or blk + size > p + POOL:
                continue
            desc = None
            for off in (0, 16):  # a plain object, or one after a GC header
                if off + 16 > size:
                    continue
                refcnt, tp = struct.unpack_from("=qQ", data, blk - p + off)
                name = type_name(tp) if tp > 4096 else None
                if name:
                    desc = value(blk + off, tp, name)
                    if refcnt == 0:
                        desc = "free-listed " + name
                    break
            if desc is None:
                desc = "free-listed float, or raw memory: " + data[blk - p:blk - p + 32].hex()
            out.write(f"    {desc}\n")
out.write(f"{len(rows)} arenas\n")
out.close()
"""


def rss(pid: int) -> str:
    """VmRSS and the resident anonymous memory and heap, KiB."""
    kinds = {"heap": 0, "anon": 0}
    kind = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            p = line.split()
            if "-" in p[0] and len(p) >= 5:
                kind = "heap" if p[-1] == "[heap]" else "anon" if len(p) == 5 else None
            elif p[0] == "Rss:" and kind:
                kinds[kind] += int(p[1])
    with open(f"/proc/{pid}/status") as f:
        vm = next(line.split()[1] for line in f if line.startswith("VmRSS"))
    return f"RSS {vm} KiB (anonymous {kinds['anon']} KiB, heap {kinds['heap']} KiB)"


def census(pid: int, detail: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        script, out = Path(tmp, "census.py"), Path(tmp, "census.txt")
        script.write_text(GDB_SCRIPT)
        env = dict(os.environ, CENSUS_OUT=str(out), CENSUS_DETAIL=str(detail))
        proc = subprocess.run(
            ["gdb", "-p", str(pid), "--batch", "-x", str(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if not out.exists():
            tail = (proc.stdout + proc.stderr)[-3000:]
            return f"gdb gave no census (no debug symbols?):\n{tail}"
        return out.read_text()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--routes", type=int, default=100_000)
    ap.add_argument(
        "--wait",
        default="2",
        help="seconds after the MFC is empty: RSS at each (e.g. 1,12,60), the census at the last",
    )
    ap.add_argument("--detail", type=int, default=1500, help="list arenas with <= this many blocks")
    ap.add_argument("--daemon", help="this smcrouted (default: this tree installed)")
    a = ap.parse_args(argv)
    waits = sorted(float(w) for w in a.wait.split(","))
    with tempfile.TemporaryDirectory(prefix="census-") as where:
        daemon = a.daemon or everyday_bench.install_ours(Path(where))[0]
        for n in (0, a.routes):
            with startup_bench.bench_topology() as topo:
                d = Daemon(topo["R"], daemon, startup_bench.make_config(n), extra_args=[])
                with d:
                    wait_until(lambda t=topo, n=n: count_mfc(t["R"], 4) >= n, timeout=300)
                    time.sleep(0.5)
                    print(f"--- {n:,} routes: {rss(d.pid)}", flush=True)
                    if n:
                        d.write_conf("# empty\n")
                        d.reload()
                        wait_until(lambda t=topo: count_mfc(t["R"], 4) == 0, timeout=300)
                        t0 = time.monotonic()
                        for w in waits:
                            time.sleep(max(0.0, t0 + w - time.monotonic()))
                            print(f"--- {w:g} s after removing them: {rss(d.pid)}", flush=True)
                    print(census(d.pid, a.detail), flush=True)
    with open("/proc/loadavg") as f:
        print(f"load average {f.read().split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
