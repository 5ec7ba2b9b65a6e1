"""Multicast Router Discovery (RFC 4286) advertisements as bytes.

Owns: the IPv4 (IGMP type 0x30) and IPv6 (ICMPv6 type 151) Multicast Router
Advertisement messages, the Internet checksum of the IPv4 one, and the
per-packet ancillary data that makes the kernel send them correctly --
out of one interface, TTL / hop limit 1, with the IP Router Alert option
(IPv4) or a hop-by-hop Router Alert option for MLD (IPv6).  Everything is
per packet (sendmsg control messages), so sending an advertisement on a
multicast routing socket changes none of that socket's options.

An advertisement is 8 bytes: type u8, Advertisement Interval u8 (seconds;
the ICMPv6 Code field), checksum u16, Query Interval u16, Robustness
Variable u16.  The IPv6 checksum is left 0: the kernel computes it on raw
ICMPv6 sockets.

Must not: do I/O, import anything beyond `struct` and `socket`, or build a
message from anything but an interval that has been range-checked.  The
privileged child imports it, so keep it tiny.
"""

from __future__ import annotations

import socket
import struct

GROUP4 = "224.0.0.106"  # ALL-SNOOPERS
GROUP6 = "ff02::6a"
IGMP_MRDISC_ADV = 0x30
ICMP6_MRDISC_ADV = 151
MIN_INTERVAL = 4  # RFC 4286 MRDISC interval bounds, seconds (`-m`)
MAX_INTERVAL = 180
QUERY_INTERVAL = 125  # IGMP/MLD defaults: we run no querier, advertise the defaults
ROBUSTNESS = 2

ADVERT = struct.Struct("!BBHHH")

# IPv4 Router Alert option (RFC 2113): copied flag + option 20, length 4, value 0.
ROUTER_ALERT4 = b"\x94\x04\x00\x00"
# IPv6 hop-by-hop header (the kernel fills in the next header): Router Alert
# option (type 5, length 2, value 0 = MLD, RFC 2711), then PadN to 8 bytes.
HOPOPTS_ROUTER_ALERT_MLD = b"\x00\x00\x05\x02\x00\x00\x01\x00"

# Ancillary data types not (all) exported by Python's socket module.
IP_TTL = 2
IP_RETOPTS = 7
IP_PKTINFO = 8
IPV6_PKTINFO = 50
IPV6_HOPLIMIT = 52
IPV6_HOPOPTS = 54

_IN_PKTINFO = struct.Struct("=I4s4s")  # ifindex, spec_dst, addr
_IN6_PKTINFO = struct.Struct("=16sI")  # addr, ifindex
_INT = struct.Struct("=i")

Cmsg = tuple[int, int, bytes]


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _check_interval(interval: int) -> None:
    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise ValueError(f"advertisement interval {interval} not in {MIN_INTERVAL}..{MAX_INTERVAL}")


def advert4(interval: int) -> bytes:
    """The IGMP Multicast Router Advertisement, checksum included."""
    _check_interval(interval)
    raw = ADVERT.pack(IGMP_MRDISC_ADV, interval, 0, QUERY_INTERVAL, ROBUSTNESS)
    return ADVERT.pack(IGMP_MRDISC_ADV, interval, checksum(raw), QUERY_INTERVAL, ROBUSTNESS)


def advert6(interval: int) -> bytes:
    """The ICMPv6 Multicast Router Advertisement (checksum by the kernel)."""
    _check_interval(interval)
    return ADVERT.pack(ICMP6_MRDISC_ADV, interval, 0, QUERY_INTERVAL, ROBUSTNESS)


def cmsgs4(ifindex: int) -> list[Cmsg]:
    """Out of `ifindex`, TTL 1, with Router Alert (IPv4 sendmsg ancillary data)."""
    return [
        (socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(ifindex, bytes(4), bytes(4))),
        (socket.IPPROTO_IP, IP_TTL, _INT.pack(1)),
        (socket.IPPROTO_IP, IP_RETOPTS, ROUTER_ALERT4),
    ]


def cmsgs6(ifindex: int) -> list[Cmsg]:
    """Out of `ifindex`, hop limit 1, with an MLD Router Alert hop-by-hop option."""
    return [
        (socket.IPPROTO_IPV6, IPV6_PKTINFO, _IN6_PKTINFO.pack(bytes(16), ifindex)),
        (socket.IPPROTO_IPV6, IPV6_HOPLIMIT, _INT.pack(1)),
        (socket.IPPROTO_IPV6, IPV6_HOPOPTS, HOPOPTS_ROUTER_ALERT_MLD),
    ]
