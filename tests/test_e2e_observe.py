"""End to end: counters, rates, the metrics endpoint, explain, doctor and log (needs root).

Every test runs our daemon in its own namespaces (S --(s0|a1)-- R --(a2|r0)--
X1, R --(a3|r0)-- X2) with real multicast: rates are checked against the rate
sent, `/metrics` is scraped over HTTP inside the router's namespace and
parsed with prometheus_client's own parser, and `explain`/`doctor` are run
against faults made for real (links down, flags off, sysctls, missing
interfaces, stop filters).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from netns import MCAST_TOOL, Daemon, Netns, Receiver, RouterTopology, send, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_e2e_templates import flood

FAMILIES = pytest.mark.parametrize("fam", [4, 6], ids=["ipv4", "ipv6"])
Start = Callable[..., Daemon]
PORT = 9108  # each router namespace has its own loopback


def G(fam: int, n: int) -> str:
    return f"225.1.1.{n}" if fam == 4 else f"ff2e::1:{n}"


def show(d: Daemon, *what: str) -> Any:
    return json.loads(d.ctl("-j", "-d", "show", *what).stdout)


def row(d: Daemon, table: str, source: str | None, group: str) -> dict[str, Any]:
    rows = [r for r in show(d)["routes"][table] if r["group"] == group and r["source"] == source]
    assert len(rows) == 1, rows
    return rows[0]


def sender(ns: Netns, group: str, rate: float, seconds: float) -> subprocess.Popen[str]:
    argv = [sys.executable, str(MCAST_TOOL), "send", "--iface", "s0", "--group", group,
            "--count", str(int(rate * seconds)), "--rate", str(rate)]  # fmt: skip
    return ns.popen(argv, stdout=subprocess.PIPE, text=True)


def scrape(ns: Netns, path: str = "/metrics") -> str:
    code = (
        "import sys, urllib.request\n"
        f"url = 'http://127.0.0.1:{PORT}{path}'\n"
        "print(urllib.request.urlopen(url, timeout=10).read().decode())"
    )
    return ns.run(sys.executable, "-c", code).stdout


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def explain(d: Daemon, *args: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(d.ctl("-j", "explain", *args).stdout)["explain"]
    return doc


# --- counters and rates ----------------------------------------------------------------


@FAMILIES
def test_rates_follow_the_rate_sent(router_topo: RouterTopology, ours: Start, fam: int) -> None:
    """Two flows at 40 and 200 packets/s: pps within 20 %, bps = pps x packet size,
    last_seen fresh; the second flow goes through a template (summed there)."""
    topo = router_topo
    src = topo.source(fam)
    slow, fast = G(fam, 1), G(fam, 2)
    conf = f"mroute from a1 source {src} group {slow} to a2\nmroute from a1 group {fast} to a2\n"
    d = ours(topo.router, conf, "--sample-interval", "1")
    topo.wait_link_ready()
    t0 = time.monotonic()
    procs = [sender(topo.sender, slow, 40, 12), sender(topo.sender, fast, 200, 12)]
    try:
        time.sleep(3.5)  # two full sampling intervals inside the stream
        seen: dict[str, list[float]] = {slow: [], fast: []}
        bps_ok = []
        while time.monotonic() - t0 < 9:  # well before the streams end
            doc = show(d)["routes"]
            for r in doc["kernel"]:
                if r["group"] in seen and r["pps"] is not None:
                    seen[r["group"]].append(r["pps"])
                    size = r["bytes"] / r["packets"]
                    bps_ok.append(abs(r["bps"] - r["pps"] * size * 8) <= 0.2 * r["bps"] + 1)
                    assert r["last_seen"] is not None and r["last_seen"] < 1.0
            (tmpl,) = doc["asm"]
            assert tmpl["learned"] == 1
            time.sleep(0.5)
    finally:
        for p in procs:
            p.wait(timeout=30)
    for group, rate in ((slow, 40), (fast, 200)):
        got = statistics.median(seen[group])
        assert abs(got - rate) <= 0.2 * rate, (group, rate, seen[group])
    assert all(bps_ok)
    tmpl = show(d)["routes"]["asm"][0]
    assert tmpl["packets"] == row(d, "kernel", src, fast)["packets"] > 0
    time.sleep(2.5)  # traffic stopped: the rate falls to 0, last_seen grows
    r = row(d, "ssm", src, slow)
    assert r["pps"] == 0 and r["last_seen"] >= 1.0
    text = d.ctl("-d", "show").stdout  # the plain table keeps its columns
    assert "PACKETS      BYTES  OIFS" in text and "pps" not in text


@FAMILIES
def test_wrong_interface_counts_grow(router_topo: RouterTopology, ours: Start, fam: int) -> None:
    """(S,G) from a1; the same (S,G) arrives on a3 (forged by X2): wrong_if grows,
    nothing more goes out of a2, explain names the cause."""
    topo = router_topo
    src, grp = topo.source(fam), G(fam, 5)
    conf = f"phyint a3 enable\nmroute from a1 source {src} group {grp} to a2\n"
    d = ours(topo.router, conf, "--sample-interval", "1")
    topo.wait_link_ready()
    assert send(topo.sender, "s0", grp, count=5) == 5
    wait_until(lambda: row(d, "kernel", src, grp)["packets"] == 5, timeout=10, what="5 right")
    before = row(d, "kernel", src, grp)["wrong_if"]
    assert before == 0
    flood(topo.receivers[1], "r0", grp, src, count=30, rate=300)
    wait_until(lambda: row(d, "kernel", src, grp)["wrong_if"] == 30, timeout=10, what="30 wrong")
    flood(topo.receivers[1], "r0", grp, src, count=20, rate=300)
    wait_until(lambda: row(d, "ssm", src, grp)["wrong_if"] == 50, timeout=10, what="50 wrong")
    ifs = {i["name"]: i for i in show(d, "interfaces")["interfaces"]}
    assert ifs["a2"][f"ipv{fam}"]["packets_out"] == 5  # wrong-interface packets go nowhere
    assert ifs["a1"][f"ipv{fam}"]["packets_in"] >= 5
    (path,) = explain(d, src, grp)["paths"]  # seen and configured on a1 only
    assert path["iif"] == "a1" and path["cause"] == "wrong-iif"
    assert explain(d, "a3", src, grp)["paths"][0]["cause"] == "wrong-iif"
    plain = d.ctl("-d", "show", "interfaces").stdout
    assert "PKTS IN" in plain.splitlines()[1]


# --- metrics ------------------------------------------------------------------------------


def test_metrics_equal_show(router_topo: RouterTopology, ours: Start) -> None:
    topo = router_topo
    s4, s6 = topo.source(4), topo.source(6)
    conf = (
        f"mroute from a1 source {s4} group 225.1.1.1 to a2\n"
        f"mroute from a1 source {s6} group ff2e::1:1 to a2 a3\n"
        "mroute from a1 group 225.2.2.0/24 to a3\n"
        "mgroup from a2 group 225.7.7.7\n"
    )
    d = ours(topo.router, conf, "--sample-interval", "1", "--metrics", str(PORT))
    topo.wait_link_ready()
    send(topo.sender, "s0", "225.1.1.1", count=30, rate=200)
    send(topo.sender, "s0", "ff2e::1:1", count=20, rate=200)
    send(topo.sender, "s0", "225.2.2.9", count=10, rate=200)
    d.ctl("reload")
    doc = show(d)
    want = {(r["source"], r["group"], r["iif"]): r for r in doc["routes"]["kernel"]}
    assert len(want) == 3 and all(r["packets"] > 0 for r in want.values())

    def agree() -> dict[str, Any] | None:
        fams = families(scrape(topo.router))
        got = {
            (s.labels["source"], s.labels["group"], s.labels["iif"]): s.value
            for s in fams["smcroute_route_packets"].samples
        }
        ok = got == {k: r["packets"] for k, r in want.items()}
        return fams if ok and fams["smcroute_reloads"].samples[0].value == 1 else None

    fams = wait_until(agree, timeout=10, interval=0.3, what="metrics catch up with show")

    def by_route(name: str) -> dict[tuple[str, str, str], float]:
        return {
            (s.labels["source"], s.labels["group"], s.labels["iif"]): s.value
            for s in fams[name].samples
        }

    assert by_route("smcroute_route_bytes") == {k: r["bytes"] for k, r in want.items()}
    assert by_route("smcroute_route_wrong_if_packets") == {
        k: r["wrong_if"] for k, r in want.items()
    }
    ifs = {i["name"]: i for i in show(d, "interfaces")["interfaces"]}
    for s in fams["smcroute_interface_packets_out"].samples:
        fam = s.labels["family"]
        assert s.value == ifs[s.labels["interface"]][fam]["packets_out"]
    kinds = {s.labels["kind"]: s.value for s in fams["smcroute_routes"].samples}
    assert kinds == {"static": 2, "template": 1, "learned": 1, "stop": 0, "pending": 0}
    assert fams["smcroute_joins"].samples[0].value == 1
    upcalls = {s.labels["kind"]: s.value for s in fams["smcroute_upcalls"].samples}
    assert upcalls["nocache"] >= 1
    assert fams["smcroute_reload_failures"].samples[0].value == 0
    assert fams["smcroute_route_series_dropped"].samples[0].value == 0
    assert "smcroute_reload_duration_seconds" in fams
    assert "smcroute_learned_limit_hits" in fams


def test_metrics_series_cap_under_a_source_burst(router_topo: RouterTopology, ours: Start) -> None:
    """5,000 spoofed sources through a template: at most --metrics-routes (default
    1,000) per-route series, the busiest source among them."""
    topo = router_topo
    conf = "mroute from a1 group 225.3.3.3 to a2\n"
    d = ours(topo.router, conf, "--sample-interval", "1", "--metrics", str(PORT))
    topo.wait_link_ready()
    flood(topo.sender, "s0", "225.3.3.3", "10.9.0.1", sources=5000, count=1, rate=4000)
    wait_until(
        lambda: show(d)["routes"]["asm"][0]["learned"] >= 4900, timeout=30, what="5000 learned"
    )
    busy = sender(topo.sender, "225.3.3.3", 100, 4)
    try:
        time.sleep(2.5)

        def capped() -> dict[str, Any] | None:
            fams = families(scrape(topo.router))
            sources = {s.labels["source"] for s in fams["smcroute_route_packets"].samples}
            return fams if topo.source4 in sources else None

        fams = wait_until(capped, timeout=10, interval=0.5, what="busy source in the series")
    finally:
        busy.wait(timeout=30)
    for name in (
        "smcroute_route_packets",
        "smcroute_route_bytes",
        "smcroute_route_wrong_if_packets",
    ):
        assert len(fams[name].samples) == 1000
    learned = show(d)["routes"]["asm"][0]["learned"]
    assert fams["smcroute_route_series_dropped"].samples[0].value == learned - 1000
    d.ctl("show")  # the control socket is fine


def test_metrics_endpoint_refuses_what_it_does_not_serve(
    router_topo: RouterTopology, ours: Start
) -> None:
    topo = router_topo
    d = ours(topo.router, "mroute from a1 group 225.1.1.1 to a2\n", "--metrics", str(PORT))
    code = (
        "import socket, sys, time\n"
        "def ask(data, hold=False):\n"
        f"    c = socket.create_connection(('127.0.0.1', {PORT}), timeout=10)\n"
        "    c.sendall(data)\n"
        "    if hold: return c\n"
        "    out = b''\n"
        "    while True:\n"
        "        b = c.recv(65536)\n"
        "        if not b: break\n"
        "        out += b\n"
        "    return out.split(b' ', 2)[1].decode()\n"
        "slow = [ask(b'GET /met', hold=True) for _ in range(4)]\n"
        "time.sleep(0.3)\n"
        "print(ask(b'GET /metrics HTTP/1.1\\r\\n\\r\\n'))\n"
        "for s in slow: s.close()\n"
        "time.sleep(0.3)\n"
        "for req in (b'GET / HTTP/1.1\\r\\n\\r\\n', b'POST /metrics HTTP/1.1\\r\\n\\r\\n',\n"
        "            b'PUT /reload HTTP/1.1\\r\\n\\r\\n', b'\\x16\\x03\\x01 tls\\r\\n\\r\\n',\n"
        "            b'GET /metrics HTTP/1.1\\r\\nX: ' + b'a' * 100000 + b'\\r\\n\\r\\n',\n"
        "            b'GET /metrics HTTP/1.1\\r\\n\\r\\n'):\n"
        "    print(ask(req))\n"
    )
    out = topo.router.run(sys.executable, "-c", code).stdout.split()
    assert out == ["503", "404", "405", "405", "400", "431", "200"]
    assert d.ctl("show").returncode == 0 and d.running()
    log = d.log()
    assert "reload" not in log.split("ready:", 1)[1]  # nothing over HTTP changed state


# --- explain ---------------------------------------------------------------------------------

S, GRP = "10.0.1.2", "225.1.1.1"
ROUTE = f"mroute from a1 source {S} group {GRP} to a2\n"


def _no_route(topo: RouterTopology) -> tuple[str, bool]:
    return "phyint a1 enable\nmroute from a1 source 10.0.1.99 group 225.9.9.9 to a2\n", False


def _stop_filter(topo: RouterTopology) -> tuple[str, bool]:
    return f"phyint a1 enable\nmroute from a3 group {GRP} to a2\n", True


def _wrong_iif(topo: RouterTopology) -> tuple[str, bool]:
    return f"phyint a1 enable\nmroute from a3 source {S} group {GRP} to a2\n", False


def _oif_down(topo: RouterTopology) -> tuple[str, bool]:
    topo.router.ip("link", "set", "a2", "down")
    return ROUTE, False


def _no_multicast(topo: RouterTopology) -> tuple[str, bool]:
    topo.router.ip("link", "set", "a1", "multicast", "off")
    return ROUTE, False


def _ttl_threshold(topo: RouterTopology) -> tuple[str, bool]:
    return "phyint a2 ttl-threshold 64\n" + ROUTE, False


def _rp_filter(topo: RouterTopology) -> tuple[str, bool]:
    topo.router.sysctl({"net.ipv4.conf.a1.rp_filter": 1})
    return ROUTE, False


def _pending(topo: RouterTopology) -> tuple[str, bool]:
    return f"mroute from a1 source {S} group {GRP} to ghost0\n", False


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        (_no_route, "no-route"),
        (_stop_filter, "stop-filter"),
        (_wrong_iif, "wrong-iif"),
        (_oif_down, "oif-down"),
        (_no_multicast, "iif-multicast"),
        (_ttl_threshold, "ttl-threshold"),
        (_rp_filter, "rp-filter"),
        (_pending, "pending"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_explain_names_the_cause(
    router_topo: RouterTopology, ours: Start, fault: Any, cause: str
) -> None:
    topo = router_topo
    conf, traffic = fault(topo)
    d = ours(topo.router, conf)
    topo.wait_link_ready() if cause not in ("oif-down",) else None
    if traffic:
        send(topo.sender, "s0", GRP, count=3)
        wait_until(lambda: any(r["oifs"] == [] for r in show(d)["routes"]["kernel"]), timeout=10)
    doc = explain(d, "a1", S, GRP)
    (path,) = doc["paths"]
    assert path["cause"] == cause, path
    failing = next(c for c in path["checks"] if c["check"] == cause)
    assert failing["fix"], failing
    text = d.ctl("explain", "a1", S, GRP).stdout
    assert cause in text.splitlines()[0] and "fix: " in text


def test_explain_healthy_flow_and_bad_input(router_topo: RouterTopology, ours: Start) -> None:
    topo = router_topo
    d = ours(topo.router, ROUTE)
    topo.wait_link_ready()
    with Receiver(topo.receivers[0], "r0", [GRP], topology=topo) as rx:
        send(topo.sender, "s0", GRP, count=5)
        assert rx.stop().count(S, GRP) == 5
    (path,) = explain(d, S, GRP)["paths"]
    assert (path["iif"], path["verdict"], path["cause"]) == ("a1", "ok", None)
    entry = next(c for c in path["checks"] if c["check"] == "kernel-entry")
    assert "5 packets" in entry["detail"]
    for args, words in (
        (("10.0.1.2", "ff2e::1"), "IPv4 but group ff2e::1 is IPv6"),
        (("a1", "10.0.1.2", "10.1.1.1"), "not a multicast address"),
        (("eth9", "10.0.1.2", "225.1.1.1"), "no such interface: eth9"),
        (("a1", "nonsense", "225.1.1.1"), "not an IPv4 or IPv6 address"),
    ):
        r = d.ctl("explain", *args, check=False)
        assert r.returncode == 1 and r.stdout == ""
        assert len(r.stderr.splitlines()) == 1 and words in r.stderr, r.stderr


# --- doctor ----------------------------------------------------------------------------------


def _missing(topo: RouterTopology, extra: list[str]) -> str:
    return ROUTE + "mroute from a1 source 10.0.1.2 group 225.1.1.2 to ghost0\n"


def _down(topo: RouterTopology, extra: list[str]) -> str:
    topo.router.ip("link", "set", "a3", "down")
    return ROUTE + "phyint a3 enable\n"


def _nomulticast(topo: RouterTopology, extra: list[str]) -> str:
    topo.router.ip("link", "set", "a3", "multicast", "off")
    return ROUTE + "mroute from a1 group 225.5.5.5 to a3\n"


def _rpf(topo: RouterTopology, extra: list[str]) -> str:
    topo.router.sysctl({"net.ipv4.conf.a2.rp_filter": 2})
    return ROUTE


def _vif_table(topo: RouterTopology, extra: list[str]) -> str:
    topo.router.ip_batch(  # 28 more interfaces: veth pairs with both ends in the router
        line
        for i in range(14)
        for line in (
            f"link add v{i}a type veth peer name v{i}b",
            f"link set v{i}a up",
            f"link set v{i}b up",
        )
    )
    return ROUTE + "phyint v+ enable\n"


def _threshold(topo: RouterTopology, extra: list[str]) -> str:
    return ROUTE + "phyint a2 ttl-threshold 255\n"


def _learned_limit(topo: RouterTopology, extra: list[str]) -> str:
    extra += ["--max-learned", "3"]
    return ROUTE + "mroute from a1 group 225.6.6.6 to a3\n"


def _joins(topo: RouterTopology, extra: list[str]) -> str:
    topo.router.sysctl({"net.ipv4.igmp_max_memberships": 0})
    return ROUTE + "mgroup from a2 group 225.8.8.8\n"


def _config_warning(topo: RouterTopology, extra: list[str]) -> str:
    return f"mroute from a1 source {S} group {GRP} to a2 a2\n"


@pytest.mark.parametrize(
    ("fault", "check", "severity"),
    [
        (_missing, "iface-missing", "error"),
        (_down, "iface-down", "error"),
        (_nomulticast, "iface-multicast", "error"),
        (_rpf, "rp-filter", "warning"),
        (_vif_table, "vif-table", "warning"),
        (_threshold, "ttl-threshold", "error"),
        (_learned_limit, "learned-limit", "warning"),
        (_joins, "joins", "error"),
        (_config_warning, "config", "warning"),
    ],
    ids=lambda v: v if isinstance(v, str) and v not in ("error", "warning") else "",
)
def test_doctor_flags_each_fault(
    router_topo: RouterTopology, ours: Start, fault: Any, check: str, severity: str
) -> None:
    topo = router_topo
    extra: list[str] = []
    conf = fault(topo, extra)
    d = ours(topo.router, conf, *extra)
    if check == "learned-limit":
        topo.wait_link_ready()
        flood(topo.sender, "s0", "225.6.6.6", "10.9.0.1", sources=6, count=1, rate=100)
        wait_until(lambda: "limit (3) reached" in d.log(), timeout=10, what="limit")
    r = d.ctl("doctor", check=False)
    assert r.returncode == 1, r
    assert check in r.stdout
    doc = json.loads(d.ctl("-j", "doctor", check=False).stdout)["doctor"]
    assert not doc["healthy"]
    found = [p for p in doc["problems"] if p["check"] == check]
    assert found and found[0]["severity"] == severity, doc
    order = [{"error": 0, "warning": 1, "info": 2}[p["severity"]] for p in doc["problems"]]
    assert order == sorted(order)


def test_doctor_healthy_router_exits_0(router_topo: RouterTopology, ours: Start) -> None:
    topo = router_topo
    d = ours(
        topo.router,
        ROUTE + "mroute from a1 group 225.2.2.0/24 to a2 a3\nmgroup from a2 group 225.8.8.8\n",
    )
    r = d.ctl("doctor", check=False)
    assert (r.returncode, r.stdout.splitlines()[-1]) == (0, "nothing wrong found"), r
    doc = json.loads(d.ctl("-j", "doctor").stdout)["doctor"]
    assert doc["healthy"] is True
    assert all(p["severity"] == "info" for p in doc["problems"])


# --- log ---------------------------------------------------------------------------------------


def test_log_level_changes_in_both_processes(router_topo: RouterTopology, ours: Start) -> None:
    """Started at err: the hook's failure (a warning the privileged helper logs) and
    'reloading' (the main process, notice) are silent; after `log info` both show;
    after `log err` neither does again."""
    topo = router_topo
    d = ours(topo.router, ROUTE, extra_args=["-l", "err", "-e", "/bin/false"])
    helper_line = "helper: hook /bin/false reload exited with status 1"

    def reload_and_wait() -> None:
        d.ctl("reload")
        time.sleep(1.5)  # the helper reaps hooks every 0.5 s

    reload_and_wait()
    assert helper_line not in d.log() and "reloading" not in d.log()
    d.ctl("log", "info")
    d.ctl("reload")
    wait_until(lambda: helper_line in d.log(), timeout=10, what="the helper's warning")
    assert "reloading" in d.log() and "log level info" in d.log()
    d.ctl("log", "err")
    before = d.log()
    reload_and_wait()
    assert d.log() == before
    r = d.ctl("log", "loud", check=False)
    assert r.returncode == 1 and "invalid log level 'loud'" in r.stderr
