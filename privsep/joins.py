"""Group memberships, spread over as many UDP sockets as the kernel needs.

Owns one `JoinPool` per family: the sockets that hold the helper's
memberships, and which socket holds which (so LEAVE goes to the right one).

Must not: check what it is asked (`validate` did), or keep a socket with no
membership.
"""

from __future__ import annotations

import errno
import socket

from . import kernel

MAX_JOIN_SOCKETS = 4096  # per family and kind; 20 groups each -> 80k groups


class _JoinSock:
    """One UDP socket holding memberships; the kernel caps groups and sources."""

    __slots__ = ("full", "groups", "msf_full", "sock")

    def __init__(self, sock: socket.socket) -> None:
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
        self.af = socket.AF_INET if family == 4 else socket.AF_INET6
        self.level = socket.IPPROTO_IP if family == 4 else socket.IPPROTO_IPV6
        self.alen = 4 if family == 4 else 16
        self.asm: list[_JoinSock] = []
        self.ssm: list[_JoinSock] = []
        self.where: dict[tuple[int, bytes, bytes | None], _JoinSock] = {}

    def _candidates(self, pool: list[_JoinSock], gkey: tuple[int, bytes]) -> list[_JoinSock]:
        same = [j for j in pool if gkey in j.groups and gkey not in j.msf_full]
        other = [j for j in pool if gkey not in j.groups and not j.full]
        return same + other

    def join(self, ifindex: int, group: bytes, source: bytes | None) -> int:
        key = (ifindex, group, source)
        if key in self.where:
            return errno.EADDRINUSE
        gkey = (ifindex, group)
        if source is None:
            pool, opt = self.asm, kernel.MCAST_JOIN_GROUP
            req = kernel.group_req(ifindex, group)
        else:
            pool, opt = self.ssm, kernel.MCAST_JOIN_SOURCE_GROUP
            req = kernel.group_source_req(ifindex, group, source)
        for j in self._candidates(pool, gkey):
            err = self._try(j, opt, req)
            if err == 0:
                return self._record(j, key, gkey)
            if err != errno.ENOBUFS:
                return err
            if gkey in j.groups:
                j.msf_full.add(gkey)
            else:
                j.full = True
        if len(pool) >= MAX_JOIN_SOCKETS:
            return errno.ENOBUFS
        try:
            j = _JoinSock(socket.socket(self.af, socket.SOCK_DGRAM))
        except OSError as e:
            return e.errno or errno.EIO
        err = self._try(j, opt, req)
        if err:
            j.sock.close()
            return err
        pool.append(j)
        return self._record(j, key, gkey)

    def _try(self, j: _JoinSock, opt: int, req: bytes) -> int:
        try:
            j.sock.setsockopt(self.level, opt, req)
        except OSError as e:
            return e.errno or errno.EIO
        return 0

    def _record(
        self, j: _JoinSock, key: tuple[int, bytes, bytes | None], gkey: tuple[int, bytes]
    ) -> int:
        self.where[key] = j
        j.groups[gkey] = j.groups.get(gkey, 0) + 1
        return 0

    def leave(self, ifindex: int, group: bytes, source: bytes | None) -> int:
        key = (ifindex, group, source)
        j = self.where.get(key)
        if j is None:
            return errno.EADDRNOTAVAIL
        if source is None:
            opt, req = kernel.MCAST_LEAVE_GROUP, kernel.group_req(ifindex, group)
        else:
            opt = kernel.MCAST_LEAVE_SOURCE_GROUP
            req = kernel.group_source_req(ifindex, group, source)
        err = self._try(j, opt, req)
        if err not in (0, errno.EADDRNOTAVAIL, errno.ENODEV):
            return err
        # Gone from the kernel either way: forget it.
        del self.where[key]
        gkey = (ifindex, group)
        n = j.groups.get(gkey, 1) - 1
        if n <= 0:
            j.groups.pop(gkey, None)
        else:
            j.groups[gkey] = n
        j.full = False
        j.msf_full.discard(gkey)
        if not j.groups:
            pool = self.asm if source is None else self.ssm
            if j in pool:
                pool.remove(j)
            j.sock.close()
        return err

    def sockets(self) -> int:
        return len(self.asm) + len(self.ssm)

    def close(self) -> None:
        for j in self.asm + self.ssm:
            j.sock.close()
        self.asm.clear()
        self.ssm.clear()
        self.where.clear()
