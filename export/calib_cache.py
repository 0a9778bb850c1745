"""TensorRT's INT8 calibration cache, the text file ``IInt8Calibrator`` reads and writes.

Format (what TensorRT 8.x/10.x write)::

    TRT-8601-EntropyCalibration2
    input: 3c010204
    /stem/conv/Conv_output_0: 3d1a2b3c

The header names the TensorRT version and the calibrator algorithm; TensorRT ignores a cache
whose algorithm differs from the calibrator it is given. Each line maps a tensor name of the
FP32 network to the big-endian hex of its float32 *scale*, ``amax / 127`` (symmetric INT8).

Writing this file from ONNX Runtime's calibration statistics lets an older TensorRT
(implicit-quantization path, 8.5-10.x) build an INT8 engine on a Jetson without running the
calibration images there.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path

from wbc_edge.errors import UserError, require_file
from wbc_edge.model.tensorrt_versions import version_code

# The calibrator `wbc-edge build-engine` hands TensorRT; the header must name the same one.
ALGORITHM = "EntropyCalibration2"
ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
DEFAULT_TRT_VERSION = "8.6.1"  # JetPack 6.0; TensorRT reads caches of other versions with a warning
INT8_MAX = 127.0


def header(trt_version: str = DEFAULT_TRT_VERSION, algorithm: str = ALGORITHM) -> str:
    if algorithm not in ALGORITHMS:
        raise UserError(f"unknown calibrator {algorithm!r}: use one of {', '.join(ALGORITHMS)}")
    return f"TRT-{version_code(trt_version)}-{algorithm}"


def scale_from_range(lo: float, hi: float) -> float:
    """Symmetric INT8 scale of a tensor whose calibrated range is [lo, hi]."""
    amax = max(abs(float(lo)), abs(float(hi)))
    return amax / INT8_MAX


def encode_scale(scale: float) -> str:
    return struct.pack(">f", float(scale)).hex()


def decode_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text))[0]


def dumps(scales: Mapping[str, float], head: str | None = None) -> str:
    """Cache text for ``{tensor name: scale}``; tensors are sorted so the file is reproducible."""
    lines = [head or header()]
    for name in sorted(scales):
        scale = float(scales[name])
        if not math.isfinite(scale) or scale < 0:
            raise ValueError(f"tensor {name!r} has an invalid INT8 scale {scale}")
        if ": " in name or "\n" in name:  # "onnx::Conv_43" is fine: the value follows ": "
            raise ValueError(f"tensor name {name!r} cannot be written to a TensorRT cache")
        lines.append(f"{name}: {encode_scale(scale)}")
    return "\n".join(lines) + "\n"


def loads(text: str) -> tuple[str, dict[str, float]]:
    """(header, {tensor name: scale}) of cache text; ValueError on anything malformed."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise ValueError("first line is not a TensorRT cache header (TRT-<version>-<algorithm>)")
    head = lines[0].strip()
    scales: dict[str, float] = {}
    for n, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(": ")
        if not sep or len(value.strip()) != 8:
            raise ValueError(f"line {n} is not 'tensor: <8 hex digits>': {line!r}")
        try:
            scales[name] = decode_scale(value.strip())
        except ValueError as exc:
            raise ValueError(f"line {n}: {value!r} is not hex ({exc})") from exc
    return head, scales


def write(path: str | Path, scales: Mapping[str, float], head: str | None = None) -> Path:
    """Write a cache atomically (TensorRT must never read half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(scales, head))
    os.replace(tmp, path)
    return path


def read(path: str | Path) -> tuple[str, dict[str, float]]:
    path = require_file(path, "calibration cache")
    try:
        return loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path} is not a TensorRT calibration cache ({exc}): "
            "write one with `wbc-edge export int8`"
        ) from exc


def with_header(text: str, trt_version: str, algorithm: str = ALGORITHM) -> str:
    """The same scales under the header of another TensorRT version (what the device runs)."""
    _, scales = loads(text)
    return dumps(scales, header(trt_version, algorithm))
