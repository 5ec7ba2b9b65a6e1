"""smcroutectl arguments (`add`, `remove`, `join`, `leave`) -> model objects.

Owns the positional argument syntax of doc/SPEC.md §4:
    add    IIF [SOURCE[/LEN]] GROUP[/LEN] OIF [OIF ...]
    remove IIF [SOURCE[/LEN]] GROUP[/LEN] [OIF ...]
    join   IIF [SOURCE[/LEN]] GROUP[/LEN]
    leave  IIF [SOURCE[/LEN]] GROUP[/LEN]
After IIF, the next one or two words that parse as addresses are [source]
group; the rest are outbound interfaces.  The values are checked by the same
code as smcroute.conf (`semantics.py`), so a route accepted on the command
line is exactly one the configuration file would accept.  The structure is
positional, not keyword-driven, so lark is not involved here.

Must not do I/O and must raise nothing but ParseError.  Warnings are the
ones `-F` gives for the same words in a file (host bits masked, an outbound
interface equal to the inbound one, a group the kernel never routes...);
they go to the caller's `warnings` list, and the result carries the
corrected values.
"""

from __future__ import annotations

from smcroute.model import IPC, MGroup, MRoute

from .semantics import (
    MAX_JOINS,
    Bad,
    check_ifname,
    count_joins,
    never_forwarded_warning,
    oif_problems,
    parse_address,
    parse_group,
    parse_source,
    q,
)


class ParseError(Exception):
    """An argument list that does not make a route or group; message is printable."""


_USAGE = {
    "add": "add IIF [SOURCE[/LEN]] GROUP[/LEN] OIF [OIF ...]",
    "remove": "remove IIF [SOURCE[/LEN]] GROUP[/LEN] [OIF ...]",
    "join": "join IIF [SOURCE[/LEN]] GROUP[/LEN]",
    "leave": "leave IIF [SOURCE[/LEN]] GROUP[/LEN]",
}


def _is_address(word: str) -> bool:
    try:
        parse_address(word.partition("/")[0])
    except ValueError:
        return False
    return True


def parse_command(cmd: str, args: list[str], warnings: list[str] | None = None) -> MRoute | MGroup:
    """Model object for the arguments; warnings are appended to `warnings`."""
    warn: list[str] = []
    try:
        obj = _parse(cmd, args, warn)
    except ParseError:
        raise
    except Exception as e:  # pragma: no cover - a bug must not kill the control server
        raise ParseError(f"{cmd}: cannot parse arguments ({type(e).__name__}: {e})") from None
    if warnings is not None:
        warnings.extend(warn)
    return obj


def _parse(cmd: str, args: list[str], warn: list[str]) -> MRoute | MGroup:
    if cmd not in _USAGE:
        raise ParseError(f"unknown command {q(cmd)}; expected add, remove, join or leave")
    usage = f"usage: {_USAGE[cmd]}"
    args = [str(a) for a in args]
    for a in args:
        if not a or not a.isprintable() or any(c.isspace() for c in a):
            raise ParseError(f"{cmd}: invalid argument {q(a)}; {usage}")
    if not args:
        raise ParseError(f"{cmd}: missing inbound interface and group; {usage}")
    iif = args[0]
    rest = args[1:]
    if not rest or not _is_address(rest[0]):
        what = q(rest[0]) + " is not an address" if rest else "missing group"
        raise ParseError(f"{cmd}: {what}; {usage}")
    if len(rest) >= 2 and _is_address(rest[1]):
        src_word: str | None = rest[0]
        grp_word = rest[1]
        oif_words = rest[2:]
    else:
        src_word, grp_word, oif_words = None, rest[0], rest[1:]
    errors: list[str] = []
    try:
        check_ifname(iif, "inbound interface")
    except Bad as e:
        errors.append(str(e))
    try:
        group, glen = parse_group(grp_word, warn)
    except Bad as e:
        msg = str(e)
        if src_word is not None:
            try:
                parse_group(src_word, [])
                msg += " (the source comes before the group: IIF SOURCE GROUP)"
            except Bad:
                pass
        raise ParseError(f"{cmd}: {msg}") from None
    source, slen, sfam = None, 0, 0
    if src_word is not None:
        try:
            source, slen, sfam = parse_source(src_word, warn)
        except Bad as e:
            errors.append(str(e))
    if sfam and sfam != group.version:
        errors.append(
            f"source {src_word} is IPv{sfam} but group {grp_word} is IPv{group.version}; "
            f"both must be the same family"
        )
    if cmd in ("join", "leave"):
        if oif_words:
            errors.append(f"unexpected {q(oif_words[0])}; {usage}")
        elif not errors and count_joins(source, slen, group, glen) > MAX_JOINS:
            n = count_joins(source, slen, group, glen)
            errors.append(f"{grp_word} would join {n} groups; at most {MAX_JOINS}")
        if errors:
            raise ParseError(f"{cmd}: {errors[0]}")
        return MGroup(iif, source, slen, group, glen, IPC)
    if cmd == "add" and not oif_words:
        errors.append(f"missing outbound interface; {usage}")
    oifs = oif_problems(iif, oif_words, errors, warn)
    if errors:
        raise ParseError(f"{cmd}: {errors[0]}")
    if cmd == "add":
        never_forwarded_warning(group, glen, warn)
    return MRoute(iif, source, slen, group, glen, oifs, IPC)
