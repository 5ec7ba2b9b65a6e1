"""The control protocol between `smcroutectl` and `smcrouted`, and its server.

Owns:

- the wire format: one line of UTF-8 JSON per request and per response, over
  an AF_UNIX SOCK_STREAM socket (default path `/var/run/NAME.sock`);
- the pure codec (`encode_request`, `decode_request`, `encode_response`,
  `decode_response`), which never raises anything but `IpcError`, whatever
  bytes it is given;
- `ControlServer`, the non-blocking server the daemon runs inside its own
  `selectors` loop, and `ControlClient`, the blocking client `smcroutectl`
  uses.

Must not: parse address arguments (the daemon does that with
`smcroute.parser`), touch the engine or the kernel, block, start threads, or
read the clock itself in the server (time comes in as an argument).

Wire format::

    request   {"cmd": "add"|"remove"|"join"|"leave"|"show"|"flush"|"reload"|"kill",
               "args": [str, ...], "detail": bool}\\n
    response  {"ok": true, "data": <any JSON value or null>, "warnings": [str, ...]}\\n
              {"ok": false, "error": "message", "warnings": [str, ...]}\\n

A connection may carry several requests in sequence; the server answers them
in order, one response line per request line.  A malformed or oversized
request gets an error response, after which the server closes the connection.

Integration with the daemon's event loop (see `ControlServer`)::

    server = ControlServer(listening_sock, handler)
    server.register(sel)
    while running:
        timeout = min(other_deadlines, server.next_deadline()) - time.monotonic()
        for key, mask in sel.select(timeout):
            if isinstance(key.data, tuple) and key.data[0] == CTL_TAG:
                key.data[1].on_ready(key, mask)
            ...
        server.expire(time.monotonic())
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CMDS",
    "CTL_TAG",
    "IDLE_TIMEOUT",
    "MAX_ARGS",
    "MAX_ARG_LEN",
    "MAX_CLIENTS",
    "MAX_REQUEST",
    "SHOW_KINDS",
    "ControlClient",
    "ControlServer",
    "IpcError",
    "Request",
    "Response",
    "decode_request",
    "decode_response",
    "default_socket_path",
    "encode_request",
    "encode_response",
]

CMDS = frozenset({"add", "remove", "join", "leave", "show", "flush", "reload", "kill"})
SHOW_KINDS = ("routes", "groups", "interfaces", "pending")
MAX_REQUEST = 64 * 1024  # bytes in one request line, newline excluded
MAX_ARGS = 64
MAX_ARG_LEN = 256
MAX_CLIENTS = 64
IDLE_TIMEOUT = 10.0  # seconds a client may sit without progress
MAX_OUTPUT = 4 * 1024 * 1024  # stop reading a client's requests above this backlog
BATCH = 64  # requests answered per client per wakeup (fairness)
CTL_TAG = "ctl"  # selector keys registered by a ControlServer carry (CTL_TAG, server)


class IpcError(Exception):
    """Anything wrong with a control message (or the connection carrying it)."""


def default_socket_path(ident: str = "smcroute") -> str:
    """`/var/run/NAME.sock`, the socket `smcrouted -i NAME` listens on."""
    return f"/var/run/{ident}.sock"


@dataclass(frozen=True, slots=True)
class Request:
    cmd: str
    args: tuple[str, ...] = ()
    detail: bool = False


@dataclass(frozen=True, slots=True)
class Response:
    ok: bool
    data: Any = None
    error: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def success(cls, data: Any = None, warnings: Iterable[str] = ()) -> Response:
        return cls(True, data, None, tuple(warnings))

    @classmethod
    def failure(cls, error: str, warnings: Iterable[str] = ()) -> Response:
        return cls(False, None, error, tuple(warnings))


# --- codec -----------------------------------------------------------------


def _is_printable(s: str) -> bool:
    return all(c >= " " and c != "\x7f" for c in s)


def _check_args(args: Sequence[Any]) -> tuple[str, ...]:
    if len(args) > MAX_ARGS:
        raise IpcError(f"too many arguments ({len(args)}, at most {MAX_ARGS})")
    out = []
    for a in args:
        if not isinstance(a, str):
            raise IpcError("arguments must be strings")
        if len(a) > MAX_ARG_LEN:
            raise IpcError(f"argument too long ({len(a)} characters, at most {MAX_ARG_LEN})")
        if not _is_printable(a):
            raise IpcError("argument contains control characters")
        out.append(a)
    return tuple(out)


def _loads(line: bytes | str) -> Any:
    try:
        if isinstance(line, bytes | bytearray | memoryview):
            line = bytes(line).decode("utf-8")
        return json.loads(line)
    except UnicodeDecodeError as e:
        raise IpcError("not valid UTF-8") from e
    except RecursionError as e:
        raise IpcError("malformed JSON: nested too deeply") from e
    except ValueError as e:  # json.JSONDecodeError and int conversion limits
        raise IpcError(f"malformed JSON: {e}") from e
    except Exception as e:  # anything else json may throw on odd input
        raise IpcError(f"malformed JSON: {e}") from e


def _dumps(obj: Any) -> bytes:
    try:
        text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise IpcError(f"cannot encode message: {e}") from e
    return text.encode("ascii") + b"\n"


def encode_request(cmd: str, args: Sequence[str] = (), detail: bool = False) -> bytes:
    """One request line, newline included."""
    if cmd not in CMDS:
        raise IpcError(f"unknown command {cmd!r}")
    if not isinstance(detail, bool):
        raise IpcError("detail must be true or false")
    if isinstance(args, str):
        raise IpcError("args must be a list of strings")
    checked = _check_args(list(args))
    line = _dumps({"cmd": cmd, "args": list(checked), "detail": detail})
    if len(line) - 1 > MAX_REQUEST:
        raise IpcError("request too large")
    return line


def decode_request(line: bytes) -> Request:
    """Validate one request line (trailing newline optional)."""
    if len(line.rstrip(b"\r\n")) > MAX_REQUEST:
        raise IpcError("request too large")
    obj = _loads(line)
    if not isinstance(obj, dict):
        raise IpcError("request must be a JSON object")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str):
        raise IpcError("request has no command")
    if cmd not in CMDS:
        raise IpcError(f"unknown command {cmd[:32]!r}")
    args = obj.get("args", [])
    if not isinstance(args, list):
        raise IpcError("args must be a list of strings")
    detail = obj.get("detail", False)
    if not isinstance(detail, bool):
        raise IpcError("detail must be true or false")
    return Request(cmd, _check_args(args), detail)


def encode_response(resp: Response) -> bytes:
    """One response line, newline included."""
    warnings = list(resp.warnings)
    if not all(isinstance(w, str) for w in warnings):
        raise IpcError("warnings must be strings")
    if resp.ok:
        return _dumps({"ok": True, "data": resp.data, "warnings": warnings})
    error = resp.error if isinstance(resp.error, str) and resp.error else "unknown error"
    obj: dict[str, Any] = {"ok": False, "error": error}
    if warnings:
        obj["warnings"] = warnings
    return _dumps(obj)


def decode_response(line: bytes) -> Response:
    """Validate one response line (trailing newline optional)."""
    obj = _loads(line)
    if not isinstance(obj, dict):
        raise IpcError("reply is not a JSON object")
    ok = obj.get("ok")
    if not isinstance(ok, bool):
        raise IpcError("reply has no status")
    warnings = obj.get("warnings", [])
    if warnings is None:
        warnings = []
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise IpcError("reply has malformed warnings")
    if ok:
        return Response(True, obj.get("data"), None, tuple(warnings))
    error = obj.get("error")
    if not isinstance(error, str):
        raise IpcError("error reply without a message")
    return Response(False, None, error, tuple(warnings))


# --- server ----------------------------------------------------------------

Handler = Callable[[Request], Response]


class _Client:
    __slots__ = ("closing", "eof", "fd", "inbuf", "last", "outbuf", "sock")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.last = now
        self.eof = False  # peer shut down its sending side
        self.closing = False  # close once outbuf is flushed


class ControlServer:
    """Serves `smcroutectl` requests inside the daemon's `selectors` loop.

    `sock` must be a bound, listening AF_UNIX stream socket; it is made
    non-blocking here.  `handler` is called synchronously with each valid
    `Request` and returns the `Response` to send; if it raises, the client
    gets an "internal error" response and the server goes on.

    Integration: `register(sel)` registers the listening socket; every key
    the server registers (listener and clients) has `key.data ==
    (CTL_TAG, server)`, i.e. `("ctl", server)`.  The daemon's loop calls
    `server.on_ready(key, mask)` for such keys, uses `server.next_deadline()`
    (a `time.monotonic()` value or None) to bound its select timeout, and
    calls `server.expire(time.monotonic())` after each select to close idle
    clients.  Before exiting (e.g. after a `kill` request) it calls
    `server.flush_all()` so queued responses reach their clients, then
    `server.close()` (which closes the listening socket but leaves unlinking
    its path to the daemon).  `clock` supplies the time at accept/read/write
    and must be the clock `expire()` and `next_deadline()` are compared with.

    Limits: requests of at most `MAX_REQUEST` bytes (else "request too
    large" and close), at most `max_clients` connections (the next one gets
    "too many clients" and is closed), clients idle for `idle_timeout`
    seconds are closed, at most `BATCH` requests per client per wakeup, and
    a client that does not read its replies is not read from while more than
    `MAX_OUTPUT` bytes wait for it.
    """

    def __init__(
        self,
        sock: socket.socket,
        handler: Handler,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._handler = handler
        self._idle = idle_timeout
        self._max = max_clients
        self._clock = clock
        self._clients: dict[int, _Client] = {}
        self._sel: selectors.BaseSelector | None = None
        self._tag = (CTL_TAG, self)

    # -- loop integration --

    @property
    def clients(self) -> int:
        """Number of connected clients."""
        return len(self._clients)

    def register(self, sel: selectors.BaseSelector) -> None:
        self._sel = sel
        sel.register(self._sock, selectors.EVENT_READ, self._tag)

    def on_ready(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.fileobj is self._sock:
            self._accept()
            return
        client = self._clients.get(key.fd)
        if client is None or client.sock is not key.fileobj:
            return
        if mask & selectors.EVENT_READ and not (client.eof or client.closing):
            try:
                chunk = client.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                chunk = None
            except OSError:
                self._drop(client)
                return
            if chunk is not None:
                client.last = self._clock()
                if chunk:
                    client.inbuf += chunk
                else:
                    client.eof = True
        self._service(client)

    def next_deadline(self) -> float | None:
        if not self._clients:
            return None
        return min(c.last for c in self._clients.values()) + self._idle

    def expire(self, now: float) -> None:
        for c in list(self._clients.values()):
            if now - c.last >= self._idle:
                self._drop(c)

    def flush_all(self, timeout: float = 1.0) -> None:
        """Best effort: push every queued response out, waiting at most `timeout`."""
        deadline = self._clock() + timeout
        for c in list(self._clients.values()):
            if not c.outbuf:
                continue
            try:
                while c.outbuf:
                    left = deadline - self._clock()
                    if left <= 0:
                        break
                    c.sock.settimeout(left)
                    n = c.sock.send(c.outbuf)
                    del c.outbuf[:n]
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    c.sock.setblocking(False)

    def close(self) -> None:
        for c in list(self._clients.values()):
            self._drop(c)
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(self._sock)
        with contextlib.suppress(OSError):
            self._sock.close()
        self._sel = None

    # -- internals --

    def _accept(self) -> None:
        # Accept everything pending, so one wakeup drains the backlog.
        for _ in range(self._max + 1):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. EMFILE: leave it in the backlog for later
                return
            conn.setblocking(False)
            if len(self._clients) >= self._max:
                with contextlib.suppress(OSError):
                    conn.send(encode_response(Response.failure("too many clients, try again")))
                conn.close()
                continue
            client = _Client(conn, self._clock())
            self._clients[client.fd] = client
            if self._sel is not None:
                self._sel.register(conn, selectors.EVENT_READ, self._tag)

    def _service(self, c: _Client) -> None:
        """Answer what can be answered, write what can be written, no blocking.

        At most `BATCH` requests per wakeup, so a client pipelining thousands
        of requests does not starve the others (the rest wait for the next
        loop turn; write interest makes sure there is one).
        """
        budget = BATCH
        while budget > 0:
            answered = self._process(c, budget)
            budget -= answered
            if not self._write(c):
                return  # dropped
            if not answered or c.outbuf or c.closing or not self._has_request(c):
                break
        if c.closing and not c.outbuf:
            self._drop(c)
            return
        if c.eof and not c.outbuf and not self._has_request(c):
            self._drop(c)  # peer half-closed and everything is answered
            return
        self._update_interest(c)

    @staticmethod
    def _has_request(c: _Client) -> bool:
        return b"\n" in c.inbuf or (c.eof and bool(c.inbuf.strip()))

    def _process(self, c: _Client, budget: int) -> int:
        """Answer up to `budget` complete requests; return how many."""
        done = 0
        while done < budget and not c.closing and len(c.outbuf) < MAX_OUTPUT:
            nl = c.inbuf.find(b"\n")
            if nl < 0:
                if len(c.inbuf) > MAX_REQUEST:
                    self._fail(c, "request too large")
                elif c.eof and c.inbuf.strip():
                    # A last request without its newline: answer it anyway.
                    line = bytes(c.inbuf)
                    c.inbuf.clear()
                    self._answer(c, line)
                    done += 1
                break
            line = bytes(c.inbuf[:nl])
            del c.inbuf[: nl + 1]
            if line.strip():
                self._answer(c, line)
                done += 1
        return done

    def _answer(self, c: _Client, line: bytes) -> None:
        try:
            req = decode_request(line)
        except IpcError as e:
            self._fail(c, str(e))
            return
        try:
            out = encode_response(self._handler(req))
        except Exception as e:  # the daemon must survive any handler bug
            out = encode_response(Response.failure(f"internal error: {e}"))
        c.outbuf += out

    def _fail(self, c: _Client, message: str) -> None:
        c.outbuf += encode_response(Response.failure(message))
        c.inbuf.clear()
        c.closing = True

    def _write(self, c: _Client) -> bool:
        """Send as much as the socket takes; False if the client was dropped."""
        while c.outbuf:
            try:
                n = c.sock.send(c.outbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # EPIPE, ECONNRESET: the client went away
                self._drop(c)
                return False
            del c.outbuf[:n]
            c.last = self._clock()
        return True

    def _update_interest(self, c: _Client) -> None:
        if self._sel is None:
            return
        events = 0
        if not c.closing and not c.eof and len(c.outbuf) < MAX_OUTPUT:
            events |= selectors.EVENT_READ
        if c.outbuf or (not c.closing and self._has_request(c)):
            events |= selectors.EVENT_WRITE  # also: requests left for the next turn
        if not events:
            self._drop(c)
            return
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.modify(c.sock, events, self._tag)

    def _drop(self, c: _Client) -> None:
        if self._clients.get(c.fd) is c:
            del self._clients[c.fd]
            if self._sel is not None:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._sel.unregister(c.sock)
        with contextlib.suppress(OSError):
            c.sock.close()


# --- client ----------------------------------------------------------------


class ControlClient:
    """Blocking client for one connection to the daemon (used by `smcroutectl`).

    `connect()` raises `IpcError` with a message fit for the user;
    `request()` sends one request and waits for its response.
    """

    def __init__(self, path: str, timeout: float | None = 60.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = bytearray()

    def __enter__(self) -> ControlClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except BaseException as e:
            sock.close()
            raise IpcError(connect_error_message(self.path, e)) from e
        self._sock = sock
        self._buf.clear()

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def request(self, cmd: str, args: Sequence[str] = (), detail: bool = False) -> Response:
        line = encode_request(cmd, args, detail)
        self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(line)
            reply = self._readline()
        except TimeoutError as e:
            self.close()
            raise IpcError("timed out waiting for the daemon's reply") from e
        except (BrokenPipeError, ConnectionResetError) as e:
            self.close()
            raise IpcError("the daemon closed the connection") from e
        except OSError as e:
            self.close()
            raise IpcError(f"lost connection to the daemon: {e.strerror or e}") from e
        return decode_response(reply)

    def _readline(self) -> bytes:
        assert self._sock is not None
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line
            chunk = self._sock.recv(1 << 20)
            if not chunk:
                self.close()
                if self._buf:
                    raise IpcError("the daemon closed the connection in the middle of its reply")
                raise IpcError("the daemon closed the connection without replying")
            self._buf += chunk


def connect_error_message(path: str, e: BaseException) -> str:
    """What to tell the user when the socket at `path` cannot be reached."""
    if isinstance(e, FileNotFoundError):
        return f"Cannot find IPC socket {path}"
    if isinstance(e, PermissionError):
        return (
            f"Permission denied connecting to {path}; "
            "talking to the daemon needs root (or write access to the socket)"
        )
    if isinstance(e, ConnectionRefusedError):
        return f"Cannot connect to {path}: connection refused (is smcrouted running?)"
    if isinstance(e, TimeoutError):
        return f"Cannot connect to {path}: timed out"
    if isinstance(e, OSError):
        if e.errno == errno.ENOTSOCK:
            return f"Cannot connect to {path}: not a socket"
        return f"Cannot connect to {path}: {e.strerror or e}"
    return f"Cannot connect to {path}: {e}"
