"""The daemon <-> privileged helper protocol: its messages as bytes (pure codec).

Owns the wire format spoken over the SOCK_SEQPACKET socketpair, one message
per packet: a 12-byte header, then a body whose length the header and the
record kinds fully determine.  Little-endian, no padding anywhere.

    header  <HBBIHH  magic 0x5343 ('SC'), version 2, type, seq u32, count u16,
                     reserved u16 (0)

    daemon -> helper
      OPS      count (1..MAX_BATCH) records; the first byte of each is its
               kind, and the kind alone fixes its layout and its meaning:
                 ADD_VIF       <BBBBI      kind, family, vif, threshold, ifindex
                 DEL_VIF       <BBBI       kind, family, vif, ifindex
                 ADD_MFC4      <BB4s4s32s  kind, parent, source, group,
                                           ttls (threshold per VIF, 0 = not an output)
                 ADD_MFC6      <BB16s16sI  kind, parent, source, group,
                                           oifs (bit i set = MIF i is an output)
                 DEL_MFC       <BBB16s16s  kind, family, parent, source, group
                 JOIN, LEAVE   <BBI16s16s  kind, family, ifindex, source, group
                 ADVERTISE     <BBBI       kind, family, interval (s), ifindex
                 HOOK_RELOAD   <B          kind
                 HOOK_INSTALL  <BB16s16s   kind, family, source, group
               Addresses are network-order bytes; in a 16-byte field an IPv4
               address fills the first 4 and the rest is zero; an all-zero
               source means none (a (*,G) entry, an any-source join).
      PIDFILE  no body: write the daemon's pid into the PID file (touch it later)
    helper -> daemon
      REPLY    count i32 errnos, one per record (1 for PIDFILE)
      UPCALL   count 1: <BBB16s16s family, kind (NOCACHE 1, WRONGVIF 2), vif,
               source, group
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
# at run time each record class is a plain tuple subclass built from the class
# body (fields from the annotations, positional only and without defaults --
# no record needs more -- `_fields`, `_make`, `_replace`).  `TYPE_CHECKING` is spelt
# out for the same reason (type checkers treat the name as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NamedTuple as NamedTuple
else:
    from _collections import _tuplegetter

    class _RecordType(type):
        def __new__(mcls, name, bases, ns):
            if not bases:
                return super().__new__(mcls, name, bases, ns)
            fields = tuple(ns.get("__annotations__", ()))

            def new(cls, *args):
                if len(args) != len(fields):
                    raise TypeError(f"{name} takes {len(fields)} values, not {len(args)}")
                return tuple.__new__(cls, args)

            def replace(self, **kw):
                values = [kw.pop(f, v) for f, v in zip(fields, self, strict=True)]
                if kw:
                    raise TypeError(f"{name} has no fields {sorted(kw)}")
                return new(type(self), *values)

            def rep(self):
                pairs = zip(fields, self, strict=True)
                return f"{name}({', '.join(f'{f}={v!r}' for f, v in pairs)})"

            body = {k: v for k, v in ns.items() if k != "__annotations__"}
            body.update(__slots__=(), __new__=new, _fields=fields, __repr__=rep)
            body.update(_make=classmethod(lambda cls, it: new(cls, *it)), _replace=replace)
            for i, f in enumerate(fields):
                body[f] = _tuplegetter(i, f"Field {i}: {f}")
            return type.__new__(type, name, (tuple,), body)

    class NamedTuple(metaclass=_RecordType):
        """`class R(NamedTuple): field: type ...` -> a tuple subclass with those fields."""


MAGIC = 0x5343
VERSION = 2
T_OPS, T_PIDFILE = 1, 2
T_REPLY, T_UPCALL, T_SOLICIT, T_LOG = 0x81, 0x82, 0x83, 0x84
NOCACHE, WRONGVIF = 1, 2  # UPCALL kinds (the kernel's numbers for both families)
MAX_BATCH = 1024
MAX_LOG = 1024
HEADER = struct.Struct("<HBBIHH")
UPCALL = struct.Struct("<BBB16s16s")
SOLICIT = struct.Struct("<BI")


class ProtoError(Exception):
    """A message that cannot be encoded, or bytes that are not a valid message."""


class AddVif(NamedTuple):
    family: int
    vif: int
    threshold: int
    ifindex: int


class DelVif(NamedTuple):
    family: int
    vif: int
    ifindex: int


class AddMfc4(NamedTuple):
    parent: int
    source: bytes
    group: bytes
    ttls: bytes


class AddMfc6(NamedTuple):
    parent: int
    source: bytes
    group: bytes
    oifs: int


class DelMfc(NamedTuple):
    family: int
    parent: int
    source: bytes
    group: bytes


class Join(NamedTuple):
    family: int
    ifindex: int
    source: bytes
    group: bytes


class Leave(NamedTuple):
    family: int
    ifindex: int
    source: bytes
    group: bytes


class Advertise(NamedTuple):
    family: int
    interval: int
    ifindex: int


class HookReload(NamedTuple):
    pass


class HookInstall(NamedTuple):
    family: int
    source: bytes
    group: bytes


# the records that become a system call, then the hook's
_Kernel = AddVif | DelVif | AddMfc4 | AddMfc6 | DelMfc | Join | Leave | Advertise
Record = _Kernel | HookReload | HookInstall
# kind -> (record type, layout); the kind byte leads every layout
KINDS: dict[int, tuple[type[Record], struct.Struct]] = {
    1: (AddVif, struct.Struct("<BBBBI")),
    2: (DelVif, struct.Struct("<BBBI")),
    3: (AddMfc4, struct.Struct("<BB4s4s32s")),
    4: (AddMfc6, struct.Struct("<BB16s16sI")),
    5: (DelMfc, struct.Struct("<BBB16s16s")),
    6: (Join, struct.Struct("<BBI16s16s")),
    7: (Leave, struct.Struct("<BBI16s16s")),
    8: (Advertise, struct.Struct("<BBBI")),
    9: (HookReload, struct.Struct("<B")),
    10: (HookInstall, struct.Struct("<BB16s16s")),
}
MAX_MESSAGE = HEADER.size + MAX_BATCH * max(st.size for _, st in KINDS.values())


class Ops(NamedTuple):
    seq: int
    records: tuple[Record, ...]


class Pidfile(NamedTuple):
    seq: int


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


def _event(mtype: int, layout: struct.Struct, *fields: int | bytes) -> bytes:
    try:
        return _header(mtype, 0, 1) + layout.pack(*fields)
    except struct.error as e:
        raise ProtoError(f"bad field: {e}") from None


def encode_upcall(family: int, kind: int, vif: int, source: bytes, group: bytes) -> bytes:
    return _event(T_UPCALL, UPCALL, family, kind, vif, pad16(source), pad16(group))


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


def decode_request(data: bytes) -> Ops | Pidfile:
    """Decode one message to the helper.  Raises only `ProtoError`."""
    try:
        return _decode_request(memoryview(bytes(data)))
    except ProtoError:
        raise
    except Exception as e:  # the contract is ProtoError only, whatever the bytes
        raise ProtoError(f"undecodable message: {e!r}") from None


def _decode_request(data: memoryview) -> Ops | Pidfile:
    mtype, seq, count = peek_header(bytes(data[: HEADER.size])) or (0, 0, 0)
    body = data[HEADER.size :]
    if mtype == T_PIDFILE and count == 0 and not body:
        return Pidfile(seq)
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
