"""The Q/DQ checker: does a quantized graph have the form TensorRT fuses into INT8 kernels?"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from wbc_edge.export.int8.settings import WEIGHTED_OPS
from wbc_edge.optional import require

onnx = require("onnx")


def check_qdq(
    proto: Any,
    symmetric: bool = True,
    per_channel: bool = True,
    op_types: Sequence[str] = WEIGHTED_OPS,
) -> list[str]:
    """Problems that keep a Q/DQ model from TensorRT's INT8 kernels (empty list: none).

    Every ``op_types`` node needs DequantizeLinear on its data input and on its weight;
    ``symmetric``: every zero point is int8 0; ``per_channel``: one weight scale per output
    channel.
    """
    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
    problems = []
    if symmetric:
        for n in graph.node:
            if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
                zp = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
                if zp is None or zp.dtype != np.int8 or np.any(zp != 0):
                    problems.append(f"{n.name or n.output[0]}: zero point is not int8 0")
    for n in graph.node:
        if n.op_type not in op_types:
            continue
        for idx, role in ((0, "input"), (1, "weight")):
            dq = producer.get(n.input[idx])
            if dq is None or dq.op_type != "DequantizeLinear":
                problems.append(f"{n.name}: {role} {n.input[idx]!r} is not quantized")
                continue
            if role == "weight" and per_channel:
                weight = _weight_of(dq, producer, consts)
                scale = consts.get(dq.input[1])
                if weight is None or scale is None:
                    problems.append(f"{n.name}: weight or scale is not a constant")
                    continue
                out_ch = _out_channels(n, weight)
                if scale.size != out_ch:
                    problems.append(
                        f"{n.name}: {scale.size} weight scale(s) for {out_ch} output channels"
                    )
    return problems


def _weight_of(dq: Any, producer: dict[str, Any], consts: dict[str, np.ndarray]) -> Any:
    src = dq.input[0]
    if src in consts:
        return consts[src]
    q = producer.get(src)
    if q is not None and q.op_type == "QuantizeLinear":
        return consts.get(q.input[0])
    return None


def _out_channels(node: Any, weight: np.ndarray) -> int:
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return int(weight.shape[0] if trans_b else weight.shape[1])
    if node.op_type == "MatMul":
        return int(weight.shape[-1])
    return int(weight.shape[0])
