"""smcroute.conf and smcroutectl argument parsing (lark) into smcroute.model.

Owns turning text into model objects that remember their file and line:
`parse_text` / `parse_file` for configurations (start-up, reload and `-F`
all call these) and `parse_command` for smcroutectl's add/remove/join/leave
arguments.  Structure comes from the lark grammar grammar/smcroute.lark
(`syntax.py`), values are checked in `semantics.py`, files and includes and
cross-line rules in `files.py`.

Must not have side effects: no kernel access, no writes, no logging; and must
not raise on bad input -- configuration problems come back as `Problem`s
(errors and warnings, ordered by file then line), command problems as
`ParseError`.
"""

from __future__ import annotations

from .command import ParseError, parse_command
from .files import MAX_DEPTH, MAX_LINE, parse_file, parse_text

__all__ = ["MAX_DEPTH", "MAX_LINE", "ParseError", "parse_command", "parse_file", "parse_text"]
