"""Synthetic whole smear fields with Pascal-VOC boxes, laid out like ``bccd-smears``.

A field has many red cells (some overlapping), a few platelets and 1-4 white cells of random
classes that do not overlap each other. Files mirror the BCCD set so the same readers work on
both: ``JPEGImages/<name>.jpg``, ``Annotations/<name>.xml`` (boxes named WBC, RBC, Platelets)
and ``labels.csv`` (``image,category``). Each WBC box also carries ``<wbc_class>`` with the
phantom's class name (e.g. ``Neutrophil``), which BCCD does not have; readers that only know
BCCD ignore it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wbc_edge.console import progress
from wbc_edge.data.synth import (
    check_classes,
    check_difficulty,
    image_rng,
    prepare_out,
    write_jpeg,
    write_readme,
)
from wbc_edge.data.synth_cells import Box, draw_platelet, draw_wbc, sample_params, scatter_rbcs
from wbc_edge.data.synth_defaults import DEFAULT_DIFFICULTY, DEFAULT_FIELD_SIZE
from wbc_edge.data.synth_paint import develop, new_canvas
from wbc_edge.errors import UserError

FIELD_PX_PER_UM = 13.0  # as BCCD: a red cell ~100 px (0.21 of 480), a 640x480 field ~49x37 µm
FIELD_PREFIX = "SynthField"


@dataclass(frozen=True)
class FieldObject:
    name: str  # WBC, RBC or Platelets (the BCCD names)
    box: Box  # x0, y0, x1, y1 pixels, x1/y1 exclusive
    truncated: bool
    wbc_class: str = ""


def render_field(
    rng: np.random.Generator,
    size: tuple[int, int] = DEFAULT_FIELD_SIZE,
    difficulty: float = DEFAULT_DIFFICULTY,
    classes: Sequence[str] | None = None,
    px_per_um: float = FIELD_PX_PER_UM,
) -> tuple[np.ndarray, list[FieldObject]]:
    """One smear field (BGR uint8, ``size`` = (width, height)) and its annotated objects.

    White cells are drawn from ``classes`` (Platelet is not a white cell and is left out of
    that draw; platelets are scattered in every field). They lie fully inside the field.
    """
    width, height = size
    wbc_classes = [c for c in check_classes(classes) if c != "Platelet"]
    canvas = new_canvas(height, width, px_per_um, rng, difficulty)
    cells: list[tuple[str, float, float, dict]] = []
    wanted = int(rng.integers(1, 5)) if wbc_classes else 0
    for _draw in range(8 * wanted):  # a draw that does not fit is replaced by another
        if len(cells) == wanted:
            break
        cls = wbc_classes[int(rng.integers(len(wbc_classes)))]
        p = sample_params(cls, rng, difficulty)
        r = canvas.px(p["diameter_um"] / 2) * 1.1
        if 2 * r >= min(width, height):
            continue
        for _attempt in range(30):
            x, y = rng.uniform(r, width - r), rng.uniform(r, height - r)
            if all(
                math.hypot(x - cx, y - cy) > r + canvas.px(q["diameter_um"] / 2) * 1.1 + 4
                for _, cx, cy, q in cells
            ):
                cells.append((cls, x, y, p))
                break
    platelets: list[tuple[float, float]] = []
    for _ in range(int(rng.poisson(3 * width * height / 640 / 480))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        if all(
            math.hypot(x - cx, y - cy) > canvas.px(q["diameter_um"] / 2 + 3)
            for _, cx, cy, q in cells
        ):
            platelets.append((x, y))
    avoid = [(x, y, canvas.px(p["diameter_um"] / 2)) for _, x, y, p in cells]
    avoid += [(x, y, canvas.px(2.0)) for x, y in platelets]
    coverage, rbc_um = rng.uniform(0.35, 0.6), rng.uniform(3.5, 4.1)
    rbc_boxes = scatter_rbcs(canvas, rng, avoid, coverage, rbc_um, overlap=0.45)
    platelet_boxes = [draw_platelet(canvas, x, y, rng, difficulty) for x, y in platelets]
    wbc_boxes = [(cls, draw_wbc(canvas, cls, x, y, p, rng)) for cls, x, y, p in cells]
    image = develop(canvas, rng, difficulty, blur_um=(0.04, 0.14 + 0.14 * difficulty))

    objects = [FieldObject("WBC", b, _touches_edge(b, size), cls) for cls, b in wbc_boxes]
    min_side = canvas.px(2.5)  # drop red cells that barely peek into the field
    objects += [
        FieldObject("RBC", b, _touches_edge(b, size))
        for b in rbc_boxes
        if b[2] - b[0] >= min_side and b[3] - b[1] >= min_side
    ]
    objects += [
        FieldObject("Platelets", b, _touches_edge(b, size))
        for b in platelet_boxes
        if b[2] > b[0] + 1 and b[3] > b[1] + 1
    ]
    return image, objects


def _touches_edge(box: Box, size: tuple[int, int]) -> bool:
    return box[0] <= 0 or box[1] <= 0 or box[2] >= size[0] or box[3] >= size[1]


def voc_xml(filename: str, size: tuple[int, int], objects: Sequence[FieldObject]) -> str:
    """Pascal-VOC XML in BCCD's layout (tabs, 1-based inclusive pixel corners)."""
    lines = [
        "<annotation>",
        "\t<folder>JPEGImages</folder>",
        f"\t<filename>{filename}</filename>",
        f"\t<path>JPEGImages/{filename}</path>",
        "\t<source>",
        "\t\t<database>wbc-edge synthetic phantoms</database>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{size[0]}</width>",
        f"\t\t<height>{size[1]}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        lines += ["\t<object>", f"\t\t<name>{obj.name}</name>"]
        if obj.wbc_class:
            lines.append(f"\t\t<wbc_class>{obj.wbc_class}</wbc_class>")
        lines += [
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{int(obj.truncated)}</truncated>",
            "\t\t<difficult>0</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{x0 + 1}</xmin>",
            f"\t\t\t<ymin>{y0 + 1}</ymin>",
            f"\t\t\t<xmax>{x1}</xmax>",
            f"\t\t\t<ymax>{y1}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def parse_field_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> (640, 480), or a UserError saying the expected form."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--field-size {text!r}: write WIDTHxHEIGHT, e.g. 640x480") from None
    return check_field_size((w, h))


def check_field_size(size: tuple[int, int]) -> tuple[int, int]:
    """Fields must hold a large white cell (a promyelocyte is up to ~270 px across)."""
    if size[0] < 320 or size[1] < 240:
        raise UserError(f"--field-size {size[0]}x{size[1]}: fields must be at least 320x240 pixels")
    return size


def make_fields(
    out: str | Path,
    n: int,
    size: tuple[int, int] = DEFAULT_FIELD_SIZE,
    seed: int = 0,
    difficulty: float = DEFAULT_DIFFICULTY,
    classes: Sequence[str] | None = None,
    px_per_um: float = FIELD_PX_PER_UM,
    show_progress: bool = True,
) -> list[Path]:
    """Write ``n`` fields under ``out/fields/``; returns the image paths in order."""
    difficulty = check_difficulty(difficulty)
    check_classes(classes)
    check_field_size(size)
    if n < 1:
        raise UserError(f"--fields {n}: give at least 1 field")
    if seed < 0:
        raise UserError(f"--seed {seed}: give a seed of 0 or more")
    out = prepare_out(out)
    write_readme(out)
    root = out / "fields"
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(exist_ok=True)
    paths: list[Path] = []
    labels: list[tuple[str, str]] = []
    with progress(transient=not show_progress) as bar:
        task = bar.add_task("phantom fields", total=n, status="", visible=show_progress)
        for i in range(n):
            rng = image_rng(seed, FIELD_PREFIX, i)
            name = f"{FIELD_PREFIX}_{i:05d}"
            image, objects = render_field(rng, size, difficulty, classes, px_per_um)
            path = root / "JPEGImages" / f"{name}.jpg"
            write_jpeg(path, image, rng)
            xml = voc_xml(path.name, size, objects)
            (root / "Annotations" / f"{name}.xml").write_text(xml, encoding="utf-8")
            kinds = dict.fromkeys(o.wbc_class.upper() for o in objects if o.wbc_class)
            labels.append((path.name, ", ".join(kinds)))
            paths.append(path)
            bar.advance(task)
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image", "category"])
        writer.writerows(labels)
    return paths
