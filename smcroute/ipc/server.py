"""`ControlServer`: serves `smcroutectl` inside the daemon's `selectors` loop.

The operator is always served, whatever other clients do (issue 12):

- a new connection is never refused: when `max_clients` are connected, the
  one that has been quiet the longest makes room (those that never completed
  a request go first), so leaked idle connections cannot lock anyone out;
- what a client sent with its connection is answered at once, in the same
  wake-up that accepts it (`smcroutectl` writes its request right after
  connect), and pending connections are accepted before each client is
  served, so a newcomer never waits behind a busy client's turn;
- each client gets at most `BATCH` requests and `SLICE` seconds per wake-up,
  and a request line over `MAX_REQUEST` bytes is refused and its connection
  closed, so neither a pipelining client nor 10 MB of garbage delays others;
- connections are accepted at most `ACCEPT_RATE` a second (`ACCEPT_BURST` at
  once): beyond that they wait in the kernel's backlog, which bounds the CPU
  a reconnect storm can take from routing.

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
SLICE = 0.01  # seconds of requests per client per wakeup (at least one request)
ACCEPT_RATE = 1000.0  # connections accepted per second, sustained
ACCEPT_BURST = 64.0  # ... and at once
CTL_TAG = "ctl"  # selector keys registered by a ControlServer carry (CTL_TAG, server)

Handler = Callable[[Request], Response]


class _Client:
    __slots__ = ("closing", "eof", "fd", "inbuf", "last", "outbuf", "served", "sock")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.last = now
        self.eof = False  # peer shut down its sending side
        self.closing = False  # close once outbuf is flushed
        self.served = False  # completed at least one request (evicted after those that did not)


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
    large" and close), at most `max_clients` connections (a new one makes
    the quietest leave, see the module docstring), clients idle for
    `idle_timeout` seconds are closed, at most `BATCH` requests and `SLICE`
    seconds per client per wakeup, at most `accept_rate` connections
    accepted per second, and a client that does not read its replies is not
    read from while more than `MAX_OUTPUT` bytes wait for it.
    """

    def __init__(
        self,
        sock: socket.socket,
        handler: Handler,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        max_clients: int = MAX_CLIENTS,
        accept_rate: float = ACCEPT_RATE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._handler = handler
        self._idle = idle_timeout
        self._max = max_clients
        self._clock = clock
        self._rate = accept_rate
        self._tokens = ACCEPT_BURST
        self._refilled = clock()
        self._paused_until: float | None = None  # listener off while out of tokens
        self.evicted = 0  # clients closed to make room for a new one
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
        # Newcomers first (cheap when there are none: one failing accept), so
        # an operator's command never waits for a busy client's turn.
        self._accept()
        if key.fileobj is self._sock:
            return
        client = self._clients.get(key.fd)
        if client is None or client.sock is not key.fileobj:
            return
        if mask & selectors.EVENT_READ and not self._read(client):
            return
        self._service(client)

    def next_deadline(self) -> float | None:
        deadlines = [c.last + self._idle for c in self._clients.values()]
        if self._paused_until is not None:
            deadlines.append(self._paused_until)
        return min(deadlines, default=None)

    def expire(self, now: float) -> None:
        for c in list(self._clients.values()):
            if now - c.last >= self._idle:
                self._drop(c)
        if self._paused_until is not None and now >= self._paused_until:
            self._paused_until = None
            if self._sel is not None:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._sel.register(self._sock, selectors.EVENT_READ, self._tag)
            self._accept()

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
        """Accept what is pending, within the rate; serve what each one sent."""
        if self._paused_until is not None:
            return
        now = self._clock()
        self._tokens = min(ACCEPT_BURST, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        while self._tokens >= 1.0:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. EMFILE: leave it in the backlog for later
                return
            self._tokens -= 1.0
            conn.setblocking(False)
            if len(self._clients) >= self._max:
                self._evict()
            client = _Client(conn, now)
            self._clients[client.fd] = client
            if self._sel is not None:
                self._sel.register(conn, selectors.EVENT_READ, self._tag)
            if self._read(client):
                self._service(client)
        # Out of tokens: stop listening until one is back (next_deadline).
        self._paused_until = now + (1.0 - self._tokens) / self._rate
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(self._sock)

    def _evict(self) -> None:
        """Close the client quiet the longest, those never served first."""
        victim = min(self._clients.values(), key=lambda c: (c.served, c.last))
        self.evicted += 1
        self._drop(victim)

    def _read(self, c: _Client) -> bool:
        """Take what the client sent (if anything); False if it was dropped."""
        if c.eof or c.closing:
            return True
        try:
            chunk = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self._drop(c)
            return False
        c.last = self._clock()
        if chunk:
            c.inbuf += chunk
        else:
            c.eof = True
        return True

    def _service(self, c: _Client) -> None:
        """Answer what can be answered, write what can be written, no blocking.

        At most `BATCH` requests per wakeup, so a client pipelining thousands
        of requests does not starve the others (the rest wait for the next
        loop turn; write interest makes sure there is one).
        """
        budget = BATCH
        until = self._clock() + SLICE
        while budget > 0 and self._clock() < until:
            answered = self._process(c, budget, until)
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

    def _process(self, c: _Client, budget: int, until: float) -> int:
        """Answer up to `budget` complete requests, until `until` once one
        is answered; return how many."""
        done = 0
        while done < budget and not c.closing and len(c.outbuf) < MAX_OUTPUT:
            if done and self._clock() >= until:
                break
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
        c.served = True

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
