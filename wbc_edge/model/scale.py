"""Measure the red-cell diameter in an image: the ruler that makes crops match across cameras.

Red cells are about 7.5 um wide in every healthy smear, so their diameter in pixels says how
magnified an image is, whatever the microscope, objective or camera. The training crops' median
red-cell diameter is recorded in the model card (:class:`CropScale`); the finder measures the
same in each field and cuts crops spanning the same number of red-cell diameters, so a cell
reaches the network at the size it was trained on.

The measurement (OpenCV + numpy, a few ms per image):

1. red cells absorb green light: pixels much darker in green than the field's bright background
   (its 95th percentile) are cells; Otsu picks the threshold per image, over the pixels that are
   not nucleus stain;
2. pale centres (central pallor) are filled, so a red cell is a solid disc;
3. each local peak of the distance transform is the centre of a disc of that radius; discs cut
   by the image border and discs over nucleus stain (white cells) are left out;
4. the diameter is the area-weighted median of 2 x radius over the peaks (a ragged mask makes
   many tiny peaks, which weigh little next to whole red cells), times
   :data:`INSCRIBED_TO_DIAMETER`: the largest disc inside a red cell that is not quite round,
   or overlaps a neighbour, is narrower than the cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

# Above this shorter side an image is measured on a reduced copy: the disc sizes scale back
# exactly, and a 4K field costs what a VGA one does.
_MAX_WORK_SIDE = 720
# Diameter / inscribed-disc diameter, measured on phantom fields whose red cells' drawn
# diameters are known (inscribed 0.91 +- 0.04 of drawn, 10 fields at 2 magnifications); it
# also puts pbc9's CellaVision crops at 75 px per red cell (the 36 um / 4.8 red cells of a
# 360 px crop) and keeps the finder on bccd-smears at recall 0.99 / precision 0.97.
INSCRIBED_TO_DIAMETER = 1.10
# The first pass only finds the size for the second, so on a field it runs on a copy whose
# shorter side is this (a red cell still spans ~50 px of a BCCD field there): a quarter of the
# pixels, and half the measurement's cost. Crops of up to 1.5x this side keep their own size.
_COARSE_SIDE = 240
# The second pass measures at this red-cell diameter, so its pixel constants are scale-free.
_WORK_RBC_PX = 48.0
# Blur (px at the working size) before thresholding: smooths granules and JPEG noise.
_BLUR_SIGMA = 1.5


@dataclass(frozen=True)
class RbcMeasure:
    """One image's red-cell diameter (pixels of the image as given) and its support."""

    diameter_px: float | None  # None when no whole red cell was found
    discs: int  # number of disc centres that voted


@dataclass(frozen=True)
class CropScale:
    """The scale of a model's training crops, measured by :func:`measure_crops`.

    ``rbc_px`` is the median red-cell diameter in pixels of the crops as stored (before the
    resize to the input size), ``fov_rbc`` the crop's shorter side in red-cell diameters: a crop
    for this model should span ``fov_rbc`` red-cell diameters of the field it comes from.
    """

    rbc_px: float
    fov_rbc: float
    crop_px: float  # median shorter side of the measured crops
    rbc_px_q25: float = 0.0
    rbc_px_q75: float = 0.0
    measured: int = 0  # crops with a measurement
    sampled: int = 0  # crops looked at

    def to_dict(self) -> dict[str, float]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> CropScale:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _fill_small_holes(mask: np.ndarray, max_area: float) -> np.ndarray:
    """Fill holes smaller than ``max_area`` (pale centres), not background between cells."""
    import cv2

    h, w = mask.shape
    flood = np.pad(mask, 1)
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 2)
    holes = (flood[1:-1, 1:-1] == 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(holes)
    small = np.zeros(n, bool)
    small[1:] = stats[1:, cv2.CC_STAT_AREA] < max_area
    out = mask.copy()
    out[small[labels]] = 1
    return out


def red_cell_diameter(image_bgr: np.ndarray, min_px: float = 6.0) -> RbcMeasure:
    """The median red-cell diameter in pixels of one BGR uint8 image (a field or a crop).

    Measured twice: once roughly, on the image reduced to :data:`_COARSE_SIDE` (a crop up to
    1.5x that as given), then on a copy of the image resized so a red cell spans
    :data:`_WORK_RBC_PX`, where the blur and the mask clean-up act alike at any magnification.
    A 2x-magnified field then measures 2x, not 2x minus the constant pixels of the clean-up.
    """

    if image_bgr.ndim != 3 or image_bgr.shape[2] < 3:
        raise ValueError("red_cell_diameter needs a colour (BGR) image")
    image_bgr = image_bgr[:, :, :3]
    factor = min(1.0, _MAX_WORK_SIDE / min(image_bgr.shape[:2]))
    work = _resized(image_bgr, factor)
    side = min(work.shape[:2])
    coarse = _COARSE_SIDE / side if side > 1.5 * _COARSE_SIDE else 1.0
    first = _measure(_resized(work, coarse), min_px * factor * coarse)
    if first.diameter_px is None and coarse < 1.0:  # small red cells: look at every pixel
        coarse = 1.0
        first = _measure(work, min_px * factor)
    if first.diameter_px is None:
        return first
    # The cleanup constants below were set at this size.
    f2 = _WORK_RBC_PX / (first.diameter_px / coarse)
    if abs(f2 - 1.0) > 0.05:
        second = _measure(_resized(work, f2), min_px * factor * f2)
        if second.diameter_px is not None:
            return RbcMeasure(second.diameter_px / f2 / factor, second.discs)
    if coarse < 1.0:  # already at the working size: measure it there
        first = _measure(work, min_px * factor)
        if first.diameter_px is None:
            return first
    return RbcMeasure(first.diameter_px / factor, first.discs)


def _resized(image: np.ndarray, f: float) -> np.ndarray:
    import cv2

    if abs(f - 1.0) < 1e-3:
        return image
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, None, fx=f, fy=f, interpolation=interp)


def _measure(image_bgr: np.ndarray, min_px: float) -> RbcMeasure:
    """One pass of the measurement at the image's own resolution (see the module docstring)."""
    import cv2

    from wbc_edge.model.finder import stain_score

    h, w = image_bgr.shape[:2]
    green = cv2.GaussianBlur(image_bgr[:, :, 1], (0, 0), _BLUR_SIGMA).astype(np.float32)
    darkness = np.clip(np.percentile(green[::2, ::2], 95) - green, 0, 255).astype(np.uint8)
    nucleus = cv2.GaussianBlur(stain_score(image_bgr), (0, 0), _BLUR_SIGMA) > 40
    # Otsu without the nuclei: dark nuclei would otherwise take the threshold above red cells.
    rest = darkness[~nucleus]
    otsu, _ = cv2.threshold(
        (rest if rest.size else darkness.ravel()).reshape(-1, 1),
        0,
        255,
        cv2.THRESH_BINARY + cv2.THRESH_OTSU,
    )
    mask = (darkness > max(float(otsu), 8.0)).astype(np.uint8)
    mask = _fill_small_holes(mask, 0.01 * h * w)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    dt = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    k = max(3, int(0.05 * min(h, w)) | 1)
    peak = (dt >= cv2.dilate(dt, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))) & (
        dt >= min_px / 2
    )
    ys, xs = np.nonzero(peak)
    r = dt[ys, xs]
    # A disc cut by the border is a partial cell; a disc over nucleus stain is a white cell.
    inside = np.minimum.reduce([xs, ys, w - 1 - xs, h - 1 - ys]) >= r
    keep = inside & ~nucleus[ys, xs]
    if not keep.any():
        return RbcMeasure(None, 0)
    r = np.sort(r[keep])
    cum = np.cumsum(r**2)  # area weights: a ragged mask's tiny peaks weigh little
    inscribed = 2 * float(r[np.searchsorted(cum, cum[-1] / 2)])
    return RbcMeasure(inscribed * INSCRIBED_TO_DIAMETER, int(keep.sum()))


def measure_crops(images: Sequence[np.ndarray], sides: Sequence[float] | None = None) -> CropScale:
    """The :class:`CropScale` of a set of training crops (BGR uint8 images).

    ``sides`` are the crops' shorter sides when the images were resized before measuring
    (default: the images' own shorter sides). Raises ValueError when no crop shows a whole red
    cell: the training data then has no scale the finder could match.
    """
    diam, crop = [], []
    for i, im in enumerate(images):
        m = red_cell_diameter(im)
        if m.diameter_px is None:
            continue
        side = float(sides[i]) if sides is not None else float(min(im.shape[:2]))
        # Measured on a resized copy: bring the diameter back to the crop's own pixels.
        diam.append(m.diameter_px * side / min(im.shape[:2]))
        crop.append(side)
    if not diam:
        raise ValueError("no whole red cell found in any crop: the data's scale is unknown")
    d = np.asarray(diam)
    rbc = float(np.median(d))
    side = float(np.median(crop))
    return CropScale(
        rbc_px=rbc,
        fov_rbc=float(np.median(np.asarray(crop) / d)),
        crop_px=side,
        rbc_px_q25=float(np.percentile(d, 25)),
        rbc_px_q75=float(np.percentile(d, 75)),
        measured=len(diam),
        sampled=len(images),
    )


# Enough crops for a median to within about 1%, in a few seconds on one core.
DEFAULT_SCALE_SAMPLE = 300


def measure_files(paths: Sequence[str], limit: int | None = DEFAULT_SCALE_SAMPLE) -> CropScale:
    """:func:`measure_crops` over image files: an evenly spaced sample of ``limit`` of them
    (all with ``None``), so the same files give the same answer on every run."""
    from wbc_edge.model.decode import read_image

    return measure_crops([read_image(p) for p in evenly_spaced(paths, limit)])


def evenly_spaced(paths: Sequence[str], limit: int | None) -> list[str]:
    """``limit`` of the sorted ``paths``, evenly spaced (all of them with None): a sample that
    is the same on every run and spreads over a manifest's classes."""
    paths = sorted(str(p) for p in paths)
    if limit is not None and len(paths) > limit:
        paths = [paths[int(i * len(paths) / limit)] for i in range(limit)]
    return paths
