"""Line structure: lark (grammar/smcroute.lark) decides what each word of a line is.

Owns the compiled lark LALR parser, its inline transformer, and the mapping of
lark's syntax errors to sentences a network engineer understands.  Returns a
`Skeleton`: which directive, and the *index* of the word that fills each slot.
It must not interpret values (addresses, interface names, numbers) -- that is
`semantics.py` -- and it does no I/O besides loading the grammar resource.

Speed: lark parses a line in ~85 us, too slow for 100,000-line files.  An LALR
parse depends only on the sequence of token *types*, and with this grammar a
word's type is fully determined by its spelling: a word spelt like a keyword
is that keyword, anything else is a WORD.  So a line is reduced to its shape
(keywords kept, every other word replaced by the placeholder `@N`, N = its
index), lark parses the shape, and the result is memoised per shape.  Lark
remains the grammar of record -- every distinct shape is parsed by lark, and
`parse_with_lark()` (used by the tests) checks that both routes agree -- but a
file with 100,000 routes of one shape costs one lark parse.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from typing import Any

from lark import Lark, Token, Transformer
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from smcroute.records import dataclass, field

DIRECTIVES = ("phyint", "mgroup", "ssmgroup", "mroute", "include")

# What each directive accepts after its name, in the order used in messages.
OPTIONS: dict[str, tuple[str, ...]] = {
    "phyint": ("enable", "disable", "mrdisc", "ttl-threshold"),
    "mgroup": ("from", "source", "group"),
    "ssmgroup": ("from", "group", "source"),
    "mroute": ("from", "source", "group", "to"),
    "include": (),
}

# What the word after a keyword is, in words.
_VALUE_OF = {
    "from": "an interface name",
    "source": "a source address",
    "group": "a multicast group",
    "to": "an outbound interface",
    "ttl-threshold": "a TTL value (1-255)",
    "phyint": "an interface name",
    "include": "a file name or glob",
}


@dataclass(slots=True)
class Skeleton:
    """A line's structure.  Values are word indices into the line's word list.

    `opts` maps an option keyword to the index of its value (or, for `to`, a
    tuple of indices; for flags such as `enable`, -1).  `repeated` lists
    option keywords that appeared more than once (the first value is kept).
    """

    kind: str
    name: int = -1  # phyint IFNAME / include GLOB
    opts: dict[str, Any] = field(default_factory=dict)
    repeated: list[str] = field(default_factory=list)


class SyntaxProblem(Exception):
    """A line that does not fit the grammar; the message is ready to print."""


def _idx(tok: Token) -> int:
    # Placeholders are "@N"; see module docstring.
    return int(tok[1:])


class _ToSkeleton(Transformer[Token, Any]):
    """Inline LALR transformer: build a Skeleton straight from the parse."""

    def from_(self, c: list[Token]) -> tuple[str, int]:
        return ("from", _idx(c[1]))

    def source(self, c: list[Token]) -> tuple[str, int]:
        return ("source", _idx(c[1]))

    def group(self, c: list[Token]) -> tuple[str, int]:
        return ("group", _idx(c[1]))

    def to(self, c: list[Token]) -> tuple[str, tuple[int, ...]]:
        return ("to", tuple(_idx(t) for t in c[1:]))

    def ttl(self, c: list[Token]) -> tuple[str, int]:
        return ("ttl-threshold", _idx(c[1]))

    @staticmethod
    def _options(sk: Skeleton, items: list[Any]) -> Skeleton:
        for item in items:
            key, val = (str(item), -1) if isinstance(item, Token) else item
            if key in sk.opts:
                if key not in sk.repeated:
                    sk.repeated.append(key)
            else:
                sk.opts[key] = val
        return sk

    def phyint(self, c: list[Any]) -> Skeleton:
        return self._options(Skeleton("phyint", name=_idx(c[1])), c[2:])

    def mgroup(self, c: list[Any]) -> Skeleton:
        return self._options(Skeleton("mgroup"), c[1:])

    def ssmgroup(self, c: list[Any]) -> Skeleton:
        return self._options(Skeleton("ssmgroup"), c[1:])

    def mroute(self, c: list[Any]) -> Skeleton:
        return self._options(Skeleton("mroute"), c[1:])

    def include(self, c: list[Token]) -> Skeleton:
        return Skeleton("include", name=_idx(c[1]))

    def start(self, c: list[Skeleton]) -> Skeleton | None:
        return c[0] if c else None


def grammar_text() -> str:
    from importlib.resources import files  # only to build (tests, tools): not at start-up

    return files("smcroute.grammar").joinpath("smcroute.lark").read_text(encoding="utf-8")


# lexer="basic": a word spelt like a keyword is always that keyword, in every
# context -- the property the shape cache relies on.
LARK_OPTIONS: dict[str, Any] = {"parser": "lalr", "lexer": "basic"}


def build_lark(**extra: Any) -> Lark:
    """A parser built from the grammar text (lark's grammar analysis, ~40 ms)."""
    return Lark(grammar_text(), **LARK_OPTIONS, **extra)


def saved_lark(**extra: Any) -> Lark | None:
    """The parser from the tables saved in grammar/tables.json (~3 ms), or None
    when they come from another lark version.  tools/lark_tables.py writes
    them from the grammar; the tests check that they are the grammar's.
    (Not lark's `cache=`: it unpickles from a shared temp directory, which a
    daemon started as root must never do.)"""
    import json

    import lark
    import smcroute.grammar

    folder = os.path.dirname(os.path.abspath(smcroute.grammar.__file__ or "."))
    with open(os.path.join(folder, "tables.json"), encoding="utf-8") as f:
        saved = json.load(f, object_pairs_hook=_int_keys)
    if lark.__version__ != saved["lark_version"]:
        return None
    return Lark._load_from_dict(saved["data"], saved["memo"], **extra)  # type: ignore[no-any-return,no-untyped-call]


def _int_keys(pairs: list[tuple[str, Any]]) -> dict[Any, Any]:
    """JSON keys are text: lark's tables number their states, tokens and memo."""
    return {int(k) if k.isdigit() else k: v for k, v in pairs}


_lark: Lark | None = None
KEYWORDS: frozenset[str] = frozenset()
_TERM_WORD: dict[str, str] = {}  # terminal name -> keyword text


def lark_parser() -> Lark:
    """The compiled grammar, loaded once per process."""
    global _lark, KEYWORDS, _TERM_WORD
    if _lark is None:
        lk = saved_lark(transformer=_ToSkeleton()) or build_lark(transformer=_ToSkeleton())
        _TERM_WORD = {t.name: str(t.pattern.value) for t in lk.terminals if t.pattern.type == "str"}
        KEYWORDS = frozenset(_TERM_WORD.values())
        _KW_MAP.update({k: k for k in KEYWORDS})
        _lark = lk
    return _lark


def keywords() -> frozenset[str]:
    lark_parser()
    return KEYWORDS


# Shape -> Skeleton template, or the SyntaxProblem parameters.
_Result = tuple[bool, Any]
_cache: dict[tuple[str | None, ...], _Result] = {}
_CACHE_MAX = 4096


# keyword -> itself; anything else -> None (filled in with the parser)
_KW_MAP: dict[str, str] = {}
_KW_GET: Callable[[str], str | None] = _KW_MAP.get


def shape_of(words: list[str]) -> tuple[str | None, ...]:
    if not KEYWORDS:
        keywords()
    return tuple(map(_KW_GET, words))


def _synthetic(shape: tuple[str | None, ...]) -> str:
    return " ".join(f"@{i}" if w is None else w for i, w in enumerate(shape))


def parse_words(words: list[str]) -> Skeleton:
    """Structure of one non-empty line, given as its words.  Raises SyntaxProblem.

    The Skeleton returned is shared with other lines of the same shape: read it,
    never modify it.
    """
    shape = shape_of(words)
    hit = _cache.get(shape)
    if hit is None:
        hit = _parse_shape(shape)
        if len(shape) <= 64:  # long (absurd) lines are rare; don't let them fill memory
            if len(_cache) >= _CACHE_MAX:
                _cache.clear()
            _cache[shape] = hit
    ok, val = hit
    if ok:
        return val  # type: ignore[no-any-return]
    pos, expected = val
    raise SyntaxProblem(_explain(words, shape, pos, expected))


def _parse_shape(shape: tuple[str | None, ...]) -> _Result:
    text = _synthetic(shape)
    try:
        sk = lark_parser().parse(text)
    except UnexpectedInput as e:
        return (False, _locate(text, e))
    except LarkError as e:  # pragma: no cover - grammar bug, keep the line as an error
        return (False, (0, frozenset({f"<internal: {type(e).__name__}>"})))
    if sk is None:  # pragma: no cover - callers never pass an empty line
        return (False, (0, frozenset()))
    assert isinstance(sk, Skeleton)
    return (True, sk)


def _locate(text: str, e: UnexpectedInput) -> tuple[int, frozenset[str]]:
    """(index of the offending word or -1 for end of line, expected keywords/WORD)."""
    if isinstance(e, UnexpectedToken):
        expected = frozenset(e.expected) | frozenset(e.accepts or ())
        pos = -1 if e.token.type == "$END" else text[: e.token.start_pos or 0].count(" ")
    elif isinstance(e, UnexpectedCharacters):  # pragma: no cover - shapes always lex
        expected = frozenset(e.allowed or ())
        pos = text[: e.pos_in_stream or 0].count(" ")
    else:  # UnexpectedEOF
        expected = frozenset(getattr(e, "expected", ()) or ())
        pos = -1
    names = frozenset(_TERM_WORD.get(t, t) for t in expected if t != "$END") | (
        frozenset({"$END"}) if "$END" in expected else frozenset()
    )
    return (pos, names)


def parse_with_lark(line: str) -> Skeleton | None:
    """Parse one real line with lark directly (no shape cache), for tests.

    Words are replaced by their index so the result compares equal to
    `parse_words(line.split())`.  Raises SyntaxProblem on a syntax error.
    """
    body = line.split("#", 1)[0]
    words = body.split()
    if not words:
        return None
    kw = keywords()
    text = " ".join(w if w in kw else f"@{i}" for i, w in enumerate(words))
    try:
        res = lark_parser().parse(text)
    except UnexpectedInput as e:
        pos, exp = _locate(text, e)
        raise SyntaxProblem(_explain(words, shape_of(words), pos, exp)) from None
    assert res is None or isinstance(res, Skeleton)
    return res


def _or_list(items: list[str]) -> str:
    if len(items) == 1 and items[0] not in DIRECTIVES:
        return f"the keyword '{items[0]}'"
    if not items:
        return "nothing"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " or " + items[-1]


def _q(word: str) -> str:
    return "'" + (word if len(word) <= 40 else word[:37] + "...") + "'"


def _suggest(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word.lower(), choices, n=1, cutoff=0.7)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _explain(
    words: list[str], shape: tuple[str | None, ...], pos: int, expected: frozenset[str]
) -> str:
    """Turn (where lark stopped, what it expected) into a sentence."""
    first = words[0]
    if first not in DIRECTIVES:
        return f"unknown directive {_q(first)}; expected {_or_list(list(DIRECTIVES))}" + _suggest(
            first, DIRECTIVES
        )
    kind = first
    prev = words[pos - 1] if pos > 0 else words[-1]
    prev_is_kw = (shape[pos - 1] if pos > 0 else shape[-1]) is not None
    if "WORD" in expected and prev_is_kw and prev in _VALUE_OF and prev != "to":
        what = _VALUE_OF[prev]
        if prev == kind:
            # "include must be ...", not "include: 'include' must be ..."
            if pos == -1:
                return f"{kind} must be followed by {what}"
            return f"{kind} must be followed by {what}, not the keyword {_q(words[pos])}"
        if pos == -1:
            return f"{kind}: {_q(prev)} must be followed by {what}"
        return f"{kind}: {_q(prev)} must be followed by {what}, not the keyword {_q(words[pos])}"
    if kind == "include":
        return f"include takes one file name or glob; unexpected {_q(words[pos])}"
    opts = OPTIONS[kind]
    used = {w for w in (shape[1:pos] if pos > 0 else shape[1:]) if w is not None}
    # Suggest the options not yet given first; all of them if that leaves none.
    left = [o for o in opts if o not in used] or list(opts)
    word = words[pos]
    if shape[pos] is None:
        hint = _suggest(word, opts)
        if kind == "phyint":
            return f"phyint: unknown option {_q(word)}; expected {_or_list(left)}{hint}"
        extra = ""
        if not prev_is_kw and pos >= 2 and shape[pos - 2] in ("from", "source", "group"):
            extra = f" ({_q(shape[pos - 2] or '')} takes a single value)"
        return f"{kind}: unexpected {_q(word)}; expected {_or_list(left)}{extra}{hint}"
    expect = _or_list(left)
    last_kw = next((w for w in reversed(shape[:pos]) if w is not None), None)
    if last_kw == "to" and "WORD" in expected:
        expect += " or another outbound interface"
    if word in DIRECTIVES:
        return f"{kind}: unexpected {_q(word)} (one directive per line); expected {expect}"
    owner = next((d for d, o in OPTIONS.items() if word in o), "")
    if owner and owner != kind:
        hint = " (interfaces cannot be named like keywords)" if last_kw == "to" else ""
        return f"{kind}: {_q(word)} is a {owner} option, not a {kind} one; expected {expect}{hint}"
    return f"{kind}: keyword {_q(word)} does not belong here; expected {expect}"
