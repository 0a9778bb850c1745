"""TensorRT engine backend (Jetson and NVIDIA GPUs), TensorRT 8.5 to 11.x.

One I/O code path for every supported version: named I/O tensors (``num_io_tensors``,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``), which TensorRT 8.5 added and
10 made the only API (binding indices were deprecated in 8.5 and removed in 10). What else
differs between versions is decided in :mod:`wbc_edge.model.tensorrt_versions`.

Buffers are allocated once for the engine's largest batch: pinned host memory (so copies can be
asynchronous) and device memory, one CUDA stream, host->device copy, execute, device->host copy,
one synchronise per batch. The card comes from the sidecar ``<engine>.json`` that
``build-engine`` writes, because an engine file cannot carry metadata; the sidecar also names
the DLA core a DLA engine was built for, which the runtime must be told before deserializing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.errors import UserError
from wbc_edge.model.backends import BackendBase, output_to_read, softmax
from wbc_edge.model.card import read_sidecar
from wbc_edge.model.tensorrt_versions import features, same_engine_series
from wbc_edge.optional import require


@dataclass
class _Tensor:
    name: str
    is_input: bool
    dtype: np.dtype
    max_shape: tuple[int, ...]  # largest shape the engine accepts (batch at its profile max)


class _TensorIO:
    """The engine's I/O tensors by name (TensorRT >= 8.5)."""

    def __init__(self, trt: Any, engine: Any, context: Any) -> None:
        self.engine, self.context = engine, context
        self.tensors: list[_Tensor] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = tuple(engine.get_tensor_shape(name))
            if is_input and shape[0] == -1:
                shape = tuple(engine.get_tensor_profile_shape(name, 0)[2])
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            self.tensors.append(_Tensor(name, is_input, dtype, shape))

    def dynamic_batch(self, t: _Tensor) -> bool:
        return self.engine.get_tensor_shape(t.name)[0] == -1

    def set_input_shape(self, t: _Tensor, shape: tuple[int, ...]) -> None:
        self.context.set_input_shape(t.name, shape)

    def output_shape(self, t: _Tensor) -> tuple[int, ...]:
        return tuple(self.context.get_tensor_shape(t.name))

    def execute(self, stream: Any, addresses: list[int]) -> None:
        for t, address in zip(self.tensors, addresses, strict=True):
            self.context.set_tensor_address(t.name, address)
        if not self.context.execute_async_v3(stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")


class TensorRTBackend(BackendBase):
    name = "tensorrt"

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.card, self.build_info = read_sidecar(self.path)
        trt = require("tensorrt")
        cuda = require("pycuda.driver")
        self.version = trt.__version__
        features(self.version)  # refuses a TensorRT older than 8.5
        # build-engine records the version it built with; a mismatch cannot deserialize.
        built_with = self.build_info.get("tensorrt_version")
        if built_with and not same_engine_series(str(built_with), self.version):
            raise UserError(
                f"{self.path} was built with TensorRT {built_with} but {self.version} is "
                "installed: rebuild it on this device with `wbc-edge build-engine`"
            )
        cuda.init()
        # The primary context is the one TensorRT's CUDA runtime calls use; pushing it around
        # each call lets predict() run from any thread (the pipeline's inference thread).
        self._ctx = cuda.Device(0).retain_primary_context()
        self._ctx.push()
        try:
            self._trt_logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._trt_logger)
            dla_core = self.build_info.get("dla_core")
            if dla_core is not None:  # a DLA engine deserializes only onto its own core
                self._runtime.DLA_core = int(dla_core)
            engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if engine is None:
                raise UserError(
                    f"{self.path}: TensorRT {self.version} cannot deserialize it (built for "
                    "another GPU or TensorRT version?): rebuild it with `wbc-edge build-engine`"
                )
            self._engine = engine
            self._context = engine.create_execution_context()
            self._io = _TensorIO(trt, engine, self._context)
            self._setup_buffers(cuda)
        finally:
            self._ctx.pop()

    def _setup_buffers(self, cuda: Any) -> None:
        inputs = [t for t in self._io.tensors if t.is_input]
        outputs = [t for t in self._io.tensors if not t.is_input]
        if len(inputs) != 1 or not outputs:
            raise UserError(f"{self.path}: expected one input tensor and at least one output")
        self._input = inputs[0]
        names = [t.name for t in outputs]
        self._output = outputs[names.index(output_to_read(names))]
        self.max_batch = self._input.max_shape[0]
        self._dynamic = self._io.dynamic_batch(self._input)
        # Outputs with a dynamic batch dimension are sized for the largest batch.
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, Any] = {}
        for t in self._io.tensors:
            shape = (self.max_batch, *t.max_shape[1:]) if t.max_shape[0] == -1 else t.max_shape
            self._host[t.name] = cuda.pagelocked_empty(shape, t.dtype)
            self._device[t.name] = cuda.mem_alloc(self._host[t.name].nbytes)
        self._stream = cuda.Stream()
        self._cuda = cuda

    def _run(self, batch: np.ndarray) -> np.ndarray:
        cuda, n = self._cuda, len(batch)
        host_in = self._host[self._input.name]
        host_in[:n] = batch
        # A static engine always runs its full batch (padding rows are ignored); a dynamic one
        # runs exactly n rows, so only n rows cross the bus.
        rows = n if self._dynamic else self.max_batch
        self._io.set_input_shape(self._input, (rows, *batch.shape[1:]))
        cuda.memcpy_htod_async(self._device[self._input.name], host_in[:rows], self._stream)
        self._io.execute(self._stream, [int(self._device[t.name]) for t in self._io.tensors])
        out_shape = self._io.output_shape(self._output)
        host_out = self._host[self._output.name][: out_shape[0]]
        cuda.memcpy_dtoh_async(host_out, self._device[self._output.name], self._stream)
        self._stream.synchronize()
        out = host_out.reshape(out_shape[0], -1)[:n].astype(np.float32)
        return out if self._output.name == "probs" else softmax(out, self.card.temperature)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self._ctx.push()
        try:
            step = self.max_batch
            parts = [self._run(batch[i : i + step]) for i in range(0, len(batch), step)]
            return np.concatenate(parts)
        finally:
            self._ctx.pop()

    def close(self) -> None:
        if getattr(self, "_ctx", None) is None:
            return
        self._ctx.push()
        try:
            for mem in self._device.values():
                mem.free()
            self._device.clear()
            self._context = self._engine = self._runtime = None
        finally:
            self._ctx.pop()
            self._ctx.detach()
            self._ctx = None
