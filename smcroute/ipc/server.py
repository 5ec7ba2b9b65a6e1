"""`ControlServer`: serves `smcroutectl` inside the daemon's `selectors` loop.

Must not: block, start threads, touch the engine or the kernel, or read the
clock itself (time comes from the injected clock or as an argument).

Integration with the daemon's event loop::

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
import selectors
import socket
import time
from collections.abc import Callable

from smcroute.ipc.codec import (
    MAX_REQUEST,
    IpcError,
    Request,
    Response,
    decode_request,
    encode_response,
)

MAX_CLIENTS = 64
IDLE_TIMEOUT = 10.0  # seconds a client may sit without progress
MAX_OUTPUT = 4 * 1024 * 1024  # stop reading a client's requests above this backlog
BATCH = 64  # requests answered per client per wakeup (fairness)
CTL_TAG = "ctl"  # selector keys registered by a ControlServer carry (CTL_TAG, server)

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
