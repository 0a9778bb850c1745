"""PyTorch checkpoint backend: the one runtime path that imports torch (needed for the teacher).

A checkpoint is ``{"card": dict, "state_dict": ...}`` loaded with ``weights_only=True``; the
architecture is rebuilt from ``card.architecture`` by the training package's factories, which
are imported only here and only when a ``.pt`` file is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.errors import UserError
from wbc_edge.optional import require
from wbc_edge.runtime.backends import BackendBase
from wbc_edge.runtime.card import ModelCard


def build_model(card: ModelCard) -> Any:
    """An untrained ``card.architecture``: a student if the name is one, else a teacher."""
    from wbc_edge.kd import students, teacher

    errors = []
    for factory in (students.create_student, teacher.create_teacher):
        try:
            return factory(card.architecture, num_classes=card.num_classes)
        except (KeyError, ValueError, UserError) as exc:
            errors.append(f"{factory.__name__}: {exc}")
    raise UserError(f"unknown architecture {card.architecture!r} ({'; '.join(errors)})")


class TorchBackend(BackendBase):
    name = "torch"

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        super().__init__()
        torch = require("torch")
        self.path = Path(path)
        try:
            ckpt = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad pickle
            raise UserError(f"{self.path}: not a loadable checkpoint ({exc})") from exc
        if not isinstance(ckpt, dict) or "card" not in ckpt or "state_dict" not in ckpt:
            raise UserError(
                f"{self.path} is not a wbc-edge checkpoint (needs 'card' and 'state_dict')"
            )
        self.card = ModelCard.from_dict(ckpt["card"])
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        model = build_model(self.card)
        model.load_state_dict(ckpt["state_dict"])
        self.model = model.eval().to(self.device)
        self._torch = torch

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(batch).to(self.device))
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def close(self) -> None:
        self.model = None
