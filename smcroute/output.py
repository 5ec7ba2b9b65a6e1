"""Formatting of `smcroutectl show` output from the daemon's JSON documents.

Owns the text layout of doc/SPEC.md §4 "Output of show": the plain form (`-p`,
and whenever stdout is not a terminal), the ANSI heading form for terminals,
the data-rows-only form (`-t`), and the JSON form (`-j`).

Must not: do I/O, talk to the daemon, look at the terminal (the caller says
whether ANSI is wanted), or print anything but what the data holds.  Every
function is pure; malformed data raises `OutputError`.

Layout rules (plain form):

- a table starts with a 79-column `_` rule and its title, then a `=` rule,
  the column header, and another `=` rule (the `=` rules grow with a header
  wider than 79 columns); `show interfaces` has no `_` rule or title;
- the first column is 43 wide (longer (S,G) text is followed by one space);
- the IIF column is `max(5, longest IIF name + 1)` wide, the same in all
  three route tables;
- with `detail`, PACKETS and BYTES (right-aligned, 10 wide, one space
  between them) come between IIF and OIFS, which is preceded by two spaces;
- a route or group table without rows is left out; no line has trailing
  spaces; output ends with a newline unless it is empty.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import Any
else:
    Any = object  # (in `RouteRow` below)

__all__ = [
    "RULE_WIDTH",
    "OutputError",
    "RouteRow",
    "clean",
    "format_json",
    "format_show",
    "render",
    "route_heading",
    "routes_json",
    "routes_text",
    "strip_counters",
]

RULE_WIDTH = 79
FIRST_COL = 43
MIN_IIF = 5
COUNTER_WIDTH = 10

_UNDERLINE = "\x1b[4m"
_REVERSE = "\x1b[7m"
_RESET = "\x1b[0m"

ROUTE_TABLES = (
    ("asm", "(*,G) Template Rules"),
    ("ssm", "(S,G) Rules"),
    ("kernel", "Kernel MFC Table"),
)
GROUP_TABLES = (
    ("conf", "Group Memberships Table"),
    ("kernel", "Kernel Group Membership Table"),  # only with detail
)


class OutputError(ValueError):
    """The daemon's data does not have the documented shape."""


# --- helpers -----------------------------------------------------------------


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise OutputError(f"malformed {what}: expected an object")
    return value


def _list(value: Any, what: str) -> Sequence[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise OutputError(f"malformed {what}: expected a list")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise OutputError(f"malformed {what}: expected a string")
    return _clean(value)


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _clean(text: str) -> str:
    # Never let data from the wire put control characters on a terminal.
    return _CONTROL.sub("?", text) if _CONTROL.search(text) else text


clean = _clean


def _opt_str(value: Any, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _count(value: Any, what: str) -> str:
    if value is None:
        return "0"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OutputError(f"malformed {what}: expected a number")
    return str(int(value))


def _opt_num(value: Any, what: str) -> str:
    if value is None:
        return "N/A"
    if isinstance(value, bool) or not isinstance(value, int):
        raise OutputError(f"malformed {what}: expected a number or null")
    return str(value)


def _sg(entry: Mapping[str, Any], what: str) -> str:
    source = _opt_str(entry.get("source"), f"{what} source")
    group = _str(entry.get("group"), f"{what} group")
    return f"({source or '*'}, {group})"


def _first(text: str) -> str:
    return text.ljust(FIRST_COL - 1) + " "


class _Out:
    """Collects lines; knows the heading style."""

    def __init__(self, plain: bool, headings: bool) -> None:
        self.plain = plain
        self.headings = headings
        self.lines: list[str] = []

    def title(self, text: str) -> None:
        if not self.headings:
            return
        if self.plain:
            self.lines.append("_" * RULE_WIDTH)
        else:
            self.lines.append(_UNDERLINE + " " * RULE_WIDTH + _RESET)
        self.lines.append(text)

    def header(self, text: str) -> None:
        if not self.headings:
            return
        text = text.rstrip()
        width = max(RULE_WIDTH, len(text))
        if self.plain:
            self.lines += ["=" * width, text, "=" * width]
        else:
            self.lines.append(_REVERSE + text.ljust(width) + _RESET)

    def row(self, text: str) -> None:
        self.lines.append(text.rstrip())

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


# --- tables --------------------------------------------------------------------


Formatted = list[list[tuple[str, str, str, str, str]]]  # per table: (sg, iif, pk, by, oifs)
Ifs = tuple[str, tuple[str, ...]]
"""A route's IIF and OIFs (rows share one such pair: their text is made once)."""
RouteRow = tuple[str | None, str, Ifs, Any, Any]
"""One route as `show` knows it: source text (None: any), group text, (IIF,
OIFs), packets, bytes (counters only matter with detail)."""


def _routes(data: Any, out: _Out, detail: bool) -> None:
    routes = _obj(_obj(data, "routes reply").get("routes"), "routes")
    rows: Formatted = []
    for key, _title in ROUTE_TABLES:
        formatted = []
        for e in _list(routes.get(key), f"routes.{key}"):
            r = _obj(e, "route")
            iif = _str(r.get("iif"), "route iif")
            oifs = " ".join(_str(o, "route oif") for o in _list(r.get("oifs"), "route oifs"))
            packets = _count(r.get("packets"), "route packets") if detail else ""
            nbytes = _count(r.get("bytes"), "route bytes") if detail else ""
            formatted.append((_sg(r, "route"), iif, packets, nbytes, oifs))
        rows.append(formatted)
    longest = max((len(r[1]) for table in rows for r in table), default=0)
    pad = max(MIN_IIF, longest + 1) - 1
    if detail:
        lines = [
            f"{sg:<{FIRST_COL - 1}} {iif:<{pad}}{pk:>{COUNTER_WIDTH}} {by:>{COUNTER_WIDTH}}  {o}"
            for table in rows
            for sg, iif, pk, by, o in table
        ]
    else:
        lines = [
            f"{sg:<{FIRST_COL - 1}} {iif:<{pad}} {o}"
            for table in rows
            for sg, iif, _p, _b, o in table
        ]
    i = 0
    for (_key, title), table in zip(ROUTE_TABLES, rows, strict=True):
        if table:
            _route_heading(out, title, pad, detail)
            out.lines += [line.rstrip() for line in lines[i : i + len(table)]]
            i += len(table)


def route_heading(title: str, pad: int, detail: bool, plain: bool, headings: bool) -> str:
    """The lines before a route table's rows (none without `headings`)."""
    out = _Out(plain, headings)
    _route_heading(out, title, pad, detail)
    return out.text()


def _route_heading(out: _Out, title: str, pad: int, detail: bool) -> None:
    out.title(title)
    out.header(
        _first("ROUTE (S,G)")
        + "IIF".ljust(pad)
        + (f"{'PACKETS':>{COUNTER_WIDTH}} {'BYTES':>{COUNTER_WIDTH}}  " if detail else " ")
        + "OIFS"
    )


def routes_text(
    tables: Sequence[Sequence[RouteRow]],
    ifs: Sequence[Ifs],
    *,
    detail: bool,
    plain: bool,
    headings: bool,
) -> str:
    """`show routes` from the daemon's own rows (asm, ssm, kernel; `ifs`: every
    (IIF, OIFs) pair they hold): what `format_show` makes of the same routes
    as a document.  One %-format per row: what follows the (S,G) column is
    made once per (IIF, OIFs) pair."""
    pad = max(MIN_IIF, max((len(iif) for iif, _ in ifs), default=0) + 1) - 1
    W = COUNTER_WIDTH
    tail: dict[int, str] = {}  # id(pair) -> the row's format, (S,G) and counters to fill in
    for pair in ifs:
        iif, oifs = pair
        o = _clean(" ".join(oifs))
        if detail:
            # Counters end in a digit: only the OIFs' side can be stripped.
            head = f" {_clean(iif):<{pad}}".replace("%", "%%")
            rest = f"  {o}".rstrip().replace("%", "%%")
            tail[id(pair)] = f"%-{FIRST_COL - 1}s{head}%s %s{rest}"
        else:
            rest = f" {_clean(iif):<{pad}} {o}".rstrip().replace("%", "%%")
            # (S,G) ends in ")": with nothing after it, the line is the (S,G) alone.
            tail[id(pair)] = f"%-{FIRST_COL - 1}s{rest}" if rest else "%s"
    counts: dict[Any, str] = {}  # a counter -> its column (idle routes: many zeros)

    def count(n: Any) -> str:
        c = counts[n] = f"{int(n):>{W}}"
        return c

    c = counts.get

    def lines(table: Sequence[RouteRow]) -> list[str]:
        if detail:
            return [
                tail[id(o)] % (f"({s or '*'}, {g})", c(p) or count(p), c(b) or count(b))
                for s, g, o, p, b in table
            ]
        return [tail[id(o)] % f"({'*' if s is None else s}, {g})" for s, g, o, _p, _b in table]

    out = _Out(plain, headings)
    made: dict[int, str] = {}
    for (_key, title), table in zip(ROUTE_TABLES, tables, strict=True):
        if not table:
            continue
        _route_heading(out, title, pad, detail)
        out.lines += _reusing(made, table, lines)
    return out.text()


def _reusing(
    made: dict[int, str], table: Sequence[RouteRow], make: Callable[[Sequence[RouteRow]], list[str]]
) -> list[str]:
    """`make(table)`, but a row that is the very row of an earlier table (a
    rule's kernel entry) takes the text made for it there; `made` (id(row) ->
    text) learns this table's texts.  The rows must stay alive meanwhile."""
    ids = list(map(id, table))
    old = list(map(made.get, ids)) if made else []
    if not old or old.count(None) == len(old):
        new = make(table)
    else:
        fresh = iter(make([row for row, t in zip(table, old, strict=True) if t is None]))
        new = [next(fresh) if t is None else t for t in old]
    made.update(zip(ids, new, strict=True))
    return new


def routes_json(tables: Sequence[Sequence[RouteRow]], ifs: Sequence[Ifs], *, detail: bool) -> str:
    """`show -j routes` from the daemon's own rows (`ifs` as for `routes_text`):
    byte for byte what `format_json` prints for the same routes (json.dumps,
    indent 2)."""
    from _json import encode_basestring_ascii as q

    i6, i8, i10 = " " * 6, " " * 8, " " * 10
    tail: dict[int, str] = {}  # id(pair) -> the object's end: IIF, OIFs (and counters)
    for pair in ifs:
        iif, oifs = pair
        inner = f",\n{i10}".join(q(x) for x in oifs)
        o = f"[\n{i10}{inner}\n{i8}]" if oifs else "[]"
        end = f'{i8}"iif": {q(iif)},\n{i8}"oifs": {o}'.replace("%", "%%")
        if detail:
            end += f',\n{i8}"packets": %d,\n{i8}"bytes": %d'
        tail[id(pair)] = f'{i6}{{\n{i8}"source": %s,\n{i8}"group": %s,\n{end}\n{i6}}}'

    def objects(table: Sequence[RouteRow]) -> list[str]:
        if detail:
            return [
                tail[id(o)] % ("null" if s is None else q(s), q(g), int(pk), int(by))
                for s, g, o, pk, by in table
            ]
        return [tail[id(o)] % ("null" if s is None else q(s), q(g)) for s, g, o, _p, _b in table]

    parts = []
    made: dict[int, str] = {}
    for (key, _title), table in zip(ROUTE_TABLES, tables, strict=True):
        if not table:
            parts.append(f'    "{key}": []')
            continue
        objs = _reusing(made, table, objects)
        parts.append(f'    "{key}": [\n' + ",\n".join(objs) + "\n    ]")
    return '{\n  "routes": {\n' + ",\n".join(parts) + "\n  }\n}\n"


def _groups(data: Any, out: _Out, detail: bool) -> None:
    groups = _obj(_obj(data, "groups reply").get("groups"), "groups")
    tables = GROUP_TABLES if detail else GROUP_TABLES[:1]
    for key, title in tables:
        entries = _list(groups.get(key), f"groups.{key}")
        if not entries:
            continue
        out.title(title)
        out.header(_first("GROUP (S,G)") + "IIF")
        for e in entries:
            g = _obj(e, "group")
            out.row(_first(_sg(g, "group")) + _str(g.get("iif"), "group iif"))


IF_COUNTERS = ("packets_in", "bytes_in", "packets_out", "bytes_out")
IF_HEADERS = ("PKTS IN", "BYTES IN", "PKTS OUT", "BYTES OUT")


def _interfaces(data: Any, out: _Out, detail: bool = False) -> None:
    entries = _list(_obj(data, "interfaces reply").get("interfaces"), "interfaces")
    rows = []
    for e in entries:
        i = _obj(e, "interface")
        index = i.get("index")
        if isinstance(index, bool) or not isinstance(index, int):
            raise OutputError("malformed interface index: expected a number")
        name = _str(i.get("name"), "interface name")
        vif = _opt_num(i.get("vif"), "interface vif")
        mif = _opt_num(i.get("mif"), "interface mif")
        counts = [_count(i.get(k), f"interface {k}") for k in IF_COUNTERS] if detail else []
        rows.append((str(index), name, vif, mif, *counts))
    width = max([len("PHYINT")] + [len(r[1]) for r in rows]) + 2

    def line(index: str, name: str, vif: str, mif: str, *counts: str) -> str:
        text = f"{index:>6} {name:<{width}}{vif:>3}{mif:>5}"
        return text + "".join(f" {c:>{COUNTER_WIDTH}}" for c in counts)

    out.header(line("INDEX", "PHYINT", "VIF", "MIF", *(IF_HEADERS if detail else ())))
    for row in rows:
        out.row(line(*row))


def _pending(data: Any, out: _Out) -> None:
    entries = _list(_obj(data, "pending reply").get("pending"), "pending")
    if not entries:
        if out.headings:
            out.row("No pending routes or groups")
        return
    out.header("PENDING ROUTES AND GROUPS")
    for e in entries:
        p = _obj(e, "pending entry")
        kind = _str(p.get("kind"), "pending kind")
        words = [kind.ljust(7), "from", _str(p.get("iif"), "pending iif")]
        source = _opt_str(p.get("source"), "pending source")
        if source is not None:
            words += ["source", source]
        group = _opt_str(p.get("group"), "pending group")
        if group is not None:
            words += ["group", group]
        oifs = [_str(o, "pending oif") for o in _list(p.get("oifs"), "pending oifs")]
        if oifs or kind == "mroute":
            words += ["to", *oifs]
        out.row(" ".join(words))


# --- entry points ----------------------------------------------------------------


COUNTER_KEYS = frozenset(
    {"packets", "bytes", "wrong_if", "pps", "bps", "last_seen", "learned", *IF_COUNTERS,
     "ipv4", "ipv6"}
)  # fmt: skip


def _strip(entries: Any) -> Any:
    if not isinstance(entries, list):
        return entries
    return [
        {k: v for k, v in e.items() if k not in COUNTER_KEYS} if isinstance(e, dict) else e
        for e in entries
    ]


def strip_counters(data: Any) -> Any:
    """A copy of a `show routes`/`interfaces` document without counters and rates."""
    if isinstance(data, dict) and isinstance(data.get("interfaces"), list):
        return {**data, "interfaces": _strip(data["interfaces"])}
    if not isinstance(data, dict) or not isinstance(data.get("routes"), dict):
        return data
    routes = {key: _strip(entries) for key, entries in data["routes"].items()}
    return {**data, "routes": routes}


def format_json(data: Any, *, detail: bool) -> str:
    """The `-j` document: counters only with `detail`, one trailing newline."""
    if not detail:
        data = strip_counters(data)
    try:
        return _indented(data) + "\n"
    except _Unusual:
        pass
    try:
        return json.dumps(data, indent=2, ensure_ascii=True) + "\n"
    except (TypeError, ValueError, RecursionError) as e:
        raise OutputError(f"cannot print reply as JSON: {e}") from e


class _Unusual(Exception):
    """A value `_indented` leaves to json.dumps."""


def _float(v: float) -> str:
    if v != v or v in (float("inf"), float("-inf")):
        raise _Unusual
    return float.__repr__(v)


def _indented(data: Any) -> str:
    """json.dumps(data, indent=2, ensure_ascii=True), byte for byte, for plain
    JSON values (str keys; str, int, float, None, bool, list, dict values),
    several times faster: with an indent, json.dumps runs its pure-Python
    encoder, a generator per value (-j -d of 10,000 routes: ~0.2 s)."""
    from _json import encode_basestring_ascii as q

    scalar: dict[type, Any] = {
        str: q,
        int: int.__repr__,
        float: _float,
        type(None): lambda _v: "null",
        bool: lambda v: "true" if v else "false",
    }
    keys: dict[str, str] = {}  # a key -> its JSON text and ": "

    def key(k: Any) -> str:
        if type(k) is not str:
            raise _Unusual
        t = keys[k] = q(k) + ": "
        return t

    def enc(v: Any, level: int) -> str:
        f = scalar.get(type(v))
        if f is not None:
            return f(v)  # type: ignore[no-any-return]
        sep = ",\n" + "  " * (level + 1)
        if type(v) is list:
            if not v:
                return "[]"
            items = [f(x) if (f := scalar.get(type(x))) else enc(x, level + 1) for x in v]
            return "[" + sep[1:] + sep.join(items) + "\n" + "  " * level + "]"
        if type(v) is dict:
            if not v:
                return "{}"
            parts = [
                (keys.get(k) or key(k))
                + (f(x) if (f := scalar.get(type(x))) else enc(x, level + 1))
                for k, x in v.items()
            ]
            return "{" + sep[1:] + sep.join(parts) + "\n" + "  " * level + "}"
        raise _Unusual

    return enc(data, 0)


def render(kind: str, data: Any, fmt: str, *, detail: bool) -> str:
    """`show KIND` as smcroutectl prints it; `fmt` is the request's format:
    "json" (`-j`), "text" (plain), "ansi" (terminal headings), "rows" (`-t`)."""
    if fmt == "json":
        return format_json(data, detail=detail)
    return format_show(kind, data, detail=detail, plain=fmt != "ansi", headings=fmt != "rows")


def format_show(kind: str, data: Any, *, detail: bool, plain: bool, headings: bool) -> str:
    """Text for `show KIND` (routes, groups, interfaces, pending).

    `plain` selects `=`/`_` rules instead of ANSI attributes; `headings=False`
    is `-t` (data rows only).  Returns "" when there is nothing to show.
    """
    out = _Out(plain, headings)
    if kind == "routes":
        _routes(data, out, detail)
    elif kind == "groups":
        _groups(data, out, detail)
    elif kind == "interfaces":
        _interfaces(data, out, detail)
    elif kind == "pending":
        _pending(data, out)
    else:
        raise OutputError(f"unknown table {kind!r}")
    return out.text()
