"""The run service: one sample classified from a source into ``OUT/<sample>/``.

``wbc-edge run`` is a thin layer over :func:`run_service`: it turns flags into one
:class:`~wbc_edge.runtime.options.RunOptions` (where every default, help text and check is
declared) and calls it. The service checks the options, names the sample, fills in what a
resumed sample recorded (:meth:`RunOptions.resolved`, once), opens or resumes its folder
(refusing another run's: :mod:`wbc_edge.runtime.sample`), resumes the differential from the
records and corrections already there, streams the source through the
:class:`~wbc_edge.runtime.pipeline.Pipeline` (each cell's crop kept before its record), shows
the live view, stops at the cell target, and writes ``summary.json`` and the report.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from wbc_edge.errors import UserError
from wbc_edge.runtime.options import RunOptions


def check_paths(options: RunOptions) -> Path | None:
    """Refuse outputs a run must not write (into the folder it reads, over a file that is not
    a report); the values themselves are checked by :meth:`RunOptions.check`. Returns where
    ``--report`` writes (a folder's report.html), or None."""
    source = _source_folder(options)
    what = "watched folder" if options.watch else "source folder"
    if source is not None and options.out.resolve().is_relative_to(source.resolve()):
        # A results folder inside the folder being read would feed the run its own outputs.
        raise UserError(
            f"--out {options.out} is inside the {what} {source}: the run would read its own "
            "results; put --out outside it"
        )
    report = None
    if options.report is not None:
        from wbc_edge.runtime.sinks import report_target

        report = report_target(options.report, "--report")
    if options.annotate is not None:
        _check_annotate(Path(options.annotate), source, what)
    return report


def _source_folder(options: RunOptions) -> Path | None:
    from wbc_edge.runtime.sources import parse_uri

    source = Path(parse_uri(options.uri, options.watch).resource)
    return source if source.is_dir() else None


def _check_annotate(path: Path, source: Path | None, what: str) -> None:
    """Annotated frames written into the folder being read would be read again (a watch
    classified one crop 36 times in 20 s), and a path that is some other file is not ours."""
    from wbc_edge.runtime.annotate import VIDEO_SUFFIXES

    if source is not None and path.resolve().is_relative_to(source.resolve()):
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


def run_service(options: RunOptions) -> dict[str, Any]:
    """Run ``options.uri`` through the model into ``OUT/<sample>/``; returns the summary (also
    written to ``summary.json``). A restarted run of the sample continues where the last one
    stopped, with the settings it recorded unless they are given; a run that is not the same
    (source, model, settings) is refused."""
    from rich.markup import escape

    from wbc_edge.console import console, print_table
    from wbc_edge.console import results as results_console
    from wbc_edge.data.scan import sha256_file
    from wbc_edge.model.model import Model
    from wbc_edge.runtime.annotate import Annotator
    from wbc_edge.runtime.archive import CellArchive, crop_px_for
    from wbc_edge.runtime.corrections import reviewed_cells
    from wbc_edge.runtime.differential import unreviewed
    from wbc_edge.runtime.flags import FlagRules
    from wbc_edge.runtime.live import differential_table, flag_text, watch_run
    from wbc_edge.runtime.pipeline import Pipeline
    from wbc_edge.runtime.report import write_report
    from wbc_edge.runtime.results import count, load_results, summary_dict
    from wbc_edge.runtime.sample import SampleFolder, make_header, sample_of
    from wbc_edge.runtime.sinks import RunOutput, writing
    from wbc_edge.runtime.sources import open_source

    options.check()
    report_copy = check_paths(options)
    uri = options.uri
    opts, sample_id = sample_of(uri, options.watch, options.sample)
    # A resumed sample keeps the settings it recorded unless they are given; the recorded
    # values are checked like given ones (a header edited by hand).
    s = options.resolved(SampleFolder.recorded(options.out, sample_id))
    s.check()
    config = s.pipeline
    lab = s.lab.header()
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
                src = open_source(uri, watch=s.watch, done=output.resume, **asdict(s.capture))
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
                line = _review_line(runner.threshold, config.threshold, card)
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
        if report_copy:
            write_report(folder, report_copy, per_class=s.report_per_class)
        copy = f" and {report_copy}" if report_copy else ""
        console.print(f"report written to {path}{copy}", highlight=False)
        if results.diff.in_review:
            console.print(
                f"{results.diff.in_review} "
                f"{'cell awaits' if results.diff.in_review == 1 else 'cells await'} review: "
                f"`wbc-edge review {folder.path}`",
                highlight=False,
            )
    return summary


def _review_line(value: float, min_confidence: float | None, card) -> str:  # noqa: ANN001
    """Which review threshold this run uses (``value``, the model's) and where it comes from."""
    if min_confidence is not None:
        return f"review: cells below {value:.4f} (--min-confidence)"
    if card.confidence_threshold is not None:
        target = card.calibration.get("target_error")
        aim = f" for <= {100 * target:g}% error of counted cells" if target else ""
        return f"review: cells below {value:.4f} (the card's certified threshold{aim})"
    return f"review: cells below {value:.4f} (the card certifies no threshold; plain default)"
