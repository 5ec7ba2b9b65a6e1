"""Opening the multicast routing sockets (root, before the privilege split).

Owns: `open_mroute(family, table)` -- the raw IGMP/ICMPv6 socket that holds
the kernel's multicast routing API for one table, set up so that only kernel
upcalls are ever read from it (BPF on IPv4, ICMPv6 filter on IPv6), with a
large receive buffer and non-blocking; `open_solicit(family)` -- a raw
socket that lets through RFC 4286 Solicitations only, with their arrival
interface (kept apart so that upcalls are read without ancillary data: a
plain `recv`, the least the helper's Python does between the wake-up and the
write); and the mapping of failures to
sysexits codes via `MrouteError` (69 API in use, 76 no kernel support, 77 not
enough privileges, 64 bad table id, 71 other OS errors).

Must not: add VIFs or routes, drop privileges, or keep any state.  It runs in
the root process before the split; the sockets it returns are handed to the
privileged helper.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import struct
from collections.abc import Callable

# The multicast routing API as opening the socket needs it (the rest: `kernel`)
MRT_INIT, MRT_ASSERT, MRT_PIM, MRT_TABLE = 200, 207, 208, 209
MRT6_INIT, MRT6_ASSERT, MRT6_PIM, MRT6_TABLE = 200, 207, 208, 209
MRT_ADD_MFC_PROXY, MRT_DEL_MFC_PROXY = 210, 211
MRT6_ADD_MFC_PROXY, MRT6_DEL_MFC_PROXY = 210, 211
SO_ATTACH_FILTER, SO_RCVBUFFORCE = 26, 33
IPPROTO_ICMPV6, ICMP6_FILTER = 58, 1  # ICMP6_FILTER: level IPPROTO_ICMPV6
# struct icmp6_filter: 256 bits, 1 = block; everything but type 152, the RFC
# 4286 Multicast Router Solicitation (bit 152: byte 19, bit 0, little-endian)
ICMP6_FILTER_SOLICIT_ONLY = b"\xff" * 19 + b"\xfe" + b"\xff" * 12
ICMP6_FILTER_NONE = b"\xff" * 32  # the mroute socket: upcalls only (they bypass the filter)
IP_PKTINFO, IPV6_RECVPKTINFO = 8, 49  # a Solicitation's arrival interface

EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_OSERR = 71
EX_PROTOCOL = 76
EX_NOPERM = 77

RCVBUF = 8 * 1024 * 1024

# Daemons known to take the multicast routing API (matched on /proc/PID/comm).
KNOWN_DAEMONS = (
    "pimd",
    "pim6d",
    "pim6sd",
    "pimd-dense",
    "pimdd",
    "mrouted",
    "igmpproxy",
    "mcproxy",
    "smcrouted",
    "smcroute",
    "omcproxy",
    "xorp_fea",
    "bird",
    "zebra",
)

_NO_SUPPORT = frozenset(
    {
        errno.ENOPROTOOPT,
        errno.EOPNOTSUPP,
        errno.EAFNOSUPPORT,
        errno.EPROTONOSUPPORT,
        errno.ENOENT,
        errno.ENOSYS,
        errno.ESOCKTNOSUPPORT,
    }
)
_NO_PERM = frozenset({errno.EPERM, errno.EACCES})
_PERM_MSG = "smcrouted must be started as root (needs CAP_NET_ADMIN and CAP_NET_RAW)"


class MrouteError(Exception):
    """Could not open the multicast routing API; `exit_code` is a sysexits code."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


def _fam(family: int) -> str:
    return "IPv4" if family == socket.AF_INET else "IPv6"


def _table(table: int) -> str:
    return f" table {table}" if table else ""


def _my_netns() -> tuple[int, int] | None:
    try:
        st = os.stat("/proc/self/ns/net")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def find_culprits() -> list[str]:
    """Names (`pimd[123]`) of running multicast routing daemons in our netns."""
    me = os.getpid()
    ns = _my_netns()
    found: list[str] = []
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in sorted(pids):
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
                comm = f.read().strip()
        except OSError:
            continue
        name = comm
        if comm not in KNOWN_DAEMONS:
            # Python daemons (and FRR's "pimd"/"pim6d" run as such) show in argv.
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            names = [os.path.basename(a.decode("utf-8", "replace")) for a in argv[:3]]
            hit = [n for n in names if n in KNOWN_DAEMONS]
            if not hit:
                continue
            name = hit[0]
        if ns is not None:
            try:
                st = os.stat(f"/proc/{pid}/ns/net")
                if (st.st_dev, st.st_ino) != ns:
                    continue
            except OSError:
                pass  # cannot tell: keep it as a likely culprit
        found.append(f"{name}[{pid}]")
    return found


def _in_use_message(family: int, table: int) -> str:
    culprits = find_culprits()
    who = f" ({', '.join(culprits)})" if culprits else ""
    return (
        f"another multicast routing daemon{who} holds the {_fam(family)} "
        f"multicast routing API{_table(table)}"
    )


# Classic BPF over what a raw IGMP socket reads (an IP packet, or an upcall:
# struct igmpmsg, 0 where a packet has its protocol, byte 9).
BPF_UPCALLS = [
    (0x30, 0, 0, 9),  # ldb [9]                 IP protocol, or 0 in an upcall
    (0x15, 0, 1, 0),  # jeq #0, accept, drop
    (0x06, 0, 0, 0xFFFF),  # accept: ret #65535
    (0x06, 0, 0, 0),  # drop: ret #0
]
BPF_SOLICITATIONS = [  # IGMP type 0x31, RFC 4286 (the helper checks them); no other IGMP
    (0x30, 0, 0, 9),  # ldb [9]
    (0x15, 0, 4, 2),  # jeq #2 (IGMP), next, drop
    (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf)        X = IP header length
    (0x50, 0, 0, 0),  # ldb [x+0]               IGMP type
    (0x15, 0, 1, 0x31),  # jeq #0x31, accept, drop
    (0x06, 0, 0, 0xFFFF),  # accept: ret #65535
    (0x06, 0, 0, 0),  # drop: ret #0
]


def _bpf(sock: socket.socket, insns: list[tuple[int, int, int, int]]) -> None:
    prog = b"".join(struct.pack("=HBBI", *i) for i in insns)
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = struct.pack("@HP", len(insns), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def open_solicit(family: int) -> socket.socket:
    """The socket the helper reads RFC 4286 Solicitations from: raw IGMP
    (IPv4) or ICMPv6 letting through nothing else, with IP_PKTINFO /
    IPV6_RECVPKTINFO (the arrival interface), non-blocking.  Raises OSError."""
    v4 = family == socket.AF_INET
    sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_IGMP if v4 else IPPROTO_ICMPV6)
    try:
        if v4:
            _bpf(sock, BPF_SOLICITATIONS)
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        else:
            sock.setsockopt(IPPROTO_ICMPV6, ICMP6_FILTER, ICMP6_FILTER_SOLICIT_ONLY)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _big_rcvbuf(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    except OSError:
        # The default still works, it just drops upcalls sooner.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)


def _pim_mode(
    sock: socket.socket, level: int, opt: int, family: int, warn: Callable[[str], None]
) -> None:
    """PIM mode: the kernel then reports traffic arriving on the wrong
    interface also for entries without that interface among their outputs
    (a stop filter), which is how a stop filter gives way to a feed on
    another interface.  Nothing we install forwards differently
    (doc/KERNEL.md "PIM mode").  A kernel without PIM support refuses it:
    say so and carry on, like the original."""
    try:
        sock.setsockopt(level, opt, 1)
    except OSError as e:
        warn(
            f"{_fam(family)}: the kernel refused PIM mode ({e.strerror}): a stop filter "
            f"will block the same (S,G) arriving on another interface until it expires"
        )


def open_mroute(
    family: int, table: int, warn: Callable[[str], None] | None = None
) -> socket.socket:
    """Open the IPv4 (AF_INET) or IPv6 (AF_INET6) multicast routing socket.

    `table` 0 is the default table.  Raises `MrouteError`; `warn` is told
    about what works only partly (PIM mode refused).
    """
    if family not in (socket.AF_INET, socket.AF_INET6):
        raise MrouteError(EX_USAGE, f"unsupported address family {family}")
    if not 0 <= table < 1_000_000_000:
        raise MrouteError(EX_USAGE, f"invalid multicast routing table id {table}")
    fam = _fam(family)
    if family == socket.AF_INET:
        proto, level = socket.IPPROTO_IGMP, socket.IPPROTO_IP
        t_opt, init_opt, assert_opt = MRT_TABLE, MRT_INIT, MRT_ASSERT
        pim_opt = MRT_PIM
    else:
        proto, level = IPPROTO_ICMPV6, socket.IPPROTO_IPV6
        t_opt, init_opt, assert_opt = MRT6_TABLE, MRT6_INIT, MRT6_ASSERT
        pim_opt = MRT6_PIM

    try:
        sock = socket.socket(family, socket.SOCK_RAW, proto)
    except OSError as e:
        if e.errno in _NO_PERM:
            raise MrouteError(EX_NOPERM, _PERM_MSG) from None
        if e.errno in _NO_SUPPORT:
            raise MrouteError(EX_PROTOCOL, f"kernel has no {fam} support: {e.strerror}") from None
        raise MrouteError(EX_OSERR, f"cannot open the {fam} raw socket: {e.strerror}") from None

    step = "MRT_TABLE"
    try:
        if table:
            sock.setsockopt(level, t_opt, struct.pack("=I", table))
        step = "MRT_INIT"
        sock.setsockopt(level, init_opt, 1)
        step = "MRT_ASSERT"
        sock.setsockopt(level, assert_opt, 1)
        _pim_mode(sock, level, pim_opt, family, warn or (lambda _m: None))
        step = "filter"
        if family == socket.AF_INET:
            _bpf(sock, BPF_UPCALLS)
        else:
            sock.setsockopt(IPPROTO_ICMPV6, ICMP6_FILTER, ICMP6_FILTER_NONE)
        _big_rcvbuf(sock)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        err = e.errno
        if step == "MRT_INIT" and err == errno.EADDRINUSE:
            raise MrouteError(EX_UNAVAILABLE, _in_use_message(family, table)) from None
        if err in _NO_PERM:
            raise MrouteError(EX_NOPERM, _PERM_MSG) from None
        if step == "MRT_TABLE" and err in _NO_SUPPORT:
            raise MrouteError(
                EX_PROTOCOL,
                f"kernel has no support for multiple {fam} multicast routing tables "
                f"(table {table} requested)",
            ) from None
        if step == "MRT_TABLE" and err == errno.EINVAL:
            raise MrouteError(EX_USAGE, f"invalid multicast routing table id {table}") from None
        if err in _NO_SUPPORT:
            raise MrouteError(
                EX_PROTOCOL, f"kernel has no {fam} multicast routing support ({e.strerror})"
            ) from None
        raise MrouteError(
            EX_OSERR, f"cannot set up the {fam} multicast routing socket ({step}): {e.strerror}"
        ) from None
    return sock
