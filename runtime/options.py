"""The runtime's options and their one default each, shared by ``wbc-edge run``, the Python
API and the pipeline.

Standard library only, so the CLI can show these defaults in ``--help`` without importing the
runtime (numpy, OpenCV, a backend) at start-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from wbc_edge.model.defaults import MARGIN

DEFAULT_OUT = "wbc-run"  # `wbc-edge run`'s results folder: one sub-folder per sample
# Flag thresholds (runtime/flags.py), starting points a lab replaces with its own; a rule fires
# when its value is above the threshold.
FLAG_IG_PERCENT = 5.0  # immature granulocytes, % of the WBC counted
FLAG_BLASTS = 0  # blasts counted (0: any blast)
FLAG_NRBC_PER_100_WBC = 5.0  # nucleated red cells per 100 WBC
REPORT_PER_CLASS = 60  # cells shown per class in the archived report
REVIEW_HOST = "127.0.0.1"  # the review page: loopback only unless told otherwise
REVIEW_PORT = 8765


@dataclass
class PipelineConfig:
    mode: str = "crops"  # "crops": each image is one cell; "smear": find the cells first
    batch: int = 16
    # Cells below this top probability go to review, not the count; None: the card's certified
    # confidence_threshold, or FALLBACK_THRESHOLD when the card has none.
    threshold: float | None = None
    margin: float = MARGIN  # smear: crop margin (wbc_edge.model.defaults)
    rbc_px: float | None = None  # smear: red-cell diameter in px (None: measured per field)
    um_per_px: float | None = None  # smear: camera calibration, instead of rbc_px
    # smear, a video or camera: the red-cell ruler is measured on one frame in this many (one
    # microscope's scale does not change between frames; 30 frames is a second of a camera)
    ruler_every: int = 30
    queue_size: int = 32
    max_items: int = 0  # stop after this many frames or files (0: no limit)
    workers: int = 0  # threads decoding and preprocessing images (0: one per core, at most 4)

    def resolved_workers(self) -> int:
        return self.workers if self.workers > 0 else max(1, min(4, os.cpu_count() or 1))
