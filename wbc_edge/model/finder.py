"""Find the white cells in a stained blood-smear field (OpenCV + numpy only).

Romanowsky stains (Giemsa, Wright, May-Grünwald-Giemsa) colour DNA purple-blue: in a smear field
the only large purple objects are white-cell nuclei. Red cells are pink and absorb green and blue
alike, the background is pale grey, platelets are purple but tiny. So the finder:

1. scores each pixel by how much more blue than green it is (``B - G``; a nucleus scores ~80 on
   0..255, red cells and background ~0), and thresholds the score with Otsu, never below
   ``min_stain`` so a field without white cells yields nothing rather than noise;
2. groups stain pieces closer than ``lobe_gap`` (the lobes of a segmented neutrophil, an
   eosinophil's two lobes) into one nucleus, and drops groups smaller than
   ``min_nucleus_area`` (platelets, stain debris);
3. splits nuclei of different cells that touch: a round nucleus has a core (a distance-transform
   peak at least ``nucleus_core`` wide) that lobes lack, and two cores meeting in a waist
   thinner than ``neck_ratio`` of their radius are two cells;
4. grows each nucleus box by ``cytoplasm_rim`` to cover the cell: the cytoplasm is too pale
   to segment reliably on every camera, and on BCCD the hand-drawn boxes sit about that far
   outside the nucleus.

It works at a fixed ``work_rbc_px`` pixels per red cell (each field is resized to it), so the
morphology acts alike on every camera and a 4K field costs what a VGA one does.

Every length is in red-cell diameters. Red cells are the one stable ruler in a smear (about
7.5 um), so the parameters survive a change of camera, objective or resolution.
:func:`find_cells` takes the red-cell diameter from ``FinderParams`` (``rbc_diameter`` times
the field's shorter side unless given in pixels); the field-to-crop rule that measures it in
each field and cuts the crops the model sees is :mod:`wbc_edge.model.fieldcrop`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel coordinates (x2, y2 exclusive) with a confidence score."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float = 1.0

    @property
    def width(self) -> float:
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        return max(0.0, self.y2 - self.y1)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def p1(self) -> tuple[int, int]:
        return int(round(self.x1)), int(round(self.y1))

    @property
    def p2(self) -> tuple[int, int]:
        return int(round(self.x2)), int(round(self.y2))

    def iou(self, other: Box) -> float:
        """Intersection over union; 0.0 for disjoint or empty boxes."""
        w = min(self.x2, other.x2) - max(self.x1, other.x1)
        h = min(self.y2, other.y2) - max(self.y1, other.y1)
        if w <= 0 or h <= 0:
            return 0.0
        inter = w * h
        return inter / (self.area + other.area - inter)

    def to_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]


@dataclass(frozen=True)
class FinderParams:
    """Thresholds of the finder; lengths in red-cell diameters, areas in squared diameters."""

    rbc_diameter: float = 0.21  # red-cell diameter / shorter image side (BCCD: 100 px of 480)
    rbc_diameter_px: float | None = None  # the same in pixels, when known; overrides the above
    min_stain: float = 30.0  # lowest B - G (0..255) that counts as nucleus stain
    lobe_gap: float = 0.25  # stain pieces closer than this are lobes of one nucleus
    min_nucleus_area: float = 0.3  # a 4.6 um disc: above (giant) platelets, below any nucleus
    cell_separation: float = 0.8  # nuclei of two cells have centres at least this far apart
    nucleus_core: float = 0.45  # a lymphocyte nucleus holds a disc this wide, a lobe does not
    neck_ratio: float = 0.7  # touching nuclei meet in a waist thinner than this x their radius
    cytoplasm_rim: float = 0.17  # the cell box is the nucleus box grown by this on each side
    work_rbc_px: float = 40.0  # red-cell diameter in pixels at which the finder works

    def rbc_px(self, shape: tuple[int, ...]) -> float:
        if self.rbc_diameter_px is not None:
            return float(self.rbc_diameter_px)
        return self.rbc_diameter * min(shape[:2])


def stain_score(image_bgr: np.ndarray) -> np.ndarray:
    """How much bluer than green each pixel is, above the field's typical pixel (float32, 0..255).

    Nuclei score high; red cells and background score about zero. Subtracting the field's
    median (red cells and background are most of any field) cancels a camera's white balance.
    """
    b = image_bgr[:, :, 0].astype(np.float32)
    g = image_bgr[:, :, 1].astype(np.float32)
    d = b - g
    return np.clip(d - float(np.median(d[::4, ::4])), 0, 255)


def background_colour(image: np.ndarray) -> tuple[float, float, float]:
    """The colour of a smear image's empty background, in the image's own channel order.

    The brightest third of the pixels (by their channel mean) is glass between the cells in any
    smear field or crop; their mean colour pads crops at the field's edge and fills a zoomed-out
    training view, so the padding looks like slide rather than a stripe of replicated cells.
    """
    px = image[::4, ::4, :3].reshape(-1, 3).astype(np.float32)
    light = px.sum(1)
    sel = px[light >= np.percentile(light, 67)]
    return tuple(float(v) for v in sel.mean(0))  # type: ignore[return-value]


def nucleus_mask(image_bgr: np.ndarray, params: FinderParams, rbc_px: float) -> np.ndarray:
    """Binary mask (uint8 0/255) of nucleus stain at the image's own resolution."""
    import cv2

    score = cv2.GaussianBlur(stain_score(image_bgr), (0, 0), max(0.5, 0.02 * rbc_px))
    s8 = score.astype(np.uint8)
    otsu, _ = cv2.threshold(s8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    thresh = max(float(otsu), params.min_stain)
    mask = (score > thresh).astype(np.uint8) * 255
    r = max(1, int(round(0.03 * rbc_px)))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, disk)


def _split_touching(
    raw: np.ndarray, bridged: np.ndarray, sep_px: float, core_px: float, neck_ratio: float
) -> list[np.ndarray]:
    """Split a nucleus group into the nuclei of different cells; returns boolean masks.

    ``raw`` is the group's stain mask, ``bridged`` the same with the gaps between lobes closed
    (uint8 0/255, same shape). A nucleus of its own has a core: a peak of the distance transform
    of at least ``core_px``; the lobes of a segmented nucleus are too thin to have one, so they
    never seed a split. Cores closer than ``sep_px`` belong to one nucleus; the rest seed a
    split of the bridged mask, and two parts stay apart only where they meet in a waist thinner
    than ``neck_ratio`` of the smaller core (a broad contact is one irregular nucleus).
    """
    import cv2

    dt = cv2.distanceTransform(raw, cv2.DIST_L2, 5)
    k = max(3, int(sep_px) | 1)
    footprint = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    peaks = (dt >= cv2.dilate(dt, footprint)) & (dt >= core_px)
    n, cores, _, centres = cv2.connectedComponentsWithStats(peaks.astype(np.uint8))
    whole = [bridged > 0]
    if n <= 2:
        return whole
    # Each pixel goes to the core it is nearest to, counting from the core's edge: for round
    # nuclei in contact this cuts exactly through the contact (OpenCV's watershed floods by
    # colour difference, not by a distance relief, so it cannot do this job).
    yy, xx = np.mgrid[0 : raw.shape[0], 0 : raw.shape[1]]
    radii = [float(dt[cores == i].max()) for i in range(1, n)]
    cost = np.stack(
        [np.hypot(xx - cx, yy - cy) - r for (cx, cy), r in zip(centres[1:], radii, strict=True)]
    )
    nearest = np.argmin(cost, axis=0)
    regions = [r for r in ((nearest == i) & (bridged > 0) for i in range(n - 1)) if r.any()]
    peak = [float(dt[r].max()) for r in regions]
    grown = [cv2.dilate(r.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0 for r in regions]
    parent = list(range(len(regions)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(regions)):
        for j in range(i + 1, len(regions)):
            border = grown[i] & grown[j] & (raw > 0)
            if border.any() and dt[border].max() > neck_ratio * min(peak[i], peak[j]):
                parent[root(j)] = root(i)
    groups: dict[int, np.ndarray] = {}
    for i, r in enumerate(regions):
        groups[root(i)] = groups.get(root(i), np.zeros_like(r)) | r
    return list(groups.values()) if len(groups) > 1 else whole


def find_cells(image_bgr: np.ndarray, params: FinderParams | None = None) -> list[Box]:
    """White cells in a stained smear field, as boxes around whole cells, best first.

    ``image_bgr`` is an OpenCV BGR uint8 field. A box's score is its nucleus area over that of a
    small nucleus (0.5 squared red-cell diameters), capped at 1: a rough confidence to sort by
    (partial cells at the field's edge score low), not a probability.
    """
    import cv2

    params = params or FinderParams()
    if image_bgr.ndim != 3 or image_bgr.shape[2] < 3:
        raise ValueError("find_cells needs a colour (BGR) image: nuclei are found by their stain")
    image_bgr = image_bgr[:, :, :3]
    h0, w0 = image_bgr.shape[:2]
    rbc0 = params.rbc_px(image_bgr.shape)
    # Every field is resized so a red cell spans work_rbc_px: the morphology below then acts
    # the same on any camera, and a large field costs no more than a small one.
    scale = params.work_rbc_px / rbc0
    img = image_bgr
    if abs(scale - 1.0) > 0.02:
        interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        img = cv2.resize(image_bgr, None, fx=scale, fy=scale, interpolation=interp)
    rbc = rbc0 * scale
    mask = nucleus_mask(img, params, rbc)

    # Lobes of one nucleus (and its stained granules) lie within lobe_gap of each other:
    # grouping by a dilated mask joins them without fattening the nucleus itself.
    g = max(1, int(round(params.lobe_gap * rbc / 2)))
    bridge = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * g + 1, 2 * g + 1))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cv2.dilate(mask, bridge))
    min_area = params.min_nucleus_area * rbc * rbc
    rim = params.cytoplasm_rim * rbc
    boxes: list[Box] = []
    for i in range(1, n):
        x, y, w, h = stats[i, :4]
        comp = (labels[y : y + h, x : x + w] == i) & (mask[y : y + h, x : x + w] > 0)
        if comp.sum() < min_area:
            continue
        # Bridge the lobes (closing inside a padded crop) so only real necks can split.
        pad = cv2.copyMakeBorder(comp.astype(np.uint8) * 255, g, g, g, g, cv2.BORDER_CONSTANT)
        closed = cv2.morphologyEx(pad, cv2.MORPH_CLOSE, bridge)
        parts = _split_touching(
            pad,
            closed,
            params.cell_separation * rbc,
            params.nucleus_core * rbc,
            params.neck_ratio,
        )
        for part in parts:
            ys, xs = np.nonzero(part[g:-g, g:-g] & comp)
            if len(xs) < min_area:
                continue
            nx1, nx2 = xs.min() + x, xs.max() + x + 1
            ny1, ny2 = ys.min() + y, ys.max() + y + 1
            score = min(1.0, float(len(xs)) / (0.5 * rbc * rbc))
            bx = Box(float(nx1 - rim), float(ny1 - rim), float(nx2 + rim), float(ny2 + rim), score)
            boxes.append(_clip(_rescale(bx, 1 / scale), w0, h0))
    return sorted(boxes, key=lambda b: -b.score)


def _rescale(b: Box, f: float) -> Box:
    return Box(b.x1 * f, b.y1 * f, b.x2 * f, b.y2 * f, b.score)


def _clip(b: Box, w: int, h: int) -> Box:
    return Box(max(0.0, b.x1), max(0.0, b.y1), min(float(w), b.x2), min(float(h), b.y2), b.score)
