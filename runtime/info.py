"""``wbc-edge info [--model MODEL]``: what a model file is, read from its card (and an
engine's sidecar).

Printed as plain ``key: value`` lines on stdout, so it is whole in a log and easy to grep.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from wbc_edge.calibration import certificate_text
from wbc_edge.model.adaptation import adaptation_notes, adaptation_summary
from wbc_edge.model.card import ModelCard, Preprocess

# Card extras shown in their own lines; everything else is listed under "other" (an adaptation
# is shown in short with its notes; `info --json` prints all of it).
_SHOWN = {
    "role", "provenance", "intended_use", "method", "seed", "epochs", "teacher",
    "teacher_test_accuracy", "format", "precision", "opset", "int8_target", "calibration_method",
    "calibration_images", "calibration_fingerprint", "int8_weight_bits", "adaptation",
    "synthetic",
}  # fmt: skip


def read_any_card(path: Path) -> tuple[Any, dict[str, Any]]:
    """The card of any artifact and, for an engine, its sidecar's other fields (build key)."""
    from wbc_edge.errors import require_file
    from wbc_edge.model.backends import backend_kind
    from wbc_edge.model.backends.onnxruntime import read_onnx_card
    from wbc_edge.model.card import read_sidecar

    kind = backend_kind(path)
    require_file(path, "model file", "pass an .onnx, .engine or .pt file")
    if kind == "onnxruntime":
        return read_onnx_card(path), {}
    if kind == "tensorrt":
        return read_sidecar(path)
    from wbc_edge.kd.checkpoint import read_checkpoint  # a .pt needs torch (train extra)

    payload = read_checkpoint(path)
    return ModelCard.from_dict(payload["card"]), {"epoch": payload.get("epoch")}


def training_text(card: ModelCard) -> str:
    """``method kd, epochs 40, seed 1, teacher ...``: how the card's model was trained ("" if
    not recorded); ``info`` and the report's card section both print it."""
    x = card.extra
    return ", ".join(
        f"{k} {x[k]}" for k in ("method", "epochs", "seed", "teacher") if x.get(k) is not None
    )


def training_data_lines(card: ModelCard) -> list[str]:
    """One line per lab the model was trained on: images per split, classes, source, terms
    (nothing for a card that does not list its data)."""
    out = []
    for d in card.training_data:
        images = d.get("images", {})
        split = ", ".join(f"{k} {v}" for k, v in images.items())
        classes = d.get("classes", {})
        out.append(
            f"{d.get('lab', '?')}: {sum(images.values())} images ({split}), "
            f"{len(classes)} classes; {d.get('source') or 'source not stated'}; "
            f"terms: {d.get('terms') or 'not stated'}"
        )
    return out


def metrics_text(metrics: dict[str, Any]) -> str:
    """``test_accuracy 97.22%, test_ece 0.0138, ...``: the card's measured figures ("" if none)."""
    return ", ".join(
        f"{k} {100 * v:.2f}%" if "ece" not in k else f"{k} {v:.4f}"
        for k, v in metrics.items()
        if isinstance(v, (int, float))
    )


def card_lines(path: Path) -> list[str]:
    """The card as ``key: value`` lines, in the order a user asks about them."""
    from wbc_edge.model.names import model_name

    card, fields = read_any_card(path)
    x = card.extra
    lines = [
        f"model: {path}",
        f"name: {model_name(card)} ({card.architecture}, {x.get('role', 'role not recorded')})",
        f"format: {x.get('format', path.suffix.lstrip('.'))}, precision "
        f"{x.get('precision', 'fp32')}, INT8 target {x.get('int8_target', 'none (not INT8)')}",
        f"classes ({card.num_classes}): {', '.join(card.class_names)}",
        _input_line(card.preprocess),
    ]
    prov = x.get("provenance") or {}
    trained = training_text(card)
    lines.append(f"training: {trained or 'not recorded'}; data fingerprint {card.data_fingerprint}")
    lines += [f"data: {t}" for t in training_data_lines(card)]
    for key, value in prov.items():
        lines.append(f"provenance.{key}: {value}")
    metrics = metrics_text(card.metrics)
    lines.append(f"accuracy: {metrics or 'not measured'}")
    threshold = card.confidence_threshold
    lines.append(
        f"calibration: temperature {card.temperature:g}, review threshold "
        + (f"{threshold:g}" if threshold is not None else "none certified (run's default)")
        + (f"; {certificate_text(card.calibration)}" if card.calibration else "")
    )
    if "calibration_method" in x:
        lines.append(
            f"int8 calibration: {x['calibration_method']} on {x.get('calibration_images')} "
            f"images (fingerprint {x.get('calibration_fingerprint')}), "
            f"{x.get('int8_weight_bits', 8)}-bit weights"
        )
        from wbc_edge.model.backends.onnxruntime import int8_saturation_warning

        warning = int8_saturation_warning(card, path)
        if warning:
            lines.append(f"warning: {warning}")
    if "engine_key" in fields:
        lines.append(f"engine key: {fields['engine_key']}")
        for key in ("tensorrt_version", "device", "precision", "int8_mode", "batch", "dla_core"):
            if key in fields:
                lines.append(f"engine.{key}: {fields[key]}")
    if "intended_use" in x:
        lines.append(f"intended use: {x['intended_use']}")
    if x.get("synthetic"):
        lines.append(f"SYNTHETIC DATA, NOT CLINICAL: {x['synthetic']}")
    summary = adaptation_summary(card)
    if summary:
        lines.append(f"adaptation: {summary}")
        lines += [f"adaptation note: {note}" for note in adaptation_notes(card)]
    other = {k: v for k, v in x.items() if k not in _SHOWN}
    if other:
        lines.append(f"other: {json.dumps(other, sort_keys=True, default=str)}")
    return lines


def info(
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="Model file (.onnx, .engine with its .json, .pt) [default: the packaged student].",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole card as JSON.")] = False,
) -> None:
    """Print a model's card: classes, input, provenance, accuracy, calibration, INT8 target,
    engine key."""
    if model is None:
        from wbc_edge.models import default_model

        model = default_model()
    if as_json:
        card, fields = read_any_card(model)
        typer.echo(json.dumps({"card": card.to_dict(), **fields}, indent=2, default=str))
        return
    typer.echo("\n".join(card_lines(model)))


def _input_line(pre: Preprocess) -> str:
    crop = "whole image"
    if pre.crop_fraction != 1.0 or pre.crop_aspect is not None:
        shape = "image's shape" if pre.crop_aspect is None else f"aspect {pre.crop_aspect:g}"
        crop = f"centre {pre.crop_fraction:g} of the side, {shape}"
    return (
        f"input: {pre.input_size}x{pre.input_size} {pre.channel_order}, crop {crop}, "
        f"interpolation {pre.interpolation}, mean {list(pre.mean)}, std {list(pre.std)}, "
        + (
            f"stain normalisation {pre.stain.method} over {pre.stain.over} pixels"
            if pre.stain
            else "no stain normalisation"
        )
    )
