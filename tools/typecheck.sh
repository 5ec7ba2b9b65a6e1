#!/usr/bin/env bash
# mypy over the package as it is installed: privsep/ and parser/ are mapped
# under smcroute.* by setuptools, which mypy cannot follow in a source tree,
# so stage a tree of symlinks with the installed layout and check that.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
mypy=${MYPY:-$top/.venv/bin/mypy}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/smcroute"
for f in "$top"/smcroute/*; do
  case $(basename "$f") in __pycache__) continue ;; esac
  ln -s "$f" "$stage/smcroute/$(basename "$f")"
done
for d in privsep parser grammar; do ln -s "$top/$d" "$stage/smcroute/$d"; done
cd "$stage"
"$mypy" --config-file "$top/pyproject.toml" --cache-dir "$top/.mypy_cache" -p smcroute
