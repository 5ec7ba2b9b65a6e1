"""The `show` documents: pure functions from the engine's state to JSON values.

Owns the shape of every `show` answer (routes, groups, interfaces, pending),
as `smcroute.output` formats them and `smcroutectl -j` prints them.  Kernel
counters come in as an argument (the daemon reads them over netlink).

Must not: do I/O, read the clock, or change the engine (public queries only).
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address

from smcroute.engine.core import Engine, EngineError
from smcroute.model import Address, MGroup, MRoute, fmt_prefix
from smcroute.output import ROUTE_TABLES, Ifs, RouteRow, routes_json, routes_text

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import Any

Counters = Mapping[tuple[int, object, object], tuple[int, int]]  # -> (packets, bytes)
_DECIMAL = [str(i) for i in range(256)]


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


def route_rows(
    engine: Engine, detail: bool, counters: Counters
) -> tuple[list[list[RouteRow]], list[Ifs]]:
    """Templates (asm), rules (ssm) and kernel entries as rows, and the distinct
    (IIF, OIFs) pairs the rows share; counters only with `detail`."""
    texts: dict[int, str] = {}  # id(address) -> its text: kernel rows reuse the rules'
    d = _DECIMAL

    def text(addr: Address) -> str:
        # str() of an IPv4Address, ~4x faster (its _ip: the address as an int,
        # what ipaddress stores); the engine keeps addr alive while texts lives.
        if type(addr) is IPv4Address:
            i = addr._ip  # type: ignore[attr-defined]
            t = texts[id(addr)] = f"{d[i >> 24]}.{d[i >> 16 & 255]}.{d[i >> 8 & 255]}.{d[i & 255]}"
        else:
            t = texts[id(addr)] = str(addr)
        return t

    def prefix(addr: Address, length: int) -> str:
        t = texts.get(id(addr)) or text(addr)
        return t if length == (32 if type(addr) is IPv4Address else 128) else f"{t}/{length}"

    shared: dict[tuple[str, tuple[str, ...]], Ifs] = {}  # one (IIF, OIFs) object per pair
    ifs_of: dict[int, Ifs] = {}  # id(oifs tuple or kernel entry) -> its pair

    def ifs(iif: str, oifs: tuple[str, ...]) -> Ifs:
        key = (iif, oifs)
        return shared.get(key) or shared.setdefault(key, key)

    get = counters.get
    no = (0, 0)
    templates: list[MRoute] = []
    rules: list[MRoute] = []
    for r in engine.routes.values():
        (templates if r.is_template else rules).append(r)
    counts = [no] * len(rules)
    if detail:  # one lookup of them all: no call per rule
        keys = [r.mfc_key for r in rules]  # (family, source, group)
        many = getattr(counters, "many", None)
        counts = many(keys) if many is not None else [get(k, no) for k in keys]
    ssm: list[RouteRow] = []
    rule_rows: dict[int, tuple[Address, RouteRow]] = {}  # id(group) -> (source, its rule's row)
    v4 = IPv4Address
    for r, (pk, by) in zip(rules, counts, strict=True):
        _, src, grp = r.mfc_key
        assert src is not None  # a rule has a source
        o = ifs_of.get(id(r.oifs))
        if o is None or o[0] != r.iif:
            o = ifs_of[id(r.oifs)] = ifs(r.iif, r.oifs)
        if type(src) is v4 and type(grp) is v4:  # text() inline: the bulk of every show
            i, j = src._ip, grp._ip  # type: ignore[attr-defined]
            row = (
                f"{d[i >> 24]}.{d[i >> 16 & 255]}.{d[i >> 8 & 255]}.{d[i & 255]}",
                f"{d[j >> 24]}.{d[j >> 16 & 255]}.{d[j >> 8 & 255]}.{d[j & 255]}",
                o,
                pk,
                by,
            )
        else:
            row = (text(src), text(grp), o, pk, by)
        ssm.append(row)
        rule_rows[id(grp)] = (src, row)
    kernel: list[RouteRow] = []
    per_template: dict[int, list[int]] = {}
    tindex = {id(t): i for i, t in enumerate(templates)}
    names = engine.mfc_names()
    for (fam, src, grp), m in engine.mfc.items():
        o = ifs_of.get(id(m))
        if o is None:
            o = ifs_of[id(m)] = ifs(*names(fam, m))
        rule = rule_rows.get(id(grp))
        if rule is not None and rule[0] is src:  # a rule's entry: its texts and counters
            ruled = rule[1]
            # The rule's very row when the pair is the same (the usual case):
            # its line is then made once for both tables (smcroute.output).
            kernel.append(ruled if ruled[2] is o else (*ruled[:2], o, *ruled[3:]))
            continue
        s = None if src is None else texts.get(id(src)) or text(src)
        g = texts.get(id(grp)) or text(grp)
        if not detail:
            kernel.append((s, g, o, 0, 0))
            continue
        pk, by = get((fam, src, grp), no)
        kernel.append((s, g, o, pk, by))
        if m.kind == "learned" and src is not None:
            t = engine.template_for(fam, o[0], src, grp)
            if t is not None and id(t) in tindex:
                acc = per_template.setdefault(tindex[id(t)], [0, 0])
                acc[0] += pk
                acc[1] += by
    asm: list[RouteRow] = []
    for i, t in enumerate(templates):
        pk, by = per_template.get(i, no) if detail else no
        st = None if t.source is None else prefix(t.source, t.source_len)
        asm.append((st, prefix(t.group, t.group_len), ifs(t.iif, t.oifs), pk, by))
    return [asm, ssm, kernel], list(shared.values())


def routes(engine: Engine, detail: bool, counters: Counters) -> Any:
    """The routes document (doc/SPEC.md §4 JSON)."""
    tables, _ifs = route_rows(engine, detail, counters)
    out: dict[str, list[dict[str, Any]]] = {}
    for (key, _title), table in zip(ROUTE_TABLES, tables, strict=True):
        objs = []
        for source, group, (iif, oifs), pk, by in table:
            obj: dict[str, Any] = {"source": source, "group": group, "iif": iif, "oifs": list(oifs)}
            if detail:
                obj["packets"], obj["bytes"] = pk, by
            objs.append(obj)
        out[key] = objs
    return {"routes": out}


def render_routes(engine: Engine, fmt: str, detail: bool, counters: Counters) -> str:
    """`show routes` as smcroutectl prints it (see `smcroute.output.render`), from
    the rows directly: the same bytes as rendering the document, much sooner.
    (The daemon keeps its shows rendered, smcroute.show_kept; its tests hold
    them to this.)"""
    tables, ifs = route_rows(engine, detail, counters)
    if fmt == "json":
        return routes_json(tables, ifs, detail=detail)
    return routes_text(tables, ifs, detail=detail, plain=fmt != "ansi", headings=fmt != "rows")


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
