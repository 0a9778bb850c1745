"""Quantization settings per target: the table of ``quantize_static`` arguments.

``tensorrt``: symmetric INT8 activations and weights (zero point 0), per-output-channel weight
scales, float weights behind Q->DQ pairs and float biases, Q/DQ on the inputs of every
Conv/Gemm/MatMul and residual Add: the explicit-quantization pattern TensorRT fuses into INT8
kernels. ``cpu``: ONNX Runtime's fast U8S8 form with 7-bit weights (``reduce_range``), chosen among
:data:`CPU_CANDIDATES` (see ``benchmarks/results/export-int8-cpu.md``): full 8-bit weights lost
14 points on an AVX2 CPU without VNNI, where ONNX Runtime's kernels saturate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from wbc_edge.optional import require

quant = require("onnxruntime.quantization")


MIN_CALIBRATION_IMAGES = 300  # below this, rare classes barely reach the activation histograms


WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class QuantSettings:
    """One way to quantize; the fields map onto ``quantize_static`` arguments."""

    name: str
    quant_format: str = "qdq"  # "qdq" or "qoperator"
    activation: str = "s8"  # "s8" (QInt8) or "u8" (QUInt8)
    weight: str = "s8"
    per_channel: bool = True
    reduce_range: bool = False
    symmetric_activations: bool = False
    # None: every op ONNX Runtime can quantize except Softmax (the output probabilities stay
    # float, so confidence thresholds keep their meaning).
    op_types: tuple[str, ...] | None = None
    weight_qdq_pair: bool = False  # keep float weights behind Q->DQ (what TensorRT 8.x parses)
    quantize_bias: bool = True
    # Ops whose outputs stay float: TensorRT wants Q/DQ on the inputs of weighted ops only and
    # fuses the rest; quantized outputs would also round the logits.
    float_outputs: tuple[str, ...] = ()

    def quantize_kwargs(self) -> dict[str, Any]:
        qtype = {"s8": quant.QuantType.QInt8, "u8": quant.QuantType.QUInt8}
        fmt = {"qdq": quant.QuantFormat.QDQ, "qoperator": quant.QuantFormat.QOperator}
        return {
            "quant_format": fmt[self.quant_format],
            "activation_type": qtype[self.activation],
            "weight_type": qtype[self.weight],
            "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
            "op_types_to_quantize": list(self.op_types or _default_op_types()),
            "extra_options": {
                "ActivationSymmetric": self.symmetric_activations,
                "WeightSymmetric": True,
                "AddQDQPairToWeight": self.weight_qdq_pair,
                "QuantizeBias": self.quantize_bias,
                "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
                "CalibTensorRangeSymmetric": self.symmetric_activations,
                "OpTypesToExcludeOutputQuantization": list(self.float_outputs),
            },
        }


TENSORRT = QuantSettings(
    name="tensorrt",
    quant_format="qdq",
    activation="s8",
    per_channel=True,
    symmetric_activations=True,
    op_types=(*WEIGHTED_OPS, "Add"),
    weight_qdq_pair=True,
    quantize_bias=False,
    float_outputs=(*WEIGHTED_OPS, "Add"),
)


# Chosen by measurement (benchmarks/results/export-int8-cpu.md): see CPU_CANDIDATES. 7-bit
# weights because the model file does not know which CPU will run it: on AVX2 without VNNI the
# 8-bit form saturates (val 83.1% against FP32 97.2% for the packaged student), and the 7-bit
# one is as fast there.
CPU = QuantSettings(
    name="cpu", quant_format="qdq", activation="u8", per_channel=True, reduce_range=True
)


TARGETS = {"tensorrt": TENSORRT, "cpu": CPU}


# What `export int8-sweep` measures for the cpu target.
CPU_CANDIDATES = (
    QuantSettings("qdq-u8s8-channel", "qdq", "u8", per_channel=True),
    QuantSettings("qdq-u8s8-tensor", "qdq", "u8", per_channel=False),
    # 7-bit weights: an AVX2 CPU without VNNI multiplies u8 x s8 with VPMADDUBSW, which
    # saturates a pair of products to int16 (255*127*2 > 32767); 7-bit weights lie in
    # [-64, 64], and 255*64*2 = 32640 fits.
    QuantSettings("qdq-u8s8-channel-reduced", "qdq", "u8", per_channel=True, reduce_range=True),
    QuantSettings("qdq-s8s8-channel", "qdq", "s8", per_channel=True),
    QuantSettings("qdq-s8s8-tensor", "qdq", "s8", per_channel=False),
    QuantSettings("qop-u8s8-channel", "qoperator", "u8", per_channel=True),
    QuantSettings("qop-u8s8-tensor", "qoperator", "u8", per_channel=False),
    QuantSettings("qop-s8s8-channel", "qoperator", "s8", per_channel=True),
)


def default_for(s: QuantSettings | None) -> str:
    if s is None:
        return ""
    same = [t for t, d in TARGETS.items() if replace(d, name=s.name) == s]
    return ",".join(same)


def _default_op_types() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - {"Softmax"})
