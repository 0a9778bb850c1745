"""``wbc-edge demo``: the whole pipeline offline, through the same commands a user types.

Each step is a ``wbc-edge`` command line run in-process (so the demo exercises the real CLI
and shows each command's own progress); the demo only chooses small settings, makes a smear
video from synthetic fields, and prints one closing table from the bench report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from wbc_edge.console import console, print_table
from wbc_edge.errors import UserError

# Small enough for well under 15 minutes on a 2-core CPU; --data DIR switches to real cells.
# Difficulty 0.3: phantoms a few-epoch model can learn, still not separable by colour alone.
PHANTOM_SETTINGS = {
    "per_class": 120,
    "size": 64,
    "difficulty": 0.3,
    "teacher_epochs": 4,
    "student_epochs": 15,
}
REAL_SETTINGS = {"size": 128, "teacher_epochs": 3, "student_epochs": 8}


SYNTHETIC_NOTE = (
    "trained on synthetic phantoms (`wbc-edge data synth`) by `make demo`: synthetic data, "
    "not clinical"
)


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
        typer.Option(help="A class-folder tree of real cells (e.g. pbc9); default: phantoms."),
    ] = None,
    method: Annotated[str, typer.Option(help="Distillation method for the student.")] = "kd",
    seed: Annotated[int, typer.Option(help="Seed for data, split and training.")] = 0,
) -> None:
    """Run data -> teacher -> distil -> export -> stream -> bench, offline, and summarise."""
    from wbc_edge.cli import run as cli

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

    def step(title: str, *argv: str) -> None:
        console.rule(f"[bold]{title}")
        console.print("$ wbc-edge " + " ".join(argv), highlight=False, soft_wrap=True)
        code = cli(list(argv))
        if code != 0:
            raise UserError(f"demo step '{title}' failed (exit {code}); see the message above")

    if data is None:
        data = out / "phantoms"
        if not data.is_dir():
            step(
                "1. phantom cells (synthetic, not clinical)",
                *("data", "synth", "--out", str(data), "--seed", str(seed)),
                *("--per-class", str(settings["per_class"]), "--size", size),
                *("--difficulty", str(settings["difficulty"])),
            )
    fields = out / "smear"
    if not (fields / "fields").is_dir():
        step(
            "1b. phantom smear fields",
            *("data", "synth", "--out", str(fields), "--per-class", "0", "--fields", "16"),
            *("--seed", str(seed)),
        )
    split = out / "split.csv"
    step("2. split (stratified, content-deduped)", "data", "split", str(data), "--out", str(split))

    teacher_dir, student_dir = out / "teacher", out / "student"
    step(
        "3. fine-tune the ImageNet-pretrained teacher",
        *("train-teacher", "--data", str(split), "--size", size, "--seed", str(seed)),
        *("--epochs", str(settings["teacher_epochs"]), "--out", str(teacher_dir)),
        *("--cache-dir", str(out / "cache")),
    )
    step(
        f"4. distil the student ({method})",
        *("distill", "--data", str(split), "--teacher", str(teacher_dir / "best.pt")),
        *("--method", method, "--epochs", str(settings["student_epochs"])),
        *("--seed", str(seed), "--out", str(student_dir), "--cache-dir", str(out / "cache")),
    )
    if settings is PHANTOM_SETTINGS:  # every model, report and card from it says so
        for run in (teacher_dir, student_dir):
            mark_synthetic(run / "best.pt")
    models = out / "models"
    models.mkdir(exist_ok=True)
    student, teacher = models / "student.onnx", models / "teacher.onnx"
    student_int8 = models / "student.int8.onnx"
    step(
        "5. export the student to ONNX (parity-checked)",
        *("export", "onnx", "--model", str(student_dir / "best.pt"), "--out", str(student)),
        *("--data", str(split)),
    )
    step(
        "5b. export the teacher to ONNX",
        *("export", "onnx", "--model", str(teacher_dir / "best.pt"), "--out", str(teacher)),
    )
    step(
        "6. INT8 calibrated on the train split (ONNX Runtime CPU settings)",
        *("export", "int8", "--onnx", str(student), "--calib", str(split), "--target", "cpu"),
        *("--out", str(student_int8)),
    )
    stream = out / "stream-crops"
    if not stream.is_dir():
        step(
            "7. a folder of new cells to stream",
            *("data", "synth", "--out", str(stream), "--per-class", "8", "--seed", str(seed + 1)),
            *("--size", size, "--difficulty", str(settings.get("difficulty", 0.5))),
        )
    report = out / "report-crops.html"
    step(
        "7b. stream the folder through the student",
        *("run", str(stream), "--model", str(student_int8), "--crops", "--no-live"),
        *("--out", str(out / "run-crops"), "--report", str(report)),
    )
    video = write_smear_video(fields / "fields" / "JPEGImages", out / "smear.mp4")
    smear_report = out / "report-smear.html"
    step(
        "8. a smear video: find white cells, classify, count",
        *("run", str(video), "--model", str(student), "--smear", "--no-live"),
        *("--out", str(out / "run-smear"), "--report", str(smear_report)),
        *("--annotate", str(out / "annotated")),
    )
    bench_dir = out / "bench"
    step(
        "9. benchmark student against teacher",
        *("bench", "--student", str(student), "--student", str(student_int8)),
        *("--teacher", str(teacher), "--data", str(split), "--split", "test"),
        *("--batch", "1,32", "--iters", "30", "--out", str(bench_dir), "--name", "bench"),
    )
    summarise(bench_dir / "bench.json", [report, smear_report], bench_dir, started)


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


def summarise(bench_json: Path, reports: list[Path], bench_dir: Path, started: float) -> None:
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
    console.print(f"total wall time: {(time.perf_counter() - started) / 60:.1f} min")
