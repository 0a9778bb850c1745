"""``wbc-edge bench``: students against their teacher, measured the same way on every machine.

Each model file runs in its own worker process (:mod:`wbc_edge.benchmarks.worker`) through the
runtime's own backends, so a row measures what deployment runs, and each peak memory figure
belongs to one model. This module plans the runs, collects the workers' results, adds what needs
several rows (speed-up and agreement against the teacher) and hands the whole to the reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.errors import UserError, require_file
from wbc_edge.records import utc_date

# bench's defaults, shown by `wbc-edge bench --help` (benchmarks/cli.py reads them here).
DEFAULT_BATCHES = (1, 8, 32)
DEFAULT_WARMUP = 5  # untimed calls per batch size
DEFAULT_ITERS = 50  # timed calls per batch size unless --duration


def latency_stats(times_s: Sequence[float], batch: int) -> dict[str, Any]:
    """Per-call latency figures (ms) and throughput from the seconds each ``predict`` took.

    Percentiles interpolate linearly between samples (numpy's default), so p99 of fewer than 100
    calls lies between the two slowest. Throughput is images over total time, not 1/mean of
    per-image times, which would overweight fast calls.
    """
    t = np.asarray(times_s, dtype=np.float64)
    if t.size == 0 or batch < 1:
        raise ValueError("latency_stats needs at least one timing and a batch of at least 1")
    ms = t * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "batch": batch,
        "iters": int(t.size),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std()),
        "min_ms": float(ms.min()),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "ms_per_image": float(ms.mean() / batch),
        "images_per_s": float(batch * t.size / t.sum()),
    }


def parse_batches(text: str) -> list[int]:
    """``"1,8,32"`` -> [1, 8, 32]."""
    try:
        batches = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise UserError(f"--batch {text!r}: give batch sizes like 1,8,32 (each at least 1)")
    return sorted(set(batches))


@dataclass
class BenchConfig:
    students: list[Path]
    teacher: Path | None = None
    baseline: Path | None = None  # speed-up reference when it is not the teacher
    references: list[Path] = field(default_factory=list)  # other models to compare against
    data: Path | None = None
    split: str = "test"
    limit: int | None = None
    batches: list[int] = field(default_factory=lambda: list(DEFAULT_BATCHES))
    warmup: int = DEFAULT_WARMUP
    iters: int | None = None
    duration: float | None = None
    threads: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.iters is not None and self.duration is not None:
            raise UserError("give --iters or --duration, not both")
        if self.iters is None and self.duration is None:
            self.iters = DEFAULT_ITERS
        if (self.iters is not None and self.iters < 1) or (
            self.duration is not None and self.duration <= 0
        ):
            raise UserError("--iters must be at least 1 and --duration above 0")
        if self.warmup < 0:
            raise UserError("--warmup cannot be negative")
        if not self.students:
            raise UserError("name at least one model with --model")


def load_data(data: Path, split: str, limit: int | None) -> tuple[list[str], list[str]]:
    """Image paths and class names from a split manifest (one split) or a class-folder tree.

    ``limit`` keeps every n-th image so all classes stay in (a prefix would be one class).
    """
    from wbc_edge.data.manifest import read_manifest
    from wbc_edge.data.scan import scan_class_folders

    if data.is_dir():
        items = [(str(f.path), f.label) for f in scan_class_folders(data)]
    else:
        require_file(data, "data manifest", "make one with `wbc-edge data split DIR --out F`")
        items = [(str(r.path), r.label) for r in read_manifest(data, split=split)]
    if not items:
        raise UserError(f"{data}: no images found")
    if limit is not None and 0 < limit < len(items):
        step = len(items) / limit
        items = [items[int(i * step)] for i in range(limit)]
    return [p for p, _ in items], [label for _, label in items]


def _check_model(path: Path) -> None:
    from wbc_edge.model.backends import backend_kind

    backend_kind(path)  # unknown suffix -> one-line UserError
    require_file(path, "model file", "pass --model/--teacher with an .onnx, .engine or .pt file")


def export_teacher(checkpoint: Path, out: Path, data: Path | None, split: str) -> Path:
    """Export a teacher checkpoint to ONNX in ``out`` (named from its card) through
    ``export onnx``'s own parity-checked path; real images from a manifest when given."""
    from wbc_edge.console import console
    from wbc_edge.export.onnx_export import (
        DEFAULT_OPSET,
        export_onnx,
        load_checkpoint,
        sample_inputs,
    )
    from wbc_edge.model.names import file_name

    net, card = load_checkpoint(checkpoint)
    rows = None
    if data is not None and data.is_file():
        from wbc_edge.data.manifest import read_manifest

        rows = read_manifest(data, split=split)
    sample, source = sample_inputs(card, rows, 16)
    onnx_path = out / file_name(card, "onnx")
    report = export_onnx(net, card, onnx_path, DEFAULT_OPSET, sample, source)
    console.print(f"teacher {checkpoint} -> {onnx_path}: {report.line()}", highlight=False)
    return onnx_path


def run_worker(
    spec: dict[str, Any], workdir: Path, on_progress: Any = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run one worker process and return its result, raising its error as a UserError."""
    spec_path = workdir / f"spec-{os.getpid()}-{abs(hash(spec['path']))}.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.Popen(
        [sys.executable, "-m", "wbc_edge.benchmarks.worker", str(spec_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    result: dict[str, Any] | None = None
    error: str | None = None
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue  # a library printing to stdout
        if msg.get("event") == "progress" and on_progress is not None:
            on_progress(msg.get("step", ""))
        elif msg.get("event") == "result":
            result = msg
        elif msg.get("event") == "error":
            error = msg.get("message", "unknown error")
    stderr = proc.stderr.read()
    proc.wait()
    if error is not None:
        raise UserError(error)
    if result is None or proc.returncode != 0:
        tail = [line for line in stderr.strip().splitlines() if line.strip()]
        last = tail[-1] if tail else f"exit code {proc.returncode}"
        raise UserError(f"{spec['path']}: benchmarking it failed ({last})")
    result.pop("event", None)
    return result


def run_bench(cfg: BenchConfig, command: str = "") -> dict[str, Any]:
    """Benchmark every model of ``cfg``; returns the report dict the writers and plots take."""
    from wbc_edge.benchmarks.machine import machine_info
    from wbc_edge.console import progress

    models = [(p, "reference") for p in cfg.references] + [(p, "student") for p in cfg.students]
    if cfg.baseline is not None and cfg.baseline not in (
        cfg.teacher,
        *cfg.students,
        *cfg.references,
    ):
        models.insert(0, (cfg.baseline, "baseline"))
    if cfg.teacher is not None:
        models.insert(0, (cfg.teacher, "teacher"))
    for path, _ in models:
        _check_model(path)
    paths, labels = load_data(cfg.data, cfg.split, cfg.limit) if cfg.data else ([], [])

    env = dict(os.environ)
    if cfg.threads > 0:  # also caps OpenMP/BLAS pools that the backends' own settings miss
        env["OMP_NUM_THREADS"] = str(cfg.threads)
    steps_per_model = len(cfg.batches) + (1 if labels else 0)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="wbc-edge-bench-") as tmp, progress() as bar:
        workdir = Path(tmp)
        task = bar.add_task("bench", total=len(models) * steps_per_model, status="")
        for i, (path, role) in enumerate(models):
            bar.update(task, status=f"{path.name}: loading")
            spec = {
                "path": str(path),
                "batches": cfg.batches,
                "warmup": cfg.warmup,
                "iters": cfg.iters,
                "duration": cfg.duration,
                "threads": cfg.threads,
                "device": cfg.device,
                "images": paths,
                "labels": labels,
                "probs_out": str(workdir / f"probs-{i}.npy"),
            }

            def advance(step: str, name: str = path.name) -> None:
                bar.update(task, advance=1, status=f"{name}: {step}")

            row = run_worker(spec, workdir, advance, env)
            row["role"] = role
            probs_file = Path(spec["probs_out"])
            row["_probs"] = np.load(probs_file) if probs_file.is_file() else None
            rows.append(row)

    unique_names(rows)
    _relate(rows, cfg.baseline)
    for row in rows:
        row.pop("_probs", None)
    return {
        "date": utc_date(),
        "command": command,
        "machine": machine_info(),
        "settings": {
            "speedup_against": str(cfg.baseline or cfg.teacher or "") or None,
            "batches": cfg.batches,
            "warmup": cfg.warmup,
            "iters": cfg.iters,
            "duration_s": cfg.duration,
            "threads": cfg.threads,
            "device": cfg.device,
            "data": str(cfg.data) if cfg.data else None,
            "split": cfg.split if cfg.data and not cfg.data.is_dir() else None,
            "images": len(paths),
        },
        "rows": rows,
    }


def unique_names(rows: list[dict[str, Any]]) -> None:
    """Rows are named from their cards (``student-tinyresnet_xs.onnx``); models that share a
    card name (a kd and an mlffakd student) get their file name added, then its folder."""
    base = [row["name"] for row in rows]

    def label(i: int, level: int) -> str:
        path = Path(rows[i]["path"])
        return [base[i], f"{base[i]} ({path.name})", f"{base[i]} ({path.parent.name}/{path.name})"][
            level
        ]

    levels = [0] * len(rows)
    for _ in range(2):
        names = [label(i, lv) for i, lv in enumerate(levels)]
        for i, name in enumerate(names):
            if names.count(name) > 1:
                levels[i] += 1
    for i, row in enumerate(rows):
        row["name"] = label(i, levels[i])


def _relate(rows: list[dict[str, Any]], baseline: Path | None = None) -> None:
    """Speed-up (baseline p50 / row p50 at the same batch; the baseline is the teacher unless
    named) and top-1 agreement with the teacher."""
    teacher = next((r for r in rows if r["role"] == "teacher"), None)
    base = teacher
    if baseline is not None:
        base = next(r for r in rows if Path(r["path"]) == baseline)
        base["baseline"] = True
    for row in rows:
        row["agreement"] = None
        for b, stats in row["batches"].items():
            ref = base["batches"].get(b) if base else None
            stats["speedup"] = ref["p50_ms"] / stats["p50_ms"] if ref else None
        if teacher is None or row is teacher:
            continue
        a, t = row.get("_probs"), teacher.get("_probs")
        if a is not None and t is not None:
            if row["class_names"] != teacher["class_names"]:
                row["agreement_note"] = "classes differ from the teacher's: no agreement"
            elif row.get("untrained") or teacher.get("untrained"):
                row["agreement_note"] = "random-init weights: agreement means nothing"
            else:
                from wbc_edge.metrics import agreement

                row["agreement"] = agreement(a, t)
