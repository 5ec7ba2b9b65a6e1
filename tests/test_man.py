"""Man pages: lint-clean with mandoc and groff, render with man, and document
every option, command, directive, signal, variable and exit code of doc/SPEC.md.

Needs the Debian packages mandoc, groff-base and man-db.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man"
PAGES = ["smcrouted.8", "smcroutectl.8", "smcroute.conf.5"]

# doc/SPEC.md §2 (plus -D, the testing aid, and -I, the alias of -i) and doc/SPEC.md §4.
DAEMON_OPTIONS = "hnNsvcdeFfilmpPtuDI"
CTL_OPTIONS = "bdjptiuv"
EXIT_CODES = ["0", "64", "69", "70", "71", "76", "77", "78"]
CTL_COMMANDS = [
    "add", "remove", "rem", "del", "join", "leave", "show", "flush",
    "reload", "restart", "kill", "help", "version",
    "routes", "groups", "interfaces", "pending",
]  # fmt: skip
DIRECTIVES = [
    "phyint", "mgroup", "ssmgroup", "mroute", "include",
    "enable", "disable", "mrdisc", "ttl-threshold", "from", "source", "group", "to",
]  # fmt: skip
DIRECTIVE_WORDS = {"phyint", "mgroup", "ssmgroup", "mroute", "include"}


def _text(page: str) -> str:
    return (MAN / page).read_text()


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=MAN)


def test_tools_are_installed():
    missing = [t for t in ("mandoc", "groff", "man") if shutil.which(t) is None]
    assert not missing, f"install mandoc, groff-base and man-db: missing {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_mandoc_lint_has_no_warnings(page):
    res = _run("mandoc", "-T", "lint", "-W", "warning", page)
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr


# Style messages that depend on which other manuals the machine has installed.
_ENV_DEPENDENT = re.compile(r"referenced manual not found|mandoc\.db|makewhatis")


@pytest.mark.parametrize("page", PAGES)
def test_mandoc_lint_style_is_clean(page):
    res = _run("mandoc", "-T", "lint", "-W", "style", page)
    lines = [
        line for line in (res.stdout + res.stderr).splitlines() if not _ENV_DEPENDENT.search(line)
    ]
    assert lines == []


@pytest.mark.parametrize("page", PAGES)
def test_groff_has_no_warnings(page):
    res = _run("groff", "-ww", "-z", "-mdoc", page)
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr


@pytest.mark.parametrize("page", PAGES)
def test_lint_catches_a_broken_page(page, tmp_path):
    """The two linters above would notice a mistake (a check that cannot fail is no check)."""
    broken = tmp_path / page
    broken.write_text(_text(page).replace(".Sh DESCRIPTION", ".Sh DESCRIPTION\n.Bl -tag\n.It", 1))
    res = subprocess.run(
        ["mandoc", "-T", "lint", "-W", "warning", str(broken)], capture_output=True, text=True
    )
    assert res.returncode != 0 and res.stdout + res.stderr
    res = subprocess.run(
        ["groff", "-ww", "-z", "-mdoc", str(broken)], capture_output=True, text=True
    )
    assert (res.stdout + res.stderr).strip()


@pytest.mark.parametrize("page", PAGES)
def test_man_renders(page):
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    res = subprocess.run(
        ["man", "-l", "-P", "cat", str(MAN / page)], capture_output=True, text=True, env=env
    )
    assert res.returncode == 0, res.stderr
    assert "NAME" in res.stdout and "SYNOPSIS" in res.stdout and "SEE ALSO" in res.stdout


def _listed_options(page: str) -> set[str]:
    return set(re.findall(r"^\.It Fl (\w)\b", _text(page), re.M))


def test_every_daemon_option_is_documented():
    listed = _listed_options("smcrouted.8") | set(
        re.findall(r"\bFl (I) Ar NAME", _text("smcrouted.8"))
    )
    assert listed >= set(DAEMON_OPTIONS)


def test_daemon_synopsis_matches_spec():
    text = _text("smcrouted.8")
    synopsis = text[text.index(".Sh SYNOPSIS") : text.index(".Sh DESCRIPTION")]
    assert ".Op Fl hnNsv" in synopsis
    for letter in "cdefFilmpPtu":
        assert f"Fl {letter} Ar" in synopsis, letter


def test_every_ctl_option_is_documented():
    assert set(CTL_OPTIONS) <= _listed_options("smcroutectl.8")
    assert ".Op Fl bdjptv" in _text("smcroutectl.8")


def _exit_codes(page: str) -> list[str]:
    text = _text(page)
    section = text[text.index(".Sh EXIT STATUS") :]
    section = section[: section.index("\n.Sh ", 1)]
    return re.findall(r"^\.It (\d+)$", section, re.M)


def test_every_exit_code_is_documented():
    assert _exit_codes("smcrouted.8") == EXIT_CODES
    assert _exit_codes("smcroutectl.8") == ["0", "1"]


def test_every_command_is_documented():
    cmds = set(re.findall(r"\bCm ([\w-]+)", _text("smcroutectl.8")))
    assert set(CTL_COMMANDS) <= cmds


def test_every_directive_is_documented():
    text = _text("smcroute.conf.5")
    listed = set(re.findall(r"^\.It Cm ([\w-]+)", text, re.M))
    assert listed >= DIRECTIVE_WORDS
    item_words = {w for line in re.findall(r"^\.It Cm (.*)$", text, re.M) for w in line.split()}
    assert item_words >= set(DIRECTIVES)


def test_signals_environment_and_files():
    text = _text("smcrouted.8")
    for sig in ("SIGHUP", "SIGINT", "SIGTERM"):
        assert f".It Dv {sig}" in text
    for var in ("NOTIFY_SOCKET", "source", "group"):
        assert re.search(rf"^\.It Ev .*\b{var}\b", text, re.M), var
    for notify in ("READY=1", "RELOADING=1", "STATUS=", "STOPPING=1"):
        assert notify in text
    for path in (
        "/etc/smcroute.conf",
        "/var/run/smcroute.pid",
        "/var/run/smcroute.sock",
        "/etc/default/smcroute",
    ):
        assert f".It Pa {path}" in text
    assert "SMCROUTED_OPTS" in text and "SMCROUTED_ARGS" in text


def test_privilege_separation_is_explained():
    text = " ".join(_text("smcrouted.8").split())
    for words in (
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_SETUID",
        "smcrouted: privileged helper",
        "if that user exists, else an identity of its own",
        "DynamicUser=",
        "no-new-privileges",
    ):
        assert words in text, words


def test_event_hook_paragraph_is_in_one_place():
    """The hook's privileges are described once (THE EVENT HOOK), so they can change."""
    pages = {p: " ".join(_text(p).split()) for p in PAGES}
    phrase = "The hook is started by the privileged helper"
    assert [p for p, t in pages.items() if phrase in t] == ["smcrouted.8"]
    hook = pages["smcrouted.8"]
    hook = hook[hook.index(".Sh THE EVENT HOOK") : hook.index(".Sh SIGNALS")]
    for words in ("asynchronously", "never blocked", "logged", "CAP_NET_ADMIN", "CAP_NET_RAW",
                  "no-new-privileges", "At most 16"):  # fmt: skip
        assert words in hook, words


def test_template_precedence_is_documented():
    for page in ("smcrouted.8", "smcroute.conf.5"):
        text = " ".join(_text(page).split())
        group = text.index("most specific group prefix")
        source = text.index("most specific source prefix", group)
        assert "first in the configuration" in text[source:], page


def test_reload_semantics_are_documented():
    for page in ("smcrouted.8", "smcroute.conf.5"):
        text = " ".join(_text(page).split()).lower()
        assert "atomic" in text and "hitless" in text, page
        assert "rejected as a whole" in text, page


def test_worked_examples_are_present():
    conf = _text("smcroute.conf.5")
    for example in (
        "mroute from eth0 source 192.168.1.42 group 225.1.2.3 to eth1 eth2",  # (S,G)
        "mroute from eth0 group 225.1.2.3 to eth1",  # (*,G)
        "group 239.1.0.0/16",  # range
        "mgroup from eth0 group 225.1.2.3",  # ASM join
        "mgroup from eth0 source 192.168.1.42 group 232.1.1.1",  # SSM join
        "phyint ppp0 ttl-threshold 64",  # TTL scoping
        "ip mrule add iif eth1 lookup 10 pref 100",  # multiple tables
    ):
        assert example in conf, example
    assert "ip mrule add iif" in _text("smcrouted.8")
    assert re.search(r"smcrouted -i \w+ +-t \d+", _text("smcrouted.8"))


def _conf_examples() -> str:
    """Every configuration line in the literal blocks of smcroute.conf(5)."""
    blocks = re.findall(r"^\.Bd -literal[^\n]*\n(.*?)^\.Ed$", _text("smcroute.conf.5"), re.M | re.S)
    lines = [
        ln
        for b in blocks
        for ln in b.splitlines()
        if ln.split()[:1] and ln.split()[0] in DIRECTIVE_WORDS
    ]
    return "\n".join(lines) + "\n"


def test_conf_examples_pass_the_checker(tmp_path):
    """Depends on smcroute.daemon_cli and the parser (-F)."""
    text = _conf_examples()
    assert text.count("\n") >= 15
    conf = tmp_path / "examples.conf"
    conf.write_text(
        text.replace("include /etc/smcroute.d/*.conf", f"include {tmp_path}/none/*.conf")
    )
    smcrouted = Path(sys.executable).with_name("smcrouted")
    res = subprocess.run([str(smcrouted), "-F", str(conf)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
