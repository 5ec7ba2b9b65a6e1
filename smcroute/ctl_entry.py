"""The `smcroutectl` program: asks for a `show` before anything else is imported.

A process starts, imports click (~30 ms) and only then asks the daemon, which
then renders: both one after the other.  Here a `show` on a plain command
line (options -d -j -p -t -u -i, each on its own; words `show [TABLE]` or
none) is sent to the daemon first thing, with nothing imported but the
request encoder (`smcroute.ipc.request`) and `_socket`, so that the daemon
renders it while this process imports click and the rest; `smcroute.ctl`
then parses the command line with click as always and takes that answer only
if the request it makes is byte for byte the one sent (otherwise it opens a
new connection).  Any other command line, or a daemon that cannot be reached
at once (no socket, refused, a full backlog), leaves everything to
`smcroute.ctl`, which reports it.

Ends the process with `os._exit` once stdout and stderr are flushed: the
interpreter's teardown would only free memory.

Must not: report anything (every message is `smcroute.ctl`'s), send anything
but a `show`, or import anything heavy before it is sent."""

from __future__ import annotations

# Nothing here imports `typing`, `collections` or `re` before the request is
# sent (`smcroute.ipc.request` alone): those imports are click's, later.
import _socket
import gc
import os
import sys

from smcroute.ipc.request import SHOW_KINDS, IpcError, default_socket_path, encode_request

TYPE_CHECKING = False
if TYPE_CHECKING:
    from smcroute.ipc.client import ControlClient

_FLAGS = {"-d": "detail", "-j": "json", "-p": "plain", "-t": "rows"}
_VALUES = {"-u": "path", "-i": "ident", "-I": "ident"}
# (socket path, connected socket, the request line sent on it)
_sent: tuple[str, _socket.socket, bytes] | None = None


def show_format(json: bool, rows: bool, plain: bool, tty: bool) -> str:
    """How the daemon renders a show (see `smcroute.ipc.codec.FORMATS`)."""
    if json:
        return "json"
    if rows:
        return "rows"
    return "text" if plain or not tty else "ansi"


def prefetch(argv: list[str]) -> None:
    """Send the `show` that `argv` asks for, if it is that simple."""
    global _sent
    seen: dict[str, str] = {}
    words: list[str] = []
    it = iter(argv)
    for a in it:
        name = _FLAGS.get(a) or _VALUES.get(a)
        if name is None:
            if a.startswith("-"):
                return  # grouped, long, -b, -h, -v, --, unknown: click's to judge
            words.append(a)
        elif name in seen:
            return
        else:
            seen[name] = a if a in _FLAGS else next(it, "")
    if words and (words[0] != "show" or len(words) > 2 or not set(words[1:]) <= set(SHOW_KINDS)):
        return  # abbreviations too: the request must be the one smcroute.ctl makes
    ident = seen.get("ident", "smcroute")
    if not ident or "/" in ident:
        return
    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):
        tty = False
    fmt = show_format("json" in seen, "rows" in seen, "plain" in seen, tty)
    path = seen.get("path") or default_socket_path(ident)
    try:
        line = encode_request("show", words[1:] or ["routes"], "detail" in seen, fmt)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except (IpcError, OSError):
        return
    # Non-blocking: a daemon whose backlog is full, or anything else but an
    # at once connection and send, is left to smcroute.ctl (it waits, or says why).
    sock.setblocking(False)
    try:
        sock.connect(path)
        sent = sock.send(line)
    except (OSError, ValueError):
        sent = -1
    if sent != len(line):
        sock.close()
        return
    _sent = (path, sock, line)


def take(path: str) -> ControlClient | None:
    """The client whose connection already asked `path` for a show, if any (once)."""
    global _sent
    got, _sent = _sent, None
    if got is None:
        return None
    sock, line = got[1], got[2]
    if got[0] != path:
        sock.close()
        return None
    from smcroute.ipc.client import ControlClient  # smcroute.ctl has imported it

    client = ControlClient(path)
    client.adopt(sock, line)
    return client


def main() -> int:
    """Console script entry point (see the module docstring)."""
    if not any(k.endswith("_COMPLETE") for k in os.environ):  # click's shell completion
        prefetch(sys.argv[1:])
    # Imports make only objects that live until exit: no cyclic GC passes over
    # them (a few ms of click's start), then never again (frozen).
    gc.disable()
    from smcroute.ctl import main as ctl_main

    gc.freeze()
    gc.enable()
    try:
        code: str | int | None = ctl_main()
    except SystemExit as e:  # how smcroute.ctl ends, after flushing stdout
        code = e.code
    if not isinstance(code, int):
        sys.exit(code)  # never: smcroute.ctl exits with an int
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)  # the interpreter's own ending: it reports what it must
    # Everything is written: skip the interpreter's teardown (freeing every
    # module, click's too), ~10 ms after the last byte of a show.
    os._exit(code)
