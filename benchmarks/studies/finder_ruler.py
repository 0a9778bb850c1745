"""The finder on BCCD with each red-cell ruler: fixed, measured per field, measured per stream.

    python -m wbc_edge.benchmarks.studies.finder_ruler [DATA] [OUT_DIR]

``wbc-edge finder-eval`` scores the finder with the fixed ruler (``FinderParams.rbc_diameter``
x the field's shorter side). ``run --smear`` measures the ruler instead
(:func:`wbc_edge.model.fieldcrop.field_scale`): per field for a folder, once every
``PipelineConfig.ruler_every`` frames for a video or camera (:class:`StreamRuler`). This study
scores the same hand-drawn WBC boxes (IoU >= 0.5, greedy one-to-one, as ``finder-eval``) with
each ruler, and what each costs (CPU of the measuring thread), into
``benchmarks/results/finder-ruler.{md,json}``:

- ``fixed``: the finder-eval protocol;
- ``field, full first pass``: the per-field ruler as it was (first pass on the whole field);
- ``field``: the per-field ruler now (first pass on a 240 px copy);
- ``stream``: the fields in name order as one stream, the ruler measured on one in every
  ``ruler_every`` and reused between.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from wbc_edge.model import scale as scale_mod
from wbc_edge.model.decode import read_image
from wbc_edge.model.fieldcrop import StreamRuler, field_scale
from wbc_edge.model.finder import FinderParams, find_cells
from wbc_edge.records import (
    load_average,
    machine_line,
    markdown_table,
    utc_date,
    write_record,
)
from wbc_edge.runtime.finder_eval import FieldResult, Score, match, read_voc_boxes, voc_fields
from wbc_edge.runtime.options import PipelineConfig

FOV_RBC = 4.83  # the committed student's card: pbc9's crops span 4.83 red cells


def score(fields: list, rulers: list, finds: list[float]) -> dict:
    s = Score()
    for (name, truth, _), ruler, found_s in zip(fields, rulers, finds, strict=True):
        found = ruler["found"]
        s.add(FieldResult(name, truth, found, match(truth, found), found_s))
    return s.as_dict()


def run_variant(fields: list, variant: str, every: int) -> dict:
    base = FinderParams()
    old_side = scale_mod._COARSE_SIDE
    if variant == "field, full first pass":
        scale_mod._COARSE_SIDE = 10**9  # never coarse: the first pass on the whole field
    stream = StreamRuler(every, FOV_RBC) if variant == "stream" else None
    out, finds, ruler_cpu, sources = [], [], 0.0, {}
    try:
        for index, (_, _, image) in enumerate(fields):
            c0 = time.thread_time()
            if variant == "fixed":
                params, rbc = base, base.rbc_px(image.shape)
                sources["fixed"] = sources.get("fixed", 0) + 1
            else:
                fs = stream.scale_for(image, index) if stream else field_scale(image, FOV_RBC)
                params, rbc = replace(base, rbc_diameter_px=fs.rbc_px), fs.rbc_px
                sources[fs.source] = sources.get(fs.source, 0) + 1
            c1 = time.thread_time()
            found = find_cells(image, params)
            c2 = time.thread_time()
            ruler_cpu += c1 - c0
            finds.append(c2 - c1)
            out.append({"found": found, "rbc_px": rbc})
    finally:
        scale_mod._COARSE_SIDE = old_side
    result = score(fields, out, finds)
    result.update(
        variant=variant,
        ruler_cpu_ms_per_field=round(1000 * ruler_cpu / len(fields), 3),
        find_cpu_ms_per_field=round(1000 * sum(finds) / len(fields), 3),
        rbc_px_median=round(float(np.median([o["rbc_px"] for o in out])), 2),
        scale_sources=sources,
    )
    result["_rbc"] = [o["rbc_px"] for o in out]
    return result


def main(argv: list[str]) -> int:
    data = Path(argv[0] if argv else "../shared/data/bccd-smears")
    out_dir = Path(argv[1] if len(argv) > 1 else "benchmarks/results")
    every = PipelineConfig().ruler_every
    load_before = load_average()
    pairs = voc_fields(data)
    fields = [(img.name, read_voc_boxes(xml), read_image(str(img))) for img, xml in pairs]
    variants = ["fixed", "field, full first pass", "field", "stream"]
    results = [run_variant(fields, v, every) for v in variants]
    ref = np.asarray(results[1]["_rbc"])
    for r in results:
        rel = np.abs(np.asarray(r.pop("_rbc")) - ref) / ref
        r["rbc_px_vs_full_first_pass"] = {
            "median_rel": round(float(np.median(rel)), 4),
            "p95_rel": round(float(np.percentile(rel, 95)), 4),
            "max_rel": round(float(rel.max()), 4),
        }
    record = {
        "name": "finder-ruler",
        "date": utc_date(),
        "command": "python -m wbc_edge.benchmarks.studies.finder_ruler " + shlex.join(argv),
        "machine": machine_line(),
        "load_avg_1m": [load_before, load_average()],
        "data": str(data),
        "fov_rbc": FOV_RBC,
        "ruler_every": every,
        "results": results,
    }
    rows = [
        [
            r["variant"],
            r["wbc_boxes"],
            r["found"],
            r["matched"],
            f"{r['recall']:.3f}",
            f"{r['precision']:.3f}",
            f"{r['mean_iou']:.3f}",
            f"{r['ruler_cpu_ms_per_field']:.2f}",
            f"{r['find_cpu_ms_per_field']:.2f}",
            r["rbc_px_median"],
            f"{100 * r['rbc_px_vs_full_first_pass']['median_rel']:.1f} / "
            f"{100 * r['rbc_px_vs_full_first_pass']['max_rel']:.1f}",
            ", ".join(f"{k} {v}" for k, v in r["scale_sources"].items()),
        ]
        for r in results
    ]
    md = "\n".join(
        [
            "# finder-ruler: the finder on BCCD with each red-cell ruler",
            "",
            f"- Date: {record['date']}; machine: {record['machine']}; load average "
            f"{load_before} / {record['load_avg_1m'][1]}",
            f"- Command: `{record['command']}`",
            f"- Data: {data} ({len(fields)} fields with VOC boxes); WBC boxes matched at "
            "IoU >= 0.5 (greedy one-to-one, as `wbc-edge finder-eval`)",
            f"- Crops span {FOV_RBC} red cells (the committed student's card); stream: the "
            f"fields in name order as one video, ruler measured on one field in {every}",
            "",
            markdown_table(
                [
                    "ruler",
                    "WBC boxes",
                    "found",
                    "matched",
                    "recall",
                    "precision",
                    "mean IoU",
                    "ruler CPU ms/field",
                    "finder CPU ms/field",
                    "median red cell px",
                    "red cell px vs full first pass, median / max %",
                    "scale source of the fields",
                ],
                rows,
            ),
            "",
        ]
    )
    write_record(out_dir / "finder-ruler", record, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
