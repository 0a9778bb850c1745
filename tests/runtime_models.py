"""Tiny models and images for the runtime tests (built with onnx.helper: no torch, instant).

The model averages each colour channel of the normalised input and maps channel k to class k,
so a test decides the prediction by the colour it paints: red -> class 0, green -> 1, blue -> 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wbc_edge.model.card import ONNX_METADATA_KEY, ModelCard, Preprocess

CLASSES = ["Neutrophil", "Lymphocyte", "Promyelocyte"]
RED, GREEN, BLUE = (0, 0, 230), (0, 230, 0), (230, 0, 0)  # BGR


def make_onnx(
    path: Path,
    size: int = 32,
    classes: list[str] | None = None,
    gain: float = 4.0,
    fixed_batch: int | None = None,
    probs_output: bool = True,
    card: bool = True,
    extra_nodes: int = 0,
    preprocess: Preprocess | None = None,
    ood: object = None,
) -> Path:
    """Write the colour classifier; ``extra_nodes`` adds identity convs to slow it down."""
    import onnx
    from onnx import TensorProto, helper

    classes = classes or CLASSES
    n = len(classes)
    weight = np.zeros((3, n), np.float32)
    for k in range(min(3, n)):
        weight[k, k] = gain
    batch = fixed_batch if fixed_batch else "N"
    nodes, inits = [], [helper.make_tensor("W", TensorProto.FLOAT, (3, n), weight.ravel())]
    inits.append(helper.make_tensor("B", TensorProto.FLOAT, (n,), np.zeros(n, np.float32)))
    x = "input"
    if extra_nodes:
        eye = np.zeros((3, 3, 3, 3), np.float32)
        for c in range(3):
            eye[c, c, 1, 1] = 1.0
        inits.append(helper.make_tensor("K", TensorProto.FLOAT, eye.shape, eye.ravel()))
        for i in range(extra_nodes):
            nodes.append(helper.make_node("Conv", [x, "K"], [f"c{i}"], pads=[1, 1, 1, 1]))
            x = f"c{i}"
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, n])]
    if probs_output:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
        outputs.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, n]))
    graph = helper.make_graph(
        nodes,
        "colour",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if card:
        pre = preprocess or Preprocess(size)
        meta = ModelCard("colour_test", classes, pre, ood=ood).to_json()  # type: ignore[arg-type]
        helper.set_model_props(model, {ONNX_METADATA_KEY: meta})
    onnx.save(model, str(path))
    return path


def solid(colour: tuple[int, int, int], size: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = colour
    noise = rng.integers(0, 20, image.shape, dtype=np.uint8)
    return image + noise


def write_images(folder: Path, colours: list[tuple[int, int, int]], prefix: str = "img") -> list:
    """One small JPEG per colour, named so sorted order is creation order."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, colour in enumerate(colours):
        path = folder / f"{prefix}_{i:04d}.jpg"
        cv2.imwrite(str(path), solid(colour, seed=i))
        paths.append(path)
    return paths


def paint_field(centres: list[tuple[int, int]], seed: int) -> np.ndarray:
    """A smear-like field: pale background, pink red cells, purple white-cell nuclei at
    ``centres``."""
    import cv2

    rng = np.random.default_rng(seed)
    image = np.full((480, 640, 3), (215, 205, 220), np.uint8)
    for _ in range(14):
        centre = (int(rng.integers(40, 600)), int(rng.integers(40, 440)))
        cv2.circle(image, centre, 45, (170, 150, 215), -1)
    for x, y in centres:
        cv2.circle(image, (x, y), 60, (220, 190, 200), -1)
        cv2.circle(image, (x, y), 38, (170, 60, 120), -1)
    return image


def run_args(src: Path, model: Path, out: Path, *extra: str) -> list[str]:
    """``wbc-edge run`` arguments whose results land in ``out`` itself: it is the sample folder
    (``--out`` its parent)."""
    where = ["--out", str(out.parent), "--sample", out.name]
    return ["run", str(src), "-m", str(model), *where, "--no-live", *extra]
