"""CLI commands of the runtime: ``wbc-edge run``.

Only typer and the standard library at module level: the runtime's packages load inside the
command, and nothing here ever imports torch (only a ``.pt`` model pulls it in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def run(
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="Model file: .onnx, .engine (with its .json) or .pt "
            "[default: the student packaged with wbc-edge; `wbc-edge info` describes it].",
            show_default=False,
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Argument(
            help="Folder, image, glob, video file, camera index, v4l2:///dev/videoN, csi://N, "
            "rtsp://... or a GStreamer pipeline.",
            show_default=False,
        ),
    ] = None,
    camera: Annotated[
        int | None, typer.Option(help="Camera index; the same as giving SOURCE as a number.")
    ] = None,
    smear: Annotated[
        bool,
        typer.Option(
            "--smear/--crops",
            help="--smear: frames are whole fields, find the white cells first; "
            "--crops: every image is one cell.",
        ),
    ] = False,
    watch: Annotated[
        bool, typer.Option(help="Watch the folder: classify new files as they arrive.")
    ] = False,
    out: Annotated[
        Path,
        typer.Option(
            help="Results folder (cells.csv, cells.jsonl, errors.jsonl); reused to resume."
        ),
    ] = Path("wbc-run"),
    batch: Annotated[int | None, typer.Option(help="Cells per inference batch [16].")] = None,
    queue: Annotated[
        int | None,
        typer.Option(help="Frames waiting for inference; a camera drops the oldest beyond [32]."),
    ] = None,
    min_confidence: Annotated[
        float | None,
        typer.Option(
            help="Cells below this probability go to review, not the count [the model card's "
            "certified confidence_threshold; 0.5 when it has none]."
        ),
    ] = None,
    immature: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated classes (substrings) to flag "
            "[Promyelocyte,ImmatureGranulocyte,Erythroblast,blast]."
        ),
    ] = None,
    immature_flag: Annotated[
        float, typer.Option(help="Flag when immature cells exceed this share of the count.")
    ] = 0.05,
    margin: Annotated[
        float | None, typer.Option(help="Smear: crop margin, a fraction of the cell box [0.15].")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write an HTML report (table + cell gallery) here.")
    ] = None,
    report_per_class: Annotated[
        int, typer.Option(help="Most thumbnails per class in the report.")
    ] = 60,
    annotate: Annotated[
        Path | None, typer.Option(help="Write every frame with boxes and labels to this folder.")
    ] = None,
    live: Annotated[
        bool, typer.Option("--live/--no-live", help="Live console view, or log lines.")
    ] = True,
    limit: Annotated[
        int, typer.Option(help="Stop after this many frames or files (0: no limit).")
    ] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[
        int, typer.Option(help="ONNX Runtime CPU threads (0: half the cores on CPU).")
    ] = 0,
    realtime: Annotated[
        bool,
        typer.Option(help="Treat a video file as a live camera (paced, drops frames if behind)."),
    ] = False,
    settle: Annotated[
        float, typer.Option(help="--watch: seconds a file must stop growing before it is read.")
    ] = 1.0,
    poll: Annotated[float, typer.Option(help="--watch: seconds between folder listings.")] = 0.5,
    width: Annotated[int, typer.Option(help="Camera capture width (0: its default).")] = 0,
    height: Annotated[int, typer.Option(help="Camera capture height (0: its default).")] = 0,
    fps: Annotated[float, typer.Option(help="Camera frame rate (0: its default).")] = 0.0,
) -> None:
    """Classify white cells from a camera, stream or folder; results are appended to --out and a
    restarted run continues where the last one stopped."""
    import json
    import time

    from wbc_edge.console import console
    from wbc_edge.errors import UserError
    from wbc_edge.runtime.backends import load_backend
    from wbc_edge.runtime.card import DEFAULT_IMMATURE
    from wbc_edge.runtime.live import Differential, watch_run
    from wbc_edge.runtime.pipeline import Pipeline, PipelineConfig
    from wbc_edge.runtime.report import Annotator, Gallery, write_report
    from wbc_edge.runtime.sinks import RunOutput, read_records
    from wbc_edge.runtime.sources import open_source

    if (source is None) == (camera is None):
        raise UserError("give exactly one source: SOURCE or --camera N")
    uri = str(camera) if camera is not None else str(source)
    defaults = PipelineConfig()
    config = PipelineConfig(
        mode="smear" if smear else "crops",
        batch=batch if batch is not None else defaults.batch,
        threshold=min_confidence,  # None: the card's certified threshold (review_threshold)
        margin=margin if margin is not None else defaults.margin,
        queue_size=queue if queue is not None else defaults.queue_size,
        max_items=limit,
    )
    bad_threshold = min_confidence is not None and not 0 <= min_confidence <= 1
    if config.batch < 1 or config.queue_size < 1 or bad_threshold:
        raise UserError("--batch and --queue must be >= 1, --min-confidence between 0 and 1")
    patterns = [p.strip() for p in immature.split(",")] if immature else list(DEFAULT_IMMATURE)

    if model is None:
        from wbc_edge.models import default_model

        model = default_model()
    backend = load_backend(model, device=device, threads=threads)
    with backend, RunOutput(out) as output:
        card = backend.card
        diff = Differential(card.class_names, patterns, immature_flag)
        earlier = read_records(output.jsonl_path) if output.jsonl_path.is_file() else []
        unknown = {r.label for r in earlier} - set(card.class_names)
        if unknown:
            raise UserError(
                f"{output.jsonl_path} holds classes {sorted(unknown)} that {model} does not "
                "have: use another --out for this model"
            )
        diff.add(earlier)
        src = open_source(
            uri,
            watch=watch,
            done=output.done(),
            realtime=realtime,
            settle_s=settle,
            poll_s=poll,
            width=width,
            height=height,
            fps=fps,
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
            console.print(_review_line(min_confidence, card), highlight=False, soft_wrap=True)
            skipped = getattr(src, "skipped", 0)
            if earlier or skipped:
                console.print(
                    f"resuming {out}: {len(output.done())} items done before "
                    f"({len(earlier)} cells), {skipped} of them in this source",
                    highlight=False,
                )
            gallery = Gallery(card.class_names, report_per_class) if report else None
            observers = [lambda item: diff.add(item.records)]
            observers += [o for o in (gallery, Annotator(annotate) if annotate else None) if o]
            pipeline = Pipeline(src, backend, output, config, observers)
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            cpu_start = time.process_time()
            pipeline.start()
            stats = watch_run(pipeline, diff, f"wbc-edge run {uri}", live=live)
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
            "cells_per_s": round(stats.cells / elapsed, 2) if elapsed > 0 else 0.0,
            "latency_ms_p50": round(stats.latency_ms(50), 2),
            "latency_ms_p95": round(stats.latency_ms(95), 2),
            "model_ms_per_cell": round(model_ms, 3),
            "process_cpu_s": round(cpu_s, 3),  # all threads, the model's own included
            "stage_cpu_s": stats.stage_cpu_s,
            "differential": diff.to_dict(),
        }
        (output.dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if not live:  # the live view already shows the final table
            console.print(diff.table("Differential (all results in this folder)"))
        console.print(
            f"{stats.items} items, {stats.cells} cells, {stats.errors} errors, "
            f"{stats.dropped} frames dropped in {elapsed:.1f} s "
            f"({summary['cells_per_s']} cells/s); results in {output.dir}",
            highlight=False,
        )
        if diff.flagged:
            console.print(f"[bold white on red]{diff.flag_text()}[/]")
        if report:
            info = {
                "title": "WBC differential",
                "source": uri,
                "model": f"{model.name} ({card.architecture})",
                "started": started,
                "cells counted": diff.counted,
                "in review": diff.in_review,
                "gallery": "cells classified in this session",
            }
            path = write_report(report, diff, gallery, info)
            console.print(f"report written to {path}", highlight=False)


def _review_line(min_confidence: float | None, card) -> str:  # noqa: ANN001
    """Which review threshold this run uses and where it comes from."""
    from wbc_edge.runtime.pipeline import review_threshold

    value = review_threshold(min_confidence, card)
    if min_confidence is not None:
        return f"review: cells below {value:.4f} (--min-confidence)"
    if card.confidence_threshold is not None:
        target = card.calibration.get("target_error")
        aim = f" for <= {100 * target:g}% error of counted cells" if target else ""
        return f"review: cells below {value:.4f} (the card's certified threshold{aim})"
    return f"review: cells below {value:.4f} (the card certifies no threshold; plain default)"


def register(app: typer.Typer) -> None:
    """Add ``run`` to the top-level app."""
    from wbc_edge.runtime.finder_cli import register as register_finder

    app.command("run")(run)
    register_finder(app)
