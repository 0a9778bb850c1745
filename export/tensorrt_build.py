"""ONNX -> TensorRT engine, on the device that will run it (TensorRT 8.5 to 11.x).

What differs between TensorRT versions is decided in one place,
:mod:`wbc_edge.model.tensorrt_versions` (:func:`features`); this module only asks it.

- INT8 comes two ways. Explicit: a Q/DQ ONNX from ``export int8 --target tensorrt`` carries
  its own scales; the only way in TensorRT >= 11. Implicit (8.5-10.x; deprecated since 10.1):
  an ``IInt8EntropyCalibrator2`` fed WBC images through the card's preprocessing, or a
  calibration cache written by ``export int8``.
- FP16 from an FP32 ONNX needs TensorRT's weak typing (``BuilderFlag.FP16``, < 11). TensorRT 11
  builds strongly typed networks only, so there the FP16 types must already be in the ONNX.
- DLA runs static shapes only: a DLA engine gets one batch size (MIN = OPT = MAX), and the
  layers that cannot run on the DLA (and so fall back to the GPU) are named before the build.

We keep this small builder rather than Polygraphy's loaders: it is one straight chain of about
forty TensorRT calls, it adds what Polygraphy does not know (the model card in the sidecar, the
engine-cache key, the calibration feed through the card's preprocessing, the trtexec line), and
it keeps ``build-engine`` free of another dependency on the device. Polygraphy's habits are
followed where they matter: version differences in one place, a rejected timing cache is not
fatal, ONNX files are parsed from their path (external weights).

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
from wbc_edge.export import DEFAULT_DLA_BATCH, DEFAULT_TRT_BATCH, DEFAULT_WORKSPACE_MB, calib_cache
from wbc_edge.export.onnx_export import onnx_io
from wbc_edge.model.backends.onnxruntime import read_onnx_card
from wbc_edge.model.card import ModelCard, Preprocess, read_sidecar, write_sidecar
from wbc_edge.model.labelled import read_labelled
from wbc_edge.model.names import file_name
from wbc_edge.model.tensorrt_versions import TrtFeatures, features
from wbc_edge.optional import require

PRECISIONS = ("fp32", "fp16", "int8")
CALIB_BATCH = 8


def resolve_batch(batch: tuple[int, int, int] | None, dla_core: int | None) -> tuple[int, int, int]:
    """The optimisation profile to build: the default for the device, or ``batch`` checked.

    DLA supports static shapes only; with a dynamic profile TensorRT would either fail or
    quietly run every layer on the GPU, so a DLA engine gets MIN = OPT = MAX."""
    if batch is None:
        return DEFAULT_DLA_BATCH if dla_core is not None else DEFAULT_TRT_BATCH
    if dla_core is not None and len(set(batch)) != 1:
        raise UserError(
            f"--dla needs a static batch (MIN = OPT = MAX), not {','.join(map(str, batch))}: "
            f"pass e.g. --batch {batch[1]}"
        )
    return batch


def parse_batch(text: str | None) -> tuple[int, int, int] | None:
    """``"1,8,32"`` -> (min, opt, max) batch sizes of the optimisation profile; ``"8"`` ->
    (8, 8, 8); None -> None (the device's default, :func:`resolve_batch`)."""
    if text is None:
        return None
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
    batch: tuple[int, int, int] = DEFAULT_TRT_BATCH,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    dla_core: int | None = None,
    calib: str | Path | None = None,
    timing_cache: str | Path | None = None,
    strongly_typed: bool = False,
) -> str:
    """The trtexec line that builds the same engine: TensorRT 8.5-10.x syntax, or 11's
    (``strongly_typed``: no --fp16/--int8, precision comes from the ONNX)."""
    shapes = [f"{input_name}:{b}x3x{input_size}x{input_size}" for b in batch]
    args = ["trtexec", f"--onnx={onnx}", f"--saveEngine={out}"]
    args += [f"--minShapes={shapes[0]}", f"--optShapes={shapes[1]}", f"--maxShapes={shapes[2]}"]
    if precision in ("fp16", "int8") and not strongly_typed:
        args.append("--fp16")
    if precision == "int8" and not strongly_typed:
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


def calibration_batches(
    paths: Sequence[Path], spec: Preprocess, batch_size: int = CALIB_BATCH
) -> Iterator[np.ndarray]:
    """Full float32 NCHW batches for TensorRT's calibrator (a short tail batch is dropped:
    the calibration profile fixes the batch size)."""
    for start in range(0, len(paths) - batch_size + 1, batch_size):
        images = [read_labelled(p, "the manifest") for p in paths[start : start + batch_size]]
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
    batch: tuple[int, int, int] | None = None,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    dla_core: int | None = None,
    timing_cache: str | Path | None = None,
    force: bool = False,
    echo: Callable[[str], None] = print,
) -> BuildResult:
    """Build (or reuse) an engine for ``onnx_path`` and write its sidecar card.

    ``precision`` defaults to int8 for a Q/DQ ONNX and fp16 otherwise; ``batch`` to
    :data:`DEFAULT_TRT_BATCH` on the GPU and :data:`DEFAULT_DLA_BATCH` (static) on a DLA core. The
    trtexec line is passed to ``echo`` before anything else, so it is printed even when the
    build cannot run.
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
    batch = resolve_batch(batch, dla_core)
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
    out = Path(out) if out else default_engine_path(onnx_path, card, precision)
    # TensorRT's version shapes the trtexec line (11 has no --fp16/--int8), but the line is
    # printed before anything can fail, so a machine without TensorRT still gets it.
    try:
        trt, missing = require("tensorrt"), None
    except MissingExtraError as exc:
        trt, missing = None, exc
    try:
        feats = features(trt.__version__) if trt is not None else None
    except UserError as exc:  # older than 8.5: refused, after the line is printed
        feats, missing = None, exc
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
        strongly_typed=feats.strongly_typed if feats else False,
    )
    echo(f"equivalent trtexec command:\n  {line}")
    if implicit and calib_cache_path is None:
        echo(
            "note: trtexec cannot calibrate on images; write a cache with `wbc-edge export int8 "
            f"--model {onnx_path} --calib SPLIT.csv` and add --calib=<that cache> to the line"
        )
    if trt is None:
        raise UserError(
            f"{missing}. TensorRT engines are built on the device that runs them: run "
            "`wbc-edge build-engine` on the Jetson, or the trtexec command above there"
        ) from missing
    if feats is None:
        raise UserError(str(missing)) from missing
    if precision == "fp16" and feats.strongly_typed:
        raise UserError(
            f"TensorRT {feats.version} builds strongly typed networks only: FP16 must already be "
            f"in the ONNX. Convert {onnx_path} with NVIDIA ModelOpt's AutoCast "
            "(`python -m modelopt.onnx.autocast --onnx_path ... --low_precision_type fp16`), "
            "build with --precision fp32 from that file, or use TensorRT 10.x"
        )
    if precision == "int8" and feats.strongly_typed:
        echo(
            f"note: TensorRT {feats.version} is strongly typed: layers outside the Q/DQ pairs "
            "run in the ONNX's own type (FP32)"
        )
    elif precision != "fp32" and feats.precision_flags_deprecated:
        echo(
            f"note: BuilderFlag.FP16/INT8 are deprecated in TensorRT {feats.version} and gone "
            "in 11; an FP16 or Q/DQ ONNX is the lasting path"
        )
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
    serialized, gpu_layers = _build_serialized(
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
        dla_gpu_fallback_layers=gpu_layers if dla_core is not None else [],
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
) -> tuple[bytes, list[str]]:
    """The TensorRT calls (NVIDIA's documented Python API, 8.5-11.x, gated by ``feats``).

    Returns the serialized engine and, for a DLA build, the layers that run on the GPU."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if feats.explicit_batch_flag:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # From the path, not the bytes: the parser then finds external weight files beside it.
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    shape = (3, input_size, input_size)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *[(b, *shape) for b in batch])
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8") and feats.precision_flags:
        if not builder.platform_has_fast_fp16:
            echo("note: this GPU has no fast FP16; the engine may not be faster than FP32")
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8" and feats.precision_flags:
        config.set_flag(trt.BuilderFlag.INT8)
    if calibrator is not None:  # implicit INT8, which build_engine allows only where it exists
        config.int8_calibrator = calibrator
        fixed = builder.create_optimization_profile()
        fixed.set_shape(input_name, *[(CALIB_BATCH, *shape)] * 3)
        config.set_calibration_profile(fixed)
    gpu_layers: list[str] = []
    if dla_core is not None:
        if dla_core >= builder.num_DLA_cores:
            raise UserError(
                f"--dla {dla_core}: this device has {builder.num_DLA_cores} DLA core(s)"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        gpu_layers = _gpu_fallback_layers(network, config)
        total = network.num_layers
        if gpu_layers:
            shown = ", ".join(gpu_layers[:10]) + (" ..." if len(gpu_layers) > 10 else "")
            echo(
                f"note: {len(gpu_layers)} of {total} layers cannot run on DLA core {dla_core} "
                f"and fall back to the GPU: {shown}"
            )
        else:
            echo(f"all {total} layers run on DLA core {dla_core}")
    if timing_cache is not None:
        _use_timing_cache(config, timing_cache, echo)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    if timing_cache is not None:
        _save_timing_cache(config, timing_cache, echo)
    return bytes(serialized), gpu_layers


def _gpu_fallback_layers(network: Any, config: Any) -> list[str]:
    """Names of the layers the DLA cannot run (with GPU fallback they run on the GPU)."""
    layers = (network.get_layer(i) for i in range(network.num_layers))
    return [layer.name for layer in layers if not config.can_run_on_DLA(layer)]


def _use_timing_cache(config: Any, path: Path, echo: Callable[[str], None]) -> None:
    """Start from the cache file when TensorRT accepts it, else from an empty cache: a cache
    from another device or TensorRT version is rejected, which only costs build time."""
    blob = path.read_bytes() if path.is_file() else b""
    if config.set_timing_cache(config.create_timing_cache(blob), False):
        return
    echo(
        f"note: TensorRT rejected the timing cache {path} (another GPU or version?); "
        "starting a new one"
    )
    config.set_timing_cache(config.create_timing_cache(b""), False)


def _save_timing_cache(config: Any, path: Path, echo: Callable[[str], None]) -> None:
    cache = config.get_timing_cache()
    if cache is None:  # TensorRT returns None when it holds no usable cache
        echo(f"note: TensorRT returned no timing cache; {path} was not updated")
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(bytes(cache.serialize()))
    os.replace(tmp, path)
