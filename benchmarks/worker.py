"""Measure one model file in this process: ``python -m wbc_edge.benchmarks.worker SPEC.json``.

``bench`` starts one worker per artifact so that each peak resident memory figure belongs to one
model alone (a process's peak never comes down, so models measured in one process would mix)
and so a torch teacher's imports do not weigh on an ONNX student. The worker talks back in JSON
lines on stdout: ``{"event": "progress", ...}`` while it works, then one ``result`` or ``error``.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.benchmarks.bench import latency_stats
from wbc_edge.benchmarks.machine import PowerMonitor, wait_for_samples
from wbc_edge.errors import UserError
from wbc_edge.model.defaults import DEVICE, THREADS
from wbc_edge.model.names import model_name
from wbc_edge.records import load_average

SYNTHETIC_SHAPE = (363, 360, 3)  # a pbc9 crop's size, so resizing costs what it does on real data


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def open_model(path: str, device: str, threads: int) -> Any:
    """:meth:`Model.load <wbc_edge.model.model.Model.load>` of ``path``, with ``threads``
    intra-op threads where they apply (ONNX Runtime's, or torch's for a checkpoint)."""
    from wbc_edge.model.model import Model

    model = Model.load(path, device=device, threads=threads)
    if threads > 0 and model.name == "torch":
        import torch

        torch.set_num_threads(threads)
    return model


def time_predict(
    model: Any, x: np.ndarray, warmup: int, iters: int | None, duration: float | None
) -> list[float]:
    """Seconds per ``infer`` call after ``warmup`` calls: ``iters`` calls, or as many as fit
    in ``duration`` seconds (at least 3). The backend synchronises the GPU inside predict."""
    for _ in range(warmup):
        model.infer(x)
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        model.infer(x)
        times.append(time.perf_counter() - t0)
        if iters is not None and len(times) >= iters:
            break
        if duration is not None and time.perf_counter() - start >= duration and len(times) >= 3:
            break
    return times


def _preprocess_ms(model: Any, images: list[np.ndarray], reps: int = 5) -> tuple[np.ndarray, float]:
    """The batch and the median time per image of the card's preprocessing (resize+normalise)."""
    per_call = []
    x = None
    for _ in range(reps):
        t0 = time.perf_counter()
        x = model.prepare(images)
        per_call.append(time.perf_counter() - t0)
    assert x is not None
    return x, float(np.median(per_call)) * 1000.0 / len(images)


def decode(paths: list[str], min_side: int) -> list[np.ndarray]:
    """Decode as ``run`` does for this model (reduced JPEG decode down to ``min_side``)."""
    from wbc_edge.model.labelled import read_labelled

    return [read_labelled(p, "the benchmark data", min_side) for p in paths]


def measure(spec_in: dict[str, Any]) -> dict[str, Any]:
    path = spec_in["path"]
    t0 = time.perf_counter()
    device, threads = spec_in.get("device", DEVICE), int(spec_in.get("threads", THREADS))
    model = open_model(path, device, threads)
    load_s = time.perf_counter() - t0
    card, backend = model.card, model.backend
    min_side = model.min_side

    # Only the images one timed batch needs stay decoded; the accuracy pass streams the rest,
    # so the peak memory figure is the model's, not the data set's.
    paths = spec_in.get("images") or []
    decode_ms = None
    if paths:
        t0 = time.perf_counter()
        images = decode(paths[: max(spec_in["batches"])], min_side)
        decode_ms = (time.perf_counter() - t0) * 1000.0 / len(images)
    else:
        rng = np.random.default_rng(0)
        n = max(spec_in["batches"])
        images = [rng.integers(0, 256, SYNTHETIC_SHAPE, dtype=np.uint8) for _ in range(n)]

    per_batch: dict[str, Any] = {}
    for b in spec_in["batches"]:
        batch_images = [images[i % len(images)] for i in range(b)]
        x, pre_ms = _preprocess_ms(model, batch_images)
        monitor = PowerMonitor()
        with monitor:
            wait_for_samples(monitor)
            times = time_predict(
                model, x, spec_in["warmup"], spec_in.get("iters"), spec_in.get("duration")
            )
        stats = latency_stats(times, b)
        stats["preprocess_ms_per_image"] = pre_ms
        stats["power_w"] = monitor.mean_w
        stats["energy_mj_per_image"] = (
            monitor.mean_w * sum(times) / (b * len(times)) * 1000.0
            if monitor.mean_w is not None
            else None
        )
        per_batch[str(b)] = stats
        _emit("progress", step=f"batch {b}")

    result: dict[str, Any] = {
        "path": str(path),
        "name": model_name(card) + Path(path).suffix,  # from the card: runtime.names
        "backend": backend.name,
        "providers": list(getattr(backend, "providers", []) or []),
        "architecture": card.architecture,
        "class_names": card.class_names,
        "input_size": card.preprocess.input_size,
        "untrained": bool(card.extra.get("untrained", False)),
        "card_metrics": card.metrics,
        "size_bytes": Path(path).stat().st_size,
        "load_s": load_s,
        "decode_ms_per_image": decode_ms,
        "batches": per_batch,
        "num_images": len(paths),
        "accuracy": None,
        "macro_f1": None,
    }

    labels = spec_in.get("labels")
    if paths and labels:
        # Random-init weights (a reference architecture with no trained checkpoint) are timed
        # only: their accuracy would be chance, not a result.
        if not result["untrained"]:
            result.update(_accuracy(model, paths, labels, spec_in))
        _emit("progress", step="accuracy")

    result["load_avg_1m"] = load_average()  # how busy the machine was meanwhile
    # Read before counting MACs below, which loads the ONNX graph: that is not inference memory.
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result.update(_cost(backend, path, card.preprocess.input_size))
    model.close()
    return result


def _accuracy(
    model: Any, paths: list[str], labels: list[str], spec_in: dict[str, Any]
) -> dict[str, Any]:
    from wbc_edge.metrics import classification_report

    probs, y = model.score(paths, labels, f"the data of {spec_in['path']}", max(spec_in["batches"]))
    np.save(spec_in["probs_out"], probs.astype(np.float32))
    report = classification_report(probs, y, model.class_names)
    return {"accuracy": report.accuracy, "macro_f1": report.macro_f1}


def _cost(backend: Any, path: str, input_size: int) -> dict[str, Any]:
    from wbc_edge.benchmarks.cost import onnx_cost, torch_cost

    try:
        if backend.name == "torch":
            return torch_cost(backend.model, input_size)
        if str(path).lower().endswith(".onnx"):
            return onnx_cost(path, input_size)
    except UserError as exc:  # e.g. onnx not installed on a runtime-only Jetson
        return {"params": None, "macs": None, "cost_method": f"not counted: {exc}"}
    return {"params": None, "macs": None, "cost_method": "not counted for a TensorRT engine"}


def main(argv: list[str]) -> int:
    spec_in = json.loads(Path(argv[0]).read_text())
    try:
        _emit("result", **measure(spec_in))
    except UserError as exc:
        _emit("error", message=str(exc))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
