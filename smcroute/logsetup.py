"""Logging for smcrouted: one stream, `ident[pid]: message`, stderr or syslog.

Owns the mapping of SMCRoute's level names (none, err, notice, info, debug)
to `logging`'s level numbers, the daemon's logger and its two sinks.  The
privileged helper does not log on its own: it sends LOG messages to the
parent, which logs them here, so both processes share one stream in order.
"""

from __future__ import annotations

import contextlib
import os
import sys
import syslog
from collections.abc import Callable

# logging's numbers, and NOTICE between INFO and WARNING
DEBUG, INFO, NOTICE, WARNING, ERROR, CRITICAL = 10, 20, 25, 30, 40, 50

LEVELS = {
    "none": CRITICAL + 10,
    "err": ERROR,
    "error": ERROR,
    "warning": WARNING,
    "notice": NOTICE,
    "info": INFO,
    "debug": DEBUG,
}

# syslog priority (as the privileged helper sends it) -> level
SYSLOG_LEVELS = {
    syslog.LOG_EMERG: CRITICAL,
    syslog.LOG_ALERT: CRITICAL,
    syslog.LOG_CRIT: CRITICAL,
    syslog.LOG_ERR: ERROR,
    syslog.LOG_WARNING: WARNING,
    syslog.LOG_NOTICE: NOTICE,
    syslog.LOG_INFO: INFO,
    syslog.LOG_DEBUG: DEBUG,
}

_SYSLOG_PRIO = {
    DEBUG: syslog.LOG_DEBUG,
    INFO: syslog.LOG_INFO,
    NOTICE: syslog.LOG_NOTICE,
    WARNING: syslog.LOG_WARNING,
    ERROR: syslog.LOG_ERR,
    CRITICAL: syslog.LOG_CRIT,
}

Sink = Callable[[int, str], None]


def _bare(_level: int, msg: str) -> None:
    """Before `setup`: the message alone on stderr (as logging's last resort)."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(msg + "\n")


class Logger:
    """The daemon's one logger: the part of `logging.Logger` it uses (a level,
    `log`, `debug` ... `critical`), with one sink.  Not `logging` itself: its
    import (traceback, linecache, tokenize, textwrap, string, ...) was ~6 ms
    of every start, for two handlers that format `ident[pid]: message`."""

    def __init__(self) -> None:
        self.level = WARNING
        self.sink: Sink = _bare

    def setLevel(self, level: int) -> None:
        self.level = level

    def log(self, level: int, msg: str) -> None:
        if level >= self.level:
            self.sink(level, msg)

    def debug(self, msg: str) -> None:
        self.log(DEBUG, msg)

    def info(self, msg: str) -> None:
        self.log(INFO, msg)

    def warning(self, msg: str) -> None:
        self.log(WARNING, msg)

    def error(self, msg: str) -> None:
        self.log(ERROR, msg)

    def critical(self, msg: str) -> None:
        self.log(CRITICAL, msg)


log = Logger()


def _stderr(ident: str) -> Sink:
    def emit(_level: int, msg: str) -> None:
        try:
            sys.stderr.write(f"{ident}[{os.getpid()}]: {msg}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # stderr gone (detached, closed pipe): nowhere left to say it

    return emit


def _syslog(ident: str) -> Sink:
    syslog.openlog(ident, syslog.LOG_PID | syslog.LOG_NDELAY, syslog.LOG_DAEMON)

    def emit(level: int, msg: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            syslog.syslog(_SYSLOG_PRIO.get(level, syslog.LOG_INFO), msg)

    return emit


def setup(ident: str, level: str, use_syslog: bool) -> None:
    log.sink = _syslog(ident) if use_syslog else _stderr(ident)
    log.setLevel(LEVELS.get(level, NOTICE))


def set_level(level: str) -> None:
    """Change the level at run time (`smcroutectl log LEVEL`)."""
    log.setLevel(LEVELS.get(level, NOTICE))


def from_helper(level: int, text: str) -> None:
    """A LOG line of the privileged helper (syslog `level`), as it arrives."""
    log.log(SYSLOG_LEVELS.get(level, NOTICE), f"helper: {text}")


def notice(msg: str) -> None:
    log.log(NOTICE, msg)
