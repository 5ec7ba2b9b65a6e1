"""The Debian package: packaging/build-deb builds it, its contents, control
data and maintainer scripts are right, and it installs, runs and purges
cleanly in a fresh debootstrap root (never on the host).

Needs the Debian packages python3-venv python3-dev gcc libc6-dev libcap-dev
(the build) and debootstrap (the install test), root, and access to PyPI and
the Debian mirror. About three minutes in all.
"""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
from pathlib import Path

import pytest

from smcroute import __version__

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
VERSION = __version__

REQUIRED_FILES = {
    "./usr/sbin/smcrouted": 0o755,
    "./usr/sbin/smcroutectl": 0o755,
    "./usr/lib/smcroute/bin/smcrouted": 0o755,
    "./usr/lib/smcroute/bin/smcroutectl": 0o755,
    "./usr/lib/smcroute/pyvenv.cfg": 0o644,
    "./usr/share/man/man8/smcrouted.8.gz": 0o644,
    "./usr/share/man/man8/smcroutectl.8.gz": 0o644,
    "./usr/share/man/man5/smcroute.conf.5.gz": 0o644,
    "./lib/systemd/system/smcroute.service": 0o644,
    "./etc/smcroute.conf": 0o644,
    "./etc/default/smcroute": 0o644,
    "./etc/init.d/smcroute": 0o755,
    "./usr/share/bash-completion/completions/smcroutectl": 0o644,
    "./usr/share/zsh/vendor-completions/_smcroutectl": 0o644,
    "./usr/share/fish/vendor_completions.d/smcroutectl.fish": 0o644,
    "./usr/share/doc/smcroute/copyright": 0o644,
    "./usr/share/doc/smcroute/changelog.Debian.gz": 0o644,
}


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    res = subprocess.run(
        [str(PACKAGING / "build-deb"), str(out)], capture_output=True, text=True, timeout=900
    )
    assert res.returncode == 0, res.stdout + res.stderr
    built = Path(res.stdout.strip().splitlines()[-1])
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert built == out / f"smcroute_{VERSION}-1_{arch}.deb"
    assert built.is_file()
    return built


@pytest.fixture(scope="module")
def tree(deb, tmp_path_factory) -> Path:
    """The package's data, unpacked (as files, for content checks)."""
    where = tmp_path_factory.mktemp("tree")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(where)], check=True)
    return where


@pytest.fixture(scope="module")
def control(deb, tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("control")
    subprocess.run(["dpkg-deb", "-e", str(deb), str(where)], check=True)
    return where


def _members(deb: Path) -> dict[str, tarfile.TarInfo]:
    proc = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True)
    import io

    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_listing_has_every_file_with_its_mode(deb):
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    members = _members(deb)
    for path, mode in REQUIRED_FILES.items():
        assert path in listing, path
        assert members[path].isfile(), path
        assert members[path].mode & 0o7777 == mode, path
    for m in members.values():
        assert m.uname == "root" and m.gname == "root", m.name
        assert not m.mode & 0o6000, f"setuid/setgid file {m.name}"


def test_control_fields(deb):
    info = subprocess.run(
        ["dpkg-deb", "-I", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    fields = dict(
        line.strip().split(": ", 1)
        for line in info.splitlines()
        if line.startswith(" ") and ": " in line
    )
    assert fields["Package"] == "smcroute"
    assert fields["Version"] == f"{VERSION}-1"
    depends = fields["Depends"]
    for dep in ("python3 (>= 3.", "python3 (<< 3.", "libcap2", "adduser"):
        assert dep in depends, dep
    for script in ("postinst", "prerm", "postrm", "conffiles", "md5sums"):
        assert script in info


def test_conffiles(control):
    assert (control / "conffiles").read_text().split() == [
        "/etc/default/smcroute",
        "/etc/init.d/smcroute",
        "/etc/smcroute.conf",
    ]


def test_md5sums_match(control, tree):
    lines = (control / "md5sums").read_text().splitlines()
    assert len(lines) > 20
    for line in lines:
        digest, path = line.split("  ", 1)
        assert hashlib.md5((tree / path).read_bytes()).hexdigest() == digest, path
        assert not path.startswith("etc/"), "conffiles do not belong in md5sums"


def test_maintainer_scripts(control):
    for name in ("postinst", "prerm", "postrm"):
        script = control / name
        assert script.stat().st_mode & 0o111, name
        assert subprocess.run(["sh", "-n", str(script)]).returncode == 0, name
    postinst = (control / "postinst").read_text()
    assert "adduser --system --group" in postinst and "smcroute" in postinst
    assert "useradd --system" in postinst  # without adduser
    assert "deb-systemd-helper" in postinst and "update-rc.d smcroute defaults" in postinst
    postrm = (control / "postrm").read_text()
    purge = postrm[postrm.index('if [ "$1" = purge ]') :]
    for words in ("deluser --system", "delgroup --system", "update-rc.d smcroute remove"):
        assert words in purge, words
    assert "stop" in (control / "prerm").read_text()


def test_shipped_files_match_the_sources(tree):
    for shipped, source in (
        ("etc/smcroute.conf", "etc/smcroute.conf"),
        ("etc/default/smcroute", "etc/default/smcroute"),
        ("etc/init.d/smcroute", "etc/init.d/smcroute"),
        ("lib/systemd/system/smcroute.service", "etc/smcroute.service"),
    ):
        assert (tree / shipped).read_bytes() == (ROOT / source).read_bytes(), shipped
    import gzip

    for page in ("man8/smcrouted.8", "man8/smcroutectl.8", "man5/smcroute.conf.5"):
        shipped = gzip.decompress((tree / "usr/share/man" / (page + ".gz")).read_bytes())
        assert shipped == (ROOT / "man" / page.split("/")[1]).read_bytes(), page


def test_private_environment_is_relocated(tree):
    venv = tree / "usr/lib/smcroute"
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg
    assert "include-system-site-packages = false" in cfg
    assert (venv / "bin/python3").readlink() == Path("/usr/bin/python3")
    for wrapper in ("usr/sbin/smcrouted", "usr/sbin/smcroutectl"):
        assert (tree / wrapper).read_text().startswith("#!/usr/lib/smcroute/bin/python -IB\n")
    assert "from smcroute.daemon_entry import main" in (tree / "usr/sbin/smcrouted").read_text()
    assert "from smcroute.ctl_entry import main" in (tree / "usr/sbin/smcroutectl").read_text()
    site = next(venv.glob("lib/python3.*/site-packages"))
    for dist in ("smcroute-", "lark-", "click-", "python_prctl-", "prometheus_client-"):
        assert list(site.glob(dist + "*.dist-info")), dist
    assert list(site.glob("_prctl*.so")), "python-prctl's C extension"
    assert not list(site.glob("pip")), "no installer in the package"
    # Nothing may name the staging directory the environment was built in.
    res = subprocess.run(
        ["grep", "-rl", "smcroute-deb.", str(venv)], capture_output=True, text=True
    )
    assert res.stdout == "", res.stdout
    # Byte code was compiled for the installed path.
    pycs = list(venv.rglob("*.pyc"))
    assert pycs
    assert b"/usr/lib/smcroute/lib/" in next(p for p in pycs if "smcroute" in p.parts).read_bytes()


def test_completions_are_real(tree):
    bash = (tree / "usr/share/bash-completion/completions/smcroutectl").read_text()
    zsh = (tree / "usr/share/zsh/vendor-completions/_smcroutectl").read_text()
    fish = (tree / "usr/share/fish/vendor_completions.d/smcroutectl.fish").read_text()
    for text in (bash, zsh, fish):
        assert "_SMCROUTECTL_COMPLETE" in text
    assert "complete " in bash and zsh.startswith("#compdef smcroutectl") and "complete " in fish
    res = subprocess.run(["bash", "-n", "-c", bash])
    assert res.returncode == 0


def test_gen_completions_fails_loudly_without_click_completion(tmp_path):
    fake = tmp_path / "smcroutectl"
    fake.write_text("#!/bin/sh\necho 'usage: smcroutectl'\n")
    fake.chmod(0o755)
    out = tmp_path / "out"
    res = subprocess.run(
        [str(PACKAGING / "gen-completions"), str(out), str(fake)], capture_output=True, text=True
    )
    assert res.returncode != 0
    assert "no bash completion" in res.stderr
    assert not out.exists(), "nothing may be written when a shell's completion is missing"


def test_install_run_purge_in_a_fresh_root(deb):
    """debootstrap a Debian root, install, run, purge, check (packaging/test-install-chroot).

    Depends on the daemon for: smcrouted -v/-h/-F, smcroutectl -v/version/show,
    and the -D run in its own network namespace.
    """
    res = subprocess.run(
        [str(PACKAGING / "test-install-chroot"), str(deb)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = res.stdout + res.stderr
    assert res.returncode == 0, report
    assert "FAIL" not in report
    assert report.count("ok - ") >= 45, report
