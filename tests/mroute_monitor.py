"""Count multicast-routing cache writes announced by the kernel (run inside a netns).

A standalone script (standard library only, run under ``ip netns exec``):
subscribes to RTNLGRP_IPV4_MROUTE (6) and/or RTNLGRP_IPV6_MROUTE (10) and
appends one JSON line per MFC notification to ``--out``::

    {"op": "add", "family": 4, "source": "10.0.1.2", "group": "225.1.1.1", "t": 123.4}

(``t``: CLOCK_MONOTONIC when read, comparable with ``time.monotonic()``
of any process on the machine.)

The kernel sends RTM_NEWROUTE for every MRT_ADD_MFC (new entry or
replacement, even an identical one) and RTM_DELROUTE for every deletion, so
the lines are exactly the kernel writes made to the MFC.  Lost notifications
(ENOBUFS) are written as ``{"op": "lost"}``.  Prints ``READY`` once
subscribed; a ``SYNC`` line on stdin makes it read everything queued, flush,
and answer ``OK``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import socket
import struct
import sys
import time

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
GROUPS = {4: 6, 6: 10}
FAMILIES = {128: 4, 129: 6}


def _attrs(data: bytes, off: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4 or off + length > len(data):
            break
        out[kind & 0x3FFF] = data[off + 4 : off + length]
        off += (length + 3) & ~3
    return out


def decode(data: bytes, now: float = 0.0) -> list[dict[str, object]]:
    """MFC events in one netlink datagram; ``t`` is when it was read (CLOCK_MONOTONIC)."""
    events: list[dict[str, object]] = []
    off = 0
    while off + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, off)
        if length < 16 or off + length > len(data):
            break
        body = data[off + 16 : off + length]
        off += (length + 3) & ~3
        if kind not in (RTM_NEWROUTE, RTM_DELROUTE) or len(body) < 12:
            continue
        fam = FAMILIES.get(body[0])
        if fam is None:
            continue
        attrs = _attrs(body, 12)
        af = socket.AF_INET if fam == 4 else socket.AF_INET6
        size = 4 if fam == 4 else 16
        src = attrs.get(2, bytes(size))
        dst = attrs.get(1, bytes(size))
        events.append(
            {
                "op": "add" if kind == RTM_NEWROUTE else "del",
                "family": fam,
                "source": socket.inet_ntop(af, src[:size].ljust(size, b"\0")),
                "group": socket.inet_ntop(af, dst[:size].ljust(size, b"\0")),
                "t": now,
            }
        )
    return events


def main() -> int:
    p = argparse.ArgumentParser(prog="mroute_monitor")
    p.add_argument("--families", default="4")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    s.bind((0, 0))
    for f in args.families.split(","):
        s.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, GROUPS[int(f)])
    s.setblocking(False)
    out = open(args.out, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process

    def drain() -> None:
        while True:
            try:
                data = s.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    out.write('{"op": "lost"}\n')
                    continue
                raise
            for ev in decode(data, time.monotonic()):
                out.write(json.dumps(ev) + "\n")
        out.flush()

    print("READY", flush=True)
    stdin = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([s, stdin], [], [])
        if s in ready:
            drain()
        if stdin in ready:
            line = os.read(stdin, 4096)
            if not line:
                return 0
            for _ in range(line.count(b"SYNC")):
                drain()
                print("OK", flush=True)


if __name__ == "__main__":
    sys.exit(main())
