"""`smcroutectl`, the control tool for `smcrouted` (console script entry: `main`).

Owns the command line (options, command abbreviations, arity checks, help,
version), batch mode, talking to the daemon through `smcroute.ipc.client`, and
printing replies: a `show` comes back rendered by the daemon and is copied to
stdout as bytes (`smcroute.output` formats a bare document only).

Start-up time is the cost users feel: import only what the command in hand
needs (click, the small IPC client); everything else (`difflib` for "did you
mean", `smcroute.output`) is imported where it is used.

Must not: parse addresses (the daemon parses the raw words with
`smcroute.parser`, so both sides agree on one grammar), need privileges of
its own, or ever show a Python traceback: every failure becomes
`smcroutectl: message` on stderr and exit status 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import IO, Any, NamedTuple

import click

from smcroute import __version__, ctl_entry
from smcroute.ipc.client import ControlClient
from smcroute.ipc.codec import SHOW_KINDS, IpcError, default_socket_path

PROG = "smcroutectl"
HINT = f"Try '{PROG} help'."


class CtlError(Exception):
    """A failure to report as `smcroutectl: message` (may span lines)."""


class Cmd(NamedTuple):
    name: str
    min_args: int
    max_args: int | None
    args: str
    summary: str
    example: str = ""
    brief: str = ""  # one line for the command list; default: summary

    def short(self) -> str:
        text = self.brief or self.summary.split(".")[0]
        return text[0].lower() + text[1:]


COMMANDS: dict[str, Cmd] = {
    c.name: c
    for c in (
        Cmd(
            "add",
            3,
            None,
            "IIF [SOURCE[/LEN]] GROUP[/LEN] OIF [OIF ...]",
            "Add a route, or add outbound interfaces to an existing one.",
            "add eth0 192.168.1.10 239.1.1.1 eth1 eth2",
        ),
        Cmd(
            "remove",
            2,
            None,
            "IIF [SOURCE[/LEN]] GROUP[/LEN] [OIF ...]",
            "Remove a route; with OIFs, remove only those outbound interfaces\n"
            "(removing all of them leaves a stop filter).  Also spelt 'rem' and 'del'.",
            "remove eth0 192.168.1.10 239.1.1.1",
            "remove a route, or only the outbound interfaces given",
        ),
        Cmd(
            "join",
            2,
            3,
            "IIF [SOURCE[/LEN]] GROUP[/LEN]",
            "Join a multicast group on an interface (source-specific with SOURCE).",
            "join eth0 239.1.1.1",
        ),
        Cmd(
            "leave",
            2,
            3,
            "IIF [SOURCE[/LEN]] GROUP[/LEN]",
            "Leave a group joined with 'join' or 'mgroup'.",
            "leave eth0 239.1.1.1",
        ),
        Cmd(
            "show",
            0,
            1,
            "[routes|groups|interfaces|pending]",
            "Show routes (the default), joined groups, interfaces with their\n"
            "VIF/MIF numbers, or directives waiting for a missing interface.",
            "show groups",
            "show routes (default), joined groups, interfaces or pending directives",
        ),
        Cmd("flush", 0, 0, "", "Drop the (*,G) routes learned from templates, now."),
        Cmd(
            "explain",
            2,
            3,
            "[IIF] SOURCE GROUP",
            "Follow one flow through the router: each check on its path with a\n"
            "verdict and, where it fails, the fix.  Without IIF: every interface on\n"
            "which the flow has been seen or is configured.",
            "explain eth0 192.168.1.10 239.1.1.1",
            "why is (or isn't) a flow forwarded",
        ),
        Cmd(
            "doctor",
            0,
            0,
            "",
            "Check the whole router and list what is wrong or risky, most severe\n"
            "first.  Exit status 0 when nothing is wrong, 1 otherwise.",
            "",
            "check the router, list what is wrong or risky",
        ),
        Cmd(
            "log",
            1,
            1,
            "LEVEL",
            "Change the daemon's log level (none, err, notice, info, debug) in both\n"
            "of its processes, until it restarts.",
            "log debug",
            "change the daemon's log level until it restarts",
        ),
        Cmd(
            "reload",
            0,
            0,
            "",
            "Re-read the configuration file, like SIGHUP.  Also spelt 'restart'.",
            brief="re-read the configuration file, like SIGHUP (also: restart)",
        ),
        Cmd("kill", 0, 0, "", "Stop the daemon, like SIGTERM."),
        Cmd("help", 0, 1, "[COMMAND]", "Show this text, or help on one command.", "help add"),
        Cmd("version", 0, 0, "", "Show the program version."),
    )
}
ALIASES = {"rem": "remove", "del": "remove", "delete": "remove", "restart": "reload"}
LOCAL = frozenset({"help", "version"})
NEWER = frozenset({"explain", "doctor", "log"})  # not in SMCRoute 2.6


def usage_text() -> str:
    lines = [
        f"Usage: {PROG} [-bdjptv] [-i NAME] [-u FILE] [COMMAND [ARGS]]",
        "",
        "Options:",
        "  -b        batch mode: run the commands read from stdin, one per line",
        "  -d        detailed show: add counters (and rates with -j)",
        "  -j        show as JSON",
        "  -p        plain headings, no terminal control characters",
        "  -t        no headings, data rows only",
        "  -i NAME   talk to the daemon started with -i NAME (default: smcroute)",
        "  -u FILE   talk to the daemon listening on FILE (default: /var/run/NAME.sock)",
        "  -v        show the program version",
        "",
        "Commands (any unambiguous prefix works, e.g. 's g' for 'show groups'):",
    ]
    for c in COMMANDS.values():
        brief = c.short()
        if c.args:
            lines += [f"  {c.name:<9}{c.args}", f"           {brief}"]
        else:
            lines.append(f"  {c.name:<9}{brief}")
    lines += [
        "",
        "Without a command, 'show' (routes) is run.  IIF and OIF are interface names;",
        "a name ending in '+' is a wildcard ('eth+' matches eth0, eth1, ...).",
        "SOURCE and GROUP are IPv4 or IPv6 addresses, optionally with a prefix length",
        "(a range).  No SOURCE means any source: a (*,G) route.  Changes made with",
        f"{PROG} last until the daemon reloads its configuration file.",
    ]
    return "\n".join(lines) + "\n"


def command_help(name: str) -> str:
    c = COMMANDS[name]
    lines = [f"Usage: {PROG} {c.name} {c.args}".rstrip(), "", *c.summary.splitlines()]
    if c.example:
        lines += ["", "Example:", f"  {PROG} {c.example}"]
    return "\n".join(lines) + "\n"


def version_text() -> str:
    return (
        f"SMCRoute v{__version__}\n\n"
        "Control tool for smcrouted, the static multicast routing daemon.\n"
    )


def resolve_command(word: str) -> str:
    """The full command name for `word` (a name, an alias or a prefix)."""
    w = word.lower()
    names = [*COMMANDS, *ALIASES]
    if w in COMMANDS:
        return w
    if w in ALIASES:
        return ALIASES[w]
    matches = sorted({ALIASES.get(n, n) for n in names if n.startswith(w)}) if w else []
    classic = [m for m in matches if m not in NEWER]
    if len(classic) == 1:  # the original's abbreviations keep their meaning ('l' is leave)
        return classic[0]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise CtlError(
            f"ambiguous command '{word}': could be {', '.join(matches[:-1])} or {matches[-1]}. "
            + HINT
        )
    close = _close_match(w, names)
    if close:
        raise CtlError(f"unknown command '{word}'; did you mean '{close[0]}'? {HINT}")
    raise CtlError(f"unknown command '{word}'. {HINT}")


def _close_match(word: str, choices: Sequence[str]) -> list[str]:
    import difflib  # only on the error path: ~1.5 ms of start-up otherwise

    return difflib.get_close_matches(word, choices, n=1, cutoff=0.6)


def resolve_show(word: str) -> str:
    w = word.lower()
    matches = [k for k in SHOW_KINDS if k.startswith(w)] if w else []
    if len(matches) == 1:
        return matches[0]
    choices = ", ".join(SHOW_KINDS[:-1]) + " or " + SHOW_KINDS[-1]
    close = _close_match(w, SHOW_KINDS)
    hint = f"; did you mean '{close[0]}'?" if close else "."
    raise CtlError(f"unknown table '{word}' for show{hint} Expected {choices}.")


def check_arity(name: str, args: Sequence[str]) -> None:
    c = COMMANDS[name]
    n = len(args)
    if n >= c.min_args and (c.max_args is None or n <= c.max_args):
        return
    what = "not enough" if n < c.min_args else "too many"
    usage = f"{name} {c.args}".rstrip()
    raise CtlError(f"{what} arguments for {name}; usage: {usage}. Try '{PROG} help {name}'.")


class Options(NamedTuple):
    detail: bool = False
    json: bool = False
    plain: bool = False
    headings: bool = True

    @property
    def format(self) -> str:
        """How the daemon renders a show (see `smcroute.ipc.codec.FORMATS`)."""
        if self.json:
            return "json"
        if not self.headings:
            return "rows"
        return "text" if self.plain else "ansi"


class Session:
    """Runs commands against one daemon, reusing one connection."""

    def __init__(self, path: str, opts: Options, out: IO[str], err: IO[str]) -> None:
        self.path = path
        self.opts = opts
        self.out = out
        self.err = err
        self.client = ControlClient(path)
        self.ever_connected = False
        self.status = 0  # 1 after a `doctor` that found something wrong

    def close(self) -> None:
        self.client.close()

    def run(self, words: Sequence[str], prefix: str = "") -> None:
        """Run one command line (without options); raise CtlError on failure."""
        if not words:
            words = ["show"]
        name = resolve_command(words[0])
        args = list(words[1:])
        check_arity(name, args)
        if name == "help":
            if args:
                self.out.write(command_help(resolve_command(args[0])))
            else:
                self.out.write(usage_text())
            return
        if name == "version":
            self.out.write(version_text())
            return
        if name == "show":
            args = [resolve_show(args[0]) if args else "routes"]
        if not self.client.connected:
            self.client.connect()  # IpcError: handled by the caller
            self.ever_connected = True
        fmt = self.opts.format if name == "show" else None
        resp = self.client.request(name, args, self.opts.detail, fmt)
        for w in resp.warnings:
            self.err.write(f"{PROG}: {prefix}warning: {w}\n")
        if not resp.ok:
            raise CtlError(resp.error or "the daemon reported an unspecified error")
        if resp.text is not None:
            self._copy(resp.text)
        elif name == "show":
            self._show(args[0], resp.data)
        elif name in ("explain", "doctor"):
            self._report(name, resp.data)
        elif isinstance(resp.data, str) and resp.data:
            self.out.write(resp.data if resp.data.endswith("\n") else resp.data + "\n")

    def _copy(self, text: bytes) -> None:
        """Output the daemon rendered: bytes straight to stdout."""
        buf = getattr(self.out, "buffer", None)
        if buf is None:
            self.out.write(text.decode("utf-8", "replace"))
            return
        self.out.flush()
        buf.write(text)

    def _report(self, name: str, data: Any) -> None:
        from smcroute import report  # only these commands pay for it

        try:
            text = report.render(name, data, as_json=self.opts.json)
            if name == "doctor" and not report.healthy(data):
                self.status = 1
        except report.ReportError as e:
            raise CtlError(f"unexpected reply from the daemon: {e}") from e
        self.out.write(text)

    def _show(self, kind: str, data: Any) -> None:
        """A daemon that sent the document: format it here."""
        from smcroute.output import OutputError, render

        try:
            text = render(kind, data, self.opts.format, detail=self.opts.detail)
        except OutputError as e:
            raise CtlError(f"unexpected reply from the daemon: {e}") from e
        self.out.write(text)


def _report(err: IO[str], message: str, prefix: str = "") -> None:
    for line in message.splitlines() or [""]:
        err.write(f"{PROG}: {prefix}{line}\n")


def run_batch(session: Session, lines: IO[str], err: IO[str]) -> int:
    status = 0
    for n, raw in enumerate(lines, 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        prefix = f"line {n}: "
        try:
            session.run(words, prefix)
        except (CtlError, IpcError) as e:
            if isinstance(e, IpcError) and not session.ever_connected:
                # No daemon at all: say it once rather than for every line.
                _report(err, str(e))
                return 1
            _report(err, str(e), prefix)
            status = 1
    return status


class _Command(click.Command):
    def make_parser(self, ctx: click.Context) -> Any:
        """click tries every option word as a long option first, and each miss
        raises an exception whose message goes through gettext (importing
        `locale`: ~5 ms).  Standalone short options ("-u", "-d") are matched
        at once; grouped ones ("-pd") still take click's own path."""
        parser = super().make_parser(ctx)
        longs, shorts = getattr(parser, "_long_opt", None), getattr(parser, "_short_opt", None)
        if isinstance(longs, dict) and isinstance(shorts, dict):
            for name, option in shorts.items():
                longs.setdefault(name, option)
        return parser


@click.command(
    cls=_Command,
    context_settings={"help_option_names": [], "allow_interspersed_args": True},
    add_help_option=False,
)
@click.option("-b", "batch", is_flag=True)
@click.option("-d", "detail", is_flag=True)
@click.option("-j", "json_out", is_flag=True)
@click.option("-p", "plain", is_flag=True)
@click.option("-t", "no_headings", is_flag=True)
@click.option("-v", "version", is_flag=True)
@click.option("-h", "show_help", is_flag=True)
@click.option("-i", "-I", "ident", default="smcroute", metavar="NAME")
@click.option("-u", "sock_path", default=None, metavar="FILE")
@click.argument("words", nargs=-1)
def cli(
    batch: bool,
    detail: bool,
    json_out: bool,
    plain: bool,
    no_headings: bool,
    version: bool,
    show_help: bool,
    ident: str,
    sock_path: str | None,
    words: tuple[str, ...],
) -> int:
    out, err = sys.stdout, sys.stderr
    if show_help:
        out.write(usage_text())
        return 0
    if version:
        out.write(version_text())
        return 0
    if not ident or "/" in ident:
        raise CtlError(f"invalid identity '{ident}'")
    path = sock_path or default_socket_path(ident)
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    opts = Options(
        detail=detail,
        json=json_out,
        plain=plain or not tty,
        headings=not no_headings,
    )
    session = Session(path, opts, out, err)
    ahead = ctl_entry.take(path)  # a show asked for before click was imported
    if ahead is not None:
        session.client, session.ever_connected = ahead, True
    try:
        if batch:
            if words:
                raise CtlError(
                    f"-b reads commands from stdin and takes none on the command line. {HINT}"
                )
            return run_batch(session, sys.stdin, err) or session.status
        session.run(words)
        return session.status
    finally:
        session.close()


_LONG = {"--help": "-h", "--version": "-v"}


def main(argv: Sequence[str] | None = None) -> int:
    """Console script entry point; returns (and exits with) the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    # The long spellings, mapped here: with no long option at all, click's
    # parser does not import difflib (~3 ms) to suggest one for each short one.
    end = args.index("--") if "--" in args else len(args)
    args[:end] = [_LONG.get(a, a) for a in args[:end]]
    try:
        status = cli.main(args=args, prog_name=PROG, standalone_mode=False)
        code = status if isinstance(status, int) else 0
    except (CtlError, IpcError) as e:
        _report(sys.stderr, str(e))
        code = 1
    except click.exceptions.NoSuchOption as e:
        _report(sys.stderr, f"unknown option {e.option_name}. {HINT}")
        code = 1
    except click.ClickException as e:
        _report(sys.stderr, f"{e.format_message()} {HINT}")
        code = 1
    except click.exceptions.Abort:
        code = 130
    except SystemExit as e:  # click exits by itself only on EPIPE
        if e.code not in (0, None):
            _silence_stdout()
        code = e.code if isinstance(e.code, int) else 1
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): say nothing more.
        _silence_stdout()
        code = 1
    except Exception as e:  # never a traceback
        _report(sys.stderr, f"internal error: {type(e).__name__}: {e}")
        code = 1
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    except (OSError, ValueError):
        pass
    if argv is None:
        sys.exit(code)
    return code


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    main()
