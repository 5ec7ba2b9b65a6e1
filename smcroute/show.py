"""The `show` documents: pure functions from the engine's state to JSON values.

Owns the shape of every `show` answer (routes, groups, interfaces, pending),
as `smcroute.output` formats them and `smcroutectl -j` prints them.  Kernel
counters come in as an argument (the daemon reads them over netlink).

Must not: do I/O, read the clock, or change the engine (public queries only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smcroute.engine.core import Engine, EngineError
from smcroute.model import Address, MGroup, MRoute, fmt_prefix

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


def routes(engine: Engine, detail: bool, counters: Counters) -> Any:
    """Templates (asm), rules (ssm) and kernel entries; counters only with `detail`."""
    kernel = []
    per_template: dict[int, list[int]] = {}
    templates = engine.templates()
    tindex = {id(t): i for i, t in enumerate(templates)}
    for row in engine.kernel_rows():
        obj: dict[str, Any] = {
            "source": _addr_str(row.source),
            "group": str(row.group),
            "iif": row.iif,
            "oifs": list(row.oifs),
        }
        kernel.append(obj)
        if not detail:
            continue
        pk, by = counters.get((row.family, row.source, row.group), (0, 0))
        obj["packets"], obj["bytes"] = pk, by
        if row.kind == "learned" and row.source is not None:
            t = engine.template_for(row.family, row.iif, row.source, row.group)
            if t is not None and id(t) in tindex:
                acc = per_template.setdefault(tindex[id(t)], [0, 0])
                acc[0] += pk
                acc[1] += by
    asm = []
    for i, t in enumerate(templates):
        obj = route_obj(t)
        if detail:
            obj["packets"], obj["bytes"] = per_template.get(i, [0, 0])
        asm.append(obj)
    ssm = []
    for r in engine.rules():
        obj = route_obj(r)
        if detail:
            obj["packets"], obj["bytes"] = counters.get((r.family, r.source, r.group), (0, 0))
        ssm.append(obj)
    return {"routes": {"asm": asm, "ssm": ssm, "kernel": kernel}}


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
