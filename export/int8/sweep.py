"""The CPU settings sweep (``export int8-sweep``): FP32, the TensorRT target and every CPU
candidate quantized from the same ranges, side by side with single-thread latency."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.console import progress
from wbc_edge.data.manifest import ManifestRow
from wbc_edge.export import (
    DEFAULT_CALIB_METHOD,
    DEFAULT_CALIB_NUM,
    DEFAULT_SWEEP_BATCHES,
    DEFAULT_SWEEP_ROUNDS,
)
from wbc_edge.export.int8.calibration import calibrate, select_calibration_rows
from wbc_edge.export.int8.compare import predict_probs
from wbc_edge.export.int8.quantization import quantize
from wbc_edge.export.int8.settings import CPU_CANDIDATES, TENSORRT, QuantSettings, default_for
from wbc_edge.metrics import agreement, classification_report
from wbc_edge.model.backends.onnxruntime import read_onnx_card
from wbc_edge.model.labelled import check_labels
from wbc_edge.optional import require

ort = require("onnxruntime")


def measure_latency(
    path: str | Path, input_size: int, batch: int = 1, threads: int = 1, runs: int = 30
) -> float:
    """Median milliseconds per batch on this CPU, ``threads`` intra-op threads, through the
    runtime's ONNX Runtime backend (the model time ``predict`` reports)."""
    from wbc_edge.model.backends.onnxruntime import OnnxRuntimeBackend

    x = np.random.default_rng(0).standard_normal((batch, 3, input_size, input_size))
    x = x.astype(np.float32)
    with OnnxRuntimeBackend(path, device="cpu", threads=threads) as backend:
        for _ in range(3):
            backend.predict(x)
        times = []
        for _ in range(runs):
            backend.predict(x)
            times.append(backend.last_inference_s)
    return float(np.median(times) * 1000.0)


def compare_settings(
    onnx_path: str | Path,
    calib_rows: Sequence[ManifestRow],
    eval_rows: Sequence[ManifestRow],
    out_dir: str | Path,
    method: str = DEFAULT_CALIB_METHOD,
    num: int = DEFAULT_CALIB_NUM,
    batches: Sequence[int] = DEFAULT_SWEEP_BATCHES,
    rounds: int = DEFAULT_SWEEP_ROUNDS,
) -> list[dict[str, Any]]:
    """FP32, the TensorRT target and every :data:`CPU_CANDIDATES` setting side by side:
    accuracy, macro-F1, agreement with FP32, file size and single-thread CPU latency.

    Latency rounds interleave the models, so load from other processes on a shared machine
    hits them all alike; each figure is the median over rounds of a round's median.
    """
    onnx_path = Path(onnx_path)
    out_dir = Path(out_dir)
    card = read_onnx_card(onnx_path)
    picked = select_calibration_rows(calib_rows, num)
    paths = [r.path for r in picked]
    spec = card.preprocess
    files: dict[str, Path] = {"fp32": onnx_path}
    settings: dict[str, QuantSettings | None] = {"fp32": None}
    for symmetric, group in ((True, (TENSORRT,)), (False, CPU_CANDIDATES)):
        ranges = calibrate(onnx_path, paths, spec, method, symmetric=symmetric)
        for s in group:
            out = out_dir / f"{onnx_path.stem}.{s.name}.onnx"
            files[s.name] = quantize(onnx_path, out, ranges, s)
            settings[s.name] = s
    y = check_labels(card, [r.label for r in eval_rows], "the evaluation split")
    probs = {k: predict_probs(f, eval_rows, card, k) for k, f in files.items()}
    lat: dict[tuple[str, int], list[float]] = {(k, b): [] for k in files for b in batches}
    with progress() as p:
        task = p.add_task("latency", total=rounds * len(lat), status="")
        for _ in range(rounds):
            for k, b in lat:
                lat[k, b].append(measure_latency(files[k], card.preprocess.input_size, batch=b))
                p.advance(task)
    rows = []
    for k, f in files.items():
        rep = classification_report(probs[k], y, card.class_names)
        s = settings[k]
        rows.append(
            {
                "setting": k,
                "default_for": default_for(s),
                "accuracy": rep.accuracy,
                "macro_f1": rep.macro_f1,
                "agreement_with_fp32": agreement(probs["fp32"], probs[k]),
                "bytes": Path(f).stat().st_size,
                "latency_ms": {str(b): float(np.median(lat[k, b])) for b in batches},
                "settings": asdict(s) if s else {"precision": "fp32"},
            }
        )
    return rows
