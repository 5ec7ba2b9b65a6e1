"""End to end, our daemon in a hostile environment (issue 12): an identity no
other service shares, nothing stale left however it ends, and the operator
always served by the control socket.

Each test runs our daemon in its own network namespaces (tests/netns.py).
"""

from __future__ import annotations

import os
import pwd
import signal
from collections.abc import Callable

import netns
import pytest
from netns import Daemon, RouterTopology

pytestmark = pytest.mark.netns

NOBODY = pwd.getpwnam("nobody")


def as_nobody(action: Callable[[], str]) -> str:
    """Run `action` in a forked child that has become nobody:nogroup; its result."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nobody, no supplementary groups, then act
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            os.write(wfd, action().encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


def try_signals(pid: int) -> str:
    """Every signal that would hurt the router: delivered, or EPERM."""
    out = []
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
            out.append(f"{sig.name} delivered")
        except PermissionError:
            out.append(f"{sig.name} EPERM")
    return ", ".join(out)


def ids(pid: int) -> tuple[int, int]:
    st = netns.proc_status(pid)
    return int(st["Uid"].split()[0]), int(st["Gid"].split()[0])


# ---------------------------------------------------------------------------
# Part 1: an identity of its own
# ---------------------------------------------------------------------------


def test_nobody_cannot_signal_the_main_process_by_default(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    topo = topology(1)
    conf = f"mroute from a1 source {topo.source4} group 225.1.1.1 to a2\n"
    d = ours(topo.router, conf)
    uid, gid = ids(d.pid)
    assert uid not in (0, NOBODY.pw_uid) and gid not in (0, NOBODY.pw_gid)
    # it says at start-up which identity it runs as
    try:
        name = f"{pwd.getpwuid(uid).pw_name}:"  # a 'smcroute' user, where there is one
    except KeyError:
        name = f"uid {uid}, gid {gid}, an identity of its own"
    assert f"running as {name}" in d.log()
    # no other process shares that user ID
    mine = d.pids()
    others = [p for p in all_pids() if p not in mine and uid_or_none(p) == uid]
    assert others == []
    assert as_nobody(lambda: try_signals(d.pid)) == (
        "SIGTERM EPERM, SIGHUP EPERM, SIGINT EPERM, SIGKILL EPERM"
    )
    assert d.running() and d.ctl("show").returncode == 0
    assert netns.read_mfc(topo.router, 4), "the routes must still be installed"
    assert "reloading" not in d.log()
    assert d.stop() == 0

    # -p nobody remains possible when asked for, with a warning ... and then
    # nobody can signal it (which is why it is not the default).
    d2 = ours(topo.router, conf, "-p", "nobody", ident=d.ident + "n")
    assert ids(d2.pid) == (NOBODY.pw_uid, NOBODY.pw_gid)
    log = d2.log()
    assert "running as nobody:" in log and "shared by other services" in log
    assert "without -p it runs under an identity of its own" in log
    assert as_nobody(lambda: str(os.kill(d2.pid, 0))) == "None"


def all_pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def uid_or_none(pid: int) -> int | None:
    try:
        return netns.proc_uid(pid)
    except (OSError, KeyError, ValueError, IndexError):
        return None


def test_unknown_user_is_a_clear_error(topology: Callable[..., RouterTopology]) -> None:
    topo = topology(1)
    d = Daemon(topo.router, netns.OUR_DAEMON, "", extra_args=["-p", "no-such-user-x"])
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(timeout=30) == 77
    d.stop()
    log = d.log()
    assert "cannot choose the main process's identity: unknown user 'no-such-user-x'" in log
    assert "Traceback" not in log
    assert netns.read_vifs(topo.router, 4) == []
