"""ONNX -> TensorRT engine, on the device that will run it (TensorRT 8.5, 8.6 and 10.x).

This module is the one place that knows TensorRT versions (:func:`features`):

- < 10: networks need ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH``; 10 made it the only
  mode and deprecated the flag.
- INT8 comes two ways. Explicit: a Q/DQ ONNX from ``export int8 --target tensorrt`` carries
  its own scales; the only way in TensorRT >= 11. Implicit (8.5-10.x; deprecated since 10.1):
  an ``IInt8EntropyCalibrator2`` fed WBC images through the card's preprocessing, or a
  calibration cache written by ``export int8``.

Engines are tied to the GPU and TensorRT version that built them, so an engine is reused only
when its key (ONNX sha256, precision, TensorRT version, device name, calibration-data hash and
the batch/DLA options) matches the sidecar of the existing file. Every build prints the
equivalent ``trtexec`` command, which also is the way forward where TensorRT is absent.
Everything but :func:`_build_serialized` and the calibrator runs on a CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.data.manifest import ManifestRow, fingerprint
from wbc_edge.data.scan import sha256_file
from wbc_edge.errors import MissingExtraError, UserError, require_file
from wbc_edge.export import calib_cache
from wbc_edge.export.onnx_export import onnx_io
from wbc_edge.optional import require
from wbc_edge.runtime.card import ModelCard, Preprocess, read_onnx_card, read_sidecar, write_sidecar
from wbc_edge.runtime.preprocess import read_image

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_BATCH = (1, 8, 32)
DEFAULT_WORKSPACE_MB = 1024
CALIB_BATCH = 8


@dataclass(frozen=True)
class TrtFeatures:
    """What the installed TensorRT needs or allows; derived from its version alone."""

    version: str
    explicit_batch_flag: bool  # create_network needs EXPLICIT_BATCH (< 10)
    implicit_int8: bool  # IInt8EntropyCalibrator2 exists (< 11)
    implicit_int8_deprecated: bool  # (>= 10.1)


def parse_version(version: str) -> tuple[int, int, int]:
    parts = []
    for p in version.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple((parts + [0, 0, 0])[:3])  # type: ignore[return-value]


def features(version: str) -> TrtFeatures:
    v = parse_version(version)
    if v < (8, 5, 0):
        raise UserError(
            f"TensorRT {version} is too old: build-engine needs 8.5 or newer (JetPack 5.1+)"
        )
    return TrtFeatures(
        version=version,
        explicit_batch_flag=v < (10, 0, 0),
        implicit_int8=v < (11, 0, 0),
        implicit_int8_deprecated=v >= (10, 1, 0),
    )


def parse_batch(text: str | None) -> tuple[int, int, int]:
    """``"1,8,32"`` -> (min, opt, max) batch sizes of the optimisation profile."""
    if text is None:
        return DEFAULT_BATCH
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        raise UserError(f"--batch {text!r}: give MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX")
    return values  # type: ignore[return-value]


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


def trtexec_command(
    onnx: str | Path,
    out: str | Path,
    precision: str,
    input_name: str,
    input_size: int,
    batch: tuple[int, int, int] = DEFAULT_BATCH,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    dla_core: int | None = None,
    calib: str | Path | None = None,
    timing_cache: str | Path | None = None,
) -> str:
    """The trtexec line that builds the same engine (TensorRT 8.5-10.x syntax)."""
    shapes = [f"{input_name}:{b}x3x{input_size}x{input_size}" for b in batch]
    args = ["trtexec", f"--onnx={onnx}", f"--saveEngine={out}"]
    args += [f"--minShapes={shapes[0]}", f"--optShapes={shapes[1]}", f"--maxShapes={shapes[2]}"]
    if precision in ("fp16", "int8"):
        args.append("--fp16")
    if precision == "int8":
        args.append("--int8")
        if calib is not None:
            args.append(f"--calib={calib}")
    args.append(f"--memPoolSize=workspace:{workspace_mb}")
    if dla_core is not None:
        args += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    return " ".join(shlex.quote(a) for a in args)


def is_qdq(onnx_path: str | Path) -> bool:
    """True when the ONNX carries Q/DQ nodes (explicit quantization)."""
    onnx = require("onnx")
    proto = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)


def default_engine_path(onnx_path: Path, precision: str) -> Path:
    """``student.onnx`` -> ``student.fp16.engine``."""
    return onnx_path.with_name(f"{onnx_path.stem}.{precision}.engine")


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


def calibration_batches(
    paths: Sequence[Path], spec: Preprocess, batch_size: int = CALIB_BATCH
) -> Iterator[np.ndarray]:
    """Full float32 NCHW batches for TensorRT's calibrator (a short tail batch is dropped:
    the calibration profile fixes the batch size)."""
    for start in range(0, len(paths) - batch_size + 1, batch_size):
        images = []
        for p in paths[start : start + batch_size]:
            try:
                images.append(read_image(str(p)))
            except ValueError as exc:
                raise UserError(f"{exc}: fix or drop it from the manifest") from exc
        yield np.ascontiguousarray(spec(images), dtype=np.float32)


@dataclass
class BuildResult:
    engine: Path
    reused: bool
    key: EngineKey
    trtexec: str


def build_engine(
    onnx_path: str | Path,
    out: str | Path | None = None,
    precision: str | None = None,
    calib_rows: Sequence[ManifestRow] | None = None,
    calib_cache_path: str | Path | None = None,
    batch: tuple[int, int, int] = DEFAULT_BATCH,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    dla_core: int | None = None,
    timing_cache: str | Path | None = None,
    force: bool = False,
    echo: Callable[[str], None] = print,
) -> BuildResult:
    """Build (or reuse) an engine for ``onnx_path`` and write its sidecar card.

    ``precision`` defaults to int8 for a Q/DQ ONNX and fp16 otherwise. The trtexec line is
    passed to ``echo`` before anything else, so it is printed even when the build cannot run.
    """
    onnx_path = require_file(onnx_path, "ONNX model", "export one with `wbc-edge export onnx`")
    card = read_onnx_card(onnx_path)
    explicit = is_qdq(onnx_path)
    precision = precision or ("int8" if explicit else "fp16")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if explicit and precision != "int8":
        raise UserError(
            f"{onnx_path} is a Q/DQ (INT8) model: build it with --precision int8, "
            "or pass the FP32 ONNX for fp16/fp32"
        )
    if dla_core is not None and precision == "fp32":
        raise UserError("DLA runs FP16 or INT8 only: use --precision fp16 or int8 with --dla")
    implicit = precision == "int8" and not explicit
    if implicit and not calib_rows and calib_cache_path is None:
        raise UserError(
            f"INT8 from {onnx_path} needs scales: pass the Q/DQ ONNX from "
            "`wbc-edge export int8 --target tensorrt`, or --calib split.csv, or --calib-cache"
        )
    if calib_cache_path is not None:
        calib_cache.read(calib_cache_path)  # fails early on a malformed file
    io = onnx_io(onnx_path)
    input_name = io["inputs"][0]["name"]
    out = Path(out) if out else default_engine_path(onnx_path, precision)
    line = trtexec_command(
        onnx_path,
        out,
        precision,
        input_name,
        card.preprocess.input_size,
        batch,
        workspace_mb,
        dla_core,
        calib_cache_path if implicit else None,
        timing_cache,
    )
    echo(f"equivalent trtexec command:\n  {line}")
    if implicit and calib_cache_path is None:
        echo(
            "note: trtexec cannot calibrate on images; write a cache with `wbc-edge export int8 "
            f"--onnx {onnx_path} --calib SPLIT.csv` and add --calib=<that cache> to the line"
        )
    try:
        trt = require("tensorrt")
    except MissingExtraError as exc:
        raise UserError(
            f"{exc}. TensorRT engines are built on the device that runs them: run "
            "`wbc-edge build-engine` on the Jetson, or the trtexec command above there"
        ) from exc
    feats = features(trt.__version__)
    if implicit and not feats.implicit_int8:
        raise UserError(
            f"TensorRT {feats.version} has no implicit INT8 calibration: INT8 needs a Q/DQ "
            "ONNX (`wbc-edge export int8 --target tensorrt`)"
        )
    if implicit and feats.implicit_int8_deprecated:
        echo(
            f"note: implicit INT8 calibration is deprecated in TensorRT {feats.version}; "
            "a Q/DQ ONNX (`export int8 --target tensorrt`) is the lasting path"
        )
    device = device_name()
    key = EngineKey(
        onnx_sha256=sha256_file(onnx_path),
        precision=precision,
        tensorrt_version=feats.version,
        device_name=device,
        calibration_sha256=calibration_hash(calib_rows, calib_cache_path, explicit)
        if precision == "int8"
        else "",
        batch=tuple(batch),  # type: ignore[arg-type]
        dla_core=dla_core,
    )
    if not force and reusable(out, key):
        echo(f"{out} is up to date (same ONNX, precision, TensorRT, device, calibration): reused")
        return BuildResult(out, True, key, line)
    calibrator = None
    if implicit:
        calibrator = _make_calibrator(
            trt, card, calib_rows, calib_cache_path, out, feats.version, card.preprocess.input_size
        )
    serialized = _build_serialized(
        trt,
        feats,
        onnx_path,
        precision,
        input_name,
        card.preprocess.input_size,
        batch,
        workspace_mb,
        dla_core,
        calibrator,
        Path(timing_cache) if timing_cache else None,
        echo,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(serialized)
    os.replace(tmp, out)
    engine_card = ModelCard.from_dict(card.to_dict())
    engine_card.extra = {**card.extra, "format": "tensorrt", "precision": precision}
    write_sidecar(
        out,
        engine_card,
        tensorrt_version=feats.version,
        device_name=device,
        precision=precision,
        int8_mode=("explicit" if explicit else "implicit") if precision == "int8" else "",
        onnx=str(onnx_path),
        onnx_sha256=key.onnx_sha256,
        calibration_sha256=key.calibration_sha256,
        engine_sha256=sha256_file(out),
        engine_key=key.digest(),
        batch=list(batch),
        dla_core=dla_core,
        io=io,
        trtexec=line,
    )
    echo(f"wrote {out} and {out.name}.json")
    return BuildResult(out, False, key, line)


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


def _make_calibrator(
    trt: Any,
    card: ModelCard,
    rows: Sequence[ManifestRow] | None,
    cache_path: str | Path | None,
    engine: Path,
    trt_version: str,
    input_size: int,
) -> Any:
    """An IInt8EntropyCalibrator2 over WBC images in pycuda buffers, or over a cache."""
    cuda = require("pycuda.driver")
    require("pycuda.autoinit")  # creates the CUDA context the buffers live in
    cache_text = None
    if cache_path is not None:
        cache_text = calib_cache.with_header(Path(cache_path).read_text(), trt_version)
    paths = [r.path for r in rows] if rows else []
    write_to = engine.with_name(engine.name + ".calib.cache")
    batches = calibration_batches(paths, card.preprocess, CALIB_BATCH)
    nbytes = CALIB_BATCH * 3 * input_size * input_size * 4

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.device_input = cuda.mem_alloc(nbytes)

        def get_batch_size(self) -> int:
            return CALIB_BATCH

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(batches, None)
            if batch is None:
                return None
            cuda.memcpy_htod(self.device_input, batch)
            return [int(self.device_input)]

        def read_calibration_cache(self) -> bytes | None:
            return cache_text.encode() if cache_text else None

        def write_calibration_cache(self, cache: Any) -> None:
            write_to.write_bytes(bytes(cache))

    return EntropyCalibrator()


def _build_serialized(
    trt: Any,
    feats: TrtFeatures,
    onnx_path: Path,
    precision: str,
    input_name: str,
    input_size: int,
    batch: tuple[int, int, int],
    workspace_mb: int,
    dla_core: int | None,
    calibrator: Any,
    timing_cache: Path | None,
    echo: Callable[[str], None] = print,
) -> bytes:
    """The TensorRT calls (NVIDIA's documented Python API, 8.5-10.x)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if feats.explicit_batch_flag:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    shape = (3, input_size, input_size)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *[(b, *shape) for b in batch])
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        if not getattr(builder, "platform_has_fast_fp16", True):
            echo("note: this GPU has no fast FP16; the engine may not be faster than FP32")
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        if calibrator is not None:
            config.int8_calibrator = calibrator
            fixed = builder.create_optimization_profile()
            fixed.set_shape(input_name, *[(CALIB_BATCH, *shape)] * 3)
            config.set_calibration_profile(fixed)
    if dla_core is not None:
        if dla_core >= builder.num_DLA_cores:
            raise UserError(
                f"--dla {dla_core}: this device has {builder.num_DLA_cores} DLA core(s)"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(blob), False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    if timing_cache is not None:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)
