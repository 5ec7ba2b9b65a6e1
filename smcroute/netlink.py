"""Route netlink for the unprivileged parent: interfaces, link events, MFC counters.

Owns a minimal rtnetlink client over raw `AF_NETLINK` sockets (no
privilege needed): dump the system's links, subscribe to link events
(RTNLGRP_LINK), and dump the multicast forwarding cache of one table with
its counters (RTM_GETROUTE, family RTNL_FAMILY_IPMR/IP6MR, doc/KERNEL.md).
Decoding never raises anything but `NetlinkError`.  Must not: change any
kernel state, or make decisions (it returns facts for the engine).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from ipaddress import IPv4Address, IPv6Address

from smcroute.records import dataclass

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWROUTE = 24
RTM_GETROUTE = 26
IFLA_IFNAME = 3
RTA_DST = 1
RTA_SRC = 2
RTA_IIF = 3
RTA_TABLE = 15
RTA_MFC_STATS = 17
RTNLGRP_LINK = 1
RTNL_FAMILY_IPMR = 128
RTNL_FAMILY_IP6MR = 129
RTNH_F_UNRESOLVED = 32

_NLMSG = struct.Struct("=IHHII")
_RTA = struct.Struct("=HH")
_IFINFO = struct.Struct("=BxHiII")
_RTMSG = struct.Struct("=BBBBBBBBI")
# every format compiled here, at import: compiled on first use instead, it would
# be struct's cached object made among whatever the daemon holds at that moment
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_STATS = struct.Struct("=QQQ")


class NetlinkError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class LinkInfo:
    index: int
    name: str
    flags: int


@dataclass(frozen=True, slots=True)
class MfcStats:
    packets: int
    bytes: int
    wrong_if: int


def _attrs(data: bytes, off: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while off + 4 <= end:
        length, kind = _RTA.unpack_from(data, off)
        if length < 4 or off + length > end:
            break
        out[kind & 0x3FFF] = data[off + 4 : off + length]
        off += (length + 3) & ~3
    return out


def parse_messages(data: bytes) -> list[tuple[int, bytes]]:
    """Split a netlink datagram into (type, payload) pairs."""
    out: list[tuple[int, bytes]] = []
    off = 0
    while off + 16 <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
        if length < 16 or off + length > len(data):
            raise NetlinkError("truncated netlink message")
        out.append((kind, data[off + 16 : off + length]))
        off += (length + 3) & ~3
    return out


def decode_link(kind: int, payload: bytes) -> tuple[bool, LinkInfo] | None:
    """RTM_NEWLINK/DELLINK → (present, LinkInfo); other messages → None."""
    if kind not in (RTM_NEWLINK, RTM_DELLINK) or len(payload) < _IFINFO.size:
        return None
    _family, _type, index, flags, _change = _IFINFO.unpack_from(payload)
    attrs = _attrs(payload, _IFINFO.size, len(payload))
    raw = attrs.get(IFLA_IFNAME, b"").split(b"\0", 1)[0]
    name = raw.decode("utf-8", "replace")
    if not name or index <= 0:
        return None
    return kind == RTM_NEWLINK, LinkInfo(index, name, flags)


def decode_mfc(
    kind: int, payload: bytes, table: int
) -> tuple[tuple[int, IPv4Address | IPv6Address, IPv4Address | IPv6Address], MfcStats] | None:
    if kind != RTM_NEWROUTE or len(payload) < _RTMSG.size:
        return None
    family, _dl, _sl, _tos, tbl, _proto, _scope, _type, flags = _RTMSG.unpack_from(payload)
    if flags & RTNH_F_UNRESOLVED:
        return None
    attrs = _attrs(payload, _RTMSG.size, len(payload))
    if RTA_TABLE in attrs and len(attrs[RTA_TABLE]) >= 4:
        tbl = _U32.unpack_from(attrs[RTA_TABLE])[0]
    if tbl != table:
        return None
    size = 4 if family == RTNL_FAMILY_IPMR else 16
    src, dst = attrs.get(RTA_SRC, bytes(size)), attrs.get(RTA_DST)
    if dst is None or len(src) != size or len(dst) != size:
        return None
    cls = IPv4Address if size == 4 else IPv6Address
    fam = 4 if size == 4 else 6
    stats = attrs.get(RTA_MFC_STATS, b"")
    if len(stats) >= 24:
        pk, by, wr = _STATS.unpack_from(stats)
    else:
        pk = by = wr = 0
    return (fam, cls(src), cls(dst)), MfcStats(pk, by, wr)


class Netlink:
    """A route-netlink socket for requests (dumps) and, optionally, link events."""

    def __init__(self, groups: int = 0) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, groups))
        self.seq = 0
        self.vanished: set[int] = set()  # ifindexes of deleted devices (drain_events)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def _dump(self, kind: int, body: bytes) -> list[tuple[int, bytes]]:
        self.seq += 1
        msg = _NLMSG.pack(16 + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, self.seq, 0) + body
        self.sock.send(msg)
        out: list[tuple[int, bytes]] = []
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError as e:
                raise NetlinkError(f"netlink dump failed: {os.strerror(e.errno or 0)}") from e
            for k, payload in parse_messages(data):
                if k == NLMSG_DONE:
                    return out
                if k == NLMSG_ERROR:
                    code = -_I32.unpack_from(payload)[0] if len(payload) >= 4 else 0
                    if code == 0:
                        continue
                    raise NetlinkError(f"netlink dump failed: {os.strerror(code)}")
                out.append((k, payload))

    def links(self) -> list[LinkInfo]:
        out = []
        for kind, payload in self._dump(RTM_GETLINK, _IFINFO.pack(0, 0, 0, 0, 0)):
            decoded = decode_link(kind, payload)
            if decoded is not None and decoded[0]:
                out.append(decoded[1])
        return out

    def mfc_stats(self, family: int, table: int) -> dict[tuple[int, object, object], MfcStats]:
        nl_family = RTNL_FAMILY_IPMR if family == 4 else RTNL_FAMILY_IP6MR
        out: dict[tuple[int, object, object], MfcStats] = {}
        body = _RTMSG.pack(nl_family, 0, 0, 0, 0, 0, 0, 0, 0)
        for kind, payload in self._dump(RTM_GETROUTE, body):
            decoded = decode_mfc(kind, payload, table)
            if decoded is not None:
                out[decoded[0]] = decoded[1]
        return out

    def drain_events(self) -> bool:
        """Read all pending event datagrams; True if any link changed (or we lost some).

        The ifindexes of deleted devices collect in `vanished` (the caller
        takes them): a device deleted and re-created under the same name and
        ifindex before the rescan looks unchanged, yet the kernel dropped its
        VIF.
        """
        changed = False
        while True:
            try:
                data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return changed
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # lost events: a rescan reconciles
                    changed = True
                    continue
                raise NetlinkError(f"netlink read failed: {os.strerror(e.errno or 0)}") from e
            try:
                for kind, payload in parse_messages(data):
                    if kind in (RTM_NEWLINK, RTM_DELLINK):
                        changed = True
                    if kind == RTM_DELLINK and len(payload) >= _IFINFO.size:
                        family, _type, index, _flags, _change = _IFINFO.unpack_from(payload)
                        if family == socket.AF_UNSPEC and len(self.vanished) < 4096:
                            self.vanished.add(index)  # bridge-port news are AF_BRIDGE
            except NetlinkError:
                changed = True


def default_table(family: int, table: int) -> int:
    """The kernel reports table 0 as its default: 253 (IPv4) or 254 (IPv6)."""
    if table:
        return table
    return 253 if family == 4 else 254
