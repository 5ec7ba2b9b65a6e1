"""The configuration model: what `smcroute.conf` and `smcroutectl` arguments mean.

Owns the value types shared by the parser (text -> model), the engine (model ->
kernel operations) and the control protocol.  Pure data: no I/O, no parsing,
no kernel knowledge.  Every directive remembers where it came from (`Where`) so
that any later error can name the file and line.

Addresses are `ipaddress` objects.  A source of `None` means "any source"
(`source 0.0.0.0` and `source ::` normalise to `None`).  A group is always
present.  `*_len` is the prefix length; a full length (32 or 128) means a single
address.  Interface names may end in `+`, a wildcard (`eth+` matches `eth0`).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_network

from smcroute.privsep.kernel import MAXVIFS
from smcroute.records import dataclass, field

Address = IPv4Address | IPv6Address
TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import Literal

    Family = Literal[4, 6]
else:
    Family = int

MAX_OIFS = MAXVIFS  # a route's outbound interfaces: at most one per VIF/MIF
MAX_TTL = 255


# File names a `Where` names, by number: each distinct name is kept once.
_files: list[str] = []
_file_ids: dict[str, int] = {}
_LINE_BITS = 32


class Where(int):
    """Origin of a directive: file name (or `<ipc>`) and 1-based line.

    One int, `(file number << 32) | line`, the file numbered in a table of
    the names seen: equal origins are equal ints.  A directive stores the
    plain int (`origin`, 32 bytes per route instead of a 48-byte object and
    its line number) and makes its `Where` when asked (`where`).
    """

    __slots__ = ()

    def __new__(cls, file: str, line: int) -> Where:
        if not 0 <= line < 1 << _LINE_BITS:
            raise ValueError(f"line number out of range: {line}")
        fid = _file_ids.get(file)
        if fid is None:
            fid = _file_ids[file] = len(_files)
            _files.append(file)
        return int.__new__(cls, fid << _LINE_BITS | line)

    @classmethod
    def of(cls, origin: int) -> Where:
        """The `Where` of an `origin` int (a `Where` is its own)."""
        if type(origin) is cls:
            return origin
        w: Where = int.__new__(cls, origin)
        return w

    @property
    def file(self) -> str:
        return _files[self >> _LINE_BITS]

    @property
    def line(self) -> int:
        return self & ((1 << _LINE_BITS) - 1)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    def __repr__(self) -> str:
        return f"Where(file={self.file!r}, line={self.line})"


IPC = Where("<ipc>", 0)


def full_len(addr: Address) -> int:
    return 32 if addr.version == 4 else 128


def fmt_prefix(addr: Address, length: int) -> str:
    """`225.1.1.1` for a single address, `225.1.1.0/24` for a range."""
    return str(addr) if length == full_len(addr) else f"{addr}/{length}"


def fmt_sg(source: Address | None, source_len: int, group: Address, group_len: int) -> str:
    """`(*, 225.1.1.1)`, `(10.0.0.5, 225.4.4.0/24)` as `show` prints them."""
    src = "*" if source is None else fmt_prefix(source, source_len)
    return f"({src}, {fmt_prefix(group, group_len)})"


def is_wildcard(ifname: str) -> bool:
    return ifname.endswith("+")


def ifname_matches(pattern: str, ifname: str) -> bool:
    """`eth+` matches `eth0`, `eth15` (and `eth`); a plain name matches itself."""
    if pattern.endswith("+"):
        return ifname.startswith(pattern[:-1])
    return pattern == ifname


def in_prefix(addr: Address, base: Address, length: int) -> bool:
    if addr.version != base.version:
        return False
    bits = full_len(base)
    if length == 0:
        return True
    shift = bits - length
    return (int(addr) >> shift) == (int(base) >> shift)


def network_addresses(base: Address, length: int) -> list[Address]:
    """Every address of a range, e.g. for joining each group of `mgroup ... /30`."""
    net = ip_network(f"{base}/{length}", strict=False)
    if net.num_addresses == 1:
        return [net.network_address]
    return list(net)


@dataclass(frozen=True, slots=True)
class Phyint:
    """`phyint IFNAME [enable|disable] [mrdisc] [ttl-threshold TTL]`"""

    ifname: str
    enable: bool = True
    mrdisc: bool = False
    ttl_threshold: int = 1
    where: Where = IPC


@dataclass(frozen=True, slots=True)
class MGroup:
    """`mgroup from IIF [source S[/LEN]] group G[/LEN]` (and `ssmgroup`): a join."""

    iif: str
    source: Address | None
    source_len: int
    group: Address
    group_len: int
    origin: int = field(default=IPC, compare=False, repr=False)  # a `Where`, as an int

    @property
    def where(self) -> Where:
        return Where.of(self.origin)

    @property
    def family(self) -> Family:
        return 4 if self.group.version == 4 else 6

    def sg(self) -> str:
        return fmt_sg(self.source, self.source_len, self.group, self.group_len)


_set = object.__setattr__
_LENS = 0xFFFF  # MRoute._meta: origin << 16 | source_len << 8 | group_len


class MRoute:
    """`mroute from IIF [source S[/LEN]] group G[/LEN] to OIF...`

    Exact (S,G) when the source and group are single addresses and the inbound
    interface is not a wildcard; otherwise a template matched against traffic.
    `oifs` may be empty only for routes made by `smcroutectl remove ... OIF`
    (a stop filter).

    Immutable; made and compared as a frozen dataclass of (iif, source,
    source_len, group, group_len, oifs, origin) would be (`origin`, a `Where`
    as an int, takes no part in equality).  Held in four slots, 64 bytes a
    route where seven took 96: `mfc_key` (family, source, group) -- the
    (S,G) key of the engine and of its kernel entry, which share this tuple
    -- and one int for the prefix lengths and the origin.
    """

    __slots__ = ("_meta", "iif", "mfc_key", "oifs")
    __match_args__ = ("iif", "source", "source_len", "group", "group_len", "oifs", "origin")

    iif: str
    oifs: tuple[str, ...]
    mfc_key: tuple[Family, Address | None, Address]
    _meta: int

    def __init__(
        self,
        iif: str,
        source: Address | None,
        source_len: int,
        group: Address,
        group_len: int,
        oifs: tuple[str, ...],
        origin: int = IPC,
    ) -> None:
        if not (0 <= source_len <= 128 and 0 <= group_len <= 128):
            raise ValueError(f"prefix length out of range: /{source_len}, /{group_len}")
        _set(self, "iif", iif)
        _set(self, "oifs", oifs)
        _set(self, "mfc_key", (4 if type(group) is IPv4Address else 6, source, group))
        _set(self, "_meta", origin << 16 | source_len << 8 | group_len)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not MRoute:
            return NotImplemented
        o: MRoute = other
        return (
            self.mfc_key == o.mfc_key
            and self.iif == o.iif
            and self._meta & _LENS == o._meta & _LENS
            and self.oifs == o.oifs
        )

    def __hash__(self) -> int:
        return hash((self.iif, self.mfc_key, self._meta & _LENS, self.oifs))

    def __repr__(self) -> str:
        return (
            f"MRoute(iif={self.iif!r}, source={self.source!r}, source_len={self.source_len!r}, "
            f"group={self.group!r}, group_len={self.group_len!r}, oifs={self.oifs!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (
            MRoute,
            (
                self.iif,
                self.source,
                self.source_len,
                self.group,
                self.group_len,
                self.oifs,
                self.origin,
            ),
        )

    @property
    def source(self) -> Address | None:
        return self.mfc_key[1]

    @property
    def group(self) -> Address:
        return self.mfc_key[2]

    @property
    def family(self) -> Family:
        return self.mfc_key[0]

    @property
    def source_len(self) -> int:
        return self._meta >> 8 & 0xFF

    @property
    def group_len(self) -> int:
        return self._meta & 0xFF

    @property
    def origin(self) -> int:
        return self._meta >> 16

    @property
    def where(self) -> Where:
        return Where.of(self._meta >> 16)

    @property
    def is_template(self) -> bool:
        # Spelt out (no helpers): the engine and show ask it often.
        fam, source, _ = self.mfc_key
        if source is None or self.iif[-1:] == "+":
            return True
        return self._meta & _LENS != (0x2020 if fam == 4 else 0x8080)

    def sg(self) -> str:
        return fmt_sg(self.source, self.source_len, self.group, self.group_len)


@dataclass(slots=True)
class Config:
    """A whole parsed configuration, directives in file order (includes inlined)."""

    phyints: list[Phyint] = field(default_factory=list)
    groups: list[MGroup] = field(default_factory=list)
    routes: list[MRoute] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Problem:
    """A configuration error or warning, printed as `FILE:LINE: message`."""

    where: Where
    message: str
    warning: bool = False
    # The file or directory this process was not allowed to read, when that
    # is the problem (the daemon's main process reads unprivileged).
    denied: str = ""

    def __str__(self) -> str:
        if self.where.line <= 0:
            return f"{self.where.file}: {self.message}"
        return f"{self.where}: {self.message}"
