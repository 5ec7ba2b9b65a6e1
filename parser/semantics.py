"""Meaning of one line: values checked and turned into smcroute.model objects.

Owns every rule about values -- addresses and prefix lengths, the multicast
ranges, interface-name syntax, TTLs, OIF counts, required and repeated
keywords -- and the wording of those problems.  Input is a `Skeleton` from
`syntax.py` (which word fills which slot) plus the line's words; output is a
model object (or None when the line has errors) and a list of Problems.

Must not do I/O, must not know about files or includes (`files.py`), and must
not look at other lines (duplicates across lines are `files.py`'s business).
Also used by `command.py` for smcroutectl arguments, so the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from socket import AF_INET, AF_INET6, inet_pton

from smcroute.model import (
    MAX_OIFS,
    MAX_TTL,
    Address,
    MGroup,
    MRoute,
    Phyint,
    Problem,
    Where,
    fmt_prefix,
)

from .syntax import Skeleton

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import Any, TypeVar

    _T = TypeVar("_T")

IFNAMSIZ = 16  # Linux: 15 characters plus the terminating NUL
MAX_JOINS = 1024  # joins one mgroup line may expand to

_V4_MCAST = (IPv4Address("224.0.0.0"), 4)
_V6_MCAST = (IPv6Address("ff00::"), 8)


def v4(raw: bytes, _new: Any = object.__new__, _int: Any = int.from_bytes) -> IPv4Address:
    """`IPv4Address(raw)` for 4 bytes from inet_pton, at a third of its cost
    (no argument checks: two per route at start-up).  What ipaddress' own
    constructor stores, its one slot `_ip` (tests compare the two)."""
    addr: IPv4Address = _new(IPv4Address)
    addr._ip = _int(raw)  # type: ignore[attr-defined]  # (not in typeshed)
    return addr


class Bad(Exception):
    """One value is wrong; the message is ready to print."""


def q(word: str) -> str:
    """Quote a word for a message, shortened and with odd characters escaped."""
    if len(word) > 40:
        word = word[:37] + "..."
    if not word.isprintable():
        word = word.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        word = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in word)
    return f"'{word}'"


# Names already known to be valid: a configuration repeats the same few.  Each
# maps to one shared copy, so 100,000 routes do not hold 300,000 copies of
# "a1", "a2" and "a3" (nor 100,000 equal OIF tuples: `_oif_tuples`).
_good_ifnames: dict[str, str] = {}
_oif_tuples: dict[tuple[str, ...], tuple[str, ...]] = {}


def check_ifname(name: str, role: str) -> None:
    """Linux interface-name syntax, plus our trailing-'+' wildcard."""
    if name in _good_ifnames:
        return
    _check_ifname(name, role)
    if len(_good_ifnames) < 65536:
        _good_ifnames[name] = name


def _shared_oifs(oifs: tuple[str, ...]) -> tuple[str, ...]:
    """One shared tuple (of shared names) per distinct OIF list."""
    t = _oif_tuples.get(oifs)
    if t is None:
        t = tuple(_good_ifnames.get(o, o) for o in oifs)
        if len(_oif_tuples) >= _CACHE_MAX:
            _oif_tuples.clear()
        _oif_tuples[t] = t
    return t


def _check_ifname(name: str, role: str) -> None:
    if len(name) >= IFNAMSIZ:
        raise Bad(
            f"{role} {q(name)} is too long ({len(name)} characters; "
            f"Linux interface names have at most {IFNAMSIZ - 1})"
        )
    if "/" in name:
        raise Bad(f"{role} {q(name)} contains '/', which interface names cannot")
    if "+" in name[:-1]:
        raise Bad(f"{role} {q(name)}: '+' is only allowed as the last character (a wildcard)")
    if name in (".", ".."):
        raise Bad(f"{role} {q(name)} is not a valid interface name")


def parse_address(text: str) -> Address:
    """An IPv4 or IPv6 address; raises ValueError (also for `%zone` suffixes).

    inet_pton is the C library's strict syntax (dotted quad without leading
    zeros, RFC 4291 text for IPv6) -- what the original accepts -- and is
    six times faster than ipaddress' own string parser.
    """
    try:
        if ":" in text:
            return IPv6Address(inet_pton(AF_INET6, text))
        return IPv4Address(inet_pton(AF_INET, text))
    except OSError:
        raise ValueError(text) from None


def _prefix(word: str, role: str) -> tuple[Address, int]:
    """`ADDR[/LEN]` -> (address, length); length is full when absent."""
    text, slash, length = word.partition("/")
    try:
        addr = parse_address(text)
    except ValueError:
        if "%" in text:
            raise Bad(f"{role} {q(word)}: scope/zone suffixes ('%...') are not supported") from None
        example = "225.1.2.3 or ff0e::1" if role == "group" else "192.168.1.10 or 2001:db8::10"
        raise Bad(f"{role} {q(word)} is not an IPv4 or IPv6 address (e.g. {example})") from None
    full = _full(addr)
    if not slash:
        return addr, full
    if not (length.isascii() and length.isdigit() and len(length) <= 3):
        raise Bad(f"{role} {q(word)}: prefix length must be a number 0-{full}")
    n = int(length)
    if n > full:
        fam = "IPv4" if full == 32 else "IPv6"
        raise Bad(f"{role} {q(word)}: prefix length /{n} is out of range for {fam} (0-{full})")
    return addr, n


def _full(addr: Address) -> int:
    # model.full_len, but without the (slow, Python-level) .version property.
    return 32 if type(addr) is IPv4Address else 128


def _fam(addr: Address) -> int:
    return 4 if type(addr) is IPv4Address else 6


def _masked(addr: Address, n: int) -> Address:
    full = _full(addr)
    bits = int(addr) >> (full - n) << (full - n) if n else 0
    return IPv4Address(bits) if full == 32 else IPv6Address(bits)


def _is_multicast(addr: Address) -> bool:
    # Same as addr.is_multicast, without ipaddress' network-object machinery.
    if type(addr) is IPv4Address:
        return int(addr) >> 28 == 0xE
    return int(addr) >> 120 == 0xFF


# Results per word (value, or the error message).  Addresses are immutable and
# the checks depend on the word alone, so configurations where groups and
# sources recur (templates, fan-out to many OIF sets) skip ipaddress entirely.
_CACHE_MAX = 16384
_Group = tuple[Address, int, str | None]
_Source = tuple[Address | None, int, int, str | None]
_group_cache: dict[str, _Group | str] = {}
_source_cache: dict[str, _Source | str] = {}


def _memo(cache: dict[str, _T | str], word: str, check: Callable[[str], _T]) -> _T:
    """`check(word)` once per distinct word (bounded); a `Bad` is remembered too."""
    r = cache.get(word)
    if r is None:
        try:
            r = check(word)
        except Bad as e:
            r = str(e)
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[word] = r
    if isinstance(r, str):
        raise Bad(r)
    return r


def parse_group(word: str, warn: list[str]) -> tuple[Address, int]:
    """`GROUP[/LEN]` -> (group, length), host bits masked (with a warning)."""
    if "/" not in word and ":" not in word:
        # Fast path for the common case, a single IPv4 group.
        try:
            raw = inet_pton(AF_INET, word)
        except OSError:
            pass
        else:
            if raw[0] >> 4 == 0xE:
                return v4(raw), 32
    r = _memo(_group_cache, word, _group)
    if r[2]:
        warn.append(r[2])
    return r[0], r[1]


def _group(word: str) -> _Group:
    addr, n = _prefix(word, "group")
    base, minlen = _V4_MCAST if _fam(addr) == 4 else _V6_MCAST
    fam = "IPv4" if _fam(addr) == 4 else "IPv6"
    if not _is_multicast(addr):
        raise Bad(f"{addr} is not a multicast group ({fam} groups are {base}/{minlen})")
    if n < minlen:
        raise Bad(
            f"group range {word} is wider than the {fam} multicast range {base}/{minlen} "
            f"(use /{minlen} or longer)"
        )
    if n != _full(addr):
        m = _masked(addr, n)
        if m != addr:
            return m, n, f"group {word} has host bits set; using {m}/{n}"
    return addr, n, None


def parse_source(word: str, warn: list[str]) -> tuple[Address | None, int, int]:
    """-> (source or None for any, length, family).  0.0.0.0 and :: mean any."""
    if "/" not in word and ":" not in word:
        # Fast path for the common case, a single IPv4 unicast source.
        try:
            raw = inet_pton(AF_INET, word)
        except OSError:
            pass
        else:
            if raw[0] >> 4 != 0xE and raw != b"\0\0\0\0":
                return v4(raw), 32, 4
    r = _memo(_source_cache, word, _source)
    if r[3]:
        warn.append(r[3])
    return r[0], r[1], r[2]


def _source(word: str) -> _Source:
    addr, n = _prefix(word, "source")
    if _is_multicast(addr):
        raise Bad(
            f"source {addr} is a multicast address; the source must be the unicast "
            f"address of the sender"
        )
    full = _full(addr)
    note = None
    if n != full:
        m = _masked(addr, n)
        if m != addr:
            note = f"source {word} has host bits set; using {m}/{n}"
            addr = m
    if not int(addr):
        if n not in (0, full):
            note = f"source {addr}/{n} covers the unspecified address; treated as any source"
        return None, 0, _fam(addr), note
    return addr, n, _fam(addr), note


def parse_ttl(word: str) -> int:
    if word.isascii() and word.isdigit() and len(word) <= 3 and 1 <= int(word) <= MAX_TTL:
        return int(word)
    raise Bad(f"ttl-threshold {q(word)} is not a TTL; expected a number 1-{MAX_TTL}")


def count_joins(source: Address | None, source_len: int, group: Address, group_len: int) -> int:
    n = 1 << (_full(group) - group_len)
    if source is not None:
        n <<= _full(source) - source_len
    return n


def _good_oifs(iif: str, oifs: list[str]) -> tuple[str, ...] | None:
    """The common case, fast: known good names, no repeats, not `iif`, not too
    many -- as one shared tuple; None when `oif_problems` must look closer."""
    if iif in oifs or len(oifs) > MAX_OIFS:
        return None
    names = set(oifs)
    if len(names) == len(oifs) and names <= _good_ifnames.keys():
        return _shared_oifs(tuple(oifs))
    return None


def oif_problems(iif: str, oifs: list[str], errors: list[str], warn: list[str]) -> tuple[str, ...]:
    """Check outbound interfaces; return them without repeats, in order."""
    fast = _good_oifs(iif, oifs)
    if fast is not None:
        return fast
    seen: dict[str, None] = {}
    for oif in oifs:
        try:
            check_ifname(oif, "outbound interface")
        except Bad as e:
            errors.append(str(e))
            continue
        if oif in seen:
            warn.append(f"outbound interface {oif} is listed more than once")
            continue
        seen[oif] = None
        if oif == iif:
            warn.append(
                f"outbound interface {oif} is also the inbound interface (loop risk: traffic "
                f"is sent back where it came from)"
            )
    if len(seen) > MAX_OIFS:
        errors.append(
            f"{len(seen)} outbound interfaces; a route can have at most {MAX_OIFS} "
            f"(the kernel's VIF limit)"
        )
    return _shared_oifs(tuple(seen))


def _never_forwarded(group: Address, group_len: int) -> str | None:
    if _fam(group) == 4:
        if group_len >= 24 and int(group) >> 8 == 0xE00000:
            return "224.0.0.0/24 is link-local"
    elif group_len >= 16 and (int(group) >> 112) & 0xF in (1, 2):
        return "ff01::/16 and ff02::/16 are interface- and link-local scope"
    return None


def never_forwarded_warning(group: Address, group_len: int, warn: list[str]) -> None:
    """A route for a group the kernel never routes works as written, uselessly."""
    why = _never_forwarded(group, group_len)
    if why:
        warn.append(f"group {fmt_prefix(group, group_len)}: {why}; the kernel never forwards it")


Directive = Phyint | MGroup | MRoute

_PART = {"from": "'from IFNAME'", "group": "'group GROUP'", "source": "'source ADDR'"}


def build(sk: Skeleton, words: list[str], where: int) -> tuple[Directive | None, list[Problem]]:
    """Model object for a phyint/mgroup/ssmgroup/mroute line (None if it has errors).

    `where`: the line's `Where`, or that as a plain int (what a route keeps)."""
    kind = sk.kind
    opts = sk.opts
    if kind == "mroute" and "source" in opts and not sk.repeated:
        route = _exact_v4_route(opts, words, where)
        if route is not None:
            return route, []
    errors: list[str] = []
    warn: list[str] = []
    obj: Directive | None = None
    for k in sk.repeated:
        errors.append(f"{kind}: {q(k)} given more than once")
    if kind == "phyint":
        obj = _phyint(sk, words, Where.of(where), errors)
    else:
        for need in ("from", "group", "source") if kind == "ssmgroup" else ("from", "group"):
            if need not in opts:
                hint = " (use mgroup to join from any source)" if need == "source" else ""
                errors.append(f"{kind} without {q(need)}; expected {_PART[need]}{hint}")
        if kind == "mroute" and "to" not in opts:
            errors.append("mroute without 'to'; expected 'to OIF [OIF ...]'")
        if not errors:
            obj = _group_or_route(kind, opts, words, where, errors, warn)
    if not errors and not warn:
        return obj, []
    at = Where.of(where)
    probs = [Problem(at, m) for m in errors] + [Problem(at, m, True) for m in warn]
    return (None if errors else obj), probs


def _exact_v4_route(opts: dict[str, Any], words: list[str], where: int) -> MRoute | None:
    """What `build` makes of an exact IPv4 `mroute` line it has nothing to say
    about, without the generic checks (start-up reads thousands of these): a
    known good inbound interface, a unicast source and a multicast group
    outside 224.0.0.0/24 (each a dotted quad, as `parse_source` and
    `parse_group` take them), good outbound interfaces.  None for any other
    line, which `build` then judges in full."""
    try:
        iif = _good_ifnames[words[opts["from"]]]
        src = inet_pton(AF_INET, words[opts["source"]])
        grp = inet_pton(AF_INET, words[opts["group"]])
        oif_words = [words[i] for i in opts["to"]]
    except (KeyError, OSError, ValueError):
        return None
    if grp[0] >> 4 != 0xE or grp[:3] == b"\xe0\0\0" or src[0] >> 4 == 0xE or src == b"\0\0\0\0":
        return None
    oifs = _good_oifs(iif, oif_words) if oif_words else None
    if oifs is None:
        return None
    return MRoute(iif, v4(src), 32, v4(grp), 32, oifs, where)


def _phyint(sk: Skeleton, words: list[str], where: Where, errors: list[str]) -> Phyint | None:
    name = words[sk.name]
    opts = sk.opts
    try:
        check_ifname(name, "phyint interface")
    except Bad as e:
        errors.append(str(e))
    if "enable" in opts and "disable" in opts:
        errors.append("phyint: both 'enable' and 'disable' given; use one")
    ttl = 1
    if "ttl-threshold" in opts:
        try:
            ttl = parse_ttl(words[opts["ttl-threshold"]])
        except Bad as e:
            errors.append(str(e))
    if errors:
        return None
    return Phyint(name, "disable" not in opts, "mrdisc" in opts, ttl, where)


def _group_or_route(
    kind: str,
    opts: dict[str, Any],
    words: list[str],
    where: int,
    errors: list[str],
    warn: list[str],
) -> MGroup | MRoute | None:
    iif = words[opts["from"]]
    try:
        check_ifname(iif, "inbound interface")
        iif = _good_ifnames.get(iif, iif)
    except Bad as e:
        errors.append(str(e))
    group: Address | None = None
    glen = 0
    try:
        group, glen = parse_group(words[opts["group"]], warn)
    except Bad as e:
        errors.append(str(e))
    source: Address | None = None
    slen = 0
    sfam = 0
    if "source" in opts:
        word = words[opts["source"]]
        try:
            source, slen, sfam = parse_source(word, warn)
        except Bad as e:
            errors.append(str(e))
    if group is not None and sfam and sfam != _fam(group):
        errors.append(
            f"source {words[opts['source']]} is IPv{sfam} but group {group} is "
            f"IPv{_fam(group)}; both must be the same family"
        )
    oifs: tuple[str, ...] = ()
    if kind == "mroute":
        oif_words = [words[i] for i in opts["to"]]
        if not oif_words:
            errors.append("mroute: 'to' needs at least one outbound interface")
        oifs = oif_problems(iif, oif_words, errors, warn)
    if errors or group is None:
        return None
    if kind == "mroute":
        never_forwarded_warning(group, glen, warn)
        return MRoute(iif, source, slen, group, glen, oifs, where)
    n = count_joins(source, slen, group, glen)
    if n > MAX_JOINS:
        errors.append(
            f"{kind} {words[opts['group']]} would join {n} groups; "
            f"at most {MAX_JOINS} per line (use a longer prefix)"
        )
        return None
    return MGroup(iif, source, slen, group, glen, where)
