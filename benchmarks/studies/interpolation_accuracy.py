"""Accuracy with the card's resize filter switched, on every pbc9 split, paired.

    python -m wbc_edge.benchmarks.studies.interpolation_accuracy OUT MODEL [FILTER ...]

Why: at a 224 px input the area filter of a 360 px crop costs 0.8-1.0 ms of CPU a cell, the
largest cost of the run after the model itself (runtime-throughput.md), against 0.1 ms for
bilinear. The reduced JPEG decode already does any shrink of 2x or more, so what is left for the
filter is under 2x, where bilinear skips no pixel. Whether the model, trained on area-filtered
crops, reads bilinear ones as well is measured here rather than assumed: MODEL is scored through
the deployed path (:func:`wbc_edge.model.labelled.score`, the runtime's decode) with its card
as it is and with each FILTER (default: linear) put into the card, on val, test, val+test and all
3,600 crops, and the predictions that change are counted; the change's 95% interval is the
paired (McNemar) one, as in ``decode_accuracy.py``. Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np

from wbc_edge.benchmarks.studies.decode_accuracy import MANIFEST, SPLITS, compare
from wbc_edge.data.manifest import read_manifest
from wbc_edge.metrics import expected_calibration_error
from wbc_edge.model.model import Model
from wbc_edge.records import load_average, machine_line, markdown_table, utc_date, write_record


def _row(name: str, split: str, r: dict) -> list[str]:
    lo, hi = r["change_ci95_points"]
    return [
        name,
        split,
        str(r["n"]),
        f"{100 * r['full']:.2f}%",
        f"{100 * r['reduced']:.2f}%",
        f"**{r['change_points']:+.2f}**",
        f"{lo:+.2f} .. {hi:+.2f}",
        f"{r['one_image_points']:.2f}",
        str(r["changed"]),
        f"{r['gained']} / {r['lost']}",
        f"{r['ece_full']:.4f} / {r['ece_reduced']:.4f}",
    ]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    stem, model, filters = Path(argv[0]), argv[1], argv[2:] or ["linear"]
    rows = {split: read_manifest(MANIFEST, split) for split in ("train", "val", "test")}
    record: dict = {"date": utc_date(), "load_avg_1m": [load_average()], "manifest": MANIFEST}
    record["command"] = (
        "python -m wbc_edge.benchmarks.studies.interpolation_accuracy " + shlex.join(argv)
    )
    record["machine"] = machine_line()
    record["model"] = model
    record["comparisons"] = {}
    with Model.load(model) as backend:
        card_pre = backend.card.preprocess
        own = card_pre.interpolation
        probs: dict = {}
        for name in [own, *filters]:
            backend.card.preprocess = card_pre.replace(interpolation=name)
            for split, entries in rows.items():
                paths, labels = [str(r.path) for r in entries], [r.label for r in entries]
                p, y = backend.score(paths, labels, MANIFEST, label=f"{name}: {split}")
                probs[split, name], probs[split, "y"] = p, y
        backend.card.preprocess = card_pre
    for name in filters:
        result = {}
        for split, parts in SPLITS.items():
            y = np.concatenate([probs[s, "y"] for s in parts])
            a = np.concatenate([probs[s, own] for s in parts])
            b = np.concatenate([probs[s, name] for s in parts])
            result[split] = compare(y, a, b)
            result[split]["ece_full"] = round(float(expected_calibration_error(a, y)), 5)
            result[split]["ece_reduced"] = round(float(expected_calibration_error(b, y)), 5)
            print(f"{own} -> {name}", split, result[split], flush=True)
        record["comparisons"][f"{own}->{name}"] = result
    record["load_avg_1m"].append(load_average())
    header = [
        "switch",
        "split",
        "images",
        "own",
        "switched",
        "change (points)",
        "95% interval",
        "one image (points)",
        "predictions changed",
        "gained / lost",
        "ECE own / switched",
    ]
    table = [
        _row(name, split, r)
        for name, res in record["comparisons"].items()
        for split, r in res.items()
    ]
    lines = [
        "# Resize filter: the card's own against a cheaper one, paired, on pbc9",
        "",
        f"- Date: {record['date']}; machine: {record['machine']}",
        f"- Command: `{record['command']}`",
        f"- Model: `{model}` (card filter: {own}); decode as `run` decodes (reduced JPEG decode "
        "down to the card's input); all = the 3,600 crops, train included",
        '- Columns "own" and "switched": accuracy with the card\'s filter and with the other '
        "one; the change's 95% interval is the paired (McNemar) one; ECE at the card's "
        "temperature",
        "",
        markdown_table(header, table, "llrrrrrrrll"),
    ]
    write_record(stem, record, "\n".join(lines))
    print(f"wrote {stem}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
