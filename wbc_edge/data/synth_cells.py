"""Morphology of each phantom class and the painting of single cells.

Each class is a table row of ranges (µm, ratios, densities), roughly true to peripheral-blood
haematology: size, nucleus shape and nucleus-to-cytoplasm ratio, chromatin texture, nucleoli,
granules (dye, size, density, over the nucleus or not), cytoplasm colour and vacuoles. A draw
picks a value in each range; ``difficulty`` widens the ranges and pulls each class toward the
class it is most often confused with in real smears (IG toward promyelocyte, lymphocyte toward
erythroblast, ...), so hard phantoms overlap the way real classes do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np

from wbc_edge.data.labs import CLASSES as LAB_CLASSES
from wbc_edge.data.synth_paint import (
    Canvas,
    blob_outline,
    dots,
    draw_tube,
    fill_circle,
    fill_polygon,
    sample_in_mask,
    smooth_noise,
)

Range = tuple[float, float]

# The model's ten classes (the 9 pbc9 classes plus Blast), in folder (sorted) order: one list,
# wbc_edge.data.labs.CLASSES, so a phantom model has the packaged model's classes.
CLASSES: tuple[str, ...] = LAB_CLASSES


@dataclass(frozen=True)
class Morph:
    """Ranges one class's cells are drawn from. Numeric fields are (low, high)."""

    diameter_um: Range
    nucleus_ratio: Range  # nucleus extent radius / cell radius
    nucleus_offset: Range  # 0 = centred, 1 = touching the cell edge
    nucleus_aspect: Range
    dent: Range  # kidney indentation depth (relative radius)
    lobes: Range
    nucleus_density: Range
    chromatin_um: Range  # size of chromatin clumps
    chromatin_contrast: Range  # clumped (high) vs fine/open (low)
    nucleoli: Range
    cyto_density: Range
    cyto_blue: Range  # share of basophilic (blue) vs acidophilic (pink) cytoplasm
    granule_um: Range
    granule_per_um2: Range
    granule_amp: Range
    vacuoles: Range
    wobble: Range  # outline irregularity
    shapes: tuple[tuple[str, float], ...] = (("round", 1.0),)
    granule_dye: str = "azurophilic"
    granules_over_nucleus: bool = False
    pink_dye: str = "acidophilic"
    partner: str = ""  # the class it drifts toward as difficulty rises


_NUMERIC = [f.name for f in fields(Morph) if f.type in ("Range", Range)]

MORPHOLOGY: dict[str, Morph] = {
    # Dark purple-black granules, large and dense, lying over a bilobed nucleus and hiding it.
    "Basophil": Morph(
        diameter_um=(10, 14), nucleus_ratio=(0.55, 0.7), nucleus_offset=(0, 0.3),
        nucleus_aspect=(1.0, 1.3), dent=(0.1, 0.3), lobes=(2, 3), nucleus_density=(0.9, 1.2),
        chromatin_um=(0.6, 1.0), chromatin_contrast=(0.2, 0.35), nucleoli=(0, 0),
        cyto_density=(0.25, 0.45), cyto_blue=(0.3, 0.6), granule_um=(0.55, 1.0),
        granule_per_um2=(0.35, 0.7), granule_amp=(0.7, 1.0), vacuoles=(0, 0),
        wobble=(0.04, 0.1), shapes=(("lobed", 0.5), ("kidney", 0.5)),
        granule_dye="basophil_granule", granules_over_nucleus=True, partner="Neutrophil",
    ),
    # Two lobes ("spectacles") and a cytoplasm packed with round orange-red granules.
    "Eosinophil": Morph(
        diameter_um=(12, 16), nucleus_ratio=(0.55, 0.68), nucleus_offset=(0.1, 0.5),
        nucleus_aspect=(1.0, 1.2), dent=(0.1, 0.2), lobes=(2, 3), nucleus_density=(1.1, 1.4),
        chromatin_um=(0.7, 1.1), chromatin_contrast=(0.25, 0.4), nucleoli=(0, 0),
        cyto_density=(0.15, 0.3), cyto_blue=(0.0, 0.2), granule_um=(0.5, 0.8),
        granule_per_um2=(2.2, 3.2), granule_amp=(0.6, 1.0), vacuoles=(0, 0),
        wobble=(0.02, 0.05), shapes=(("lobed", 0.85), ("band", 0.15)),
        granule_dye="eosinophilic", partner="Neutrophil",
    ),
    # Small; a round, very dense (pyknotic) nucleus in grey-pink haemoglobinised cytoplasm.
    "Erythroblast": Morph(
        diameter_um=(8, 11), nucleus_ratio=(0.45, 0.62), nucleus_offset=(0, 0.6),
        nucleus_aspect=(1.0, 1.1), dent=(0, 0), lobes=(1, 1), nucleus_density=(1.8, 2.3),
        chromatin_um=(0.5, 0.8), chromatin_contrast=(0.1, 0.25), nucleoli=(0, 0),
        cyto_density=(0.55, 0.85), cyto_blue=(0.2, 0.55), granule_um=(0.3, 0.3),
        granule_per_um2=(0, 0), granule_amp=(0, 0), vacuoles=(0, 0), wobble=(0.01, 0.03),
        pink_dye="rbc", partner="Lymphocyte",
    ),
    # Myelocytes and metamyelocytes: eccentric oval or bean nucleus, lilac granular cytoplasm.
    "ImmatureGranulocyte": Morph(
        diameter_um=(12, 17), nucleus_ratio=(0.5, 0.65), nucleus_offset=(0.25, 0.65),
        nucleus_aspect=(1.1, 1.35), dent=(0.15, 0.4), lobes=(1, 1), nucleus_density=(1.0, 1.25),
        chromatin_um=(0.6, 1.0), chromatin_contrast=(0.2, 0.35), nucleoli=(0, 0.6),
        cyto_density=(0.4, 0.6), cyto_blue=(0.2, 0.5), granule_um=(0.3, 0.5),
        granule_per_um2=(0.8, 1.6), granule_amp=(0.3, 0.6), vacuoles=(0, 0),
        wobble=(0.02, 0.06), shapes=(("oval", 0.5), ("kidney", 0.5)),
        granule_dye="neutrophilic", partner="Promyelocyte",
    ),
    # Small; round dense nucleus with coarse clumped chromatin, thin rim of blue cytoplasm.
    "Lymphocyte": Morph(
        diameter_um=(7, 10.5), nucleus_ratio=(0.72, 0.88), nucleus_offset=(0, 0.5),
        nucleus_aspect=(1.0, 1.15), dent=(0, 0.12), lobes=(1, 1), nucleus_density=(1.45, 1.8),
        chromatin_um=(0.8, 1.3), chromatin_contrast=(0.4, 0.6), nucleoli=(0, 0),
        cyto_density=(0.45, 0.75), cyto_blue=(0.85, 1.0), granule_um=(0.3, 0.5),
        granule_per_um2=(0, 0.08), granule_amp=(0.5, 0.9), vacuoles=(0, 0),
        wobble=(0.02, 0.06), shapes=(("round", 0.8), ("kidney", 0.2)),
        partner="Erythroblast",
    ),
    # Large; folded kidney/horseshoe nucleus with lacy chromatin, grey-blue vacuolated cytoplasm.
    "Monocyte": Morph(
        diameter_um=(14, 19), nucleus_ratio=(0.55, 0.72), nucleus_offset=(0.1, 0.4),
        nucleus_aspect=(1.05, 1.3), dent=(0.25, 0.5), lobes=(1, 1), nucleus_density=(0.85, 1.1),
        chromatin_um=(0.5, 0.8), chromatin_contrast=(0.15, 0.3), nucleoli=(0, 0),
        cyto_density=(0.45, 0.7), cyto_blue=(0.55, 0.8), granule_um=(0.2, 0.35),
        granule_per_um2=(0.4, 1.0), granule_amp=(0.15, 0.35), vacuoles=(1, 7),
        wobble=(0.05, 0.12), shapes=(("kidney", 0.5), ("horseshoe", 0.3), ("oval", 0.2)),
        partner="ImmatureGranulocyte",
    ),
    # A myeloblast (DeepAPL's blasts are mostly myeloid): large, high N:C; fine open chromatin
    # with 2-4 pale nucleoli, deep blue agranular rim.
    "Blast": Morph(
        diameter_um=(14, 19), nucleus_ratio=(0.74, 0.86), nucleus_offset=(0, 0.35),
        nucleus_aspect=(1.0, 1.15), dent=(0, 0.1), lobes=(1, 1), nucleus_density=(0.85, 1.05),
        chromatin_um=(0.35, 0.55), chromatin_contrast=(0.1, 0.2), nucleoli=(1.5, 4),
        cyto_density=(0.4, 0.65), cyto_blue=(0.85, 1.0), granule_um=(0.3, 0.5),
        granule_per_um2=(0, 0.05), granule_amp=(0.5, 0.9), vacuoles=(0, 0),
        wobble=(0.02, 0.05), shapes=(("round", 0.8), ("oval", 0.2)),
        partner="Promyelocyte",
    ),
    # 2-5 lobes joined by thin strands (or a band), fine lilac granules in pale pink cytoplasm.
    "Neutrophil": Morph(
        diameter_um=(12, 15), nucleus_ratio=(0.64, 0.78), nucleus_offset=(0, 0.3),
        nucleus_aspect=(1.0, 1.2), dent=(0, 0), lobes=(2, 5), nucleus_density=(1.25, 1.55),
        chromatin_um=(0.6, 1.0), chromatin_contrast=(0.3, 0.45), nucleoli=(0, 0),
        cyto_density=(0.3, 0.5), cyto_blue=(0.0, 0.2), granule_um=(0.2, 0.35),
        granule_per_um2=(2.0, 4.0), granule_amp=(0.15, 0.3), vacuoles=(0, 0),
        wobble=(0.02, 0.05), shapes=(("lobed", 0.75), ("band", 0.25)),
        granule_dye="neutrophilic", partner="ImmatureGranulocyte",
    ),
    # Anucleate fragments: pale lilac hyalomere around a clump of purple granules.
    "Platelet": Morph(
        diameter_um=(2.5, 4.5), nucleus_ratio=(0.55, 0.8), nucleus_offset=(0, 0.4),
        nucleus_aspect=(1.0, 1.4), dent=(0, 0), lobes=(1, 1), nucleus_density=(0, 0),
        chromatin_um=(0.5, 0.5), chromatin_contrast=(0, 0), nucleoli=(0, 0),
        cyto_density=(0.45, 0.75), cyto_blue=(0, 0), granule_um=(0.25, 0.4),
        granule_per_um2=(5, 9), granule_amp=(0.8, 1.3), vacuoles=(0, 0), wobble=(0.1, 0.25),
    ),
    # Largest granulocyte precursor: eccentric round nucleus, nucleoli, coarse azurophilic
    # granules over nucleus and blue cytoplasm.
    "Promyelocyte": Morph(
        diameter_um=(15, 21), nucleus_ratio=(0.55, 0.7), nucleus_offset=(0.2, 0.55),
        nucleus_aspect=(1.05, 1.25), dent=(0, 0.15), lobes=(1, 1), nucleus_density=(0.9, 1.1),
        chromatin_um=(0.45, 0.7), chromatin_contrast=(0.12, 0.25), nucleoli=(0.5, 2.5),
        cyto_density=(0.45, 0.7), cyto_blue=(0.6, 0.9), granule_um=(0.4, 0.7),
        granule_per_um2=(0.6, 1.4), granule_amp=(0.5, 0.9), vacuoles=(0, 0),
        wobble=(0.03, 0.07), shapes=(("round", 0.5), ("oval", 0.5)),
        granules_over_nucleus=True, partner="ImmatureGranulocyte",
    ),
}  # fmt: skip


def sample_params(cls: str, rng: np.random.Generator, difficulty: float) -> dict[str, Any]:
    """One cell's numbers (plus its nucleus ``shape``): each range widened by difficulty and
    pulled toward the partner class's."""
    morph = MORPHOLOGY[cls]
    partner = MORPHOLOGY.get(morph.partner)
    widen = 0.6 + 0.8 * difficulty
    pull = 0.55 * difficulty * rng.uniform()  # one pull per cell: the whole cell drifts
    out: dict[str, Any] = {}
    for name in _NUMERIC:
        lo, hi = getattr(morph, name)
        mid, half = (lo + hi) / 2, (hi - lo) / 2
        if partner is not None:
            plo, phi = getattr(partner, name)
            mid += pull * ((plo + phi) / 2 - mid)
        out[name] = max(0.0, mid + half * widen * rng.uniform(-1.0, 1.0))
    names = [s for s, _ in morph.shapes]
    weights = np.array([w for _, w in morph.shapes])
    out["shape"] = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    return out


def _stochastic_int(x: float, rng: np.random.Generator) -> int:
    return int(math.floor(x + rng.uniform()))


def _nucleus_mask(
    shape: tuple[int, int],
    c: tuple[float, float],
    rn: float,
    p: dict[str, Any],
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw the nucleus (uint8) of extent radius ``rn`` around ``c`` in the shape ``p`` asks."""
    mask = np.zeros(shape, np.uint8)
    kind, angle = p["shape"], rng.uniform(0, 2 * math.pi)
    aspect = max(p["nucleus_aspect"], 1.0)
    if kind in ("round", "oval", "kidney"):
        if kind == "oval":
            aspect = max(aspect, 1.15)
        dent = (p["dent"], rng.uniform(0, 2 * math.pi), rng.uniform(0.5, 0.8))
        dent_or_none = dent if kind == "kidney" else None
        fill_polygon(mask, blob_outline(*c, rn, rng, aspect, angle, 0.05, dent_or_none))
    elif kind in ("band", "horseshoe"):
        thick = rng.uniform(0.22, 0.3) if kind == "band" else rng.uniform(0.34, 0.42)
        span = rng.uniform(2.6, 4.5)
        rho = rn * (1 - thick)
        t = np.linspace(angle, angle + span, 24)
        wave = 1 + 0.12 * np.sin(rng.uniform(1, 3) * (t - angle) + rng.uniform(0, 6))
        path = np.stack([c[0] + rho * wave * np.cos(t), c[1] + rho * wave * np.sin(t)], axis=1)
        radii = rn * thick * (1 + 0.15 * np.sin(np.linspace(0, math.pi, 24) + rng.normal()))
        draw_tube(mask, path, radii)
    elif kind == "lobed":
        k = max(2, int(round(p["lobes"])))
        rl = rn * (0.66 - 0.07 * k)
        rho = rn - rl
        step = min(2.3 * rl / max(rho, 1e-3), 1.8 * math.pi / k)
        centres = []
        for i in range(k):
            a = angle + i * step + rng.normal(0, 0.12)
            r = rho * rng.uniform(0.8, 1.05)
            centres.append((c[0] + r * math.cos(a), c[1] + r * math.sin(a)))
        for x, y in centres:
            lobe_r, lobe_aspect = rl * rng.uniform(0.85, 1.1), rng.uniform(1.0, 1.3)
            lobe = blob_outline(x, y, lobe_r, rng, lobe_aspect, rng.uniform(0, math.pi), 0.08)
            fill_polygon(mask, lobe)
        strand = np.full(2, max(0.5, 0.16 * rl))
        for a, b in zip(centres[:-1], centres[1:], strict=True):
            draw_tube(mask, np.array([a, b]), strand)
    else:
        raise ValueError(f"unknown nucleus shape {kind!r}")
    return mask


Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in canvas pixels, x1/y1 exclusive


def _box(mask: np.ndarray, x0: int, y0: int, canvas: Canvas) -> Box:
    ys, xs = np.nonzero(mask > 0.25)
    return (
        max(x0 + int(xs.min()), 0),
        max(y0 + int(ys.min()), 0),
        min(x0 + int(xs.max()) + 1, canvas.width),
        min(y0 + int(ys.max()) + 1, canvas.height),
    )


def draw_wbc(
    canvas: Canvas, cls: str, cx: float, cy: float, p: dict[str, Any], rng: np.random.Generator
) -> Box:
    """Paint one white cell (or erythroblast) of class ``cls`` centred at (cx, cy).

    ``p`` comes from :func:`sample_params`. Returns the box of the painted cell.
    """
    morph = MORPHOLOGY[cls]
    r = canvas.px(p["diameter_um"] / 2)
    size = int(2 * r * 1.2 + 6)
    x0, y0 = int(cx - size / 2), int(cy - size / 2)
    lc = (cx - x0, cy - y0)
    shape = (size, size)

    cell_u8 = np.zeros(shape, np.uint8)
    aspect, angle = rng.uniform(1.0, 1.1), rng.uniform(0, math.pi)
    fill_polygon(cell_u8, blob_outline(*lc, r, rng, aspect, angle, wobble=p["wobble"]))
    cell = cell_u8.astype(np.float32) / 255.0

    rn = r * min(p["nucleus_ratio"], 0.92)
    room = max(r - rn, 0.0) * 0.9
    phi = rng.uniform(0, 2 * math.pi)
    off = min(p["nucleus_offset"], 1.0) * room
    nc = (lc[0] + off * math.cos(phi), lc[1] + off * math.sin(phi))
    nucleus = _nucleus_mask(shape, nc, rn, p, rng).astype(np.float32) / 255.0 * cell

    # Chromatin: clumps (tanh sharpens the noise into blocks) plus a fine grain.
    clumps = np.tanh(1.5 * smooth_noise(shape, canvas.px(p["chromatin_um"]), rng))
    grain = smooth_noise(shape, 1.5, rng)
    ndens = p["nucleus_density"] * (1 + p["chromatin_contrast"] * clumps + 0.05 * grain)
    n_nucleoli = _stochastic_int(p["nucleoli"], rng)
    if n_nucleoli:
        solid = (nucleus > 0.5).astype(np.uint8)
        inner = cv2.erode(solid, np.ones((3, 3), np.uint8), iterations=max(1, int(canvas.px(0.8))))
        nucleoli = np.zeros(shape, np.uint8)
        for x, y in sample_in_mask(inner, n_nucleoli, rng):
            fill_circle(nucleoli, x, y, canvas.px(rng.uniform(0.45, 0.85)))
        nuc_f = cv2.GaussianBlur(nucleoli.astype(np.float32) / 255.0, (0, 0), 0.7) * nucleus
        ndens = ndens * (1 - 0.45 * nuc_f)
        canvas.add(x0, y0, 0.5 * nuc_f, "basophilic")
    canvas.add(x0, y0, np.maximum(ndens, 0) * nucleus, "chromatin")

    cyto = cell * (1 - 0.8 * nucleus)
    cdens = p["cyto_density"] * (1 + 0.12 * smooth_noise(shape, canvas.px(1.0), rng))
    n_vac = _stochastic_int(p["vacuoles"], rng)
    if n_vac:
        free = (cell > 0.5) & (cv2.dilate(nucleus, np.ones((3, 3), np.uint8)) < 0.1)
        vac = np.zeros(shape, np.uint8)
        for x, y in sample_in_mask(free.astype(np.uint8), n_vac, rng):
            fill_circle(vac, x, y, canvas.px(rng.uniform(0.4, 1.0)))
        cdens = cdens * (1 - 0.85 * vac.astype(np.float32) / 255.0)
    blue = min(p["cyto_blue"], 1.0)
    canvas.add(x0, y0, cdens * blue * cyto, "basophilic")
    canvas.add(x0, y0, cdens * (1 - blue) * cyto, morph.pink_dye)

    region = cell if morph.granules_over_nucleus else cell * (1 - nucleus)
    area_um2 = float((region > 0.5).sum()) / canvas.px_per_um**2
    n_gran = int(rng.poisson(p["granule_per_um2"] * area_um2))
    if n_gran and p["granule_amp"] > 0:
        xy = sample_in_mask(region, n_gran, rng)
        amps = p["granule_amp"] * rng.uniform(0.6, 1.2, len(xy))
        layer = dots(shape, xy, canvas.px(p["granule_um"] / 2), amps) * cell
        canvas.add(x0, y0, layer, morph.granule_dye)
    return _box(cell, x0, y0, canvas)


def draw_platelet(
    canvas: Canvas, cx: float, cy: float, rng: np.random.Generator, difficulty: float = 0.5
) -> Box:
    """A platelet: irregular pale hyalomere with a clump of purple granules (granulomere)."""
    p = sample_params("Platelet", rng, difficulty)
    r = canvas.px(p["diameter_um"] / 2)
    size = int(2 * r * 1.4 + 6)
    x0, y0 = int(cx - size / 2), int(cy - size / 2)
    lc = (cx - x0, cy - y0)
    shape = (size, size)
    body_u8 = np.zeros(shape, np.uint8)
    angle = rng.uniform(0, math.pi)
    fill_polygon(body_u8, blob_outline(*lc, r, rng, p["nucleus_aspect"], angle, p["wobble"]))
    body = body_u8.astype(np.float32) / 255.0
    canvas.add(x0, y0, body * p["cyto_density"], "platelet")
    core = np.zeros(shape, np.uint8)
    jitter = rng.normal(0, 0.15 * r, 2)
    fill_circle(core, lc[0] + jitter[0], lc[1] + jitter[1], r * p["nucleus_ratio"])
    area_um2 = float((core > 127).sum()) / canvas.px_per_um**2
    n = max(3, int(rng.poisson(p["granule_per_um2"] * area_um2)))
    xy = sample_in_mask(core.astype(np.float32) / 255.0, n, rng)
    amps = p["granule_amp"] * rng.uniform(0.6, 1.2, len(xy))
    layer = dots(shape, xy, canvas.px(p["granule_um"] / 2), amps) * body
    canvas.add(x0, y0, layer, "azurophilic")
    return _box(body, x0, y0, canvas)


def draw_rbc(canvas: Canvas, cx: float, cy: float, r: float, rng: np.random.Generator) -> Box:
    """A red cell: a pink disc, denser at the rim, with a paler centre (central pallor)."""
    size = int(2 * r + 6)
    x0, y0 = int(cx - size / 2), int(cy - size / 2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    xx -= cx - x0
    yy -= cy - y0
    ang = rng.uniform(0, math.pi)
    c, s = math.cos(ang), math.sin(ang)
    u, v = c * xx + s * yy, (-s * xx + c * yy) * rng.uniform(1.0, 1.12)
    theta = np.arctan2(v, u)
    wob = 1 + 0.03 * np.cos(2 * theta + rng.uniform(0, 6)) + 0.02 * np.cos(3 * theta)
    rho = np.sqrt(u * u + v * v) / (r * wob)
    pallor = rng.uniform(0.4, 0.75)
    profile = 1 - pallor * np.exp(-((rho / rng.uniform(0.45, 0.62)) ** 4))
    profile += 0.2 * np.exp(-(((rho - 0.86) / 0.1) ** 2))
    inside = np.clip((1 - rho) * r + 0.5, 0, 1)
    dens = rng.uniform(0.65, 1.0) * profile * inside
    canvas.add(x0, y0, dens.astype(np.float32), "rbc")
    return _box(inside, x0, y0, canvas)


def scatter_rbcs(
    canvas: Canvas,
    rng: np.random.Generator,
    avoid: list[tuple[float, float, float]],
    coverage: float,
    r_um: float,
    overlap: float = 0.2,
) -> list[Box]:
    """Red cells over the canvas to about ``coverage`` of its area, some overlapping.

    ``avoid`` lists (x, y, radius) discs (white cells, platelets) the red cells mostly keep out
    of; ``overlap`` is how far into each other or into those discs they may reach.
    """
    r_mean = canvas.px(r_um)
    area = canvas.width * canvas.height
    target = int(coverage * area / (math.pi * r_mean**2))
    placed: list[tuple[float, float, float]] = []
    xs, ys, rs = np.zeros(0), np.zeros(0), np.zeros(0)
    av = np.array(avoid, np.float64).reshape(-1, 3)
    for _ in range(target * 6):
        if len(placed) >= target:
            break
        r = r_mean * math.exp(rng.normal(0, 0.05))
        x = rng.uniform(-0.5 * r, canvas.width + 0.5 * r)
        y = rng.uniform(-0.5 * r, canvas.height + 0.5 * r)
        allow = 1 - overlap * rng.uniform() ** 2
        if len(xs) and np.any(np.hypot(xs - x, ys - y) < (rs + r) * allow):
            continue
        if len(av) and np.any(np.hypot(av[:, 0] - x, av[:, 1] - y) < av[:, 2] + r * allow):
            continue
        placed.append((x, y, r))
        xs, ys, rs = np.append(xs, x), np.append(ys, y), np.append(rs, r)
    return [draw_rbc(canvas, x, y, r, rng) for x, y, r in placed]
