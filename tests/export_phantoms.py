"""Test material for the export tests: phantom cell images on disk with a split manifest, and a
tiny CNN trained on them for a few seconds.

A briefly trained model has clear logit margins, so INT8-vs-FP32 agreement measures
quantization error; a random model's near-tied logits would flip on any rounding.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from wbc_edge.data.manifest import ManifestRow, write_manifest
from wbc_edge.model.card import ModelCard, Preprocess

CLASSES = ["Disc", "Ring", "Square", "Twin"]
SIZE = 32  # model input
RAW = 40  # images on disk are larger, so the runtime's resize is part of the path


def phantom(label: str, rng: np.random.Generator) -> np.ndarray:
    """A stained-looking 'cell' whose shape gives its class; colour and size vary at random."""
    img = np.full((RAW, RAW, 3), rng.integers(200, 250), np.uint8)
    img = (img + rng.normal(0, 6, img.shape)).clip(0, 255).astype(np.uint8)
    colour = tuple(int(c) for c in rng.integers(60, 180, 3))
    c = RAW // 2 + int(rng.integers(-4, 5))
    r = int(rng.integers(9, 14))
    if label == "Disc":
        cv2.circle(img, (c, c), r, colour, -1)
    elif label == "Ring":
        cv2.circle(img, (c, c), r, colour, 3)
    elif label == "Square":
        cv2.rectangle(img, (c - r, c - r), (c + r, c + r), colour, -1)
    else:
        cv2.circle(img, (c - r // 2 - 2, c), r // 2 + 1, colour, -1)
        cv2.circle(img, (c + r // 2 + 2, c), r // 2 + 1, colour, -1)
    return img


def write_phantoms(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """Images under root/<class>/ and root/split.csv with the given count per split."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in CLASSES:
        (root / label).mkdir(parents=True, exist_ok=True)
        i = 0
        for split, n in per_class.items():
            for _ in range(n):
                path = root / label / f"{label}_{i:04d}.png"
                cv2.imwrite(str(path), phantom(label, rng))
                rows.append(ManifestRow(path, label, split, f"{label}{i}"))
                i += 1
    return write_manifest(rows, root / "split.csv")


class TinyNet(nn.Module):
    """Conv-BN-ReLU stem, a residual block, pooled head: the op mix of the real students."""

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.block = nn.Sequential(
            nn.Conv2d(16, 16, 3, 1, 1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, 1, 1, bias=False),
            nn.BatchNorm2d(16),
        )
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        x = self.down(x).mean((2, 3))
        return self.head(x)


def card() -> ModelCard:
    return ModelCard("tinynet-test", CLASSES, Preprocess(SIZE))


def train_tiny(manifest: Path, steps: int = 300, seed: int = 0) -> TinyNet:
    """A few seconds of Adam on the train split, through the card's own preprocessing."""
    from wbc_edge.data.manifest import read_manifest
    from wbc_edge.model.preprocess import read_image

    torch.manual_seed(seed)
    rows = read_manifest(manifest, "train")
    spec = card().preprocess
    x = torch.from_numpy(spec([read_image(str(r.path)) for r in rows]))
    y = torch.tensor([CLASSES.index(r.label) for r in rows])
    model = TinyNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
