"""wbc-edge: white-blood-cell classification on the edge.

``wbc_edge.load(path=None)`` opens a model (the packaged student by default) for the Python API
(:class:`wbc_edge.model.model.Model`); loaded on first use, so ``import wbc_edge`` stays light.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("wbc-edge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Field", "Model", "Prediction", "__version__", "load"]


def __getattr__(name: str) -> Any:
    if name in ("load", "Model", "Prediction", "Field"):
        from wbc_edge.model import model

        return getattr(model, name)
    raise AttributeError(f"module 'wbc_edge' has no attribute {name!r}")
