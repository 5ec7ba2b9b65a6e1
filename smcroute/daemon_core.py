"""The daemon's state and the one way to change the kernel: sending the
engine's operations to the privileged helper.

Owns the state every part of the daemon shares (`Core.__init__`: engine,
helper client, netlink sockets, selector, signal wake-up pair, timers,
counters), the exit codes, `apply()` (one batch to the helper,
failures fed back to the engine and logged with context), link rescans and
the `-e` hook's `reload` call.  Must not: make routing decisions (the engine
does), touch the kernel's routing state itself (only the helper can), or
serve clients (smcroute.daemon_control).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import selectors
import socket
import time
from collections.abc import Iterator, Sequence

from smcroute import helper_wire, logsetup
from smcroute.engine.core import Engine, Link, Mfc, describe
from smcroute.engine.mrdisc import Schedule
from smcroute.engine.ops import (
    AddVif,
    Announce,
    DelVif,
    JoinGroup,
    LeaveGroup,
    Log,
    Op,
    Rule,
    RunHook,
    SetRules,
)
from smcroute.ipc.server import ControlServer
from smcroute.logsetup import log
from smcroute.netlink import RTNLGRP_LINK, Netlink, NetlinkError
from smcroute.options import Options
from smcroute.privsep.client import HelperClient
from smcroute.privsep.daemon_wire import Upcall
from smcroute.privsep.janitor import Janitor
from smcroute.privsep.wire import ProtoError, Record
from smcroute.stats import Counts, Sampler

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import Any

EXIT_OK = 0
EXIT_SOFTWARE = 70
EX_CONFIG = 78


class Unreadable(Exception):
    """The configuration exists but the main process may not read it (start-up)."""


def vanished_interface(op: Op) -> str | None:
    """The name of the interface `op` was for, if that interface is gone now."""
    if not isinstance(op, AddVif | DelVif | JoinGroup | LeaveGroup | Announce):
        return None
    try:
        return None if socket.if_indextoname(op.ifindex) == op.ifname else op.ifname
    except OSError:
        return op.ifname


_malloc_trim: Any = None


def trim_heap() -> None:
    """Give the heap pages freed by bulk work (parsing, planning, a reload that
    removed routes) back to the system: glibc keeps them otherwise, and the
    daemon would stay at its peak size.  A no-op without glibc.  The function
    is looked up once: each lookup makes a ctypes class, garbage that would
    sit among the freed pages until the next collection.  At that first call
    glibc's mmap threshold is also fixed at its default (128 KiB): it would
    otherwise rise with the first large block freed, and every later large
    block (a dict of 100,000 entries, a counter sample's columns) would come
    from the heap and stay resident between trims once freed.  And
    `free_pools` looks madvise up then (start-up: before the routes)."""
    global _malloc_trim
    try:
        if _malloc_trim is None:
            import ctypes  # loaded already (privsep.mroute's BPF filter)

            libc = ctypes.CDLL(None)
            _malloc_trim = libc.malloc_trim
            libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD fixed (no sliding up)
            from smcroute import free_pools

            free_pools.prepare()  # (here, before the routes: what it makes lives on)
        _malloc_trim(0)
    except (OSError, AttributeError):
        pass


def give_back_pools() -> None:
    """After a big removal, once its objects are gone: the pages of the
    object pools they held (`free_pools`), then the C heap's."""
    from smcroute import free_pools  # (imported by the first trim_heap, at start-up)

    given = free_pools.release()
    trim_heap()
    log.debug(f"gave back {given >> 10} KiB of free object pools")


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


class Core:
    """The daemon's shared state and `apply()`; `smcroute.daemon.Daemon` adds the rest."""

    server: ControlServer  # set by Daemon.__init__ (its handler is Control.handle_request)

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
        self.janitor: Janitor | None = None  # writes the PID file (smcroute.daemon_cli)
        # the helper's rule tables: the last one sent, and the recent ones by epoch
        # (a report of an install names the table and the rule)
        self.rules_sent: tuple[Rule, ...] | None = None
        self.rule_tables: dict[int, tuple[tuple[Rule, ...], tuple[Mfc, ...]]] = {}
        self.rule_epoch = 0

    # -- applying operations ------------------------------------------------

    def apply(self, ops: Sequence[Op]) -> list[str]:
        """Log the engine's lines; send its operations to the helper; log and
        return failures, tell the engine.

        When the engine's rule table for the helper changed, the helper's is
        emptied before the ops (a batch may span several messages, and upcalls
        are served between them) and replaced after them, in the same stream:
        the helper never installs by a rule made for VIFs that are not there.
        """
        ops = self.log_lines(ops)
        rules = self.engine.helper_rules()
        if rules is not self.rules_sent:
            table = self.rule_table(rules)
            ops = [SetRules(table.epoch, 0, ()), *ops, table] if ops else [table]
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
            if isinstance(op, SetRules):  # the helper's indexes may not be ours: no trust
                self.rule_tables.pop(op.epoch, None)
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
        if self.engine.helper_rules() is not self.rules_sent:  # a VIF failed meanwhile
            failures += self.apply([])
        return failures

    def rule_table(self, rules: tuple[Rule, ...]) -> SetRules:
        """The next table for the helper; its installs are what the engine has room for."""
        self.rule_epoch = self.rule_epoch % 0xFFFF + 1
        # the entry each rule writes: one value shared by all it installs
        mfcs = tuple(Mfc(r.parent, r.ttls, "learned") for r in rules)
        self.rule_tables[self.rule_epoch] = (rules, mfcs)
        self.rules_sent = rules
        while len(self.rule_tables) > 8:
            del self.rule_tables[next(iter(self.rule_tables))]
        budget = max(0, self.engine.max_learned - len(self.engine.learned))
        return SetRules(self.rule_epoch, budget, rules)

    def installed_by_rule(self, ev: Upcall) -> tuple[Mfc, bool]:
        """What the helper wrote for an INSTALLED upcall, by the rule it names, and
        whether that rule is from the engine's table as it stands."""
        rules, mfcs = self.rule_tables.get(ev.seq >> 16, ((), ()))
        i = ev.seq & 0xFFFF
        if i < len(rules) and (rules[i].family, rules[i].parent) == (ev.family, ev.vif):
            return mfcs[i], self.engine.current_rules(rules)
        return Mfc(ev.vif, (), "unknown"), False  # the engine writes its own decision

    def execute(self, ops: Sequence[Op]) -> list[int]:
        """One errno per op from the helper; EINVAL for one no record can carry."""
        if not ops:
            return []
        results = [errno.EINVAL] * len(ops)
        index: list[int] = []

        def each() -> Iterator[Record]:
            # made as the helper client sends them: the helper runs the first
            # batch while the next ones are made
            for i, op in enumerate(ops):
                try:
                    recs = helper_wire.records(op)
                except ProtoError:
                    continue
                index.extend([i] * len(recs))
                results[i] = 0
                yield from recs

        for i, err in zip(index, self.helper.execute(each()), strict=True):
            results[i] = results[i] or err  # an op of several records: its first failure
        return results

    def log_lines(self, ops: Sequence[Op]) -> Sequence[Op]:
        """Log the `Log` lines in the engine's stream; the operations without them."""
        if not any(type(op) is Log for op in ops):
            return ops
        for op in ops:
            if isinstance(op, Log):
                log.log(logsetup.LEVELS.get(op.level, logsetup.NOTICE), op.text)
        return [op for op in ops if not isinstance(op, Log)]

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
