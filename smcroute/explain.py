"""`smcroutectl explain [IIF] SOURCE GROUP`: follow one flow through the router.

Owns the daemon-side answer: a document listing, for each inbound interface
the flow arrives on (the one given, or every interface on which it has been
seen or is configured), each check on its path with a verdict (`ok`,
`fail`, `warn`, `info`), what was found and, where it fails, the fix in one
line; `cause` names the first failing check (else the first warning).

Check ids (stable, for scripts): `group-scope`, `iif-missing`, `iif-down`,
`iif-multicast`, `iif-vif`, `rp-filter`, `no-route`, `stop-filter`,
`wrong-iif`, `pending`, `decision`, `kernel-entry`, `oif-missing`,
`oif-down`, `oif-multicast`, `oif-vif`, `ttl-threshold`, `table`.

Must not: change any state (it reads the engine, one counter dump and
`/proc/sys`), or raise anything but `EngineError` (a one-line message for
bad input: mixed families, a group that is not multicast, an unknown
interface).
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address, IPv6Address, ip_address

from smcroute.engine.core import IFF_MULTICAST, IFF_RUNNING, IFF_UP, Engine, EngineError, Link
from smcroute.model import (
    IPC,
    Address,
    MRoute,
    fmt_prefix,
    ifname_matches,
    in_prefix,
    is_wildcard,
)
from smcroute.netlink import default_table
from smcroute.stats import Entry, Sample

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import Any

UP = IFF_UP | IFF_RUNNING


def sysctl(path: str) -> int | None:
    """An integer from /proc/sys (None when unreadable)."""
    try:
        with open(f"/proc/sys/{path}", encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def rp_filter(ifname: str) -> int:
    """The effective IPv4 rp_filter of an interface: max(all, the interface's)."""
    return max(
        sysctl("net/ipv4/conf/all/rp_filter") or 0, sysctl(f"net/ipv4/conf/{ifname}/rp_filter") or 0
    )


def origin(r: MRoute) -> str:
    """`FILE:LINE` of a directive, or where a runtime route came from."""
    return "added with smcroutectl" if r.where == IPC else str(r.where)


def directive(r: MRoute) -> str:
    """The route as a configuration line."""
    words = ["mroute from", r.iif]
    if r.source is not None:
        words += ["source", fmt_prefix(r.source, r.source_len)]
    words += ["group", fmt_prefix(r.group, r.group_len), "to", *r.oifs]
    return " ".join(words)


def check(cid: str, verdict: str, detail: str, fix: str | None = None) -> dict[str, Any]:
    return {"check": cid, "verdict": verdict, "detail": detail, "fix": fix}


def parse_flow(engine: Engine, args: list[str]) -> tuple[str | None, Address, Address]:
    """[IIF] SOURCE GROUP -> (iif, source, group); EngineError with one line otherwise."""
    if len(args) not in (2, 3):
        raise EngineError("explain takes [IIF] SOURCE GROUP")
    iif = args[0] if len(args) == 3 else None
    addrs = []
    for what, word in zip(("source", "group"), args[-2:], strict=True):
        try:
            addrs.append(ip_address(word))
        except ValueError:
            raise EngineError(f"explain: {what} {word!r} is not an IPv4 or IPv6 address") from None
    source, group = addrs
    if source.version != group.version:
        raise EngineError(
            f"explain: source {source} is IPv{source.version} but group {group} is "
            f"IPv{group.version}; give both of one family"
        )
    if not group.is_multicast:
        raise EngineError(f"explain: group {group} is not a multicast address")
    if source.is_multicast or source.is_unspecified:
        raise EngineError(f"explain: source {source} must be the sender's unicast address")
    if iif is not None and (is_wildcard(iif) or iif not in engine.links):
        raise EngineError(f"explain: no such interface: {iif}")
    return iif, source, group


def _scope(group: Address) -> dict[str, Any]:
    if isinstance(group, IPv4Address) and int(group) >> 8 == 0xE00000:
        return check(
            "group-scope",
            "fail",
            f"{group} is link-local (224.0.0.0/24): the kernel never routes it",
            "use a group outside 224.0.0.0/24",
        )
    if isinstance(group, IPv6Address) and (int(group) >> 112) & 0xF <= 2:
        return check(
            "group-scope",
            "fail",
            f"{group} has interface- or link-local scope: the kernel never routes it",
            "use a group of wider scope (e.g. ff0e::/16 or ff05::/16)",
        )
    return check(
        "group-scope",
        "ok",
        f"{group} is routable; packets sent with TTL (hop limit) 1 never are",
    )


def _link_checks(engine: Engine, fam: int, name: str, role: str) -> list[dict[str, Any]]:
    """exists, up, MULTICAST, VIF (and rp_filter for an IPv4 inbound interface)."""
    p = "iif" if role == "inbound" else "oif"
    link: Link | None = engine.links.get(name)
    if link is None:
        return [
            check(
                f"{p}-missing",
                "fail",
                f"{role} interface {name} does not exist",
                f"create {name} or correct the name in the configuration",
            )
        ]
    out = [
        check(f"{p}-up", "ok", f"{role} {name} is up")
        if link.flags & UP == UP
        else check(
            f"{p}-down",
            "fail",
            f"{role} {name} is down or has no carrier",
            f"ip link set {name} up (and check its cable or peer)",
        )
    ]
    if not link.flags & IFF_MULTICAST:
        out.append(
            check(
                f"{p}-multicast",
                "fail",
                f"{role} {name} lacks the MULTICAST flag",
                f"ip link set {name} multicast on",
            )
        )
    vif = engine.vif_of(fam, name)
    kind = "VIF" if fam == 4 else "MIF"
    if vif is None:
        out.append(
            check(
                f"{p}-vif",
                "fail",
                f"{role} {name} has no {kind}",
                f"name {name} in a route or a 'phyint {name} enable' line (not 'disable')",
            )
        )
    else:
        out.append(check(f"{p}-vif", "ok", f"{role} {name} is {kind} {vif}"))
    return out


def _stats_text(e: Entry | None) -> str:
    if e is None:
        return "no counters yet"
    seen = "never" if e.last_seen is None else f"{e.last_seen:g} s ago"
    rate = "" if e.pps is None else f", {e.pps:g} packets/s, {e.bps:g} bits/s"
    return (
        f"{e.packets} packets, {e.bytes} bytes, {e.wrong_if} from the wrong interface, "
        f"last seen {seen}{rate}"
    )


def _matching_pending(
    engine: Engine, iif: str | None, source: Address, group: Address
) -> list[MRoute]:
    out = []
    for d in engine.pending():
        if not isinstance(d, MRoute) or d.family != group.version:
            continue
        if iif is not None and not ifname_matches(d.iif, iif):
            continue
        if not in_prefix(group, d.group, d.group_len):
            continue
        if d.source is not None and not in_prefix(source, d.source, d.source_len):
            continue
        out.append(d)
    return out


def _path(
    engine: Engine,
    iif: str | None,
    source: Address,
    group: Address,
    fresh: Sample,
    steady: Sample | None,
    table: int,
) -> dict[str, Any]:
    fam = 4 if group.version == 4 else 6
    checks = [_scope(group)]
    if iif is not None:
        checks += _link_checks(engine, fam, iif, "inbound")
        if fam == 4 and iif in engine.links:
            rp = rp_filter(iif)
            if rp:
                checks.append(
                    check(
                        "rp-filter",
                        "warn",
                        f"rp_filter={rp} on {iif}: the kernel drops multicast from {source} unless "
                        f"the route back to {source} goes out of {iif}"
                        + (" (strict)" if rp == 1 else " (loose: any interface)"),
                        f"sysctl -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.{iif}.rp_filter=0",
                    )
                )
            else:
                checks.append(check("rp-filter", "ok", f"rp_filter is off on {iif}"))
    entry = engine.mfc.get((group.version, source, group))
    pending = _matching_pending(engine, iif, source, group)
    rules = [
        r for r in engine.rules() if r.family == fam and r.source == source and r.group == group
    ]
    oifs: tuple[str, ...] = ()
    decided = False
    if rules:
        r = rules[-1]
        oifs = r.oifs
        if r in pending:
            missing = " ".join(
                n for n in (r.iif, *r.oifs) if not is_wildcard(n) and n not in engine.links
            )
            checks.append(
                check(
                    "pending",
                    "fail",
                    f"{origin(r)}: '{directive(r)}' waits for missing interface(s) {missing}",
                    f"create {missing} or correct the name(s) at {origin(r)}",
                )
            )
        elif iif is not None and r.iif != iif:
            checks.append(
                check(
                    "wrong-iif",
                    "fail",
                    f"{origin(r)}: '{directive(r)}' expects this flow on {r.iif}, not {iif}: "
                    f"the kernel drops it as wrong-interface",
                    f"change the route at {origin(r)} to 'from {iif}', or send on {r.iif}",
                )
            )
        elif not r.oifs:
            checks.append(
                check(
                    "stop-filter",
                    "fail",
                    f"{origin(r)}: the route has no outbound interface left (a stop filter)",
                    f"smcroutectl add {r.iif} {source} {group} OIF",
                )
            )
        else:
            decided = True
            checks.append(
                check("decision", "ok", f"{origin(r)}: '{directive(r)}' decides this flow")
            )
    else:
        t = engine.template_for(fam, iif, source, group) if iif is not None else None
        if t is not None and t in pending:
            pending = [t]
        if t is not None and t not in pending:
            decided = True
            oifs = t.oifs
            checks.append(
                check(
                    "decision",
                    "ok",
                    f"{origin(t)}: template '{directive(t)}' decides this flow "
                    f"(learned at its first packet)",
                )
            )
        elif pending:
            d = pending[-1]
            missing = " ".join(
                n for n in (d.iif, *d.oifs) if not is_wildcard(n) and n not in engine.links
            )
            checks.append(
                check(
                    "pending",
                    "fail",
                    f"{origin(d)}: '{directive(d)}' waits for missing interface(s) {missing}",
                    f"create {missing} or correct the name(s) at {origin(d)}",
                )
            )
        elif entry is not None and entry.kind == "stop":
            others = sorted(
                {
                    t.iif
                    for t in engine.templates()
                    if t.family == fam
                    and in_prefix(group, t.group, t.group_len)
                    and (t.source is None or in_prefix(source, t.source, t.source_len))
                }
            )
            also = f" (templates for it name only {', '.join(others)})" if others else ""
            where = iif or "its inbound interface"
            checks.append(
                check(
                    "stop-filter",
                    "fail",
                    f"a stop filter drops ({source}, {group}): "
                    f"no template covers inbound {where}{also}",
                    f"add 'mroute from {where} group {group} to OIF' to the configuration, reload, "
                    f"then smcroutectl flush",
                )
            )
        else:
            where = iif or "IIF"
            checks.append(
                check(
                    "no-route",
                    "fail",
                    f"no route, template or kernel entry for ({source}, {group})"
                    + (f" from {iif}" if iif else ""),
                    f"add 'mroute from {where} source {source} group {group} to OIF' "
                    f"(or a template 'mroute from {where} group {group} to OIF')",
                )
            )
    cur = fresh.get(fam, source, group)
    rated = steady.get(fam, source, group) if steady is not None else None
    if cur is not None and rated is not None:
        cur = Entry(cur.packets, cur.bytes, cur.wrong_if, cur.last_seen, rated.pps, rated.bps)
    if entry is not None:
        names = {v.vif: v.name for v in engine.vifs.get(fam, {}).values()}
        parent = names.get(entry.parent, "?")
        outs = [names.get(v, "?") for v, _ in entry.ttls]
        oifs = tuple(outs) if entry.kind != "stop" else ()
        text = f"kernel entry: from {parent} to {' '.join(outs) or 'nowhere'}; {_stats_text(cur)}"
        if iif is not None and parent != iif:
            checks.append(
                check(
                    "wrong-iif",
                    "fail",
                    f"{text}; it expects the flow on {parent}, not {iif}",
                    f"make the route name 'from {iif}', or send on {parent}",
                )
            )
        elif cur is not None and cur.wrong_if:
            all_wrong = cur.wrong_if >= cur.packets
            checks.append(
                check(
                    "wrong-iif",
                    "fail" if all_wrong else "warn",
                    f"{text}; {cur.wrong_if} packets arrived on another interface than {parent}",
                    f"send on {parent}, or change the route's inbound interface to where "
                    f"the traffic arrives (smcroutectl explain IIF {source} {group})",
                )
            )
        else:
            checks.append(check("kernel-entry", "ok" if oifs else "info", text))
    elif decided:
        checks.append(
            check(
                "kernel-entry",
                "info" if not rules else "fail",
                "no kernel entry yet: the first packet installs it"
                if not rules
                else "no kernel entry for this route (see the daemon's log for a kernel failure)",
                None if not rules else "smcroutectl reload, and read the log",
            )
        )
    for name in dict.fromkeys(o for pat in oifs for o in _expand(engine, pat, iif)):
        oc = _link_checks(engine, fam, name, "outbound")
        checks += [c for c in oc if c["verdict"] != "ok"]
        if all(c["verdict"] == "ok" for c in oc):
            thr = engine.vifs[fam][name].threshold
            if thr > 1:
                checks.append(
                    check(
                        "ttl-threshold",
                        "warn",
                        f"outbound {name} forwards only packets whose TTL is above {thr}",
                        f"lower 'phyint {name} ttl-threshold {thr}' or raise the sender's TTL",
                    )
                )
            else:
                checks.append(
                    check("oif", "ok", f"outbound {name} is up, has a VIF, threshold {thr}")
                )
    tbl = default_table(fam, table)
    checks.append(
        check(
            "table",
            "info",
            f"multicast routing table {tbl}"
            + (" (the default)" if not table else f": only traffic an 'ip mrule' sends to {tbl}"),
        )
    )
    fails = [c["check"] for c in checks if c["verdict"] == "fail"]
    warns = [c["check"] for c in checks if c["verdict"] == "warn"]
    return {
        "iif": iif,
        "verdict": "blocked" if fails else "warning" if warns else "ok",
        "cause": (fails or warns or [None])[0],
        "checks": checks,
    }


def _expand(engine: Engine, pattern: str, iif: str | None) -> list[str]:
    if not is_wildcard(pattern):
        return [pattern]
    return sorted(n for n in engine.links if ifname_matches(pattern, n) and n != iif)


def candidates(engine: Engine, source: Address, group: Address) -> list[str | None]:
    """Interfaces on which the flow has been seen or is configured."""
    fam = 4 if group.version == 4 else 6
    out: dict[str | None, None] = {}
    names = {v.vif: v.name for v in engine.vifs.get(fam, {}).values()}
    entry = engine.mfc.get((fam, source, group))  # type: ignore[arg-type]
    if entry is not None and entry.parent in names:
        out[names[entry.parent]] = None
    for r in engine.routes.values():
        if r.family != fam or not in_prefix(group, r.group, r.group_len):
            continue
        if r.source is not None and not in_prefix(source, r.source, r.source_len):
            continue
        for n in _expand(engine, r.iif, None):
            out[n] = None
    return list(out) or [None]


def explain(
    engine: Engine, args: list[str], fresh: Sample, steady: Sample | None, table: int
) -> dict[str, Any]:
    iif, source, group = parse_flow(engine, args)
    paths = [iif] if iif is not None else candidates(engine, source, group)
    return {
        "explain": {
            "source": str(source),
            "group": str(group),
            "family": group.version,
            "time": time.time(),
            "paths": [_path(engine, p, source, group, fresh, steady, table) for p in paths],
        }
    }
