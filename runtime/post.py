"""Cell records: a frame's classified cells as the rows ``run`` writes.

The verdict on each cell (label, top-k, uncertain) is the model core's review rule
(:mod:`wbc_edge.model.review`); here it is stamped with the frame's source, box and scale.
"""

from __future__ import annotations

from collections.abc import Sequence

from wbc_edge.model.fieldcrop import FieldScale
from wbc_edge.runtime.sinks import CellRecord, now_iso
from wbc_edge.runtime.sources import Frame


def cell_records(
    frame: Frame,
    boxes: Sequence[tuple[int, int, int, int]],
    rows: Sequence[tuple[str, float, list[tuple[str, float]], bool]],
    scale: FieldScale | None = None,
    ood: Sequence[bool] | None = None,
) -> list[CellRecord]:
    """One :class:`CellRecord` per classified cell of ``frame`` (``boxes`` and the verdicts
    ``rows`` of :meth:`~wbc_edge.model.model.Model.verdicts` in the same order), stamped now;
    ``scale`` is the smear field's crop scale."""
    stamp = now_iso()
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
