"""Inference backends: load a model file, predict a batch, return class probabilities.

``load_backend(path)`` picks the backend by file type (``.onnx`` -> ONNX Runtime,
``.engine``/``.plan`` -> TensorRT, ``.pt``/``.pth`` -> PyTorch). Every backend exposes the
model card (classes and preprocessing) and follows one lifecycle, so callers never care which
one they hold:

    with load_backend("student.onnx") as model:
        probs = model.predict(model.card.preprocess_spec()(images_bgr))  # (N, C) float32

Only the chosen backend's packages are imported; the ONNX and TensorRT paths never import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from wbc_edge.errors import UserError
from wbc_edge.runtime.card import ModelCard


@runtime_checkable
class Backend(Protocol):
    card: ModelCard
    name: str  # "onnxruntime", "tensorrt", "torch"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 NCHW -> (N, num_classes) probabilities."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc: object) -> None: ...


SUFFIXES = {
    ".onnx": "onnxruntime",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
    ".trt": "tensorrt",
    ".pt": "torch",
    ".pth": "torch",
}


def backend_kind(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(
            f"{path}: unknown model type {suffix!r}; expected one of {', '.join(sorted(SUFFIXES))}"
        )
    return SUFFIXES[suffix]
