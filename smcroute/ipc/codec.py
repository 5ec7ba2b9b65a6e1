"""The control protocol's wire format and its pure codec.

Owns: one line of UTF-8 JSON per request and per response, over an AF_UNIX
SOCK_STREAM socket (default path `/var/run/NAME.sock`); `encode_request`,
`decode_request`, `encode_response` and `decode_response`, which never raise
anything but `IpcError`, whatever bytes they are given; the protocol's
limits.

Must not: parse address arguments (the daemon does that with
`smcroute.parser`), touch a socket, the engine or the kernel.

Wire format::

    request   {"cmd": "add"|"remove"|"join"|"leave"|"show"|"flush"|"reload"|"kill",
               "args": [str, ...], "detail": bool}\\n
    response  {"ok": true, "data": <any JSON value or null>, "warnings": [str, ...]}\\n
              {"ok": false, "error": "message", "warnings": [str, ...]}\\n

A connection may carry several requests in sequence; the server answers them
in order, one response line per request line.  A malformed or oversized
request gets an error response, after which the server closes the connection.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

CMDS = frozenset({"add", "remove", "join", "leave", "show", "flush", "reload", "kill"})
SHOW_KINDS = ("routes", "groups", "interfaces", "pending")
MAX_REQUEST = 64 * 1024  # bytes in one request line, newline excluded
MAX_ARGS = 64
MAX_ARG_LEN = 256


class IpcError(Exception):
    """Anything wrong with a control message (or the connection carrying it)."""


def default_socket_path(ident: str = "smcroute") -> str:
    """`/var/run/NAME.sock`, the socket `smcrouted -i NAME` listens on."""
    return f"/var/run/{ident}.sock"


@dataclass(frozen=True, slots=True)
class Request:
    cmd: str
    args: tuple[str, ...] = ()
    detail: bool = False


@dataclass(frozen=True, slots=True)
class Response:
    ok: bool
    data: Any = None
    error: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def success(cls, data: Any = None, warnings: Iterable[str] = ()) -> Response:
        return cls(True, data, None, tuple(warnings))

    @classmethod
    def failure(cls, error: str, warnings: Iterable[str] = ()) -> Response:
        return cls(False, None, error, tuple(warnings))


def _is_printable(s: str) -> bool:
    return all(c >= " " and c != "\x7f" for c in s)


def _check_args(args: Sequence[Any]) -> tuple[str, ...]:
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


def _loads(line: bytes | str) -> Any:
    try:
        if isinstance(line, bytes | bytearray | memoryview):
            line = bytes(line).decode("utf-8")
        return json.loads(line)
    except UnicodeDecodeError as e:
        raise IpcError("not valid UTF-8") from e
    except RecursionError as e:
        raise IpcError("malformed JSON: nested too deeply") from e
    except ValueError as e:  # json.JSONDecodeError and int conversion limits
        raise IpcError(f"malformed JSON: {e}") from e
    except Exception as e:  # anything else json may throw on odd input
        raise IpcError(f"malformed JSON: {e}") from e


def _dumps(obj: Any) -> bytes:
    try:
        text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise IpcError(f"cannot encode message: {e}") from e
    return text.encode("ascii") + b"\n"


def encode_request(cmd: str, args: Sequence[str] = (), detail: bool = False) -> bytes:
    """One request line, newline included."""
    if cmd not in CMDS:
        raise IpcError(f"unknown command {cmd!r}")
    if not isinstance(detail, bool):
        raise IpcError("detail must be true or false")
    if isinstance(args, str):
        raise IpcError("args must be a list of strings")
    checked = _check_args(list(args))
    line = _dumps({"cmd": cmd, "args": list(checked), "detail": detail})
    if len(line) - 1 > MAX_REQUEST:
        raise IpcError("request too large")
    return line


def decode_request(line: bytes) -> Request:
    """Validate one request line (trailing newline optional)."""
    if len(line.rstrip(b"\r\n")) > MAX_REQUEST:
        raise IpcError("request too large")
    obj = _loads(line)
    if not isinstance(obj, dict):
        raise IpcError("request must be a JSON object")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str):
        raise IpcError("request has no command")
    if cmd not in CMDS:
        raise IpcError(f"unknown command {cmd[:32]!r}")
    args = obj.get("args", [])
    if not isinstance(args, list):
        raise IpcError("args must be a list of strings")
    detail = obj.get("detail", False)
    if not isinstance(detail, bool):
        raise IpcError("detail must be true or false")
    return Request(cmd, _check_args(args), detail)


def encode_response(resp: Response) -> bytes:
    """One response line, newline included."""
    warnings = list(resp.warnings)
    if not all(isinstance(w, str) for w in warnings):
        raise IpcError("warnings must be strings")
    if resp.ok:
        return _dumps({"ok": True, "data": resp.data, "warnings": warnings})
    error = resp.error if isinstance(resp.error, str) and resp.error else "unknown error"
    obj: dict[str, Any] = {"ok": False, "error": error}
    if warnings:
        obj["warnings"] = warnings
    return _dumps(obj)


def decode_response(line: bytes) -> Response:
    """Validate one response line (trailing newline optional)."""
    obj = _loads(line)
    if not isinstance(obj, dict):
        raise IpcError("reply is not a JSON object")
    ok = obj.get("ok")
    if not isinstance(ok, bool):
        raise IpcError("reply has no status")
    warnings = obj.get("warnings", [])
    if warnings is None:
        warnings = []
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise IpcError("reply has malformed warnings")
    if ok:
        return Response(True, obj.get("data"), None, tuple(warnings))
    error = obj.get("error")
    if not isinstance(error, str):
        raise IpcError("error reply without a message")
    return Response(False, None, error, tuple(warnings))
