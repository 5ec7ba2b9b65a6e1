"""`smcroute.show`: the daemon renders `show routes` from its rows; the bytes must
be exactly what `smcroute.output` prints for the same routes as a document."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_daemon_upcalls import FakeHelper
from test_engine import engine, links, route

from smcroute import stats
from smcroute.daemon import Daemon, Options
from smcroute.engine.core import Engine, Link
from smcroute.engine.ops import UpcallKind
from smcroute.model import Config
from smcroute.output import (
    ROUTE_TABLES,
    Ifs,
    RouteRow,
    format_show,
    render,
    routes_json,
    routes_text,
)
from smcroute.show import document, render_routes, route_rows

NOCACHE, WRONGVIF = UpcallKind.NOCACHE, UpcallKind.WRONGVIF

A = ip_address


def busy_engine() -> Engine:
    """Templates (prefix, wildcard, IPv6), rules, learned entries, stop filters,
    a pending route, an interface name with a control character."""
    e = engine("a1", "a2", "a3", "eth\x01x", "a-very-long-interface")
    e.load_config(
        Config(
            routes=[
                route("a1", None, "225.3.3.0", "a2", "a3", glen=24),
                route("a+", "10.1.0.0", "225.4.0.0", "a3", slen=16, glen=16),
                route("a1", None, "ff2e::10", "a2"),
                route("a1", "10.0.0.5", "225.4.4.4", "a2"),
                route("a-very-long-interface", "10.0.0.6", "225.4.4.5", "eth\x01x", "a1"),
                route("a2", "fd00::5", "ff2e::5", "a1", "a3"),
                route("a1", "10.0.0.7", "225.4.4.7", "wg0"),  # pending: no wg0
            ]
        )
    )
    for i in range(1, 6):
        e.upcall(4, NOCACHE, 0, A(f"10.0.0.{i + 20}"), A("225.3.3.7"), 0.0)  # learned
    e.upcall(4, NOCACHE, 0, A("10.0.0.99"), A("226.1.1.1"), 0.0)  # stop filter
    e.upcall(6, NOCACHE, 0, A("fd00::9"), A("ff2e::10"), 0.0)
    return e


@pytest.mark.parametrize("fmt", ["text", "ansi", "rows", "json"])
@pytest.mark.parametrize("detail", [False, True])
def test_rows_render_as_the_document_does(fmt: str, detail: bool) -> None:
    e = busy_engine()
    counters = {k: (i * 7, i * 7000) for i, k in enumerate(e.mfc)} if detail else {}
    want = render("routes", document(e, "routes", detail, counters), fmt, detail=detail)
    assert render_routes(e, fmt, detail, counters) == want
    assert "10.0.0.21" in want and "fd00::9" in want and "10.0.0.99" in want


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_empty_tables(fmt: str) -> None:
    e = Engine()
    e.set_links([Link(2, "a1", 0x1043)])
    want = render("routes", document(e, "routes", False, {}), fmt, detail=False)
    assert render_routes(e, fmt, False, {}) == want
    assert want == ("" if fmt == "text" else '{\n  "routes": {\n    "asm": [],\n'
                    '    "ssm": [],\n    "kernel": []\n  }\n}\n')  # fmt: skip


name = st.text(max_size=12)
pair = st.tuples(name, st.lists(name, max_size=3).map(tuple))
row = st.tuples(st.none() | name, name, pair, st.integers(0, 2**64), st.integers(0, 2**64))


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_counters_from_a_kernel_sample(fmt: str) -> None:
    """The daemon's counters (a sample of the kernel's, looked up all at once
    for the rules) print as the same counters in a mapping; entries the sample
    lacks print zeros."""
    e = busy_engine()
    counters = {k: (i * 7 + 1, i * 7000 + 1) for i, k in enumerate(e.mfc) if i % 4}
    cols = stats._columns()
    for (fam, src, grp), (pk, by) in counters.items():
        for col, value in zip(cols, (stats.key64(fam, src, grp), pk, by, 0, 0.0), strict=True):
            col.append(value)  # type: ignore[arg-type]
    star = (4, None, A("225.9.9.9"))  # a (*,G) entry
    for col, value in zip(cols, (stats.key64(*star), 5, 50, 0, 0.0), strict=True):
        col.append(value)  # type: ignore[arg-type]
    view = stats.CountersView(stats.Sample(0.0, cols))
    assert view.many([star, (6, None, A("ff2e::9"))]) == [(5, 50), (0, 0)]
    want = render_routes(e, fmt, True, counters)
    assert render_routes(e, fmt, True, view) == want
    assert want == render("routes", document(e, "routes", True, counters), fmt, detail=True)
    assert view.many(list(e.mfc)) == [counters.get(k, (0, 0)) for k in e.mfc]


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("detail", [False, True])
def test_kernel_rows_that_are_rules_rows(fmt: str, detail: bool) -> None:
    """A rule's kernel entry with the rule's own (IIF, OIFs) is printed from the
    rule's row (its line made once); one whose OIFs differ (an interface that
    is missing) gets its own line."""
    e = engine("a1", "a2", "a3")
    e.load_config(
        Config(
            routes=[
                route("a1", "10.0.0.8", "225.4.4.8", "a2", "wg0"),  # no wg0: a2 only
                route("a1", "10.0.0.9", "225.4.4.9", "a2", "a3"),
            ]
        )
    )
    counters = {k: (i + 1, 100 * (i + 1)) for i, k in enumerate(e.mfc)} if detail else {}
    (_asm, ssm, kernel), _ifs = route_rows(e, detail, counters)
    assert [k is r for k, r in zip(kernel, ssm, strict=True)] == [False, True]
    want = render("routes", document(e, "routes", detail, counters), fmt, detail=detail)
    assert render_routes(e, fmt, detail, counters) == want
    if fmt == "text" and not detail:
        assert "a1   a2 wg0" in want and "a1   a2\n" in want  # the rule, then its entry


def distinct(tables: list[list[RouteRow]]) -> list[Ifs]:
    return list({id(r[2]): r[2] for t in tables for r in t}.values())


@st.composite
def sharing(draw: st.DrawFn, rows: st.SearchStrategy[RouteRow]) -> list[list[RouteRow]]:
    """Three tables; kernel rows may be the very objects of ssm rows (a rule's
    entry), anywhere among rows of their own."""
    asm, ssm = draw(st.lists(rows, max_size=3)), draw(st.lists(rows, max_size=4))
    kernel = draw(st.lists(rows | st.sampled_from(ssm) if ssm else rows, max_size=6))
    return [asm, ssm, kernel]


@given(sharing(row), st.booleans())
def test_routes_json_is_json_dumps(tables: list[list[RouteRow]], detail: bool) -> None:
    doc = {
        "routes": {
            key: [
                {"source": s, "group": g, "iif": i, "oifs": list(o)}
                | ({"packets": p, "bytes": b} if detail else {})
                for s, g, (i, o), p, b in table
            ]
            for (key, _title), table in zip(ROUTE_TABLES, tables, strict=True)
        }
    }
    want = json.dumps(doc, indent=2, ensure_ascii=True) + "\n"
    assert routes_json(tables, distinct(tables), detail=detail) == want


addr = st.text("0123456789abcdef.:/", min_size=1, max_size=45)  # what the daemon's rows hold
text_row = st.tuples(st.none() | addr, addr, pair, st.integers(0, 2**64), st.integers(0, 2**64))


@given(sharing(text_row), st.booleans(), st.booleans())
def test_routes_text_is_format_show(
    tables: list[list[RouteRow]], detail: bool, headings: bool
) -> None:
    """Any interface names (spaces, "%", control characters, empty), any widths,
    (S,G) longer than its column: the rows print as the document does."""
    doc = json.loads(routes_json(tables, distinct(tables), detail=detail))
    for plain in (True, False):
        want = format_show("routes", doc, detail=detail, plain=plain, headings=headings)
        got = routes_text(tables, distinct(tables), detail=detail, plain=plain, headings=headings)
        assert got == want


# --- the daemon keeps show routes rendered (smcroute.daemon_show, smcroute.show_kept) ---


@pytest.fixture
def shown_daemon(tmp_path: Path) -> Iterator[Daemon]:
    helper = FakeHelper([])
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctl.bind(str(tmp_path / "s"))
    ctl.listen()
    d = Daemon(Options(cache_timeout=0), helper, ctl, (4, 6))  # type: ignore[arg-type]
    d.engine.set_links(links("a1", "a2", "a3"))
    config = Config(
        routes=[
            route("a1", "10.0.0.1", "225.1.1.1", "a2"),
            route("a1", None, "225.3.3.0", "a2", "a3", glen=24),
            route("a2", "fd00::5", "ff2e::5", "a1"),
        ]
    )
    d.apply(d.engine.load_config(config))
    yield d
    helper.close()
    ctl.close()


def sample_of(counters: dict[tuple[int, Any, Any], tuple[int, int]]) -> stats.Sample:
    cols = stats._columns()
    for (fam, src, grp), (pk, by) in counters.items():
        for col, value in zip(cols, (stats.key64(fam, src, grp), pk, by, 0, 0.0), strict=True):
            col.append(value)  # type: ignore[arg-type]
    return stats.Sample(0.0, cols)


def a2_gone(d: Daemon) -> None:
    d.apply(d.engine.set_links(links("a1", "a3")))


CHANGES = {
    "add": lambda d: d.apply(d.engine.add_route(route("a1", "10.0.0.2", "225.1.1.2", "a3"))),
    "remove": lambda d: d.apply(d.engine.remove_route(route("a1", "10.0.0.1", "225.1.1.1"))),
    "learned": lambda d: d.apply(
        d.engine.upcall(4, NOCACHE, 0, A("10.0.0.9"), A("225.3.3.7"), 0.0)
    ),
    "an interface gone": a2_gone,
    "reload": lambda d: d.apply(
        d.engine.load_config(Config(routes=[route("a1", "10.0.0.1", "225.1.1.1", "a3")]))
    ),
}


@pytest.mark.parametrize("fmt", ["text", "json", "rows"])
@pytest.mark.parametrize("change", CHANGES)
def test_the_last_show_is_kept_until_the_routes_change(
    shown_daemon: Daemon, fmt: str, change: str
) -> None:
    d = shown_daemon
    first = d.show_text("routes", False, fmt)
    assert first == render_routes(d.engine, fmt, False, {}).encode()
    assert d.shown is not None
    kept = d.shown[(fmt == "json", False)]
    rendered = kept.rendered
    assert d.show_text("routes", False, fmt) == first
    assert kept.rendered == rendered  # kept: no row rendered again
    other = "json" if fmt != "json" else "text"
    assert d.show_text("routes", False, other) == render_routes(d.engine, other, False, {}).encode()
    assert d.show_text("routes", False, fmt) == first  # each form kept
    assert kept.rendered == rendered
    CHANGES[change](d)
    now = d.show_text("routes", False, fmt)
    assert now != first
    assert now == render_routes(d.engine, fmt, False, {}).encode()


def test_the_last_show_d_is_kept_while_the_counters_stay(
    shown_daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = shown_daemon
    counters = {k: (i + 1, 100 * (i + 1)) for i, k in enumerate(d.engine.mfc)}
    monkeypatch.setattr(d.sampler, "fresh", lambda now, names=None: sample_of(counters))
    first = d.show_text("routes", True, "text")
    assert first == render_routes(d.engine, "text", True, counters).encode()
    assert d.show_text("routes", True, "text") == first  # a dump with the same counters
    assert d.show_text("routes", False, "text") != first  # without counters: another form
    assert d.show_text("routes", True, "text") == first
    counters[next(iter(counters))] = (7, 700)  # one counter moved
    moved = d.show_text("routes", True, "text")
    assert moved == render_routes(d.engine, "text", True, counters).encode() != first
    del counters[next(iter(counters))]  # an entry gone from the kernel's dump
    assert (
        d.show_text("routes", True, "text")
        == render_routes(d.engine, "text", True, counters).encode()
    )


def test_the_last_show_is_dropped_by_the_next_sample(
    shown_daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = shown_daemon
    monkeypatch.setattr(d.sampler, "fresh", lambda now, names=None: sample_of({}))
    first = d.show_text("routes", False, "text")
    assert d.shown is not None
    assert d.sampler.due(0.0)  # the loop asks first
    d.take_sample(0.0)
    assert d.shown is None
    assert d.show_text("routes", False, "text") == first
    monkeypatch.setattr(d.sampler, "interval", 0)  # no steady samples: nothing kept
    d.take_sample(1.0)
    assert d.show_text("routes", False, "text") == first
    assert d.shown is None
