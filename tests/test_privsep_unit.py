"""Unit tests of the privsep wire formats: kernel structs, upcalls, the child protocol."""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smcroute.privsep import kernel, proto
from smcroute.privsep.client import op_record

from smcroute.engine.ops import AddMfc, AddVif, DelMfc, DelVif, JoinGroup, LeaveGroup

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
    up = kernel.decode_igmpmsg(igmpmsg(vif=3))
    assert up == kernel.RawUpcall(
        1, 3, IPv4Address("10.0.0.1").packed, IPv4Address("225.1.2.3").packed
    )
    assert kernel.decode_igmpmsg(igmpmsg(msgtype=2, vif=31)).vif == 31


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
        kernel.decode_igmpmsg(data)


def test_decode_mrt6msg() -> None:
    up = kernel.decode_mrt6msg(mrt6msg(mif=2))
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
        kernel.decode_mrt6msg(data)


@given(st.binary(max_size=120))
def test_upcall_decoders_never_raise_anything_else(data: bytes) -> None:
    for dec in (kernel.decode_igmpmsg, kernel.decode_mrt6msg):
        with contextlib.suppress(kernel.UpcallError):
            dec(data)


# --- the child protocol -------------------------------------------------------------

Z16, Z32 = bytes(16), bytes(32)


def rec(
    kind: int = proto.ADD_MFC, family: int = 4, vif: int = 0, ifindex: int = 0
) -> proto.OpRecord:
    return proto.OpRecord(
        kind, family, vif, ifindex, 0, b"\x0a\0\0\1" + bytes(12), b"\xe1\1\2\3" + bytes(12), Z32
    )


def test_sizes() -> None:
    assert proto.HEADER.size == 12
    assert proto.OP.size == 76
    assert proto.MAX_MESSAGE == 12 + 1024 * 76


def test_ops_round_trip() -> None:
    ops = (rec(), rec(proto.ADD_VIF, 6, 31, 7), rec(proto.JOIN, 4, 0, 0xFFFFFFFF))
    assert proto.decode(proto.encode_ops(42, ops)) == proto.Ops(42, ops)
    raw = [proto.encode_op(o) for o in ops]
    assert proto.encode_ops_raw(42, raw) == proto.encode_ops(42, ops)


def test_other_round_trips() -> None:
    assert proto.decode(proto.encode_pidfile(7)) == proto.Pidfile(7)
    assert proto.decode(proto.encode_reply(9, [0, errno.EINVAL, errno.EADDRINUSE])) == proto.Reply(
        9, (0, errno.EINVAL, errno.EADDRINUSE)
    )
    for up in (
        proto.Upcall(4, 1, 3, IPv4Address("10.0.0.1"), IPv4Address("225.1.2.3")),
        proto.Upcall(6, 2, 31, IPv6Address("fc00::1"), IPv6Address("ff0e::1")),
    ):
        assert proto.decode(proto.encode_upcall(up)) == up
    assert proto.decode(proto.encode_log(5, "héllo")) == proto.LogLine(5, "héllo")


def test_log_is_cut_at_1024_bytes() -> None:
    line = proto.decode(proto.encode_log(3, "é" * 2000))
    assert isinstance(line, proto.LogLine)
    assert len(line.text.encode()) <= proto.MAX_LOG
    assert line.text == "é" * 512


@pytest.mark.parametrize(
    "bad",
    [
        lambda: proto.encode_ops(1, []),
        lambda: proto.encode_ops(1, [rec()] * 1025),
        lambda: proto.encode_ops(-1, [rec()]),
        lambda: proto.encode_ops(1, [rec(vif=70000)]),
        lambda: proto.encode_ops(1, [rec()._replace(source=b"\1")]),
        lambda: proto.encode_reply(1, [-1]),
        lambda: proto.encode_reply(1, []),
        lambda: proto.encode_upcall_raw(5, 1, 1, bytes(4), bytes(4)),
        lambda: proto.encode_upcall_raw(4, 1, 1, bytes(16), bytes(16)),
        lambda: proto.encode_log(300, "x"),
    ],
)
def test_encode_refuses(bad: object) -> None:
    with pytest.raises(proto.ProtoError):
        bad()  # type: ignore[operator]


def test_decode_refuses() -> None:
    good = proto.encode_ops(1, [rec(), rec()])
    for data in (
        b"",
        good[:11],
        good[:-1],
        good + b"\0",
        b"\0\0" + good[2:],  # magic
        good[:2] + b"\2" + good[3:],  # version
        good[:3] + b"\x7f" + good[4:],  # type
        good[:10] + b"\1\0" + good[12:],  # reserved
        good[: 12 + 9] + b"\1" + good[12 + 10 :],  # reserved byte in an op
        proto.encode_pidfile(1) + b"x",
        proto.encode_log(3, "x")[:-1],
        proto.encode_log(3, "ab")[:-2] + b"\xff\xfe",
    ):
        with pytest.raises(proto.ProtoError):
            proto.decode(data)
    up = bytearray(proto.encode_upcall_raw(4, 1, 1, b"\x0a\0\0\1", b"\xe1\0\0\1"))
    up[12 + 4 + 5] = 1  # IPv4 source padding
    with pytest.raises(proto.ProtoError):
        proto.decode(bytes(up))


def test_peek_header() -> None:
    assert proto.peek_header(proto.encode_ops(77, [rec()])) == (proto.T_OPS, 77, 1)
    assert proto.peek_header(b"\0" * 12) is None
    assert proto.peek_header(b"SC") is None


ops_st = st.builds(
    proto.OpRecord,
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 255),
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=32, max_size=32),
)


@given(st.integers(0, 0xFFFFFFFF), st.lists(ops_st, min_size=1, max_size=20))
def test_ops_round_trip_hypothesis(seq: int, ops: list[proto.OpRecord]) -> None:
    assert proto.decode(proto.encode_ops(seq, ops)) == proto.Ops(seq, tuple(ops))


@given(st.integers(0, 0xFFFFFFFF), st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=50))
def test_reply_round_trip_hypothesis(seq: int, errnos: list[int]) -> None:
    assert proto.decode(proto.encode_reply(seq, errnos)) == proto.Reply(seq, tuple(errnos))


@given(st.integers(0, 255), st.text(st.characters(blacklist_categories=("Cs",)), max_size=1100))
def test_log_round_trip_hypothesis(level: int, text: str) -> None:
    line = proto.decode(proto.encode_log(level, text))
    assert isinstance(line, proto.LogLine)
    assert line.level == level
    assert text.startswith(line.text)
    assert len(line.text.encode()) <= proto.MAX_LOG
    if len(text.encode()) <= proto.MAX_LOG:
        assert line.text == text


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_decode_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(proto.ProtoError):
        proto.decode(data)


@settings(max_examples=500)
@given(st.binary(min_size=12, max_size=400))
def test_decode_with_valid_header(body: bytes) -> None:
    # Force plausible headers so the body parsers get exercised too.
    for mtype in (proto.T_OPS, proto.T_PIDFILE, proto.T_REPLY, proto.T_UPCALL, proto.T_LOG, 9):
        data = proto.HEADER.pack(proto.MAGIC, proto.VERSION, mtype, 1, body[0], 0) + body[12:]
        with contextlib.suppress(proto.ProtoError):
            proto.decode(data)


# --- engine op -> wire record ---------------------------------------------------------


def test_op_record() -> None:
    a = ip_address
    r = op_record(AddMfc(4, a("10.0.0.1"), a("225.1.2.3"), 2, ((0, 1), (5, 64))))
    assert r.kind == proto.ADD_MFC and r.vif == 2 and r.ifindex == 0
    assert r.source == a("10.0.0.1").packed + bytes(12)
    assert r.ttls[0] == 1 and r.ttls[5] == 64 and r.ttls.count(0) == 30
    r = op_record(AddMfc(6, None, a("ff0e::1"), 0, ((1, 0),)))
    assert r.source == Z16 and r.ttls[1] == 1  # threshold 0 still means "an output"
    assert op_record(DelMfc(4, None, a("225.1.2.3"), 1)).ttls == Z32
    assert op_record(AddVif(4, 3, 7, 2, "eth0"))[:5] == (proto.ADD_VIF, 4, 3, 7, 2)
    assert op_record(DelVif(6, 3, 7, "eth0"))[:5] == (proto.DEL_VIF, 6, 3, 7, 0)
    j = op_record(JoinGroup(4, 7, a("232.1.1.1"), a("10.0.0.9"), "eth0"))
    assert j.kind == proto.JOIN and j.ifindex == 7 and j.source[:4] == a("10.0.0.9").packed
    assert op_record(LeaveGroup(6, 7, a("ff0e::1"), None, "eth0")).kind == proto.LEAVE
    with pytest.raises(proto.ProtoError):
        op_record(AddMfc(4, None, a("225.1.2.3"), 0, ((32, 1),)))
