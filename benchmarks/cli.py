"""CLI commands of this part; register() adds them to the top-level app."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from wbc_edge.benchmarks.bench import DEFAULT_BATCHES, DEFAULT_ITERS, DEFAULT_WARMUP
from wbc_edge.model.defaults import DEVICE, THREADS
from wbc_edge.runtime.options import PipelineConfig


def bench(
    model: Annotated[
        list[Path],
        typer.Option(
            metavar="<path>",
            help="A model to measure (.onnx, INT8 .onnx, .engine, .pt); repeatable.",
        ),
    ],
    teacher: Annotated[
        Path | None,
        typer.Option(
            help="The teacher: agreement (and speed-up unless --baseline) is against it. A "
            "checkpoint (.pt) is exported to ONNX into --out first (parity-checked), so teacher "
            "and student run on the same backend."
        ),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(
            help="Model the speed-up column is against [default: the teacher]; "
            "benchmarked too if it is not already a --model or --teacher."
        ),
    ] = None,
    reference: Annotated[
        list[Path] | None,
        typer.Option(
            metavar="<path>",
            help="Another model to compare with (e.g. a published architecture); repeatable.",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Split manifest (CSV) or class-folder tree for accuracy; "
            "without it latency is measured on synthetic images."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Which split of the manifest.")] = "test",
    limit: Annotated[
        int | None, typer.Option(help="Use at most N images (spread over all classes).")
    ] = None,
    batch: Annotated[
        str | None,
        typer.Option(
            help="Batch sizes, comma-separated "
            f"[default: {','.join(map(str, DEFAULT_BATCHES))}]; --stream: one size "
            f"[default: {PipelineConfig.batch}]."
        ),
    ] = None,
    warmup: Annotated[int, typer.Option(help="Untimed calls before timing.")] = DEFAULT_WARMUP,
    iters: Annotated[
        int | None, typer.Option(help=f"Timed calls per batch size [default: {DEFAULT_ITERS}].")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Instead of --iters: seconds of timed calls per batch.")
    ] = None,
    threads: Annotated[
        int, typer.Option(help="Intra-op threads for ONNX Runtime / torch (0: their default).")
    ] = THREADS,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (engines: always GPU).")] = DEVICE,
    out: Annotated[Path, typer.Option(help="Folder for the JSON, markdown and PNGs.")] = Path(
        "bench-out"
    ),
    note: Annotated[
        list[str] | None,
        typer.Option(
            metavar="<text>",
            help="A line for the report's notes (where the models came from); repeatable.",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="File stem of the reports: NAME.json, NAME.md [default: bench; --stream: stream]."
        ),
    ] = None,
    stream: Annotated[
        str | None,
        typer.Option(
            help="End to end instead: run the --model over this folder, glob or video "
            "as `wbc-edge run` does (cells/s, latency, per-stage times) beside the decode limit."
        ),
    ] = None,
    smear: Annotated[
        bool, typer.Option("--smear/--crops", help="--stream: frames are fields (find cells).")
    ] = False,
    realtime: Annotated[
        bool, typer.Option(help="--stream: pace a video file like a live camera.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            help="--stream: decode/prepare threads "
            f"[default: {PipelineConfig.workers}, one per core, <= 4]."
        ),
    ] = None,
    fps: Annotated[
        float, typer.Option(help="--stream --realtime: frames/s (0: the video's own).")
    ] = 0.0,
) -> None:
    """Latency, throughput, size, memory and accuracy of models against their teacher; with
    --stream, the whole run pipeline on a folder or video against its decode limit."""
    from wbc_edge.benchmarks.bench import BenchConfig, parse_batches, run_bench
    from wbc_edge.benchmarks.plots import write_plots
    from wbc_edge.benchmarks.report import print_table, write_reports
    from wbc_edge.console import console

    if stream is not None:
        _bench_stream(model, stream, smear, realtime, batch, workers, threads, device, limit,
                      fps, out, name or "stream")  # fmt: skip
        return
    name = name or "bench"
    batch = batch or ",".join(map(str, DEFAULT_BATCHES))
    if teacher is not None and teacher.suffix.lower() in (".pt", ".pth"):
        from wbc_edge.benchmarks.bench import export_teacher

        teacher = export_teacher(teacher, out, data, split)
    cfg = BenchConfig(
        students=list(model),
        teacher=teacher,
        baseline=baseline,
        references=list(reference or []),
        data=data,
        split=split,
        limit=limit,
        batches=parse_batches(batch),
        warmup=warmup,
        iters=iters,
        duration=duration,
        threads=threads,
        device=device,
    )
    report = run_bench(cfg, command=_command(cfg, out, name))
    report["notes"] = list(note or [])
    print_table(report)
    written = write_reports(report, out, name) + write_plots(report, out, name)
    for path in written:
        console.print(f"wrote {path}", highlight=False)


def _bench_stream(
    student: list[Path],
    source: str,
    smear: bool,
    realtime: bool,
    batch: str | None,
    workers: int | None,
    threads: int,
    device: str,
    limit: int | None,
    fps: float,
    out: Path,
    name: str,
) -> None:
    import json

    from wbc_edge.benchmarks.bench import parse_batches
    from wbc_edge.benchmarks.stream import StreamConfig, markdown, print_report, run_stream_bench
    from wbc_edge.console import console
    from wbc_edge.errors import UserError

    if len(student) != 1:
        raise UserError("bench --stream measures one model: give exactly one --model")
    sizes = parse_batches(batch) if batch else []
    if len(sizes) > 1:
        raise UserError(f"bench --stream takes one --batch size, not {batch}")
    if workers is not None and workers < 0:
        raise UserError("--workers must be 0 (one per core) or more")
    cfg = StreamConfig(
        model=student[0],
        source=source,
        smear=smear,
        realtime=realtime,
        batch=sizes[0] if sizes else None,
        workers=workers,
        threads=threads,
        device=device,
        limit=limit or 0,
        fps=fps,
        work_dir=out,
    )
    args = ["wbc-edge", "bench", "--stream", source, "--model", str(cfg.model)]
    args += ["--smear"] if smear else []
    args += ["--realtime"] if realtime else []
    args += ["--fps", str(fps)] if fps else []
    args += ["--batch", str(cfg.batch)] if cfg.batch else []
    args += ["--workers", str(workers)] if workers is not None else []
    args += ["--threads", str(threads)] if threads else []
    args += ["--limit", str(limit)] if limit else []
    args += ["--device", device, "--out", str(out), "--name", name]
    out.mkdir(parents=True, exist_ok=True)  # the measurement's run writes under it too
    report = run_stream_bench(cfg, command=shlex.join(args))
    print_report(report)
    for path, text in (
        (out / f"{name}.json", json.dumps(report, indent=2) + "\n"),
        (out / f"{name}.md", markdown(report)),
    ):
        path.write_text(text)
        console.print(f"wrote {path}", highlight=False)


def _command(cfg: object, out: Path, name: str) -> str:
    """The command line that repeats this run, every default spelled out (for the report)."""
    from wbc_edge.benchmarks.bench import BenchConfig

    assert isinstance(cfg, BenchConfig)
    args = ["wbc-edge", "bench"]
    for s in cfg.students:
        args += ["--model", str(s)]
    if cfg.teacher:
        args += ["--teacher", str(cfg.teacher)]
    if cfg.baseline:
        args += ["--baseline", str(cfg.baseline)]
    for r in cfg.references:
        args += ["--reference", str(r)]
    if cfg.data:
        args += ["--data", str(cfg.data), "--split", cfg.split]
    if cfg.limit:
        args += ["--limit", str(cfg.limit)]
    args += ["--batch", ",".join(map(str, cfg.batches)), "--warmup", str(cfg.warmup)]
    args += ["--duration", str(cfg.duration)] if cfg.duration else ["--iters", str(cfg.iters)]
    if cfg.threads:
        args += ["--threads", str(cfg.threads)]
    args += ["--device", cfg.device, "--out", str(out), "--name", name]
    return shlex.join(args)


def register(app: typer.Typer) -> None:
    """Add this part's commands to ``app``."""
    app.command("bench")(bench)
