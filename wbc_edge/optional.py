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
    "simplejpeg": "runtime",
    "watchdog": "runtime",
}


class MissingTensorRTError(MissingExtraError):
    """TensorRT is not a pip dependency of any extra: JetPack or NVIDIA's wheel provides it."""

    def __init__(self) -> None:
        super().__init__("tensorrt", "jetson")
        self.args = (
            "tensorrt is not installed, and no wbc-edge extra can install it: on a Jetson it "
            "comes with JetPack (`sudo apt install nvidia-jetpack`, seen from a venv made with "
            "--system-site-packages; jetson/setup.sh does both), on a PC with an NVIDIA GPU it "
            "is NVIDIA's wheel (`pip install tensorrt-cu12`)",
        )


def require(module: str) -> ModuleType:
    """Import ``module`` or raise a one-line MissingExtraError naming the extra that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise _missing(module) from exc


def _missing(module: str) -> MissingExtraError:
    root = module.split(".")[0]
    if root == "tensorrt":
        return MissingTensorRTError()
    return MissingExtraError(root, EXTRA_FOR.get(module, EXTRA_FOR.get(root, "dev")))


def missing_extra_error(exc: ModuleNotFoundError) -> MissingExtraError | None:
    """The one-line error for an optional package imported at a module's top (``import torch``
    inside a command that a runtime-only install lacks); None for any other module, and for a
    package that is installed but broken (``torch._C`` missing: that message is the real one)."""
    import importlib.util

    root = (exc.name or "").split(".")[0]
    if root not in EXTRA_FOR:
        return None
    try:
        installed = importlib.util.find_spec(root) is not None
    except (ImportError, ValueError):
        installed = False
    return None if installed else _missing(root)
