"""The repository stands alone: code, tests and docs cite only files inside it.

The interface contract and the kernel notes live in doc/SPEC.md and
doc/KERNEL.md; a reference to SPEC.md or KERNEL.md anywhere else must say
doc/, and nothing may point outside the checkout (a fresh clone has nothing
beside it).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "dist", "build", "__pycache__", ".mypy_cache", ".ruff_cache"}
SUFFIXES = {".py", ".md", ".sh", ".8", ".5", ".lark", ".toml", ".service", ".conf", ".in", ""}
OUTSIDE = re.compile(r"/work/|\.\./shared|shared/(SPEC|KERNEL|DESIGN)|shared/tools")
BARE = re.compile(r"(?<![\w/])(SPEC|KERNEL|DESIGN)\.md")


def files() -> list[Path]:
    out = []
    for p in ROOT.rglob("*"):
        rel = p.relative_to(ROOT)
        hidden = any(part.startswith(".") and part != ".ci" for part in rel.parts)
        if hidden or any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if p.is_file() and p.suffix in SUFFIXES and p != Path(__file__).resolve():
            out.append(p)
    return out


def test_the_docs_cited_are_in_the_repository() -> None:
    assert (ROOT / "doc" / "SPEC.md").is_file()
    assert (ROOT / "doc" / "KERNEL.md").is_file()


def test_nothing_refers_outside_the_repository() -> None:
    bad = []
    for p in files():
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        rel = p.relative_to(ROOT)
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                bad.append(f"{rel}:{n}: {line.strip()}")
            if rel.parts[0] != "doc" and rel != Path("README.md") and BARE.search(line):
                bad.append(f"{rel}:{n}: cite doc/...: {line.strip()}")
    assert not bad, "\n".join(bad)
