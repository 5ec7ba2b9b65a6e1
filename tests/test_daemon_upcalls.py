"""The daemon shell's upcall handling, with a fake privileged helper (no root).

Upcalls that arrive while the daemon waits for the helper's answer to a
batch are buffered by `HelperClient`; the socket is then no longer readable, so
the event loop must process that buffer itself or those sources stay
unresolved until the kernel drops them (10 s later, with their packets).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
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

    def execute(self, ops: Sequence[wire.Record]) -> list[int]:
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
