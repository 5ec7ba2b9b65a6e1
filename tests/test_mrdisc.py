"""Multicast router discovery (RFC 4286) without root: the packets the helper
builds, the MRDISC op on the wire and in the helper's validation, which
interfaces the engine says announce, and the advertisement schedule."""

from __future__ import annotations

import errno
import itertools
import random
import socket
import struct

import pytest
from smcroute.privsep import child, daemon_wire, mrdisc, wire

from smcroute.engine.core import Engine, Link
from smcroute.engine.mrdisc import (
    INITIAL_ADVERTS,
    JITTER,
    MAX_INITIAL_GAP,
    MIN_INITIAL_GAP,
    Schedule,
)
from smcroute.engine.ops import Announce
from smcroute.helper_wire import record
from smcroute.model import Config, Phyint

Z16, Z32 = bytes(16), bytes(32)
UP_MCAST = 0x1043  # UP | BROADCAST | RUNNING | MULTICAST

# ---------------------------------------------------------------------------
# Packets
# ---------------------------------------------------------------------------


def test_checksum_rfc1071_example() -> None:
    # RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is ddf2 (folded); checksum is its complement
    assert mrdisc.checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2
    assert mrdisc.checksum(b"\x01") == 0xFEFF  # odd length: padded with a zero byte


@pytest.mark.parametrize("interval", [4, 20, 180])
def test_igmp_advertisement(interval: int) -> None:
    pkt = mrdisc.advert(4, interval)
    assert len(pkt) == 8
    typ, ival, _checksum, query_interval, robustness = struct.unpack("!BBHHH", pkt)
    assert (typ, ival, query_interval, robustness) == (0x30, interval, 125, 2)
    assert mrdisc.checksum(pkt) == 0  # a valid Internet checksum sums to 0


def test_igmp_advertisement_golden() -> None:
    # captured off a veth from the kernel (interval 20)
    assert mrdisc.advert(4, 20) == bytes.fromhex("3014cf6c007d0002")


def test_mld_advertisement() -> None:
    pkt = mrdisc.advert(6, 4)
    assert pkt == bytes([151, 4, 0, 0, 0, 125, 0, 2])  # checksum left to the kernel


@pytest.mark.parametrize("interval", [-1, 0, 3, 181, 255, 1000])
def test_advertisement_interval_out_of_range(interval: int) -> None:
    with pytest.raises(ValueError):
        mrdisc.advert(4, interval)
    with pytest.raises(ValueError):
        mrdisc.advert(6, interval)


def test_ancillary_data() -> None:
    c4 = dict(((lvl, typ), data) for lvl, typ, data in mrdisc.cmsgs(4, 7))
    assert c4[(socket.IPPROTO_IP, mrdisc.IP_PKTINFO)] == struct.pack("=I8x", 7)  # in_pktinfo
    assert c4[(socket.IPPROTO_IP, mrdisc.IP_TTL)] == struct.pack("=i", 1)
    ra = c4[(socket.IPPROTO_IP, mrdisc.IP_RETOPTS)]
    assert ra == bytes([0x94, 4, 0, 0]) and len(ra) % 4 == 0  # copied, option 20, length 4
    c6 = dict(((lvl, typ), data) for lvl, typ, data in mrdisc.cmsgs(6, 7))
    pktinfo = c6[(socket.IPPROTO_IPV6, mrdisc.IPV6_PKTINFO)]
    assert len(pktinfo) == 20 and pktinfo[:16] == Z16 and pktinfo[16:] == struct.pack("=I", 7)
    assert c6[(socket.IPPROTO_IPV6, mrdisc.IPV6_HOPLIMIT)] == struct.pack("=i", 1)
    hbh = c6[(socket.IPPROTO_IPV6, mrdisc.IPV6_HOPOPTS)]
    assert len(hbh) == (hbh[1] + 1) * 8  # what the kernel checks
    assert hbh[2:6] == bytes([5, 2, 0, 0])  # Router Alert, value 0 = MLD


# ---------------------------------------------------------------------------
# The MRDISC op record
# ---------------------------------------------------------------------------


def test_advertise_record_round_trip() -> None:
    rec = record(Announce(6, 12, 20, "eth0"))
    assert rec == wire.Advertise(6, 20, 12)
    assert wire.decode_request(daemon_wire.encode_ops(9, [rec])) == wire.Ops(9, (rec,))


def test_announce_with_unencodable_interval_is_refused_before_sending() -> None:
    with pytest.raises(wire.ProtoError):
        daemon_wire.encode_ops(1, [record(Announce(4, 3, 256, "eth0"))])


class FakeMroute:
    """Stands in for an mroute socket: records what would be sent."""

    def __init__(self, fail: int = 0) -> None:
        self.sent: list[tuple[list[bytes], list[tuple[int, int, bytes]], int, tuple]] = []
        self.fail = fail

    def sendmsg(self, bufs: list[bytes], anc: list[tuple[int, int, bytes]], flags: int,
                addr: tuple) -> int:  # fmt: skip
        if self.fail:
            raise OSError(self.fail, "fake")
        self.sent.append((bufs, anc, flags, addr))
        return sum(map(len, bufs))


LO = socket.if_nametoindex("lo")
GONE = 0x7FFF_FFF0  # no such interface


@pytest.fixture
def helper() -> child.Helper:
    ipc, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    h = child.Helper(ipc, {4: FakeMroute(), 6: FakeMroute()}, "", {})  # type: ignore[dict-item]
    h.vifs[4][0] = LO
    h.vifs[6][3] = LO
    h.peer = peer  # type: ignore[attr-defined]  # keep the other end open
    return h


def run(h: child.Helper, *records: wire.Record) -> list[int]:
    return [h.execute(i, r) for i, r in enumerate(records)]


def rec(fam: int = 4, ifindex: int = LO, interval: int = 20) -> wire.Advertise:
    return wire.Advertise(fam, interval, ifindex)


def test_helper_sends_what_it_builds(helper: child.Helper) -> None:
    assert run(helper, rec(4), rec(6, interval=4)) == [0, 0]
    ((b4, a4, f4, d4),) = helper.mr[4].sent  # type: ignore[union-attr]
    assert (b4, a4, f4, d4) == ([mrdisc.advert(4, 20)], mrdisc.cmsgs(4, LO), 0, ("224.0.0.106", 0))
    ((b6, a6, _, d6),) = helper.mr[6].sent  # type: ignore[union-attr]
    assert (b6, a6, d6) == ([mrdisc.advert(6, 4)], mrdisc.cmsgs(6, LO), ("ff02::6a", 0, 0, LO))


def test_helper_rate_limits_per_interface(helper: child.Helper) -> None:
    assert run(helper, rec(4), rec(4), rec(6)) == [0, errno.EBUSY, 0]
    assert len(helper.mr[4].sent) == 1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "bad",
    [
        rec(interval=0),
        rec(interval=3),
        rec(interval=181),
        rec(interval=255),
        rec(ifindex=0),
        rec(fam=5),
        rec(fam=0),
    ],
)
def test_helper_refuses_malformed_advertise(helper: child.Helper, bad: wire.Advertise) -> None:
    assert run(helper, bad) == [errno.EINVAL]
    assert helper.mr[4].sent == [] and helper.mr[6].sent == []  # type: ignore[union-attr]
    line = daemon_wire.decode(helper.peer.recv(4096))  # type: ignore[attr-defined]
    assert isinstance(line, daemon_wire.Log) and "refused record #0 (Advertise)" in line.text


def test_helper_advertise_other_outcomes(helper: child.Helper) -> None:
    # out of an interface with none of the helper's VIFs: not sent, and an
    # errno rather than a refusal (the VIF may have gone a moment ago)
    assert run(helper, rec(4, ifindex=LO + 1000)) == [errno.ENXIO]
    helper.mr[6] = None  # IPv4-only mode
    assert run(helper, rec(6)) == [errno.EAFNOSUPPORT]
    helper.mr[4] = FakeMroute(fail=errno.ENETDOWN)  # type: ignore[assignment]
    assert run(helper, rec(4)) == [errno.ENETDOWN]
    assert helper.mr[6] is None


# ---------------------------------------------------------------------------
# Which interfaces announce (engine)
# ---------------------------------------------------------------------------


def engine(phyints: list[Phyint], families: tuple[int, ...] = (4, 6)) -> Engine:
    e = Engine(families=families)  # type: ignore[arg-type]
    e.set_links(
        [
            Link(1, "lo", 0x49),
            Link(2, "eth0", UP_MCAST),
            Link(3, "eth1", UP_MCAST),
            Link(4, "eth2", UP_MCAST & ~0x1),  # down
            Link(5, "wan0", UP_MCAST),
            Link(6, "eth3", UP_MCAST & ~0x40),  # up, no carrier
        ]
    )
    e.load_config(Config(phyints=phyints))
    return e


def test_announcements_follow_phyint_mrdisc_with_wildcards() -> None:
    e = engine([Phyint("eth+", mrdisc=True), Phyint("wan0"), Phyint("lo", mrdisc=True)])
    got = {(a.family, a.ifname, a.ifindex, a.interval) for a in e.announcements(30)}
    # eth2 is down, eth3 has no carrier, wan0 has no mrdisc, lo never gets a VIF
    assert got == {(f, n, i, 30) for f in (4, 6) for n, i in (("eth0", 2), ("eth1", 3))}
    assert e.announcements(30) == e.announcements(30)  # no state change


def test_announcements_need_an_enabled_vif_and_a_family() -> None:
    e = engine([Phyint("eth0", enable=False, mrdisc=True), Phyint("eth1", mrdisc=True)], (4,))
    assert [(a.family, a.ifname) for a in e.announcements(20)] == [(4, "eth1")]
    # the last matching phyint decides, as for every other phyint setting
    e.load_config(Config(phyints=[Phyint("eth+", mrdisc=True), Phyint("eth1")]))
    assert [a.ifname for a in e.announcements(20)] == ["eth0"]
    e.load_config(Config())
    assert e.announcements(20) == []


# ---------------------------------------------------------------------------
# When (the daemon's schedule)
# ---------------------------------------------------------------------------

A4 = Announce(4, 2, 10, "eth0")
A6 = Announce(6, 2, 10, "eth0")


def test_schedule_burst_then_periodic_with_jitter() -> None:
    s = Schedule(random.Random(1))
    s.update([A4], 100.0)
    now, sent = 100.0, []
    while now < 200.0:
        for op in s.due(now):
            sent.append(now)
            assert op == A4
        nxt = s.next_deadline()
        assert nxt is not None and nxt > now
        now = nxt
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert sent[0] == 100.0  # at once
    assert all(MIN_INITIAL_GAP <= g <= MAX_INITIAL_GAP for g in gaps[: INITIAL_ADVERTS - 1])
    periodic = gaps[INITIAL_ADVERTS - 1 :]
    assert len(periodic) >= 8
    assert all(10 * (1 - JITTER) <= g <= 10 * (1 + JITTER) for g in periodic)
    assert len(set(periodic)) > 1  # jittered


def test_schedule_stops_and_restarts() -> None:
    s = Schedule(random.Random(2))
    s.update([A4, A6], 0.0)
    assert s.due(0.0) == [A4, A6]
    s.update([A6], 0.1)  # IPv4 lost mrdisc
    assert s.due(50.0) == [A6]
    s.update([], 50.1)
    assert s.next_deadline() is None and s.due(100.0) == []
    s.update([A4], 200.0)  # back (a reload, a link up): a new burst, at once
    assert s.due(200.0) == [A4]
    nxt = s.next_deadline()
    assert nxt is not None and nxt <= 200.0 + MAX_INITIAL_GAP


def test_schedule_same_interface_new_name_keeps_rhythm() -> None:
    s = Schedule(random.Random(3))
    s.update([A4], 0.0)
    s.due(0.0)
    deadline = s.next_deadline()
    renamed = Announce(4, 2, 10, "lan0")
    s.update([renamed], 0.5)
    assert s.next_deadline() == deadline
    assert deadline is not None and s.due(deadline) == [renamed]


def test_solicitations_are_answered_on_announcing_interfaces_once_a_second() -> None:
    import random

    from smcroute.engine.mrdisc import Schedule

    s = Schedule(random.Random(1))
    op = Announce(4, 2, 20, "eth0")
    s.update([op], 0.0)
    assert s.solicited((4, 3), 1.0) is None  # not an announcing interface
    assert s.solicited((6, 2), 1.0) is None
    assert s.solicited((4, 2), 1.0) == op
    assert s.solicited((4, 2), 1.5) is None  # a second one within the second
    assert s.solicited((4, 2), 2.0) == op
