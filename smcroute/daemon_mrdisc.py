"""RFC 4286 multicast router discovery on `phyint ... mrdisc` interfaces:
which interfaces announce, their listening memberships, due and solicited
advertisements, and how their failures are logged.

Owns `announce()` (called each loop turn) and `advertise()`.  Must not:
decide which interfaces announce (the engine's `announcements()` does) or
keep timers of its own (smcroute.engine.mrdisc.Schedule does).
"""

from __future__ import annotations

import os

from smcroute.daemon_core import Core
from smcroute.engine.core import describe
from smcroute.engine.mrdisc import LISTEN
from smcroute.engine.ops import Announce, JoinGroup, LeaveGroup, Op
from smcroute.logsetup import log
from smcroute.model import Family


class Discovery(Core):
    """Router advertisements (doc/SPEC.md §3 `mrdisc`)."""

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
