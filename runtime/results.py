"""A sample's results as the report, the review page and the run summary all read them.

One function loads the header, the records and the corrections and computes the differential
and the flags from them, so the archived report, the live review page and ``summary.json`` can
never disagree about a number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wbc_edge.model.card import ModelCard
from wbc_edge.runtime.corrections import reviewed_cells
from wbc_edge.runtime.differential import LabDifferential, ReviewedCell
from wbc_edge.runtime.flags import Flag, FlagRules, evaluate
from wbc_edge.runtime.sample import SampleFolder


@dataclass
class SampleResults:
    folder: SampleFolder
    header: dict[str, Any]
    card: ModelCard
    cells: list[ReviewedCell]
    rules: FlagRules
    diff: LabDifferential  # pre-classified cells plus confirmed ones
    verified: LabDifferential  # confirmed cells only
    flags: list[Flag]
    errors: int = 0
    operators: list[str] = field(default_factory=list)

    @property
    def lab(self) -> dict[str, Any]:
        return self.header.get("lab", {})

    def cell(self, cell_id: str) -> ReviewedCell | None:
        return next((c for c in self.cells if c.id == cell_id), None)


def count(cells: list[ReviewedCell], card: ModelCard, lab: dict[str, Any], **kw: Any):
    """The differential of ``cells`` under the lab settings of a run header."""
    return LabDifferential.of(
        cells,
        card.class_names,
        card.roles,
        target=int(lab.get("target_cells") or 0),
        wbc_count=lab.get("wbc_count"),
        **kw,
    )


def load_results(folder: SampleFolder, rules: FlagRules | None = None) -> SampleResults:
    """Everything in ``folder``; ``rules`` override the flag thresholds the run recorded."""
    header = folder.header()
    card = ModelCard.from_dict(header["card"])
    lab = header.get("lab", {})
    rules = rules or FlagRules.from_dict(lab.get("flags"))
    cells = reviewed_cells(folder)
    diff = count(cells, card, lab)
    verified = count(cells, card, lab, confirmed_only=True)
    errors = 0
    if folder.errors_path.is_file():
        errors = sum(1 for _ in folder.errors_path.open(encoding="utf-8"))
    operators = [s.get("operator", "") for s in folder.sessions()]
    operators += [c.operator for c in cells if c.confirmed]
    unique = list(dict.fromkeys(o for o in operators if o))
    return SampleResults(
        folder, header, card, cells, rules, diff, verified, evaluate(diff, rules), errors, unique
    )


def summary_dict(results: SampleResults) -> dict[str, Any]:
    """The differential, the verified differential and the flags, for JSON."""
    return {
        "sample": results.folder.sample,
        "differential": results.diff.to_dict(),
        "verified": results.verified.to_dict(),
        "flags": [f.to_dict() for f in results.flags],
        "flag_rules": results.rules.to_dict(),
    }
