"""Multicast sender and receiver for end-to-end tests (run inside a netns).

This file is executed as a standalone script (``python mcast_tool.py recv ...``
under ``ip netns exec``); it imports only the standard library so it starts
fast and does not depend on the project being importable.

``recv``: join one or more groups on an interface (ASM, or SSM with
``--source``), bind the UDP port, print ``READY`` on stdout once every join
is in place (the parent waits for that line: a handshake, not a sleep), then
count datagrams per (source, group) and record the sequence numbers carried
in the payload. A line ``STOP [LINGER_MS]`` on stdin (or EOF) makes it keep
receiving until LINGER_MS pass without a packet, then print one JSON
document and exit::

    {"total": 10, "flows": {"10.0.1.2 225.1.1.1": {"count": 10, "seqs": [0, ...]}}}

``send``: send COUNT datagrams ``smct SEQ TAG`` to a group out of an
interface with a TTL (hop limit) at a rate, print ``{"sent": COUNT}``.
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

MCAST_JOIN_GROUP = 42
MCAST_JOIN_SOURCE_GROUP = 46
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IP_TTL = 2
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
MAGIC = b"smct"


def _sockaddr_storage(addr: str) -> bytes:
    """A 128-byte sockaddr_storage holding ``addr`` (port 0)."""
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        raw = struct.pack("=HH4s", socket.AF_INET, 0, ip.packed)
    else:
        raw = struct.pack("=HHI16sI", socket.AF_INET6, 0, 0, ip.packed, 0)
    return raw.ljust(128, b"\0")


def _join(sock: socket.socket, ifindex: int, group: str, source: str | None) -> None:
    """Join ``group`` (optionally source-specific) on ``ifindex``."""
    level = socket.IPPROTO_IP if ipaddress.ip_address(group).version == 4 else socket.IPPROTO_IPV6
    if source is None:
        req = struct.pack("=I4x", ifindex) + _sockaddr_storage(group)
        sock.setsockopt(level, MCAST_JOIN_GROUP, req)
    else:
        req = struct.pack("=I4x", ifindex) + _sockaddr_storage(group) + _sockaddr_storage(source)
        sock.setsockopt(level, MCAST_JOIN_SOURCE_GROUP, req)


def _recv(args: argparse.Namespace) -> int:
    groups = args.group
    ifindex = socket.if_nametoindex(args.iface)
    # ASM and SSM joins of one group must not share a socket (see doc/KERNEL.md),
    # and IPv4 allows 20 groups per socket: one socket per group is simplest.
    socks = []
    for group in groups:
        v6 = ipaddress.ip_address(group).version == 6
        s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        if v6:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            s.bind((group, args.port, 0, ifindex))
        else:
            s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
            s.bind((group, args.port))
        source = args.source
        if source and ipaddress.ip_address(source).version != ipaddress.ip_address(group).version:
            source = None  # --source applies to the groups of its own family
        _join(s, ifindex, group, source)
        socks.append(s)
    flows: dict[str, dict] = {}
    total = 0
    print("READY", flush=True)
    stdin = sys.stdin.fileno()
    linger: float | None = None
    last = time.monotonic()
    while True:
        timeout = None
        if linger is not None:
            timeout = last + linger - time.monotonic()
            if timeout <= 0:
                break
        rlist = socks + ([stdin] if linger is None else [])
        ready, _, _ = select.select(rlist, [], [], timeout)
        for r in ready:
            if r == stdin:
                line = os.read(stdin, 4096).decode()
                parts = line.split()
                ms = int(parts[1]) if len(parts) > 1 else args.linger
                linger = ms / 1000.0
                continue
            data, anc, _, addr = r.recvmsg(65535, 256)
            if not data.startswith(MAGIC):
                continue
            group = r.getsockname()[0]
            ttl = None
            for level, typ, cdata in anc:
                if (level, typ) == (socket.IPPROTO_IP, IP_PKTINFO):
                    group = socket.inet_ntop(socket.AF_INET, cdata[8:12])
                elif (level, typ) == (socket.IPPROTO_IPV6, IPV6_PKTINFO):
                    group = socket.inet_ntop(socket.AF_INET6, cdata[:16])
                elif (level, typ) in (
                    (socket.IPPROTO_IP, IP_TTL),
                    (socket.IPPROTO_IPV6, IPV6_HOPLIMIT),
                ):
                    ttl = struct.unpack("=i", cdata[:4])[0] if len(cdata) >= 4 else cdata[0]
            key = f"{addr[0]} {group}"
            flow = flows.setdefault(key, {"count": 0, "seqs": [], "ttls": []})
            flow["count"] += 1
            if ttl is not None and ttl not in flow["ttls"]:
                flow["ttls"].append(ttl)
            fields = data.split()
            if len(fields) >= 2 and fields[1].isdigit():
                flow["seqs"].append(int(fields[1]))
            total += 1
            last = time.monotonic()
        if linger is not None and not ready:
            break
    print(json.dumps({"total": total, "flows": flows}), flush=True)
    return 0


def _send(args: argparse.Namespace) -> int:
    v6 = ipaddress.ip_address(args.group).version == 6
    ifindex = socket.if_nametoindex(args.iface)
    if v6:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, args.ttl)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        dest: tuple = (args.group, args.port, 0, ifindex)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        mreqn = struct.pack("=4s4si", b"\0" * 4, b"\0" * 4, ifindex)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, args.ttl)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        dest = (args.group, args.port)
    if args.source:
        s.bind((args.source, 0))
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    start = time.monotonic()
    for seq in range(args.first, args.first + args.count):
        if interval:
            delay = start + (seq - args.first) * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the sender: the rate is the point here
        s.sendto(b"%s %d %s" % (MAGIC, seq, args.tag.encode()), dest)
    print(json.dumps({"sent": args.count}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mcast_tool")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recv")
    r.add_argument("--iface", required=True)
    r.add_argument("--group", action="append", required=True)
    r.add_argument("--source", default=None, help="SSM source for every group")
    r.add_argument("--port", type=int, default=5000)
    r.add_argument("--linger", type=int, default=300, help="ms of silence before exit")
    s = sub.add_parser("send")
    s.add_argument("--iface", required=True)
    s.add_argument("--group", required=True)
    s.add_argument("--source", default=None, help="bind to this source address")
    s.add_argument("--port", type=int, default=5000)
    s.add_argument("--count", type=int, default=10)
    s.add_argument("--first", type=int, default=0, help="first sequence number")
    s.add_argument("--ttl", type=int, default=8)
    s.add_argument("--rate", type=float, default=0.0, help="packets per second, 0 = flat out")
    s.add_argument("--tag", default="-")
    args = p.parse_args(argv)
    return _recv(args) if args.cmd == "recv" else _send(args)


if __name__ == "__main__":
    sys.exit(main())
