"""Start-up, reload and shutdown of the daemon.

Owns signal installation, the first configuration load (readability,
problems, timing log, PID file, readiness notification, the `reload` hook,
listening on the control socket, registering every input with the
selector), `reload()` (parse everything first: a file with errors changes
nothing) and the orderly shutdown.  Must not: run the event loop
(smcroute.daemon) or answer control requests (smcroute.daemon_control).
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import selectors
import signal
import struct
import time

from smcroute import helper_wire, logsetup, readable, sdnotify, stats
from smcroute.daemon_core import Core, Unreadable, bulk, give_back_pools, trim_heap
from smcroute.logsetup import log
from smcroute.parser import parse_file


class Lifecycle(Core):
    """Start-up, reload, shutdown."""

    def _install_signals(self) -> None:
        self.sig_r.setblocking(False)
        self.sig_w.setblocking(False)
        signal.set_wakeup_fd(self.sig_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda _s, _f: None)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def start(self) -> None:
        self._install_signals()
        # What lives as long as the process is made before the routes: made
        # after them, it would sit among their pages and keep those resident
        # once a reload has removed the routes.
        trim_heap()  # (looks the function up)
        self.sel.register(self.helper.fileno(), selectors.EVENT_READ, "helper")
        self.sel.register(self.events.fileno(), selectors.EVENT_READ, "netlink")
        self.sel.register(self.sig_r.fileno(), selectors.EVENT_READ, "signal")
        self.server.register(self.sel)  # selected only once we listen, below
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
            ops = self.log_lines(self.engine.load_config(config))
            t2 = time.monotonic()
            self.apply(ops)
        t3 = time.monotonic()
        log.info(
            f"configuration applied in {t3 - t0:.3f} s: parse {t1 - t0:.3f} s, "
            f"plan {t2 - t1:.3f} s, {len(ops)} kernel changes {t3 - t2:.3f} s"
        )
        gc.freeze()  # the configuration lives as long as the process: stop scanning it
        gc.enable()  # smcroute.daemon_cli turned it off for the start-up
        trim_heap()
        self.write_pidfile()
        n = len(self.engine.mfc)
        status = f"{len(self.engine.routes)} routes, {len(self.engine.joins)} joins, {n} in kernel"
        logsetup.notice(f"ready: {status}")
        sdnotify.ready(status)
        self.run_hook()
        self.ctl_sock.listen(64)  # from now on smcroutectl connects: we are ready
        if self.metrics is not None:
            self.metrics.start()

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
            ops = self.log_lines(self.engine.load_config(config))
        del config
        self.mrdisc_dirty = True
        failures = self.apply(ops)
        changes = len(ops)
        # The operations of a big removal sit where the removed entries were:
        # what lives on is made once they are gone, or it would keep those
        # pages resident (see release_removed).
        del ops
        few = 2 * len(self.engine.mfc) + 64
        if changes > few:
            self.release_removed()
        self.write_pidfile()
        last = self.sampler.last
        if last is not None and len(last) > few:
            # Most sampled entries are gone: the next sample comes now (its
            # rates still against this one), which frees the old one and
            # then gives the memory back.
            self.sampler.next_due = time.monotonic()
        elif changes > few:
            give_back_pools()
        trim_heap()
        logsetup.notice(f"reload done: {changes} kernel changes")
        sdnotify.ready(f"{len(self.engine.routes)} routes, {len(self.engine.mfc)} in kernel")
        self.run_hook()
        self.counts.reload_seconds = time.monotonic() - t0
        return failures

    def release_removed(self) -> None:
        """After a reload that removed most entries: give their memory back.

        The allocator holds memory in 1 MiB arenas, each resident while any
        object in it lives; objects made while the entries lived sit among
        them.  So the engine's containers are made anew, the caches that
        filled while the entries lived (compiled struct formats, the
        counter dump's layouts, regular expressions, the helper records'
        outputs) are emptied to be remade on demand, and the free lists are
        emptied.  Then the pages of the allocator's free pools go back
        (`give_back_pools`: in the reload, or in the sample it asks for).
        """
        self.engine.compact()
        struct._clearcache()  # type: ignore[attr-defined]  # (not in typeshed)
        re.purge()
        stats.forget_layouts()
        helper_wire.forget_outputs()
        gc.collect()

    def write_pidfile(self) -> None:
        """Have the janitor write our pid into the PID file, or touch it."""
        if self.janitor is not None and (err := self.janitor.write_pidfile()):
            log.error(f"cannot write PID file {self.opts.pidfile}: {os.strerror(err)}")

    def shutdown(self) -> None:
        sdnotify.stopping()
        if self.metrics is not None:
            self.metrics.stop()
        with contextlib.suppress(Exception):
            self.server.flush_all()
        with contextlib.suppress(OSError):
            self.server.close()
        # Closing the helper closes the routing sockets: the kernel removes every
        # VIF, MFC entry and membership; the janitor removes the socket and PID file.
        self.helper.close()
        for s in (self.events, self.nl):
            s.close()
        with contextlib.suppress(OSError):
            signal.set_wakeup_fd(-1)
        self.sig_r.close()
        self.sig_w.close()
        logsetup.notice("exiting")
