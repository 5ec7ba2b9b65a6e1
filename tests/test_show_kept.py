"""`smcroute.show_kept`: `show routes` kept rendered and brought up to date by
difference must print, after any change, the bytes `smcroute.show.render_routes`
prints from scratch; and a small change must render few rows."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import ip_address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_engine import links, route
from test_show import busy_engine, sample_of

from smcroute import stats
from smcroute.engine.core import Engine, EngineError
from smcroute.engine.ops import UpcallKind
from smcroute.model import Config, MRoute
from smcroute.show import render_routes
from smcroute.show_kept import KeptRoutes

A = ip_address
NAMES = ["a1", "a2", "a3", "eth\x01x", "a-very-long-interface"]
FORMS = [("text", False), ("text", True), ("ansi", True), ("rows", False), ("json", False),
         ("json", True)]  # fmt: skip


def kept_forms() -> dict[tuple[str, bool], KeptRoutes]:
    return {(fmt, detail): KeptRoutes(fmt == "json", detail) for fmt, detail in FORMS}


def check(e: Engine, kept: dict[tuple[str, bool], KeptRoutes], sample: stats.Sample) -> None:
    view = stats.CountersView(sample)
    for (fmt, detail), k in kept.items():
        want = render_routes(e, fmt, detail, view if detail else {}).encode()
        assert k.text(e, fmt, sample if detail else None) == want, (fmt, detail)


def counters_of(e: Engine, seed: int) -> dict[tuple[int, Any, Any], tuple[int, int]]:
    """Some of the kernel's entries with counters (a dump may lack an entry)."""
    return {
        k: (seed * i % 1000, seed * i * 1500 % 10**12)
        for i, k in enumerate(e.mfc)
        if (seed + i) % 5
    }


def exact(n: int) -> MRoute:
    iif, oif = NAMES[n % 3], NAMES[(n + 1) % 5]
    if n % 7 == 0:
        return route(iif, f"fd00::{n % 13:x}", f"ff2e::{n % 11:x}", oif)
    if n % 11 == 0:  # a zone: "%" in the (S,G) text
        return MRoute(iif, A(f"fe80::{n % 13:x}%x"), 128, A("ff2e::77"), 128, (oif,))
    return route(iif, f"10.0.{n % 4}.{n % 17}", f"225.1.{n % 3}.{n % 19}", oif, NAMES[n % 5])


def rename(e: Engine, n: int) -> None:
    """An interface renamed (a longer or shorter name: the IIF column's width; a "%")."""
    names = list(NAMES)
    names[n % 5] = ["b%2", "a-much-longer-interface-name", "x", "a1%%"][n % 4]
    if len(set(names)) == len(names):
        e.set_links(links(*names))


OPS: dict[str, Callable[[Engine, int], object]] = {
    "add": lambda e, n: e.add_route(exact(n)),
    "add OIFs": lambda e, n: e.add_route(route("a1", "10.0.0.5", "225.4.4.4", NAMES[n % 5])),
    "remove": lambda e, n: e.remove_route(list(e.routes.values())[n % len(e.routes)]),
    "template": lambda e, n: e.add_route(route("a2", None, f"225.{n % 5}.0.0", "a3", glen=16)),
    "learned": lambda e, n: e.upcall(
        4, UpcallKind.NOCACHE, 0, A(f"10.0.0.{n % 50 + 30}"), A("225.3.3.7"), 0.0
    ),
    "rename": rename,
    "gone": lambda e, n: e.set_links(links(*(x for i, x in enumerate(NAMES) if i != n % 5))),
    "back": lambda e, n: e.set_links(links(*NAMES)),
    "reload": lambda e, n: e.load_config(
        Config(routes=[exact(n + i) for i in range(n % 4)] + list(e.routes.values())[n % 3 :])
    ),
    "counters": lambda e, n: None,
}


@given(st.lists(st.tuples(st.sampled_from(sorted(OPS)), st.integers(0, 10**6)), max_size=12))
def test_kept_routes_print_what_a_fresh_render_prints(ops: list[tuple[str, int]]) -> None:
    """Any changes one after the other (routes in and out, templates, learned
    sources, interfaces renamed, gone and back, reloads, counters moving): every
    form, brought up to date after each, prints the bytes rendered from scratch."""
    e = busy_engine()
    kept = kept_forms()
    check(e, kept, sample_of(counters_of(e, 1)))
    for op, n in ops:
        try:
            OPS[op](e, n)
        except (EngineError, ZeroDivisionError):
            continue  # refused (no such interface, no such route...): nothing changed
        check(e, kept, sample_of(counters_of(e, n)))


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("detail", [False, True])
def test_a_change_renders_its_rows_only(fmt: str, detail: bool) -> None:
    e = busy_engine()
    for i in range(200):
        e.add_route(route("a1", f"10.1.{i // 250}.{i % 250}", "225.9.9.9", "a2", "a3"))
    k = KeptRoutes(fmt == "json", detail)
    sample = sample_of(counters_of(e, 3))
    k.text(e, fmt, sample)
    total = k.rendered
    assert total >= 400  # rules and their kernel entries
    k.text(e, fmt, sample_of(counters_of(e, 4)))  # counters moved: no row rendered
    assert k.rendered == total
    for change in (
        lambda: e.add_route(route("a1", "10.2.0.1", "225.9.9.9", "a2")),  # a rule, an entry
        lambda: e.remove_route(route("a1", "10.1.0.7", "225.9.9.9")),
        lambda: e.add_route(route("a1", "10.1.0.9", "225.9.9.9", "a1")),  # one more OIF
    ):
        change()
        got = k.text(e, fmt, sample)
        assert k.rendered - total <= 2
        assert got == render_routes(e, fmt, detail, stats.CountersView(sample)).encode()
        total = k.rendered
    e.set_links(links("a1", "a2", "a3", "eth\x01x", "a-very-long-interface-renamed"))
    got = k.text(e, fmt, sample)  # a wider IIF column: every row anew
    assert k.rendered - total > 400
    assert got == render_routes(e, fmt, detail, stats.CountersView(sample)).encode()


def test_counters_are_the_dumps_of_this_show() -> None:
    """With `-d`, each show has the counters of the sample it is given, rows
    the sample lacks print zeros, a template sums its learned entries."""
    e = busy_engine()
    k = KeptRoutes(False, True)
    for seed in (1, 2, 0, 7):
        counters = counters_of(e, seed)
        got = k.text(e, "text", sample_of(counters))
        assert got == render_routes(e, "text", True, counters).encode()
    key = next(k for k, m in e.mfc.items() if m.kind == "learned")
    got = k.text(e, "text", sample_of({key: (123456789, 987654321)})).decode()
    assert "(*, 225.3.3.0/24)" in got and "123456789  987654321" in got
    assert got.count(" 123456789 ") == 2  # its kernel row and its template's row


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_counters_of_a_dump_in_the_kernels_order_or_not(fmt: str) -> None:
    """Rules whose kernel entries print as their rows (the same text) and a dump
    in the entries' own order (the kernel's usual one): the dump's columns as
    they are, filled once for both tables; in any other order, or with an
    entry the dump lacks or one more, each row still gets its own counters."""
    e = Engine()
    e.set_links(links("a1", "a2", "a3"))
    e.load_config(
        Config(routes=[route("a1", f"10.0.0.{i}", f"225.1.1.{i}", "a2", "a3") for i in range(9)])
    )
    k = KeptRoutes(fmt == "json", True)
    keys = list(e.mfc)
    extra = (4, A("10.9.9.9"), A("225.9.9.9"))  # an entry of the kernel's none of ours
    for order in (keys, keys[::-1], keys[2:], [*keys, extra], [keys[3], *keys[:3], *keys[4:]]):
        counters = {key: (i + 1, 1000 * (i + 1)) for i, key in enumerate(order)}
        got = k.text(e, fmt, sample_of(counters))
        assert got == render_routes(e, fmt, True, counters).encode()
        assert b"10.0.0.8" in got and (b"1000" in got if keys[0] in order else True)
    e.add_route(route("a2", "10.0.1.1", "225.1.1.1", "a1"))  # a rule of its own pair
    counters = {key: (7, 7000 + i) for i, key in enumerate(e.mfc)}
    assert k.text(e, fmt, sample_of(counters)) == render_routes(e, fmt, True, counters).encode()
