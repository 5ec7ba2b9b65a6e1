"""When to send RFC 4286 Multicast Router Advertisements (pure timer logic).

Owns: for each announcing interface -- a (family, ifindex) that
`Engine.announcements` lists -- the time of its next advertisement.  An
interface that starts announcing (start-up, reload, a link that comes up or
appears) gets an initial burst of `INITIAL_ADVERTS` advertisements at random
gaps of at most `MAX_INITIAL_GAP` seconds (RFC 4286 §3: MAX_INITIAL_ADVERTISEMENTS,
MAX_INITIAL_ADVERT_INTERVAL), then one every Advertisement Interval (`-m`)
with a jitter of ±2.5 % of it, so that routers started together drift apart.
An interface that stops announcing is forgotten at once.  A Solicitation
heard on an announcing interface is answered at once, at most once per
`SOLICIT_GAP` seconds per interface (RFC 4286 §6); the groups a router
listens on to hear them are `LISTEN`.

Must not: read the clock (`now` is an argument), send, or log; randomness
comes from an injectable `random.Random` so tests can fix it (by default
`_random.Random`, its C base: `random` costs the daemon's start ~2 ms of
imports, `hashlib`'s SHA-512 and `bisect` among them, for two draws).
"""

from __future__ import annotations

from _random import Random
from collections.abc import Iterable
from ipaddress import ip_address

from smcroute.engine.ops import Announce
from smcroute.records import dataclass

INITIAL_ADVERTS = 3
MIN_INITIAL_GAP = 0.5  # not back to back: a burst is meant to survive a lost packet
MAX_INITIAL_GAP = 2.0
JITTER = 0.025  # fraction of the interval
SOLICIT_GAP = 1.0  # s: more Solicitations than one a second on an interface are ignored
# joined on announcing interfaces: all-routers (Solicitations go there) and all-snoopers
LISTEN = {4: (ip_address("224.0.0.2"), ip_address("224.0.0.106")),
          6: (ip_address("ff02::2"), ip_address("ff02::6a"))}  # fmt: skip

Key = tuple[int, int]  # (family, ifindex)


@dataclass(slots=True)
class _Timer:
    op: Announce
    due: float
    initial_left: int
    solicited: float = -1e18  # when a Solicitation was last answered


def _uniform(rng: Random, a: float, b: float) -> float:
    """`random.Random.uniform`, spelt as it is there (the same draws)."""
    return a + (b - a) * rng.random()


class Schedule:
    """The advertisement timers of every announcing interface."""

    def __init__(self, rng: Random | None = None) -> None:
        self.rng = rng or Random()  # seeded from os.urandom
        self.timers: dict[Key, _Timer] = {}

    def update(self, announcers: Iterable[Announce], now: float) -> None:
        """The interfaces that announce from `now` on; new ones start a burst."""
        want = {(a.family, a.ifindex): a for a in announcers}
        for key in [k for k in self.timers if k not in want]:
            del self.timers[key]
        for key, op in want.items():
            timer = self.timers.get(key)
            if timer is None:
                self.timers[key] = _Timer(op, now, INITIAL_ADVERTS)
            elif timer.op != op:  # renamed, or another interval: keep the rhythm
                timer.op = op
                timer.due = min(timer.due, now + op.interval * (1 + JITTER))

    def due(self, now: float) -> list[Announce]:
        """Advertisements to send now; each timer moves to its next deadline."""
        out: list[Announce] = []
        for timer in self.timers.values():
            if timer.due > now:
                continue
            out.append(timer.op)
            if timer.initial_left > 1:
                timer.initial_left -= 1
                timer.due = now + _uniform(self.rng, MIN_INITIAL_GAP, MAX_INITIAL_GAP)
            else:
                timer.initial_left = 0
                ival = timer.op.interval
                timer.due = now + ival + _uniform(self.rng, -JITTER * ival, JITTER * ival)
        return out

    def solicited(self, key: Key, now: float) -> Announce | None:
        """The Advertisement answering a Solicitation heard on `key` at `now`, if
        that interface announces and it answered none in the last SOLICIT_GAP s."""
        timer = self.timers.get(key)
        if timer is None or now - timer.solicited < SOLICIT_GAP:
            return None
        timer.solicited = now
        return timer.op

    def next_deadline(self) -> float | None:
        return min((t.due for t in self.timers.values()), default=None)
