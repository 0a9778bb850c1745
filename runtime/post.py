"""Post-processing of classified cells: top-k and review, cell records, the differential.

Probabilities come out of a backend; here they become what a lab reads. Cells the model is
unsure of (top probability under the threshold) go to *review* instead of the count, so a
doubtful cell cannot shift the percentages. Immature classes (blasts, promyelocytes, ...) are
what a lab must not miss: their share above a threshold raises a visible flag. The Python API,
the streaming pipeline and the HTML report all use these functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from rich.table import Table
from rich.text import Text

from wbc_edge.runtime.card import ModelCard
from wbc_edge.runtime.finder import FieldScale
from wbc_edge.runtime.options import DEFAULT_IMMATURE, FALLBACK_THRESHOLD, IMMATURE_FLAG, TOPK
from wbc_edge.runtime.sinks import CellRecord, now_iso
from wbc_edge.runtime.sources import Frame


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


def review_threshold(explicit: float | None, card: ModelCard) -> float:
    """The confidence below which a cell goes to review: an explicit value wins, then the
    card's certified ``confidence_threshold`` (set on validation for a stated error of counted
    cells, :mod:`wbc_edge.calibration`), then :data:`FALLBACK_THRESHOLD`."""
    if explicit is not None:
        return float(explicit)
    if card.confidence_threshold is not None:
        return card.confidence_threshold
    return FALLBACK_THRESHOLD


def cell_records(
    frame: Frame,
    boxes: Sequence[tuple[int, int, int, int]],
    probs: np.ndarray,
    class_names: Sequence[str],
    threshold: float,
    scale: FieldScale | None = None,
    ood: Sequence[bool] | None = None,
) -> list[CellRecord]:
    """One :class:`CellRecord` per classified cell of ``frame`` (``boxes`` and ``probs`` rows
    in the same order), stamped now; ``scale`` is the smear field's crop scale."""
    stamp = now_iso()
    rows = predictions(probs, class_names, threshold, k=TOPK)
    return [
        CellRecord(
            time=stamp,
            source=frame.source,
            frame=frame.index,
            file=frame.file,
            cell=i,
            box=tuple(int(v) for v in box),  # type: ignore[arg-type]
            label=label,
            prob=prob,
            top3=top,
            uncertain=uncertain,
            key=frame.key,
            rbc_px=scale.rbc_px if scale else None,
            scale=scale.source if scale else "",
            ood=bool(ood[i]) if ood is not None else False,
        )
        for i, (box, (label, prob, top, uncertain)) in enumerate(zip(boxes, rows, strict=True))
    ]


def immature_classes(
    class_names: list[str], patterns: Iterable[str] = DEFAULT_IMMATURE
) -> list[str]:
    """Classes matching any pattern (case-insensitive substring: "blast" finds Myeloblast)."""
    pats = [p.lower() for p in patterns if p]
    return [c for c in class_names if any(p in c.lower() for p in pats)]


class Differential:
    """Counts per class of confident cells, plus the cells sent to review."""

    def __init__(
        self,
        class_names: list[str],
        immature: Iterable[str] = DEFAULT_IMMATURE,
        flag_fraction: float = IMMATURE_FLAG,
    ) -> None:
        self.class_names = list(class_names)
        self.immature = immature_classes(self.class_names, immature)
        self.flag_fraction = flag_fraction
        self.counts = dict.fromkeys(self.class_names, 0)
        self.review = dict.fromkeys(self.class_names, 0)
        self.ood = 0  # cells judged out-of-distribution (in review, never in the count)

    def add(self, records: Iterable[CellRecord]) -> None:
        for r in records:
            (self.review if r.uncertain or r.ood else self.counts)[r.label] += 1
            self.ood += r.ood

    @property
    def ood_share(self) -> float:
        total = self.counted + self.in_review
        return self.ood / total if total else 0.0

    @property
    def ood_warning(self) -> str:
        """The plain-language warning when many cells look unlike the training data, or ''."""
        from wbc_edge.runtime.ood import WARN_SHARE, WARNING

        if self.ood and self.ood_share >= WARN_SHARE:
            return f"{100 * self.ood_share:.0f}% of cells: {WARNING}"
        return ""

    @property
    def counted(self) -> int:
        return sum(self.counts.values())

    @property
    def in_review(self) -> int:
        return sum(self.review.values())

    def percent(self, name: str) -> float:
        total = self.counted
        return 100.0 * self.counts[name] / total if total else 0.0

    @property
    def immature_fraction(self) -> float:
        total = self.counted
        return sum(self.counts[c] for c in self.immature) / total if total else 0.0

    @property
    def flagged(self) -> bool:
        return self.counted > 0 and self.immature_fraction > self.flag_fraction

    def flag_text(self) -> str:
        share = 100 * self.immature_fraction
        names = ", ".join(c for c in self.immature if self.counts[c])
        return (
            f"IMMATURE CELLS {share:.1f}% > {100 * self.flag_fraction:g}% ({names}): "
            "review the slide"
        )

    def to_dict(self) -> dict:
        return {
            "counted": self.counted,
            "review": self.in_review,
            "counts": dict(self.counts),
            "review_by_class": dict(self.review),
            "percent": {c: round(self.percent(c), 2) for c in self.class_names},
            "immature_classes": self.immature,
            "immature_fraction": round(self.immature_fraction, 4),
            "flag_fraction": self.flag_fraction,
            "flagged": self.flagged,
            "ood": self.ood,
            "ood_share": round(self.ood_share, 4),
        }

    def table(self, title: str = "Differential") -> Table:
        t = Table(title=title, title_justify="left", expand=False)
        t.add_column("class")
        t.add_column("count", justify="right")
        t.add_column("%", justify="right")
        t.add_column("review", justify="right")
        for c in self.class_names:
            style = "bold red" if c in self.immature and self.counts[c] else ""
            t.add_row(
                Text(c, style=style),
                str(self.counts[c]),
                f"{self.percent(c):.1f}",
                str(self.review[c]),
            )
        total_pct = "100.0" if self.counted else "-"
        t.add_row(Text("total", style="bold"), str(self.counted), total_pct, str(self.in_review))
        return t
