"""Assemble ``benchmarks/results/runtime-throughput.{md,json}`` from the measurement files.

    python -m wbc_edge.benchmarks.studies.runtime_throughput_report RUNS_DIR SOAK.json \
        ACCURACY.json FINDER_RULER.json OUT [READING.md]

RUNS_DIR holds the ``bench --stream`` reports that ``runtime_throughput.sh`` wrote
(``crops-int8-1.json``, ``crops-fp32-1.json``, ..., ``fields-int8.json``,
``video-int8-realtime.json``; with ``TAG=224px``, ``crops-224px-int8-1.json`` and so on: several
models' sets in one folder) and its ``pause.json`` (when the lead's job was stopped, the load
average before and after); SOAK.json is ``soak_watch.py``'s record; ACCURACY.json
``decode_accuracy.py``'s; FINDER_RULER.json ``finder_ruler.py``'s; READING.md, when given, is
the written reading appended at the end. Every figure in the tables comes from those files;
the record is written by :func:`wbc_edge.records.write_record`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from wbc_edge.records import markdown_table, write_record

TARGETS = {"cells_per_s": 1500, "limit_ratio": 1.5, "peak_rss_mb": 300, "p99_ms": 50}


def load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def cpu_ms_per_cell(r: dict[str, Any]) -> float:
    return r["process_cpu_ms_per_item"] * r["items"] / max(1, r["cells"])


def projected(r: dict[str, Any], cores: int = 2) -> float:
    """Cells/s if the process had ``cores`` free cores and kept its CPU cost per cell."""
    return 1000.0 * cores / cpu_ms_per_cell(r)


def crops_rows(runs: list[dict[str, Any]]) -> list[str]:
    header = ["model", "run", "cells/s", "decode limit img/s", "limit / e2e"]
    header += ["CPU per cell / decode limit's", "decode+preprocess limit img/s", "p50 / p99 ms"]
    header += ["CPU ms/cell", "projected cells/s, 2 free cores", "peak RSS MB"]
    header += ["load 1m before / after"]
    rows = []
    for r in runs:
        lat = r["latency_ms"]
        pre = r["decode_preprocess_limit"] or {}
        rows.append(
            [Path(r["model"]).name, r["_name"], f"**{r['cells_per_s']:.0f}**"]
            + [f"{r['decode_limit']['images_per_s']:.0f}", f"{r['limit_ratio']:.2f}x"]
            + [f"**{r['cpu_ratio']:.2f}x**"]
            + [f"{pre.get('images_per_s', 0):.0f}", f"{lat['p50']:.0f} / {lat['p99']:.0f}"]
            + [f"{cpu_ms_per_cell(r):.3f}", f"{projected(r):.0f}", f"{r['peak_rss_mb']:.0f}"]
            + [f"{r['load_avg_1m'][0]} / {r['load_avg_1m'][1]}"]
        )
    return markdown_table(header, rows, align="llrrrrrlrrrl").splitlines()


def stage_rows(runs: list[dict[str, Any]]) -> list[str]:
    stages = list(runs[0]["stages"])
    rows = [
        [r["_name"], *(f"{r['stages'][s]['cpu_ms_per_cell']:.3f}" for s in stages)]
        + [f"{cpu_ms_per_cell(r):.3f}"]
        for r in runs
    ]
    header = ["run", *stages, "process total"]
    return markdown_table(header, rows, align="l" + "r" * (len(stages) + 1)).splitlines()


def main(argv: list[str]) -> int:
    runs_dir, soak_path, acc_path, ruler_path, out = (Path(a) for a in argv[:5])
    runs = {}
    for path in sorted(runs_dir.glob("*.json")):
        r = json.loads(path.read_text())
        if r.get("kind") == "stream" and "cpu_ratio" in r:
            r["_name"] = path.stem
            runs[path.stem] = r
    crops = [r for n, r in runs.items() if n.startswith("crops-")]
    # Names a run set gives its runs: crops-*, fields-*, video-* (one set per model, e.g.
    # "crops-224px-int8-1", "fields-128px-int8").
    fields_runs = [r for n, r in runs.items() if n.startswith("fields-")]
    video_runs = [r for n, r in runs.items() if n.startswith("video-")]
    soak = load(soak_path)
    acc = load(acc_path)
    ruler = load(ruler_path)
    pause = load(runs_dir / "pause.json")
    first = next(iter(runs.values()))
    machine = first["machine"]

    lines = [
        "# runtime-throughput: `wbc-edge run` end to end, beside its decode limit",
        "",
        f"- Date: {first['date']}; machine: {machine['cpu']}, {machine['cpu_cores']} cores, "
        f"{machine['memory_gb']} GB, no GPU; "
        + (
            "shared with other engineers' jobs (the lead's training run was paused with SIGSTOP "
            "for the stream measurements only; the load average of each run is in its row)"
            if pause
            else "no job was paused (the load average of each run is in its row)"
        ),
        *(
            [
                f"- Pause: pid {pause['pid']} stopped {pause['stopped']} - continued "
                f"{pause['continued']} UTC ({pause['seconds']} s); load average (1/5/15 min) "
                f"{pause['load_before']} before, {pause['load_after']} after"
            ]
            if pause
            else []
        ),
        f"- Software: Python {machine['python']}; "
        + ", ".join(f"{k} {v}" for k, v in sorted(machine["libraries"].items())),
        "- Commands: `benchmarks/studies/runtime_throughput.sh` (each row one `wbc-edge bench "
        "--stream` process, its command in the JSON), `benchmarks/studies/soak_watch.py`, this "
        "table by `benchmarks/studies/runtime_throughput_report.py`",
        "- Decode: `runtime.decode.decode_image` at the card's input size: a 360x363 PBC crop "
        "decodes at 1/2 scale (180x182) for a 128 px model and in full for a 224 px one (1/2 "
        "would be below its input); smear fields decode in full",
        "- Decode limit: the same files read and decoded by the same function at the same scale "
        "on the same number of worker threads (2 = the cores), nothing else; the "
        "decode+preprocess limit adds the card's resize and normalisation",
        "",
        "## Folder of crops: pbc9, 3,600 JPEGs, --crops, 2 decode workers, batch 16",
        "",
        *crops_rows(crops),
        "",
        "CPU per cell / decode limit's: the run's process CPU per cell over the decode limit's "
        "CPU per image (same files, same threads): the ratio the two rates have on free cores, "
        "and one the load barely moves, unlike limit / e2e, whose two rates are measured one "
        "after the other under whatever load there is.",
        "",
        "CPU ms per cell by stage (each stage's own thread CPU clock; archive: the cell's image "
        "kept in the sample folder; the rest of the process total is queues, threads and "
        "Python):",
        "",
        *stage_rows(crops + fields_runs),
        "",
    ]
    if fields_runs:
        lines += [
            "## Smear fields with the finder: bccd-smears, 249 fields of 640x480, --smear",
            "",
            markdown_table(
                ["model", "fields/s", "cells/s", "cells", "find ms/field (CPU)", "p50 / p99 ms"]
                + ["decode limit fields/s", "peak RSS MB", "load 1m before / after"],
                [
                    [Path(fields["model"]).name]
                    + [f"**{fields['items_per_s']:.1f}**", f"**{fields['cells_per_s']:.1f}**"]
                    + [fields["cells"]]
                    + [
                        f"{find['ms_per_item']:.2f} "
                        f"({1000 * find['cpu_s'] / max(1, fields['items']):.2f})"
                    ]
                    + [f"{lat['p50']:.0f} / {lat['p99']:.0f}"]
                    + [f"{fields['decode_limit']['images_per_s']:.0f}"]
                    + [f"{fields['peak_rss_mb']:.0f}"]
                    + [f"{fields['load_avg_1m'][0]} / {fields['load_avg_1m'][1]}"]
                    for fields in fields_runs
                    for lat, find in [(fields["latency_ms"], fields["stages"]["find"])]
                ],
                align="lrrrllrrl",
            ),
            "",
        ]
    if video_runs:
        lines += [
            "## Camera-like: a 30 frames/s video of BCCD fields with --realtime --smear",
            "",
            markdown_table(
                ["model", "frames", "cells", "dropped"]
                + ["p50 / p95 / p99 / max ms, frame -> record"]
                + ["frames/s", "video decode limit frames/s", "peak RSS MB"]
                + ["load 1m before / after"],
                [
                    [Path(video["model"]).name, video["items"], video["cells"]]
                    + [f"**{video['dropped']}**"]
                    + [
                        f"{lat['p50']:.1f} / {lat['p95']:.1f} / **{lat['p99']:.1f}** / "
                        f"{lat['max']:.1f}"
                    ]
                    + [f"{video['items_per_s']:.1f}"]
                    + [f"{video['decode_limit']['images_per_s']:.0f}"]
                    + [f"{video['peak_rss_mb']:.0f}"]
                    + [f"{video['load_avg_1m'][0]} / {video['load_avg_1m'][1]}"]
                    for video in video_runs
                    for lat in [video["latency_ms"]]
                ],
                align="lrrrlrrrl",
            ),
            "",
            "Latency starts before the video frame is decoded and ends when its records are "
            "written. Inference never waits for a batch to fill (it takes what is waiting), so "
            "no frame waits for a later one.",
            "",
        ]
    if soak:
        rss = soak["rss_mb"]
        slope = soak["slope_mb_per_1000_images_second_half"]
        lines += [
            f"## Soak: {soak['images']:,} images through `--watch`, RSS every second",
            "",
            "![RSS during the soak](runtime-soak.png) (`runtime-soak.json`: every sample)",
            "",
            f"- {soak['images']:,} crops (pbc9 cycled under new names, written at "
            f"{soak['rate_per_s']:g}/s, atomically renamed, 1,000 per sub-folder) in "
            f"{soak['seconds']:.0f} s; run: `{soak['run_command']}`",
            f"- RSS: {rss['first']} MB at the first sample, peak {rss['peak']} MB, last "
            f"{rss['last']} MB; second half (after 5,000 images) median "
            f"{rss['median_second_half']:.1f} MB, slope "
            f"{'n/a' if slope is None else f'{slope:+.2f}'} MB per 1,000 images",
            f"- errors {soak['run_summary']['errors']}, items {soak['run_summary']['items']}; "
            f"load average {soak['load_avg_1m'][0]} / {soak['load_avg_1m'][1]} (not paused)",
            "",
        ]
    if acc:
        acc_rows = []
        for model, res in acc["models"].items():
            for split in ("val", "test", "val+test", "all"):
                x = res[split]
                lo, hi = x["change_ci95_points"]
                acc_rows.append(
                    [
                        model,
                        split,
                        x["n"],
                        f"{100 * x['full']:.2f}%",
                        f"{100 * x['reduced']:.2f}%",
                        f"**{x['change_points']:+.2f}**",
                        f"{lo:+.2f} .. {hi:+.2f}",
                        f"{x['one_image_points']:.2f}",
                        x["changed"],
                        f"{x['gained']} / {x['lost']}",
                    ]
                )
        lines += [
            "## Accuracy: full decode vs the reduced decode (pbc9-split.csv)",
            "",
            f"`{acc['command']}` ({acc['date']}; load {acc['load_avg_1m']}); all = the 3,600 "
            "crops, train included. The interval is the paired (McNemar) 95% one.",
            "",
            markdown_table(
                [
                    "model",
                    "split",
                    "images",
                    "full decode",
                    "reduced decode",
                    "change (points)",
                    "95% interval",
                    "one image (points)",
                    "predictions changed",
                    "gained / lost",
                ],
                acc_rows,
                align="llrrrrrrrl",
            ),
            "",
        ]
    if ruler:
        lines += [
            "## The finder's red-cell ruler on BCCD (finder-ruler.md)",
            "",
            markdown_table(
                ["ruler", "recall", "precision", "mean IoU", "ruler CPU ms/field"],
                [
                    [
                        r["variant"],
                        f"{r['recall']:.3f}",
                        f"{r['precision']:.3f}",
                        f"{r['mean_iou']:.3f}",
                        f"{r['ruler_cpu_ms_per_field']:.2f}",
                    ]
                    for r in ruler["results"]
                ],
                align="lrrrr",
            ),
            "",
        ]

    best = max(crops, key=lambda r: r["cells_per_s"]) if crops else None
    lines += ["## Against the targets", ""]
    if best:
        lines += [
            f"- >= {TARGETS['cells_per_s']:,} cells/s on 2 cores: best measured "
            f"{best['cells_per_s']:.0f} ({best['_name']}); CPU cost "
            f"{cpu_ms_per_cell(best):.3f} ms per cell, which projects to {projected(best):.0f} "
            "cells/s with two free cores",
            f"- within {TARGETS['limit_ratio']}x of the decode limit (CPU per cell over the "
            "limit's; rates in brackets): "
            + ", ".join(
                f"{r['_name']} {r['cpu_ratio']:.2f}x ({r['limit_ratio']:.2f}x)" for r in crops
            ),
            f"- peak RSS <= {TARGETS['peak_rss_mb']} MB: "
            + ", ".join(f"{r['_name']} {r['peak_rss_mb']:.0f} MB" for r in crops)
            + (f"; soak peak {soak['rss_mb']['peak']} MB" if soak else ""),
        ]
    for video in video_runs:
        lines.append(
            f"- video at 30 frames/s with --realtime ({video['_name']}): p99 "
            f"{video['latency_ms']['p99']:.1f} ms (target <= {TARGETS['p99_ms']}), "
            f"{video['dropped']} dropped (target 0)"
        )
    lines.append("")
    if len(argv) > 5:
        lines += ["## Reading", "", Path(argv[5]).read_text().strip(), ""]
    record = {
        "name": "runtime-throughput",
        "date": first["date"],
        "machine": machine,
        "targets": TARGETS,
        "runs": {n: {k: v for k, v in r.items() if k != "machine"} for n, r in runs.items()},
        "soak": {k: v for k, v in soak.items() if k not in ("samples", "machine")}
        if soak
        else None,
        "accuracy": acc,
        "finder_ruler": ruler,
        "pause": pause,
        "projected_cells_per_s_two_free_cores": {r["_name"]: round(projected(r)) for r in crops},
    }
    write_record(out / "runtime-throughput", record, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
