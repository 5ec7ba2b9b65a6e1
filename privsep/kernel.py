"""The Linux multicast routing API as numbers and bytes.

Owns: the MRT_*/MRT6_* option numbers, the limits of the kernel's tables,
the packed kernel structures (vifctl, mfcctl, mif6ctl, mf6cctl, group_req,
group_source_req) and the decoders of kernel upcalls (igmpmsg, mrt6msg).
Layouts are x86_64/Linux as verified in doc/KERNEL.md.

Also `errno_of(call, *args)`: the errno of a system call the helper makes.

Must not: do any I/O or system call of its own, import anything beyond
`errno`, `struct`, `_socket` (for constants) and `.wire` (its record type), or
raise anything but `UpcallError` from a decoder.  Both the helper and the daemon import it.
"""

from __future__ import annotations

import _socket
import errno
import struct

from .wire import NOCACHE, WRONGVIF, NamedTuple

TYPE_CHECKING = False  # not from typing: see wire.py (the helper's RSS)
if TYPE_CHECKING:
    from collections.abc import Callable

MAXVIFS = 32  # VIFs (IPv4) and MIFs (IPv6) per table: the one definition

# IPv4: level IPPROTO_IP on a raw IGMP socket; IPv6: IPPROTO_IPV6 on raw ICMPv6.
# (What only opening the socket needs, as root before the split, is `mroute`'s.)
MRT_ADD_VIF, MRT_DEL_VIF, MRT_ADD_MFC, MRT_DEL_MFC = 202, 203, 204, 205
MRT6_ADD_MIF, MRT6_DEL_MIF, MRT6_ADD_MFC, MRT6_DEL_MFC = 202, 203, 204, 205
VIFF_USE_IFINDEX = 8
# upcall message types NOCACHE, WRONGVIF: the same numbers for both families (wire's)
# Group membership (RFC 3678 protocol-independent API)
MCAST_JOIN_GROUP, MCAST_LEAVE_GROUP = 42, 45
MCAST_JOIN_SOURCE_GROUP, MCAST_LEAVE_SOURCE_GROUP = 46, 47

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

IGMPMSG = struct.Struct("=8xBBBB4s4s")  # msgtype, mbz, vif, vif_hi, src, dst
MRT6MSG = struct.Struct("=BBH4x16s16s")  # mbz, msgtype, mif, pad, src, dst

_AF_INET = int(_socket.AF_INET)
_AF_INET6 = int(_socket.AF_INET6)


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


def mf6cctl(origin: bytes, group: bytes, parent: int, ifset: int) -> bytes:
    """`struct mf6cctl` (92 bytes); `ifset` bit i = MIF i is an output."""
    return MF6CCTL.pack(
        sockaddr_in6(origin), sockaddr_in6(group), parent, ifset.to_bytes(32, "little")
    )


def _sockaddr(addr: bytes) -> bytes:
    if len(addr) == 4:
        return struct.pack("=HH4s8x", _AF_INET, 0, addr)  # sockaddr_in, port 0
    if len(addr) == 16:
        return sockaddr_in6(addr)
    raise ValueError("address must be 4 or 16 raw bytes")


def group_req(ifindex: int, group: bytes) -> bytes:
    """`struct group_req` (136 bytes) for MCAST_JOIN_GROUP/MCAST_LEAVE_GROUP."""
    return GROUP_REQ.pack(ifindex, _sockaddr(group))


def group_source_req(ifindex: int, group: bytes, source: bytes) -> bytes:
    """`struct group_source_req` (264 bytes) for MCAST_{JOIN,LEAVE}_SOURCE_GROUP."""
    return GROUP_SOURCE_REQ.pack(ifindex, _sockaddr(group), _sockaddr(source))


def errno_of(call: Callable[..., object], *args: object) -> int:
    """0 if `call(*args)` succeeds, else its errno."""
    try:
        call(*args)
    except OSError as e:
        return e.errno or errno.EIO
    return 0


# --- Upcalls --------------------------------------------------------------------


class UpcallError(Exception):
    """A message read from an mroute socket that is not a sane kernel upcall."""


# A decoded upcall; addresses stay raw (4 or 16 bytes) for speed.
RawUpcall = NamedTuple(
    "RawUpcall", [("msgtype", int), ("vif", int), ("source", bytes), ("group", bytes)]
)


# The helper's fast path matches a NOCACHE upcall by its raw bytes: where its
# type/VIF header (4 bytes) starts, its source, group and end, and the first
# byte of a multicast address under a mask (mask, value).
UPCALL_AT = {4: (8, 12, 16, 20, 0xF0, 0xE0), 6: (0, 8, 24, 40, 0xFF, 0xFF)}


def nocache_header(family: int, vif: int) -> bytes:
    """The 4 header bytes of a NOCACHE upcall on `vif` as the kernel lays them
    (igmpmsg: msgtype, mbz, vif, vif_hi; mrt6msg: mbz, msgtype, mif u16)."""
    if family == 4:
        return bytes((NOCACHE, 0, vif & 0xFF, vif >> 8))
    return struct.pack("=BBH", 0, NOCACHE, vif)


def decode_upcall(family: int, data: bytes) -> RawUpcall:
    """Decode and sanity-check a `struct igmpmsg` (IPv4) or `struct mrt6msg` (IPv6).

    Refuses anything that is not plausibly from the kernel: the must-be-zero
    byte (byte 9 of igmpmsg, the protocol field of a real IPv4 packet; byte 0
    of mrt6msg) must be 0, the type NOCACHE or WRONGVIF, the VIF < MAXVIFS,
    the group multicast and the source not.  Of the 80 bytes of an mrt6msg
    only the first 40 are looked at: the rest is stale kernel memory.
    """
    if family == 4 and len(data) >= IGMPMSG.size:
        msgtype, mbz, vif_lo, vif_hi, src, dst = IGMPMSG.unpack_from(data)
        vif, mcast = vif_lo | (vif_hi << 8), 0xE0
    elif family == 6 and len(data) >= MRT6MSG.size:
        mbz, msgtype, vif, src, dst = MRT6MSG.unpack_from(data)
        mcast = 0xFF
    else:
        raise UpcallError(f"upcall too short ({len(data)} bytes)")
    if mbz != 0:
        raise UpcallError(f"not an upcall (must-be-zero byte is {mbz})")
    if msgtype not in (NOCACHE, WRONGVIF):
        raise UpcallError(f"unexpected upcall type {msgtype}")
    if vif >= MAXVIFS:
        raise UpcallError(f"upcall VIF {vif} out of range")
    mask = 0xF0 if family == 4 else 0xFF
    if dst[0] & mask != mcast or src[0] & mask == mcast:
        raise UpcallError("upcall addresses are not a unicast source and a multicast group")
    return tuple.__new__(RawUpcall, (msgtype, vif, src, dst))  # no Python-level __new__
