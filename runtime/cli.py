"""CLI commands of the runtime: ``wbc-edge run``, a thin layer over the run service.

Only typer, the standard library and the stdlib-only option defaults at module level: the
runtime's packages load inside the command, and nothing here ever imports torch (only a ``.pt``
model pulls it in). Each option's default is the one in :mod:`wbc_edge.runtime.options` /
:class:`~wbc_edge.runtime.service.RunSettings`, and ``--help`` shows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wbc_edge.runtime.options import (
    DEFAULT_IMMATURE,
    DEFAULT_OUT,
    FALLBACK_THRESHOLD,
    IMMATURE_FLAG,
    PipelineConfig,
)
from wbc_edge.runtime.service import RunSettings

_P = PipelineConfig  # the pipeline's defaults, shown in --help


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
    ] = Path(DEFAULT_OUT),
    batch: Annotated[
        int | None,
        typer.Option(min=1, help=f"Cells per inference batch [default: {_P.batch}]."),
    ] = None,
    queue: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Frames waiting for inference; a camera drops the oldest beyond "
            f"[default: {_P.queue_size}].",
        ),
    ] = None,
    min_confidence: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Cells below this probability go to review, not the count [default: the model "
            f"card's certified confidence_threshold; {FALLBACK_THRESHOLD} when it has none].",
        ),
    ] = None,
    immature: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated classes (substrings) to flag "
            f"[default: {','.join(DEFAULT_IMMATURE)}]."
        ),
    ] = None,
    immature_flag: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Flag when immature cells exceed this share of the count."
        ),
    ] = IMMATURE_FLAG,
    margin: Annotated[
        float | None,
        typer.Option(
            help=f"Smear: crop margin, a fraction of the cell box [default: {_P.margin}]."
        ),
    ] = None,
    rbc_px: Annotated[
        float | None,
        typer.Option(
            help="Smear: red-cell diameter in pixels, for a calibrated microscope "
            "[measured in every field].",
        ),
    ] = None,
    um_per_px: Annotated[
        float | None,
        typer.Option(
            help="Smear: micrometres per pixel of the camera (a red cell is taken as 7.5 um); "
            "instead of --rbc-px [measured in every field].",
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write an HTML report (table + cell gallery) here.")
    ] = None,
    report_per_class: Annotated[
        int, typer.Option(help="Most thumbnails per class in the report.")
    ] = RunSettings.report_per_class,
    annotate: Annotated[
        Path | None,
        typer.Option(
            help="Write every frame with boxes and labels: to a video file (out.mp4, .avi, "
            ".mkv, .mov; at the source's frame rate) or to a folder of JPEGs (any other path)."
        ),
    ] = None,
    live: Annotated[
        bool, typer.Option("--live/--no-live", help="Live console view, or log lines.")
    ] = True,
    limit: Annotated[
        int, typer.Option(min=0, help="Stop after this many frames or files (0: no limit).")
    ] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = RunSettings.device,
    threads: Annotated[
        int, typer.Option(help="ONNX Runtime CPU threads (0: half the cores on CPU).")
    ] = RunSettings.threads,
    workers: Annotated[
        int | None,
        typer.Option(
            help=f"Threads decoding and preprocessing images [{_P.workers}: one per core, <= 4]."
        ),
    ] = None,
    realtime: Annotated[
        bool,
        typer.Option(help="Treat a video file as a live camera (paced, drops frames if behind)."),
    ] = RunSettings.realtime,
    settle: Annotated[
        float, typer.Option(help="--watch: seconds a file must stop growing before it is read.")
    ] = RunSettings.settle,
    poll: Annotated[
        float, typer.Option(help="--watch: seconds between folder listings.")
    ] = RunSettings.poll,
    width: Annotated[
        int, typer.Option(help="Camera capture width (0: its default).")
    ] = RunSettings.width,
    height: Annotated[
        int, typer.Option(help="Camera capture height (0: its default).")
    ] = RunSettings.height,
    fps: Annotated[
        float, typer.Option(help="Camera frame rate (0: its default).")
    ] = RunSettings.fps,
    reconnect_tries: Annotated[
        int,
        typer.Option(
            min=0, help="Camera/stream: give up after this many failed reconnects (0: never)."
        ),
    ] = RunSettings.reconnect_tries,
    open_timeout: Annotated[
        float,
        typer.Option(
            min=0.1, help="Network stream: seconds to wait for it to open or send a frame."
        ),
    ] = RunSettings.open_timeout,
    rotate_mb: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Start new cells/errors files when cells.jsonl reaches this many MB; the "
            "earlier ones stay as dated parts (0: never). For cameras that run for weeks.",
        ),
    ] = RunSettings.rotate_mb,
) -> None:
    """Classify white cells from a camera, stream or folder; results are appended to --out and a
    restarted run continues where the last one stopped."""
    from wbc_edge.errors import UserError
    from wbc_edge.runtime.service import run_service

    if (source is None) == (camera is None):
        raise UserError("give exactly one source: SOURCE or --camera N")
    config = PipelineConfig(
        mode="smear" if smear else "crops",
        batch=_P.batch if batch is None else batch,
        threshold=min_confidence,  # None: the card's certified threshold (review_threshold)
        margin=_P.margin if margin is None else margin,
        queue_size=_P.queue_size if queue is None else queue,
        max_items=limit,
        rbc_px=rbc_px,
        um_per_px=um_per_px,
        workers=_P.workers if workers is None else workers,
    )
    if (rbc_px is not None and rbc_px <= 0) or (um_per_px is not None and um_per_px <= 0):
        raise UserError("--rbc-px and --um-per-px must be positive")
    if rbc_px is not None and um_per_px is not None:
        raise UserError("give --rbc-px or --um-per-px, not both")
    settings = RunSettings(
        source=str(camera) if camera is not None else str(source),
        model=model,
        out=out,
        pipeline=config,
        watch=watch,
        immature=[p.strip() for p in immature.split(",")] if immature else list(DEFAULT_IMMATURE),
        immature_flag=immature_flag,
        report=report,
        report_per_class=report_per_class,
        annotate=annotate,
        live=live,
        device=device,
        threads=threads,
        realtime=realtime,
        settle=settle,
        poll=poll,
        width=width,
        height=height,
        fps=fps,
        reconnect_tries=reconnect_tries,
        open_timeout=open_timeout,
        rotate_mb=rotate_mb,
    )
    run_service(settings)


def register(app: typer.Typer) -> None:
    """Add ``run`` to the top-level app."""
    from wbc_edge.runtime.finder_cli import register as register_finder

    app.command("run")(run)
    register_finder(app)
