"""`show routes` kept rendered between shows and brought up to date by difference.

Owns `KeptRoutes`: one form of `show routes` (text lines -- plain, ANSI or
rows alike -- or JSON objects; with or without counters) as three tables of
rendered rows (asm, ssm, kernel: one bytes object each, the rows one after
the other, each row's length in an array).  A show compares the engine's
routes, kernel entries and VIF names with the lists it rendered last (in C,
by identity first: the common beginning and end) and renders only the rows
in between: a route added or removed renders one or two rows, a reload or an
interface renamed all of them.  With counters, each row holds `%d`
placeholders and the counters of a dump made for this show are put in with
one %-format of the whole text: the counters are always the kernel's now.
The bytes are those of `smcroute.show.render_routes` (the tests hold it).

Must not: do I/O, read the clock, or change the engine.  It holds the
engine's objects of its last show and that show's text (the daemon keeps it
no longer than a steady sample's interval: see smcroute.daemon_show).
"""

from __future__ import annotations

from _json import encode_basestring_ascii as q
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Address
from itertools import repeat
from operator import attrgetter, itemgetter

from smcroute.engine.core import Engine, Mfc
from smcroute.model import Address, MRoute
from smcroute.output import COUNTER_WIDTH, FIRST_COL, MIN_IIF, ROUTE_TABLES, clean, route_heading
from smcroute.stats import Sample, _key  # _key: key64 of an (S,G), IPv4 inline

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import Any


_DECIMAL = [str(i) for i in range(256)]
_I6, _I8, _I10 = " " * 6, " " * 8, " " * 10
_IIF = attrgetter("iif")
_MFC_KEY = attrgetter("mfc_key")
_PAIR = attrgetter("iif", "oifs")
_TEMPLATE = attrgetter("is_template")


def _text(addr: Address) -> str:
    if type(addr) is IPv4Address:
        d, i = _DECIMAL, addr._ip  # type: ignore[attr-defined]
        return f"{d[i >> 24]}.{d[i >> 16 & 255]}.{d[i >> 8 & 255]}.{d[i & 255]}"
    return str(addr)


def _prefix(addr: Address, length: int) -> str:
    t = _text(addr)
    return t if length == (32 if type(addr) is IPv4Address else 128) else f"{t}/{length}"


def _same(*lists: tuple[Sequence[Any], Sequence[Any]]) -> tuple[int, int]:
    """(p, s): the longest beginning and end (not overlapping) that each pair of
    lists (old, new; the lists of one side of a length) has in common, found
    by halving with list comparisons (C, identity first)."""
    no, nn = len(lists[0][0]), len(lists[0][1])

    def longest(most: int, equal: Callable[[Sequence[Any], Sequence[Any], int, int], bool]) -> int:
        lo, hi = 0, most
        while lo < hi:  # the longest n with equal(.., n): lo..mid are the ones left to check
            mid = (lo + hi + 1) // 2
            if all(equal(old, new, lo, mid) for old, new in lists):
                lo = mid
            else:
                hi = mid - 1
        return lo

    p = longest(min(no, nn), lambda old, new, lo, mid: old[lo:mid] == new[lo:mid])
    s = longest(
        min(no, nn) - p,
        lambda old, new, lo, mid: old[no - mid : no - lo] == new[nn - mid : nn - lo],
    )
    return p, s


class _Table:
    """One table's rendered rows: `text`, each row's length, each row's counter key."""

    __slots__ = ("keys", "lens", "text")

    def __init__(self) -> None:
        self.text = b""
        self.lens = array("I")
        self.keys = array("Q")

    def replace(self, i: int, j: int, rows: list[str], keys: Iterable[int] | None) -> None:
        """Rows i..j (exclusive) become `rows` (with their counter keys)."""
        if i == j and not rows:
            return
        joined = "".join(rows)
        if joined.isascii():
            new, lens = joined.encode("ascii"), array("I", map(len, rows))
        else:
            raw = [r.encode("utf-8") for r in rows]
            new, lens = b"".join(raw), array("I", map(len, raw))
        lens_before = self.lens
        if 2 * i <= len(lens_before):
            a = sum(lens_before[:i])
        else:
            a = len(self.text) - sum(lens_before[i:])
        b = a + sum(lens_before[i:j])
        view = memoryview(self.text)
        self.text = b"".join((view[:a], new, view[b:]))
        view.release()
        self.lens[i:j] = lens
        if keys is not None:
            self.keys[i:j] = array("Q", keys)


class KeptRoutes:
    """One form of `show routes`, kept rendered (see the module docstring)."""

    def __init__(self, json: bool, detail: bool) -> None:
        self.json, self.detail = json, detail
        self.rendered = 0  # rows rendered so far (the tests count them)
        # while rendering: id(a rule's (S,G) key) -> (its row's format, its row, its key)
        self.made: dict[int, tuple[str, str, int]] = {}
        self.forget()

    def forget(self) -> None:
        """Nothing rendered: the next show renders every row."""
        self.names: list[tuple[int, int, str]] | None = None
        self.pad = -1
        self.routes: list[MRoute] = []
        self.templates = bytearray()  # per route: 1 if a template
        self.keys: list[Any] = []  # the kernel entries' (S,G)s, as the engine keys them
        self.entries: list[Mfc] = []
        self.tables = (_Table(), _Table(), _Table())  # asm, ssm, kernel
        self.iifs: Counter[str] = Counter()  # every row's IIF (the IIF column's width)
        self.formats: dict[tuple[str, tuple[str, ...]], str] = {}  # (IIF, OIFs) -> row format

    # -- rendering rows -----------------------------------------------------------

    def _format(self, pair: tuple[str, tuple[str, ...]]) -> str:
        """A row's %-format for its (S,G) text (JSON: source, group), made once
        per (IIF, OIFs): the row's text as `smcroute.output` lays it out, with
        `%d` for its counters (which another %-format fills in: so `%%%%`)."""
        iif, oifs = pair
        pct = "%%%%" if self.detail else "%%"  # a "%" of the data
        if self.json:
            inner = f",\n{_I10}".join(q(x) for x in oifs)
            o = f"[\n{_I10}{inner}\n{_I8}]" if oifs else "[]"
            end = f'{_I8}"iif": {q(iif)},\n{_I8}"oifs": {o}'.replace("%", pct)
            if self.detail:
                end += f',\n{_I8}"packets": %%d,\n{_I8}"bytes": %%d'
            f = f'{_I6}{{\n{_I8}"source": %s,\n{end}\n{_I6}}},\n'  # %s: source and group
        else:
            o, w = clean(" ".join(oifs)), COUNTER_WIDTH
            if self.detail:  # counters end in a digit: only the OIFs' side can be stripped
                head = f" {clean(iif):<{self.pad}}".replace("%", pct)
                rest = f"  {o}".rstrip().replace("%", pct)
                f = f"%-{FIRST_COL - 1}s{head}%%{w}d %%{w}d{rest}\n"
            else:
                # (S,G) ends in ")": with nothing after it, the line is the (S,G) alone
                rest = f" {clean(iif):<{self.pad}} {o}".rstrip().replace("%", pct)
                f = f"%-{FIRST_COL - 1}s{rest}\n" if rest else "%s\n"
        self.formats[pair] = f
        return f

    def _row(self, f: str, source: str | None, group: str) -> str:
        """A row from its format and its (S,G)'s texts (any address: the slow path)."""
        if self.json:
            sg = f'{"null" if source is None else q(source)},\n{_I8}"group": {q(group)}'
        else:
            sg = f"({'*' if source is None else source}, {group})"
        if self.detail and "%" in sg:  # (an IPv6 zone): data, not a format
            sg = (sg if self.json else sg.ljust(FIRST_COL - 1)).replace("%", "%%")
        return f % sg

    def _rows(
        self, entries: Iterable[tuple[Any, tuple[str, tuple[str, ...]] | Mfc]], names: Any
    ) -> tuple[list[str], list[int]]:
        """Rows (and with counters, their keys) of exact routes ((S,G), (IIF,
        OIFs)) or kernel entries ((S,G), its Mfc): the bulk of every show, an
        IPv4 (S,G) inline.  `names`: the engine's `mfc_names()`."""
        formats, make, row, d = self.formats, self._format, self._row, _DECIMAL
        o, m, c = ('"', f'",\n{_I8}"group": "', '"') if self.json else ("(", ", ", ")")
        by_entry: dict[int, str] = {}  # id(Mfc) -> its format (rules share entries)
        made = self.made
        rows, keys = [], []
        v4 = IPv4Address
        for k, what in entries:
            fam, src, grp = k
            if type(what) is tuple:
                f = formats.get(what) or make(what)
            else:
                f = by_entry.get(id(what))  # type: ignore[assignment]
                if f is None:
                    pair = names(fam, what)
                    f = by_entry[id(what)] = formats.get(pair) or make(pair)
                had = made.get(id(k))
                if had is not None and had[0] is f:  # a rule's entry: the rule's very row
                    rows.append(had[1])
                    keys.append(had[2])
                    continue
            if type(src) is v4 and type(grp) is v4:
                i, j = src._ip, grp._ip  # type: ignore[attr-defined]
                text = f % (
                    f"{o}{d[i >> 24]}.{d[i >> 16 & 255]}.{d[i >> 8 & 255]}.{d[i & 255]}{m}"
                    f"{d[j >> 24]}.{d[j >> 16 & 255]}.{d[j >> 8 & 255]}.{d[j & 255]}{c}"
                )
                key = ((j & 0x0FFFFFFF) << 32) | i  # smcroute.stats.key64, inline
            else:
                text = row(f, None if src is None else _text(src), _text(grp))
                key = _key(fam, src, grp)
            rows.append(text)
            keys.append(key)
            if type(what) is tuple:
                made[id(k)] = (f, text, key)
        return rows, keys

    def _templates(self, templates: list[MRoute]) -> list[str]:
        formats, make, row = self.formats, self._format, self._row
        out = []
        for t in templates:
            pair = (t.iif, t.oifs)
            s = None if t.source is None else _prefix(t.source, t.source_len)
            out.append(row(formats.get(pair) or make(pair), s, _prefix(t.group, t.group_len)))
        return out

    # -- bringing it up to date ---------------------------------------------------

    def update(self, engine: Engine) -> None:
        """Render the rows that changed since the last show (all of them when the
        VIF names or the IIF column's width did)."""
        routes = list(engine.routes.values())
        keys, entries = list(engine.mfc), list(engine.mfc.values())
        names = [(fam, v.vif, v.name) for fam, vifs in engine.vifs.items() for v in vifs.values()]
        namer = engine.mfc_names()
        if names != self.names:  # the kernel rows' names: all anew
            self.forget()
            self.names = names
        p, s = _same((self.routes, routes))
        kp, ks = _same((self.keys, keys), (self.entries, entries))
        old_routes = self.routes[p : len(self.routes) - s]
        new_routes = routes[p : len(routes) - s]
        k_old, k_new = len(self.keys) - ks - kp, len(keys) - ks - kp
        iifs = self.iifs
        iifs.update(map(_IIF, new_routes))
        iifs.update(_iifs(keys[kp : kp + k_new], entries[kp : kp + k_new], namer))
        iifs.subtract(Counter(map(_IIF, old_routes)))
        iifs.subtract(_iifs(self.keys[kp : kp + k_old], self.entries[kp : kp + k_old], namer))
        longest = max((len(n) for n, c in iifs.items() if c > 0), default=0)
        pad = max(MIN_IIF, longest + 1) - 1
        if pad != self.pad:  # every row's text has the IIF column: all anew
            self.pad, self.formats = pad, {}
            p = kp = 0
            old_routes, new_routes = self.routes, routes
            k_old, k_new = len(self.keys), len(keys)
        asm, ssm, kernel = self.tables
        try:
            if old_routes or new_routes:
                flags = self.templates
                t0, t_old = flags.count(1, 0, p), flags.count(1, p, p + len(old_routes))
                r0, r_old = p - t0, len(old_routes) - t_old
                mask = bytes(map(_TEMPLATE, new_routes))
                if t_old or 1 in mask:
                    tmpl = [r for r, t in zip(new_routes, mask, strict=True) if t]
                    asm.replace(t0, t0 + t_old, self._templates(tmpl), None)
                rules = [r for r, t in zip(new_routes, mask, strict=True) if not t]
                pairs = zip(map(_MFC_KEY, rules), map(_PAIR, rules), strict=True)
                rows, rkeys = self._rows(pairs, namer)
                ssm.replace(r0, r0 + r_old, rows, rkeys if self.detail else None)
                flags[p : p + len(old_routes)] = mask
                self.rendered += len(new_routes)
            if k_old or k_new:
                new = zip(keys[kp : kp + k_new], entries[kp : kp + k_new], strict=True)
                rows, rkeys = self._rows(new, namer)
                kernel.replace(kp, kp + k_old, rows, rkeys if self.detail else None)
                self.rendered += k_new
        finally:
            self.made.clear()  # ids of objects that may go
        self.routes, self.keys, self.entries = routes, keys, entries

    # -- the show -------------------------------------------------------------------

    def text(self, engine: Engine, fmt: str, sample: Sample | None) -> bytes:
        """The show in `fmt` ("text", "ansi", "rows"; "json" for a JSON form),
        with `sample`'s counters (the form with counters needs one)."""
        self.update(engine)
        bodies = [table.text for table in self.tables]
        if self.detail:
            assert sample is not None
            bodies = self._filled(engine, sample)
        parts: list[Any] = []
        if self.json:
            for i, ((key, _title), body) in enumerate(zip(ROUTE_TABLES, bodies, strict=True)):
                sep = ",\n" if i else ""
                if not body:
                    parts.append(f'{sep}    "{key}": []'.encode())
                    continue
                parts.append(f'{sep}    "{key}": [\n'.encode())
                parts.append(memoryview(body)[:-2])  # its last row's ",\n"
                parts.append(b"\n    ]")
            parts = [b'{\n  "routes": {\n', *parts, b"\n  }\n}\n"]
        else:
            plain, headings = fmt != "ansi", fmt != "rows"
            for (_key, title), body in zip(ROUTE_TABLES, bodies, strict=True):
                if body:
                    head = route_heading(title, self.pad, self.detail, plain, headings)
                    parts.append(head.encode("utf-8"))
                    parts.append(body)
        return b"".join(parts)

    def _filled(self, engine: Engine, sample: Sample) -> list[bytes]:
        """Each table's rows with the counters of `sample`: a row's entry's in the
        dump (zeros for one it lacks), a template's the sums of its learned
        entries'.  Rules whose entries the dump has in their own order (the
        usual case: the kernel dumps its entries in the order they came) take
        its columns as they are; rules printed as their kernel rows are
        (`smcroute.output`: the same text) are filled once for both tables."""
        asm, ssm, kernel = self.tables
        keys = sample.keys
        packets, nbytes = sample.packets.tolist(), sample.bytes.tolist()
        where: dict[int, int] = {}  # key -> index in the dump, made when needed
        padded: list[list[int]] = []  # packets and bytes with a zero at the end (a miss)

        def lookup() -> tuple[dict[int, int], list[int], list[int]]:
            if not padded:
                where.update(zip(keys, range(len(keys)), strict=True))
                padded.extend(([*packets, 0], [*nbytes, 0]))
            return where, padded[0], padded[1]

        def counters(table: _Table) -> tuple[list[int], list[int]]:
            if table.keys == keys:
                return packets, nbytes
            where, pk, by = lookup()
            at = list(map(where.get, table.keys, repeat(len(keys))))
            return _pick(at, pk), _pick(at, by)

        def filled(table: _Table, pk: list[int], by: list[int]) -> bytes:
            if not table.lens:
                return b""
            values = [0] * (2 * len(pk))
            values[::2], values[1::2] = pk, by
            return table.text % tuple(values)

        k_pk, k_by = counters(kernel)
        in_kernel = filled(kernel, k_pk, k_by)
        if ssm.keys == kernel.keys:
            rules = in_kernel if ssm.text == kernel.text else filled(ssm, k_pk, k_by)
        else:
            rules = filled(ssm, *counters(ssm))
        templates = b""
        if asm.lens:
            sums = _template_counters(engine, *lookup())
            templates = filled(asm, [p for p, _b in sums], [b for _p, b in sums])
        return [templates, rules, in_kernel]


def _iifs(keys: list[Any], entries: list[Mfc], names: Any) -> Counter[str]:
    """The IIF names of kernel entries, counted (entries are shared: named once each)."""
    per = Counter(zip(map(itemgetter(0), keys), map(id, entries), strict=True))
    entry = dict(zip(map(id, entries), entries, strict=True))
    out: Counter[str] = Counter()
    for (fam, i), n in per.items():
        out[names(fam, entry[i])[0]] += n
    return out


def _pick(at: list[int], values: list[int]) -> list[int]:
    if len(at) > 1:
        return list(itemgetter(*at)(values))
    return [values[i] for i in at]


def _template_counters(
    engine: Engine, where: dict[int, int], packets: list[int], nbytes: list[int]
) -> list[tuple[int, int]]:
    """Each template's counters: the sums of its learned kernel entries'."""
    templates = engine.templates()
    index = {id(t): i for i, t in enumerate(templates)}
    sums = [[0, 0] for _ in templates]
    names = engine.mfc_names()
    for (fam, src, grp), m in engine.mfc.items():
        if m.kind != "learned" or src is None:
            continue
        i = where.get(_key(fam, src, grp))
        t = engine.template_for(fam, names(fam, m)[0], src, grp)
        if i is not None and t is not None and id(t) in index:
            acc = sums[index[id(t)]]
            acc[0] += packets[i]
            acc[1] += nbytes[i]
    return [(a, b) for a, b in sums]
