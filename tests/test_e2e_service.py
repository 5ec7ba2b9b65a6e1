"""End to end: our daemon as a supervised service — sd_notify over start,
reload and stop, the PID file, and smcroutectl as a non-root user."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import netns
import pytest
from netns import Daemon, RouterTopology

pytestmark = pytest.mark.netns


def _recv_all(sock: socket.socket, until: str, timeout: float = 15.0) -> list[str]:
    msgs: list[str] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            msgs.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if until in msgs[-1]:
            return msgs
    raise AssertionError(f"no {until!r} among {msgs}")


def test_sd_notify_start_reload_stop(
    topology: Callable[..., RouterTopology], monkeypatch: pytest.MonkeyPatch
) -> None:
    topo = topology(1)
    tmp = tempfile.mkdtemp(prefix="smct-notify-")
    os.chmod(tmp, 0o755)
    path = os.path.join(tmp, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    os.chmod(path, 0o777)  # the daemon's main process runs unprivileged
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    src = topo.source4
    d = Daemon(
        topo.router, netns.OUR_DAEMON, f"mroute from a1 source {src} group 225.1.1.1 to a2\n"
    )
    try:
        d.start()
        start = _recv_all(sock, "READY=1")
        assert "STATUS=" in start[-1]
        before = os.stat(d.pidfile).st_mtime_ns
        assert Path(d.pidfile).read_text().strip() == str(d.pid)
        time.sleep(0.05)
        os.kill(d.pid, signal.SIGHUP)
        reload = _recv_all(sock, "READY=1")
        assert "RELOADING=1" in reload[0] and "MONOTONIC_USEC=" in reload[0]
        assert os.stat(d.pidfile).st_mtime_ns > before  # touched after the reload
        assert d.stop() == 0
        stop = _recv_all(sock, "STOPPING=1")
        assert stop
        order = [m.split("\n")[0] for m in start + reload + stop]
        assert order.index("RELOADING=1") > order.index("READY=1")
        assert order[-1] == "STOPPING=1"
    finally:
        d.stop()
        sock.close()
        os.unlink(path)
        os.rmdir(tmp)


def test_ctl_as_non_root_is_a_clear_error(topology: Callable[..., RouterTopology]) -> None:
    topo = topology(1)
    d = Daemon(topo.router, netns.OUR_DAEMON, "")
    try:
        d.start()
        # The venv's interpreter may live where a non-root user cannot enter
        # (/root): run the client with Debian's python3 on our source tree.
        site = next((netns.REPO / ".venv" / "lib").glob("python3*/site-packages"))
        env = dict(os.environ, PYTHONPATH=f"{netns.REPO}:{site}")
        r = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-m",
                "smcroute.ctl",
                "-u",
                d.sock,
                "show",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd="/",
        )
        assert r.returncode == 1
        assert "smcroutectl:" in r.stderr and "root" in r.stderr
        assert "Traceback" not in r.stderr
    finally:
        d.stop()


def test_pid_file_that_cannot_be_written_is_logged_and_routing_goes_on(
    topology: Callable[..., RouterTopology],
) -> None:
    """The janitor writes the PID file; a failure is the main process's error
    line, with the path and the reason, at start and at each reload."""
    topo = topology(1)
    d = Daemon(topo.router, netns.OUR_DAEMON, "")
    target = d.dir / "elsewhere"
    d.pidfile = str(d.dir / "link.pid")
    os.symlink(target, d.pidfile)  # O_NOFOLLOW: never written through
    try:
        d.start()
        line = f"cannot write PID file {d.pidfile}: Too many levels of symbolic links"
        netns.wait_until(lambda: line in d.log(), what="the PID file error")
        assert d.ctl("show").returncode == 0
        os.kill(d.pid, signal.SIGHUP)
        netns.wait_until(lambda: d.log().count(line) == 2, what="the error again after reload")
        assert not target.exists() and os.path.islink(d.pidfile)
        assert d.stop() == 0
        log = d.log()  # not ours: the janitor leaves it
        assert "removed the control socket" in log and "removed the PID file" not in log
    finally:
        d.stop()
