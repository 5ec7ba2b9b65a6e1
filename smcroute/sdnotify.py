"""Tiny sd_notify(3) client: tell a supervisor (systemd) how the daemon is doing.

Owns: building notification datagrams and sending them to ``$NOTIFY_SOCKET``
(a filesystem path, or an abstract socket when it starts with ``@``).

Must not: raise, log, block, or keep anything open. When ``NOTIFY_SOCKET`` is
unset or the supervisor cannot be reached, every call is a no-op returning
False, so the daemon can call these helpers unconditionally (also in tests,
under finit, or started by hand). It imports only the standard library so
that both processes may use it.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["notify", "ready", "reloading", "status", "stopping"]

_ENV = "NOTIFY_SOCKET"


def _address(value: str) -> str | bytes | None:
    """Map a NOTIFY_SOCKET value to a socket address, or None if unusable."""
    if value.startswith("@"):
        # Abstract namespace: a leading NUL byte instead of the '@'.
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # systemd also knows vsock:..., which we do not need


def notify(*lines: str) -> bool:
    """Send one datagram of ``KEY=value`` lines to the supervisor.

    Returns True if the datagram was sent, False if there is no supervisor to
    tell or sending failed. Never raises.
    """
    try:
        value = os.environ.get(_ENV, "")
        address = _address(value) if value else None
        if address is None or not lines:
            return False
        payload = "\n".join(lines).encode("utf-8", "replace")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(1.0)  # a datagram to a live receiver never waits long
            sent = sock.sendto(payload, address)
        return sent == len(payload)
    except Exception:  # a notification must never break the daemon
        return False


def _status_line(text: str) -> str:
    # A STATUS= value is one line; keep the datagram's line structure intact.
    return "STATUS=" + " ".join(text.splitlines())


def ready(status_text: str | None = None) -> bool:
    """READY=1: start-up, or a reload, is complete."""
    lines = ["READY=1"]
    if status_text:
        lines.append(_status_line(status_text))
    return notify(*lines)


def reloading(status_text: str | None = None) -> bool:
    """RELOADING=1 with MONOTONIC_USEC, as systemd >= 253 expects; READY=1 ends it."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = ["RELOADING=1", f"MONOTONIC_USEC={usec}"]
    if status_text:
        lines.append(_status_line(status_text))
    return notify(*lines)


def stopping(status_text: str | None = None) -> bool:
    """STOPPING=1: the daemon is shutting down."""
    lines = ["STOPPING=1"]
    if status_text:
        lines.append(_status_line(status_text))
    return notify(*lines)


def status(text: str) -> bool:
    """STATUS=...: a one-line summary shown by ``systemctl status``."""
    return notify(_status_line(text))
