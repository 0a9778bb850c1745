"""The runtime's options and their one default each, shared by ``wbc-edge run``, the Python
API and the pipeline.

Standard library only, so the CLI can show these defaults in ``--help`` without importing the
runtime (numpy, OpenCV, a backend) at start-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Classes whose presence in blood suggests leukaemia or another marrow disorder. The runtime
# flags them by default; "blast" matches Myeloblast, Lymphoblast, ... by substring.
DEFAULT_IMMATURE = ("Promyelocyte", "ImmatureGranulocyte", "Erythroblast", "blast")
FALLBACK_THRESHOLD = 0.5  # review threshold for a model whose card certifies none
TOPK = 3  # classes each result lists (the records' top3)
IMMATURE_FLAG = 0.05  # flag a sample when immature cells exceed this share of the count
DEFAULT_OUT = "wbc-run"  # `wbc-edge run`'s results folder


@dataclass
class PipelineConfig:
    mode: str = "crops"  # "crops": each image is one cell; "smear": find the cells first
    batch: int = 16
    # Cells below this top probability go to review, not the count; None: the card's certified
    # confidence_threshold, or FALLBACK_THRESHOLD when the card has none.
    threshold: float | None = None
    margin: float = 0.15  # smear: crop margin as a fraction of the cell's box side (cards
    # without a crop scale; with one, crops span the card's field of view in red cells)
    rbc_px: float | None = None  # smear: red-cell diameter in px (None: measured per field)
    um_per_px: float | None = None  # smear: camera calibration, instead of rbc_px
    queue_size: int = 32
    max_items: int = 0  # stop after this many frames or files (0: no limit)
    workers: int = 0  # threads decoding and preprocessing images (0: one per core, at most 4)

    def resolved_workers(self) -> int:
        return self.workers if self.workers > 0 else max(1, min(4, os.cpu_count() or 1))
