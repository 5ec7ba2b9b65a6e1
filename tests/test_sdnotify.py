"""sd_notify client: datagrams reach a fake NOTIFY_SOCKET in order and intact."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest

from smcroute import sdnotify


def _receive_all(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    while True:
        try:
            out.append(sock.recv(65536).decode())
        except BlockingIOError:
            return out


@pytest.fixture
def path_socket(tmp_path, monkeypatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


@pytest.fixture
def abstract_socket(monkeypatch) -> Iterator[socket.socket]:
    name = f"smcroute-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def test_notify_lines_arrive_joined_by_newlines(path_socket):
    assert sdnotify.notify("READY=1", "STATUS=3 routes installed") is True
    assert _receive_all(path_socket) == ["READY=1\nSTATUS=3 routes installed"]


def test_daemon_lifecycle_in_order_on_path_socket(path_socket):
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.ready("Ready, 2 routes")
    assert sdnotify.reloading("Reloading /etc/smcroute.conf")
    assert sdnotify.ready()
    assert sdnotify.status("2 routes, 1 group")
    assert sdnotify.stopping()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    got = _receive_all(path_socket)
    assert len(got) == 5
    assert got[0] == "READY=1\nSTATUS=Ready, 2 routes"
    reload_lines = got[1].split("\n")
    assert reload_lines[0] == "RELOADING=1"
    assert reload_lines[1].startswith("MONOTONIC_USEC=")
    usec = int(reload_lines[1].removeprefix("MONOTONIC_USEC="))
    assert before <= usec <= after
    assert reload_lines[2:] == ["STATUS=Reloading /etc/smcroute.conf"]
    assert got[2] == "READY=1"
    assert got[3] == "STATUS=2 routes, 1 group"
    assert got[4] == "STOPPING=1"


def test_abstract_namespace_socket(abstract_socket):
    assert sdnotify.ready("up")
    assert sdnotify.stopping()
    assert _receive_all(abstract_socket) == ["READY=1\nSTATUS=up", "STOPPING=1"]


def test_many_messages_keep_order_and_content(path_socket):
    texts = [f"STATUS=message {i} " + "x" * (i * 37 % 900) for i in range(100)]
    got: list[str] = []
    for i, text in enumerate(texts):
        assert sdnotify.notify(text)
        if i % 5 == 4:  # drain like systemd does; the kernel queues only ~10 datagrams
            got += _receive_all(path_socket)
    got += _receive_all(path_socket)
    assert got == texts


def test_utf8_and_multiline_status_stay_one_line(path_socket):
    assert sdnotify.status("route för eth0\nsecond line")
    assert _receive_all(path_socket) == ["STATUS=route för eth0 second line"]


def test_unset_socket_is_noop(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready("x") is False
    assert sdnotify.reloading() is False
    assert sdnotify.stopping() is False
    assert sdnotify.status("x") is False


@pytest.mark.parametrize("value", ["", "relative/path", "vsock:2:1234"])
def test_unusable_socket_values_are_noop(monkeypatch, value):
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert sdnotify.notify("READY=1") is False


def test_missing_receiver_never_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert sdnotify.ready("x") is False
    monkeypatch.setenv("NOTIFY_SOCKET", f"@smcroute-test-no-such-abstract-socket-{os.getpid()}")
    assert sdnotify.stopping() is False


def test_no_lines_sends_nothing(path_socket):
    assert sdnotify.notify() is False
    assert _receive_all(path_socket) == []


def test_closed_receiver_never_raises(tmp_path, monkeypatch):
    path = tmp_path / "gone"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.close()  # the path stays, nobody receives: ECONNREFUSED
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert sdnotify.notify("READY=1") is False
