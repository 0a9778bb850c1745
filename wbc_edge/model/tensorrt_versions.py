"""The one place that knows how TensorRT versions differ (8.5 to 11.x).

The engine builder (``wbc_edge.export.tensorrt_build``) and the engine backend
(``wbc_edge.model.backends.tensorrt``) ask :func:`features` what the installed TensorRT needs
or allows and never compare versions themselves, so a new TensorRT release changes this file
only. It imports nothing heavy: the version string is all it reads. What each gate follows
(NVIDIA's release notes and migration guides; the names are checked against NVIDIA's real
binding wheels by ``tests/test_tensorrt_real_bindings.py``):

- 8.5 is the floor (JetPack 5.1). 8.5 added the named-tensor I/O API (``num_io_tensors``,
  ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) and deprecated binding
  indices, which 10 removed; so every supported version takes one I/O code path, as
  Polygraphy does from 8.5.
- < 10: ``create_network`` needs ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` (10 made
  explicit batch the only mode; 11 removed the flag).
- < 11: weak typing: ``BuilderFlag.FP16`` / ``BuilderFlag.INT8`` let TensorRT pick
  reduced-precision kernels (deprecated from 10.12, removed in 11, where every network is
  strongly typed: precision comes from the ONNX's own types and Q/DQ nodes).
  ``Builder.platform_has_fast_fp16`` went with them.
- < 11: implicit INT8 calibration (``IInt8EntropyCalibrator2``, ``int8_calibrator``,
  ``set_calibration_profile``); deprecated since 10.1.
- An engine deserializes only in the TensorRT major.minor that built it.
"""

from __future__ import annotations

from dataclasses import dataclass

from wbc_edge.errors import UserError

MINIMUM = (8, 5)


def parse_version(version: str) -> tuple[int, int, int]:
    """``"10.3.0.26"`` -> (10, 3, 0); ``"8.6.1.post1"`` -> (8, 6, 1); UserError without digits."""
    parts: list[int] = []
    for piece in str(version).split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    if not parts:
        raise UserError(f"not a TensorRT version: {version!r} (expected e.g. 10.3.0)")
    return tuple((parts + [0, 0, 0])[:3])  # type: ignore[return-value]


def version_code(version: str) -> int:
    """TensorRT's integer version, as its calibration-cache header writes it (8.6.1 -> 8601,
    10.3.0 -> 100300): 8.x packs ``major*1000 + minor*100 + patch``, 10 widened the major."""
    major, minor, patch = parse_version(version)
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def same_engine_series(built_with: str, installed: str) -> bool:
    """True when an engine built by ``built_with`` can deserialize in ``installed``."""
    return parse_version(built_with)[:2] == parse_version(installed)[:2]


@dataclass(frozen=True)
class TrtFeatures:
    """What the installed TensorRT needs or allows; derived from its version alone."""

    version: str
    explicit_batch_flag: bool  # create_network(1 << EXPLICIT_BATCH) (< 10)
    precision_flags: bool  # weak typing: BuilderFlag.FP16/INT8, platform_has_fast_fp16 (< 11)
    precision_flags_deprecated: bool  # (>= 10.12)
    implicit_int8: bool  # IInt8EntropyCalibrator2 and the calibration profile (< 11)
    implicit_int8_deprecated: bool  # (>= 10.1)

    @property
    def strongly_typed(self) -> bool:
        """Every network is strongly typed (11+): precision comes from the ONNX alone."""
        return not self.precision_flags


def features(version: str) -> TrtFeatures:
    """The gates for ``version`` (``tensorrt.__version__``); refuses versions below 8.5 with the
    installed version in the message."""
    v = parse_version(version)
    if v[:2] < MINIMUM:
        raise UserError(
            f"TensorRT {version} is too old: wbc-edge needs TensorRT 8.5 or newer "
            "(JetPack 5.1+, or NVIDIA's tensorrt wheel on a PC)"
        )
    return TrtFeatures(
        version=str(version),
        explicit_batch_flag=v < (10, 0, 0),
        precision_flags=v < (11, 0, 0),
        precision_flags_deprecated=v >= (10, 12, 0),
        implicit_int8=v < (11, 0, 0),
        implicit_int8_deprecated=v >= (10, 1, 0),
    )
