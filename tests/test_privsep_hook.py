"""The `-e` hook runs in the privileged helper: the HOOK records, as a hostile
daemon might send them, and what the started command gets."""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from ipaddress import ip_address
from pathlib import Path

import pytest
from smcroute.privsep import child, daemon_wire, hook, wire

from smcroute.engine.ops import RunHook
from smcroute.helper_wire import record

Z16 = bytes(16)
S4, G4 = wire.pad16(b"\x0a\x00\x00\x01"), wire.pad16(b"\xe1\x01\x01\x01")
S6, G6 = b"\x20\x01" + bytes(13) + b"\x01", b"\xff\x2e" + bytes(13) + b"\x01"


def helper(command: str) -> child.Helper:
    ipc, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    h = child.Helper(ipc, {4: None, 6: None}, command, {})
    h.peer = peer  # type: ignore[attr-defined]  # keep the other end open
    return h


def run(h: child.Helper, *records: wire.Record) -> list[int]:
    return [h.execute(i, r) for i, r in enumerate(records)]


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


def test_records_from_run_hook() -> None:
    op = RunHook("install", 6, ip_address("2001:db8::1"), ip_address("ff2e::1"))
    r = record(op)
    assert r == wire.HookInstall(6, ip_address("2001:db8::1").packed, ip_address("ff2e::1").packed)
    assert wire.decode_request(daemon_wire.encode_ops(1, [r])) == wire.Ops(1, (r,))
    assert record(RunHook("reload")) == wire.HookReload()


def test_hook_gets_action_and_addresses_not_notify_socket(
    script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    h = helper(str(script))
    installs = (wire.HookInstall(4, S4, G4), wire.HookInstall(6, S6, G6))
    assert run(h, wire.HookReload(), *installs) == [0, 0, 0]
    lines = [ln.strip() for ln in wait_lines(script.parent / "calls", 3)]
    assert sorted(lines) == sorted(
        ["reload", "install 10.0.0.1 225.1.1.1", "install 2001::1 ff2e::1"]
    )
    end = time.monotonic() + 10
    while h.hooks.running and time.monotonic() < end:
        h.hooks.reap()
        time.sleep(0.02)
    assert h.hooks.running == {}


@pytest.mark.parametrize(
    "bad",
    [
        wire.HookInstall(4, S4, wire.pad16(b"\x0a\0\0\1")),  # not multicast
        wire.HookInstall(4, wire.pad16(b"\xe0\0\0\1"), G4),  # multicast source
        wire.HookInstall(4, Z16, G4),  # install without a source
        wire.HookInstall(4, S4[:4] + b"\1" + bytes(11), G4),  # bytes after an IPv4 address
        wire.HookInstall(5, S4, G4),
    ],
)
def test_malformed_hook_records_are_refused(script: Path, bad: wire.Record) -> None:
    h = helper(str(script))
    assert run(h, bad) == [errno.EINVAL]
    assert h.hooks.running == {}
    assert not (script.parent / "calls").exists()


def test_no_hook_configured_and_too_many_running(tmp_path: Path) -> None:
    assert run(helper(""), wire.HookReload()) == [errno.ENOENT]
    slow = tmp_path / "slow.sh"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(stat.S_IRWXU)
    h = helper(str(slow))
    try:
        results = run(h, *[wire.HookInstall(4, S4, G4)] * (hook.MAX_HOOKS + 2))
        assert results == [0] * hook.MAX_HOOKS + [errno.EAGAIN] * 2
    finally:
        for pid in h.hooks.running:
            os.killpg(pid, 9)
        for pid in list(h.hooks.running):
            os.waitpid(pid, 0)


def test_missing_hook_is_an_error_not_a_crash(tmp_path: Path) -> None:
    h = helper(str(tmp_path / "nope"))
    assert run(h, wire.HookReload()) == [errno.ENOENT]
