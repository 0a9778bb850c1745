"""``wbc-edge export onnx|int8|int8-sweep|triton`` and ``wbc-edge build-engine``.

Only typer and the standard library are imported here; torch, onnx and onnxruntime load inside
the commands that need them (``export int8``, ``triton`` and ``build-engine`` never need torch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from wbc_edge.export import (
    DEFAULT_CALIB_METHOD,
    DEFAULT_CALIB_NUM,
    DEFAULT_DLA_BATCH,
    DEFAULT_OPSET,
    DEFAULT_SWEEP_BATCHES,
    DEFAULT_SWEEP_ROUNDS,
    DEFAULT_TRT_BATCH,
    DEFAULT_WORKSPACE_MB,
)

if TYPE_CHECKING:
    from wbc_edge.data.manifest import ManifestRow
    from wbc_edge.export.int8 import Int8Report

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None)  # plain help: see wbc_edge.cli


@app.command("onnx")
def onnx_cmd(
    model: Annotated[Path, typer.Option(help="Checkpoint (.pt) written by train-teacher/distill.")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="ONNX file to write [default: <role>-<architecture>.onnx from the card, beside "
            "the checkpoint].",
            show_default=False,
        ),
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = DEFAULT_OPSET,
    data: Annotated[
        Path | None,
        typer.Option(help="Split manifest: check parity on its real images (else random ones)."),
    ] = None,
    split: Annotated[str, typer.Option(help="Manifest split whose images check parity.")] = "val",
    num: Annotated[int, typer.Option(min=1, help="Images in the parity check.")] = 32,
) -> None:
    """Export a checkpoint to ONNX (card and calibrated softmax inside), checked against PyTorch."""
    from wbc_edge.console import console
    from wbc_edge.export.onnx_export import (
        default_onnx_path,
        export_onnx,
        load_checkpoint,
        sample_inputs,
    )

    net, card = load_checkpoint(model)
    rows = _rows(data, split) if data else None
    sample, source = sample_inputs(card, rows, num)
    out = out or default_onnx_path(model, card)
    report = export_onnx(net, card, out, opset, sample, source)
    console.print(f"wrote {out}: {report.line()}", highlight=False, soft_wrap=True)


@app.command("int8")
def int8_cmd(
    model: Annotated[Path, typer.Option(help="FP32 ONNX from `export onnx`.")],
    calib: Annotated[Path, typer.Option(help="Split manifest with the calibration images.")],
    split: Annotated[str, typer.Option(help="Split to calibrate on.")] = "train",
    num: Annotated[
        int, typer.Option(min=1, help="Calibration images (classes interleaved).")
    ] = DEFAULT_CALIB_NUM,
    method: Annotated[
        str, typer.Option(help="entropy, percentile or minmax.")
    ] = DEFAULT_CALIB_METHOD,
    target: Annotated[
        str, typer.Option(help="tensorrt (symmetric Q/DQ for TensorRT) or cpu (ONNX Runtime).")
    ] = "tensorrt",
    out: Annotated[
        Path | None,
        typer.Option(
            help="INT8 ONNX [default: <role>-<architecture>.int8-<target>.onnx beside --model].",
            show_default=False,
        ),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="TensorRT calibration cache to write "
            "[default: <role>-<architecture>.calib.cache beside --model].",
            show_default=False,
        ),
    ] = None,
    eval_split: Annotated[
        str, typer.Option(help="Split on which FP32 and INT8 are compared.")
    ] = "val",
    report: Annotated[Path | None, typer.Option(help="Also write the comparison as JSON.")] = None,
) -> None:
    """Quantize to INT8 (Q/DQ) calibrated on WBC images; compare with FP32 on a held-out split."""
    from wbc_edge.console import console
    from wbc_edge.export.int8 import quantize_int8

    calib_rows = _rows(calib, split)
    eval_rows = _rows(calib, eval_split, required=False)
    if not eval_rows:
        console.print(f"[yellow]warning:[/] {calib} has no {eval_split!r} rows: no comparison")
    result = quantize_int8(
        model, calib_rows, eval_rows, out, target, method, num, cache, eval_split=eval_split
    )
    _print_int8(result)
    if report:
        report.write_text(json.dumps(result.to_dict(), indent=2))


@app.command("int8-sweep")
def int8_sweep_cmd(
    model: Annotated[Path, typer.Option(help="FP32 ONNX from `export onnx`.")],
    calib: Annotated[Path, typer.Option(help="Split manifest (train: calibration).")],
    out_dir: Annotated[Path, typer.Option(help="Folder for the quantized variants.")],
    results: Annotated[
        Path | None, typer.Option(help="Write <results>.json and <results>.md with the table.")
    ] = None,
    num: Annotated[int, typer.Option(min=1, help="Calibration images.")] = DEFAULT_CALIB_NUM,
    method: Annotated[
        str, typer.Option(help="entropy, percentile or minmax.")
    ] = DEFAULT_CALIB_METHOD,
    eval_split: Annotated[str, typer.Option(help="Split the variants are evaluated on.")] = "test",
    batch: Annotated[str, typer.Option(help="Batch sizes timed, comma-separated.")] = ",".join(
        map(str, DEFAULT_SWEEP_BATCHES)
    ),
    rounds: Annotated[int, typer.Option(help="Interleaved latency rounds.")] = DEFAULT_SWEEP_ROUNDS,
) -> None:
    """FP32 vs INT8 (TensorRT target and every CPU setting): accuracy, size, CPU latency."""
    import onnxruntime

    from wbc_edge.console import console
    from wbc_edge.export.int8 import compare_settings
    from wbc_edge.records import markdown_table, record_header, write_record

    batches = [int(b) for b in batch.split(",")]
    rows = compare_settings(
        model,
        _rows(calib, "train"),
        _rows(calib, eval_split),
        out_dir,
        method=method,
        num=num,
        batches=batches,
        rounds=rounds,
    )
    fp32 = rows[0]
    header = ["setting", "default for", "accuracy", "macro-F1", "Δacc (pts)", "agree FP32"]
    header += ["size KB"] + [f"ms/batch of {b}" for b in batches]
    table = markdown_table(
        header,
        [
            [
                r["setting"],
                r["default_for"] or "",
                f"{r['accuracy']:.4f}",
                f"{r['macro_f1']:.4f}",
                f"{100 * (r['accuracy'] - fp32['accuracy']):+.2f}",
                f"{r['agreement_with_fp32']:.4f}",
                f"{r['bytes'] / 1024:.0f}",
                *[f"{r['latency_ms'][str(b)]:.3f}" for b in batches],
            ]
            for r in rows
        ],
    )
    console.print(table, highlight=False, soft_wrap=True)
    if results:
        meta = {
            **record_header(onnxruntime=onnxruntime.__version__),
            "onnx": str(model),
            "calibration": {"manifest": str(calib), "split": "train", "num": num, "method": method},
            "eval_split": eval_split,
            "num_eval": len(_rows(calib, eval_split)),
            "latency": f"ONNX Runtime CPU provider, 1 intra-op thread, median of {rounds} "
            "interleaved rounds x 30 runs",
            "rows": rows,
        }
        write_record(
            results,
            meta,
            f"# FP32 vs INT8 on this CPU\n\n```\n{meta['command']}\n```\n\n"
            f"{meta['date']}; {meta['machine']}; {meta['latency']}. Accuracy on the "
            f"{eval_split} split ({meta['num_eval']} images); calibration on {num} train "
            f"images ({method}).\n\n{table}\n",
        )


@app.command("triton")
def triton_cmd(
    model: Annotated[Path, typer.Option(help="ONNX file or TensorRT engine (with its sidecar).")],
    out: Annotated[Path, typer.Option(help="Model repository folder.")],
    name: Annotated[
        str | None,
        typer.Option(
            help="Model name in the repository [default: from the card, e.g. "
            "student-tinyresnet_xs-int8].",
            show_default=False,
        ),
    ] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Triton max_batch_size.")] = 32,
) -> None:
    """Write a Triton Inference Server model repository (config.pbtxt, labels, model)."""
    from wbc_edge.console import console
    from wbc_edge.export.triton import write_repository

    folder = write_repository(model, out, name, max_batch)
    console.print(f"wrote {folder} (config.pbtxt, labels.txt, 1/)", highlight=False, soft_wrap=True)


def build_engine_cmd(
    model: Annotated[Path, typer.Option(help="ONNX (FP32, or Q/DQ INT8 from `export int8`).")],
    precision: Annotated[
        str | None,
        typer.Option(help="fp32, fp16 or int8 [default: int8 for a Q/DQ ONNX, else fp16]."),
    ] = None,
    calib: Annotated[
        Path | None,
        typer.Option(help="Split manifest: implicit INT8 calibration images (TensorRT < 11)."),
    ] = None,
    calib_split: Annotated[str, typer.Option(help="Split of --calib to use.")] = "train",
    num: Annotated[
        int, typer.Option(min=1, help="Calibration images from --calib.")
    ] = DEFAULT_CALIB_NUM,
    calib_cache: Annotated[
        Path | None, typer.Option(help="TensorRT calibration cache from `export int8`.")
    ] = None,
    dla: Annotated[
        int | None,
        typer.Option(help="DLA core (Orin NX/AGX, Xavier), with GPU fallback; static batch."),
    ] = None,
    batch: Annotated[
        str | None,
        typer.Option(
            help="Optimisation profile MIN,OPT,MAX, or one size for a static batch [default: "
            f"{','.join(map(str, DEFAULT_TRT_BATCH))}; with --dla {DEFAULT_DLA_BATCH[0]}, as DLA "
            "needs MIN = OPT = MAX]."
        ),
    ] = None,
    workspace: Annotated[int, typer.Option(help="Builder workspace in MB.")] = DEFAULT_WORKSPACE_MB,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Engine file [default: <role>-<architecture>.<precision>.engine beside --model].",
            show_default=False,
        ),
    ] = None,
    timing_cache: Annotated[
        Path | None, typer.Option(help="Timing cache file, read and updated (faster rebuilds).")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Rebuild even when the engine is up to date.")
    ] = False,
) -> None:
    """Build a TensorRT engine on this device (FP32/FP16/INT8, DLA); prints the trtexec line."""
    from wbc_edge.export.tensorrt_build import build_engine, parse_batch

    rows = None
    if calib:
        from wbc_edge.export.int8 import select_calibration_rows

        rows = select_calibration_rows(_rows(calib, calib_split), num)
    build_engine(
        model,
        out,
        precision,
        rows,
        calib_cache,
        parse_batch(batch),
        workspace,
        dla,
        timing_cache,
        force,
        echo=typer.echo,
    )


def register(app_: typer.Typer) -> None:
    """Add ``export`` and ``build-engine`` to the top-level app."""
    app_.add_typer(
        app, name="export", help="Export to ONNX, INT8 (Q/DQ) and Triton model repositories."
    )
    app_.command("build-engine")(build_engine_cmd)


def _rows(manifest: Path, split: str, required: bool = True) -> list[ManifestRow]:
    from wbc_edge.data.manifest import read_manifest
    from wbc_edge.errors import UserError

    try:
        return read_manifest(manifest, split)
    except UserError:
        if required or not manifest.is_file():
            raise
        return []


def _print_int8(r: Int8Report) -> None:
    from wbc_edge.console import console
    from wbc_edge.records import markdown_table

    rows = [
        ["FP32", r.onnx, f"{r.fp32_bytes / 1024:.0f}"],
        ["INT8", r.out, f"{r.int8_bytes / 1024:.0f}"],
    ]
    if r.fp32:
        rows[0] += [f"{r.fp32['accuracy']:.4f}", f"{r.fp32['macro_f1']:.4f}"]
        rows[1] += [f"{r.int8['accuracy']:.4f}", f"{r.int8['macro_f1']:.4f}"]
    console.print(
        markdown_table(["model", "file", "KB", "accuracy", "macro-F1"], rows),
        highlight=False,
        soft_wrap=True,
    )
    if r.fp32:
        console.print(
            f"top-1 agreement {r.agreement:.4f} on {r.num_eval} {r.eval_split} images; "
            f"accuracy change {100 * (r.int8['accuracy'] - r.fp32['accuracy']):+.2f} points",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"TensorRT calibration cache: {r.calibration_cache}", highlight=False, soft_wrap=True
    )
