"""`smcroutectl` end to end against a fake daemon on a temporary socket."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ipc_helpers import ROUTES, FakeDaemon, canned, half_reply_daemon, rendered
from test_output import DETAIL_ROUTES, SPEC_GROUPS, SPEC_INTERFACES, SPEC_ROUTES

from smcroute import __version__, ctl_entry
from smcroute.ctl import main, resolve_command
from smcroute.ipc.codec import Request, decode_request


@pytest.fixture(params=["rendered", "document"])
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FakeDaemon]:
    """Our daemon renders a show itself; one that sends the document is formatted here."""
    handler = rendered if request.param == "rendered" else canned
    with FakeDaemon(str(tmp_path / "ctl.sock"), handler=handler) as d:
        yield d


def run(
    capsys: pytest.CaptureFixture[str], *argv: str, stdin: str | None = None
) -> tuple[int, str, str]:
    old = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = main(list(argv))
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def ctl(
    capsys: pytest.CaptureFixture[str], d: FakeDaemon, *argv: str, stdin: str | None = None
) -> tuple[int, str, str]:
    return run(capsys, "-u", d.path, *argv, stdin=stdin)


# --- command resolution ------------------------------------------------------


@pytest.mark.parametrize(
    "word, cmd",
    [
        ("a", "add"),
        ("add", "add"),
        ("rem", "remove"),
        ("del", "remove"),
        ("de", "remove"),
        ("remo", "remove"),
        ("rel", "reload"),
        ("restart", "reload"),
        ("res", "reload"),
        ("j", "join"),
        ("l", "leave"),
        ("s", "show"),
        ("sh", "show"),
        ("f", "flush"),
        ("k", "kill"),
        ("h", "help"),
        ("v", "version"),
        ("SHOW", "show"),
    ],
)
def test_resolve_command(word: str, cmd: str) -> None:
    assert resolve_command(word) == cmd


@pytest.mark.parametrize(
    "argv, request_",
    [
        (["add", "a1", "225.1.1.1", "a2"], Request("add", ("a1", "225.1.1.1", "a2"))),
        (["a", "a1", "10.0.0.1", "225.1.1.1", "a2", "a3"],
         Request("add", ("a1", "10.0.0.1", "225.1.1.1", "a2", "a3"))),
        (["remove", "a1", "225.1.1.1"], Request("remove", ("a1", "225.1.1.1"))),
        (["rem", "a1", "225.1.1.1", "a2"], Request("remove", ("a1", "225.1.1.1", "a2"))),
        (["del", "a1", "225.1.1.1"], Request("remove", ("a1", "225.1.1.1"))),
        (["join", "a1", "225.1.1.1"], Request("join", ("a1", "225.1.1.1"))),
        (["j", "a1", "10.0.0.1", "232.1.1.1"], Request("join", ("a1", "10.0.0.1", "232.1.1.1"))),
        (["leave", "a1", "225.1.1.1"], Request("leave", ("a1", "225.1.1.1"))),
        (["flush"], Request("flush")),
        (["fl"], Request("flush")),
        (["reload"], Request("reload")),
        (["rel"], Request("reload")),
        (["restart"], Request("reload")),
        (["kill"], Request("kill")),
        ([], Request("show", ("routes",), False, "text")),
        (["show"], Request("show", ("routes",), False, "text")),
        (["s", "r"], Request("show", ("routes",), False, "text")),
        (["s", "g"], Request("show", ("groups",), False, "text")),
        (["show", "group"], Request("show", ("groups",), False, "text")),
        (["sh", "i"], Request("show", ("interfaces",), False, "text")),
        (["show", "interface"], Request("show", ("interfaces",), False, "text")),
        (["show", "p"], Request("show", ("pending",), False, "text")),
        (["-d", "show"], Request("show", ("routes",), True, "text")),
    ],
)  # fmt: skip
def test_requests_sent(
    capsys: pytest.CaptureFixture[str], daemon: FakeDaemon, argv: list[str], request_: Request
) -> None:
    code, _, err = ctl(capsys, daemon, *argv)
    assert code == 0, err
    assert daemon.requests == [request_]


# --- show output -------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["-p", "show"], SPEC_ROUTES),
        (["-p"], SPEC_ROUTES),
        (["show", "-p"], SPEC_ROUTES),
        (["-p", "show", "groups"], SPEC_GROUPS),
        (["-p", "s", "g"], SPEC_GROUPS),
        (["-p", "show", "interfaces"], SPEC_INTERFACES),
        (["show", "routes"], SPEC_ROUTES),  # not a terminal: plain anyway
        (["-pd", "show"], DETAIL_ROUTES),
        (["-dp", "show"], DETAIL_ROUTES),
        (["-d", "-p", "show"], DETAIL_ROUTES),
    ],
)
def test_show_plain_exact(
    capsys: pytest.CaptureFixture[str], daemon: FakeDaemon, argv: list[str], expected: str
) -> None:
    code, out, err = ctl(capsys, daemon, *argv)
    assert (code, out, err) == (0, expected, "")


def test_show_rows_only(capsys: pytest.CaptureFixture[str], daemon: FakeDaemon) -> None:
    code, out, _ = ctl(capsys, daemon, "-t", "show", "interfaces")
    assert code == 0
    assert out == "".join(SPEC_INTERFACES.splitlines(keepends=True)[3:])
    code, out, _ = ctl(capsys, daemon, "-pt")
    assert out.splitlines()[0] == "(*, 225.3.3.0/24)                          a1   a2 a3"
    assert len(out.splitlines()) == 5


def test_show_tty_uses_ansi_unless_plain(
    capsys: pytest.CaptureFixture[str], daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    fake = Tty()
    monkeypatch.setattr(sys, "stdout", fake)
    assert main(["-u", daemon.path, "show"]) == 0
    assert "\x1b[7mROUTE (S,G)" in fake.getvalue()
    fake2 = Tty()
    monkeypatch.setattr(sys, "stdout", fake2)
    assert main(["-u", daemon.path, "-p", "show"]) == 0
    assert fake2.getvalue() == SPEC_ROUTES


def test_show_json(capsys: pytest.CaptureFixture[str], daemon: FakeDaemon) -> None:
    code, out, _ = ctl(capsys, daemon, "-j", "show")
    assert code == 0 and out.endswith("}\n")
    doc = json.loads(out)
    assert set(doc) == {"routes"} and set(doc["routes"]) == {"asm", "ssm", "kernel"}
    for table in doc["routes"].values():
        for r in table:
            assert set(r) == {"source", "group", "iif", "oifs"}
            assert r["source"] is None or isinstance(r["source"], str)
            assert isinstance(r["group"], str) and isinstance(r["iif"], str)
            assert all(isinstance(o, str) for o in r["oifs"])
    code, out, _ = ctl(capsys, daemon, "-jd", "show")
    assert json.loads(out) == ROUTES
    for kind in ("groups", "interfaces", "pending"):
        code, out, _ = ctl(capsys, daemon, "-j", "show", kind)
        assert code == 0 and set(json.loads(out)) == {kind}
    doc = json.loads(ctl(capsys, daemon, "-j", "s", "i")[1])
    assert doc["interfaces"][0] == {"index": 1, "name": "lo", "vif": None, "mif": None}


def test_show_pending(capsys: pytest.CaptureFixture[str], daemon: FakeDaemon) -> None:
    code, out, _ = ctl(capsys, daemon, "-p", "show", "pending")
    assert code == 0
    assert out.splitlines()[1:] == [
        "PENDING ROUTES AND GROUPS",
        "=" * 79,
        "mroute  from wg0 group 239.5.5.5 to a2",
    ]


# --- errors --------------------------------------------------------------------


def test_unknown_command_hint(capsys: pytest.CaptureFixture[str], daemon: FakeDaemon) -> None:
    code, out, err = ctl(capsys, daemon, "shwo")
    assert code == 1 and out == ""
    assert err == (
        "smcroutectl: unknown command 'shwo'; did you mean 'show'? Try 'smcroutectl help'.\n"
    )
    assert daemon.requests == []  # never silently treated as show


@pytest.mark.parametrize(
    "argv, message",
    [
        (["xyzzy"], "unknown command 'xyzzy'. Try 'smcroutectl help'."),
        (["r"], "ambiguous command 'r': could be reload or remove"),
        (["re"], "ambiguous command 're'"),
        (["add", "a1", "225.1.1.1"], "not enough arguments for add"),
        (["remove", "a1"], "not enough arguments for remove"),
        (["join", "a1"], "not enough arguments for join"),
        (["join", "a1", "1.1.1.1", "225.1.1.1", "x"], "too many arguments for join"),
        (["flush", "now"], "too many arguments for flush"),
        (["show", "routes", "groups"], "too many arguments for show"),
        (["show", "gropus"], "unknown table 'gropus' for show; did you mean 'groups'?"),
        (["show", "xyz"], "unknown table 'xyz' for show."),
        (["-x"], "unknown option -x"),
        (["-i"], "requires an argument"),
        (["help", "nope"], "unknown command 'nope'"),
    ],
)
def test_usage_errors(
    capsys: pytest.CaptureFixture[str], daemon: FakeDaemon, argv: list[str], message: str
) -> None:
    code, out, err = ctl(capsys, daemon, *argv)
    assert code == 1 and out == ""
    assert err.startswith("smcroutectl: ") and message in err
    assert daemon.requests == []


def test_daemon_error(capsys: pytest.CaptureFixture[str], daemon: FakeDaemon) -> None:
    code, out, err = ctl(capsys, daemon, "add", "a1", "bad1", "a2")
    assert (code, out, err) == (1, "", "smcroutectl: invalid address 'a2'\n")


def test_multiline_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from smcroute.ipc.codec import Response

    with FakeDaemon(
        str(tmp_path / "s"), handler=lambda r: Response.failure("a.conf:3: bad\na.conf:7: worse")
    ) as d:
        code, _, err = ctl(capsys, d, "reload")
    assert code == 1
    assert err == "smcroutectl: a.conf:3: bad\nsmcroutectl: a.conf:7: worse\n"


def test_warnings_printed(capsys: pytest.CaptureFixture[str], daemon: FakeDaemon) -> None:
    code, out, err = ctl(capsys, daemon, "add", "a1", "225.1.1.1", "a1")
    assert code == 0 and out == ""
    assert err == "smcroutectl: warning: outbound interface a1 is the inbound one: loop risk\n"


def test_no_daemon(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = str(tmp_path / "nothing.sock")
    code, out, err = run(capsys, "-u", path, "show")
    assert (code, out, err) == (1, "", f"smcroutectl: Cannot find IPC socket {path}\n")
    code, _, err = run(capsys, "-u", path, "-b", stdin="flush\nreload\n")
    assert (code, err) == (1, f"smcroutectl: Cannot find IPC socket {path}\n")


def test_ident_selects_socket(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-i", "nosuchident42", "flush")
    assert code == 1 and "/var/run/nosuchident42.sock" in err
    code, _, err = run(capsys, "-I", "nosuchident42", "flush")
    assert code == 1 and "/var/run/nosuchident42.sock" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a socket others cannot use")
@pytest.mark.parametrize("ahead", [False, True])
def test_permission_denied_mentions_root(tmp_path: Path, ahead: bool) -> None:
    """`ahead`: as the program runs it, a show sent before smcroute.ctl (which fails)."""
    path = tmp_path / "root.sock"
    with FakeDaemon(str(path)):
        os.chmod(path, 0o600)
        tmp_path.chmod(0o755)
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: become nobody and try
            try:
                os.close(rfd)
                os.setgid(65534)
                os.setuid(65534)
                err = io.StringIO()
                sys.stderr = err
                argv = ["-u", str(path), "show" if ahead else "flush"]
                if ahead:
                    ctl_entry.prefetch(argv)
                code = main(argv)
                os.write(wfd, f"{code}\n{err.getvalue()}".encode())
            finally:
                os._exit(0)
        os.close(wfd)
        with os.fdopen(rfd) as f:
            result = f.read()
        os.waitpid(pid, 0)
    status, _, message = result.partition("\n")
    assert status == "1"
    assert message.startswith("smcroutectl: Permission denied")
    assert "root" in message


def test_daemon_closing_mid_reply(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = str(tmp_path / "half.sock")
    with half_reply_daemon(path):
        code, out, err = run(capsys, "-u", path, "show")
    assert code == 1 and out == ""
    assert err == "smcroutectl: the daemon closed the connection in the middle of its reply\n"


def test_garbage_reply(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from smcroute.ipc.codec import Response

    with FakeDaemon(str(tmp_path / "g"), handler=lambda r: Response.success({"x": 1})) as d:
        code, out, err = ctl(capsys, d, "show")
    assert code == 1 and out == ""
    assert err.startswith("smcroutectl: unexpected reply from the daemon")


# --- batch ---------------------------------------------------------------------


def test_batch(capsys: pytest.CaptureFixture[str], daemon: FakeDaemon) -> None:
    script = (
        "# set up\n"
        "add a1 225.1.1.1 a2\n"
        "\n"
        "shwo\n"
        "join a1 bad-group   # daemon rejects\n"
        "   leave a1 225.1.1.1\n"
        "add a1\n"
        "s g\n"
    )
    code, out, err = ctl(capsys, daemon, "-b", "-p", stdin=script)
    assert code == 1
    assert out == SPEC_GROUPS
    assert err.splitlines() == [
        "smcroutectl: line 4: unknown command 'shwo'; did you mean 'show'? Try 'smcroutectl help'.",
        "smcroutectl: line 5: invalid address 'bad-group'",
        "smcroutectl: line 7: not enough arguments for add; usage: add IIF [SOURCE[/LEN]] "
        "GROUP[/LEN] OIF [OIF ...]. Try 'smcroutectl help add'.",
    ]
    assert [r.cmd for r in daemon.requests] == ["add", "join", "leave", "show"]


def test_batch_all_ok(capsys: pytest.CaptureFixture[str], daemon: FakeDaemon) -> None:
    lines = "".join(f"join a1 225.1.{i // 250}.{i % 250}\n" for i in range(1000))
    code, out, err = ctl(capsys, daemon, "-b", stdin=lines)
    assert (code, out, err) == (0, "", "")
    assert len(daemon.requests) == 1000


def test_batch_after_kill(capsys: pytest.CaptureFixture[str], daemon: FakeDaemon) -> None:
    code, _, err = ctl(capsys, daemon, "-b", stdin="flush\nkill\nflush\n")
    assert code == 1
    assert err.startswith("smcroutectl: line 3: ")


def test_batch_rejects_command_args(capsys: pytest.CaptureFixture[str], daemon: FakeDaemon) -> None:
    code, _, err = ctl(capsys, daemon, "-b", "show", stdin="")
    assert code == 1 and "-b" in err


# --- help and version -------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["-v"], ["version"], ["ver"]):
        code, out, _ = run(capsys, *argv)
        assert code == 0 and out.splitlines()[0] == f"SMCRoute v{__version__}"


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "help")
    assert code == 0 and out.startswith("Usage: smcroutectl [-bdjptv]")
    for cmd in ("add", "remove", "join", "leave", "show", "flush", "reload", "kill"):
        assert f"  {cmd} " in out
    assert run(capsys, "-h")[1] == out
    code, out, _ = run(capsys, "help", "rem")
    assert code == 0 and out.startswith("Usage: smcroutectl remove IIF")


# --- as a program --------------------------------------------------------------------


def prog(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smcroute.ctl", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_program_exit_codes(daemon: FakeDaemon, tmp_path: Path) -> None:
    p = prog("-u", daemon.path, "-p", "show")
    assert (p.returncode, p.stdout, p.stderr) == (0, SPEC_ROUTES, "")
    p = prog("-u", daemon.path, "bogus")
    assert p.returncode == 1 and p.stderr.startswith("smcroutectl: unknown command")
    p = prog("-u", str(tmp_path / "none"), "show")
    assert p.returncode == 1 and "Cannot find IPC socket" in p.stderr
    p = prog("-u", "x" * 200, "show")  # too long for AF_UNIX
    assert p.returncode == 1 and p.stderr.startswith("smcroutectl: ")
    assert "Traceback" not in p.stderr
    p = prog("--bogus")
    assert p.returncode == 1 and "Traceback" not in p.stderr


def test_program_reader_going_away(tmp_path: Path) -> None:
    from smcroute.ipc.codec import Response

    many = {"routes": {"asm": [], "ssm": [], "kernel": [ROUTES["routes"]["kernel"][1]] * 20000}}
    with FakeDaemon(str(tmp_path / "big"), handler=lambda r: Response.success(many)) as d:
        p = subprocess.Popen(
            [sys.executable, "-m", "smcroute.ctl", "-u", d.path, "-p", "show"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert p.stdout is not None and p.stderr is not None
        p.stdout.read(100)
        p.stdout.close()
        err = p.stderr.read().decode()
        p.wait(30)
        p.stderr.close()
    assert err == ""
    assert p.returncode in (0, 1)


# --- a show asked for before click is imported (smcroute.ctl_entry) -------------------


def requests_soon(d: FakeDaemon, n: int) -> list[Request]:
    deadline = time.monotonic() + 10
    while len(d.requests) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return d.requests


@pytest.mark.parametrize(
    "argv, request_",
    [
        ([], Request("show", ("routes",), False, "text")),
        (["-p", "show"], Request("show", ("routes",), False, "text")),
        (["show", "groups", "-d"], Request("show", ("groups",), True, "text")),
        (["-j", "show"], Request("show", ("routes",), False, "json")),
        (["-t", "-i", "smcroute", "show", "interfaces"],
         Request("show", ("interfaces",), False, "rows")),
    ],
)  # fmt: skip
def test_show_asked_ahead_is_answered_once(
    capsys: pytest.CaptureFixture[str], daemon: FakeDaemon, argv: list[str], request_: Request
) -> None:
    want = ctl(capsys, daemon, *argv)
    del daemon.requests[:]
    ctl_entry.prefetch(["-u", daemon.path, *argv])
    assert requests_soon(daemon, 1) == [request_]  # asked before smcroute.ctl parsed anything
    assert ctl(capsys, daemon, *argv) == want
    assert daemon.requests == [request_]  # its answer taken: not asked again


def test_show_asked_ahead_but_another_command(
    capsys: pytest.CaptureFixture[str], daemon: FakeDaemon, tmp_path: Path
) -> None:
    want = ctl(capsys, daemon, "-d", "show")
    del daemon.requests[:]
    ctl_entry.prefetch(["-u", daemon.path, "show"])
    requests_soon(daemon, 1)
    assert ctl(capsys, daemon, "-d", "show") == want  # a new connection for the other request
    assert daemon.requests == [Request("show", ("routes",), False, "text"), Request(
        "show", ("routes",), True, "text")]  # fmt: skip
    ctl_entry.prefetch(["-u", daemon.path, "show"])
    code, _, err = run(capsys, "-u", str(tmp_path / "none"), "show")  # another socket
    assert code == 1 and "Cannot find IPC socket" in err
    assert ctl_entry.take(daemon.path) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["-dj", "show"],  # grouped: click's to parse
        ["s"],  # abbreviations
        ["show", "r"],
        ["show", "routes", "groups"],
        ["-b"],
        ["-h"],
        ["--help"],
        ["-v", "show"],
        ["--", "show"],
        ["add", "a1", "225.1.1.1", "a2"],
        ["kill"],
        ["-d", "-d", "show"],
        ["-i", "a/b", "show"],
        ["-x", "show"],
    ],
)
def test_nothing_asked_ahead_but_a_plain_show(daemon: FakeDaemon, argv: list[str]) -> None:
    ctl_entry.prefetch(["-u", daemon.path, *argv])
    assert ctl_entry.take(daemon.path) is None
    time.sleep(0.05)
    assert daemon.requests == []


def test_show_asked_ahead_of_no_daemon(tmp_path: Path) -> None:
    for path in (str(tmp_path / "none"), "x" * 200):
        ctl_entry.prefetch(["-u", path, "show"])  # no error: smcroute.ctl reports it
        assert ctl_entry.take(path) is None


def test_the_program_asks_ahead(daemon: FakeDaemon) -> None:
    """The installed smcroutectl (console script: smcroute.ctl_entry)."""
    p = subprocess.run(
        [str(Path(sys.executable).with_name("smcroutectl")), "-u", daemon.path, "-p", "show"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (p.returncode, p.stdout, p.stderr) == (0, SPEC_ROUTES, "")
    assert daemon.requests == [Request("show", ("routes",), False, "text")]


def program(*argv: str) -> tuple[int, str, str]:
    """The installed smcroutectl (console script: smcroute.ctl_entry), run."""
    p = subprocess.run(
        [str(Path(sys.executable).with_name("smcroutectl")), *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "Traceback" not in p.stdout + p.stderr
    return p.returncode, p.stdout, p.stderr


@contextlib.contextmanager
def raw_daemon(path: str, reply: bytes) -> Iterator[list[bytes]]:
    """A 'daemon' on `path` answering each connection's first request with `reply`
    (then hanging up); yields the request lines it got."""
    got: list[bytes] = []
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(8)
    lsock.settimeout(0.1)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = lsock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                got.append(conn.recv(1000))
                conn.sendall(reply)

    t = threading.Thread(target=serve)
    t.start()
    try:
        yield got
    finally:
        done.set()
        t.join()
        lsock.close()


@pytest.mark.parametrize("form", [["show"], ["-d", "show"], ["-j", "show", "interfaces"]])
@pytest.mark.parametrize(
    "reply, message",
    [
        (b"garbage\n", "smcroutectl: malformed JSON: Expecting value: line 1 column 1 (char 0)\n"),
        (b'{"ok": true, "data": {"rou', "smcroutectl: the daemon closed the connection in the "
         "middle of its reply\n"),
        (b"", "smcroutectl: the daemon closed the connection without replying\n"),
        (b'{"ok": false, "error": "no"}\n', "smcroutectl: no\n"),
        (b'{"ok": true, "text": 5}\nab', "smcroutectl: the daemon closed the connection in the "
         "middle of its reply\n"),
    ],
)  # fmt: skip
def test_the_program_reports_a_bad_reply_as_before(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, form: list[str], reply: bytes, message: str
) -> None:
    """The show sent ahead gets the reply: the same message and status as
    smcroute.ctl alone gives (one request: the one sent ahead)."""
    path = str(tmp_path / "raw.sock")
    with raw_daemon(path, reply) as got:
        assert run(capsys, "-u", path, *form) == (1, "", message)
        assert program("-u", path, *form) == (1, "", message)
    assert len(got) == 2 and got[0] == got[1]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["show"], "smcroutectl: Cannot find IPC socket {none}\n"),
        (["-d", "show", "groups"], "smcroutectl: Cannot find IPC socket {none}\n"),
        (["show", "foo"], "smcroutectl: unknown table 'foo' for show. Expected routes, groups, "
         "interfaces or pending.\n"),
        (["shwo"], "smcroutectl: unknown command 'shwo'; did you mean 'show'? Try "
         "'smcroutectl help'.\n"),
        (["-x", "show"], "smcroutectl: unknown option -x. Try 'smcroutectl help'.\n"),
    ],
)  # fmt: skip
def test_the_program_without_a_daemon(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    none = str(tmp_path / "none")
    want = (1, "", message.format(none=none))
    assert run(capsys, "-u", none, *argv) == want
    assert program("-u", none, *argv) == want


def test_show_not_asked_ahead_of_a_full_backlog(tmp_path: Path) -> None:
    """A daemon that cannot take the connection at once: smcroute.ctl connects
    (and waits its turn, see ControlClient.connect)."""
    path = str(tmp_path / "full.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(0)
    queued = []
    try:
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            queued.append(s)
            try:
                s.connect(path)
            except BlockingIOError:
                break
            assert len(queued) < 100
        ctl_entry.prefetch(["-u", path, "show"])
        assert ctl_entry.take(path) is None
    finally:
        for s in queued:
            s.close()
        lsock.close()


IMPORTS_AHEAD = """
import sys
sys.path.insert(0, {repo!r})
import os, socket  # os: what site imports in any start; socket: this test's own
lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
lsock.bind({path!r})
lsock.listen(1)
before = set(sys.modules)
from smcroute import ctl_entry
ctl_entry.prefetch(["-u", {path!r}, "-j", "show"])
print(" ".join(sorted(set(sys.modules) - before)))
conn, _ = lsock.accept()
print(conn.recv(1000).decode(), end="")
"""


def test_the_show_is_sent_before_anything_heavy_is_imported(tmp_path: Path) -> None:
    """Before the request goes out: smcroute's own small modules and two C
    modules, nothing else (`typing`, `collections`, `re`... would delay it)."""
    repo = str(Path(__file__).resolve().parent.parent)
    code = IMPORTS_AHEAD.format(repo=repo, path=str(tmp_path / "s.sock"))
    p = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    modules, line = p.stdout.splitlines()
    assert set(modules.split()) <= {
        "__future__",
        "smcroute",
        "smcroute.ctl_entry",
        "smcroute.ipc",
        "smcroute.ipc.request",
        "_json",
        "gc",
    }
    assert "smcroute.ipc.request" in modules.split()
    assert decode_request(line.encode()) == Request("show", ("routes",), False, "json")
