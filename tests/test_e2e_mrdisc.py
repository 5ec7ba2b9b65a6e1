"""End to end, our daemon in network namespaces: multicast router discovery
(RFC 4286) announcements on `phyint IFNAME mrdisc` interfaces (doc/SPEC.md §2 `-m`,
§3 `phyint ... mrdisc`).

S --a1-- R --a2-- X1, R --a3-- X2.  A capture process in each receiver
namespace (tests/mrdisc_capture.py: raw IGMP + raw ICMPv6 sockets) sees what
the router announces on that link.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import netns
import pytest
from netns import Daemon, RouterTopology

OURS = netns.OUR_DAEMON
CAPTURE = Path(__file__).resolve().parent / "mrdisc_capture.py"
IGMP_MRDISC_ADV = 0x30
ICMP6_MRDISC_ADV = 151

pytestmark = pytest.mark.netns


class Capture:
    """tests/mrdisc_capture.py running in a namespace; `poll()` collects packets."""

    def __init__(self, topo: RouterTopology, ns: netns.Netns, iface: str = "r0") -> None:
        self.proc = topo.track(
            ns.popen(
                [sys.executable, str(CAPTURE), iface],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline() if ready else ""
        if line.strip() != "READY":
            self.proc.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise netns.HarnessError(f"capture in {ns} failed to start: {line!r} {err}")
        self.packets: list[dict[str, Any]] = []
        self._partial = b""

    def poll(self, wait: float = 0.0) -> list[dict[str, Any]]:
        """Read what arrived (waiting up to `wait` s for more); all advertisements so far.

        Reads the pipe's fd directly: a buffered readline() would keep lines
        that select() no longer reports as readable.
        """
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + wait
        while True:
            left = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self._partial += chunk
            *lines, self._partial = self._partial.split(b"\n")
            for line in lines:
                pkt = json.loads(line)
                if pkt["type"] in (IGMP_MRDISC_ADV, ICMP6_MRDISC_ADV):
                    self.packets.append(pkt)
        return self.packets

    def adverts(self, family: int, after: float = 0.0) -> list[dict[str, Any]]:
        return [p for p in self.packets if p["family"] == family and p["t"] > after]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def check_advert(pkt: dict[str, Any], family: int, interval: int) -> None:
    want_type, want_dst = (
        (IGMP_MRDISC_ADV, "224.0.0.106") if family == 4 else (ICMP6_MRDISC_ADV, "ff02::6a")
    )
    assert pkt["type"] == want_type, pkt
    assert pkt["dst"] == want_dst, pkt
    assert pkt["length"] == 8, pkt
    assert pkt["interval"] == interval, pkt
    assert pkt["query_interval"] == 125, pkt
    assert pkt["robustness"] == 2, pkt
    assert pkt["ttl"] == 1, pkt
    assert pkt["router_alert"], pkt
    assert pkt["checksum_ok"], pkt


def test_mrdisc_announces_on_mrdisc_phyints_only_and_stops_on_reload(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    topo = topology(2)
    x1, x2 = (Capture(topo, x) for x in topo.receivers)  # behind a2, behind a3
    conf = (
        "phyint a2 mrdisc\n"
        "phyint a3 enable\n"
        f"mroute from a1 source {topo.source4} group 225.1.1.1 to a2 a3\n"
    )
    d = ours(topo.router, conf, extra_args=("-l", "debug", "-m", "4"))

    # An initial burst of 3, then one every 4 s (± 2.5 %): wait for the 4th IPv4 one.
    netns.wait_until(
        lambda: len(x1.poll(0.2) and x1.adverts(4)) >= 4 and len(x1.adverts(6)) >= 3,
        timeout=15,
        what="4 IPv4 and 3 IPv6 advertisements behind a2",
    )
    v4, v6 = x1.adverts(4), x1.adverts(6)
    for pkt in v4:
        check_advert(pkt, 4, 4)
        assert pkt["src"] == topo.addr(2, 1), pkt  # sent out of a2
    for pkt in v6:
        check_advert(pkt, 6, 4)
        assert pkt["src"].startswith("fe80:"), pkt  # link-local source, as MLD wants
    times = [p["t"] for p in v4]
    burst = [b - a for a, b in itertools.pairwise(times[:3])]
    assert all(0.3 < g <= 2.2 for g in burst), burst
    assert 3.7 <= times[3] - times[2] <= 4.4, times
    assert x2.poll(0.1) == [], "advertisements on a3, where mrdisc is off"
    # sending on the mroute sockets left the routing API alone: the route forwards
    rxs = [netns.Receiver(x, "r0", ["225.1.1.1"], topology=topo).start() for x in topo.receivers]
    netns.send(topo.sender, "s0", "225.1.1.1", count=5)
    assert [rx.stop().count(topo.source4, "225.1.1.1") for rx in rxs] == [5, 5]

    # Reload without mrdisc: they stop (a2 keeps its VIF: it is still routed to).
    d.write_conf(conf.replace("phyint a2 mrdisc\n", ""))
    d.ctl("reload")
    quiet_from = time.time() + 0.2  # one may have been on the wire during the reload
    x1.poll(4.0 * 1.025 + 1.0)
    assert x1.adverts(4, after=quiet_from) == [], "IPv4 advertisements after the reload"
    assert x1.adverts(6, after=quiet_from) == [], "IPv6 advertisements after the reload"
    assert x2.poll() == []
    assert d.running()
    log = d.log()
    assert "announcing on a2 (IPv4)" in log and "stopped on a2 (IPv6)" in log, log
    assert "cannot send" not in log, log
    x1.close()
    x2.close()


def test_mrdisc_wildcard_and_link_down_up_restarts_the_burst(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    topo = topology(2)
    x1, x2 = (Capture(topo, x) for x in topo.receivers)
    # -m 180: after the initial burst nothing is due for 3 minutes, so every
    # further advertisement comes from an interface that (re)starts announcing.
    ours(topo.router, "phyint a+ mrdisc\n", extra_args=("-l", "debug", "-m", "180"))
    for x in (x1, x2):
        netns.wait_until(
            lambda x=x: len(x.poll(0.2) and x.adverts(4)) >= 3 and len(x.adverts(6)) >= 3,
            timeout=10,
            what="initial bursts behind a2 and a3",
        )
        for fam in (4, 6):
            for pkt in x.adverts(fam):
                check_advert(pkt, fam, 180)
    x2.poll(0.5)
    assert len(x2.adverts(4)) == 3 and len(x2.adverts(6)) == 3, x2.packets  # a burst is 3

    # a3 down: it stops (netlink); up again: a new burst of 3 on a3 only.
    topo.router.ip("link", "set", "a3", "down")
    time.sleep(0.5)
    topo.router.ip("link", "set", "a3", "up")
    topo.wait_link_ready()
    netns.wait_until(
        lambda: len(x2.poll(0.2) and x2.adverts(4)) >= 6 and len(x2.adverts(6)) >= 6,
        timeout=10,
        what="a second burst behind a3",
    )
    x1.poll(0.5)
    assert len(x1.adverts(4)) == 3 and len(x1.adverts(6)) == 3, x1.packets
    x1.close()
    x2.close()


SOLICIT = Path(__file__).resolve().parent / "mrdisc_solicit.py"


def solicit(ns: netns.Netns, family: int, count: int = 1, how: str = "") -> float:
    """Send Solicitations from `ns` out of r0; the time they left."""
    t = time.time()
    ns.run(sys.executable, str(SOLICIT), "r0", str(family), str(count), *([how] if how else []))
    return t


def test_mrdisc_answers_solicitations_on_mrdisc_interfaces_only(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    """RFC 4286: a Solicitation on an mrdisc interface is answered at once; on
    another interface, malformed, or more than one a second, it is not."""
    topo = topology(2)
    x1, x2 = (Capture(topo, x) for x in topo.receivers)  # a2 announces, a3 does not
    conf = "phyint a2 mrdisc\nphyint a3 enable\n"
    d = ours(topo.router, conf, extra_args=("-l", "debug", "-m", "180"))
    netns.wait_until(
        lambda: len(x1.poll(0.2) and x1.adverts(4)) >= 3 and len(x1.adverts(6)) >= 3,
        timeout=10,
        what="the initial burst behind a2",
    )
    time.sleep(1.2)  # past the burst's rate limit; nothing periodic for 180 s
    for fam in (4, 6):
        x1.poll(0.1)
        sent = solicit(topo.receivers[0], fam)
        netns.wait_until(
            lambda fam=fam, sent=sent: bool(x1.poll(0.1) and x1.adverts(fam, after=sent)),
            timeout=3,
            what=f"an IPv{fam} answer behind a2",
        )
        (answer,) = x1.adverts(fam, after=sent)
        check_advert(answer, fam, 180)
        assert answer["t"] - sent < 1.0, answer["t"] - sent
        # on a3 (no mrdisc): nothing, whatever is asked
        quiet = solicit(topo.receivers[1], fam)
        x2.poll(1.0)
        assert x2.adverts(fam, after=quiet) == [], x2.packets
    time.sleep(1.1)
    # a flood of 50 at once: at most one answer a second; malformed: none
    sent = solicit(topo.receivers[0], 4, count=50)
    x1.poll(1.5)
    assert 1 <= len(x1.adverts(4, after=sent)) <= 2, x1.adverts(4, after=sent)
    time.sleep(1.1)
    for how in ("bad-checksum", "short"):
        sent = solicit(topo.receivers[0], 4, count=3, how=how)
        x1.poll(1.2)
        assert x1.adverts(4, after=sent) == [], how
    assert d.running()
    assert "not a valid Multicast Router Solicitation" in d.log()
    x1.close()
    x2.close()
