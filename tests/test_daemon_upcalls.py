"""The daemon shell's upcall handling, with a fake privileged helper (no root).

Upcalls that arrive while the daemon waits for the helper's answer to a
batch are buffered by `HelperClient`; the socket is then no longer readable, so
the event loop must process that buffer itself or those sources stay
unresolved until the kernel drops them (10 s later, with their packets).
"""

from __future__ import annotations

import gc
import socket
from collections.abc import Iterable, Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest
from smcroute.privsep import daemon_wire, wire

from smcroute.daemon import Daemon, Options
from smcroute.engine.core import Link
from smcroute.model import MRoute

M = 0x1003


def Upcall(family: int, kind: int, vif: int, source: str, group: str) -> daemon_wire.Upcall:
    return daemon_wire.Upcall(
        family, kind, vif, ip_address(source).packed, ip_address(group).packed
    )


NOCACHE = wire.NOCACHE


class FakeHelper:
    """Executes every op; while "executing", one more upcall arrives (buffered)."""

    def __init__(self, late: list[daemon_wire.Upcall]) -> None:
        self.late = late
        self.events: list[daemon_wire.Upcall] = []
        self.executed: list[wire.Record] = []
        self.r, self.w = socket.socketpair()

    def fileno(self) -> int:
        return self.r.fileno()

    def execute(self, records: Iterable[wire.Record]) -> list[int]:
        ops = list(records)  # (HelperClient.execute reads an iterable)
        self.executed.extend(ops)
        if self.late:
            self.events.append(self.late.pop(0))  # buffered during the request
        return [0] * len(ops)

    def read_events(self, limit: int | None = None) -> list[daemon_wire.Upcall]:
        n = len(self.events) if limit is None else limit
        out, self.events = self.events[:n], self.events[n:]
        return out

    def has_events(self) -> bool:
        return bool(self.events)

    def close(self) -> None:
        self.r.close()
        self.w.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Daemon, FakeHelper]]:
    late = [
        Upcall(4, NOCACHE, 0, "10.1.0.2", "225.1.1.1"),
        Upcall(4, NOCACHE, 0, "10.1.0.3", "225.1.1.1"),
    ]
    helper = FakeHelper([])
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctl.bind(str(tmp_path / "s"))
    ctl.listen()
    d = Daemon(Options(cache_timeout=0), helper, ctl, (4,))  # type: ignore[arg-type]
    d.engine.set_links([Link(2, "a1", M), Link(3, "a2", M)])
    route = MRoute("a1", None, 0, ip_address("225.1.1.1"), 32, ("a2",))
    d.apply(d.engine.add_route(route))
    helper.late = late  # from now on each batch lets one more upcall in
    yield d, helper
    helper.close()
    ctl.close()


def test_upcalls_buffered_during_a_batch_are_handled(daemon: tuple[Daemon, FakeHelper]) -> None:
    d, helper = daemon
    helper.events.append(Upcall(4, NOCACHE, 0, "10.1.0.1", "225.1.1.1"))
    rounds = 0
    while True:  # what the event loop does: a zero select timeout while any are buffered
        d.on_helper(0.0)
        rounds += 1
        if d._select_timeout(0.0) != 0.0:
            break
    # 10.1.0.1 was read from the socket; installing it let 10.1.0.2 arrive,
    # installing that let 10.1.0.3 arrive: all three are installed now, one
    # round each (the control socket is served between rounds).
    assert rounds == 3
    installed = {str(ip_address(r.source)) for r in helper.executed if isinstance(r, wire.AddMfc4)}
    assert installed == {"10.1.0.1", "10.1.0.2", "10.1.0.3"}
    assert not helper.has_events()


def test_a_flood_is_handled_in_bounded_rounds(daemon: tuple[Daemon, FakeHelper]) -> None:
    """Each round takes at most UPCALL_ROUND upcalls, so the control socket is
    served between rounds however many are buffered."""
    from smcroute.daemon import UPCALL_ROUND

    d, helper = daemon
    helper.late = []
    helper.events = [
        Upcall(4, NOCACHE, 0, f"10.2.{i // 250}.{i % 250 + 1}", "225.1.1.1")
        for i in range(3 * UPCALL_ROUND + 5)
    ]
    before = len(helper.executed)
    d.on_helper(0.0)
    assert len(helper.executed) - before == UPCALL_ROUND
    assert d._select_timeout(0.0) == 0.0  # the loop comes straight back
    for _ in range(3):
        d.on_helper(0.0)
    assert not helper.has_events()
    assert len(helper.executed) - before == 3 * UPCALL_ROUND + 5


def installed(d: Daemon, source: str, rule: int = 0) -> daemon_wire.Upcall:
    """The helper's report of an install of (source, 225.1.1.1) by `rule` of its table."""
    up = Upcall(4, wire.INSTALLED, 0, source, "225.1.1.1")
    return up._replace(seq=d.rule_epoch << 16 | rule)


def test_helper_installs_are_recorded_and_read_in_batches(
    daemon: tuple[Daemon, FakeHelper],
) -> None:
    import selectors

    d, helper = daemon
    helper.late = []
    tables = [r for r in helper.executed if isinstance(r, wire.Rules)]
    rules = [r for r in helper.executed if isinstance(r, wire.Rule)]
    assert tables[-1] == wire.Rules(d.rule_epoch, d.engine.max_learned) and len(rules) == 1
    d.sel.register(helper.fileno(), selectors.EVENT_READ, "helper")
    helper.executed.clear()
    helper.events.append(installed(d, "10.1.0.7"))
    d.on_helper(5.0)
    assert helper.executed == []  # the engine's decision is the rule's: no second write
    key = (4, ip_address("10.1.0.7"), ip_address("225.1.1.1"))
    assert key in d.engine.learned and d.engine.mfc[key].ttls == ((1, 1),)
    # its socket is read again only after HELPER_HOLD
    assert d.helper_hold == 5.0 + 0.02 and helper.fileno() not in d.sel.get_map()
    assert d._timeout(5.0) == pytest.approx(0.02)
    d.resume_helper(5.02)
    assert d.helper_hold is None and helper.fileno() in d.sel.get_map()


def test_a_table_the_helper_did_not_take_whole_is_not_trusted(
    daemon: tuple[Daemon, FakeHelper],
) -> None:
    d, helper = daemon
    helper.late = []

    def refuse_rules(records: Iterable[wire.Record]) -> list[int]:
        ops = list(records)
        helper.executed.extend(ops)
        return [22 if isinstance(r, wire.Rule) else 0 for r in ops]

    helper.execute = refuse_rules  # type: ignore[method-assign]
    route = MRoute("a1", None, 0, ip_address("225.1.1.2"), 32, ("a2",))
    d.apply(d.engine.add_route(route))
    assert d.rule_epoch not in d.rule_tables
    helper.executed.clear()
    helper.events.append(installed(d, "10.1.0.8"))
    d.helper_hold = 1.0  # (not registered in this test's selector: no hold)
    d.on_helper(5.0)
    # the report cannot be trusted: the engine writes its own decision
    adds = [r for r in helper.executed if isinstance(r, wire.AddMfc4)]
    assert [str(ip_address(r.source)) for r in adds] == ["10.1.0.8"]


def test_start_turns_cyclic_gc_back_on(tmp_path: Path) -> None:
    """smcrouted's main turns the cyclic GC off for the start-up (imports and
    the first parse); the daemon runs with it on once its configuration is in."""
    conf = tmp_path / "c.conf"
    conf.write_text("mroute from a1 source 10.1.0.1 group 225.1.1.1 to a2\n")
    helper = FakeHelper([])
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctl.bind(str(tmp_path / "s"))
    d = Daemon(Options(conf=str(conf), cache_timeout=0), helper, ctl, (4,))  # type: ignore[arg-type]
    was = gc.isenabled()
    gc.disable()
    try:
        d.start()
        assert gc.isenabled()
        assert len(d.engine.routes) == 1
    finally:
        gc.unfreeze()
        if not was:
            gc.disable()
        d.shutdown()
        ctl.close()
