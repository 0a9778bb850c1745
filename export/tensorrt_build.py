"""ONNX -> TensorRT engine, on the device that will run it (TensorRT 8.5 to 11.x).

What differs between TensorRT versions is decided in one place,
:mod:`wbc_edge.model.tensorrt_versions` (:func:`features`); this module only asks it.

- INT8 comes two ways. Explicit: a Q/DQ ONNX from ``export int8 --target tensorrt`` carries
  its own scales; the only way in TensorRT >= 11. Implicit (8.5-10.x; deprecated since 10.1):
  an ``IInt8EntropyCalibrator2`` fed WBC images through the card's preprocessing, or a
  calibration cache written by ``export int8``.
- FP16 from an FP32 ONNX needs TensorRT's weak typing (``BuilderFlag.FP16``, < 11). TensorRT 11
  builds strongly typed networks only, so there the FP16 types must already be in the ONNX.
- DLA runs static shapes only: a DLA engine gets one batch size (MIN = OPT = MAX), and the
  layers that cannot run on the DLA (and so fall back to the GPU) are named before the build.

We keep this small builder rather than Polygraphy's loaders: it is one straight chain of about
forty TensorRT calls, it adds what Polygraphy does not know (the model card in the sidecar, the
engine-cache key, the calibration feed through the card's preprocessing, the trtexec line), and
it keeps ``build-engine`` free of another dependency on the device. Polygraphy's habits are
followed where they matter: version differences in one place, a rejected timing cache is not
fatal, ONNX files are parsed from their path (external weights).

This module decides what to build (precision, batch profile, version gates, whether an existing
engine is reused) and writes the engine with its sidecar card. Engines are tied to the GPU and
TensorRT version that built them, so an engine is reused only when its key
(:mod:`~wbc_edge.export.engine_cache`) matches the sidecar of the existing file. Every build
prints the equivalent ``trtexec`` command, which also is the way forward where TensorRT is
absent. Everything but the TensorRT calls (:mod:`~wbc_edge.export.tensorrt_network`) and the
calibrator (:mod:`~wbc_edge.export.tensorrt_calibrator`) runs on a CPU.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from wbc_edge.data.manifest import ManifestRow
from wbc_edge.data.scan import sha256_file
from wbc_edge.errors import MissingExtraError, UserError, require_file
from wbc_edge.export import DEFAULT_DLA_BATCH, DEFAULT_TRT_BATCH, DEFAULT_WORKSPACE_MB, calib_cache
from wbc_edge.export.engine_cache import (
    EngineKey,
    calibration_hash,
    default_engine_path,
    device_name,
    reusable,
)
from wbc_edge.export.onnx_export import onnx_io
from wbc_edge.export.tensorrt_calibrator import make_calibrator
from wbc_edge.export.tensorrt_network import build_serialized
from wbc_edge.model.backends.onnxruntime import read_onnx_card
from wbc_edge.model.card import ModelCard, write_sidecar
from wbc_edge.model.tensorrt_versions import features
from wbc_edge.optional import require

PRECISIONS = ("fp32", "fp16", "int8")


def resolve_batch(batch: tuple[int, int, int] | None, dla_core: int | None) -> tuple[int, int, int]:
    """The optimisation profile to build: the default for the device, or ``batch`` checked.

    DLA supports static shapes only; with a dynamic profile TensorRT would either fail or
    quietly run every layer on the GPU, so a DLA engine gets MIN = OPT = MAX."""
    if batch is None:
        return DEFAULT_DLA_BATCH if dla_core is not None else DEFAULT_TRT_BATCH
    if dla_core is not None and len(set(batch)) != 1:
        raise UserError(
            f"--dla needs a static batch (MIN = OPT = MAX), not {','.join(map(str, batch))}: "
            f"pass e.g. --batch {batch[1]}"
        )
    return batch


def parse_batch(text: str | None) -> tuple[int, int, int] | None:
    """``"1,8,32"`` -> (min, opt, max) batch sizes of the optimisation profile; ``"8"`` ->
    (8, 8, 8); None -> None (the device's default, :func:`resolve_batch`)."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        raise UserError(f"--batch {text!r}: give MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX")
    return values  # type: ignore[return-value]


def trtexec_command(
    onnx: str | Path,
    out: str | Path,
    precision: str,
    input_name: str,
    input_size: int,
    batch: tuple[int, int, int] = DEFAULT_TRT_BATCH,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    dla_core: int | None = None,
    calib: str | Path | None = None,
    timing_cache: str | Path | None = None,
    strongly_typed: bool = False,
) -> str:
    """The trtexec line that builds the same engine: TensorRT 8.5-10.x syntax, or 11's
    (``strongly_typed``: no --fp16/--int8, precision comes from the ONNX)."""
    shapes = [f"{input_name}:{b}x3x{input_size}x{input_size}" for b in batch]
    args = ["trtexec", f"--onnx={onnx}", f"--saveEngine={out}"]
    args += [f"--minShapes={shapes[0]}", f"--optShapes={shapes[1]}", f"--maxShapes={shapes[2]}"]
    if precision in ("fp16", "int8") and not strongly_typed:
        args.append("--fp16")
    if precision == "int8" and not strongly_typed:
        args.append("--int8")
        if calib is not None:
            args.append(f"--calib={calib}")
    args.append(f"--memPoolSize=workspace:{workspace_mb}")
    if dla_core is not None:
        args += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    return " ".join(shlex.quote(a) for a in args)


def is_qdq(onnx_path: str | Path) -> bool:
    """True when the ONNX carries Q/DQ nodes (explicit quantization)."""
    onnx = require("onnx")
    proto = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)


@dataclass
class BuildResult:
    engine: Path
    reused: bool
    key: EngineKey
    trtexec: str


def build_engine(
    onnx_path: str | Path,
    out: str | Path | None = None,
    precision: str | None = None,
    calib_rows: Sequence[ManifestRow] | None = None,
    calib_cache_path: str | Path | None = None,
    batch: tuple[int, int, int] | None = None,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    dla_core: int | None = None,
    timing_cache: str | Path | None = None,
    force: bool = False,
    echo: Callable[[str], None] = print,
) -> BuildResult:
    """Build (or reuse) an engine for ``onnx_path`` and write its sidecar card.

    ``precision`` defaults to int8 for a Q/DQ ONNX and fp16 otherwise; ``batch`` to
    :data:`DEFAULT_TRT_BATCH` on the GPU and :data:`DEFAULT_DLA_BATCH` (static) on a DLA core. The
    trtexec line is passed to ``echo`` before anything else, so it is printed even when the
    build cannot run.
    """
    onnx_path = require_file(onnx_path, "ONNX model", "export one with `wbc-edge export onnx`")
    card = read_onnx_card(onnx_path)
    explicit = is_qdq(onnx_path)
    precision = precision or ("int8" if explicit else "fp16")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if explicit and precision != "int8":
        raise UserError(
            f"{onnx_path} is a Q/DQ (INT8) model: build it with --precision int8, "
            "or pass the FP32 ONNX for fp16/fp32"
        )
    if dla_core is not None and precision == "fp32":
        raise UserError("DLA runs FP16 or INT8 only: use --precision fp16 or int8 with --dla")
    batch = resolve_batch(batch, dla_core)
    implicit = precision == "int8" and not explicit
    if implicit and not calib_rows and calib_cache_path is None:
        raise UserError(
            f"INT8 from {onnx_path} needs scales: pass the Q/DQ ONNX from "
            "`wbc-edge export int8 --target tensorrt`, or --calib split.csv, or --calib-cache"
        )
    if calib_cache_path is not None:
        calib_cache.read(calib_cache_path)  # fails early on a malformed file
    io = onnx_io(onnx_path)
    input_name = io["inputs"][0]["name"]
    out = Path(out) if out else default_engine_path(onnx_path, card, precision)
    # TensorRT's version shapes the trtexec line (11 has no --fp16/--int8), but the line is
    # printed before anything can fail, so a machine without TensorRT still gets it.
    try:
        trt, missing = require("tensorrt"), None
    except MissingExtraError as exc:
        trt, missing = None, exc
    try:
        feats = features(trt.__version__) if trt is not None else None
    except UserError as exc:  # older than 8.5: refused, after the line is printed
        feats, missing = None, exc
    line = trtexec_command(
        onnx_path,
        out,
        precision,
        input_name,
        card.preprocess.input_size,
        batch,
        workspace_mb,
        dla_core,
        calib_cache_path if implicit else None,
        timing_cache,
        strongly_typed=feats.strongly_typed if feats else False,
    )
    echo(f"equivalent trtexec command:\n  {line}")
    if implicit and calib_cache_path is None:
        echo(
            "note: trtexec cannot calibrate on images; write a cache with `wbc-edge export int8 "
            f"--model {onnx_path} --calib SPLIT.csv` and add --calib=<that cache> to the line"
        )
    if trt is None:
        raise UserError(
            f"{missing}. TensorRT engines are built on the device that runs them: run "
            "`wbc-edge build-engine` on the Jetson, or the trtexec command above there"
        ) from missing
    if feats is None:
        raise UserError(str(missing)) from missing
    if precision == "fp16" and feats.strongly_typed:
        raise UserError(
            f"TensorRT {feats.version} builds strongly typed networks only: FP16 must already be "
            f"in the ONNX. Convert {onnx_path} with NVIDIA ModelOpt's AutoCast "
            "(`python -m modelopt.onnx.autocast --onnx_path ... --low_precision_type fp16`), "
            "build with --precision fp32 from that file, or use TensorRT 10.x"
        )
    if precision == "int8" and feats.strongly_typed:
        echo(
            f"note: TensorRT {feats.version} is strongly typed: layers outside the Q/DQ pairs "
            "run in the ONNX's own type (FP32)"
        )
    elif precision != "fp32" and feats.precision_flags_deprecated:
        echo(
            f"note: BuilderFlag.FP16/INT8 are deprecated in TensorRT {feats.version} and gone "
            "in 11; an FP16 or Q/DQ ONNX is the lasting path"
        )
    if implicit and not feats.implicit_int8:
        raise UserError(
            f"TensorRT {feats.version} has no implicit INT8 calibration: INT8 needs a Q/DQ "
            "ONNX (`wbc-edge export int8 --target tensorrt`)"
        )
    if implicit and feats.implicit_int8_deprecated:
        echo(
            f"note: implicit INT8 calibration is deprecated in TensorRT {feats.version}; "
            "a Q/DQ ONNX (`export int8 --target tensorrt`) is the lasting path"
        )
    device = device_name()
    key = EngineKey(
        onnx_sha256=sha256_file(onnx_path),
        precision=precision,
        tensorrt_version=feats.version,
        device_name=device,
        calibration_sha256=calibration_hash(calib_rows, calib_cache_path, explicit)
        if precision == "int8"
        else "",
        batch=tuple(batch),  # type: ignore[arg-type]
        dla_core=dla_core,
    )
    if not force and reusable(out, key):
        echo(f"{out} is up to date (same ONNX, precision, TensorRT, device, calibration): reused")
        return BuildResult(out, True, key, line)
    calibrator = None
    if implicit:
        calibrator = make_calibrator(
            trt, card, calib_rows, calib_cache_path, out, feats.version, card.preprocess.input_size
        )
    serialized, gpu_layers = build_serialized(
        trt,
        feats,
        onnx_path,
        precision,
        input_name,
        card.preprocess.input_size,
        batch,
        workspace_mb,
        dla_core,
        calibrator,
        Path(timing_cache) if timing_cache else None,
        echo,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(serialized)
    os.replace(tmp, out)
    engine_card = ModelCard.from_dict(card.to_dict())
    engine_card.extra = {**card.extra, "format": "tensorrt", "precision": precision}
    write_sidecar(
        out,
        engine_card,
        tensorrt_version=feats.version,
        device_name=device,
        precision=precision,
        int8_mode=("explicit" if explicit else "implicit") if precision == "int8" else "",
        onnx=str(onnx_path),
        onnx_sha256=key.onnx_sha256,
        calibration_sha256=key.calibration_sha256,
        engine_sha256=sha256_file(out),
        engine_key=key.digest(),
        batch=list(batch),
        dla_core=dla_core,
        dla_gpu_fallback_layers=gpu_layers if dla_core is not None else [],
        io=io,
        trtexec=line,
    )
    echo(f"wrote {out} and {out.name}.json")
    return BuildResult(out, False, key, line)
