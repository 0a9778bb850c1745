"""Assemble ``benchmarks/results/runtime-throughput.{md,json}`` from the measurement files.

    python -m wbc_edge.benchmarks.studies.runtime_throughput_report RUNS_DIR SOAK.json \
        ACCURACY.json FINDER_RULER.json OUT [READING.md] [--profiles BEFORE.json AFTER.json]

RUNS_DIR holds the ``bench --stream`` reports that ``runtime_throughput.sh`` wrote
(``crops-int8-1.json``, ``crops-fp32-1.json``, ..., with ``BEFORE_BIN`` also
``crops-before-int8-1.json`` and so on, ``fields-int8.json``, ``video-int8-realtime.json``) and
its ``pause.json`` when a job was paused; SOAK.json is ``soak_watch.py``'s record; ACCURACY.json
``decode_accuracy.py``'s; FINDER_RULER.json ``finder_ruler.py``'s (either may be the section of
an earlier record); the profiles ``stream_profile.py``'s; READING.md, when given, is the written
reading appended at the end. Every figure in the tables comes from those files; the Jetson
estimate is computed here from the after rows' per-stage CPU and the core ratings in
:data:`JETSON`. Paths under the repository are written relative to it. The record is written by
:func:`wbc_edge.records.write_record`.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from wbc_edge.records import markdown_table, write_record

REPO = Path(__file__).resolve().parents[2]
TARGETS = {
    "roof_ratio": 0.9,
    "cpu_ms_per_cell_outside_decode_infer": 0.3,
    "peak_rss_mb": 300,
    "p99_ms": 50,
    "dropped": 0,
}
# The Jetson estimate's inputs. Cores and clocks: NVIDIA's Orin Nano and Orin NX module data
# sheets (JetPack 6.2 "Super" clocks for the Nano). Speed of one Cortex-A78AE core against one
# core of this machine (AMD EPYC 9004, Zen 4, in a VM, about 3.5 GHz), from published
# single-thread SPECint2017 results per GHz (Cortex-A78 about 1.8, Zen 4 about 1.7): about 0.5
# at 1.7 GHz and 0.6 at 2.0 GHz for integer code; the image kernels (libjpeg-turbo's IDCT and
# colour conversion, OpenCV's resize and table lookup) are SIMD, 128-bit NEON against AVX2 and
# AVX-512 here, so the low end of each range assumes a third less. Approximate ratings, not
# measurements: `bench --stream` on the device replaces every number below.
JETSON = {
    "Orin Nano 8GB (6x A78AE, 1.7 GHz)": {"cores": 6, "core_ratio": (0.33, 0.5)},
    "Orin NX 16GB (8x A78AE, 2.0 GHz)": {"cores": 8, "core_ratio": (0.4, 0.6)},
}
WORKERS_CAP = 4  # the pipeline's default decode workers: one per core, at most 4
# The inference thread's own CPU per cell with the network on the GPU (TensorRT): the input's
# copy to the device (0.6 MB a cell at 224 px) and the call. Not measured here; an allowance.
GPU_FEED_MS = 0.1


def load(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    # A section of an earlier runtime-throughput record stands for the study's own file.
    return data


def relative(value: Any) -> Any:
    """``value`` with every path under the repository written relative to it."""
    root = str(REPO) + "/"
    if isinstance(value, str):
        return value.replace(root, "")
    if isinstance(value, list):
        return [relative(v) for v in value]
    if isinstance(value, dict):
        return {k: relative(v) for k, v in value.items()}
    return value


def cpu_ms_per_cell(r: dict[str, Any]) -> float:
    return r["process_cpu_ms_per_item"] * r["items"] / max(1, r["cells"])


def precision(r: dict[str, Any]) -> str:
    return (r.get("infer_rate") or {}).get("precision") or (
        "int8" if ".int8-" in r["model"] else "fp32"
    )


def crops_rows(runs: list[dict[str, Any]]) -> list[str]:
    header = ["run", "code", "cells/s", "decode limit img/s", "inference b32 img/s"]
    header += ["serial roof items/s", "end to end / roof", "CPU ms/cell outside decode+infer"]
    header += ["process CPU ms/cell", "p50 / p99 ms", "peak RSS MB", "load 1m before / after"]
    rows = []
    for r in runs:
        lat = r["latency_ms"]
        rows.append(
            [r["_name"], "before" if "-before-" in r["_name"] else "after"]
            + [f"**{r['cells_per_s']:.0f}**", f"{r['decode_limit']['images_per_s']:.0f}"]
            + [f"{r['infer_rate']['images_per_s']:.0f}", f"{r['serial_roof_items_per_s']:.0f}"]
            + [f"**{r['roof_ratio']:.2f}**"]
            + [f"**{r['cpu_ms_per_cell_outside_decode_infer']:.3f}**"]
            + [f"{cpu_ms_per_cell(r):.3f}", f"{lat['p50']:.0f} / {lat['p99']:.0f}"]
            + [f"{r['peak_rss_mb']:.0f}", f"{r['load_avg_1m'][0]} / {r['load_avg_1m'][1]}"]
        )
    return markdown_table(header, rows, align="llrrrrrrrlrl").splitlines()


def stage_rows(runs: list[dict[str, Any]]) -> list[str]:
    stages = list(runs[0]["stages"])
    rows = [
        [r["_name"], *(f"{r['stages'][s]['cpu_ms_per_cell']:.3f}" for s in stages)]
        + [f"{r.get('cpu_ms_per_cell_outside_decode_infer', 0):.3f}"]
        + [f"{cpu_ms_per_cell(r):.3f}"]
        for r in runs
    ]
    header = ["run", *stages, "outside decode+infer", "process total"]
    return markdown_table(header, rows, align="l" + "r" * (len(stages) + 2)).splitlines()


def medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per code (before/after) and precision: the median of each headline figure."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        code = "before" if "-before-" in r["_name"] else "after"
        groups.setdefault(f"{code} {precision(r)}", []).append(r)
    out = {}
    for key, rs in sorted(groups.items()):
        out[key] = {
            "runs": len(rs),
            "cells_per_s": statistics.median(r["cells_per_s"] for r in rs),
            "roof_ratio": statistics.median(r["roof_ratio"] for r in rs),
            "outside_ms": statistics.median(r["cpu_ms_per_cell_outside_decode_infer"] for r in rs),
            "process_ms": statistics.median(cpu_ms_per_cell(r) for r in rs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
            **{
                f"{s}_ms": statistics.median(r["stages"][s]["cpu_ms_per_cell"] for r in rs)
                for s in ("read", "decode", "preprocess", "infer", "archive", "write")
            },
        }
    return out


def median_run(runs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """A run made of the medians of ``runs``' CPU per cell, stage by stage and in all."""
    stages = {
        s: {"cpu_ms_per_cell": statistics.median(r["stages"][s]["cpu_ms_per_cell"] for r in runs)}
        for s in runs[0]["stages"]
    }
    process = statistics.median(cpu_ms_per_cell(r) for r in runs)
    return {"_name": name, "stages": stages, "process_cpu_ms_per_item": process, "items": 1}


def jetson_estimate(r: dict[str, Any]) -> dict[str, Any]:
    """Cells/s on each Jetson from one after run's CPU ms per cell by stage, the network on the
    GPU: the least of the decode workers' bound (decode + preprocess, on at most
    :data:`WORKERS_CAP` threads), the capture thread's (read), the output thread's (archive +
    write) and all the cores' (every stage but the x86 inference, plus the GPU feed and the
    threads' own overhead)."""
    st = {k: v["cpu_ms_per_cell"] for k, v in r["stages"].items()}
    r = {**r, "cells": r.get("cells", 1)}
    overhead = max(0.0, cpu_ms_per_cell(r) - sum(st.values()))  # queues, threads, Python
    host = sum(v for k, v in st.items() if k != "infer") + overhead
    out = {}
    for name, spec in JETSON.items():
        rows = {}
        for ratio in spec["core_ratio"]:
            workers = min(spec["cores"], WORKERS_CAP)
            bounds = {
                f"decode workers ({workers} threads: decode + preprocess)": workers
                * 1000
                / ((st["decode"] + st["preprocess"] + st["find"]) / ratio),
                "capture thread (read)": 1000 / (st["read"] / ratio),
                "output thread (archive + write)": 1000 / ((st["archive"] + st["write"]) / ratio),
                # The stages that are Python through and through, under the one GIL whatever
                # the number of cores (decode and preprocess are mostly OpenCV without it).
                "one GIL (read, archive, write, queues)": 1000
                / ((st["read"] + st["archive"] + st["write"] + overhead) / ratio),
                f"all {spec['cores']} cores": spec["cores"] * 1000 / (host / ratio + GPU_FEED_MS),
            }
            limit = min(bounds, key=bounds.get)
            rows[str(ratio)] = {
                "cells_per_s": round(bounds[limit]),
                "limit": limit,
                "bounds": {k: round(v) for k, v in bounds.items()},
                # --workers cores-1: the decode bound moves, every other bound stays.
                "uncapped_workers_cells_per_s": round(
                    min(
                        *(v for k, v in bounds.items() if not k.startswith("decode workers")),
                        (spec["cores"] - 1)
                        * 1000
                        / ((st["decode"] + st["preprocess"] + st["find"]) / ratio),
                    )
                ),
            }
        out[name] = rows
    return {"from_run": r["_name"], "gpu_feed_ms": GPU_FEED_MS, "devices": out}


def main(argv: list[str]) -> int:
    profiles: list[Path] = []
    if "--profiles" in argv:
        i = argv.index("--profiles")
        profiles, argv = [Path(a) for a in argv[i + 1 : i + 3]], argv[:i] + argv[i + 3 :]
    runs_dir, soak_path, acc_path, ruler_path, out = (Path(a) for a in argv[:5])
    runs = {}
    for path in sorted(runs_dir.glob("*.json")):
        r = json.loads(path.read_text())
        if r.get("kind") == "stream" and "cpu_ratio" in r:
            r["_name"] = path.stem
            runs[path.stem] = r
    crops = [r for n, r in runs.items() if n.startswith("crops-")]
    after = [r for r in crops if "-before-" not in r["_name"]]
    fields_runs = [r for n, r in runs.items() if n.startswith("fields-")]
    video_runs = [r for n, r in runs.items() if n.startswith("video-")]
    soak = load(soak_path)
    acc = load(acc_path)
    ruler = load(ruler_path)
    pause = load(runs_dir / "pause.json")
    prof = [load(p) for p in profiles]
    first = next(iter(runs.values()))
    machine = first["machine"]
    loads = [v for r in runs.values() for v in r["load_avg_1m"]]
    summary = medians(crops)
    int8_after = [r for r in after if precision(r) == "int8"] or after
    basis = median_run(int8_after, "the after INT8 rows' medians") if int8_after else None
    jetson = jetson_estimate(basis) if basis else None

    lines = [
        "# runtime-throughput: `wbc-edge bench --stream` against its serial roof",
        "",
        f"- Date: {first['date']}; machine: {machine['cpu']} (Zen 4, family 25 model 17), "
        f"{machine['cpu_cores']} cores, {machine['memory_gb']} GB, no GPU",
        (
            f"- **The two cores were shared** with a training run and other engineers' test "
            f"runs the whole time (1-minute load average {min(loads)} to {max(loads)} across "
            "these runs; each row has its own): wall-clock rates are not quiet-core rates. The "
            "per-stage CPU figures (each stage's own thread CPU clock) and the ratios of rates "
            "measured in the same run move less with the load; rows of one code measured "
            "minutes apart still differ by 10-20%."
            if max(loads) > 3
            else f"- Measured after the machine's training run had ended: 1-minute load average "
            f"{min(loads)} to {max(loads)} across these runs, their own work included (each row "
            "has its own); other engineers' short test runs may have overlapped some rows, so "
            "rows of one code still differ by 10-20%."
        ),
        *(
            [
                f"- Pause: pid {pause['pid']} stopped {pause['stopped']} - continued "
                f"{pause['continued']} UTC ({pause['seconds']} s)"
            ]
            if pause
            else ["- No job was paused."]
        ),
        f"- Software: Python {machine['python']}; "
        + ", ".join(f"{k} {v}" for k, v in sorted(machine["libraries"].items())),
        "- Commands: `BEFORE_BIN=<wbc-edge of 7af8b45> benchmarks/studies/runtime_throughput.sh "
        "OUT runs/i31/models/student-tinyresnet_xs_wide.int8-cpu.onnx "
        "runs/i31/models/student-tinyresnet_xs_wide.onnx runs/i31/bccd-30fps.mp4` (each row one "
        "`wbc-edge bench --stream` process, its command in the JSON; a before row runs the "
        "runtime of 7af8b45, the commit before this work, under this tree's bench harness, "
        "right before the after row with the same model), `benchmarks/studies/soak_watch.py`, "
        "`benchmarks/studies/stream_profile.py`, this page by "
        "`benchmarks/studies/runtime_throughput_report.py`",
        "- Models: the packaged student `wbc_edge/models/student-tinyresnet_xs_wide.onnx` "
        "(224 px, linear resize) and its CPU INT8 export (`wbc-edge export int8 --target cpu "
        "--calib benchmarks/results/pbc9-split.csv --num 256`: val 97.22% FP32, 96.94% INT8, "
        "top-1 agreement 99.72%)",
        "- Serial roof: 1 / (1/decode limit + 1/inference rate): the decode limit is the same "
        "files read and decoded by the same function on the same 2 worker threads, nothing "
        "else; the inference rate is the same backend on 32 of the same crops at batch 32; "
        "both measured in the same `bench --stream` process right after the run. CPU outside "
        "decode and inference: the run's process CPU per cell less the decode and infer "
        "stages' thread CPU per cell.",
        "",
        "## Folder of crops: pbc9, 3,600 JPEGs (360x363), --crops, 2 workers, batch 16",
        "",
        *crops_rows(crops),
        "",
        "CPU ms per cell by stage (each stage's own thread CPU clock; archive: the cell's image "
        "kept in the sample folder; write: records built and appended; outside decode+infer "
        "includes the threads and queues between the stages):",
        "",
        *stage_rows(crops + fields_runs),
        "",
        "Medians per code and precision:",
        "",
        markdown_table(
            ["code", "runs", "cells/s", "end to end / roof", "outside decode+infer ms"]
            + ["read", "preprocess", "archive", "write", "decode", "infer", "process ms"]
            + ["peak RSS MB"],
            [
                [k, v["runs"], f"{v['cells_per_s']:.0f}", f"**{v['roof_ratio']:.2f}**"]
                + [f"**{v['outside_ms']:.3f}**"]
                + [f"{v[f'{s}_ms']:.3f}" for s in ("read", "preprocess", "archive", "write")]
                + [f"{v['decode_ms']:.3f}", f"{v['infer_ms']:.3f}", f"{v['process_ms']:.3f}"]
                + [f"{v['peak_rss_mb']:.0f}"]
                for k, v in summary.items()
            ],
            align="lrrrrrrrrrrrr",
        ),
        "",
    ]
    q_rows = []
    for r in after:
        q = r.get("int8_vs_fp32") or {}
        if "other" in q:
            a, b = q["model"], q["other"]
            q_rows.append(
                [r["_name"], q["cpu_support"]]
                + [f"{a['precision'].upper()} {a['ms_per_image']:.3f}"]
                + [f"{b['precision'].upper()} {b['ms_per_image']:.3f}"]
                + [f"**{q['faster'].upper()}**", f"{r['load_avg_1m'][0]}"]
            )
    if q_rows:
        lines += [
            "## INT8 or FP32 on this CPU (the inference rate at batch 32, both in each bench)",
            "",
            markdown_table(
                ["run", "CPU's 8-bit arithmetic", "this model ms/img", "other export ms/img"]
                + ["faster", "load 1m"],
                q_rows,
                align="llrrll",
            ),
            "",
        ]
    if len(prof) == 2 and all(prof):
        lines += ["## Where the CPU went: py-spy (`stream_profile.py`), pipeline threads", ""]
        for label, pr in zip(("before (7af8b45)", "after"), prof, strict=True):
            assert pr is not None
            lines += [
                f"{label}: {pr['working_samples']} working samples at {pr['rate_hz']} Hz "
                f"({pr['waiting_samples']} waiting left out), load {pr['load_avg_1m']}; "
                f"{pr['run']}. Self (innermost Python frame; a C call counts in its caller):",
                "",
                markdown_table(
                    ["%", "function"],
                    [[f"{v:.1f}", f"`{f}`"] for f, v in pr["self_percent"][:12]],
                    align="rl",
                ),
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

    if jetson:
        j_rows = []
        for name, by_ratio in jetson["devices"].items():
            for ratio, e in by_ratio.items():
                j_rows.append(
                    [name, ratio, f"**{e['cells_per_s']:,}**", e["limit"]]
                    + [f"{e['uncapped_workers_cells_per_s']:,}"]
                )
        src = basis
        assert src is not None
        st = {k: v["cpu_ms_per_cell"] for k, v in src["stages"].items()}
        lines += [
            "## A Jetson on paper: the network on the GPU, the rest on the ARM cores",
            "",
            f"From {jetson['from_run']} (CPU ms per cell here: read {st['read']:.3f}, decode "
            f"{st['decode']:.3f}, preprocess {st['preprocess']:.3f}, archive "
            f"{st['archive']:.3f}, write {st['write']:.3f}, threads and queues "
            f"{max(0.0, src['process_cpu_ms_per_item'] - sum(st.values())):.3f}), each divided "
            "by one "
            "Cortex-A78AE core's speed against one core here (the two ends of the range below "
            "`JETSON` in the report script explains), plus "
            f"{jetson['gpu_feed_ms']} ms a cell for feeding the GPU. Each stage's bound: the "
            f"decode workers (one per core, at most {WORKERS_CAP}, decode and preprocess), the "
            "capture thread (read), the output thread (archive, write), the Python stages "
            "together under one GIL (read, archive, write and the threads' own work) and all "
            "the cores together; the least is the estimate and names the stage that limits.",
            "",
            markdown_table(
                ["device", "core speed vs here", "cells/s", "limited by"]
                + ["with workers = cores - 1 (`--workers`)"],
                j_rows,
                align="lrrlr",
            ),
            "",
            "The network itself: 0.068 GMAC per 224 px image (0.6 M parameters); TensorRT INT8 "
            "on the Orin GPU should run it at several thousand images/s, which would leave the "
            "CPU stages as the limit, but that rate is not measured here. `bench --stream` on "
            "the device (with the `.engine`) replaces this whole table.",
            "",
        ]

    lines += ["## Against the targets", ""]
    for key, v in summary.items():
        if not key.startswith("after"):
            continue
        lines.append(
            f"- {key}: end to end {v['roof_ratio']:.2f} of the serial roof (target >= "
            f"{TARGETS['roof_ratio']}), {v['outside_ms']:.3f} ms CPU per cell outside decode "
            f"and inference (target <= {TARGETS['cpu_ms_per_cell_outside_decode_infer']}), "
            f"peak RSS {v['peak_rss_mb']:.0f} MB (target <= {TARGETS['peak_rss_mb']})"
        )
    if soak:
        lines.append(f"- soak peak RSS {soak['rss_mb']['peak']} MB")
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
        "cores_shared": True,
        "targets": TARGETS,
        "medians": summary,
        "jetson_estimate": jetson,
        "jetson_inputs": {"devices": JETSON, "workers_cap": WORKERS_CAP},
        "profiles": {"before": prof[0], "after": prof[1]} if len(prof) == 2 else None,
        "runs": {n: {k: v for k, v in r.items() if k != "machine"} for n, r in runs.items()},
        "soak": {k: v for k, v in soak.items() if k not in ("samples", "machine", "run_summary")}
        | {"run_summary": _soak_summary(soak)}
        if soak
        else None,
        "accuracy": acc,
        "finder_ruler": ruler,
        "pause": pause,
    }
    write_record(out / "runtime-throughput", relative(record), relative("\n".join(lines)))
    return 0


def _soak_summary(soak: dict[str, Any]) -> dict[str, Any]:
    keep = ("items", "cells", "errors", "cells_per_s", "latency_ms_p99", "workers", "stages")
    return {k: v for k, v in soak.get("run_summary", {}).items() if k in keep}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
