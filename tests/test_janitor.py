"""The janitor (privsep/janitor.py) on its own: the PID file it writes and
touches, what it removes, what it leaves, and that it waits for both the main
process and the helper."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from smcroute.privsep.client import boot_argv
from smcroute.privsep.janitor import Janitor


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.sock_path = str(tmp / "d.sock")
        self.pidfile = str(tmp / "d.pid")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.sock_path)
        self.main_pid = os.getpid()  # the janitor's parent plays the main process
        Path(self.pidfile).write_text(f"{self.main_pid}\n")
        self.helper = subprocess.Popen(["sleep", "600"])
        self.main_end, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pidfd = os.pidfd_open(self.helper.pid)
        argv = ["--helper-pidfd", str(pidfd), "--main-pid", str(self.main_pid)]
        argv += ["--ctlsock", self.sock_path, "--pidfile", self.pidfile]
        try:
            self.janitor = subprocess.Popen(
                [*boot_argv("smcroute.privsep.janitor"), *argv],
                pass_fds=[pidfd],
                stdin=theirs.fileno(),
                stdout=subprocess.PIPE,
            )
        finally:
            os.close(pidfd)
            theirs.close()
        self.handle = Janitor(self.janitor, self.main_end)  # as the main process sees it
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
        self.main_end.close()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.close()


def test_removes_both_once_main_and_helper_are_gone(setup: Setup) -> None:
    os.kill(setup.janitor.pid, signal.SIGTERM)  # meant for the daemon: ignored
    os.kill(setup.janitor.pid, signal.SIGHUP)
    setup.main_end.close()  # the main process is done
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
    out = setup.handle.finish(timeout=30)  # closes the main process's end
    newer.close()
    assert out == [] and setup.janitor.returncode == 0
    assert os.path.exists(setup.sock_path) and Path(setup.pidfile).read_text() == "999999\n"


def test_nothing_to_do_after_a_clean_stop(setup: Setup) -> None:
    os.unlink(setup.sock_path)  # removed already (say, by an administrator)
    os.unlink(setup.pidfile)
    setup.helper.kill()
    assert setup.handle.finish(timeout=30) == [] and setup.janitor.returncode == 0


def test_writes_the_pid_file_then_touches_it(setup: Setup) -> None:
    os.unlink(setup.pidfile)
    assert setup.handle.write_pidfile() == 0
    assert Path(setup.pidfile).read_text() == f"{setup.main_pid}\n"
    assert os.stat(setup.pidfile).st_mode & 0o777 == 0o644
    os.utime(setup.pidfile, (1, 1))
    ino = os.stat(setup.pidfile).st_ino
    assert setup.handle.write_pidfile() == 0  # a reload: touched, the same file
    assert os.stat(setup.pidfile).st_mtime > 1 and os.stat(setup.pidfile).st_ino == ino
    Path(setup.pidfile).write_text("999999\n")  # someone else's: written again
    assert setup.handle.write_pidfile() == 0
    assert Path(setup.pidfile).read_text() == f"{setup.main_pid}\n"
    setup.main_end.send(b"something else")
    assert setup.main_end.recv(16) == str(errno.EINVAL).encode()
    setup.helper.kill()
    assert setup.handle.finish(timeout=30) == [
        f"removed the control socket {setup.sock_path}",
        f"removed the PID file {setup.pidfile}",
    ]


def test_pid_file_errors_are_errnos(setup: Setup, tmp_path: Path) -> None:
    os.unlink(setup.pidfile)
    os.symlink(tmp_path / "elsewhere", setup.pidfile)  # O_NOFOLLOW: not followed
    assert setup.handle.write_pidfile() == errno.ELOOP
    assert not (tmp_path / "elsewhere").exists()
    os.unlink(setup.pidfile)
    os.mkdir(setup.pidfile)
    assert setup.handle.write_pidfile() == errno.EISDIR
    os.rmdir(setup.pidfile)
    setup.helper.kill()
    assert setup.handle.finish(timeout=30) == [f"removed the control socket {setup.sock_path}"]
    assert setup.handle.write_pidfile() != 0  # gone: an errno, no exception


def test_bad_arguments_are_a_usage_error() -> None:
    r = subprocess.run(
        [*boot_argv("smcroute.privsep.janitor"), "--main-pid", "x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 64 and "usage:" in r.stderr and "Traceback" not in r.stderr
