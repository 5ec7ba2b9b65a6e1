"""The privileged helper against the real kernel, each test in its own netns.

Every test runs one scenario of this file in a subprocess under
`unshare --net` (a fresh, anonymous network namespace that disappears with
the process, so nothing can leak into the host even when a test fails):
`python tests/test_privsep_kernel.py SCENARIO`.  A scenario builds veth
pairs, opens the mroute sockets, starts a real helper and asserts on what
the kernel shows in /proc/net.  Needs root.

`python tests/test_privsep_kernel.py bench` prints ADD_MFC throughput and
the helper's RSS (run it under `unshare --net`).
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
        reason="needs root, unshare and ip",
    ),
]

HERE = os.path.abspath(__file__)


def run_scenario(name: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, HERE, name],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"scenario {name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


# ============================================================================
# Scenario side (runs inside the fresh netns)
# ============================================================================

Z16, Z32 = bytes(16), bytes(32)


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True)


def setup_links(n: int = 3) -> dict[str, int]:
    sh("ip link set lo up")
    for i in range(1, n + 1):
        sh(f"ip link add a{i} type veth peer name b{i}")
        sh(f"ip link set a{i} up && ip link set b{i} up")
    return {f"a{i}": socket.if_nametoindex(f"a{i}") for i in range(1, n + 1)}


def proc(name: str) -> str:
    with open(f"/proc/net/{name}") as f:
        return f.read()


def rows(name: str) -> list[list[str]]:
    return [line.split() for line in proc(name).splitlines()[1:] if line.strip()]


def hex4(addr: str) -> str:
    """/proc/net/ip_mr_cache and igmp print addresses as host-order hex."""
    return f"{int.from_bytes(IPv4Address(addr).packed, sys.byteorder):08X}"


def hex6(addr: str) -> str:
    return IPv6Address(addr).packed.hex()


def igmp_groups(ifname: str) -> set[str]:
    out: set[str] = set()
    cur = None
    for line in proc("igmp").splitlines()[1:]:
        if not line.startswith("\t"):
            cur = line.split()[1]
        elif cur == ifname:
            out.add(line.split()[0])
    return out


class World:
    """mroute sockets + a real helper in this netns."""

    def __init__(self, v4: bool = True, v6: bool = True) -> None:
        from smcroute.privsep.client import start_helper
        from smcroute.privsep.mroute import open_mroute

        self.tmp = tempfile.mkdtemp(prefix="smcr-privsep-")
        atexit.register(shutil.rmtree, self.tmp, True)
        s4 = open_mroute(socket.AF_INET, 0) if v4 else None
        s6 = open_mroute(socket.AF_INET6, 0) if v6 else None
        self.lines: list[tuple[int, str]] = []
        self.h = start_helper(s4, s6, log=self._log)

    def _log(self, level: int, text: str) -> None:
        self.lines.append((level, text))

    def ex(self, *ops: object) -> list[int]:
        from smcroute.helper_wire import record

        return self.h.execute([record(op) for op in ops])  # type: ignore[arg-type]

    def sync(self) -> None:
        """A round trip (a reload hook without -e: ENOENT): earlier lines are in."""
        from smcroute.privsep import wire

        assert self.h.execute([wire.HookReload()]) == [errno.ENOENT]

    def logs(self) -> list[str]:
        self.h.read_events()
        out = [text for _level, text in self.lines]
        self.lines.clear()
        return out

    def raw(self, data: bytes, timeout: float = 5.0) -> tuple[object | None, list[str]]:
        """Send raw bytes; return (the REPLY if one comes, the log lines meanwhile)."""
        from smcroute.privsep import daemon_wire, wire

        self.h.sock.send(data)
        deadline = time.monotonic() + timeout
        logs: list[str] = []
        reply = None
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.h.sock], [], [], 0.3)
            if not r:
                if logs:
                    break
                continue
            msg = daemon_wire.decode(self.h.sock.recv(wire.MAX_MESSAGE))
            if isinstance(msg, daemon_wire.Log):
                logs.append(msg.text)
            elif isinstance(msg, daemon_wire.Reply):
                reply = msg
                break
        return reply, logs


def A(s: str) -> IPv4Address | IPv6Address:
    return ip_address(s)


def sc_ops() -> None:
    from smcroute.engine.ops import AddMfc, AddVif, DelMfc, DelVif, JoinGroup, LeaveGroup

    ifx = setup_links(3)
    w = World()
    a1, a2, a3 = ifx["a1"], ifx["a2"], ifx["a3"]
    # IPv4 VIFs and routes
    assert w.ex(
        AddVif(4, 0, a1, 1, "a1"), AddVif(4, 1, a2, 1, "a2"), AddVif(4, 2, a3, 1, "a3")
    ) == [0, 0, 0]
    vifs = {r[0]: r for r in rows("ip_mr_vif")}
    assert vifs["0"][1] == "a1" and vifs["1"][1] == "a2" and vifs["2"][1] == "a3"
    assert w.ex(
        AddMfc(4, A("10.0.0.1"), A("225.1.2.3"), 0, ((1, 1), (2, 64))),
        AddMfc(4, None, A("225.9.9.9"), 1, ((0, 1), (1, 1), (2, 1))),
    ) == [0, 0]
    cache = {(r[0], r[1]): r for r in rows("ip_mr_cache")}
    e = cache[(hex4("225.1.2.3"), hex4("10.0.0.1"))]
    assert e[2] == "0" and e[6:] == ["1:1", "2:64"], e
    e = cache[(hex4("225.9.9.9"), "00000000")]
    assert e[2] == "1" and e[6:] == ["0:1", "1:1", "2:1"], e
    # replacing an entry (different parent) is fine; deleting a missing one is ENOENT
    assert w.ex(AddMfc(4, A("10.0.0.1"), A("225.1.2.3"), 2, ((0, 1),))) == [0]
    assert cache_row4("225.1.2.3", "10.0.0.1")[2] == "2"
    assert w.ex(
        DelMfc(4, A("10.0.0.1"), A("225.1.2.3"), 2), DelMfc(4, A("10.0.0.7"), A("225.1.2.3"), 0)
    ) == [
        0,
        errno.ENOENT,
    ]
    assert cache_row4("225.1.2.3", "10.0.0.1") is None
    # IPv6
    assert w.ex(
        AddVif(6, 0, a1, 1, "a1"), AddVif(6, 1, a2, 1, "a2"), AddVif(6, 5, a3, 1, "a3")
    ) == [0, 0, 0]
    mifs = {r[0]: r[1] for r in rows("ip6_mr_vif")}
    assert mifs == {"0": "a1", "1": "a2", "5": "a3"}
    assert w.ex(AddMfc(6, A("fc00::1"), A("ff0e::1:2"), 0, ((1, 1), (5, 200)))) == [0]
    e6 = {(r[0], r[1]): r for r in rows("ip6_mr_cache")}
    key6 = (fmt6("ff0e::1:2"), fmt6("fc00::1"))
    assert e6[key6][2] == "0" and sorted(e6[key6][6:]) == ["1:1", "5:1"], e6
    assert w.ex(DelMfc(6, A("fc00::1"), A("ff0e::1:2"), 0)) == [0]
    assert not rows("ip6_mr_cache")
    # joins
    j = [
        JoinGroup(4, a1, A("225.1.1.1"), None, "a1"),
        JoinGroup(4, a1, A("232.1.1.1"), A("10.0.0.9"), "a1"),
        JoinGroup(6, a1, A("ff0e::5"), None, "a1"),
        JoinGroup(6, a1, A("ff3e::6"), A("fc00::9"), "a1"),
    ]
    assert w.ex(*j) == [0, 0, 0, 0]
    assert w.ex(j[0], j[1]) == [errno.EADDRINUSE, errno.EADDRINUSE]
    assert {hex4("225.1.1.1"), hex4("232.1.1.1")} <= igmp_groups("a1")
    mcf = rows("mcfilter")
    assert any(r[1] == "a1" and r[3] == "0x0a000009" and r[2] == "0xe8010101" for r in mcf), mcf
    assert any(r[1] == "a1" and r[2] == hex6("ff0e::5") for r in rows("igmp6"))
    assert any(
        r[1] == "a1" and r[2] == hex6("ff3e::6") and r[3] == hex6("fc00::9")
        for r in rows("mcfilter6")
    )
    leaves = [LeaveGroup(o.family, o.ifindex, o.group, o.source, o.ifname) for o in j]
    assert w.ex(*leaves) == [0, 0, 0, 0]
    assert w.ex(leaves[0]) == [errno.EADDRNOTAVAIL]
    assert hex4("225.1.1.1") not in igmp_groups("a1") and not rows("mcfilter")
    assert not any(r[2] in (hex6("ff0e::5"), hex6("ff3e::6")) for r in rows("igmp6"))
    assert not rows("mcfilter6")
    # VIF removal
    assert w.ex(DelVif(4, 2, a3, "a3"), DelVif(6, 5, a3, "a3")) == [0, 0]
    assert "2" not in {r[0] for r in rows("ip_mr_vif")} and "5" not in {
        r[0] for r in rows("ip6_mr_vif")
    }
    assert w.h.close() == 0
    # the kernel removed everything the helper's sockets installed
    assert not rows("ip_mr_vif") and not rows("ip_mr_cache")
    assert not rows("ip6_mr_vif") and not rows("ip6_mr_cache")


def fmt6(addr: str) -> str:
    return ":".join(IPv6Address(addr).exploded.split(":"))


def cache_row4(group: str, source: str) -> list[str] | None:
    for r in rows("ip_mr_cache"):
        if r[0] == hex4(group) and r[1] == hex4(source):
            return r
    return None


def sc_many_joins() -> None:
    from smcroute.engine.ops import JoinGroup, LeaveGroup

    ifx = setup_links(1)
    a1 = ifx["a1"]
    w = World()
    asm = [JoinGroup(4, a1, A(f"225.2.0.{i}"), None, "a1") for i in range(1, 51)]
    ssm = [JoinGroup(4, a1, A("232.7.7.7"), A(f"10.1.0.{i}"), "a1") for i in range(1, 16)]
    ssm6 = [JoinGroup(6, a1, A("ff3e::77"), A(f"fc00::{i:x}"), "a1") for i in range(1, 71)]
    assert w.ex(*asm, *ssm, *ssm6) == [0] * (50 + 15 + 70)
    groups = igmp_groups("a1")
    assert {hex4(f"225.2.0.{i}") for i in range(1, 51)} <= groups
    assert len([r for r in rows("mcfilter") if r[2] == "0xe8070707"]) == 15
    assert len([r for r in rows("mcfilter6") if r[2] == hex6("ff3e::77")]) == 70
    # more sockets than one (20 groups / 10 sources per IPv4 socket)
    nfd = len(os.listdir(f"/proc/{w.h.pid}/fd"))
    assert nfd >= 3 + 3 + 2 + 1, nfd
    leaves = [
        LeaveGroup(o.family, o.ifindex, o.group, o.source, o.ifname) for o in asm + ssm + ssm6
    ]
    assert w.ex(*leaves) == [0] * len(leaves)
    assert not any(g.startswith("E1") or g == "E8070707" for g in igmp_groups("a1") - {"E00000001"})
    assert not {hex4(f"225.2.0.{i}") for i in range(1, 51)} & igmp_groups("a1")
    assert not rows("mcfilter") and not rows("mcfilter6")
    # every join socket was closed again
    assert len(os.listdir(f"/proc/{w.h.pid}/fd")) < nfd
    assert w.h.close() == 0


def sc_refuse() -> None:
    import syslog

    from smcroute.privsep import daemon_wire, wire

    ifx = setup_links(2)
    a1, a2 = ifx["a1"], ifx["a2"]
    w = World()
    g4, s4 = b"\xe1\1\2\3", b"\x0a\0\0\1"
    good_vif = wire.AddVif(4, 0, 1, a1)
    assert w.h.execute([good_vif, wire.AddVif(4, 1, 1, a2)]) == [0, 0]
    ttls = bytes([0, 1]) + bytes(30)
    good_mfc = wire.AddMfc4(0, s4, g4, ttls)
    bad = [
        wire.AddVif(4, 32, 1, a1),
        wire.AddVif(4, 0, 1, 0),
        wire.AddVif(5, 0, 1, a1),
        wire.AddVif(6, 0, 1, 70000),  # mif6ctl holds 16 bits
        wire.AddMfc4(0, s4, b"\x0a\0\0\2", ttls),  # unicast group
        wire.AddMfc4(0, b"\xe1\0\0\1", g4, ttls),  # multicast source
        wire.AddMfc4(32, s4, g4, ttls),
        wire.DelMfc(4, 0, wire.pad16(s4), g4 + b"\1" + bytes(11)),  # IPv4 with bytes after it
        wire.AddMfc6(0, Z16, b"\xfe\x80" + bytes(14), 0),  # unicast group
        wire.Join(4, 0, Z16, wire.pad16(g4)),  # ifindex 0
        wire.Join(4, a1, Z16, wire.pad16(s4)),  # unicast group
        wire.Advertise(4, 3, a1),  # interval below 4 s
        wire.HookInstall(4, Z16, wire.pad16(g4)),  # no source
        wire.Rule(4, 0, Z16, 0, wire.pad16(s4), 32, Z32),  # unicast group
        wire.Rule(4, 32, Z16, 0, wire.pad16(g4), 32, Z32),  # VIF out of range
        wire.Rule(4, 0, Z16, 0, wire.pad16(g4), 8, Z32),  # host bits after the prefix
        wire.Rule(6, 0, Z16, 0, b"\xff" + bytes(15), 4, Z32),  # wider than ff00::/8
    ]
    res = w.h.execute([*bad, good_mfc])
    assert res == [errno.EINVAL] * len(bad) + [0], res
    logs = w.logs()
    assert sum("refused record" in line for line in logs) == len(bad), logs
    assert cache_row4("225.1.2.3", "10.0.0.1") is not None
    # an interface that vanished is a race, not an attack: an errno, no refusal
    gone = [wire.AddVif(4, 2, 1, 999999), wire.Join(4, 424242, Z16, wire.pad16(g4))]
    assert all(w.h.execute(gone)), "the kernel answers for a missing interface"
    assert not w.logs()
    # malformed, truncated, unknown messages: refused, logged, helper keeps serving
    ops_msg = daemon_wire.encode_ops(0xABC, [good_mfc, good_mfc])
    hdr = wire.HEADER.pack
    cases: list[tuple[bytes, int | None]] = [
        (ops_msg[:-1], 2),  # truncated but attributable: EPROTO for both
        (ops_msg + b"\0", 2),
        (ops_msg[:12] + b"\x63" + ops_msg[13:], 2),  # no such record kind
        (b"garbage", None),
        (b"\0" * 12, None),
        (b"", None),  # an empty message
        (hdr(wire.MAGIC, wire.VERSION, 0x55, 1, 0, 0), None),  # unknown type
        (hdr(wire.MAGIC, wire.VERSION, wire.T_OPS, 1, 0xFFFF, 0), None),  # huge count
        (hdr(wire.MAGIC, wire.VERSION, wire.T_OPS, 1, 1024, 0) + bytes(8), 1024),
        (wire.encode_log(3, "hello"), None),  # helper->daemon type sent to the helper
        (wire.encode_upcall(4, 1, 0, b"\x0a\0\0\1", b"\xe1\0\0\1"), None),
        (wire.encode_solicit(4, a1), None),
        (hdr(wire.MAGIC, 9, wire.T_OPS, 1, 1, 0) + bytes(8), None),  # version
        (b"x" * (wire.MAX_MESSAGE + 100), None),  # oversized
    ]
    for data, count in cases:
        reply, logs = w.raw(data)
        assert logs and "refused" in logs[0], (data[:20], logs)
        if count is None:
            assert reply is None, (data[:20], reply)
        else:
            assert isinstance(reply, daemon_wire.Reply) and reply.errnos == (errno.EPROTO,) * count
    # still serving; "refused" is a warning, never an error
    assert w.h.execute([wire.AddMfc4(0, b"\x0a\0\0\2", g4, ttls)]) == [0]
    assert cache_row4("225.1.2.3", "10.0.0.2") is not None
    assert all(level == syslog.LOG_WARNING for level, _ in w.lines), w.lines
    assert not w.h.closed
    assert w.h.close() == 0


def sc_log_order() -> None:
    """One ordered stream: a helper line logged while a batch runs comes
    between the daemon's lines before and after that batch."""
    from smcroute.privsep import wire

    ifx = setup_links(1)
    w = World()
    w.sync()  # the "ready" line is in by now
    w.lines.clear()
    w._log(6, "daemon: before")
    bad = wire.AddVif(4, 99, 1, ifx["a1"])  # refused by the helper
    assert w.h.execute([bad, wire.AddVif(4, 0, 1, ifx["a1"])]) == [errno.EINVAL, 0]
    w._log(6, "daemon: after")
    lines = [text for _level, text in w.lines]
    assert len(lines) == 3, lines
    assert lines[0] == "daemon: before" and lines[2] == "daemon: after", lines
    assert lines[1].startswith("refused record #0 (AddVif)"), lines
    assert w.h.close() == 0


def sc_fuzz() -> None:
    """A hostile daemon: thousands of random and mutated messages.  The helper
    answers every attributable one, never changes the kernel for a refused
    record, and keeps serving."""
    import random

    from smcroute.privsep import wire

    ifx = setup_links(1)
    w = World()
    assert w.h.execute([wire.AddVif(4, 0, 1, ifx["a1"])]) == [0]
    before = (proc("ip_mr_vif"), proc("ip_mr_cache"), proc("igmp"))
    rng = random.Random(4286)
    kinds = list(wire.KINDS.items())
    for i in range(3000):
        if i % 3 == 0:  # random bytes
            data = rng.randbytes(rng.randrange(0, 200))
        else:  # a well-formed header over mutated records
            recs = b""
            n = rng.randrange(1, 40)
            for _ in range(n):
                kind, (_cls, st) = rng.choice(kinds)
                recs += bytes([kind]) + rng.randbytes(st.size - 1)
            if i % 3 == 2 and recs:  # flip, cut or extend
                j = rng.randrange(len(recs))
                recs = recs[:j] + bytes([rng.randrange(256)]) + recs[j + rng.randrange(0, 3) :]
            data = wire.HEADER.pack(wire.MAGIC, wire.VERSION, wire.T_OPS, i, n, 0) + recs
        w.h.sock.send(data)
        if i % 50 == 0:
            w.lines.clear()
            w.h.read_events()
    # whatever was accepted must be harmless; nothing refused reached the kernel:
    # the sure check is that the helper still serves and the VIF is intact
    time.sleep(0.5)
    w.h.read_events()
    assert not w.h.closed
    assert w.h.execute([wire.AddMfc4(0, b"\x0a\0\0\1", b"\xe1\1\2\3", bytes(32))]) == [0]
    assert "a1" in proc("ip_mr_vif")
    assert before[0].splitlines()[0] == proc("ip_mr_vif").splitlines()[0]
    assert w.h.close() == 0


def sc_caps() -> None:
    w = World()
    w.sync()  # helper has dropped privileges by now
    with open(f"/proc/{w.h.pid}/status") as f:
        st = dict(line.split(":", 1) for line in f.read().splitlines())
    st = {k: v.strip() for k, v in st.items()}
    assert st["CapEff"] == "0000000000003000", st["CapEff"]
    assert st["CapPrm"] == "0000000000003000"
    # ambient (and so inheritable): how it got them through exec, and how the hook does
    assert st["CapInh"] == "0000000000003000"
    assert st["CapAmb"] == "0000000000003000"
    assert st["CapBnd"] == "0000000000003000"
    assert st["NoNewPrivs"] == "1"
    from smcroute.privsep import caps

    assert caps.check_child(w.h.pid, caps.HELPER_CAPS) == []  # what start_helper checked
    with pytest.raises(caps.PrivilegeError, match="not exactly 0x3000"):
        caps.check_child(os.getpid(), caps.HELPER_CAPS)  # this test: root, every capability
    assert st["Name"] == "smcroute-helper"
    rss_kb = int(st["VmRSS"].split()[0])
    assert rss_kb < 15 * 1024, rss_kb
    with open(f"/proc/{w.h.pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"smcrouted: privileged helper"
    # only stdio, the socketpair and the two mroute sockets are open
    fds = sorted(int(x) for x in os.listdir(f"/proc/{w.h.pid}/fd"))
    assert len(fds) == 6, fds
    # the helper imported nothing of the parser/engine world
    mods = subprocess.run(
        [sys.executable, "-c", CHILD_IMPORTS], capture_output=True, text=True, check=True
    ).stdout.split()
    for bad in ("lark", "click", "smcroute.engine", "smcroute.model", "smcroute.parser"):
        assert not any(m == bad or m.startswith(bad + ".") for m in mods), bad
    print(json.dumps({"rss_kb": rss_kb}))
    assert w.h.close() == 0


CHILD_IMPORTS = """
import sys
import smcroute.privsep.child
print(' '.join(sorted(sys.modules)))
"""


def sc_parent_close() -> None:
    from smcroute.engine.ops import AddMfc, AddVif, JoinGroup

    ifx = setup_links(2)
    w = World()
    a1, a2 = ifx["a1"], ifx["a2"]
    assert (
        w.ex(
            AddVif(4, 0, a1, 1, "a1"),
            AddVif(4, 1, a2, 1, "a2"),
            AddMfc(4, A("10.0.0.1"), A("225.1.2.3"), 0, ((1, 1),)),
            AddVif(6, 0, a1, 1, "a1"),
            AddVif(6, 1, a2, 1, "a2"),
            AddMfc(6, A("fc00::1"), A("ff0e::1"), 0, ((1, 1),)),
            JoinGroup(4, a1, A("225.5.5.5"), None, "a1"),
            JoinGroup(6, a1, A("ff0e::5"), None, "a1"),
        )
        == [0] * 8
    )
    w.sync()
    pid = w.h.pid
    w.h.sock.close()  # like the parent dying
    assert w.h.proc.wait(10) == 0
    assert not os.path.exists(f"/proc/{pid}")  # exited and reaped
    for t in ("ip_mr_vif", "ip_mr_cache", "ip6_mr_vif", "ip6_mr_cache", "mcfilter", "mcfilter6"):
        assert not rows(t), (t, proc(t))
    assert hex4("225.5.5.5") not in igmp_groups("a1")
    assert not any(r[2] == hex6("ff0e::5") for r in rows("igmp6"))


def sc_kill_child() -> None:
    from smcroute.privsep.client import HelperGone

    from smcroute.engine.ops import AddVif

    ifx = setup_links(1)
    w = World()
    assert w.ex(AddVif(4, 0, ifx["a1"], 1, "a1")) == [0]
    w.h.read_events()
    os.kill(w.h.pid, signal.SIGKILL)
    w.h.proc.wait(10)
    # the daemon's selector wakes up: the channel reads as EOF
    r, _, _ = select.select([w.h], [], [], 5)
    assert r
    try:
        w.h.read_events()
        raise AssertionError("read_events did not notice")
    except HelperGone as e:
        assert "exit" in str(e) or "gone" in str(e), e
    assert w.h.closed
    try:
        w.ex(AddVif(4, 1, ifx["a1"], 1, "a1"))
        raise AssertionError("execute did not notice")
    except HelperGone:
        pass
    # the kernel cleaned up when the killed helper's sockets closed
    assert not rows("ip_mr_vif")


def sc_sigterm() -> None:
    """The helper's PDEATHSIG is SIGTERM: it must exit 0 and clean up on it."""
    from smcroute.engine.ops import AddVif

    ifx = setup_links(1)
    w = World()
    assert w.ex(AddVif(4, 0, ifx["a1"], 1, "a1")) == [0]
    w.sync()
    os.kill(w.h.pid, signal.SIGTERM)
    assert w.h.proc.wait(10) == 0
    assert not rows("ip_mr_vif")


def sc_mroute_busy() -> None:
    from smcroute.privsep.mroute import MrouteError, open_mroute

    for fam in (socket.AF_INET, socket.AF_INET6):
        s = open_mroute(fam, 0)
        try:
            open_mroute(fam, 0)
            raise AssertionError("second MRT_INIT on the same table succeeded")
        except MrouteError as e:
            assert e.exit_code == 69, e
            assert "another multicast routing daemon" in e.message, e.message
        s1 = open_mroute(fam, 1)
        s2 = open_mroute(fam, 2)
        try:
            open_mroute(fam, 2)
            raise AssertionError("table 2 twice")
        except MrouteError as e:
            assert e.exit_code == 69 and "table 2" in e.message, e.message
        for x in (s, s1, s2):
            x.close()
        open_mroute(fam, 0).close()  # free again once closed
    try:
        open_mroute(socket.AF_INET, 1_000_000_000)
        raise AssertionError("bad table id accepted")
    except MrouteError as e:
        assert e.exit_code == 64


def sc_batches() -> None:
    """2500 routes go in five OPS messages, not 2500 round trips (64, 256,
    then MAX_BATCH records: the first ones small, so the helper starts at once)."""
    from smcroute.engine.ops import AddMfc, AddVif

    ifx = setup_links(2)
    w = World()
    assert w.ex(AddVif(4, 0, ifx["a1"], 1, "a1"), AddVif(4, 1, ifx["a2"], 1, "a2")) == [0, 0]
    seq0 = w.h._seq
    ops = [AddMfc(4, A("10.0.0.1"), IPv4Address(0xE1000000 + i), 0, ((1, 1),)) for i in range(2500)]
    ops.insert(1234, AddMfc(4, A("10.0.0.1"), A("10.9.9.9"), 0, ((1, 1),)))  # refused in place
    res = w.ex(*ops)
    assert w.h._seq - seq0 == 5
    assert res[1234] == errno.EINVAL and res.count(0) == 2500
    assert len(rows("ip_mr_cache")) == 2500
    assert w.h.close() == 0
    assert not rows("ip_mr_cache")


def sc_mroute_noperm() -> None:
    """Without CAP_NET_RAW in the netns: exit code 77 and a clear message."""
    code = (
        "import socket\n"
        "from smcroute.privsep.mroute import MrouteError, open_mroute\n"
        "try:\n"
        "    open_mroute(socket.AF_INET, 0)\n"
        "except MrouteError as e:\n"
        "    print(e.exit_code, e.message)\n"
    )
    out = subprocess.run(
        ["unshare", "--user", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("77 smcrouted must be started as root"), out


def sc_ipv4_only() -> None:
    """No IPv6 mroute socket: IPv6 ops answer EAFNOSUPPORT, IPv4 works."""
    from smcroute.engine.ops import AddVif

    ifx = setup_links(1)
    w = World(v6=False)
    assert w.ex(AddVif(4, 0, ifx["a1"], 1, "a1"), AddVif(6, 0, ifx["a1"], 1, "a1")) == [
        0,
        errno.EAFNOSUPPORT,
    ]
    assert w.h.close() == 0


def sc_mroute_culprit() -> None:
    """A running 'pimd' (a renamed sleeper holding the API) is named in the message."""
    from smcroute.privsep.mroute import MrouteError, open_mroute

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys, prctl\n"
            "from smcroute.privsep.mroute import open_mroute\n"
            "s = open_mroute(socket.AF_INET, 0); prctl.set_name('pimd')\n"
            "print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        try:
            open_mroute(socket.AF_INET, 0)
            raise AssertionError("not busy")
        except MrouteError as e:
            assert e.exit_code == 69
            assert f"pimd[{holder.pid}]" in e.message, e.message
    finally:
        holder.kill()
        holder.wait()


def sc_upcalls() -> None:
    from smcroute.privsep.daemon_wire import Upcall

    from smcroute.engine.ops import AddVif

    ifx = setup_links(2)
    sh("ip addr add 10.0.0.1/24 dev a1 && ip -6 addr add fc00::1/64 dev a1 nodad")
    w = World()
    a1, a2 = ifx["a1"], ifx["a2"]
    assert w.ex(AddVif(4, 0, a1, 1, "a1"), AddVif(4, 1, a2, 1, "a2")) == [0, 0]
    assert w.ex(AddVif(6, 0, a1, 1, "a1"), AddVif(6, 1, a2, 1, "a2")) == [0, 0]
    s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s4.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.0.0.1"))
    s4.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 5)
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s6.bind(("fc00::1", 0))
    s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, a1)
    s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 5)
    want4 = Upcall(4, 1, 0, A("10.0.0.1").packed, A("225.3.3.3").packed)
    want6 = Upcall(6, 1, 0, A("fc00::1").packed, A("ff0e::33").packed)
    got: set[Upcall] = set()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not {want4, want6} <= got:
        s4.sendto(b"x", ("225.3.3.3", 5000))
        s6.sendto(b"x", ("ff0e::33", 5000))
        r, _, _ = select.select([w.h], [], [], 0.5)
        if r:
            got |= {e for e in w.h.read_events() if isinstance(e, Upcall)}
    assert want4 in got and want6 in got, got
    # real IGMP/MLD from the wire never reaches the parent: only upcalls did
    assert all(e.kind in (1, 2) for e in got)
    # a rule table: the helper installs new sources of 225.4.4.0/24 itself and
    # reports "installed by rule 1 of epoch 9"; a budget of 1 ends it
    from smcroute.privsep import wire

    grp4 = wire.pad16(A("225.4.4.0").packed)
    table = [
        wire.Rules(9, 1),
        wire.Rule(4, 1, Z16, 0, grp4, 24, Z32),  # another inbound VIF: no match
        wire.Rule(4, 0, Z16, 0, grp4, 24, bytes([0, 1]) + bytes(30)),
        wire.Rule(6, 0, Z16, 0, b"\xff" + bytes(15), 8, Z32),
    ]
    assert w.h.execute(table) == [0] * 4
    want = Upcall(4, wire.INSTALLED, 0, A("10.0.0.1").packed, A("225.4.4.4").packed, 9 << 16 | 1)
    deadline = time.monotonic() + 15
    got = set()
    while time.monotonic() < deadline and want not in got:
        s4.sendto(b"x", ("225.4.4.4", 5000))
        if select.select([w.h], [], [], 0.5)[0]:
            got |= {e for e in w.h.read_events() if isinstance(e, Upcall)}
    assert want in got, got
    assert (cache_row4("225.4.4.4", "10.0.0.1") or [])[2] == "0"  # Iif: VIF 0
    s4.sendto(b"x", ("225.4.4.5", 5000))  # the budget is spent: a plain NOCACHE
    nocache = Upcall(4, 1, 0, A("10.0.0.1").packed, A("225.4.4.5").packed)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and nocache not in got:
        if select.select([w.h], [], [], 0.5)[0]:
            got |= {e for e in w.h.read_events() if isinstance(e, Upcall)}
        else:
            s4.sendto(b"x", ("225.4.4.5", 5000))
    assert nocache in got and (cache_row4("225.4.4.5", "10.0.0.1") or ["", "", ""])[2] != "0"
    # more than MAX_RULES rules: the rest is refused with ENOSPC
    many = [wire.Rules(10, 5)] + [table[1]] * (wire.MAX_RULES + 1)
    assert w.h.execute(many)[-2:] == [0, errno.ENOSPC]
    assert w.h.close() == 0


def sc_parent_caps() -> None:
    """drop_parent_privileges in a subprocess: CapEff 0 afterwards."""
    code = (
        "from smcroute.identity import choose\n"
        "from smcroute.identity import drop_parent_privileges as d\n"
        "who = choose(None, None, 'caps-test')\n"
        "print(d(who.uid, who.gid, who.name))\n"
        "print(open('/proc/self/status').read())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("running as "), out
    st = {
        k: v.strip()
        for k, v in (line.split(":", 1) for line in out.splitlines()[1:] if ":" in line)
    }
    assert st["CapEff"] == st["CapPrm"] == st["CapBnd"] == st["CapAmb"] == "0000000000000000", st
    assert st["NoNewPrivs"] == "1"
    assert st["Uid"].split()[0] != "0"
    # a user namespace mapping only root: no user to switch to
    out = subprocess.run(
        ["unshare", "--user", "--map-root-user", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("user switch impossible"), out
    st = {
        k: v.strip()
        for k, v in (line.split(":", 1) for line in out.splitlines()[1:] if ":" in line)
    }
    assert st["CapEff"] == st["CapPrm"] == st["CapBnd"] == "0000000000000000", st
    assert st["NoNewPrivs"] == "1"


def sc_bench() -> None:
    """ADD_MFC/DEL_MFC throughput through the helper, and its RSS."""
    from smcroute.engine.ops import AddMfc, AddVif, DelMfc

    n = int(os.environ.get("BENCH_N", "100000"))
    ifx = setup_links(3)
    w = World()
    a1, a2, a3 = ifx["a1"], ifx["a2"], ifx["a3"]
    assert (
        w.ex(AddVif(4, 0, a1, 1, "a1"), AddVif(4, 1, a2, 1, "a2"), AddVif(4, 2, a3, 1, "a3"))
        == [0] * 3
    )
    assert (
        w.ex(AddVif(6, 0, a1, 1, "a1"), AddVif(6, 1, a2, 1, "a2"), AddVif(6, 2, a3, 1, "a3"))
        == [0] * 3
    )
    res = {}
    for fam in (4, 6):
        if fam == 4:
            ops = [
                AddMfc(
                    4,
                    IPv4Address(0x0A000000 + i // 250 + 1),
                    IPv4Address(0xE1000000 + i),
                    0,
                    ((1, 1), (2, 1)),
                )
                for i in range(n)
            ]
        else:
            ops = [
                AddMfc(
                    6,
                    IPv6Address(0xFC00 << 112 | (i // 250 + 1)),
                    IPv6Address(0xFF0E << 112 | i),
                    0,
                    ((1, 1), (2, 1)),
                )
                for i in range(n)
            ]
        t0 = time.perf_counter()
        r = w.ex(*ops)
        t1 = time.perf_counter()
        assert r == [0] * n, sorted(set(r))
        dels = [DelMfc(o.family, o.source, o.group, o.parent) for o in ops]
        t2 = time.perf_counter()
        r = w.ex(*dels)
        t3 = time.perf_counter()
        assert r == [0] * n
        res[f"ipv{fam}_add_mfc_ops_per_s"] = round(n / (t1 - t0))
        res[f"ipv{fam}_del_mfc_ops_per_s"] = round(n / (t3 - t2))
    with open(f"/proc/{w.h.pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                res[line.split(":")[0]] = line.split(":")[1].strip()
    res["n"] = n
    print(json.dumps(res))
    w.h.close()


SCENARIOS: dict[str, Callable[[], None]] = {
    name[3:]: fn for name, fn in list(globals().items()) if name.startswith("sc_") and callable(fn)
}

# ============================================================================
# pytest side
# ============================================================================


def test_ops_visible_in_proc() -> None:
    run_scenario("ops")


def test_many_joins_asm_and_ssm() -> None:
    run_scenario("many_joins")


def test_helper_refuses_bad_input_and_keeps_serving() -> None:
    run_scenario("refuse")


def test_one_ordered_log_stream() -> None:
    run_scenario("log_order")


def test_helper_survives_a_hostile_daemon() -> None:
    run_scenario("fuzz")


def test_helper_capabilities_and_rss() -> None:
    run_scenario("caps")


def test_parent_close_makes_helper_exit_and_kernel_clean() -> None:
    run_scenario("parent_close")


def test_killed_helper_is_noticed() -> None:
    run_scenario("kill_child")


def test_sigterm_cleans_up() -> None:
    run_scenario("sigterm")


def test_open_mroute_busy_and_tables() -> None:
    run_scenario("mroute_busy")


def test_batches() -> None:
    run_scenario("batches")


def test_open_mroute_without_privileges() -> None:
    run_scenario("mroute_noperm")


def test_ipv4_only_helper() -> None:
    run_scenario("ipv4_only")


def test_open_mroute_names_culprit() -> None:
    run_scenario("mroute_culprit")


def test_upcalls_forwarded() -> None:
    run_scenario("upcalls")


def test_drop_parent_privileges() -> None:
    run_scenario("parent_caps")


if __name__ == "__main__":
    SCENARIOS[sys.argv[1]]()
