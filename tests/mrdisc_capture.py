"""Capture RFC 4286 Multicast Router Advertisements on one interface.

Run inside a namespace: ``python mrdisc_capture.py IFACE``.  Joins 224.0.0.106
and ff02::6a on IFACE, listens on a raw IGMP socket and a raw ICMPv6 socket
(with an ICMP6_FILTER that passes type 151 only), prints ``READY``, then one
JSON object per IGMP/ICMPv6 packet received, and exits when stdin closes.

Each line: ``t`` (time.time() at receipt), ``family``, ``src``, ``dst``,
``type``, ``interval`` (byte 1), ``query_interval``, ``robustness``,
``length`` (of the message), ``ttl`` (TTL / hop limit), ``router_alert``
(the IPv4 option or the IPv6 hop-by-hop option is present) and
``checksum_ok`` (recomputed here, over the pseudo-header for IPv6).
"""

from __future__ import annotations

import ipaddress
import json
import select
import socket
import struct
import sys
import time

IP_PKTINFO = 8
IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50
IPV6_RECVHOPLIMIT = 51
IPV6_HOPLIMIT = 52
IPV6_RECVHOPOPTS = 53
IPV6_HOPOPTS = 54
ICMP6_FILTER = 1


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def fields(msg: bytes) -> dict[str, int]:
    if len(msg) < 8:
        return {"type": msg[0] if msg else -1, "length": len(msg)}
    typ, ival, _ck, qi, rv = struct.unpack_from("!BBHHH", msg)
    return {"type": typ, "interval": ival, "query_interval": qi, "robustness": rv,
            "length": len(msg)}  # fmt: skip


def parse4(pkt: bytes) -> dict[str, object]:
    ihl = (pkt[0] & 0x0F) * 4
    opts = pkt[20:ihl]
    msg = pkt[ihl:]
    out: dict[str, object] = {
        "family": 4,
        "src": socket.inet_ntoa(pkt[12:16]),
        "dst": socket.inet_ntoa(pkt[16:20]),
        "ttl": pkt[8],
        "router_alert": b"\x94\x04\x00\x00" in opts,
        "checksum_ok": checksum(msg) == 0,
    }
    out.update(fields(msg))
    return out


def parse6(msg: bytes, src: str, anc: list[tuple[int, int, bytes]]) -> dict[str, object]:
    dst, hops, ra = b"", -1, False
    for level, typ, data in anc:
        if level != socket.IPPROTO_IPV6:
            continue
        if typ == IPV6_PKTINFO:
            dst = data[:16]
        elif typ == IPV6_HOPLIMIT:
            hops = struct.unpack("=i", data[:4])[0]
        elif typ == IPV6_HOPOPTS:
            ra = b"\x05\x02\x00\x00" in data
    source = ipaddress.IPv6Address(src.split("%")[0]).packed
    pseudo = source + dst + struct.pack("!I3xB", len(msg), 58)
    out: dict[str, object] = {
        "family": 6,
        "src": src.split("%")[0],
        "dst": str(ipaddress.IPv6Address(dst)) if dst else "",
        "ttl": hops,
        "router_alert": ra,
        "checksum_ok": bool(dst) and checksum(pseudo + msg) == 0,
    }
    out.update(fields(msg))
    return out


def main() -> int:
    iface = sys.argv[1]
    idx = socket.if_nametoindex(iface)
    s4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IGMP)
    s4.setsockopt(
        socket.IPPROTO_IP,
        socket.IP_ADD_MEMBERSHIP,
        struct.pack("=4s4si", socket.inet_aton("224.0.0.106"), bytes(4), idx),
    )
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    block = [0xFFFFFFFF] * 8
    block[151 >> 5] &= ~(1 << (151 & 31))
    s6.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *block))
    for opt in (IPV6_RECVPKTINFO, IPV6_RECVHOPLIMIT, IPV6_RECVHOPOPTS):
        s6.setsockopt(socket.IPPROTO_IPV6, opt, 1)
    s6.setsockopt(
        socket.IPPROTO_IPV6,
        socket.IPV6_JOIN_GROUP,
        socket.inet_pton(socket.AF_INET6, "ff02::6a") + struct.pack("=I", idx),
    )
    print("READY", flush=True)
    stdin = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([s4, s6, stdin], [], [])
        now = time.time()
        if stdin in ready:
            return 0
        if s4 in ready:
            pkt = s4.recv(65535)
            print(json.dumps({"t": now, **parse4(pkt)}), flush=True)
        if s6 in ready:
            msg, anc, _flags, addr = s6.recvmsg(65535, 1024)
            print(json.dumps({"t": now, **parse6(msg, addr[0], anc)}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
