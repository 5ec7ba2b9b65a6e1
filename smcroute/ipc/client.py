"""`ControlClient`: the blocking client `smcroutectl` uses for one connection."""

from __future__ import annotations

# `_socket`, not `socket`: the wrapper module costs smcroutectl ~3 ms of
# start-up (enum conversions) for nothing a blocking AF_UNIX client needs.
import _socket
import contextlib
import errno
import struct
from collections.abc import Sequence

from smcroute.ipc.codec import IpcError, Response, decode_response, encode_request


class ControlClient:
    """Blocking client for one connection to the daemon (used by `smcroutectl`).

    `connect()` raises `IpcError` with a message fit for the user;
    `request()` sends one request and waits for its response.
    """

    def __init__(self, path: str, timeout: float | None = 60.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: _socket.socket | None = None
        self._buf = bytearray()
        self._sent: bytes | None = None  # a request sent ahead, its answer not read yet

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
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        # A blocking connect that waits its turn while the daemon's backlog is
        # full (a reconnect storm): with settimeout() the socket would be
        # non-blocking and AF_UNIX would fail at once with EAGAIN.  The kernel
        # bounds that wait with SO_SNDTIMEO.
        if self.timeout is not None:
            whole = int(self.timeout)
            usec = int((self.timeout - whole) * 1e6)
            sock.setsockopt(
                _socket.SOL_SOCKET, _socket.SO_SNDTIMEO, struct.pack("@ll", whole, usec)
            )
        try:
            sock.connect(self.path)
        except BaseException as e:
            sock.close()
            if isinstance(e, BlockingIOError):
                e = TimeoutError(errno.ETIMEDOUT, "timed out")
            raise IpcError(connect_error_message(self.path, e)) from e
        sock.settimeout(self.timeout)
        self._sock = sock
        self._buf.clear()

    def close(self) -> None:
        self._sent = None
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def request(
        self, cmd: str, args: Sequence[str] = (), detail: bool = False, format: str | None = None
    ) -> Response:
        """One request; with `format`, a show comes back rendered (`Response.text`)."""
        line = encode_request(cmd, args, detail, format)
        ahead, self._sent = self._sent, None
        if ahead is not None and ahead != line:
            self.close()  # the answer to another request is on its way: start afresh
        self.connect()
        assert self._sock is not None
        try:
            if ahead != line:
                self._sock.sendall(line)
            resp = decode_response(self._readline())
            if resp.text_len is not None:
                resp = resp._replace(text=self._readexact(resp.text_len))
        except TimeoutError as e:
            self.close()
            raise IpcError("timed out waiting for the daemon's reply") from e
        except (BrokenPipeError, ConnectionResetError) as e:
            self.close()
            raise IpcError("the daemon closed the connection") from e
        except OSError as e:
            self.close()
            raise IpcError(f"lost connection to the daemon: {e.strerror or e}") from e
        return resp

    def adopt(self, sock: _socket.socket, line: bytes) -> None:
        """Take a socket connected to `path` with the request `line` already sent
        on it; the `request()` making the same line reads its answer (smcroutectl
        asks for a show before its start-up is done, see `smcroute.ctl_entry`)."""
        self.close()
        sock.settimeout(self.timeout)
        self._sock = sock
        self._buf.clear()
        self._sent = line

    def _readexact(self, n: int) -> bytes:
        assert self._sock is not None
        chunks = [bytes(self._buf[:n])]
        got = len(chunks[0])
        del self._buf[:n]
        while got < n:
            chunk = self._sock.recv(min(n - got, 1 << 20))
            if not chunk:
                self.close()
                raise IpcError("the daemon closed the connection in the middle of its reply")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

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
