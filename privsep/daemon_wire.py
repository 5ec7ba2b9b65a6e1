"""The daemon's half of the helper protocol (pure codec; see `wire` for the format).

Owns the one encoder of OPS messages (`encode_ops`) and the decoder of what
the helper sends: REPLY, UPCALL, SOLICIT and LOG.  The helper never imports
it.

Must not: do I/O, or raise anything but `ProtoError`, whatever the bytes.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence

from smcroute.records import NamedTuple  # typing's, without importing typing

from .wire import (
    HEADER,
    KINDS,
    MAX_BATCH,
    MAX_LOG,
    SOLICIT,
    T_LOG,
    T_OPS,
    T_REPLY,
    T_SOLICIT,
    T_UPCALL,
    UPCALL,
    ProtoError,
    Record,
    _header,
    guarded,
    peek_header,
)

LAYOUT = {cls: (kind, st) for kind, (cls, st) in KINDS.items()}  # record type -> kind


class Reply(NamedTuple):
    seq: int
    errnos: tuple[int, ...]


class Upcall(NamedTuple):
    """A kernel upcall as the helper forwards it; addresses raw (4 or 16 bytes).
    `seq` is the header's: epoch << 16 | rule for kind INSTALLED, else 0."""

    family: int
    kind: int
    vif: int
    source: bytes
    group: bytes
    seq: int = 0


class Solicit(NamedTuple):
    family: int
    ifindex: int


class Log(NamedTuple):
    """A line for the daemon's log; `level` is a syslog level (3 err .. 7 debug)."""

    level: int
    text: str


Message = Reply | Upcall | Solicit | Log


def encode_ops(seq: int, records: Sequence[Record]) -> bytes:
    """The one way to build an OPS message."""
    if not 1 <= len(records) <= MAX_BATCH:
        raise ProtoError(f"an OPS message carries 1..{MAX_BATCH} records, not {len(records)}")
    parts = [_header(T_OPS, seq, len(records))]
    try:
        for r in records:
            kind, st = LAYOUT[type(r)]
            parts.append(st.pack(kind, *r))
    except (KeyError, struct.error, TypeError) as e:
        raise ProtoError(f"bad record: {e!r}") from None
    return b"".join(parts)


def decode(data: bytes) -> Message:
    """Decode one message from the helper.  Raises only `ProtoError`."""
    return guarded(_decode, data)


def _decode(data: memoryview) -> Message:
    hdr = peek_header(bytes(data[: HEADER.size]))
    if hdr is None:
        raise ProtoError(f"bad header ({len(data)} bytes)")
    mtype, seq, count = hdr
    body = data[HEADER.size :]
    if mtype == T_REPLY and 1 <= count <= MAX_BATCH and len(body) == 4 * count:
        # not struct.unpack(f"<{count}i"): each count would stay compiled in
        # struct's cache, made among whatever the daemon holds at that moment
        got = array("i", bytes(body))
        if sys.byteorder == "big":
            got.byteswap()
        errnos = tuple(got)
        if min(errnos) < 0:
            raise ProtoError("negative errno in REPLY")
        return Reply(seq, errnos)
    if mtype == T_UPCALL and count == 1 and len(body) == UPCALL.size:
        fam, kind, vif, src, grp = UPCALL.unpack(body)
        n = {4: 4, 6: 16}.get(fam, 0)
        if not n or src[n:] != bytes(16 - n) or grp[n:] != bytes(16 - n):
            raise ProtoError(f"UPCALL family {fam} and addresses disagree")
        return Upcall(fam, kind, vif, src[:n], grp[:n], seq)
    if mtype == T_SOLICIT and count == 1 and len(body) == SOLICIT.size:
        return Solicit(*SOLICIT.unpack(body))
    if mtype == T_LOG and count <= MAX_LOG and len(body) == 1 + count:
        try:
            return Log(body[0], bytes(body[1:]).decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtoError("LOG text is not UTF-8") from None
    raise ProtoError(f"message type {mtype} with count {count} and {len(body)} body bytes")
