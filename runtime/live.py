"""The live console view of a run: the running differential (:mod:`wbc_edge.runtime.post`)
and the pipeline's rates, redrawn while it runs, or log lines when the output is not a
terminal."""

from __future__ import annotations

import time

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from wbc_edge.console import console
from wbc_edge.runtime.post import Differential


def status_line(stats, backend) -> str:  # stats: pipeline.Stats, backend: Backend
    fps, cps = stats.rates()
    infer_ms = 1000 * backend.total_inference_s / backend.images if backend.images else 0.0
    line = (
        f"{fps:.1f} frames/s  {cps:.1f} cells/s  latency p50 {stats.latency_ms(50):.0f} ms "
        f"p95 {stats.latency_ms(95):.0f} ms  model {infer_ms:.2f} ms/cell  "
        f"frames {stats.items}  cells {stats.cells}  errors {stats.errors}  "
        f"dropped {stats.dropped}"
    )
    if stats.stream_losses:  # a camera that drops out must be visible, not silently resumed
        down = stats.stream_losses - stats.reconnects
        line += f"  stream lost {stats.stream_losses}x, reconnected {stats.reconnects}x"
        line += "  [DOWN: reconnecting]" if down else ""
    return line


def render(pipeline, diff: Differential, title: str) -> Group:
    parts = [Text(title, style="bold"), Text(status_line(pipeline.stats, pipeline.backend))]
    parts.append(diff.table())
    if diff.flagged:
        parts.append(Panel(Text(diff.flag_text(), style="bold white on red")))
    if diff.ood_warning:
        parts.append(Panel(Text(diff.ood_warning, style="bold black on yellow")))
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
            if diff.ood_warning:
                flag += f"  [bold yellow]{diff.ood_warning}[/]"
            console.print(status_line(pipeline.stats, pipeline.backend) + flag, highlight=False)

        wait_loop(min(every_s, 0.5), log)
        log()  # the final rates, however short the run
    return pipeline.finish()
