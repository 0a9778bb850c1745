"""Painting a May-Grünwald-Giemsa-like smear as light passing through stain.

Everything is drawn as optical density (Beer-Lambert): a stained structure adds its density
times its dye's absorbance per RGB channel, and the camera sees ``illumination * exp(-density)``.
Overlaps (a red cell under a white cell, granules over a nucleus) darken the way they do under a
microscope, and one dye draw per image recolours every structure consistently, like one slide's
staining run. Shapes are drawn antialiased at the output resolution; the focus blur that
:func:`develop` adds hides the remaining pixel edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Absorbance per unit density, RGB. Chosen by eye against pbc9 (CellaVision, cream background)
# and bccd-smears (grey-blue background): purple chromatin, sky-blue RNA-rich cytoplasm, pink
# red cells, orange-red eosinophil and purple-black basophil granules.
DYES: dict[str, tuple[float, float, float]] = {
    "plasma": (0.03, 0.05, 0.04),
    "rbc": (0.13, 0.36, 0.29),
    "chromatin": (0.62, 0.92, 0.30),
    "basophilic": (0.38, 0.27, 0.10),
    "acidophilic": (0.12, 0.26, 0.14),
    "neutrophilic": (0.30, 0.48, 0.20),
    "eosinophilic": (0.05, 0.62, 0.78),
    "basophil_granule": (1.00, 1.20, 0.60),
    "azurophilic": (0.50, 1.00, 0.40),
    "platelet": (0.30, 0.42, 0.16),
}

# Illumination colours between which each image's white balance is drawn: the cream of the
# CellaVision images and the grey-blue of the BCCD camera.
_ILLUMINANTS = np.array([[1.00, 0.93, 0.84], [0.90, 0.92, 0.93], [0.97, 0.95, 0.97]], np.float32)


@dataclass
class Canvas:
    """An optical-density image under construction (H x W x 3, RGB) and its scale."""

    od: np.ndarray
    px_per_um: float
    dyes: dict[str, np.ndarray]

    @property
    def height(self) -> int:
        return self.od.shape[0]

    @property
    def width(self) -> int:
        return self.od.shape[1]

    def px(self, um: float) -> float:
        return um * self.px_per_um

    def add(self, x0: int, y0: int, density: np.ndarray, dye: str) -> None:
        """Add a density patch whose top-left corner sits at (x0, y0), clipped to the canvas."""
        h, w = density.shape
        xa, ya = max(x0, 0), max(y0, 0)
        xb, yb = min(x0 + w, self.width), min(y0 + h, self.height)
        if xa >= xb or ya >= yb:
            return
        patch = density[ya - y0 : yb - y0, xa - x0 : xb - x0]
        self.od[ya:yb, xa:xb] += patch[..., None] * self.dyes[dye]


def new_canvas(
    height: int, width: int, px_per_um: float, rng: np.random.Generator, spread: float
) -> Canvas:
    """A blank slide with this image's dyes: hue balance, strength and per-dye jitter.

    ``spread`` (0..1) widens the stain variation, as a harder data set would have.
    """
    strength = math.exp(rng.normal(0.0, 0.10 + 0.08 * spread))
    # One azure/eosin balance for the whole slide: more blue or more red in every dye.
    balance = rng.normal(0.0, 0.08 + 0.08 * spread)
    tilt = np.array([math.exp(balance), 1.0, math.exp(-balance)], np.float32)
    dyes = {}
    for name, vec in DYES.items():
        jitter = np.exp(rng.normal(0.0, 0.04 + 0.05 * spread, 3)).astype(np.float32)
        dyes[name] = np.asarray(vec, np.float32) * tilt * jitter * strength
    od = np.zeros((height, width, 3), np.float32)
    od += dyes["plasma"] * rng.uniform(0.3, 1.5)
    return Canvas(od=od, px_per_um=px_per_um, dyes=dyes)


def smooth_noise(shape: tuple[int, int], cell_px: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance noise whose blobs are about ``cell_px`` pixels across."""
    h, w = shape
    cell = max(cell_px, 1.0)
    gh, gw = max(2, int(math.ceil(h / cell)) + 2), max(2, int(math.ceil(w / cell)) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(grid, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    oy = int(rng.integers(0, big.shape[0] - h + 1))
    ox = int(rng.integers(0, big.shape[1] - w + 1))
    out = big[oy : oy + h, ox : ox + w]
    std = float(out.std())
    return (out - float(out.mean())) / (std if std > 1e-6 else 1.0)


def blob_outline(
    cx: float,
    cy: float,
    radius: float,
    rng: np.random.Generator,
    aspect: float = 1.0,
    angle: float = 0.0,
    wobble: float = 0.04,
    dent: tuple[float, float, float] | None = None,
    n: int = 64,
) -> np.ndarray:
    """Points of a smooth, slightly irregular closed outline (N x 2, float).

    ``wobble`` is the relative amplitude of low harmonics; ``dent`` = (depth, direction,
    width in radians) pushes one side in, making a kidney or bean.
    """
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    r = np.ones(n)
    for k in (2, 3, 4, 5):
        r += wobble / (k - 1) * rng.normal() * np.cos(k * t + rng.uniform(0, 2 * math.pi))
    if dent is not None:
        depth, direction, width = dent
        d = np.angle(np.exp(1j * (t - direction)))
        r -= depth * np.exp(-((d / width) ** 2))
    x = r * radius * np.cos(t)
    y = r * radius / aspect * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


_SHIFT = 4  # fractional bits for cv2 drawing: sub-pixel positions and radii
_ONE = 1 << _SHIFT


def fill_polygon(mask: np.ndarray, pts: np.ndarray) -> None:
    """Fill an outline into a uint8 mask, antialiased."""
    p = np.round(pts * _ONE).astype(np.int32)
    cv2.fillPoly(mask, [p], 255, lineType=cv2.LINE_AA, shift=_SHIFT)


def fill_circle(mask: np.ndarray, cx: float, cy: float, r: float, value: int = 255) -> None:
    """Fill a circle with sub-pixel centre and radius into a uint8 mask, antialiased."""
    cv2.circle(
        mask,
        (int(round(cx * _ONE)), int(round(cy * _ONE))),
        max(int(round(r * _ONE)), 1),
        int(value),
        -1,
        lineType=cv2.LINE_AA,
        shift=_SHIFT,
    )


def draw_tube(mask: np.ndarray, path: np.ndarray, radii: np.ndarray) -> None:
    """A sausage of varying thickness along ``path`` (N x 2): bands and nuclear strands."""
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    for i in range(len(path) - 1):
        steps = max(1, int(math.ceil(seg[i] / max(0.3 * min(radii[i], radii[i + 1]), 0.3))))
        for f in np.linspace(0.0, 1.0, steps, endpoint=False):
            p = path[i] + f * (path[i + 1] - path[i])
            fill_circle(mask, p[0], p[1], radii[i] + f * (radii[i + 1] - radii[i]))
    fill_circle(mask, path[-1][0], path[-1][1], radii[-1])


def dots(shape: tuple[int, int], xy: np.ndarray, radius_px: float, amps: np.ndarray) -> np.ndarray:
    """A float layer of round granules of about ``radius_px``, each with its own strength.

    Granules under ~1 px become blurred point splats (the fine dust of neutrophils), larger
    ones antialiased discs (eosinophil and basophil granules).
    """
    h, w = shape
    layer = np.zeros(shape, np.float32)
    if len(xy) == 0:
        return layer
    if radius_px < 1.0:
        xi = np.clip(np.round(xy[:, 0]).astype(int), 0, w - 1)
        yi = np.clip(np.round(xy[:, 1]).astype(int), 0, h - 1)
        np.add.at(layer, (yi, xi), amps.astype(np.float32))
        return cv2.GaussianBlur(layer, (0, 0), max(radius_px, 0.5))
    u8 = np.zeros(shape, np.uint8)
    order = np.argsort(amps)  # stronger granules drawn last, on top
    for i in order:
        fill_circle(u8, xy[i, 0], xy[i, 1], radius_px, int(255 * min(amps[i], 1.0)))
    # Soften the discs: a granule is a sphere seen through a lens, not a flat coin.
    return cv2.GaussianBlur(u8.astype(np.float32) / 255.0, (0, 0), max(0.3 * radius_px, 0.4))


def sample_in_mask(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random points (x, y, float) inside a mask, weighted by its values."""
    ys, xs = np.nonzero(mask > 0.5)
    if n <= 0 or len(xs) == 0:
        return np.zeros((0, 2), np.float32)
    pick = rng.integers(0, len(xs), n)
    jitter = rng.uniform(-0.5, 0.5, (n, 2))
    return np.stack([xs[pick], ys[pick]], axis=1) + jitter


def develop(
    canvas: Canvas, rng: np.random.Generator, spread: float, blur_um: tuple[float, float]
) -> np.ndarray:
    """Turn densities into a camera image: white balance, uneven lighting, focus, noise.

    Returns BGR uint8, like ``cv2.imread``, so phantoms go through the same preprocessing as
    real images.
    """
    h, w = canvas.height, canvas.width
    mix = rng.dirichlet(np.ones(len(_ILLUMINANTS)) * 0.7)
    tint = (mix[:, None] * _ILLUMINANTS).sum(0) * rng.uniform(0.90, 1.02)
    tint = tint * np.exp(rng.normal(0.0, 0.015 + 0.015 * spread, 3))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx, yy = xx / max(w, h) - 0.5 * w / max(w, h), yy / max(w, h) - 0.5 * h / max(w, h)
    g = rng.normal(0.0, 0.05 + 0.05 * spread, 2)
    light = 1.0 + g[0] * xx + g[1] * yy - rng.uniform(0.0, 0.12) * (xx**2 + yy**2)
    img = np.exp(-canvas.od) * (light[..., None] * tint.astype(np.float32)) * 255.0
    sigma = canvas.px(rng.uniform(*blur_um))
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    noise = rng.uniform(0.8, 2.5 + 2.5 * spread)
    img += rng.standard_normal(img.shape).astype(np.float32) * noise
    rgb = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])
