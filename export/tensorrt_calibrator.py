"""Implicit INT8 calibration for TensorRT 8.5-10.x: an ``IInt8EntropyCalibrator2`` fed WBC
images through the card's preprocessing (or a calibration cache written by ``export int8``).

Deprecated since TensorRT 10.1 and gone in 11, where INT8 comes only from a Q/DQ ONNX;
:func:`~wbc_edge.export.tensorrt_build.build_engine` asks for a calibrator only where
:func:`~wbc_edge.model.tensorrt_versions.features` says implicit INT8 exists.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.data.manifest import ManifestRow
from wbc_edge.export import calib_cache
from wbc_edge.model.card import ModelCard, Preprocess
from wbc_edge.model.labelled import read_labelled
from wbc_edge.optional import require

CALIB_BATCH = 8


def calibration_batches(
    paths: Sequence[Path], spec: Preprocess, batch_size: int = CALIB_BATCH
) -> Iterator[np.ndarray]:
    """Full float32 NCHW batches for TensorRT's calibrator (a short tail batch is dropped:
    the calibration profile fixes the batch size)."""
    for start in range(0, len(paths) - batch_size + 1, batch_size):
        images = [read_labelled(p, "the manifest") for p in paths[start : start + batch_size]]
        yield np.ascontiguousarray(spec(images), dtype=np.float32)


def make_calibrator(
    trt: Any,
    card: ModelCard,
    rows: Sequence[ManifestRow] | None,
    cache_path: str | Path | None,
    engine: Path,
    trt_version: str,
    input_size: int,
) -> Any:
    """An IInt8EntropyCalibrator2 over WBC images in pycuda buffers, or over a cache."""
    cuda = require("pycuda.driver")
    require("pycuda.autoinit")  # creates the CUDA context the buffers live in
    cache_text = None
    if cache_path is not None:
        cache_text = calib_cache.with_header(Path(cache_path).read_text(), trt_version)
    paths = [r.path for r in rows] if rows else []
    write_to = engine.with_name(engine.name + ".calib.cache")
    batches = calibration_batches(paths, card.preprocess, CALIB_BATCH)
    nbytes = CALIB_BATCH * 3 * input_size * input_size * 4

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.device_input = cuda.mem_alloc(nbytes)

        def get_batch_size(self) -> int:
            return CALIB_BATCH

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(batches, None)
            if batch is None:
                return None
            cuda.memcpy_htod(self.device_input, batch)
            return [int(self.device_input)]

        def read_calibration_cache(self) -> bytes | None:
            return cache_text.encode() if cache_text else None

        def write_calibration_cache(self, cache: Any) -> None:
            write_to.write_bytes(bytes(cache))

    return EntropyCalibrator()
