"""PIM mode on the mroute sockets: a kernel that refuses it gets a warning, not a failure."""

from __future__ import annotations

import errno
import socket

from smcroute.privsep import mroute


class RefusingSocket:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, object]] = []

    def setsockopt(self, level: int, opt: int, value: object) -> None:
        self.calls.append((level, opt, value))
        raise OSError(errno.ENOPROTOOPT, "Protocol not available")


def test_pim_refused_is_a_warning_naming_the_consequence() -> None:
    s = RefusingSocket()
    said: list[str] = []
    mroute._pim_mode(s, socket.IPPROTO_IPV6, mroute.MRT6_PIM, socket.AF_INET6, said.append)  # type: ignore[arg-type]
    assert s.calls == [(socket.IPPROTO_IPV6, mroute.MRT6_PIM, 1)]
    assert len(said) == 1
    assert said[0].startswith("IPv6: the kernel refused PIM mode (Protocol not available)")
    assert "stop filter will block the same (S,G) arriving on another interface" in said[0]


def test_pim_accepted_says_nothing() -> None:
    class Accepting(RefusingSocket):
        def setsockopt(self, level: int, opt: int, value: object) -> None:
            self.calls.append((level, opt, value))

    s = Accepting()
    said: list[str] = []
    mroute._pim_mode(s, socket.IPPROTO_IP, mroute.MRT_PIM, socket.AF_INET, said.append)  # type: ignore[arg-type]
    assert s.calls == [(socket.IPPROTO_IP, mroute.MRT_PIM, 1)] and said == []
