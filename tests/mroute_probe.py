"""Hold the multicast routing API directly and report what the kernel does.

A standalone script for kernel-fact experiments (tests/test_kernel_facts.py,
doc/KERNEL.md), run inside a router namespace under ``ip netns exec``.  It
talks to the kernel with no daemon in between:

    mroute_probe.py --family 4 [--pim] --vif a1 --vif a2 --vif a3 \
        --mfc SOURCE,GROUP,IIF[,OIF...] [--proxy] ...

opens the raw mroute socket (MRT_INIT, MRT_ASSERT, then MRT_PIM=1 with
``--pim``), adds one VIF/MIF per ``--vif`` (numbered in order), installs
each ``--mfc`` entry with MRT_ADD_MFC (or MRT_ADD_MFC_PROXY with
``--proxy``), prints one JSON line ``{"ready": true, "pim": ERRNO, "mfc":
[ERRNO, ...]}``, then reads upcalls until stdin closes and prints a final
JSON line: ``{"upcalls": [[TYPE, VIF, SOURCE, GROUP, MONOTONIC], ...],
"vifs": {NAME: [PKTS_IN, PKTS_OUT]}}``.  Closing the socket at exit removes
everything it installed.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import ipaddress
import json
import select
import socket
import struct
import sys
import time

from smcroute.privsep import kernel, mroute

SIOCGETVIFCNT = 0x89E0  # linux/mroute.h: a VIF's packet and byte counters
BLOCK_ALL = b"\xff" * 32  # struct icmp6_filter blocking every ICMPv6 type


def _sg(text: str) -> tuple[bytes, bytes, str, list[str]]:
    parts = text.split(",")
    src, grp = ipaddress.ip_address(parts[0]), ipaddress.ip_address(parts[1])
    return src.packed, grp.packed, parts[2], parts[3:]


def _setopt(sock: socket.socket, level: int, opt: int, value: int | bytes) -> int:
    try:
        sock.setsockopt(level, opt, value)
    except OSError as e:
        return e.errno or errno.EIO
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", type=int, choices=(4, 6), required=True)
    ap.add_argument("--pim", action="store_true")
    ap.add_argument("--proxy", action="store_true")
    ap.add_argument("--vif", action="append", default=[])
    ap.add_argument("--mfc", action="append", default=[])
    a = ap.parse_args()
    v4 = a.family == 4
    if v4:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IGMP)
        level = socket.IPPROTO_IP
    else:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, mroute.IPPROTO_ICMPV6)
        level = socket.IPPROTO_IPV6
        sock.setsockopt(mroute.IPPROTO_ICMPV6, mroute.ICMP6_FILTER, BLOCK_ALL)
    sock.setsockopt(level, mroute.MRT_INIT, 1)
    sock.setsockopt(level, mroute.MRT_ASSERT, 1)
    pim = _setopt(sock, level, mroute.MRT_PIM, 1) if a.pim else -1
    vifs: dict[str, int] = {}
    for i, name in enumerate(a.vif):
        idx = socket.if_nametoindex(name)
        if v4:
            sock.setsockopt(level, kernel.MRT_ADD_VIF, kernel.vifctl(i, 1, idx))
        else:
            sock.setsockopt(level, kernel.MRT6_ADD_MIF, kernel.mif6ctl(i, 1, idx))
        vifs[name] = i
    results = []
    add = mroute.MRT_ADD_MFC_PROXY if a.proxy else kernel.MRT_ADD_MFC
    for spec in a.mfc:
        src, grp, iif, oifs = _sg(spec)
        if v4:
            ttls = bytearray(32)
            for o in oifs:
                ttls[vifs[o]] = 1
            buf = kernel.mfcctl(src, grp, vifs[iif], bytes(ttls))
        else:
            ifset = 0
            for o in oifs:
                ifset |= 1 << vifs[o]
            buf = kernel.mf6cctl(src, grp, vifs[iif], ifset)
        results.append(_setopt(sock, level, add, buf))
    print(json.dumps({"ready": True, "pim": pim, "mfc": results}), flush=True)
    upcalls: list[list[object]] = []
    sock.setblocking(False)
    while True:
        r, _, _ = select.select([sock, sys.stdin], [], [], 1.0)
        if sys.stdin in r and not sys.stdin.readline():
            break
        if sock in r:
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                try:
                    up = kernel.decode_upcall(4 if v4 else 6, data)
                except kernel.UpcallError:
                    continue
                src = str(ipaddress.ip_address(up.source))
                grp = str(ipaddress.ip_address(up.group))
                upcalls.append([up.msgtype, up.vif, src, grp, time.monotonic()])
    counts: dict[str, list[int]] = {}
    for name, i in vifs.items():
        if v4:
            req = bytearray(struct.pack("=H6x4Q", i, 0, 0, 0, 0))
            fcntl.ioctl(sock.fileno(), SIOCGETVIFCNT, req)
            _, icount, ocount, _, _ = struct.unpack("=H6x4Q", req)
            counts[name] = [icount, ocount]
        else:
            counts[name] = _mif_counts(i)
    print(json.dumps({"upcalls": upcalls, "vifs": counts}), flush=True)
    sock.close()
    return 0


def _mif_counts(mif: int) -> list[int]:
    """/proc/net/ip6_mr_vif: Interface BytesIn PktsIn BytesOut PktsOut Flags."""
    with open("/proc/net/ip6_mr_vif") as f:
        for line in f.read().splitlines()[1:]:
            cols = line.split()
            if cols and int(cols[0]) == mif:
                return [int(cols[3]), int(cols[5])]
    return [0, 0]


if __name__ == "__main__":
    sys.exit(main())
