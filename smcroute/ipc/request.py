"""The request line a client sends, with nothing imported.

Owns `encode_request`, the commands, show tables and formats a request may
name, the limits it obeys (`smcroute.ipc.codec` checks the same on the
daemon's side with `check_args`), `IpcError` and `default_socket_path`.

`smcroutectl` sends a `show` with this module alone loaded (see
`smcroute.ctl_entry`): the daemon renders while the client imports the rest.
So: no import but `_json`'s C string encoder (`typing`, `collections` and
`re` would cost that send ~10-20 ms).  Must not: touch a socket.
"""

from __future__ import annotations

from _json import encode_basestring_ascii as _quote

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

CMDS = frozenset(
    {
        "add",
        "remove",
        "join",
        "leave",
        "show",
        "flush",
        "reload",
        "kill",
        "explain",
        "doctor",
        "log",
    }
)
SHOW_KINDS = ("routes", "groups", "interfaces", "pending")
MAX_REQUEST = 64 * 1024  # bytes in one request line, newline excluded
MAX_ARGS = 64
MAX_ARG_LEN = 256
FORMATS = frozenset({"json", "text", "ansi", "rows"})


class IpcError(Exception):
    """Anything wrong with a control message (or the connection carrying it)."""


def default_socket_path(ident: str = "smcroute") -> str:
    """`/var/run/NAME.sock`, the socket `smcrouted -i NAME` listens on."""
    return f"/var/run/{ident}.sock"


def _is_printable(s: str) -> bool:
    return all(c >= " " and c != "\x7f" for c in s)


def check_args(args: Sequence[object]) -> tuple[str, ...]:
    """The arguments of a request, checked against the limits."""
    if len(args) > MAX_ARGS:
        raise IpcError(f"too many arguments ({len(args)}, at most {MAX_ARGS})")
    out = []
    for a in args:
        if not isinstance(a, str):
            raise IpcError("arguments must be strings")
        if len(a) > MAX_ARG_LEN:
            raise IpcError(f"argument too long ({len(a)} characters, at most {MAX_ARG_LEN})")
        if not _is_printable(a):
            raise IpcError("argument contains control characters")
        out.append(a)
    return tuple(out)


def encode_request(
    cmd: str, args: Sequence[str] = (), detail: bool = False, format: str | None = None
) -> bytes:
    """One request line, newline included."""
    if cmd not in CMDS:
        raise IpcError(f"unknown command {cmd!r}")
    if not isinstance(detail, bool):
        raise IpcError("detail must be true or false")
    if isinstance(args, str):
        raise IpcError("args must be a list of strings")
    checked = check_args(list(args))
    # By hand, byte for byte what json.dumps(..., separators=(",", ":")) gives.
    parts = ['{"cmd":', _quote(cmd), ',"args":[', ",".join(map(_quote, checked)), "]"]
    parts.append(',"detail":true' if detail else ',"detail":false')
    if format is not None:
        if format not in FORMATS:
            raise IpcError(f"unknown format {format!r}")
        parts += [',"format":', _quote(format)]
    line = ("".join(parts) + "}\n").encode("ascii")
    if len(line) - 1 > MAX_REQUEST:
        raise IpcError("request too large")
    return line
