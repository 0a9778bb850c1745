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

    # Shapes as the model actually runs them, for one image: static shape inference gives up
    # on graphs with computed padding (timm's TF-"same" EfficientNets), so ask ONNX Runtime.
    wanted = {
        name
        for node in graph.node
        if node.op_type in ("Conv", "Gemm", "MatMul")
        for name in (node.input[0], node.input[1], node.output[0])
        if name not in inits
    }
    shapes = _runtime_shapes(model, sorted(wanted), input_size, path)
    for name, t in inits.items():
        shapes[name] = tuple(t.dims)

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


def _runtime_shapes(
    model: Any, names: list[str], input_size: int, path: str | Path
) -> dict[str, tuple[int, ...]]:
    """Shapes of the ``names`` tensors when the model runs on one zero image, through the
    runtime backend's session (unoptimised, so the tensors keep the graph's names)."""
    from wbc_edge.model.backends.onnxruntime import open_session

    onnx = require("onnx")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in outputs)
    sess = open_session(probe.SerializeToString(), "cpu", 1, optimize=False, where=path)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [1, 3, input_size, input_size] if len(inp.shape) == 4 else [1, *inp.shape[1:]]
        feeds[inp.name] = np.zeros(shape, np.float32)
    values = sess.run(names, feeds)
    return {n: tuple(int(d) for d in v.shape) for n, v in zip(names, values, strict=True)}


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
