"""The daemon's handle on the privileged helper (the daemon side of the socketpair).

Owns: spawning the helper (`start_helper`), sending wire records in OPS
batches of at most `wire.MAX_BATCH` and waiting for each REPLY, handing on
the helper's LOG lines as they arrive (so they stay in order with the
replies and the daemon's own lines), buffering UPCALL and SOLICIT events
that arrive meanwhile, and noticing that the helper is gone (`HelperGone`).

Must not: execute anything privileged itself, know the engine (the daemon
turns engine operations into records: `smcroute.helper_wire`), or block the
daemon's event loop except while waiting for a REPLY (bounded by a timeout).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import sys
import syslog
import time
from collections.abc import Callable, Iterable
from itertools import islice

import smcroute

from . import caps, daemon_wire, wire
from .daemon_wire import Solicit, Upcall
from .spawn import Child, SpawnError, TimeoutExpired, spawn
from .wire import ProtoError, Record

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["Event", "HelperClient", "HelperGone", "LogSink", "start_helper"]

Event = Upcall | Solicit
LogSink = Callable[[int, str], None]  # (syslog level, text) of a helper log line

READ_BURST = 2048  # messages read per read_events() call
WINDOW = 4  # OPS batches in flight (each up to ~78 KB; fits SOCKBUF)
FIRST_BATCH = 64  # records in the first batch of a call; each next one 4 times more
SOCKBUF = 1 << 20
DEFAULT_TIMEOUT = 30.0

# Runs the helper as `python -I -S -c _BOOT SMCROUTE_DIR PRIVSEP_DIR LIBDIRS MODULE ...`:
# -S skips site (.pth processing, ~2.4 MB of RSS) and the stub packages skip
# smcroute/__init__.py (importlib.metadata, ~5 MB), which keeps the helper
# under 15 MB.  LIBDIRS (os.pathsep-separated) is where prctl lives.
# `python -I -m smcroute.privsep.child ARGS` works too, at a higher RSS.
# (`__import__`, not importlib.import_module: the `importlib` package and the
# `warnings` it imports are ~1 ms of the helper's start.)
_BOOT = (
    "import sys\n"
    "sys.path[:0] = [d for d in sys.argv[3].split(':') if d]\n"
    "for n, p in (('smcroute', sys.argv[1]), ('smcroute.privsep', sys.argv[2])):\n"
    "    m = type(sys)(n); m.__path__ = [p]; m.__package__ = n; sys.modules[n] = m\n"
    "sys.exit(__import__(sys.argv[4], fromlist=['main']).main(sys.argv[5:]))\n"
)


def boot_argv(module: str) -> list[str]:
    """The command line that runs `module`.main(ARGS) as above (append ARGS)."""
    pkgdir = os.path.dirname(os.path.abspath(smcroute.__file__ or "."))
    privdir = os.path.dirname(os.path.abspath(__file__))
    return [sys.executable, "-I", "-S", "-c", _BOOT, pkgdir, privdir, _libdirs(), module]


def _libdirs() -> str:
    """Directories the helper needs on sys.path without site: where prctl lives."""
    dirs: list[str] = []
    for mod in ("prctl", "_prctl"):
        loaded = sys.modules.get(mod)  # both are (by caps): no search, no importlib.util
        origin = getattr(loaded, "__file__", None)
        if loaded is None:
            import importlib.util

            spec = importlib.util.find_spec(mod)
            origin = spec.origin if spec is not None else None
        if origin:
            d = os.path.dirname(os.path.abspath(origin))
            if d not in dirs:
                dirs.append(d)
    return os.pathsep.join(dirs)


class HelperGone(Exception):
    """The privileged helper exited, crashed or stopped answering."""


def _stderr(level: int, text: str) -> None:
    sys.stderr.write(f"helper: {text}\n")


class HelperClient:
    """A running privileged helper, seen from the daemon."""

    def __init__(self, proc: Child, sock: socket.socket, log: LogSink = _stderr) -> None:
        self.proc = proc
        self.sock = sock
        self.log = log
        self._seq = 0
        self._events: list[Event] = []
        self._gone = False
        self._why = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The helper's exit status once it has exited, else None."""
        return self.proc.poll()

    @property
    def closed(self) -> bool:
        if not self._gone and self.proc.poll() is not None:
            self._mark_gone(f"privileged helper exited (status {self.proc.returncode})")
        return self._gone

    def fileno(self) -> int:
        return self.sock.fileno()

    # --- internals -----------------------------------------------------------
    def _mark_gone(self, why: str) -> None:
        if not self._gone:
            self._gone = True
            self._why = why

    def _raise_gone(self) -> NoReturn:
        if not self._why:
            self._why = "privileged helper is gone"
        rc = self.proc.poll()
        if rc is not None and "status" not in self._why:
            self._why += f" (exit status {rc})"
        raise HelperGone(self._why)

    def _recv(self, flags: int = 0) -> bytes | None:
        """One message; None when nothing is waiting (non-blocking mode)."""
        try:
            data = self.sock.recv(wire.MAX_MESSAGE + 1, flags)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as e:
            self._mark_gone(f"lost the privileged helper: {e.strerror}")
            self._raise_gone()
        if not data:
            self._mark_gone("privileged helper exited")
            self._raise_gone()
        return data

    def _buffer(self, data: bytes) -> daemon_wire.Message | None:
        """Log a LOG line now, buffer an event; return anything else."""
        try:
            msg = daemon_wire.decode(data)
        except ProtoError as e:
            self.log(syslog.LOG_ERR, f"malformed message from the helper: {e}")
            return None
        if isinstance(msg, daemon_wire.Log):
            self.log(msg.level, msg.text)
        elif isinstance(msg, Upcall | Solicit):
            self._events.append(msg)
        else:
            return msg
        return None

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            self._mark_gone(f"lost the privileged helper: {e.strerror}")
            self._raise_gone()

    def _request(self, data: bytes, seq: int, count: int, timeout: float) -> tuple[int, ...]:
        if self.closed:
            self._raise_gone()
        self._send(data)
        return self._await(seq, count, timeout)

    def _await(self, seq: int, count: int, timeout: float) -> tuple[int, ...]:
        """Wait for the REPLY to request `seq` (buffering upcalls and logs)."""
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._mark_gone(f"privileged helper did not answer within {timeout:g} s")
                self.proc.kill()
                self._raise_gone()
            if not poller.poll(left * 1000):
                continue
            raw = self._recv(socket.MSG_DONTWAIT)
            if raw is None:
                continue
            msg = self._buffer(raw)
            if isinstance(msg, daemon_wire.Reply) and msg.seq == seq:
                if len(msg.errnos) != count:
                    self.log(syslog.LOG_ERR, "the helper answered with the wrong number of results")
                    return tuple(msg.errnos[:count]) + (errno.EPROTO,) * (count - len(msg.errnos))
                return msg.errnos
            # a stale REPLY (after a timeout) or a request type: ignore

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    # --- API -------------------------------------------------------------------
    def started(self) -> None:
        """After `start_helper(wait=False)`: wait until the helper has exec'd and
        check that it holds exactly `caps.HELPER_CAPS`.  Raises OSError (the
        helper is then gone and this client closed)."""
        try:
            self.proc.exec_done()
        except (OSError, SpawnError) as e:
            self.sock.close()
            self._mark_gone("privileged helper did not start")
            if isinstance(e, SpawnError):
                raise OSError(f"cannot give the helper its capabilities: {e}") from None
            raise
        try:  # it has exec'd by now
            for warning in caps.check_child(self.proc.pid, caps.HELPER_CAPS):
                self.log(syslog.LOG_NOTICE, warning)
        except (OSError, caps.PrivilegeError) as e:
            self.proc.kill()
            self.proc.wait()
            self.sock.close()
            self._mark_gone("privileged helper did not start")
            raise OSError(f"cannot drop the helper's privileges: {e}") from None
        self.sock.setblocking(True)

    def execute(self, records: Iterable[Record], timeout: float = DEFAULT_TIMEOUT) -> list[int]:
        """Run `records` in the helper; one errno per record (0 = done), in order.

        A record that cannot be encoded gets EINVAL without being sent.
        Raises HelperGone if the helper is gone or does not answer within
        `timeout` seconds per batch.  `records` is read batch by batch: an
        iterator that makes them (the daemon's) makes the next batch while
        the helper runs the last one.
        """
        result: list[int] = []
        if self.closed:
            self._raise_gone()
        # Pipelined: up to WINDOW batches in flight, so that the helper's
        # kernel work overlaps with our making and encoding of the next batch;
        # the first batches are small, so that it starts at once.
        inflight: list[tuple[int, list[int]]] = []

        def collect() -> None:
            seq, index = inflight.pop(0)
            for i, err in zip(index, self._await(seq, len(index), timeout), strict=True):
                result[i] = err

        it = iter(records)
        size = FIRST_BATCH
        while batch := list(islice(it, size)):
            size = min(4 * size, wire.MAX_BATCH)
            start = len(result)
            result += [0] * len(batch)
            index = list(range(start, len(result)))
            seq = self._next_seq()
            try:
                data = daemon_wire.encode_ops(seq, batch)
            except ProtoError:  # rare: find the culprits, send the rest
                for i in list(index):
                    with contextlib.suppress(ProtoError):
                        daemon_wire.encode_ops(seq, [batch[i - start]])
                        continue
                    result[i] = errno.EINVAL
                    index.remove(i)
                if not index:
                    continue
                data = daemon_wire.encode_ops(seq, [batch[i - start] for i in index])
            self._send(data)
            inflight.append((seq, index))
            if len(inflight) >= WINDOW:
                collect()
        while inflight:
            collect()
        return result

    def has_events(self) -> bool:
        """Events already buffered (read while waiting for a reply).

        The socket is not readable for them any more: the caller's event loop
        must not wait for it before handling these.
        """
        return bool(self._events)

    def read_events(self, limit: int | None = None) -> list[Event]:
        """Buffered and newly arrived events (log lines are logged); never blocks.

        At most `limit` are returned; the rest stay buffered (`has_events`).

        Raises HelperGone once the helper is gone and nothing is left to return.
        """
        if not self._gone:
            try:
                # Bounded: a flood must not starve the caller, and what is
                # buffered never exceeds READ_BURST (the rest waits in the
                # socket, where the kernel drops upcalls once it is full).
                for _ in range(READ_BURST - len(self._events)):
                    raw = self._recv(socket.MSG_DONTWAIT)
                    if raw is None:
                        break
                    self._buffer(raw)
            except HelperGone:
                pass
        if limit is None or len(self._events) <= limit:
            events, self._events = self._events, []
        else:
            events, self._events = self._events[:limit], self._events[limit:]
        if not events and self._gone:
            self._raise_gone()
        return events

    def close(self, timeout: float = 5.0) -> int | None:
        """Close the channel (the helper then cleans up and exits) and wait for it."""
        self._mark_gone("privileged helper closed")
        with contextlib.suppress(OSError):
            self.sock.close()
        try:
            return self.proc.wait(timeout)
        except TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_helper(
    v4: socket.socket | None,
    v6: socket.socket | None,
    *,
    hook: str | None = None,
    log: LogSink = _stderr,
    wait: bool = True,
    s4: socket.socket | None = None,
    s6: socket.socket | None = None,
) -> HelperClient:
    """Spawn the privileged helper with the mroute sockets, the Solicitation
    sockets (`mroute.open_solicit`; none: no Solicitation is read) and exactly
    `caps.HELPER_CAPS`; close our copies.  Must be called as root; raises
    OSError if it cannot be started with those capabilities.  With
    `wait=False` it returns once forked, and `HelperClient.started()` (to be
    called before anything else) waits for the exec and checks it."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (parent, child):
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                end.setsockopt(socket.SOL_SOCKET, opt, SOCKBUF)
    pass_fds = [child.fileno()]
    argv = ["--ipc", str(child.fileno())]
    socks = (("--v4", v4), ("--v6", v6), ("--s4", s4), ("--s6", s6))
    for name, mr in socks:
        if mr is not None:
            pass_fds.append(mr.fileno())
            argv += [name, str(mr.fileno())]
    if hook:
        argv += ["--hook", hook]
    try:
        proc = spawn(
            [*boot_argv("smcroute.privsep.child"), *argv],
            pass_fds=pass_fds,
            preexec=caps.exec_with(caps.HELPER_CAPS),
            wait=False,
        )
    except OSError:
        parent.close()
        raise
    finally:
        child.close()
        for _name, mr in socks:
            if mr is not None:
                mr.close()
    helper = HelperClient(proc, parent, log)
    if wait:
        helper.started()
    return helper
