"""End to end: races with the system are not errors (issue: honest logs).

An interface named in the configuration is deleted and re-created 500 times
as fast as `ip -batch` goes: ADD_VIF for an ifindex that has just gone, a
join on an interface that vanished.  The daemon logs such a race at info
level with the interface's name, never at error level, and converges.
"""

from __future__ import annotations

from collections.abc import Callable

import netns
import pytest
from netns import Daemon, RouterTopology

pytestmark = pytest.mark.netns
# delete d1 (and its peer), then re-create both and bring them up
flap = ["link del d1", "link add d1 type veth peer name d1p", "link set d1p up", "link set d1 up"]


def test_500_flaps_leave_no_error_line_and_converge(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    topo = topology(1)
    r = topo.router
    r.ip_batch(flap[1:])
    conf = (
        "phyint d1 enable mrdisc\n"
        "mgroup from d1 group 225.3.3.3\n"
        f"mroute from a1 source {topo.source4} group 225.1.1.1 to a2 d1\n"
    )
    # -l err: every line in the log is an error
    d = ours(r, conf, extra_args=("-l", "err"))
    for _ in range(5):
        r.ip_batch(flap * 100)
    # /proc/net/igmp prints a group as a host-order number: 225.3.3.3 is 030303E1
    netns.wait_until(
        lambda: " d1 " in r.read_proc("ip_mr_vif") and "030303E1" in r.read_proc("igmp"),
        timeout=10,
        what="d1's VIF and membership back",
    )
    assert d.running()
    assert d.log().strip() == "", d.log()


def test_a_vanished_interface_is_named_once_at_info(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    topo = topology(1)
    r = topo.router
    r.ip_batch(flap[1:])
    d = ours(r, "phyint d1 enable\nmgroup from d1 group 225.3.3.3\n", extra_args=("-l", "info"))
    for _ in range(5):
        r.ip_batch(flap * 100)
    netns.wait_until(
        lambda: "030303E1" in r.read_proc("igmp"), timeout=10, what="d1's membership back"
    )
    log = d.log()
    assert "refused" not in log, log
    for line in log.splitlines():
        if "vanished meanwhile" in line:
            assert line.split(": ", 1)[1].startswith("d1 vanished meanwhile"), line
