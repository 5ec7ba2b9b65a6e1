"""Counters and rates: the kernel's per-entry and per-VIF/MIF counters, sampled.

Owns: one fast route-netlink dump of the multicast forwarding cache
(RTM_GETROUTE, families RTNL_FAMILY_IPMR/IP6MR: packets, bytes,
wrong-interface packets and the time since the entry was last used, see
doc/KERNEL.md "Counters"), the per-VIF counters (RTM_GETLINK family IPMR for
IPv4, `/proc/net/ip6_mr_vif` for IPv6 on the default table), the steady
`Sampler` that keeps packets/s and bits/s over the last interval, the daemon's
event counts (upcalls, kernel failures, reloads, learned-limit hits), and the
extra fields `-d show` gains (`wrong_if`, `pps`, `bps`, `last_seen`; per
template `learned` and summed counters; per interface packets and bytes in and
out).

Memory: a sample is a handful of flat arrays sorted by a 64-bit key per
kernel entry (IPv4: the exact (S,G) packed into 60 bits, the group's last
28 bits above the source's 32: whole bytes, made from the dump's columns;
IPv6: a keyed BLAKE2b of the pair, top bit set) -- 44 bytes per entry, no
Python object per entry.  Must not: change kernel state, make routing decisions, or import
anything heavy (the metrics endpoint is `smcroute.metrics`).
"""

from __future__ import annotations

import os
import struct
import sys
from _blake2 import blake2b  # hashlib.blake2b itself, without hashlib loading OpenSSL
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from ipaddress import IPv4Address

from smcroute.engine.core import Engine
from smcroute.model import Address
from smcroute.netlink import (
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWROUTE,
    RTNH_F_UNRESOLVED,
    RTNL_FAMILY_IP6MR,
    RTNL_FAMILY_IPMR,
    Netlink,
    NetlinkError,
    default_table,
)
from smcroute.options import DEFAULT_INTERVAL
from smcroute.records import dataclass, field

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import Any

RTM_NEWLINK = 16
RTA_DST, RTA_SRC, RTA_TABLE, RTA_MFC_STATS, RTA_EXPIRES = 1, 2, 15, 17, 23
IFLA_AF_SPEC = 26
IPMRA_TABLE_ID, IPMRA_TABLE_VIFS, IPMRA_VIF = 1, 6, 1
IPMRA_VIFA_IFINDEX, IPMRA_VIFA_VIF_ID = 1, 2
IPMRA_VIFA_BYTES_IN, IPMRA_VIFA_BYTES_OUT = 4, 5
IPMRA_VIFA_PACKETS_IN, IPMRA_VIFA_PACKETS_OUT = 6, 7
USER_HZ = 100  # RTA_EXPIRES is in clock ticks of 1/100 s

_NLMSG = struct.Struct("=IHHII")
_RTA = struct.Struct("=HH")
_RTMSG = struct.Struct("=BBBBBBBBI")
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_STATS = struct.Struct("=QQQ")
_I32 = struct.Struct("=i")
_IFINFO = struct.Struct("=BxHiII")
_V6_BIT = 1 << 63
_G28 = 0x0FFFFFFF
_LOW_NIBBLE = bytes(b & 0x0F for b in range(256))
_ZERO16 = bytes(16)
_KEY = os.urandom(16)  # IPv6 keys are keyed hashes: no crafted collisions


def key64(family: int, source: Address | None, group: Address) -> int:
    """The sample key of a kernel entry (source None: a (*,G) entry)."""
    if family == 4:
        return ((int(group) & _G28) << 32) | (int(source) if source is not None else 0)
    raw = (source.packed if source is not None else _ZERO16) + group.packed
    return int.from_bytes(blake2b(raw, digest_size=8, key=_KEY).digest()) | _V6_BIT


def _key(family: int, source: Any, group: Any) -> int:
    """key64 for many lookups: IPv4 from the addresses' ints as ipaddress
    stores them (int() is a Python-level call)."""
    if family == 4 and type(group) is IPv4Address:
        return ((group._ip & _G28) << 32) | (0 if source is None else source._ip)  # type: ignore[attr-defined,no-any-return]
    return key64(family, source, group)


def _raw_key(family: int, src: bytes, grp: bytes) -> int:
    if family == 4:
        return ((int.from_bytes(grp) & _G28) << 32) | int.from_bytes(src)
    return int.from_bytes(blake2b(src + grp, digest_size=8, key=_KEY).digest()) | _V6_BIT


@dataclass(frozen=True, slots=True)
class Entry:
    """One kernel entry's counters; `pps`/`bps` are None before two samples."""

    packets: int
    bytes: int
    wrong_if: int
    last_seen: float | None  # seconds since the packet counter moved; None: never
    pps: float | None = None
    bps: float | None = None


class Sample:
    """Counters of every kernel entry at one moment: flat arrays in dump order.

    No per-entry Python object and no index is kept: a lookup scans the key
    array (C speed), and whoever looks up many entries builds a transient
    index with `finder()`.
    """

    __slots__ = ("bps", "bytes", "idle", "keys", "packets", "pps", "t", "vifs", "wrong")

    def __init__(self, t: float, cols: Columns | None = None) -> None:
        self.t = t
        keys, packets, nbytes, wrong, idle = cols if cols is not None else _columns()
        self.keys, self.packets, self.bytes, self.wrong, self.idle = (
            keys,
            packets,
            nbytes,
            wrong,
            idle,
        )
        self.pps: array[float] | None = None
        self.bps: array[float] | None = None
        self.vifs: dict[tuple[int, int], VifCounters] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def index(self, key: int) -> int:
        try:
            return self.keys.index(key)
        except ValueError:
            return -1

    def entry(self, i: int) -> Entry:
        pk = self.packets[i]
        last = None if pk == 0 else round(float(self.idle[i]), 2)
        pps = None if self.pps is None else round(float(self.pps[i]), 3)
        bps = None if self.bps is None else round(float(self.bps[i]), 1)
        return Entry(pk, self.bytes[i], self.wrong[i], last, pps, bps)

    def get(self, family: int, source: Address | None, group: Address) -> Entry | None:
        i = self.index(key64(family, source, group))
        return None if i < 0 else self.entry(i)

    def finder(self) -> Callable[[int, Address | None, Address], Entry | None]:
        """`get` for many lookups: an index built once, dropped with the callable."""
        where = {k: i for i, k in enumerate(self.keys)}

        def find(family: int, source: Address | None, group: Address) -> Entry | None:
            i = where.get(_key(family, source, group))
            return None if i is None else self.entry(i)

        return find

    def rates_from(self, prev: Sample) -> None:
        """packets/s and bits/s since `prev` (an entry new since then: since its start)."""
        dt = self.t - prev.t
        n = len(self.keys)
        pps = array("f", bytes(4 * n))
        bps = array("f", bytes(4 * n))
        if dt > 0:
            cur_pk, cur_by, pk, pb = self.packets, self.bytes, prev.packets, prev.bytes
            if prev.keys == self.keys:  # the usual case: the same entries in the same order
                pos: Any = range(n)
            else:
                where = {k: j for j, k in enumerate(prev.keys)}
                pos = [where.get(k, -1) for k in self.keys]
            rate = 1.0 / dt
            for i, j in enumerate(pos):
                p, b = cur_pk[i], cur_by[i]
                if j >= 0 and pk[j] <= p:
                    p -= pk[j]
                    b -= pb[j]
                pps[i] = p * rate
                bps[i] = b * 8 * rate
        self.pps, self.bps = pps, bps


@dataclass(frozen=True, slots=True)
class VifCounters:
    family: int
    vif: int
    ifindex: int
    name: str
    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int


class CountersView(Mapping[tuple[int, object, object], tuple[int, int]]):
    """(packets, bytes) by engine key, for `smcroute.show` (a `Sample` underneath)."""

    def __init__(self, sample: Sample) -> None:
        self.sample = sample
        self.where = {k: i for i, k in enumerate(sample.keys)}

    def __getitem__(self, key: tuple[int, object, object]) -> tuple[int, int]:
        got: tuple[int, int] | None = self.get(key)
        if got is None:
            raise KeyError(key)
        return got

    def get(self, key: tuple[int, object, object], default: Any = None) -> Any:
        """`show -d` asks once per row: no exception for a miss."""
        i = self.where.get(_key(*key))
        return default if i is None else (self.sample.packets[i], self.sample.bytes[i])

    def many(self, keys: Iterable[tuple[int, Any, Any]]) -> list[tuple[int, int]]:
        """`get(key, (0, 0))` of every key, in one loop (`show -d` of many rules)."""
        where, pk, by, no = self.where, self.sample.packets, self.sample.bytes, (0, 0)
        out = []
        for family, source, group in keys:
            if family == 4 and type(group) is IPv4Address:  # _key, inline
                s = 0 if source is None else source._ip
                i = where.get(((group._ip & _G28) << 32) | s)  # type: ignore[attr-defined]
            else:
                i = where.get(key64(family, source, group))
            out.append(no if i is None else (pk[i], by[i]))
        return out

    def __iter__(self) -> Iterator[tuple[int, object, object]]:
        return iter(())  # lookups only

    def __len__(self) -> int:
        return len(self.sample)


# --- netlink -------------------------------------------------------------------


def _dump(
    nl: Netlink, kind: int, body: bytes, batch: Callable[[bytes, int], bool] | None = None
) -> Iterator[tuple[int, bytes, int, int]]:
    """Raw dump: (type, buffer, payload offset, payload end) per message.

    `batch(buffer, seq)`, if given, may take a whole buffer at once (True);
    the messages of a buffer it leaves are yielded one by one."""
    nl.seq += 1
    seq = nl.seq
    msg = _NLMSG.pack(16 + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body
    nl.sock.send(msg)
    unpack = _NLMSG.unpack_from
    while True:
        try:
            data = nl.sock.recv(1 << 17)
        except OSError as e:
            raise NetlinkError(f"netlink dump failed: {os.strerror(e.errno or 0)}") from e
        if batch is not None and batch(data, seq):
            continue
        off, size = 0, len(data)
        while off + 16 <= size:
            length, k, _flags, mseq, _pid = unpack(data, off)
            if length < 16 or off + length > size:
                raise NetlinkError("truncated netlink message")
            if mseq == seq:
                if k == NLMSG_DONE:
                    return
                if k == NLMSG_ERROR:
                    code = -_I32.unpack_from(data, off + 16)[0] if length >= 20 else 0
                    if code:
                        raise NetlinkError(f"netlink dump failed: {os.strerror(code)}")
                else:
                    yield k, data, off + 16, off + length
            off += (length + 3) & ~3


Columns = tuple["array[int]", "array[int]", "array[int]", "array[int]", "array[float]"]


def _columns() -> Columns:
    """keys, packets, bytes, wrong_if (u64) and idle seconds (float32)."""
    return array("Q"), array("Q"), array("Q"), array("Q"), array("f")


# The layout the kernel writes (ipmr_fill_mroute, ip6mr_fill_mroute, mr_fill_mroute):
# rtmsg, RTA_TABLE, RTA_SRC, RTA_DST first; RTA_MFC_STATS, [RTA_PAD], RTA_EXPIRES last.
_FAST_HEAD = {
    4: struct.Struct("=8xIHHIHH4sHH4s"),  # rtm_flags, table attr, source attr, group attr
    6: struct.Struct("=8xIHHIHH16sHH16s"),
}
_FAST_EXPIRES = struct.Struct("=HHQ")
_FAST_STATS = struct.Struct("=HHQQQ")
RTA_PAD = 24


def parse_mfc_fast(
    data: bytes, off: int, end: int, table: int, family: int
) -> tuple[int, int, int, int, int] | bool:
    """`parse_mfc` for the layout the kernel writes, with a few struct calls.

    True: another layout (use `parse_mfc`); False: not an entry of ours.
    """
    head = _FAST_HEAD[family]
    if end - off < head.size + 40:
        return True
    flags, tl, tt, tid, sl, st, src, dl, dt, grp = head.unpack_from(data, off)
    alen = 8 if family == 4 else 20
    if not (tl == 8 and tt == RTA_TABLE and sl == alen and st == RTA_SRC and dl == alen
            and dt == RTA_DST):  # fmt: skip
        return True
    if tid != table or flags & RTNH_F_UNRESOLVED:
        return False
    el, et, idle = _FAST_EXPIRES.unpack_from(data, end - 12)
    if el != 12 or et != RTA_EXPIRES:
        return True
    e = end - 12
    if _RTA.unpack_from(data, e - 4) == (4, RTA_PAD):
        e -= 4
    ml, mt, pk, by, wr = _FAST_STATS.unpack_from(data, e - 28)
    if ml != 28 or mt != RTA_MFC_STATS:
        return True
    if family == 4:
        return ((int.from_bytes(grp) & _G28) << 32) | int.from_bytes(src), pk, by, wr, idle
    return _raw_key(6, src, grp), pk, by, wr, idle


def parse_mfc(data: bytes, off: int, end: int, table: int) -> tuple[int, int, int, int, int] | None:
    """One RTM_NEWROUTE of an MFC dump -> (key, packets, bytes, wrong_if, idle ticks)."""
    if end - off < _RTMSG.size:
        return None
    family, _dl, _sl, _tos, tbl, _p, _s, _t, flags = _RTMSG.unpack_from(data, off)
    if flags & RTNH_F_UNRESOLVED:
        return None
    src = grp = None
    pk = by = wr = idle = 0
    unpack = _RTA.unpack_from
    p = off + _RTMSG.size
    while p + 4 <= end:
        ln, kind = unpack(data, p)
        if ln < 4 or p + ln > end:
            break
        kind &= 0x3FFF
        if kind == RTA_SRC:
            src = data[p + 4 : p + ln]
        elif kind == RTA_DST:
            grp = data[p + 4 : p + ln]
        elif kind == RTA_MFC_STATS and ln >= 28:
            pk, by, wr = _STATS.unpack_from(data, p + 4)
        elif kind == RTA_EXPIRES and ln >= 12:
            idle = _U64.unpack_from(data, p + 4)[0]
        elif kind == RTA_TABLE and ln >= 8:
            tbl = _U32.unpack_from(data, p + 4)[0]
        p += (ln + 3) & ~3
    size = 4 if family == RTNL_FAMILY_IPMR else 16
    if tbl != table or grp is None or len(grp) != size:
        return None
    if src is None:
        src = bytes(size)
    elif len(src) != size:
        return None
    return _raw_key(4 if size == 4 else 6, src, grp), pk, by, wr, idle


_ATTR_HEADS = {  # (length, type) of RTA_TABLE, RTA_SRC, RTA_DST, RTA_MFC_STATS, RTA_EXPIRES
    fam: tuple(int.from_bytes(_RTA.pack(n, t), sys.byteorder) for n, t in heads)
    for fam, heads in (
        (4, ((8, RTA_TABLE), (8, RTA_SRC), (8, RTA_DST), (28, RTA_MFC_STATS), (12, RTA_EXPIRES))),
        (6, ((8, RTA_TABLE), (20, RTA_SRC), (20, RTA_DST), (28, RTA_MFC_STATS), (12, RTA_EXPIRES))),
    )
}
_BATCH: dict[tuple[int, int], struct.Struct | None] = {}


def forget_layouts() -> None:
    """Drop the layouts `_batch_struct` made (remade on the next dump): after a
    big removal, so that none of them stays among the removed entries' memory."""
    _BATCH.clear()


def _batch_struct(family: int, length: int) -> struct.Struct | None:
    """A whole message of `length` bytes as `parse_mfc_fast` reads it (no
    RTA_PAD), padded to its 4-byte stride: for buffers of such messages only."""
    got = _BATCH.get((family, length))
    if got is None and (family, length) not in _BATCH:
        if len(_BATCH) >= 64:  # one per number of OIFs, usually a few: bounded anyway
            _BATCH.clear()
        a = "I" if family == 4 else "16s"
        head = f"=IH2xI4x8xIII I{a} I{a}"  # nlmsghdr, rtmsg (flags), table, source, group
        skip = length - struct.calcsize(head) - 40
        tail = f"{skip}xIQQQ IQ{-length % 4}x"  # stats, expires
        got = _BATCH[(family, length)] = struct.Struct(head + tail) if skip >= 0 else None
    return got


def _batch_mfc(family: int, table: int, cols: Columns) -> Callable[[bytes, int], bool]:
    """Takes a buffer of nothing but entries of `table` in one layout (the usual
    case: the same number of OIFs) at C speed: each field a strided view of
    the whole buffer (no Python object per entry but the keys)."""
    keys, packets, nbytes, wrong, idle = cols
    heads = _ATTR_HEADS[family]
    alen = 4 if family == 4 else 16
    lo, hi = (0, 1) if sys.byteorder == "little" else (1, 0)  # the 32-bit halves of a u64

    def take(data: bytes, seq: int) -> bool:
        if len(data) < 16:
            return False
        length = _U32.unpack_from(data, 0)[0]
        st = _batch_struct(family, length)
        if st is None or len(data) % st.size or length % 4:
            return False
        n, step = len(data) // st.size, st.size // 4
        words = memoryview(data).cast("I")

        def col(off: int) -> memoryview:  # the 32-bit field at `off` of every message
            return words[off // 4 :: step]

        def u64(off: int) -> bytearray:  # the 64-bit field at `off`, as host-order bytes
            raw = bytearray(8 * n)
            halves = memoryview(raw).cast("I")
            halves[lo::2], halves[hi::2] = col(off), col(off + 4)
            return raw

        def all_are(off: int, value: int) -> bool:
            return col(off).tobytes() == _U32.pack(value) * n

        fixed = [(0, length), (8, seq), (32, table), (28, heads[0]), (36, heads[1])]
        fixed += [(40 + alen, heads[2]), (length - 40, heads[3]), (length - 12, heads[4])]
        if (
            not all(all_are(off, v) for off, v in fixed)
            or set(memoryview(data).cast("H")[2 :: 2 * step].tolist()) != {RTM_NEWROUTE}
            or any(f & RTNH_F_UNRESOLVED for f in set(col(24).tolist()))
        ):
            return False  # message by message, as the kernel wrote them
        if family == 4:  # key64: the group's last 28 bits, then the source (host order)
            src, grp = array("I", col(40).tobytes()), bytearray(col(48).tobytes())
            grp[0::4] = grp[0::4].translate(_LOW_NIBBLE)  # network order: its first 4 bits
            group = array("I", grp)
            if sys.byteorder == "little":
                src.byteswap()
                group.byteswap()
            raw = bytearray(8 * n)
            halves = memoryview(raw).cast("I")
            halves[lo::2], halves[hi::2] = src, group
            keys.frombytes(raw)
        else:
            at = range(0, len(data), st.size)
            keys.extend([_raw_key(6, data[o + 40 : o + 56], data[o + 60 : o + 76]) for o in at])
        packets.frombytes(u64(length - 36))
        nbytes.frombytes(u64(length - 28))
        wrong.frombytes(u64(length - 20))
        idle.extend([t / USER_HZ for t in array("Q", u64(length - 8))])
        return True

    return take


def dump_mfc(nl: Netlink, families: tuple[int, ...], table: int) -> Columns:
    """Every resolved entry of our table(s), as columns (see `_columns`)."""
    cols = _columns()
    keys, packets, nbytes, wrong, idle = cols
    for fam in families:
        nl_family = RTNL_FAMILY_IPMR if fam == 4 else RTNL_FAMILY_IP6MR
        tbl = default_table(fam, table)
        body = _RTMSG.pack(nl_family, 0, 0, 0, 0, 0, 0, 0, 0)
        for kind, data, off, end in _dump(nl, RTM_GETROUTE, body, _batch_mfc(fam, tbl, cols)):
            if kind != RTM_NEWROUTE:
                continue
            row: Any = parse_mfc_fast(data, off, end, tbl, fam)
            if row is True:
                row = parse_mfc(data, off, end, tbl)
            if row:
                keys.append(row[0])
                packets.append(row[1])
                nbytes.append(row[2])
                wrong.append(row[3])
                idle.append(row[4] / USER_HZ)
    return cols


def _attrs(data: bytes, off: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, value offset, value end) of each attribute in data[off:end]."""
    while off + 4 <= end:
        ln, kind = _RTA.unpack_from(data, off)
        if ln < 4 or off + ln > end:
            return
        yield kind & 0x3FFF, off + 4, off + ln
        off += (ln + 3) & ~3


def parse_vif_table(data: bytes, off: int, end: int, table: int) -> list[tuple[int, ...]]:
    """One RTM_NEWLINK of an IPMR link dump -> [(vif, ifindex, pk in, by in, pk out, by out)]."""
    out: list[tuple[int, ...]] = []
    for kind, a, b in _attrs(data, off + 16, end):  # after struct ifinfomsg
        if kind != IFLA_AF_SPEC:
            continue
        tid = None
        vifs: list[tuple[int, ...]] = []
        for k2, a2, b2 in _attrs(data, a, b):
            if k2 == IPMRA_TABLE_ID and b2 - a2 >= 4:
                tid = _U32.unpack_from(data, a2)[0]
            elif k2 == IPMRA_TABLE_VIFS:
                for k3, a3, b3 in _attrs(data, a2, b2):
                    if k3 != IPMRA_VIF:
                        continue
                    f: dict[int, int] = {}
                    for k4, a4, b4 in _attrs(data, a3, b3):
                        if b4 - a4 >= 8 and k4 in (4, 5, 6, 7):
                            f[k4] = _U64.unpack_from(data, a4)[0]
                        elif b4 - a4 >= 4 and k4 in (1, 2):
                            f[k4] = _U32.unpack_from(data, a4)[0]
                    if IPMRA_VIFA_VIF_ID in f and IPMRA_VIFA_IFINDEX in f:
                        vifs.append(
                            (
                                f[IPMRA_VIFA_VIF_ID],
                                f[IPMRA_VIFA_IFINDEX],
                                f.get(IPMRA_VIFA_PACKETS_IN, 0),
                                f.get(IPMRA_VIFA_BYTES_IN, 0),
                                f.get(IPMRA_VIFA_PACKETS_OUT, 0),
                                f.get(IPMRA_VIFA_BYTES_OUT, 0),
                            )
                        )
        if tid == table:
            out.extend(vifs)
    return out


def parse_mif_proc(text: str) -> list[tuple[str, int, int, int, int, int]]:
    """/proc/net/ip6_mr_vif -> [(name, mif, pk in, by in, pk out, by out)]."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 6 or not f[0].isdigit():
            continue
        try:
            mif, name = int(f[0]), f[1]
            by_in, pk_in, by_out, pk_out = (int(x) for x in f[2:6])
        except ValueError:
            continue
        out.append((name, mif, pk_in, by_in, pk_out, by_out))
    return out


def dump_vifs(
    nl: Netlink, families: tuple[int, ...], table: int, names: Mapping[int, str]
) -> dict[tuple[int, int], VifCounters]:
    """Per-VIF/MIF counters by (family, ifindex); `names`: ifindex -> name."""
    out: dict[tuple[int, int], VifCounters] = {}
    if 4 in families:
        body = _IFINFO.pack(RTNL_FAMILY_IPMR, 0, 0, 0, 0)
        try:
            for kind, data, off, end in _dump(nl, RTM_GETLINK, body):
                if kind != RTM_NEWLINK:
                    continue
                for vif, idx, pi, bi, po, bo in parse_vif_table(
                    data, off, end, default_table(4, table)
                ):
                    out[(4, idx)] = VifCounters(4, vif, idx, names.get(idx, "?"), pi, bi, po, bo)
        except NetlinkError:
            pass  # a kernel without the IPMR link dump (before 4.17): no IPv4 VIF counters
    if 6 in families and table in (0, default_table(6, 0)):
        try:
            with open("/proc/net/ip6_mr_vif", encoding="ascii", errors="replace") as f:
                text = f.read()
        except OSError:
            text = ""
        by_name = {n: i for i, n in names.items()}
        for name, mif, pi, bi, po, bo in parse_mif_proc(text):
            index = by_name.get(name)
            if index is not None:
                out[(6, index)] = VifCounters(6, mif, index, name, pi, bi, po, bo)
    return out


# --- the sampler -----------------------------------------------------------------


@dataclass
class Counts:
    """Event counts of the daemon since start (for the metrics endpoint)."""

    upcalls: dict[str, int] = field(
        default_factory=lambda: {"nocache": 0, "wrongvif": 0, "other": 0}
    )
    kernel_failures: int = 0
    reloads: int = 0
    reload_failures: int = 0
    reload_seconds: float = 0.0
    limit_hits: int = 0

    def upcall(self, engine: Engine, family: int, msgtype: int, source: Any, group: Any) -> None:
        kind = {1: "nocache", 2: "wrongvif"}.get(msgtype, "other")
        self.upcalls[kind] += 1
        if (
            msgtype == 1
            and len(engine.learned) >= engine.max_learned
            and (family, source, group) not in engine.learned
            and (family, source, group) not in engine.mfc
        ):
            self.limit_hits += 1


class Sampler:
    """Samples every `interval` seconds (0: never); keeps the last sample with rates."""

    def __init__(self, nl: Netlink, families: tuple[int, ...], table: int, interval: float) -> None:
        self.nl = nl
        self.families = families
        self.table = table
        self.interval = interval
        self.last: Sample | None = None
        self.next_due: float | None = None
        self.failed = False
        self.samples = 0

    def fresh(self, now: float, names: Mapping[int, str] | None = None) -> Sample:
        """One dump now (no rates); with `names`, the VIF counters too."""
        s = Sample(now, dump_mfc(self.nl, self.families, self.table))
        if names is not None:
            s.vifs = dump_vifs(self.nl, self.families, self.table, names)
        return s

    def due(self, now: float) -> bool:
        if not self.interval:
            return False
        if self.next_due is None:
            self.next_due = now
        return now >= self.next_due

    def sample(self, now: float, names: Mapping[int, str]) -> Sample | None:
        """Take the steady sample; None (and one log line by the caller) on failure."""
        assert self.next_due is not None
        # Steady: the next one is due one interval after this one was, not after now.
        self.next_due += self.interval
        if self.next_due <= now:
            self.next_due = now + self.interval
        try:
            s = self.fresh(now, names)
        except (NetlinkError, OSError):
            self.failed = True
            return None
        self.failed = False
        if self.last is not None:
            s.rates_from(self.last)
        self.last = s
        self.samples += 1
        return s


# --- show -d extras ----------------------------------------------------------------


def _put(obj: dict[str, Any], cur: Entry | None, rated: Entry | None) -> None:
    """wrong_if and last_seen from the fresh dump; pps/bps from the steady sample."""
    obj["wrong_if"] = cur.wrong_if if cur else 0
    obj["pps"] = rated.pps if rated else None
    obj["bps"] = rated.bps if rated else None
    obj["last_seen"] = cur.last_seen if cur else None


def add_route_stats(doc: Any, engine: Engine, fresh: Sample, steady: Sample | None) -> None:
    """Extend a `show routes` document (detail) in place with the rate fields.

    Relies on `smcroute.show.routes` listing kernel rows, templates and rules
    in the engine's own order (it does: one pass each).
    """
    routes = doc["routes"]
    templates = engine.templates()
    tindex = {id(t): i for i, t in enumerate(templates)}
    sums = [[0, 0, 0.0, 0.0] for _ in templates]  # learned, wrong_if, pps, bps

    now = fresh.finder()
    rated = steady.finder() if steady is not None else lambda _f, _s, _g: None
    for obj, row in zip(routes["kernel"], engine.kernel_rows(), strict=True):
        cur = now(row.family, row.source, row.group)
        r = rated(row.family, row.source, row.group)
        _put(obj, cur, r)
        if row.kind == "learned" and row.source is not None:
            t = engine.template_for(row.family, row.iif, row.source, row.group)
            if t is not None and id(t) in tindex:
                acc = sums[tindex[id(t)]]
                acc[0] += 1
                acc[1] += obj["wrong_if"]
                acc[2] += (r.pps or 0.0) if r else 0.0
                acc[3] += (r.bps or 0.0) if r else 0.0
    have_rates = steady is not None and steady.pps is not None
    for obj, acc in zip(routes["asm"], sums, strict=True):
        obj["learned"] = acc[0]
        obj["wrong_if"] = acc[1]
        obj["pps"] = round(acc[2], 3) if have_rates else None
        obj["bps"] = round(acc[3], 1) if have_rates else None
    for obj, rule in zip(routes["ssm"], engine.rules(), strict=True):
        _put(
            obj,
            now(rule.family, rule.source, rule.group),
            rated(rule.family, rule.source, rule.group),
        )


def add_interface_stats(doc: Any, vifs: Mapping[tuple[int, int], VifCounters]) -> None:
    """Extend a `show interfaces` document (detail) with packets/bytes in and out."""
    for obj in doc["interfaces"]:
        total = [0, 0, 0, 0]
        for fam, key in ((4, "ipv4"), (6, "ipv6")):
            c = vifs.get((fam, obj["index"]))
            if c is None:
                obj[key] = None
                continue
            vals = (c.packets_in, c.bytes_in, c.packets_out, c.bytes_out)
            obj[key] = dict(
                zip(("packets_in", "bytes_in", "packets_out", "bytes_out"), vals, strict=True)
            )
            total = [a + b for a, b in zip(total, vals, strict=True)]
        obj["packets_in"], obj["bytes_in"], obj["packets_out"], obj["bytes_out"] = total


STAT_KEYS = frozenset(
    {"wrong_if", "pps", "bps", "last_seen", "learned", "packets_in", "bytes_in",
     "packets_out", "bytes_out", "ipv4", "ipv6"}
)  # fmt: skip


def link_names(engine: Engine) -> dict[int, str]:
    return {link.index: link.name for link in engine.links.values()}


__all__ = [
    "DEFAULT_INTERVAL",
    "STAT_KEYS",
    "CountersView",
    "Counts",
    "Entry",
    "Sample",
    "Sampler",
    "VifCounters",
    "add_interface_stats",
    "add_route_stats",
    "dump_mfc",
    "dump_vifs",
    "key64",
    "link_names",
]
