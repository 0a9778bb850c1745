"""Inference backends: load a model file, predict a batch, return class probabilities.

``load_backend(path)`` picks the backend by file type (``.onnx`` -> ONNX Runtime,
``.engine``/``.plan`` -> TensorRT, ``.pt``/``.pth`` -> PyTorch). Every backend exposes the
model card (classes and preprocessing) and follows one lifecycle, so callers never care which
one they hold. A backend runs the network on a prepared batch and nothing else: decoding,
preprocessing and the review rule around it are :class:`wbc_edge.model.model.Model`'s, the
one way to run a model (``Model.load(path)`` opens its backend here).

Probabilities are calibrated: each backend reads the model's logits and applies the card's
``temperature`` (:func:`softmax`), so ``.pt``, ``.onnx`` and ``.engine`` of one model agree.

Only the chosen backend's packages are imported; the ONNX and TensorRT paths never import torch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from wbc_edge.errors import UserError
from wbc_edge.model.card import ModelCard
from wbc_edge.model.defaults import DEVICE, THREADS


@runtime_checkable
class Backend(Protocol):
    card: ModelCard
    name: str  # "onnxruntime", "tensorrt", "torch"
    last_inference_s: float  # seconds the last predict() spent in the model itself

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


class BackendBase:
    """Lifecycle, input checks and timing shared by every backend.

    Subclasses set ``card`` and ``name`` and implement ``_infer`` (float32 NCHW -> probabilities)
    and ``close``; ``predict`` times ``_infer`` so callers can tell model time from pipeline time.
    """

    card: ModelCard
    name: str

    def __init__(self) -> None:
        self.last_inference_s = 0.0
        self.total_inference_s = 0.0
        self.images = 0

    def predict(self, batch: np.ndarray) -> np.ndarray:
        size = self.card.preprocess.input_size
        if batch.ndim != 4 or batch.shape[1:] != (3, size, size):
            raise ValueError(
                f"{self.name}: expected a float32 batch (N, 3, {size}, {size}), got {batch.shape}"
            )
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        start = time.perf_counter()
        probs = self._infer(batch) if len(batch) else np.zeros((0, self.card.num_classes))
        self.last_inference_s = time.perf_counter() - start
        self.total_inference_s += self.last_inference_s
        self.images += len(batch)
        if probs.shape != (len(batch), self.card.num_classes):
            raise ValueError(
                f"{self.name}: model returned shape {probs.shape}, but its card lists "
                f"{self.card.num_classes} classes"
            )
        return probs.astype(np.float32, copy=False)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release the model; safe to call twice."""

    def __enter__(self) -> BackendBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float32, stable for large logits.

    Backends pass the card's temperature, so every artifact of one model gives the same
    calibrated probabilities (the exported ONNX graph's ``probs`` divides by the same value).
    """
    z = logits.astype(np.float32, copy=False)
    if temperature != 1.0:
        z = z / np.float32(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def output_to_read(names: list[str]) -> str:
    """The output a backend reads: ``logits`` (the card's temperature is applied to them) when
    the graph has it, else a bare ``probs`` head, else the first output (taken as logits)."""
    if "logits" in names:
        return "logits"
    return "probs" if "probs" in names else names[0]


def load_backend(path: str | Path, device: str = DEVICE, threads: int = THREADS) -> Backend:
    """Open a model file with the backend its type calls for.

    ``device`` is ``"auto"`` (use an accelerator when one is present), ``"cpu"`` or ``"cuda"``;
    TensorRT engines always run on the GPU. ``threads`` sets ONNX Runtime's CPU threads (0: half
    the cores on CPU, leaving the rest to decoding). Only the chosen backend's packages load.
    """
    from wbc_edge.errors import require_file

    kind = backend_kind(path)
    require_file(path, "model file", "pass --model with an .onnx, .engine or .pt file")
    if kind == "onnxruntime":
        from wbc_edge.model.backends.onnxruntime import OnnxRuntimeBackend

        backend: Backend = OnnxRuntimeBackend(path, device=device, threads=threads)
    elif kind == "tensorrt":
        from wbc_edge.model.backends.tensorrt import TensorRTBackend

        backend = TensorRTBackend(path)
    else:
        backend = plugin_backend(kind)(path, device=device)
    try:
        check_against_card(backend, path)
    except BaseException:
        backend.close()
        raise
    return backend


def plugin_backend(kind: str) -> type:
    """A backend another part of wbc-edge provides, found through the ``wbc_edge.backends``
    entry points: the torch backend lives with the training code (``wbc_edge.kd``), which the
    model core does not import."""
    from importlib.metadata import entry_points

    found = list(entry_points(group="wbc_edge.backends", name=kind))
    if not found:  # every wheel declares it: the install's metadata is older than the code
        raise UserError(
            f"wbc-edge's install lists no {kind} backend: reinstall it (`pip install -e .` in a "
            "checkout), or export the model (`wbc-edge export onnx`)"
        )
    return found[0].load()


def check_against_card(backend: Backend, path: str | Path) -> None:
    """Run one blank image through the model before any real one: a card that does not match
    the model's graph (input size, class count) or a model that gives non-finite numbers fails
    the run here, once, instead of turning every file into an error record that a later run
    with a good model would then skip."""
    card = backend.card
    size = card.preprocess.input_size
    probe = card.preprocess.normalize(np.full((1, size, size, 3), 128, np.uint8))
    try:
        probs = backend.predict(probe)
    except Exception as exc:  # the backend's own error names the mismatch
        raise UserError(
            f"{path}: the model does not match its card ({size} px input, "
            f"{card.num_classes} classes): {exc}; re-export it with wbc-edge"
        ) from exc
    if not np.isfinite(probs).all():
        raise UserError(
            f"{path}: the model gives non-finite outputs for a plain grey image; check its "
            "weights and the card's mean/std"
        )
    # The probe is not a measurement.
    backend.last_inference_s = backend.total_inference_s = 0.0  # type: ignore[misc]
    backend.images = 0  # type: ignore[attr-defined]
