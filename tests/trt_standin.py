"""One recording stand-in for ``tensorrt`` and ``pycuda`` (the builder's and the backend's).

TensorRT needs an NVIDIA GPU, so behaviour tests run ``build_engine`` and ``TensorRTBackend``
against these small classes: a numpy "engine" (logits = 4 x the channel means, the colour
model of ``runtime_models``), device memory as a registry of byte arrays, and a builder that
logs what it was asked to do. The classes carry the names of NVIDIA's real classes (``Builder``,
``IBuilderConfig``, ``ICudaEngine``, ...), and every public attribute our code reads or writes
on them is recorded as ``(class, attribute)`` in :attr:`StandIn.used`.
``tests/test_tensorrt_real_bindings.py`` checks those records against NVIDIA's real binding
wheels, version by version; here they are only behaviour.

The stand-in has every name of every version: it does not imitate what a version lacks (the
real bindings are the judge of that). Its own bookkeeping uses ``_private`` names, which are
never recorded, so what is recorded is what our code touched.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np


class _EnumValue(str):
    """A member of a stand-in enum: compares equal to its own text (what the behaviour tests
    look for), and says which TensorRT enum it belongs to (what the signature check needs)."""

    enum = ""


def _kind(value: Any) -> str:
    """What a call passed, in the words of pybind11's signatures (str, int, bool, ...)."""
    if isinstance(value, _EnumValue):
        return value.enum
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    for kind in (str, float, bytes):
        if isinstance(value, kind):
            return kind.__name__
    if isinstance(value, (tuple, list)):
        return "sequence"
    return getattr(type(value), "_trt", type(value).__name__)


def _make(cls: type, *args: Any) -> Any:
    """An object TensorRT itself returns (not a constructor our code calls): not recorded."""
    return type.__call__(cls, *args)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class _Memory:
    """Device memory: addresses index a registry, as real device pointers would."""

    registry: dict[int, bytearray] = {}
    _next = 0x1000

    def __init__(self, nbytes: int) -> None:
        _Memory._next += 0x1000
        self.address = _Memory._next
        self.registry[self.address] = bytearray(nbytes)

    def __int__(self) -> int:
        return self.address

    def free(self) -> None:
        self.registry.pop(self.address)


class StandIn:
    """``tensorrt`` at ``version`` plus ``pycuda``; :meth:`install` puts them in sys.modules.

    ``engine``: the engine the runtime deserializes from the bytes ``b"ENGINE"`` (keys
    size, classes, max_batch, dynamic, output). Builder knobs: ``parse_ok``, ``gpu_only_layers``
    (layer names the DLA cannot run), ``timing_cache_ok`` (False: TensorRT rejects the cache
    file), ``timing_cache_back`` (False: ``get_timing_cache`` returns None), ``build_ok``.
    """

    def __init__(
        self,
        version: str,
        engine: dict | None = None,
        parse_ok: bool = True,
        gpu_only_layers: tuple[str, ...] = (),
        timing_cache_ok: bool = True,
        timing_cache_back: bool = True,
        build_ok: bool = True,
    ) -> None:
        self.version = version
        self.used: set[tuple[str, str]] = set()
        # (class, method, kinds of the positional arguments, keyword names) of every call
        self.signatures: set[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = set()
        self.calls: list[tuple] = []  # what the builder was asked to do
        self.log: list = []  # what the runtime did with CUDA
        self.batches: list[tuple] = []  # calibration batches copied to the device
        self.tensorrt = self._tensorrt(
            engine, parse_ok, gpu_only_layers, timing_cache_ok, timing_cache_back, build_ok
        )
        self.modules = {"tensorrt": self.tensorrt, **self._pycuda()}

    def install(self, monkeypatch: Any) -> StandIn:
        for name, module in self.modules.items():
            monkeypatch.setitem(sys.modules, name, module)
        return self

    # -- recording ------------------------------------------------------------------------

    def _recorded_base(self) -> tuple[type, type]:
        used, signatures = self.used, self.signatures

        def owner(cls: type, name: str) -> str | None:
            """The TensorRT class that defines ``name`` for ``cls``; None when it is ours."""
            for c in type.__getattribute__(cls, "__mro__"):
                own = type.__getattribute__(c, "__dict__")
                if name in own:  # defined by a stand-in class (recorded) or by our subclass
                    return own.get("_trt")
            # an attribute no class defines: ours when our subclass set it, TensorRT's otherwise
            return type.__getattribute__(cls, "__dict__").get("_trt")

        def log(cls: type, name: str) -> str | None:
            if name.startswith("_"):
                return None
            trt_name = owner(cls, name)
            if trt_name:
                used.add((trt_name, name))
            return trt_name

        def recording(trt_name: str, name: str, method: Any) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                kinds = tuple(_kind(a) for a in args)
                signatures.add((trt_name, name, kinds, tuple(sorted(kwargs))))
                return method(*args, **kwargs)

            return call

        class Meta(type):
            def __getattribute__(cls, name: str) -> Any:
                log(cls, name)
                return type.__getattribute__(cls, name)

            def __call__(cls, *args: Any, **kwargs: Any) -> Any:
                trt_name = type.__getattribute__(cls, "__dict__").get("_trt")
                if trt_name:  # a TensorRT constructor (not our subclass's)
                    kinds = tuple(_kind(a) for a in args)
                    signatures.add((trt_name, "__init__", kinds, tuple(sorted(kwargs))))
                return type.__call__(cls, *args, **kwargs)

        class Recorded(metaclass=Meta):
            def __getattribute__(self, name: str) -> Any:
                trt_name = log(type(self), name)
                value = object.__getattribute__(self, name)
                if trt_name and callable(value) and not isinstance(value, type):
                    return recording(trt_name, name, value)
                return value

            def __setattr__(self, name: str, value: Any) -> None:
                log(type(self), name)
                object.__setattr__(self, name, value)

        return Meta, Recorded

    # -- tensorrt ---------------------------------------------------------------------------

    def _tensorrt(
        self,
        spec: dict | None,
        parse_ok: bool,
        gpu_only_layers: tuple[str, ...],
        timing_cache_ok: bool,
        timing_cache_back: bool,
        build_ok: bool,
    ) -> types.ModuleType:
        calls, used = self.calls, self.used
        _, R = self._recorded_base()

        def enum(trt_name: str, **members: str) -> type:
            values = {}
            for name, text in members.items():
                values[name] = _EnumValue(text)
                values[name].enum = trt_name
            return type(trt_name, (R,), {"_trt": trt_name, **values})

        NetworkDefinitionCreationFlag = enum(
            "NetworkDefinitionCreationFlag", EXPLICIT_BATCH="0", STRONGLY_TYPED="1"
        )
        MemoryPoolType = enum("MemoryPoolType", WORKSPACE="workspace")
        BuilderFlag = enum("BuilderFlag", FP16="FP16", INT8="INT8", GPU_FALLBACK="GPU_FB")
        DeviceType = enum("DeviceType", DLA="DLA", GPU="GPU")
        TensorIOMode = enum("TensorIOMode", INPUT="in", OUTPUT="out")

        class Logger(R):
            _trt = "Logger"
            WARNING = 2

            def __init__(self, level: int) -> None:
                pass

        class ILayer(R):
            _trt = "ILayer"

            def __init__(self, name: str) -> None:
                object.__setattr__(self, "_name", name)

            @property
            def name(self) -> str:
                return self._name

        layer_names = ("/stem/conv/Conv", "/stem/act/Relu", "/pool/GlobalAveragePool", "/fc")

        class INetworkDefinition(R):
            _trt = "INetworkDefinition"
            num_layers = len(layer_names)

            def get_layer(self, index: int) -> ILayer:
                return _make(ILayer, layer_names[index])

        class IParserError(R):
            _trt = "IParserError"

            def __str__(self) -> str:
                return "In node 3 (Conv): unsupported attribute"

        class OnnxParser(R):
            _trt = "OnnxParser"

            def __init__(self, network: Any, logger: Any) -> None:
                pass

            @property
            def num_errors(self) -> int:
                return 0 if parse_ok else 1

            def parse(self, data: bytes) -> bool:
                calls.append(("parse_bytes", len(data)))
                return parse_ok

            def parse_from_file(self, path: str) -> bool:
                assert isinstance(path, str)
                calls.append(("parse_from_file", path))
                return parse_ok

            def get_error(self, index: int) -> IParserError:
                return _make(IParserError)

        class IOptimizationProfile(R):
            _trt = "IOptimizationProfile"

            def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
                calls.append(("shape", name, lo, opt, hi))

        class ITimingCache(R):
            _trt = "ITimingCache"

            def __init__(self, blob: bytes = b"") -> None:
                object.__setattr__(self, "_blob", bytes(blob))

            def serialize(self) -> bytes:
                return b"timing-cache"

        class IBuilderConfig(R):
            _trt = "IBuilderConfig"

            def __init__(self) -> None:
                object.__setattr__(self, "_calibrator", None)
                object.__setattr__(self, "_device", "GPU")
                object.__setattr__(self, "_dla", None)
                object.__setattr__(self, "_cache", None)

            @property
            def int8_calibrator(self) -> Any:
                return self._calibrator

            @int8_calibrator.setter
            def int8_calibrator(self, calibrator: Any) -> None:
                object.__setattr__(self, "_calibrator", calibrator)

            @property
            def default_device_type(self) -> str:
                return self._device

            @default_device_type.setter
            def default_device_type(self, device: str) -> None:
                object.__setattr__(self, "_device", device)

            @property
            def DLA_core(self) -> int | None:
                return self._dla

            @DLA_core.setter
            def DLA_core(self, core: int) -> None:
                object.__setattr__(self, "_dla", core)

            def set_memory_pool_limit(self, pool: str, size: int) -> None:
                calls.append(("pool", pool, size))

            def set_flag(self, flag: str) -> None:
                calls.append(("flag", flag))

            def add_optimization_profile(self, profile: Any) -> int:
                calls.append(("profile",))
                return 0

            def set_calibration_profile(self, profile: Any) -> None:
                calls.append(("calibration_profile",))

            def can_run_on_DLA(self, layer: ILayer) -> bool:
                return object.__getattribute__(layer, "_name") not in gpu_only_layers

            def create_timing_cache(self, blob: bytes) -> ITimingCache:
                calls.append(("timing_cache_in", bytes(blob)))
                return _make(ITimingCache, blob)

            def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
                accepted = timing_cache_ok or not object.__getattribute__(cache, "_blob")
                calls.append(("set_timing_cache", ignore_mismatch, accepted))
                if accepted:
                    object.__setattr__(self, "_cache", cache)
                return accepted

            def get_timing_cache(self) -> ITimingCache | None:
                return self._cache if timing_cache_back else None

        class Builder(R):
            _trt = "Builder"
            num_DLA_cores = 2
            platform_has_fast_fp16 = True

            def __init__(self, logger: Any) -> None:
                pass

            def create_network(self, flags: int = 0) -> INetworkDefinition:
                calls.append(("network", flags))
                return _make(INetworkDefinition)

            def create_builder_config(self) -> IBuilderConfig:
                return _make(IBuilderConfig)

            def create_optimization_profile(self) -> IOptimizationProfile:
                return _make(IOptimizationProfile)

            def build_serialized_network(self, network: Any, config: IBuilderConfig) -> Any:
                cal = object.__getattribute__(config, "_calibrator")
                if cal is not None:
                    cache = cal.read_calibration_cache()
                    if cache is None:
                        assert cal.get_batch_size() > 0
                        while (ptrs := cal.get_batch(["input"])) is not None:
                            calls.append(("batch", ptrs))
                        cal.write_calibration_cache(b"TRT-8601-EntropyCalibration2\n")
                    else:
                        calls.append(("cache_used", cache.decode().splitlines()[0]))
                calls.append(("device", object.__getattribute__(config, "_device")))
                calls.append(("dla_core", object.__getattribute__(config, "_dla")))
                return b"fake engine" if build_ok else None

        class IInt8EntropyCalibrator2(R):
            _trt = "IInt8EntropyCalibrator2"

            def __init__(self) -> None:
                pass

        engine = self._engine_class(R, spec) if spec else None

        class Runtime(R):
            _trt = "Runtime"

            def __init__(self, logger: Any) -> None:
                object.__setattr__(self, "_dla", None)

            @property
            def DLA_core(self) -> int | None:
                return self._dla

            @DLA_core.setter
            def DLA_core(self, core: int) -> None:
                object.__setattr__(self, "_dla", core)

            def deserialize_cuda_engine(self, data: bytes) -> Any:
                calls.append(("deserialize", object.__getattribute__(self, "_dla")))
                return _make(engine) if engine is not None and data == b"ENGINE" else None

        version = self.version

        class Module(types.ModuleType):
            def __getattribute__(self, name: str) -> Any:
                if not name.startswith("_"):
                    used.add(("tensorrt", name))
                return types.ModuleType.__getattribute__(self, name)

        trt = Module("tensorrt")
        trt.__version__ = version
        for cls in (
            NetworkDefinitionCreationFlag,
            MemoryPoolType,
            BuilderFlag,
            DeviceType,
            TensorIOMode,
            Logger,
            Builder,
            OnnxParser,
            IInt8EntropyCalibrator2,
            Runtime,
        ):
            types.ModuleType.__setattr__(trt, cls.__name__, cls)
        types.ModuleType.__setattr__(trt, "nptype", lambda dtype: dtype)
        return trt

    def _engine_class(self, R: type, spec: dict) -> type:
        """An engine computing logits = 4 x channel means; ``spec['max_batch']`` rows at most."""
        size, n, max_batch = spec["size"], len(spec["classes"]), spec["max_batch"]
        dynamic, output = spec["dynamic"], spec["output"]
        batch_dim = -1 if dynamic else max_batch
        names = ["input", output]
        shapes = {"input": (batch_dim, 3, size, size), output: (batch_dim, n)}

        class IExecutionContext(R):
            _trt = "IExecutionContext"

            def __init__(self) -> None:
                object.__setattr__(self, "_shape", None if dynamic else shapes["input"])
                object.__setattr__(self, "_addresses", {})

            def set_input_shape(self, name: str, shape: tuple) -> bool:
                assert name == "input"
                assert dynamic or tuple(shape) == shapes["input"], "static engines take max batch"
                assert 1 <= shape[0] <= max_batch
                object.__setattr__(self, "_shape", tuple(shape))
                return True

            def get_tensor_shape(self, name: str) -> tuple:
                shape = object.__getattribute__(self, "_shape")
                return shape if name == "input" else (shape[0], n)

            def set_tensor_address(self, name: str, address: int) -> bool:
                object.__getattribute__(self, "_addresses")[name] = address
                return True

            def execute_async_v3(self, stream_handle: int) -> bool:
                shape = object.__getattribute__(self, "_shape")
                addresses = object.__getattribute__(self, "_addresses")
                x = np.frombuffer(bytes(_Memory.registry[addresses["input"]]), np.float32)
                x = x[: int(np.prod(shape))].reshape(shape)
                logits = 4.0 * x.mean(axis=(2, 3))[:, :n]
                out = _softmax(logits) if output == "probs" else logits
                out = np.ascontiguousarray(out, np.float32)
                _Memory.registry[addresses[output]][: out.nbytes] = out.tobytes()
                return True

        class ICudaEngine(R):
            _trt = "ICudaEngine"
            num_io_tensors = 2

            def get_tensor_name(self, index: int) -> str:
                return names[index]

            def get_tensor_mode(self, name: str) -> str:
                return "in" if name == "input" else "out"

            def get_tensor_shape(self, name: str) -> tuple:
                return shapes[name]

            def get_tensor_dtype(self, name: str) -> Any:
                return np.float32

            def get_tensor_profile_shape(self, name: str, profile: int) -> list:
                return [(1, 3, size, size), (max_batch, 3, size, size), (max_batch, 3, size, size)]

            def create_execution_context(self) -> IExecutionContext:
                return _make(IExecutionContext)

        return ICudaEngine

    # -- pycuda -----------------------------------------------------------------------------

    def _pycuda(self) -> dict[str, types.ModuleType]:
        log, batches = self.log, self.batches
        cuda = types.ModuleType("pycuda.driver")

        class Context:
            def push(self) -> None:
                log.append("push")

            def pop(self) -> None:
                log.append("pop")

            def detach(self) -> None:
                log.append("detach")

        class Device:
            def __init__(self, index: int) -> None:
                pass

            def name(self) -> str:
                return "Fake Orin"

            def retain_primary_context(self) -> Context:
                return Context()

        class Stream:
            handle = 7

            def synchronize(self) -> None:
                log.append("sync")

        def htod_async(dev: Any, host: np.ndarray, stream: Stream) -> None:
            assert stream.handle == 7
            _Memory.registry[int(dev)][: host.nbytes] = host.tobytes()
            log.append(("htod", host.shape[0]))

        def dtoh_async(host: np.ndarray, dev: Any, stream: Stream) -> None:
            data = bytes(_Memory.registry[int(dev)][: host.nbytes])
            host[...] = np.frombuffer(data, host.dtype).reshape(host.shape)
            log.append(("dtoh", host.shape[0]))

        def htod(dev: Any, host: np.ndarray) -> None:
            batches.append(host.shape)

        cuda.init = lambda: None
        cuda.Device, cuda.Stream = Device, Stream
        cuda.pagelocked_empty = lambda shape, dtype: np.zeros(shape, dtype)
        cuda.mem_alloc = _Memory
        cuda.memcpy_htod_async, cuda.memcpy_dtoh_async, cuda.memcpy_htod = (
            htod_async,
            dtoh_async,
            htod,
        )
        pycuda = types.ModuleType("pycuda")
        pycuda.driver = cuda
        return {
            "pycuda": pycuda,
            "pycuda.driver": cuda,
            "pycuda.autoinit": types.ModuleType("pycuda.autoinit"),
        }


def device_memory_in_use() -> int:
    """Buffers allocated through the stand-in's ``mem_alloc`` and not freed."""
    return len(_Memory.registry)
