"""PyTorch checkpoint backend: the one backend that imports torch (needed for the teacher).

A checkpoint is ``{"card": dict, "state_dict": ...}``; the training package rebuilds the
architecture named by ``card.architecture`` and loads it with ``weights_only=True``
(:func:`wbc_edge.kd.checkpoint.load_model`). It lives here, with the training code, because
the model core must not import ``kd``: :func:`wbc_edge.model.backends.load_backend` finds it
through the ``wbc_edge.backends`` entry point (pyproject.toml) when a ``.pt`` file is opened.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wbc_edge.model.backends import BackendBase
from wbc_edge.model.defaults import DEVICE
from wbc_edge.optional import require


class TorchBackend(BackendBase):
    name = "torch"

    def __init__(self, path: str | Path, device: str = DEVICE) -> None:
        super().__init__()
        torch = require("torch")
        from wbc_edge.kd.checkpoint import load_model

        self.path = Path(path)
        model, self.card = load_model(self.path)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self._torch = torch

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(batch).to(self.device))
            logits = logits.float() / self.card.temperature
            return torch.softmax(logits, dim=1).cpu().numpy()  # .cpu() synchronises

    def close(self) -> None:
        self.model = None
