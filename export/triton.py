"""A Triton Inference Server model repository for an exported model (ONNX or TensorRT engine).

One Jetson serves one or two cameras; a GPU box running Triton serves many, with dynamic
batching gathering single-cell requests from every camera into one batch. Layout::

    REPO/NAME/config.pbtxt     platform, I/O names, dims, types, batching, labels
    REPO/NAME/labels.txt       class names, one per line, in the model's output order
    REPO/NAME/1/model.onnx     (or model.plan + model.plan.json, the engine's sidecar card)

The config is checked before it is written: it must parse as protobuf text against
:func:`model_config_class`, a subset of Triton's ``model_config.proto`` with upstream's field
numbers, and name exactly the model's inputs and outputs.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from wbc_edge.errors import UserError, require_file
from wbc_edge.export.onnx_export import onnx_io
from wbc_edge.optional import require
from wbc_edge.runtime.backends import backend_kind
from wbc_edge.runtime.card import ModelCard, read_onnx_card, read_sidecar, sidecar_path

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
DATA_TYPES = [
    "TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64",
    "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32",
    "TYPE_FP64", "TYPE_STRING", "TYPE_BF16",
]  # fmt: skip
LABELS = "labels.txt"


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
    name = name or re.sub(r"[^A-Za-z0-9_-]", "_", model.name.split(".")[0])
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
    (folder / "config.pbtxt").write_text(text)
    return folder


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
    return "\n".join(lines) + "\n"


def validate(text: str, io: dict[str, Any]) -> Any:
    """Parse ``text`` as a Triton ModelConfig; its inputs and outputs must be the model's."""
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
    """The message class of a subset of Triton's ``inference.ModelConfig`` (field numbers as in
    triton-inference-server/common ``model_config.proto``), built without protoc."""
    descriptor_pb2 = require("google.protobuf.descriptor_pb2")
    descriptor_pool = require("google.protobuf.descriptor_pool")
    message_factory = require("google.protobuf.message_factory")
    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="wbc_edge_model_config.proto", package="inference", syntax="proto3"
    )
    dtype = fdp.enum_type.add(name="DataType")
    for number, value in enumerate(DATA_TYPES):
        dtype.value.add(name=value, number=number)

    def message(name: str, fields: list[tuple[str, int, int, int, str]]) -> Any:
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            field = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name
        return m

    opt, rep = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    message(
        "ModelInput",
        [
            ("name", 1, f.TYPE_STRING, opt, ""),
            ("data_type", 2, f.TYPE_ENUM, opt, ".inference.DataType"),
            ("dims", 4, f.TYPE_INT64, rep, ""),
        ],
    )
    message(
        "ModelOutput",
        [
            ("name", 1, f.TYPE_STRING, opt, ""),
            ("data_type", 2, f.TYPE_ENUM, opt, ".inference.DataType"),
            ("dims", 3, f.TYPE_INT64, rep, ""),
            ("label_filename", 4, f.TYPE_STRING, opt, ""),
        ],
    )
    message(
        "ModelDynamicBatching",
        [
            ("preferred_batch_size", 1, f.TYPE_INT32, rep, ""),
            ("max_queue_delay_microseconds", 2, f.TYPE_UINT64, opt, ""),
        ],
    )
    group = message(
        "ModelInstanceGroup",
        [
            ("name", 1, f.TYPE_STRING, opt, ""),
            ("count", 2, f.TYPE_INT32, opt, ""),
            ("gpus", 3, f.TYPE_INT32, rep, ""),
            ("kind", 4, f.TYPE_ENUM, opt, ".inference.ModelInstanceGroup.Kind"),
        ],
    )
    kind = group.enum_type.add(name="Kind")
    for number, value in enumerate(("KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL")):
        kind.value.add(name=value, number=number)
    message(
        "ModelConfig",
        [
            ("name", 1, f.TYPE_STRING, opt, ""),
            ("platform", 2, f.TYPE_STRING, opt, ""),
            ("max_batch_size", 4, f.TYPE_INT32, opt, ""),
            ("input", 5, f.TYPE_MESSAGE, rep, ".inference.ModelInput"),
            ("output", 6, f.TYPE_MESSAGE, rep, ".inference.ModelOutput"),
            ("instance_group", 7, f.TYPE_MESSAGE, rep, ".inference.ModelInstanceGroup"),
            ("dynamic_batching", 11, f.TYPE_MESSAGE, opt, ".inference.ModelDynamicBatching"),
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


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
