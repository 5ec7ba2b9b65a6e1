"""Whole configurations: lines, files, includes, and rules that span lines.

Owns reading configuration files (safely: regular files only, size-capped,
never blocking on a FIFO), splitting them into lines, rejecting absurd lines
(too long, binary, invalid UTF-8) before lark sees them, expanding `include`,
and the cross-line checks (duplicate routes, groups and phyints; one (S,G)
from two inbound interfaces).  Produces a `Config` plus ordered Problems.

Must not raise on any input (every failure becomes a Problem), must not
touch the kernel or any state outside the returned values, and must not
write anything.
"""

from __future__ import annotations

import errno
import gc
import glob
import os
import stat
import unicodedata
from collections.abc import Iterator

from smcroute.model import Config, MGroup, MRoute, Phyint, Problem, Where

from .semantics import build, q
from .syntax import SyntaxProblem, parse_words

MAX_LINE = 4096  # characters; longer lines are rejected without being parsed
MAX_DEPTH = 16  # include nesting
MAX_FILE = 64 << 20  # bytes; a configuration is never this big

_ALLOWED_SPACE = frozenset(" \t\r\f\v")


def display_name(path: str) -> str:
    """A file name safe to print (undecodable bytes shown as \\xNN)."""
    if path.isprintable():
        return path
    raw = path.encode("utf-8", "surrogateescape")
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def read_file(path: str) -> str:
    """The text of a configuration file.  Raises OSError with a usable strerror."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, "Is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = f.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise OSError(errno.EFBIG, f"file too large (over {MAX_FILE >> 20} MiB)")
    # Invalid UTF-8 becomes lone surrogates, reported per line by _bad_chars().
    return data.decode("utf-8", "surrogateescape")


def _bad_chars(body: str) -> str | None:
    """Why a line (comment removed) is not text, or None if it is fine."""
    for col, ch in enumerate(body, 1):
        if ch in _ALLOWED_SPACE or ch.isprintable():
            continue
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            return (
                f"not valid UTF-8 text (byte 0x{code - 0xDC00:02x} at column {col}); "
                f"is this a binary file?"
            )
        if code < 0x20 or code == 0x7F:
            return (
                f"control character 0x{code:02x} at column {col}; expected plain text "
                f"(is this a binary file?)"
            )
        name = unicodedata.name(ch, "")
        what = f"U+{code:04X}" + (f" ({name.lower()})" if name else "")
        if ch.isspace():
            return f"unusual space character {what} at column {col}; use spaces or tabs"
        return f"unexpected character {what} at column {col}"
    return None


def _each_line(text: str) -> Iterator[str]:
    """`text.split("\\n")` one line at a time: a line's string is freed before the
    next is made, instead of 100,000 of them living (and fragmenting the heap
    among the routes made meanwhile) until the end of the file."""
    start = 0
    find = text.find
    while True:
        end = find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start:end]
        start = end + 1


class _Reader:
    def __init__(self) -> None:
        self.config = Config()
        self._phyints: list[Phyint | None] = []
        self._groups: list[MGroup | None] = []
        self._routes: list[MRoute | None] = []
        self._read_routes: list[MRoute] = []  # in file order, checked in result()
        self._problems: list[tuple[int, int, Problem]] = []
        self._file_order: dict[str, int] = {}
        self._stack: list[str] = []  # real paths of the files being read
        # Cross-line checks: key -> index into the lists above.
        self._route_at: dict[tuple[object, ...], int] = {}
        self._sg_at: dict[tuple[object, ...], int] = {}
        self._group_at: dict[tuple[object, ...], int] = {}
        self._phyint_at: dict[str, int] = {}

    # -- problems ---------------------------------------------------------

    def _add(self, p: Problem) -> None:
        order = self._file_order.setdefault(p.where.file, len(self._file_order))
        self._problems.append((order, p.where.line, p))

    def error(self, where: Where, msg: str) -> None:
        self._add(Problem(where, msg))

    def warn(self, where: Where, msg: str) -> None:
        self._add(Problem(where, msg, True))

    def result(self) -> tuple[Config, list[Problem]]:
        # The cross-line route checks run once everything is read: their keys
        # are then allocated after (not among) the routes, and freed whole.
        for r in self._read_routes:
            self._place_route(r)
        self._read_routes = []
        self._route_at.clear()
        self._sg_at.clear()
        self.config.phyints = [p for p in self._phyints if p is not None]
        self.config.groups = [g for g in self._groups if g is not None]
        self.config.routes = [r for r in self._routes if r is not None]
        self._problems.sort(key=lambda t: (t[0], t[1]))
        return self.config, [p for _, _, p in self._problems]

    @staticmethod
    def _ref(here: Where, there: Where) -> str:
        return f"line {there.line}" if here.file == there.file else str(there)

    # -- text -------------------------------------------------------------

    def text(self, text: str, name: str, path: str, real: str, depth: int) -> None:
        """Read `text`, the contents of `path` (display `name`, resolved `real`).

        Includes are relative to the directory of `path` as named, not of its
        resolved target: /etc/smcroute.conf may be a symlink into a package.
        """
        self._file_order.setdefault(name, len(self._file_order))
        self._stack.append(real)
        try:
            self._lines(text, name, os.path.dirname(path), depth)
        finally:
            self._stack.pop()

    def _lines(self, text: str, name: str, basedir: str, depth: int) -> None:
        # A route keeps its origin as a plain int (model.Where): file | line.
        base = int(Where(name, 0))
        for lineno, line in enumerate(_each_line(text), 1):
            if len(line) > MAX_LINE:
                self.error(
                    Where(name, lineno),
                    f"line is {len(line)} characters long; at most {MAX_LINE} are allowed",
                )
                continue
            body = line.partition("#")[0]
            words = body.split()
            if not words:
                continue
            if not body.isprintable():
                why = _bad_chars(body)
                if why:
                    self.error(Where(name, lineno), why)
                    continue
            at = base | lineno
            try:
                sk = parse_words(words)
            except SyntaxProblem as e:
                self.error(Where.of(at), str(e))
                continue
            if sk.kind == "include":
                self._include(words[sk.name], Where.of(at), basedir, depth)
                continue
            obj, probs = build(sk, words, at)
            for p in probs:
                self._add(p)
            if obj is None:
                continue
            if isinstance(obj, MRoute):
                self._route(obj)
            elif isinstance(obj, MGroup):
                self._group(obj)
            else:
                self._phyint(obj)

    # -- cross-line rules -------------------------------------------------

    def _route(self, r: MRoute) -> None:
        self._read_routes.append(r)

    def _place_route(self, r: MRoute) -> None:
        # Keys use int(address): ipaddress' own __hash__ is slow.  (Each of
        # the route's properties is a call: each is read once.)
        fam, source, group = r.mfc_key
        src = -1 if source is None else int(source)
        grp = int(group)
        v4 = fam == 4
        slen, glen = r.source_len, r.group_len
        key = (r.iif, src, slen, grp, glen, v4)
        i = self._route_at.get(key)
        if i is not None:
            old = self._routes[i]
            assert old is not None
            ref = self._ref(r.where, old.where)
            if old.oifs == r.oifs:
                self.warn(r.where, f"mroute {r.sg()} from {r.iif} is a duplicate of {ref}")
                return
            self.warn(
                r.where,
                f"mroute {r.sg()} from {r.iif} is a duplicate of {ref} with other outbound "
                f"interfaces; this line replaces it",
            )
            self._routes[i] = None
        # r.is_template, spelt out: the property is slow through .version.
        full = 32 if v4 else 128
        if not (src < 0 or slen != full or glen != full or r.iif[-1:] == "+"):
            sg = (src, grp, v4)
            j = self._sg_at.get(sg)
            other = self._routes[j] if j is not None else None
            if other is not None and other.iif != r.iif:
                self.warn(
                    r.where,
                    f"{r.sg()} is already routed from {other.iif} on "
                    f"{self._ref(r.where, other.where)}; a source and group can have only one "
                    f"inbound interface, this line ({r.iif}) wins",
                )
                assert j is not None
                self._routes[j] = None
                self._route_at.pop((other.iif, src, other.source_len, grp, other.group_len, v4))
            self._sg_at[sg] = len(self._routes)
        self._route_at[key] = len(self._routes)
        self._routes.append(r)

    def _group(self, g: MGroup) -> None:
        key = (g.iif, g.source, g.source_len, g.group, g.group_len)
        i = self._group_at.get(key)
        if i is not None:
            old = self._groups[i]
            assert old is not None
            self.warn(
                g.where,
                f"mgroup {g.sg()} on {g.iif} is a duplicate of {self._ref(g.where, old.where)}",
            )
            return
        self._group_at[key] = len(self._groups)
        self._groups.append(g)

    def _phyint(self, p: Phyint) -> None:
        i = self._phyint_at.get(p.ifname)
        if i is not None:
            old = self._phyints[i]
            assert old is not None
            ref = self._ref(p.where, old.where)
            same = (old.enable, old.mrdisc, old.ttl_threshold) == (
                p.enable,
                p.mrdisc,
                p.ttl_threshold,
            )
            if same:
                self.warn(p.where, f"phyint {p.ifname} is a duplicate of {ref}")
                return
            self.warn(p.where, f"phyint {p.ifname} was already configured on {ref}; this line wins")
            self._phyints[i] = None
        self._phyint_at[p.ifname] = len(self._phyints)
        self._phyints.append(p)

    # -- include ----------------------------------------------------------

    def _include(self, pattern: str, where: Where, basedir: str, depth: int) -> None:
        if depth + 1 > MAX_DEPTH:
            self.error(
                where,
                f"include {q(pattern)} nests too deeply (more than {MAX_DEPTH} levels); "
                f"is there an include loop?",
            )
            return
        full = os.path.join(glob.escape(basedir), pattern) if basedir else pattern
        folder = os.path.dirname(full) or "."
        if (
            not glob.has_magic(folder)
            and os.path.isdir(folder)
            and not os.access(folder, os.R_OK | os.X_OK)
        ):
            # glob() would silently find nothing: a folder only root can read
            # must not look like an empty one.
            name = display_name(folder)
            self._add(
                Problem(
                    where, f"include: cannot read folder {name}: Permission denied", False, folder
                )
            )
            return
        try:
            paths = sorted(glob.glob(full))
        except (OSError, ValueError, RecursionError) as e:
            self.error(where, f"include {q(pattern)}: cannot expand: {e}")
            return
        for path in paths:
            name = display_name(path)
            try:
                real = os.path.realpath(path)
            except (OSError, ValueError) as e:  # pragma: no cover - realpath rarely fails
                self.error(where, f"include {name}: {e}")
                continue
            if real in self._stack:
                self.error(
                    where,
                    f"include loop: {name} is already being read "
                    f"({' -> '.join(display_name(s) for s in [*self._stack, real])})",
                )
                continue
            if os.path.isdir(path):
                self.warn(where, f"include {q(pattern)}: skipping directory {name}")
                continue
            try:
                text = read_file(path)
            except (OSError, ValueError) as e:
                why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                denied = path if isinstance(e, PermissionError) else ""
                self._add(Problem(where, f"include: cannot read {name}: {why}", False, denied))
                continue
            self.text(text, name, path, real, depth + 1)


def parse_text(text: str, filename: str = "<string>") -> tuple[Config, list[Problem]]:
    """Parse configuration text; `include` is relative to `filename`'s directory."""
    path = "" if filename.startswith("<") else filename
    return _run(text, display_name(filename), path)


def _run(text: str, name: str, path: str) -> tuple[Config, list[Problem]]:
    # The parse allocates several objects per line and frees none of them, so
    # the cyclic GC would scan the growing Config again and again (100,000
    # lines: 4.8 s with it, well under 1 s without).  Nothing here makes
    # cycles; switch it off for the duration and restore the caller's setting.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        try:
            real = os.path.realpath(path) if path else ""
        except (OSError, ValueError):  # pragma: no cover - realpath rarely fails
            real = path
        r = _Reader()
        r.text(text, name, path, real, 0)
        return r.result()
    finally:
        if was_enabled:
            gc.enable()


def parse_file(path: str) -> tuple[Config, list[Problem]]:
    """Parse a configuration file; a missing or unreadable file is one Problem."""
    name = display_name(path)
    try:
        text = read_file(path)
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        denied = path if isinstance(e, PermissionError) else ""
        return Config(), [Problem(Where(name, 0), why, False, denied)]
    return _run(text, name, path)
