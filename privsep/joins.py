"""Group memberships, spread over as many UDP sockets as the kernel needs.

Owns one `JoinPool` per family: the sockets that hold the helper's
memberships, and which socket holds which (so LEAVE goes to the right one).

Must not: check what it is asked (`validate` did), or keep a socket with no
membership.
"""

from __future__ import annotations

import _socket
import errno

from . import kernel

MAX_JOIN_SOCKETS = 4096  # per family and kind; 20 groups each -> 80k groups


class _JoinSock:
    """One UDP socket holding memberships; the kernel caps groups and sources."""

    __slots__ = ("full", "groups", "msf_full", "sock")

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.groups: dict[tuple[int, bytes], int] = {}  # (ifindex, group) -> joins
        self.full = False  # a new group got ENOBUFS (igmp_max_memberships)
        self.msf_full: set[tuple[int, bytes]] = set()  # a new source got ENOBUFS


class JoinPool:
    """Group memberships of one family, spread over as many sockets as needed.

    Any-source (ASM) and source-specific (SSM) joins never share a socket (on
    one socket the kernel would merge them into INCLUDE{S}).  A socket that
    answers ENOBUFS is full (21st group / 11th source on IPv4): try the next,
    or open another.  Every membership remembers its socket so LEAVE goes to
    the right one.
    """

    def __init__(self, family: int) -> None:
        self.af = _socket.AF_INET if family == 4 else _socket.AF_INET6
        self.level = _socket.IPPROTO_IP if family == 4 else _socket.IPPROTO_IPV6
        self.asm: list[_JoinSock] = []
        self.ssm: list[_JoinSock] = []
        self.where: dict[tuple[int, bytes, bytes | None], _JoinSock] = {}

    def _set(
        self, j: _JoinSock, join: bool, ifindex: int, group: bytes, source: bytes | None
    ) -> int:
        if source is None:
            opt = kernel.MCAST_JOIN_GROUP if join else kernel.MCAST_LEAVE_GROUP
            req = kernel.group_req(ifindex, group)
        else:
            opt = kernel.MCAST_JOIN_SOURCE_GROUP if join else kernel.MCAST_LEAVE_SOURCE_GROUP
            req = kernel.group_source_req(ifindex, group, source)
        return kernel.errno_of(j.sock.setsockopt, self.level, opt, req)

    def join(self, ifindex: int, group: bytes, source: bytes | None) -> int:
        key, gkey = (ifindex, group, source), (ifindex, group)
        if key in self.where:
            return errno.EADDRINUSE
        pool = self.asm if source is None else self.ssm
        same = [j for j in pool if gkey in j.groups and gkey not in j.msf_full]
        for j in same + [j for j in pool if gkey not in j.groups and not j.full]:
            err = self._set(j, True, ifindex, group, source)
            if err != errno.ENOBUFS:
                break
            if gkey in j.groups:
                j.msf_full.add(gkey)
            else:
                j.full = True
        else:  # every socket is full: open another
            if len(pool) >= MAX_JOIN_SOCKETS:
                return errno.ENOBUFS
            try:
                j = _JoinSock(_socket.socket(self.af, _socket.SOCK_DGRAM))
            except OSError as e:
                return e.errno or errno.EIO
            err = self._set(j, True, ifindex, group, source)
            if err:
                j.sock.close()
                return err
            pool.append(j)
        if err == 0:
            self.where[key] = j
            j.groups[gkey] = j.groups.get(gkey, 0) + 1
        return err

    def leave(self, ifindex: int, group: bytes, source: bytes | None) -> int:
        key, gkey = (ifindex, group, source), (ifindex, group)
        j = self.where.get(key)
        if j is None:
            return errno.EADDRNOTAVAIL
        err = self._set(j, False, ifindex, group, source)
        if err not in (0, errno.EADDRNOTAVAIL, errno.ENODEV):
            return err
        del self.where[key]  # gone from the kernel either way: forget it
        j.groups[gkey] -= 1
        if not j.groups[gkey]:
            del j.groups[gkey]
        j.full = False
        j.msf_full.discard(gkey)
        if not j.groups:
            (self.asm if source is None else self.ssm).remove(j)
            j.sock.close()
        return err

    def close(self) -> None:
        for j in self.asm + self.ssm:
            j.sock.close()
        self.asm, self.ssm, self.where = [], [], {}
