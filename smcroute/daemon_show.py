"""Counters glue: the kernel's counters for `show`, learned-route expiry
and the steady sample the metrics endpoint publishes.

Owns reading the MFC counters (one netlink dump), `show` as a document or
as rendered text (the documents are smcroute.show's, the rates
smcroute.stats's) and `take_sample`.  Must not: change routing state other
than expiring idle learned routes through `apply()`.
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address, IPv6Address

from smcroute.daemon_core import Core, bulk, give_back_pools
from smcroute.engine.core import EngineError
from smcroute.logsetup import log
from smcroute.netlink import NetlinkError, default_table
from smcroute.output import render
from smcroute.show import document as show_document
from smcroute.show_kept import KeptRoutes
from smcroute.stats import (
    CountersView,
    add_interface_stats,
    add_route_stats,
    link_names,
)

TYPE_CHECKING = False  # spelt out: `typing` is not imported at run time (smcroute.records)
if TYPE_CHECKING:
    from typing import Any


class Reading(Core):
    """`show`, counters and samples."""

    # `show routes` kept rendered, per form (JSON?, counters?).  Kept only while
    # steady samples are taken, and dropped by each (at most --sample-interval,
    # and at once after a reload, which asks for one): its texts (a form's is
    # about its show's size) and the engine objects of its last show.
    shown: dict[tuple[bool, bool], KeptRoutes] | None = None

    # -- show ------------------------------------------------------------------

    def counters(self) -> dict[tuple[int, object, object], tuple[int, int]]:
        out: dict[tuple[int, object, object], tuple[int, int]] = {}
        for fam in self.families:
            try:
                stats = self.nl.mfc_stats(fam, default_table(fam, self.opts.table))
            except NetlinkError as e:
                log.warning(f"cannot read kernel counters: {e}")
                continue
            for key, st in stats.items():
                out[key] = (st.packets, st.bytes)
        # Kernel (*,G) entries are dumped with source 0.0.0.0 / ::
        for key in list(out):
            fam, src, grp = key
            if isinstance(src, IPv4Address | IPv6Address) and int(src) == 0:
                out[(fam, None, grp)] = out[key]
        return out

    def show(self, what: str, detail: bool = True) -> Any:
        """The `show` document; counters (one netlink dump) only for `routes -d`."""
        with bulk():
            if not detail or what not in ("routes", "interfaces"):
                return show_document(self.engine, what, detail, {})
            try:
                fresh = self.sampler.fresh(time.monotonic(), link_names(self.engine))
            except (NetlinkError, OSError) as e:
                raise EngineError(f"cannot read kernel counters: {e}") from e
            doc = show_document(self.engine, what, detail, CountersView(fresh))
            if what == "routes":
                add_route_stats(doc, self.engine, fresh, self.sampler.last)
            else:
                add_interface_stats(doc, fresh.vifs)
            return doc

    def show_text(self, what: str, detail: bool, fmt: str) -> bytes:
        """`show` rendered as smcroutectl prints it (the client only copies bytes).

        `show routes` (all but `-j -d`) is kept rendered per form (`shown`,
        smcroute.show_kept): a show renders only the rows that changed since
        that form's last show (none when asked again: `watch smcroutectl
        show`), and with `-d` puts in the counters of a dump made now, until
        the next steady sample (see `shown`)."""
        with bulk():
            if what == "routes" and not (detail and fmt == "json"):
                sample = None
                if detail:  # one dump into flat arrays: no address objects per entry
                    try:
                        sample = self.sampler.fresh(time.monotonic())
                    except (NetlinkError, OSError) as e:
                        raise EngineError(f"cannot read kernel counters: {e}") from e
                shown = self.shown if self.shown is not None else {}
                form = (fmt == "json", detail)
                kept = shown.get(form) or KeptRoutes(*form)
                try:
                    text = kept.text(self.engine, fmt, sample)
                except BaseException:
                    shown.pop(form, None)  # half brought up to date: not kept
                    raise
                if self.sampler.interval:
                    shown[form] = kept
                    self.shown = shown
                return text
            doc = self.show(what, detail)  # -j -d routes: with rates (smcroute.stats)
            return render(what, doc, fmt, detail=detail).encode("utf-8")

    # -- the loop ---------------------------------------------------------------

    def expire_learned(self) -> None:
        if not self.engine.learned:
            return
        counters = {k: v[0] for k, v in self.counters().items()}
        ops = self.engine.expire(counters)  # type: ignore[arg-type]
        if ops:
            log.info(f"expired {len(ops)} idle learned routes")
        self.apply(ops)

    def take_sample(self, now: float) -> None:
        """The steady counter sample (rates); the metrics endpoint publishes it."""
        self.shown = None  # its texts and the objects of its state: not kept for long
        was_failing = self.sampler.failed
        before = len(self.sampler.last or ())
        with bulk():
            sample = self.sampler.sample(now, link_names(self.engine))
            if sample is None:
                if not was_failing:
                    log.warning("cannot sample the kernel's counters (rates stay as they were)")
                return
            if self.metrics is not None:
                self.metrics.publish(self, sample)
        if before > 2 * len(sample) + 64:  # most entries went (a reload asked for this sample)
            give_back_pools()
