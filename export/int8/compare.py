"""FP32 against INT8: accuracy, macro-F1 and agreement on a held-out split, and the sweep of
every CPU setting with its single-thread latency (``export int8-sweep``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.console import progress
from wbc_edge.data.manifest import ManifestRow
from wbc_edge.errors import UserError
from wbc_edge.export.int8.calibration import _read
from wbc_edge.metrics import agreement, classification_report
from wbc_edge.optional import require
from wbc_edge.runtime.card import ModelCard

ort = require("onnxruntime")


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
    check_labels(card, rows, "evaluation")
    y = np.array([card.class_names.index(r.label) for r in rows])
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
    """Class probabilities of an ONNX model (output ``probs``) on manifest images."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name
    spec = card.preprocess
    chunks = []
    with progress() as p:
        task = p.add_task(label, total=len(rows), status="")
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            x = spec([_read(r.path) for r in chunk])
            chunks.append(sess.run(["probs"], {input_name: x})[0])
            p.advance(task, len(chunk))
    return np.concatenate(chunks) if chunks else np.zeros((0, card.num_classes), np.float32)


def check_labels(card: ModelCard, rows: Sequence[ManifestRow], what: str) -> None:
    unknown = sorted({r.label for r in rows} - set(card.class_names))
    if unknown:
        raise UserError(
            f"{what} images have classes the model does not know: {unknown}; "
            f"the model's classes are {card.class_names}"
        )
