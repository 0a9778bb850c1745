"""Checkpoints: a model's weights plus its card, loadable with ``torch.load(weights_only=True)``.

A checkpoint is ``{"card": ModelCard.to_dict(), "state_dict": ..., "epoch": int, ...}`` with
only tensors, numbers, strings, lists and dicts inside, so loading it never runs pickled code.
Only the trained network's weights are saved: a distiller's connectors and fusion modules live
in the separate resume file (``resume.pt``) of the run folder, never in the model checkpoint.

The architecture is rebuilt from ``card.architecture`` through the one registry
(:func:`wbc_edge.kd.registry.create_model`: a registered student, or a timm EfficientNet name
for a teacher).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wbc_edge.errors import UserError, require_file
from wbc_edge.model.card import ModelCard


def save_checkpoint(
    path: str | Path, model: nn.Module, card: ModelCard, epoch: int = 0, **extra: Any
) -> Path:
    """Write weights + card atomically (a crash mid-write leaves the previous file intact)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {"card": card.to_dict(), "state_dict": state, "epoch": int(epoch), **extra}
    return save_checkpoint_payload(path, payload)


def save_checkpoint_payload(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a checkpoint dict atomically (e.g. one read with :func:`read_checkpoint` whose card
    was updated)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


# What other model files start with, so the refusal can say what was passed instead.
_NOT_TORCH = {
    ".onnx": "an ONNX model",
    ".engine": "a TensorRT engine",
    ".plan": "a TensorRT engine",
    ".trt": "a TensorRT engine",
    ".json": "a JSON file (an engine's sidecar card?)",
}


def torch_load(path: str | Path, what: str = "checkpoint", student: bool = False) -> Any:
    """``torch.load(weights_only=True)`` whose refusals are one line saying what the file is.

    Torch's own message for a refused pickle is many lines long and suggests
    ``weights_only=False``, which would run whatever code the file holds: never do that.
    ``student``: a student checkpoint is asked for (``adapt``), so an ONNX passed instead
    also gets where the packaged student's .pt is.
    """
    path = Path(path)
    hint = "pass a .pt written by `wbc-edge train-teacher` or `wbc-edge distill`"
    head = path.read_bytes()[:4] if path.is_file() else b""
    is_torch = head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"  # zip format, or pickle
    if not is_torch:
        kind = _NOT_TORCH.get(path.suffix.lower())
        if kind:
            where = _packaged_hint() if student else ""
            raise UserError(f"{path} is {kind}, not a PyTorch {what}: {hint}{where}")
        raise UserError(
            f"{path} is not a readable PyTorch {what} (neither zip nor pickle data): {hint}"
        )
    try:
        with warnings.catch_warnings():  # its pickle-protocol note would break the one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle and zip errors have many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise UserError(
                f"{path} holds Python objects besides tensors, which wbc-edge refuses to "
                f"unpickle (they could run code): {hint}"
            ) from exc
        raise UserError(f"{path} is not a loadable PyTorch {what} ({first}): {hint}") from exc


def _packaged_hint() -> str:
    """Where the packaged student's checkpoint is: a pip install has its ONNX only, and ``adapt``
    needs the .pt (a source checkout has it, beside the ONNX, under the same name)."""
    from wbc_edge.models import default_model

    try:
        pt = default_model().with_suffix(".pt")
    except UserError:
        pt = None
    if pt is not None and pt.is_file():
        return f" (the packaged student's is {pt})"
    return " (a pip install carries the packaged student as ONNX only; its .pt is in a checkout)"


def read_checkpoint(path: str | Path, student: bool = False) -> dict[str, Any]:
    """The raw checkpoint dict, loaded safely; UserError when it is not a wbc-edge checkpoint
    (``student``: see :func:`torch_load`)."""
    path = require_file(
        path, "checkpoint", "pass a .pt written by `wbc-edge train-teacher/distill`"
    )
    payload = torch_load(path, student=student)
    if not isinstance(payload, dict) or "card" not in payload or "state_dict" not in payload:
        raise UserError(
            f"{path} is not a wbc-edge checkpoint (no card/state_dict): train it with wbc-edge"
        )
    return payload


def build_model(card: ModelCard) -> nn.Module:
    """An untrained network of the card's architecture and class count."""
    from wbc_edge.kd.registry import create_model

    return create_model(card.architecture, card.num_classes)


def load_model(path: str | Path) -> tuple[nn.Module, ModelCard]:
    """Rebuild the model a checkpoint describes, with its weights, in eval mode."""
    payload = read_checkpoint(path)
    card = ModelCard.from_dict(payload["card"])
    model = build_model(card)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise UserError(
            f"{path}: weights do not fit architecture {card.architecture!r} ({exc})"
        ) from exc
    return model.eval(), card
