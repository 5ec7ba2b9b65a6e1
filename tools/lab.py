"""Newcomer lab: watch smcrouted route real multicast, in throw-away namespaces.

Builds, entirely inside network namespaces (the host's interfaces and
multicast routing are never touched)::

    sender S (s0 10.0.1.2) --- a1 [router R] a2 --- r0 receiver X1
                                            a3 --- r0 receiver X2

writes a small smcroute.conf, starts smcrouted in R (ours from .venv by
default, ``--daemon /usr/sbin/smcrouted`` for Debian's original), sends
real multicast from S, prints what each receiver got next to what it
should have got, prints ``smcroutectl -d show``, ``show groups`` and
``show interfaces``, then stops the daemon and deletes everything -- also
on Ctrl-C or failure. Exit status 0 when every receiver got exactly what
the configuration promises, 1 otherwise. Run it as root: ``./lab.sh``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from netns import (  # noqa: E402  (the harness lives with the tests)
    OUR_DAEMON,
    Daemon,
    HarnessError,
    Receiver,
    RouterTopology,
    ctl_for,
    read_mfc,
    router_topology,
    send,
    wait_until,
)

SRC4, SRC6 = "10.0.1.2", "fd00:1::2"
CONF = f"""\
# smcroute.conf written by tools/lab.py
# Join a group on the inbound interface (see: smcroutectl show groups)
mgroup from a1 group 225.1.1.1

# (S,G) routes: IPv4 to both receivers, a second group to receiver 1 only
mroute from a1 source {SRC4} group 225.1.1.1 to a2 a3
mroute from a1 source {SRC4} group 225.2.2.2 to a2

# IPv6 (S,G) route to receiver 2 only
mroute from a1 source {SRC6} group ff2e::42 to a3
"""

# group -> (expected at X1, expected at X2), as a fraction of what was sent
EXPECT = {"225.1.1.1": (1, 1), "225.2.2.2": (1, 0), "ff2e::42": (0, 1)}
SOURCE = {"225.1.1.1": SRC4, "225.2.2.2": SRC4, "ff2e::42": SRC6}
ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[78])")


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def heading(text: str) -> None:
    print(f"\n=== {text}")


def lab(daemon_bin: str, ctl_bin: str, count: int) -> bool:
    heading("building namespaces: sender S, router R (a1 a2 a3), receivers X1 X2")
    with router_topology(receivers=2) as topo:
        print(f"namespaces: {', '.join(ns.name for ns in topo.namespaces.values())}")
        heading(f"smcroute.conf\n{CONF.rstrip()}")
        heading(f"starting {daemon_bin} in {topo.router}")
        d = Daemon(topo.router, daemon_bin, CONF, ctl_binary=ctl_bin, extra_args=["-l", "info"])
        try:
            ok = exercise(topo, d, count)
        except BaseException:
            d.stop()
            print(f"\n--- daemon log ---\n{d.log().rstrip()}", file=sys.stderr)
            raise
        d.stop()
        heading(f"stopped the daemon (exit status {d.returncode})")
        leftover = read_mfc(topo.router, 4) + read_mfc(topo.router, 6)
        print("kernel MFC after stop:", leftover or "empty")
    print("namespaces deleted")
    return ok


def exercise(topo: RouterTopology, d: Daemon, count: int) -> bool:
    """Start the daemon, send, report; True when every count is as expected."""
    d.start()
    print(f"running, pid(s) {d.pids()}")
    wait_until(
        lambda: len(read_mfc(topo.router, 4)) == 2 and read_mfc(topo.router, 6),
        timeout=10,
        what="the configured routes in the kernel",
    )
    receivers = [Receiver(ns, "r0", list(EXPECT), topology=topo).start() for ns in topo.receivers]
    heading(f"sending {count} packets to each group from S (TTL 8)")
    for group in EXPECT:
        send(topo.sender, "s0", group, count=count, ttl=8)
        print(f"sent {count} x {group} from {SOURCE[group]}")
    results = [rx.stop() for rx in receivers]

    heading("what each receiver got")
    ok = True
    print(f"{'receiver':10}{'group':14}{'got':>6}{'expected':>10}")
    for i, result in enumerate(results):
        for group, expect in EXPECT.items():
            got = result.count(SOURCE[group], group)
            want = expect[i] * count
            ok &= got == want
            print(f"X{i + 1:<9}{group:14}{got:>6}{want:>10}  {'ok' if got == want else 'MISMATCH'}")

    for args in (["-d", "show"], ["show", "groups"], ["show", "interfaces"]):
        heading(f"smcroutectl {' '.join(args)}")
        out = d.ctl("-p", *args, check=False)
        print(ANSI.sub("", out.stdout + out.stderr).rstrip())
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--daemon", default=OUR_DAEMON, help="smcrouted to run (default: ours)")
    p.add_argument("--ctl", default=None, help="smcroutectl (default: next to --daemon)")
    p.add_argument("--count", type=int, default=5, help="packets per group (default 5)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("lab: needs root for network namespaces (try: sudo ./lab.sh)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _terminate)
    try:
        ok = lab(args.daemon, args.ctl or ctl_for(args.daemon), args.count)
    except KeyboardInterrupt:
        print("\ninterrupted; everything was cleaned up", file=sys.stderr)
        return 130
    except (HarnessError, TimeoutError, OSError) as exc:
        print(f"\nlab failed: {exc}\neverything was cleaned up", file=sys.stderr)
        return 1
    print("\nlab: all receivers got what the configuration promises" if ok else "\nlab: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
