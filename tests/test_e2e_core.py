"""End to end, our daemon in network namespaces: static (S,G) routes, joins,
smcroutectl, privilege separation, exit codes and clean shutdown (issue 2).

Real multicast goes through the real kernel: S --a1-- R --a2-- X1, R --a3-- X2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import netns
import pytest
from netns import Daemon, Receiver, RouterTopology, send, wait_until

OURS = netns.OUR_DAEMON
CAP_NET_ADMIN = 1 << 12
CAP_NET_RAW = 1 << 13

pytestmark = pytest.mark.netns


def helper_pid(d: Daemon) -> int:
    kids = [p for p in netns.children(d.pid) if "janitor" not in netns.cmdline(p)]
    assert len(kids) == 1, f"expected one privileged helper, found {kids}"
    return kids[0]


def routes(
    topo: RouterTopology, family: int = 4
) -> set[tuple[str, str, str | None, tuple[str, ...]]]:
    return netns.read_routes(topo.router, family)


def roundtrip(
    topo: RouterTopology, family: int, group: str, *, ttl: int = 8, count: int = 5
) -> list[int]:
    """Send `count` packets to `group` from the sender; packets seen by each receiver."""
    rxs = [Receiver(x, "r0", [group], topology=topo).start() for x in topo.receivers]
    send(topo.sender, "s0", group, count=count, ttl=ttl)
    src = topo.source(family)
    return [rx.stop().count(src, group) for rx in rxs]


# ---------------------------------------------------------------------------
# Forwarding
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_sg_routes_reach_exactly_the_listed_oifs(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon], family: int
) -> None:
    topo = topology(2)
    src = topo.source(family)
    g_both, g_one = ("225.1.1.1", "225.1.1.2") if family == 4 else ("ff2e::11", "ff2e::12")
    conf = (
        f"mroute from a1 source {src} group {g_both} to a2 a3\n"
        f"mroute from a1 source {src} group {g_one} to a3\n"
    )
    ours(topo.router, conf)
    assert routes(topo, family) >= {
        (src, g_both, "a1", ("a2", "a3")),
        (src, g_one, "a1", ("a3",)),
    }
    assert roundtrip(topo, family, g_both) == [5, 5]
    assert roundtrip(topo, family, g_one) == [0, 5]
    # a group with no route goes nowhere
    other = "225.1.1.3" if family == 4 else "ff2e::13"
    assert roundtrip(topo, family, other) == [0, 0]


def test_ttl_threshold_scopes_forwarding(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    topo = topology(2)
    src = topo.source4
    conf = f"phyint a3 ttl-threshold 10\nmroute from a1 source {src} group 225.2.2.2 to a2 a3\n"
    ours(topo.router, conf)
    # The router decrements TTL before the threshold check: TTL 8 arrives as 7 (> 1, not > 10)
    assert roundtrip(topo, 4, "225.2.2.2", ttl=8) == [5, 0]
    assert roundtrip(topo, 4, "225.2.2.2", ttl=30) == [5, 5]


# ---------------------------------------------------------------------------
# Joins
# ---------------------------------------------------------------------------


def test_joins_asm_ssm_ipv4_ipv6_and_50_groups(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    topo = topology(1)
    lines = [f"mgroup from a2 group 225.7.{i // 10}.{i % 10 + 1}" for i in range(50)]
    lines += [f"mgroup from a1 source 10.0.1.{i} group 232.1.1.1" for i in range(2, 14)]
    lines += ["ssmgroup from a1 group 232.1.1.2 source 10.0.1.2"]
    lines += ["mgroup from a1 group ff2e::77", "mgroup from a1 source fd00:1::2 group ff3e::78"]
    lines += ["mgroup from a2 group 225.9.9.0/30"]
    ours(topo.router, "\n".join(lines) + "\n")
    igmp = {(m.ifname, m.group) for m in netns.read_memberships(topo.router, 4)}
    for i in range(50):
        assert ("a2", f"225.7.{i // 10}.{i % 10 + 1}") in igmp
    for i in range(4):
        assert ("a2", f"225.9.9.{i}") in igmp
    filters = {(f.ifname, f.group, f.source) for f in netns.read_source_filters(topo.router, 4)}
    for i in range(2, 14):
        assert ("a1", "232.1.1.1", f"10.0.1.{i}") in filters
    assert ("a1", "232.1.1.2", "10.0.1.2") in filters
    igmp6 = {(m.ifname, m.group) for m in netns.read_memberships(topo.router, 6)}
    assert ("a1", "ff2e::77") in igmp6
    filters6 = {(f.ifname, f.group, f.source) for f in netns.read_source_filters(topo.router, 6)}
    assert ("a1", "ff3e::78", "fd00:1::2") in filters6


# ---------------------------------------------------------------------------
# smcroutectl
# ---------------------------------------------------------------------------


def test_ctl_add_remove_join_leave(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    topo = topology(2)
    src = topo.source4
    d = ours(topo.router, "")
    d.ctl("add", "a1", src, "225.3.3.3", "a2")
    assert routes(topo) == {(src, "225.3.3.3", "a1", ("a2",))}
    d.ctl("add", "a1", src, "225.3.3.3", "a3")  # add an OIF to the existing route
    assert routes(topo) == {(src, "225.3.3.3", "a1", ("a2", "a3"))}
    assert roundtrip(topo, 4, "225.3.3.3") == [5, 5]
    d.ctl("rem", "a1", src, "225.3.3.3", "a2")  # remove one OIF
    assert routes(topo) == {(src, "225.3.3.3", "a1", ("a3",))}
    assert roundtrip(topo, 4, "225.3.3.3") == [0, 5]
    d.ctl("del", "a1", src, "225.3.3.3", "a3")  # no OIF left: a stop filter
    assert routes(topo) == {(src, "225.3.3.3", "a1", ())}
    assert roundtrip(topo, 4, "225.3.3.3") == [0, 0]
    d.ctl("remove", "a1", src, "225.3.3.3")  # the whole route
    assert routes(topo) == set()
    d.ctl("join", "a2", "225.6.6.6")
    assert ("a2", "225.6.6.6") in {(m.ifname, m.group) for m in netns.read_memberships(topo.router)}
    d.ctl("join", "a2", src, "232.6.6.6")
    assert ("a2", "232.6.6.6", src) in {
        (f.ifname, f.group, f.source) for f in netns.read_source_filters(topo.router)
    }
    d.ctl("leave", "a2", "225.6.6.6")
    d.ctl("leave", "a2", src, "232.6.6.6")
    assert ("a2", "225.6.6.6") not in {
        (m.ifname, m.group) for m in netns.read_memberships(topo.router)
    }
    assert not [f for f in netns.read_source_filters(topo.router) if f.group == "232.6.6.6"]


def test_ctl_errors_are_clear(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    topo = topology(1)
    d = ours(topo.router, "")
    cases = [
        (["add", "nosuch0", "10.0.0.1", "225.1.1.1", "a2"], "no such interface"),
        (["add", "a1", "10.0.0.1", "10.1.1.1", "a2"], "multicast"),
        (["remove", "a1", "10.0.0.1", "225.1.1.1"], "no route"),
        (["leave", "a1", "225.1.1.1"], "not a member"),
        (["shwo"], "did you mean"),
    ]
    for argv, needle in cases:
        r = d.ctl(*argv, check=False)
        assert r.returncode == 1, argv
        assert r.stderr.startswith("smcroutectl: "), r.stderr
        assert needle in r.stderr, (argv, r.stderr)
        assert "Traceback" not in r.stderr + r.stdout
    # batch: every line runs, failures reported with their line number
    r = d.ctl("-b", check=False, input="add a1 10.0.1.2 225.8.8.8 a2\nbogus\nshow\n")
    assert r.returncode == 1
    assert "line 2" in r.stderr
    assert "225.8.8.8" in r.stdout
    assert d.running()


@pytest.mark.parametrize("family", [4, 6])
def test_ctl_warnings_reach_stderr_and_the_log(
    family: int, topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    """What -F warns about in a file, smcroutectl add/join print on stderr
    (exit 0: the route or join is still made) and the daemon logs."""
    topo = topology(2)
    src = topo.source(family)
    v4 = family == 4
    g, g2 = ("225.4.4.4", "225.4.4.5") if v4 else ("ff2e::44", "ff2e::45")
    ll = "224.0.0.77" if v4 else "ff02::77"
    wide = "225.4.5.6/24" if v4 else "ff2e::4:5:6/112"
    few = "225.4.6.7/30" if v4 else "ff2e::4:6:7/126"
    d = ours(topo.router, "")
    cases = [
        (["add", "a1", src, g, "a1", "a2"], "outbound interface a1 is also the inbound interface"),
        (["add", "a1", src, ll, "a2"], "the kernel never forwards it"),
        (["add", "a1", wide, "a2"], "has host bits set; using"),
        (["add", "a3", src, g, "a2"], "is already routed from a1"),
        (["join", "a2", few], "has host bits set; using"),
        (["add", "a1", src, g2, "a2", "a2"], "outbound interface a2 is listed more than once"),
    ]
    for argv, needle in cases:
        r = d.ctl(*argv, check=False)
        assert r.returncode == 0, (argv, r.stderr)
        lines = r.stderr.splitlines()
        assert any(
            line.startswith("smcroutectl: warning: ") and needle in line for line in lines
        ), (argv, r.stderr)
        assert f"smcroutectl {argv[0]} {' '.join(argv[1:])}: " in d.log()
        assert needle in d.log()
    rows = routes(topo, family)
    assert (src, g, "a3", ("a2",)) in rows  # the later inbound interface wins
    assert (src, g2, "a1", ("a2",)) in rows
    assert (src, ll, "a1", ("a2",)) in rows  # installed as asked, uselessly
    # a batch names the line
    r = d.ctl("-b", check=False, input=f"add a1 {src} {g2} a3 a1\n")
    assert r.returncode == 0 and "line 1: warning: " in r.stderr, r.stderr
    # no warning, no noise
    r = d.ctl("add", "a1", src, g2, "a3", check=False)
    assert r.returncode == 0 and r.stderr == ""


@pytest.mark.parametrize("family", [4, 6])
def test_same_sg_on_two_inbound_interfaces_the_later_line_wins(
    family: int, topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    """Upstream issue #212: the kernel keeps one forwarding entry per (S,G)
    (MRT_ADD_MFC_PROXY accepts a second one, but only one ever forwards:
    doc/KERNEL.md, tests/test_kernel_facts.py).  So -F warns, the later line
    wins, and only its inbound interface is forwarded."""
    topo = topology(2)
    src = topo.source(family)
    g = "225.21.2.12" if family == 4 else "ff2e::2112"
    conf = "".join(f"mroute from {i} source {src} group {g} to a2\n" for i in ("a1", "a3"))
    d = ours(topo.router, conf)
    r = topo.router.run(OURS, "-F", d.conf, check=False)
    assert r.returncode == 0
    assert "is already routed from a1 on line 1; a source and group can have only one" in r.stderr
    assert routes(topo, family) == {(src, g, "a3", ("a2",))}
    rx = Receiver(topo.receivers[0], "r0", [g], topology=topo).start()
    flood = [sys.executable, str(Path(__file__).parent / "mcast_flood.py"), "flood",
             "--group", g, "--source", src, "--count", "5"]  # fmt: skip
    topo.sender.run(*flood, "--iface", "s0", "--first", "0")  # into a1: the wrong interface now
    topo.receivers[1].run(*flood, "--iface", "r0", "--first", "100")  # into a3: forwarded
    assert rx.stop().seqs(src, g) == [100, 101, 102, 103, 104]


def test_show_formats(topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]) -> None:
    topo = topology(2)
    src = topo.source4
    conf = (
        f"mroute from a1 group 225.3.3.0/24 to a2 a3\n"
        f"mroute from a1 source {src} group 225.4.4.4 to a2\n"
        f"mroute from a1 group ff2e::43 to a2\n"
        f"mgroup from a1 group 225.5.5.5\n"
        f"mgroup from a1 source 10.0.0.9 group 225.5.5.0/30\n"
    )
    d = ours(topo.router, conf)
    plain = d.ctl("-p", "show").stdout
    assert "\x1b" not in plain
    lines = plain.splitlines()
    assert lines[1] == "(*,G) Template Rules"
    assert "(*, 225.3.3.0/24)                          a1   a2 a3" in lines
    assert "(*, ff2e::43)                              a1   a2" in lines
    assert f"({src}, 225.4.4.4)".ljust(43) + "a1   a2" in lines
    assert lines.count("Kernel MFC Table") == 1
    # -t: data rows only
    rows = d.ctl("-t", "show").stdout.splitlines()
    assert all(r.startswith("(") for r in rows) and len(rows) == 4
    # -d: counters between IIF and OIFS
    detail = d.ctl("-pd", "show").stdout
    assert "PACKETS" in detail and "BYTES" in detail
    # -j: the doc/SPEC.md schema
    doc = json.loads(d.ctl("-j", "show").stdout)
    assert doc["routes"]["asm"][0] == {
        "source": None,
        "group": "225.3.3.0/24",
        "iif": "a1",
        "oifs": ["a2", "a3"],
    }
    assert doc["routes"]["ssm"] == [
        {"source": src, "group": "225.4.4.4", "iif": "a1", "oifs": ["a2"]}
    ]
    assert {"source": src, "group": "225.4.4.4", "iif": "a1", "oifs": ["a2"]} in doc["routes"][
        "kernel"
    ]
    doc = json.loads(d.ctl("-jd", "show").stdout)
    assert all(
        isinstance(r["packets"], int) and isinstance(r["bytes"], int)
        for r in doc["routes"]["kernel"]
    )
    groups = json.loads(d.ctl("-j", "show", "groups").stdout)
    assert {"source": None, "group": "225.5.5.5", "iif": "a1"} in groups["groups"]["conf"]
    assert {"source": "10.0.0.9", "group": "225.5.5.0/30", "iif": "a1"} in groups["groups"]["conf"]
    gplain = d.ctl("-p", "s", "g").stdout.splitlines()
    assert "(*, 225.5.5.5)                             a1" in gplain
    ifs = json.loads(d.ctl("-j", "show", "interfaces").stdout)["interfaces"]
    byname = {i["name"]: i for i in ifs}
    assert byname["lo"]["vif"] is None and byname["a1"]["vif"] == 0
    assert byname["a1"]["mif"] == 0
    iplain = d.ctl("-p", "show", "interfaces").stdout.splitlines()
    assert iplain[1] == " INDEX PHYINT  VIF  MIF"
    assert any(line.split()[1:] == ["lo", "N/A", "N/A"] for line in iplain[3:])
    assert d.ctl("show", "pending").stdout.strip() == "No pending routes or groups"
    assert json.loads(d.ctl("-j", "show", "pending").stdout) == {"pending": []}


# ---------------------------------------------------------------------------
# -F, exit codes, tables
# ---------------------------------------------------------------------------


def test_check_file_good_and_bad(tmp_path: Any) -> None:
    good = tmp_path / "good.conf"
    good.write_text(
        "mroute from eth0 source 10.0.0.1 group 225.1.1.1 to eth1\nphyint eth1 ttl-threshold 3\n"
    )
    r = subprocess.run([OURS, "-F", str(good)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text(
        "mroute from eth0 group 225.1.1.1 to eth1\n"
        "mroute from eth0 group 10.1.1.1 to eth1\n"
        "foo bar\n"
    )
    r = subprocess.run([OURS, "-F", str(bad)], capture_output=True, text=True)
    assert r.returncode == 78
    assert f"{bad}:2:" in r.stderr and f"{bad}:3:" in r.stderr
    assert f"{bad}:1:" not in r.stderr
    assert "Traceback" not in r.stderr


def test_usage_errors_exit_64() -> None:
    for argv in (["-x"], ["-c", "abc"], ["-m", "2"], ["-l", "loud"]):
        r = subprocess.run([OURS, *argv], capture_output=True, text=True)
        assert r.returncode == 64, (argv, r.stderr)
        assert r.stderr.startswith("smcrouted: ")
    assert subprocess.run([OURS, "-h"], capture_output=True).returncode == 0
    v = subprocess.run([OURS, "-v"], capture_output=True, text=True)
    assert v.returncode == 0 and "2.6" in v.stdout


def test_not_root_exits_77(tmp_path: Any) -> None:
    r = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            OURS,
            "-n",
            "-f",
            "/dev/null",
            "-u",
            str(tmp_path / "s.sock"),
            "-P",
            str(tmp_path / "p.pid"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 77, r.stderr
    assert "root" in r.stderr


def exit_of(d: Daemon) -> tuple[int, str]:
    """Start a daemon that is to fail: its exit status and its log."""
    d.start(wait=False)
    assert d.proc is not None
    try:
        return d.proc.wait(timeout=20), d.log()
    finally:
        d.stop()


def test_second_daemon_same_table_exits_69(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    topo = topology(1)
    src = topo.source4
    first = ours(topo.router, f"mroute from a1 source {src} group 225.1.1.1 to a2\n")
    code, log = exit_of(Daemon(topo.router, OURS, ""))
    assert code == 69, log
    assert "smcrouted" in log  # names the culprit
    assert first.running()
    assert roundtrip(topo, 4, "225.1.1.1") == [5]


def test_metrics_address_it_cannot_bind_exits_69_leaving_nothing(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    """--metrics on an address the host lacks: a clear error, exit 69, and the
    helper and janitor gone with it (the table is free, no socket or PID file)."""
    topo = topology(1)
    d = Daemon(topo.router, OURS, "", extra_args=["--metrics", "192.0.2.1:9108"])
    code, log = exit_of(d)
    assert code == 69, log
    assert "cannot serve metrics on 192.0.2.1:9108" in log, log
    assert "Traceback" not in log
    wait_until(lambda: not os.path.exists(d.sock), 5, what="the control socket removed")
    assert not os.path.exists(d.pidfile)
    src = topo.source4
    ours(topo.router, f"mroute from a1 source {src} group 225.1.1.1 to a2\n")
    assert roundtrip(topo, 4, "225.1.1.1") == [5]


def test_two_daemons_on_tables_1_and_2(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    topo = topology(2)
    src = topo.source4
    topo.router.ip("mrule", "add", "iif", "a1", "lookup", "1", "pref", "100")
    topo.router.ip("mrule", "add", "iif", "a2", "lookup", "2", "pref", "101")
    d1 = ours(
        topo.router,
        f"mroute from a1 source {src} group 225.1.1.1 to a3\n",
        extra_args=["-t", "1", "-l", "debug"],
    )
    d2 = ours(
        topo.router,
        "mroute from a2 source 10.0.2.2 group 225.2.2.2 to a3\n",
        extra_args=["-t", "2", "-l", "debug"],
    )
    mr = {(r.table, r.source, r.group) for r in netns.read_mroutes(topo.router, 4)}
    assert ("1", src, "225.1.1.1") in mr and ("2", "10.0.2.2", "225.2.2.2") in mr
    assert roundtrip(topo, 4, "225.1.1.1") == [0, 5]
    assert d1.running() and d2.running()


# ---------------------------------------------------------------------------
# Privilege separation and lifecycle
# ---------------------------------------------------------------------------


def test_capabilities_split(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    topo = topology(1)
    d = ours(topo.router, "")
    child = helper_pid(d)
    assert netns.cap_eff(d.pid) == 0
    assert netns.no_new_privs(d.pid)
    assert netns.proc_uid(d.pid) != 0
    assert netns.cap_eff(child) == CAP_NET_ADMIN | CAP_NET_RAW
    assert netns.no_new_privs(child)
    with open(f"/proc/{child}/cmdline", "rb") as f:
        assert b"smcrouted: privileged helper" in f.read()


def test_sigterm_leaves_nothing(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    topo = topology(2)
    src = topo.source4
    conf = (
        f"mroute from a1 source {src} group 225.1.1.1 to a2 a3\n"
        "mgroup from a2 group 225.9.9.9\n"
        "mroute from a1 source fd00:1::2 group ff2e::1 to a2\n"
    )
    d = ours(topo.router, conf)
    pids = d.pids()
    # main process, privileged helper, janitor (see privsep/janitor.py)
    assert len(pids) == 3 and os.path.exists(d.pidfile) and os.path.exists(d.sock)
    assert netns.read_vifs(topo.router, 4) and netns.read_mfc(topo.router, 4)
    assert d.stop() == 0
    assert netns.read_vifs(topo.router, 4) == [] and netns.read_mfc(topo.router, 4) == []
    assert netns.read_vifs(topo.router, 6) == [] and netns.read_mfc(topo.router, 6) == []
    assert ("a2", "225.9.9.9") not in {
        (m.ifname, m.group) for m in netns.read_memberships(topo.router)
    }
    assert not os.path.exists(d.pidfile) and not os.path.exists(d.sock)
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not os.path.exists(f"/proc/{pid}") or _zombie(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("victim", ["parent", "helper"])
def test_killing_either_process_ends_the_other(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon], victim: str
) -> None:
    topo = topology(1)
    d = ours(topo.router, f"mroute from a1 source {topo.source4} group 225.1.1.1 to a2\n")
    child = helper_pid(d)
    os.kill(d.pid if victim == "parent" else child, signal.SIGKILL)
    assert _wait_gone(child) and _wait_gone(d.pid)
    assert netns.read_mfc(topo.router, 4) == [] and netns.read_vifs(topo.router, 4) == []
    # After a SIGKILL nobody may be left to remove the socket file: it must be
    # dead (smcroutectl says so) and a new daemon must start over it.
    r = d.ctl("show", check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    again = ours(
        topo.router,
        f"mroute from a1 source {topo.source4} group 225.1.1.1 to a2\n",
        ident=d.ident,
        workdir=str(d.dir),
    )
    assert again.running() and netns.read_mfc(topo.router, 4)


def test_exit_timer_D(topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]) -> None:
    topo = topology(1)
    d = ours(topo.router, "", extra_args=["-D", "2"])
    assert d.proc is not None
    assert d.proc.wait(timeout=20) == 0
    assert netns.read_vifs(topo.router, 4) == []


def test_idle_client_does_not_block_others(
    topology: Callable[..., RouterTopology], ours: Callable[..., Daemon]
) -> None:
    import socket as s

    topo = topology(1)
    d = ours(topo.router, "")
    idle = s.socket(s.AF_UNIX, s.SOCK_STREAM)
    idle.connect(d.sock)
    try:
        big = s.socket(s.AF_UNIX, s.SOCK_STREAM)
        big.connect(d.sock)
        big.sendall(b"x" * 200_000)
        big.close()
        r = d.ctl("show", timeout=5)
        assert r.returncode == 0
    finally:
        idle.close()
    assert d.running()
