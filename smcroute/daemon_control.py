"""The control requests smcroutectl sends, turned into engine calls.

Owns parsing `add`/`remove`/`join`/`leave` words, dispatching `show`,
`flush`, `reload`, `kill` and the observation commands (smcroute.observe),
and the response each gets (warnings, failures).  Must not: block (the
control server calls it in the event loop), or raise to the server: every
error becomes a failure response.
"""

from __future__ import annotations

from collections.abc import Sequence

from smcroute import logsetup, observe
from smcroute.daemon_core import EXIT_SOFTWARE
from smcroute.daemon_lifecycle import Lifecycle
from smcroute.daemon_show import Reading
from smcroute.engine.core import EngineError
from smcroute.engine.ops import Log, Op
from smcroute.ipc.codec import Request, Response
from smcroute.logsetup import log
from smcroute.model import MGroup, MRoute
from smcroute.parser import ParseError, parse_command
from smcroute.privsep.client import HelperGone

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import Any


class Control(Lifecycle, Reading):
    """Answers control requests."""

    # -- control requests ----------------------------------------------------

    def handle_request(self, req: Request) -> Response:
        try:
            data = self._dispatch(req)
        except (ParseError, EngineError) as e:
            return Response.failure(str(e))
        except HelperGone:
            self.stopping = True
            self.status = EXIT_SOFTWARE
            return Response.failure("privileged helper is gone")
        if isinstance(data, Response):
            return data
        return Response.success(data)

    def _dispatch(self, req: Request) -> Any:
        cmd, args = req.cmd, req.args
        if cmd in ("add", "remove", "join", "leave"):
            # The warnings -F gives for the same words in a file go back to the
            # person who typed the command (stderr, exit 0 if it still worked)
            # and into the log.
            warnings: list[str] = []
            obj = parse_command(cmd, list(args), warnings)
            if cmd == "add":
                assert isinstance(obj, MRoute)
                ops = self.engine.add_route(obj)
            elif cmd == "remove":
                assert isinstance(obj, MRoute)
                ops = self.engine.remove_route(obj)
            else:
                assert isinstance(obj, MGroup)
                ops = self.engine.join(obj) if cmd == "join" else self.engine.leave(obj)
            said = [op for op in ops if isinstance(op, Log) and op.level == "warning"]
            warnings += [op.text for op in said]
            for w in warnings:
                log.warning(f"smcroutectl {cmd} {' '.join(args)}: {w}")
            return self._result([op for op in ops if op not in said], warnings)
        if cmd == "show":
            what = args[0] if args else "routes"
            if req.format is None:
                return self.show(what, req.detail)
            return Response.success(text=self.show_text(what, req.detail, req.format))
        if cmd == "flush":
            return self._result(self.engine.flush())
        if cmd == "reload":
            errors = self.reload()
            if errors:
                return Response.failure("\n".join(errors))
            return None
        if cmd in ("explain", "doctor", "log"):
            return observe.request(self, cmd, list(args), req.detail)
        if cmd == "kill":
            logsetup.notice("stop requested by smcroutectl")
            self.stopping = True
            return None
        raise EngineError(f"unknown command {cmd!r}")

    def _result(self, ops: Sequence[Op], warnings: Sequence[str] = ()) -> Any:
        failures = self.apply(ops)
        if failures:
            return Response.failure("\n".join(failures), warnings)
        return Response.success(None, warnings) if warnings else None
