"""The `show` documents: pure functions from the engine's state to JSON values.

Owns the shape of every `show` answer (routes, groups, interfaces, pending),
as `smcroute.output` formats them and `smcroutectl -j` prints them.  Kernel
counters come in as an argument (the daemon reads them over netlink).

Must not: do I/O, read the clock, or change the engine (public queries only).
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address
from socket import AF_INET, inet_ntop
from typing import Any

from smcroute.engine.core import Engine, EngineError
from smcroute.model import Address, MGroup, MRoute, fmt_prefix
from smcroute.output import ROUTE_TABLES, RouteRow, routes_json, routes_text

Counters = Mapping[tuple[int, object, object], tuple[int, int]]  # -> (packets, bytes)


def _addr_str(addr: Address | None, length: int | None = None) -> str | None:
    if addr is None:
        return None
    return str(addr) if length is None else fmt_prefix(addr, length)


def route_obj(r: MRoute) -> dict[str, Any]:
    return {
        "source": _addr_str(r.source, r.source_len),
        "group": fmt_prefix(r.group, r.group_len),
        "iif": r.iif,
        "oifs": list(r.oifs),
    }


def group_obj(g: MGroup) -> dict[str, Any]:
    return {
        "source": _addr_str(g.source, g.source_len),
        "group": fmt_prefix(g.group, g.group_len),
        "iif": g.iif,
    }


def document(engine: Engine, what: str, detail: bool, counters: Counters) -> Any:
    """The answer to `show WHAT`; `counters` matter only to `routes` with `detail`."""
    if what == "routes":
        return routes(engine, detail, counters)
    if what == "groups":
        return groups(engine)
    if what == "interfaces":
        return interfaces(engine)
    if what == "pending":
        return pending(engine)
    raise EngineError(
        f"unknown show argument {what!r}; expected routes, groups, interfaces or pending"
    )


def route_rows(engine: Engine, detail: bool, counters: Counters) -> list[list[RouteRow]]:
    """Templates (asm), rules (ssm) and kernel entries as rows; counters only with `detail`."""
    texts: dict[int, str] = {}  # id(address) -> its text: kernel rows reuse the rules'

    def text(addr: Address) -> str:
        t = texts.get(id(addr))
        if t is None:
            # inet_ntop is str() for IPv4, ~4x faster; the engine keeps addr alive.
            t = inet_ntop(AF_INET, addr.packed) if type(addr) is IPv4Address else str(addr)
            texts[id(addr)] = t
        return t

    def prefix(addr: Address, length: int) -> str:
        if length == (32 if type(addr) is IPv4Address else 128):
            return text(addr)
        return f"{text(addr)}/{length}"

    templates = engine.templates()
    asm: list[RouteRow] = []
    ssm: list[RouteRow] = []
    for r in engine.rules():
        pk, by = counters.get((r.family, r.source, r.group), (0, 0)) if detail else (0, 0)
        src = None if r.source is None else prefix(r.source, r.source_len)
        ssm.append((src, prefix(r.group, r.group_len), r.iif, r.oifs, pk, by))
    kernel: list[RouteRow] = []
    per_template: dict[int, list[int]] = {}
    tindex = {id(t): i for i, t in enumerate(templates)}
    for row in engine.kernel_rows():
        src = None if row.source is None else text(row.source)
        if not detail:
            kernel.append((src, text(row.group), row.iif, row.oifs, 0, 0))
            continue
        pk, by = counters.get((row.family, row.source, row.group), (0, 0))
        kernel.append((src, text(row.group), row.iif, row.oifs, pk, by))
        if row.kind == "learned" and row.source is not None:
            t = engine.template_for(row.family, row.iif, row.source, row.group)
            if t is not None and id(t) in tindex:
                acc = per_template.setdefault(tindex[id(t)], [0, 0])
                acc[0] += pk
                acc[1] += by
    for i, t in enumerate(templates):
        pk, by = per_template.get(i, (0, 0)) if detail else (0, 0)
        src = None if t.source is None else prefix(t.source, t.source_len)
        asm.append((src, prefix(t.group, t.group_len), t.iif, t.oifs, pk, by))
    return [asm, ssm, kernel]


def routes(engine: Engine, detail: bool, counters: Counters) -> Any:
    """The routes document (doc/SPEC.md §4 JSON)."""
    tables = route_rows(engine, detail, counters)
    out: dict[str, list[dict[str, Any]]] = {}
    for (key, _title), table in zip(ROUTE_TABLES, tables, strict=True):
        objs = []
        for source, group, iif, oifs, pk, by in table:
            obj: dict[str, Any] = {"source": source, "group": group, "iif": iif, "oifs": list(oifs)}
            if detail:
                obj["packets"], obj["bytes"] = pk, by
            objs.append(obj)
        out[key] = objs
    return {"routes": out}


def render_routes(engine: Engine, fmt: str, detail: bool, counters: Counters) -> str:
    """`show routes` as smcroutectl prints it (see `smcroute.output.render`), from
    the rows directly: the same bytes as rendering the document, much sooner."""
    tables = route_rows(engine, detail, counters)
    if fmt == "json":
        return routes_json(tables, detail=detail)
    return routes_text(tables, detail=detail, plain=fmt != "ansi", headings=fmt != "rows")


def groups(engine: Engine) -> Any:
    return {
        "groups": {
            "conf": [group_obj(g) for g in engine.groups.values()],
            "kernel": [
                {"source": _addr_str(src), "group": str(grp), "iif": name}
                for (_f, _i, grp, src), name in engine.joins.items()
            ],
        }
    }


def interfaces(engine: Engine) -> Any:
    return {
        "interfaces": [
            {
                "index": link.index,
                "name": link.name,
                "vif": engine.vif_of(4, link.name),
                "mif": engine.vif_of(6, link.name),
            }
            for link in sorted(engine.links.values(), key=lambda li: li.index)
        ]
    }


def pending(engine: Engine) -> Any:
    out = []
    for d in engine.pending():
        obj: dict[str, Any] = {"kind": "mroute" if isinstance(d, MRoute) else "mgroup"}
        obj.update(route_obj(d) if isinstance(d, MRoute) else group_obj(d))
        out.append(obj)
    return {"pending": out}
