"""A fake daemon for control-protocol and smcroutectl tests.

Runs a real `ControlServer` on a temporary socket in a thread with its own
selector loop, the way `smcrouted` integrates it, and answers requests with
canned data.  Holds no tests itself.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from smcroute.ipc.codec import Request, Response
from smcroute.ipc.server import CTL_TAG, ControlServer
from smcroute.output import render


def route(
    source: str | None, group: str, iif: str, oifs: list[str], packets: int = 0, nbytes: int = 0
) -> dict[str, Any]:
    return {
        "source": source,
        "group": group,
        "iif": iif,
        "oifs": oifs,
        "packets": packets,
        "bytes": nbytes,
    }


# doc/SPEC.md §4's examples as the daemon sends them (counters always present).
ROUTES = {
    "routes": {
        "asm": [
            route(None, "225.3.3.0/24", "a1", ["a2", "a3"], 10, 1000),
            route(None, "ff2e::43", "a1", ["a2"]),
        ],
        "ssm": [route("10.0.0.5", "225.4.4.4", "a1", ["a2"], 5, 500)],
        "kernel": [
            route("10.0.0.5", "225.4.4.4", "a1", ["a2"], 5, 500),
            route("10.0.0.1", "225.3.3.7", "a1", ["a2", "a3"], 1234567890, 9876543210),
        ],
    }
}
GROUPS = {
    "groups": {
        "conf": [
            {"source": None, "group": "225.5.5.5", "iif": "a1"},
            {"source": "10.0.0.9", "group": "225.5.5.0/30", "iif": "a1"},
        ],
        "kernel": [
            {"source": None, "group": "225.5.5.5", "iif": "a1"},
        ],
    }
}
INTERFACES = {
    "interfaces": [
        {"index": 1, "name": "lo", "vif": None, "mif": None},
        {"index": 3, "name": "a1", "vif": 0, "mif": 0},
    ]
}
PENDING = {
    "pending": [
        {"kind": "mroute", "iif": "wg0", "source": None, "group": "239.5.5.5", "oifs": ["a2"]},
    ]
}
SHOW = {"routes": ROUTES, "groups": GROUPS, "interfaces": INTERFACES, "pending": PENDING}


def canned(req: Request) -> Response:
    """Plays the daemon: show returns the doc/SPEC.md examples; 'bad' words fail."""
    if req.cmd == "show":
        return Response.success(SHOW[req.args[0]])
    if any(a.startswith("bad") for a in req.args):
        return Response.failure(f"invalid address '{req.args[-1]}'")
    if req.cmd == "reload" and req.args == ():
        return Response.success(None)
    if req.cmd == "add" and "a1" in req.args[1:]:
        return Response.success(None, ["outbound interface a1 is the inbound one: loop risk"])
    return Response.success(None)


def rendered(req: Request) -> Response:
    """Plays the real daemon: a show with a format comes back rendered (bytes)."""
    resp = canned(req)
    if req.cmd == "show" and req.format is not None and resp.ok:
        text = render(req.args[0], resp.data, req.format, detail=req.detail)
        return Response.success(text=text.encode("utf-8"))
    return resp


class FakeDaemon:
    """ControlServer in a thread; `requests` records what arrived."""

    def __init__(
        self,
        path: str,
        handler: Callable[[Request], Response] = canned,
        idle_timeout: float = 10.0,
        max_clients: int = 64,
    ) -> None:
        self.path = path
        self.requests: list[Request] = []
        self._handler = handler
        self.killed = False
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(path)
        lsock.listen(128)
        self.server = ControlServer(
            lsock, self._handle, idle_timeout=idle_timeout, max_clients=max_clients
        )
        self.sel = selectors.DefaultSelector()
        self.server.register(self.sel)
        self._rfd, self._wfd = os.pipe()
        self.sel.register(self._rfd, selectors.EVENT_READ, "wake")
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.error: BaseException | None = None

    def _handle(self, req: Request) -> Response:
        self.requests.append(req)
        if req.cmd == "kill":
            self.killed = True
        return self._handler(req)

    def _loop(self) -> None:
        try:
            while not self._stop:
                deadline = self.server.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                for key, mask in self.sel.select(timeout):
                    if key.data == "wake":
                        os.read(self._rfd, 64)
                    elif isinstance(key.data, tuple) and key.data[0] == CTL_TAG:
                        key.data[1].on_ready(key, mask)
                self.server.expire(time.monotonic())
                if self.killed:
                    self.server.flush_all()
                    break
        except BaseException as e:  # surfaced by stop()
            self.error = e
        finally:
            self.server.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def start(self) -> FakeDaemon:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            os.write(self._wfd, b"x")
        self._thread.join(5)
        self.sel.close()
        os.close(self._rfd)
        os.close(self._wfd)
        if self.error is not None:
            raise self.error

    def __enter__(self) -> FakeDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def half_reply_daemon(path: str, reply: bytes = b'{"ok": true, "data": {"rou') -> Any:
    """A 'daemon' on `path` that answers one request with half a reply, then hangs up."""
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(1)

    def serve() -> None:
        conn, _ = lsock.accept()
        conn.recv(1000)
        conn.sendall(reply)
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    try:
        yield
    finally:
        t.join()
        lsock.close()
