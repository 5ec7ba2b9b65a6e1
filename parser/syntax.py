"""Line structure: lark's grammar (grammar/smcroute.lark) decides what each word of a line is.

Owns the LALR parser over lark's saved tables (lark itself only for the tests
and tools/lark_tables.py), its inline transformer, and the mapping of syntax
errors to sentences a network engineer understands.  Returns a
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

At run time the shapes are parsed by `_Tables`, a table-driven LALR parser
over the tables lark builds from the grammar (grammar/tables.json, written
by tools/lark_tables.py), which reduces, inlines `_rules`, expands `?rules`
and calls `_ToSkeleton` as lark's own LALR parser does: the daemon does not
import lark (~25 ms of its start, with what lark imports).  The tests parse
every shape up to five words, and random longer ones, both ways and compare
the skeletons and the (position, expected) of every error.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from smcroute.records import dataclass, field

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import Any

    from lark import Lark
    from lark.exceptions import UnexpectedInput
else:
    Any = object  # (in `_Result` below)

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


def _idx(tok: str) -> int:
    # Placeholders are "@N"; see module docstring.
    return int(tok[1:])


class _ToSkeleton:
    """Inline LALR transformer: build a Skeleton straight from the parse.

    A plain object (lark calls its methods by rule name as it does a
    Transformer's): tokens are strings (lark's Token is one), keywords as
    spelt, WORDs as their placeholder."""

    def from_(self, c: list[str]) -> tuple[str, int]:
        return ("from", _idx(c[1]))

    def source(self, c: list[str]) -> tuple[str, int]:
        return ("source", _idx(c[1]))

    def group(self, c: list[str]) -> tuple[str, int]:
        return ("group", _idx(c[1]))

    def to(self, c: list[str]) -> tuple[str, tuple[int, ...]]:
        return ("to", tuple(_idx(t) for t in c[1:]))

    def ttl(self, c: list[str]) -> tuple[str, int]:
        return ("ttl-threshold", _idx(c[1]))

    @staticmethod
    def _options(sk: Skeleton, items: list[Any]) -> Skeleton:
        for item in items:
            key, val = (str(item), -1) if isinstance(item, str) else item
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

    def include(self, c: list[str]) -> Skeleton:
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
    """A parser built from the grammar text (lark's grammar analysis, ~40 ms);
    for the tests and tools/lark_tables.py only."""
    from lark import Lark

    return Lark(grammar_text(), **LARK_OPTIONS, **extra)


def _saved(int_keys: bool = True) -> dict[str, Any]:
    """grammar/tables.json; its numbers as keys are numbers again with `int_keys`
    (lark's; `_Tables` converts the few it needs: a hook per object is ~1 ms)."""
    import json

    import smcroute.grammar

    folder = os.path.dirname(os.path.abspath(smcroute.grammar.__file__ or "."))
    with open(os.path.join(folder, "tables.json"), encoding="utf-8") as f:
        return json.load(f, object_pairs_hook=_int_keys if int_keys else None)  # type: ignore[no-any-return]


def saved_lark(**extra: Any) -> Lark | None:
    """lark's parser from the saved tables (tests: they must parse as a fresh
    build), or None when they come from another lark version.  (Not lark's
    `cache=`: it unpickles from a shared temp directory, which a daemon
    started as root must never do.)"""
    import lark

    saved = _saved()
    if lark.__version__ != saved["lark_version"]:
        return None
    return lark.Lark._load_from_dict(saved["data"], saved["memo"], **extra)  # type: ignore[no-any-return,no-untyped-call]


def _int_keys(pairs: list[tuple[str, Any]]) -> dict[Any, Any]:
    """JSON keys are text: lark's tables number their states, tokens and memo."""
    return {int(k) if k.isdigit() else k: v for k, v in pairs}


class _Rule:
    """A grammar rule as the LALR parser reduces it (see lark's parse_tree_builder:
    ChildFilterLALR_NoPlaceholders, ExpandSingleChild, the callback by name)."""

    __slots__ = ("callback", "expand1", "keep", "origin", "size")

    def __init__(self, rule: dict[str, Any], transformer: object) -> None:
        opts = rule["options"]
        if opts["empty_indices"] or opts["template_source"]:  # pragma: no cover - grammar
            raise ValueError(f"rule {rule['origin']['name']}: option not supported here")
        exp = rule["expansion"]
        self.origin: str = rule["origin"]["name"]
        self.size = len(exp)
        # (index, inline its children): tokens lark filters out are left out
        self.keep = [
            (i, sym["__type__"] == "NonTerminal" and sym["name"].startswith("_"))
            for i, sym in enumerate(exp)
            if opts["keep_all_tokens"] or not (sym["__type__"] == "Terminal" and sym["filter_out"])
        ]
        self.expand1 = opts["expand1"] and not rule["alias"]
        name = rule["alias"] or self.origin
        self.callback: Callable[[list[Any]], Any] | None = getattr(transformer, name, None)

    def reduce(self, children: list[Any]) -> Any:
        out: list[Any] = []
        for i, inline in self.keep:
            if inline:
                out += children[i]
            else:
                out.append(children[i])
        if self.expand1 and len(out) == 1:
            return out[0]
        if self.callback is None:  # an inlined `_rule`: its children go to the parent
            if not self.origin.startswith("_"):  # pragma: no cover - a rule with no method
                raise ValueError(f"no transformer method for rule {self.origin}")
            return out
        return self.callback(out)


class _Tables:
    """The LALR parser of grammar/tables.json, driven as lark drives it."""

    def __init__(self, saved: dict[str, Any], transformer: object) -> None:
        data, memo = saved["data"], {int(k): v for k, v in saved["memo"].items()}
        table = data["parser"]["parser"]
        tokens = table["tokens"]  # (its keys, and the actions', are text or numbers alike)
        rules = {i: _Rule(memo[i], transformer) for i, m in memo.items() if m["__type__"] == "Rule"}
        # state -> symbol -> (reduce?, next state or rule)
        self.states: dict[int, dict[str, tuple[bool, Any]]] = {
            int(state): {
                tokens[t]: (True, rules[arg["@"]]) if kind == 1 else (False, arg)
                for t, (kind, arg) in actions.items()
            }
            for state, actions in table["states"].items()
        }
        self.start: int = table["start_states"]["start"]
        self.end: int = table["end_states"]["start"]
        self.term_word = {
            m["name"]: m["pattern"]["value"]
            for m in memo.values()
            if m["__type__"] == "TerminalDef" and m["pattern"]["__type__"] == "PatternStr"
        }

    def parse(self, shape: tuple[str | None, ...], types: dict[str, str]) -> _Result:
        """(True, the transformer's result) or (False, (index of the offending
        word or -1 for the end of the line, the terminals expected there))."""
        states = self.states
        state_stack = [self.start]
        value_stack: list[Any] = []
        for pos in [*range(len(shape)), -1]:
            if pos < 0:
                kind, value = "$END", ""
            else:
                word = shape[pos]
                kind, value = ("WORD", f"@{pos}") if word is None else (types[word], word)
            while True:
                actions = states[state_stack[-1]]
                action = actions.get(kind)
                if action is None:
                    return (False, (pos, frozenset(t for t in actions if t.isupper())))
                reduce, arg = action
                if not reduce:
                    state_stack.append(arg)
                    value_stack.append(value)
                    break
                size = arg.size
                children = value_stack[-size:] if size else []
                if size:
                    del state_stack[-size:]
                    del value_stack[-size:]
                value_stack.append(arg.reduce(children))
                state_stack.append(states[state_stack[-1]][arg.origin][1])
                if pos < 0 and state_stack[-1] == self.end:
                    return (True, value_stack[-1])
        raise AssertionError("unreachable: $END ends every parse")  # pragma: no cover


_tables: _Tables | None = None
KEYWORDS: frozenset[str] = frozenset()
_TERM_WORD: dict[str, str] = {}  # terminal name -> keyword text
_WORD_TERM: dict[str, str] = {}  # keyword text -> terminal name


def tables() -> _Tables:
    """The grammar's parser, loaded once per process."""
    global _tables, KEYWORDS, _TERM_WORD, _WORD_TERM
    if _tables is None:
        t = _Tables(_saved(int_keys=False), _ToSkeleton())
        _TERM_WORD = t.term_word
        _WORD_TERM = {w: n for n, w in _TERM_WORD.items()}
        KEYWORDS = frozenset(_TERM_WORD.values())
        _KW_MAP.update({k: k for k in KEYWORDS})
        _tables = t
    return _tables


def keywords() -> frozenset[str]:
    tables()
    return KEYWORDS


_Result = tuple[bool, Any]

# Shape -> Skeleton template, or the SyntaxProblem parameters.
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
    ok, val = tables().parse(shape, _WORD_TERM)
    if ok:
        if val is None:  # pragma: no cover - callers never pass an empty line
            return (False, (0, frozenset()))
        assert isinstance(val, Skeleton)
        return (True, val)
    pos, expected = val
    return (False, (pos, _names(expected)))


def _names(expected: frozenset[str]) -> frozenset[str]:
    """Terminal names as the messages use them: keywords as spelt, WORD, $END."""
    return frozenset(_TERM_WORD.get(t, t) for t in expected if t != "$END") | (
        frozenset({"$END"}) if "$END" in expected else frozenset()
    )


_lark: list[Lark] = []


def _lark_parser() -> Lark:
    """lark itself (tests): from the saved tables, or built from the grammar."""
    if not _lark:
        _lark.append(saved_lark(transformer=_ToSkeleton()) or build_lark(transformer=_ToSkeleton()))
    return _lark[0]


def _locate(text: str, e: UnexpectedInput) -> tuple[int, frozenset[str]]:
    """(index of the offending word or -1 for end of line, expected keywords/WORD)."""
    from lark.exceptions import UnexpectedCharacters, UnexpectedToken

    if isinstance(e, UnexpectedToken):
        expected = frozenset(e.expected) | frozenset(e.accepts or ())
        pos = -1 if e.token.type == "$END" else text[: e.token.start_pos or 0].count(" ")
    elif isinstance(e, UnexpectedCharacters):  # pragma: no cover - shapes always lex
        expected = frozenset(e.allowed or ())
        pos = text[: e.pos_in_stream or 0].count(" ")
    else:  # UnexpectedEOF
        expected = frozenset(getattr(e, "expected", ()) or ())
        pos = -1
    return (pos, _names(expected))


def parse_shape_with_lark(shape: tuple[str | None, ...]) -> _Result:
    """What `_parse_shape` returns, from lark itself (tests)."""
    from lark.exceptions import UnexpectedInput

    text = _synthetic(shape)
    try:
        sk = _lark_parser().parse(text)
    except UnexpectedInput as e:
        return (False, _locate(text, e))
    return (True, sk)


def parse_with_lark(line: str) -> Skeleton | None:
    """Parse one real line with lark directly (no shape cache), for tests.

    Words are replaced by their index so the result compares equal to
    `parse_words(line.split())`.  Raises SyntaxProblem on a syntax error.
    """
    from lark.exceptions import UnexpectedInput

    body = line.split("#", 1)[0]
    words = body.split()
    if not words:
        return None
    kw = keywords()
    text = " ".join(w if w in kw else f"@{i}" for i, w in enumerate(words))
    try:
        res = _lark_parser().parse(text)
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
    close = close_match(word.lower(), choices)
    return f" (did you mean '{close}'?)" if close else ""


def close_match(word: str, choices: tuple[str, ...], cutoff: float = 0.7) -> str | None:
    """`difflib.get_close_matches(word, choices, n=1, cutoff)[0]`, or None,
    without difflib and heapq (~2 ms of the daemon's start, for messages):
    the choice of the best ratio (twice the characters in matching blocks
    over both lengths), the larger one on a tie.  Choices must be shorter
    than 100 characters: difflib's "popular characters" heuristic, which
    this leaves out, then never applies to a word close enough."""
    best: tuple[float, str] | None = None
    for choice in choices:
        both = len(choice) + len(word)
        if 2.0 * min(len(choice), len(word)) / both < cutoff:  # difflib's real_quick_ratio
            continue
        ratio = 2.0 * _matching(choice, word) / both
        if ratio >= cutoff and (best is None or (ratio, choice) > best):
            best = (ratio, choice)
    return None if best is None else best[1]


def _matching(a: str, b: str) -> int:
    """The size of difflib.SequenceMatcher(None, a, b)'s matching blocks: the
    longest common block (the first found, as its find_longest_match), then
    the same on each side of it."""
    b2j: dict[str, list[int]] = {}
    for j, ch in enumerate(b):
        b2j.setdefault(ch, []).append(j)
    total = 0
    todo = [(0, len(a), 0, len(b))]
    while todo:
        alo, ahi, blo, bhi = todo.pop()
        besti, bestj, size = alo, blo, 0
        j2len: dict[int, int] = {}
        for i in range(alo, ahi):
            new: dict[int, int] = {}
            for j in b2j.get(a[i], ()):
                if j < blo:
                    continue
                if j >= bhi:
                    break
                k = new[j] = j2len.get(j - 1, 0) + 1
                if k > size:
                    besti, bestj, size = i - k + 1, j - k + 1, k
            j2len = new
        if size:
            total += size
            if alo < besti and blo < bestj:
                todo.append((alo, besti, blo, bestj))
            if besti + size < ahi and bestj + size < bhi:
                todo.append((besti + size, ahi, bestj + size, bhi))
    return total


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
