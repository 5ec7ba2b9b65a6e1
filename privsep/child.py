"""The privileged helper: the only part of smcrouted that keeps privileges.

Run as `python -I -S -c BOOT ... --ipc FD [--v4 FD] [--v6 FD] [--s4 FD] [--s6 FD]
[--hook CMD]` by `smcroute.privsep.client.start_helper`, with its end of the
socketpair, the multicast routing sockets and the Solicitation sockets inherited.

Owns the multicast routing sockets and the group memberships, and the two
duties that need its capabilities besides (see the README, "The privileged
helper"): the `-e` hook (`hook`) and RFC 4286 advertisements (`mrdisc`).
It is born with only CAP_NET_ADMIN + CAP_NET_RAW (the daemon spawns it
through `caps.exec_with`: it never handles capabilities itself), closes
every fd it does not need, then serves one poll loop: a kernel upcall becomes an UPCALL, a
valid Solicitation a SOLICIT; every OPS record goes through
`validate.check`, the one judge of what a record means, and the command it
yields is dispatched here to its system call; the answer is one errno per
record.  Log lines go to the daemon as LOG messages, in order
with the replies.  When the daemon goes away (EOF, or SIGTERM from
PR_SET_PDEATHSIG) it closes everything, so the kernel removes its VIFs,
routes and memberships, and exits 0.

Must not: import anything beyond the stdlib, `prctl` and its own privsep
modules; forward anything read from the wire but validated fixed-format
events; execute anything `validate` did not return; die on bad input.
"""

from __future__ import annotations

import _signal
import _socket
import errno
import gc
import os
import select
import sys
import syslog
import time

import prctl  # type: ignore[import-untyped, unused-ignore]

from . import kernel, mrdisc, validate, wire
from .hook import Hooks
from .joins import JoinPool

TITLE = "smcrouted: privileged helper"
NAME = "smcroute-helper"  # comm, 15 bytes at most
REPORT_HOLD = 0.02  # s an INSTALLED report may wait to go out with later ones
REPORT_BATCH = 64  # held reports that go out at once
ADVERT_MIN_GAP = 0.2  # s between two advertisements out of one interface
SOLICIT_MIN_GAP = 0.2  # s between two Solicitation events from one interface
_LEVEL = {4: _socket.IPPROTO_IP, 6: _socket.IPPROTO_IPV6}


# Neither typing nor contextlib nor the socket/signal wrappers: each costs the
# helper's RSS a few hundred KiB (see wire.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Sock = _socket.socket
    Report = tuple[int, int, int]  # family, VIF, epoch << 16 | rule
    # mask, net (as validate.Rule), level, option, value parts, report
    Rule = tuple[int, int, int, int, tuple[bytes, ...], Report]


def _first(sg: int, rules: list[Rule]) -> Rule | None:
    """The first rule whose prefixes hold `sg` (source and group as one integer)."""
    return next((rule for rule in rules if sg & rule[0] == rule[1]), None)


def _quiet(fn: Callable[..., object], *args: object) -> None:
    """`fn(*args)`, ignoring OSError/ValueError (contextlib.suppress, without contextlib)."""
    try:
        fn(*args)
    except (OSError, ValueError):
        pass


class Helper:
    """State and loop of the privileged helper (see the module docstring)."""

    def __init__(self, ipc: Sock, mr: dict[int, Sock | None], hook: str, sol: dict[int, Sock]):
        self.ipc, self.mr, self.solicit = ipc, mr, sol  # sol: the Solicitation sockets
        self.hooks = Hooks(hook, lambda text: self.log(syslog.LOG_WARNING, text))
        self.vifs: dict[int, dict[int, int]] = {4: {}, 6: {}}  # vif -> ifindex, ours
        self.joins = {4: JoinPool(4), 6: JoinPool(6)}
        self.parent_gone = False
        self.last: dict[tuple[str, int, int], float] = {}  # rate limits: last event per key
        self.dropped, self.dropped_at = 0, 0.0  # bad kernel messages since the last log line
        # the daemon's rule table (see wire, UPCALL INSTALLED), its epoch and budget; by
        # the raw header of a NOCACHE on the rule's VIF (kernel.nocache_header): its
        # leading rules for one group and any source by group, and all its rules in order
        self.rules, self.epoch, self.budget = 0, 0, 0
        self.table: dict[bytes, tuple[dict[bytes, Rule], list[Rule]]] = {}
        # INSTALLED reports not sent yet (no write waits for them), until `due`
        self.held: list[tuple[Report, bytes, bytes]] = []
        self.due = 0.0

    # --- talking to the daemon ---------------------------------------------------
    def send(self, msg: bytes) -> None:
        if self.held:  # in order
            self.flush()
        try:
            self.ipc.send(msg)
        except OSError:
            self.parent_gone = True

    def flush(self) -> None:
        """Send the held INSTALLED reports."""
        held, self.held = self.held, []
        for (fam, vif, seq), src, grp in held:
            self.send(wire.encode_upcall(fam, wire.INSTALLED, vif, src, grp, seq))

    def log(self, level: int, text: str) -> None:
        """To the daemon's log (it filters by level); to stderr once it is gone."""
        if not self.parent_gone:
            self.send(wire.encode_log(level, text))
        if self.parent_gone:
            _quiet(sys.stderr.write, f"{TITLE}: {text}\n")
            _quiet(sys.stderr.flush)

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.ipc.fileno(), select.POLLIN)
        socks = {s.fileno(): (f, s, kernel.UPCALL_AT[f]) for f, s in self.mr.items() if s}
        sols = {s.fileno(): (f, s) for f, s in self.solicit.items()}
        for s in filter(None, [*self.mr.values(), *self.solicit.values()]):
            s.setblocking(False)
            poller.register(s.fileno(), select.POLLIN)
        poll, monotonic, read = poller.poll, time.monotonic, self.read_kernel
        while not self.parent_gone:
            wait = 500.0 if self.hooks.running else None
            if self.held:  # the first report of a batch waits REPORT_HOLD at most
                left = (self.due - monotonic()) * 1000
                if left <= 0:
                    self.flush()
                    continue
                wait = left if wait is None else min(wait, left)
            # after a sleep each operation costs ~1 us (cold caches): the upcall's go first
            for fd, ev in poll(wait):
                sock = socks.get(fd)
                if sock is not None:
                    read(*sock)
                elif fd in sols:
                    self.solicitation(*sols[fd])
                else:
                    self.serve_parent(ev)
                if self.parent_gone:
                    break
            if self.hooks.running:
                self.hooks.reap()

    def serve_parent(self, ev: int) -> None:
        try:
            data, _anc, flags, _addr = self.ipc.recvmsg(wire.MAX_MESSAGE + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.parent_gone = True
            return
        if not data and ev & (select.POLLHUP | select.POLLERR):  # EOF, else an empty message
            self.parent_gone = True
        elif flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):
            self.refuse(data, "oversized message or unexpected ancillary data")
        else:
            try:
                msg = wire.decode_request(data)
            except wire.ProtoError as e:
                self.refuse(data, str(e))
                return
            errs = [self.execute(i, r) for i, r in enumerate(msg.records)]
            self.send(wire.encode_reply(msg.seq, errs))

    def refuse(self, data: bytes, why: str) -> None:
        """Log a malformed message; answer it if it can be attributed to a request."""
        self.log(syslog.LOG_WARNING, f"refused a malformed message ({len(data)} bytes): {why}")
        mtype, seq, count = wire.peek_header(data) or (0, 0, 0)
        if mtype == wire.T_OPS and 1 <= count <= wire.MAX_BATCH:
            self.send(wire.encode_reply(seq, [errno.EPROTO] * count))

    def _allow(self, key: tuple[str, int, int], gap: float) -> bool:
        """Rate limit: True at most once per `gap` seconds for `key`."""
        now = time.monotonic()
        if now - self.last.get(key, -1e9) < gap:
            return False
        if len(self.last) >= 8 * kernel.MAXVIFS:
            self.last.clear()
        self.last[key] = now
        return True

    # --- from the kernel ---------------------------------------------------------
    def read_kernel(self, fam: int, s: _socket.socket, at: tuple[int, ...]) -> None:
        """One upcall (poll tells of the next; the socket lets nothing else
        through, and a plain recv is the least work).  A NOCACHE a rule
        matches: its entry before anything else (the raw bytes matched: see
        `self.table`)."""
        try:
            data = s.recv(256)  # upcalls are 28 (IPv4) and 80 bytes (IPv6)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.log(syslog.LOG_WARNING, f"IPv{fam} mroute socket: {e.strerror}")
            return
        h, a, g, end, top, mcast = at  # kernel.UPCALL_AT
        rules = self.table.get(data[h : h + 4])
        if rules and len(data) >= end and data[a] & top != mcast and self.budget > 0:
            src, grp = data[a:g], data[g:end]  # the group: multicast, as the rule's prefix
            rule = rules[0].get(grp) or _first(int.from_bytes(src + grp), rules[1])
            if rule is not None:
                _mask, _net, level, option, (p, q, r), report = rule
                try:
                    s.setsockopt(level, option, p + src + q + grp + r)
                except OSError:
                    pass  # left to the daemon
                else:
                    self.budget -= 1
                    self.held.append((report, src, grp))
                    if len(self.held) == 1:
                        self.due = time.monotonic() + REPORT_HOLD
                    elif len(self.held) >= REPORT_BATCH:
                        self.flush()
                    return
        try:
            msgtype, vif, src, grp = kernel.decode_upcall(fam, data)
        except kernel.UpcallError as e:
            self.drop(fam, str(e))
            return
        self.send(wire.encode_upcall(fam, msgtype, vif, src, grp))

    def solicitation(self, fam: int, s: _socket.socket) -> None:
        try:  # a longer packet is cut, then refused
            data, anc, _flags, addr = s.recvmsg(256, 256)
        except OSError:
            return
        src = b""
        if fam == 6 and isinstance(addr, tuple):
            try:
                src = _socket.inet_pton(_socket.AF_INET6, str(addr[0]).partition("%")[0])
            except (OSError, ValueError, TypeError):
                pass
        ifindex = mrdisc.solicited(fam, data, anc, src)
        if ifindex is None:
            self.drop(fam, "not a valid Multicast Router Solicitation")
        elif self._allow(("solicit", fam, ifindex), SOLICIT_MIN_GAP):
            self.send(wire.encode_solicit(fam, ifindex))

    def drop(self, fam: int, why: str) -> None:
        """Count what the kernel handed us that is not ours to forward; log every 10 s."""
        self.dropped += 1
        now = time.monotonic()
        if now - self.dropped_at >= 10.0:
            self.log(syslog.LOG_WARNING, f"dropped {self.dropped} bad IPv{fam} message(s): {why}")
            self.dropped, self.dropped_at = 0, now

    # --- the records -------------------------------------------------------------
    def execute(self, i: int, record: wire.Record) -> int:
        cmd = validate.check(record)
        if isinstance(cmd, validate.Refusal):
            name = type(record).__name__
            self.log(syslog.LOG_WARNING, f"refused record #{i} ({name}): {cmd.why}")
            return errno.EINVAL
        if isinstance(cmd, validate.Hook):
            return self.hooks.start(cmd.action, cmd.env)
        if isinstance(cmd, wire.Rules):
            self.rules, self.epoch, self.budget, self.table = 0, cmd.epoch, cmd.budget, {}
            return 0
        s = self.mr.get(cmd.family)
        if s is None:
            return errno.EAFNOSUPPORT  # IPv4-only mode
        if isinstance(cmd, validate.Rule):
            if self.rules >= wire.MAX_RULES:
                return errno.ENOSPC
            report = (cmd.family, cmd.parent, self.epoch << 16 | self.rules)
            rule = (cmd.mask, cmd.net, _LEVEL[cmd.family], cmd.option, cmd.parts, report)
            key, n = kernel.nocache_header(cmd.family, cmd.parent), 4 if cmd.family == 4 else 16
            exact, rules = self.table.setdefault(key, ({}, []))
            if cmd.mask == (1 << 8 * n) - 1 and len(exact) == len(rules):  # one group, any source
                exact.setdefault(cmd.net.to_bytes(n), rule)
            rules.append(rule)
            self.rules += 1
            return 0
        if isinstance(cmd, validate.Route):
            return kernel.errno_of(s.setsockopt, _LEVEL[cmd.family], cmd.option, cmd.value)
        if isinstance(cmd, validate.Vif):
            err = kernel.errno_of(s.setsockopt, _LEVEL[cmd.family], cmd.option, cmd.value)
            if cmd.add and not err:
                self.vifs[cmd.family][cmd.vif] = cmd.ifindex
            elif not cmd.add and err in (0, errno.EADDRNOTAVAIL):
                self.vifs[cmd.family].pop(cmd.vif, None)
            return err
        if isinstance(cmd, validate.Membership):
            pool = self.joins[cmd.family]
            return (pool.join if cmd.add else pool.leave)(cmd.ifindex, cmd.group, cmd.source)
        return self.advertise(s, cmd)

    def advertise(self, s: _socket.socket, cmd: validate.Advert) -> int:
        """One Multicast Router Advertisement out of an interface with one of our VIFs."""
        fam, ifindex = cmd.family, cmd.ifindex
        if ifindex not in self.vifs[fam].values():
            return errno.ENXIO
        if not self._allow(("advert", fam, ifindex), ADVERT_MIN_GAP):
            return errno.EBUSY
        dest = (mrdisc.GROUP4, 0) if fam == 4 else (mrdisc.GROUP6, 0, 0, ifindex)
        data, anc = mrdisc.advert(fam, cmd.interval), mrdisc.cmsgs(fam, ifindex)
        return kernel.errno_of(s.sendmsg, [data], anc, 0, dest)

    # --- exit ------------------------------------------------------------------
    def close(self) -> None:
        for fam in (4, 6):
            self.joins[fam].close()
            s = self.mr.get(fam)
            if s is not None:
                s.close()  # the kernel drops this socket's VIFs and MFC entries
                self.mr[fam] = None
        _quiet(self.ipc.close)


# --- start-up ---------------------------------------------------------------------


def _usage(msg: str) -> int:
    sys.stderr.write(f"{TITLE}: {msg}\n")
    return 64


def main(argv: list[str]) -> int:
    opts = dict(zip(argv[::2], argv[1::2], strict=False))
    if len(argv) % 2 or not opts.keys() <= {"--ipc", "--v4", "--v6", "--s4", "--s6", "--hook"}:
        return _usage(f"bad arguments {argv!r} (--ipc FD [--v4/v6/s4/s6 FD] [--hook CMD])")
    try:
        fds = {k: int(opts.get(f"--{k}", "-1")) for k in ("ipc", "v4", "v6", "s4", "s6")}
        if fds["ipc"] < 0:
            raise ValueError
    except ValueError:
        return _usage("--ipc FD is required; --v4/--v6/--s4/--s6 take an fd")
    # SIGTERM (the daemon's death: PR_SET_PDEATHSIG) raises KeyboardInterrupt to
    # leave the loop and clean up.
    _signal.signal(_signal.SIGTERM, _signal.default_int_handler)
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # the daemon handles ^C and tells us (EOF)
    _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)  # reload is the daemon's business
    prctl.set_pdeathsig(_signal.SIGTERM)
    _quiet(prctl.set_name, NAME)
    _quiet(prctl.set_proctitle, TITLE)
    keep = sorted({0, 1, 2} | {fd for fd in fds.values() if fd >= 0})
    for lo, hi in zip(keep, [*keep[1:], 1 << 20], strict=True):
        os.closerange(lo + 1, hi)
    for fd in keep[3:]:  # a hook must never inherit the routing sockets
        _quiet(os.set_inheritable, fd, False)
    _quiet(os.chdir, "/")
    try:
        ipc = _socket.socket(fileno=fds["ipc"])
        mr = {f: _socket.socket(fileno=fds[f"v{f}"]) if fds[f"v{f}"] >= 0 else None for f in (4, 6)}
        sol = {f: _socket.socket(fileno=fds[f"s{f}"]) for f in (4, 6) if fds[f"s{f}"] >= 0}
    except OSError as e:
        return _usage(f"bad inherited fd: {e.strerror}")
    ipc.setblocking(True)
    helper = Helper(ipc, mr, opts.get("--hook", ""), sol)
    try:
        on = ", ".join(f"IPv{f} {'on' if s else 'off'}" for f, s in mr.items())
        helper.log(syslog.LOG_DEBUG, f"privileged helper ready ({on})")
        # What start-up made stays (no collection walks it again); the loop
        # makes no cycles, so collections are rare and only of its young objects.
        gc.freeze()
        gc.set_threshold(50_000)
        helper.run()
    except KeyboardInterrupt:
        pass
    finally:
        _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)
        helper.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
