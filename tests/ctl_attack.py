"""Hostile clients of a daemon's control socket, for tests and bench/ctl_attack_bench.py.

What it owns: the three attacks an operator's `smcroutectl` must get through
(issue 12): idle connections that are never used (`Idle`, optionally
reconnecting as soon as the daemon drops one), a reconnect storm (`Storm`:
connect and close again, at a given rate or as fast as it can), and a client
that sends a lot (`send_big`: 10 MB in one line, or 10 MB of pipelined
requests it never reads the answers to).  The control socket is a path, so
these run from any network namespace.  What it must not do: talk to anything
but the socket it is given, or leave a thread or socket behind after `stop()`.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time


def _connect(path: str, wait: float = 5.0) -> socket.socket | None:
    """A blocking connect: it waits, `wait` seconds at most, while the
    daemon's backlog is full (a connect with settimeout() would fail at once
    with EAGAIN on AF_UNIX; SO_SNDTIMEO bounds a blocking one)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sec = int(wait)
    s.setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("@ll", sec, int((wait - sec) * 1e6))
    )
    try:
        s.connect(path)
    except OSError:
        s.close()
        return None
    return s


class Idle:
    """`n` connections that never send anything; with `reconnect`, each one the
    daemon closes is opened again at once (a leaking monitoring script)."""

    def __init__(self, path: str, n: int, *, reconnect: bool = False) -> None:
        self.path = path
        self.n = n
        self.reconnect = reconnect
        self.socks: list[socket.socket] = []
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Idle:
        for _ in range(self.n):
            s = _connect(self.path)
            if s is None:
                break  # the daemon takes no more (its backlog stays full)
            self.socks.append(s)
        if self.reconnect:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select(self.socks, [], [], 0.05)
            for s in ready:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if data:
                    continue
                s.close()
                self.socks.remove(s)
                again = _connect(self.path)
                if again is not None:
                    self.socks.append(again)
                    self.reconnects += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for s in self.socks:
            s.close()
        self.socks.clear()


class Storm:
    """Connect and close again, `rate` times a second (0: as fast as it can)."""

    def __init__(self, path: str, rate: float = 0.0) -> None:
        self.path = path
        self.rate = rate
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Storm:
        self._thread.start()
        return self

    def _loop(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            s = _connect(self.path)
            if s is not None:
                s.close()
                self.count += 1
            if self.rate:
                ahead = t0 + self.count / self.rate - time.monotonic()
                if ahead > 0:
                    self._stop.wait(ahead)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def send_big(path: str, nbytes: int, *, pipelined: bool = False) -> tuple[int, bytes]:
    """Send `nbytes` (one endless line, or `show` requests never read) and
    return how many bytes the daemon took and the first bytes it answered."""
    s = _connect(path)
    if s is None:
        return 0, b""
    unit = b'{"cmd":"show","args":[],"detail":false}\n' if pipelined else b"x" * 65536
    chunk = unit * max(1, 65536 // len(unit))
    sent = 0
    s.settimeout(10.0)
    with contextlib.closing(s):
        try:
            while sent < nbytes:
                sent += s.send(chunk[: nbytes - sent])
        except OSError:
            pass  # closed by the daemon (oversized), or it stopped reading: a timeout
        try:
            s.settimeout(2.0)
            answer = s.recv(200)
        except OSError:
            answer = b""
    return sent, answer
