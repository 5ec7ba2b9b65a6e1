"""Kernel operations: what the engine asks the privileged helper to do, and
the log lines that go with them.

Pure values.  The engine emits them, in one stream; `smcroute.helper_wire`
turns each kernel operation into the wire record of its kind, the helper
validates and executes them; a `Log` is the daemon's to log (it never
reaches the helper).  Addresses are
`ipaddress` objects; `source=None` in an MFC op means origin 0 (a kernel
(*,G) entry).  `ttls` lists (vif, threshold) for every outbound VIF; an entry
with no outbound VIFs is a stop filter.  `Announce` changes no kernel state:
the daemon's timer asks for it (see `smcroute.engine.mrdisc`).
"""

from __future__ import annotations

from enum import IntEnum

from smcroute.model import Address, Family
from smcroute.records import dataclass


@dataclass(frozen=True, slots=True)
class AddVif:
    family: Family
    vif: int
    ifindex: int
    threshold: int
    ifname: str


@dataclass(frozen=True, slots=True)
class DelVif:
    family: Family
    vif: int
    ifindex: int
    ifname: str


@dataclass(frozen=True, slots=True)
class AddMfc:
    family: Family
    source: Address | None
    group: Address
    parent: int
    ttls: tuple[tuple[int, int], ...]  # (vif, threshold), sorted by vif


@dataclass(frozen=True, slots=True)
class DelMfc:
    family: Family
    source: Address | None
    group: Address
    parent: int


@dataclass(frozen=True, slots=True)
class JoinGroup:
    family: Family
    ifindex: int
    group: Address
    source: Address | None  # None: any-source (ASM) join
    ifname: str


@dataclass(frozen=True, slots=True)
class LeaveGroup:
    family: Family
    ifindex: int
    group: Address
    source: Address | None
    ifname: str


@dataclass(frozen=True, slots=True)
class Announce:
    """Send one RFC 4286 Multicast Router Advertisement out of `ifindex` (a VIF's)."""

    family: Family
    ifindex: int
    interval: int  # Advertisement Interval, seconds (`-m`, 4..180)
    ifname: str


@dataclass(frozen=True, slots=True)
class RunHook:
    """Run the `-e` command: `reload`, or `install` with source and group (the
    engine emits it right after the AddMfc of a route a template installed)."""

    action: Literal["reload", "install"]
    family: Family = 4
    source: Address | None = None
    group: Address | None = None


@dataclass(frozen=True, slots=True)
class Log:
    """A line for the daemon's log, in order with the operations around it."""

    level: Level
    text: str


TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import Literal

    Level = Literal["err", "warning", "notice", "info", "debug"]
else:
    Level = str


@dataclass(frozen=True, slots=True)
class Rule:
    """A new source the helper may install itself: a NOCACHE upcall of `family` on
    VIF `parent`, source in source/source_len, group in group/group_len, becomes
    (S,G) with these outputs (see `Engine.helper_rules`)."""

    family: Family
    parent: int
    source: Address
    source_len: int
    group: Address
    group_len: int
    ttls: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class SetRules:
    """Replace the helper's rule table: the first rule a NOCACHE matches applies; it
    installs at most `budget` entries; its reports name `epoch` and the rule's index."""

    epoch: int
    budget: int
    rules: tuple[Rule, ...]


Op = (
    AddVif | DelVif | AddMfc | DelMfc | JoinGroup | LeaveGroup | Announce | RunHook | Log | SetRules
)


class UpcallKind(IntEnum):
    """What a kernel upcall reports, numbered as the kernel numbers it; decoded
    from the helper's UPCALL at the edge (`smcroute.helper_wire`)."""

    NOCACHE = 1  # an (S,G) with no entry arrived
    WRONGVIF = 2  # an (S,G) arrived on another interface than its entry's
