"""The janitor (privsep/janitor.py) on its own: what it removes, what it leaves,
and that it waits for both the main process and the helper."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from smcroute.privsep.client import boot_argv


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.sock_path = str(tmp / "d.sock")
        self.pidfile = str(tmp / "d.pid")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.sock_path)
        self.main_pid = os.getpid()  # the janitor's parent plays the main process
        Path(self.pidfile).write_text(f"{self.main_pid}\n")
        self.helper = subprocess.Popen(["sleep", "600"])
        pidfd = os.pidfd_open(self.helper.pid)
        argv = ["--helper-pidfd", str(pidfd), "--main-pid", str(self.main_pid)]
        argv += ["--ctlsock", self.sock_path, "--pidfile", self.pidfile]
        try:
            self.janitor = subprocess.Popen(
                [*boot_argv("smcroute.privsep.janitor"), *argv],
                pass_fds=[pidfd],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        finally:
            os.close(pidfd)
        deadline = time.monotonic() + 30
        while not self.holds_socket():  # set up (signals ignored), socket recorded
            assert time.monotonic() < deadline and self.janitor.poll() is None
            time.sleep(0.01)

    def holds_socket(self) -> bool:
        fds = Path(f"/proc/{self.janitor.pid}/fd")
        try:
            return any(os.readlink(fd) == self.sock_path for fd in fds.iterdir())
        except OSError:
            return False

    def close(self) -> None:
        self.helper.kill()
        self.helper.wait()
        if self.janitor.poll() is None:
            self.janitor.kill()
            self.janitor.wait()
        self.sock.close()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.close()


def test_removes_both_once_main_and_helper_are_gone(setup: Setup) -> None:
    os.kill(setup.janitor.pid, signal.SIGTERM)  # meant for the daemon: ignored
    os.kill(setup.janitor.pid, signal.SIGHUP)
    assert setup.janitor.stdin is not None
    setup.janitor.stdin.close()  # the main process is done
    assert setup.janitor.poll() is None  # ... but the helper still runs
    assert os.path.exists(setup.sock_path) and os.path.exists(setup.pidfile)
    setup.helper.kill()
    assert setup.janitor.stdout is not None
    out = setup.janitor.stdout.read()
    assert setup.janitor.wait(timeout=30) == 0
    assert out.decode().splitlines() == [
        f"removed the control socket {setup.sock_path}",
        f"removed the PID file {setup.pidfile}",
    ]
    assert not os.path.exists(setup.sock_path) and not os.path.exists(setup.pidfile)


def test_leaves_what_a_newer_daemon_made(setup: Setup) -> None:
    os.unlink(setup.sock_path)  # a new daemon bound its own socket at the same path
    newer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    newer.bind(setup.sock_path)
    Path(setup.pidfile).write_text("999999\n")  # ... and wrote its own pid
    setup.helper.kill()
    out, _ = setup.janitor.communicate(timeout=30)
    newer.close()
    assert out == b"" and setup.janitor.returncode == 0
    assert os.path.exists(setup.sock_path) and Path(setup.pidfile).read_text() == "999999\n"


def test_nothing_to_do_after_a_clean_stop(setup: Setup) -> None:
    os.unlink(setup.sock_path)  # removed already (say, by an administrator)
    os.unlink(setup.pidfile)
    setup.helper.kill()
    out, _ = setup.janitor.communicate(timeout=30)
    assert out == b"" and setup.janitor.returncode == 0


def test_bad_arguments_are_a_usage_error() -> None:
    r = subprocess.run(
        [*boot_argv("smcroute.privsep.janitor"), "--main-pid", "x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 64 and "usage:" in r.stderr and "Traceback" not in r.stderr
