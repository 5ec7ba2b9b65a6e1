"""The `smcrouted` program: no cyclic garbage collection from its first line.

Python's collector makes a pass every 700 allocations; importing smcrouted's
modules makes tens of thousands and no cyclic garbage, and the passes over
them were ~5 ms of CPU at every start (the imports of `smcroute.daemon_cli`
alone: `socket`, `signal`, `enum`, the identity and privilege code).
`smcroute.daemon_cli.main` keeps it off until the configuration is applied
(`Lifecycle.start` freezes what start-up made, then turns it back on).

Must not: import anything before the collector is off.
"""

from __future__ import annotations

import gc

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import NoReturn


def main() -> NoReturn:
    gc.disable()
    from smcroute.daemon_cli import main as run

    run()
