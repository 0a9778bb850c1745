"""One naming rule for every model file, derived from the model card, not from file names.

A model leaves its run folder (``runs/X/best.pt``) through ``export onnx`` and from then on every
file is named from its card, so the names chain from one step to the next::

    <role>-<architecture>.pt                    student-tinyresnet_xs.pt      (a shipped checkpoint)
    <role>-<architecture>-adapted.onnx          an adapted model's export (``wbc-edge adapt``)
    <role>-<architecture>.onnx                  student-tinyresnet_xs.onnx    (export onnx)
    <role>-<architecture>.int8-<target>.onnx    student-tinyresnet_xs.int8-tensorrt.onnx
    <role>-<architecture>.calib.cache           the TensorRT calibration cache of the FP32 net
    <role>-<architecture>.<precision>.engine    student-tinyresnet_xs.int8.engine (build-engine)

A card without a role (a random-init reference) is named by its architecture alone.

:func:`model_name` is the same name without the file type; bench rows and Triton model names
use it, so a table never says "best.onnx: 8x faster than best.onnx".
"""

from __future__ import annotations

import re

from wbc_edge.model.card import ModelCard

ROLES = ("teacher", "student")
_SUFFIX = {"checkpoint": ".pt", "onnx": ".onnx", "engine": ".engine"}


def model_role(card: ModelCard) -> str:
    """``teacher``, ``student`` or ``""`` (unknown): the card's own ``role`` (the trainer writes
    it), else inferred for cards written before it existed: a distilled model names its
    teacher, and a teacher was fine-tuned with plain cross-entropy (``method`` ce)."""
    role = card.extra.get("role")
    if role in ROLES:
        return str(role)
    if card.extra.get("teacher") or card.architecture.startswith("tinyresnet"):
        return "student"
    if card.extra.get("method") == "ce" and "efficientnet" in card.architecture:
        return "teacher"
    return ""


def base_name(card: ModelCard) -> str:
    """``student-tinyresnet_xs``: role and architecture (the architecture alone when the card
    has no role, e.g. a random-init reference), the part every artifact of a model shares.
    A model adapted to a site (``wbc-edge adapt``) adds ``-adapted``, so its exports never take
    the name of the model it came from."""
    role = model_role(card)
    name = f"{role}-{card.architecture}" if role else card.architecture
    return name + "-adapted" if card.extra.get("adaptation") else name


def model_name(card: ModelCard) -> str:
    """The artifact's name without its file type, from the card's format and precision:
    ``student-tinyresnet_xs``, ``student-tinyresnet_xs.int8-cpu``, ``...int8`` (an engine)."""
    precision = card.extra.get("precision", "fp32")
    if card.extra.get("format") == "tensorrt":
        return f"{base_name(card)}.{precision}"
    if precision == "int8":
        return int8_name(card, card.extra.get("int8_target", ""))[: -len(".onnx")]
    return base_name(card)


def int8_name(card: ModelCard, target: str) -> str:
    """The Q/DQ INT8 ONNX quantized for ``target`` from ``card``'s FP32 model."""
    return f"{base_name(card)}.int8-{target}.onnx" if target else f"{base_name(card)}.int8.onnx"


def file_name(card: ModelCard, kind: str, precision: str | None = None) -> str:
    """The file name of ``card``'s model as ``kind`` (checkpoint, onnx, engine); ``precision``
    names the engine to build (an engine's name says its precision, not the ONNX's target)."""
    if kind not in _SUFFIX:
        raise ValueError(f"unknown artifact kind {kind!r}")
    if kind == "engine":
        if precision is None:
            raise ValueError("an engine name needs its precision")
        return f"{base_name(card)}.{precision}.engine"
    if kind == "checkpoint":
        return base_name(card) + ".pt"
    return model_name(card) + ".onnx"


def calib_cache_name(card: ModelCard) -> str:
    """The TensorRT calibration cache belongs to the FP32 network: ``<base>.calib.cache``."""
    return base_name(card) + ".calib.cache"


def triton_name(card: ModelCard) -> str:
    """A Triton model name (letters, digits, ``_`` and ``-``): ``student-tinyresnet_xs-int8``."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", model_name(card))
