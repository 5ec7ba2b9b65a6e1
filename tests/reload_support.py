"""Helpers for the live-configuration tests and the reload benchmark (needs root).

What it owns: starting *our* smcrouted in a namespace with a config the
unprivileged parent can read, snapshots of the kernel's routing state in
comparable form (MFC entries, memberships), a background sender with
sequence numbers, adding veth links to a running topology, and a
multicast-routing netlink monitor that counts every MFC write the kernel
announces (RTNLGRP_IPV4_MROUTE / RTNLGRP_IPV6_MROUTE) inside a namespace.
Must not: touch anything outside the namespaces it is given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from netns import (
    MCAST_TOOL,
    OUR_CTL,
    OUR_DAEMON,
    Daemon,
    HarnessError,
    Netns,
    RouterTopology,
    read_memberships,
    read_mfc,
    wait_until,
)

HERE = Path(__file__).resolve().parent
MONITOR = HERE / "mroute_monitor.py"

# (source, group) -> (iif, sorted oifs)
KernelState = dict[tuple[str, str], tuple[str | None, tuple[str, ...]]]


def start_daemon(
    ns: Netns,
    conf: str | None,
    *,
    binary: str = OUR_DAEMON,
    extra: Iterable[str] = ("-l", "debug"),
    topo: RouterTopology | None = None,
    wait: bool = True,
    timeout: float = 60.0,
) -> Daemon:
    """Start a daemon in ``ns``; its directory and config are world-readable.

    Our daemon reads the config after dropping privileges (as ``nobody``),
    so the harness's private temporary directory must be opened up.
    """
    d = Daemon(ns, binary, conf, ctl_binary=OUR_CTL if binary == OUR_DAEMON else None)
    d.extra_args = list(extra)
    os.chmod(d.dir, 0o755)
    if conf is not None:
        os.chmod(d.conf, 0o644)
    if topo is not None:
        topo.on_close(d.stop)
    d.start(timeout=timeout, wait=wait)
    return d


def write_conf(d: Daemon, text: str) -> None:
    """Replace the daemon's config file atomically (readable by the daemon)."""
    tmp = Path(d.conf + ".new")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, d.conf)


def kernel(ns: Netns, family: int) -> KernelState:
    """The default table's MFC as {(source, group): (iif, sorted oifs)}."""
    return {(e.source, e.group): (e.iif, tuple(sorted(e.oifs))) for e in read_mfc(ns, family)}


def packets(ns: Netns, family: int) -> dict[tuple[str, str], int]:
    """Packet counter of every MFC entry."""
    return {(e.source, e.group): e.packets for e in read_mfc(ns, family)}


def memberships(ns: Netns, family: int, prefix: str) -> set[tuple[str, str]]:
    """(ifname, group) joined in ``ns`` for groups starting with ``prefix``."""
    return {(m.ifname, m.group) for m in read_memberships(ns, family) if m.group.startswith(prefix)}


def pid_mtime(d: Daemon) -> int:
    return os.stat(d.pidfile).st_mtime_ns


def age_pidfile(d: Daemon, seconds: int = 3600) -> int:
    """Set the PID file's mtime into the past; return the new mtime (ns)."""
    st = os.stat(d.pidfile)
    os.utime(d.pidfile, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 10**9))
    return pid_mtime(d)


def sighup_and_wait(d: Daemon, log_marker: str = "reload") -> None:
    """SIGHUP ``d`` and wait until it logged one more line containing ``log_marker``.

    Our daemon logs "reload done" or "reload rejected" when a reload ends.
    """
    before = d.log().count(log_marker)
    d.reload()
    wait_until(
        lambda: d.log().count(log_marker) > before, timeout=60, what=f"'{log_marker}' in log"
    )


def add_veth(
    topo: RouterTopology,
    router_if: str,
    peer: Netns,
    peer_if: str,
    net: int,
    index: int | None = None,
    *,
    exists: bool = False,
) -> None:
    """Create ``router_if`` in the router (peer end ``peer_if`` in ``peer``), address it
    like the topology does (10.0.NET.0/24, fd00:NET::/64) and wait until it is usable.
    ``index``: its ifindex (default: a new one); ``exists``: the pair is already
    there, only address it."""
    if not exists:
        topo.veth(topo.router, router_if, peer, peer_if, index)
    topo.router.ip_batch(
        [
            f"addr add {topo.addr(net, 1)}/24 dev {router_if}",
            f"addr add {topo.addr(net, 1, 6)}/64 dev {router_if} nodad",
            f"link set {router_if} up",
        ]
    )
    peer.ip_batch(
        [
            f"addr add {topo.addr(net, 2)}/24 dev {peer_if}",
            f"addr add {topo.addr(net, 2, 6)}/64 dev {peer_if} nodad",
            f"link set {peer_if} up",
            f"route add default via {topo.addr(net, 1)}",
            f"route add default via {topo.addr(net, 1, 6)}",
        ]
    )
    topo.router.sysctl({f"net.ipv4.conf.{router_if}.rp_filter": 0})
    peer.sysctl({f"net.ipv4.conf.{peer_if}.rp_filter": 0})
    topo.wait_link_ready()


class BackgroundSender:
    """``mcast_tool send`` running in the background (steady rate, sequence numbers)."""

    def __init__(
        self, ns: Netns, iface: str, group: str, *, count: int, rate: float, ttl: int = 8
    ) -> None:
        argv = [sys.executable, str(MCAST_TOOL), "send", "--iface", iface, "--group", group]
        argv += ["--count", str(count), "--rate", str(rate), "--ttl", str(ttl)]
        self.count = count
        self.proc = ns.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = 120) -> int:
        out, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise HarnessError(f"sender failed: {err}")
        return int(json.loads(out.strip().splitlines()[-1])["sent"])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class MrouteMonitor:
    """Counts MFC add/replace/delete notifications in a namespace.

    Runs ``mroute_monitor.py`` inside ``ns``; :meth:`start` returns once it
    is subscribed.  :meth:`events` returns every event seen so far as dicts
    ``{"op": "add"|"del", "family": 4|6, "source": ..., "group": ...}``.
    """

    def __init__(self, ns: Netns, families: Iterable[int] = (4,)) -> None:
        self.ns = ns
        fams = ",".join(str(f) for f in families)
        self.argv = [sys.executable, str(MONITOR), "--families", fams]
        self.proc: subprocess.Popen[str] | None = None
        self.out = Path(os.devnull)

    def start(self) -> MrouteMonitor:
        import tempfile

        fd, name = tempfile.mkstemp(prefix="smct-mon-")
        os.close(fd)
        self.out = Path(name)
        self.proc = self.ns.popen(
            [*self.argv, "--out", name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            raise HarnessError(f"mroute monitor failed to start: {line!r}")
        return self

    def sync(self) -> None:
        """Wait until every notification sent so far has been written out.

        The monitor answers a ``SYNC`` line after reading everything queued
        on its netlink socket, so events the kernel emitted before this
        call are in :meth:`events` afterwards.
        """
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("SYNC\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if line.strip() != "OK":
            raise HarnessError(f"mroute monitor: {line!r}")

    def events(self) -> list[dict[str, Any]]:
        self.sync()
        return [json.loads(x) for x in self.out.read_text().splitlines() if x.strip()]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.unlink(missing_ok=True)
