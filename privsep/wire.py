"""The daemon <-> privileged helper protocol: its messages as bytes (pure codec).

Owns the wire format spoken over the SOCK_SEQPACKET socketpair, one message
per packet: a 12-byte header, then a body whose length the header and the
record kinds fully determine.  Little-endian, no padding anywhere.

    header  <HBBIHH  magic 0x5343 ('SC'), version 2, type, seq u32, count u16,
                     reserved u16 (0)

    daemon -> helper
      OPS      count (1..MAX_BATCH) records; the first byte of each is its
               kind, and the kind alone fixes its layout and its meaning: the
               kind byte, then the fields of its record type below, each as
               wide as its type says (U8, U32; A4, A16 addresses; TTLS the 32
               thresholds of AddMfc4, one per VIF, 0 = not an output).
               AddMfc6's oifs: bit i set = MIF i is an output.  Addresses are
               network-order bytes; in an A16 field an IPv4 address fills the
               first 4 and the rest is zero; an all-zero source means none (a
               (*,G) entry, an any-source join).  Advertise's interval is in s.
               Rules (epoch 1..65535, budget) starts a new, empty rule table
               in which the helper installs at most `budget` entries; each Rule
               is appended to it (outs: IPv4 thresholds per VIF as TTLS; IPv6
               nonzero = MIF is an output).
    helper -> daemon
      REPLY    count i32 errnos, one per record
      UPCALL   count 1: <BBB16s16s family, kind (NOCACHE 1, WRONGVIF 2), vif,
               source, group.  Kind INSTALLED 3: a NOCACHE the helper answered
               itself, installing the entry by rule (seq & 0xFFFF) of the table
               of epoch (seq >> 16): the first rule (in order) whose family,
               parent VIF, source and group prefixes match; an exhausted budget
               or a failed write leaves it a NOCACHE; such reports may be held
               a while (the helper's REPORT_HOLD) but are never overtaken
      SOLICIT  count 1: <BI family, ifindex -- an RFC 4286 Solicitation arrived
      LOG      count = text length: level u8 (syslog) + UTF-8 text <= MAX_LOG

This module is what the helper reads and writes; the daemon's half (the OPS
encoder and the decoder of the helper's messages) is `daemon_wire`, so that
root never loads it.

Must not: do I/O, judge what a record means (`validate` does), import
anything beyond `struct` and `_collections` at run time (see the record type
below), or raise anything but `ProtoError` from an encoder or decoder,
whatever the bytes.
"""

from __future__ import annotations

import struct

# The helper must stay small (RSS): `typing` would bring `re` and more (about
# 2 MiB), `collections` another 0.6 MiB.  Type checkers see typing.NamedTuple;
# at run time `NamedTuple(name, [(field, type), ...])` below builds a plain
# tuple subclass (positional fields, no defaults -- no record needs more --
# `_fields`, `_make`, `__annotations__`).  `TYPE_CHECKING` is spelt out for the
# same reason (type checkers treat the name as true).  A wire field's type names
# its width: type checkers see int or bytes, run time its struct code.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import NamedTuple as NamedTuple
    from typing import TypeVar

    T = TypeVar("T")

    U8 = int
    U16 = int
    U32 = int
    A4 = bytes  # an IPv4 address
    A16 = bytes  # an IPv6 address, or an IPv4 one and 12 zero bytes
    TTLS = bytes  # 32 thresholds, one per VIF
else:
    from _collections import _tuplegetter

    U8, U16, U32, A4, A16, TTLS = "B", "H", "I", "4s", "16s", "32s"

    def NamedTuple(name, fields):
        names = tuple(f for f, _ in fields)

        def new(cls, *args):
            if len(args) != len(names):
                raise TypeError(f"{name} takes {len(names)} values, not {len(args)}")
            return tuple.__new__(cls, args)

        def rep(self):
            return f"{name}({', '.join(f'{f}={v!r}' for f, v in zip(names, self, strict=True))})"

        body = {f: _tuplegetter(i, f"Field {i}: {f}") for i, f in enumerate(names)}
        body.update(__slots__=(), __new__=new, __repr__=rep, _fields=names)
        body.update(__annotations__=dict(fields), _make=classmethod(lambda c, it: new(c, *it)))
        return type(name, (tuple,), body)


MAGIC = 0x5343
VERSION = 2
T_OPS = 1
T_REPLY, T_UPCALL, T_SOLICIT, T_LOG = 0x81, 0x82, 0x83, 0x84
NOCACHE, WRONGVIF, INSTALLED = 1, 2, 3  # UPCALL kinds (1, 2: the kernel's numbers)
MAX_BATCH = 1024
MAX_LOG = 1024
MAX_RULES = 256  # rules in the helper's table
HEADER = struct.Struct("<HBBIHH")
UPCALL = struct.Struct("<BBB16s16s")
SOLICIT = struct.Struct("<BI")


class ProtoError(Exception):
    """A message that cannot be encoded, or bytes that are not a valid message."""


# The OPS records, one per kind: the kind alone fixes a record's layout (its
# kind byte, then its fields) and its meaning.
AddVif = NamedTuple("AddVif", [("family", U8), ("vif", U8), ("threshold", U8), ("ifindex", U32)])
DelVif = NamedTuple("DelVif", [("family", U8), ("vif", U8), ("ifindex", U32)])
AddMfc4 = NamedTuple("AddMfc4", [("parent", U8), ("source", A4), ("group", A4), ("ttls", TTLS)])
AddMfc6 = NamedTuple("AddMfc6", [("parent", U8), ("source", A16), ("group", A16), ("oifs", U32)])
DelMfc = NamedTuple("DelMfc", [("family", U8), ("parent", U8), ("source", A16), ("group", A16)])
Join = NamedTuple("Join", [("family", U8), ("ifindex", U32), ("source", A16), ("group", A16)])
Leave = NamedTuple("Leave", [("family", U8), ("ifindex", U32), ("source", A16), ("group", A16)])
Advertise = NamedTuple("Advertise", [("family", U8), ("interval", U8), ("ifindex", U32)])
HookReload = NamedTuple("HookReload", [])
HookInstall = NamedTuple("HookInstall", [("family", U8), ("source", A16), ("group", A16)])
Rules = NamedTuple("Rules", [("epoch", U16), ("budget", U32)])
Rule = NamedTuple("Rule", [("family", U8), ("parent", U8), ("source", A16), ("source_len", U8),
                           ("group", A16), ("group_len", U8), ("outs", TTLS)])  # fmt: skip
# the records that become a system call, then the hook's
_Kernel = AddVif | DelVif | AddMfc4 | AddMfc6 | DelMfc | Join | Leave | Advertise
Record = _Kernel | HookReload | HookInstall | Rules | Rule
# kind -> (record type, layout); a record's kind is its place here, from 1:
# append new kinds, never reorder.
KINDS: dict[int, tuple[type[Record], struct.Struct]] = {
    kind: (cls, struct.Struct("<B" + "".join(cls.__annotations__.values())))
    for kind, cls in enumerate(
        (AddVif, DelVif, AddMfc4, AddMfc6, DelMfc, Join, Leave, Advertise, HookReload, HookInstall,
         Rules, Rule),
        start=1,
    )
}  # fmt: skip
MAX_MESSAGE = HEADER.size + MAX_BATCH * max(st.size for _, st in KINDS.values())
Ops = NamedTuple("Ops", [("seq", int), ("records", tuple[Record, ...])])


def _header(mtype: int, seq: int, count: int) -> bytes:
    try:
        return HEADER.pack(MAGIC, VERSION, mtype, seq, count, 0)
    except struct.error as e:
        raise ProtoError(f"bad header field: {e}") from None


def encode_reply(seq: int, errnos: Sequence[int]) -> bytes:
    if not 1 <= len(errnos) <= MAX_BATCH or any(e < 0 for e in errnos):
        raise ProtoError(f"a REPLY carries 1..{MAX_BATCH} errnos, none negative")
    return _header(T_REPLY, seq, len(errnos)) + struct.pack(f"<{len(errnos)}i", *errnos)


def pad16(addr: bytes) -> bytes:
    """A 4- or 16-byte address as the 16-byte wire field."""
    return addr + bytes(16 - len(addr))


def _event(mtype: int, layout: struct.Struct, *fields: int | bytes, seq: int = 0) -> bytes:
    try:
        return _header(mtype, seq, 1) + layout.pack(*fields)
    except struct.error as e:
        raise ProtoError(f"bad field: {e}") from None


def encode_upcall(
    family: int, kind: int, vif: int, source: bytes, group: bytes, seq: int = 0
) -> bytes:
    return _event(T_UPCALL, UPCALL, family, kind, vif, pad16(source), pad16(group), seq=seq)


def encode_solicit(family: int, ifindex: int) -> bytes:
    return _event(T_SOLICIT, SOLICIT, family, ifindex)


def encode_log(level: int, text: str) -> bytes:
    """LOG; text longer than MAX_LOG bytes is cut at a character boundary."""
    raw = text.encode("utf-8", "replace")[:MAX_LOG].decode("utf-8", "ignore").encode()
    if not 0 <= level <= 7:
        raise ProtoError(f"log level {level}")
    return _header(T_LOG, 0, len(raw)) + bytes([level]) + raw


def peek_header(data: bytes) -> tuple[int, int, int] | None:
    """(type, seq, count) of a well-formed header, else None: lets the helper
    answer a malformed request it can still attribute."""
    if len(data) < HEADER.size:
        return None
    magic, version, mtype, seq, count, reserved = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION or reserved != 0:
        return None
    return mtype, seq, count


def guarded(decoder: Callable[[memoryview], T], data: bytes) -> T:
    """`decoder` over a copy of `data`, raising only `ProtoError` whatever the bytes."""
    try:
        return decoder(memoryview(bytes(data)))
    except ProtoError:
        raise
    except Exception as e:  # the contract is ProtoError only, whatever the bytes
        raise ProtoError(f"undecodable message: {e!r}") from None


def decode_request(data: bytes) -> Ops:
    """Decode one message to the helper.  Raises only `ProtoError`."""
    return guarded(_decode_request, data)


def _decode_request(data: memoryview) -> Ops:
    mtype, seq, count = peek_header(bytes(data[: HEADER.size])) or (0, 0, 0)
    body = data[HEADER.size :]
    if mtype != T_OPS or not 1 <= count <= MAX_BATCH:
        raise ProtoError(f"not a request: type {mtype}, count {count} ({len(data)} bytes)")
    records: list[Record] = []
    off = 0
    for _ in range(count):
        if off >= len(body) or body[off] not in KINDS:
            raise ProtoError(f"record #{len(records)}: no such kind")
        cls, st = KINDS[body[off]]
        if off + st.size > len(body):
            raise ProtoError(f"record #{len(records)} is truncated")
        records.append(cls._make(st.unpack_from(body, off)[1:]))
        off += st.size
    if off != len(body):
        raise ProtoError(f"{len(body) - off} bytes after the last record")
    return Ops(seq, tuple(records))
