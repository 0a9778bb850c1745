"""The distillation ablation: every method x seed, one table of mean +- std.

Each run is a ``wbc-edge distill`` subprocess with its own run folder, so a crash or an
interruption loses one run at most: a rerun skips finished runs (``summary.json``) and resumes
unfinished ones. The teacher cache is built once, before any run starts, and every run reads it.
``parallel`` > 1 runs that many side by side and splits the CPU threads between them.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from wbc_edge.console import console
from wbc_edge.errors import UserError, require_file
from wbc_edge.kd.config import STUDENT_MODEL
from wbc_edge.records import markdown_table, record_header, write_record


def prebuild_teacher_cache(
    data: Path,
    teacher: Path,
    methods: list[str],
    student: str,
    cache_dir: Path | None,
    size: int | None = None,
) -> None:
    """Build the teacher cache each method will ask for, once, before the runs start."""
    from wbc_edge.data.manifest import class_names, read_manifest
    from wbc_edge.kd.checkpoint import read_checkpoint
    from wbc_edge.kd.config import TrainConfig
    from wbc_edge.kd.data import decode_cached
    from wbc_edge.kd.run_setup import build_for_config, run_preprocess
    from wbc_edge.kd.run_teachers import _teacher_cache
    from wbc_edge.model.card import ModelCard

    rows = read_manifest(data)
    train_rows = [r for r in rows if r.split == "train"]
    teacher_pre = ModelCard.from_dict(read_checkpoint(teacher)["card"]).preprocess
    done: set[str] = set()
    for method in methods:
        cfg = TrainConfig(
            data=str(data),
            model=student,
            teacher=str(teacher),
            method=method,
            size=size,
            cache_dir=str(cache_dir) if cache_dir else None,
        )
        distiller, card = build_for_config(cfg, len(class_names(rows)))
        if not distiller.needs_teacher:
            continue
        pre = run_preprocess(cfg, card)
        images = decode_cached(train_rows, pre, cache_dir)
        # The trainer's own call: the teacher sees its card's preprocessing, the student its own.
        cache = _teacher_cache(cfg, distiller, train_rows, teacher_pre, pre, images)
        if str(cache.folder) not in done:
            console.print(f"teacher cache for {method}: {cache.folder}", highlight=False)
            done.add(str(cache.folder))


def run_ablation(
    data: Path,
    teacher: Path,
    methods: list[str],
    seeds: list[int],
    student: str = STUDENT_MODEL,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    out: Path = Path("benchmarks/results/kd-ablation"),
    runs_dir: Path = Path("runs/ablation"),
    parallel: int = 1,
    cache_dir: Path | None = None,
    threads: int | None = None,
    report_only: bool = False,
    size: int | None = None,
    teacher_views: str | None = None,
    keep: str | None = None,
    init: Path | None = None,
    augment: str | None = None,
) -> dict[str, Any]:
    """Train all runs, then write ``out``.md and ``out``.json; returns the JSON payload.

    ``report_only`` writes the table from the runs finished so far and trains nothing (for a
    deadline: an unfinished ablation still reports what it has, with its run count per method).
    """
    from wbc_edge.kd.distillers import DISTILLERS

    require_file(data, "manifest", "make one with `wbc-edge data split`")
    require_file(teacher, "teacher checkpoint", "train one with `wbc-edge train-teacher`")
    variants = {spec: parse_variant(spec) for spec in methods}
    unknown = [m for m, _ in variants.values() if m not in DISTILLERS]
    if unknown:
        raise UserError(f"unknown method(s) {unknown}: use {', '.join(DISTILLERS)}")
    if not seeds or parallel < 1:
        raise UserError("give at least one seed and --parallel >= 1")
    command = "wbc-edge " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else ""
    t0 = time.time()
    if not report_only:
        base_methods = list(dict.fromkeys(m for m, _ in variants.values()))
        prebuild_teacher_cache(data, teacher, base_methods, student, cache_dir, size)
    cache_seconds = time.time() - t0

    total_threads = threads or os.cpu_count() or 1
    per_run = max(1, total_threads // parallel)
    jobs = []
    # Seed-major order: if the time runs out, every method has its first seeds done.
    for seed in seeds:
        for spec in methods:
            method, options = variants[spec]
            run = runs_dir / run_name(student, spec, seed)
            if report_only or (run / "summary.json").is_file():
                continue
            argv = [sys.executable, "-c", "from wbc_edge.cli import main; main()", "distill"]
            if (run / "resume.pt").is_file():
                argv += ["--resume", str(run)]
            else:
                argv += [
                    "--data",
                    str(data),
                    "--teacher",
                    str(teacher),
                    "--method",
                    method,
                    "--student",
                    student,
                    "--seed",
                    str(seed),
                    "--out",
                    str(run),
                ]
                argv += ["--epochs", str(epochs)] if epochs else []
                argv += ["--batch-size", str(batch_size)] if batch_size else []
                argv += ["--lr", str(lr)] if lr else []
                argv += ["--size", str(size)] if size else []
                argv += ["--teacher-views", teacher_views] if teacher_views else []
                argv += ["--keep", keep] if keep else []
                argv += ["--init", str(init)] if init else []  # every run starts from it
                argv += ["--augment", augment] if augment else []
                argv += ["--cache-dir", str(cache_dir)] if cache_dir else []
                for key, value in options.items():
                    argv += ["--option", f"{key}={value}"]
            argv += ["--threads", str(per_run)]
            jobs.append((run, argv))
    console.print(
        f"ablation: {len(jobs)} runs to do ({parallel} at a time, {per_run} threads each)",
        highlight=False,
    )
    _run_jobs(jobs, parallel)

    payload = collect(runs_dir, methods, seeds, student)
    payload.update(
        data=str(data),
        **record_header(command),
        teacher=_teacher_summary(teacher),
        teacher_cache_seconds=None if report_only else round(cache_seconds, 1),
        parallel=parallel,
        threads_per_run=per_run,
        total_wall_seconds=None if report_only else round(time.time() - t0, 1),
    )
    write_record(out, payload, markdown(payload))
    console.print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return payload


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``"at@at_weight=1+p=3"`` -> ``("at", {"at_weight": 1, "p": 3})``: a method with options,
    so weights can be compared in one ablation (values read as YAML scalars)."""
    from wbc_edge.kd.distillers import parse_options

    method, _, rest = spec.partition("@")
    items = [i for i in rest.split("+") if i]
    return method, parse_options(items, f"method variant {spec!r}:")


def run_name(student: str, spec: str, seed: int) -> str:
    """Run folder of one method (or variant) and seed: ``tinyresnet_xs-at@at_weight=1-s0``."""
    return f"{student}-{spec}-s{seed}"


def _run_jobs(jobs: list[tuple[Path, list[str]]], parallel: int) -> None:
    running: list[tuple[Path, subprocess.Popen]] = []
    failed = []
    queue = list(jobs)
    while queue or running:
        while queue and len(running) < parallel:
            run, argv = queue.pop(0)
            run.mkdir(parents=True, exist_ok=True)
            log = open(run / "stdout.log", "a")  # noqa: SIM115 (closed with the process)
            console.print(f"start {run.name}", highlight=False)
            running.append((run, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)))
        time.sleep(1.0)
        for item in list(running):
            run, proc = item
            if proc.poll() is not None:
                running.remove(item)
                status = "done" if proc.returncode == 0 else f"FAILED ({proc.returncode})"
                if proc.returncode:
                    failed.append(run.name)
                console.print(f"{status} {run.name}", highlight=False)
    if failed:
        raise UserError(
            f"{len(failed)} run(s) failed ({', '.join(failed)}): see their stdout.log, then "
            "rerun the same command (finished runs are kept)"
        )


def _teacher_summary(teacher: Path) -> dict[str, Any]:
    from wbc_edge.kd.checkpoint import read_checkpoint

    card = read_checkpoint(teacher)["card"]
    return {"path": str(teacher), "architecture": card["architecture"], **card["metrics"]}


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def collect(runs_dir: Path, methods: list[str], seeds: list[int], student: str) -> dict[str, Any]:
    """Read every run's summary.json into per-run rows and per-method mean +- std."""
    runs, table = [], {}
    for method in methods:
        rows = []
        for seed in seeds:
            path = runs_dir / run_name(student, method, seed) / "summary.json"
            if path.is_file():
                rows.append(json.loads(path.read_text()))
        runs += rows
        acc = _mean_std([r["test_accuracy"] for r in rows])
        f1 = _mean_std([r["test_macro_f1"] for r in rows])
        val = _mean_std([r["best_val_accuracy"] for r in rows])
        table[method] = {
            "runs": len(rows),
            "val_accuracy_mean": val[0],
            "val_accuracy_std": val[1],
            "accuracy_mean": acc[0],
            "accuracy_std": acc[1],
            "macro_f1_mean": f1[0],
            "macro_f1_std": f1[1],
            "student_parameters": rows[0]["student_parameters"] if rows else None,
            "extra_parameters": rows[0]["extra_parameters"] if rows else None,
            "epochs": rows[0]["epochs"] if rows else None,
            "wall_seconds_mean": statistics.fmean(r["wall_seconds"] for r in rows)
            if rows
            else None,
        }
    return {"student": student, "seeds": seeds, "methods": table, "runs": runs}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def markdown(p: dict[str, Any]) -> str:
    t = p["teacher"]
    lines = [
        f"# Distillation ablation: {p['student']} on `{p['data']}`",
        "",
        f"- date: {p['date']}",
        f"- machine: {p['machine']}",
        f"- command: `{p['command']}`",
        f"- teacher: {t['architecture']} (`{t['path']}`), test accuracy "
        f"{_pct(t.get('test_accuracy'))}, macro-F1 {_pct(t.get('test_macro_f1'))}",
        f"- seeds: {', '.join(str(s) for s in p['seeds'])}; {p['parallel']} run(s) side by side, "
        f"{p['threads_per_run']} thread(s) each"
        + (
            f"; teacher cache build {p['teacher_cache_seconds']}s; total wall time "
            f"{p['total_wall_seconds'] / 60:.1f} min"
            if p["total_wall_seconds"] is not None
            else "; table written with --report-only from the runs finished"
        ),
        "- validation accuracy of the best validation epoch; accuracy and macro-F1 on the test "
        "split of the epoch each run kept (`--keep`: best = that best epoch, last = the final "
        "epoch; per run below); mean +- sample std over seeds",
        "",
    ]
    header = ["method", "runs", "epochs", "val accuracy (%)", "test accuracy (%)"]
    header += ["test macro-F1 (%)", "student params", "training-only params"]
    header += ["wall time / run (s)"]
    rows = []
    for method, m in p["methods"].items():
        if not m["runs"]:
            rows.append([method, 0, "", "", "not run", "", "", "", ""])
            continue
        rows.append(
            [
                method,
                m["runs"],
                m["epochs"],
                f"{100 * m['val_accuracy_mean']:.2f} +- {100 * m['val_accuracy_std']:.2f}",
                f"{100 * m['accuracy_mean']:.2f} +- {100 * m['accuracy_std']:.2f}",
                f"{100 * m['macro_f1_mean']:.2f} +- {100 * m['macro_f1_std']:.2f}",
                f"{m['student_parameters']:,}",
                f"{m['extra_parameters']:,}",
                f"{m['wall_seconds_mean']:.0f}",
            ]
        )
    runs = [
        [
            r["run"],
            f"{100 * r['best_val_accuracy']:.2f}",
            f"{100 * r['test_accuracy']:.2f}",
            f"{100 * r['test_macro_f1']:.2f}",
            r["best_epoch"],
            f"{r.get('kept', 'best')} ({r.get('kept_epoch', r['best_epoch'])})",
            f"{r['wall_seconds']:.0f}",
        ]
        for r in p["runs"]
    ]
    lines += [
        markdown_table(header, rows),
        "",
        "Per run:",
        "",
        markdown_table(
            ["run", "best val accuracy (%)", "test accuracy (%)", "macro-F1 (%)", "best epoch"]
            + ["kept (epoch)", "wall (s)"],
            runs,
        ),
    ]
    return "\n".join(lines) + "\n"
