"""`smcrouted`: the command line and the start-up sequence (doc/SPEC.md §2, §7).

Owns option parsing (getopt-style, by hand: see `_getopt`), `-F` checking,
and the ordered start-up: open the multicast routing sockets as root (exit
69/76/77 early and clearly), detach, create the control socket, spawn the
privileged helper with the routing sockets, drop every privilege of this
process, then hand over to `smcroute.daemon.Daemon`.  Must not: keep any
privilege past `drop_parent_privileges`, or print a traceback.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import stat
import sys
import time

from smcroute import __version__, identity, logsetup
from smcroute.logsetup import log
from smcroute.options import Options

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from smcroute.privsep.janitor import Janitor

EX_OK = 0
EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_OSERR = 71
EX_PROTOCOL = 76
EX_NOPERM = 77
EX_CONFIG = 78

USAGE = """\
Usage: smcrouted [-hnNsv] [-c SEC] [-d SEC] [-e CMD] [-f FILE] [-F FILE] [-i NAME]
                 [-l LVL] [-m SEC] [-p USER[:GROUP]] [-P FILE] [-t ID] [-u FILE]

Static multicast routing daemon.

Options:
  -c SEC           Drop learned (*,G) routes idle for SEC seconds, default 60, 0 off
  -d SEC           Wait SEC seconds before probing interfaces and reading the config
  -D SEC           Exit cleanly SEC seconds after start (testing aid)
  -e CMD           Run CMD with 'reload' after the config is applied, and with
                   'install' (env: source, group) when a template installs a route
  -f FILE          Configuration file, default /etc/NAME.conf
  -F FILE          Check FILE and exit: 0 if valid, 78 if not
  -h               Show this help and exit
  -i NAME          Identity: config, PID file, socket and syslog name (default smcroute)
  -l LVL           Log level: none, err, notice (default), info, debug
  -m SEC           Multicast router discovery interval, 4-180, default 20
  -n               Stay in the foreground
  -N               Accepted for compatibility (VIFs are always made on demand)
  -p USER[:GROUP]  Run the main process as USER (default: smcroute, else an
                   identity of its own: a user ID no other process uses)
  -P FILE          PID file, default /var/run/NAME.pid
  -s               Log to syslog (default when not in the foreground)
  -t ID            Use multicast routing table ID (see ip mrule)
  -u FILE          Control socket, default /var/run/NAME.sock
  -v               Show version and exit
  --zero-loss      Install exact-group (*,G) templates as kernel (*,G) entries
  --max-learned N  Limit learned routes and stop filters (default 20000)
  --sample-interval SEC  Sample the kernel's counters for rates every SEC
                   seconds, 1-3600, default 10, 0 off
  --metrics [ADDR:]PORT  Serve Prometheus metrics at http://ADDR:PORT/metrics
                   (default address 127.0.0.1)
  --metrics-routes N  At most N per-route series, busiest first (default 1000)
"""


class UsageError(Exception):
    pass


def _int(value: str, opt: str, lo: int, hi: int) -> int:
    try:
        n = int(value, 10)
    except ValueError:
        raise UsageError(f"option {opt} expects a number, not {value!r}") from None
    if not lo <= n <= hi:
        raise UsageError(f"option {opt} must be between {lo} and {hi}, not {n}")
    return n


# getopt-style, as the original: short options cluster (`-nsl debug`), a value
# follows its option attached or as the next argument (whatever it looks
# like), long options take `--name VALUE` or `--name=VALUE`, `--` ends the
# options.  Parsed by hand rather than with click, which the daemon's start
# would pay ~20 ms of CPU for (click and what it imports): the messages are
# click's, word for word (tests/test_daemon_cli.py).
_FLAGS = {"-h": "help_", "-v": "version", "-n": "foreground", "-N": "no_vifs", "-s": "use_syslog"}
_FLAGS["--zero-loss"] = "zero_loss"
_VALUES = {
    "-c": "cache",
    "-d": "delay",
    "-D": "exit_after",
    "-e": "hook",
    "-f": "conf",
    "-F": "check",
    "-i": "ident",
    "-I": "ident",
    "-l": "level",
    "-m": "mrdisc",
    "-p": "user",
    "-P": "pidfile",
    "-t": "table",
    "-u": "sockpath",
    "--max-learned": "max_learned",
    "--sample-interval": "sample_interval",
    "--metrics": "metrics",
    "--metrics-routes": "metrics_routes",
}


def _getopt(argv: list[str]) -> dict[str, Any]:
    """Option name -> value (True for a given flag, the last value given)."""
    kw: dict[str, Any] = dict.fromkeys(_FLAGS.values(), False)
    kw.update(dict.fromkeys(_VALUES.values()))
    rest: list[str] = []
    args = iter(argv)

    def value_of(opt: str) -> str:
        value = next(args, None)
        if value is None:
            raise UsageError(f"Option '{opt}' requires an argument.")
        return value

    for arg in args:
        if arg == "--":
            rest += args
        elif arg.startswith("--"):
            opt, eq, value = arg.partition("=")
            if opt in _FLAGS:
                if eq:
                    raise UsageError(f"Option '{opt}' does not take a value.")
                kw[_FLAGS[opt]] = True
            elif opt in _VALUES:
                kw[_VALUES[opt]] = value if eq else value_of(opt)
            else:
                raise UsageError(f"unknown option {opt}")
        elif arg.startswith("-") and arg != "-":
            for i, ch in enumerate(arg[1:], 2):
                opt = "-" + ch
                if opt in _FLAGS:
                    kw[_FLAGS[opt]] = True
                elif opt in _VALUES:
                    kw[_VALUES[opt]] = arg[i:] or value_of(opt)
                    break
                else:
                    raise UsageError(f"unknown option {opt}")
        else:
            rest.append(arg)
    if rest:
        s = "s" if len(rest) > 1 else ""
        raise UsageError(f"Got unexpected extra argument{s} ({' '.join(rest)})")
    return kw


def parse_args(argv: list[str]) -> tuple[Options, dict[str, Any]]:
    kw = _getopt(argv)
    o = Options()
    if kw["ident"]:
        o.ident = kw["ident"]
    if "/" in o.ident or not o.ident:
        raise UsageError(f"invalid identity {o.ident!r}")
    o.conf = kw["conf"] or f"/etc/{o.ident}.conf"
    o.pidfile = kw["pidfile"] or f"/var/run/{o.ident}.pid"
    o.sockpath = kw["sockpath"] or f"/var/run/{o.ident}.sock"
    o.foreground = kw["foreground"]
    o.use_syslog = kw["use_syslog"] or not o.foreground
    if kw["level"]:
        if kw["level"] not in logsetup.LEVELS:
            raise UsageError(
                f"invalid log level {kw['level']!r}; expected none, err, notice, info or debug"
            )
        o.loglevel = kw["level"]
    if kw["cache"] is not None:
        o.cache_timeout = _int(kw["cache"], "-c", 0, 86400 * 365)
    if kw["delay"] is not None:
        o.startup_delay = _int(kw["delay"], "-d", 0, 86400)
    if kw["exit_after"] is not None:
        o.exit_after = _int(kw["exit_after"], "-D", 0, 86400 * 365)
    if kw["mrdisc"] is not None:
        o.mrdisc_interval = _int(kw["mrdisc"], "-m", 4, 180)
    if kw["table"] is not None:
        o.table = _int(kw["table"], "-t", 0, 999_999_999)
    if kw["max_learned"] is not None:
        o.max_learned = _int(kw["max_learned"], "--max-learned", 0, 10_000_000)
    if kw["sample_interval"] is not None:
        o.sample_interval = _int(kw["sample_interval"], "--sample-interval", 0, 3600)
    if kw["metrics_routes"] is not None:
        o.metrics_routes = _int(kw["metrics_routes"], "--metrics-routes", 0, 1_000_000)
    if kw["metrics"] is not None:
        parse_listen(kw["metrics"])  # checked now, bound at start-up
        o.metrics = kw["metrics"]
        if not o.sample_interval:
            raise UsageError("--metrics needs counter samples: --sample-interval must not be 0")
    o.zero_loss = kw["zero_loss"]
    o.hook = kw["hook"]
    if kw["user"]:
        user, _, group = kw["user"].partition(":")
        if not user:
            raise UsageError("option -p expects USER[:GROUP]")
        o.user, o.group = user, group or None
    return o, kw


def parse_listen(spec: str) -> tuple[str, int]:
    """`PORT`, `ADDR:PORT` or `[IPV6]:PORT` -> (address, port); loopback by default."""
    import ipaddress

    host, sep, port = spec.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(
            f"option --metrics expects [ADDR:]PORT with a numeric ADDR, not {spec!r}"
        ) from None
    return host, _int(port, "--metrics", 1, 65535)


def metrics_socket(spec: str) -> socket.socket:
    """Bind and listen (before the privilege drop: a port below 1024 needs root)."""
    host, port = parse_listen(spec)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(16)
    except OSError:
        sock.close()
        raise
    return sock


def check_file(path: str, o: Options | None = None) -> int:
    """`-F FILE`: every problem as FILE:LINE: message; 0 valid, 78 not.

    Run as root, it also warns about every file, include and folder the
    daemon's user (`-p`, or the default) could not read: the main process
    reads the configuration unprivileged (see `smcroute.readable`).
    """
    from smcroute import readable
    from smcroute.parser import parse_file

    _config, problems = parse_file(path)
    for p in problems:
        kind = "warning" if p.warning else "error"
        print(f"{p} ({kind})" if p.warning else str(p), file=sys.stderr)
    if os.geteuid() == 0 and not readable.denied(problems):
        o = o or Options()
        try:
            who = identity.choose(o.user, o.group, o.ident, lock=False)
        except identity.IdentityError:
            who = None
        if who is not None and who.uid != 0:
            for denied in readable.check_as(path, who.uid, who.gid):
                print(f"{readable.explain(denied, who.name)} (warning)", file=sys.stderr)
    return EX_CONFIG if any(not p.warning for p in problems) else EX_OK


def daemonize() -> None:
    """Classic double fork; the original process exits 0."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    fd = os.open(os.devnull, os.O_RDWR)
    for n in (0, 1, 2):
        os.dup2(fd, n)
    if fd > 2:
        os.close(fd)


def control_socket(path: str) -> socket.socket:
    """Bind the control socket; a stale file is replaced, a live one is an error."""
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale, left by a crash
        else:
            raise OSError(f"another daemon answers on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    # Not listening yet: clients get "connection refused" until the daemon
    # has applied its configuration and calls listen() (Daemon.start).
    sock.setblocking(False)
    return sock


def warm_up() -> None:
    """Load what is loaded lazily -- the grammar's tables -- while the files
    are still readable: after the privilege drop they may not be (e.g. an
    interpreter under a home directory only root can enter).  After it,
    parsing any configuration or command imports nothing more
    (tests/test_daemon_cli.py); a sample parsed here would only make, before
    the routes, what parsing them makes anyway."""
    from smcroute.parser.syntax import tables

    tables()


def _no_helper(e: OSError, sockpath: str, janitor: Janitor | None) -> int:
    """The helper could not be started: nothing runs, nothing is left."""
    if janitor is not None:
        janitor.discard()
    log.error(f"cannot start the privileged helper: {e}")
    with contextlib.suppress(OSError):
        os.unlink(sockpath)
    return EX_OSERR


def run(o: Options) -> int:
    from smcroute.identity import drop_parent_privileges
    from smcroute.privsep.caps import PrivilegeError
    from smcroute.privsep.client import start_helper
    from smcroute.privsep.janitor import start as start_janitor
    from smcroute.privsep.mroute import MrouteError, open_mroute, open_solicit

    logsetup.setup(o.ident, o.loglevel, o.use_syslog)
    # Until the event loop installs its handler, a SIGHUP (a reload asked for
    # during `-d` or start-up) would kill us; the config is read afterwards anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if o.startup_delay:
        logsetup.notice(f"waiting {o.startup_delay} s before start (-d)")
        time.sleep(o.startup_delay)
    try:
        who = identity.choose(o.user, o.group, o.ident)
    except identity.IdentityError as e:
        log.error(f"cannot choose the main process's identity: {e}")
        return EX_NOPERM
    try:
        v4 = open_mroute(socket.AF_INET, o.table, log.warning)
    except MrouteError as e:
        log.error(str(e))
        return e.exit_code
    families = [4]
    v6: socket.socket | None = None
    try:
        v6 = open_mroute(socket.AF_INET6, o.table, log.warning)
        families.append(6)
    except MrouteError as e:
        if e.exit_code != EX_PROTOCOL:
            log.error(str(e))
            v4.close()
            return e.exit_code
        logsetup.notice(f"IPv6 multicast routing unavailable, IPv4 only: {e}")
    if not o.foreground:
        daemonize()
    try:
        ctl = control_socket(o.sockpath)
    except OSError as e:
        msg = e.strerror if e.strerror else str(e)
        log.error(f"cannot create control socket {o.sockpath}: {msg}")
        return EX_UNAVAILABLE if "answers" in str(e) else EX_OSERR
    sol: dict[int, socket.socket] = {}  # RFC 4286 Solicitations: their own sockets
    for fam, mr in ((socket.AF_INET, v4), (socket.AF_INET6, v6)):
        try:
            if mr is not None:
                sol[fam] = open_solicit(fam)
        except OSError as e:
            log.warning(f"cannot open a socket for Router Solicitations: {e.strerror or e}")
    # The helper and the janitor are forked, and exec their interpreters
    # (on the other core) while this process imports the daemon's modules
    # (before the privilege drop); only then is it checked that they started,
    # and everything is reported in the order it always was.
    try:
        s4, s6 = sol.get(socket.AF_INET), sol.get(socket.AF_INET6)
        helper = start_helper(
            v4, v6, hook=o.hook, log=logsetup.from_helper, wait=False, s4=s4, s6=s6
        )
    except OSError as e:
        return _no_helper(e, o.sockpath, None)
    janitor: Janitor | None = None
    try:
        janitor = start_janitor(helper.pid, o.sockpath, o.pidfile, wait=False)
        no_janitor = None
    except OSError as e:
        no_janitor = e
    try:
        from smcroute.daemon import Daemon
    except BaseException:  # (a broken installation) what the `finally` below does
        helper.close()
        if janitor is not None:
            with contextlib.suppress(OSError):
                janitor.started()
                for line in janitor.finish():
                    logsetup.notice(f"janitor: {line}")
        raise
    try:
        helper.started()
    except OSError as e:
        return _no_helper(e, o.sockpath, janitor)
    metrics = None
    if o.metrics:
        try:
            from smcroute.metrics import MetricsServer

            metrics = MetricsServer(metrics_socket(o.metrics), o.metrics_routes)
        except (ImportError, OSError) as e:
            why = f"cannot serve metrics on {o.metrics}: {getattr(e, 'strerror', None) or e}"
            if isinstance(e, ImportError):
                why = f"--metrics needs prometheus_client ({e}): pip install 'smcroute[metrics]'"
            log.error(why)
            helper.close()
            if janitor is not None:
                janitor.discard()
            return EX_UNAVAILABLE
    if janitor is not None:
        try:
            janitor.started()
        except OSError as e:
            janitor, no_janitor = None, e
    if no_janitor is not None:
        log.warning(
            f"no janitor ({no_janitor}): no PID file, and the control socket stays after exit"
        )
    try:
        try:
            warm_up()
            logsetup.notice(drop_parent_privileges(who.uid, who.gid, who.describe(o.ident)))
            if who.warning:
                log.warning(who.warning)
        except (OSError, ValueError, PrivilegeError) as e:
            log.error(f"cannot drop privileges: {e}")
            return EX_NOPERM
        daemon = Daemon(o, helper, ctl, tuple(families))
        daemon.metrics, daemon.janitor = metrics, janitor
        return daemon.run()
    finally:
        # The helper is gone first; then the janitor removes the socket and
        # PID file.
        helper.close()
        for line in janitor.finish() if janitor else ():
            logsetup.notice(f"janitor: {line}")


def main(argv: list[str] | None = None) -> NoReturn:
    args = sys.argv[1:] if argv is None else argv
    try:
        o, kw = parse_args(args)
    except UsageError as e:
        print(f"smcrouted: {e}\nTry 'smcrouted -h' for help.", file=sys.stderr)
        sys.exit(EX_USAGE)
    if kw["help_"]:
        print(USAGE, end="")
        sys.exit(EX_OK)
    if kw["version"]:
        print(f"SMCRoute v{__version__}")
        sys.exit(EX_OK)
    if kw["check"]:
        sys.exit(check_file(kw["check"], o))
    # No cyclic GC passes until the configuration is applied (Lifecycle.start
    # freezes what start-up made, then turns it back on): the imports and the
    # parse make no garbage cycles, and the passes over their objects were
    # ~5-9 ms of CPU per start.  (The `smcrouted` program turns it off before
    # importing this module: smcroute.daemon_entry.)
    gc.disable()
    try:
        code = run(o)
    except KeyboardInterrupt:
        code = EX_OK
    except Exception as e:  # the last line of defence: a message, never a traceback
        log.critical(f"internal error: {type(e).__name__}: {e}")
        code = EX_SOFTWARE
    sys.exit(code)


if __name__ == "__main__":
    main()
