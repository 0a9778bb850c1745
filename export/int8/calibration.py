"""Calibration: activation ranges of every float tensor from WBC images.

Images go through the model card's own preprocessing (``card.preprocess``), the same code the
runtime uses, so the ranges are those the deployed model meets. One pass (ONNX Runtime's
calibrators, run here so the statistics are ours) feeds both the quantized ONNX and the
TensorRT calibration cache.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.console import progress
from wbc_edge.data.manifest import ManifestRow
from wbc_edge.errors import UserError
from wbc_edge.export import DEFAULT_CALIB_METHOD, calib_cache
from wbc_edge.model.card import Preprocess
from wbc_edge.model.labelled import read_labelled
from wbc_edge.optional import require

onnx = require("onnx")
quant = require("onnxruntime.quantization")


METHODS = {
    "entropy": quant.CalibrationMethod.Entropy,
    "percentile": quant.CalibrationMethod.Percentile,
    "minmax": quant.CalibrationMethod.MinMax,
}


CALIB_CHUNK = 64  # images per calibrator pass: bounds the intermediate outputs held in memory


CALIB_BATCH = 16


class ImageReader(quant.CalibrationDataReader):
    """Feeds ONNX Runtime's calibrator batches of images prepared exactly as the runtime does."""

    def __init__(
        self,
        paths: Sequence[Path],
        spec: Preprocess,
        input_name: str = "input",
        batch_size: int = 16,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.paths = list(paths)
        self.spec = spec
        self.input_name = input_name
        self.batch_size = batch_size
        self.on_batch = on_batch
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.paths):
            return None
        chunk = self.paths[self._next : self._next + self.batch_size]
        self._next += len(chunk)
        batch = self.spec([read_labelled(p, "the calibration split") for p in chunk])
        if self.on_batch:
            self.on_batch(len(chunk))
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._next = 0


def select_calibration_rows(
    rows: Sequence[ManifestRow], num: int, seed: int = 0
) -> list[ManifestRow]:
    """``num`` rows, classes interleaved (round robin over shuffled classes) so every class is
    represented even when ``num`` is small; deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[ManifestRow]] = {}
    for r in sorted(rows, key=lambda r: (r.label, str(r.path))):
        by_class.setdefault(r.label, []).append(r)
    queues = []
    for label in sorted(by_class):
        items = by_class[label]
        queues.append([items[i] for i in rng.permutation(len(items))])
    picked: list[ManifestRow] = []
    depth = 0
    while len(picked) < num and any(depth < len(q) for q in queues):
        picked.extend(q[depth] for q in queues if depth < len(q))
        depth += 1
    return picked[:num]


def calibrate(
    onnx_path: str | Path,
    paths: Sequence[Path],
    spec: Preprocess,
    method: str = DEFAULT_CALIB_METHOD,
    symmetric: bool = True,
) -> Any:
    """ONNX Runtime ``TensorsData``: a calibrated range for every float tensor of the graph.

    Every tensor, not only those the chosen target quantizes, so the TensorRT cache covers the
    whole network. Images go through in chunks: the calibrators hold all intermediate outputs
    of one ``collect_data`` call in memory.
    """
    if method not in METHODS:
        raise UserError(f"unknown calibration method {method!r}: use {', '.join(METHODS)}")
    if not paths:
        raise UserError("no calibration images: the manifest split is empty")
    input_name = graph_input_name(onnx_path)
    with tempfile.TemporaryDirectory(prefix="wbc-calib-") as tmp:
        calibrator = quant.create_calibrator(
            Path(onnx_path),
            None,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=METHODS[method],
            extra_options={"symmetric": symmetric},
        )
        with progress() as p:
            task = p.add_task(f"calibrate ({method})", total=len(paths), status="")
            for chunk, batch_size in calibration_chunks(len(paths)):
                reader = ImageReader(
                    [paths[i] for i in chunk],
                    spec,
                    input_name,
                    batch_size,
                    on_batch=lambda n: p.advance(task, n),
                )
                with quiet_ort_logging():
                    calibrator.collect_data(reader)
            p.update(task, status="computing ranges")
            with quiet_ort_logging():
                ranges = calibrator.compute_data()
        del calibrator
    return ranges


def calibration_chunks(n: int) -> list[tuple[range, int]]:
    """(image indices, batch size) of each calibrator pass.

    Every batch within one pass has the same size (ONNX Runtime stacks a pass's outputs into
    one array), and a pass holds at most CALIB_CHUNK images; the remainder gets its own pass.
    """
    full = n - n % CALIB_BATCH
    chunks = [
        (range(start, min(start + CALIB_CHUNK, full)), CALIB_BATCH)
        for start in range(0, full, CALIB_CHUNK)
    ]
    if n % CALIB_BATCH:
        chunks.append((range(full, n), n - full))
    return chunks


def cache_scales(ranges: Any) -> dict[str, float]:
    """TensorRT scales (amax / 127) of calibrated ranges."""
    scales = {}
    for name, data in ranges.items():
        lo, hi = data.range_value
        scales[name] = calib_cache.scale_from_range(float(np.min(lo)), float(np.max(hi)))
    return scales


def graph_input_name(onnx_path: str | Path) -> str:
    proto = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    return next(i.name for i in proto.graph.input if i.name not in inits)


@contextlib.contextmanager
def quiet_ort_logging() -> Iterator[None]:
    """Keep ONNX Runtime's quantization chatter off stdout (it prints progress; our bar shows
    it) and drop its advice to pre-process: pre-processing renames tensors, and the TensorRT
    cache must use the FP32 graph's names."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
