"""Control protocol: codec round trips, hostile input, and ControlServer behaviour."""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ipc_helpers import ROUTES, FakeDaemon, half_reply_daemon

from smcroute.ipc.client import ControlClient
from smcroute.ipc.codec import (
    CMDS,
    MAX_REQUEST,
    IpcError,
    Request,
    Response,
    decode_request,
    decode_response,
    default_socket_path,
    encode_request,
    encode_response,
)
from smcroute.ipc.server import CTL_TAG, ControlServer

# --- codec -------------------------------------------------------------------


def test_default_socket_path() -> None:
    assert default_socket_path("smcroute") == "/var/run/smcroute.sock"
    assert default_socket_path("x1") == "/var/run/x1.sock"


def test_request_wire_format() -> None:
    line = encode_request("add", ["a1", "225.1.1.1", "a2"])
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"cmd": "add", "args": ["a1", "225.1.1.1", "a2"], "detail": False}


@pytest.mark.parametrize("cmd", sorted(CMDS))
def test_request_round_trip(cmd: str) -> None:
    req = decode_request(encode_request(cmd, ["a", "b"], detail=True))
    assert req == Request(cmd, ("a", "b"), True)


def test_request_defaults() -> None:
    assert decode_request(b'{"cmd":"flush"}') == Request("flush", (), False)


@pytest.mark.parametrize(
    "line, message",
    [
        (b"", "malformed JSON"),
        (b"{", "malformed JSON"),
        (b"[]", "JSON object"),
        (b'"show"', "JSON object"),
        (b"{}", "no command"),
        (b'{"cmd": 1}', "no command"),
        (b'{"cmd": "shwo"}', "unknown command"),
        (b'{"cmd": "show", "args": "routes"}', "list of strings"),
        (b'{"cmd": "show", "args": [1]}', "strings"),
        (b'{"cmd": "show", "args": ["a\\nb"]}', "control characters"),
        (b'{"cmd": "show", "detail": "yes"}', "true or false"),
        (b'{"cmd": "add", "args": [' + b",".join([b'"a"'] * 65) + b"]}", "too many"),
        (b'{"cmd": "add", "args": ["' + b"a" * 257 + b'"]}', "too long"),
        (b"\xff\xfe", "UTF-8"),
        (b"[" * 30000 + b"]" * 30000, "malformed JSON"),
        (b'{"cmd": "add", "args": ["' + b"a" * MAX_REQUEST + b'"]}', "request too large"),
    ],
)
def test_bad_requests(line: bytes, message: str) -> None:
    with pytest.raises(IpcError, match=message):
        decode_request(line)


def test_encode_request_validates() -> None:
    with pytest.raises(IpcError):
        encode_request("bogus")
    with pytest.raises(IpcError):
        encode_request("add", ["x" * 300])
    with pytest.raises(IpcError):
        encode_request("add", "a1")


def test_response_round_trips() -> None:
    for resp in (
        Response.success(),
        Response.success(ROUTES, ["careful"]),
        Response.failure("conf:3: bad\nconf:4: worse"),
        Response.failure("no", ["w"]),
    ):
        line = encode_response(resp)
        assert line.count(b"\n") == 1 and line.endswith(b"\n")
        assert decode_response(line) == resp


def test_response_wire_format() -> None:
    assert json.loads(encode_response(Response.success({"a": 1}))) == {
        "ok": True,
        "data": {"a": 1},
        "warnings": [],
    }
    assert json.loads(encode_response(Response.failure("x"))) == {"ok": False, "error": "x"}


def test_encode_response_unserialisable() -> None:
    with pytest.raises(IpcError):
        encode_response(Response.success(object()))
    with pytest.raises(IpcError):
        encode_response(Response.success(float("nan")))


@pytest.mark.parametrize(
    "line",
    [b"", b"{}", b'{"ok": "yes"}', b'{"ok": false}', b'{"ok": true, "warnings": [1]}', b"\xff"],
)
def test_bad_responses(line: bytes) -> None:
    with pytest.raises(IpcError):
        decode_response(line)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_decoders_never_raise_on_bytes(data: bytes) -> None:
    for decode in (decode_request, decode_response):
        with contextlib.suppress(IpcError):
            decode(data)


@settings(max_examples=300)
@given(json_values)
def test_decoders_never_raise_on_json(value: object) -> None:
    line = json.dumps(value).encode()
    for decode in (decode_request, decode_response):
        with contextlib.suppress(IpcError):
            decode(line)


@settings(max_examples=200)
@given(
    st.sampled_from(sorted(CMDS)),
    st.lists(st.text(st.characters(min_codepoint=32), max_size=40), max_size=10),
    st.booleans(),
)
def test_request_round_trip_property(cmd: str, args: list[str], detail: bool) -> None:
    args = [a for a in args if "\x7f" not in a]
    assert decode_request(encode_request(cmd, args, detail)) == Request(cmd, tuple(args), detail)


@settings(max_examples=200)
@given(json_values, st.lists(st.text(), max_size=3))
def test_response_round_trip_property(data: object, warnings: list[str]) -> None:
    resp = Response.success(data, warnings)
    assert decode_response(encode_response(resp)) == resp


# --- server --------------------------------------------------------------------


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    return str(tmp_path / "ctl.sock")


def raw(path: str, timeout: float = 5.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def read_lines(s: socket.socket, n: int) -> list[bytes]:
    buf = b""
    while buf.count(b"\n") < n:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    return buf.splitlines()


def test_server_answers_and_keeps_connection(sock_path: str) -> None:
    with FakeDaemon(sock_path) as d, ControlClient(sock_path) as c:
        r1 = c.request("show", ["routes"])
        r2 = c.request("add", ["a1", "225.1.1.1", "a2"])
        r3 = c.request("add", ["a1", "bad", "a2"])
        assert r1.ok and r1.data == ROUTES
        assert r2.ok and r2.data is None
        assert not r3.ok and "invalid address" in (r3.error or "")
        assert [r.cmd for r in d.requests] == ["show", "add", "add"]


def test_server_pipelined_requests_answered_in_order(sock_path: str) -> None:
    with FakeDaemon(sock_path) as d:
        s = raw(sock_path)
        s.sendall(b"".join(encode_request("join", ["a1", f"225.1.1.{i}"]) for i in range(200)))
        lines = read_lines(s, 200)
        assert len(lines) == 200
        assert all(decode_response(line).ok for line in lines)
        assert [r.args[1] for r in d.requests] == [f"225.1.1.{i}" for i in range(200)]
        s.close()


def test_pipelining_client_does_not_starve_others(sock_path: str) -> None:
    order: list[str] = []

    def slow(req: Request) -> Response:
        order.append(req.cmd)
        time.sleep(0.0005)
        return Response.success()

    with FakeDaemon(sock_path, handler=slow):
        hog = raw(sock_path)
        hog.sendall(b"".join(encode_request("join", ["a1", "225.1.1.1"]) for _ in range(2000)))
        time.sleep(0.05)  # the server is busy with the hog's requests now
        with ControlClient(sock_path, timeout=5) as c:
            assert c.request("flush").ok
        assert len(read_lines(hog, 2000)) == 2000
        hog.close()
    # The flush was answered long before the hog's last request.
    assert order.index("flush") < 1900


def test_server_request_split_across_writes(sock_path: str) -> None:
    with FakeDaemon(sock_path):
        s = raw(sock_path)
        line = encode_request("show", ["groups"])
        for b in line:
            s.send(bytes([b]))
            time.sleep(0.001)
        assert decode_response(read_lines(s, 1)[0]).ok
        s.close()


def test_server_half_close_answered(sock_path: str) -> None:
    with FakeDaemon(sock_path):
        s = raw(sock_path)
        s.sendall(b'{"cmd": "flush"}')  # no newline, then EOF
        s.shutdown(socket.SHUT_WR)
        lines = read_lines(s, 1)
        assert decode_response(lines[0]).ok
        assert s.recv(10) == b""  # and the server closes
        s.close()


def test_idle_client_does_not_block_others(sock_path: str) -> None:
    with FakeDaemon(sock_path):
        idle = raw(sock_path)
        partial = raw(sock_path)
        partial.sendall(b'{"cmd": "sh')  # never finished
        t0 = time.monotonic()
        for _ in range(20):
            with ControlClient(sock_path, timeout=2) as c:
                assert c.request("show", ["routes"]).ok
        assert time.monotonic() - t0 < 2
        idle.close()
        partial.close()


def test_idle_client_closed_after_timeout(sock_path: str) -> None:
    with FakeDaemon(sock_path, idle_timeout=0.3) as d:
        s = raw(sock_path)
        s.sendall(b'{"cmd": "sh')
        t0 = time.monotonic()
        assert s.recv(10) == b""  # closed by the server
        assert 0.2 < time.monotonic() - t0 < 3
        assert d.server.clients == 0
        s.close()


def test_concurrent_clients(sock_path: str) -> None:
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with ControlClient(sock_path, timeout=5) as c:
                for j in range(20):
                    r = c.request("join", ["a1", f"225.{i}.1.{j}"])
                    assert r.ok
                assert c.request("show", ["routes"]).data == ROUTES
        except BaseException as e:
            errors.append(e)

    with FakeDaemon(sock_path) as d:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert not errors
        assert len(d.requests) == 30 * 21


def test_oversized_request_gets_error_and_close(sock_path: str) -> None:
    with FakeDaemon(sock_path) as d:
        s = raw(sock_path)
        # The server may close before we finish sending.
        with contextlib.suppress(OSError):
            s.sendall(b'{"cmd": "add", "args": ["' + b"a" * (2 * MAX_REQUEST))
        lines = read_lines(s, 1)
        resp = decode_response(lines[0])
        assert not resp.ok and resp.error == "request too large"
        assert d.requests == []
        s.close()


def test_malformed_json_gets_error_and_close(sock_path: str) -> None:
    with FakeDaemon(sock_path) as d:
        s = raw(sock_path)
        s.sendall(b"this is not json\n" + encode_request("kill"))
        lines = read_lines(s, 5)
        assert len(lines) == 1
        resp = decode_response(lines[0])
        assert not resp.ok and "malformed" in (resp.error or "")
        assert d.requests == []  # the kill after it was never run
        s.close()


def test_client_disconnecting_mid_request(sock_path: str) -> None:
    with FakeDaemon(sock_path) as d:
        for _ in range(10):
            s = raw(sock_path)
            s.sendall(b'{"cmd": "add", "args": ["a1"')
            s.close()
        with ControlClient(sock_path) as c:
            assert c.request("flush").ok
        assert [r.cmd for r in d.requests] == ["flush"]


def test_client_disconnecting_before_reading_big_reply(sock_path: str) -> None:
    big = {"routes": {"asm": [], "ssm": [], "kernel": [ROUTES["routes"]["kernel"][0]] * 50000}}
    with FakeDaemon(sock_path, handler=lambda r: Response.success(big)):
        for _ in range(3):
            s = raw(sock_path)
            s.sendall(encode_request("show", ["routes"]))
            s.recv(100)
            s.close()
        with ControlClient(sock_path) as c:
            assert c.request("show", ["routes"]).data == big


def test_handler_exception_is_internal_error(sock_path: str) -> None:
    def boom(req: Request) -> Response:
        raise RuntimeError("kaboom")

    with FakeDaemon(sock_path, handler=boom), ControlClient(sock_path) as c:
        r = c.request("flush")
        assert not r.ok and "internal error" in (r.error or "")
        assert not c.request("flush").ok  # connection still usable


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_full_server_makes_room_for_a_newcomer(sock_path: str) -> None:
    """No "too many clients": the client quiet the longest leaves, those that
    never completed a request before those that did."""
    with FakeDaemon(sock_path, max_clients=3) as d:
        served = [raw(sock_path) for _ in range(2)]
        for s in served:
            s.sendall(encode_request("flush"))
            read_lines(s, 1)
        silent = raw(sock_path)  # connected last, but never asked anything
        wait_for(lambda: d.server.clients == 3)
        newcomer = raw(sock_path)
        newcomer.sendall(encode_request("flush"))
        assert decode_response(read_lines(newcomer, 1)[0]).ok
        assert silent.recv(100) == b""  # it made room
        assert d.server.clients == 3 and d.server.evicted == 1
        other = raw(sock_path)
        other.sendall(encode_request("flush"))
        assert decode_response(read_lines(other, 1)[0]).ok
        assert served[0].recv(100) == b""  # then the served one quiet the longest
        served[1].sendall(encode_request("flush"))
        assert decode_response(read_lines(served[1], 1)[0]).ok
        assert d.server.evicted == 2
        for s in [*served, silent, newcomer, other]:
            s.close()


def test_kill_response_flushed_before_exit(sock_path: str) -> None:
    d = FakeDaemon(sock_path).start()
    try:
        with ControlClient(sock_path) as c:
            assert c.request("kill").ok
            with pytest.raises(IpcError, match="closed the connection"):
                c.request("flush")
    finally:
        d.stop()


def test_daemon_closing_mid_reply_is_clear_error(sock_path: str) -> None:
    with (
        half_reply_daemon(sock_path),
        ControlClient(sock_path) as c,
        pytest.raises(IpcError, match="middle of its reply"),
    ):
        c.request("show", ["routes"])


def test_server_without_thread_selector_integration(sock_path: str) -> None:
    """Drive the server from the test's own loop, as the daemon does."""
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(sock_path)
    lsock.listen(8)
    now = [100.0]
    server = ControlServer(lsock, lambda r: Response.success(r.cmd), clock=lambda: now[0])
    sel = selectors.DefaultSelector()
    server.register(sel)
    assert server.next_deadline() is None

    def spin() -> None:
        for key, mask in sel.select(0.05):
            assert key.data == (CTL_TAG, server)
            key.data[1].on_ready(key, mask)

    c = raw(sock_path)
    spin()
    assert server.clients == 1
    assert server.next_deadline() == 110.0
    c.sendall(encode_request("reload"))
    spin()
    assert decode_response(read_lines(c, 1)[0]).data == "reload"
    now[0] = 109.0
    server.expire(now[0])
    assert server.clients == 1
    now[0] = 111.0
    server.expire(now[0])
    assert server.clients == 0
    assert c.recv(10) == b""
    c.close()
    server.close()
    sel.close()


def test_no_daemon_messages(tmp_path: Path) -> None:
    with pytest.raises(IpcError, match="Cannot find IPC socket"):
        ControlClient(str(tmp_path / "none.sock")).connect()
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()
    with pytest.raises(IpcError, match="refused"):
        ControlClient(str(stale)).connect()


# --- rendered show replies ------------------------------------------------------


def test_format_in_requests() -> None:
    line = encode_request("show", ["routes"], True, "json")
    assert json.loads(line) == {"cmd": "show", "args": ["routes"], "detail": True, "format": "json"}
    assert decode_request(line) == Request("show", ("routes",), True, "json")
    assert "format" not in json.loads(encode_request("show", ["routes"]))
    with pytest.raises(IpcError, match="unknown format"):
        encode_request("show", ["routes"], False, "xml")
    for fmt in (b'"xml"', b"1", b"null"):
        line = b'{"cmd":"show","args":[],"format":' + fmt + b"}"
        if fmt == b"null":
            assert decode_request(line).format is None
        else:
            with pytest.raises(IpcError, match="format must be"):
                decode_request(line)


def test_rendered_reply_wire_format() -> None:
    text = "é\n".encode()
    raw = encode_response(Response.success(text=text, warnings=["w"]))
    line, _, rest = raw.partition(b"\n")
    assert json.loads(line) == {"ok": True, "text": 3, "warnings": ["w"]}
    assert rest == text
    resp = decode_response(line)
    assert (resp.ok, resp.text_len, resp.warnings, resp.data) == (True, 3, ("w",), None)
    with pytest.raises(IpcError, match="must be bytes"):
        encode_response(Response(True, text="str"))  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [b"-1", b"true", b'"3"', b"1.5", str(2**31).encode()])
def test_bad_text_lengths(n: bytes) -> None:
    with pytest.raises(IpcError, match="text length"):
        decode_response(b'{"ok":true,"text":' + n + b"}")


def test_client_reads_rendered_replies_in_sequence(sock_path: str) -> None:
    big = b"x" * 3_000_000 + b"\n"  # more than one recv, more than the server's MAX_OUTPUT

    def handler(req: Request) -> Response:
        return Response.success(text=big if req.args == ("routes",) else b"")

    with FakeDaemon(sock_path, handler=handler), ControlClient(sock_path) as c:
        assert c.request("show", ["routes"], False, "text").text == big
        assert c.request("show", ["groups"], False, "text").text == b""
        assert c.request("show", ["routes"], False, "text").text == big


def test_daemon_closing_mid_text_is_clear_error(sock_path: str) -> None:
    with (
        half_reply_daemon(sock_path, b'{"ok":true,"text":10,"warnings":[]}\nabc'),
        ControlClient(sock_path) as c,
        pytest.raises(IpcError, match="middle of its reply"),
    ):
        c.request("show", ["routes"], False, "text")


# --- the json-free codec path (smcroutectl does not import json) ------------------


@settings(max_examples=300)
@given(
    st.one_of(
        st.text(),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
            lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        ).map(json.dumps),
    )
)
def test_loads_agrees_with_json(doc: str) -> None:
    from smcroute.ipc.codec import _json_loads

    try:
        want: object = ("ok", json.loads(doc))
    except ValueError as e:
        want = ("error", str(e))
    try:
        got: object = ("ok", _json_loads(doc))
    except ValueError as e:
        got = ("error", str(e))
    assert repr(got) == repr(want)  # repr: NaN != NaN


@given(
    st.sampled_from(sorted(CMDS)),
    st.lists(st.text(st.characters(min_codepoint=32), max_size=20), max_size=5),
    st.booleans(),
    st.sampled_from([None, "json", "text", "ansi", "rows"]),
)
def test_request_encoded_as_json_would(
    cmd: str, args: list[str], detail: bool, fmt: str | None
) -> None:
    args = [a.replace("\x7f", "") for a in args]
    obj: dict[str, object] = {"cmd": cmd, "args": args, "detail": detail}
    if fmt is not None:
        obj["format"] = fmt
    want = json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"
    assert encode_request(cmd, args, detail, fmt) == want
