"""``wbc-edge demo``: the whole pipeline offline, through the same commands a user types.

Each step is a ``wbc-edge`` command line run in-process (so the demo exercises the real CLI
and shows each command's own progress), numbered and timed; the demo only chooses small
settings, makes a smear video from synthetic fields, prints one closing table from the bench
report and the time of every step, and writes them to ``OUT/demo.json`` and ``OUT/demo.md``
(``--record PREFIX`` also writes them there: ``benchmarks/results/demo-phantoms``).
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Annotated

import typer

from wbc_edge.console import console, print_table
from wbc_edge.errors import UserError
from wbc_edge.records import load_average

# Small enough for the whole demo in under 3 minutes on 2 shared CPU cores
# (benchmarks/results/demo-phantoms.md); --data DIR switches to real cells. Difficulty 0.3:
# phantoms a few-epoch model can learn, still not separable by colour alone.
PHANTOM_SETTINGS = {
    "per_class": 60,
    "size": 48,
    "difficulty": 0.3,
    "teacher_epochs": 3,
    "student_epochs": 20,
    "stream_per_class": 4,
    "fields": 8,
}
REAL_SETTINGS = {"size": 128, "teacher_epochs": 3, "student_epochs": 8, "stream_per_class": 8}
# Batch 32: a few-epoch run on 480 crops needs more than 8 steps an epoch.
TRAIN_BATCH = 32
# One torch / ONNX Runtime thread: on 2 cores shared with another process, two threads waiting
# on each other ran a teacher epoch 4.7x slower than one thread (19 s against 4 s); on quiet
# cores one thread costs the demo a few seconds.
THREADS = "1"


SYNTHETIC_NOTE = "trained on synthetic phantoms (`wbc-edge data synth`) by `make demo`"


def mark_synthetic(checkpoint: Path) -> None:
    """Write into ``checkpoint``'s card that it was trained on phantoms (``extra["synthetic"]``),
    so its exports, ``wbc-edge info`` and every report from it say so."""
    from wbc_edge.kd.checkpoint import read_checkpoint, save_checkpoint_payload

    payload = read_checkpoint(checkpoint)
    payload["card"].setdefault("extra", {})["synthetic"] = SYNTHETIC_NOTE
    save_checkpoint_payload(checkpoint, payload)


def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo makes.")] = Path(
        "demo-out"
    ),
    data: Annotated[
        Path | None,
        typer.Option(help="A class-folder tree of real cells (e.g. pbc9) [default: phantoms]."),
    ] = None,
    method: Annotated[str, typer.Option(help="Distillation method for the student.")] = "kd",
    seed: Annotated[int, typer.Option(help="Seed for data, split and training.")] = 0,
    record: Annotated[
        Path | None,
        typer.Option(
            help="Also write the steps' times and results to RECORD.json and RECORD.md "
            "(benchmarks/results/demo-phantoms re-records the project's figure)."
        ),
    ] = None,
) -> None:
    """Run data -> teacher -> distil -> export -> stream -> bench, offline, and summarise."""
    started = time.perf_counter()
    previous = [out / name for name in ("teacher", "student") if (out / name / "last.pt").exists()]
    if previous:  # checked before any step runs: a half-repeated demo would mix two runs
        raise UserError(
            f"{out} holds a previous demo ({previous[0]}): delete it to run the demo again "
            f"(`rm -rf {out}`), or give another --out (`make demo DEMO_ARGS='--out demo-2'`)"
        )
    out.mkdir(parents=True, exist_ok=True)
    settings = REAL_SETTINGS if data else PHANTOM_SETTINGS
    size = str(settings["size"])
    fields, stream = out / "smear", out / "stream-crops"
    made = [data is None and not (out / "phantoms").is_dir(), not (fields / "fields").is_dir()]
    step = Steps(9 + sum(made) + (not stream.is_dir()), started)

    if data is None:
        data = out / "phantoms"
        if not data.is_dir():
            step(
                "phantom cells (synthetic, not clinical)",
                *("data", "synth", "--out", str(data), "--seed", str(seed)),
                *("--per-class", str(settings["per_class"]), "--size", size),
                *("--difficulty", str(settings["difficulty"])),
            )
    if not (fields / "fields").is_dir():
        step(
            "phantom smear fields",
            *("data", "synth", "--out", str(fields), "--per-class", "0"),
            *("--fields", str(settings.get("fields", 16)), "--seed", str(seed)),
        )
    split = out / "split.csv"
    step("split (stratified, content-deduped)", "data", "split", str(data), "--out", str(split))
    train = ("--batch-size", str(TRAIN_BATCH), "--threads", THREADS)

    teacher_dir, student_dir = out / "teacher", out / "student"
    step(
        "fine-tune the ImageNet-pretrained teacher",
        *("train-teacher", "--data", str(split), "--size", size, "--seed", str(seed)),
        *("--epochs", str(settings["teacher_epochs"]), "--out", str(teacher_dir)),
        *("--cache-dir", str(out / "cache"), *train),
    )
    step(
        f"distil the student ({method})",
        *("distill", "--data", str(split), "--teacher", str(teacher_dir / "best.pt")),
        *("--method", method, "--epochs", str(settings["student_epochs"])),
        *("--seed", str(seed), "--out", str(student_dir), "--cache-dir", str(out / "cache")),
        *train,
    )
    if settings is PHANTOM_SETTINGS:  # every model, report and card from it says so
        for run in (teacher_dir, student_dir):
            mark_synthetic(run / "best.pt")
    models = out / "models"
    models.mkdir(exist_ok=True)
    student, teacher = models / "student.onnx", models / "teacher.onnx"
    student_int8 = models / "student.int8.onnx"
    step(
        "export the student to ONNX (parity-checked)",
        *("export", "onnx", "--model", str(student_dir / "best.pt"), "--out", str(student)),
        *("--data", str(split)),
    )
    step(
        "export the teacher to ONNX",
        *("export", "onnx", "--model", str(teacher_dir / "best.pt"), "--out", str(teacher)),
    )
    step(
        "INT8 calibrated on the train split (ONNX Runtime CPU settings)",
        *("export", "int8", "--model", str(student), "--calib", str(split), "--target", "cpu"),
        *("--out", str(student_int8)),
    )
    if not stream.is_dir():
        step(
            "a folder of new cells to stream",
            *("data", "synth", "--out", str(stream), "--seed", str(seed + 1)),
            *("--per-class", str(settings["stream_per_class"]), "--size", size),
            *("--difficulty", str(settings.get("difficulty", 0.5))),
        )
    report = out / "report-crops.html"
    step(
        "stream the folder through the student",
        *("run", str(stream), "--model", str(student_int8), "--crops", "--no-live"),
        *("--out", str(out / "run-crops"), "--report", str(report)),
    )
    video = write_smear_video(fields / "fields" / "JPEGImages", out / "smear.mp4")
    smear_report = out / "report-smear.html"
    step(
        "a smear video: find white cells, classify, count",
        *("run", str(video), "--model", str(student), "--smear", "--no-live"),
        *("--out", str(out / "run-smear"), "--report", str(smear_report)),
        *("--annotate", str(out / "annotated")),
    )
    bench_dir = out / "bench"
    step(
        "benchmark student against teacher",
        *("bench", "--model", str(student), "--model", str(student_int8)),
        *("--teacher", str(teacher), "--data", str(split), "--split", "test"),
        *("--batch", "1,32", "--iters", "20", "--threads", THREADS),
        *("--out", str(bench_dir), "--name", "bench"),
    )
    summarise(bench_dir / "bench.json", [report, smear_report], bench_dir)
    step.summary()
    written = write_demo_record(out / "demo", step, settings, out, started)
    if record is not None:
        written += write_demo_record(record, step, settings, out, started)
    console.print(f"wrote {', '.join(map(str, written))}", highlight=False, soft_wrap=True)


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


class Steps:
    """The demo's steps: each numbered ("step 3/12"), its command line shown, its time said
    when it ends and kept for the closing table and the record."""

    def __init__(self, total: int, started: float) -> None:
        self.total, self.started = total, started
        self.done: list[dict[str, object]] = []
        self.load_start = load_average()

    def __call__(self, title: str, *argv: str) -> None:
        from wbc_edge.cli import run as cli

        number = len(self.done) + 1
        command = "wbc-edge " + shlex.join(argv)
        console.rule(f"[bold]step {number}/{self.total}: {title}")
        console.print(f"$ {command}", highlight=False, soft_wrap=True)
        begun = time.perf_counter()
        code = cli(list(argv))
        if code != 0:
            raise UserError(f"demo step '{title}' failed (exit {code}); see the message above")
        seconds = time.perf_counter() - begun
        self.done.append({"step": title, "command": command, "seconds": round(seconds, 1)})
        console.print(
            f"[bold]step {number}/{self.total} done[/] in {seconds:.1f} s "
            f"({_clock(time.perf_counter() - self.started)} since the demo started)",
            highlight=False,
        )

    def summary(self) -> None:
        """The closing table of step times."""
        from rich.table import Table

        table = Table(title="wbc-edge demo: time of each step")
        table.add_column("step", justify="right")
        table.add_column("what")
        table.add_column("s", justify="right")
        for i, done in enumerate(self.done, 1):
            table.add_row(str(i), str(done["step"]), f"{done['seconds']:.1f}")
        print_table(table)
        console.print(
            f"total wall time: {_clock(time.perf_counter() - self.started)} (min:s)",
            highlight=False,
        )


def write_demo_record(
    prefix: Path, steps: Steps, settings: dict[str, object], out: Path, started: float
) -> list[Path]:
    """The demo's times and results as PREFIX.json and PREFIX.md (the records' one writer)."""
    from wbc_edge.records import command_line, markdown_table, record_header, write_record

    total = time.perf_counter() - started
    rows = json.loads((out / "bench" / "bench.json").read_text())["rows"]
    accuracy = {
        Path(r["path"]).name if r.get("path") else r["name"]: r.get("accuracy") for r in rows
    }
    smear = _run_summary(out / "run-smear")
    crops = _run_summary(out / "run-crops")
    data = {
        **record_header(command_line("wbc-edge demo")),
        "load_average_at_start": steps.load_start,
        "load_average_at_end": load_average(),
        "settings": settings,
        "total_s": round(total, 1),
        "steps": steps.done,
        "test_accuracy": accuracy,
        "crops_run": {k: crops.get(k) for k in ("items", "cells", "errors")},
        "smear_run": {
            "fields": smear.get("items"),
            "cells": smear.get("cells"),
            "counted": smear.get("differential", {}).get("wbc_counted"),
            "under_review": smear.get("differential", {}).get("in_review"),
        },
    }
    table = markdown_table(
        ["step", "what", "s"],
        [[i, d["step"], f"{d['seconds']:.1f}"] for i, d in enumerate(steps.done, 1)],
        "rlr",
    )
    acc = ", ".join(f"{k} {100 * v:.1f}%" for k, v in accuracy.items() if v is not None)
    markdown = (
        f"# `wbc-edge demo`: {total / 60:.1f} min\n\n```\n{data['command']}\n```\n\n"
        f"- date: {data['date']}\n- machine: {data['machine']}; 1-minute load average "
        f"{steps.load_start} at the start, {data['load_average_at_end']} at the end\n"
        f"- settings: {', '.join(f'{k} {v}' for k, v in settings.items())}\n"
        f"- test accuracy: {acc}\n\n{table}\n| | **total** | **{total:.1f}** |\n"
    )
    return list(write_record(prefix, data, markdown))


def _run_summary(results: Path) -> dict:
    found = sorted(results.glob("*/summary.json"))
    return json.loads(found[0].read_text()) if found else {}


def write_smear_video(frames_dir: Path, out: Path, fps: float = 2.0) -> Path:
    """Join synthetic fields into an MP4, standing in for a microscope camera recording."""
    import cv2

    frames = sorted(frames_dir.glob("*.jpg"))
    if not frames:
        raise UserError(f"no smear fields in {frames_dir}: rerun `wbc-edge demo`")
    first = cv2.imread(str(frames[0]))
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for path in frames:
        frame = cv2.imread(str(path))
        writer.write(cv2.resize(frame, (w, h)) if frame.shape[:2] != (h, w) else frame)
    writer.release()
    return out


def summarise(bench_json: Path, reports: list[Path], bench_dir: Path) -> None:
    """One closing table (accuracy, latency, speed-up, size) and where to look next."""
    from rich.table import Table

    rows = json.loads(bench_json.read_text())["rows"]
    table = Table(title="wbc-edge demo: student against teacher (ONNX Runtime, this CPU)")
    # The demo's files are student.onnx, student.int8.onnx, teacher.onnx; the card's name (what
    # bench calls a row) differs, so the table shows the file a user will look for first.
    table.add_column("file", no_wrap=True)
    table.add_column("card name")
    for col in ("role", "accuracy", "p50 ms @1", "img/s @32", "speed-up", "MB"):
        table.add_column(col, justify="right")
    for r in rows:
        b1, b32 = r["batches"].get("1", {}), r["batches"].get("32", {})
        acc = r.get("accuracy")
        table.add_row(
            Path(r["path"]).name if r.get("path") else r["name"],
            r["name"],
            r["role"],
            f"{acc * 100:.1f}%" if acc is not None else "n/a",
            f"{b1.get('p50_ms', float('nan')):.2f}",
            f"{b32.get('images_per_s', float('nan')):.0f}",
            f"{b1.get('speedup', float('nan')):.1f}x",
            f"{r['size_bytes'] / 1e6:.2f}",
        )
    console.rule("[bold]done")
    print_table(table)
    for path in reports:
        console.print(f"HTML report: {path}")
    for png in sorted(bench_dir.glob("*.png")):
        console.print(f"plot: {png}")
