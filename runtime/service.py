"""The run service: one sample classified from a source into ``OUT/<sample>/``.

``wbc-edge run`` is a thin layer over :func:`run_service`: it turns flags into a
:class:`RunSettings` and calls it. The service names the sample, opens or resumes its folder
(refusing another run's: :mod:`wbc_edge.runtime.sample`), resumes the differential from the
records and corrections already there, streams the source through the
:class:`~wbc_edge.runtime.pipeline.Pipeline` (each cell's crop kept before its record), shows
the live view, stops at the cell target, and writes ``summary.json`` and the report. Every
default lives in :mod:`wbc_edge.runtime.options`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wbc_edge.errors import UserError
from wbc_edge.runtime.options import (
    DEFAULT_OUT,
    FLAG_BLASTS,
    FLAG_IG_PERCENT,
    FLAG_NRBC_PER_100_WBC,
    REPORT_PER_CLASS,
    PipelineConfig,
)


@dataclass
class RunSettings:
    """Everything one run needs besides the model file; every field has its one default.

    ``None`` for the lab settings (operator, target, WBC count, flag thresholds) means: as
    recorded for a resumed sample, else the default."""

    source: str
    model: Path | None = None  # None: the student packaged with wbc-edge
    out: Path = Path(DEFAULT_OUT)
    sample: str | None = None  # None: derived from the source
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    watch: bool = False
    operator: str | None = None
    target_cells: int | None = None  # white cells to count, then stop (0: no target)
    wbc_count: float | None = None  # the analyser's WBC, 10^9/L, for absolute counts
    flag_ig: float | None = None  # default FLAG_IG_PERCENT
    flag_blasts: int | None = None  # default FLAG_BLASTS
    flag_nrbc: float | None = None  # default FLAG_NRBC_PER_100_WBC
    report: Path | None = None  # a copy of the report (it is always in OUT/<sample>/)
    report_per_class: int = REPORT_PER_CLASS
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
        """Every setting a run cannot use is refused here, before anything is written."""
        c = self.pipeline
        self._check_numbers()
        bad_threshold = c.threshold is not None and not 0 <= c.threshold <= 1
        if c.batch < 1 or c.queue_size < 1 or bad_threshold:
            raise UserError("--batch and --queue must be >= 1, --min-confidence between 0 and 1")
        if c.workers < 0:
            raise UserError("--workers must be 0 (one per core) or more")
        if c.max_items < 0:
            raise UserError("--limit must be >= 0")
        if self.reconnect_tries < 0 or self.open_timeout <= 0 or self.rotate_mb < 0:
            raise UserError("--reconnect-tries and --rotate-mb must be >= 0, --open-timeout > 0")
        self._check_out_outside_source()
        if self.report is not None:
            from wbc_edge.runtime.sinks import report_target

            self.report = report_target(self.report, "--report")
        if self.annotate is not None:
            self._check_annotate()
        if self.target_cells is not None and self.target_cells < 0:
            raise UserError(
                f"--target-cells must be >= 0 (labs count 100 or 200), not {self.target_cells}"
            )
        if self.wbc_count is not None and not self.wbc_count > 0:
            raise UserError(
                f"--wbc-count is the analyser's WBC in 10^9/L (> 0), not {self.wbc_count}"
            )

    def _check_numbers(self) -> None:
        """NaN passes every comparison (and typer's ranges): refuse it, and negative values
        where only 0 or more mean something."""
        import math

        c = self.pipeline
        values = {
            "--margin": c.margin, "--min-confidence": c.threshold, "--rbc-px": c.rbc_px,
            "--um-per-px": c.um_per_px, "--wbc-count": self.wbc_count, "--settle": self.settle,
            "--poll": self.poll, "--fps": self.fps, "--open-timeout": self.open_timeout,
            "--rotate-mb": self.rotate_mb, "--flag-ig": self.flag_ig, "--flag-nrbc": self.flag_nrbc,
        }  # fmt: skip
        for name, value in values.items():
            if value is not None and not math.isfinite(value):
                raise UserError(f"{name} must be a finite number, not {value}")
        if not 0 <= c.margin <= 1:
            raise UserError(
                f"--margin is a fraction of the cell's box side (0 to 1), not {c.margin:g}"
            )
        negative = {
            "--threads": self.threads, "--settle": self.settle, "--fps": self.fps,
            "--width": self.width, "--height": self.height,
        }  # fmt: skip
        for name, value in negative.items():
            if value < 0:
                raise UserError(f"{name} must be 0 or more, not {value:g}")
        if self.poll <= 0:
            raise UserError(f"--poll must be more than 0 seconds, not {self.poll:g}")

    def _source_folder(self) -> Path | None:
        from wbc_edge.runtime.sources import parse_uri

        source = Path(parse_uri(self.source, self.watch).resource)
        return source if source.is_dir() else None

    def _check_annotate(self) -> None:
        """Annotated frames written into the folder being read would be read again (a watch
        classified one crop 36 times in 20 s), and a path that is some other file is not ours."""
        from wbc_edge.runtime.report import VIDEO_SUFFIXES

        path = Path(self.annotate)
        source = self._source_folder()
        if source is not None and path.resolve().is_relative_to(source.resolve()):
            what = "watched folder" if self.watch else "source folder"
            raise UserError(
                f"--annotate {path} is inside the {what} {source}: the run would read its own "
                "annotated frames; put --annotate outside it"
            )
        video = path.suffix.lower() in VIDEO_SUFFIXES
        if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp") or (
            path.exists() and not video and not path.is_dir()
        ):
            raise UserError(
                f"--annotate {path}: give a folder (one JPEG per frame) or a video file "
                f"({', '.join(sorted(VIDEO_SUFFIXES))})"
            )
        if video and path.exists() and not path.is_file():
            raise UserError(f"--annotate {path} exists and is not a file: give another path")

    def _check_out_outside_source(self) -> None:
        """A results folder inside the folder being read would feed the run its own outputs."""
        source = self._source_folder()
        if source is not None and self.out.resolve().is_relative_to(source.resolve()):
            what = "watched folder" if self.watch else "source folder"
            raise UserError(
                f"--out {self.out} is inside the {what} {source}: the run would read its own "
                "results; put --out outside it"
            )

    def lab(self, recorded: dict[str, Any]) -> dict[str, Any]:
        """Operator, target, WBC count and flag thresholds: given, else recorded, else default."""
        from wbc_edge.runtime.flags import FlagRules

        flags = recorded.get("flags") or {}
        given = {"ig_percent": self.flag_ig, "blasts": self.flag_blasts}
        given["nrbc_per_100_wbc"] = self.flag_nrbc
        defaults = {"ig_percent": FLAG_IG_PERCENT, "blasts": FLAG_BLASTS}
        defaults["nrbc_per_100_wbc"] = FLAG_NRBC_PER_100_WBC
        rules = {k: v if v is not None else flags.get(k, defaults[k]) for k, v in given.items()}
        try:
            FlagRules(**rules)
        except ValueError as exc:
            raise UserError(f"--flag-ig, --flag-blasts and --flag-nrbc: {exc}") from exc

        def pick(value: Any, key: str, default: Any) -> Any:
            return value if value is not None else recorded.get(key, default)

        return {
            "operator": pick(self.operator, "operator", ""),
            "target_cells": int(pick(self.target_cells, "target_cells", 0) or 0),
            "wbc_count": pick(self.wbc_count, "wbc_count", None),
            "flags": rules,
        }


def run_service(settings: RunSettings) -> dict[str, Any]:
    """Run ``settings.source`` through the model into ``OUT/<sample>/``; returns the summary
    (also written to ``summary.json``). A restarted run of the sample continues where the last
    one stopped; a run that is not the same (source, model, settings) is refused."""
    from rich.markup import escape

    from wbc_edge.console import console, print_table
    from wbc_edge.console import results as results_console
    from wbc_edge.data.scan import sha256_file
    from wbc_edge.model.model import Model
    from wbc_edge.runtime.archive import CellArchive, crop_px_for
    from wbc_edge.runtime.corrections import reviewed_cells
    from wbc_edge.runtime.differential import unreviewed
    from wbc_edge.runtime.flags import FlagRules
    from wbc_edge.runtime.live import differential_table, flag_text, watch_run
    from wbc_edge.runtime.pipeline import Pipeline
    from wbc_edge.runtime.report import Annotator, write_report
    from wbc_edge.runtime.results import count, load_results, summary_dict
    from wbc_edge.runtime.sample import SampleFolder, make_header, sample_of
    from wbc_edge.runtime.sinks import RunOutput, writing
    from wbc_edge.runtime.sources import open_source

    settings.check()
    s, config, uri = settings, settings.pipeline, settings.source
    opts, sample_id = sample_of(uri, s.watch, s.sample)
    recorded = SampleFolder.recorded(s.out, sample_id)
    lab = s.lab(recorded.get("lab", {}))
    rules = FlagRules.from_dict(lab["flags"])
    model = s.model
    if model is None:
        from wbc_edge.models import default_model

        model = default_model()
    runner = Model.load(
        model, s.device, s.threads, threshold=config.threshold, margin=config.margin
    )
    with runner:
        card, backend = runner.card, runner.backend
        counting = {"mode": config.mode, "margin": config.margin}
        counting["min_confidence"] = runner.threshold
        header = make_header(sample_id, opts, model, sha256_file(model), card, counting, lab)
        folder, resumed = SampleFolder.for_run(s.out, header)
        diff = count(reviewed_cells(folder), card, lab)
        if diff.reached:
            raise UserError(
                f"sample {sample_id} already has {diff.wbc} WBC counted (target "
                f"{diff.target}): raise --target-cells to count more, or `wbc-edge report "
                f"{folder.path}` to see it"
            )
        with RunOutput(folder.path, s.rotate_mb) as output:
            try:
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
            except BaseException:
                if not resumed:  # a camera that is not there leaves no sample behind
                    output.close()
                    folder.discard_empty()
                raise
            folder.add_session({"model": str(model), "source": uri, **lab})
            console.print(
                f"sample {sample_id} ({'resuming' if resumed else 'new'}): {folder.path}",
                highlight=False,
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
                line = _review_line(config.threshold, card)
                console.print(line, highlight=False, soft_wrap=True)
                skipped = getattr(src, "skipped", 0)
                if resumed:
                    console.print(
                        f"resuming sample {sample_id}: {len(output.resume)} items done before "
                        f"({diff.total} cells), {skipped} of them in this source",
                        highlight=False,
                    )
                pipeline: Pipeline | None = None

                def tally(item: Any) -> None:
                    diff.add(unreviewed(item.records))
                    if diff.reached and pipeline is not None:
                        # Stop now: what is still queued stays undone, for a later resume.
                        pipeline.abort()

                # A video keeps the source's frame rate (a camera's or a video file's own).
                annotator = Annotator(s.annotate, src.options.fps) if s.annotate else None
                observers = [tally] + ([annotator] if annotator else [])
                smear = config.mode == "smear"
                archive = CellArchive(folder, crop_px_for(card.preprocess.input_size), smear)
                pipeline = Pipeline(src, runner, output, config, observers, archive)
                started = time.strftime("%Y-%m-%d %H:%M:%S")
                cpu_start = time.process_time()
                pipeline.start()
                title = f"wbc-edge run {uri} (sample {sample_id})"
                # In a log there is no screen to redraw: log lines, then the whole table below.
                live = s.live and console.is_terminal
                try:
                    stats = watch_run(pipeline, diff, rules, title, live=live)
                finally:
                    if annotator is not None:
                        annotator.close()
                cpu_s = time.process_time() - cpu_start
            sample_items, sample_errors = output.resume.items(), len(output.resume.failed)

        elapsed = time.perf_counter() - stats.started
        model_ms = 1000 * backend.total_inference_s / backend.images if backend.images else 0.0
        results = load_results(folder)
        summary = {
            "sample": sample_id,
            "source": uri,
            "model": str(model),
            "backend": backend.name,
            "mode": config.mode,
            "started": started,
            "seconds": round(elapsed, 3),
            # The whole sample, as the differential below (every run into it); this run's own
            # share under "this_run", and the rates and times are this run's.
            "items": sample_items,
            "cells": len(results.cells),
            "errors": sample_errors,  # items failing now (one tried again since is not)
            "this_run": {"items": stats.items, "cells": stats.cells, "errors": stats.errors},
            "dropped_frames": stats.dropped,
            "cells_per_s": round(stats.cells / elapsed, 2) if elapsed > 0 else 0.0,
            "latency_ms_p50": round(stats.latency_ms(50), 2),
            "latency_ms_p95": round(stats.latency_ms(95), 2),
            "latency_ms_p99": round(stats.latency_ms(99), 2),
            "model_ms_per_cell": round(model_ms, 3),
            "process_cpu_s": round(cpu_s, 3),  # all threads, the model's own included
            "stream_losses": stats.stream_losses,
            "reconnects": stats.reconnects,
            "workers": stats.workers,
            "stages": stats.stage_summary(),  # read, decode, find, preprocess, infer, write
            **summary_dict(results),
        }
        with writing(folder.summary_path):
            folder.summary_path.write_text(json.dumps(summary, indent=2))
        # The results go to stdout (`run ... > out.txt` keeps them), the log lines to stderr; a
        # live view on the same terminal already shows the final table.
        shown = live and sys.stdout.isatty()
        out = None if shown else results_console
        if out is not None:
            title = f"Differential of sample {sample_id}"
            print_table(differential_table(results.diff, title), to=out)
            out.print(results.diff.banner, highlight=False, soft_wrap=True)
        console.print(
            f"{stats.items} items, {stats.cells} cells, {stats.errors} errors, "
            f"{stats.dropped} frames dropped"
            + (
                f", stream lost {stats.stream_losses}x and reconnected {stats.reconnects}x"
                if stats.stream_losses
                else ""
            )
            + f" in {elapsed:.1f} s ({summary['cells_per_s']} cells/s over the whole run, warm-up"
            f" included); results in {folder.path}",
            highlight=False,
            soft_wrap=True,  # one line in a log, whatever the terminal width
        )
        console.print(stats.stage_line(), highlight=False)
        flags = flag_text(results.diff, rules)
        if flags:
            (out or console).print(f"[bold white on red]{escape(flags)}[/]")
        if results.diff.ood_warning:
            (out or console).print(
                f"[bold black on yellow]{escape(results.diff.ood_warning)}[/]", soft_wrap=True
            )
        if results.diff.reached:
            (out or console).print(
                f"[bold]target reached: {results.diff.wbc} WBC counted of "
                f"{results.diff.target}; the count of this sample is complete (move to the next "
                "slide)[/]"
            )
        path = write_report(folder, per_class=s.report_per_class)
        if s.report:
            write_report(folder, s.report, per_class=s.report_per_class)
        copy = f" and {s.report}" if s.report else ""
        console.print(f"report written to {path}{copy}", highlight=False)
        if results.diff.in_review:
            console.print(
                f"{results.diff.in_review} "
                f"{'cell awaits' if results.diff.in_review == 1 else 'cells await'} review: "
                f"`wbc-edge review {folder.path}`",
                highlight=False,
            )
    return summary


def _review_line(min_confidence: float | None, card) -> str:  # noqa: ANN001
    """Which review threshold this run uses and where it comes from."""
    from wbc_edge.model.review import review_threshold

    value = review_threshold(min_confidence, card)
    if min_confidence is not None:
        return f"review: cells below {value:.4f} (--min-confidence)"
    if card.confidence_threshold is not None:
        target = card.calibration.get("target_error")
        aim = f" for <= {100 * target:g}% error of counted cells" if target else ""
        return f"review: cells below {value:.4f} (the card's certified threshold{aim})"
    return f"review: cells below {value:.4f} (the card certifies no threshold; plain default)"
