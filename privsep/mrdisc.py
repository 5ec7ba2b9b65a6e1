"""Multicast Router Discovery (RFC 4286) messages as bytes.

Owns: the IPv4 (IGMP type 0x30) and IPv6 (ICMPv6 type 151) Multicast Router
Advertisement messages, the check of a received Solicitation (IGMP type 0x31
to 224.0.0.2, ICMPv6 type 152 to ff02::2: length, code, destination and
checksum, so that only a valid one becomes a (family, ifindex) event), the
Internet checksum, and the per-packet ancillary data that makes the kernel send them correctly --
out of one interface, TTL / hop limit 1, with the IP Router Alert option
(IPv4) or a hop-by-hop Router Alert option for MLD (IPv6).  Everything is
per packet (sendmsg control messages), so sending an advertisement on a
multicast routing socket changes none of that socket's options.

An advertisement is 8 bytes: type u8, Advertisement Interval u8 (seconds;
the ICMPv6 Code field), checksum u16, Query Interval u16, Robustness
Variable u16.  The IPv6 checksum is left 0: the kernel computes it on raw
ICMPv6 sockets.

Must not: do I/O, import anything beyond `struct` and `socket`, build a
message from anything but an interval that has been range-checked, or let
anything of a received packet but its arrival interface out.  The helper
imports it, so keep it tiny.
"""

from __future__ import annotations

import _socket
import struct

GROUP4 = "224.0.0.106"  # ALL-SNOOPERS
GROUP6 = "ff02::6a"
IGMP_MRDISC_ADV, IGMP_MRDISC_SOL = 0x30, 0x31
ICMP6_MRDISC_ADV, ICMP6_MRDISC_SOL = 151, 152
ALL_ROUTERS4 = _socket.inet_pton(_socket.AF_INET, "224.0.0.2")
ALL_ROUTERS6 = _socket.inet_pton(_socket.AF_INET6, "ff02::2")
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
IP_TTL, IP_RETOPTS, IP_PKTINFO = 2, 7, 8
IPV6_PKTINFO, IPV6_HOPLIMIT, IPV6_HOPOPTS = 50, 52, 54

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


def advert(family: int, interval: int) -> bytes:
    """The Multicast Router Advertisement: IGMP with its checksum, ICMPv6 without (the kernel's)."""
    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise ValueError(f"advertisement interval {interval} not in {MIN_INTERVAL}..{MAX_INTERVAL}")
    kind = IGMP_MRDISC_ADV if family == 4 else ICMP6_MRDISC_ADV
    raw = ADVERT.pack(kind, interval, 0, QUERY_INTERVAL, ROBUSTNESS)
    return raw[:2] + checksum(raw).to_bytes(2, "big") + raw[4:] if family == 4 else raw


def cmsgs(family: int, ifindex: int) -> list[Cmsg]:
    """sendmsg ancillary data: out of `ifindex`, TTL / hop limit 1, with Router
    Alert (IPv4 option; IPv6 an MLD Router Alert hop-by-hop option)."""
    if family == 4:
        lvl, pkt, hops, opt = _socket.IPPROTO_IP, IP_PKTINFO, IP_TTL, IP_RETOPTS
        info, alert = _IN_PKTINFO.pack(ifindex, bytes(4), bytes(4)), ROUTER_ALERT4
    else:
        lvl, pkt, hops, opt = _socket.IPPROTO_IPV6, IPV6_PKTINFO, IPV6_HOPLIMIT, IPV6_HOPOPTS
        info, alert = _IN6_PKTINFO.pack(bytes(16), ifindex), HOPOPTS_ROUTER_ALERT_MLD
    return [(lvl, pkt, info), (lvl, hops, _INT.pack(1)), (lvl, opt, alert)]


def solicited(family: int, data: bytes, anc: list[Cmsg], source: bytes) -> int | None:
    """The arrival ifindex if `data` is a valid Solicitation, else None.

    IPv4: `data` is the whole packet (a raw IGMP socket's view); IPv6: the
    ICMPv6 message, `source` the sender's 16-byte address for the checksum.
    The arrival interface (and IPv6 destination) come from IP(V6)_PKTINFO.
    """
    info = {(lvl, typ): val for lvl, typ, val in anc}
    if family == 4:
        pkt = info.get((_socket.IPPROTO_IP, IP_PKTINFO), b"")
        ihl = (data[0] & 0x0F) * 4 if len(data) >= 20 else 0
        end = int.from_bytes(data[2:4], "big") if ihl else 0
        if len(pkt) != _IN_PKTINFO.size or not 20 <= ihl < end <= len(data):
            return None
        if data[9] != 2 or data[16:20] != ALL_ROUTERS4:
            return None
        msg, ifindex, sol = data[ihl:end], _IN_PKTINFO.unpack(pkt)[0], IGMP_MRDISC_SOL
        summed = msg
    else:
        pkt = info.get((_socket.IPPROTO_IPV6, IPV6_PKTINFO), b"")
        if len(pkt) != _IN6_PKTINFO.size or len(source) != 16:
            return None
        dst, ifindex = _IN6_PKTINFO.unpack(pkt)
        if dst != ALL_ROUTERS6:
            return None
        msg, sol = data, ICMP6_MRDISC_SOL
        summed = source + dst + struct.pack("!I3xB", len(msg), 58) + msg  # pseudo-header
    if not 4 <= len(msg) <= 8 or msg[0] != sol or checksum(summed) != 0:
        return None
    return int(ifindex) or None
