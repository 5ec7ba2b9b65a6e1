"""The routing engine: the single owner of all routing state.

Inputs are the configuration, runtime requests from `smcroutectl`, the
system's interfaces, kernel upcalls and counter samples; outputs are lists of
kernel operations (`smcroute.engine.ops`) for the privileged helper.  The
engine does no I/O, reads no clock (time comes in as `now`) and needs no
privilege, so every behaviour of doc/SPEC.md §5-6 is testable here without root.

How it works: the *desired* kernel state is derived from (effective routes,
joins, phyints, links, learned sources); the *installed* state is what the
engine has asked the kernel to hold.  Every input updates the former and then
reconciles: only differences become operations, so a reload that changes one
line writes one entry, and an unchanged entry is never touched.

Must not: open sockets, call the kernel, read files, log, or sleep.  Every
output is in the one list of operations an input returns: a warning is a
`Log` in it, a hook request a `RunHook` right after the route it follows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from smcroute.engine.ops import (
    AddMfc,
    AddVif,
    Announce,
    DelMfc,
    DelVif,
    JoinGroup,
    LeaveGroup,
    Log,
    Op,
    Rule,
    RunHook,
    SetRules,
    UpcallKind,
)
from smcroute.model import (
    MAX_OIFS,
    Address,
    Config,
    Family,
    MGroup,
    MRoute,
    Phyint,
    fmt_prefix,
    full_len,
    ifname_matches,
    in_prefix,
    is_wildcard,
    network_addresses,
)
from smcroute.privsep.kernel import MAXVIFS
from smcroute.privsep.wire import MAX_RULES
from smcroute.records import NamedTuple, dataclass, field

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import Literal

IFF_UP = 0x1
IFF_RUNNING = 0x40
IFF_LOOPBACK = 0x8
IFF_MULTICAST = 0x1000
DEFAULT_MAX_LEARNED = 20000
LIMIT_LOG_INTERVAL = 60.0

RouteKey = tuple[str, Address | None, int, Address, int]
GroupKey = tuple[str, Address | None, int, Address, int]
MfcKey = tuple[Family, Address | None, Address]
JoinKey = tuple[Family, int, Address, Address | None]
Ttls = tuple[tuple[int, int], ...]


class EngineError(Exception):
    """A request that cannot be carried out (no such route, no such interface...)."""


@dataclass(frozen=True, slots=True)
class Link:
    """A network interface of the system, as netlink reports it."""

    index: int
    name: str
    flags: int

    @property
    def usable(self) -> bool:
        """Can carry routed multicast: has MULTICAST and is not loopback."""
        return bool(self.flags & IFF_MULTICAST) and not self.flags & IFF_LOOPBACK


@dataclass(slots=True)
class Vif:
    vif: int
    ifindex: int
    name: str
    threshold: int


@dataclass(frozen=True, slots=True)
class Mfc:
    """One kernel MFC entry as installed: inbound VIF, (oif VIF, threshold) list."""

    parent: int
    ttls: Ttls
    kind: Literal["rule", "learned", "stop", "star", "unknown"]  # unknown: see upcall()


@dataclass(slots=True)
class Learned:
    """A source learned from a NOCACHE upcall: forwarded by a template or stopped."""

    iif: str
    last_packets: int = 0


class KernelRow(NamedTuple):  # a NamedTuple: show builds one per kernel entry, fast
    family: int
    source: Address | None
    group: Address
    iif: str
    oifs: tuple[str, ...]
    kind: str


def _net(addr: Address, length: int) -> Address:
    """`addr` with the bits after the first `length` cleared."""
    shift = full_len(addr) - length
    return type(addr)(int(addr) >> shift << shift)


def _covers(t: MRoute, source: Address | None) -> bool:
    """Does template `t` take `source` (a route's: None is any)?"""
    if t.source is None:
        return True
    return source is not None and in_prefix(source, t.source, t.source_len)


def route_key(r: MRoute | MGroup) -> RouteKey:
    return (r.iif, r.source, r.source_len, r.group, r.group_len)


def _template_rank(t: MRoute, order: int) -> tuple[int, int, int, int]:
    """Sort key: most specific group, then source, exact iif, then config order."""
    slen = -1 if t.source is None else t.source_len
    return (-t.group_len, -slen, 1 if is_wildcard(t.iif) else 0, order)


@dataclass
class Engine:
    """All routing state.  See the module docstring."""

    families: tuple[Family, ...] = (4, 6)
    max_learned: int = DEFAULT_MAX_LEARNED
    zero_loss: bool = False

    # -- desired state -------------------------------------------------------
    phyints: list[Phyint] = field(default_factory=list)
    # Every route, in configuration order.  An exact route is keyed by its
    # (S,G) (the MfcKey `mfc` shares), a template by its `route_key`; so is an
    # exact route whose (S,G) another inbound interface holds already (`_key`).
    routes: dict[RouteKey | MfcKey, MRoute] = field(default_factory=dict)
    groups: dict[GroupKey, MGroup] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)
    learned: dict[MfcKey, Learned] = field(default_factory=dict)

    # -- installed state -----------------------------------------------------
    vifs: dict[int, dict[str, Vif]] = field(default_factory=lambda: {4: {}, 6: {}})
    mfc: dict[MfcKey, Mfc] = field(default_factory=dict)
    joins: dict[JoinKey, str] = field(default_factory=dict)

    # -- indexes -------------------------------------------------------------
    # (S,G) -> all its exact routes, in order (the last wins), for an (S,G) with
    # a route keyed by its `route_key` (several inbound interfaces): rare.
    # Any other (S,G)'s exact route is `routes[(S,G)]` (no index of its own:
    # a key and a slot per route less).
    _extra: dict[MfcKey, list[MRoute]] = field(default_factory=dict)
    # (family, iif, oifs) -> the one shared "rule" Mfc (or None: every OIF missing)
    _rule_memo: dict[tuple[int, str, tuple[str, ...]], Mfc | None] = field(default_factory=dict)
    _templates: list[tuple[tuple[int, int, int, int], MRoute]] = field(default_factory=list)
    _order: int = 0
    _tsorted: bool = True
    _limit_logged: float = -1e18
    # the helper's rule table (helper_rules), and the templates it must leave out
    _hrules: tuple[Rule, ...] | None = None
    _cover: set[RouteKey] | None = None

    # ======================================================================
    # Inputs
    # ======================================================================

    def load_config(self, config: Config) -> list[Op]:
        """Start-up and reload: the configuration becomes the truth.

        Runtime changes made with smcroutectl are dropped (doc/SPEC.md §6).  Learned
        sources survive and are re-matched against the new templates.
        """
        self.phyints = list(config.phyints)
        routes: dict[RouteKey | MfcKey, MRoute] = {}
        self.routes = routes
        self.groups = {}
        for r in config.routes:
            # a later duplicate wins (in the first's place); nothing is deleted
            # here, so an exact route's key is its (S,G) unless another inbound
            # interface has that (see _key)
            if r.is_template:
                routes[route_key(r)] = r
                continue
            # (one dict operation for most: hashing an (S,G) hashes two
            # ipaddress objects, each a text of its number)
            sg = r.mfc_key
            have = routes.setdefault(sg, r)
            if have is r:
                continue
            if have.iif == r.iif:
                routes[sg] = r
            else:
                routes[route_key(r)] = r
        for g in config.groups:
            self.groups[route_key(g)] = g
        self._reindex()
        return self.reconcile()

    def set_links(self, links: Iterable[Link], vanished: Iterable[int] = ()) -> list[Op]:
        """A fresh view of the system's interfaces (netlink rescan).

        `vanished`: ifindexes netlink reported deleted since the last view.
        An interface deleted and re-created with the same name and ifindex
        between two views looks unchanged, but the kernel dropped its VIF:
        such a link is first taken out, then put back, so every route that
        names it gets it back.
        """
        new = {link.name: link for link in links}
        ops: list[Op] = []
        gone = set(vanished)
        if gone and any(link.index in gone for link in self.links.values()):
            self.links = {n: link for n, link in self.links.items() if link.index not in gone}
            ops = self.reconcile()
        if new == self.links:
            return ops
        self.links = new
        return ops + self.reconcile()

    def add_route(self, r: MRoute) -> list[Op]:
        """`smcroutectl add`: a new route, or more OIFs for an existing one."""
        self._check_interfaces(r.iif, *r.oifs)
        key = self._key(r)
        old = self.routes.get(key)
        logs: list[Op] = []
        if old is not None:
            oifs = old.oifs + tuple(o for o in r.oifs if o not in old.oifs)
            if len(oifs) > MAX_OIFS:
                raise EngineError(f"{r.sg()}: more than {MAX_OIFS} outbound interfaces")
            r = MRoute(r.iif, r.source, r.source_len, r.group, r.group_len, oifs, old.origin)
        elif not r.is_template:
            others = self._exact_routes(r.mfc_key)
            other = next((x for x in others if x.iif != r.iif), None)
            if other is not None:
                why = (
                    f"{r.sg()} is already routed from {other.iif}; a source and group can have "
                    f"only one inbound interface, this route from {r.iif} wins"
                )
                logs.append(Log("warning", why))
        self.routes[key] = r
        return logs + self._route_changed(r, old)

    def remove_route(self, r: MRoute) -> list[Op]:
        """`smcroutectl remove`: the whole route, or only the OIFs given."""
        key = self._key(r)
        old = self.routes.get(key)
        if old is None:
            raise EngineError(f"no route {r.sg()} from {r.iif}")
        if r.oifs:
            missing = [o for o in r.oifs if o not in old.oifs]
            if missing:
                gone = " ".join(missing)
                raise EngineError(f"route {r.sg()} from {r.iif} has no outbound {gone}")
            oifs = tuple(o for o in old.oifs if o not in r.oifs)
            new = MRoute(r.iif, r.source, r.source_len, r.group, r.group_len, oifs, old.origin)
            self.routes[key] = new
            return self._route_changed(new, old)
        del self.routes[key]
        return self._route_changed(None, old)

    def join(self, g: MGroup) -> list[Op]:
        self._check_interfaces(g.iif)
        key = route_key(g)
        if key in self.groups:
            raise EngineError(f"already joined {g.sg()} on {g.iif}")
        self.groups[key] = g
        return self._sync_joins()

    def leave(self, g: MGroup) -> list[Op]:
        key = route_key(g)
        if key not in self.groups:
            raise EngineError(f"not a member of {g.sg()} on {g.iif}")
        del self.groups[key]
        return self._sync_joins()

    def upcall(
        self,
        family: int,
        kind: UpcallKind,
        vif: int,
        source: Address,
        group: Address,
        now: float,
        installed: Mfc | None = None,
        current: bool = False,
    ) -> list[Op]:
        """A kernel upcall: NOCACHE (unknown (S,G)) or WRONGVIF (arrived elsewhere).

        `installed`: the helper has already written this entry for a NOCACHE by
        one of its rules (`helper_rules`); an `unknown` Mfc when the daemon no
        longer knows that rule.  The engine then writes only where its own
        decision differs: the rule table it was made from may have changed since.
        `current`: that table is still `helper_rules()`, which made the engine's
        decision the rule's (see there): nothing left to compare.
        """
        iif = self._vif_name(family, vif)
        fam: Family = 4 if family == 4 else 6
        key: MfcKey = (fam, source, group)
        if iif is None:
            return [] if installed is None else [DelMfc(fam, source, group, vif)]
        if kind is UpcallKind.NOCACHE:
            have = self.mfc.get(key)
            if have is not None:  # already resolved (a late duplicate upcall)
                if installed is None or installed == have:
                    return []
                # our own write and the helper's crossed: ours stands
                return [AddMfc(fam, source, group, have.parent, have.ttls)]
            if installed is not None:
                self.mfc[key] = installed  # what the kernel holds now
            full = len(self.learned) >= self.max_learned
            if current and not full and installed is not None and key not in self.learned:
                self.learned[key] = Learned(iif)
                return [RunHook("install", fam, source, group)]
            if key not in self.learned and full:
                undo = self._sync_mfc([key])  # takes back what the helper installed
                if now - self._limit_logged < LIMIT_LOG_INTERVAL:
                    return undo
                self._limit_logged = now
                why = (
                    f"learned-entry limit ({self.max_learned}) reached: "
                    f"not installing ({source}, {group}) from {iif} or other new sources"
                )
                return [*undo, Log("warning", why)]
            self.learned[key] = Learned(iif)
            ops = self._sync_mfc([key], hook=True)
            if not ops and installed is not None and installed.kind == "learned":
                ops.append(RunHook("install", fam, source, group))  # the helper's install
            return ops
        if kind is UpcallKind.WRONGVIF:
            # The kernel runs in PIM mode, so it reports the (S,G) arriving on
            # any interface other than the entry's inbound one, once per entry
            # per 3 s (doc/KERNEL.md "PIM mode").  A stop filter gives way to a
            # feed a template covers (redundant feeds); a learned entry moves
            # only when its traffic comes back in on one of its own outbound
            # interfaces (the source moved), so two live feeds never make it
            # flap; exact rules are the configuration's truth: never moved.
            cur = self.mfc.get(key)
            if cur is None or cur.kind not in ("learned", "stop"):
                return []
            if cur.kind == "learned" and all(v != vif for v, _ in cur.ttls):
                return []
            if self._match(family, iif, source, group) is None:
                return []
            self.learned[key] = Learned(iif)
            return self._sync_mfc([key], hook=True)
        return []

    def expire(self, counters: Mapping[MfcKey, int]) -> list[Op]:
        """Every `-c SEC`: drop learned entries whose packet counter did not move."""
        gone: list[MfcKey] = []
        for key, entry in self.learned.items():
            packets = counters.get(key)
            if packets is None or packets == entry.last_packets:
                gone.append(key)
            else:
                entry.last_packets = packets
        for key in gone:
            del self.learned[key]
        if gone:
            self._hrules = None  # a new table gives the helper its budget back
        return self._sync_mfc(gone)

    def flush(self) -> list[Op]:
        """`smcroutectl flush`: drop every learned entry and stop filter now."""
        keys = list(self.learned)
        self.learned.clear()
        self._hrules = None
        return self._sync_mfc(keys)

    def op_failed(self, op: Op, errno: int) -> None:
        """The kernel refused `op`: forget what it would have installed."""
        if isinstance(op, AddMfc):
            self.mfc.pop((op.family, op.source, op.group), None)
        elif isinstance(op, AddVif):
            self._rule_memo = {}
            self._hrules = None
            vifs = self.vifs[op.family]
            if op.ifname in vifs and vifs[op.ifname].vif == op.vif:
                del vifs[op.ifname]
        elif isinstance(op, JoinGroup):
            self.joins.pop((op.family, op.ifindex, op.group, op.source), None)

    # ======================================================================
    # Queries (for `show`)
    # ======================================================================

    def templates(self) -> list[MRoute]:
        """In configuration order (`_templates` holds them all, by rank: none
        there, no pass over the routes)."""
        if not self._templates:
            return []
        return [r for r in self.routes.values() if r.is_template]

    def rules(self) -> list[MRoute]:
        return [r for r in self.routes.values() if not r.is_template]

    def kernel_rows(self) -> list[KernelRow]:
        names = self.mfc_names()
        # Interface names per (family, entry value): rules share their Mfc values
        # (by identity: hashing an Mfc is slow; each stays alive in self.mfc).
        ifs: dict[tuple[int, int], tuple[str, tuple[str, ...]]] = {}
        rows = []
        for (fam, src, grp), m in self.mfc.items():
            k = (fam, id(m))
            have = ifs.get(k)
            if have is None:
                have = ifs[k] = names(fam, m)
            rows.append(KernelRow(fam, src, grp, have[0], have[1], m.kind))
        return rows

    def mfc_names(self) -> Callable[[int, Mfc], tuple[str, tuple[str, ...]]]:
        """(IIF, OIFs) names of an entry of `mfc` ("?": a VIF without a name)."""
        names = {fam: {v.vif: v.name for v in vifs.values()} for fam, vifs in self.vifs.items()}

        def of(family: int, m: Mfc) -> tuple[str, tuple[str, ...]]:
            n = names.get(family, {})
            return n.get(m.parent, "?"), tuple(n.get(v, "?") for v, _ in m.ttls)

        return of

    def template_for(self, family: int, iif: str, source: Address, group: Address) -> MRoute | None:
        """The template that forwards (source, group) arriving on `iif`, if any."""
        return self._match(family, iif, source, group)

    def helper_rules(self) -> tuple[Rule, ...]:
        """The rule table for the helper: where the fate of a new source is only
        "install (S,G) as this template says", which the helper may then do by
        itself (README, "The privileged helper": the fast path).

        One rule per template and inbound VIF, in the order `_match` tries the
        templates, so the first rule a NOCACHE matches is the template `upcall`
        would pick.  A template whose source and group cover an exact route
        (that route decides, whether its entry is installed or not) ends the
        family's table: neither it nor any template after it has rules, so the
        daemon decides those sources as before.  Limits are the helper's budget
        (see the daemon).  The same tuple until the state it derives from
        changes (templates, exact routes they cover, VIFs, links).
        """
        if self._hrules is not None:
            return self._hrules
        covered = self._covered()
        rules: list[Rule] = []
        ended: set[int] = set()
        for t in self._sorted_templates():
            fam = t.family
            slen = 0 if t.source is None else t.source_len
            zero = type(t.group)(0)
            src = zero if t.source is None else _net(t.source, slen)
            if fam in ended or fam not in self.families:
                continue
            if route_key(t) in covered or t.group_len < (4 if fam == 4 else 8) or src.is_multicast:
                ended.add(fam)
                continue
            group = _net(t.group, t.group_len)
            for name, v in self.vifs[fam].items():
                if ifname_matches(t.iif, name):
                    ttls = self._ttls(fam, name, t.oifs)
                    rules.append(Rule(fam, v.vif, src, slen, group, t.group_len, ttls))
        self._hrules = tuple(rules[:MAX_RULES])  # a first part of the table is safe
        return self._hrules

    def current_rules(self, rules: tuple[Rule, ...]) -> bool:
        """Is `rules` the table `helper_rules()` gives now?"""
        return rules is self._hrules

    def vif_of(self, family: int, ifname: str) -> int | None:
        v = self.vifs.get(family, {}).get(ifname)
        return None if v is None else v.vif

    def announcements(self, interval: int) -> list[Announce]:
        """RFC 4286 advertisements due on every announcing interface (doc/SPEC.md §3 mrdisc).

        An interface announces when it is up and running (has carrier), has
        a VIF (IPv4) or MIF (IPv6) and its phyint says `mrdisc`.  When to send is the daemon's timer
        (`smcroute.engine.mrdisc`); nothing here changes state.
        """
        out: list[Announce] = []
        for fam in self.families:
            for name, v in self.vifs[fam].items():
                link = self.links.get(name)
                up = IFF_UP | IFF_RUNNING
                if link is None or link.index != v.ifindex or link.flags & up != up:
                    continue
                p = self._phyint_for(name)
                if p is not None and p.mrdisc:
                    out.append(Announce(fam, v.ifindex, interval, name))
        return out

    def pending(self) -> list[MRoute | MGroup]:
        """Directives naming an interface that does not exist (yet)."""
        out: list[MRoute | MGroup] = []
        for r in self.routes.values():
            if any(self._missing(n) for n in (r.iif, *r.oifs)):
                out.append(r)
        for g in self.groups.values():
            if self._missing(g.iif):
                out.append(g)
        return out

    # ======================================================================
    # Internals
    # ======================================================================

    def _missing(self, name: str) -> bool:
        return not is_wildcard(name) and name not in self.links

    def _check_interfaces(self, *names: str) -> None:
        for n in names:
            if self._missing(n):
                raise EngineError(f"no such interface: {n}")

    def _vif_name(self, family: int, vif: int) -> str | None:
        for v in self.vifs.get(family, {}).values():
            if v.vif == vif:
                return v.name
        return None

    def _covered(self) -> set[RouteKey]:
        """Templates whose source and group prefixes hold an exact route's (S,G)."""
        if self._cover is not None:
            return self._cover
        self._cover = set()
        templates = self.templates()
        if not templates:
            return self._cover
        by_group: dict[tuple[Family, Address], list[Address | None]] = {}
        for fam, src, grp in self._exact_keys():
            by_group.setdefault((fam, grp), []).append(src)
        for t in templates:
            if t.group_len == full_len(t.group):
                keys = [(t.family, t.group)]
            else:
                keys = [k for k in by_group if in_prefix(k[1], t.group, t.group_len)]
            for k in keys:
                if any(_covers(t, s) for s in by_group.get(k, ())):
                    self._cover.add(route_key(t))
                    break
        return self._cover

    def _rules_changed(self, r: MRoute) -> None:
        """Route `r` comes or goes: the helper's table follows if `r` is a template
        or an exact route a template covers."""
        if r.is_template or any(
            in_prefix(r.group, t.group, t.group_len) and _covers(t, r.source)
            for t in self._sorted_templates()
        ):
            self._hrules = self._cover = None

    def _key(self, r: MRoute) -> RouteKey | MfcKey:
        """The key route `r` has in `routes`, or would have if added now."""
        if r.is_template:
            return route_key(r)
        sg = r.mfc_key
        have = self.routes.get(sg)
        if have is not None and have.iif == r.iif:
            return sg
        rk = route_key(r)
        return rk if have is not None or rk in self.routes else sg

    def _exact_routes(self, sg: MfcKey) -> list[MRoute]:
        """The exact routes of (S,G) `sg`, in order: the last one wins."""
        extra = self._extra.get(sg)
        if extra is not None:
            return extra
        r = self.routes.get(sg)
        return [] if r is None else [r]

    def _exact_rule(self, sg: MfcKey) -> MRoute | None:
        """The exact route that decides (S,G) `sg`, if any."""
        extra = self._extra.get(sg) if self._extra else None
        return extra[-1] if extra else self.routes.get(sg)

    def _exact_keys(self) -> list[MfcKey]:
        """Every (S,G) with an exact route."""
        keys: list[MfcKey] = [k for k in self.routes if len(k) == 3]
        return keys + [k for k in self._extra if k not in self.routes]

    def _reindex(self) -> None:
        self._hrules = self._cover = None
        self._extra = {}
        self._templates = []
        self._order = 0
        for key, r in self.routes.items():
            if len(key) != 3:  # a template, or an exact route not keyed by its (S,G)
                self._index(r)

    def _index(self, r: MRoute) -> None:
        """`r` is in `routes` now (under `_key(r)`)."""
        if self._hrules is not None or self._cover is not None:
            self._rules_changed(r)
        self._order += 1
        if r.is_template:
            self._templates.append((_template_rank(r, self._order), r))
            self._tsorted = False
            return
        sg = r.mfc_key
        extra = self._extra.get(sg)
        if extra is None:
            first = self.routes.get(sg)
            if first is r:
                return  # keyed by its (S,G), and the only one
            extra = self._extra[sg] = [] if first is None else [first]
        extra.append(r)

    def _unindex(self, r: MRoute) -> None:
        """`r` is no longer in `routes` (or another route has its key now)."""
        if self._hrules is not None or self._cover is not None:
            self._rules_changed(r)
        if r.is_template:
            self._templates = [(k, t) for k, t in self._templates if route_key(t) != route_key(r)]
            return
        sg = r.mfc_key
        extra = self._extra.get(sg)
        if extra is None:
            return
        key = route_key(r)
        rest = [x for x in extra if route_key(x) != key]
        if not rest or (len(rest) == 1 and self.routes.get(sg) is rest[0]):
            del self._extra[sg]  # back to its one route keyed by its (S,G), or none
        else:
            self._extra[sg] = rest

    def _sorted_templates(self) -> list[MRoute]:
        if not self._tsorted:
            self._templates.sort(key=lambda t: t[0])
            self._tsorted = True
        return [t for _, t in self._templates]

    def _route_changed(self, new: MRoute | None, old: MRoute | None) -> list[Op]:
        if old is not None:
            self._unindex(old)
        if new is not None:
            self._index(new)
            # An interface without a VIF yet needs the full VIF-safe reconcile.
            # (VIFs a removal leaves unused are freed by the next reconcile.)
            vifs = self.vifs[new.family]
            for pattern in (new.iif, *new.oifs):
                if any(n not in vifs and self._enabled(n) for n in self._expand(pattern)):
                    return self.reconcile()
        r = new or old
        assert r is not None
        if r.is_template:
            return self._sync_mfc(self._star_keys() + list(self.learned))
        return self._sync_mfc([r.mfc_key])

    def _star_keys(self) -> list[MfcKey]:
        return [k for k, m in self.mfc.items() if m.kind == "star"] + [
            (t.family, None, t.group) for t in self.templates() if self._zero_loss_ok(t)
        ]

    # -- interfaces and VIFs ------------------------------------------------

    def _phyint_for(self, name: str) -> Phyint | None:
        found = None
        for p in self.phyints:
            if ifname_matches(p.ifname, name):
                found = p
        return found

    def _enabled(self, name: str) -> bool:
        link = self.links.get(name)
        if link is None or not link.usable:
            return False
        p = self._phyint_for(name)
        return p is None or p.enable

    def _expand(self, pattern: str, exclude: str | None = None) -> list[str]:
        if not is_wildcard(pattern):
            return [pattern] if pattern in self.links else []
        return [
            n
            for n, link in self.links.items()
            if link.usable and ifname_matches(pattern, n) and n != exclude
        ]

    def _wanted_vifs(self, family: int) -> list[str]:
        """Interfaces that need a VIF, in the order the configuration names them."""
        seen: dict[str, None] = {}
        done: set[str] = set()

        def want(pattern: str) -> None:
            if pattern in done:
                return
            done.add(pattern)
            for n in self._expand(pattern):
                if self._enabled(n):
                    seen.setdefault(n, None)

        for p in self.phyints:
            if p.enable and p.ifname != "lo":
                want(p.ifname)
        last = None  # routes in a row with the same interfaces want nothing new
        for r in self.routes.values():
            names = (r.iif, r.oifs)
            if r.mfc_key[0] == family and names != last:
                last = names
                want(r.iif)
                for o in r.oifs:
                    want(o)
        return list(seen)

    def _vif_plan(self, ops: list[Op]) -> dict[int, dict[str, Vif]]:
        """The VIFs wanted, numbered; a warning into `ops` for each that has no room."""
        plan: dict[int, dict[str, Vif]] = {}
        for fam in self.families:
            cur = self.vifs[fam]
            wanted = self._wanted_vifs(fam)
            keep: dict[str, Vif] = {}
            for n in wanted:
                v = cur.get(n)
                link = self.links.get(n)
                if v is not None and link is not None and v.ifindex == link.index:
                    keep[n] = v
            used = {v.vif for v in keep.values()}
            new: dict[str, Vif] = {}
            for n in wanted:
                if n in keep:
                    new[n] = keep[n]
                    continue
                free = next((i for i in range(MAXVIFS) if i not in used), None)
                if free is None:
                    ops.append(Log("warning", f"no free VIF for {n}: the kernel allows {MAXVIFS}"))
                    continue
                used.add(free)
                p = self._phyint_for(n)
                new[n] = Vif(free, self.links[n].index, n, p.ttl_threshold if p else 1)
            plan[fam] = new
        return plan

    # -- desired MFC ---------------------------------------------------------

    def _threshold(self, name: str) -> int:
        p = self._phyint_for(name)
        return p.ttl_threshold if p else 1

    def _ttls(self, family: int, iif: str, oifs: Iterable[str]) -> Ttls:
        vifs = self.vifs[family]
        out: dict[int, int] = {}
        for pattern in oifs:
            for n in self._expand(pattern, exclude=iif if is_wildcard(pattern) else None):
                v = vifs.get(n)
                if v is not None:
                    out[v.vif] = self._threshold(n)
        return tuple(sorted(out.items()))

    def _match(self, family: int, iif: str, source: Address, group: Address) -> MRoute | None:
        for t in self._sorted_templates():
            if (
                t.family == family
                and ifname_matches(t.iif, iif)
                and in_prefix(group, t.group, t.group_len)
                and (t.source is None or in_prefix(source, t.source, t.source_len))
            ):
                return t
        return None

    def _zero_loss_ok(self, t: MRoute) -> bool:
        return (
            self.zero_loss
            and t.source is None
            and t.group_len == full_len(t.group)
            and not is_wildcard(t.iif)
        )

    def _desired(self, key: MfcKey) -> Mfc | None:
        family, source, group = key
        vifs = self.vifs[family]
        if source is None:  # a kernel (*,G) entry: zero-loss mode only
            for t in self._sorted_templates():
                if t.family == family and t.group == group and self._zero_loss_ok(t):
                    v = vifs.get(t.iif)
                    if v is None:
                        return None
                    star = dict(self._ttls(family, t.iif, t.oifs))
                    star.setdefault(v.vif, 1)  # arrival VIF must be listed to match
                    return Mfc(v.vif, tuple(sorted(star.items())), "star")
            return None
        rule = self._exact_rule(key)
        if rule is not None:
            return self._rule_mfc(rule)
        learned = self.learned.get(key)
        if learned is None:
            return None
        v = vifs.get(learned.iif)
        if v is None:
            return None
        tmpl = self._match(family, learned.iif, source, group)
        if tmpl is None:
            return Mfc(v.vif, (), "stop")
        return Mfc(v.vif, self._ttls(family, learned.iif, tmpl.oifs), "learned")

    def _rule_mfc(self, r: MRoute) -> Mfc | None:
        """Shared by every rule with the same family, IIF and OIFs (until VIFs change)."""
        memo = (r.family, r.iif, r.oifs)
        try:
            return self._rule_memo[memo]
        except KeyError:
            pass
        v = self.vifs[r.family].get(r.iif)
        m: Mfc | None = None
        if v is not None:
            # Every OIF missing (vanished, or not there yet) still leaves the
            # entry with its inbound interface and no outputs, as the original
            # does: the route stays configured, the OIFs come back with their links.
            m = Mfc(v.vif, self._ttls(r.family, r.iif, r.oifs), "rule")
        self._rule_memo[memo] = m
        return m

    def _desired_all(self) -> dict[MfcKey, Mfc]:
        """The whole desired MFC in one pass (reconcile); `_desired` does one key."""
        out: dict[MfcKey, Mfc] = {}
        extra = self._extra
        for key, r in self.routes.items():
            if len(key) == 3:  # an exact route's (S,G): the key `mfc` shares
                m = self._rule_mfc(extra[key][-1] if extra and key in extra else r)
                if m is not None:
                    out[key] = m
        for key, rules in extra.items():
            if key not in self.routes:
                m = self._rule_mfc(rules[-1])
                if m is not None:
                    out[key] = m
        for t in self.templates():
            if self._zero_loss_ok(t):
                star = self._desired((t.family, None, t.group))
                if star is not None:
                    out[(t.family, None, t.group)] = star
        for key in self.learned:
            if key not in out:
                m = self._desired(key)
                if m is not None:
                    out[key] = m
        return out

    def _sync_mfc(self, keys: Iterable[MfcKey], hook: bool = False) -> list[Op]:
        ops: list[Op] = []
        for key in dict.fromkeys(keys):
            want = self._desired(key)
            have = self.mfc.get(key)
            if want == have:
                continue
            family, source, group = key
            if want is None:
                assert have is not None
                ops.append(DelMfc(family, source, group, have.parent))
                del self.mfc[key]
                continue
            ops.append(AddMfc(family, source, group, want.parent, want.ttls))
            self.mfc[key] = want
            if hook and want.kind == "learned" and source is not None:
                ops.append(RunHook("install", family, source, group))
        return ops

    def reconcile(self) -> list[Op]:
        """Bring the kernel to the desired state with VIF-safe ordering.

        A VIF number freed and given to another interface would silently
        redirect entries that still list it (doc/KERNEL.md), so: (1) entries that
        no longer fit are rewritten or deleted while the old VIFs still exist,
        (2) removed VIFs are deleted, (3) new VIFs are added, (4) entries that
        need the new VIFs are written.
        """
        ops: list[Op] = []
        plan = self._vif_plan(ops)
        removed: dict[int, set[int]] = {}
        added: dict[int, list[Vif]] = {}
        for fam in self.families:
            old, new = self.vifs[fam], plan[fam]
            removed[fam] = {
                v.vif
                for n, v in old.items()
                if n not in new or (new[n].vif, new[n].ifindex) != (v.vif, v.ifindex)
            }
            added[fam] = [
                v
                for n, v in new.items()
                if n not in old or (old[n].vif, old[n].ifindex) != (v.vif, v.ifindex)
            ]
        old_vifs = self.vifs
        self.vifs = plan
        self._rule_memo = {}
        self._hrules = None
        desired = self._desired_all()
        new_vifs = {fam: {a.vif for a in added[fam]} for fam in self.families}
        # Phase 1: deletions, and rewrites that need no new VIF.
        for key in [k for k in self.mfc if k not in desired]:
            ops.extend(self._write(key, None, self.mfc[key]))
        later: list[tuple[MfcKey, Mfc, Mfc | None]] = []
        mfc = self.mfc
        # (start-up: nothing installed and every VIF new, so every entry waits
        # for its VIFs -- phase 4 -- with no look at each one here)
        for key, want in desired.items() if mfc or any(old_vifs.values()) else ():
            have = mfc.get(key) if mfc else None
            if want == have:
                continue
            fresh, gone = new_vifs[key[0]], removed[key[0]]
            if want.parent in fresh or any(v in fresh for v, _ in want.ttls):
                if have is not None and (
                    have.parent in gone or any(v in gone for v, _ in have.ttls)
                ):
                    ops.extend(self._write(key, None, have))
                    have = None
                later.append((key, want, have))
            else:
                ops.extend(self._write(key, want, have))
        # Phase 2 and 3: VIFs.  The kernel drops the VIF of a deleted device
        # itself; a device that still exists (perhaps renamed) keeps its VIF
        # until we delete it, or its number stays taken in the kernel.
        present = {link.index for link in self.links.values()}
        for fam in self.families:
            for n, v in old_vifs[fam].items():
                if v.vif in removed[fam] and v.ifindex in present:
                    ops.append(DelVif(fam, v.vif, v.ifindex, n))
            for v in added[fam]:
                ops.append(AddVif(fam, v.vif, v.ifindex, v.threshold, v.name))
        # Phase 4.
        if not self.mfc:
            # (start-up, or a reload that replaced every entry and every VIF:
            # nothing is installed now and every entry waited for its VIFs, so
            # the kernel gets `desired` whole, in order, and `mfc` is it --
            # without hashing each (S,G), two ipaddress hashes, again)
            self.mfc = desired
            ops.extend(
                AddMfc(f, s, g, want.parent, want.ttls) for (f, s, g), want in desired.items()
            )
        else:
            for key, want, have in later:
                ops.extend(self._write(key, want, have))
        ops.extend(self._sync_joins())
        return ops

    def compact(self) -> None:
        """After a reload that removed most entries: every container anew.

        A dict keeps its table at its largest size, and what was made while
        the old entries were still alive (the new VIF plan, the new indexes)
        sits among them and keeps the allocator's pages resident once they
        are gone: copies made once the old entries (and the operations that
        removed them) are freed give that memory back.
        """
        self.mfc = dict(self.mfc)
        self.routes = dict(self.routes)
        self.groups = dict(self.groups)
        self._extra = dict(self._extra)
        self.learned = dict(self.learned)
        self.joins = dict(self.joins)
        self._rule_memo = {}
        self.vifs = {
            fam: {n: Vif(v.vif, v.ifindex, v.name, v.threshold) for n, v in vifs.items()}
            for fam, vifs in self.vifs.items()
        }

    def _write(self, key: MfcKey, want: Mfc | None, have: Mfc | None) -> list[Op]:
        if want == have:
            return []
        family, source, group = key
        if want is None:
            assert have is not None
            del self.mfc[key]
            return [DelMfc(family, source, group, have.parent)]
        self.mfc[key] = want
        return [AddMfc(family, source, group, want.parent, want.ttls)]

    # -- joins ---------------------------------------------------------------

    def _desired_joins(self) -> dict[JoinKey, str]:
        out: dict[JoinKey, str] = {}
        for g in self.groups.values():
            if g.family not in self.families:
                continue
            for n in self._expand(g.iif):
                link = self.links.get(n)
                if link is None:
                    continue
                sources: list[Address | None] = (
                    [None] if g.source is None else list(network_addresses(g.source, g.source_len))
                )
                for grp in network_addresses(g.group, g.group_len):
                    for src in sources:
                        out[(g.family, link.index, grp, src)] = n
        return out

    def _sync_joins(self) -> list[Op]:
        want = self._desired_joins()
        ops: list[Op] = []
        for key, name in list(self.joins.items()):
            if key not in want:
                fam, idx, grp, src = key
                ops.append(LeaveGroup(fam, idx, grp, src, name))
                del self.joins[key]
        for key, name in want.items():
            if key not in self.joins:
                fam, idx, grp, src = key
                ops.append(JoinGroup(fam, idx, grp, src, name))
                self.joins[key] = name
        return ops


def describe(op: Op) -> str:
    """Human words for an op, for error logs."""
    if isinstance(op, AddVif | DelVif):
        verb = "add" if isinstance(op, AddVif) else "remove"
        kind = "VIF" if op.family == 4 else "MIF"
        return f"{verb} {kind} {op.vif} for {op.ifname}"
    if isinstance(op, AddMfc | DelMfc):
        verb = "add" if isinstance(op, AddMfc) else "remove"
        src = "*" if op.source is None else str(op.source)
        return f"{verb} route ({src}, {op.group})"
    if isinstance(op, Announce):
        return f"send a multicast router advertisement (IPv{op.family}) on {op.ifname}"
    if isinstance(op, RunHook):
        return f"run the -e hook ({op.action})"
    if isinstance(op, Log):
        return op.text
    if isinstance(op, SetRules):
        return f"replace the helper's rule table ({len(op.rules)} rules)"
    verb = "join" if isinstance(op, JoinGroup) else "leave"
    src = "*" if op.source is None else str(op.source)
    return f"{verb} group ({src}, {op.group}) on {op.ifname}"


__all__ = [
    "Engine",
    "EngineError",
    "KernelRow",
    "Link",
    "describe",
    "fmt_prefix",
]
