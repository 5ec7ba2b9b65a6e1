#!/usr/bin/env bash
# Run every check and test: lint, format, types, then the whole test suite
# (unit, engine, IPC/CLI and end-to-end tests in network namespaces; needs root).
# Creates .venv on first use.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/pytest ] || ! .venv/bin/python -c 'import prometheus_client' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install -q -e '.[test]'
fi
if [ "$(id -u)" != 0 ]; then
  echo "test.sh: the end-to-end tests need root (network namespaces): run it with sudo" >&2
  exit 1
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
tools/typecheck.sh
exec .venv/bin/pytest -n "${JOBS:-2}" "$@"
