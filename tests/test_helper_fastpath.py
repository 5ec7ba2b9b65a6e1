"""The privileged helper's fast path, without root: its poll loop over a stand-in
mroute socket (a datagram socketpair fed crafted upcalls, whose MRT_ADD_MFC
calls are recorded), stand-in Solicitation sockets and a real socketpair to
the daemon.

A NOCACHE that matches a rule is written at once with the bytes the rule
says; its INSTALLED report is held (REPORT_HOLD, REPORT_BATCH) but never
overtaken by any other message; anything the fast path does not take whole
(a multicast source, a short message, no budget, another VIF, a failed
write) goes the way of every upcall: decoded and judged, then forwarded or
dropped.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from ipaddress import ip_address

import pytest
from smcroute.privsep import child, daemon_wire, kernel, mrdisc, wire
from smcroute.privsep.daemon_wire import Log, Solicit, Upcall

IPPROTO_IPV6 = 41
OUTS = bytes([0, 1, 2]) + bytes(29)  # VIF 1 (threshold 1) and VIF 2 (threshold 2)


def raw(a: str) -> bytes:
    return ip_address(a).packed


def igmpmsg(msgtype: int, vif: int, src: str, grp: str) -> bytes:
    return bytes(8) + bytes([msgtype, 0, vif, 0]) + raw(src) + raw(grp) + bytes(8)


def mrt6msg(msgtype: int, mif: int, src: str, grp: str) -> bytes:
    return struct.pack("=BBH4x", 0, msgtype, mif) + raw(src) + raw(grp) + b"\xaa" * 40


class Mroute:
    """An mroute socket's stand-in: upcalls written to `feed`, writes recorded."""

    def __init__(self, fail: int = 0) -> None:
        self.sock, self.feed = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.writes: list[tuple[int, int, bytes]] = []
        self.fail = fail

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def recv(self, size: int) -> bytes:
        return self.sock.recv(size)

    def setsockopt(self, level: int, option: int, value: bytes) -> None:
        if self.fail:
            raise OSError(self.fail, "fake")
        self.writes.append((level, option, value))

    def close(self) -> None:
        self.sock.close()
        self.feed.close()


class Solicitations:
    """A Solicitation socket's stand-in: what `feed` gets is read with the
    ancillary data and address queued with it (a socketpair carries none)."""

    def __init__(self) -> None:
        self.sock, self.feed = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.meta: list[tuple[list[mrdisc.Cmsg], object]] = []

    def send(self, data: bytes, anc: list[mrdisc.Cmsg], addr: object = None) -> None:
        self.meta.append((anc, addr))
        self.feed.send(data)

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def recvmsg(self, size: int, ancsize: int) -> tuple[bytes, list[mrdisc.Cmsg], int, object]:
        data = self.sock.recv(size)
        anc, addr = self.meta.pop(0)
        return data, anc, 0, addr

    def close(self) -> None:
        self.sock.close()
        self.feed.close()


class Loop:
    """The helper's `run()` in a thread; `peer` is the daemon's end."""

    def __init__(self, mr: dict[int, Mroute], sol: dict[int, Solicitations] | None = None) -> None:
        ipc, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.mr = mr
        self.helper = child.Helper(ipc, mr, "", sol or {})  # type: ignore[arg-type]
        self.peer.settimeout(5)
        self.seq = 0

    def ops(self, *records: wire.Record) -> list[int]:
        self.seq += 1
        self.peer.send(daemon_wire.encode_ops(self.seq, records))
        while True:
            msg = self.next()
            if isinstance(msg, daemon_wire.Reply):
                return list(msg.errnos)

    def next(self) -> daemon_wire.Message:
        return daemon_wire.decode(self.peer.recv(wire.MAX_MESSAGE))

    def upcalls(self, n: int) -> list[Upcall]:
        got: list[Upcall] = []
        while len(got) < n:
            msg = self.next()
            if isinstance(msg, Upcall):
                got.append(msg)
            else:
                assert isinstance(msg, Log), msg
        return got

    def quiet(self) -> bool:
        """Nothing more from the helper (a round trip through it first)."""
        self.peer.settimeout(0.2)
        try:
            self.peer.recv(wire.MAX_MESSAGE)
        except TimeoutError:
            return True
        finally:
            self.peer.settimeout(5)
        return False


@pytest.fixture
def loop() -> Iterator[Loop]:
    mr = {4: Mroute(), 6: Mroute()}
    lp = Loop(mr)
    thread = threading.Thread(target=lp.helper.run, daemon=True)
    thread.start()
    yield lp
    lp.peer.close()  # EOF: the helper leaves its loop
    thread.join(5)
    assert not thread.is_alive()
    for m in mr.values():
        m.close()


def table(epoch: int = 7, budget: int = 100) -> list[wire.Record]:
    g4, g6 = wire.pad16(raw("225.9.0.0")), raw("ff0e::900")
    return [
        wire.Rules(epoch, budget),
        wire.Rule(4, 1, bytes(16), 0, g4, 16, OUTS),  # another VIF
        wire.Rule(4, 0, bytes(16), 0, wire.pad16(raw("225.9.9.9")), 32, OUTS),
        wire.Rule(4, 0, bytes(16), 0, g4, 16, bytes(32)),  # never reached for 225.9.9.9
        wire.Rule(6, 3, bytes(16), 0, g6, 120, OUTS),
    ]


def test_a_matching_nocache_is_written_and_reported_in_order(loop: Loop) -> None:
    assert loop.ops(*table()) == [0] * 5
    loop.mr[6].feed.send(mrt6msg(1, 3, "fc00::1", "ff0e::905"))
    deadline = time.monotonic() + 5
    while not loop.mr[6].writes and time.monotonic() < deadline:
        time.sleep(0.001)
    loop.mr[4].feed.send(igmpmsg(1, 0, "10.0.0.1", "225.9.9.9"))
    loop.mr[4].feed.send(igmpmsg(1, 0, "10.0.0.2", "225.9.1.1"))  # rule 2
    loop.mr[4].feed.send(igmpmsg(2, 1, "10.0.0.3", "225.9.9.9"))  # WRONGVIF: sent at once
    assert loop.upcalls(4) == [
        Upcall(6, wire.INSTALLED, 3, raw("fc00::1"), raw("ff0e::905"), 7 << 16 | 3),
        Upcall(4, wire.INSTALLED, 0, raw("10.0.0.1"), raw("225.9.9.9"), 7 << 16 | 1),
        Upcall(4, wire.INSTALLED, 0, raw("10.0.0.2"), raw("225.9.1.1"), 7 << 16 | 2),
        Upcall(4, wire.WRONGVIF, 1, raw("10.0.0.3"), raw("225.9.9.9")),
    ]
    mfc = kernel.mfcctl
    assert loop.mr[4].writes == [
        (0, kernel.MRT_ADD_MFC, mfc(raw("10.0.0.1"), raw("225.9.9.9"), 0, OUTS)),
        (0, kernel.MRT_ADD_MFC, mfc(raw("10.0.0.2"), raw("225.9.1.1"), 0, bytes(32))),
    ]
    want6 = kernel.mf6cctl(raw("fc00::1"), raw("ff0e::905"), 3, 0b110)
    assert loop.mr[6].writes == [(IPPROTO_IPV6, kernel.MRT6_ADD_MFC, want6)]


def test_reports_are_held_then_sent_without_another_message(loop: Loop) -> None:
    assert loop.ops(*table()) == [0] * 5
    for i in range(3):
        loop.mr[4].feed.send(igmpmsg(1, 0, f"10.0.1.{i + 1}", "225.9.9.9"))
    # no other message: they go out once the first has waited REPORT_HOLD
    assert [u.source for u in loop.upcalls(3)] == [raw(f"10.0.1.{i + 1}") for i in range(3)]
    assert len(loop.mr[4].writes) == 3


def test_a_full_batch_goes_out_at_once(loop: Loop) -> None:
    n = child.REPORT_BATCH
    assert loop.ops(*table(budget=n)) == [0] * 5
    for i in range(n):
        loop.mr[4].feed.send(igmpmsg(1, 0, f"10.1.{i // 200}.{i % 200 + 1}", "225.9.9.9"))
    got = loop.upcalls(n)
    assert {u.kind for u in got} == {wire.INSTALLED} and len(loop.mr[4].writes) == n
    # the budget is spent: the next is the daemon's
    loop.mr[4].feed.send(igmpmsg(1, 0, "10.2.0.1", "225.9.9.9"))
    assert loop.upcalls(1) == [Upcall(4, wire.NOCACHE, 0, raw("10.2.0.1"), raw("225.9.9.9"))]
    assert len(loop.mr[4].writes) == n


@pytest.mark.parametrize(
    "data",
    [
        igmpmsg(1, 0, "239.0.0.1", "225.9.9.9"),  # a multicast source
        igmpmsg(1, 0, "10.0.0.1", "225.9.9.9")[:19],  # short
        igmpmsg(1, 2, "10.0.0.1", "225.9.9.9"),  # a VIF without rules
        igmpmsg(1, 0, "10.0.0.1", "226.9.9.9"),  # no rule's group
        bytes(8) + bytes([1, 2, 0, 0]) + raw("10.0.0.1") + raw("225.9.9.9"),  # an IGMP packet
    ],
)
def test_what_no_rule_takes_whole_is_judged_as_ever(loop: Loop, data: bytes) -> None:
    assert loop.ops(*table()) == [0] * 5
    loop.mr[4].feed.send(data)
    try:
        want: object = kernel.decode_upcall(4, data)
    except kernel.UpcallError:
        want = None
    if want is None:  # dropped, and said so in the log
        msg = loop.next()
        assert isinstance(msg, Log) and "dropped 1 bad IPv4 message" in msg.text, msg
    else:
        assert loop.upcalls(1) == [Upcall(4, *want)]  # type: ignore[misc]
    assert loop.quiet() and loop.mr[4].writes == []


def test_a_failed_write_leaves_the_source_to_the_daemon() -> None:
    mr = {4: Mroute(fail=22)}
    lp = Loop(mr)  # type: ignore[arg-type]
    thread = threading.Thread(target=lp.helper.run, daemon=True)
    thread.start()
    try:
        assert lp.ops(*table()[:3]) == [0] * 3
        mr[4].feed.send(igmpmsg(1, 0, "10.0.0.1", "225.9.9.9"))
        assert lp.upcalls(1) == [Upcall(4, wire.NOCACHE, 0, raw("10.0.0.1"), raw("225.9.9.9"))]
        assert lp.helper.budget == 100
    finally:
        lp.peer.close()
        thread.join(5)
        mr[4].close()


def test_a_new_table_replaces_the_old_one(loop: Loop) -> None:
    assert loop.ops(*table()) == [0] * 5
    assert loop.ops(wire.Rules(8, 100), table()[4]) == [0, 0]  # IPv6 only
    loop.mr[4].feed.send(igmpmsg(1, 0, "10.0.0.1", "225.9.9.9"))
    loop.mr[6].feed.send(mrt6msg(1, 3, "fc00::2", "ff0e::901"))
    assert loop.upcalls(2) == [
        Upcall(4, wire.NOCACHE, 0, raw("10.0.0.1"), raw("225.9.9.9")),
        Upcall(6, wire.INSTALLED, 3, raw("fc00::2"), raw("ff0e::901"), 8 << 16 | 0),
    ]


def rule4(
    group: str, group_len: int, outs: bytes, source: str = "0.0.0.0", slen: int = 0
) -> wire.Rule:
    return wire.Rule(4, 0, wire.pad16(raw(source)), slen, wire.pad16(raw(group)), group_len, outs)


A, B = bytes([0, 1]) + bytes(30), bytes([0, 0, 1]) + bytes(29)  # VIF 1, VIF 2


@pytest.mark.parametrize(
    ("rules", "source", "want"),
    [
        # the first rule that matches wins, whether it is for one group or a prefix
        ([rule4("225.9.0.0", 16, A), rule4("225.9.9.9", 32, B)], "10.0.0.1", (0, A)),
        ([rule4("225.9.9.9", 32, B), rule4("225.9.0.0", 16, A)], "10.0.0.1", (0, B)),
        ([rule4("225.9.9.9", 32, A), rule4("225.9.9.9", 32, B)], "10.0.0.1", (0, A)),
        ([rule4("225.8.0.0", 16, A), rule4("225.9.9.9", 32, B)], "10.0.0.1", (1, B)),
        # one group from some sources only
        ([rule4("225.9.9.9", 32, A, "10.0.0.0", 8), rule4("225.9.9.9", 32, B)], "10.0.0.1", (0, A)),
        ([rule4("225.9.9.9", 32, A, "10.0.0.0", 8), rule4("225.9.9.9", 32, B)], "11.0.0.1", (1, B)),
        ([rule4("225.9.9.9", 32, A, "10.0.0.0", 8)], "11.0.0.1", None),
    ],
)
def test_the_first_rule_that_matches_wins(
    loop: Loop, rules: list[wire.Rule], source: str, want: tuple[int, bytes] | None
) -> None:
    assert loop.ops(wire.Rules(5, 100), *rules) == [0] * (1 + len(rules))
    loop.mr[4].feed.send(igmpmsg(1, 0, source, "225.9.9.9"))
    (got,) = loop.upcalls(1)
    if want is None:
        assert got == Upcall(4, wire.NOCACHE, 0, raw(source), raw("225.9.9.9"))
        assert loop.mr[4].writes == []
        return
    assert got == Upcall(4, wire.INSTALLED, 0, raw(source), raw("225.9.9.9"), 5 << 16 | want[0])
    value = kernel.mfcctl(raw(source), raw("225.9.9.9"), 0, want[1])
    assert loop.mr[4].writes == [(0, kernel.MRT_ADD_MFC, value)]


def solicitation4(checksum_ok: bool = True) -> bytes:
    """An RFC 4286 Solicitation as a raw IGMP socket reads it (IP header first)."""
    msg = bytes([mrdisc.IGMP_MRDISC_SOL, 0, 0, 0])
    msg = msg[:2] + (mrdisc.checksum(msg) ^ (0 if checksum_ok else 1)).to_bytes(2, "big")
    ip = bytes([0x45, 0, 0, 20 + len(msg), 0, 0, 0, 0, 1, 2, 0, 0]) + raw("10.0.0.9")
    return ip + mrdisc.ALL_ROUTERS4 + msg


def test_solicitations_come_from_their_own_sockets_and_are_judged() -> None:
    """The mroute socket carries upcalls only; a Solicitation socket's packets
    are checked whole (IP_PKTINFO, destination, type, checksum) before the
    daemon hears of one, and nothing read there is taken for an upcall."""
    mr, sol = {4: Mroute()}, {4: Solicitations()}
    lp = Loop(mr, sol)  # type: ignore[arg-type]
    thread = threading.Thread(target=lp.helper.run, daemon=True)
    thread.start()
    pktinfo = [(socket.IPPROTO_IP, mrdisc.IP_PKTINFO, struct.pack("=I4s4s", 7, bytes(4), bytes(4)))]
    try:
        sol[4].send(solicitation4(), pktinfo)
        assert lp.next() == Solicit(4, 7)
        for data, anc in [
            (solicitation4(checksum_ok=False), pktinfo),
            (solicitation4(), []),  # no arrival interface
            (solicitation4()[:-1], pktinfo),  # shorter than its IP header says
            (igmpmsg(1, 0, "10.0.0.1", "225.9.9.9"), pktinfo),  # an upcall's bytes
            (b"\x45" + bytes(300), pktinfo),  # cut to 256 bytes
        ]:
            assert lp.ops(*table()[:3]) == [0] * 3  # a round trip: the last drop is done
            lp.helper.dropped_at = 0.0  # each drop logged at once
            sol[4].send(data, anc)
            msg = lp.next()
            assert isinstance(msg, Log) and "not a valid Multicast Router Solicitation" in msg.text
        assert lp.quiet() and mr[4].writes == []
    finally:
        lp.peer.close()
        thread.join(5)
        mr[4].close()
        sol[4].close()


@pytest.mark.parametrize(
    "argv",
    [
        ["--ipc", "3", "--s4"],
        ["--ipc", "3", "--s4", "x"],
        ["--ipc", "3", "--s5", "4"],
        ["--v4", "4", "--s6", "5"],  # no --ipc
    ],
)
def test_bad_arguments_are_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]):
    assert child.main(argv) == 64
    assert "privileged helper: " in capsys.readouterr().err
