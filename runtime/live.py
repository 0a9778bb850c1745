"""The running differential count and the live console view of a run.

A differential is the share of each white-cell type among the cells counted. Cells the model
is unsure of (top probability under the threshold) go to *review* instead of the count, so a
doubtful cell cannot shift the percentages. Immature classes (blasts, promyelocytes, ...) are
what a lab must not miss: their share above a threshold raises a visible flag.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from wbc_edge.console import console
from wbc_edge.runtime.card import DEFAULT_IMMATURE
from wbc_edge.runtime.sinks import CellRecord


def immature_classes(
    class_names: list[str], patterns: Iterable[str] = DEFAULT_IMMATURE
) -> list[str]:
    """Classes matching any pattern (case-insensitive substring: "blast" finds Myeloblast)."""
    pats = [p.lower() for p in patterns if p]
    return [c for c in class_names if any(p in c.lower() for p in pats)]


class Differential:
    """Counts per class of confident cells, plus the cells sent to review."""

    def __init__(
        self,
        class_names: list[str],
        immature: Iterable[str] = DEFAULT_IMMATURE,
        flag_fraction: float = 0.05,
    ) -> None:
        self.class_names = list(class_names)
        self.immature = immature_classes(self.class_names, immature)
        self.flag_fraction = flag_fraction
        self.counts = dict.fromkeys(self.class_names, 0)
        self.review = dict.fromkeys(self.class_names, 0)

    def add(self, records: Iterable[CellRecord]) -> None:
        for r in records:
            (self.review if r.uncertain else self.counts)[r.label] += 1

    @property
    def counted(self) -> int:
        return sum(self.counts.values())

    @property
    def in_review(self) -> int:
        return sum(self.review.values())

    def percent(self, name: str) -> float:
        total = self.counted
        return 100.0 * self.counts[name] / total if total else 0.0

    @property
    def immature_fraction(self) -> float:
        total = self.counted
        return sum(self.counts[c] for c in self.immature) / total if total else 0.0

    @property
    def flagged(self) -> bool:
        return self.counted > 0 and self.immature_fraction > self.flag_fraction

    def flag_text(self) -> str:
        share = 100 * self.immature_fraction
        names = ", ".join(c for c in self.immature if self.counts[c])
        return (
            f"IMMATURE CELLS {share:.1f}% > {100 * self.flag_fraction:g}% ({names}): "
            "review the slide"
        )

    def to_dict(self) -> dict:
        return {
            "counted": self.counted,
            "review": self.in_review,
            "counts": dict(self.counts),
            "review_by_class": dict(self.review),
            "percent": {c: round(self.percent(c), 2) for c in self.class_names},
            "immature_classes": self.immature,
            "immature_fraction": round(self.immature_fraction, 4),
            "flag_fraction": self.flag_fraction,
            "flagged": self.flagged,
        }

    def table(self, title: str = "Differential") -> Table:
        t = Table(title=title, title_justify="left", expand=False)
        t.add_column("class")
        t.add_column("count", justify="right")
        t.add_column("%", justify="right")
        t.add_column("review", justify="right")
        for c in self.class_names:
            style = "bold red" if c in self.immature and self.counts[c] else ""
            t.add_row(
                Text(c, style=style),
                str(self.counts[c]),
                f"{self.percent(c):.1f}",
                str(self.review[c]),
            )
        total_pct = "100.0" if self.counted else "-"
        t.add_row(Text("total", style="bold"), str(self.counted), total_pct, str(self.in_review))
        return t


def status_line(stats, backend) -> str:  # stats: pipeline.Stats, backend: Backend
    fps, cps = stats.rates()
    infer_ms = 1000 * backend.total_inference_s / backend.images if backend.images else 0.0
    return (
        f"{fps:.1f} frames/s  {cps:.1f} cells/s  latency p50 {stats.latency_ms(50):.0f} ms "
        f"p95 {stats.latency_ms(95):.0f} ms  model {infer_ms:.2f} ms/cell  "
        f"frames {stats.items}  cells {stats.cells}  errors {stats.errors}  "
        f"dropped {stats.dropped}"
    )


def render(pipeline, diff: Differential, title: str) -> Group:
    parts = [Text(title, style="bold"), Text(status_line(pipeline.stats, pipeline.backend))]
    parts.append(diff.table())
    if diff.flagged:
        parts.append(Panel(Text(diff.flag_text(), style="bold white on red")))
    return Group(*parts)


def watch_run(pipeline, diff: Differential, title: str, live: bool = True, every_s: float = 5.0):
    """Drive a started pipeline to its end while showing progress; Ctrl-C drains it.

    ``live`` redraws a rich view four times a second; otherwise one log line every ``every_s``
    (for services and log files). A second Ctrl-C abandons what is still queued.
    """
    interrupted = False

    def wait_loop(tick: float, on_tick) -> None:
        nonlocal interrupted
        last = time.monotonic()
        while True:
            try:
                if pipeline.wait(tick):
                    return
                if live or time.monotonic() - last >= every_s:
                    on_tick()
                    last = time.monotonic()
            except KeyboardInterrupt:
                if interrupted:
                    console.print("abandoning queued frames")
                    pipeline.abort()
                else:
                    interrupted = True
                    console.print("stopping: finishing queued frames (Ctrl-C again to abandon)")
                    pipeline.stop()

    if live:
        with Live(render(pipeline, diff, title), console=console, refresh_per_second=4) as view:
            wait_loop(0.25, lambda: view.update(render(pipeline, diff, title)))
            view.update(render(pipeline, diff, title))
    else:

        def log() -> None:
            flag = f"  [bold red]{diff.flag_text()}[/]" if diff.flagged else ""
            console.print(status_line(pipeline.stats, pipeline.backend) + flag, highlight=False)

        wait_loop(min(every_s, 0.5), log)
    return pipeline.finish()
