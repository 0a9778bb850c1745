"""Parameters and multiply-accumulates (MACs) of a model, from its ONNX graph or its torch module.

Counted the same way for both so rows compare: MACs of Conv (output elements x input channels
per group x kernel area) and of Gemm/MatMul/Linear (M x N x K), for one image; element-wise ops,
pooling and activations are left out (they are a rounding error next to the convolutions, and
TensorRT fuses most of them away). An INT8 Q/DQ ONNX counts the same convolutions as its FP32
source; its scale and zero-point tensors are not parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.optional import require


def onnx_cost(path: str | Path, input_size: int) -> dict[str, Any]:
    """{"params", "macs", "method"} of an ONNX file (needs the ``onnx`` package)."""
    onnx = require("onnx")
    from onnx import shape_inference

    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    qdq_aux = {
        name
        for node in graph.node
        if node.op_type in ("QuantizeLinear", "DequantizeLinear")
        for name in node.input[1:]
    }
    params = sum(int(np.prod(t.dims)) for name, t in inits.items() if name not in qdq_aux)

    # Fix the batch at 1 so shape inference yields concrete shapes for every tensor.
    init_names = set(inits)
    for inp in graph.input:
        if inp.name in init_names:
            continue
        dims = inp.type.tensor_type.shape.dim
        if len(dims) == 4:
            for d, v in zip(dims, (1, 3, input_size, input_size), strict=True):
                d.ClearField("dim_param")
                d.dim_value = v
        elif dims:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    inferred = shape_inference.infer_shapes(model)
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = tuple(d.dim_value for d in dims)
    for name, t in inits.items():
        shapes[name] = tuple(t.dims)
    # A Q/DQ weight reaches Conv through DequantizeLinear: its shape is the int8 initializer's.
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes.setdefault(node.output[0], shapes[node.input[0]])

    macs = 0
    for node in graph.node:
        if node.op_type == "Conv":
            w, y = shapes.get(node.input[1]), shapes.get(node.output[0])
            if w and y:
                macs += int(np.prod(y)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, y = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and y:
                trans_a = any(at.name == "transA" and at.i for at in node.attribute)
                k = a[-2] if (node.op_type == "Gemm" and trans_a) else a[-1]
                macs += int(np.prod(y)) * int(k)
    return {
        "params": params,
        "macs": macs,
        "cost_method": "ONNX graph (BatchNorm folded into Conv)",
    }


def torch_cost(model: Any, input_size: int) -> dict[str, Any]:
    """{"params", "macs", "method"} of a torch module, by hooks on Conv2d and Linear."""
    torch = require("torch")
    nn = torch.nn
    macs = 0

    def conv_hook(mod: Any, _inp: Any, out: Any) -> None:
        nonlocal macs
        k = mod.weight.shape[1] * mod.weight.shape[2] * mod.weight.shape[3]
        macs += int(out.numel()) * int(k)

    def linear_hook(mod: Any, _inp: Any, out: Any) -> None:
        nonlocal macs
        macs += int(out.numel()) * int(mod.in_features)

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        device = next(model.parameters()).device
        with torch.inference_mode():
            model(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in model.parameters())
    return {"params": int(params), "macs": macs, "cost_method": "torch hooks (Conv2d, Linear)"}
