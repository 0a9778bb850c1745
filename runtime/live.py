"""The live console view of a run: rates, the differential as a lab counts it, the flags.

The numbers come from :class:`~wbc_edge.runtime.differential.LabDifferential` and the flag rules
(:mod:`wbc_edge.runtime.flags`); this module only draws them, live or as log lines.
"""

from __future__ import annotations

import time

from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from wbc_edge.console import console
from wbc_edge.model.roles import BLAST, IMMATURE
from wbc_edge.runtime.differential import LabDifferential
from wbc_edge.runtime.flags import FlagRules, evaluate


def differential_table(diff: LabDifferential, title: str = "Differential") -> Table:
    """WBC classes with count and % of WBC; then what is counted apart."""
    t = Table(title=title, title_justify="left", expand=False)
    t.add_column("class")
    t.add_column("count", justify="right")
    t.add_column("% of WBC", justify="right")
    t.add_column("review", justify="right")
    for c in diff.wbc_classes:
        alarm = diff.roles[c] in (IMMATURE, BLAST) and diff.counts[c]
        t.add_row(
            Text(c, style="bold red" if alarm else ""),
            str(diff.counts[c]),
            f"{diff.percent(c):.1f}",
            str(diff.review[c]),
        )
    wbc_review = sum(diff.review[c] for c in diff.wbc_classes)
    total = "100.0" if diff.wbc else "-"
    t.add_row(Text("WBC", style="bold"), str(diff.wbc), total, str(wbc_review))
    for c in diff.class_names:
        if c in diff.wbc_classes:
            continue
        note = f"{diff.nrbc_per_100_wbc:.1f}/100 WBC" if diff.roles[c] == "nrbc" else "apart"
        t.add_row(Text(c, style="dim"), str(diff.counts[c]), note, str(diff.review[c]))
    return t


def progress_text(diff: LabDifferential) -> str:
    """The count so far, then the differential's banner (counted / awaiting review, and why),
    the same line the report and the summary give."""
    if not diff.target:
        return diff.banner
    done = min(diff.wbc, diff.target)
    bar = "#" * round(20 * done / diff.target)
    state = "  TARGET REACHED" if diff.reached else ""
    return f"WBC counted {diff.wbc} / {diff.target} [{bar:<20}]{state}; {diff.banner}"


def flag_text(diff: LabDifferential, rules: FlagRules) -> str:
    return "; ".join(f.message for f in evaluate(diff, rules))


def status_line(stats, backend) -> str:  # stats: stage_stats.Stats, backend: Backend
    window_s = 5.0
    fps, cps = stats.rates(window_s)
    infer_ms = 1000 * backend.total_inference_s / backend.images if backend.images else 0.0
    # The rate is the recent one (the run's summary gives the whole run's, warm-up included,
    # so on a short run the two differ): say which, so a reader does not take one for the other.
    line = (
        f"{fps:.1f} frames/s  {cps:.1f} cells/s (last {window_s:.0f} s)  "
        f"latency p50 {stats.latency_ms(50):.0f} ms "
        f"p95 {stats.latency_ms(95):.0f} ms  model {infer_ms:.2f} ms/cell  "
        f"frames {stats.items}  cells {stats.cells}  errors {stats.errors}  "
        f"dropped {stats.dropped}"
    )
    if stats.stream_losses:  # a camera that drops out must be visible, not silently resumed
        down = stats.stream_losses - stats.reconnects
        line += f"  stream lost {stats.stream_losses}x, reconnected {stats.reconnects}x"
        line += "  [DOWN: reconnecting]" if down else ""
    return line


def render(pipeline, diff: LabDifferential, rules: FlagRules, title: str) -> Group:
    parts = [Text(title, style="bold"), Text(status_line(pipeline.stats, pipeline.model.backend))]
    parts += [Text(progress_text(diff), style="bold"), differential_table(diff)]
    flags = flag_text(diff, rules)
    if flags:
        parts.append(Panel(Text(flags, style="bold white on red")))
    if diff.ood_warning:
        parts.append(Panel(Text(diff.ood_warning, style="bold black on yellow")))
    return Group(*parts)


def watch_run(
    pipeline,
    diff: LabDifferential,
    rules: FlagRules,
    title: str,
    live: bool,  # the run's --live/--no-live (RunOptions.live): no default of its own
    every_s: float = 5.0,
):
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

        def draw() -> Group:
            return render(pipeline, diff, rules, title)

        with Live(draw(), console=console, refresh_per_second=4) as view:
            wait_loop(0.25, lambda: view.update(draw()))
            view.update(draw())
    else:

        def log() -> None:
            flags = flag_text(diff, rules)
            flag = f"  [bold red]{escape(flags)}[/]" if flags else ""
            line = f"{status_line(pipeline.stats, pipeline.model.backend)}  {progress_text(diff)}"
            if diff.ood_warning:
                flag += f"  [bold yellow]{escape(diff.ood_warning)}[/]"
            console.print(escape(line) + flag, highlight=False)

        wait_loop(min(every_s, 0.5), log)
        log()  # the final rates, however short the run
    return pipeline.finish()
