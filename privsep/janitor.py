"""The janitor: writes the PID file while smcrouted runs, and removes the
control socket and PID file once smcrouted has ended, whichever way it ended.

It alone removes them (the privileged helper could not after kill -9), and
the main process, unprivileged, may neither create nor remove root's files
in a folder only root can write (/run).  So right after spawning the helper,
the main process (still root) forks this third process, `smcrouted:
janitor`: user ID 0 -- the owner of /run, which is all creating and
unlinking there needs -- with no capability at all, no-new-privs and locked
securebits (dropped right after the fork, see `start`), holding nothing but
a pidfd of the helper and, as its stdin, one end of a socketpair with the
main process.  It runs `main` in its copy of the main process, which holds
little more than smcrouted's command line, identity and spawning code by
then (the daemon's modules come later); no exec: a second interpreter's
start was ~12 ms of CPU at every start of the daemon, on the core the
helper starts on, and its memory is no larger (~9.5 MiB).

On that socketpair the main process asks `pidfile` (when the daemon is
ready, and after each reload): the janitor writes the main process's pid
into the PID file (O_NOFOLLOW), or touches it if it already names that
pid, and answers the errno in decimal (0: done).  When the
socketpair reaches end of file (the main process has finished, or was
killed) and the helper has exited, it removes the control socket if it is
still the one the daemon bound (same device and inode, held open with O_PATH
so the number cannot be reused) and the PID file if it still names the main
process, reports on stdout what it removed (the main process logs that, if
it is still there) and exits.  The main process waits for it before exiting
itself, so after a normal end, `-D`, `smcroutectl kill` or kill -9 of the
helper, nothing is left by the time the daemon's exit status is known; after
kill -9 of the main process the helper, then the janitor, clean up within
milliseconds.

Must not: write or remove anything else, or anything a newer daemon made;
take a path or a pid from the socketpair (both are fixed when it is forked,
as its arguments); hold any capability; import anything but `prctl` (what
it runs is this module, `os`, `select` and `stat`; it also runs on its own:
`python -I -S -c smcroute.privsep.client._BOOT ... smcroute.privsep.janitor
ARGS`); end on the signals meant for the daemon (SIGTERM, SIGINT and SIGHUP
are ignored: it ends by itself once the daemon has).
"""

from __future__ import annotations

import _signal
import errno
import os
import select
import stat
import sys

# The janitor is an interpreter of its own: `typing`, `contextlib` and
# `signal` would bring `re`, `enum`, `collections` and `functools` into it
# (~15 ms of CPU at every start, on the core the helper starts on).
# `TYPE_CHECKING` is spelt out (type checkers treat the name as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import IO

    from .spawn import Child

TITLE = "smcrouted: janitor"
FINISH_TIMEOUT = 5.0  # s the main process waits for the janitor at exit


class Janitor:
    """The running janitor, seen from the main process."""

    def __init__(self, proc: Child, sock: socket.socket) -> None:
        self.proc = proc
        self.sock = sock

    @property
    def pid(self) -> int:
        return self.proc.pid

    def started(self) -> None:
        """After `start(wait=False)`: wait until it runs.  Raises OSError
        (it is then gone)."""
        from .spawn import SpawnError

        try:
            self.proc.exec_done()
        except (OSError, SpawnError) as e:
            self.sock.close()
            if isinstance(e, SpawnError):
                raise OSError(f"cannot drop the janitor's privileges: {e}") from None
            raise

    def discard(self) -> None:
        """The daemon does not start after all: end it before it does anything
        (it acts only once our end of its stdin is closed)."""
        self.proc.kill()
        self.proc.wait()
        self.sock.close()
        if self.proc.stdout is not None:
            os.close(self.proc.stdout)
            self.proc.stdout = None

    def write_pidfile(self, timeout: float = FINISH_TIMEOUT) -> int:
        """Have our pid written into the PID file (touched later on); an errno."""
        try:
            self.sock.settimeout(timeout)
            self.sock.send(b"pidfile")
            return int(self.sock.recv(16))
        except TimeoutError:
            return errno.ETIMEDOUT
        except OSError as e:
            return e.errno or errno.EIO
        except ValueError:  # end of file: the janitor is gone
            return errno.EPIPE

    def finish(self, timeout: float = FINISH_TIMEOUT) -> list[str]:
        """We are done (the helper has exited): let it clean up; what it removed."""
        from .spawn import TimeoutExpired

        proc = self.proc
        self.sock.close()
        try:
            out, _ = proc.communicate(timeout=timeout)
        except TimeoutExpired:
            proc.kill()
            proc.wait()
            return ["did not finish in time: killed"]
        except OSError:
            return []
        return [line for line in out.decode(errors="replace").splitlines() if line]


def start(helper_pid: int, ctlsock: str, pidfile: str, *, wait: bool = True) -> Janitor:
    """Spawn the janitor for this (main) process and the helper `helper_pid`.

    Must be called as root, before the privilege drop.  Raises OSError when it
    cannot be started (no pidfd support, for instance).  With `wait=False` it
    returns once forked, and `Janitor.started()` waits until it runs (its
    privileges dropped).
    """
    import socket

    from smcroute.identity import drop_parent_privileges

    from .spawn import PIPE, spawn

    pidfd = os.pidfd_open(helper_pid)
    argv = ["--helper-pidfd", str(pidfd), "--main-pid", str(os.getpid())]
    argv += ["--ctlsock", os.path.abspath(ctlsock) if ctlsock else ""]
    argv += ["--pidfile", os.path.abspath(pidfile) if pidfile else ""]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        proc = spawn(
            [TITLE],
            pass_fds=[pidfd],
            stdin=theirs.fileno(),
            stdout=PIPE,
            # uid 0 without a single capability, no-new-privs, securebits locked:
            # nothing it runs can gain any back.
            preexec=lambda: drop_parent_privileges(0, os.getgid(), "root"),
            wait=False,
            target=lambda: _forked(argv),
        )
    except OSError:
        ours.close()
        raise
    finally:
        os.close(pidfd)
        theirs.close()
    janitor = Janitor(proc, ours)
    if wait:
        janitor.started()
    return janitor


# --- the janitor process ----------------------------------------------------------


def _forked(argv: list[str]) -> int:
    """`main` in the forked copy of the main process (see `start`)."""
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115  (not the parent's buffer)
    return main(argv)


def _serve(pidfd: int, pidfile: str, main_pid: int) -> None:
    """Answer PID file requests until the main process has closed its end of
    our stdin and the helper has exited."""
    poller = select.poll()
    poller.register(0, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    waiting = {0, pidfd}
    while waiting:
        for fd, _ev in poller.poll():
            if fd == 0:
                try:
                    request = os.read(0, 512)
                except OSError:
                    request = b""
                if request:
                    err = (
                        _write_pidfile(pidfile, main_pid) if request == b"pidfile" else errno.EINVAL
                    )
                    try:
                        os.write(0, str(err).encode())
                    except OSError:
                        pass
                    continue
            poller.unregister(fd)
            waiting.discard(fd)


def _write_pidfile(path: str, pid: int) -> int:
    """Write `pid` into the PID file, or touch it if it names `pid` already; an errno."""
    if not path:
        return errno.ENOENT
    try:
        if _names(path, pid):
            os.utime(path, follow_symlinks=False)
            return 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(path, flags, 0o644), "w", encoding="ascii") as f:
            f.write(f"{pid}\n")
        return 0
    except OSError as e:
        return e.errno or errno.EIO


def _remove(path: str, ours: bool, what: str) -> str | None:
    if not ours:
        return None
    try:
        os.unlink(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot remove the {what} {path}: {e.strerror}"
    return f"removed the {what} {path}"


def _socket_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISSOCK(st.st_mode) else None


def _hold(path: str) -> int:
    """An O_PATH handle on the socket file: while we hold it, its inode number
    cannot be given to a newer daemon's socket at the same path."""
    try:
        return os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return -1


def _names(path: str, pid: int) -> bool:
    """The PID file at `path` still holds `pid` (and nothing else)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, 64).strip() == str(pid).encode()
    finally:
        os.close(fd)


def _report(out: IO[str], lines: list[str]) -> None:
    try:
        for line in lines:
            out.write(line + "\n")
        out.flush()
    except (OSError, ValueError):  # the main process may be gone
        pass


def main(argv: list[str]) -> int:
    for sig in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGPIPE):
        _signal.signal(sig, _signal.SIG_IGN)
    try:
        import prctl  # type: ignore[import-untyped, unused-ignore]

        prctl.set_name("smcrouted-jan")
        prctl.set_proctitle(TITLE)
    except (ImportError, OSError, ValueError):
        pass
    opts = dict(zip(argv[::2], argv[1::2], strict=False))
    try:
        pidfd, main_pid = int(opts["--helper-pidfd"]), int(opts["--main-pid"])
        ctlsock, pidfile = opts["--ctlsock"], opts["--pidfile"]
    except (KeyError, ValueError):
        usage = "--helper-pidfd FD --main-pid PID --ctlsock PATH --pidfile PATH"
        sys.stderr.write(f"{TITLE}: usage: {usage}\n")
        return 64
    os.closerange(3, pidfd)
    os.closerange(pidfd + 1, 1 << 16)
    try:
        os.chdir("/")
    except OSError:
        pass
    held = _hold(ctlsock) if ctlsock else -1
    sock_id = _socket_id(ctlsock) if held >= 0 else None
    if sock_id is not None and sock_id != (os.fstat(held).st_dev, os.fstat(held).st_ino):
        sock_id = None  # replaced between the two calls: not ours
    _serve(pidfd, pidfile, main_pid)
    done = [
        _remove(ctlsock, sock_id is not None and _socket_id(ctlsock) == sock_id, "control socket"),
        _remove(pidfile, bool(pidfile) and _names(pidfile, main_pid), "PID file"),
    ]
    _report(sys.stdout, [line for line in done if line])
    return 0
