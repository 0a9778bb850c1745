"""Flags: rules over a differential with thresholds the lab sets, each with the cells behind it.

Only counted cells raise a flag: a cell under review (low confidence, or judged
out-of-distribution) raises nothing until a technologist confirms it, so a doubtful or
unfamiliar image cannot sound the alarm. The defaults are starting points; a lab sets its own
(``wbc-edge run --flag-ig 3 --flag-nrbc 1``) and the run header records the ones used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from wbc_edge.model.roles import BLAST, IMMATURE, NRBC
from wbc_edge.runtime.differential import LabDifferential
from wbc_edge.runtime.options import FLAG_BLASTS, FLAG_IG_PERCENT, FLAG_NRBC_PER_100_WBC


@dataclass(frozen=True)
class FlagRules:
    """Thresholds; a rule fires when its value is *above* its threshold."""

    ig_percent: float = FLAG_IG_PERCENT  # immature granulocytes, % of WBC counted
    blasts: int = FLAG_BLASTS  # blasts counted (0: any blast flags)
    nrbc_per_100_wbc: float = FLAG_NRBC_PER_100_WBC  # nucleated red cells per 100 WBC

    def __post_init__(self) -> None:
        if self.ig_percent < 0 or self.blasts < 0 or self.nrbc_per_100_wbc < 0:
            raise ValueError("flag thresholds must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> FlagRules:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in (d or {}).items() if k in known})


@dataclass
class Flag:
    rule: str  # "IG", "BLAST", "NRBC"
    message: str
    value: float
    threshold: float
    cells: list[str] = field(default_factory=list)  # ids of the counted cells that raised it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ids(diff: LabDifferential, role: str) -> list[str]:
    return [i for c in diff.with_role(role) for i in diff.cells[c]]


def _names(diff: LabDifferential, role: str) -> str:
    return ", ".join(f"{c} {diff.counts[c]}" for c in diff.with_role(role) if diff.counts[c])


def evaluate(diff: LabDifferential, rules: FlagRules) -> list[Flag]:
    """The flags ``diff`` raises under ``rules``, in a fixed order (blasts first)."""
    flags = []
    if diff.blasts > rules.blasts:
        flags.append(
            Flag(
                "BLAST",
                f"BLASTS: {diff.blasts} counted ({_names(diff, BLAST)}) > {rules.blasts}",
                diff.blasts,
                rules.blasts,
                _ids(diff, BLAST),
            )
        )
    ig = diff.percent_of(IMMATURE)
    if diff.wbc and ig > rules.ig_percent:
        flags.append(
            Flag(
                "IG",
                f"IMMATURE GRANULOCYTES {ig:.1f}% of WBC > {rules.ig_percent:g}% "
                f"({_names(diff, IMMATURE)})",
                round(ig, 2),
                rules.ig_percent,
                _ids(diff, IMMATURE),
            )
        )
    per100 = diff.nrbc_per_100_wbc
    if diff.nrbc and (per100 > rules.nrbc_per_100_wbc or not diff.wbc):
        shown = f"{per100:.1f} per 100 WBC" if diff.wbc else "with no WBC counted"
        flags.append(
            Flag(
                "NRBC",
                f"NUCLEATED RED CELLS {diff.nrbc} ({shown}) > {rules.nrbc_per_100_wbc:g} "
                "per 100 WBC",
                round(per100, 2),
                rules.nrbc_per_100_wbc,
                _ids(diff, NRBC),
            )
        )
    return flags
