"""The TensorRT builder calls: an ONNX file parsed into a network and built into engine bytes.

NVIDIA's documented Python API, 8.5-11.x; every difference between versions is asked of
:class:`~wbc_edge.model.tensorrt_versions.TrtFeatures`, never compared here. Besides the
precision flags and the optimisation profile this names the layers a DLA core cannot run and
reads and updates a timing cache (a rejected one is not fatal). The only part of
``build-engine`` that needs a GPU, with the calibrator
(:mod:`~wbc_edge.export.tensorrt_calibrator`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wbc_edge.errors import UserError
from wbc_edge.export.tensorrt_calibrator import CALIB_BATCH
from wbc_edge.model.tensorrt_versions import TrtFeatures


def build_serialized(
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
