"""The unprivileged daemon shell: one event loop around the pure engine.

Owns the `selectors` loop over the privileged helper's socket, route
netlink link events, the control server's clients, signals (through a
wake-up socket) and timers (cache expiry, `-D`, counter samples, RFC 4286
router advertisements): each input becomes an engine call whose operations
go to the helper in one batch.  `Daemon` is assembled from one module per
concern: the shared state and `apply()` (smcroute.daemon_core), start-up,
reload and shutdown (smcroute.daemon_lifecycle), control requests
(smcroute.daemon_control), counters and `show` (smcroute.daemon_show) and
router discovery (smcroute.daemon_mrdisc).

Must not: make routing decisions (the engine does), touch the kernel's
routing state (only the helper can), or block on a client or a hook.
"""

from __future__ import annotations

import selectors
import signal
import socket
import time

from smcroute import helper_wire, logsetup
from smcroute.daemon_control import Control
from smcroute.daemon_core import EX_CONFIG, EXIT_SOFTWARE, Unreadable
from smcroute.daemon_mrdisc import Discovery
from smcroute.engine.ops import Announce, Op
from smcroute.ipc.server import ControlServer
from smcroute.logsetup import log
from smcroute.netlink import NetlinkError
from smcroute.options import Options
from smcroute.privsep.client import HelperClient, HelperGone
from smcroute.privsep.daemon_wire import Upcall
from smcroute.privsep.wire import INSTALLED

__all__ = ["UPCALL_ROUND", "Daemon", "Options"]

# Upcalls handled per round: under a flood each kernel write can cost a
# fraction of a millisecond, and the control socket is served between rounds.
UPCALL_ROUND = 64
# After a round that held reports of the helper's own installs (no kernel
# write waits for them), the helper's socket is read again only this much
# later, so that a stream of new sources costs one wake-up per many sources;
# other upcalls wait as long at most.
HELPER_HOLD = 0.02


class Daemon(Control, Discovery):
    """The running daemon; `run()` returns the exit status."""

    def __init__(
        self,
        opts: Options,
        helper: HelperClient,
        ctl_sock: socket.socket,
        families: tuple[int, ...],
    ) -> None:
        super().__init__(opts, helper, ctl_sock, families)
        self.server = ControlServer(ctl_sock, self.handle_request)
        self.helper_hold: float | None = None  # the helper's socket is read again then

    # -- the loop ---------------------------------------------------------------

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
                self.helper_hold,
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
        installs = 0
        for ev in self.helper.read_events(UPCALL_ROUND):
            if isinstance(ev, Upcall):
                decoded = helper_wire.upcall(ev)
                if decoded is None:
                    continue  # the helper forwards NOCACHE and WRONGVIF only
                kind, source, group = decoded
                self.counts.upcall(self.engine, ev.family, kind, source, group)
                done, current = (None, False)
                if ev.kind == INSTALLED:
                    done, current = self.installed_by_rule(ev)
                    installs += 1
                up = self.engine.upcall(ev.family, kind, ev.vif, source, group, now, done, current)
                ops.extend(up)
            elif answer := self.mrdisc.solicited((ev.family, ev.ifindex), now):
                answers.append(answer)  # else not an announcing interface, or too soon
        self.apply(ops)
        self.advertise(answers)
        if installs and self.helper_hold is None and not self.helper.has_events():
            self.sel.unregister(self.helper.fileno())
            self.helper_hold = now + HELPER_HOLD

    def resume_helper(self, now: float) -> None:
        """The end of a HELPER_HOLD: read the helper's socket again."""
        self.helper_hold = None
        self.sel.register(self.helper.fileno(), selectors.EVENT_READ, "helper")
        self.on_helper(now)

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
                if self.helper_hold is not None and now >= self.helper_hold:
                    self.resume_helper(now)
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
