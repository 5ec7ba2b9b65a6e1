"""The parent <-> privileged-child message protocol (pure codec).

Owns: the wire format spoken over the SOCK_SEQPACKET socketpair, one message
per packet, every message a fixed 12-byte header followed by a body whose
length the header fully determines:

    header  <HBBIHH  magic 0x5343 ('SC'), version 1, type, seq u32, count u16,
                     reserved u16 (0)

    parent -> child
      OPS      count op records of 76 bytes each (1 <= count <= MAX_BATCH):
               <BBHIBBH16s16s32s kind, family (4|6), vif (VIF of ADD/DEL_VIF,
               parent of ADD/DEL_MFC), ifindex u32, threshold u8, reserved u8,
               reserved u16, source[16], group[16], ttls[32]
               (per-VIF threshold, 0 = not an output).  Addresses are raw
               network-order bytes, IPv4 in the first 4 bytes; an all-zero
               source means "none" (a (*,G) entry or an any-source join).
               MRDISC (send one RFC 4286 Multicast Router Advertisement out
               of a VIF's interface) uses family, ifindex and threshold (the
               Advertisement Interval, 4..180 s); every other field is 0.
               The child builds the packet itself: no packet bytes cross.
               HOOK (run the `-e` command given to the child at start-up)
               uses family and threshold (the action: 1 = `reload`,
               2 = `install` with `source` and `group` set to a unicast
               source and a multicast group); every other field is 0.
               No command text crosses: only the action and addresses.
      PIDFILE  no body: write the parent's pid into the pid file (or touch it)
      LOGLEVEL no body; count = the child's new syslog threshold, one of
               0 (log nothing), 3 err, 4 warning, 5 notice, 6 info, 7 debug
    child -> parent
      REPLY    count i32 errnos, one per op of the OPS (or 1 for PIDFILE, LOGLEVEL)
      UPCALL   count 1; <BBH16s16s family, msgtype, vif, source, group
      LOG      count = text length; level u8 (syslog) + UTF-8 text <= 1024 B

Must not: do I/O, know about sockets or the kernel, import anything heavy (the
privileged child imports it), or raise anything but `ProtoError` from
`encode_*`/`decode` -- whatever the bytes.  Semantic checks of op records
(is the group multicast, does the VIF exist...) belong to the child.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple

MAGIC = 0x5343
VERSION = 1

T_OPS = 1
T_PIDFILE = 2
T_LOGLEVEL = 3
LOGLEVELS = frozenset({0, 3, 4, 5, 6, 7})
T_REPLY = 0x81
T_UPCALL = 0x82
T_LOG = 0x83

# Op kinds
ADD_VIF = 1
DEL_VIF = 2
ADD_MFC = 3
DEL_MFC = 4
JOIN = 5
LEAVE = 6
MRDISC = 7
HOOK = 8
HOOK_RELOAD = 1
HOOK_INSTALL = 2
KINDS = frozenset({ADD_VIF, DEL_VIF, ADD_MFC, DEL_MFC, JOIN, LEAVE, MRDISC, HOOK})
KIND_NAMES = {
    ADD_VIF: "ADD_VIF",
    DEL_VIF: "DEL_VIF",
    ADD_MFC: "ADD_MFC",
    DEL_MFC: "DEL_MFC",
    JOIN: "JOIN",
    LEAVE: "LEAVE",
    MRDISC: "MRDISC",
    HOOK: "HOOK",
}

MAX_BATCH = 1024
MAX_LOG = 1024

HEADER = struct.Struct("<HBBIHH")
OP = struct.Struct("<BBHIBBH16s16s32s")
ERRNO = struct.Struct("<i")
UPCALL = struct.Struct("<BBH16s16s")
LOG_LEVEL = struct.Struct("<B")

MAX_MESSAGE = HEADER.size + MAX_BATCH * OP.size  # the largest valid message

# syslog levels used in LOG messages
LOG_ERR = 3
LOG_WARNING = 4
LOG_NOTICE = 5
LOG_INFO = 6
LOG_DEBUG = 7

_ZERO16 = bytes(16)
_ZERO12 = bytes(12)


class ProtoError(Exception):
    """A message that cannot be encoded or is not a valid message."""


class OpRecord(NamedTuple):
    """One kernel operation in wire form (raw addresses, see module doc)."""

    kind: int
    family: int
    vif: int
    ifindex: int
    threshold: int
    source: bytes  # 16 bytes; IPv4 in the first 4, rest zero; all zero = none
    group: bytes  # 16 bytes, same convention
    ttls: bytes  # 32 bytes


class Ops(NamedTuple):
    seq: int
    ops: tuple[OpRecord, ...]


class Pidfile(NamedTuple):
    seq: int


class LogLevel(NamedTuple):
    seq: int
    level: int  # one of LOGLEVELS


class Reply(NamedTuple):
    seq: int
    errnos: tuple[int, ...]


class Upcall(NamedTuple):
    """A kernel upcall forwarded by the child (NOCACHE, WRONGVIF, ...)."""

    family: int  # 4 or 6
    msgtype: int
    vif: int
    source: IPv4Address | IPv6Address
    group: IPv4Address | IPv6Address


class LogLine(NamedTuple):
    """A log line from the child; `level` is a syslog level (3 err .. 7 debug)."""

    level: int
    text: str


Message = Ops | Pidfile | LogLevel | Reply | Upcall | LogLine


def _header(mtype: int, seq: int, count: int) -> bytes:
    try:
        return HEADER.pack(MAGIC, VERSION, mtype, seq, count, 0)
    except struct.error as e:
        raise ProtoError(f"bad header field: {e}") from None


def pad16(addr: bytes) -> bytes:
    """Raw 4- or 16-byte address -> the 16-byte wire field."""
    if len(addr) == 4:
        return addr + _ZERO12
    if len(addr) == 16:
        return addr
    raise ProtoError("an address is 4 or 16 bytes")


def encode_ops(seq: int, ops: Sequence[OpRecord]) -> bytes:
    if not 1 <= len(ops) <= MAX_BATCH:
        raise ProtoError(f"an OPS message carries 1..{MAX_BATCH} ops, not {len(ops)}")
    parts = [_header(T_OPS, seq, len(ops))]
    pack = OP.pack
    try:
        for op in ops:
            if len(op.source) != 16 or len(op.group) != 16 or len(op.ttls) != 32:
                raise ProtoError("op record fields have the wrong length")
            parts.append(
                pack(
                    op.kind,
                    op.family,
                    op.vif,
                    op.ifindex,
                    op.threshold,
                    0,
                    0,
                    op.source,
                    op.group,
                    op.ttls,
                )
            )
    except (struct.error, TypeError) as e:
        raise ProtoError(f"bad op record: {e}") from None
    return b"".join(parts)


def encode_op(op: OpRecord) -> bytes:
    """A single 76-byte op record (to check one op before batching)."""
    try:
        if len(op.source) != 16 or len(op.group) != 16 or len(op.ttls) != 32:
            raise ProtoError("op record fields have the wrong length")
        return OP.pack(
            op.kind, op.family, op.vif, op.ifindex, op.threshold, 0, 0, op.source, op.group, op.ttls
        )
    except (struct.error, TypeError) as e:
        raise ProtoError(f"bad op record: {e}") from None


def encode_ops_raw(seq: int, records: Sequence[bytes]) -> bytes:
    """An OPS message from records already packed by `encode_op`."""
    if not 1 <= len(records) <= MAX_BATCH:
        raise ProtoError(f"an OPS message carries 1..{MAX_BATCH} ops, not {len(records)}")
    if any(len(r) != OP.size for r in records):
        raise ProtoError("op record of the wrong size")
    return _header(T_OPS, seq, len(records)) + b"".join(records)


def encode_pidfile(seq: int) -> bytes:
    return _header(T_PIDFILE, seq, 0)


def encode_loglevel(seq: int, level: int) -> bytes:
    if level not in LOGLEVELS:
        raise ProtoError(f"log level {level!r} is not one of {sorted(LOGLEVELS)}")
    return _header(T_LOGLEVEL, seq, level)


def encode_reply(seq: int, errnos: Sequence[int]) -> bytes:
    if not 1 <= len(errnos) <= MAX_BATCH:
        raise ProtoError(f"a REPLY carries 1..{MAX_BATCH} errnos")
    try:
        body = struct.pack(f"<{len(errnos)}i", *errnos)
    except struct.error as e:
        raise ProtoError(f"bad errno: {e}") from None
    if any(e < 0 for e in errnos):
        raise ProtoError("negative errno")
    return _header(T_REPLY, seq, len(errnos)) + body


def encode_upcall_raw(family: int, msgtype: int, vif: int, source: bytes, group: bytes) -> bytes:
    """UPCALL from raw addresses (4 or 16 bytes), as the child has them."""
    if (
        family not in (4, 6)
        or len(source) != len(group)
        or len(source) != (4 if family == 4 else 16)
    ):
        raise ProtoError("upcall family and address lengths disagree")
    try:
        body = UPCALL.pack(family, msgtype, vif, pad16(source), pad16(group))
    except struct.error as e:
        raise ProtoError(f"bad upcall field: {e}") from None
    return _header(T_UPCALL, 0, 1) + body


def encode_upcall(up: Upcall) -> bytes:
    try:
        src, grp = up.source.packed, up.group.packed
    except AttributeError:
        raise ProtoError("upcall addresses must be ipaddress objects") from None
    return encode_upcall_raw(up.family, up.msgtype, up.vif, src, grp)


def encode_log(level: int, text: str) -> bytes:
    """LOG; text longer than MAX_LOG bytes is cut (at a character boundary)."""
    try:
        raw = text.encode("utf-8", "replace")
        if len(raw) > MAX_LOG:
            raw = raw[:MAX_LOG].decode("utf-8", "ignore").encode("utf-8")
        return _header(T_LOG, 0, len(raw)) + LOG_LEVEL.pack(level) + raw
    except (struct.error, AttributeError, TypeError) as e:
        raise ProtoError(f"bad log line: {e}") from None


def peek_header(data: bytes) -> tuple[int, int, int] | None:
    """(type, seq, count) if `data` starts with a well-formed header, else None.

    Lets the child answer a malformed OPS message it can still attribute.
    """
    if len(data) < HEADER.size:
        return None
    magic, version, mtype, seq, count, reserved = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION or reserved != 0:
        return None
    return mtype, seq, count


def _addr(family: int, raw: bytes) -> IPv4Address | IPv6Address:
    if family == 4:
        if raw[4:] != _ZERO12:
            raise ProtoError("IPv4 address with non-zero padding")
        return IPv4Address(raw[:4])
    return IPv6Address(raw)


def decode(data: bytes) -> Message:
    """Decode one message.  Raises only `ProtoError`."""
    try:
        return _decode(bytes(data))
    except ProtoError:
        raise
    except Exception as e:  # belt and braces: the contract is ProtoError only
        raise ProtoError(f"undecodable message: {e!r}") from None


def _decode(data: bytes) -> Message:
    if len(data) < HEADER.size:
        raise ProtoError(f"message too short ({len(data)} bytes)")
    magic, version, mtype, seq, count, reserved = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtoError(f"bad magic {magic:#06x}")
    if version != VERSION:
        raise ProtoError(f"unsupported protocol version {version}")
    if reserved != 0:
        raise ProtoError("reserved header field not zero")
    body = memoryview(data)[HEADER.size :]
    blen = len(body)
    if mtype == T_OPS:
        if not 1 <= count <= MAX_BATCH:
            raise ProtoError(f"OPS count {count} out of range")
        if blen != count * OP.size:
            raise ProtoError(f"OPS body is {blen} bytes, expected {count * OP.size}")
        ops = []
        for kind, fam, vif, ifx, thr, r1, r2, src, grp, ttls in OP.iter_unpack(body):
            if r1 or r2:
                raise ProtoError("reserved op field not zero")
            ops.append(OpRecord(kind, fam, vif, ifx, thr, src, grp, ttls))
        return Ops(seq, tuple(ops))
    if mtype == T_PIDFILE:
        if count != 0 or blen != 0:
            raise ProtoError("PIDFILE has no body")
        return Pidfile(seq)
    if mtype == T_LOGLEVEL:
        if blen != 0 or count not in LOGLEVELS:
            raise ProtoError("LOGLEVEL has no body and a level of 0, 3..7")
        return LogLevel(seq, count)
    if mtype == T_REPLY:
        if not 1 <= count <= MAX_BATCH:
            raise ProtoError(f"REPLY count {count} out of range")
        if blen != count * ERRNO.size:
            raise ProtoError(f"REPLY body is {blen} bytes, expected {count * ERRNO.size}")
        errnos = struct.unpack(f"<{count}i", body)
        if any(e < 0 for e in errnos):
            raise ProtoError("negative errno in REPLY")
        return Reply(seq, errnos)
    if mtype == T_UPCALL:
        if count != 1 or blen != UPCALL.size:
            raise ProtoError("UPCALL body has the wrong size")
        fam, msgtype, vif, src, grp = UPCALL.unpack(body)
        if fam not in (4, 6):
            raise ProtoError(f"UPCALL family {fam}")
        return Upcall(fam, msgtype, vif, _addr(fam, src), _addr(fam, grp))
    if mtype == T_LOG:
        if count > MAX_LOG or blen != 1 + count:
            raise ProtoError("LOG body has the wrong size")
        try:
            text = bytes(body[1:]).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtoError("LOG text is not UTF-8") from None
        return LogLine(body[0], text)
    raise ProtoError(f"unknown message type {mtype}")
