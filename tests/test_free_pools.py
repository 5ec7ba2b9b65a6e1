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

free_pools.prepare()
gc.disable()
rnd = random.Random(7)
many = {}
for i in range(300_000):  # blocks of 32 to 512 bytes
    many[i] = (float(i), str(i) * (i % 40), (i, -i), b"x" * (i % 480))
kept = {i: many[i] for i in range(0, 300_000, 2_999)}  # a few, spread among them
del many
before = rss_kib()
given = free_pools.release()
after = rss_kib()

def churn(seed):
    r = random.Random(seed)
    made = [bytes([r.randrange(256)]) * r.randrange(1, 500) for _ in range(40_000)]
    made += [(r.random(), str(k)) for k in range(20_000)]
    return made

checks = 0
for round in range(6):
    made = churn(round)
    again = churn(round)  # the same values, made anew
    assert made == again, "values changed under the allocator"
    checks += len(made)
    if round % 2 == 0:
        free_pools.release()
    del made, again
for i, v in kept.items():
    assert v == (float(i), str(i) * (i % 40), (i, -i), b"x" * (i % 480)), i
print(json.dumps({"given": given, "before": before, "after": after, "checks": checks}))
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
    # ~100 arenas kept by a few objects each: most of their pools are free
    assert r["given"] >= 16 << 20, r
    assert r["before"] - r["after"] >= (r["given"] >> 10) // 2, r
    assert r["checks"] == 6 * 60_000


@pytest.mark.parametrize("allocator", ["malloc", "pymalloc_debug", "malloc_debug"])
def test_another_allocator_is_left_alone(allocator: str) -> None:
    r = run_child(PYTHONMALLOC=allocator)
    assert r["given"] == 0, r
    assert r["checks"] == 6 * 60_000
