"""A Triton Inference Server model repository for an exported model (ONNX or TensorRT engine).

One Jetson serves one or two cameras; a GPU box running Triton serves many, with dynamic
batching gathering single-cell requests from every camera into one batch. Layout::

    REPO/NAME/config.pbtxt     platform, I/O names, dims, types, batching, labels, and the
                               card's preprocessing as ``parameters`` (``wbc_edge.*``)
    REPO/NAME/labels.txt       class names, one per line, in the model's output order
    REPO/NAME/client.py        a client that reads those parameters and preprocesses images the
                               card's way (:mod:`wbc_edge.export.triton_client`, copied)
    REPO/NAME/1/model.onnx     (or model.plan + model.plan.json, the engine's sidecar card)

The config is checked before it is written: it must parse with Triton's own ``ModelConfig``
message (``tritonclient``'s ``model_config_pb2``, through protobuf's text format) and name
exactly the model's inputs and outputs. NAME comes from the card (:mod:`wbc_edge.model.names`).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from wbc_edge.errors import UserError, require_file
from wbc_edge.export.onnx_export import onnx_io
from wbc_edge.model.backends import backend_kind
from wbc_edge.model.backends.onnxruntime import read_onnx_card
from wbc_edge.model.card import ModelCard, read_sidecar, sidecar_path
from wbc_edge.model.names import triton_name
from wbc_edge.optional import require

PLATFORMS = {
    "onnxruntime": ("onnxruntime_onnx", "model.onnx"),
    "tensorrt": ("tensorrt_plan", "model.plan"),
}
# ONNX TensorProto type names -> Triton's DataType (enum values as in model_config.proto).
TRITON_TYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "INT8": "TYPE_INT8",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FLOAT16": "TYPE_FP16",
    "FLOAT": "TYPE_FP32",
    "DOUBLE": "TYPE_FP64",
}
LABELS = "labels.txt"
CLIENT = "client.py"
PARAM_PREFIX = "wbc_edge."  # config parameters carrying the card's preprocessing


def write_repository(
    model: str | Path,
    repo: str | Path,
    name: str | None = None,
    max_batch: int = 32,
    queue_delay_us: int = 2000,
) -> Path:
    """Write ``repo/name`` for ``model``; returns the model folder. Overwrites that folder."""
    model = require_file(model, "model", "export one with `wbc-edge export onnx` first")
    kind = backend_kind(model)
    if kind not in PLATFORMS:
        raise UserError(f"{model}: Triton serves .onnx or .engine/.plan files here, not {kind}")
    if max_batch < 1:
        raise UserError(f"--max-batch {max_batch}: give 1 or more")
    card, io = _card_and_io(model, kind)
    if kind == "tensorrt":
        engine_max = _engine_max_batch(model)
        if engine_max is not None and max_batch > engine_max:
            raise UserError(
                f"--max-batch {max_batch} exceeds the engine's profile maximum {engine_max}: "
                f"lower it or rebuild with `wbc-edge build-engine --batch 1,8,{max_batch}`"
            )
    name = checked_name(name) if name is not None else triton_name(card)
    text = config_text(name, kind, io, card, max_batch, queue_delay_us)
    validate(text, io)
    folder = Path(repo) / name
    platform_file = PLATFORMS[kind][1]
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "1").mkdir(parents=True)
    shutil.copyfile(model, folder / "1" / platform_file)
    if kind == "tensorrt":
        shutil.copyfile(sidecar_path(model), sidecar_path(folder / "1" / platform_file))
    (folder / LABELS).write_text("\n".join(card.class_names) + "\n")
    shutil.copyfile(Path(__file__).with_name("triton_client.py"), folder / CLIENT)
    (folder / "config.pbtxt").write_text(text)
    return folder


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def checked_name(text: str) -> str:
    """``--name`` as a Triton model name that is one folder inside the repository, never a
    path: the folder is replaced on every write (``rmtree``), so ``--name ../../x`` must never
    reach the file system. (Names made from the card, ``triton_name``, are safe already.)"""
    if not _NAME.fullmatch(text) or ".." in text:
        raise UserError(
            f"--name {text!r}: a Triton model name is one folder name (letters, digits, "
            "'_', '-', '.'; no '/' or '..'), e.g. --name wbc_student"
        )
    return text


def config_text(
    name: str,
    kind: str,
    io: dict[str, Any],
    card: ModelCard,
    max_batch: int,
    queue_delay_us: int = 2000,
) -> str:
    """``config.pbtxt`` in protobuf text format. Dims exclude the batch axis, which Triton adds
    from ``max_batch_size``; the ``probs`` output names the labels file, so Triton's
    classification extension returns class names."""
    lines = [
        f'name: "{name}"',
        f'platform: "{PLATFORMS[kind][0]}"',
        f"max_batch_size: {max_batch}",
    ]
    lines += _tensors("input", io["inputs"], labels_for=None)
    lines += _tensors("output", io["outputs"], labels_for="probs")
    preferred = sorted({b for b in (8, max_batch) if b <= max_batch})
    lines += [
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]",
        f"  max_queue_delay_microseconds: {queue_delay_us}",
        "}",
    ]
    if kind == "tensorrt":
        lines += ["instance_group [", "  {", "    kind: KIND_GPU", "    count: 1", "  }", "]"]
    for key, value in preprocessing_parameters(card).items():
        lines += [
            "parameters {",
            f"  key: {json.dumps(key)}",
            f"  value: {{ string_value: {json.dumps(value)} }}",
            "}",
        ]
    return "\n".join(lines) + "\n"


def preprocessing_parameters(card: ModelCard) -> dict[str, str]:
    """The card's preprocessing as Triton config parameters (string values, JSON-encoded), so a
    client asking Triton for the model's config learns how to prepare an image."""
    values = {
        **card.preprocess.to_dict(),  # input_size, crop, mean, std, channel order, interpolation
        "temperature": card.temperature,
        "confidence_threshold": card.confidence_threshold,
        "architecture": card.architecture,
        "class_names": card.class_names,
    }
    return {PARAM_PREFIX + k: json.dumps(v) for k, v in values.items()}


def validate(text: str, io: dict[str, Any]) -> Any:
    """Parse ``text`` as Triton's own ``inference.ModelConfig``; its inputs and outputs must be
    the model's. Returns the parsed message."""
    text_format = require("google.protobuf.text_format")
    msg = model_config_class()()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise UserError(f"generated config.pbtxt does not parse ({exc}); please report it") from exc
    for field, tensors in (("input", io["inputs"]), ("output", io["outputs"])):
        got = [(t.name, list(t.dims)) for t in getattr(msg, field)]
        want = [(t["name"], _dims(t["shape"])) for t in tensors]
        if got != want:
            raise UserError(f"config.pbtxt {field}s {got} do not match the model's {want}")
    return msg


def model_config_class() -> type:
    """Triton's ``inference.ModelConfig`` message, generated from upstream's
    ``model_config.proto`` and shipped in ``tritonclient`` (the export extra)."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        from wbc_edge.errors import MissingExtraError

        raise MissingExtraError("tritonclient[grpc]", "export") from exc
    return model_config_pb2.ModelConfig


def _card_and_io(model: Path, kind: str) -> tuple[ModelCard, dict[str, Any]]:
    if kind == "onnxruntime":
        return read_onnx_card(model), onnx_io(model)
    card, fields = read_sidecar(model)
    if "io" not in fields:
        raise UserError(
            f"{sidecar_path(model)} does not list the engine's inputs and outputs: "
            "rebuild it with `wbc-edge build-engine`"
        )
    return card, fields["io"]


def _engine_max_batch(model: Path) -> int | None:
    _, fields = read_sidecar(model)
    batch = fields.get("batch")
    return int(batch[-1]) if batch else None


def _dims(shape: list[Any]) -> list[int]:
    """Per-sample dims: the batch axis (first) dropped; other dynamic axes become -1."""
    return [d if isinstance(d, int) and d > 0 else -1 for d in shape[1:]]


def _tensors(field: str, tensors: list[dict[str, Any]], labels_for: str | None) -> list[str]:
    lines = [f"{field} ["]
    for i, t in enumerate(tensors):
        if t["dtype"] not in TRITON_TYPES:
            raise UserError(f"tensor {t['name']} has type {t['dtype']}, which Triton cannot serve")
        lines += [
            "  {",
            f'    name: "{t["name"]}"',
            f"    data_type: {TRITON_TYPES[t['dtype']]}",
            f"    dims: [ {', '.join(str(d) for d in _dims(t['shape']))} ]",
        ]
        if t["name"] == labels_for:
            lines.append(f'    label_filename: "{LABELS}"')
        lines.append("  }," if i < len(tensors) - 1 else "  }")
    lines.append("]")
    return lines
