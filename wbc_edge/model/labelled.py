"""A labelled image set through a runtime backend: the one way any accuracy is measured.

``evaluate``, the FP32/INT8 comparison of ``export int8`` and the ``bench`` worker all score a
model with :func:`score`: the images are decoded by :mod:`wbc_edge.model.decode`, prepared by
the model card's own preprocessing and classified by the backend ``run`` would use, so a
recorded accuracy is the accuracy of the deployed path. It also holds the one check that the
data's classes are the model's (:func:`check_labels`) and the one read-an-image-or-say-which
(:func:`read_labelled`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wbc_edge.errors import UserError
from wbc_edge.model.backends import Backend
from wbc_edge.model.card import ModelCard
from wbc_edge.model.decode import model_min_side, read_image


def check_labels(card: ModelCard, labels: Sequence[str], where: str) -> np.ndarray:
    """The labels as class indices in the card's order; a UserError naming ``where`` (the
    data) when it has classes the model does not know."""
    index = {name: i for i, name in enumerate(card.class_names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise UserError(
            f"{where} has classes the model does not know: {', '.join(unknown)} "
            f"(the model knows {', '.join(card.class_names)}): use data with the model's classes"
        )
    return np.array([index[label] for label in labels], np.int64)


def read_labelled(path: str | Path, where: str, min_side: int = 0) -> np.ndarray:
    """Decode one image of a labelled set; a UserError that names the file and ``where``."""
    try:
        return read_image(str(path), min_side)
    except (ValueError, OSError) as exc:
        raise UserError(f"{exc}: fix or remove it from {where}") from exc


def dihedral_views(batch: np.ndarray, views: int) -> list[np.ndarray]:
    """The first ``views`` of the 8 symmetries of a square (rotations by 90 degrees, then the
    same flipped) of an NCHW batch, in the order of the training views (``kd.data.dihedral``)."""
    if views not in (1, 8):
        raise UserError(f"views must be 1 (no test-time augmentation) or 8, not {views}")
    out = []
    for k in range(views):
        x = np.rot90(batch, k % 4, axes=(2, 3))
        out.append(np.ascontiguousarray(x[..., ::-1] if k >= 4 else x))
    return out


def score(
    backend: Backend,
    paths: Sequence[str | Path],
    labels: Sequence[str],
    where: str,
    batch_size: int = 32,
    views: int = 1,
    min_side: int | None = None,
    label: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(probs, y)``: float64 (N, C) probabilities of ``backend`` on the images and the labels
    as class indices, in input order.

    ``min_side`` None decodes as ``run`` does (reduced JPEG decode down to the card's input);
    0 decodes in full. ``views=8`` averages over the 8 dihedral views (test-time augmentation:
    a blood cell has no up or left, so every view is an equally valid image).
    """
    from wbc_edge.console import progress

    card = backend.card
    y = check_labels(card, labels, where)
    pre = card.preprocess
    if min_side is None:
        min_side = model_min_side(pre)
    probs = []
    with progress(transient=True) as p:
        task = p.add_task(label or f"scoring {len(paths)} images", total=len(paths), status="")
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            batch = pre([read_labelled(path, where, min_side) for path in chunk])
            views_probs = [
                np.asarray(backend.predict(v), np.float64) for v in dihedral_views(batch, views)
            ]
            probs.append(np.mean(views_probs, axis=0))
            p.advance(task, len(chunk))
    out = np.concatenate(probs) if probs else np.zeros((0, card.num_classes), np.float64)
    return out, y
