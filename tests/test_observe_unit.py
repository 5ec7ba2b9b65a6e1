"""Observability without root: counter decoding and rates, `-d` formats, the
explain/doctor reports, the LOGLEVEL helper message, the metrics HTTP server
(on 127.0.0.1 with an ephemeral port) and the lazy import of prometheus_client."""

from __future__ import annotations

import copy
import socket
import struct
import subprocess
import sys
import time
from ipaddress import ip_address
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_ipc_helpers import INTERFACES, ROUTES

from smcroute import report, stats
from smcroute.ctl import CtlError, resolve_command
from smcroute.daemon_cli import UsageError, parse_args, parse_listen
from smcroute.output import format_json, format_show

# --- netlink decoding ----------------------------------------------------------


def rta(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + bytes(-len(raw) % 4)


def mfc_msg(
    family: int,
    src: bytes,
    grp: bytes,
    stats_: tuple[int, int, int],
    idle: int,
    table: int = 253,
    flags: int = 0,
    pad: bool = True,
    swap: bool = False,
) -> bytes:
    nlf = stats.RTNL_FAMILY_IPMR if family == 4 else stats.RTNL_FAMILY_IP6MR
    body = struct.pack("=BBBBBBBBI", nlf, 32, 32, 0, min(table, 255), 0, 0, 0, flags)
    body += rta(stats.RTA_TABLE, struct.pack("=I", table))
    body += rta(stats.RTA_SRC, src) + rta(stats.RTA_DST, grp)
    body += rta(3, struct.pack("=I", 2))  # RTA_IIF
    body += rta(9, struct.pack("=HBBI", 8, 0, 1, 3))  # RTA_MULTIPATH, one next hop
    tail = [rta(stats.RTA_MFC_STATS, struct.pack("=QQQ", *stats_))]
    tail += [rta(24, b"")] if pad else []  # RTA_PAD, where the kernel aligns u64s
    tail += [rta(stats.RTA_EXPIRES, struct.pack("=Q", idle))]
    return body + b"".join(reversed(tail) if swap else tail)


def both_parsers(body: bytes, table: int, family: int = 4) -> object:
    """The fast path and the generic one agree (or the fast one defers)."""
    slow = stats.parse_mfc(body, 0, len(body), table)
    fast = stats.parse_mfc_fast(body, 0, len(body), table, family)
    assert fast is True or fast == (slow if slow is not None else False)
    return slow


def test_parse_mfc_ipv4_and_ipv6_keys_match_engine_keys() -> None:
    s4, g4 = ip_address("10.0.1.2"), ip_address("225.1.1.1")
    for pad in (True, False):
        body = mfc_msg(4, s4.packed, g4.packed, (10, 1000, 3), 250, pad=pad)
        assert stats.parse_mfc_fast(body, 0, len(body), 253, 4) == both_parsers(body, 253)
        assert both_parsers(body, 253) == (stats.key64(4, s4, g4), 10, 1000, 3, 250)
    swapped = mfc_msg(4, s4.packed, g4.packed, (10, 1000, 3), 250, swap=True)
    assert stats.parse_mfc_fast(swapped, 0, len(swapped), 253, 4) is True  # another layout
    assert both_parsers(swapped, 253) == (stats.key64(4, s4, g4), 10, 1000, 3, 250)
    s6, g6 = ip_address("fd00:1::2"), ip_address("ff2e::1")
    body = mfc_msg(6, s6.packed, g6.packed, (7, 700, 0), 0, table=254)
    row = both_parsers(body, 254, 6)
    assert isinstance(row, tuple) and row[0] == stats.key64(6, s6, g6) and row[1:3] == (7, 700)
    assert row[0] >> 63 == 1 and stats.key64(4, s4, g4) >> 63 == 0
    star = mfc_msg(4, bytes(4), g4.packed, (1, 1, 0), 0)
    assert stats.parse_mfc(star, 0, len(star), 253)[0] == stats.key64(4, None, g4)  # type: ignore[index]


def test_parse_mfc_skips_other_tables_unresolved_and_junk() -> None:
    s4, g4 = ip_address("10.0.1.2").packed, ip_address("225.1.1.1").packed
    other = mfc_msg(4, s4, g4, (1, 1, 1), 0, table=7)
    assert both_parsers(other, 253) is None
    unres = mfc_msg(4, s4, g4, (1, 1, 1), 0, flags=stats.RTNH_F_UNRESOLVED)
    assert both_parsers(unres, 253) is None
    bad = mfc_msg(4, s4, b"\xe1\x01\x01", (1, 1, 1), 0)  # a 3-byte group
    assert both_parsers(bad, 253) is None
    assert stats.parse_mfc(b"\x80\x00", 0, 2, 253) is None


class DumpSocket:
    """A netlink socket that answers a dump with the given buffers (messages
    given as payloads: the header, with the request's sequence number, added)."""

    def __init__(self, buffers: list[list[tuple[int, bytes]]]) -> None:
        self.buffers = buffers
        self.seq = 0

    def send(self, msg: bytes) -> int:
        self.seq = struct.unpack_from("=I", msg, 8)[0]
        return len(msg)

    def recv(self, _n: int) -> bytes:
        out = b""
        for kind, payload in self.buffers.pop(0):
            raw = struct.pack("=IHHII", 16 + len(payload), kind, 2, self.seq, 0) + payload
            out += raw + bytes(-len(raw) % 4)
        return out


def dump(family: int, buffers: list[list[tuple[int, bytes]]], table: int = 253) -> list[list]:
    nl: Any = type("NL", (), {"seq": 0, "sock": DumpSocket([*buffers, [(stats.NLMSG_DONE, b"")]])})
    return [col.tolist() for col in stats.dump_mfc(nl, (family,), table)]


def entries(family: int, n: int, **kw: Any) -> list[tuple[int, bytes]]:
    out = []
    for i in range(n):
        src = ip_address(f"10.0.{i}.2" if family == 4 else f"fd00::{i}:2").packed
        grp = ip_address(f"225.1.1.{i}" if family == 4 else f"ff2e::{i}").packed
        body = mfc_msg(family, src, grp, (i, 100 * i, i % 3), 250 + i, **kw)
        out.append((stats.RTM_NEWROUTE, body))
    return out


@pytest.mark.parametrize("family", [4, 6])
def test_dump_takes_whole_buffers_as_message_by_message(
    family: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A buffer of same-layout entries is read in one unpack: the columns are
    the ones the per-message parsers give; any other buffer is read message
    by message (a foreign table, an unresolved entry, RTA_PAD, mixed lengths)."""
    same = entries(family, 5, pad=False)
    cols = stats._columns()
    for _kind, body in same:
        row = both_parsers(body, 253, family)
        assert isinstance(row, tuple)
        for col, v in zip(cols, (*row[:4], row[4] / stats.USER_HZ), strict=True):
            col.append(v)  # type: ignore[arg-type]
    want = [col.tolist() for col in cols]
    taken = []
    batch = stats._batch_mfc

    def spy(*args: Any) -> Any:
        take = batch(*args)
        return lambda data, seq: taken.append(take(data, seq)) or taken[-1]

    monkeypatch.setattr(stats, "_batch_mfc", spy)
    assert dump(family, [same]) == want
    assert dump(family, [same[:2], same[2:]]) == want
    assert taken == [True, False, True, True, False]  # the entries, then NLMSG_DONE
    foreign = entries(family, 1, pad=False, table=7)
    unresolved = entries(family, 1, pad=False, flags=stats.RTNH_F_UNRESOLVED)
    mixed = [same[:2], [*foreign, same[2]], [same[3], *unresolved], [same[4]]]
    assert dump(family, mixed) == want
    padded = entries(family, 5, pad=True)
    assert dump(family, [padded[:3], padded[3:]]) == want
    assert dump(family, [same[:1], padded[1:2] + same[2:]]) == want


def test_parse_vif_table_and_mif_proc() -> None:
    def vif(vif_id: int, ifindex: int, counts: tuple[int, int, int, int]) -> bytes:
        pi, bi, po, bo = counts
        inner = rta(1, struct.pack("=I", ifindex)) + rta(2, struct.pack("=I", vif_id))
        inner += rta(3, struct.pack("=H", 0))
        inner += rta(4, struct.pack("=Q", bi)) + rta(5, struct.pack("=Q", bo))
        inner += rta(6, struct.pack("=Q", pi)) + rta(7, struct.pack("=Q", po))
        return rta(stats.IPMRA_VIF, inner)

    def table(tid: int, vifs: bytes) -> bytes:
        spec = rta(stats.IPMRA_TABLE_ID, struct.pack("=I", tid)) + rta(stats.IPMRA_TABLE_VIFS, vifs)
        return struct.pack("=BxHiII", stats.RTNL_FAMILY_IPMR, 0, 0, 0, 0) + rta(26, spec)

    msg = table(253, vif(0, 2, (5, 500, 0, 0)) + vif(1, 3, (0, 0, 5, 500)))
    assert stats.parse_vif_table(msg, 0, len(msg), 253) == [
        (0, 2, 5, 500, 0, 0),
        (1, 3, 0, 0, 5, 500),
    ]
    assert stats.parse_vif_table(msg, 0, len(msg), 7) == []
    text = (
        "Interface      BytesIn  PktsIn  BytesOut PktsOut Flags\n"
        " 0 a1            1130      20        0       0 00000\n"
        " 1 a2               0       0     1130      20 00000\n"
        "garbage\n"
    )
    assert stats.parse_mif_proc(text) == [("a1", 0, 20, 1130, 0, 0), ("a2", 1, 0, 0, 20, 1130)]


def sample(t: float, rows: list[tuple[int, int, int, int, int]]) -> stats.Sample:
    cols = stats._columns()
    for row in rows:
        for col, value in zip(cols, (*row[:4], row[4] / stats.USER_HZ), strict=True):
            col.append(value)  # type: ignore[arg-type]
    return stats.Sample(t, cols)


def test_rates_over_the_interval() -> None:
    a, b, c = 1 << 40, 2 << 40, 3 << 40
    prev = sample(10.0, [(a, 100, 10000, 0, 0), (b, 50, 5000, 0, 0)])
    cur = sample(12.0, [(c, 20, 2000, 0, 0), (b, 40, 4000, 0, 300), (a, 300, 30000, 2, 0)])
    cur.rates_from(prev)
    ea, eb, ec = (cur.entry(cur.index(k)) for k in (a, b, c))
    assert (ea.pps, ea.bps) == (100.0, 80000.0)  # 200 packets, 20000 bytes in 2 s
    assert ea.wrong_if == 2
    assert (eb.pps, eb.last_seen) == (20.0, 3.0)  # counter went back: a new entry
    assert ec.pps == 10.0  # new since the last sample
    assert cur.index(4 << 40) == -1
    assert sample(0, [(a, 0, 0, 0, 9)]).entry(0).last_seen is None  # never used
    same = sample(14.0, [(c, 30, 3000, 0, 0), (b, 40, 4000, 0, 0), (a, 300, 30000, 2, 0)])
    same.rates_from(cur)  # same keys, same order: the fast path
    assert [same.entry(i).pps for i in range(3)] == [5.0, 0.0, 0.0]
    find = same.finder()
    assert find(4, None, ip_address("225.0.0.1")) is None
    view = stats.CountersView(cur)
    with pytest.raises(KeyError):
        view[(4, ip_address("10.0.0.1"), ip_address("225.0.0.1"))]


def test_memory_per_entry_is_small() -> None:
    rows = [(i << 28, i, i, 0, 0) for i in range(10000)]
    s = sample(0.0, rows)
    s.rates_from(sample(-1.0, list(rows)))
    arrays = (s.keys, s.packets, s.bytes, s.wrong, s.idle, s.pps, s.bps)
    per_entry = sum(a.itemsize for a in arrays)  # type: ignore[union-attr]
    assert per_entry == 44


# --- formats -----------------------------------------------------------------------


def with_rates(doc: Any) -> Any:
    out = copy.deepcopy(doc)
    for table in out["routes"].values():
        for e in table:
            e.update(wrong_if=3, pps=1.5, bps=12.0, last_seen=0.5, learned=2)
    return out


def test_plain_detail_routes_unchanged_by_the_new_fields() -> None:
    for detail in (False, True):
        for plain in (False, True):
            want = format_show("routes", ROUTES, detail=detail, plain=plain, headings=True)
            got = format_show(
                "routes", with_rates(ROUTES), detail=detail, plain=plain, headings=True
            )
            assert got == want


def test_json_keeps_rates_only_with_detail() -> None:
    assert '"pps"' in format_json(with_rates(ROUTES), detail=True)
    assert '"pps"' not in format_json(with_rates(ROUTES), detail=False)
    assert '"wrong_if"' not in format_json(with_rates(ROUTES), detail=False)


def test_interfaces_detail_columns() -> None:
    doc = copy.deepcopy(INTERFACES)
    doc["interfaces"][1].update(packets_in=12, bytes_in=3400, packets_out=0, bytes_out=0)
    text = format_show("interfaces", doc, detail=True, plain=True, headings=True)
    lines = text.splitlines()
    assert lines[1].split() == ["INDEX", "PHYINT", "VIF", "MIF", "PKTS", "IN", "BYTES", "IN",
                                "PKTS", "OUT", "BYTES", "OUT"]  # fmt: skip
    assert lines[4].split() == ["3", "a1", "0", "0", "12", "3400", "0", "0"]
    assert format_show("interfaces", doc, detail=False, plain=True, headings=True) == format_show(
        "interfaces", INTERFACES, detail=False, plain=True, headings=True
    )
    assert "packets_in" not in format_json(doc, detail=False)


EXPLAIN = {
    "explain": {
        "source": "10.0.1.2",
        "group": "225.1.1.1",
        "family": 4,
        "paths": [
            {
                "iif": "a1",
                "verdict": "blocked",
                "cause": "stop-filter",
                "checks": [
                    {"check": "iif-up", "verdict": "ok", "detail": "inbound a1 is up", "fix": None},
                    {"check": "stop-filter", "verdict": "fail", "detail": "a stop \x1b filter",
                     "fix": "add a template"},
                ],
            }
        ],
    }
}  # fmt: skip


def test_explain_and_doctor_reports() -> None:
    text = report.render("explain", EXPLAIN)
    assert text.splitlines()[0] == "(10.0.1.2, 225.1.1.1) from a1: NOT forwarded (stop-filter)"
    assert "FAIL    stop-filter" in text and "fix: add a template" in text
    assert "\x1b" not in text
    down = {"severity": "error", "check": "iface-down", "detail": "a2 down", "fix": "ip link"}
    info = {"severity": "info", "check": "stop-filters", "detail": "1 stop filter", "fix": None}
    doc = {"doctor": {"healthy": False, "problems": [down, info]}}
    text = report.render("doctor", doc)
    assert text.splitlines()[0].split()[:2] == ["ERROR", "iface-down"]
    assert text.splitlines()[-1] == "1 problem(s) found"
    assert not report.healthy(doc)
    assert report.render("doctor", {"doctor": {"healthy": True, "problems": []}}) == (
        "nothing wrong found\n"
    )
    for bad in ({}, {"explain": []}, {"explain": {"paths": [{"checks": 1}]}}):
        with pytest.raises(report.ReportError):
            report.render("explain", bad)


def test_new_commands_keep_the_original_abbreviations() -> None:
    assert resolve_command("l") == "leave"
    assert resolve_command("lo") == "log"
    assert resolve_command("d") == "remove"
    assert resolve_command("do") == "doctor"
    assert resolve_command("e") == "explain"
    with pytest.raises(CtlError):
        resolve_command("x")


# --- options -------------------------------------------------------------------------


def test_metrics_options() -> None:
    assert parse_listen("9108") == ("127.0.0.1", 9108)
    assert parse_listen("0.0.0.0:9") == ("0.0.0.0", 9)
    assert parse_listen("[::1]:9108") == ("::1", 9108)
    o, _ = parse_args(["--metrics", "9108", "--metrics-routes", "5", "--sample-interval", "2"])
    assert (o.metrics, o.metrics_routes, o.sample_interval) == ("9108", 5, 2)
    bad_args = (
        ["--metrics", "host:80"],
        ["--metrics", "70000"],
        ["--metrics", "x"],
        ["--metrics", "80", "--sample-interval", "0"],
        ["--metrics-routes", "-1"],
    )
    for bad in bad_args:
        with pytest.raises(UsageError):
            parse_args(bad)


def test_prometheus_client_is_imported_only_for_metrics() -> None:
    code = (
        "import sys, smcroute.daemon, smcroute.daemon_cli, smcroute.ctl, smcroute.stats\n"
        "assert 'prometheus_client' not in sys.modules, 'imported'\n"
        "assert 'smcroute.report' not in sys.modules\n"
        "import smcroute.metrics\n"
        "assert 'prometheus_client' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the metrics HTTP server -----------------------------------------------------------


@pytest.fixture
def server() -> Any:
    from smcroute import metrics

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    srv = metrics.MetricsServer(sock, max_routes=2)
    srv.snapshot = metrics.Snapshot(
        time=1.0e9,
        routes=(("10.0.1.2", "225.1.1.1", "a1", 10, 1000, 1),),
        dropped=3,
        vifs=(stats.VifCounters(4, 0, 2, "a1", 5, 500, 0, 0),),
        kinds=(("static", 1), ("template", 0), ("learned", 0), ("stop", 0), ("pending", 0)),
        joins=2,
        upcalls=(("nocache", 4), ("wrongvif", 1), ("other", 0)),
        kernel_failures=0,
        reloads=1,
        reload_failures=0,
        reload_seconds=0.01,
        limit_hits=0,
    )
    old = metrics.HEAD_TIMEOUT
    metrics.HEAD_TIMEOUT = 1.0
    srv.start()
    yield srv
    srv.stop()
    metrics.HEAD_TIMEOUT = old


def http(srv: Any, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(srv.sock.getsockname(), timeout=timeout) as c:
        c.sendall(data)
        out = b""
        while chunk := c.recv(65536):
            out += chunk
        return out


def test_metrics_served_and_parsed(server: Any) -> None:
    reply = http(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    (pk,) = fams["smcroute_route_packets"].samples
    assert pk.labels == {"source": "10.0.1.2", "group": "225.1.1.1", "iif": "a1"}
    assert pk.value == 10
    assert fams["smcroute_route_series_dropped"].samples[0].value == 3
    assert {s.labels["kind"]: s.value for s in fams["smcroute_upcalls"].samples}["nocache"] == 4
    om = http(server, b"GET /metrics HTTP/1.0\r\nAccept: application/openmetrics-text\r\n\r\n")
    assert b"application/openmetrics-text" in om and om.rstrip().endswith(b"# EOF")
    assert http(server, b"HEAD /metrics HTTP/1.1\r\n\r\n").endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", b"404"),
        (b"GET /metrics/../x HTTP/1.1\r\n\r\n", b"404"),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 4\r\n\r\nkill", b"405"),
        (b"DELETE /metrics HTTP/1.1\r\n\r\n", b"405"),
        (b"\x00\xff garbage\r\n\r\n", b"400"),
        (b"GET /metrics\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b"431"),
    ],
)
def test_metrics_bad_requests(server: Any, request_: bytes, status: bytes) -> None:
    reply = http(server, request_)
    assert reply.split(b" ", 2)[1] == status
    assert http(server, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")


def test_metrics_slow_and_too_many_clients(server: Any) -> None:
    from smcroute import metrics

    slow = [socket.create_connection(server.sock.getsockname()) for _ in range(metrics.MAX_CLIENTS)]
    try:
        for s in slow:
            s.sendall(b"GET /metr")
        time.sleep(0.2)
        assert http(server, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 503")
        for s in slow:  # dropped after HEAD_TIMEOUT without a reply
            s.settimeout(5)
            assert s.recv(100) == b""
        assert http(server, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
    finally:
        for s in slow:
            s.close()


def test_metrics_render_failure_costs_one_scrape(server: Any) -> None:
    import dataclasses

    good = server.snapshot
    server.snapshot = dataclasses.replace(good, routes=(("s", "g", "i", "x", "y", "z"),))
    assert http(server, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 500")
    server.snapshot = good
    assert http(server, b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
