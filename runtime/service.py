"""The run service: one classifier run from a source into a results folder.

``wbc-edge run`` is a thin layer over :func:`run_service`: it turns flags into a
:class:`RunSettings` and calls it. The service opens the model and the results folder, resumes
the differential from the records already there, streams the source through the
:class:`~wbc_edge.runtime.pipeline.Pipeline`, shows the live view, and writes ``summary.json``
and (when asked) the HTML report. Every default lives in :mod:`wbc_edge.runtime.options`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wbc_edge.errors import UserError
from wbc_edge.runtime.options import DEFAULT_IMMATURE, DEFAULT_OUT, IMMATURE_FLAG, PipelineConfig


@dataclass
class RunSettings:
    """Everything one run needs besides the model file; every field has its one default."""

    source: str
    model: Path | None = None  # None: the student packaged with wbc-edge
    out: Path = Path(DEFAULT_OUT)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    watch: bool = False
    immature: list[str] = field(default_factory=lambda: list(DEFAULT_IMMATURE))
    immature_flag: float = IMMATURE_FLAG
    report: Path | None = None
    report_per_class: int = 60
    annotate: Path | None = None
    live: bool = True
    device: str = "auto"
    threads: int = 0
    realtime: bool = False
    settle: float = 1.0
    poll: float = 0.5
    width: int = 0
    height: int = 0
    fps: float = 0.0
    reconnect_tries: int = 0  # camera/stream: give up after this many failed reconnects (0: never)
    open_timeout: float = 10.0  # network stream: seconds to open or to send a frame
    rotate_mb: float = 0.0  # new cells/errors files when cells.jsonl reaches this size (0: never)

    def check(self) -> None:
        c = self.pipeline
        bad_threshold = c.threshold is not None and not 0 <= c.threshold <= 1
        if c.batch < 1 or c.queue_size < 1 or bad_threshold:
            raise UserError("--batch and --queue must be >= 1, --min-confidence between 0 and 1")
        if c.workers < 0:
            raise UserError("--workers must be 0 (one per core) or more")
        if c.max_items < 0 or not 0 <= self.immature_flag <= 1:
            raise UserError("--limit must be >= 0 and --immature-flag between 0 and 1")
        if self.reconnect_tries < 0 or self.open_timeout <= 0 or self.rotate_mb < 0:
            raise UserError("--reconnect-tries and --rotate-mb must be >= 0, --open-timeout > 0")
        self._check_out_outside_source()
        if self.report is not None:
            from wbc_edge.runtime.report import report_path

            self.report = report_path(self.report)

    def _check_out_outside_source(self) -> None:
        """A results folder inside the folder being read would feed the run its own outputs."""
        from wbc_edge.runtime.sources import parse_uri

        source = Path(parse_uri(self.source, self.watch).resource)
        if source.is_dir() and self.out.resolve().is_relative_to(source.resolve()):
            what = "watched folder" if self.watch else "source folder"
            raise UserError(
                f"--out {self.out} is inside the {what} {source}: the run would read its own "
                "results; put --out outside it"
            )


def run_service(settings: RunSettings) -> dict[str, Any]:
    """Run ``settings.source`` through the model into ``settings.out``; returns the summary
    (also written to ``summary.json``). A restarted run continues where the last one stopped."""
    from wbc_edge.console import console, print_table
    from wbc_edge.runtime.backends import load_backend
    from wbc_edge.runtime.live import watch_run
    from wbc_edge.runtime.pipeline import Pipeline
    from wbc_edge.runtime.post import Differential
    from wbc_edge.runtime.report import Annotator, Gallery
    from wbc_edge.runtime.sinks import RunOutput, iter_records
    from wbc_edge.runtime.sources import open_source

    settings.check()
    s, config, uri = settings, settings.pipeline, settings.source
    model = s.model
    if model is None:
        from wbc_edge.models import default_model

        model = default_model()
    backend = load_backend(model, device=s.device, threads=s.threads)
    with backend, RunOutput(s.out, s.rotate_mb) as output:
        card = backend.card
        diff = Differential(card.class_names, s.immature, s.immature_flag)
        earlier = 0  # streamed, not held: a camera's folder can hold millions of records
        if output.jsonl_path.is_file():
            for record in iter_records(output.jsonl_path):
                if record.label not in diff.counts:
                    raise UserError(
                        f"{output.jsonl_path} holds class {record.label!r} that {model} does "
                        "not have: use another --out for this model"
                    )
                diff.add([record])
                earlier += 1
        src = open_source(
            uri,
            watch=s.watch,
            done=output.resume,
            realtime=s.realtime,
            settle_s=s.settle,
            poll_s=s.poll,
            width=s.width,
            height=s.height,
            fps=s.fps,
            reconnect_tries=s.reconnect_tries,
            open_timeout_s=s.open_timeout,
        )
        with src:
            extra = getattr(backend, "providers", None)
            console.print(
                f"model {model} ({card.architecture}, {card.num_classes} classes, "
                f"{card.preprocess.input_size}px) on {backend.name}"
                + (f" {extra}" if extra else ""),
                highlight=False,
            )
            console.print(src.options.describe(), highlight=False)
            console.print(_review_line(config.threshold, card), highlight=False, soft_wrap=True)
            skipped = getattr(src, "skipped", 0)
            if earlier or skipped:
                console.print(
                    f"resuming {s.out}: {len(output.resume)} items done before "
                    f"({earlier} cells), {skipped} of them in this source",
                    highlight=False,
                )
            gallery = Gallery(card.class_names, s.report_per_class) if s.report else None
            # A video keeps the source's frame rate (a camera's or a video file's own).
            annotator = Annotator(s.annotate, src.options.fps) if s.annotate else None
            observers = [lambda item: diff.add(item.records)]
            observers += [o for o in (gallery, annotator) if o]
            pipeline = Pipeline(src, backend, output, config, observers)
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            cpu_start = time.process_time()
            pipeline.start()
            # In a log there is no screen to redraw: log lines, then the whole table below.
            live = s.live and console.is_terminal
            try:
                stats = watch_run(pipeline, diff, f"wbc-edge run {uri}", live=live)
            finally:
                if annotator is not None:
                    annotator.close()
            cpu_s = time.process_time() - cpu_start

        elapsed = time.perf_counter() - stats.started
        model_ms = 1000 * backend.total_inference_s / backend.images if backend.images else 0.0
        summary = {
            "source": uri,
            "model": str(model),
            "backend": backend.name,
            "mode": config.mode,
            "started": started,
            "seconds": round(elapsed, 3),
            "items": stats.items,
            "cells": stats.cells,
            "errors": stats.errors,
            "dropped_frames": stats.dropped,
            "stream_losses": stats.stream_losses,
            "reconnects": stats.reconnects,
            "cells_per_s": round(stats.cells / elapsed, 2) if elapsed > 0 else 0.0,
            "latency_ms_p50": round(stats.latency_ms(50), 2),
            "latency_ms_p95": round(stats.latency_ms(95), 2),
            "latency_ms_p99": round(stats.latency_ms(99), 2),
            "model_ms_per_cell": round(model_ms, 3),
            "process_cpu_s": round(cpu_s, 3),  # all threads, the model's own included
            "workers": stats.workers,
            "stages": stats.stage_summary(),  # read, decode, find, preprocess, infer, write
            "differential": diff.to_dict(),
        }
        (output.dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if not live:  # the live view already shows the final table
            print_table(diff.table("Differential (all results in this folder)"))
        console.print(
            f"{stats.items} items, {stats.cells} cells, {stats.errors} errors, "
            f"{stats.dropped} frames dropped"
            + (
                f", stream lost {stats.stream_losses}x and reconnected {stats.reconnects}x"
                if stats.stream_losses
                else ""
            )
            + f" in {elapsed:.1f} s ({summary['cells_per_s']} cells/s); results in {output.dir}",
            highlight=False,
            soft_wrap=True,  # one line in a log, whatever the terminal width
        )
        console.print(stats.stage_line(), highlight=False)
        if diff.flagged:
            console.print(f"[bold white on red]{diff.flag_text()}[/]")
        if diff.ood_warning:
            console.print(f"[bold black on yellow]{diff.ood_warning}[/]", soft_wrap=True)
        if s.report:
            _write_report(s.report, diff, gallery, uri, Path(model), card.architecture, started)
    return summary


def _write_report(path, diff, gallery, uri, model, architecture, started) -> None:  # noqa: ANN001
    from wbc_edge.console import console
    from wbc_edge.runtime.report import write_report

    info = {
        "title": "WBC differential",
        "source": uri,
        "model": f"{model.name} ({architecture})",
        "started": started,
        "cells counted": diff.counted,
        "in review": diff.in_review,
        "gallery": "cells classified in this session",
    }
    written = write_report(path, diff, gallery, info)
    console.print(f"report written to {written}", highlight=False)


def _review_line(min_confidence: float | None, card) -> str:  # noqa: ANN001
    """Which review threshold this run uses and where it comes from."""
    from wbc_edge.runtime.post import review_threshold

    value = review_threshold(min_confidence, card)
    if min_confidence is not None:
        return f"review: cells below {value:.4f} (--min-confidence)"
    if card.confidence_threshold is not None:
        target = card.calibration.get("target_error")
        aim = f" for <= {100 * target:g}% error of counted cells" if target else ""
        return f"review: cells below {value:.4f} (the card's certified threshold{aim})"
    return f"review: cells below {value:.4f} (the card certifies no threshold; plain default)"
