"""smcroute.privsep.spawn: starts a program as subprocess.Popen did for the
helper and the janitor (descriptors, preexec, errors with the same words)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from smcroute.privsep.spawn import PIPE, SpawnError, TimeoutExpired, spawn

PY = sys.executable


def test_pass_fds_stdin_and_stdout_pipe() -> None:
    kept_r, kept_w = os.pipe()
    other_r, other_w = os.pipe()
    os.set_inheritable(other_w, True)  # inheritable, but not passed: closed in the child
    in_r, in_w = os.pipe()
    os.write(in_w, b"from stdin")
    os.close(in_w)
    code = (
        "import os, sys\n"
        f"os.write({kept_w}, b'kept')\n"
        f"try:\n    os.fstat({other_w}); print('other open')\n"
        "except OSError: print('other closed')\n"
        "print(sys.stdin.read())\n"
    )
    try:
        child = spawn([PY, "-c", code], pass_fds=[kept_w], stdin=in_r, stdout=PIPE)
        out, _ = child.communicate(timeout=20)
        assert child.returncode == 0
        assert out.decode().split("\n")[:2] == ["other closed", "from stdin"]
        assert os.read(kept_r, 16) == b"kept"
    finally:
        for fd in (kept_r, kept_w, other_r, other_w, in_r):
            os.close(fd)


def test_errors_as_subprocess_words_them() -> None:
    missing = "/nonexistent/smcroute-test-binary"
    with pytest.raises(OSError) as ours:
        spawn([missing])
    with pytest.raises(OSError) as theirs:
        subprocess.Popen([missing])
    assert str(ours.value) == str(theirs.value) and type(ours.value) is type(theirs.value)

    def fail() -> None:
        raise OSError(1, "no")

    with pytest.raises(SpawnError) as e:
        spawn([PY, "-c", "pass"], preexec=fail)
    with pytest.raises(subprocess.SubprocessError) as e2:
        subprocess.Popen([PY, "-c", "pass"], preexec_fn=fail)
    assert str(e.value) == str(e2.value)


def test_wait_poll_kill() -> None:
    child = spawn([PY, "-c", "import time; time.sleep(30)"])
    assert child.poll() is None
    with pytest.raises(TimeoutExpired):
        child.wait(0.05)
    child.kill()
    assert child.wait(20) == -9 and child.poll() == -9
    done = spawn([PY, "-c", "raise SystemExit(3)"])
    assert done.wait() == 3


def test_target_runs_in_the_forked_copy() -> None:
    def target() -> int:
        os.write(1, b"ran here")
        return 7

    child = spawn(["unused"], stdout=PIPE, target=target, wait=False)
    child.exec_done()  # it has started: nothing to report
    out, _ = child.communicate(timeout=20)
    assert out == b"ran here" and child.returncode == 7

    def fail() -> None:
        raise OSError(1, "no")

    with pytest.raises(SpawnError):
        spawn(["unused"], preexec=fail, target=target)
