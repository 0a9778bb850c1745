"""PyTorch -> ONNX: one self-describing file, checked against PyTorch before it is written.

The graph has one input ``input`` (float32 NCHW, dynamic batch) and two outputs: ``logits``,
raw, and ``probs`` = softmax(logits / T) with the card's calibration temperature T inside the
graph, so a consumer outside wbc-edge (Triton, another runtime) gets calibrated probabilities
without re-implementing anything. wbc-edge's own backends read ``logits`` and divide by the
card's T themselves (one rule for .pt, .onnx and .engine). The model card travels in
``metadata_props`` under :data:`wbc_edge.model.card.ONNX_METADATA_KEY`.

The file is verified before it lands: ``onnx.checker``, then ONNX Runtime against PyTorch on the
same images. A mismatch fails with the numbers and leaves nothing behind (written to a temporary
name, renamed only when it passed), so a half-working ``student.onnx`` never reaches a device.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge import __version__
from wbc_edge.data.manifest import ManifestRow
from wbc_edge.errors import UserError
from wbc_edge.export import DEFAULT_OPSET
from wbc_edge.model.backends import softmax
from wbc_edge.model.card import ONNX_METADATA_KEY, ModelCard
from wbc_edge.model.labelled import read_labelled
from wbc_edge.optional import require

INPUT_NAME = "input"
OUTPUT_NAMES = ("logits", "probs")
# Tolerances of the PyTorch/ONNX Runtime comparison. FP32 kernels differ in summation order only,
# so probabilities agree to ~1e-6; 1e-4 leaves room for deep models without hiding a real bug.
PROB_ATOL = 1e-4
LOGIT_RTOL = 1e-3


@dataclass
class ParityReport:
    """How closely ONNX Runtime reproduces PyTorch on ``num_images`` inputs."""

    num_images: int
    source: str  # "manifest" or "random"
    max_abs_diff_logits: float
    max_abs_diff_probs: float
    top1_agreement: float
    unexplained_flips: int  # top-1 changes where PyTorch's top-2 margin exceeds the tolerance

    @property
    def ok(self) -> bool:
        return self.max_abs_diff_probs <= PROB_ATOL and self.unexplained_flips == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return (
            f"max |Δlogit| {self.max_abs_diff_logits:.2e}, max |Δprob| "
            f"{self.max_abs_diff_probs:.2e}, top-1 agreement {self.top1_agreement:.4f} "
            f"on {self.num_images} {self.source} images"
        )


def sample_inputs(
    card: ModelCard, rows: Sequence[ManifestRow] | None = None, num: int = 16, seed: int = 0
) -> tuple[np.ndarray, str]:
    """A float32 NCHW batch for parity checks: real images when a manifest is given.

    Real images matter: a random tensor never exercises the value ranges a stained cell does.
    Rows are spread evenly over the (sorted) manifest so several classes are covered.
    """
    spec = card.preprocess
    if rows:
        ordered = sorted(rows, key=lambda r: (r.label, str(r.path)))
        idx = np.linspace(0, len(ordered) - 1, min(num, len(ordered))).round().astype(int)
        images = [
            read_labelled(ordered[i].path, "the manifest") for i in dict.fromkeys(idx.tolist())
        ]
        return spec(images), "manifest"
    rng = np.random.default_rng(seed)
    size = max(card.preprocess.input_size * 3 // 2, 8)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(num)]
    return spec(images), "random"


def export_onnx(
    model: Any,
    card: ModelCard,
    out: str | Path,
    opset: int = DEFAULT_OPSET,
    sample: np.ndarray | None = None,
    sample_source: str = "random",
    extra_metadata: dict[str, str] | None = None,
) -> ParityReport:
    """Export ``model`` (a torch module returning logits) to ``out`` with the card embedded.

    Raises UserError with the parity numbers when ONNX Runtime disagrees with PyTorch; ``out``
    is then left untouched.
    """
    torch = require("torch")
    onnx = require("onnx")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if sample is None:
        sample, sample_source = sample_inputs(card)
    model = model.eval()
    wrapped = _with_probs(model, card.temperature)
    size = card.preprocess.input_size
    # Batch 2 in the trace, so no exporter folds the batch dimension into a constant.
    dummy = torch.zeros(2, 3, size, size, dtype=torch.float32)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                wrapped,
                (dummy,),
                str(tmp),
                dynamo=False,  # the dynamo exporter needs onnxscript; TorchScript is enough here
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={n: {0: "batch"} for n in (INPUT_NAME, *OUTPUT_NAMES)},
                opset_version=opset,
                do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        exported = ModelCard.from_dict(card.to_dict())
        exported.extra = {**card.extra, "format": "onnx", "precision": "fp32", "opset": opset}
        set_metadata(proto, exported, extra_metadata)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        with torch.no_grad():
            ref = model(torch.from_numpy(sample)).float().numpy()
        got_logits, got_probs = run_onnx(tmp, sample)
        report = compare(ref, got_logits, got_probs, sample_source, card.temperature)
        if not report.ok:
            raise UserError(
                f"ONNX export of {card.architecture} does not match PyTorch: {report.line()} "
                f"(tolerance |Δprob| <= {PROB_ATOL:g}, no top-1 change beyond ties); "
                f"nothing written to {out}"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return report


def default_onnx_path(checkpoint: Path, card: ModelCard) -> Path:
    """Beside the checkpoint, named from its card (:mod:`wbc_edge.model.names`):
    ``runs/student/best.pt`` -> ``runs/student/student-tinyresnet_xs.onnx``."""
    from wbc_edge.model.names import file_name

    return checkpoint.with_name(file_name(card, "onnx"))


def set_metadata(proto: Any, card: ModelCard, extra: dict[str, str] | None = None) -> None:
    """Put the card (and producer fields) into ``metadata_props``, replacing older entries."""
    fields = {ONNX_METADATA_KEY: card.to_json(), **(extra or {})}
    keep = [p for p in proto.metadata_props if p.key not in fields]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in fields.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "wbc-edge"
    proto.producer_version = __version__


def run_onnx(path: str | Path, batch: np.ndarray, threads: int | None = None) -> list[np.ndarray]:
    """All outputs of an ONNX file on ``batch``, through the runtime's ONNX Runtime backend on
    the CPU (the path ``run`` takes)."""
    from wbc_edge.model.backends.onnxruntime import OnnxRuntimeBackend

    with OnnxRuntimeBackend(path, device="cpu", threads=threads or 0) as backend:
        return backend.run_outputs(batch)


def compare(
    ref_logits: np.ndarray,
    logits: np.ndarray,
    probs: np.ndarray,
    source: str = "random",
    temperature: float = 1.0,
) -> ParityReport:
    """Compare ONNX outputs with PyTorch logits; a top-1 flip only counts when not a near-tie.

    ``probs`` are compared with softmax(ref_logits / temperature), the graph's calibrated head.
    """
    ref_probs = softmax(ref_logits, temperature)
    diff_logits = float(np.abs(ref_logits - logits).max()) if len(logits) else 0.0
    diff_probs = float(np.abs(ref_probs - probs).max()) if len(probs) else 0.0
    ref_top = ref_logits.argmax(1)
    flips = ref_top != logits.argmax(1)
    top2 = np.sort(ref_logits, axis=1)[:, -2:] if ref_logits.shape[1] > 1 else None
    margin = (top2[:, 1] - top2[:, 0]) if top2 is not None else np.full(len(ref_top), np.inf)
    tol = LOGIT_RTOL * max(1.0, float(np.abs(ref_logits).max()) if len(ref_logits) else 1.0)
    return ParityReport(
        num_images=len(ref_logits),
        source=source,
        max_abs_diff_logits=diff_logits,
        max_abs_diff_probs=diff_probs,
        top1_agreement=float(1.0 - flips.mean()) if len(flips) else 1.0,
        unexplained_flips=int((flips & (margin > tol)).sum()),
    )


def onnx_io(onnx_path: str | Path) -> dict[str, Any]:
    """Names, shapes ("batch" for the dynamic axis) and types of an ONNX model's inputs/outputs,
    kept in the engine's sidecar so Triton and the runtime need not reopen the ONNX."""
    onnx = require("onnx")
    proto = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}

    def describe(v: Any) -> dict[str, Any]:
        t = v.type.tensor_type
        dims = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or -1) for d in t.shape.dim
        ]
        return {"name": v.name, "shape": dims, "dtype": onnx.TensorProto.DataType.Name(t.elem_type)}

    return {
        "inputs": [describe(v) for v in proto.graph.input if v.name not in inits],
        "outputs": [describe(v) for v in proto.graph.output],
    }


def load_checkpoint(path: str | Path) -> tuple[Any, ModelCard]:
    """Model and card of a wbc-edge checkpoint (kd owns the format)."""
    from wbc_edge.kd.checkpoint import load_model

    return load_model(path)


def _with_probs(model: Any, temperature: float = 1.0) -> Any:
    """Wrap ``model`` so the graph returns (logits, softmax(logits / T)): every consumer gets
    the same calibrated probabilities. A ``Div`` (not ``Mul``) so INT8 quantization, which
    leaves ``Div`` and ``Softmax`` in float, never rounds the calibrated logits. Built here so
    importing this module does not import torch."""
    torch = require("torch")

    class LogitsAndProbs(torch.nn.Module):
        def __init__(self, inner: Any, t: float) -> None:
            super().__init__()
            self.model = inner
            self.temperature = float(t)

        def forward(self, x: Any) -> tuple[Any, Any]:
            logits = self.model(x)
            return logits, torch.softmax(logits / self.temperature, dim=1)

    return LogitsAndProbs(model, temperature).eval()
