#!/usr/bin/env bash
# Run every check and test: lint, format, types, then the whole test suite
# (unit, engine, IPC/CLI and end-to-end tests in network namespaces; needs root).
#
# On a fresh Debian machine it first installs, with apt-get, every Debian
# package the tests need that is missing (the list below; .ci/run calls this
# script), then creates .venv.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: the end-to-end tests need root (network namespaces): run it with sudo" >&2
  exit 1
fi

# gcc, libc6-dev, libcap-dev, python3-dev: python-prctl builds from source;
# python3-venv: .venv; iproute2, procps, kmod, util-linux: test topologies
# (ip, sysctl, unshare, nsenter); smcroute: Debian's original, compared
# side by side; mandoc, groff-base, man-db: man page lint; debootstrap,
# dpkg-dev, fakeroot, systemd, sysvinit-utils: building the .deb and
# installing it into a fresh Debian root.
PACKAGES=(
  gcc libc6-dev libcap-dev python3-dev python3-venv
  iproute2 procps kmod util-linux
  smcroute
  mandoc groff-base man-db
  debootstrap dpkg-dev fakeroot systemd sysvinit-utils
)
missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Also when an existing .venv lacks a test dependency added since (e.g. prometheus_client).
if [ ! -x .venv/bin/pytest ] || ! .venv/bin/python -c 'import prometheus_client' 2>/dev/null; then
  echo "test.sh: creating .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
tools/typecheck.sh
exec .venv/bin/pytest -n "${JOBS:-2}" "$@"
