"""The `-e` hook runs in the privileged helper: the HOOK op, as a hostile parent
might send it, and what the started command gets."""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from ipaddress import ip_address
from pathlib import Path

import pytest
from smcroute.privsep import child, proto
from smcroute.privsep.client import op_record

from smcroute.engine.ops import RunHook

Z16, Z32 = bytes(16), bytes(32)


def helper(hook: str) -> child.Child:
    ipc, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    c = child.Child(ipc, None, None, "", "", 7, hook)
    c.peer = peer  # type: ignore[attr-defined]  # keep the other end open
    return c


def rec(action: int = proto.HOOK_INSTALL, fam: int = 4, **kw: object) -> proto.OpRecord:
    src = b"\x0a\x00\x00\x01" + bytes(12) if fam == 4 else b"\x20\x01" + bytes(13) + b"\x01"
    grp = b"\xe1\x01\x01\x01" + bytes(12) if fam == 4 else b"\xff\x2e" + bytes(13) + b"\x01"
    if action == proto.HOOK_RELOAD:
        src = grp = Z16
    fields = dict(kind=proto.HOOK, family=fam, vif=0, ifindex=0, threshold=action,
                  source=src, group=grp, ttls=Z32)  # fmt: skip
    fields.update(kw)
    return proto.OpRecord(**fields)  # type: ignore[arg-type]


@pytest.fixture
def script(tmp_path: Path) -> Path:
    out = tmp_path / "calls"
    s = tmp_path / "hook.sh"
    s.write_text(f'#!/bin/sh\necho "$1 $source $group $NOTIFY_SOCKET" >> {out}\n')
    s.chmod(stat.S_IRWXU)
    return s


def wait_lines(path: Path, n: int) -> list[str]:
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if path.exists() and len(lines := path.read_text().splitlines()) >= n:
            return lines
        time.sleep(0.02)
    raise AssertionError(f"hook did not write {n} lines")


def test_op_record_round_trip() -> None:
    op = RunHook("install", 6, ip_address("2001:db8::1"), ip_address("ff2e::1"))
    r = op_record(op)
    assert proto.decode(proto.encode_ops(1, [r])) == proto.Ops(1, (r,))
    assert r.threshold == proto.HOOK_INSTALL and r.family == 6
    assert op_record(RunHook("reload")).source == Z16


def test_hook_gets_action_and_addresses_not_notify_socket(
    script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    h = helper(str(script))
    assert h.execute((rec(proto.HOOK_RELOAD), rec(), rec(fam=6))) == [0, 0, 0]
    lines = [ln.strip() for ln in wait_lines(script.parent / "calls", 3)]
    assert sorted(lines) == sorted(
        ["reload", "install 10.0.0.1 225.1.1.1", "install 2001::1 ff2e::1"]
    )
    end = time.monotonic() + 10
    while h.hook_procs and time.monotonic() < end:
        h.reap_hooks()
        time.sleep(0.02)
    assert h.hook_procs == {}


@pytest.mark.parametrize(
    "bad",
    [
        {"threshold": 0},
        {"threshold": 3},
        {"vif": 1},
        {"ifindex": 1},
        {"ttls": b"\x01" + bytes(31)},
        {"group": b"\x0a" + bytes(15)},  # not multicast
        {"source": b"\xe0" + bytes(15)},  # multicast source
        {"source": Z16},  # install without a source
        {"family": 5},
    ],
)
def test_malformed_hook_ops_are_refused(script: Path, bad: dict[str, object]) -> None:
    h = helper(str(script))
    assert h.execute((rec(**bad),)) == [errno.EINVAL]
    assert h.hook_procs == {}
    assert not (script.parent / "calls").exists()


def test_reload_with_addresses_is_refused(script: Path) -> None:
    h = helper(str(script))
    bad = rec(proto.HOOK_RELOAD, source=b"\x0a" + bytes(15))
    assert h.execute((bad,)) == [errno.EINVAL]


def test_no_hook_configured_and_too_many_running(tmp_path: Path) -> None:
    assert helper("").execute((rec(),)) == [errno.ENOENT]
    slow = tmp_path / "slow.sh"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(stat.S_IRWXU)
    h = helper(str(slow))
    try:
        results = h.execute(tuple(rec() for _ in range(child.MAX_HOOKS + 2)))
        assert results == [0] * child.MAX_HOOKS + [errno.EAGAIN] * 2
    finally:
        for pid in h.hook_procs:
            os.killpg(pid, 9)
        for pid in list(h.hook_procs):
            os.waitpid(pid, 0)


def test_missing_hook_is_an_error_not_a_crash(tmp_path: Path) -> None:
    h = helper(str(tmp_path / "nope"))
    assert h.execute((rec(),)) == [errno.ENOENT]
