"""Score any model artifact on a split manifest or a class-folder tree.

The model is opened through the runtime's backend loader (``.pt``, ``.onnx``, INT8 ``.onnx``,
``.engine``), so a number measured here is the number the deployed artifact gives: images go
through the card's own preprocessing spec, not the training pipeline.

Several models are scored as an ensemble: each member runs through its own backend at its own
card's input size and preprocessing, and the ensemble's probabilities are the mean of the
members' (each calibrated by its card's temperature). The report names the members with their
own scores beside the ensemble's.

Outputs (``--out DIR``): ``metrics.json`` (summary, per class, confusion matrix),
``report.md`` (the same as tables), ``confusion.png``, ``predictions.csv``.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.errors import UserError
from wbc_edge.metrics import ClassificationReport, classification_report
from wbc_edge.model.card import ModelCard
from wbc_edge.model.labelled import dihedral_views as dihedral_views  # its home
from wbc_edge.records import markdown_table, portable_path, record_header


@dataclass
class Sample:
    path: Path
    label: str
    lab: str = ""  # the manifest's lab column (several labs joined), else empty


def predict_loader(model: Any, loader: Any, device: Any) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and targets of a torch model over a ``BatchLoader``."""
    import torch

    model.eval()
    probs, ys = [], []
    with torch.no_grad():
        for batch in loader:
            logits = model(batch.images.to(device))
            probs.append(torch.softmax(logits.float(), 1).cpu().numpy())
            ys.append(batch.targets.numpy())
    return np.concatenate(probs), np.concatenate(ys)


def load_samples(data: str | Path, split: str | None = "test") -> list[Sample]:
    """Labelled images from a split manifest (one split) or every image of a class-folder tree."""
    data = Path(data)
    if data.is_dir():
        from wbc_edge.data.scan import scan_class_folders

        return [Sample(f.path, f.label) for f in scan_class_folders(data)]
    if not data.is_file():
        raise UserError(
            f"data not found: {data}; pass a split manifest (.csv) or a folder of class folders"
        )
    from wbc_edge.data.manifest import read_manifest

    return [Sample(r.path, r.label, r.lab) for r in read_manifest(data, split)]


@dataclass
class Predictions:
    """A model's probabilities on labelled samples, made through its runtime backend."""

    samples: list[Sample]
    probs: np.ndarray  # (N, C) float64, calibrated by the card's temperature
    y: np.ndarray  # (N,) class indices in the card's order
    card: ModelCard
    backend: str


def predict(
    model_path: str | Path,
    data: str | Path,
    split: str | None = "test",
    batch_size: int = 32,
    views: int = 1,
) -> Predictions:
    """Run every sample of ``data`` (one split of a manifest, or a class-folder tree) through the
    model's backend, decoded and preprocessed as `run` does.

    ``views=8`` averages the calibrated probabilities over the 8 dihedral views (test-time
    augmentation: a blood cell has no up or left, so every view is an equally valid image)."""
    from wbc_edge.model.model import Model

    samples = load_samples(data, split)
    with Model.load(model_path) as model:
        probs_all, y = model.score(
            [s.path for s in samples],
            [s.label for s in samples],
            str(data),
            batch_size,
            views,
            label=f"evaluating {Path(model_path).name}",
        )
        card, backend_name = model.card, model.name
    return Predictions(samples, probs_all, y, card, backend_name)


def ensemble_probs(members: Sequence[Predictions]) -> np.ndarray:
    """The mean of the members' calibrated probabilities on the same samples; a UserError when
    the members do not share one class list (their probabilities would not line up)."""
    first = members[0]
    for m in members[1:]:
        if m.card.class_names != first.card.class_names:
            raise UserError(
                f"an ensemble's models must share one class list: {first.card.class_names} "
                f"against {m.card.class_names}"
            )
    return np.mean([m.probs for m in members], axis=0)


def evaluate(
    model_path: str | Path | Sequence[str | Path],
    data: str | Path,
    split: str | None = "test",
    out: str | Path | None = None,
    batch_size: int = 32,
    views: int = 1,
) -> dict[str, Any]:
    """Predict every sample, compute the shared metrics, and write the report files to ``out``.

    Besides accuracy and ECE it reports selective classification at the card's
    ``confidence_threshold``: coverage (share of cells counted) and the error of counted cells.

    Several paths score their ensemble (the mean of the members' calibrated probabilities, see
    :func:`ensemble_probs`); ``result["members"]`` holds each member's own scores. No member's
    threshold was certified for the ensemble, so every cell counts in its coverage line.
    """
    from wbc_edge.calibration import selective

    t0 = time.time()
    paths = [model_path] if isinstance(model_path, str | Path) else list(model_path)
    if not paths:
        raise UserError("evaluate needs at least one --model")
    preds = [predict(path, data, split, batch_size, views) for path in paths]
    single = len(preds) == 1
    pred = preds[0]
    card = pred.card
    probs = pred.probs if single else ensemble_probs(preds)
    report = classification_report(probs, pred.y, card.class_names)
    threshold = card.confidence_threshold if single else None
    counted = selective(probs, pred.y, threshold)
    result = {
        **record_header(),
        "model": portable_path(paths[0])
        if single
        else " + ".join(portable_path(p) for p in paths),
        "backend": " + ".join(dict.fromkeys(p.backend for p in preds)),
        "architecture": " + ".join(p.card.architecture for p in preds),
        "data": portable_path(data),
        "split": split if Path(data).is_file() else None,
        "num_images": len(pred.samples),
        "input_size": card.preprocess.input_size
        if single
        else [p.card.preprocess.input_size for p in preds],
        "views": views,
        **report.summary(),
        "temperature": card.temperature if single else None,
        "confidence_threshold": threshold,
        "target_error": card.calibration.get("target_error") if single else None,
        "coverage": counted.coverage,
        "counted_error": counted.error,
        "per_class": report.per_class,
        "class_names": card.class_names,
        "confusion": report.confusion.tolist(),
        "seconds": round(time.time() - t0, 2),
    }
    labs = [s.lab for s in pred.samples]
    if any(labs):
        result["per_lab"] = per_lab_scores(probs, pred.y, labs, card.class_names, threshold)
    if not single:
        result["members"] = [_member(path, p) for path, p in zip(paths, preds, strict=True)]
    if out is not None:
        write_report(Path(out), result, report, pred.samples, probs, card.class_names)
    return result


def per_lab_scores(
    probs: np.ndarray,
    y: np.ndarray,
    labs: Sequence[str],
    names: Sequence[str],
    threshold: float | None,
) -> dict[str, dict[str, Any]]:
    """Accuracy, macro-F1 over the lab's own classes, and counted share and error, per lab."""
    from wbc_edge.calibration import selective

    lab_arr = np.asarray(labs)
    out: dict[str, dict[str, Any]] = {}
    for lab in sorted(set(labs)):
        sel = lab_arr == lab
        p, t = probs[sel], y[sel]
        own = sorted(set(t.tolist()))
        f1s = []
        pred = p.argmax(1)
        for c in own:
            tp = int(((pred == c) & (t == c)).sum())
            fp, fn = int(((pred == c) & (t != c)).sum()), int(((pred != c) & (t == c)).sum())
            f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
        counted = selective(p, t, threshold)
        out[lab] = {
            "images": int(sel.sum()),
            "accuracy": float((pred == t).mean()),
            "macro_f1": float(np.mean(f1s)),
            "classes": [names[c] for c in own],
            "coverage": counted.coverage,
            "counted_error": counted.error,
        }
    return out


def _member(path: str | Path, pred: Predictions) -> dict[str, Any]:
    """One ensemble member's own scores, for the report beside the ensemble's."""
    rep = classification_report(pred.probs, pred.y, pred.card.class_names).summary()
    return {
        "model": portable_path(path),
        "backend": pred.backend,
        "architecture": pred.card.architecture,
        "input_size": pred.card.preprocess.input_size,
        "temperature": pred.card.temperature,
        **{k: rep[k] for k in ("accuracy", "macro_f1", "ece")},
    }


def write_report(
    out: Path,
    result: dict[str, Any],
    report: ClassificationReport,
    samples: list[Sample],
    probs: np.ndarray,
    names: list[str],
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "report.md").write_text(markdown(result))
    models = [m["model"] for m in result.get("members", [])] or [result["model"]]
    title = " + ".join(Path(m).name for m in models)
    plot_confusion(report.confusion, names, out / "confusion.png", title=title)
    with open(out / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "label", "predicted", "confidence"])
        for s, p in zip(samples, probs, strict=True):
            w.writerow(
                [portable_path(s.path), s.label, names[int(p.argmax())], f"{p.max():.4f}"]
            )


def markdown(result: dict[str, Any]) -> str:
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    members = result.get("members")
    title = (
        "the ensemble of " + ", ".join(f"`{Path(m['model']).name}`" for m in members)
        if members
        else f"`{Path(result['model']).name}`"
    )
    lines = [
        f"# Evaluation of {title}",
        "",
        f"- date: {result['date']}; machine: {result['machine']}",
        f"- command: `{result['command']}`",
        f"- data: `{result['data']}`" + (f" (split {result['split']})" if result["split"] else ""),
    ]
    views = f", the mean over {result['views']} dihedral views" if result["views"] > 1 else ""
    if members:
        lines += [
            f"- images: {result['num_images']}{views}; the ensemble's probabilities are the mean "
            "of its members' (each calibrated by its own card's temperature)",
            "",
            markdown_table(
                [
                    "member",
                    "architecture",
                    "input px",
                    "backend",
                    "temperature",
                    "accuracy",
                    "macro F1",
                    "ECE",
                ],
                [
                    [
                        f"`{m['model']}`",
                        m["architecture"],
                        m["input_size"],
                        m["backend"],
                        "none" if m["temperature"] is None else f"{m['temperature']:.3f}",
                        f"{pct(m['accuracy'])}%",
                        f"{pct(m['macro_f1'])}%",
                        f"{m['ece']:.4f}",
                    ]
                    for m in members
                ],
            ),
        ]
    else:
        lines.append(
            f"- images: {result['num_images']}{views}, input {result['input_size']} px, "
            f"backend {result['backend']}, architecture {result['architecture']}"
        )
    summary = [
        f"{pct(result['accuracy'])}%",
        f"{pct(result['macro_precision'])}%",
        f"{pct(result['macro_recall'])}%",
        f"{pct(result['macro_f1'])}%",
        f"{result['ece']:.4f}",
    ]
    per_class = [
        [name, pct(c["precision"]), pct(c["recall"]), pct(c["f1"]), c["support"]]
        for name, c in result["per_class"].items()
    ]
    names = result["class_names"]
    confusion = [[name, *row] for name, row in zip(names, result["confusion"], strict=True)]
    lines += [
        "",
        markdown_table(
            ["accuracy", "macro precision", "macro recall", "macro F1", "ECE"], [summary]
        ),
        "",
        _selective_line(result),
        "",
        *_per_lab_lines(result),
        markdown_table(["class", "precision", "recall", "F1", "support"], per_class),
        "",
        "Confusion matrix (rows: true class, columns: predicted)",
        "",
        markdown_table(["", *(n[:6] for n in names)], confusion),
    ]
    return "\n".join(lines) + "\n"


def _per_lab_lines(result: dict[str, Any]) -> list[str]:
    """The per-lab table, when the data joins several labs (else nothing)."""
    per_lab = result.get("per_lab")
    if not per_lab:
        return []
    rows = [
        [
            lab,
            m["images"],
            f"{100 * m['accuracy']:.2f}%",
            f"{100 * m['macro_f1']:.2f}%",
            f"{100 * m['coverage']:.1f}%",
            f"{100 * m['counted_error']:.2f}%",
        ]
        for lab, m in per_lab.items()
    ]
    head = ["lab", "images", "accuracy", "macro F1 (its classes)", "counted", "counted error"]
    return ["Per lab:", "", markdown_table(head, rows), ""]


def _selective_line(result: dict[str, Any]) -> str:
    thr = result.get("confidence_threshold")
    counted = (
        f"coverage {100 * result['coverage']:.1f}% (cells counted), error of counted cells "
        f"{100 * result['counted_error']:.2f}%"
    )
    if result.get("members"):
        return (
            f"No confidence threshold is certified for an ensemble: every cell counted, {counted}."
        )
    if thr is None:
        return f"No certified confidence threshold in the card: every cell counted, {counted}."
    target = result.get("target_error")
    aim = f" (target {100 * target:g}%)" if target is not None else ""
    return (
        f"At the card's confidence threshold {thr:.4f}{aim}, temperature "
        f"{result['temperature']:.3f}: {counted}."
    )


def plot_confusion(cm: np.ndarray, names: list[str], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(names), 0.8 + 0.6 * len(names)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = cm.max() if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                color = "white" if cm[i, j] > top / 2 else "black"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=color, fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
