"""Teacher levers (issue 12): each teacher on the pbc9 val and test splits, one view and the mean
over the 8 dihedral views, through the runtime backend (`wbc-edge evaluate`'s own path).

    python benchmarks/studies/teacher_levers.py --data benchmarks/results/pbc9-split.csv \\
        --row 'LABEL=MODEL.pt=WALL_SECONDS=NOTE' ... --out benchmarks/results/kd-teacher-levers

Writes OUT.json (numbers, command, machine, date) and OUT.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from wbc_edge.kd.evaluate import evaluate
from wbc_edge.records import (
    command_line,
    gpu_line,
    machine_line,
    markdown_table,
    utc_date,
    write_record,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--row", action="append", required=True, help="LABEL=MODEL=WALL_S=NOTE")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rows = []
    for spec in args.row:
        label, model, wall, note = spec.split("=", 3)
        row = {
            "lever": label,
            "model": model,
            "train_wall_s": float(wall) if wall else None,
            "note": note,
        }
        for split in ("val", "test"):
            for views in (1, 8):
                r = evaluate(model, args.data, split, None, 64, views)
                row[f"{split}_accuracy_v{views}"] = r["accuracy"]
                row[f"{split}_macro_f1_v{views}"] = r["macro_f1"]
                print(f"{label} {split} views={views}: {100 * r['accuracy']:.2f}%", flush=True)
        rows.append(row)
    record = {
        "command": command_line(),
        "machine": machine_line(gpu_line()),
        "date": utc_date(),
        "data": str(args.data),
        "rows": rows,
    }
    write_record(args.out, record, markdown(record))


def markdown(record: dict[str, Any]) -> str:
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    rows = [
        [
            r["lever"],
            pct(r["val_accuracy_v1"]),
            pct(r["val_accuracy_v8"]),
            pct(r["test_accuracy_v1"]),
            pct(r["test_accuracy_v8"]),
            pct(r["test_macro_f1_v8"]),
            r["train_wall_s"] or "n/a",
            r["note"],
        ]
        for r in record["rows"]
    ]
    header = ["lever", "val 1 view", "val 8 views", "test 1 view", "test 8 views"]
    header += ["test macro-F1 8 views", "train wall (s)", "note"]
    lines = [
        "# Teacher levers on pbc9 (issue 12)",
        "",
        f"- date: {record['date']}; machine: {record['machine']}",
        f"- command: `{record['command']}`",
        "- accuracy (%) through the runtime backend with the runtime's decode; views 8 = mean "
        "calibrated probability over the 8 dihedral views (test-time augmentation)",
        "",
        markdown_table(header, rows),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
