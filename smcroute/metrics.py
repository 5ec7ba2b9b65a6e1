"""The metrics endpoint (`smcrouted --metrics [ADDR:]PORT`): Prometheus/OpenMetrics.

Owns: the snapshot of the daemon's counters published after each steady
sample (`publish`, called by the main loop: the only place that reads the
engine), its exposition through `prometheus_client` (a custom collector in
a private registry; the text formats are the library's, never hand-written),
and a small HTTP/1.x server on its own thread that answers `GET`/`HEAD
/metrics` and nothing else.

Imported only when `--metrics` is given: `prometheus_client` costs about
190 ms and 13 MiB, which a router without monitoring must not pay.

The server never blocks the main loop: it reads only the immutable snapshot
the loop handed over, renders on its own thread, and serves at most
`MAX_CLIENTS` connections at once (more get 503).  A request head larger
than `MAX_HEAD` bytes gets 431, one not complete within `HEAD_TIMEOUT`
seconds is dropped, a reply not taken within `WRITE_TIMEOUT` seconds is
dropped; other methods get 405, other paths 404, anything unparsable 400.
Every reply closes the connection.  Nothing here changes any state.

Per-route series (packets, bytes, wrong-interface packets, labelled by
source, group and inbound interface) are capped at `max_routes`, busiest
(packets/s, then packets) first, so a flood of spoofed sources cannot
explode the series count; `smcroute_route_series_dropped` says how many
were left out.
"""

from __future__ import annotations

import contextlib
import heapq
import selectors
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from smcroute.logsetup import log
from smcroute.stats import Counts, Sample, VifCounters, key64

MAX_CLIENTS = 4
MAX_HEAD = 8192
HEAD_TIMEOUT = 5.0
WRITE_TIMEOUT = 10.0
LINGER = 2.0  # seconds to discard what a client still sends after our reply
MAX_DRAIN = 1 << 20
SWITCH_INTERVAL = 0.001  # s: how long the render thread may keep the GIL from the main loop
DEFAULT_MAX_ROUTES = 1000


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one scrape shows, as of the last sample (immutable)."""

    time: float  # time.time() of the sample
    routes: tuple[tuple[str, str, str, int, int, int], ...]  # src, grp, iif, pk, by, wrong
    dropped: int
    vifs: tuple[VifCounters, ...]
    kinds: tuple[tuple[str, int], ...]
    joins: int
    upcalls: tuple[tuple[str, int], ...]
    kernel_failures: int
    reloads: int
    reload_failures: int
    reload_seconds: float
    limit_hits: int


def snapshot(engine: Any, sample: Sample, counts: Counts, max_routes: int) -> Snapshot:
    """Build the snapshot from the engine (main loop only) and a sample."""
    n = len(sample)
    pps, packets = sample.pps, sample.packets
    if pps is not None:
        top = heapq.nlargest(min(max_routes, n), range(n), key=lambda i: (pps[i], packets[i]))
    else:
        top = heapq.nlargest(min(max_routes, n), range(n), key=packets.__getitem__)
    wanted = {sample.keys[i]: i for i in top}
    names = {fam: {v.vif: v.name for v in vifs.values()} for fam, vifs in engine.vifs.items()}
    kinds = {"static": 0, "template": 0, "learned": 0, "stop": 0, "pending": 0}
    routes = []
    for (fam, src, grp), m in engine.mfc.items():
        if m.kind in ("learned", "stop"):
            kinds[m.kind] += 1
        i = wanted.get(key64(fam, src, grp))
        if i is not None:
            iif = names.get(fam, {}).get(m.parent, "?")
            source = "*" if src is None else str(src)
            routes.append(
                (source, str(grp), iif, sample.packets[i], sample.bytes[i], sample.wrong[i])
            )
    for r in engine.routes.values():
        kinds["template" if r.is_template else "static"] += 1
    kinds["pending"] = len(engine.pending())
    return Snapshot(
        time=time.time(),
        routes=tuple(routes),
        dropped=max(0, len(engine.mfc) - len(routes)),
        vifs=tuple(sample.vifs.values()),
        kinds=tuple(kinds.items()),
        joins=len(engine.joins),
        upcalls=tuple(counts.upcalls.items()),
        kernel_failures=counts.kernel_failures,
        reloads=counts.reloads,
        reload_failures=counts.reload_failures,
        reload_seconds=counts.reload_seconds,
        limit_hits=counts.limit_hits,
    )


class _Collector(Collector):
    def __init__(self, server: MetricsServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        s = self.server.snapshot  # read once: the main loop may publish meanwhile
        if s is None:
            return
        rl = ["source", "group", "iif"]
        pk = CounterMetricFamily("smcroute_route_packets", "Packets of a kernel entry", labels=rl)
        by = CounterMetricFamily("smcroute_route_bytes", "Bytes of a kernel entry", labels=rl)
        wr = CounterMetricFamily(
            "smcroute_route_wrong_if_packets",
            "Packets of a kernel entry that arrived on another interface",
            labels=rl,
        )
        for src, grp, iif, p, b, w in s.routes:
            pk.add_metric([src, grp, iif], p)
            by.add_metric([src, grp, iif], b)
            wr.add_metric([src, grp, iif], w)
        yield from (pk, by, wr)
        yield GaugeMetricFamily(
            "smcroute_route_series_dropped",
            "Kernel entries left out of the per-route series (the cap, --metrics-routes)",
            value=s.dropped,
        )
        il = ["interface", "family"]
        ifam = {
            n: CounterMetricFamily(f"smcroute_interface_{n}", f"{d} of a VIF/MIF", labels=il)
            for n, d in (
                ("packets_in", "Packets received"),
                ("bytes_in", "Bytes received"),
                ("packets_out", "Packets sent"),
                ("bytes_out", "Bytes sent"),
            )
        }
        for v in s.vifs:
            labels = [v.name, f"ipv{v.family}"]
            ifam["packets_in"].add_metric(labels, v.packets_in)
            ifam["bytes_in"].add_metric(labels, v.bytes_in)
            ifam["packets_out"].add_metric(labels, v.packets_out)
            ifam["bytes_out"].add_metric(labels, v.bytes_out)
        yield from ifam.values()
        kinds = GaugeMetricFamily("smcroute_routes", "Routes by kind", labels=["kind"])
        for kind, n in s.kinds:
            kinds.add_metric([kind], n)
        yield kinds
        yield GaugeMetricFamily("smcroute_joins", "Group memberships held", value=s.joins)
        up = CounterMetricFamily("smcroute_upcalls", "Kernel upcalls by kind", labels=["kind"])
        for kind, n in s.upcalls:
            up.add_metric([kind], n)
        yield up
        yield CounterMetricFamily(
            "smcroute_kernel_failures", "Kernel operations that failed", value=s.kernel_failures
        )
        yield CounterMetricFamily("smcroute_reloads", "Configuration reloads", value=s.reloads)
        yield CounterMetricFamily(
            "smcroute_reload_failures", "Reloads rejected", value=s.reload_failures
        )
        yield GaugeMetricFamily(
            "smcroute_reload_duration_seconds",
            "Duration of the last reload",
            value=s.reload_seconds,
        )
        yield CounterMetricFamily(
            "smcroute_learned_limit_hits",
            "New sources not installed because of --max-learned",
            value=s.limit_hits,
        )
        yield GaugeMetricFamily(
            "smcroute_sample_timestamp_seconds",
            "When the counters shown were sampled (Unix time)",
            value=s.time,
        )


class _Conn:
    __slots__ = ("deadline", "draining", "fd", "inbuf", "outbuf", "sock", "writing")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.inbuf = bytearray()
        self.outbuf = b""
        self.writing = False
        self.draining = 0  # bytes discarded after the reply (lingering close)
        self.deadline = now + HEAD_TIMEOUT


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _reply(
    status: int,
    body: bytes,
    ctype: str = "text/plain; charset=utf-8",
    *,
    head: bool = False,
    extra: str = "",
) -> bytes:
    lines = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
    )
    return lines.encode("ascii") + (b"" if head else body)


class MetricsServer:
    """The endpoint: `publish` from the main loop, `start`/`stop` around it."""

    def __init__(self, sock: socket.socket, max_routes: int = DEFAULT_MAX_ROUTES) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.max_routes = max_routes
        self.snapshot: Snapshot | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._conns: dict[int, _Conn] = {}
        self._cache: dict[str, tuple[Snapshot | None, bytes]] = {}  # content type -> body
        self.thread = threading.Thread(target=self._run, name="smcroute-metrics", daemon=True)

    # -- main-loop side --

    def publish(self, daemon: Any, sample: Sample) -> None:
        try:
            self.snapshot = snapshot(daemon.engine, sample, daemon.counts, self.max_routes)
        except Exception as e:  # never take routing down over a metric
            log.warning(f"metrics: cannot publish the sample: {type(e).__name__}: {e}")

    def start(self) -> None:
        # While this thread renders, the main loop waits for the GIL at most
        # this long per hand-over (default 5 ms; a request needs several).
        sys.setswitchinterval(SWITCH_INTERVAL)
        self.thread.start()

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self.thread.join(2.0)
        for s in (self._wake_r, self._wake_w, self.sock):
            with contextlib.suppress(OSError):
                s.close()

    # -- the server thread --

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self._stopping:
                for key, mask in sel.select(0.5):
                    if key.fileobj is self._wake_r:
                        return
                    if key.fileobj is self.sock:
                        self._accept(sel)
                    else:
                        self._ready(sel, key.data, mask)
                now = time.monotonic()
                for c in list(self._conns.values()):
                    if now >= c.deadline:
                        self._close(sel, c)
        finally:
            for c in list(self._conns.values()):
                self._close(sel, c)
            sel.close()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        for _ in range(MAX_CLIENTS * 4):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            conn.setblocking(False)
            busy = sum(1 for c in self._conns.values() if not c.draining)
            if busy >= MAX_CLIENTS and len(self._conns) >= 2 * MAX_CLIENTS:
                conn.close()  # even the 503s are lingering: just refuse
                continue
            c = _Conn(conn, time.monotonic())
            self._conns[c.fd] = c
            sel.register(conn, selectors.EVENT_READ, c)
            if busy >= MAX_CLIENTS:
                self._respond(sel, c, _reply(503, b"too many scrapers at once, try again\n"))

    def _ready(self, sel: selectors.BaseSelector, c: _Conn, mask: int) -> None:
        if c.writing:
            self._write(sel, c)
            return
        if c.draining:
            self._drain(sel, c)
            return
        try:
            chunk = c.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(sel, c)
            return
        if not chunk:
            self._close(sel, c)
            return
        c.inbuf += chunk
        end = c.inbuf.find(b"\r\n\r\n")
        if end < 0:
            end = c.inbuf.find(b"\n\n")
        if end < 0:
            if len(c.inbuf) > MAX_HEAD:
                self._respond(sel, c, _reply(431, b"request head too large\n"))
            return
        if end > MAX_HEAD:
            self._respond(sel, c, _reply(431, b"request head too large\n"))
            return
        self._respond(sel, c, self._answer(bytes(c.inbuf[:end])))

    def _answer(self, head: bytes) -> bytes:
        try:
            text = head.decode("ascii")
        except UnicodeDecodeError:
            return _reply(400, b"bad request\n")
        lines = text.replace("\r\n", "\n").split("\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
            return _reply(400, b"bad request\n")
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return _reply(405, b"only GET and HEAD\n", extra="Allow: GET, HEAD\r\n")
        if target.split("?", 1)[0] != "/metrics":
            return _reply(404, b"metrics are at /metrics\n")
        accept = ""
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                return _reply(400, b"bad request\n")
            if name.strip().lower() == "accept":
                accept = value.strip()
        encoder, ctype = choose_encoder(accept)
        snap = self.snapshot
        cached = self._cache.get(ctype)
        if cached is not None and cached[0] is snap:
            body = cached[1]  # the same sample: rendered once, not once per scrape
        else:
            try:
                body = encoder(self.registry)
            except Exception as e:  # a bug must cost one scrape, not the endpoint
                log.warning(f"metrics: cannot render the exposition: {type(e).__name__}: {e}")
                return _reply(500, b"internal error\n")
            self._cache[ctype] = (snap, body)
        return _reply(200, body, ctype, head=method == "HEAD")

    def _respond(self, sel: selectors.BaseSelector, c: _Conn, data: bytes) -> None:
        c.outbuf = data
        c.inbuf.clear()
        c.writing = True
        c.deadline = time.monotonic() + WRITE_TIMEOUT
        with contextlib.suppress(KeyError, ValueError, OSError):
            sel.modify(c.sock, selectors.EVENT_WRITE, c)
        self._write(sel, c)

    def _write(self, sel: selectors.BaseSelector, c: _Conn) -> None:
        while c.outbuf:
            try:
                n = c.sock.send(c.outbuf[:262144])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                break
            c.outbuf = c.outbuf[n:]
        else:
            # Lingering close: unread request bytes would make close() send a
            # reset that destroys the reply; discard them for a moment first.
            with contextlib.suppress(OSError):
                c.sock.shutdown(socket.SHUT_WR)
                c.writing = False
                c.draining = 1
                c.deadline = time.monotonic() + LINGER
                sel.modify(c.sock, selectors.EVENT_READ, c)
                return
        self._close(sel, c)

    def _drain(self, sel: selectors.BaseSelector, c: _Conn) -> None:
        try:
            chunk = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        c.draining += len(chunk)
        if not chunk or c.draining > MAX_DRAIN:
            self._close(sel, c)

    def _close(self, sel: selectors.BaseSelector, c: _Conn) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            sel.unregister(c.sock)
        if self._conns.get(c.fd) is c:
            del self._conns[c.fd]
        with contextlib.suppress(OSError):
            c.sock.close()
