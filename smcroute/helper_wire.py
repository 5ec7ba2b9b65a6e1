"""The edge between the engine and the privileged helper's wire records.

Owns the translation both ways: an engine operation becomes the one wire
record of its kind (`record`), and an UPCALL from the helper becomes the
engine's named upcall kind and addresses (`upcall`).  Ranges the wire
cannot carry are refused here with `ProtoError`, before anything is sent.

Must not: do I/O, or decide anything (the engine does; the helper judges
every record again as if this side were hostile).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

from smcroute.engine.ops import (
    AddMfc,
    AddVif,
    Announce,
    DelMfc,
    DelVif,
    JoinGroup,
    LeaveGroup,
    Op,
    RunHook,
    SetRules,
    UpcallKind,
)
from smcroute.model import Address
from smcroute.privsep import daemon_wire, wire
from smcroute.privsep.kernel import MAXVIFS


def _addr16(addr: Address | None) -> bytes:
    return bytes(16) if addr is None else wire.pad16(addr.packed)


# outputs -> their 32 bytes: the routes of a configuration share a few sets of
# outputs (one lookup per route instead of a bytearray filled each time)
_outputs_made: dict[tuple[tuple[int, int], ...], bytes] = {}


def _outputs(ttls: tuple[tuple[int, int], ...]) -> bytes:
    """The 32 bytes of IPv4 thresholds per VIF (0: not an output)."""
    made = _outputs_made.get(ttls)
    if made is not None:
        return made
    out = bytearray(MAXVIFS)
    for vif, thr in ttls:
        if not 0 <= vif < MAXVIFS or not 0 <= thr <= 255:
            raise wire.ProtoError(f"bad outbound VIF/threshold ({vif}, {thr})")
        out[vif] = max(thr, 1)  # 0 would mean "not an output"
    if len(_outputs_made) >= 1024:
        _outputs_made.clear()
    made = _outputs_made[ttls] = bytes(out)
    return made


def forget_outputs() -> None:
    """Empty the outputs' cache (a big removal: remade on demand)."""
    _outputs_made.clear()


def records(op: Op) -> list[wire.Record]:
    """The wire records for `op`: one, or a rule table's header and rules."""
    if not isinstance(op, SetRules):
        return [record(op)]
    out: list[wire.Record] = [wire.Rules(op.epoch, op.budget)]
    for r in op.rules:
        outs = _outputs(r.ttls)  # IPv6: nonzero = the MIF is an output
        src, grp = wire.pad16(r.source.packed), wire.pad16(r.group.packed)
        out.append(wire.Rule(r.family, r.parent, src, r.source_len, grp, r.group_len, outs))
    return out


def record(op: Op) -> wire.Record:
    """The wire record for `op`.  Raises ProtoError for values it cannot carry."""
    if type(op) is AddMfc and op.family == 4:  # most of them, by far
        source = op.source
        src = bytes(4) if source is None else source.packed
        return wire.AddMfc4(op.parent, src, op.group.packed, _outputs(op.ttls))
    if isinstance(op, AddVif):
        return wire.AddVif(op.family, op.vif, op.threshold, op.ifindex)
    if isinstance(op, DelVif):
        return wire.DelVif(op.family, op.vif, op.ifindex)
    if isinstance(op, AddMfc):
        ttls = _outputs(op.ttls)
        if op.family == 4:
            src = bytes(4) if op.source is None else op.source.packed
            return wire.AddMfc4(op.parent, src, op.group.packed, ttls)
        # IPv6 routes have no thresholds of their own: the MIF's applies
        oifs = sum(1 << vif for vif, _ in op.ttls)
        return wire.AddMfc6(op.parent, _addr16(op.source), op.group.packed, oifs)
    if isinstance(op, DelMfc):
        return wire.DelMfc(op.family, op.parent, _addr16(op.source), _addr16(op.group))
    if isinstance(op, JoinGroup):
        return wire.Join(op.family, op.ifindex, _addr16(op.source), _addr16(op.group))
    if isinstance(op, LeaveGroup):
        return wire.Leave(op.family, op.ifindex, _addr16(op.source), _addr16(op.group))
    if isinstance(op, Announce):
        return wire.Advertise(op.family, op.interval, op.ifindex)
    if isinstance(op, RunHook):
        if op.action == "reload":
            return wire.HookReload()
        return wire.HookInstall(op.family, _addr16(op.source), _addr16(op.group))
    raise wire.ProtoError(f"no record for {op!r}")


Addr = IPv4Address | IPv6Address


def upcall(up: daemon_wire.Upcall) -> tuple[UpcallKind, Addr, Addr] | None:
    """The named kind and the addresses of an UPCALL; None for a kind we do not know.
    INSTALLED is a NOCACHE the helper answered by a rule (the caller looks at `seq`)."""
    try:
        kind = UpcallKind.NOCACHE if up.kind == wire.INSTALLED else UpcallKind(up.kind)
    except ValueError:
        return None
    return kind, ip_address(up.source), ip_address(up.group)
