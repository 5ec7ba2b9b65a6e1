"""Starting the helper and the janitor: fork, prepare, exec, as `subprocess` does.

Owns `spawn` (what the main process used of `subprocess.Popen`: stdin and
stdout as /dev/null, a descriptor or a pipe, `pass_fds`, every other
descriptor closed, SIGPIPE back to its default, a function run in the child
before exec, and exec failures raised in the parent) and `Child` (`pid`,
`poll`, `wait`, `kill`, `communicate`, `returncode`).  `subprocess` itself
costs smcrouted's start ~4 ms of CPU in imports (`threading`, `locale`,
`selectors`, ...) for two programs started once.  Unlike `subprocess`, the
caller may learn whether the exec succeeded later (`wait=False`, then
`Child.exec_done`): the main process imports its modules meanwhile, instead
of waiting ~5 ms per program for the child's preparation and exec.

Must not: run anything but the given argv, or leave a descriptor to the
child that it was not given.
"""

from __future__ import annotations

import _signal
import contextlib
import errno
import os
import select
import time

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

DEVNULL = -3  # (subprocess' values)
PIPE = -1
_PREEXEC_FAILED = "Exception occurred in preexec_fn."  # subprocess' words


class SpawnError(Exception):
    """The function run in the child before exec raised (subprocess.SubprocessError)."""


class TimeoutExpired(Exception):  # (subprocess' name)
    """`wait` or `communicate` ran out of time."""


class Child:
    """A started program."""

    def __init__(self, pid: int, stdout: int | None, report: int, argv0: str) -> None:
        self.pid = pid
        self.stdout = stdout  # our end of its stdout pipe, if any
        self.returncode: int | None = None
        self._report = report  # end of file once it has exec'd; else why not
        self._argv0 = argv0

    def exec_done(self) -> None:
        """Wait until it has exec'd.  Raises OSError as the exec failed,
        SpawnError if the function run before it raised (it has exited)."""
        if self._report < 0:
            return
        report = b""
        try:
            while chunk := os.read(self._report, 64):
                report += chunk
        finally:
            os.close(self._report)
            self._report = -1
        if not report:
            return
        self.wait()
        if self.stdout is not None:
            os.close(self.stdout)
            self.stdout = None
        stage, _, number = report.partition(b":")
        code = int(number or 0)
        if stage == b"exec":
            raise OSError(code, os.strerror(code), self._argv0)
        raise SpawnError(_PREEXEC_FAILED)

    def poll(self) -> int | None:
        """Its exit status (negative: killed by that signal) once it has exited."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self.returncode
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            while self.returncode is None:
                try:
                    _, status = os.waitpid(self.pid, 0)
                except ChildProcessError:
                    self.returncode = 255  # reaped elsewhere: unknowable
                    break
                except InterruptedError:
                    continue
                self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while (code := self.poll()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutExpired(f"process {self.pid} did not exit within {timeout:g} s")
            delay = min(delay * 2, left, 0.05)
            time.sleep(delay)
        return code

    def kill(self) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, _signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[bytes, None]:
        """Everything it writes on stdout until it exits (then its status is known)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[bytes] = []
        fd, self.stdout = self.stdout, None
        try:
            while fd is not None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutExpired(f"process {self.pid} did not finish within {timeout} s")
                ready, _, _ = select.select([fd], [], [], left)
                if not ready:
                    continue
                data = os.read(fd, 65536)
                if not data:
                    break
                out.append(data)
        finally:
            if fd is not None:
                os.close(fd)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.wait(left)
        return b"".join(out), None


def spawn(
    argv: Sequence[str],
    *,
    pass_fds: Sequence[int] = (),
    stdin: int = DEVNULL,
    stdout: int = DEVNULL,
    preexec: Callable[[], object] | None = None,
    wait: bool = True,
    target: Callable[[], int] | None = None,
) -> Child:
    """Fork, and exec `argv` in the child with `stdin` and `stdout` (DEVNULL, a
    descriptor, or PIPE for stdout), stderr as ours, `pass_fds` kept open and
    every other descriptor closed, after `preexec()`.  Returns once the child
    has exec'd (with `wait=False` at once: see `Child.exec_done`).  Raises
    OSError as the exec failed, SpawnError if `preexec` raised.

    With `target` the child execs nothing: after `preexec` it runs `target()`
    in this interpreter's copy and exits with its status (`argv` unused)."""
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    out_r = out_w = -1
    if stdout == PIPE:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:
        for fd in (err_r, err_w, out_r, out_w):
            if fd >= 0:
                os.close(fd)
        raise
    if pid == 0:  # the child: nothing may return from here
        stage = b"preexec"
        try:
            os.close(err_r)
            null = os.open(os.devnull, os.O_RDWR) if DEVNULL in (stdin, stdout) else -1
            os.dup2(null if stdin == DEVNULL else stdin, 0)
            os.dup2({DEVNULL: null, PIPE: out_w}.get(stdout, stdout), 1)
            keep = sorted({0, 1, 2, err_w, *pass_fds})
            for fd in pass_fds:
                os.set_inheritable(fd, True)
            for low, high in zip(keep, [*keep[1:], 1 << 16], strict=True):
                os.closerange(low + 1, high)  # err_w is close-on-exec
            _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
            _signal.signal(_signal.SIGXFSZ, _signal.SIG_DFL)
            if preexec is not None:
                preexec()
            if target is not None:
                os.close(err_w)  # (as an exec would): it has started
                code = 70
                try:
                    code = target()
                finally:
                    os._exit(code)
            stage = b"exec"
            os.execv(argv[0], list(argv))
        except OSError as e:
            code = e.errno or errno.EIO
            os.write(err_w, stage + b":%d" % code)
        except BaseException:
            os.write(err_w, b"preexec:0")
        finally:
            os._exit(255)
    os.close(err_w)
    if out_w >= 0:
        os.close(out_w)
    child = Child(pid, out_r if out_r >= 0 else None, err_r, argv[0])
    if wait:
        child.exec_done()
    return child
