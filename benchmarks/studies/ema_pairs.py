"""Does a weight average make the packaged recipe's students better or less spread (issue 12)?

    python benchmarks/studies/ema_pairs.py RUN [RUN ...] --rule RULE.md \\
        [--out benchmarks/results/kd-ema]

Each RUN is a `wbc-edge distill ... --ema DECAY` folder. Its summary.json holds the averaged
weights' scores (the kept checkpoint, calibrated and scored by the trainer) and, under
``without_ema``, the final un-averaged weights of the same run, so every seed is a pair trained
on the same data order. The rule (written before the runs) is quoted whole and applied as it
says: the average is adopted only if its mean val accuracy beats the raw weights' mean val.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from wbc_edge.records import command_line, machine_line, markdown_table, utc_date, write_record

TEACHER_TEST = 0.9750  # the packaged Lite1 teacher, 8 views (kd-teacher-levers.md)
FLOOR_POINTS = 0.5  # issue 12: the student within 0.5 points of the teacher


def read_pair(run: Path) -> dict[str, Any]:
    s = json.loads((run / "summary.json").read_text())
    if "without_ema" not in s:
        raise SystemExit(f"{run}: summary.json has no without_ema: was it run with --ema?")
    raw = s["without_ema"]
    return {
        "run": str(run),
        "seed": s["seed"],
        "ema": s["ema"],
        "epochs": s["epochs"],
        "kept": s["kept"],
        "ema_final_decay": s.get("ema_final_decay"),
        "wall_seconds": s["wall_seconds"],
        "raw": {k: raw[k] for k in ("val_accuracy", "test_accuracy", "test_macro_f1")},
        "ema_scores": {
            "val_accuracy": _kept_val(run, s),
            "test_accuracy": s["test_accuracy"],
            "test_macro_f1": s["test_macro_f1"],
        },
        "test_ece": s.get("test_ece"),
    }


def _kept_val(run: Path, summary: dict[str, Any]) -> float:
    """The trainer's val accuracy of the kept checkpoint: in summary.json from session 7 on,
    else metrics.csv's row of the kept epoch (the same number, logged when it was trained)."""
    import csv

    if "kept_val_accuracy" in summary:
        return float(summary["kept_val_accuracy"])
    with open(run / "metrics.csv") as f:
        rows = {int(r["epoch"]): r for r in csv.DictReader(f)}
    return float(rows[int(summary["kept_epoch"])]["val_accuracy"])


def mean_sd(values: list[float]) -> tuple[float, float]:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), sd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--rule", type=Path, required=True, help="the rule, written before the runs")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/kd-ema"))
    args = ap.parse_args()
    pairs = sorted((read_pair(r) for r in args.runs), key=lambda p: p["seed"])
    for key in ("ema", "epochs", "kept"):
        if len({p[key] for p in pairs}) > 1:
            raise SystemExit(f"the runs differ in {key}: pair runs of one recipe only")
    if pairs[0]["kept"] != "last":
        # raw is always the final epoch; a best-val checkpoint would not be its pair
        raise SystemExit("the runs kept best.pt: pair --keep last runs, whose raw side matches")
    summary: dict[str, Any] = {}
    for side in ("raw", "ema_scores"):
        for key in ("val_accuracy", "test_accuracy", "test_macro_f1"):
            m, sd = mean_sd([p[side][key] for p in pairs])
            summary[f"{side}_{key}"] = {"mean": m, "sd": sd}
    adopted = summary["ema_scores_val_accuracy"]["mean"] > summary["raw_val_accuracy"]["mean"]
    recipe = "ema_scores" if adopted else "raw"
    recipe_test = summary[f"{recipe}_test_accuracy"]["mean"]
    gap = 100 * (TEACHER_TEST - recipe_test)
    floor_met = gap <= FLOOR_POINTS + 1e-9
    record = {
        "title": "Weight averaging (--ema) on the packaged recipe: paired runs",
        "command": command_line(),
        "machine": machine_line(),
        "date": utc_date(),
        "rule": args.rule.read_text(),
        "teacher_test_accuracy": TEACHER_TEST,
        "pairs": pairs,
        "summary": summary,
        "average_adopted": adopted,
        "recipe_mean_test_accuracy": recipe_test,
        "gap_to_teacher_points": gap,
        "floor_met": floor_met,
        # rule 3: a new packaged student only if the average is adopted and its mean test
        # accuracy (then the recipe's) reaches the floor
        "packaging_triggered": adopted and floor_met,
        "test_difference_points": [
            100 * (p["ema_scores"]["test_accuracy"] - p["raw"]["test_accuracy"]) for p in pairs
        ],
    }
    write_record(args.out, record, markdown(record))


def markdown(r: dict[str, Any]) -> str:
    def pct(x: float) -> str:
        return f"{100 * x:.2f}"

    rows = [
        [
            p["seed"],
            pct(p["raw"]["val_accuracy"]),
            pct(p["ema_scores"]["val_accuracy"]),
            pct(p["raw"]["test_accuracy"]),
            pct(p["ema_scores"]["test_accuracy"]),
            pct(p["raw"]["test_macro_f1"]),
            pct(p["ema_scores"]["test_macro_f1"]),
            f"{p['wall_seconds'] / 60:.0f}",
        ]
        for p in r["pairs"]
    ]
    s = r["summary"]
    rows.append(
        ["mean +- sd"]
        + [
            f"{100 * s[f'{side}_{key}']['mean']:.2f} +- {100 * s[f'{side}_{key}']['sd']:.2f}"
            for key in ("val_accuracy", "test_accuracy", "test_macro_f1")
            for side in ("raw", "ema_scores")
        ]
        + [""]
    )
    header = ["seed", "val raw", "val averaged", "test raw", "test averaged"]
    header += ["test macro-F1 raw", "test macro-F1 averaged", "wall (min)"]
    p0 = r["pairs"][0]
    verdict = (
        f"The average is {'adopted' if r['average_adopted'] else 'not adopted'} by rule 1 (mean "
        f"val {pct(s['ema_scores_val_accuracy']['mean'])}% averaged against "
        f"{pct(s['raw_val_accuracy']['mean'])}% raw). The recipe's mean test accuracy is "
        f"{pct(r['recipe_mean_test_accuracy'])}%, {r['gap_to_teacher_points']:.2f} points below "
        f"the teacher's {pct(r['teacher_test_accuracy'])}%: the 0.5-point floor is "
        f"{'met' if r['floor_met'] else 'not met'} by the recipe. Averaged minus raw on test, "
        f"seed by seed: {', '.join(f'{d:+.2f}' for d in r['test_difference_points'])} points. "
        f"Rule 3 {'replaces' if r['packaging_triggered'] else 'keeps'} the packaged student."
    )
    lines = [
        f"# {r['title']}",
        "",
        f"- date: {r['date']}; machine: {r['machine']}",
        f"- command: `{r['command']}`",
        f"- runs: the packaged recipe (kd/README.md) with `--ema {p0['ema']}`, {p0['epochs']} "
        "epochs; `raw` is the same run's final un-averaged weights (summary.json "
        "`without_ema`), `averaged` its kept checkpoint. Val is the trainer's (area filter, the "
        "final epoch); test is scored once at the end of each run. 360 images each: one image "
        "is 0.28 points.",
        "",
        markdown_table(header, rows, "lrrrrrrr"),
        "",
        verdict,
        "",
        "The rule, written before the runs started:",
        "",
        *[f"> {line}" if line else ">" for line in r["rule"].strip().splitlines()],
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
