"""The Linux multicast routing API as numbers and bytes.

Owns: the MRT_*/MRT6_* option numbers, upcall message types, the packed
kernel structures (vifctl, mfcctl, mif6ctl, mf6cctl, group_req,
group_source_req) and the decoders of kernel upcalls (igmpmsg, mrt6msg).
Layouts are x86_64/Linux as verified in doc/KERNEL.md.

Must not: do any I/O or system call, import anything beyond `struct`,
`socket` (for constants) and `typing`, or raise anything but `UpcallError` from a
decoder.  It is imported by the privileged child, so keep it tiny.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

# --- IPv4: level IPPROTO_IP on a raw IGMP socket ------------------------------
MRT_INIT = 200
MRT_DONE = 201
MRT_ADD_VIF = 202
MRT_DEL_VIF = 203
MRT_ADD_MFC = 204
MRT_DEL_MFC = 205
MRT_VERSION = 206
MRT_ASSERT = 207
MRT_PIM = 208
MRT_TABLE = 209
MRT_ADD_MFC_PROXY = 210
MRT_DEL_MFC_PROXY = 211
MRT_FLUSH = 212
MRT_FLUSH_MFC = 1
MRT_FLUSH_MFC_STATIC = 2
MRT_FLUSH_VIFS = 4
MRT_FLUSH_VIFS_STATIC = 8

MAXVIFS = 32
VIFF_TUNNEL = 1
VIFF_REGISTER = 4
VIFF_USE_IFINDEX = 8

IGMPMSG_NOCACHE = 1
IGMPMSG_WRONGVIF = 2
IGMPMSG_WHOLEPKT = 3
IGMPMSG_WRVIFWHOLE = 4
IGMPMSG_TYPES = frozenset({IGMPMSG_NOCACHE, IGMPMSG_WRONGVIF, IGMPMSG_WHOLEPKT, IGMPMSG_WRVIFWHOLE})

SIOCGETVIFCNT = 0x89E0
SIOCGETSGCNT = 0x89E1

# --- IPv6: level IPPROTO_IPV6 on a raw ICMPv6 socket ---------------------------
MRT6_INIT = 200
MRT6_DONE = 201
MRT6_ADD_MIF = 202
MRT6_DEL_MIF = 203
MRT6_ADD_MFC = 204
MRT6_DEL_MFC = 205
MRT6_VERSION = 206
MRT6_ASSERT = 207
MRT6_PIM = 208
MRT6_TABLE = 209
MRT6_ADD_MFC_PROXY = 210
MRT6_DEL_MFC_PROXY = 211
MRT6_FLUSH = 212

MAXMIFS = 32
MIFF_REGISTER = 1

MRT6MSG_NOCACHE = 1
MRT6MSG_WRONGMIF = 2
MRT6MSG_WHOLEPKT = 3
MRT6MSG_TYPES = frozenset({MRT6MSG_NOCACHE, MRT6MSG_WRONGMIF, MRT6MSG_WHOLEPKT})

SIOCGETSGCNT_IN6 = 0x89E1

ICMP6_FILTER = 1  # level IPPROTO_ICMPV6 (58)
ICMP6_FILTER_BLOCKALL = b"\xff" * 32  # struct icmp6_filter: 256 bits, 1 = block

# --- Group membership (RFC 3678 protocol-independent API) ----------------------
MCAST_JOIN_GROUP = 42
MCAST_BLOCK_SOURCE = 43
MCAST_UNBLOCK_SOURCE = 44
MCAST_LEAVE_GROUP = 45
MCAST_JOIN_SOURCE_GROUP = 46
MCAST_LEAVE_SOURCE_GROUP = 47

# --- Misc socket options not in Python's socket module -------------------------
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
IPPROTO_ICMPV6 = 58

# --- Struct layouts -------------------------------------------------------------
# vifctl: vifi u16, flags u8, threshold u8, rate_limit u32, lcl (ifindex i32 |
# in_addr), rmt in_addr.
VIFCTL = struct.Struct("=HBBIi4s")
# mfcctl: origin, group, parent u16, ttls[32], 2 pad, pktcnt, bytecnt, wrong_if, expire.
MFCCTL = struct.Struct("=4s4sH32s2xIIIi")
# mif6ctl: mifi u16, flags u8, threshold u8, pifi u16, 2 pad, rate_limit u32.
MIF6CTL = struct.Struct("=HBBH2xI")
# sockaddr_in6: family u16, port u16 (BE), flowinfo u32, addr[16], scope_id u32.
SOCKADDR_IN6 = struct.Struct("=HHI16sI")
# mf6cctl: origin sockaddr_in6, group sockaddr_in6, parent u16, 2 pad, ifset u32[8].
MF6CCTL = struct.Struct("=28s28sH2x32s")
# group_req: interface u32, 4 pad, sockaddr_storage (128).
GROUP_REQ = struct.Struct("=I4x128s")
# group_source_req: interface u32, 4 pad, group ss (128), source ss (128).
GROUP_SOURCE_REQ = struct.Struct("=I4x128s128s")
SOCKADDR_STORAGE_LEN = 128

IGMPMSG = struct.Struct("=8xBBBB4s4s")  # msgtype, mbz, vif, vif_hi, src, dst
MRT6MSG = struct.Struct("=BBH4x16s16s")  # mbz, msgtype, mif, pad, src, dst

_AF_INET = int(socket.AF_INET)
_AF_INET6 = int(socket.AF_INET6)


def vifctl(vifi: int, threshold: int, ifindex: int, flags: int = VIFF_USE_IFINDEX) -> bytes:
    """`struct vifctl` (16 bytes) for a VIF bound to an interface by index."""
    return VIFCTL.pack(vifi, flags, threshold, 0, ifindex, b"\0\0\0\0")


def mfcctl(origin: bytes, group: bytes, parent: int, ttls: bytes) -> bytes:
    """`struct mfcctl` (60 bytes); `origin`/`group` are 4 raw bytes, `ttls` 32."""
    return MFCCTL.pack(origin, group, parent, ttls, 0, 0, 0, 0)


def mif6ctl(mifi: int, threshold: int, ifindex: int, flags: int = 0) -> bytes:
    """`struct mif6ctl` (12 bytes); note the physical ifindex is only 16 bits."""
    return MIF6CTL.pack(mifi, flags, threshold, ifindex, 0)


def sockaddr_in6(addr: bytes) -> bytes:
    """A 28-byte `struct sockaddr_in6` for a raw 16-byte address."""
    return SOCKADDR_IN6.pack(_AF_INET6, 0, 0, addr, 0)


def sockaddr_in(addr: bytes) -> bytes:
    """A 16-byte `struct sockaddr_in` for a raw 4-byte address (port 0)."""
    return struct.pack("=HH4s8x", _AF_INET, 0, addr)


def mf6cctl(origin: bytes, group: bytes, parent: int, ifset: int) -> bytes:
    """`struct mf6cctl` (92 bytes); `ifset` bit i = MIF i is an output."""
    return MF6CCTL.pack(
        sockaddr_in6(origin), sockaddr_in6(group), parent, ifset.to_bytes(32, "little")
    )


def _sockaddr(addr: bytes) -> bytes:
    if len(addr) == 4:
        return sockaddr_in(addr)
    if len(addr) == 16:
        return sockaddr_in6(addr)
    raise ValueError("address must be 4 or 16 raw bytes")


def group_req(ifindex: int, group: bytes) -> bytes:
    """`struct group_req` (136 bytes) for MCAST_JOIN_GROUP/MCAST_LEAVE_GROUP."""
    return GROUP_REQ.pack(ifindex, _sockaddr(group))


def group_source_req(ifindex: int, group: bytes, source: bytes) -> bytes:
    """`struct group_source_req` (264 bytes) for MCAST_{JOIN,LEAVE}_SOURCE_GROUP."""
    return GROUP_SOURCE_REQ.pack(ifindex, _sockaddr(group), _sockaddr(source))


# --- Upcalls --------------------------------------------------------------------


class UpcallError(Exception):
    """A message read from an mroute socket that is not a sane kernel upcall."""


class RawUpcall(NamedTuple):
    """A decoded upcall; addresses stay raw (4 or 16 bytes) for speed."""

    msgtype: int
    vif: int
    source: bytes
    group: bytes


def _is_mcast4(addr: bytes) -> bool:
    return addr[0] & 0xF0 == 0xE0


def _is_mcast6(addr: bytes) -> bool:
    return addr[0] == 0xFF


def decode_igmpmsg(data: bytes) -> RawUpcall:
    """Decode and sanity-check a `struct igmpmsg` upcall (IPv4).

    Refuses anything that is not plausibly from the kernel: mbz (byte 9, the IP
    protocol field of a real packet) must be 0, the type known, the VIF < 32,
    the destination multicast and the source not multicast.
    """
    if len(data) < IGMPMSG.size:
        raise UpcallError(f"igmpmsg too short ({len(data)} bytes)")
    msgtype, mbz, vif_lo, vif_hi, src, dst = IGMPMSG.unpack_from(data)
    if mbz != 0:
        raise UpcallError(f"not an upcall (byte 9 is {mbz})")
    if msgtype not in IGMPMSG_TYPES:
        raise UpcallError(f"unknown igmpmsg type {msgtype}")
    vif = vif_lo | (vif_hi << 8)
    if vif >= MAXVIFS:
        raise UpcallError(f"igmpmsg VIF {vif} out of range")
    if not _is_mcast4(dst):
        raise UpcallError("igmpmsg group is not multicast")
    if _is_mcast4(src):
        raise UpcallError("igmpmsg source is multicast")
    return RawUpcall(msgtype, vif, src, dst)


def decode_mrt6msg(data: bytes) -> RawUpcall:
    """Decode and sanity-check a `struct mrt6msg` upcall (IPv6).

    Only the first 40 bytes are looked at: the kernel returns 80, of which
    bytes 40..80 are stale memory.
    """
    if len(data) < MRT6MSG.size:
        raise UpcallError(f"mrt6msg too short ({len(data)} bytes)")
    mbz, msgtype, mif, src, dst = MRT6MSG.unpack_from(data)
    if mbz != 0:
        raise UpcallError(f"not an upcall (byte 0 is {mbz})")
    if msgtype not in MRT6MSG_TYPES:
        raise UpcallError(f"unknown mrt6msg type {msgtype}")
    if mif >= MAXMIFS:
        raise UpcallError(f"mrt6msg MIF {mif} out of range")
    if not _is_mcast6(dst):
        raise UpcallError("mrt6msg group is not multicast")
    if _is_mcast6(src):
        raise UpcallError("mrt6msg source is multicast")
    return RawUpcall(msgtype, mif, src, dst)
