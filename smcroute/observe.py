"""The daemon's side of `explain`, `doctor` and `log` (smcroutectl commands).

Owns turning those requests into documents (`smcroute.explain`,
`smcroute.doctor`) and changing the log level of both processes at run time
(until the next restart).  Must not: change routing state.
"""

from __future__ import annotations

import time

from smcroute import logsetup
from smcroute.doctor import doctor
from smcroute.engine.core import EngineError
from smcroute.explain import explain
from smcroute.netlink import NetlinkError
from smcroute.stats import link_names

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import Any

LOG_NAMES = ("none", "err", "notice", "info", "debug")


def request(daemon: Any, cmd: str, args: list[str], detail: bool) -> Any:
    if cmd == "explain":
        try:
            fresh = daemon.sampler.fresh(time.monotonic(), link_names(daemon.engine))
        except (NetlinkError, OSError) as e:
            raise EngineError(f"cannot read kernel counters: {e}") from e
        return explain(daemon.engine, args, fresh, daemon.sampler.last, daemon.opts.table)
    if cmd == "doctor":
        if args:
            raise EngineError("doctor takes no arguments")
        return doctor(daemon.engine, daemon.opts.conf, daemon.opts.table, daemon.counts.limit_hits)
    if cmd == "log":
        return set_level(daemon, args)
    raise EngineError(f"unknown command {cmd!r}")


def set_level(daemon: Any, args: list[str]) -> Any:
    """`log LEVEL`: both processes, until the next restart.  The helper's lines
    pass through this process's logger (they come as LOG messages), so one
    threshold serves both."""
    if len(args) != 1 or args[0] not in logsetup.LEVELS:
        got = f" {args[0]!r}" if args else ""
        raise EngineError(f"invalid log level{got}; expected {', '.join(LOG_NAMES)}")
    level = args[0]
    logsetup.set_level(level)
    logsetup.notice(f"log level {level} (both processes, until the next restart)")
    return None
