"""Property tests for smcroute.parser: never raises, and the shape cache agrees with lark."""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import lark
import smcroute.grammar
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lark.exceptions import UnexpectedInput
from netns import run
from smcroute.parser import ParseError, parse_command, parse_file, parse_text, syntax
from smcroute.parser.syntax import DIRECTIVES, SyntaxProblem, keywords, parse_with_lark, parse_words

from smcroute.model import Config, MGroup, MRoute

WORDS = [
    *DIRECTIVES,
    "from",
    "source",
    "group",
    "to",
    "enable",
    "disable",
    "mrdisc",
    "ttl-threshold",
    "eth0",
    "eth+",
    "e/0",
    "225.1.1.1",
    "225.1.1.0/24",
    "10.0.0.1",
    "0.0.0.0",
    "::",
    "ff0e::1",
    "ff0e::/8",
    "1.2.3.4/99",
    "#",
    "# c",
    "255",
    "0",
    "x" * 20,
]

config_words = st.lists(st.sampled_from(WORDS) | st.text(min_size=1, max_size=8), max_size=12)
config_line = config_words.map(" ".join)


@given(st.text())
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_parse_text_never_raises_on_any_text(text: str) -> None:
    cfg, probs = parse_text(text)
    assert isinstance(cfg, Config)
    for p in probs:
        str(p).encode("utf-8")


@given(st.lists(config_line, max_size=20).map("\n".join))
@settings(max_examples=400)
def test_parse_text_never_raises_on_config_like_text(text: str) -> None:
    cfg, probs = parse_text(text, "f.conf")
    lines = [p.where.line for p in probs]
    assert lines == sorted(lines)
    for p in probs:
        str(p).encode("utf-8")
    # Every directive kept has no error on its line.
    bad = {p.where.line for p in probs if not p.warning}
    for d in [*cfg.phyints, *cfg.groups, *cfg.routes]:
        assert d.where.line not in bad


@given(st.binary(max_size=2000))
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_parse_file_never_raises_on_bytes(tmp_path: Path, data: bytes) -> None:
    f = tmp_path / "fuzz.conf"
    f.write_bytes(data)
    cfg, probs = parse_file(str(f))
    assert isinstance(cfg, Config)
    for p in probs:
        str(p).encode("utf-8")


@given(config_line)
@settings(max_examples=600)
def test_shape_cache_agrees_with_lark(line: str) -> None:
    """The memoised shape parse and a direct lark parse of the real line agree."""
    words = line.partition("#")[0].split()
    if not words:
        return
    try:
        direct = parse_with_lark(line)
    except SyntaxProblem as e:
        direct_err: str | None = str(e)
    else:
        direct_err = None
    try:
        cached = parse_words(words)
    except SyntaxProblem as e:
        assert str(e) == direct_err
    else:
        assert direct_err is None
        assert cached == direct


def test_keywords_come_from_the_grammar() -> None:
    assert keywords() == {
        "phyint",
        "mgroup",
        "ssmgroup",
        "mroute",
        "include",
        "enable",
        "disable",
        "mrdisc",
        "ttl-threshold",
        "from",
        "source",
        "group",
        "to",
    }


@given(
    st.sampled_from(["add", "remove", "join", "leave", "x"]),
    st.lists(st.text(max_size=12) | st.sampled_from(WORDS), max_size=6),
)
@settings(max_examples=400)
def test_parse_command_raises_only_parse_error(cmd: str, args: list[str]) -> None:
    try:
        r = parse_command(cmd, args)
    except ParseError as e:
        str(e).encode("utf-8")
    else:
        assert isinstance(r, MRoute if cmd in ("add", "remove") else MGroup)


# -- the saved LALR tables (grammar/tables.json) are the grammar's ----------------


def test_saved_tables_come_from_this_grammar() -> None:
    sha = hashlib.sha256(syntax.grammar_text().encode("utf-8")).hexdigest()
    assert sha == _saved()["grammar_sha256"], "grammar changed: run tools/lark_tables.py"


SHAPE_WORDS = [*keywords(), "@"]


def _saved() -> dict[str, Any]:
    path = Path(smcroute.grammar.__file__ or ".").parent / "tables.json"
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@functools.cache
def _parsers() -> tuple[Any, Any] | None:
    """(from the saved tables, built from the grammar), or None with another lark."""
    saved = syntax.saved_lark(transformer=syntax._ToSkeleton())
    if saved is None:
        return None
    return saved, syntax.build_lark(transformer=syntax._ToSkeleton())


@given(st.lists(st.sampled_from(SHAPE_WORDS), min_size=1, max_size=9))
@settings(max_examples=800)
def test_saved_tables_parse_as_the_grammar(shape: list[str]) -> None:
    """Every shape gets the same skeleton, or fails at the same token with
    the same expectations, from the saved tables as from lark's own build."""
    parsers = _parsers()
    if parsers is None:  # another lark than the tables': the parser builds its own
        assert lark.__version__ != _saved()["lark_version"]
        return
    text = " ".join(f"@{i}" if w == "@" else w for i, w in enumerate(shape))
    results = []
    for parser in parsers:
        try:
            results.append(("ok", parser.parse(text)))
        except UnexpectedInput as e:
            results.append(("error", (e.line, e.column, frozenset(getattr(e, "expected", ())))))
    assert results[0] == results[1]


# -- the run-time parser of the tables (syntax._Tables) parses as lark does ------

SHAPE_ALPHABET: list[str | None] = [*sorted(keywords()), None]  # None: any other word


def test_every_short_shape_parses_as_with_lark() -> None:
    """Every shape of up to four words: the same skeleton, or an error at the
    same word with the same expectations (hence the same message), from the
    daemon's table-driven parser as from lark itself."""
    for n in range(1, 5):
        for shape in itertools.product(SHAPE_ALPHABET, repeat=n):
            assert syntax._parse_shape(shape) == syntax.parse_shape_with_lark(shape), shape


@given(
    st.sampled_from(syntax.DIRECTIVES),
    st.lists(st.sampled_from([*SHAPE_ALPHABET, None, None, None]), min_size=4, max_size=14),
)
@settings(max_examples=1500)
def test_longer_shapes_parse_as_with_lark(first: str, rest: list[str | None]) -> None:
    shape = (first, *rest)
    assert syntax._parse_shape(shape) == syntax.parse_shape_with_lark(shape)


def test_the_daemon_does_not_import_lark() -> None:
    """The point of syntax._Tables: parsing (and the daemon's modules) without lark;
    nor difflib and heapq: the parser's suggestions are its own (syntax.close_match)."""
    code = (
        "import sys\n"
        "import smcroute.daemon, smcroute.daemon_cli\n"
        "from smcroute.parser import parse_text\n"
        "smcroute.daemon_cli.warm_up()\n"
        "cfg, probs = parse_text('mroute from a1 group 225.1.1.1 to a2\\nfoo\\n', 'x')\n"
        "assert len(cfg.routes) == 1 and len(probs) == 1, probs\n"
        "banned = ('lark', 'difflib', 'heapq')\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] in banned))\n"
    )
    out = run([sys.executable, "-c", code])
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


ROUTE_IFS = ["eth0", "eth1", "eth+", "e/0", "x" * 16]
ROUTE_ADDRS = [
    "10.0.0.1", "0.0.0.0", "225.1.1.1", "224.0.0.5", "224.0.1.5", "239.255.255.255",
    "232.1.1.1/32", "225.1.1.0/24", "10.0.0.1/32", "010.0.0.1", "1.2.3", "ff0e::1", "::",
    "2001:db8::1", "223.255.255.255", "240.0.0.1", "0.0.0.1",
]  # fmt: skip
ROUTE_WORDS = ["mroute", "from", "source", "group", "to", *ROUTE_IFS, *ROUTE_ADDRS]
route_line = st.lists(st.sampled_from(ROUTE_WORDS), min_size=1, max_size=11).map(
    lambda ws: " ".join(["mroute", "from", *ws])
)
canonical_route = st.tuples(
    st.sampled_from(ROUTE_IFS), st.sampled_from(ROUTE_ADDRS), st.sampled_from(ROUTE_ADDRS),
    st.lists(st.sampled_from(ROUTE_IFS), max_size=4),
).map(lambda t: f"mroute from {t[0]} source {t[1]} group {t[2]} to {' '.join(t[3])}")  # fmt: skip


@given(route_line | canonical_route)
@settings(max_examples=600)
@example("mroute from eth0 source 10.0.0.1 group 224.0.0.5 to eth1")
@example("mroute from eth0 source 0.0.0.0 group 225.1.1.1 to eth1")
@example("mroute from eth0 source 225.1.1.2 group 225.1.1.1 to eth1")
@example("mroute from eth0 source 10.0.0.1 group 10.1.1.1 to eth1")
@example("mroute from eth0 source 10.0.0.1 group 225.1.1.1 to eth1 eth1")
@example("mroute from eth0 source 10.0.0.1 group 225.1.1.1 to eth0 eth1")
@example("mroute from eth0 source 10.0.0.1 group 225.1.1.1 to")
@example("mroute from eth+ source 10.0.0.1 group 225.1.1.1 to eth1")
@example("mroute from eth0 group 225.1.1.1 source 10.0.0.1 to eth1 eth+")
def test_exact_route_fast_path_builds_what_the_checks_build(line: str) -> None:
    """`build`'s fast path for exact IPv4 routes makes the very route (and
    origin) the full checks make, and leaves every other line to them."""
    from smcroute.parser import semantics

    words = line.split()

    try:
        sk = parse_words(words)
    except SyntaxProblem:
        return
    fast = semantics._exact_v4_route
    try:
        semantics._exact_v4_route = lambda *_a: None  # type: ignore[assignment]
        slow_obj, slow_probs = semantics.build(sk, words, 7)
    finally:
        semantics._exact_v4_route = fast  # type: ignore[assignment]
    obj, probs = semantics.build(sk, words, 7)  # the names are known good by now
    assert (repr(obj), [str(p) for p in probs]) == (repr(slow_obj), [str(p) for p in slow_probs])
    assert getattr(obj, "origin", None) == getattr(slow_obj, "origin", None)
    plain = all("/" not in words[sk.opts[k]] for k in ("source", "group") if k in sk.opts)
    if isinstance(obj, MRoute) and not probs and not obj.is_template and obj.family == 4 and plain:
        assert fast(sk.opts, words, 7) is not None or sk.repeated  # taken, not fallen back


_CHOICES = [syntax.DIRECTIVES, *syntax.OPTIONS.values(), ("a", "ab", "ba"), ("aaaa", "aaab")]
_LETTERS = "".join(sorted({c for t in _CHOICES for w in t for c in w})) + "xyZ"


@given(
    st.text(alphabet=_LETTERS, min_size=1, max_size=30)
    | st.sampled_from([w for t in _CHOICES for w in t]),
    st.sampled_from(_CHOICES),
    st.sampled_from([0.6, 0.7]),
)
@settings(max_examples=1500)
@example("a" * 300, ("a" * 99,), 0.6)
@example("ttl-trheshold", syntax.OPTIONS["phyint"], 0.7)
@example("mroutte", syntax.DIRECTIVES, 0.7)
@example("ab", ("a", "ab", "ba"), 0.6)
@example("aab", ("aaaa", "aaab"), 0.6)
@example("aaba", ("aaa",), 0.6)  # the first longest block counts, not the last
def test_close_match_is_difflibs(word: str, choices: tuple[str, ...], cutoff: float) -> None:
    """The parser's suggestions without difflib: what difflib suggests."""
    import difflib

    want = difflib.get_close_matches(word, choices, n=1, cutoff=cutoff)
    assert syntax.close_match(word, choices, cutoff) == (want[0] if want else None)


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4))
def test_v4_is_ipaddress_own(raw: bytes, other: bytes) -> None:
    """semantics.v4 makes what IPv4Address(raw) makes (its one slot), without its checks."""
    import pickle
    from ipaddress import IPv4Address

    from smcroute.parser.semantics import v4

    made, want = v4(raw), IPv4Address(raw)
    assert type(made) is IPv4Address
    assert (made == want, hash(made), repr(made), str(made)) == (
        True,
        hash(want),
        repr(want),
        str(want),
    )
    assert (made.packed, int(made), made.is_multicast) == (raw, int(want), want.is_multicast)
    assert (made < IPv4Address(other)) == (want < IPv4Address(other))
    assert pickle.loads(pickle.dumps(made)) == want
