"""Send RFC 4286 Multicast Router Solicitations out of one interface (tests only).

Usage: mrdisc_solicit.py IFACE FAMILY [COUNT [bad-checksum|short]] (IPv4 only: the last)
IPv4: IGMP type 0x31 to 224.0.0.2; IPv6: ICMPv6 type 152 to ff02::2 (the
kernel computes the ICMPv6 checksum).  TTL / hop limit 1.
"""

from __future__ import annotations

import socket
import struct
import sys


def checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def main() -> int:
    iface, family = sys.argv[1], int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    how = sys.argv[4] if len(sys.argv) > 4 else ""
    idx = socket.if_nametoindex(iface)
    if family == 4:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IGMP)
        s.setsockopt(
            socket.IPPROTO_IP,
            socket.IP_MULTICAST_IF,
            struct.pack("=4s4si", bytes(4), bytes(4), idx),
        )
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        msg = struct.pack("!BBH", 0x31, 0, 0)
        msg = struct.pack("!BBH", 0x31, 0, checksum(msg))
        if how == "bad-checksum":
            msg = msg[:2] + bytes([msg[2] ^ 0xFF, msg[3]])
        elif how == "short":
            msg = msg[:3]
        dest: tuple[str, int] | tuple[str, int, int, int] = ("224.0.0.2", 0)
    else:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        msg = bytes([152, 0, 0, 0])  # the kernel refuses to send a shorter one
        dest = ("ff02::2", 0, 0, idx)
    for _ in range(count):
        s.sendto(msg, dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
