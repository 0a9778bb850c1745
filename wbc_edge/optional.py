"""Import optional heavy packages where they are needed, failing with the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from wbc_edge.errors import MissingExtraError

# Which extra brings each optional package (pyproject.toml's [project.optional-dependencies]).
EXTRA_FOR = {
    "torch": "train",
    "torchvision": "train",
    "timm": "train",
    "onnx": "export",
    "onnxruntime": "runtime",
    "cv2": "runtime",
    "tensorrt": "jetson",
    "pycuda": "jetson",
    "pycuda.driver": "jetson",
    "matplotlib": "train",
    "imagehash": "train",
    "PIL": "runtime",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise a one-line MissingExtraError naming the extra that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        root = module.split(".")[0]
        extra = EXTRA_FOR.get(module, EXTRA_FOR.get(root, "dev"))
        if root == "tensorrt":
            raise MissingExtraError(
                "tensorrt (it comes with JetPack on a Jetson, or NVIDIA's tensorrt wheel on a PC)",
                extra,
            ) from exc
        raise MissingExtraError(root, extra) from exc
