"""Logging for smcrouted: one stream, `ident[pid]: message`, stderr or syslog.

Owns the mapping of SMCRoute's level names (none, err, notice, info, debug)
to `logging` levels and the two sinks.  The privileged helper does not log
on its own: it sends LOG messages to the parent, which logs them here, so
both processes share one stream in order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import syslog

NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")

LEVELS = {
    "none": logging.CRITICAL + 10,
    "err": logging.ERROR,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "notice": NOTICE,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}

# syslog priority (as the privileged helper sends it) -> logging level
SYSLOG_LEVELS = {
    syslog.LOG_EMERG: logging.CRITICAL,
    syslog.LOG_ALERT: logging.CRITICAL,
    syslog.LOG_CRIT: logging.CRITICAL,
    syslog.LOG_ERR: logging.ERROR,
    syslog.LOG_WARNING: logging.WARNING,
    syslog.LOG_NOTICE: NOTICE,
    syslog.LOG_INFO: logging.INFO,
    syslog.LOG_DEBUG: logging.DEBUG,
}

_SYSLOG_PRIO = {
    logging.DEBUG: syslog.LOG_DEBUG,
    logging.INFO: syslog.LOG_INFO,
    NOTICE: syslog.LOG_NOTICE,
    logging.WARNING: syslog.LOG_WARNING,
    logging.ERROR: syslog.LOG_ERR,
    logging.CRITICAL: syslog.LOG_CRIT,
}

log = logging.getLogger("smcroute")


class _Stderr(logging.Handler):
    def __init__(self, ident: str) -> None:
        super().__init__()
        self.ident = ident

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"{self.ident}[{os.getpid()}]: {record.getMessage()}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # stderr gone (detached, closed pipe): nowhere left to say it


class _Syslog(logging.Handler):
    def __init__(self, ident: str) -> None:
        super().__init__()
        syslog.openlog(ident, syslog.LOG_PID | syslog.LOG_NDELAY, syslog.LOG_DAEMON)

    def emit(self, record: logging.LogRecord) -> None:
        prio = _SYSLOG_PRIO.get(record.levelno, syslog.LOG_INFO)
        with contextlib.suppress(OSError, ValueError):
            syslog.syslog(prio, record.getMessage())


def setup(ident: str, level: str, use_syslog: bool) -> None:
    for h in list(log.handlers):
        log.removeHandler(h)
    log.addHandler(_Syslog(ident) if use_syslog else _Stderr(ident))
    log.setLevel(LEVELS.get(level, NOTICE))
    log.propagate = False


def set_level(level: str) -> None:
    """Change the level at run time (`smcroutectl log LEVEL`)."""
    log.setLevel(LEVELS.get(level, NOTICE))


def from_helper(level: int, text: str) -> None:
    """A LOG line of the privileged helper (syslog `level`), as it arrives."""
    log.log(SYSLOG_LEVELS.get(level, NOTICE), f"helper: {text}")


def notice(msg: str) -> None:
    log.log(NOTICE, msg)
