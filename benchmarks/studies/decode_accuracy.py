"""Accuracy with the full decode vs the reduced decode ``run`` uses, on every pbc9 split.

    python -m wbc_edge.benchmarks.studies.decode_accuracy OUT.json MODEL.onnx [MODEL.onnx ...]

Issue 17 bounds the reduced decode's accuracy change at 0.2 points on pbc9 test, where one
image is 0.28 points, so test alone cannot tell a real change from one borderline cell. This
scores each model through :func:`wbc_edge.model.labelled.score` (the deployed path) with
``min_side`` 0 (full decode) and the card's own (the runtime's rule), on val, test, val+test
and all 3,600 crops (train included: the model learnt those, so their accuracy is high, but a
changed prediction there is as informative as anywhere), and counts the predictions that
change. The change's 95% interval is the paired one (McNemar): +-1.96 sqrt(gained + lost) / N.
``runtime_throughput_report.py`` turns OUT.json into the accuracy table.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from pathlib import Path

import numpy as np

from wbc_edge.data.manifest import read_manifest
from wbc_edge.model.decode import model_min_side
from wbc_edge.model.model import Model
from wbc_edge.records import load_average, utc_date

MANIFEST = "benchmarks/results/pbc9-split.csv"
SPLITS = {"val": ("val",), "test": ("test",), "val+test": ("val", "test")}
SPLITS["all"] = ("train", "val", "test")


def compare(y: np.ndarray, full: np.ndarray, reduced: np.ndarray) -> dict:
    pf, pr = full.argmax(1), reduced.argmax(1)
    n = len(y)
    gained = int(((pr == y) & (pf != y)).sum())
    lost = int(((pf == y) & (pr != y)).sum())
    change = 100.0 * (gained - lost) / n
    half = 100.0 * 1.96 * math.sqrt(gained + lost) / n
    return {
        "n": n,
        "full": round(float((pf == y).mean()), 5),
        "reduced": round(float((pr == y).mean()), 5),
        "change_points": round(change, 3),
        "change_ci95_points": [round(change - half, 3), round(change + half, 3)],
        "one_image_points": round(100.0 / n, 3),
        "changed": int((pf != pr).sum()),
        "gained": gained,
        "lost": lost,
    }


def main(argv: list[str]) -> int:
    out, models = Path(argv[0]), argv[1:]
    rows = {split: read_manifest(MANIFEST, split) for split in ("train", "val", "test")}
    record: dict = {"date": utc_date(), "load_avg_1m": [load_average()], "manifest": MANIFEST}
    record["command"] = "python -m wbc_edge.benchmarks.studies.decode_accuracy " + shlex.join(argv)
    record["models"] = {}
    for model in models:
        with Model.load(model) as backend:
            min_side = model_min_side(backend.card.preprocess)
            probs = {}
            for split, entries in rows.items():
                paths, labels = [str(r.path) for r in entries], [r.label for r in entries]
                for name, side in (("full", 0), ("reduced", None)):
                    p, y = backend.score(paths, labels, MANIFEST, min_side=side)
                    probs[split, name] = p
                probs[split, "y"] = y
        result = {"min_side": min_side}
        for name, parts in SPLITS.items():
            y = np.concatenate([probs[s, "y"] for s in parts])
            full = np.concatenate([probs[s, "full"] for s in parts])
            reduced = np.concatenate([probs[s, "reduced"] for s in parts])
            result[name] = compare(y, full, reduced)
            print(Path(model).name, name, result[name], flush=True)
        record["models"][Path(model).name] = result
    record["load_avg_1m"].append(load_average())
    out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
