"""Is the cross-lab failure one of scale? White-cell size against the red-cell ruler, and zero-shot
field types with crops cut to the training crops' white-cell share (issue 11).

    python benchmarks/studies/crop_share.py MODEL [MODEL ...] [--out benchmarks/results/crop-share]

The finder's box of the central white cell over the field's measured red-cell diameter, on 150
PBC train crops and on the BCCD adapt + val fields (never the eval fields), says whether BCCD's
white cells look smaller next to their red cells than PBC's. Each model then types the same
non-eval fields with crops cut three ways: the card's red-cell field of view (what ``run
--smear`` does), that view x 0.83 (BCCD's size ratio against PBC's), and a side of box / (PBC's
median box-to-crop share), so every white cell fills the crop as a PBC one does.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from wbc_edge.data.manifest import read_manifest
from wbc_edge.kd.fields import field_metrics, field_types, read_field_split
from wbc_edge.model.decode import read_image
from wbc_edge.model.fieldcrop import crop_cell, field_scale
from wbc_edge.model.finder import FinderParams, background_colour, find_cells
from wbc_edge.model.model import Model
from wbc_edge.model.scale import red_cell_diameter
from wbc_edge.records import load_average, machine_line, markdown_table, utc_date, write_record

FIELDS = Path("../shared/data/bccd-smears")
SPLIT = Path("benchmarks/results/bccd-split.csv")
PBC = Path("benchmarks/results/pbc9-split.csv")


def pbc_share(n: int = 150) -> dict[str, float]:
    """Median box / red-cell diameter and box / crop side of the central cell of PBC crops."""
    rows = read_manifest(PBC, "train")
    pick = np.random.default_rng(0).choice(len(rows), n, replace=False)
    to_rbc, to_crop = [], []
    for i in pick:
        image = read_image(str(rows[i].path))
        d = red_cell_diameter(image).diameter_px
        boxes = find_cells(image, replace(FinderParams(), rbc_diameter_px=d)) if d else []
        if not boxes:
            continue
        h, w = image.shape[:2]
        b = min(boxes, key=lambda b: ((b.x1 + b.x2 - w) / 2) ** 2 + ((b.y1 + b.y2 - h) / 2) ** 2)
        to_rbc.append(max(b.width, b.height) / d)
        to_crop.append(max(b.width, b.height) / w)
    return {"crops": len(to_rbc), "box_to_rbc": float(np.median(to_rbc)),
            "box_to_crop": float(np.median(to_crop))}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--out", default="benchmarks/results/crop-share")
    args = ap.parse_args()
    command = shlex.join(["python", "benchmarks/studies/crop_share.py", *sys.argv[1:]])
    load = load_average()
    pbc = pbc_share()
    fields = [r for r in read_field_split(SPLIT) if r[2] in ("adapt", "val")]
    truth = {name: kind for name, kind, _ in fields}
    images = {n: read_image(str(FIELDS / "JPEGImages" / n)) for n in truth}
    found, ratios = {}, []
    for n, image in images.items():
        sc = field_scale(image, 4.83)
        boxes = find_cells(image, replace(FinderParams(), rbc_diameter_px=sc.rbc_px))
        found[n] = (sc, boxes, background_colour(image))
        if boxes and sc.source == "measured":
            b = max(boxes, key=lambda b: b.score)
            ratios.append(max(b.width, b.height) / sc.rbc_px)
    bccd_ratio = float(np.median(ratios))
    options = {
        "card's field of view (4.83 red cells)": lambda sc, b: sc.crop_px,
        f"field of view x {bccd_ratio / pbc['box_to_rbc']:.2f} (BCCD/PBC size ratio)": (
            lambda sc, b: sc.crop_px * bccd_ratio / pbc["box_to_rbc"]
        ),
        f"box / {pbc['box_to_crop']:.2f} (PBC's white-cell share of the crop)": (
            lambda sc, b: max(b.width, b.height) / pbc["box_to_crop"]
        ),
    }
    rows = []
    for model in args.models:
        with Model.load(model) as m:
            card = m.card
            if card.preprocess.crop_scale is not None:  # the card's own field of view
                fov = card.preprocess.crop_scale.fov_rbc
                options_now = {k.replace("4.83", f"{fov:.2f}"): v for k, v in options.items()}
            else:
                options_now = options
            thr = m.threshold
            for name, side in options_now.items():
                probs = {}
                for n, (sc, boxes, fill) in found.items():
                    crops = [crop_cell(images[n], b, side=side(sc, b), fill=fill) for b in boxes]
                    probs[n] = m.probs(crops)
                m = field_metrics(truth, field_types(probs, card.class_names, thr))
                rows.append({"model": model, "crops": name, "fields": m["fields"],
                             "field_accuracy": m["field_accuracy"],
                             "macro_recall_NELM": m["macro_recall_NELM"]})  # fmt: skip
    data = {
        "date": utc_date(),
        "command": command,
        "machine": machine_line(),
        "load_average": load,
        "pbc": pbc,
        "bccd": {"fields": len(ratios), "box_to_rbc": bccd_ratio},
        "rows": rows,
    }
    md = "\n".join(
        [
            "# Cross-lab: is it scale? White-cell size against the red-cell ruler (issue 11)",
            "",
            f"- date: {data['date']}; machine: {data['machine']}; load average {load}",
            f"- command: `{command}`",
            "- fields: the BCCD adapt and val pools of `benchmarks/results/bccd-split.csv` "
            "(never the eval fields); a field's type is the dominant class of its counted cells",
            "",
            f"White-cell box over red-cell diameter: PBC train crops {pbc['box_to_rbc']:.2f} "
            f"(median of {pbc['crops']}; the box is {pbc['box_to_crop']:.2f} of the crop side), "
            f"BCCD fields {bccd_ratio:.2f} (median of {len(ratios)} fields with a measured "
            "ruler): next to their red cells BCCD's white cells look "
            f"{100 * (1 - bccd_ratio / pbc['box_to_rbc']):.0f}% smaller.",
            "",
            markdown_table(
                ["model", "crops", "fields", "field-type accuracy", "macro recall N/E/L/M"],
                [
                    [
                        f"`{r['model']}`",
                        r["crops"],
                        r["fields"],
                        f"{100 * r['field_accuracy']:.1f}%",
                        f"{r['macro_recall_NELM']:.3f}",
                    ]
                    for r in rows
                ],  # fmt: skip
            ),
        ]
    )
    paths = write_record(args.out, data, md + "\n")
    print("wrote " + " and ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
