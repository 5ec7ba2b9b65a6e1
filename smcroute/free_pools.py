"""Give the pages of CPython's free small-object pools back to the system.

CPython's small-object allocator (pymalloc) takes memory from the system in
1 MiB arenas cut into 16 KiB pools.  It gives an arena back only once every
pool in it is free (and even then keeps the last one emptied), and the
pages of a free pool stay resident.  After a reload removed 100,000 routes,
a few small objects made while the routes lived (the last counter sample's
time, an empty list) keep some of the routes' arenas, and the idle
daemon's last arena is left fully touched: ~4 MiB that never went back
(bench/README.md, "Main process memory after a removal").

`release()` gives back every page of each free pool but the first, with
madvise(MADV_DONTNEED): the first page holds the pool's header, which
pymalloc still reads (the next free pool, the arena's index).  To find the
free pools it reads pymalloc's table of arenas, an array in the C heap
(the process's own memory, read with ctypes): each arena's address, its
count of free pools and the list of them, linked through their headers.
Each pool given back is marked as never used (its size class set to the
value pymalloc gives a new pool before using it), so that pymalloc sets it
up anew when it takes it again instead of following the list of free
blocks it kept in the pages given back.

Everything read is checked against how pymalloc lays it out (CPython 3.10
to 3.13, 64-bit Linux, 4 KiB pages: 1 MiB arenas, 16 KiB pools), against
pools that hold objects just made (probes), and the table must be found
exactly once; if anything does not match (another interpreter or
allocator, e.g. PYTHONMALLOC=malloc), nothing is written and `release()`
returns 0.

While it runs, pymalloc may take a free pool for an object being made: it
takes the first of the list of one arena.  So the first KEEP_POOLS pools of
each arena's list are left alone, the pools are listed into a buffer made
beforehand (no object made per pool), and each pool is checked to be still
free right before it is written.

Must not: run while another thread allocates (the daemon has one thread);
be imported after the routes are made (`prepare()` at start-up: what it
makes then lives as long as the process, and made among the routes, it
would keep their arenas).
"""

from __future__ import annotations

import ctypes
import gc
import os
import struct
import sys
from array import array

POOL = 1 << 14  # pymalloc's pool (64-bit, CPython >= 3.10)
ARENA = 1 << 20  # its arena
PAGE = 4096
# struct arena_object: address, pool_address, nfreepools, ntotalpools, freepools,
# nextarena, prevarena
_ENTRY = struct.Struct("<QQIIQQQ")
# struct pool_header: count (a uint in an 8-byte union), freeblock, nextpool,
# prevpool, arenaindex, szidx, nextoffset, maxnextoffset
_HEADER = struct.Struct("<I4xQQQIIII")
_SZIDX = 36  # the header's size class
NEW_POOL = 0xFFFF  # a pool's size class before its first use (DUMMY_SIZE_IDX)
MADV_DONTNEED = 4
KEEP_POOLS = 2  # the first free pools of each arena's list are left alone
_Q = struct.Struct("<Q")
_FRESH = struct.Struct("<QIIQ")  # an arena entry's pool_address, nfreepools, ntotalpools, freepools
_TOTALS = (struct.pack("<I", ARENA // POOL - 1), struct.pack("<I", ARENA // POOL))

_madvise = None
_new_pool = ctypes.c_uint32(NEW_POOL)


def _supported() -> bool:
    return (
        sys.platform == "linux"
        and sys.implementation.name == "cpython"
        and (3, 10) <= sys.version_info[:2] <= (3, 13)
        and sys.maxsize > 2**32
        and sys.byteorder == "little"
        and os.sysconf("SC_PAGE_SIZE") == PAGE
    )


def prepare() -> None:
    """Look madvise up and call it once (both make objects that live on)."""
    global _madvise
    if _madvise is None and _supported():
        fn = ctypes.CDLL(None).madvise
        fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        fn.restype = ctypes.c_int
        fn(0, 0, 0)
        ctypes.memmove(ctypes.addressof(_new_pool), ctypes.addressof(_new_pool), 4)
        _madvise = fn


def _maps() -> tuple[list[tuple[int, int]], tuple[int, int] | None]:
    """The private writable mappings, and the C heap's."""
    spans: list[tuple[int, int]] = []
    heap = None
    with open("/proc/self/maps", "rb") as f:  # (as text it would look a codec up)
        for line in f:
            fields = line.split()
            if fields[1].startswith(b"rw") and fields[1].endswith(b"p"):
                lo, hi = (int(x, 16) for x in fields[0].split(b"-"))
                spans.append((lo, hi))
                if fields[-1] == b"[heap]":
                    heap = (lo, hi)
    return spans, heap


def _inside(spans: list[tuple[int, int]], lo: int, hi: int) -> bool:
    return any(a <= lo and hi <= b for a, b in spans)


def _probes(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(pool, arena index) of the pools of objects made now, of several
    sizes, each pool checked as pymalloc's: in use, of the object's size
    class.  Empty if one is not."""
    made: list[object] = [bytes(n) for n in (2, 20, 60, 120, 250, 400) for _ in range(3)]
    made += [float(i) + 0.5 for i in range(8)]
    out = []
    for obj in made:
        pool = id(obj) & ~(POOL - 1)
        if not _inside(spans, pool, pool + POOL):
            return []
        count, _, _, _, index, szidx, _, _ = _HEADER.unpack(ctypes.string_at(pool, _HEADER.size))
        if count < 1 or szidx != (sys.getsizeof(obj) - 1) >> 4:
            return []
        out.append((pool, index))
    return out


def _tables(heap: tuple[int, int], probes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(address, entries) of each block of the C heap that could be the
    arena table: its entries for the probes' arena indexes hold arenas
    around the probes, and glibc's chunk size before it fits 16 << k
    entries.  Old copies may qualify too: `_free_pools` tells them apart."""
    lo, hi = heap
    data = ctypes.string_at(lo, hi - lo)
    pool0, index0 = probes[0]
    hits = []
    for total in _TOTALS:  # each arena's ntotalpools (63 or 64) ...
        at = data.find(total)
        while at >= 0:
            hits.append(at - 20)
            at = data.find(total, at + 1)
    out = []
    for e in hits:
        # ... after its nfreepools (<= 64), in a 16-byte aligned block
        if e < 16 or (lo + e) % 16 or data[e + 16] > ARENA // POOL or any(data[e + 17 : e + 20]):
            continue
        base = e - _ENTRY.size * index0
        if base < 16 or not 0 <= pool0 - _Q.unpack_from(data, e)[0] < ARENA:
            continue
        if not all(
            base + _ENTRY.size * (i + 1) <= len(data)
            and 0 <= p - _Q.unpack_from(data, base + _ENTRY.size * i)[0] < ARENA
            for p, i in probes
        ):
            continue
        (size,) = _Q.unpack_from(data, base - 8)
        if size & 2:  # an mmapped chunk: not in this heap
            continue
        for k in range(12):
            n = 16 << k
            # (glibc leaves a remainder under 32 bytes in the chunk)
            fits = 0 <= (size & ~7) - max(32, (n * _ENTRY.size + 8 + 15) & ~15) <= 16
            if fits and base + n * _ENTRY.size <= len(data):
                out.append((lo + base, n))
    return out


Empty = tuple[
    int, int, int, int, int
]  # table entry, first pool, where carving stood, nfreepools, first free pool


def _free_pools(
    table: int, n: int, spans: list[tuple[int, int]]
) -> tuple[array[int], list[Empty]] | None:
    """The free pools of each arena after the first KEEP_POOLS of its list,
    and the arenas all free (but the first of pymalloc's list); None if the
    table is not pymalloc's as it is now: each arena as pymalloc makes it,
    the arenas with free pools linked in one list through this table,
    every pool of their lists free, of that arena."""
    raw = ctypes.string_at(table, n * _ENTRY.size)
    end = table + n * _ENTRY.size
    arenas = {}
    for i in range(n):
        addr, pools_at, nfree, ntotal, first, nxt, prev = _ENTRY.unpack_from(raw, i * _ENTRY.size)
        if not addr:
            continue  # an unused entry
        links_ok = not nfree or all(  # (a full arena's links are stale)
            not p or (table <= p < end and (p - table) % _ENTRY.size == 0) for p in (nxt, prev)
        )
        ok = (
            links_ok
            and addr % PAGE == 0
            and ntotal == ARENA // POOL - (1 if addr % POOL else 0)
            and nfree <= ntotal
            and addr <= pools_at <= addr + ARENA
            and (not first or (addr <= first < pools_at and first % POOL == 0))
            and _inside(spans, addr, addr + ARENA)
        )
        if not ok:
            return None
        arenas[table + i * _ENTRY.size] = (addr, pools_at, nfree, first, nxt, prev)
    heads = [at for at, a in arenas.items() if a[2] and not a[5]]
    order: list[int] = []
    at = heads[0] if len(heads) == 1 else 0
    while at:
        if at not in arenas or at in order or not arenas[at][2]:
            return None
        if arenas[at][5] != (order[-1] if order else 0):
            return None
        order.append(at)
        at = arenas[at][4]
    if len(heads) > 1 or len(order) != sum(1 for a in arenas.values() if a[2]):
        return None  # pymalloc's list holds every arena with a free pool
    room = sum(a[2] for a in arenas.values()) + 64
    out = array("Q", bytes(8 * room))  # (> 512 bytes: not from pymalloc)
    k = 0
    empties: list[Empty] = []
    for at in order:
        addr, pools_at, nfree, pool, _, _ = arenas[at]
        ntotal = ARENA // POOL - (1 if addr % POOL else 0)
        empty = nfree == ntotal and at != order[0]
        if empty:
            empties.append((at, -(-addr // POOL) * POOL, pools_at, nfree, pool))
        seen = 0
        while pool:
            seen += 1
            if seen > nfree or not addr <= pool < pools_at or pool % POOL:
                return None
            head = ctypes.string_at(pool, _HEADER.size)
            count, _, nxt, _, index, szidx, _, _ = _HEADER.unpack(head)
            if count or table + index * _ENTRY.size != at or not (szidx < 32 or szidx == NEW_POOL):
                return None
            if seen > KEEP_POOLS and not empty:
                out[k] = pool
                k += 1
            pool = nxt
        if empty and seen != (pools_at - empties[-1][1]) // POOL:
            return None  # each pool carved is in the list
    del out[k:]
    return out, empties


def release() -> int:
    """Give back the pages of pymalloc's free pools (all but the first of
    each); returns the bytes given back (0: nothing was done)."""
    prepare()
    if _madvise is None:
        return 0
    was = gc.isenabled()
    gc.disable()
    try:
        spans, heap = _maps()
        probes = _probes(spans)
        if heap is None or not probes:
            return 0
        tables = [_free_pools(t, n, spans) for t, n in _tables(heap, probes)]
        found = [pools for pools in tables if pools is not None]
        if len(found) != 1:
            return 0  # not found, or not told apart from a copy
        pools, empties = found[0]
        given = 0
        for at, first, pools_at, nfree, free in empties:
            # An arena all free is made as pymalloc makes a new one (no pool
            # carved yet: its pools set up when taken), and all of it given back.
            now = _ENTRY.unpack(ctypes.string_at(at, _ENTRY.size))
            if now[1] != pools_at or now[2] != nfree or now[4] != free:
                continue  # changed meanwhile
            fresh = _FRESH.pack(first, nfree, nfree, 0)  # pool_address, the counts, no freepools
            ctypes.memmove(at + 8, fresh, len(fresh))
            if _madvise(first, nfree * POOL, MADV_DONTNEED) == 0:
                given += pools_at - first
        for pool in pools:
            if _HEADER.unpack(ctypes.string_at(pool, _HEADER.size))[0]:
                continue  # taken meanwhile
            ctypes.memmove(pool + _SZIDX, ctypes.addressof(_new_pool), 4)
            if _madvise(pool + PAGE, POOL - PAGE, MADV_DONTNEED) == 0:
                given += POOL - PAGE
        return given
    except (OSError, ValueError):
        return 0
    finally:
        if was:
            gc.enable()
