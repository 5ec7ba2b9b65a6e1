"""The privileged helper: the only part of smcrouted that keeps privileges.

Run as `python -I -m smcroute.privsep.child --ipc FD [--v4 FD] [--v6 FD]
--pidfile PATH --ctlsock PATH --loglevel LVL` (see `client.start_helper`),
with the socketpair end and the multicast routing sockets inherited.

Owns: the multicast routing sockets, the group-join sockets, the
PID file write, the removal of the PID file and control socket at exit, and
running the `-e` hook (HOOK ops: the command is fixed on our command line
at start-up, the parent only names the action and the addresses; it runs
as uid 0 with CAP_NET_ADMIN + CAP_NET_RAW only and no-new-privs, so
`conntrack` works from it; at most MAX_HOOKS at once), the sending of
RFC 4286 Multicast Router Advertisements (MRDISC ops: raw
IGMP/ICMPv6 needs CAP_NET_RAW) on the mroute sockets, built here from the
validated interval alone, out of VIF interfaces only, and rate-limited.
It keeps only CAP_NET_ADMIN + CAP_NET_RAW, sets no-new-privs, closes every
fd it does not need, then serves one poll loop: kernel upcalls are validated
and forwarded as UPCALL; OPS batches are validated field by field -- as if the
parent were hostile -- before any system call, and answered with one errno
per op.  When the parent goes away (EOF on the socketpair, or SIGTERM from
PR_SET_PDEATHSIG) it closes everything, so the kernel removes its VIFs,
routes and memberships, and exits 0.

Must not: import anything beyond the stdlib, `prctl` and its own privsep
modules (no lark, click, smcroute.engine or smcroute.model); forward
anything read from the wire other than kernel upcalls; trust any field of
any message; execute any operation the protocol does not name; die on bad
input.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import sys
import time
from typing import Any, NoReturn

import prctl  # type: ignore[import-untyped, unused-ignore]

from . import kernel, mrdisc, proto

TITLE = "smcrouted: privileged helper"
NAME = "smcrouted-priv"  # comm, 15 bytes max

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
KEEP_CAPS = (CAP_NET_ADMIN, CAP_NET_RAW)
KEEP_MASK = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

LEVELS = {"none": -1, "err": 3, "error": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7}

MAX_JOIN_SOCKETS = 4096  # per family and kind; 20 groups each -> 80k groups
UPCALL_BURST = 4096  # max upcalls read per wake-up before serving the parent again
MAX_HOOKS = 16  # hook processes running at once; more are refused (EAGAIN)
MRDISC_MIN_GAP = 0.2  # s between two advertisements on one interface (a hostile parent)

_ZERO12 = bytes(12)
_ZERO16 = bytes(16)
_ZERO32 = bytes(32)
_NZ = bytes([0] + [1] * 255)  # bytes.translate table: non-zero -> 1


class _Stop(Exception):
    """Raised from the SIGTERM handler to leave the loop and clean up."""


def _on_term(signum: int, frame: object) -> NoReturn:
    raise _Stop


class Bad(Exception):
    """An op that fails validation (answered EINVAL and logged)."""


class Unsupported(Exception):
    """An op for a family whose multicast routing socket we do not have (EAFNOSUPPORT)."""


def _ntop(family: int, raw: bytes) -> str:
    try:
        if family == 4:
            return socket.inet_ntop(socket.AF_INET, raw[:4])
        return socket.inet_ntop(socket.AF_INET6, raw)
    except (OSError, ValueError):
        return raw.hex()


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


class Child:
    """State and loop of the privileged helper (see the module docstring)."""

    def __init__(
        self,
        ipc: socket.socket,
        mr4: socket.socket | None,
        mr6: socket.socket | None,
        pidfile: str,
        ctlsock: str,
        loglevel: int,
        hook: str = "",
    ) -> None:
        self.ipc = ipc
        self.hook = hook
        self.hook_procs: dict[int, str] = {}  # pid -> action
        self.mr = {4: mr4, 6: mr6}
        self.pidfile = pidfile
        self.ctlsock = ctlsock
        self.loglevel = loglevel
        self.vifs: dict[int, dict[int, int]] = {4: {}, 6: {}}  # family -> vif -> ifindex
        self.vifmask = {4: 0, 6: 0}  # bit 8*vif set for each VIF we added
        self.joins = {4: JoinPool(4), 6: JoinPool(6)}
        self.pid_written = False
        self.parent_gone = False
        self._ifset_cache: dict[bytes, int] = {}
        self._bad_upcalls = 0
        self._bad_upcall_t = 0.0
        self._mrdisc_sent: dict[tuple[int, int], float] = {}  # (family, ifindex) -> when

    # --- logging -------------------------------------------------------------
    def log(self, level: int, text: str) -> None:
        if level > self.loglevel:
            return
        if not self.parent_gone:
            try:
                self.ipc.send(proto.encode_log(level, text))
                return
            except OSError:
                self.parent_gone = True
        try:
            sys.stderr.write(f"{TITLE}: {text}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    def send(self, msg: bytes) -> None:
        try:
            self.ipc.send(msg)
        except OSError:
            self.parent_gone = True

    # --- the loop ------------------------------------------------------------
    def run(self) -> None:
        poller = select.poll()
        poller.register(self.ipc.fileno(), select.POLLIN)
        by_fd: dict[int, tuple[int, socket.socket]] = {}
        for fam, s in self.mr.items():
            if s is not None:
                s.setblocking(False)
                poller.register(s.fileno(), select.POLLIN)
                by_fd[s.fileno()] = (fam, s)
        ipc_fd = self.ipc.fileno()
        while not self.parent_gone:
            events = poller.poll(500 if self.hook_procs else None)
            if self.hook_procs:
                self.reap_hooks()
            for fd, ev in events:
                if fd == ipc_fd:
                    self.serve_parent(ev)
                elif fd in by_fd:
                    fam, s = by_fd[fd]
                    self.drain_upcalls(fam, s)
                if self.parent_gone:
                    break

    def serve_parent(self, ev: int) -> None:
        try:
            data, _anc, flags, _addr = self.ipc.recvmsg(proto.MAX_MESSAGE + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.parent_gone = True
            return
        if not data:
            if ev & (select.POLLHUP | select.POLLERR) or self._hung_up():
                self.parent_gone = True
            else:
                self.log(proto.LOG_WARNING, "refused an empty message")
            return
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            self.refuse(data, "oversized message or unexpected ancillary data")
            return
        try:
            msg = proto.decode(data)
        except proto.ProtoError as e:
            self.refuse(data, str(e))
            return
        if isinstance(msg, proto.Ops):
            self.send(proto.encode_reply(msg.seq, self.execute(msg.ops)))
        elif isinstance(msg, proto.Pidfile):
            self.send(proto.encode_reply(msg.seq, [self.write_pidfile()]))
        elif isinstance(msg, proto.LogLevel):
            self.loglevel = msg.level
            self.send(proto.encode_reply(msg.seq, [0]))
        else:
            self.refuse(data, f"message type {type(msg).__name__} is not for the helper")

    def _hung_up(self) -> bool:
        p = select.poll()
        p.register(self.ipc.fileno(), select.POLLIN)
        return any(ev & (select.POLLHUP | select.POLLERR) for _fd, ev in p.poll(0))

    def refuse(self, data: bytes, why: str) -> None:
        """Log a malformed message; answer it if it can be attributed to a request."""
        self.log(proto.LOG_ERR, f"refused a malformed message ({len(data)} bytes): {why}")
        hdr = proto.peek_header(data)
        if hdr is None:
            return
        mtype, seq, count = hdr
        if mtype == proto.T_OPS and 1 <= count <= proto.MAX_BATCH:
            self.send(proto.encode_reply(seq, [errno.EPROTO] * count))
        elif mtype in (proto.T_PIDFILE, proto.T_LOGLEVEL):
            self.send(proto.encode_reply(seq, [errno.EPROTO]))

    # --- upcalls ---------------------------------------------------------------
    def drain_upcalls(self, fam: int, s: socket.socket) -> None:
        decode = kernel.decode_igmpmsg if fam == 4 else kernel.decode_mrt6msg
        for _ in range(UPCALL_BURST):
            try:
                data = s.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.log(proto.LOG_WARNING, f"IPv{fam} mroute socket: {e.strerror}")
                return
            try:
                up = decode(data)
            except kernel.UpcallError as e:
                self._bad_upcall(fam, str(e))
                continue
            self.send(proto.encode_upcall_raw(fam, up.msgtype, up.vif, up.source, up.group))
            if self.parent_gone:
                return

    def _bad_upcall(self, fam: int, why: str) -> None:
        # Rate-limited: a flood of junk must not become a flood of log lines.
        self._bad_upcalls += 1
        now = time.monotonic()
        if now - self._bad_upcall_t >= 10.0:
            self.log(
                proto.LOG_WARNING,
                f"dropped {self._bad_upcalls} bad IPv{fam} upcall(s), last: {why}",
            )
            self._bad_upcalls = 0
            self._bad_upcall_t = now

    # --- ops -----------------------------------------------------------------
    def execute(self, ops: tuple[proto.OpRecord, ...]) -> list[int]:
        out = []
        for i, op in enumerate(ops):
            try:
                out.append(self.execute_one(op))
            except Unsupported:
                out.append(errno.EAFNOSUPPORT)  # IPv4-only mode: not worth a log line
            except Bad as e:
                name = proto.KIND_NAMES.get(op.kind, f"kind {op.kind}")
                self.log(proto.LOG_ERR, f"refused op #{i} ({name}): {e}")
                out.append(errno.EINVAL)
        return out

    def execute_one(self, op: proto.OpRecord) -> int:
        kind, fam = op.kind, op.family
        if fam == 4:
            if op.source[4:] != _ZERO12 or op.group[4:] != _ZERO12:
                raise Bad("IPv4 address with non-zero padding")
        elif fam != 6:
            raise Bad(f"unknown family {fam}")
        if kind == proto.ADD_MFC or kind == proto.DEL_MFC:
            return self.mfc(op, kind == proto.ADD_MFC)
        if kind == proto.ADD_VIF or kind == proto.DEL_VIF:
            return self.vif(op, kind == proto.ADD_VIF)
        if kind == proto.JOIN or kind == proto.LEAVE:
            return self.join(op, kind == proto.JOIN)
        if kind == proto.MRDISC:
            return self.mrdisc(op)
        if kind == proto.HOOK:
            return self.run_hook(op)
        raise Bad("unknown op kind")

    def _mroute(self, fam: int) -> socket.socket:
        s = self.mr[fam]
        if s is None:
            raise Unsupported
        return s

    @staticmethod
    def _check_sg(fam: int, source: bytes, group: bytes) -> None:
        if fam == 4:
            if group[0] & 0xF0 != 0xE0:
                raise Bad(f"group {_ntop(4, group)} is not multicast")
            if source[0] & 0xF0 == 0xE0:
                raise Bad(f"source {_ntop(4, source)} is multicast")
        else:
            if group[0] != 0xFF:
                raise Bad(f"group {_ntop(6, group)} is not multicast")
            if source[0] == 0xFF:
                raise Bad(f"source {_ntop(6, source)} is multicast")

    @staticmethod
    def _ifindex_exists(ifindex: int) -> bool:
        try:
            socket.if_indextoname(ifindex)
        except (OSError, OverflowError, ValueError):
            return False
        return True

    def vif(self, op: proto.OpRecord, add: bool) -> int:
        fam, vif, ifindex = op.family, op.vif, op.ifindex
        s = self._mroute(fam)
        if vif >= kernel.MAXVIFS:
            raise Bad(f"VIF {vif} out of range")
        if ifindex <= 0 or (fam == 6 and ifindex > 0xFFFF):
            raise Bad(f"ifindex {ifindex} out of range")
        if op.source != _ZERO16 or op.group != _ZERO16 or op.ttls != _ZERO32:
            raise Bad("address or ttl fields set on a VIF op")
        table = self.vifs[fam]
        if add:
            if not self._ifindex_exists(ifindex):
                raise Bad(f"no interface with ifindex {ifindex}")
            if fam == 4:
                opt, level, arg = (
                    kernel.MRT_ADD_VIF,
                    socket.IPPROTO_IP,
                    kernel.vifctl(vif, op.threshold, ifindex),
                )
            else:
                opt, level, arg = (
                    kernel.MRT6_ADD_MIF,
                    socket.IPPROTO_IPV6,
                    kernel.mif6ctl(vif, op.threshold, ifindex),
                )
        else:
            if op.threshold != 0:
                raise Bad("threshold set on DEL_VIF")
            known = table.get(vif)
            if known is not None and known != ifindex:
                raise Bad(f"VIF {vif} is ifindex {known}, not {ifindex}")
            if fam == 4:
                opt, level, arg = (
                    kernel.MRT_DEL_VIF,
                    socket.IPPROTO_IP,
                    kernel.vifctl(vif, 0, ifindex),
                )
            else:
                opt, level, arg = (
                    kernel.MRT6_DEL_MIF,
                    socket.IPPROTO_IPV6,
                    vif.to_bytes(2, sys.byteorder),
                )
        try:
            s.setsockopt(level, opt, arg)
            err = 0
        except OSError as e:
            err = e.errno or errno.EIO
        if add and err == 0:
            table[vif] = ifindex
        elif not add and err in (0, errno.EADDRNOTAVAIL):
            table.pop(vif, None)
        self.vifmask[fam] = sum(1 << (8 * v) for v in table)
        return err

    def _ifset(self, nz: bytes) -> int:
        ifset = self._ifset_cache.get(nz)
        if ifset is None:
            ifset = 0
            for i, b in enumerate(nz):
                if b:
                    ifset |= 1 << i
            if len(self._ifset_cache) < 4096:
                self._ifset_cache[nz] = ifset
        return ifset

    def mfc(self, op: proto.OpRecord, add: bool) -> int:
        fam, parent, source, group, ttls = op.family, op.vif, op.source, op.group, op.ttls
        s = self._mroute(fam)
        if parent >= kernel.MAXVIFS:
            raise Bad(f"parent VIF {parent} out of range")
        if op.ifindex != 0 or op.threshold != 0:
            raise Bad("ifindex/threshold set on an MFC op")
        self._check_sg(fam, source, group)
        if add:
            mask = self.vifmask[fam]
            if not (mask >> (8 * parent)) & 1:
                raise Bad(f"parent VIF {parent} does not exist")
            nz = ttls.translate(_NZ)
            if int.from_bytes(nz, "little") & ~mask:
                raise Bad("outbound VIF that does not exist")
        elif ttls != _ZERO32:
            raise Bad("ttls set on DEL_MFC")
        try:
            if fam == 4:
                opt = kernel.MRT_ADD_MFC if add else kernel.MRT_DEL_MFC
                s.setsockopt(
                    socket.IPPROTO_IP, opt, kernel.mfcctl(source[:4], group[:4], parent, ttls)
                )
            else:
                opt = kernel.MRT6_ADD_MFC if add else kernel.MRT6_DEL_MFC
                ifset = self._ifset(ttls.translate(_NZ)) if add else 0
                s.setsockopt(socket.IPPROTO_IPV6, opt, kernel.mf6cctl(source, group, parent, ifset))
        except OSError as e:
            return e.errno or errno.EIO
        return 0

    def join(self, op: proto.OpRecord, add: bool) -> int:
        fam, ifindex, source, group = op.family, op.ifindex, op.source, op.group
        if op.vif != 0 or op.threshold != 0 or op.ttls != _ZERO32:
            raise Bad("vif/threshold/ttl fields set on a join op")
        if ifindex <= 0:
            raise Bad(f"ifindex {ifindex} out of range")
        self._check_sg(fam, source, group)
        alen = 4 if fam == 4 else 16
        src: bytes | None = None if source == _ZERO16 else source[:alen]
        pool = self.joins[fam]
        if add:
            if not self._ifindex_exists(ifindex):
                raise Bad(f"no interface with ifindex {ifindex}")
            return pool.join(ifindex, group[:alen], src)
        return pool.leave(ifindex, group[:alen], src)

    def mrdisc(self, op: proto.OpRecord) -> int:
        """Send one Multicast Router Advertisement out of a VIF's interface."""
        fam, ifindex, interval = op.family, op.ifindex, op.threshold
        s = self._mroute(fam)
        if op.vif != 0 or op.source != _ZERO16 or op.group != _ZERO16 or op.ttls != _ZERO32:
            raise Bad("vif/address/ttl fields set on an MRDISC op")
        if not mrdisc.MIN_INTERVAL <= interval <= mrdisc.MAX_INTERVAL:
            raise Bad(f"advertisement interval {interval} out of range")
        if ifindex <= 0 or ifindex not in self.vifs[fam].values():
            raise Bad(f"ifindex {ifindex} has no {'VIF' if fam == 4 else 'MIF'}")
        if not self._ifindex_exists(ifindex):
            return errno.ENODEV  # gone since the parent looked: a race, not an attack
        now = time.monotonic()
        key = (fam, ifindex)
        if now - self._mrdisc_sent.get(key, -1e9) < MRDISC_MIN_GAP:
            return errno.EBUSY
        if fam == 4:
            data, anc = mrdisc.advert4(interval), mrdisc.cmsgs4(ifindex)
            dest: tuple[str, int] | tuple[str, int, int, int] = (mrdisc.GROUP4, 0)
        else:
            data, anc = mrdisc.advert6(interval), mrdisc.cmsgs6(ifindex)
            dest = (mrdisc.GROUP6, 0, 0, ifindex)
        try:
            s.sendmsg([data], anc, 0, dest)
        except OSError as e:
            return e.errno or errno.EIO
        if len(self._mrdisc_sent) >= 4 * kernel.MAXVIFS:
            self._mrdisc_sent.clear()
        self._mrdisc_sent[key] = now
        return 0

    # --- the -e hook ------------------------------------------------------------
    def run_hook(self, op: proto.OpRecord) -> int:
        """Start the `-e` command with `reload`, or `install` and source/group."""
        fam, action = op.family, op.threshold
        if op.vif != 0 or op.ifindex != 0 or op.ttls != _ZERO32:
            raise Bad("vif/ifindex/ttl fields set on a HOOK op")
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "LISTEN_FDS")}
        if action == proto.HOOK_RELOAD:
            if op.source != _ZERO16 or op.group != _ZERO16:
                raise Bad("addresses set on a reload HOOK op")
            args = "reload"
        elif action == proto.HOOK_INSTALL:
            self._check_sg(fam, op.source, op.group)
            if op.source == _ZERO16:
                raise Bad("install HOOK op without a source")
            env["source"] = _ntop(fam, op.source)
            env["group"] = _ntop(fam, op.group)
            args = "install"
        else:
            raise Bad(f"unknown hook action {action}")
        if not self.hook:
            return errno.ENOENT
        if len(self.hook_procs) >= MAX_HOOKS:
            return errno.EAGAIN
        try:
            _hook_caps(True)
            try:
                pid = os.posix_spawnp(
                    self.hook,
                    [self.hook, args],
                    env,
                    setsid=True,
                    file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
                )
            finally:
                _hook_caps(False)
        except OSError as e:
            return e.errno or errno.EIO
        self.hook_procs[pid] = args
        return 0

    def reap_hooks(self) -> None:
        for pid, args in list(self.hook_procs.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == 0:
                continue
            del self.hook_procs[pid]
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                self.log(proto.LOG_WARNING, f"hook {self.hook} {args} exited with status {code}")

    # --- pid file and exit -----------------------------------------------------
    def write_pidfile(self) -> int:
        """Write the parent's pid into the pid file the first time, touch it after."""
        path = self.pidfile
        if not path:
            return errno.ENOENT
        try:
            if self.pid_written and os.path.exists(path):
                os.utime(path)
                return 0
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(path, flags, 0o644)
            try:
                os.write(fd, f"{os.getppid()}\n".encode())
            finally:
                os.close(fd)
            self.pid_written = True
            return 0
        except OSError as e:
            self.log(proto.LOG_ERR, f"cannot write PID file {path}: {e.strerror}")
            return e.errno or errno.EIO

    def close(self) -> None:
        for fam in (4, 6):
            self.joins[fam].close()
            s = self.mr[fam]
            if s is not None:
                s.close()  # the kernel drops this socket's VIFs and MFC entries
                self.mr[fam] = None
        for path in (self.pidfile, self.ctlsock):
            if path:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    self.log(proto.LOG_ERR, f"cannot remove {path}: {e.strerror}")
        with contextlib.suppress(OSError):
            self.ipc.close()


# --- start-up ---------------------------------------------------------------------


def _status() -> dict[str, str]:
    out: dict[str, str] = {}
    with open("/proc/self/status", encoding="ascii", errors="replace") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


_libc: Any = None


def _hook_caps(on: bool) -> None:
    """Around spawning the hook: our two capabilities as ambient ones, the only
    way uid 0 keeps capabilities across exec under the locked SECBIT_NOROOT."""
    global _libc
    if _libc is None:
        import ctypes  # only when a hook runs: keeps the helper small otherwise

        _libc = ctypes.CDLL(None, use_errno=True)
    for cap in KEEP_CAPS:
        setattr(prctl.cap_inheritable, "net_admin" if cap == CAP_NET_ADMIN else "net_raw", on)
    if on:
        for cap in KEEP_CAPS:
            if _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0:
                raise OSError(errno.EPERM, "cannot raise ambient capabilities for the hook")
    else:
        _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)


def drop_privileges() -> list[str]:
    """Keep exactly CAP_NET_ADMIN + CAP_NET_RAW; no-new-privs.  Returns warnings.

    Raises OSError if the effective/permitted sets cannot be reduced.
    """
    warnings: list[str] = []
    prctl.set_no_new_privs(1)
    try:
        # uid 0 must not regain capabilities on exec; lock it.
        bits = (
            0x01 | 0x02 | 0x04 | 0x08 | 0x20
        )  # NOROOT(+lock), NO_SETUID_FIXUP(+lock), KEEP_CAPS_LOCKED
        prctl.set_securebits(bits)
    except OSError as e:
        warnings.append(f"cannot lock securebits: {e.strerror}")
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = 63
    bset_failed = 0
    for cap in range(last + 1):
        if cap in KEEP_CAPS:
            continue
        try:
            prctl.capbset_drop(cap)
        except (OSError, ValueError):
            bset_failed += 1
    if bset_failed:
        warnings.append(f"could not drop {bset_failed} capabilities from the bounding set")
    others = [c for c in prctl.ALL_CAPS if c not in KEEP_CAPS]
    ep = [prctl.CAP_EFFECTIVE, prctl.CAP_PERMITTED]
    prctl.set_caps(
        (list(KEEP_CAPS), ep, True),
        (others, ep, False),
        (list(prctl.ALL_CAPS), prctl.CAP_INHERITABLE, False),
    )
    st = _status()
    eff, prm = int(st.get("CapEff", "0"), 16), int(st.get("CapPrm", "0"), 16)
    inh, amb = int(st.get("CapInh", "0"), 16), int(st.get("CapAmb", "0"), 16)
    if eff & ~KEEP_MASK or prm & ~KEEP_MASK or inh or amb:
        raise OSError(errno.EPERM, f"capabilities still held: eff={eff:#x} prm={prm:#x}")
    if st.get("NoNewPrivs") != "1":
        raise OSError(errno.EPERM, "no-new-privs not set")
    return warnings


def _close_other_fds(keep: set[int]) -> None:
    lo = 3
    for fd in sorted(k for k in keep if k >= 3):
        if fd > lo:
            os.closerange(lo, fd)
        lo = fd + 1
    os.closerange(lo, 1 << 20)


def _onoff(s: socket.socket | None) -> str:
    return "off" if s is None else "on"


def _usage(msg: str) -> int:
    sys.stderr.write(f"{TITLE}: {msg}\n")
    return 64


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    opts: dict[str, str] = {}
    it = iter(args)
    for a in it:
        if a not in ("--ipc", "--v4", "--v6", "--pidfile", "--ctlsock", "--loglevel", "--hook"):
            return _usage(f"unknown argument {a!r}")
        v = next(it, None)
        if v is None:
            return _usage(f"{a} needs a value")
        opts[a[2:]] = v
    try:
        ipc_fd = int(opts["ipc"])
        fds = {k: int(opts.get(k, "-1")) for k in ("v4", "v6")}
    except (KeyError, ValueError):
        return _usage("--ipc FD is required; --v4/--v6 take an fd")
    loglevel = LEVELS.get(opts.get("loglevel", "notice"), 5)

    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and tells us (EOF)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reload is the parent's business
    prctl.set_pdeathsig(signal.SIGTERM)
    try:
        prctl.set_name(NAME)
        prctl.set_proctitle(TITLE)
    except (OSError, ValueError):
        pass
    keep = {0, 1, 2, ipc_fd} | {fd for fd in fds.values() if fd >= 0}
    _close_other_fds(keep)
    for fd in keep - {0, 1, 2}:  # a hook must never inherit the routing sockets
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, False)
    with contextlib.suppress(OSError):
        os.chdir("/")

    try:
        ipc = socket.socket(fileno=ipc_fd)
        mr4 = socket.socket(fileno=fds["v4"]) if fds["v4"] >= 0 else None
        mr6 = socket.socket(fileno=fds["v6"]) if fds["v6"] >= 0 else None
    except OSError as e:
        return _usage(f"bad inherited fd: {e.strerror}")
    ipc.setblocking(True)
    child = Child(
        ipc,
        mr4,
        mr6,
        opts.get("pidfile", ""),
        opts.get("ctlsock", ""),
        loglevel,
        opts.get("hook", ""),
    )
    try:
        try:
            for w in drop_privileges():
                child.log(proto.LOG_NOTICE, w)
        except OSError as e:
            child.log(proto.LOG_ERR, f"cannot drop privileges: {e.strerror or e}")
            return 77
        child.log(
            proto.LOG_DEBUG,
            f"privileged helper ready (IPv4 {_onoff(mr4)}, IPv6 {_onoff(mr6)})",
        )
        child.run()
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
