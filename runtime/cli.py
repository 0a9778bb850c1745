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

from wbc_edge.model.defaults import FALLBACK_THRESHOLD
from wbc_edge.runtime.options import DEFAULT_OUT, PipelineConfig
from wbc_edge.runtime.review_cli import FlagBlasts, FlagIg, FlagNrbc
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
            "rtsp://... or a GStreamer pipeline [required unless --camera].",
            show_default=False,
        ),
    ] = None,
    camera: Annotated[
        int | None, typer.Option(help="Camera index; the same as giving SOURCE as a number.")
    ] = None,
    smear: Annotated[
        bool | None,
        typer.Option(
            "--smear/--crops",
            help="--smear: frames are whole fields, find the white cells first; "
            "--crops: every image is one cell [default: --crops; a resumed sample: as "
            "recorded].",
            show_default=False,
        ),
    ] = None,
    watch: Annotated[
        bool, typer.Option(help="Watch the folder: classify new files as they arrive.")
    ] = False,
    out: Annotated[
        Path,
        typer.Option(
            help="Results folder: each sample's results go to OUT/<sample>/ (records, crops, "
            "report); a sample's folder is reused to resume."
        ),
    ] = Path(DEFAULT_OUT),
    sample: Annotated[
        str | None,
        typer.Option(
            help="Sample (slide) ID: its results go to OUT/<sample>/ [default: from the "
            "source: the folder's name (for a VOC folder's JPEGImages/, the folder above), the "
            "file's stem, or the camera and start time].",
            show_default=False,
        ),
    ] = None,
    operator: Annotated[
        str | None,
        typer.Option(
            help="Who runs the sample: in the header and the report [default: none; a "
            "resumed sample: as recorded].",
            show_default=False,
        ),
    ] = None,
    target_cells: Annotated[
        int | None,
        typer.Option(
            help="Stop when this many white cells are counted (a lab's 100 or 200) [default: "
            "0, no target; a resumed sample: as recorded]; a resume with a higher target "
            "counts on.",
            show_default=False,
        ),
    ] = None,
    wbc_count: Annotated[
        float | None,
        typer.Option(
            help="The analyser's WBC (10^9/L): the report adds absolute counts per class "
            "[default: none; a resumed sample: as recorded].",
            show_default=False,
        ),
    ] = None,
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
            f"card's certified confidence_threshold; {FALLBACK_THRESHOLD} when it has none; a "
            "resumed sample: as recorded].",
        ),
    ] = None,
    flag_ig: FlagIg = None,
    flag_blasts: FlagBlasts = None,
    flag_nrbc: FlagNrbc = None,
    margin: Annotated[
        float | None,
        typer.Option(
            help=f"Smear: crop margin, a fraction of the cell box [default: {_P.margin}; a "
            "resumed sample: as recorded]."
        ),
    ] = None,
    rbc_px: Annotated[
        float | None,
        typer.Option(
            help="Smear: red-cell diameter in pixels, for a calibrated microscope "
            "[default: measured in every field].",
        ),
    ] = None,
    um_per_px: Annotated[
        float | None,
        typer.Option(
            help="Smear: micrometres per pixel of the camera (a red cell is taken as 7.5 um); "
            "instead of --rbc-px [default: measured in every field].",
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Also write the HTML report here (it is always in OUT/<sample>/)."),
    ] = None,
    report_per_class: Annotated[
        int, typer.Option(help="Most cells shown per class in the report.")
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
            help="Threads decoding and preprocessing images "
            f"[default: {_P.workers}, one per core, <= 4]."
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
    """Classify the white cells of one sample (slide) from a camera, stream or folder into
    OUT/<sample>/; a restarted run of the same sample continues where the last one stopped."""
    from wbc_edge.errors import UserError
    from wbc_edge.runtime.sample import SampleFolder, sample_of
    from wbc_edge.runtime.service import run_service

    if (source is None) == (camera is None):
        raise UserError("give exactly one source: SOURCE or --camera N")
    uri = str(camera) if camera is not None else str(source)
    # A resumed sample keeps the counting settings it started with unless they are given.
    recorded = SampleFolder.recorded(out, sample_of(uri, watch, sample)[1]).get("settings", {})
    if smear is None:
        smear = recorded.get("mode") == "smear"
    if min_confidence is None:  # still None for a new sample: the card's threshold
        min_confidence = recorded.get("min_confidence")
    if margin is None:
        margin = recorded.get("margin", _P.margin)
    config = PipelineConfig(
        mode="smear" if smear else "crops",
        batch=_P.batch if batch is None else batch,
        threshold=min_confidence,  # None: the card's certified threshold (review_threshold)
        margin=margin,
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
        source=uri,
        model=model,
        out=out,
        sample=sample,
        pipeline=config,
        watch=watch,
        operator=operator,
        target_cells=target_cells,
        wbc_count=wbc_count,
        flag_ig=flag_ig,
        flag_blasts=flag_blasts,
        flag_nrbc=flag_nrbc,
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
    from wbc_edge.runtime.review_cli import register as register_review

    app.command("run")(run)
    register_finder(app)
    register_review(app)
