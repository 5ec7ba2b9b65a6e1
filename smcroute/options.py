"""The daemon's options: what smcrouted's command line sets (smcroute.daemon_cli).

A module of its own that imports nothing heavy: the command line is parsed,
and the privileged helper and the janitor are started, before the daemon's
own modules (engine, parser, show, ...) are imported, so that those two
processes start while this one imports.
"""

from __future__ import annotations

from smcroute.records import dataclass

DEFAULT_INTERVAL = 10  # seconds between two samples (about 0.4 % of a core with 10,000 routes)


@dataclass
class Options:
    ident: str = "smcroute"
    conf: str = "/etc/smcroute.conf"
    pidfile: str = "/var/run/smcroute.pid"
    sockpath: str = "/var/run/smcroute.sock"
    table: int = 0
    loglevel: str = "notice"
    foreground: bool = False
    use_syslog: bool = False
    cache_timeout: int = 60
    startup_delay: int = 0
    hook: str | None = None
    mrdisc_interval: int = 20
    user: str | None = None
    group: str | None = None
    exit_after: float | None = None
    zero_loss: bool = False
    max_learned: int = 20000
    sample_interval: int = DEFAULT_INTERVAL
    metrics: str | None = None  # [ADDR:]PORT of the metrics endpoint
    metrics_routes: int = 1000
