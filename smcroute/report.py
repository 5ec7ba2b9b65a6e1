"""Plain text for `smcroutectl explain` and `smcroutectl doctor` replies.

Owns the layout of both: one line per check or problem, its verdict or
severity first, the fix indented below it.  Pure functions; malformed data
raises `ReportError`.  Loaded only by those two commands (smcroutectl's
other commands do not import it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_CONTROL = re.compile("[\x00-\x1f\x7f]")
VERDICTS = {"ok": "ok", "fail": "FAIL", "warn": "WARN", "info": "info"}
SEVERITIES = {"error": "ERROR", "warning": "WARNING", "info": "info"}


class ReportError(ValueError):
    """The daemon's document does not have the documented shape."""


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ReportError(f"malformed {what}: expected an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ReportError(f"malformed {what}: expected a list")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ReportError(f"malformed {what}: expected a string")
    return _CONTROL.sub("?", value)


def _item(tag: str, ident: str, detail: str, fix: Any) -> list[str]:
    lines = [f"  {tag:<7} {ident:<15} {detail}"]
    if fix is not None:
        lines.append(f"  {'':<7} {'':<15} fix: {_text(fix, 'fix')}")
    return lines


def explain(data: Any) -> str:
    doc = _obj(_obj(data, "explain reply").get("explain"), "explain")
    flow = f"({_text(doc.get('source'), 'source')}, {_text(doc.get('group'), 'group')})"
    lines: list[str] = []
    for p in _list(doc.get("paths"), "paths"):
        path = _obj(p, "path")
        iif = path.get("iif")
        where = f"from {_text(iif, 'iif')}" if iif is not None else "from no known interface"
        verdict = _text(path.get("verdict"), "verdict")
        cause = path.get("cause")
        head = {
            "ok": "forwarded",
            "warning": "forwarded, with a warning",
            "blocked": "NOT forwarded",
        }
        summary = head.get(verdict, verdict)
        if cause is not None:
            summary += f" ({_text(cause, 'cause')})"
        lines.append(f"{flow} {where}: {summary}")
        for c in _list(path.get("checks"), "checks"):
            ch = _obj(c, "check")
            tag = VERDICTS.get(_text(ch.get("verdict"), "verdict"), "?")
            lines += _item(
                tag,
                _text(ch.get("check"), "check"),
                _text(ch.get("detail"), "detail"),
                ch.get("fix"),
            )
    return "".join(line + "\n" for line in lines)


def healthy(data: Any) -> bool:
    doc = _obj(_obj(data, "doctor reply").get("doctor"), "doctor")
    return doc.get("healthy") is True


def doctor(data: Any) -> str:
    doc = _obj(_obj(data, "doctor reply").get("doctor"), "doctor")
    problems = _list(doc.get("problems"), "problems")
    lines = []
    for p in problems:
        pr = _obj(p, "problem")
        tag = SEVERITIES.get(_text(pr.get("severity"), "severity"), "?")
        lines += _item(
            tag, _text(pr.get("check"), "check"), _text(pr.get("detail"), "detail"), pr.get("fix")
        )
    bad = sum(1 for p in problems if _obj(p, "problem").get("severity") != "info")
    lines.append("nothing wrong found" if healthy(data) else f"{bad} problem(s) found")
    return "".join(line + "\n" for line in lines)


def render(name: str, data: Any, *, as_json: bool = False) -> str:
    """Plain text for `explain`/`doctor`, or the document as indented JSON (`-j`)."""
    if as_json:
        healthy(data) if name == "doctor" else _obj(_obj(data, "reply").get("explain"), "explain")
        return json.dumps(data, indent=2, ensure_ascii=True) + "\n"
    return explain(data) if name == "explain" else doctor(data)
