#!/bin/sh
# Newcomer lab: the first command to run on a fresh machine (as root).
#
#   ./lab.sh                                  # our smcrouted from .venv
#   ./lab.sh --daemon /usr/sbin/smcrouted     # Debian's original, to compare
#
# Creates .venv if it is missing (python3 -m venv; pip install -e '.[test]';
# python-prctl is built from source and needs gcc, libcap-dev and the Python
# headers, installed with apt-get when missing), then runs tools/lab.py:
# sender -> router -> two receivers in network namespaces, a small
# smcroute.conf, real multicast, what each receiver got, smcroutectl show,
# and a full clean-up (also on Ctrl-C). See tools/lab.py --help.
set -eu
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
    echo "lab.sh: needs root (network namespaces, multicast routing): sudo $0 $*" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    need=""
    command -v gcc >/dev/null 2>&1 || need="$need gcc"
    [ -e /usr/include/sys/capability.h ] || need="$need libcap-dev"
    python3 -c 'import ensurepip' >/dev/null 2>&1 || need="$need python3-venv"
    inc=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    [ -e "$inc/Python.h" ] || need="$need python3-dev"
    if [ -n "$need" ]; then
        echo "lab.sh: installing build dependencies:$need"
        apt-get update -q
        # shellcheck disable=SC2086  # word splitting of the package list is wanted
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need
    fi
    echo "lab.sh: creating .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
fi

command -v ip >/dev/null 2>&1 || {
    echo "lab.sh: installing iproute2"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2
}

exec .venv/bin/python tools/lab.py "$@"
