"""Quantization: the INT8 ONNX written from calibrated ranges, and the whole ``export int8``
command (calibrate, quantize, check the Q/DQ form, compare with FP32)."""

from __future__ import annotations

import inspect
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from wbc_edge.console import console
from wbc_edge.data.manifest import ManifestRow, fingerprint
from wbc_edge.errors import UserError
from wbc_edge.export import DEFAULT_CALIB_METHOD, DEFAULT_CALIB_NUM, calib_cache
from wbc_edge.export.int8.calibration import (
    ImageReader,
    cache_scales,
    calibrate,
    graph_input_name,
    quiet_ort_logging,
    select_calibration_rows,
)
from wbc_edge.export.int8.check import check_qdq
from wbc_edge.export.int8.compare import Int8Report, compare_on
from wbc_edge.export.int8.settings import MIN_CALIBRATION_IMAGES, TARGETS, QuantSettings
from wbc_edge.export.onnx_export import set_metadata
from wbc_edge.model import names
from wbc_edge.model.backends.onnxruntime import read_onnx_card
from wbc_edge.model.card import ModelCard
from wbc_edge.model.labelled import check_labels
from wbc_edge.optional import require

onnx = require("onnx")
quant = require("onnxruntime.quantization")
calibrate_mod = require("onnxruntime.quantization.calibrate")


def quantize(
    onnx_path: str | Path,
    out: str | Path,
    ranges: Any,
    settings: QuantSettings,
    card_extra: dict[str, Any] | None = None,
    reader_factory: Callable[[], Any] | None = None,
) -> Path:
    """Write the INT8 model with ``settings`` from precomputed ``ranges``; atomic like export.

    An ONNX Runtime whose ``quantize_static`` takes ``calibration_cache_path`` reuses the ranges;
    older ones recalibrate from ``reader_factory()`` with the same images and method, which
    gives the same ranges for every tensor they quantize.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    card = read_onnx_card(onnx_path)
    tmp = out.with_name(out.name + ".tmp")
    kwargs = settings.quantize_kwargs()
    try:
        with tempfile.TemporaryDirectory(prefix="wbc-quant-") as tdir, quiet_ort_logging():
            src = Path(tdir) / "unshared.onnx"
            onnx.save(unshare_initializers(onnx.load(str(onnx_path))), str(src))
            if _accepts_cache():
                cache_json = Path(tdir) / "ranges.json"
                calibrate_mod.save_tensors_data(ranges, cache_json)
                quant.quantize_static(
                    str(src),
                    str(tmp),
                    None,
                    calibrate_method=ranges.calibration_method,
                    calibration_cache_path=str(cache_json),
                    **kwargs,
                )
            else:
                if reader_factory is None:
                    raise UserError(
                        "this onnxruntime cannot reuse calibration ranges: upgrade onnxruntime"
                    )
                quant.quantize_static(
                    str(src),
                    str(tmp),
                    reader_factory(),
                    calibrate_method=ranges.calibration_method,
                    **kwargs,
                )
        proto = onnx.load(str(tmp))
        qcard = ModelCard.from_dict(card.to_dict())
        qcard.extra = {**card.extra, "precision": "int8", **(card_extra or {})}
        set_metadata(proto, qcard)
        onnx.save(proto, str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def unshare_initializers(proto: Any) -> Any:
    """Give every node its own copy of each constant input.

    The exporter deduplicates equal constants (a second user reads the first through an
    Identity node), so BatchNorm layers that still hold equal statistics fold into convolutions
    that share one bias. ONNX Runtime's quantizer only sees initializers and rewrites a bias per
    node, so it fails on shared or Identity-fed weights. Activations keep their names, so the
    calibrated ranges still apply.
    """
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}

    def add_copy(src: str, name: str) -> None:
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[src])
        copy.name = name
        graph.initializer.append(copy)
        inits[name] = copy

    for node in [n for n in graph.node if n.op_type == "Identity"]:
        if node.input[0] in inits and node.output[0] not in outputs:
            add_copy(node.input[0], node.output[0])
            graph.node.remove(node)
    seen: set[str] = set()
    for index, node in enumerate(graph.node):
        for k, name in enumerate(node.input):
            if name not in inits:
                continue
            if name in seen:
                add_copy(name, f"{name}__{index}_{k}")
                node.input[k] = f"{name}__{index}_{k}"
            else:
                seen.add(name)
    return proto


def quantize_int8(
    onnx_path: str | Path,
    calib_rows: Sequence[ManifestRow],
    eval_rows: Sequence[ManifestRow] | None = None,
    out: str | Path | None = None,
    target: str = "tensorrt",
    method: str = DEFAULT_CALIB_METHOD,
    num: int = DEFAULT_CALIB_NUM,
    cache_out: str | Path | None = None,
    eval_split: str = "val",
    seed: int = 0,
) -> Int8Report:
    """Calibrate, quantize, check and compare: the whole ``export int8`` command."""
    if target not in TARGETS:
        raise UserError(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")
    onnx_path = Path(onnx_path)
    card = read_onnx_card(onnx_path)
    if card.extra.get("precision") == "int8":
        raise UserError(f"{onnx_path} is already INT8: quantize the FP32 export instead")
    settings = TARGETS[target]
    out = Path(out) if out else default_out(onnx_path, card, target)
    cache_out = Path(cache_out) if cache_out else default_cache(onnx_path, card)
    picked = select_calibration_rows(calib_rows, num, seed)
    warnings = []
    if len(picked) < MIN_CALIBRATION_IMAGES:
        warnings.append(
            f"only {len(picked)} calibration images (fewer than {MIN_CALIBRATION_IMAGES}): "
            "INT8 ranges may not cover rare cells; pass a larger split or --num"
        )
        console.print(f"[yellow]warning:[/] {warnings[-1]}")
    check_labels(card, [r.label for r in picked], "the calibration split")
    spec = card.preprocess
    paths = [r.path for r in picked]
    ranges = calibrate(onnx_path, paths, spec, method, symmetric=settings.symmetric_activations)
    calib_cache.write(cache_out, cache_scales(ranges))
    extra = {
        "int8_target": target,
        # The runtime warns when an 8-bit U8S8 file meets a CPU whose kernels saturate it.
        "int8_weight_bits": 7 if settings.reduce_range else 8,
        "calibration_method": method,
        "calibration_images": len(picked),
        "calibration_fingerprint": fingerprint(picked),
    }
    quantize(
        onnx_path,
        out,
        ranges,
        settings,
        extra,
        # batch 1: the fallback calibrator stacks one pass, so every batch must be one size
        reader_factory=lambda: ImageReader(paths, spec, graph_input_name(onnx_path), batch_size=1),
    )
    if target == "tensorrt":
        problems = check_qdq(onnx.load(str(out)), symmetric=True)
        if problems:
            out.unlink()
            raise UserError(
                "the Q/DQ model is not in TensorRT's explicit-quantization form: "
                + "; ".join(problems[:5])
                + " (file removed; please report it with the ONNX)"
            )
    report = Int8Report(
        onnx=str(onnx_path),
        out=str(out),
        calibration_cache=str(cache_out),
        target=target,
        method=method,
        settings=asdict(settings),
        num_calibration=len(picked),
        calibration_fingerprint=extra["calibration_fingerprint"],
        eval_split=eval_split,
        num_eval=len(eval_rows or []),
        fp32_bytes=onnx_path.stat().st_size,
        int8_bytes=out.stat().st_size,
        warnings=warnings,
    )
    if eval_rows:
        compare_on(report, onnx_path, out, card, eval_rows)
    return report


def default_out(onnx_path: Path, card: ModelCard, target: str) -> Path:
    """Beside the FP32 ONNX, named from its card (:mod:`wbc_edge.model.names`):
    ``student-tinyresnet_xs.int8-tensorrt.onnx``."""
    return onnx_path.with_name(names.int8_name(card, target))


def default_cache(onnx_path: Path, card: ModelCard) -> Path:
    """``student-tinyresnet_xs.calib.cache`` (it belongs to the FP32 network)."""
    return onnx_path.with_name(names.calib_cache_name(card))


def _accepts_cache() -> bool:
    params = inspect.signature(quant.quantize_static).parameters
    return "calibration_cache_path" in params and hasattr(calibrate_mod, "save_tensors_data")
