"""smcroute.logsetup: the daemon's logger (levels, the stderr sink's lines,
the helper's lines, messages before setup) without the logging module."""

from __future__ import annotations

import os
import subprocess
import sys
import syslog
from collections.abc import Iterator

import pytest

from smcroute import logsetup
from smcroute.logsetup import log


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    sink, level = log.sink, log.level
    yield
    log.sink, log.level = sink, level


def test_stderr_lines_and_levels(capsys: pytest.CaptureFixture[str]) -> None:
    logsetup.setup("smct", "notice", use_syslog=False)
    log.debug("d")
    log.info("i")
    logsetup.notice("n")
    log.warning("w")
    log.error("e")
    log.critical("c")
    pid = os.getpid()
    assert capsys.readouterr().err == "".join(f"smct[{pid}]: {m}\n" for m in "nwec")
    logsetup.set_level("debug")
    log.debug("d")
    log.log(logsetup.INFO, "i")
    logsetup.set_level("err")
    log.warning("w")
    log.error("e")
    logsetup.set_level("none")
    log.critical("c")
    assert capsys.readouterr().err == f"smct[{pid}]: d\nsmct[{pid}]: i\nsmct[{pid}]: e\n"


def test_helper_lines_at_their_syslog_level(capsys: pytest.CaptureFixture[str]) -> None:
    logsetup.setup("smct", "notice", use_syslog=False)
    logsetup.from_helper(syslog.LOG_INFO, "quiet")
    logsetup.from_helper(syslog.LOG_WARNING, "refused a record")
    logsetup.from_helper(99, "odd level: notice")
    pid = os.getpid()
    assert capsys.readouterr().err == (
        f"smct[{pid}]: helper: refused a record\nsmct[{pid}]: helper: odd level: notice\n"
    )


def test_before_setup_and_without_logging() -> None:
    """Before setup, warnings and worse go to stderr bare (as logging's last
    resort did); the daemon's modules load without `logging`."""
    code = (
        "import sys\n"
        "import smcroute.daemon, smcroute.daemon_cli\n"
        "from smcroute.logsetup import log\n"
        "log.info('not shown')\n"
        "log.warning('shown')\n"
        "log.critical('internal error: x')\n"
        "print('logging' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (r.stdout, r.stderr) == ("False\n", "shown\ninternal error: x\n")
