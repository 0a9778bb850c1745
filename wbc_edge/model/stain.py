"""Stain normalisation: bring another lab's colours to the training lab's before the model.

Reinhard et al. (2001), "Color transfer between images": in a perceptual colour space, shift
and scale each channel of an image so its mean and standard deviation match a reference. Here
the space is OpenCV's 8-bit CIE L*a*b* (``cv2.COLOR_BGR2LAB``), and the reference is the mean of
the training crops' own statistics, which the model card stores
(:class:`~wbc_edge.model.card.Preprocess` ``.stain``), so training, the teacher cache, INT8
calibration, evaluation and every backend apply the same transform through
``card.preprocess.resize``.

What the statistics are taken over matters. A white-cell crop's colour depends on its cell:
an eosinophil's orange granules, a basophil's dark ones, a lymphocyte's large purple nucleus.
Matching a crop's *all-pixel* statistics to one reference pulls those apart differences back
to the average, erasing the signal that tells the classes apart. So by default (``over =
"unstained"``) the statistics come from the pixels the stain did not mark as nucleus or
granule (background glass and red cells: the finder's own blue-over-green test,
:func:`wbc_edge.model.finder.stain_score` below ``min_stain``), which every crop of a smear
has in the same kind, whatever its cell; the whole crop is then transformed with them.
``over = "crop"`` (all pixels) is kept to measure the difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

METHODS = ("reinhard-lab",)
OVER = ("unstained", "crop")
DEFAULT_OVER = "unstained"
# Pixels scoring at or above this (the finder's min_stain, B - G over the field's median, 0..255)
# are nucleus or granule stain and stay out of the statistics.
UNSTAINED_BELOW = 30.0
_MIN_PIXELS = 64  # fewer unstained pixels than this (a crop filled by its cell): use them all
_MIN_STD = 1.0  # a flat channel (a blank test image) must not blow up the scale
_SCALE_RANGE = (0.25, 4.0)  # a crop's spread is never stretched or squeezed beyond this


@dataclass(frozen=True)
class StainReference:
    """The training crops' colour statistics (OpenCV 8-bit L*, a*, b*) and how they were taken."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    over: str = DEFAULT_OVER
    method: str = "reinhard-lab"
    fitted_on: int = 0

    def __post_init__(self) -> None:
        from wbc_edge.errors import UserError

        # Rounded once here, so a reference in memory (training) and read back from a card
        # (deployment) are the same numbers and give bit-identical pixels.
        object.__setattr__(self, "mean", tuple(round(float(v), 4) for v in self.mean))
        object.__setattr__(self, "std", tuple(round(float(v), 4) for v in self.std))
        if self.method not in METHODS:
            raise UserError(
                f"model card: stain normalisation {self.method!r} is unknown to this wbc-edge "
                f"(it knows {', '.join(METHODS)}): upgrade wbc-edge to run this model"
            )
        if self.over not in OVER:
            raise UserError(f"model card: stain statistics over {self.over!r}, not {OVER}")
        if len(self.mean) != 3 or len(self.std) != 3 or not all(v > 0 for v in self.std):
            raise UserError("model card: the stain reference needs three means and three stds > 0")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StainReference:
        return cls(**d)

    def key(self) -> str:
        """A short name for caches of images prepared with this reference."""
        vals = ",".join(f"{v:.2f}" for v in (*self.mean, *self.std))
        return f"stain-{self.over}-{vals}"


def _reference_pixels(lab: np.ndarray, image_bgr: np.ndarray, over: str) -> np.ndarray:
    """(N, 3) float32 Lab pixels the statistics are taken over."""
    pixels = lab.reshape(-1, 3)
    if over == "crop":
        return pixels.astype(np.float32)
    from wbc_edge.model.finder import stain_score

    keep = stain_score(image_bgr).reshape(-1) < UNSTAINED_BELOW
    if int(keep.sum()) < _MIN_PIXELS:
        return pixels.astype(np.float32)
    return pixels[keep].astype(np.float32)


def lab_statistics(image_bgr: np.ndarray, over: str = DEFAULT_OVER) -> tuple[np.ndarray, ...]:
    """(mean, std) of an image's L*, a*, b* over the pixels ``over`` names (see the module doc)."""
    import cv2

    lab = cv2.cvtColor(np.ascontiguousarray(image_bgr[:, :, :3]), cv2.COLOR_BGR2LAB)
    px = _reference_pixels(lab, image_bgr, over)
    return px.mean(0), px.std(0)


def fit(images_bgr: Sequence[np.ndarray], over: str = DEFAULT_OVER) -> StainReference:
    """The reference of a set of training images: the mean of their per-image statistics."""
    if not len(images_bgr):
        raise ValueError("the stain reference needs at least one image")
    stats = [lab_statistics(im, over) for im in images_bgr]
    mean = np.mean([m for m, _ in stats], axis=0)
    std = np.maximum(np.mean([s for _, s in stats], axis=0), _MIN_STD)
    return StainReference(
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
        over,
        "reinhard-lab",
        len(stats),
    )


def normalize_stain(image_bgr: np.ndarray, ref: StainReference) -> np.ndarray:
    """``image_bgr`` (uint8 BGR) with its Lab statistics moved onto ``ref``'s (uint8 BGR)."""
    import cv2

    image_bgr = np.ascontiguousarray(image_bgr[:, :, :3])
    lab = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2LAB)
    px = _reference_pixels(lab, image_bgr, ref.over)
    mean, std = px.mean(0), np.maximum(px.std(0), _MIN_STD)
    scale = np.clip(np.asarray(ref.std, np.float32) / std, *_SCALE_RANGE)
    shift = np.asarray(ref.mean, np.float32) - mean * scale
    out = lab.astype(np.float32) * scale + shift
    return cv2.cvtColor(np.clip(out + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)
