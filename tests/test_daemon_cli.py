"""smcrouted's command line: getopt-style, parsed without click.

The expected values were recorded from the click-based parser this one
replaced (click 8), so that every message and every parse stays the same:
the options set, the `Options` made of them, and each usage error's text.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from netns import run

from smcroute.daemon_cli import USAGE, UsageError, parse_args
from smcroute.options import Options

FIELDS = list(Options.__annotations__)

# argv, the options given (name -> value), the Options fields set (name -> value)
PARSED: list[tuple[list[str], dict[str, Any], dict[str, Any]]] = [
    ([], {}, {"use_syslog": True}),
    (["-nN"], {"foreground": True, "no_vifs": True}, {"foreground": True}),
    (
        ["-nsl", "debug"],
        {"foreground": True, "use_syslog": True, "level": "debug"},
        {"loglevel": "debug", "foreground": True, "use_syslog": True},
    ),
    (["-f", "a"], {"conf": "a"}, {"conf": "a", "use_syslog": True}),
    (["-fa"], {"conf": "a"}, {"conf": "a", "use_syslog": True}),
    (["-f", "a", "-f", "b"], {"conf": "b"}, {"conf": "b", "use_syslog": True}),
    (["--zero-loss"], {"zero_loss": True}, {"use_syslog": True, "zero_loss": True}),
    (["--max-learned", "5"], {"max_learned": "5"}, {"use_syslog": True, "max_learned": 5}),
    (["--max-learned=5"], {"max_learned": "5"}, {"use_syslog": True, "max_learned": 5}),
    (
        ["-I", "x"],
        {"ident": "x"},
        {
            "ident": "x",
            "conf": "/etc/x.conf",
            "pidfile": "/var/run/x.pid",
            "sockpath": "/var/run/x.sock",
            "use_syslog": True,
        },
    ),
    (
        ["-i", "x", "-I", "y"],
        {"ident": "y"},
        {
            "ident": "y",
            "conf": "/etc/y.conf",
            "pidfile": "/var/run/y.pid",
            "sockpath": "/var/run/y.sock",
            "use_syslog": True,
        },
    ),
    (["-nv"], {"foreground": True, "version": True}, {"foreground": True}),
    (["-f", "-n"], {"conf": "-n"}, {"conf": "-n", "use_syslog": True}),
    (["-D", "3"], {"exit_after": "3"}, {"use_syslog": True, "exit_after": 3}),
    (["--sample-interval=0"], {"sample_interval": "0"}, {"use_syslog": True, "sample_interval": 0}),
    (["-p", "u:g"], {"user": "u:g"}, {"use_syslog": True, "user": "u", "group": "g"}),
    (["-i", ""], {"ident": ""}, {"use_syslog": True}),
    (["-e", "cmd arg"], {"hook": "cmd arg"}, {"use_syslog": True, "hook": "cmd arg"}),
    (
        ["-t", "7", "-u", "s", "-P", "p", "-F", "c", "-d", "0", "-m", "20"],
        {"table": "7", "sockpath": "s", "pidfile": "p", "check": "c", "delay": "0", "mrdisc": "20"},
        {"pidfile": "p", "sockpath": "s", "table": 7, "use_syslog": True},
    ),
    (
        ["--metrics", "9108", "--metrics-routes", "5", "--sample-interval", "2"],
        {"metrics": "9108", "metrics_routes": "5", "sample_interval": "2"},
        {"use_syslog": True, "sample_interval": 2, "metrics": "9108", "metrics_routes": 5},
    ),
    (["--metrics=[::1]:80"], {"metrics": "[::1]:80"}, {"use_syslog": True, "metrics": "[::1]:80"}),
    (
        ["-nsv", "-e", "x", "-s"],
        {"foreground": True, "use_syslog": True, "version": True, "hook": "x"},
        {"foreground": True, "use_syslog": True, "hook": "x"},
    ),
]

# argv, the usage error's text
REFUSED: list[tuple[list[str], str]] = [
    (["-x"], "unknown option -x"),
    (["-f"], "Option '-f' requires an argument."),
    (["--zero-loss=1"], "Option '--zero-loss' does not take a value."),
    (["--max-learned"], "Option '--max-learned' requires an argument."),
    (["--max"], "unknown option --max"),
    (["--foo"], "unknown option --foo"),
    (["--metrics-route", "3"], "unknown option --metrics-route"),
    (["extra"], "Got unexpected extra argument (extra)"),
    (["-n", "extra", "x"], "Got unexpected extra arguments (extra x)"),
    (["--", "-n"], "Got unexpected extra argument (-n)"),
    (["-"], "Got unexpected extra argument (-)"),
    (["-n", "--", "x"], "Got unexpected extra argument (x)"),
    (["-h", "-x"], "unknown option -x"),
    (["-n-"], "unknown option --"),
    (["-c", "-5"], "option -c must be between 0 and 31536000, not -5"),
    (["-c", "--"], "option -c expects a number, not '--'"),
    (["-l"], "Option '-l' requires an argument."),
    (["--help"], "unknown option --help"),
    (["-p", ":g"], "option -p expects USER[:GROUP]"),
    (["-hx"], "unknown option -x"),
    (["--version"], "unknown option --version"),
    (["--=x"], "unknown option --"),
    (["---x"], "unknown option ---x"),
    (["--max-learned="], "option --max-learned expects a number, not ''"),
    (["--metrics"], "Option '--metrics' requires an argument."),
    (["--zero-loss="], "Option '--zero-loss' does not take a value."),
    (["-N=1"], "unknown option -="),
    (["-m", "2"], "option -m must be between 4 and 180, not 2"),
    (["-l", "loud"], "invalid log level 'loud'; expected none, err, notice, info or debug"),
    (["-c", "abc"], "option -c expects a number, not 'abc'"),
    (["-nf"], "Option '-f' requires an argument."),
    ([""], "Got unexpected extra argument ()"),
    (["x", "-x"], "unknown option -x"),
    (["extra", "-f"], "Option '-f' requires an argument."),
    (["--max-learned", "-5"], "option --max-learned must be between 0 and 10000000, not -5"),
    (["-i"], "Option '-i' requires an argument."),
    (["-", "-"], "Got unexpected extra arguments (- -)"),
    (["-5"], "unknown option -5"),
]


@pytest.mark.parametrize(("argv", "given", "options"), PARSED)
def test_parsed_as_before(argv: list[str], given: dict[str, Any], options: dict[str, Any]) -> None:
    o, kw = parse_args(argv)
    assert {k: v for k, v in kw.items() if v not in (None, False)} == given
    default = Options()
    assert {k: getattr(o, k) for k in FIELDS if getattr(o, k) != getattr(default, k)} == options


@pytest.mark.parametrize(("argv", "message"), REFUSED)
def test_refused_as_before(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_args(argv)
    assert str(e.value) == message


def test_program_usage_help_and_version() -> None:
    """The whole program: status and exact output; click is not imported."""
    code = (
        "import sys\n"
        "from smcroute import daemon_cli\n"
        "assert 'click' not in sys.modules, 'click imported'\n"
        "daemon_cli.main(sys.argv[1:])\n"
    )

    def program(*argv: str) -> subprocess.CompletedProcess[str]:
        return run([sys.executable, "-c", code, *argv], check=False)

    r = program("-h")
    assert (r.returncode, r.stdout, r.stderr) == (0, USAGE, "")
    r = program("-nv")
    assert (r.returncode, r.stdout.startswith("SMCRoute v"), r.stderr) == (0, True, "")
    r = program("-n", "-x")
    assert (r.returncode, r.stdout) == (64, "")
    assert r.stderr == "smcrouted: unknown option -x\nTry 'smcrouted -h' for help.\n"
    r = program("-f")
    assert r.stderr == (
        "smcrouted: Option '-f' requires an argument.\nTry 'smcrouted -h' for help.\n"
    )


def test_program_imports_with_the_collector_off() -> None:
    """`smcrouted` (smcroute.daemon_entry) turns the cyclic GC off before it
    imports anything of the daemon's: no passes over the imports' objects."""
    code = (
        "import gc, sys\n"
        "import smcroute.daemon_entry as e\n"
        "assert 'smcroute.daemon_cli' not in sys.modules and gc.isenabled()\n"
        "seen = []\n"
        "gc.callbacks.append(lambda phase, info: seen.append(phase))\n"
        "sys.argv = ['smcrouted', '-v']\n"
        "try:\n"
        "    e.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(len(seen), gc.isenabled(), 'smcroute.daemon_cli' in sys.modules)\n"
    )
    assert run([sys.executable, "-c", code]).stdout.split("\n")[-2] == "0 False True"


_AFTER_WARM_UP = r"""
import json, os, sys, tempfile
d = tempfile.mkdtemp()
inc = os.path.join(d, "conf.d")
os.mkdir(inc)
os.mkdir(os.path.join(inc, "sub.conf"))
with open(os.path.join(inc, "a.conf"), "w") as f:
    f.write("mroute from b1 source 10.9.9.9 group 239.9.9.9 to b2\ninclude ../main.conf\n")
with open(os.path.join(d, "main.conf"), "wb") as f:
    f.write(
        b"phyint a1 enable mrdisc ttl-threshold 2\nphyint a1 disable\nphyint a2 ttl-threshold 0\n"
        b"phyint a3 enabel\nphyint a/4\nmgroup from a1 source 10.0.0.1 group 232.1.1.1\n"
        b"mgroup from a1 source 10.0.0.1 group 232.1.1.1\nmgroup from a1 group 225.0.0.0/8\n"
        b"ssmgroup from a1 group 232.1.1.2 source 10.0.0.1\nssmgroup from a1 group 232.1.1.3\n"
        b"mroute from a1 source 10.0.0.1 group 225.1.1.1 to a2 a3\n"
        b"mroute from a1 source 10.0.0.1 group 225.1.1.1 to a2\n"
        b"mroute from a9 source 10.0.0.1 group 225.1.1.1 to a2\n"
        b"mroute from a1 source 10.0.0.0/8 group 225.1.1.0/24 to a2 a+ a2 a1\n"
        b"mroute from a1 source 10.0.0.1/8 group 225.1.1.1/24 to a2\n"
        b"mroute from a1 source 2001:db8::1 group ff2e::1 to a2 # comment\n"
        b"mroute from a+ group ff02::1 to a2\nmroute from a1 group 224.0.0.5 to a2\n"
        b"mroute from a1 source fe80::1%eth0 group 225.1.1.1 to a2\n"
        b"mroute from a1 source 10.0.0.1 group 10.1.1.1 to a2\nmroute frm a1\nmrute from a1\n"
        b"mroute from a1 source 225.1.1.1 group 2001:db8::1 to\nmroute from a1 from a2 to\n"
        b"include conf.d/*.conf\ninclude /nonexistent/*.conf\ninclude\n"
        b"broken line\nbin\x00ary\nbad \xff utf-8\nnbsp\xc2\xa0here\n" + b"x" * 5000 + b"\n"
    )
before = set(sys.modules)
from smcroute.parser import ParseError, parse_command, parse_file, parse_text
cfg, probs = parse_file(os.path.join(d, "main.conf"))
assert len(probs) > 25 and cfg.routes and cfg.groups and cfg.phyints, (probs, cfg)
parse_file(os.devnull), parse_file(os.path.join(d, "none")), parse_file(d)
parse_text("mroute from a1 group 225.1.1.1 to a2\n", "<x>")
for cmd, args in [
    ("add", ["a1", "10.0.0.1", "225.1.1.1", "a2"]), ("add", ["a1", "ff2e::1", "a2"]),
    ("remove", ["a1", "10.0.0.1", "225.1.1.1"]), ("join", ["a1", "ff2e::1"]),
    ("leave", ["a1", "10.0.0.1", "232.1.1.1"]), ("add", ["a1"]), ("join", ["a/1", "x"]),
]:
    try:
        parse_command(cmd, args)
    except ParseError:
        pass
json.loads(json.dumps({"x": [1, None, "y", 1.5]}))
print(sorted(set(sys.modules) - before))
"""


def test_nothing_is_imported_after_the_warm_up() -> None:
    """The main process parses configurations and commands only after its
    privilege drop, when the interpreter's files may be unreadable: once
    `warm_up` has run, parsing every kind of line, error and include imports
    nothing more."""
    code = (
        "import smcroute.daemon, smcroute.daemon_cli, smcroute.privsep.client\n"
        "import smcroute.privsep.mroute, smcroute.privsep.janitor\n"
        "smcroute.daemon_cli.warm_up()\n" + _AFTER_WARM_UP
    )
    assert run([sys.executable, "-c", code]).stdout.strip() == "[]"
