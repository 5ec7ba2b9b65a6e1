"""Service files: the systemd unit verifies and is hardened, the init script
works, the example configuration and /etc/default file are harmless.

Needs the Debian packages systemd (systemd-analyze) and sysvinit-utils
(start-stop-daemon comes with dpkg, /lib/lsb/init-functions with
sysvinit-utils); runs no service on the host.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from netns import wait_until

ROOT = Path(__file__).resolve().parent.parent
ETC = ROOT / "etc"
UNIT = ETC / "smcroute.service"
INIT = ETC / "init.d" / "smcroute"
DEFAULT = ETC / "default" / "smcroute"
CONF = ETC / "smcroute.conf"


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith(("#", "[")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    return settings


def _fake_root(tmp_path: Path, unit_text: str, stubs=("/usr/sbin/smcrouted", "/bin/kill")) -> Path:
    """A root with the unit, stub executables and the host's targets, for --root."""
    root = tmp_path / "root"
    system = root / "lib/systemd/system"
    system.mkdir(parents=True)
    for pattern in ("*.target", "*.slice"):
        for f in Path("/lib/systemd/system").glob(pattern):
            if f.is_file():
                shutil.copy(f, system / f.name)
    for stub in stubs:
        path = root / stub.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/smcroute.service").write_text(unit_text)
    return root


def _verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "/etc/systemd/system/smcroute.service"],
        capture_output=True,
        text=True,
        env=dict(os.environ, SYSTEMD_LOG_COLOR="0"),
    )


def test_systemd_analyze_is_installed():
    assert shutil.which("systemd-analyze"), "apt-get install systemd"


def test_unit_verifies_cleanly(tmp_path):
    res = _verify(_fake_root(tmp_path, UNIT.read_text()))
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr


def test_verify_notices_mistakes(tmp_path):
    """The verification above would fail on a typo or a missing binary."""
    typo = UNIT.read_text().replace("ProtectHome=", "ProtectHomes=")
    res = _verify(_fake_root(tmp_path / "a", typo))
    assert "ProtectHomes" in res.stdout + res.stderr
    res = _verify(_fake_root(tmp_path / "b", UNIT.read_text(), stubs=("/bin/kill",)))
    assert res.returncode != 0 and "/usr/sbin/smcrouted" in res.stdout + res.stderr


def test_unit_runs_the_daemon_as_the_spec_says():
    s = _unit_settings()
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["EnvironmentFile"] == ["-/etc/default/smcroute"]
    assert s["ExecStart"] == ["/usr/sbin/smcrouted -n -s $SMCROUTED_OPTS $SMCROUTED_ARGS"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "User" not in s, "the daemon starts as root and drops privileges itself (-p)"
    assert "multi-user.target" in s["WantedBy"]


def test_unit_is_hardened():
    s = _unit_settings()
    caps = set(s["CapabilityBoundingSet"][0].split())
    assert {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SETUID", "CAP_SETGID"} <= caps
    assert not caps & {"CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_SYS_PTRACE", "CAP_SYS_MODULE"}
    assert set(s["RestrictAddressFamilies"][0].split()) == {
        "AF_UNIX",
        "AF_NETLINK",
        "AF_INET",
        "AF_INET6",
    }
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/run",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictRealtime": "yes",
        "SystemCallArchitectures": "native",
    }.items():
        assert s.get(key) == [value], key
    assert "@system-service" in s["SystemCallFilter"]


def test_daemon_runs_within_the_units_capabilities():
    """smcrouted starts, drops privileges and exits cleanly (-D) with exactly the
    unit's bounding set and no-new-privileges, in a network namespace of its own.

    Depends on smcroute.daemon_cli, the privileged helper and the daemon; needs root.
    """
    caps = _unit_settings()["CapabilityBoundingSet"][0].split()
    bounding = "-all," + ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    script = (
        "ip link set lo up && exec setpriv --no-new-privs --inh-caps=-all "
        f'--bounding-set={bounding} "$@"'
    )
    smcrouted = str(Path(sys.executable).with_name("smcrouted"))
    res = subprocess.run(
        ["unshare", "--net", "sh", "-c", script, "sh",
         smcrouted, "-n", "-D", "1", "-l", "info", "-f", str(CONF)],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "running as" in res.stderr, res.stderr


def test_security_exposure_stays_low(tmp_path):
    root = _fake_root(tmp_path, UNIT.read_text())
    res = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--root={root}", "smcroute.service"],
        capture_output=True,
        text=True,
        env=dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_COLORS="0"),
    )
    match = re.search(r"Overall exposure level for smcroute\.service: (\d+\.\d+)", res.stdout)
    assert match, res.stdout + res.stderr
    assert float(match.group(1)) <= 3.5, res.stdout


# --- init script ---------------------------------------------------------------


def test_init_script_syntax():
    assert subprocess.run(["sh", "-n", str(INIT)]).returncode == 0
    assert os.access(INIT, os.X_OK)
    if shutil.which("dash"):
        assert subprocess.run(["dash", "-n", str(INIT)]).returncode == 0


def test_init_script_lsb_header_and_actions():
    text = INIT.read_text()
    header = text[text.index("### BEGIN INIT INFO") : text.index("### END INIT INFO")]
    for field in ("Provides: ", "Required-Start:", "Required-Stop:", "Default-Start:"):
        assert field in header
    assert re.search(r"Provides:\s+smcroute$", header, re.M)
    assert re.search(r"Default-Start:\s+2 3 4 5$", header, re.M)
    assert re.search(r"Default-Stop:\s+0 1 6$", header, re.M)
    assert ". /etc/default/smcroute" in text
    assert "start-stop-daemon" in text


STUB_DAEMON = """#!{python}
# Stands in for smcrouted: records its arguments and signals, detaches, and
# writes the PID file, as the real daemon does without -n.
import os, signal, sys, time
log = {log!r}
with open(log, "a") as f:
    f.write("args " + " ".join(sys.argv[1:]) + "\\n")
if os.fork():
    sys.exit(0)
os.setsid()
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
def on(sig, frame):
    with open(log, "a") as f:
        f.write("signal %d\\n" % sig)
    if sig == signal.SIGTERM:
        os.unlink({pidfile!r})
        sys.exit(0)
signal.signal(signal.SIGHUP, on)
signal.signal(signal.SIGTERM, on)
with open({pidfile!r}, "w") as f:
    f.write("%d\\n" % os.getpid())
while True:
    time.sleep(1)
"""


@pytest.fixture
def init_sandbox(tmp_path):
    """The init script with its paths pointed into tmp_path and a stub daemon."""
    if not Path("/lib/lsb/init-functions").exists() or not shutil.which("start-stop-daemon"):
        pytest.fail("needs /lib/lsb/init-functions and start-stop-daemon (Debian)")
    pidfile = tmp_path / "smcroute.pid"
    log = tmp_path / "stub.log"
    daemon = tmp_path / "sbin" / "smcrouted"  # the process name must be smcrouted
    daemon.parent.mkdir()
    daemon.write_text(STUB_DAEMON.format(python=sys.executable, log=str(log), pidfile=str(pidfile)))
    daemon.chmod(0o755)
    defaults = tmp_path / "default"
    defaults.write_text('SMCROUTED_OPTS="-l info"\nSMCROUTED_ARGS="-c 300"\n')
    script = tmp_path / "init"
    text = INIT.read_text()
    for old, new in (
        ("DAEMON=/usr/sbin/smcrouted", f"DAEMON={daemon}"),
        ("PIDFILE=/run/smcroute.pid", f"PIDFILE={pidfile}"),
        ("/etc/default/smcroute", str(defaults)),
    ):
        assert old in text
        text = text.replace(old, new)
    script.write_text(text)
    script.chmod(0o755)

    def run(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(script), action], capture_output=True, text=True, timeout=60
        )

    def pid() -> int | None:
        try:
            return int(pidfile.read_text())
        except (FileNotFoundError, ValueError):
            return None

    yield run, pid, log
    p = pid()
    if p:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_init_script_start_status_reload_stop(init_sandbox):
    run, pid, log = init_sandbox
    assert run("status").returncode != 0
    res = run("start")
    assert res.returncode == 0, res.stdout + res.stderr
    wait_until(lambda: _alive(pid()), 10, what="the daemon to run")
    assert "args -l info -c 300" in log.read_text()
    assert run("status").returncode == 0
    first = pid()
    assert run("start").returncode == 0 and pid() == first, "start twice must not start twice"
    assert run("reload").returncode == 0
    wait_until(lambda: f"signal {int(signal.SIGHUP)}" in log.read_text(), 10, what="SIGHUP")
    assert run("force-reload").returncode == 0
    res = run("restart")
    assert res.returncode == 0, res.stdout + res.stderr
    wait_until(lambda: _alive(pid()) and pid() != first, 10, what="a new daemon")
    second = pid()
    res = run("stop")
    assert res.returncode == 0, res.stdout + res.stderr
    wait_until(lambda: not _alive(second), 10, what="the daemon to stop")
    assert f"signal {int(signal.SIGTERM)}" in log.read_text()
    assert run("status").returncode == 3
    assert run("bogus").returncode == 3


# --- /etc files -------------------------------------------------------------------


def test_default_file_defines_both_variables_empty():
    res = subprocess.run(
        ["sh", "-c", '. "$1"; printf "%s|%s" "${SMCROUTED_OPTS-unset}" "${SMCROUTED_ARGS-unset}"',
         "sh", str(DEFAULT)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert res.returncode == 0 and res.stdout == "|"


def test_example_config_is_all_comments():
    for n, line in enumerate(CONF.read_text().splitlines(), 1):
        assert not line.strip() or line.lstrip().startswith("#"), f"line {n} is active: {line}"


def _smcrouted() -> str:
    return str(Path(sys.executable).with_name("smcrouted"))


def test_example_config_checks_clean():
    """Depends on smcroute.daemon_cli and the parser (-F)."""
    res = subprocess.run([_smcrouted(), "-F", str(CONF)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_directive_in_the_example_is_valid_when_uncommented(tmp_path):
    """Depends on smcroute.daemon_cli and the parser (-F)."""
    keywords = ("phyint", "mgroup", "ssmgroup", "mroute", "include")
    lines = [
        line[1:]
        for line in CONF.read_text().splitlines()
        if line[:1] == "#" and line[1:2].isalpha() and line[1:].split()[0] in keywords
    ]
    assert {line.split()[0] for line in lines} == set(keywords)
    conf = tmp_path / "uncommented.conf"
    text = "\n".join(lines) + "\n"
    conf.write_text(text.replace("/etc/smcroute.d/*.conf", f"{tmp_path}/none/*.conf"))
    res = subprocess.run([_smcrouted(), "-F", str(conf)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
