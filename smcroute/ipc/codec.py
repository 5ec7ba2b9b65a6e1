"""The control protocol's wire format and its pure codec.

Owns: one line of UTF-8 JSON per request and per response, over an AF_UNIX
SOCK_STREAM socket (default path `/var/run/NAME.sock`); `encode_request`
(from `smcroute.ipc.request`, with the protocol's limits), `decode_request`,
`encode_response` and `decode_response`, which never raise anything but
`IpcError`, whatever bytes they are given.

Must not: parse address arguments (the daemon does that with
`smcroute.parser`), touch a socket, the engine or the kernel.

Wire format::

    request   {"cmd": "add"|"remove"|"join"|"leave"|"show"|"flush"|"reload"|"kill",
               "args": [str, ...], "detail": bool[, "format": FORMAT]}\\n
    response  {"ok": true, "data": <any JSON value or null>, "warnings": [str, ...]}\\n
              {"ok": true, "text": N, "warnings": [str, ...]}\\n + N bytes of UTF-8
              {"ok": false, "error": "message", "warnings": [str, ...]}\\n

A `show` request with a FORMAT ("json" = `-j`, "text" = plain, "ansi" =
terminal headings, "rows" = `-t`) is answered with the output already
rendered: a reply line holding the text's length in bytes, then the text
itself, which the client copies to its output as it is.  Without FORMAT the
reply carries the `show` document as "data".

A connection may carry several requests in sequence; the server answers them
in order, one response (line, plus its text) per request line.  A malformed or
oversized request gets an error response, after which the server closes the
connection.
"""

from __future__ import annotations

# The C half of the json package: smcroutectl decodes the reply with it
# directly, without importing `json` (its decoder compiles regular
# expressions at import: ~5 ms of every smcroutectl call).
from _json import make_scanner as _make_scanner
from collections.abc import Iterable

# The request side, importable alone (smcroutectl sends its show with it).
from smcroute.ipc.request import (
    CMDS,
    FORMATS,
    MAX_ARG_LEN,
    MAX_ARGS,
    MAX_REQUEST,
    SHOW_KINDS,
    IpcError,
    check_args,
    default_socket_path,
    encode_request,
)
from smcroute.records import NamedTuple  # typing's, without importing typing

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import Any

MAX_TEXT = 1 << 30  # bytes of rendered text a client accepts in one reply

__all__ = [
    "CMDS",
    "FORMATS",
    "MAX_ARGS",
    "MAX_ARG_LEN",
    "MAX_REQUEST",
    "MAX_TEXT",
    "SHOW_KINDS",
    "IpcError",
    "Request",
    "Response",
    "decode_request",
    "decode_response",
    "default_socket_path",
    "encode_request",
    "encode_response",
]


# NamedTuples, not dataclasses: smcroutectl imports this module, and every
# millisecond of its start-up is felt.
class Request(NamedTuple):
    cmd: str
    args: tuple[str, ...] = ()
    detail: bool = False
    format: str | None = None  # show: render the output in the daemon (see FORMATS)


class Response(NamedTuple):
    ok: bool
    data: Any = None
    error: str | None = None
    warnings: tuple[str, ...] = ()
    text: bytes | None = None  # a rendered show, sent after the reply line
    text_len: int | None = None  # decoded reply line: bytes of text that follow it

    @classmethod
    def success(
        cls, data: Any = None, warnings: Iterable[str] = (), text: bytes | None = None
    ) -> Response:
        return cls(True, data, None, tuple(warnings), text)

    @classmethod
    def failure(cls, error: str, warnings: Iterable[str] = ()) -> Response:
        return cls(False, None, error, tuple(warnings))


class _Decoder:
    """What `_json`'s scanner reads from a `json.JSONDecoder`: the defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
    parse_constant = parse_constant.__getitem__  # type: ignore[assignment]


_scan = _make_scanner(_Decoder())  # type: ignore[arg-type]
_WS = " \t\n\r"


def _json_error(msg: str, doc: str, pos: int) -> ValueError:
    """The message `json.JSONDecodeError` would give."""
    line = doc.count("\n", 0, pos) + 1
    col = pos - doc.rfind("\n", 0, pos)
    return ValueError(f"{msg}: line {line} column {col} (char {pos})")


def _json_loads(doc: str) -> Any:
    """`json.loads(doc)` for a str, on `_json`'s scanner."""
    start = len(doc) - len(doc.lstrip(_WS))
    try:
        obj, end = _scan(doc, start)
    except StopIteration as e:
        raise _json_error("Expecting value", doc, e.value) from None
    rest = len(doc) - len(doc[end:].lstrip(_WS))
    if rest != len(doc):
        raise _json_error("Extra data", doc, rest)
    return obj


def _loads(line: bytes | str) -> Any:
    try:
        if isinstance(line, bytes | bytearray | memoryview):
            line = bytes(line).decode("utf-8")
        return _json_loads(line)
    except UnicodeDecodeError as e:
        raise IpcError("not valid UTF-8") from e
    except RecursionError as e:
        raise IpcError("malformed JSON: nested too deeply") from e
    except ValueError as e:  # json.JSONDecodeError and int conversion limits
        raise IpcError(f"malformed JSON: {e}") from e
    except Exception as e:  # anything else json may throw on odd input
        raise IpcError(f"malformed JSON: {e}") from e


def _dumps(obj: Any) -> bytes:
    import json  # the daemon's side (responses): loaded there anyway

    try:
        text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise IpcError(f"cannot encode message: {e}") from e
    return text.encode("ascii") + b"\n"


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
    fmt = obj.get("format")
    if fmt is not None and (not isinstance(fmt, str) or fmt not in FORMATS):
        raise IpcError("format must be json, text, ansi or rows")
    return Request(cmd, check_args(args), detail, fmt)


def encode_response(resp: Response) -> bytes:
    """One response line, newline included."""
    warnings = list(resp.warnings)
    if not all(isinstance(w, str) for w in warnings):
        raise IpcError("warnings must be strings")
    if resp.ok and resp.text is not None:
        if not isinstance(resp.text, bytes):
            raise IpcError("rendered text must be bytes")
        return _dumps({"ok": True, "text": len(resp.text), "warnings": warnings}) + resp.text
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
        n = obj.get("text")
        if n is None:
            return Response(True, obj.get("data"), None, tuple(warnings))
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_TEXT:
            raise IpcError("reply has a malformed text length")
        return Response(True, None, None, tuple(warnings), None, n)
    error = obj.get("error")
    if not isinstance(error, str):
        raise IpcError("error reply without a message")
    return Response(False, None, error, tuple(warnings))
