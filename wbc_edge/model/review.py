"""The review rule: which cells are counted, which go to a technologist, and why.

Probabilities come out of a backend; here they become a label, its top-k and a verdict. Cells
the model is unsure of (top probability under the threshold) or that look unlike its training
images are marked for *review*, so a doubtful cell cannot shift the percentages (the counting
itself, by class role, is :mod:`wbc_edge.runtime.differential`). :class:`~wbc_edge.model.model.
Model` and the streaming pipeline's records (:mod:`wbc_edge.runtime.post`) both use these
functions, so ``run`` and the Python API give every cell the same verdict.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wbc_edge.model.card import ModelCard
from wbc_edge.model.defaults import FALLBACK_THRESHOLD, TOPK
from wbc_edge.model.roles import WBC_ROLES

# Why a cell is not in the WBC differential (``reason``), in the words every surface uses.
UNCERTAIN = "uncertain"  # below the certified confidence threshold: the model may be wrong
OOD = "ood"  # unlike the training images (the card's OOD check): its label means little
NOT_WBC = "not_wbc"  # a confident platelet, nucleated red cell or artefact: counted apart
REASONS = {
    UNCERTAIN: "uncertain (below the certified confidence threshold)",
    OOD: "unlike the training images",
    NOT_WBC: "not a white cell (counted apart)",
}
# A run says plainly that the model is not reliable on its images when more than this share of
# its cells went to review ("most cells").
MOST = 0.5


def predictions(
    probs: np.ndarray,
    class_names: Sequence[str],
    threshold: float = FALLBACK_THRESHOLD,
    k: int = TOPK,
) -> list[tuple[str, float, list[tuple[str, float]], bool]]:
    """(label, prob, top-k, uncertain) per row of ``probs``: the one post-processing step the
    API and the streaming pipeline's records share."""
    out = []
    for p in probs:
        order = np.argsort(p)[::-1][:k]
        best = float(p[order[0]])
        top = [(class_names[j], float(p[j])) for j in order]
        out.append((class_names[order[0]], best, top, not best >= threshold))  # NaN-safe
    return out


def for_review(uncertain: bool, ood: bool) -> bool:
    """A cell goes to review, and is never counted, when its probability is below the review
    threshold or it looks unlike the model's training images: the differential's rule, and the
    Python API's."""
    return uncertain or ood


def reason(uncertain: bool, ood: bool, role: str = "") -> str:
    """Why a cell is not counted as a white cell ("" when it is): :data:`OOD` first (its
    confidence means little then), :data:`UNCERTAIN`, then :data:`NOT_WBC` for a confident
    cell of a class whose role is not a white cell's. ``run``'s records (``uncertain``,
    ``ood``, the label's role) and the API's :class:`~wbc_edge.model.model.Prediction` give
    the same answer through this one function."""
    if ood:
        return OOD
    if uncertain:
        return UNCERTAIN
    if role and role not in WBC_ROLES:
        return NOT_WBC
    return ""


def review_threshold(explicit: float | None, card: ModelCard) -> float:
    """The confidence below which a cell goes to review: an explicit value wins, then the
    card's certified ``confidence_threshold`` (set on validation for a stated error of counted
    cells, :mod:`wbc_edge.calibration`), then :data:`FALLBACK_THRESHOLD`."""
    if explicit is not None:
        return float(explicit)
    if card.confidence_threshold is not None:
        return card.confidence_threshold
    return FALLBACK_THRESHOLD
