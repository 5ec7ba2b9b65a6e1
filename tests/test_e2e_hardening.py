"""End to end, our daemon in a hostile environment (issue 12): an identity no
other service shares, nothing stale left however it ends, and the operator
always served by the control socket.

Each test runs our daemon in its own network namespaces (tests/netns.py).
"""

from __future__ import annotations

import os
import pwd
import signal
import threading
import time
from collections.abc import Callable

import ctl_attack
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


# ---------------------------------------------------------------------------
# Part 2: nothing stale, whichever way it ends
# ---------------------------------------------------------------------------


def roles(d: Daemon) -> dict[str, int]:
    """The pids of the main process, the helper and the janitor (titled so)."""
    kids = netns.children(d.pid)
    out = {"main": d.pid}
    for pid in kids:
        out["janitor" if "janitor" in netns.cmdline(pid) else "helper"] = pid
    assert len(out) == len(kids) + 1, [netns.cmdline(p) for p in kids]
    return out


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


WAYS = ["SIGTERM", "SIGINT", "-D", "smcroutectl kill", "kill -9 helper", "kill -9 main"]


@pytest.mark.parametrize("way", [*WAYS, "kill -9 all"])
def test_nothing_stale_whichever_way_it_ends(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon], way: str
) -> None:
    topo = topology(1)
    conf = f"mroute from a1 source {topo.source4} group 225.1.1.1 to a2\n"
    d = ours(topo.router, conf, *(["-D", "10"] if way == "-D" else []))
    pids = roles(d)
    assert os.path.exists(d.sock) and os.path.exists(d.pidfile)
    if way in ("SIGTERM", "SIGINT"):
        os.kill(d.pid, getattr(signal, way))
    elif way == "smcroutectl kill":
        assert d.ctl("kill").returncode == 0
    elif way.startswith("kill -9 "):
        # all: janitor and helper first, so that neither can clean up after the other
        order = ("janitor", "helper", "main") if way == "kill -9 all" else (way[8:],)
        victims = [pids[k] for k in order if k in pids]
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
    assert d.proc is not None
    code = d.proc.wait(timeout=30)
    assert code == {"SIGTERM": 0, "SIGINT": 0, "-D": 0, "smcroutectl kill": 0}.get(way, code)
    if way == "kill -9 helper":
        assert code == 70
    netns.wait_until(
        lambda: all(gone(p) for p in pids.values()), timeout=20, what="every process gone"
    )
    assert netns.read_mfc(topo.router, 4) == [] and netns.read_vifs(topo.router, 4) == []
    r = d.ctl("show", check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    if way == "kill -9 all":
        # Nobody is left to clean up: the man page names these two files, and
        # smcroutectl and the next start handle them.
        assert os.path.exists(d.sock) and os.path.exists(d.pidfile)
        assert "connection refused (is smcrouted running?)" in r.stderr
    else:
        assert not os.path.exists(d.sock), f"control socket left after {way}"
        assert not os.path.exists(d.pidfile), f"PID file left after {way}"
        assert r.stderr.strip() == f"smcroutectl: Cannot find IPC socket {d.sock}"
    again = ours(topo.router, conf, ident=d.ident, workdir=str(d.dir))
    assert again.running() and netns.read_mfc(topo.router, 4)
    netns.wait_until(lambda: os.path.exists(again.pidfile), what="the new PID file")
    with open(again.pidfile) as f:
        assert f.read() == f"{again.pid}\n"
    assert again.ctl("show").returncode == 0


# ---------------------------------------------------------------------------
# Part 3: the operator is always served
# ---------------------------------------------------------------------------


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid: int) -> int:
    """The daemon's open files once no connection is in flight: the start-up probe's
    connection may still be open when the daemon is first seen ready, and counting it
    would make the 64 idle clients look like 63."""
    reads = [open_fds(pid)]
    while len(reads) < 3 or len(set(reads[-3:])) > 1:
        time.sleep(0.1)
        reads.append(open_fds(pid))
        assert len(reads) < 100, f"the daemon's open files never settle: {reads}"
    return reads[-1]


ATTACKS = ["idle", "reconnecting idle + storm", "storm", "10 MB line", "10 MB of requests"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_operator_is_served_whatever_other_clients_do(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon], attack: str
) -> None:
    topo = topology(1)
    d = ours(topo.router, f"mroute from a1 source {topo.source4} group 225.1.1.1 to a2\n")
    idle: ctl_attack.Idle | None = None
    storm: ctl_attack.Storm | None = None
    big: list[tuple[int, bytes]] = []
    sender: threading.Thread | None = None
    base = settled_fds(d.pid)
    if attack == "idle":
        idle = ctl_attack.Idle(d.sock, 100).start()  # more than the daemon keeps
        netns.wait_until(
            lambda: open_fds(d.pid) >= base + 64, timeout=30, what="64 idle clients accepted"
        )
    elif attack.startswith("reconnecting"):
        idle = ctl_attack.Idle(d.sock, 64, reconnect=True).start()
        storm = ctl_attack.Storm(d.sock, rate=300).start()
    elif attack == "storm":
        storm = ctl_attack.Storm(d.sock).start()  # as fast as it can
    else:
        pipelined = attack == "10 MB of requests"
        sender = threading.Thread(
            target=lambda: big.append(ctl_attack.send_big(d.sock, 10 << 20, pipelined=pipelined))
        )
        sender.start()
    try:
        for _ in range(5):
            r = d.ctl("show", check=False)
            assert r.returncode == 0, f"under attack {attack!r}: {r.stderr}"
            assert "225.1.1.1" in r.stdout
        if storm is not None:
            netns.wait_until(lambda: storm.count > 100, timeout=60, what="the storm to go on")
            assert d.ctl("show", check=False).returncode == 0
    finally:
        for a in (idle, storm):
            if a is not None:
                a.stop()
        if sender is not None:
            sender.join(timeout=60)
    assert d.running() and d.ctl("show").returncode == 0
    if attack == "10 MB line":
        sent, answer = big[0]
        assert b"request too large" in answer and sent < 10 << 20
    assert "Traceback" not in d.log()
