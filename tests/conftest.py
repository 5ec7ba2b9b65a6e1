"""Shared pytest fixtures: network-namespace topologies and smcrouted daemons.

Unit tests are untouched by this file. A test that uses one of the netns
fixtures (``topology``, ``daemon``, ``smcrouted_bin``) is marked ``netns``
automatically and **fails** (it does not skip) when not run as root.

Which daemon the end-to-end scenarios drive is chosen with
``--daemon=original|ours|both`` or the environment variable
``SMCROUTE_E2E_DAEMONS`` (same values; default ``both``: each scenario runs
against ours and against Debian's ``/usr/sbin/smcrouted``). ``--daemon=PATH`` runs
them against any smcrouted binary (its smcroutectl is taken from the same
directory).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

import netns

# Property tests judge results, never time: no per-example deadline (on a
# loaded machine hypothesis' default of 200 ms failed tests that were right).
settings.register_profile("smcroute", deadline=None)
settings.load_profile("smcroute")

NETNS_FIXTURES = {"topology", "daemon", "smcrouted_bin", "router_topo", "ours"}


class DaemonBinary(NamedTuple):
    """A smcrouted implementation under test."""

    name: str
    daemon: str
    ctl: str


KNOWN = {
    "original": DaemonBinary("original", netns.ORIGINAL_DAEMON, netns.ORIGINAL_CTL),
    "ours": DaemonBinary("ours", netns.OUR_DAEMON, netns.OUR_CTL),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--daemon",
        default=os.environ.get("SMCROUTE_E2E_DAEMONS", "both"),
        help="smcrouted for netns tests: original, ours, both, or a path (default: both)",
    )


def _selected(config: pytest.Config) -> list[DaemonBinary]:
    choice = config.getoption("--daemon")
    if choice == "both":
        return [KNOWN["ours"], KNOWN["original"]]
    if choice in KNOWN:
        return [KNOWN[choice]]
    path = str(Path(choice).resolve())
    return [DaemonBinary(Path(path).parent.name, path, netns.ctl_for(path))]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "netns: end-to-end test in network namespaces (needs root)")
    # Only the controller (not xdist workers) removes namespaces left behind
    # by harness processes that died; live workers' namespaces are kept.
    if not hasattr(config, "workerinput") and os.geteuid() == 0:
        netns.cleanup_stale()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "smcrouted_bin" in metafunc.fixturenames:
        binaries = _selected(metafunc.config)
        metafunc.parametrize("smcrouted_bin", binaries, ids=[b.name for b in binaries])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if NETNS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.netns)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(autouse=True)
def _netns_needs_root(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("netns") and os.geteuid() != 0:
        pytest.fail("netns tests need root: run pytest as root", pytrace=False)


def _failed(request: pytest.FixtureRequest) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture
def uid() -> str:
    """A short identifier unique across xdist workers and tests."""
    return netns.unique_id()


@pytest.fixture
def topology() -> Iterator[Callable[..., netns.RouterTopology]]:
    """Factory: ``topology(receivers=2)`` -> a ready :class:`netns.RouterTopology`.

    Everything it created is deleted at teardown, pass or fail.
    """
    made: list[netns.Topology] = []

    def make(receivers: int = 2) -> netns.RouterTopology:
        topo = netns.router_topology(receivers)
        made.append(topo)
        return topo

    yield make
    for topo in reversed(made):
        topo.close()


@pytest.fixture
def router_topo(topology: Callable[..., netns.RouterTopology]) -> netns.RouterTopology:
    """The standard S -- R -- X1, X2 topology."""
    return topology(2)


@pytest.fixture
def smcrouted_bin(request: pytest.FixtureRequest) -> DaemonBinary:
    """The daemon implementation under test (parametrized, see ``--daemon``)."""
    binary: DaemonBinary = request.param
    if not os.access(binary.daemon, os.X_OK):
        if binary.name == "original":
            pytest.skip(f"Debian's smcroute is not installed ({binary.daemon})")
        pytest.fail(f"{binary.daemon} is missing", pytrace=False)
    return binary


@pytest.fixture
def daemon(
    request: pytest.FixtureRequest, smcrouted_bin: DaemonBinary
) -> Iterator[Callable[..., netns.Daemon]]:
    """Factory: ``daemon(ns, conf_text, **kw)`` -> a started :class:`netns.Daemon`.

    The binary is the parametrized ``smcrouted_bin`` unless ``binary=`` is
    given. Daemons are stopped at teardown; when the test failed their logs
    are printed (pytest shows them under "Captured stdout teardown").
    """

    def start(ns: netns.Netns, conf: str | None = "", **kw: Any) -> netns.Daemon:
        kw.setdefault("binary", smcrouted_bin.daemon)
        kw.setdefault("ctl_binary", smcrouted_bin.ctl)
        return netns.Daemon(ns, conf=conf, **kw)

    yield from _started_daemons(request, start)


@pytest.fixture
def ours(request: pytest.FixtureRequest) -> Iterator[Callable[..., netns.Daemon]]:
    """Factory: ``ours(ns, conf="", *extra_args, **kw)`` -> OUR smcrouted, started.

    Extra arguments follow ``-l debug``; keyword arguments go to
    :class:`netns.Daemon` (``ident=``, ``workdir=``, ``extra_args=``...).
    """

    def start(ns: netns.Netns, conf: str = "", *extra: str, **kw: Any) -> netns.Daemon:
        if extra:
            kw["extra_args"] = ["-l", "debug", *extra]
        kw.setdefault("ctl_binary", netns.OUR_CTL)
        return netns.Daemon(ns, netns.OUR_DAEMON, conf, **kw)

    yield from _started_daemons(request, start)


def _started_daemons(
    request: pytest.FixtureRequest, make: Callable[..., netns.Daemon]
) -> Iterator[Callable[..., netns.Daemon]]:
    """Start daemons made by ``make``; stop them all at teardown, logs on failure."""
    started: list[netns.Daemon] = []

    def start(*args: Any, **kw: Any) -> netns.Daemon:
        d = make(*args, **kw)
        started.append(d)
        return d.start()

    yield start
    failed = _failed(request)
    for d in reversed(started):
        d.stop()
        if failed:
            print(f"----- {d.binary} in {d.ns} (exit {d.returncode}) -----\n{d.log()}")
