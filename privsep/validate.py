"""What the helper may do for a wire record: a typed command, or a refusal (pure).

Owns the meaning of every record kind: `check(record)` returns the command
the helper executes -- with the exact bytes of its system call where there
is one -- or a `Refusal` naming what is wrong.  A refusal means the record
breaks the protocol (a field out of range, a group that is not multicast, an
IPv4 address with bytes after it ...): treat the sender as hostile.  What
only the system can tell (does the interface still exist, is the socket
there) is not judged here: the helper answers those with an errno.

Must not: do I/O or system calls, keep state, or raise on any record.
"""

from __future__ import annotations

import _socket
import struct

from . import kernel, mrdisc, wire
from .wire import NamedTuple

# What `check` returns: one command per system call (or hook start), its
# arguments checked.  Vif: add or delete a VIF/MIF, `value` is the kernel
# structure for `option`; Route: add or delete an MFC entry, one setsockopt on
# the family's mroute socket; Membership: `group` 4 or 16 bytes, `source` None
# for any-source; Hook: `action` "reload" or "install", `env` ("source", ...),
# ("group", ...) for install.
Vif = NamedTuple(
    "Vif",
    [
        ("family", int),
        ("add", bool),
        ("vif", int),
        ("ifindex", int),
        ("option", int),
        ("value", bytes),
    ],
)
Route = NamedTuple("Route", [("family", int), ("option", int), ("value", bytes)])
Membership = NamedTuple(
    "Membership",
    [("family", int), ("add", bool), ("ifindex", int), ("group", bytes), ("source", bytes | None)],
)
Advert = NamedTuple("Advert", [("family", int), ("ifindex", int), ("interval", int)])
Hook = NamedTuple("Hook", [("action", str), ("env", tuple[tuple[str, str], ...])])
# Rule: a NOCACHE upcall of `family` on VIF `parent` whose int(source + group)
# & mask == net: setsockopt(`option`, parts[0] + source + parts[1] + group + parts[2]).
Rule = NamedTuple("Rule", [("family", int), ("parent", int), ("mask", int), ("net", int),
                           ("option", int), ("parts", tuple[bytes, bytes, bytes])])  # fmt: skip
Refusal = NamedTuple("Refusal", [("why", str)])
Command = Vif | Route | Membership | Advert | Hook | wire.Rules | Rule


class _Bad(Exception):
    pass


def ntop(family: int, raw: bytes) -> str:
    return _socket.inet_ntop(_socket.AF_INET if family == 4 else _socket.AF_INET6, raw)


def _alen(family: int) -> int:
    if family not in (4, 6):
        raise _Bad(f"unknown family {family}")
    return 4 if family == 4 else 16


def _multicast(family: int, raw: bytes) -> bool:
    return raw[0] & 0xF0 == 0xE0 if family == 4 else raw[0] == 0xFF


def _sg(family: int, source: bytes, group: bytes) -> tuple[bytes, bytes]:
    """Source and group of `family` from 16-byte fields; checks their meaning."""
    n = _alen(family)
    if source[n:] != bytes(16 - n) or group[n:] != bytes(16 - n):
        raise _Bad("IPv4 address with bytes after it")
    source, group = source[:n], group[:n]
    if not _multicast(family, group):
        raise _Bad(f"group {ntop(family, group)} is not multicast")
    if _multicast(family, source):
        raise _Bad(f"source {ntop(family, source)} is multicast")
    return source, group


def _vif(vif: int, what: str = "VIF") -> int:
    if vif >= kernel.MAXVIFS:
        raise _Bad(f"{what} {vif} out of range")
    return vif


def _ifindex(family: int, ifindex: int) -> int:
    if ifindex <= 0 or (family == 6 and ifindex > 0xFFFF):  # mif6ctl holds 16 bits
        raise _Bad(f"ifindex {ifindex} out of range")
    return ifindex


def check(r: wire.Record) -> Command | Refusal:
    """The command for record `r`, or why it is refused."""
    try:
        return _check(r)
    except _Bad as e:
        return Refusal(str(e))
    except (ValueError, OSError, struct.error) as e:  # belt and braces
        return Refusal(f"malformed: {e}")


def _check(r: wire.Record) -> Command:
    if isinstance(r, wire.AddVif | wire.DelVif):
        add = isinstance(r, wire.AddVif)
        fam, vif, ifx = r.family, _vif(r.vif), _ifindex(r.family, r.ifindex)
        thr = r.threshold if isinstance(r, wire.AddVif) else 0
        if _alen(fam) == 4:
            opt = kernel.MRT_ADD_VIF if add else kernel.MRT_DEL_VIF
            return Vif(fam, add, vif, ifx, opt, kernel.vifctl(vif, thr, ifx))
        if add:
            return Vif(fam, add, vif, ifx, kernel.MRT6_ADD_MIF, kernel.mif6ctl(vif, thr, ifx))
        return Vif(fam, add, vif, ifx, kernel.MRT6_DEL_MIF, struct.pack("=H", vif))  # mifi_t
    if isinstance(r, wire.AddMfc4):
        src, grp = _sg(4, wire.pad16(r.source), wire.pad16(r.group))
        return Route(4, kernel.MRT_ADD_MFC, kernel.mfcctl(src, grp, _vif(r.parent), r.ttls))
    if isinstance(r, wire.AddMfc6):
        src, grp = _sg(6, r.source, r.group)
        oifs = r.oifs
        return Route(6, kernel.MRT6_ADD_MFC, kernel.mf6cctl(src, grp, _vif(r.parent, "MIF"), oifs))
    if isinstance(r, wire.DelMfc):
        src, grp = _sg(r.family, r.source, r.group)
        if r.family == 4:
            return Route(4, kernel.MRT_DEL_MFC, kernel.mfcctl(src, grp, _vif(r.parent), bytes(32)))
        return Route(6, kernel.MRT6_DEL_MFC, kernel.mf6cctl(src, grp, _vif(r.parent, "MIF"), 0))
    if isinstance(r, wire.Join | wire.Leave):
        src, grp = _sg(r.family, r.source, r.group)
        source = None if not any(src) else src
        add = isinstance(r, wire.Join)
        return Membership(r.family, add, _ifindex(4, r.ifindex), grp, source)
    if isinstance(r, wire.Advertise):
        _alen(r.family)
        if not mrdisc.MIN_INTERVAL <= r.interval <= mrdisc.MAX_INTERVAL:
            raise _Bad(f"advertisement interval {r.interval} out of range")
        return Advert(r.family, _ifindex(r.family, r.ifindex), r.interval)
    if isinstance(r, wire.HookReload):
        return Hook("reload", ())
    if isinstance(r, wire.HookInstall):
        src, grp = _sg(r.family, r.source, r.group)
        if not any(src):
            raise _Bad("install hook without a source")
        return Hook("install", (("source", ntop(r.family, src)), ("group", ntop(r.family, grp))))
    if isinstance(r, wire.Rules | wire.Rule):  # a table, a rule: any epoch, budget
        return _rule(r) if isinstance(r, wire.Rule) else r
    raise _Bad(f"no such record {type(r).__name__}")


def _rule(r: wire.Rule) -> Rule:
    src, grp = _sg(r.family, r.source, r.group)
    bits, n, p = 8 * len(src), len(src), _vif(r.parent)
    if not (4 if n == 4 else 8) <= r.group_len <= bits or r.source_len > bits:
        raise _Bad(f"rule prefix lengths {r.source_len}, {r.group_len} out of range")
    ones, net = (1 << bits) - 1, int.from_bytes(src + grp)
    mask = (ones >> r.source_len ^ ones) << bits | ones >> r.group_len ^ ones
    if net & ~mask:
        raise _Bad("rule prefix with host bits set")
    oifs = sum(1 << i for i, o in enumerate(r.outs) if o)  # IPv6
    value = kernel.mfcctl(src, grp, p, r.outs) if n == 4 else kernel.mf6cctl(src, grp, p, oifs)
    a, b = (0, 4) if n == 4 else (8, 36)  # where source and group are in `value`
    option = kernel.MRT_ADD_MFC  # = MRT6_ADD_MFC
    return Rule(r.family, p, mask, net, option, (value[:a], value[a + n : b], value[b + n :]))
