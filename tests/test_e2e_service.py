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
