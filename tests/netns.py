"""Network-namespace harness for end-to-end multicast tests (needs root).

What it owns: creating throw-away network namespaces joined by veth pairs,
running commands and daemons inside them, sending and receiving real
multicast there, and reading back the kernel's multicast routing state as
structured data. What it must not do: touch the host's own interfaces or
multicast routing. Every veth is created *inside* a namespace (both ends),
so nothing ever appears in the host namespace, and deleting the namespaces
removes everything.

Names are unique per process and call (``smct<pid>x<n>``) so tests can run
in parallel under pytest-xdist. :class:`Topology` is a context manager whose
teardown kills every process left in its namespaces and deletes them, even
when the test failed.

Typical use::

    with router_topology(receivers=2) as topo:            # S -- R -- X1, X2
        with Daemon(topo.router, "/usr/sbin/smcrouted", conf) as d:
            rx = Receiver(topo.receivers[0], "r0", ["225.1.1.1"]).start()
            send(topo.sender, "s0", "225.1.1.1", count=10)
            assert rx.stop().count("10.0.1.2", "225.1.1.1") == 10
            assert read_mfc(topo.router, 4)[0].oifs == {"a2": 1}

The module is importable without root (the parsers are pure functions);
only the functions that create or enter namespaces need it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MCAST_TOOL = HERE / "mcast_tool.py"
PREFIX = "smct"
_counter = itertools.count(1)


class HarnessError(RuntimeError):
    """Something in the test environment (not the code under test) went wrong."""


# --------------------------------------------------------------------------
# Running things
# --------------------------------------------------------------------------


def unique_id(tag: str = "") -> str:
    """A short name unique across processes and calls: ``smct<pid>x<n><tag>``."""
    return f"{PREFIX}{os.getpid()}x{next(_counter)}{tag}"


def run(
    cmd: Sequence[str], *, check: bool = True, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``, capture text output; on failure raise with stderr shown."""
    proc = subprocess.run(
        list(cmd), input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise HarnessError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}{proc.stderr}"
        )
    return proc


def wait_until(
    predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Raises :class:`TimeoutError` naming ``what`` when time runs out.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def require_root() -> None:
    """Raise a clear error (not a skip) when not root."""
    if os.geteuid() != 0:
        raise HarnessError("network-namespace tests need root (run pytest as root)")


# --------------------------------------------------------------------------
# Namespaces and topologies
# --------------------------------------------------------------------------


class Netns:
    """One named network namespace (``/run/netns/NAME``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._anchor: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def __str__(self) -> str:
        return self.name

    def exec_argv(self, cmd: Sequence[str]) -> list[str]:
        """The argv that runs ``cmd`` inside this namespace."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(
        self, *cmd: str, check: bool = True, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace."""
        return run(self.exec_argv(cmd), check=check, input=input, timeout=timeout)

    def ip(self, *args: str, check: bool = True) -> str:
        """``ip -n NAME ARGS...``; return stdout."""
        return run(["ip", "-n", self.name, *args], check=check).stdout

    def ip_batch(self, lines: Iterable[str]) -> None:
        """Run many ``ip`` commands in one process (``ip -n NAME -batch -``)."""
        text = "\n".join(lines) + "\n"
        run(["ip", "-n", self.name, "-batch", "-"], input=text)

    def sysctl(self, settings: dict[str, str | int]) -> None:
        """Set sysctls inside the namespace (one process for all of them)."""
        args = [f"{k}={v}" for k, v in settings.items()]
        self.run("sysctl", "-q", "-w", *args)

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` in the background inside the namespace.

        ``ip netns exec`` execs the command, so the Popen pid is the pid of
        the program itself.
        """
        return subprocess.Popen(self.exec_argv(cmd), **kwargs)

    def pids(self) -> list[int]:
        """Every process currently inside the namespace."""
        out = run(["ip", "netns", "pids", self.name], check=False).stdout
        return [int(p) for p in out.split()]

    # Reading /proc/net as seen from inside: /proc/PID/net of a process that
    # lives in the namespace is that namespace's view, and costs one open()
    # instead of an ``ip netns exec cat`` fork -- fast enough to poll.
    def _anchor_pid(self) -> int:
        if self._anchor is None or self._anchor.poll() is not None:
            self._anchor = self.popen(["sleep", "infinity"], stdin=subprocess.DEVNULL)
            want = os.stat(f"/run/netns/{self.name}").st_ino
            pid = self._anchor.pid

            def entered() -> bool:
                try:
                    return os.stat(f"/proc/{pid}/ns/net").st_ino == want
                except FileNotFoundError:
                    return False

            wait_until(entered, timeout=5, interval=0.002, what=f"anchor in {self.name}")
        return self._anchor.pid

    def read_proc(self, name: str) -> str:
        """Contents of ``/proc/net/NAME`` as seen from inside the namespace."""
        with open(f"/proc/{self._anchor_pid()}/net/{name}") as fh:
            return fh.read()

    def proc_path(self, name: str) -> str:
        """A path that reads ``/proc/net/NAME`` of this namespace (for polling)."""
        return f"/proc/{self._anchor_pid()}/net/{name}"

    def links(self) -> dict[str, dict[str, Any]]:
        """``ip -j link`` inside the namespace, keyed by interface name."""
        return {d["ifname"]: d for d in json.loads(self.ip("-j", "link", "show"))}

    def ifindex(self, ifname: str) -> int:
        return int(self.links()[ifname]["ifindex"])

    def kill_all(self) -> None:
        """SIGKILL every process left in the namespace (ours by construction)."""
        if self._anchor is not None:
            self._anchor.kill()
            self._anchor.wait()
            self._anchor = None
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)


# Defaults for every namespace: no DAD (addresses usable at once), no reverse
# path filtering (IPv4 inherits the host's rp_filter in a new netns).
BASE_SYSCTLS: dict[str, str | int] = {
    "net.ipv6.conf.all.accept_dad": 0,
    "net.ipv6.conf.default.accept_dad": 0,
    "net.ipv6.conf.all.disable_ipv6": 0,
    "net.ipv6.conf.default.disable_ipv6": 0,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
}


@dataclass
class Link:
    """One veth pair: ``a_if`` in ``a``, ``b_if`` in ``b``."""

    a: Netns
    a_if: str
    b: Netns
    b_if: str


class Topology:
    """A set of namespaces and veth links, deleted on exit whatever happened.

    Use as a context manager, or call :meth:`close` (idempotent) yourself.
    """

    def __init__(self, tag: str | None = None) -> None:
        require_root()
        self.tag = tag or unique_id()
        self.namespaces: dict[str, Netns] = {}
        self.links: list[Link] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._cleanups: list[Callable[[], None]] = []
        self._closed = False

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getitem__(self, role: str) -> Netns:
        return self.namespaces[role]

    def add_ns(self, role: str) -> Netns:
        """Create namespace ``<tag><role>`` with loopback up and base sysctls."""
        ns = Netns(f"{self.tag}{role}")
        run(["ip", "netns", "add", ns.name])
        self.namespaces[role] = ns
        ns.ip("link", "set", "lo", "up")
        ns.sysctl(BASE_SYSCTLS)
        return ns

    def veth(self, a: Netns, a_if: str, b: Netns, b_if: str, index: int | None = None) -> Link:
        """Create a veth pair with one end in each namespace (never in the host);
        ``index``: the ifindex of ``a_if`` (default: the kernel picks one)."""
        at = ["index", str(index)] if index is not None else []
        a.ip("link", "add", a_if, *at, "type", "veth", "peer", "name", b_if, "netns", b.name)
        link = Link(a, a_if, b, b_if)
        self.links.append(link)
        return link

    def track(self, proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        """Kill ``proc`` at teardown if it still runs."""
        self._procs.append(proc)
        return proc

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` at teardown, before the namespaces are deleted (LIFO)."""
        self._cleanups.append(fn)

    def wait_link_ready(self, timeout: float = 5.0) -> None:
        """Wait until every veth end is operationally UP with a real qdisc.

        Right after ``link set up`` the device still has the ``noop`` qdisc
        and drops what is sent until the kernel's link watcher activates it
        (up to ~1 s). doc/KERNEL.md's "IPv6 multicast in the first ~0.6 s may
        not reach the routing path" is this; waiting for it makes the first
        packet count.
        """
        wanted: dict[Netns, set[str]] = {}
        for link in self.links:
            wanted.setdefault(link.a, set()).add(link.a_if)
            wanted.setdefault(link.b, set()).add(link.b_if)

        def ready() -> bool:
            for ns, names in wanted.items():
                links = ns.links()
                for name in names:
                    info = links.get(name)
                    if not info or info.get("operstate") != "UP" or info.get("qdisc") == "noop":
                        return False
            return True

        wait_until(ready, timeout=timeout, interval=0.02, what="veth links up")

    def close(self) -> None:
        """Kill what runs in the namespaces and delete them. Never raises."""
        if self._closed:
            return
        self._closed = True
        for fn in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                fn()
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(Exception):
                    proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        for ns in reversed(list(self.namespaces.values())):
            with contextlib.suppress(Exception):
                ns.kill_all()
            run(["ip", "netns", "del", ns.name], check=False)


class RouterTopology(Topology):
    """Sender ``S`` -- router ``R`` -- receivers ``X1``..``Xn`` (see :func:`router_topology`).

    ``router_ifs``: router-side interface names; a1 faces the sender, a2..
    the receivers (``router_ifs[i + 1]`` faces ``receivers[i]``).
    """

    sender: Netns
    router: Netns

    def __init__(self, tag: str | None = None) -> None:
        super().__init__(tag)
        self.receivers: list[Netns] = []
        self.router_ifs: list[str] = []

    # Address plan: link i uses 10.0.i.0/24 and fd00:i::/64; the router is
    # .1 / ::1 on a<i>, the far end .2 / ::2 on s0 (sender) or r0 (receiver).
    @staticmethod
    def addr(link: int, host: int, family: int = 4) -> str:
        """Address of ``host`` (1 = router, 2 = far end) on link ``link``."""
        return f"10.0.{link}.{host}" if family == 4 else f"fd00:{link:x}::{host:x}"

    @property
    def source4(self) -> str:
        """The sender's IPv4 source address (10.0.1.2)."""
        return self.addr(1, 2, 4)

    @property
    def source6(self) -> str:
        """The sender's IPv6 source address (fd00:1::2)."""
        return self.addr(1, 2, 6)

    def source(self, family: int) -> str:
        return self.source4 if family == 4 else self.source6


def router_topology(receivers: int = 2, tag: str | None = None) -> RouterTopology:
    """Build S --(s0|a1)-- R --(a2|r0)-- X1, R --(a3|r0)-- X2, ... and wait until usable.

    The sender and receivers get default routes (IPv4 and IPv6) towards the
    router; rp_filter is off everywhere; IPv6 addresses skip DAD. Returns a
    :class:`RouterTopology` (a context manager): ``topo.sender``,
    ``topo.router``, ``topo.receivers[i]``, ``topo.router_ifs``.
    """
    topo = RouterTopology(tag)
    try:
        topo.sender = topo.add_ns("S")
        topo.router = topo.add_ns("R")
        ends = [(topo.sender, "s0")]
        for i in range(1, receivers + 1):
            ends.append((topo.add_ns(f"X{i}"), "r0"))
            topo.receivers.append(ends[-1][0])
        router_lines: list[str] = []
        for n, (peer, peer_if) in enumerate(ends, start=1):
            rif = f"a{n}"
            topo.router_ifs.append(rif)
            topo.veth(topo.router, rif, peer, peer_if)
            router_lines += [
                f"addr add {topo.addr(n, 1)}/24 dev {rif}",
                f"addr add {topo.addr(n, 1, 6)}/64 dev {rif} nodad",
                f"link set {rif} up",
            ]
            peer.ip_batch(
                [
                    f"addr add {topo.addr(n, 2)}/24 dev {peer_if}",
                    f"addr add {topo.addr(n, 2, 6)}/64 dev {peer_if} nodad",
                    f"link set {peer_if} up",
                    f"route add default via {topo.addr(n, 1)}",
                    f"route add default via {topo.addr(n, 1, 6)}",
                ]
            )
            peer.sysctl({f"net.ipv4.conf.{peer_if}.rp_filter": 0})
        topo.router.ip_batch(router_lines)
        topo.router.sysctl({f"net.ipv4.conf.{i}.rp_filter": 0 for i in topo.router_ifs})
        topo.wait_link_ready()
    except BaseException:
        topo.close()
        raise
    return topo


def cleanup_stale(prefix: str = PREFIX) -> list[str]:
    """Delete namespaces left by harness processes that no longer exist."""
    removed = []
    out = run(["ip", "netns", "list"], check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(rf"{prefix}(\d+)x\d+", name)
        if not m or Path(f"/proc/{m.group(1)}").exists():
            continue
        ns = Netns(name)
        ns.kill_all()
        run(["ip", "netns", "del", name], check=False)
        removed.append(name)
    return removed


# --------------------------------------------------------------------------
# Daemons
# --------------------------------------------------------------------------

ORIGINAL_DAEMON = "/usr/sbin/smcrouted"
ORIGINAL_CTL = "/usr/sbin/smcroutectl"
OUR_DAEMON = str(REPO / ".venv" / "bin" / "smcrouted")
OUR_CTL = str(REPO / ".venv" / "bin" / "smcroutectl")


def ctl_for(daemon_binary: str) -> str:
    """The smcroutectl that belongs with a smcrouted (same directory)."""
    ctl = Path(daemon_binary).with_name("smcroutectl")
    return str(ctl) if ctl.exists() else (shutil.which("smcroutectl") or str(ctl))


class Daemon:
    """A smcrouted running in the foreground inside a namespace.

    Started as ``BINARY -n -i IDENT -u SOCK -P PIDFILE -f CONF [extra...]``
    with its own temporary directory for socket, PID file, config and log.
    :meth:`start` returns once the IPC socket accepts connections.
    """

    def __init__(
        self,
        ns: Netns,
        binary: str = ORIGINAL_DAEMON,
        conf: str | None = "",
        *,
        ctl_binary: str | None = None,
        ident: str | None = None,
        extra_args: Sequence[str] = ("-l", "debug"),
        workdir: str | None = None,
    ) -> None:
        self.ns = ns
        self.binary = binary
        self.ctl_binary = ctl_binary or ctl_for(binary)
        self.ident = ident or unique_id("d")
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="smct-"))
        # Our daemon reads its config (and runs hooks) as an unprivileged user.
        os.chmod(self.dir, 0o755)
        # Our daemon's parent drops to an unprivileged user and re-reads the
        # config on reload: the directory and file must be readable by it.
        self.dir.chmod(0o755)
        self.sock = str(self.dir / f"{self.ident}.sock")
        self.pidfile = str(self.dir / f"{self.ident}.pid")
        self.conf = str(self.dir / f"{self.ident}.conf")
        self.logfile = self.dir / f"{self.ident}.log"
        if conf is not None:
            self.write_conf(conf)
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self._final_log: str | None = None

    def write_conf(self, text: str) -> None:
        """(Re)write the config file (then :meth:`reload` to apply it)."""
        Path(self.conf).write_text(text)
        Path(self.conf).chmod(0o644)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None, "daemon not started"
        return self.proc.pid

    def argv(self) -> list[str]:
        return [
            self.binary,
            "-n",
            "-i",
            self.ident,
            "-u",
            self.sock,
            "-P",
            self.pidfile,
            "-f",
            self.conf,
            *self.extra_args,
        ]

    def start(self, timeout: float = 20.0, *, wait: bool = True) -> Daemon:
        """Start the daemon and wait until its IPC socket accepts connections.

        With ``wait=False`` return at once (see :meth:`socket_ready`).
        """
        with open(self.logfile, "wb") as log:
            self.proc = self.ns.popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        if not wait:
            return self
        try:
            wait_until(self.socket_ready, timeout=timeout, what=f"{self.binary} IPC socket")
        except BaseException:
            self.stop()
            raise
        return self

    def socket_ready(self) -> bool:
        """True once the IPC socket accepts a connection; raise if the daemon died."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise HarnessError(
                f"{self.binary} exited with {self.proc.returncode} before its socket "
                f"was ready:\n{self.log()}"
            )
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(self.sock)
            except OSError:
                return False
        return True

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        """The daemon's pid followed by all its descendants."""
        return process_tree(self.pid) if self.running() else []

    def ctl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run ``smcroutectl -u SOCK ARGS...`` inside the daemon's namespace."""
        return self.ns.run(
            self.ctl_binary, "-u", self.sock, *args, check=check, input=input, timeout=timeout
        )

    def reload(self) -> None:
        """SIGHUP the daemon."""
        os.kill(self.pid, signal.SIGHUP)

    def log(self) -> str:
        """Everything the daemon printed so far (kept after :meth:`stop`)."""
        if self._final_log is not None:
            return self._final_log
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, SIGKILL if needed (also leftover children); return the exit code."""
        if self.proc is None:
            return self.returncode
        family = process_tree(self.proc.pid) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        for pid in family[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._final_log = self.log()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        return self.returncode


# --------------------------------------------------------------------------
# Multicast traffic
# --------------------------------------------------------------------------


class Flow(NamedTuple):
    """What a receiver got from one (source, group)."""

    count: int
    seqs: list[int]
    ttls: list[int]


@dataclass
class RecvResult:
    """Everything one :class:`Receiver` got, keyed by (source, group)."""

    total: int
    flows: dict[tuple[str, str], Flow]

    def count(self, source: str, group: str) -> int:
        flow = self.flows.get((_norm(source), _norm(group)))
        return flow.count if flow else 0

    def seqs(self, source: str, group: str) -> list[int]:
        flow = self.flows.get((_norm(source), _norm(group)))
        return flow.seqs if flow else []


def _norm(addr: str) -> str:
    return str(ipaddress.ip_address(addr))


class Receiver:
    """A process in ``ns`` joined to ``groups`` on ``iface``, counting packets.

    :meth:`start` returns once every join is in place. :meth:`stop` waits
    until ``linger_ms`` pass without a packet and returns a :class:`RecvResult`.
    """

    def __init__(
        self,
        ns: Netns,
        iface: str,
        groups: Sequence[str],
        *,
        source: str | None = None,
        port: int = 5000,
        topology: Topology | None = None,
    ) -> None:
        self.ns = ns
        self.argv = [sys.executable, str(MCAST_TOOL), "recv", "--iface", iface, "--port", str(port)]
        for group in groups:
            self.argv += ["--group", group]
        if source:
            self.argv += ["--source", source]
        self.topology = topology
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 10.0) -> Receiver:
        self.proc = self.ns.popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if self.topology is not None:
            self.topology.track(self.proc)
        line = _readline(self.proc, timeout)
        if line.strip() != "READY":
            self.proc.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise HarnessError(f"receiver in {self.ns} failed to start: {line!r} {err}")
        return self

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, linger_ms: int = 300, timeout: float = 10.0) -> RecvResult:
        """Stop after ``linger_ms`` of silence; return what was received."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"STOP {linger_ms}\n")
        self.proc.stdin.flush()
        line = _readline(self.proc, timeout)
        self.proc.wait(timeout=timeout)
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise HarnessError(f"receiver in {self.ns} died: {err}")
        data = json.loads(line)
        flows = {}
        for key, f in data["flows"].items():
            src, grp = key.split()
            flows[(_norm(src), _norm(grp))] = Flow(f["count"], f["seqs"], f["ttls"])
        return RecvResult(data["total"], flows)


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no output from {proc.args} within {timeout} s")
    return proc.stdout.readline()


def send(
    ns: Netns,
    iface: str,
    group: str,
    *,
    count: int = 10,
    ttl: int = 8,
    rate: float = 0.0,
    source: str | None = None,
    port: int = 5000,
    first: int = 0,
    tag: str = "-",
) -> int:
    """Send ``count`` datagrams (payload ``smct SEQ TAG``) to ``group`` out of ``iface``.

    ``rate`` is packets per second (0 = as fast as possible); ``first`` is the
    first sequence number. Returns the number sent.
    """
    argv = [
        sys.executable,
        str(MCAST_TOOL),
        "send",
        "--iface",
        iface,
        "--group",
        group,
        "--count",
        str(count),
        "--ttl",
        str(ttl),
        "--rate",
        str(rate),
        "--port",
        str(port),
        "--first",
        str(first),
        "--tag",
        tag,
    ]
    if source:
        argv += ["--source", source]
    out = ns.run(*argv).stdout
    return int(json.loads(out.strip().splitlines()[-1])["sent"])


# --------------------------------------------------------------------------
# Kernel state readers (pure parsers + readers that run them in a namespace)
# --------------------------------------------------------------------------


class Vif(NamedTuple):
    """A row of /proc/net/ip_mr_vif or ip6_mr_vif."""

    index: int
    name: str
    bytes_in: int
    pkts_in: int
    bytes_out: int
    pkts_out: int
    flags: int


class Mfc(NamedTuple):
    """A multicast forwarding cache entry (resolved or not).

    ``oifs`` maps interface name to TTL threshold (IPv6 has no thresholds;
    the kernel prints 1). ``iif`` is None when the VIF is unknown.
    """

    source: str
    group: str
    iif: str | None
    oifs: dict[str, int]
    packets: int = 0
    bytes: int = 0
    wrong_if: int = 0

    @property
    def route(self) -> tuple[str, str, str | None, dict[str, int]]:
        """(source, group, iif, oifs): what tests usually compare."""
        return (self.source, self.group, self.iif, self.oifs)


class MRoute(NamedTuple):
    """One entry of ``ip mroute show table all`` (any table)."""

    family: int
    table: str
    source: str
    group: str
    iif: str | None
    oifs: dict[str, int]
    state: str


class Membership(NamedTuple):
    """A group joined on an interface (/proc/net/igmp or igmp6)."""

    ifname: str
    group: str
    users: int


class SourceFilter(NamedTuple):
    """A source filter entry (/proc/net/mcfilter or mcfilter6)."""

    ifname: str
    group: str
    source: str
    include: int
    exclude: int


def _v4_le(hexstr: str) -> str:
    """An address printed as %08X of a big-endian u32 on a little-endian host."""
    return str(ipaddress.IPv4Address(int(hexstr, 16).to_bytes(4, sys.byteorder)))


def _v4_host(hexstr: str) -> str:
    """An address printed in host order (0x%08x of ntohl)."""
    return str(ipaddress.IPv4Address(int(hexstr, 16)))


def _v6_hex(hexstr: str) -> str:
    return str(ipaddress.IPv6Address(bytes.fromhex(hexstr.replace(":", ""))))


def parse_vifs(text: str) -> list[Vif]:
    """Parse /proc/net/ip_mr_vif or /proc/net/ip6_mr_vif."""
    vifs = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 7:
            continue
        vifs.append(Vif(int(f[0]), f[1], *(int(x) for x in f[2:6]), int(f[6], 16)))
    return vifs


def parse_mfc(text: str, vifs: Sequence[Vif], family: int) -> list[Mfc]:
    """Parse /proc/net/ip_mr_cache (family 4) or ip6_mr_cache (family 6).

    VIF numbers are translated to interface names with ``vifs``.
    """
    names = {v.index: v.name for v in vifs}
    entries = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 3:
            continue
        if family == 4:
            group, source = _v4_le(f[0]), _v4_le(f[1])
        else:
            group, source = _v6_hex(f[0]), _v6_hex(f[1])
        iif_n = int(f[2])
        counters = [int(x) for x in f[3:6]] if len(f) >= 6 else [0, 0, 0]
        oifs = {}
        for item in f[6:]:
            vif, _, ttl = item.partition(":")
            oifs[names.get(int(vif), f"vif{vif}")] = int(ttl)
        entries.append(Mfc(source, group, names.get(iif_n), oifs, *counters))
    return entries


def parse_igmp(text: str) -> list[Membership]:
    """Parse /proc/net/igmp (device lines followed by indented group lines)."""
    out = []
    dev = ""
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        if not line[0].isspace():
            dev = line.split()[1]
            continue
        f = line.split()
        out.append(Membership(dev, _v4_le(f[0]), int(f[1])))
    return out


def parse_mcfilter(text: str) -> list[SourceFilter]:
    """Parse /proc/net/mcfilter (addresses in host order, 0x-prefixed)."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.replace("0x ", "0x").split()
        if len(f) < 6:
            continue
        out.append(SourceFilter(f[1], _v4_host(f[2]), _v4_host(f[3]), int(f[4]), int(f[5])))
    return out


def parse_igmp6(text: str) -> list[Membership]:
    """Parse /proc/net/igmp6."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 4:
            out.append(Membership(f[1], _v6_hex(f[2]), int(f[3])))
    return out


def parse_mcfilter6(text: str) -> list[SourceFilter]:
    """Parse /proc/net/mcfilter6."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) >= 6:
            out.append(SourceFilter(f[1], _v6_hex(f[2]), _v6_hex(f[3]), int(f[4]), int(f[5])))
    return out


def parse_mroute_json(text: str, family: int) -> list[MRoute]:
    """Parse ``ip -j mroute show table all``."""
    out = []
    for d in json.loads(text or "[]"):
        oifs = {m["oif"]: int(m.get("ttl", 1)) for m in d.get("multipath", [])}
        out.append(
            MRoute(
                family,
                str(d.get("table", "")),
                d.get("src", ""),
                d.get("dst", ""),
                d.get("iif"),
                oifs,
                d.get("state", ""),
            )
        )
    return out


def read_vifs(ns: Netns, family: int = 4) -> list[Vif]:
    """The VIF (family 4) or MIF (family 6) table of the default table."""
    return parse_vifs(ns.read_proc("ip_mr_vif" if family == 4 else "ip6_mr_vif"))


def read_mfc(ns: Netns, family: int = 4) -> list[Mfc]:
    """The MFC of the default table, with interface names."""
    vifs = read_vifs(ns, family)
    return parse_mfc(ns.read_proc("ip_mr_cache" if family == 4 else "ip6_mr_cache"), vifs, family)


def read_routes(ns: Netns, family: int = 4) -> set[tuple[str, str, str | None, tuple[str, ...]]]:
    """MFC as a set of (source, group, iif, sorted oifs) -- handy for asserts."""
    return {(e.source, e.group, e.iif, tuple(sorted(e.oifs))) for e in read_mfc(ns, family)}


def read_memberships(ns: Netns, family: int = 4) -> list[Membership]:
    """Groups joined in the namespace (/proc/net/igmp or igmp6)."""
    if family == 4:
        return parse_igmp(ns.read_proc("igmp"))
    return parse_igmp6(ns.read_proc("igmp6"))


def read_source_filters(ns: Netns, family: int = 4) -> list[SourceFilter]:
    """Source-specific joins (/proc/net/mcfilter or mcfilter6)."""
    if family == 4:
        return parse_mcfilter(ns.read_proc("mcfilter"))
    return parse_mcfilter6(ns.read_proc("mcfilter6"))


def read_mroutes(ns: Netns, family: int | None = None) -> list[MRoute]:
    """Every MFC entry of every table (``ip mroute show table all``)."""
    out: list[MRoute] = []
    for fam in (4, 6) if family is None else (family,):
        text = ns.ip(f"-{fam}", "-j", "mroute", "show", "table", "all")
        out += parse_mroute_json(text, fam)
    return out


def count_mfc(ns: Netns, family: int = 4) -> int:
    """Number of entries in the default table's MFC (cheap: counts lines)."""
    with open(ns.proc_path("ip_mr_cache" if family == 4 else "ip6_mr_cache"), "rb") as fh:
        return max(fh.read().count(b"\n") - 1, 0)


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/PID/task/*/children)."""
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                kids += [int(x) for x in text.split()]
    except FileNotFoundError:
        pass
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, parents before children."""
    out = [pid]
    i = 0
    while i < len(out):
        out += children(out[i])
        i += 1
    return out


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict of field -> raw value."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def cap_eff(pid: int) -> int:
    """Effective capability mask of ``pid``."""
    return int(proc_status(pid)["CapEff"], 16)


def no_new_privs(pid: int) -> bool:
    return proc_status(pid).get("NoNewPrivs") == "1"


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB."""
    return int(proc_status(pid)["VmRSS"].split()[0])


def proc_uid(pid: int) -> int:
    """Effective uid of ``pid``."""
    return int(proc_status(pid)["Uid"].split()[1])


def cmdline(pid: int) -> str:
    """The process title (argv joined by spaces; what ``ps`` shows)."""
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
