"""Kernel facts doc/KERNEL.md relies on, re-verified with real packets (needs root).

No daemon here: ``mroute_probe.py`` holds the multicast routing API in the
router namespace of the standard topology (S --(s0|a1)-- R --(a2|r0)-- X1,
R --(a3|r0)-- X2) and reports the upcalls and per-VIF counters, while
``mcast_flood.py`` sends real multicast from S and X2.

- PIM mode (MRT_PIM/MRT6_PIM = 1): the kernel reports traffic that arrives
  on the wrong interface for an entry with no outbound interfaces (a stop
  filter) and for one whose outbound interfaces do not include the arrival
  interface, at most once per entry per 3 s; without PIM mode it does not.
  Forwarding and NOCACHE upcalls are the same either way.
- MRT_ADD_MFC_PROXY: whether two entries for one (S,G) with different
  inbound interfaces coexist and both forward.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from netns import RouterTopology, read_routes

HERE = Path(__file__).resolve().parent
PROBE = HERE / "mroute_probe.py"
FLOOD = HERE / "mcast_flood.py"
FAMILIES = pytest.mark.parametrize("fam", [4, 6], ids=["ipv4", "ipv6"])
NOCACHE, WRONGVIF = 1, 2

pytestmark = pytest.mark.netns


def grp(fam: int, n: int) -> str:
    return f"225.9.9.{n}" if fam == 4 else f"ff2e::99:{n}"


def src(fam: int, n: int) -> str:
    return f"10.0.1.{n}" if fam == 4 else f"fd00:1::{n:x}"


class Probe:
    def __init__(self, proc: subprocess.Popen[str], ready: dict[str, Any]) -> None:
        self.proc = proc
        self.ready = ready
        self.result: dict[str, Any] = {}

    def finish(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        line = self.proc.stdout.readline()
        self.proc.wait(timeout=10)
        self.result = json.loads(line)
        return self.result

    def upcalls(self, kind: int) -> list[list[Any]]:
        return [u for u in self.result["upcalls"] if u[0] == kind]


@contextmanager
def probe(topo: RouterTopology, fam: int, *args: str) -> Iterator[Probe]:
    argv = [sys.executable, str(PROBE), "--family", str(fam)]
    argv += ["--vif", "a1", "--vif", "a2", "--vif", "a3", *args]
    proc = topo.track(
        topo.router.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        pytest.fail(f"mroute_probe.py failed to start (exit {proc.returncode})")
    p = Probe(proc, json.loads(line))
    try:
        yield p
    finally:
        if proc.poll() is None and not p.result:
            p.finish()


def flood(topo: RouterTopology, who: int, group: str, source: str, count: int, rate: float = 0):
    """Send from S (who=0, into a1) or X2 (who=2, into a3)."""
    ns, iface = (topo.sender, "s0") if who == 0 else (topo.receivers[who - 1], "r0")
    ns.run(
        sys.executable, str(FLOOD), "flood", "--iface", iface, "--group", group,
        "--source", source, "--count", str(count), "--rate", str(rate), "--ttl", "8",
    )  # fmt: skip


@FAMILIES
@pytest.mark.parametrize("pim", [False, True], ids=["assert", "pim"])
def test_pim_mode_reports_wrong_interface_for_stop_filters(
    fam: int, pim: bool, router_topo: RouterTopology
) -> None:
    topo = router_topo
    g, s = grp(fam, 1), src(fam, 0x51)
    fwd_g = grp(fam, 2)
    extra = ["--pim"] if pim else []
    with probe(topo, fam, *extra, "--mfc", f"{s},{g},a1", "--mfc", f"{s},{fwd_g},a1,a2") as p:
        assert p.ready["pim"] == (0 if pim else -1)
        assert p.ready["mfc"] == [0, 0]
        # 7 s of traffic for the stop filter into a3 (the wrong interface),
        # 20 packets for the forwarding entry into a1 and 5 from X2 into a3,
        # and one packet of an unknown (S,G).
        flood(topo, 0, fwd_g, s, 20)
        flood(topo, 2, fwd_g, s, 5)
        flood(topo, 0, grp(fam, 3), s, 1)
        t0 = time.monotonic()
        flood(topo, 2, g, s, 36, rate=5)
        t1 = time.monotonic()
        r = p.finish()
    stop_reports = [u for u in p.upcalls(WRONGVIF) if u[3] == g]
    fwd_reports = [u for u in p.upcalls(WRONGVIF) if u[3] == fwd_g]
    nocache = [u for u in p.upcalls(NOCACHE) if u[3] == grp(fam, 3)]
    print(
        f"IPv{fam} pim={pim}: vifs {r['vifs']}, stop-filter reports {len(stop_reports)} "
        f"in {t1 - t0:.1f} s, forwarding-entry reports {len(fwd_reports)}, "
        f"NOCACHE {len(nocache)}"
    )
    assert len(nocache) == 1 and nocache[0][1] == 0  # NOCACHE: the same either way
    # Forwarding is the same either way: 20 in on a1, 20 out on a2, nothing on a3.
    assert r["vifs"]["a2"][1] == 20
    assert r["vifs"]["a3"][1] == 0
    if not pim:
        assert stop_reports == [] and fwd_reports == []
        return
    assert all(u[1] == 2 and u[2] == s for u in stop_reports + fwd_reports)
    assert len(fwd_reports) == 1  # 5 back-to-back packets: one report (rate limit)
    # 36 packets over ~7 s: one report per 3 s per entry
    span = t1 - t0
    assert 2 <= len(stop_reports) <= 1 + int(span / 3) + 1, (stop_reports, span)
    gaps = [b[4] - a[4] for a, b in itertools.pairwise(stop_reports)]
    assert all(gap >= 2.9 for gap in gaps), gaps


@FAMILIES
def test_mfc_proxy_same_sg_on_two_inbound_interfaces(fam: int, router_topo: RouterTopology) -> None:
    """MRT_ADD_MFC_PROXY keys entries by their parent VIF too: two entries for
    one (S,G) with inbound a1 and a3 are both accepted and both listed, but
    the forwarding path looks the (S,G) up without the arrival interface and
    takes the first entry, so traffic on the other interface is dropped as
    wrong-interface: only one of them ever forwards."""
    topo = router_topo
    g, s = grp(fam, 7), src(fam, 0x77)
    with probe(topo, fam, "--proxy", "--mfc", f"{s},{g},a1,a2", "--mfc", f"{s},{g},a3,a2") as p:
        assert p.ready["mfc"] == [0, 0]  # both accepted
        rows = [r for r in read_routes(topo.router, fam) if r[1] == g]
        assert sorted(r[2] for r in rows) == ["a1", "a3"]  # both listed
        flood(topo, 0, g, s, 10)  # into a1
        flood(topo, 2, g, s, 10)  # into a3
        r = p.finish()
    print(f"IPv{fam} MFC_PROXY: entries {sorted(r[2] for r in rows)}, vifs {r['vifs']}")
    forwarded = r["vifs"]["a2"][1]
    assert forwarded == 10, r  # not 20: one inbound interface forwards, the other does not
