"""Unit tests of the privsep layers without root: kernel structs, upcalls, the helper's
wire format, the validator (with a hostile daemon) and the daemon's side of the edge."""

from __future__ import annotations

import contextlib
import errno
import re
import socket
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smcroute.privsep import daemon_wire, kernel, validate, wire

from smcroute.engine.ops import AddMfc, AddVif, DelMfc, DelVif, JoinGroup, LeaveGroup
from smcroute.helper_wire import record

# --- kernel structs -------------------------------------------------------------


def test_struct_sizes() -> None:
    assert kernel.VIFCTL.size == 16
    assert kernel.MFCCTL.size == 60
    assert kernel.MIF6CTL.size == 12
    assert kernel.SOCKADDR_IN6.size == 28
    assert kernel.MF6CCTL.size == 92
    assert kernel.GROUP_REQ.size == 136
    assert kernel.GROUP_SOURCE_REQ.size == 264
    assert kernel.IGMPMSG.size == 20
    assert kernel.MRT6MSG.size == 40
    assert len(kernel.vifctl(1, 1, 2)) == 16
    assert len(kernel.mfcctl(b"\x0a\0\0\1", b"\xe1\1\2\3", 0, bytes(32))) == 60
    assert len(kernel.mif6ctl(1, 1, 2)) == 12
    assert len(kernel.mf6cctl(bytes(16), b"\xff" + bytes(15), 0, 0)) == 92
    assert len(kernel.group_req(3, b"\xe1\1\1\1")) == 136
    assert len(kernel.group_req(3, b"\xff" + bytes(15))) == 136
    assert len(kernel.group_source_req(3, b"\xe8\1\1\1", b"\x0a\0\0\1")) == 264


def test_vifctl_offsets() -> None:
    b = kernel.vifctl(0x0102, 7, 0x11223344)
    assert struct.unpack_from("=H", b, 0)[0] == 0x0102  # vifc_vifi @0
    assert b[2] == kernel.VIFF_USE_IFINDEX  # vifc_flags @2
    assert b[3] == 7  # vifc_threshold @3
    assert struct.unpack_from("=I", b, 4)[0] == 0  # rate limit @4
    assert struct.unpack_from("=i", b, 8)[0] == 0x11223344  # ifindex @8
    assert b[12:16] == bytes(4)  # rmt_addr @12


def test_mfcctl_offsets() -> None:
    ttls = bytes(range(32))
    b = kernel.mfcctl(b"\x0a\0\0\1", b"\xe1\1\2\3", 5, ttls)
    assert b[0:4] == b"\x0a\0\0\1"  # origin @0
    assert b[4:8] == b"\xe1\1\2\3"  # group @4
    assert struct.unpack_from("=H", b, 8)[0] == 5  # parent @8
    assert b[10:42] == ttls  # ttls @10
    assert b[42:60] == bytes(18)  # pad + counters


def test_mif6ctl_offsets() -> None:
    b = kernel.mif6ctl(3, 9, 0xBEEF)
    assert struct.unpack_from("=H", b, 0)[0] == 3
    assert b[2] == 0 and b[3] == 9
    assert struct.unpack_from("=H", b, 4)[0] == 0xBEEF  # pifi u16 @4
    assert b[6:12] == bytes(6)


def test_mf6cctl_offsets() -> None:
    src = bytes(range(16))
    grp = b"\xff\x0e" + bytes(13) + b"\x01"
    b = kernel.mf6cctl(src, grp, 4, (1 << 0) | (1 << 5) | (1 << 31))
    assert struct.unpack_from("=H", b, 0)[0] == socket.AF_INET6
    assert b[8:24] == src  # sin6_addr @8 of origin
    assert struct.unpack_from("=H", b, 28)[0] == socket.AF_INET6
    assert b[36:52] == grp  # group sin6_addr @28+8
    assert struct.unpack_from("=H", b, 56)[0] == 4  # parent @56
    assert struct.unpack_from("=8I", b, 60) == (
        (1 << 0) | (1 << 5) | (1 << 31),
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    )


def test_group_req_offsets() -> None:
    b = kernel.group_req(7, b"\xe1\1\1\1")
    assert struct.unpack_from("=I", b, 0)[0] == 7
    assert struct.unpack_from("=H", b, 8)[0] == socket.AF_INET
    assert b[12:16] == b"\xe1\1\1\1"  # sin_addr @8+4
    g = b"\xff\x0e" + bytes(14)
    b = kernel.group_req(7, g)
    assert struct.unpack_from("=H", b, 8)[0] == socket.AF_INET6
    assert b[16:32] == g  # sin6_addr @8+8
    b = kernel.group_source_req(9, b"\xe8\1\1\1", b"\x0a\0\0\5")
    assert struct.unpack_from("=I", b, 0)[0] == 9
    assert b[12:16] == b"\xe8\1\1\1"  # group @8
    assert struct.unpack_from("=H", b, 136)[0] == socket.AF_INET
    assert b[140:144] == b"\x0a\0\0\5"  # source @136


# --- upcall decoders --------------------------------------------------------------


def igmpmsg(
    msgtype: int = 1, mbz: int = 0, vif: int = 3, src: str = "10.0.0.1", grp: str = "225.1.2.3"
) -> bytes:
    hdr = bytes(8) + bytes([msgtype, mbz, vif & 0xFF, vif >> 8])
    return hdr + IPv4Address(src).packed + IPv4Address(grp).packed + bytes(8)


def mrt6msg(
    msgtype: int = 1, mbz: int = 0, mif: int = 2, src: str = "fc00::1", grp: str = "ff0e::1"
) -> bytes:
    return (
        bytes([mbz, msgtype])
        + struct.pack("=H", mif)
        + bytes(4)
        + IPv6Address(src).packed
        + IPv6Address(grp).packed
        + b"\xaa" * 40  # bytes 40..80 are stale kernel memory
    )


def test_decode_igmpmsg() -> None:
    up = kernel.decode_upcall(4, igmpmsg(vif=3))
    assert up == kernel.RawUpcall(
        1, 3, IPv4Address("10.0.0.1").packed, IPv4Address("225.1.2.3").packed
    )
    assert kernel.decode_upcall(4, igmpmsg(msgtype=2, vif=31)).vif == 31


@pytest.mark.parametrize(
    "data",
    [
        igmpmsg(mbz=2),  # a real IGMP packet: protocol 2 at byte 9
        igmpmsg(msgtype=9),
        igmpmsg(vif=32),
        igmpmsg(vif=0x100),
        igmpmsg(grp="10.1.1.1"),
        igmpmsg(src="239.1.1.1"),
        igmpmsg()[:19],
        b"",
    ],
)
def test_decode_igmpmsg_refuses(data: bytes) -> None:
    with pytest.raises(kernel.UpcallError):
        kernel.decode_upcall(4, data)


def test_decode_mrt6msg() -> None:
    up = kernel.decode_upcall(6, mrt6msg(mif=2))
    assert up.msgtype == 1 and up.vif == 2
    assert up.source == IPv6Address("fc00::1").packed
    assert up.group == IPv6Address("ff0e::1").packed


@pytest.mark.parametrize(
    "data",
    [
        mrt6msg(mbz=135),  # neighbour solicitation
        mrt6msg(msgtype=4),
        mrt6msg(mif=32),
        mrt6msg(grp="fc00::2"),
        mrt6msg(src="ff02::1"),
        mrt6msg()[:39],
    ],
)
def test_decode_mrt6msg_refuses(data: bytes) -> None:
    with pytest.raises(kernel.UpcallError):
        kernel.decode_upcall(6, data)


@given(st.binary(max_size=120))
def test_upcall_decoders_never_raise_anything_else(data: bytes) -> None:
    for family in (4, 6):
        with contextlib.suppress(kernel.UpcallError):
            kernel.decode_upcall(family, data)


# --- the helper's wire format ---------------------------------------------------------

Z16, Z32 = bytes(16), bytes(32)
S4, G4 = b"\x0a\0\0\1", b"\xe1\1\2\3"
S6, G6 = b"\xfc" + bytes(14) + b"\1", b"\xff\x0e" + bytes(13) + b"\1"

GOOD: list[wire.Record] = [
    wire.AddVif(4, 0, 1, 7),
    wire.DelVif(6, 31, 7),
    wire.AddMfc4(3, S4, G4, bytes([0, 1, 64]) + bytes(29)),
    wire.AddMfc4(3, bytes(4), G4, bytes(32)),
    wire.AddMfc6(0, S6, G6, 0b110),
    wire.DelMfc(4, 1, wire.pad16(S4), wire.pad16(G4)),
    wire.DelMfc(6, 1, Z16, G6),
    wire.Join(4, 7, Z16, wire.pad16(G4)),
    wire.Leave(6, 7, S6, G6),
    wire.Advertise(6, 20, 7),
    wire.HookReload(),
    wire.HookInstall(4, wire.pad16(S4), wire.pad16(G4)),
    wire.Rules(7, 20000),
    wire.Rule(4, 2, Z16, 0, wire.pad16(b"\xe1\1\0\0"), 16, bytes([0, 0, 1]) + bytes(29)),
    wire.Rule(6, 0, b"\xfc" + bytes(15), 8, G6, 128, bytes([0, 1]) + bytes(30)),
]


def test_sizes() -> None:
    assert wire.HEADER.size == 12
    assert {cls.__name__: st.size for cls, st in wire.KINDS.values()}["AddMfc4"] == 42
    assert {cls.__name__: st.size for cls, st in wire.KINDS.values()}["Rule"] == 69
    assert wire.MAX_MESSAGE == 12 + 1024 * 69


def test_round_trips() -> None:
    assert wire.decode_request(daemon_wire.encode_ops(42, GOOD)) == wire.Ops(42, tuple(GOOD))
    reply = wire.encode_reply(9, [0, errno.EINVAL, errno.EADDRINUSE])
    errs = (0, errno.EINVAL, errno.EADDRINUSE)
    assert daemon_wire.decode(reply) == daemon_wire.Reply(9, errs)
    assert daemon_wire.decode(wire.encode_upcall(4, 1, 3, S4, G4)) == daemon_wire.Upcall(
        4, 1, 3, S4, G4
    )
    assert daemon_wire.decode(wire.encode_upcall(6, 2, 31, S6, G6)) == daemon_wire.Upcall(
        6, 2, 31, S6, G6
    )
    assert daemon_wire.decode(wire.encode_solicit(6, 9)) == daemon_wire.Solicit(6, 9)
    assert daemon_wire.decode(wire.encode_log(5, "héllo")) == daemon_wire.Log(5, "héllo")
    line = daemon_wire.decode(wire.encode_log(3, "é" * 2000))
    assert isinstance(line, daemon_wire.Log) and len(line.text.encode()) <= wire.MAX_LOG


def test_each_kind_has_its_own_record() -> None:
    assert len({cls for cls, _ in wire.KINDS.values()}) == len(wire.KINDS)
    assert {type(r) for r in GOOD} == {cls for cls, _ in wire.KINDS.values()}


@pytest.mark.parametrize(
    "bad",
    [
        lambda: daemon_wire.encode_ops(1, []),
        lambda: daemon_wire.encode_ops(1, [wire.HookReload()] * 1025),
        lambda: daemon_wire.encode_ops(-1, [wire.HookReload()]),
        lambda: daemon_wire.encode_ops(1, [wire.AddVif(4, 256, 1, 1)]),
        lambda: daemon_wire.encode_ops(1, [(1, 2, 3)]),  # not a record
        lambda: wire.encode_reply(1, [-1]),
        lambda: wire.encode_reply(1, []),
        lambda: wire.encode_upcall(4, 1, 300, S4, G4),
        lambda: wire.encode_log(300, "x"),
    ],
)
def test_encode_refuses(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(wire.ProtoError):
        bad()


def test_decode_refuses() -> None:
    good = daemon_wire.encode_ops(1, GOOD[:2])
    for data in [
        b"",
        good[:11],
        good[:-1],  # truncated record
        good + b"\0",  # bytes after the last record
        good[:12] + b"\x63" + good[13:],  # no such kind
        b"\x00\x00" + good[2:],  # magic
        good[:2] + b"\x01" + good[3:],  # version 1
        good[:10] + b"\x01\x00" + good[12:],  # reserved
        wire.HEADER.pack(wire.MAGIC, wire.VERSION, 2, 1, 0, 0),  # type 2 (PIDFILE) is gone
        wire.encode_log(3, "x")[:-1],
        wire.encode_log(3, "ab")[:-2] + b"\xff\xfe",
        wire.encode_upcall(4, 1, 1, S4, G4)[:-1],
        wire.encode_upcall(4, 1, 1, S4, G4)[:-1] + b"\1",  # IPv4 with bytes after it
        wire.encode_solicit(4, 1) + b"\0",
    ]:
        for decode in (wire.decode_request, daemon_wire.decode):
            with pytest.raises(wire.ProtoError):
                decode(data)
    assert wire.peek_header(daemon_wire.encode_ops(77, GOOD[:1])) == (wire.T_OPS, 77, 1)
    assert wire.peek_header(b"\0" * 12) is None


def _fields(layout: struct.Struct) -> list[object]:
    """A strategy per field of a record layout (the leading kind byte left out)."""
    out: list[object] = []
    for code in re.findall(r"\d*[BHI]|\d+s", layout.format[1:])[1:]:
        if code.endswith("s"):
            out.append(int(code[:-1]))
        else:
            out.append(st.integers(0, {"B": 255, "H": 2**16 - 1, "I": 2**32 - 1}[code]))
    return out


records = st.one_of(
    *[
        st.builds(
            cls._make,
            st.tuples(
                *[
                    st.binary(min_size=n, max_size=n) if isinstance(n, int) else n
                    for n in _fields(layout)
                ]
            ),
        )
        for cls, layout in wire.KINDS.values()
    ]
)


@given(st.integers(0, 2**32 - 1), st.lists(records, min_size=1, max_size=40))
def test_ops_round_trip_hypothesis(seq: int, recs: list[wire.Record]) -> None:
    assert wire.decode_request(daemon_wire.encode_ops(seq, recs)) == wire.Ops(seq, tuple(recs))


@given(st.binary(max_size=600))
def test_decode_never_raises_anything_else(data: bytes) -> None:
    for decode in (wire.decode_request, daemon_wire.decode):
        with contextlib.suppress(wire.ProtoError):
            decode(data)
    for mtype in (wire.T_OPS, 2, wire.T_REPLY, wire.T_UPCALL, wire.T_LOG, 9):
        head = wire.HEADER.pack(wire.MAGIC, wire.VERSION, mtype, 1, len(data) % 70, 0)
        for decode in (wire.decode_request, daemon_wire.decode):
            with contextlib.suppress(wire.ProtoError):
                decode(head + data)


# --- validation: the hostile daemon, without root ----------------------------------


def test_validate_commands() -> None:
    cmds = [validate.check(r) for r in GOOD]
    assert not [c for c in cmds if isinstance(c, validate.Refusal)], cmds
    vif = cmds[0]
    assert isinstance(vif, validate.Vif) and vif.add and vif.option == kernel.MRT_ADD_VIF
    assert vif.value == kernel.vifctl(0, 1, 7)
    assert cmds[1] == validate.Vif(6, False, 31, 7, kernel.MRT6_DEL_MIF, struct.pack("=H", 31))
    assert cmds[2] == validate.Route(4, kernel.MRT_ADD_MFC, kernel.mfcctl(S4, G4, 3, GOOD[2].ttls))
    assert cmds[4] == validate.Route(6, kernel.MRT6_ADD_MFC, kernel.mf6cctl(S6, G6, 0, 0b110))
    assert cmds[7] == validate.Membership(4, True, 7, G4, None)
    assert cmds[8] == validate.Membership(6, False, 7, G6, S6)
    assert cmds[9] == validate.Advert(6, 7, 20)
    assert cmds[10] == validate.Hook("reload", ())
    assert cmds[11] == validate.Hook("install", (("source", "10.0.0.1"), ("group", "225.1.2.3")))
    assert cmds[12] == wire.Rules(7, 20000)


def _installs(rule: validate.Rule, source: bytes, group: bytes) -> bytes | None:
    """What the helper writes for a NOCACHE (source, group) on the rule's VIF, or None."""
    if int.from_bytes(source + group) & rule.mask != rule.net:
        return None
    return rule.parts[0] + source + rule.parts[1] + group + rule.parts[2]


def test_validate_rules() -> None:
    r4, r6 = validate.check(GOOD[13]), validate.check(GOOD[14])
    assert isinstance(r4, validate.Rule) and isinstance(r6, validate.Rule)
    assert (r4.family, r4.parent, r4.option) == (4, 2, kernel.MRT_ADD_MFC)
    assert (r6.family, r6.parent, r6.option) == (6, 0, kernel.MRT6_ADD_MFC)
    ttls = GOOD[13].outs  # type: ignore[union-attr]
    # any source, group 225.1/16: exactly the struct an AddMfc4 would write
    assert _installs(r4, S4, G4) == kernel.mfcctl(S4, G4, 2, ttls)
    assert _installs(r4, b"\xc0\xa8\1\1", b"\xe1\1\xff\xff") is not None
    assert _installs(r4, S4, b"\xe1\2\2\3") is None  # another /16
    # source fc00::/8, group exactly G6, MIF 1 an output
    src = b"\xfc" + bytes(14) + b"\7"
    assert _installs(r6, src, G6) == kernel.mf6cctl(src, G6, 0, 0b10)
    assert _installs(r6, b"\xfd" + bytes(15), G6) is None  # source outside fc00::/8
    assert _installs(r6, src, G6[:-1] + b"\2") is None


def rule4(**fields: object) -> wire.Rule:
    """A good IPv4 rule with some of its fields replaced."""
    good = wire.Rule(4, 0, Z16, 0, wire.pad16(G4), 32, Z32)
    return wire.Rule(*[fields.get(f, v) for f, v in zip(good._fields, good, strict=True)])


@pytest.mark.parametrize(
    "record",
    [
        rule4(family=5),
        rule4(parent=32),
        rule4(group=wire.pad16(S4)),  # unicast group
        rule4(group=wire.pad16(b"\xe0" + bytes(3)), group_len=3),  # beyond multicast
        rule4(group_len=33),
        rule4(source_len=33),
        rule4(source=wire.pad16(G4), source_len=32),  # multicast source
        rule4(source=wire.pad16(S4), source_len=8),  # host bits after the prefix
        rule4(group_len=16),  # host bits after the group prefix
        rule4(group=G4 + b"\1" + bytes(11)),  # bytes after an IPv4 address
        wire.Rule(6, 0, Z16, 0, G6, 7, Z32),  # a group prefix wider than ff00::/8
        wire.Rule(6, 0, Z16, 129, G6, 128, Z32),
    ],
)
def test_validate_refuses_bad_rules(record: wire.Record) -> None:
    assert isinstance(validate.check(record), validate.Refusal)


def _rule(
    fam: int, parent: int, slen: int, glen: int, raw: bytes, outs: bytes, tidy: bool
) -> wire.Rule:
    """A RULE from random fields; `tidy` makes most of them plausible (masked prefixes,
    a multicast group, addresses of the family's size) so that many are accepted."""
    src, grp = raw[:16], raw[16:]
    if tidy:
        n = 4 if fam == 4 else 16
        bits = 8 * n
        slen, glen = slen % (bits + 1), glen % (bits + 1)
        s, g = int.from_bytes(src[:n]), int.from_bytes(grp[:n]) | (0xFF << (bits - 8))
        if n == 4:
            g = g & ((1 << 28) - 1) | (0xE << 28)  # in 224/4
        s = s >> (bits - slen) << (bits - slen) if slen else 0
        g = g >> (bits - glen) << (bits - glen) if glen else 0
        src, grp = wire.pad16(s.to_bytes(n)), wire.pad16(g.to_bytes(n))
    return wire.Rule(fam, parent, src, slen, grp, glen, outs)


rules = st.builds(
    _rule,
    st.sampled_from([4, 6, 0, 5]),
    st.integers(0, 40),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
    st.booleans(),
)


@settings(max_examples=500)
@given(rules, st.binary(min_size=32, max_size=32))
def test_accepted_rules_install_only_sane_entries(record: wire.Rule, sg: bytes) -> None:
    """Whatever a (hostile) daemon sends, a rule the helper accepts installs only
    multicast groups, on an in-range VIF, with the kernel's struct layout."""
    cmd = validate.check(record)
    if isinstance(cmd, validate.Refusal):
        return
    assert isinstance(cmd, validate.Rule) and 0 <= cmd.parent < kernel.MAXVIFS
    n = 4 if cmd.family == 4 else 16
    src, grp = sg[:n], sg[16 : 16 + n]
    # an (S,G) inside the rule's prefixes: the rule's bits, then random ones
    mixed = cmd.net | int.from_bytes(src + grp) & ~cmd.mask
    src, grp = mixed.to_bytes(2 * n)[:n], mixed.to_bytes(2 * n)[n:]
    value = _installs(cmd, src, grp)
    assert value is not None
    assert (grp[0] & 0xF0 == 0xE0) if n == 4 else grp[0] == 0xFF
    if n == 4:
        assert value == kernel.mfcctl(src, grp, cmd.parent, record.outs)
    else:
        oifs = sum(1 << i for i, o in enumerate(record.outs) if o)
        assert value == kernel.mf6cctl(src, grp, cmd.parent, oifs)


@pytest.mark.parametrize(
    "record",
    [
        wire.AddVif(4, 32, 1, 7),
        wire.AddVif(5, 0, 1, 7),
        wire.AddVif(4, 0, 1, 0),
        wire.AddVif(6, 0, 1, 0x10000),  # mif6ctl holds 16 bits
        wire.DelVif(0, 0, 7),
        wire.AddMfc4(32, S4, G4, Z32),
        wire.AddMfc4(0, S4, S4, Z32),  # unicast group
        wire.AddMfc4(0, G4, G4, Z32),  # multicast source
        wire.AddMfc6(32, S6, G6, 1),
        wire.AddMfc6(0, G6, G6, 1),
        wire.DelMfc(4, 0, S4 + b"\1" + bytes(11), wire.pad16(G4)),  # bytes after IPv4
        wire.DelMfc(7, 0, Z16, G6),
        wire.Join(4, 0, Z16, wire.pad16(G4)),
        wire.Join(6, 7, G6, G6),
        wire.Leave(4, 7, Z16, wire.pad16(S4)),
        wire.Advertise(4, 3, 7),
        wire.Advertise(6, 181, 7),
        wire.Advertise(6, 20, 0),
        wire.HookInstall(4, Z16, wire.pad16(G4)),  # no source
        wire.HookInstall(6, S6, S6),
    ],
)
def test_validate_refuses(record: wire.Record) -> None:
    assert isinstance(validate.check(record), validate.Refusal)


@settings(max_examples=500)
@given(records)
def test_validate_is_total_and_commands_are_sane(record: wire.Record) -> None:
    """Any record: a command or a refusal, never an exception; and what is
    accepted only ever names a multicast group and an in-range VIF."""
    cmd = validate.check(record)
    if isinstance(cmd, validate.Membership):
        assert (cmd.group[0] & 0xF0 == 0xE0) if cmd.family == 4 else cmd.group[0] == 0xFF
    elif isinstance(cmd, validate.Vif):
        assert 0 <= cmd.vif < kernel.MAXVIFS and cmd.ifindex > 0
    elif isinstance(cmd, validate.Advert):
        assert 4 <= cmd.interval <= 180 and cmd.ifindex > 0
    elif isinstance(cmd, validate.Hook):
        assert cmd.action in ("reload", "install")
    elif isinstance(cmd, validate.Rule):
        assert 0 <= cmd.parent < kernel.MAXVIFS and cmd.family in (4, 6)
        assert cmd.option in (kernel.MRT_ADD_MFC, kernel.MRT6_ADD_MFC)


@given(st.binary(max_size=400))
def test_decode_then_validate_never_raises(data: bytes) -> None:
    """The helper's whole path from bytes to commands, on hostile bytes."""
    head = wire.HEADER.pack(wire.MAGIC, wire.VERSION, wire.T_OPS, 1, max(1, len(data) // 8), 0)
    try:
        msg = wire.decode_request(head + data)
    except wire.ProtoError:
        return
    assert isinstance(msg, wire.Ops)
    for r in msg.records:
        validate.check(r)


# --- the daemon's side of the edge -------------------------------------------------------


def test_records_from_engine_ops() -> None:
    a = ip_address
    r = record(AddMfc(4, a("10.0.0.1"), a("225.1.2.3"), 2, ((0, 1), (5, 64))))
    assert r == wire.AddMfc4(2, S4, G4, bytes([1, 0, 0, 0, 0, 64]) + bytes(26))
    r = record(AddMfc(6, None, a("ff0e::1"), 0, ((1, 0), (31, 9))))
    assert r == wire.AddMfc6(0, Z16, G6, (1 << 1) | (1 << 31))  # no IPv6 thresholds sent
    assert record(DelMfc(4, None, a("225.1.2.3"), 1)) == wire.DelMfc(4, 1, Z16, wire.pad16(G4))
    assert record(AddVif(4, 3, 7, 2, "eth0")) == wire.AddVif(4, 3, 2, 7)
    assert record(DelVif(6, 3, 7, "eth0")) == wire.DelVif(6, 3, 7)
    j = record(JoinGroup(4, 7, a("232.1.1.1"), a("10.0.0.9"), "eth0"))
    assert j == wire.Join(4, 7, wire.pad16(a("10.0.0.9").packed), wire.pad16(a("232.1.1.1").packed))
    assert isinstance(record(LeaveGroup(6, 7, a("ff0e::1"), None, "eth0")), wire.Leave)
    with pytest.raises(wire.ProtoError):
        record(AddMfc(4, None, a("225.1.2.3"), 0, ((32, 1),)))
    for op in (AddMfc(4, a("10.0.0.1"), a("225.1.2.3"), 2, ((0, 1),)), DelVif(4, 1, 7, "x")):
        assert not isinstance(validate.check(record(op)), validate.Refusal)


def test_client_sends_growing_batches_and_refuses_unencodable_records_in_place() -> None:
    """HelperClient.execute reads its records batch by batch (64, 256, then
    wire.MAX_BATCH): a record that cannot be encoded gets EINVAL where it is,
    in any batch, and every other one its answer, in order."""
    import sys
    import threading

    from smcroute.privsep.client import HelperClient
    from smcroute.privsep.spawn import spawn

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sizes: list[int] = []

    def helper() -> None:  # answers each record with its VIF number as the errno
        while data := theirs.recv(wire.MAX_MESSAGE + 1):
            msg = wire.decode_request(data)
            sizes.append(len(msg.records))
            errs = [r.vif if isinstance(r, wire.AddVif) else 0 for r in msg.records]
            theirs.send(wire.encode_reply(msg.seq, errs))

    t = threading.Thread(target=helper)
    t.start()
    try:
        stands_in = spawn([sys.executable, "-c", "import time; time.sleep(60)"])
        client = HelperClient(stands_in, ours)
        records = [wire.AddVif(4, i % 200, 1, 7) for i in range(1500)]
        records[400] = wire.AddVif(4, 300, 1, 7)  # a VIF byte cannot hold 300
        res = client.execute(iter(records))
        assert sizes == [64, 256, 1023, 156]  # the third without the refused one
        assert res[400] == errno.EINVAL
        assert res[:400] + res[401:] == [i % 200 for i in range(1500) if i != 400]
        stands_in.kill()
        stands_in.wait()
    finally:
        ours.close()
        t.join(10)
        theirs.close()
