"""The unprivileged daemon shell: one event loop around the pure engine.

Owns the `selectors` loop over the privileged helper's socket, route
netlink link events, the control server and its clients, signals (through a
wake-up socket) and timers (cache expiry, `-D`, RFC 4286 router
advertisements on `phyint ... mrdisc` interfaces).  It turns each input into
an engine call, sends the resulting operations to the helper in one batch,
feeds failures back to the engine and logs them with context.  It also
reads the counters for `show` (the documents are `smcroute.show`'s).

Must not: make routing decisions (the engine does), touch the kernel's
routing state (only the helper can), or block on a client or a hook.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import selectors
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from smcroute import helper_wire, logsetup, observe, readable, sdnotify
from smcroute.engine.core import Engine, EngineError, Link, describe
from smcroute.engine.mrdisc import LISTEN, Schedule
from smcroute.engine.ops import AddVif, Announce, DelVif, JoinGroup, LeaveGroup, Op, RunHook
from smcroute.ipc.codec import Request, Response
from smcroute.ipc.server import ControlServer
from smcroute.logsetup import log
from smcroute.model import Family, MGroup, MRoute
from smcroute.netlink import RTNLGRP_LINK, Netlink, NetlinkError, default_table
from smcroute.output import render
from smcroute.parser import ParseError, parse_command, parse_file
from smcroute.privsep.client import HelperClient, HelperGone
from smcroute.privsep.daemon_wire import Upcall
from smcroute.privsep.wire import ProtoError
from smcroute.show import Counters, render_routes
from smcroute.show import document as show_document
from smcroute.stats import (
    DEFAULT_INTERVAL,
    CountersView,
    Counts,
    Sampler,
    add_interface_stats,
    add_route_stats,
    link_names,
)

# Upcalls handled per round: under a flood each kernel write can cost a
# fraction of a millisecond, and the control socket is served between rounds.
UPCALL_ROUND = 64
EXIT_OK = 0
EXIT_SOFTWARE = 70
EX_CONFIG = 78


class Unreadable(Exception):
    """The configuration exists but the main process may not read it (start-up)."""


@dataclass
class Options:
    ident: str = "smcroute"
    conf: str = "/etc/smcroute.conf"
    pidfile: str = "/var/run/smcroute.pid"
    sockpath: str = "/var/run/smcroute.sock"
    table: int = 0
    loglevel: str = "notice"
    foreground: bool = False
    use_syslog: bool = False
    cache_timeout: int = 60
    startup_delay: int = 0
    hook: str | None = None
    mrdisc_interval: int = 20
    user: str | None = None
    group: str | None = None
    exit_after: float | None = None
    zero_loss: bool = False
    max_learned: int = 20000
    sample_interval: int = DEFAULT_INTERVAL
    metrics: str | None = None  # [ADDR:]PORT of the metrics endpoint
    metrics_routes: int = 1000


def vanished_interface(op: Op) -> str | None:
    """The name of the interface `op` was for, if that interface is gone now."""
    if not isinstance(op, AddVif | DelVif | JoinGroup | LeaveGroup | Announce):
        return None
    try:
        return None if socket.if_indextoname(op.ifindex) == op.ifname else op.ifname
    except OSError:
        return op.ifname


@contextlib.contextmanager
def bulk() -> Any:
    """No cyclic GC during bulk work: our state is acyclic, and gen-2 passes
    over 100,000 routes' objects made start-up and reload super-linear."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class Daemon:
    """The running daemon; `run()` returns the exit status."""

    def __init__(
        self,
        opts: Options,
        helper: HelperClient,
        ctl_sock: socket.socket,
        families: tuple[int, ...],
    ) -> None:
        self.opts = opts
        self.helper = helper
        self.families = families
        self.engine = Engine(
            families=tuple(f for f in (4, 6) if f in families),
            max_learned=opts.max_learned,
            zero_loss=opts.zero_loss,
        )
        self.events = Netlink(groups=1 << (RTNLGRP_LINK - 1))
        self.nl = Netlink()
        self.ctl_sock = ctl_sock
        self.server = ControlServer(ctl_sock, self.handle_request)
        self.sel = selectors.DefaultSelector()
        self.sig_r, self.sig_w = socket.socketpair()
        self.stopping = False
        self.status = EXIT_OK
        self.started = time.monotonic()
        self.next_expire = self.started + opts.cache_timeout if opts.cache_timeout else None
        self.mrdisc = Schedule()
        self.mrdisc_dirty = True  # which interfaces announce may have changed
        self.mrdisc_errs: dict[tuple[int, int], int] = {}  # last errno per (family, ifindex)
        self.mrdisc_warned: set[tuple[int, int]] = set()
        self.counts = Counts()
        self.sampler = Sampler(self.nl, self.families, opts.table, opts.sample_interval)
        self.metrics: Any = None  # smcroute.metrics.MetricsServer, with --metrics

    # -- start-up ------------------------------------------------------------

    def _install_signals(self) -> None:
        self.sig_r.setblocking(False)
        self.sig_w.setblocking(False)
        signal.set_wakeup_fd(self.sig_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda _s, _f: None)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def start(self) -> None:
        self._install_signals()
        self.rescan_links()
        t0 = time.monotonic()
        config, problems = parse_file(self.opts.conf)
        t1 = time.monotonic()
        unreadable = readable.denied(problems)
        if unreadable:
            # No silent empty (or half) router: the original reads as root.
            me = readable.user_name(os.getuid())
            for path in unreadable:
                log.error(readable.explain(path, me))
            raise Unreadable(f"cannot read the configuration {self.opts.conf}: exiting")
        try:
            os.stat(self.opts.conf)
            missing = False
        except FileNotFoundError:
            missing = True
        except OSError as e:
            missing = False
            problems = [p for p in problems if p.where.line > 0]
            log.error(f"cannot read {self.opts.conf} as uid {os.getuid()}: {e.strerror}")
        if missing:
            logsetup.notice(f"{self.opts.conf} not found: starting with no routes")
        else:
            for p in problems:
                (log.warning if p.warning else log.error)(str(p))
            if any(not p.warning for p in problems):
                log.error("configuration has errors: every valid line was applied")
        with bulk():
            ops = self.engine.load_config(config)
            t2 = time.monotonic()
            self.apply(ops)
        t3 = time.monotonic()
        log.info(
            f"configuration applied in {t3 - t0:.3f} s: parse {t1 - t0:.3f} s, "
            f"plan {t2 - t1:.3f} s, {len(ops)} kernel changes {t3 - t2:.3f} s"
        )
        gc.freeze()  # the configuration lives as long as the process: stop scanning it
        self.helper.write_pidfile()
        n = len(self.engine.mfc)
        status = f"{len(self.engine.routes)} routes, {len(self.engine.joins)} joins, {n} in kernel"
        logsetup.notice(f"ready: {status}")
        sdnotify.ready(status)
        self.run_hook()
        self.ctl_sock.listen(64)  # from now on smcroutectl connects: we are ready
        self.sel.register(self.helper.fileno(), selectors.EVENT_READ, "helper")
        self.sel.register(self.events.fileno(), selectors.EVENT_READ, "netlink")
        self.sel.register(self.sig_r.fileno(), selectors.EVENT_READ, "signal")
        self.server.register(self.sel)
        if self.metrics is not None:
            self.metrics.start()

    # -- applying operations ------------------------------------------------

    def apply(self, ops: Sequence[Op]) -> list[str]:
        """Send ops to the helper; log and return failures, tell the engine."""
        self.drain_engine()
        if not ops:
            return []
        if any(isinstance(op, AddVif | DelVif) for op in ops):
            self.mrdisc_dirty = True
        if not self.opts.hook:
            ops = [op for op in ops if not isinstance(op, RunHook)]
        results = self.execute(ops)  # a hook in the same batch as the route it follows
        failures: list[str] = []
        vanished: dict[str, str] = {}  # interface -> what its going made fail first
        for op, err in zip(ops, results, strict=False):
            if err == 0:
                continue
            self.engine.op_failed(op, err)
            self.counts.kernel_failures += 1
            msg = f"failed to {describe(op)}: {os.strerror(err)}"
            failures.append(msg)
            name = vanished_interface(op)
            if name is None:
                log.warning(msg)
            else:
                vanished.setdefault(name, msg)
        for name, msg in vanished.items():  # a race with the system, not an error
            log.info(f"{name} vanished meanwhile ({msg}); its routes follow it when it is back")
        self.drain_engine()
        return failures

    def execute(self, ops: Sequence[Op]) -> list[int]:
        """One errno per op from the helper; EINVAL for one no record can carry."""
        if not ops:
            return []
        results = [errno.EINVAL] * len(ops)
        records, index = [], []
        for i, op in enumerate(ops):
            with contextlib.suppress(ProtoError):
                records.append(helper_wire.record(op))
                index.append(i)
        for i, err in zip(index, self.helper.execute(records), strict=True):
            results[i] = err
        return results

    def drain_engine(self) -> None:
        for level, text in self.engine.messages:
            log.log(logsetup.LEVELS.get(level, logsetup.NOTICE), text)
        self.engine.messages.clear()

    def rescan_links(self) -> None:
        self.mrdisc_dirty = True
        try:
            links = self.nl.links()
        except NetlinkError as e:
            log.error(f"cannot list interfaces: {e}")
            return
        vanished, self.events.vanished = self.events.vanished, set()
        self.apply(
            self.engine.set_links((Link(li.index, li.name, li.flags) for li in links), vanished)
        )

    # -- hooks ---------------------------------------------------------------

    def run_hook(self) -> None:
        """The `-e` command with `reload` (`install` comes with its route: apply)."""
        if self.opts.hook:
            self.apply([RunHook("reload")])

    # -- control requests ----------------------------------------------------

    def handle_request(self, req: Request) -> Response:
        try:
            data = self._dispatch(req)
        except (ParseError, EngineError) as e:
            return Response.failure(str(e))
        except HelperGone:
            self.stopping = True
            self.status = EXIT_SOFTWARE
            return Response.failure("privileged helper is gone")
        if isinstance(data, Response):
            return data
        return Response.success(data)

    def _dispatch(self, req: Request) -> Any:
        cmd, args = req.cmd, req.args
        if cmd in ("add", "remove", "join", "leave"):
            # The warnings -F gives for the same words in a file go back to the
            # person who typed the command (stderr, exit 0 if it still worked)
            # and into the log.
            warnings: list[str] = []
            obj = parse_command(cmd, list(args), warnings)
            if cmd == "add":
                assert isinstance(obj, MRoute)
                ops = self.engine.add_route(obj)
            elif cmd == "remove":
                assert isinstance(obj, MRoute)
                ops = self.engine.remove_route(obj)
            else:
                assert isinstance(obj, MGroup)
                ops = self.engine.join(obj) if cmd == "join" else self.engine.leave(obj)
            warnings += [text for level, text in self.engine.messages if level == "warning"]
            for w in warnings:
                log.warning(f"smcroutectl {cmd} {' '.join(args)}: {w}")
            self.engine.messages[:] = [m for m in self.engine.messages if m[0] != "warning"]
            return self._result(ops, warnings)
        if cmd == "show":
            what = args[0] if args else "routes"
            if req.format is None:
                return self.show(what, req.detail)
            return Response.success(text=self.show_text(what, req.detail, req.format))
        if cmd == "flush":
            return self._result(self.engine.flush())
        if cmd == "reload":
            errors = self.reload()
            if errors:
                return Response.failure("\n".join(errors))
            return None
        if cmd in ("explain", "doctor", "log"):
            return observe.request(self, cmd, list(args), req.detail)
        if cmd == "kill":
            logsetup.notice("stop requested by smcroutectl")
            self.stopping = True
            return None
        raise EngineError(f"unknown command {cmd!r}")

    def _result(self, ops: Sequence[Op], warnings: Sequence[str] = ()) -> Any:
        failures = self.apply(ops)
        if failures:
            return Response.failure("\n".join(failures), warnings)
        return Response.success(None, warnings) if warnings else None

    # -- reload --------------------------------------------------------------

    def reload(self) -> list[str]:
        """Parse everything first; a file with errors changes nothing."""
        sdnotify.reloading("reloading configuration")
        t0 = time.monotonic()
        self.counts.reloads += 1
        logsetup.notice(f"reloading {self.opts.conf}")
        config, problems = parse_file(self.opts.conf)
        errors = [str(p) for p in problems if not p.warning]
        me = readable.user_name(os.getuid())
        errors += [readable.explain(path, me) for path in readable.denied(problems)]
        for p in problems:
            (log.warning if p.warning else log.error)(str(p))
        for path in readable.denied(problems):
            log.error(readable.explain(path, me))
        if errors:
            log.error("reload rejected: the running configuration is unchanged")
            sdnotify.ready("reload rejected: configuration has errors")
            self.counts.reload_failures += 1
            self.counts.reload_seconds = time.monotonic() - t0
            return [*errors, "reload rejected: the running configuration is unchanged"]
        with bulk():
            ops = self.engine.load_config(config)
        self.mrdisc_dirty = True
        failures = self.apply(ops)
        self.helper.write_pidfile()
        logsetup.notice(f"reload done: {len(ops)} kernel changes")
        sdnotify.ready(f"{len(self.engine.routes)} routes, {len(self.engine.mfc)} in kernel")
        self.run_hook()
        self.counts.reload_seconds = time.monotonic() - t0
        return failures

    # -- show ------------------------------------------------------------------

    def counters(self) -> dict[tuple[int, object, object], tuple[int, int]]:
        out: dict[tuple[int, object, object], tuple[int, int]] = {}
        for fam in self.families:
            try:
                stats = self.nl.mfc_stats(fam, default_table(fam, self.opts.table))
            except NetlinkError as e:
                log.warning(f"cannot read kernel counters: {e}")
                continue
            for key, st in stats.items():
                out[key] = (st.packets, st.bytes)
        # Kernel (*,G) entries are dumped with source 0.0.0.0 / ::
        for key in list(out):
            fam, src, grp = key
            if isinstance(src, IPv4Address | IPv6Address) and int(src) == 0:
                out[(fam, None, grp)] = out[key]
        return out

    def show(self, what: str, detail: bool = True) -> Any:
        """The `show` document; counters (one netlink dump) only for `routes -d`."""
        with bulk():
            if not detail or what not in ("routes", "interfaces"):
                return show_document(self.engine, what, detail, {})
            try:
                fresh = self.sampler.fresh(time.monotonic(), link_names(self.engine))
            except (NetlinkError, OSError) as e:
                raise EngineError(f"cannot read kernel counters: {e}") from e
            doc = show_document(self.engine, what, detail, CountersView(fresh))
            if what == "routes":
                add_route_stats(doc, self.engine, fresh, self.sampler.last)
            else:
                add_interface_stats(doc, fresh.vifs)
            return doc

    def show_text(self, what: str, detail: bool, fmt: str) -> bytes:
        """`show` rendered as smcroutectl prints it (the client only copies bytes)."""
        with bulk():
            if what == "routes" and not (detail and fmt == "json"):
                counters: Counters = {}
                if detail:  # one dump into flat arrays: no address objects per entry
                    try:
                        counters = CountersView(self.sampler.fresh(time.monotonic()))
                    except (NetlinkError, OSError) as e:
                        raise EngineError(f"cannot read kernel counters: {e}") from e
                return render_routes(self.engine, fmt, detail, counters).encode("utf-8")
            doc = self.show(what, detail)  # -j -d routes: with rates (smcroute.stats)
            return render(what, doc, fmt, detail=detail).encode("utf-8")

    # -- the loop ---------------------------------------------------------------

    def expire_learned(self) -> None:
        if not self.engine.learned:
            return
        counters = {k: v[0] for k, v in self.counters().items()}
        ops = self.engine.expire(counters)  # type: ignore[arg-type]
        if ops:
            log.info(f"expired {len(ops)} idle learned routes")
        self.apply(ops)

    def take_sample(self, now: float) -> None:
        """The steady counter sample (rates); the metrics endpoint publishes it."""
        was_failing = self.sampler.failed
        with bulk():
            sample = self.sampler.sample(now, link_names(self.engine))
            if sample is None:
                if not was_failing:
                    log.warning("cannot sample the kernel's counters (rates stay as they were)")
                return
            if self.metrics is not None:
                self.metrics.publish(self, sample)

    def announce(self, now: float) -> None:
        """Send the RFC 4286 advertisements that are due (doc/SPEC.md §3 `mrdisc`, §2 `-m`)."""
        deadline = self.mrdisc.next_deadline()
        if not self.mrdisc_dirty and (deadline is None or now < deadline):
            return
        self.mrdisc_dirty = False
        before = {k: t.op.ifname for k, t in self.mrdisc.timers.items()}
        self.mrdisc.update(self.engine.announcements(self.opts.mrdisc_interval), now)
        after = {k: t.op.ifname for k, t in self.mrdisc.timers.items()}
        listen: list[Op] = []
        for key in before.keys() ^ after.keys():
            what = "announcing" if key in after else "stopped"
            name = after.get(key) or before[key]
            log.info(f"multicast router discovery: {what} on {name} (IPv{key[0]})")
            self.mrdisc_errs.pop(key, None)
            self.mrdisc_warned.discard(key)
            member = JoinGroup if key in after else LeaveGroup
            fam: Family = 4 if key[0] == 4 else 6
            listen += [member(fam, key[1], g, None, name) for g in LISTEN[fam]]
        for op, err in zip(listen, self.execute(listen), strict=True):
            if err:  # the interface may just have gone: Solicitations go unheard there
                log.debug(f"cannot {describe(op)}: {os.strerror(err)}")
        self.advertise(self.mrdisc.due(now))

    def advertise(self, ops: list[Announce]) -> None:
        """Send advertisements.  A failure is a warning once it repeats: right
        after a link comes up, IPv6 may have no link-local address yet
        (EADDRNOTAVAIL) for a moment."""
        for op, err in zip(ops, self.execute(ops), strict=False):
            key = (op.family, op.ifindex)
            where = f"on {op.ifname} (IPv{op.family})"
            prev = self.mrdisc_errs.get(key, 0)
            self.mrdisc_errs[key] = err
            if err and err == prev and key not in self.mrdisc_warned:
                self.mrdisc_warned.add(key)
                log.warning(
                    f"cannot send multicast router advertisements {where}: {os.strerror(err)}"
                )
            elif err:
                log.debug(f"multicast router advertisement {where}: {os.strerror(err)}")
            elif key in self.mrdisc_warned:
                self.mrdisc_warned.discard(key)
                log.info(f"multicast router advertisements {where} work again")

    def _select_timeout(self, now: float) -> float | None:
        """Zero while the helper client holds buffered upcalls (see on_helper)."""
        return 0.0 if self.helper.has_events() else self._timeout(now)

    def _timeout(self, now: float) -> float | None:
        deadlines = [
            d
            for d in (
                self.next_expire,
                self.server.next_deadline(),
                self.mrdisc.next_deadline(),
                self.sampler.next_due,
            )
            if d is not None
        ]
        if self.opts.exit_after is not None:
            deadlines.append(self.started + self.opts.exit_after)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    def on_signals(self) -> None:
        try:
            data = self.sig_r.recv(4096)
        except BlockingIOError:
            return
        for signum in data:
            if signum in (signal.SIGINT, signal.SIGTERM):
                logsetup.notice(f"{signal.Signals(signum).name} received, exiting")
                self.stopping = True
            elif signum == signal.SIGHUP:
                self.reload()

    def on_helper(self, now: float) -> None:
        """One round of upcalls and helper log lines, installed in one batch.

        Upcalls that arrive while apply() waits for the helper's answer, and
        those beyond UPCALL_ROUND, stay buffered in the client (the socket is
        then no longer readable for them): the loop comes back with a zero
        timeout while any are left, serving the control socket in between,
        so a flood starves nobody.
        """
        ops: list[Op] = []
        answers: list[Announce] = []
        for ev in self.helper.read_events(UPCALL_ROUND):
            if isinstance(ev, Upcall):
                decoded = helper_wire.upcall(ev)
                if decoded is None:
                    continue  # the helper forwards NOCACHE and WRONGVIF only
                kind, source, group = decoded
                self.counts.upcall(self.engine, ev.family, kind, source, group)
                ops.extend(self.engine.upcall(ev.family, kind, ev.vif, source, group, now))
            elif answer := self.mrdisc.solicited((ev.family, ev.ifindex), now):
                answers.append(answer)  # else not an announcing interface, or too soon
        self.apply(ops)
        self.advertise(answers)

    def run(self) -> int:
        try:
            try:
                self.start()
            except Unreadable as e:
                log.error(str(e))
                self.status = EX_CONFIG
                return self.status  # `finally` below shuts down cleanly
            while not self.stopping:
                now = time.monotonic()
                if self.opts.exit_after is not None and now - self.started >= self.opts.exit_after:
                    logsetup.notice("exit timer (-D) expired")
                    break
                if self.next_expire is not None and now >= self.next_expire:
                    self.expire_learned()
                    self.next_expire = now + self.opts.cache_timeout
                self.announce(now)
                if self.sampler.due(now):
                    self.take_sample(now)
                self.server.expire(now)
                for key, mask in self.sel.select(self._select_timeout(now)):
                    tag = key.data
                    if tag == "helper":
                        self.on_helper(time.monotonic())
                    elif tag == "netlink":
                        if self.events.drain_events():
                            self.rescan_links()
                    elif tag == "signal":
                        self.on_signals()
                    else:
                        self.server.on_ready(key, mask)
                if self.helper.has_events():  # buffered while a request was applied
                    self.on_helper(time.monotonic())
        except HelperGone:
            log.error("the privileged helper died: exiting (nothing is left installed)")
            self.status = EXIT_SOFTWARE
        except NetlinkError as e:
            log.error(f"netlink failed: {e}")
            self.status = EXIT_SOFTWARE
        finally:
            self.shutdown()
        return self.status

    def shutdown(self) -> None:
        sdnotify.stopping()
        if self.metrics is not None:
            self.metrics.stop()
        with contextlib.suppress(Exception):
            self.server.flush_all()
        with contextlib.suppress(OSError):
            self.server.close()
        # Closing the helper closes the routing sockets: the kernel removes every
        # VIF, MFC entry and membership; the helper removes the socket and PID file.
        self.helper.close()
        for s in (self.events, self.nl):
            s.close()
        with contextlib.suppress(OSError):
            signal.set_wakeup_fd(-1)
        self.sig_r.close()
        self.sig_w.close()
        logsetup.notice("exiting")
