"""Synthetic May-Grünwald-Giemsa-like phantoms: single-cell crops in an ImageFolder tree.

The offline default for the demo and the tests: no download, no patient data. Each crop shows
one cell of a class (see :mod:`wbc_edge.data.synth_cells` for the morphology) among red cells
on a smear background, with stain, lighting, focus and noise drawn per image. Every image has its
own random stream derived from (seed, class name, index), so the same seed gives the same bytes
and a ``classes`` subset gives the same images as the full set. Whole smear fields with boxes
live in :mod:`wbc_edge.data.synth_fields`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from wbc_edge.console import progress
from wbc_edge.data.synth_cells import (
    CLASSES,
    MORPHOLOGY,
    draw_platelet,
    draw_wbc,
    sample_params,
    scatter_rbcs,
)
from wbc_edge.data.synth_defaults import DEFAULT_DIFFICULTY, DEFAULT_PER_CLASS, DEFAULT_SIZE
from wbc_edge.data.synth_paint import develop, new_canvas
from wbc_edge.errors import UserError

CROP_FOV_UM = 36.0  # a crop spans about 36 µm, like pbc9's 360 px CellaVision crops
JPEG_QUALITY = (80, 96)  # drawn per image; fixed by the seed, so bytes are reproducible

README_TEXT = """\
Synthetic phantoms made by `wbc-edge data synth` (procedural May-Grünwald-Giemsa-like images).

These images are drawn by a program for tests and demos. They are NOT clinical data, show no
patient's cells, and must not be used to judge how a model performs on real blood smears.

Layout:
  <Class>/<Class>_<index>.jpg        single-cell crops, one folder per class (ImageFolder)
  fields/JPEGImages/*.jpg            whole smear fields (when --fields was given)
  fields/Annotations/*.xml           Pascal-VOC boxes named WBC, RBC, Platelets; each WBC box
                                     also carries <wbc_class> with the phantom's class name
  fields/labels.csv                  image,category: the white-cell classes of each field
                                     (upper case, joined by ", ", like BCCD)

The same seed always gives the same files.
"""


def image_rng(seed: int, key: str, index: int) -> np.random.Generator:
    """The random stream of one image, independent of which other images are made."""
    return np.random.default_rng([int(seed), zlib.crc32(key.encode()), int(index)])


def check_classes(classes: Sequence[str] | None) -> list[str]:
    """The requested classes in canonical order, or a UserError naming the unknown ones."""
    if classes is None:
        return list(CLASSES)
    unknown = [c for c in classes if c not in CLASSES]
    if unknown or not classes:
        raise UserError(
            f"unknown phantom class(es) {', '.join(unknown) or '(none given)'}: "
            f"choose from {', '.join(CLASSES)}"
        )
    return [c for c in CLASSES if c in set(classes)]


def check_difficulty(difficulty: float) -> float:
    if not 0.0 <= difficulty <= 1.0:
        raise UserError(f"difficulty {difficulty} is out of range: give a value from 0 to 1")
    return float(difficulty)


def render_cell(
    cls: str,
    rng: np.random.Generator,
    size: int = DEFAULT_SIZE,
    difficulty: float = DEFAULT_DIFFICULTY,
) -> np.ndarray:
    """One single-cell crop of class ``cls`` as a BGR uint8 ``size`` x ``size`` image.

    The cell sits near the centre (as in pbc9) among red cells; a platelet may stray into
    other classes' crops, so "something small and purple" alone does not mean Platelet.
    """
    if cls not in MORPHOLOGY:
        raise ValueError(f"unknown class {cls!r}; known: {', '.join(CLASSES)}")
    d = difficulty
    canvas = new_canvas(size, size, size / CROP_FOV_UM, rng, d)
    cx = size / 2 + canvas.px(rng.normal(0, 1.0))
    cy = size / 2 + canvas.px(rng.normal(0, 1.0))
    rbc_um = rng.uniform(3.5, 4.1)
    coverage = rng.uniform(0.3, 0.6)
    if cls == "Platelet":
        spots = [(cx, cy)]
        for _ in range(int(rng.choice(3, p=[0.6, 0.3, 0.1]))):
            a = rng.uniform(0, 2 * np.pi)
            dist = canvas.px(rng.uniform(2.5, 4.5))
            spots.append((cx + dist * np.cos(a), cy + dist * np.sin(a)))
        avoid = [(x, y, canvas.px(2.0)) for x, y in spots]
        scatter_rbcs(canvas, rng, avoid, coverage, rbc_um, overlap=0.35)
        for x, y in spots:
            draw_platelet(canvas, x, y, rng, d)
    else:
        p = sample_params(cls, rng, d)
        radius = canvas.px(p["diameter_um"] / 2)
        stray = []
        if rng.uniform() < 0.25:
            a = rng.uniform(0, 2 * np.pi)
            dist = radius + canvas.px(rng.uniform(3, 10))
            stray.append((cx + dist * np.cos(a), cy + dist * np.sin(a)))
        avoid = [(cx, cy, radius)] + [(x, y, canvas.px(2.0)) for x, y in stray]
        scatter_rbcs(canvas, rng, avoid, coverage, rbc_um, overlap=0.35)
        for x, y in stray:
            draw_platelet(canvas, x, y, rng, d)
        draw_wbc(canvas, cls, cx, cy, p, rng)
    return develop(canvas, rng, d, blur_um=(0.04, 0.14 + 0.14 * d))


def write_jpeg(path: Path, image: np.ndarray, rng: np.random.Generator) -> None:
    """Save with a per-image JPEG quality drawn from the image's own stream (camera-like)."""
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"could not encode {path}")
    path.write_bytes(buf.tobytes())


def write_readme(out: str | Path) -> Path:
    path = Path(out) / "README.txt"
    path.write_text(README_TEXT, encoding="utf-8")
    return path


def prepare_out(out: str | Path) -> Path:
    """Create the output folder, or explain why it cannot be used."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a folder to write the phantoms into")
    out.mkdir(parents=True, exist_ok=True)
    return out


def make_crops(
    out: str | Path,
    per_class: int = DEFAULT_PER_CLASS,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    difficulty: float = DEFAULT_DIFFICULTY,
    classes: Sequence[str] | None = None,
    show_progress: bool = True,
) -> list[Path]:
    """Write ``out/<class>/<class>_<index>.jpg`` for each class; returns the paths in order."""
    chosen = check_classes(classes)
    difficulty = check_difficulty(difficulty)
    if per_class < 1:
        raise UserError(f"--per-class {per_class}: give at least 1 image per class")
    if size < 32:
        raise UserError(f"--size {size} is too small to draw a cell: use 32 or more pixels")
    if seed < 0:
        raise UserError(f"--seed {seed}: give a seed of 0 or more")
    out = prepare_out(out)
    write_readme(out)
    paths: list[Path] = []
    with progress(transient=not show_progress) as bar:
        total = len(chosen) * per_class
        task = bar.add_task("phantom crops", total=total, status="", visible=show_progress)
        for cls in chosen:
            folder = out / cls
            folder.mkdir(exist_ok=True)
            bar.update(task, status=cls)
            for i in range(per_class):
                rng = image_rng(seed, cls, i)
                path = folder / f"{cls}_{i:04d}.jpg"
                write_jpeg(path, render_cell(cls, rng, size, difficulty), rng)
                paths.append(path)
                bar.advance(task)
    return paths
