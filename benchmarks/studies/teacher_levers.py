"""Teacher levers (issue 12): each teacher on the pbc9 val and test splits, one view and the mean
over the 8 dihedral views, through the runtime backend (`wbc-edge evaluate`'s own path).

    python benchmarks/studies/teacher_levers.py --data benchmarks/results/pbc9-split.csv \\
        --row 'LABEL=MODEL.pt=WALL_SECONDS=NOTE' ... --out benchmarks/results/kd-teacher-levers

Writes OUT.json (numbers, command, machine, date) and OUT.md. ``--keep-rows`` adds rows to an
existing record; ``--eval DIR`` reuses a `wbc-edge evaluate --out DIR` result rather than
scoring the model again (a 224 px teacher with 8 views is minutes per split on 2 cores).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from wbc_edge.kd.evaluate import evaluate
from wbc_edge.records import (
    command_line,
    machine_line,
    markdown_table,
    utc_date,
    write_record,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument(
        "--row",
        action="append",
        default=[],
        help="LABEL=MODEL=WALL_S=NOTE; MODEL a.pt+b.pt is the ensemble of both",
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--eval",
        action="append",
        type=Path,
        default=[],
        help="a `wbc-edge evaluate --out` folder whose metrics.json is reused for the row, split "
        "and views it scored instead of evaluating again (repeatable)",
    )
    ap.add_argument(
        "--keep-rows",
        action="store_true",
        help="keep the rows already in OUT.json (each keeps its own date) and add these",
    )
    args = ap.parse_args()
    done = {_key(m["model"], m["split"], m["views"]): m for m in map(_metrics, args.eval)}
    rows = []
    if args.keep_rows and args.out.with_suffix(".json").is_file():
        old = json.loads(args.out.with_suffix(".json").read_text())
        rows = [{"date": old["date"], **r} for r in old["rows"]]
    for spec in args.row:
        label, model, wall, note = spec.split("=", 3)
        row: dict[str, Any] = {
            "lever": label,
            "model": model,
            "train_wall_s": float(wall) if wall else None,
            "note": note,
            "date": utc_date(),
        }
        members = model.split("+")
        for split in ("val", "test"):
            for views in (1, 8):
                r = done.get(_key(" + ".join(members), split, views))
                if r is None and len(members) > 1:
                    continue  # an ensemble is scored only where an evaluate folder was given
                if r is None:
                    r = evaluate(members[0], args.data, split, None, 64, views)
                row[f"{split}_accuracy_v{views}"] = r["accuracy"]
                row[f"{split}_macro_f1_v{views}"] = r["macro_f1"]
                print(f"{label} {split} views={views}: {100 * r['accuracy']:.2f}%", flush=True)
        rows.append(row)
    record = {
        "command": command_line(),
        "machine": machine_line(),
        "date": utc_date(),
        "data": str(args.data),
        "rows": rows,
    }
    write_record(args.out, record, markdown(record))


def _metrics(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "metrics.json").read_text())


def _key(model: str, split: str, views: int) -> tuple[str, str, int]:
    # evaluate records resolved paths; a row may name the same file relatively.
    names = " + ".join(str(Path(m.strip()).resolve()) for m in model.split(" + "))
    return names, split, int(views)


def markdown(record: dict[str, Any]) -> str:
    pct = lambda v: "not run" if v is None else f"{100 * v:.2f}"  # noqa: E731
    rows = [
        [
            r["lever"],
            pct(r.get("val_accuracy_v1")),
            pct(r.get("val_accuracy_v8")),
            pct(r.get("test_accuracy_v1")),
            pct(r.get("test_accuracy_v8")),
            pct(r.get("test_macro_f1_v8")),
            r["train_wall_s"] or "n/a",
            r["note"],
            r.get("date", record["date"]),
        ]
        for r in record["rows"]
    ]
    header = ["lever", "val 1 view", "val 8 views", "test 1 view", "test 8 views"]
    header += ["test macro-F1 8 views", "train wall (s)", "note", "scored"]
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
