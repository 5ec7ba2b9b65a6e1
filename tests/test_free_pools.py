"""smcroute.free_pools: the pages of pymalloc's free pools given back.

Each test runs a fresh interpreter (the allocator's state is the process's):
it makes many small objects, keeps a few spread among them (as a long-lived
timer or counter sample keeps the routes' arenas after a removal), drops
the rest, gives the free pools back, and then uses the allocator hard,
checking every value it made -- before, between and after further
releases.  Under another allocator nothing may be done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import gc, json, random, sys
from smcroute import free_pools

def rss_kib():
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS")).split()[1])

def value(i):  # blocks of 32 to 512 bytes
    return (float(i), str(i) * (i % 40), (i, -i), b"x" * (i % 480))

def empty_arenas():
    spans, heap = free_pools._maps()
    probes = free_pools._probes(spans)
    if not probes or heap is None:
        return 0  # (not pymalloc)
    found = [free_pools._free_pools(t, n, spans) for t, n in free_pools._tables(heap, probes)]
    return sum(len(f[1]) for f in found if f is not None)

free_pools.prepare()
gc.disable()
many = {i: value(i) for i in range(300_000)}
# a few kept, spread among the first two thirds: the arenas of the last
# third all free (pymalloc keeps the last one emptied)
kept = {i: many[i] for i in range(0, 200_000, 2_999)}
del many
empties = empty_arenas()
pymalloc = bool(free_pools._probes(free_pools._maps()[0]))
for attempt in range(50 if pymalloc else 0):  # one stays all free or not: the arenas' order
    if empties:
        break
    extra = [value(i) for i in range(attempt * 5_000)]
    del extra
    empties = empty_arenas()
before = rss_kib()
given = free_pools.release()
after = rss_kib()

checks = 0
for round in range(4):
    # as many objects again: every free pool is taken, the arenas made new too
    again = {i: value(i) for i in range(300_000)}
    r = random.Random(round)
    made = [bytes([r.randrange(256)]) * r.randrange(1, 500) for _ in range(40_000)]
    r = random.Random(round)
    assert made == [bytes([r.randrange(256)]) * r.randrange(1, 500) for _ in range(40_000)]
    for i in range(300_000):
        assert again[i] == value(i), i
    checks += len(again) + len(made)
    del again, made
    free_pools.release()
for i, v in kept.items():
    assert v == value(i), i
out = {"given": given, "before": before, "after": after, "checks": checks, "empties": empties}
print(json.dumps(out))
"""


def run_child(**env: str) -> dict[str, int]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_free_pools_are_given_back_and_the_allocator_stays_sound() -> None:
    r = run_child()
    # ~70 arenas kept by a few objects each: most of their pools are free;
    # the one pymalloc keeps all free is given back whole
    assert r["empties"] >= 1 and r["given"] >= 16 << 20, r
    assert r["before"] - r["after"] >= (r["given"] >> 10) // 2, r
    assert r["checks"] == 4 * 340_000


@pytest.mark.parametrize("allocator", ["malloc", "pymalloc_debug", "malloc_debug"])
def test_another_allocator_is_left_alone(allocator: str) -> None:
    r = run_child(PYTHONMALLOC=allocator)
    assert r["given"] == 0, r
    assert r["checks"] == 4 * 340_000
