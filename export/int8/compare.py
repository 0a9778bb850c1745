"""FP32 against INT8: accuracy, macro-F1 and agreement on a held-out split, and the sweep of
every CPU setting with its single-thread latency (``export int8-sweep``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.data.manifest import ManifestRow
from wbc_edge.metrics import agreement, classification_report
from wbc_edge.model.card import ModelCard
from wbc_edge.model.labelled import check_labels


@dataclass
class Int8Report:
    """FP32 against INT8 on a held-out split, plus what produced the INT8 file."""

    onnx: str
    out: str
    calibration_cache: str
    target: str
    method: str
    settings: dict[str, Any]
    num_calibration: int
    calibration_fingerprint: str
    eval_split: str
    num_eval: int
    fp32: dict[str, float] = field(default_factory=dict)
    int8: dict[str, float] = field(default_factory=dict)
    agreement: float = float("nan")
    fp32_bytes: int = 0
    int8_bytes: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def accuracy_drop_points(self) -> float:
        return 100.0 * (self.fp32.get("accuracy", 0.0) - self.int8.get("accuracy", 0.0))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["accuracy_drop_points"] = self.accuracy_drop_points
        return d


def compare_on(
    report: Int8Report, fp32: Path, int8: Path, card: ModelCard, rows: Sequence[ManifestRow]
) -> None:
    """Fill ``report`` with FP32 and INT8 accuracy, macro-F1 and top-1 agreement on ``rows``."""
    y = check_labels(card, [r.label for r in rows], "the evaluation split")
    p32 = predict_probs(fp32, rows, card, "FP32")
    p8 = predict_probs(int8, rows, card, "INT8")
    r32 = classification_report(p32, y, card.class_names)
    r8 = classification_report(p8, y, card.class_names)
    report.fp32 = {"accuracy": r32.accuracy, "macro_f1": r32.macro_f1}
    report.int8 = {"accuracy": r8.accuracy, "macro_f1": r8.macro_f1}
    report.agreement = agreement(p32, p8)


def predict_probs(
    path: str | Path,
    rows: Sequence[ManifestRow],
    card: ModelCard,
    label: str = "predict",
    batch_size: int = 32,
) -> np.ndarray:
    """Class probabilities of an ONNX model on manifest images, through the runtime's ONNX
    Runtime backend on the CPU (:func:`wbc_edge.model.labelled.score`). Images decode in
    full, as the calibration images do, so the comparison isolates quantization."""
    from wbc_edge.model.model import Model

    with Model.load(path, device="cpu") as model:
        probs, _ = model.score(
            [r.path for r in rows],
            [r.label for r in rows],
            "the evaluation split",
            batch_size,
            min_side=0,
            label=label,
        )
    return probs.astype(np.float32)
