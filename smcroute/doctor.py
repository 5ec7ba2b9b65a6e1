"""`smcroutectl doctor`: check the whole router once, most severe first.

Owns the daemon-side list of what is wrong (`error`) or risky (`warning`),
plus facts worth knowing (`info`, which do not make the router unhealthy):
interfaces the configuration names that are missing, down or lack
MULTICAST; `rp_filter` on interfaces with a VIF; a VIF/MIF table close to
its 32 slots; joins close to the kernel's limits; pending directives; stop
filters and the learned limit; a TTL threshold that blocks every route on an
interface; and whatever `smcrouted -F` says about the configuration file.

Check ids (stable, for scripts): `iface-missing`, `iface-down`,
`iface-multicast`, `rp-filter`, `vif-table`, `joins`, `pending`,
`stop-filters`, `learned-limit`, `ttl-threshold`, `config`, `table`.

Must not: change any state.
"""

from __future__ import annotations

import math
import os

from smcroute.engine.core import IFF_MULTICAST, Engine
from smcroute.explain import UP, directive, origin, rp_filter, sysctl
from smcroute.model import MRoute, ifname_matches, is_wildcard
from smcroute.netlink import default_table
from smcroute.parser import parse_file
from smcroute.privsep.kernel import MAXVIFS

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import Any

SEVERITY = {"error": 0, "warning": 1, "info": 2}
VIF_WARN = 28  # of MAXVIFS slots
JOIN_SOCKETS = 4096  # the privileged helper's join sockets per family and kind
LEARNED_WARN = 0.8


def problem(severity: str, cid: str, detail: str, fix: str | None = None) -> dict[str, Any]:
    return {"severity": severity, "check": cid, "detail": detail, "fix": fix}


def _named(engine: Engine) -> dict[str, str]:
    """Interface names (no wildcards) the configuration uses -> where first."""
    out: dict[str, str] = {}
    for p in engine.phyints:
        if p.enable and not is_wildcard(p.ifname):
            out.setdefault(p.ifname, str(p.where))
    for r in engine.routes.values():
        for n in (r.iif, *r.oifs):
            if not is_wildcard(n):
                out.setdefault(n, origin(r))
    for g in engine.groups.values():
        if not is_wildcard(g.iif):
            out.setdefault(g.iif, "added with smcroutectl" if g.where.line == 0 else str(g.where))
    return out


def _interfaces(engine: Engine) -> list[dict[str, Any]]:
    out = []
    for name, where in _named(engine).items():
        link = engine.links.get(name)
        if link is None:
            out.append(
                problem(
                    "error",
                    "iface-missing",
                    f"{name} (named at {where}) does not exist",
                    f"create {name} or correct the name at {where}",
                )
            )
            continue
        if link.flags & UP != UP:
            out.append(
                problem(
                    "error",
                    "iface-down",
                    f"{name} (named at {where}) is down or has no carrier",
                    f"ip link set {name} up (and check its cable or peer)",
                )
            )
        if not link.flags & IFF_MULTICAST:
            out.append(
                problem(
                    "error",
                    "iface-multicast",
                    f"{name} (named at {where}) lacks the MULTICAST flag: it gets no VIF",
                    f"ip link set {name} multicast on",
                )
            )
    return out


def _rp_filter(engine: Engine) -> list[dict[str, Any]]:
    out = []
    for name in engine.vifs.get(4, {}):
        rp = rp_filter(name)
        if rp:
            out.append(
                problem(
                    "warning",
                    "rp-filter",
                    f"rp_filter={rp} on {name} (it has a VIF): multicast from sources not "
                    f"routed back via {name} is dropped before routing",
                    f"sysctl -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.{name}.rp_filter=0",
                )
            )
    return out


def _vifs(engine: Engine) -> list[dict[str, Any]]:
    out = []
    for fam in engine.families:
        used = len(engine.vifs.get(fam, {}))
        kind = "VIF" if fam == 4 else "MIF"
        if used >= VIF_WARN:
            out.append(
                problem(
                    "error" if used >= MAXVIFS else "warning",
                    "vif-table",
                    f"{used} of {MAXVIFS} {kind}s in use",
                    "disable interfaces that route no multicast ('phyint IFNAME disable') "
                    "or narrow wildcards",
                )
            )
    return out


def _joins(engine: Engine) -> list[dict[str, Any]]:
    v4 = sum(1 for k in engine.joins if k[0] == 4)
    wanted = sum(1 for g in engine.groups.values() if g.family == 4)
    per_socket = sysctl("net/ipv4/igmp_max_memberships")
    if per_socket is None or not (v4 or wanted):
        return []
    if per_socket == 0 or v4 >= LEARNED_WARN * per_socket * JOIN_SOCKETS:
        return [
            problem(
                "error" if per_socket == 0 else "warning",
                "joins",
                f"{v4} IPv4 joins held; the kernel allows {per_socket} per socket "
                f"(net.ipv4.igmp_max_memberships), {per_socket * JOIN_SOCKETS} in all here",
                "sysctl -w net.ipv4.igmp_max_memberships=20 (or more), or join fewer groups",
            )
        ]
    sockets = math.ceil(v4 / per_socket) if per_socket else 0
    return [
        problem(
            "info",
            "joins",
            f"{v4} IPv4 joins on {sockets} socket(s) of {per_socket} groups each",
        )
    ]


def _pending(engine: Engine) -> list[dict[str, Any]]:
    out = []
    for d in engine.pending():
        missing = " ".join(
            n
            for n in ((d.iif, *d.oifs) if isinstance(d, MRoute) else (d.iif,))
            if not is_wildcard(n) and n not in engine.links
        )
        what = directive(d) if isinstance(d, MRoute) else f"mgroup from {d.iif} group {d.group}"
        where = origin(d) if isinstance(d, MRoute) else str(d.where)
        out.append(
            problem(
                "warning",
                "pending",
                f"{where}: '{what}' waits for missing interface(s) {missing}",
                f"create {missing} or correct the name(s) at {where}",
            )
        )
    return out


def _learned(engine: Engine, limit_hits: int) -> list[dict[str, Any]]:
    out = []
    stops = sum(1 for m in engine.mfc.values() if m.kind == "stop")
    if stops:
        out.append(
            problem(
                "info",
                "stop-filters",
                f"{stops} stop filter(s): sources no template covers on their inbound interface",
            )
        )
    n, cap = len(engine.learned), engine.max_learned
    if limit_hits or (cap and n >= LEARNED_WARN * cap):
        out.append(
            problem(
                "warning",
                "learned-limit",
                f"{n} learned routes and stop filters of at most {cap}"
                + (f"; {limit_hits} new sources refused at the limit" if limit_hits else ""),
                "raise --max-learned, lower -c (cache timeout), or smcroutectl flush",
            )
        )
    return out


def _thresholds(engine: Engine) -> list[dict[str, Any]]:
    out = []
    for fam in engine.families:
        for name, v in engine.vifs.get(fam, {}).items():
            if v.threshold < 255:
                continue
            used = any(
                r.family == fam and any(ifname_matches(o, name) for o in r.oifs)
                for r in engine.routes.values()
            )
            if used:
                out.append(
                    problem(
                        "error",
                        "ttl-threshold",
                        f"TTL threshold {v.threshold} on {name}: no packet can leave it "
                        "(forwarded only when TTL > threshold)",
                        f"lower 'phyint {name} ttl-threshold'",
                    )
                )
    return out


def _config(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return [problem("info", "config", f"{path} does not exist: no configured routes")]
    _config, problems = parse_file(path)
    out = []
    for p in problems:
        if p.warning:
            out.append(problem("warning", "config", str(p), "edit the line (smcrouted -F FILE)"))
        else:
            out.append(
                problem(
                    "error",
                    "config",
                    f"{p} (a reload would be rejected)",
                    "fix the line, check with smcrouted -F FILE, then reload",
                )
            )
    return out


def doctor(engine: Engine, conf: str, table: int, limit_hits: int) -> dict[str, Any]:
    problems = [
        *_interfaces(engine),
        *_rp_filter(engine),
        *_vifs(engine),
        *_joins(engine),
        *_pending(engine),
        *_learned(engine, limit_hits),
        *_thresholds(engine),
        *_config(conf),
    ]
    if table:
        problems.append(
            problem(
                "info",
                "table",
                f"multicast routing table {default_table(4, table)}: only traffic an "
                "'ip mrule' sends to it is routed",
            )
        )
    problems.sort(key=lambda p: SEVERITY[p["severity"]])
    healthy = not any(p["severity"] != "info" for p in problems)
    return {"doctor": {"healthy": healthy, "problems": problems}}
