"""Raw-frame multicast sender and MFC watcher for template tests (run inside a netns).

Standalone script (stdlib only), like ``mcast_tool.py``; executed under
``ip netns exec``.

``flood``: send UDP multicast from *many source addresses* out of one
interface by writing whole Ethernet frames on an AF_PACKET socket, so no
address needs to be configured (1,000 or 50,000 sources cost nothing). The
payload is ``smct SEQ TAG`` like ``mcast_tool.py send``, so
``netns.Receiver`` counts it per (source, group). Sources are consecutive
addresses from ``--source``; each sends ``--count`` packets (sequence
numbers from ``--first``), either source after source (``--order seq``) or
round-robin (``--order rr``), paced at ``--rate`` packets per second
overall. Prints one JSON line: ``{"sent": N, "t0": [monotonic ns of each
source's first packet]}``.

``igmp`` / ``mld``: send hand-made IGMP (v1/v2/v3 reports, leave, query;
with and without Router Alert; one with a bad checksum) or MLD (v1/v2
reports, done, query) for ``--group`` -- wire control traffic that must
never be mistaken for an upcall.

``watch``: subscribe to RTNLGRP_IPV4_MROUTE / IPV6_MROUTE and print
``READY`` then one line ``NEW|UNRES|DEL FAMILY SOURCE GROUP MONOTONIC_NS``
per MFC change until stdin closes (to time "first packet -> entry installed").
``--resolved``: a socket filter keeps the kernel's unresolved-entry
announcements (which come with every new source's upcall) out, so that the
watcher is not woken while the daemon under test works on the upcall;
``--realtime``: SCHED_FIFO, so that it runs as soon as an entry is in, before
whatever else that woke (the receiver of the packets the entry released, the
rest of the daemon's work).  For one new source at a time only: it would
starve the daemon under a flood of notifications.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
MAGIC = b"smct"


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _mac(iface: str) -> bytes:
    with open(f"/sys/class/net/{iface}/address") as fh:
        return bytes.fromhex(fh.read().strip().replace(":", ""))


def _dst_mac(group: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    if group.version == 4:
        return b"\x01\x00\x5e" + (int(group) & 0x7FFFFF).to_bytes(3, "big")
    return b"\x33\x33" + group.packed[-4:]


def ipv4_frame(
    src_mac: bytes,
    src: bytes,
    group: ipaddress.IPv4Address,
    proto: int,
    payload: bytes,
    ttl: int,
    options: bytes = b"",
    ident: int = 0,
) -> bytes:
    ihl = 5 + len(options) // 4
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(payload), ident, 0, ttl, proto, 0, src,
        group.packed,
    ) + options  # fmt: skip
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return _dst_mac(group) + src_mac + struct.pack("!H", ETH_P_IP) + hdr + payload


def ipv6_frame(
    src_mac: bytes,
    src: bytes,
    group: ipaddress.IPv6Address,
    nexthdr: int,
    payload: bytes,
    hlim: int,
    ext: bytes = b"",
) -> bytes:
    first = nexthdr if not ext else 0  # hop-by-hop header first when given
    hdr = struct.pack("!IHBB16s16s", 0x60000000, len(ext) + len(payload), first, hlim, src,
                      group.packed)  # fmt: skip
    return _dst_mac(group) + src_mac + struct.pack("!H", ETH_P_IPV6) + hdr + ext + payload


def udp(src: bytes, dst: bytes, sport: int, dport: int, data: bytes) -> bytes:
    length = 8 + len(data)
    if len(src) == 4:
        return struct.pack("!HHHH", sport, dport, length, 0) + data  # checksum optional
    pseudo = src + dst + struct.pack("!IxxxB", length, 17)
    c = _csum(pseudo + struct.pack("!HHHH", sport, dport, length, 0) + data) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, c) + data


def _packet_socket(iface: str, family: int) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, ETH_P_IP if family == 4 else ETH_P_IPV6))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return s


def _flood(args: argparse.Namespace) -> int:
    group = ipaddress.ip_address(args.group)
    base = int(ipaddress.ip_address(args.source))
    fam = group.version
    s = _packet_socket(args.iface, fam)
    mac = _mac(args.iface)
    srcs = [ipaddress.ip_address(base + i).packed for i in range(args.sources)]
    order = (
        [(i, k) for i in range(args.sources) for k in range(args.count)]
        if args.order == "seq"
        else [(i, k) for k in range(args.count) for i in range(args.sources)]
    )
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    tag = args.tag.encode()
    t0 = [0] * args.sources
    start = time.monotonic()
    for n, (i, k) in enumerate(order):
        seq = args.first + k
        data = b"%s %d %s" % (MAGIC, seq, tag)
        src = srcs[i]
        dgram = udp(src, group.packed, args.sport, args.port, data)
        if fam == 4:
            frame = ipv4_frame(mac, src, group, 17, dgram, args.ttl, ident=n & 0xFFFF)  # type: ignore[arg-type]
        else:
            frame = ipv6_frame(mac, src, group, 17, dgram, args.ttl)  # type: ignore[arg-type]
        if interval:
            delay = start + n * interval - time.monotonic()
            if delay > 0.0005:
                time.sleep(delay)  # pacing the sender: the rate is the point here
            while time.monotonic() < start + n * interval:
                pass
        if k == 0:
            t0[i] = time.monotonic_ns()  # just before the source's first frame leaves
        while True:
            try:
                s.send(frame)
                break
            except BlockingIOError:  # pragma: no cover - full queue
                time.sleep(0.0001)
    print(json.dumps({"sent": len(order), "t0": t0 if args.times else []}), flush=True)
    return 0


RA4 = b"\x94\x04\x00\x00"  # IPv4 Router Alert option
HBH_RA6 = bytes([58, 0, 5, 2, 0, 0, 1, 0])  # hop-by-hop: Router Alert (MLD), PadN


def _igmp(args: argparse.Namespace) -> int:
    group = ipaddress.IPv4Address(args.group)
    src = ipaddress.IPv4Address(args.source).packed
    mac = _mac(args.iface)
    s = _packet_socket(args.iface, 4)
    g = group.packed
    all_routers = ipaddress.IPv4Address("224.0.0.2")
    igmpv3 = ipaddress.IPv4Address("224.0.0.22")
    all_hosts = ipaddress.IPv4Address("224.0.0.1")

    def msg(typ: int, code: int, body: bytes, bad: bool = False) -> bytes:
        raw = struct.pack("!BBH", typ, code, 0) + body
        c = _csum(raw) ^ (0x5A5A if bad else 0)
        return raw[:2] + struct.pack("!H", c) + raw[4:]

    v3rec = struct.pack("!BBH4s", 4, 0, 0, g)  # CHANGE_TO_EXCLUDE {} = join
    frames = [
        (group, msg(0x12, 0, g), b""),  # IGMPv1 report to the group, no RA
        (group, msg(0x16, 0, g), RA4),  # IGMPv2 report to the group, with RA
        (group, msg(0x16, 0, g), b""),  # IGMPv2 report without RA (old Cisco)
        (group, msg(0x16, 0, g, bad=True), b""),  # bad checksum
        (all_routers, msg(0x17, 0, g), RA4),  # leave
        (igmpv3, msg(0x22, 0, struct.pack("!HH", 0, 1) + v3rec), RA4),  # v3 report
        (all_hosts, msg(0x11, 100, g), RA4),  # group-specific query
        (group, msg(0x11, 100, g), b""),  # query to the group itself
    ]
    n = 0
    for _ in range(args.count):
        for dst, body, opt in frames:
            s.send(ipv4_frame(mac, src, dst, 2, body, 1, options=opt))
            n += 1
    print(json.dumps({"sent": n}), flush=True)
    return 0


def _mld(args: argparse.Namespace) -> int:
    group = ipaddress.IPv6Address(args.group)
    src = ipaddress.IPv6Address(args.source).packed
    mac = _mac(args.iface)
    s = _packet_socket(args.iface, 6)
    all_routers = ipaddress.IPv6Address("ff02::2")
    mld2 = ipaddress.IPv6Address("ff02::16")
    all_nodes = ipaddress.IPv6Address("ff02::1")

    def icmp(dst: ipaddress.IPv6Address, typ: int, body: bytes) -> bytes:
        raw = struct.pack("!BBH", typ, 0, 0) + body
        pseudo = src + dst.packed + struct.pack("!IxxxB", len(raw), 58)
        return raw[:2] + struct.pack("!H", _csum(pseudo + raw)) + raw[4:]

    mld1 = struct.pack("!HH16s", 0, 0, group.packed)
    v2rec = struct.pack("!BBH16s", 4, 0, 0, group.packed)
    frames = [
        (group, icmp(group, 131, mld1), HBH_RA6),  # MLDv1 report to the group
        (all_routers, icmp(all_routers, 132, mld1), HBH_RA6),  # done
        (mld2, icmp(mld2, 143, struct.pack("!HH", 0, 1) + v2rec), HBH_RA6),  # MLDv2 report
        (all_nodes, icmp(all_nodes, 130, struct.pack("!HH16s", 1000, 0, group.packed)), HBH_RA6),
    ]
    n = 0
    for _ in range(args.count):
        for dst, body, ext in frames:
            s.send(ipv6_frame(mac, src, dst, 58, body, 1, ext=ext))
            n += 1
    print(json.dumps({"sent": n}), flush=True)
    return 0


# --- netlink watcher ---------------------------------------------------------

RTNLGRP_IPV4_MROUTE = 6
RTNLGRP_IPV6_MROUTE = 10
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTA_DST, RTA_SRC = 1, 2
NETLINK_ADD_MEMBERSHIP = 1
SOL_NETLINK = 270


# Classic BPF over one netlink message: drop an RTM_NEWROUTE whose rtm_flags
# (host order, at 16 + 8) has RTNH_F_UNRESOLVED; pass the rest whole.
DROP_UNRESOLVED = [
    (0x30, 0, 0, 4),  # ldb [4]          nlmsg_type, low byte
    (0x15, 0, 2, RTM_NEWROUTE),  # jeq #24, next, pass
    (0x30, 0, 0, 24),  # ldb [24]        rtm_flags, low byte
    (0x45, 1, 0, 32),  # jset #RTNH_F_UNRESOLVED, drop, pass
    (0x06, 0, 0, 1 << 18),  # pass: ret #256 KiB
    (0x06, 0, 0, 0),  # drop: ret #0
]
SO_ATTACH_FILTER = 26


def _attach(s: socket.socket, insns: list[tuple[int, int, int, int]]) -> None:
    import ctypes

    prog = b"".join(struct.pack("=HBBI", *i) for i in insns)
    buf = ctypes.create_string_buffer(prog, len(prog))
    s.setsockopt(
        socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("@HP", len(insns), ctypes.addressof(buf))
    )


def _watch(args: argparse.Namespace) -> int:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    if args.resolved:
        _attach(s, DROP_UNRESOLVED)
    if args.realtime:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    s.bind((0, 0))
    for grp in (RTNLGRP_IPV4_MROUTE, RTNLGRP_IPV6_MROUTE):
        s.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, grp)
    print("READY", flush=True)
    stdin = sys.stdin.fileno()
    out = sys.stdout
    while True:
        ready, _, _ = select.select([s, stdin], [], [])
        if stdin in ready and not os.read(stdin, 4096):
            break
        if s not in ready:
            continue
        data = s.recv(1 << 16)
        now = time.monotonic_ns()
        off = 0
        while off + 16 <= len(data):
            length, mtype = struct.unpack_from("=IH", data, off)
            if length < 16:
                break
            if mtype in (RTM_NEWROUTE, RTM_DELROUTE):
                fam = data[off + 16]
                alen = 4 if fam == 128 else 16
                a = off + 16 + 12
                src = grp = None
                while a + 4 <= off + length:
                    rlen, rtype = struct.unpack_from("=HH", data, a)
                    if rlen < 4:
                        break
                    val = data[a + 4 : a + rlen]
                    if rtype in (RTA_SRC, RTA_DST) and len(val) == alen:
                        addr = str(ipaddress.ip_address(val))
                        if rtype == RTA_SRC:
                            src = addr
                        else:
                            grp = addr
                    a += (rlen + 3) & ~3
                kind = "NEW" if mtype == RTM_NEWROUTE else "DEL"
                if kind == "NEW" and struct.unpack_from("=I", data, off + 24)[0] & 32:
                    kind = "UNRES"  # RTNH_F_UNRESOLVED: the kernel's own queue entry
                out.write(f"{kind} {4 if fam == 128 else 6} {src} {grp} {now}\n")
            off += (length + 3) & ~3
        out.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mcast_flood")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("flood")
    f.add_argument("--iface", required=True)
    f.add_argument("--group", required=True)
    f.add_argument("--source", required=True, help="first source address")
    f.add_argument("--sources", type=int, default=1, help="number of consecutive sources")
    f.add_argument("--count", type=int, default=1, help="packets per source")
    f.add_argument("--first", type=int, default=0)
    f.add_argument("--order", choices=("seq", "rr"), default="seq")
    f.add_argument("--rate", type=float, default=0.0, help="packets per second, 0 = flat out")
    f.add_argument("--ttl", type=int, default=8)
    f.add_argument("--port", type=int, default=5000)
    f.add_argument("--sport", type=int, default=4000)
    f.add_argument("--tag", default="-")
    f.add_argument("--times", action="store_true", help="report each source's first send time")
    for name in ("igmp", "mld"):
        c = sub.add_parser(name)
        c.add_argument("--iface", required=True)
        c.add_argument("--group", required=True)
        c.add_argument("--source", required=True)
        c.add_argument("--count", type=int, default=3)
    w = sub.add_parser("watch")
    w.add_argument("--resolved", action="store_true", help="no unresolved-entry lines")
    w.add_argument("--realtime", action="store_true", help="run at SCHED_FIFO priority 10")
    args = p.parse_args(argv)
    return {"flood": _flood, "igmp": _igmp, "mld": _mld, "watch": _watch}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
