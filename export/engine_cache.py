"""Which engine a build may reuse, and where it goes.

Engines are tied to the GPU and TensorRT version that built them, so an engine is reused only
when its :class:`EngineKey` (ONNX sha256, precision, TensorRT version, device name,
calibration-data hash and the batch/DLA options) matches the one its sidecar recorded and the
engine bytes are those the sidecar describes. Without an ``--out`` the engine is named from the
ONNX's card, beside it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from wbc_edge.data.manifest import ManifestRow, fingerprint
from wbc_edge.data.scan import sha256_file
from wbc_edge.errors import MissingExtraError, UserError
from wbc_edge.model.card import ModelCard, read_sidecar
from wbc_edge.model.names import file_name
from wbc_edge.optional import require


@dataclass(frozen=True)
class EngineKey:
    """Everything that makes two engines different; equal keys mean the engine can be reused."""

    onnx_sha256: str
    precision: str
    tensorrt_version: str
    device_name: str
    calibration_sha256: str
    batch: tuple[int, int, int]
    dla_core: int | None

    def digest(self) -> str:
        payload = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


def calibration_hash(
    rows: Sequence[ManifestRow] | None = None,
    cache: str | Path | None = None,
    explicit: bool = False,
) -> str:
    """Identity of the INT8 calibration: the Q/DQ scales are inside the ONNX (its hash covers
    them), a cache file is hashed, images are named by the manifest fingerprint."""
    if explicit:
        return "qdq"
    if cache is not None:
        return "cache:" + sha256_file(cache)
    if rows:
        return "images:" + fingerprint(rows)
    return ""


def default_engine_path(onnx_path: Path, card: ModelCard, precision: str) -> Path:
    """Beside the ONNX, named from its card (:mod:`wbc_edge.model.names`):
    ``student-tinyresnet_xs.int8-tensorrt.onnx`` -> ``student-tinyresnet_xs.int8.engine``."""
    return onnx_path.with_name(file_name(card, "engine", precision))


def reusable(engine: Path, key: EngineKey) -> bool:
    """An existing engine is reused only if its sidecar records the same key and the engine
    bytes are those the sidecar describes."""
    if not engine.is_file():
        return False
    try:
        _, fields = read_sidecar(engine)
    except UserError:
        return False
    return fields.get("engine_key") == key.digest() and fields.get("engine_sha256") == sha256_file(
        engine
    )


def device_name() -> str:
    """Name of CUDA device 0 ("Orin", "NVIDIA H100 80GB HBM3"), part of the engine key."""
    try:
        cuda = require("pycuda.driver")
        cuda.init()
        return str(cuda.Device(0).name())
    except MissingExtraError:
        pass
    except Exception as exc:  # pycuda raises its own driver errors
        raise UserError(f"no usable CUDA device ({exc}): build engines on the device") from exc
    model = Path("/proc/device-tree/model")  # Jetson without pycuda
    if model.is_file():
        return model.read_text(errors="replace").strip("\x00\n ")
    raise UserError(
        "cannot name the CUDA device: install pycuda (`pip install 'wbc-edge[jetson]'`)"
    )
