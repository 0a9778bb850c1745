"""The differential count as a haematology lab reports it, from the classes' roles in the card.

- The WBC differential is a share of white cells only (leukocyte, immature and blast roles):
  its percentages add up to 100 over those cells.
- Nucleated red cells are not white cells: they are reported per 100 WBC. Platelets and cells
  of no known type (``other``: artefacts, smudge cells) are counted apart.
- A cell the model is unsure of (``uncertain``) or that looks unlike its training images
  (``ood``) is *under review*: counted apart, by predicted class, until a technologist confirms
  it; then it counts with the class the technologist gave it. A cell reclassified as
  :data:`EXCLUDED` (an artefact) counts nowhere.
- ``confirmed_only`` counts nothing a technologist has not seen (CellaVision's rule for a
  verified differential); otherwise confident pre-classified cells count as the model said.
- The target (100 or 200 WBC, the lab's protocol) is reached by counted white cells.
- With the analyser's WBC concentration, each class's absolute count (10^9/L) is its share of
  the WBC corrected for nucleated red cells (WBC x 100 / (100 + NRBC per 100 WBC)).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from wbc_edge.model.review import for_review
from wbc_edge.model.roles import BLAST, IMMATURE, NRBC, OTHER, PLATELET, WBC_ROLES
from wbc_edge.runtime.sinks import CellRecord

EXCLUDED = "Artefact"  # the technologist's "not a cell": out of every count


@dataclass
class ReviewedCell:
    """A classified cell with what review made of it (nothing yet, unless ``confirmed``)."""

    record: CellRecord
    label: str  # the class it counts as: the technologist's once confirmed, else the model's
    confirmed: bool = False
    operator: str = ""

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def predicted(self) -> str:
        return self.record.label

    @property
    def needs_review(self) -> bool:
        return not self.confirmed and for_review(self.record.uncertain, self.record.ood)


def unreviewed(records: Iterable[CellRecord]) -> list[ReviewedCell]:
    """Records as cells nobody has reviewed yet (what a running pipeline produces)."""
    return [ReviewedCell(r, r.label) for r in records]


@dataclass
class LabDifferential:
    """Counts of one sample; :meth:`add` cells as they come (the live view) or all at once."""

    class_names: list[str]
    roles: dict[str, str]
    confirmed_only: bool = False
    target: int = 0  # WBC to count (0: no target)
    wbc_count: float | None = None  # the analyser's WBC, 10^9/L, for absolute counts
    counts: dict[str, int] = field(init=False)
    review: dict[str, int] = field(init=False)  # under review, by predicted class
    review_ood: int = field(init=False, default=0)  # of them, judged out-of-distribution
    excluded: int = field(init=False, default=0)
    not_confirmed: int = field(init=False, default=0)  # confirmed_only: cells not yet seen
    confirmed: int = field(init=False, default=0)
    ood_cells: int = field(
        init=False, default=0
    )  # judged out-of-distribution, whatever review said
    cells: dict[str, list[str]] = field(init=False)  # counted cell ids per class (flag evidence)

    def __post_init__(self) -> None:
        self.class_names = list(self.class_names)
        missing = [c for c in self.class_names if c not in self.roles]
        if missing:
            raise ValueError(f"classes without a role: {missing}")
        self.counts = dict.fromkeys(self.class_names, 0)
        self.review = dict.fromkeys(self.class_names, 0)
        self.cells = {c: [] for c in self.class_names}

    @classmethod
    def of(
        cls,
        cells: Iterable[ReviewedCell],
        class_names: list[str],
        roles: dict[str, str],
        **kwargs: Any,
    ) -> LabDifferential:
        diff = cls(class_names, roles, **kwargs)
        diff.add(cells)
        return diff

    def add(self, cells: Iterable[ReviewedCell]) -> None:
        for cell in cells:
            self.confirmed += cell.confirmed
            self.ood_cells += cell.record.ood
            if cell.confirmed and cell.label == EXCLUDED:
                self.excluded += 1
            elif self.confirmed_only and not cell.confirmed:
                self.not_confirmed += 1
            elif cell.needs_review:
                self.review[cell.predicted] += 1
                self.review_ood += cell.record.ood
            else:
                self.counts[cell.label] += 1
                self.cells[cell.label].append(cell.id)

    # -- groups by role -----------------------------------------------------------------------

    def with_role(self, *roles: str) -> list[str]:
        return [c for c in self.class_names if self.roles[c] in roles]

    @property
    def wbc_classes(self) -> list[str]:
        return self.with_role(*WBC_ROLES)

    def _sum(self, *roles: str) -> int:
        return sum(self.counts[c] for c in self.with_role(*roles))

    @property
    def wbc(self) -> int:
        """White cells counted: the 100 % of the differential."""
        return self._sum(*WBC_ROLES)

    @property
    def nrbc(self) -> int:
        return self._sum(NRBC)

    @property
    def platelets(self) -> int:
        return self._sum(PLATELET)

    @property
    def other(self) -> int:
        return self._sum(OTHER)

    @property
    def immature(self) -> int:
        return self._sum(IMMATURE)

    @property
    def blasts(self) -> int:
        return self._sum(BLAST)

    @property
    def in_review(self) -> int:
        return sum(self.review.values())

    @property
    def total(self) -> int:
        """Every cell this differential saw."""
        counted = sum(self.counts.values())
        return counted + self.in_review + self.excluded + self.not_confirmed

    @property
    def ood_share(self) -> float:
        """The share of all cells judged out-of-distribution."""
        return self.ood_cells / self.total if self.total else 0.0

    @property
    def counted(self) -> int:
        """Cells counted (white cells and those counted apart), not under review."""
        return sum(self.counts.values())

    @property
    def review_uncertain(self) -> int:
        """Cells under review for their confidence alone (not out-of-distribution)."""
        return self.in_review - self.review_ood

    @property
    def banner(self) -> str:
        """How many cells were counted and how many await review, and why: the line the report,
        the live view and the log all show."""
        why = [
            f"{n} {w}"
            for n, w in (
                (self.review_ood, "unlike the training images"),
                (self.review_uncertain, "uncertain"),
            )
            if n
        ]
        text = (
            f"{self.counted} of {self.total} cells counted ({self.wbc} WBC); "
            f"{self.in_review} await review" + (f" ({', '.join(why)})" if why else "")
        )
        if self.excluded:
            text += f"; {self.excluded} excluded by review"
        if self.not_confirmed:
            text += f"; {self.not_confirmed} not yet confirmed"
        return text

    @property
    def mostly_review(self) -> bool:
        """More than :data:`~wbc_edge.model.review.MOST` of the cells went to review."""
        from wbc_edge.model.review import MOST

        return bool(self.total) and self.in_review > MOST * self.total

    @property
    def ood_warning(self) -> str:
        """The plain-language warning when many cells look unlike the training data or most
        cells went to review (the model is not reliable on these images), or ''."""
        from wbc_edge.model.ood import WARN_SHARE, WARNING

        parts = []
        if self.mostly_review:
            head = (
                f"nothing counted: all {self.total} cells await review"
                if not self.counted
                else f"most cells ({self.in_review} of {self.total}) await review"
            )
            parts.append(
                f"{head}: the model is not reliable on these images; do not use this "
                "differential without a technologist's review"
            )
        if self.ood_cells and self.ood_share >= WARN_SHARE:
            parts.append(f"{100 * self.ood_share:.0f}% of cells: {WARNING}")
        return ". ".join(parts)

    # -- arithmetic ---------------------------------------------------------------------------

    def percent(self, name: str) -> float:
        """A WBC class's share of the white cells counted (0 for other roles)."""
        if name not in self.wbc_classes or not self.wbc:
            return 0.0
        return 100.0 * self.counts[name] / self.wbc

    def percent_of(self, *roles: str) -> float:
        return 100.0 * self._sum(*roles) / self.wbc if self.wbc else 0.0

    @property
    def nrbc_per_100_wbc(self) -> float:
        return 100.0 * self.nrbc / self.wbc if self.wbc else 0.0

    @property
    def corrected_wbc(self) -> float | None:
        """The analyser's WBC without the nucleated red cells it counted as white cells."""
        if self.wbc_count is None:
            return None
        return self.wbc_count * 100.0 / (100.0 + self.nrbc_per_100_wbc)

    def absolute(self, name: str) -> float | None:
        """10^9/L of a WBC class, when the analyser's WBC is known."""
        wbc = self.corrected_wbc
        return None if wbc is None else wbc * self.percent(name) / 100.0

    @property
    def reached(self) -> bool:
        return bool(self.target) and self.wbc >= self.target

    def to_dict(self) -> dict[str, Any]:
        wbc = {
            c: {
                "count": self.counts[c],
                "percent": round(self.percent(c), 2),
                **(
                    {"absolute_1e9_per_l": round(self.absolute(c) or 0.0, 3)}
                    if self.wbc_count is not None
                    else {}
                ),
            }
            for c in self.wbc_classes
        }
        return {
            "basis": "confirmed cells only" if self.confirmed_only else "pre-classified",
            "wbc_counted": self.wbc,
            "wbc": wbc,
            "immature_percent": round(self.percent_of(IMMATURE), 2),
            "blasts": self.blasts,
            "nrbc": self.nrbc,
            "nrbc_per_100_wbc": round(self.nrbc_per_100_wbc, 2),
            "platelets": self.platelets,
            "other": {c: self.counts[c] for c in self.with_role(OTHER)},
            "in_review": self.in_review,
            "review_by_class": dict(self.review),
            "review_ood": self.review_ood,
            "ood_cells": self.ood_cells,
            "ood_warning": self.ood_warning,
            "counted": self.counted,
            "review_uncertain": self.review_uncertain,
            "banner": self.banner,
            "excluded": self.excluded,
            "confirmed": self.confirmed,
            "not_confirmed": self.not_confirmed,
            "target": self.target,
            "target_reached": self.reached,
            "wbc_count_1e9_per_l": self.wbc_count,
            "corrected_wbc_1e9_per_l": (
                None if self.corrected_wbc is None else round(self.corrected_wbc, 3)
            ),
            "roles": dict(self.roles),
        }
