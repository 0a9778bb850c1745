"""Student size x input size: batch-1 latency on ONNX Runtime CPU against EfficientNet-B3 at the
same input size, and the test accuracy of trained students where a run folder exists.

Issue 12 asks whether a student larger than 0.5M parameters is the better trade. Latency does
not depend on the weights' values, so every model is timed with random weights (B3 has no
offline ImageNet weights here), exported to ONNX with its card and opened through the same
backend ``bench`` uses (:func:`wbc_edge.benchmarks.worker.open_model`, timed by its
``time_predict``). The machine is shared with training, so the models of one input size are
timed **interleaved**, in rounds (B3, then each student, then again), and the load average of
each round is kept: the speed-up compares numbers taken under the same load.

Accuracy comes from trained run folders (``summary.json`` and ``best.pt``'s card: the student,
its input size, test accuracy), so :func:`render` re-writes the record from the saved latencies
and any new run folders without timing anything again.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.errors import UserError, require_file

DEFAULT_STUDENTS = ("tinyresnet_xs", "tinyresnet_s", "resnet18")  # kd/students.py's table
DEFAULT_SIZES = (128, 160, 224)
BASELINE = "efficientnet_b3"  # the reference study's teacher
DEFAULT_ROUNDS = 5
DEFAULT_ITERS = 20  # batch-1 calls per model per round
DEFAULT_WARMUP = 5
TARGET_SPEEDUP = 20.0  # the floor against B3 at the same input size and runtime
PARAM_LIMIT = 500_000  # the student size limit


def export_random(arch: str, size: int, folder: Path, class_names: Sequence[str]) -> Path:
    """A random-weight ONNX file of ``arch`` at ``size`` px with its card (reused if present).

    The network comes from the registry (:func:`wbc_edge.kd.registry.create_model`: a
    student, or a timm teacher without weights). BatchNorm scales are drawn at
    random, as ``bench_reference_models.py`` does: zero-initialised ones would fold into
    all-zero convolutions that the exporter stores once, making the file smaller than a
    trained model's.
    """
    path = folder / f"{arch}-{size}.onnx"
    if path.is_file():
        return path
    import torch

    from wbc_edge.export.onnx_export import export_onnx
    from wbc_edge.kd.registry import create_model
    from wbc_edge.model.card import ModelCard, Preprocess

    torch.manual_seed(0)
    n = len(class_names)
    model = create_model(arch, n).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
    card = ModelCard(
        arch,
        list(class_names),
        preprocess=Preprocess(input_size=size),
        extra={"untrained": True, "note": "random init: for latency only"},
    )
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(model, card, path)
    return path


def measure(
    students: Sequence[str] = DEFAULT_STUDENTS,
    sizes: Sequence[int] = DEFAULT_SIZES,
    work_dir: str | Path = "runs/student-size",
    baseline: str = BASELINE,
    rounds: int = DEFAULT_ROUNDS,
    iters: int = DEFAULT_ITERS,
    warmup: int = DEFAULT_WARMUP,
    threads: int = 0,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """One row per (model, size): p50/p90 batch-1 latency over ``rounds`` x ``iters`` calls
    through the ONNX Runtime backend, parameters and MACs of the graph, the load average of each
    round; students also get their speed-up against ``baseline`` at the same size.

    ``threads`` 0 leaves ONNX Runtime's default (as ``bench`` does without ``--threads``).
    """
    from wbc_edge.benchmarks.bench import latency_stats
    from wbc_edge.benchmarks.cost import onnx_cost
    from wbc_edge.benchmarks.worker import open_model, time_predict
    from wbc_edge.records import load_average

    if rounds < 1 or iters < 1:
        raise UserError(f"rounds and iters must be at least 1, not {rounds} and {iters}")
    names = [f"class{i}" for i in range(9)]  # latency does not depend on the class names
    folder = Path(work_dir)
    rows: list[dict[str, Any]] = []
    for size in sizes:
        archs = [baseline, *[s for s in students if s != baseline]]
        paths = {a: export_random(a, size, folder, names) for a in archs}
        backends = {a: open_model(str(p), "cpu", threads) for a, p in paths.items()}
        x = np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)
        times: dict[str, list[float]] = {a: [] for a in archs}
        loads: list[float | None] = []
        try:
            for a in archs:
                time_predict(backends[a], x, warmup, 1, None)
            for r in range(rounds):
                loads.append(load_average())
                for a in archs:  # interleaved: every model sees this round's load
                    times[a] += time_predict(backends[a], x, 0, iters, None)
                log(
                    f"{size} px round {r + 1}/{rounds} (load {loads[-1]}): "
                    + ", ".join(f"{a} {1000 * np.median(times[a]):.2f} ms" for a in archs)
                )
        finally:
            for b in backends.values():
                b.close()
        base_p50 = latency_stats(times[baseline], 1)["p50_ms"]
        for a in archs:
            stats = latency_stats(times[a], 1)
            cost = onnx_cost(paths[a], size)
            rows.append(
                {
                    "model": a,
                    "role": "baseline" if a == baseline else "student",
                    "input_size": size,
                    "params": cost["params"],
                    "macs": cost["macs"],
                    "p50_ms": round(stats["p50_ms"], 4),
                    "p90_ms": round(stats["p90_ms"], 4),
                    "calls": stats["iters"],
                    "speedup": None if a == baseline else round(base_p50 / stats["p50_ms"], 2),
                    "load_average": loads,
                }
            )
    return rows


def trained_runs(run_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """What each trained run folder says about its student: name, input size (from the kept
    checkpoint's card: best.pt or last.pt, ``--keep``), test accuracy and macro-F1, the kept
    epoch, and its teachers."""
    from wbc_edge.kd.checkpoint import read_checkpoint
    from wbc_edge.model.card import ModelCard

    out = []
    for d in run_dirs:
        d = Path(d)
        why = "is it a finished run folder?"
        summary = json.loads(require_file(d / "summary.json", "run summary", why).read_text())
        kept = summary.get("kept", "best")  # runs before --keep kept best.pt
        ckpt = require_file(d / f"{kept}.pt", "run checkpoint", why)
        card = ModelCard.from_dict(read_checkpoint(ckpt)["card"])
        if summary.get("test_accuracy") is None:
            raise UserError(f"{d}/summary.json has no test accuracy: was the run scored on test?")
        kept_epoch = summary.get("kept_epoch", summary.get("best_epoch"))
        kept_val = None  # the kept epoch's own val accuracy: what a choice between runs reads
        if (d / "metrics.csv").is_file():
            with open(d / "metrics.csv", newline="") as f:
                for m in csv.DictReader(f):
                    if m.get("epoch") == str(kept_epoch) and m.get("val_accuracy"):
                        kept_val = float(m["val_accuracy"])
        teachers = summary.get("teachers") or (
            [{"architecture": card.extra["teacher"]}] if card.extra.get("teacher") else []
        )
        out.append(
            {
                "run": str(d),
                "model": card.architecture,
                "input_size": card.preprocess.input_size,
                "method": summary.get("method"),
                "epochs": summary.get("epochs"),
                "kept": kept,
                "kept_epoch": kept_epoch,
                "seed": summary.get("seed"),
                "best_val_accuracy": summary.get("best_val_accuracy"),
                "kept_val_accuracy": kept_val,
                "test_accuracy": summary["test_accuracy"],
                "test_macro_f1": summary.get("test_macro_f1"),
                "teachers": [t.get("architecture") for t in teachers],
            }
        )
    return out


def markdown(record: dict[str, Any]) -> str:
    from wbc_edge.records import markdown_table

    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    runs = record["runs"]
    rows = []
    for r in record["latency"]:
        key = (r["model"], r["input_size"])
        cell = [x for x in runs if (x["model"], x["input_size"]) == key]
        # Two decimals: 19.97x must not read as the 20x the issue asks for.
        speed = "1.0x (baseline)" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        rows.append(
            [
                r["model"],
                r["input_size"],
                f"{r['params'] / 1e6:.2f}M" if r["params"] is not None else "n/a",
                f"{r['macs'] / 1e6:.0f}M" if r["macs"] is not None else "n/a",
                f"{r['p50_ms']:.2f}",
                f"{r['p90_ms']:.2f}",
                speed,
                "random weights (latency only)"
                if r["role"] == "baseline"
                else " / ".join(pct(x["test_accuracy"]) for x in cell) or "n/a",
                "/".join(f"{v:.1f}" for v in r["load_average"] if v is not None),
            ]
        )
    below = [
        f"{r['model']} at {r['input_size']} px ({r['speedup']:.2f}x)"
        for r in record["latency"]
        if r["speedup"] is not None and r["speedup"] < TARGET_SPEEDUP
    ]
    lines = [
        "# Student size x input size: latency against EfficientNet-B3, and accuracy",
        "",
        f"Date: {record['date']} (latencies measured {record['settings']['latency_measured']})  ",
        f"Command: `{record['command']}`  ",
        *(
            [f"Latencies measured by: `{record['settings']['latency_command']}`  "]
            if record["settings"].get("latency_command", record["command"]) != record["command"]
            else []
        ),
        f"Machine: {record['machine']}",
        "",
        "Batch-1 latency on ONNX Runtime CPU through the runtime's backend (as `wbc-edge bench`),"
        f" {record['settings']['rounds']} rounds x {record['settings']['iters']} calls per model,"
        " the models of one input size interleaved round by round so that each speed-up "
        "compares numbers taken under the same load (the load column says what else ran)."
        " Every model has random weights here (latency does not depend on them). The load "
        "column is the 1-minute load average at the start of each round, on "
        f"{record['settings']['cores']} cores.",
        "",
        markdown_table(
            [
                "model",
                "input px",
                "params",
                "MACs",
                "p50 ms",
                "p90 ms",
                "speed-up vs B3 (same px)",
                "test accuracy (pbc9)",
                "load average",
            ],
            rows,
        ),
        "",
        f"- Students at or under {PARAM_LIMIT / 1e6:.1f}M parameters: "
        + ", ".join(
            sorted({r["model"] for r in record["latency"] if (r["params"] or 0) <= PARAM_LIMIT})
        )
        + f". Below the issue's {TARGET_SPEEDUP:.0f}x: "
        + ("; ".join(below) if below else "none")
        + ".",
        "- Accuracy: the test accuracy of each trained run of that student and input size, in "
        "the order of the runs below (n/a: no run folder given yet).",
    ]
    if runs:
        lines += [
            "",
            "## Trained students",
            "",
            markdown_table(
                [
                    "run",
                    "student",
                    "input px",
                    "teachers",
                    "method",
                    "epochs",
                    "seed",
                    "kept epoch",
                    "kept epoch's val accuracy",
                    "best val accuracy",
                    "test accuracy",
                    "test macro-F1",
                ],
                [
                    [
                        f"`{r['run']}`",
                        r["model"],
                        r["input_size"],
                        " + ".join(str(t) for t in r["teachers"]) or "none",
                        r["method"],
                        r["epochs"],
                        r.get("seed", "n/a"),
                        f"{r['kept_epoch']} ({r['kept']}.pt)",
                        pct(r.get("kept_val_accuracy")),
                        pct(r["best_val_accuracy"]),
                        pct(r["test_accuracy"]),
                        pct(r["test_macro_f1"]),
                    ]
                    for r in runs
                ],
            ),
        ]
    if record.get("choice"):
        lines += ["", "## How the packaged student was chosen", "", record["choice"].strip()]
    return "\n".join(lines) + "\n"


def write(
    out: str | Path,
    latency: list[dict[str, Any]],
    run_dirs: Sequence[str | Path],
    settings: dict[str, Any],
    command: str,
    previous_runs: Sequence[str] = (),
    choice: str | None = None,
) -> tuple[Path, Path]:
    """Write ``<out>.json`` and ``<out>.md`` through :func:`wbc_edge.records.write_record`.

    ``previous_runs`` (run folders the last record named) are kept: a re-render adds runs."""
    from wbc_edge.records import machine_line, utc_date, write_record

    dirs = list(dict.fromkeys([*map(str, previous_runs), *map(str, run_dirs)]))
    record = {
        "name": "student-size",
        "date": utc_date(),
        "command": command,
        "machine": machine_line(),
        "settings": settings,
        "latency": latency,
        "runs": trained_runs(dirs),
        "choice": choice,  # how the packaged student was chosen among the runs (text)
    }
    return write_record(out, record, markdown(record))


def render(
    out: str | Path, run_dirs: Sequence[str | Path], command: str, choice: str | None = None
) -> tuple[Path, Path]:
    """Re-write the record at ``out`` from its saved latencies, adding ``run_dirs`` (and a new
    ``choice`` text, else the saved one)."""
    saved = require_file(
        Path(str(out) + ".json"), "student-size record", "measure it first (without --report-only)"
    )
    old = json.loads(saved.read_text())
    previous = [r["run"] for r in old.get("runs", [])]
    choice = choice if choice is not None else old.get("choice")
    return write(out, old["latency"], run_dirs, old["settings"], command, previous, choice)


def measure_and_write(
    out: str | Path,
    run_dirs: Sequence[str | Path],
    command: str,
    students: Sequence[str] = DEFAULT_STUDENTS,
    sizes: Sequence[int] = DEFAULT_SIZES,
    work_dir: str | Path = "runs/student-size",
    rounds: int = DEFAULT_ROUNDS,
    iters: int = DEFAULT_ITERS,
    threads: int = 0,
    baseline: str = BASELINE,
    log: Callable[[str], None] = print,
) -> tuple[Path, Path]:
    """Time every model (:func:`measure`) and write the record with the run folders' accuracy."""
    import os

    import onnxruntime

    for d in run_dirs:  # fail on a bad run folder before minutes of timing, not after
        trained_runs([d])
    t0 = time.time()
    latency = measure(students, sizes, work_dir, baseline, rounds, iters, threads=threads, log=log)
    from wbc_edge.records import utc_date

    settings = {
        "rounds": rounds,
        "iters": iters,
        "warmup": DEFAULT_WARMUP,
        "threads": threads or "onnxruntime default",
        "cores": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "baseline": baseline,
        "seconds": round(time.time() - t0, 1),
        "latency_measured": utc_date(),
        "latency_command": command,  # kept when --report-only re-renders the record
    }
    return write(out, latency, run_dirs, settings, command)
