"""Write grammar/tables.json: the LALR tables lark builds from grammar/smcroute.lark.

The parser loads these tables instead of analysing the grammar at every
start (~40 ms saved).  Run this after every change to the grammar, or to
lark's version in the venv (the tests fail until then):

    .venv/bin/python tools/lark_tables.py
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import lark
from lark.grammar import Rule
from lark.lexer import TerminalDef
from smcroute.parser.syntax import build_lark, grammar_text


def grammar_sha256() -> str:
    return hashlib.sha256(grammar_text().encode("utf-8")).hexdigest()


def render() -> str:
    data, memo = build_lark().memo_serialize([TerminalDef, Rule])
    doc = {
        "about": "LALR tables of smcroute.lark as lark builds them; "
        "written by tools/lark_tables.py, never by hand",
        "grammar_sha256": grammar_sha256(),
        "lark_version": lark.__version__,
        "data": data,
        "memo": memo,
    }
    return json.dumps(doc, separators=(",", ":")) + "\n"


def main() -> int:
    path = Path(__file__).resolve().parent.parent / "grammar" / "tables.json"
    path.write_text(render(), encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
