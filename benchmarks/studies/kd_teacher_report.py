"""Summarise a teacher run and its test evaluation into kd-teacher.md / kd-teacher.json.

    .venv/bin/wbc-edge evaluate --model runs/pbc9-teacher-lite0/best.pt \
        --data benchmarks/results/pbc9-split.csv --split test \
        --out benchmarks/results/kd-teacher-lite0-eval
    .venv/bin/python benchmarks/studies/kd_teacher_report.py runs/pbc9-teacher-lite0 \
        benchmarks/results/kd-teacher-lite0-eval
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from wbc_edge.records import machine_line, markdown_table, utc_date, write_record


def main() -> None:
    run, ev = Path(sys.argv[1]), Path(sys.argv[2])
    out = Path(sys.argv[3]) if len(sys.argv) > 3 else Path("benchmarks/results/kd-teacher")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    summary = json.loads((run / "summary.json").read_text())
    metrics = json.loads((ev / "metrics.json").read_text())
    with open(run / "metrics.csv") as f:
        epochs = [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f)]
    payload = {
        "date": utc_date(),
        "machine": machine_line(),
        "commands": [
            f"wbc-edge train-teacher --data {cfg['data']} --size {cfg['size']} --epochs "
            f"{cfg['epochs']} --out {run}",
            f"wbc-edge evaluate --model {run}/best.pt --data {cfg['data']} --split test --out {ev}",
        ],
        "config": cfg,
        "training": summary,
        "test": {
            k: metrics[k]
            for k in (
                "accuracy",
                "macro_precision",
                "macro_recall",
                "macro_f1",
                "ece",
                "num_images",
            )
        },
        "per_class": metrics["per_class"],
        "confusion": metrics["confusion"],
        "class_names": metrics["class_names"],
        "epochs": epochs,
    }
    text = markdown(payload, ev)
    write_record(out, payload, text)
    print(text, end="")


def markdown(payload: dict[str, Any], ev: Path) -> str:
    cfg, summary, t = payload["config"], payload["training"], payload["test"]
    test = [
        t["num_images"],
        f"{100 * t['accuracy']:.2f}%",
        f"{100 * t['macro_precision']:.2f}%",
        f"{100 * t['macro_recall']:.2f}%",
        f"{100 * t['macro_f1']:.2f}%",
        f"{t['ece']:.4f}",
    ]
    epochs = [
        [
            int(e["epoch"]),
            f"{e['train_loss']:.4f}",
            f"{100 * e['train_accuracy']:.2f}",
            f"{e['val_loss']:.4f}",
            f"{100 * e['val_accuracy']:.2f}",
            f"{100 * e['val_macro_f1']:.2f}",
            f"{e['epoch_seconds']:.0f}",
        ]
        for e in payload["epochs"]
    ]
    lines = [
        f"# Teacher: {cfg['model']} fine-tuned on pbc9 ({cfg['size']} px)",
        "",
        f"- date: {payload['date']}; machine: {payload['machine']}",
        *[f"- command: `{c}`" for c in payload["commands"]],
        f"- recipe: AdamW lr {cfg['lr']} (weight decay {cfg['weight_decay']}), "
        f"{cfg['warmup_epochs']} warm-up epoch then cosine, label smoothing "
        f"{cfg['label_smoothing']}, batch {cfg['batch_size']}, {cfg['epochs']} epochs, dihedral "
        "flips/rotations + mild colour/blur jitter, ImageNet init (offline Lite0 weights)",
        f"- best validation epoch {summary['best_epoch']} (val accuracy "
        f"{100 * summary['best_val_accuracy']:.2f}%); training wall time "
        f"{summary['wall_seconds'] / 60:.1f} min on the shared CPU",
        "",
        markdown_table(
            ["test images", "accuracy", "macro precision", "macro recall", "macro F1", "ECE"],
            [test],
        ),
        "",
        f"Per-class report, confusion matrix and predictions: `{ev}/` (report.md, confusion.png).",
        "",
        markdown_table(
            ["epoch", "train loss", "train acc", "val loss", "val acc", "val macro-F1"]
            + ["seconds"],
            epochs,
        ),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
