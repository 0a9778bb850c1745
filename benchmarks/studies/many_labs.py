"""Leave-one-lab-out: choose a multi-lab training recipe on labs the model never saw (issue 28).

    python benchmarks/studies/many_labs.py lolo --recipe mild --recipe crosslab \
        [--size 112 --epochs 6 --threads 1] [--runs runs/lolo] [--out RECORD]
    python benchmarks/studies/many_labs.py score MODEL [MODEL ...] [--out RECORD]

For each recipe and each lab of ``../shared/data`` (and once with none left out), a student is
trained with ``--method ce`` on all the other labs (the run folders resume: a later session
continues where this one stopped) and scored on what it never saw:

* the left-out lab, every image of the classes the model knows (accuracy, macro-F1 over that
  lab's classes); for DeepAPL left out (the only lab with blasts, so the model has no Blast
  class) the share of its blasts called an immature class instead; for the others, the share of
  that lab's cells called Blast (the "this lab's look is a blast" failure);
* the BCCD development fields (adapt + val of ``benchmarks/results/bccd-split.csv``; never the
  97 eval fields, which stay the reported zero-shot figure): field type as ``run --smear``
  would count it, macro recall over Neutrophil, Eosinophil, Lymphocyte and Monocyte;
* the PBC test split of the reference protocol.

``score`` puts finished models (e.g. the packaged teacher and student) through the same figures,
with DeepAPL's held-out patients (its test split) in place of a left-out lab.
Lives outside the package: a study, not a product command.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.benchmarks.crosslab import (
    field_crops,
    field_metrics,
    field_types,
    read_field_split,
    training_fov,
)
from wbc_edge.data.labs import combine_sources, parse_sources
from wbc_edge.data.manifest import ManifestRow, write_manifest
from wbc_edge.records import machine_line, markdown_table, utc_date, write_record

SHARED = Path("../shared/data")
PBC_SPLIT = Path("benchmarks/results/pbc9-split.csv")
BCCD = SHARED / "bccd-smears"
BCCD_SPLIT = Path("benchmarks/results/bccd-split.csv")
# The five labs of ../shared/data with labelled crops, and their group rules.
SOURCES = {
    "pbc": str(PBC_SPLIT),
    "deepapl": str(SHARED / "multilab" / "deepapl"),
    "lisc": str(SHARED / "multilab" / "lisc"),
    "tecom": str(SHARED / "multilab" / "tecom"),
    "cvblog": str(SHARED / "multilab" / "cvblog"),
}
GROUP_BY = {"deepapl": r"^(P\d+)_"}
LEFT_OUT = ("deepapl", "lisc", "tecom", "cvblog")  # PBC stays in: its test is the protocol
IMMATURE = ("Promyelocyte", "ImmatureGranulocyte", "Blast")


def specs(labs: list[str]) -> tuple[list[str], list[str]]:
    """``--data`` and ``--group-by`` values for these labs."""
    return [f"{lab}={SOURCES[lab]}" for lab in labs], [
        f"{lab}={GROUP_BY[lab]}" for lab in labs if lab in GROUP_BY
    ]


def lab_rows(lab: str, split: str | None = None) -> list[ManifestRow]:
    """One lab's rows split as a joined manifest splits them (same seed, same rule)."""
    data, group = specs([lab])
    rows = combine_sources(parse_sources(data, group), show_progress=False)
    return [r for r in rows if split is None or r.split == split]


def card_of(model: str | Path) -> Any:
    from wbc_edge.runtime.backends import load_backend

    with load_backend(model) as backend:
        return backend.card


def predict_rows(model: str | Path, rows: list[ManifestRow]) -> tuple[Any, list[ManifestRow]]:
    """Calibrated probabilities of the rows whose class the model knows (and those rows)."""
    from wbc_edge.kd.evaluate import predict

    names = card_of(model).class_names
    known = [r for r in rows if r.label in names]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_manifest(known, Path(tmp) / "rows.csv")
        return predict(model, path, None), known


def unknown_class_probs(model: str | Path, rows: list[ManifestRow], label: str) -> np.ndarray:
    """Probabilities for rows of a class the model lacks (DeepAPL's blasts for a no-Blast
    model): decoded and preprocessed as ``run`` does, through the model's backend."""
    from wbc_edge.runtime.backends import load_backend
    from wbc_edge.runtime.labelled import read_labelled

    mine = [r for r in rows if r.label == label]
    with load_backend(model) as backend:
        return backend.predict_images([read_labelled(r.path, "the lab") for r in mine])


def lab_scores(model: str | Path, rows: list[ManifestRow]) -> dict[str, Any]:
    """Accuracy over the known classes, macro-F1 over the lab's classes, Blast figures."""
    from wbc_edge.metrics import classification_report

    pred, known = predict_rows(model, rows)
    names = pred.card.class_names
    rep = classification_report(pred.probs, pred.y, names)
    own = sorted({r.label for r in known})
    out: dict[str, Any] = {
        "images": len(known),
        "accuracy": rep.accuracy,
        "macro_f1_own": float(np.mean([rep.per_class[c]["f1"] for c in own])),
    }
    top = pred.probs.argmax(1)
    if "Blast" in names:
        b = names.index("Blast")
        blast = np.array([r.label == "Blast" for r in known])
        if blast.any():
            out["blasts"] = int(blast.sum())
            out["blast_recall"] = float((top[blast] == b).mean())
        if (~blast).any():
            out["others_called_blast"] = float((top[~blast] == b).mean())
    elif any(r.label == "Blast" for r in rows):
        p = unknown_class_probs(model, rows, "Blast")
        idx = [names.index(c) for c in IMMATURE if c in names]
        out["blasts"] = len(p)
        out["blasts_called_immature"] = float(np.isin(p.argmax(1), idx).mean())
    return out


_CROPS: dict[tuple[str, float | None], dict[str, list]] = {}


def bccd_dev(model: str | Path) -> dict[str, Any]:
    """Field type on the BCCD development fields (adapt + val), cut at the card's scale."""
    from wbc_edge.runtime.backends import load_backend
    from wbc_edge.runtime.post import review_threshold

    fields = [(f, t, "dev") for f, t, s in read_field_split(BCCD_SPLIT) if s != "eval"]
    fov = training_fov(card_of(model), PBC_SPLIT)
    key = ("dev", None if fov is None else round(fov, 2))
    if key not in _CROPS:
        _CROPS[key] = field_crops(BCCD, [f for f, _, _ in fields], fov)
    crops = _CROPS[key]
    with load_backend(model) as backend:
        probs = {
            f: backend.predict_images(crops[f])
            if crops[f]
            else np.zeros((0, backend.card.num_classes))
            for f, _, _ in fields
        }
        thr = review_threshold(None, backend.card)
        types = field_types(probs, backend.card.class_names, thr)
    m = field_metrics({f: t for f, t, _ in fields}, types)
    return {k: m[k] for k in ("fields", "field_accuracy", "macro_recall_NELM")}


def pbc_test(model: str | Path) -> float:
    from wbc_edge.kd.evaluate import predict

    pr = predict(model, PBC_SPLIT, "test")
    return float((pr.probs.argmax(1) == pr.y).mean())


# --- leave one lab out ----------------------------------------------------------------------

RECIPES = {
    # augment preset, --balance
    "mild": ("mild", "sqrt"),
    "crosslab": ("crosslab", "sqrt"),
    "crosslab-nobalance": ("crosslab", "none"),
}


def train_one(recipe: str, held: str | None, args: argparse.Namespace) -> Path:
    """Train (or resume, or skip when finished) one run; returns its folder."""
    from wbc_edge.kd.config import TrainConfig
    from wbc_edge.kd.trainer import train

    augment, balance = RECIPES[recipe]
    labs = [lab for lab in SOURCES if lab != held]
    data, group = specs(labs)
    out = Path(args.runs) / f"{recipe}-without-{held or 'none'}"
    if (out / "summary.json").is_file():
        return out
    resume = (out / "last.pt").is_file()
    if resume:
        cfg = TrainConfig.from_sources(str(out / "config.yaml"), out=str(out))
    else:
        cfg = TrainConfig(
            data=data,
            group_by=group,
            out=str(out),
            kind="distill",
            method="ce",
            model=args.student,
            size=args.size,
            epochs=args.epochs,
            augment=augment,
            balance=balance,
            seed=args.seed,
            threads=args.threads,
            keep="last",
            cache_dir=args.cache_dir,
            init=args.init,
            lr=args.lr,
        )
    print(f"training {out} ({'resumed' if resume else 'new'})", flush=True)
    train(cfg, resume=resume)
    return out


def score_run(out: Path, held: str | None) -> dict[str, Any]:
    model = out / "last.pt"
    row: dict[str, Any] = {"run": str(out), "held_out": held}
    summary = json.loads((out / "summary.json").read_text())
    row["wall_seconds"] = summary.get("wall_seconds")
    row["val_accuracy"] = summary.get("kept_val_accuracy")
    if held is not None:
        row["left_out"] = lab_scores(model, lab_rows(held))
    row["bccd_dev"] = bccd_dev(model)
    row["pbc_test"] = pbc_test(model)
    return row


def lolo(args: argparse.Namespace) -> None:
    rows: dict[str, dict[str, Any]] = {}
    for recipe in args.recipe:
        for held in [*LEFT_OUT, None]:
            key = f"{recipe}/{held or 'none'}"
            if args.report_only:
                out = Path(args.runs) / f"{recipe}-without-{held or 'none'}"
                if not (out / "summary.json").is_file():
                    continue
            else:
                out = train_one(recipe, held, args)
            rows[key] = score_run(out, held)
            print(key, json.dumps(rows[key]), flush=True)
    report = {
        "title": "Leave one lab out: the multi-lab recipe chosen on labs never trained on",
        "date": utc_date(),
        "machine": machine_line(),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "settings": {
            "student": args.student,
            "size": args.size,
            "epochs": args.epochs,
            "seed": args.seed,
            "method": "ce",
            "init": args.init,
            "lr": args.lr,
            "recipes": {
                r: dict(zip(("augment", "balance"), RECIPES[r], strict=True)) for r in args.recipe
            },
        },
        "rows": rows,
    }
    write_record(args.out, report, lolo_markdown(report))
    print(f"wrote {args.out}.md / .json")


def _p(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def lolo_markdown(r: dict[str, Any]) -> str:
    s = r["settings"]
    lines = [
        f"# {r['title']}",
        "",
        f"- date: {r['date']}; machine: {r['machine']}",
        f"- command: `{r['command']}`",
        f"- every run: `{s['student']}` at {s['size']} px, `--method ce`, {s['epochs']} epochs, "
        f"seed {s['seed']}, final epoch kept"
        + (f", started from `{s['init']}`" if s.get("init") else ", from random weights")
        + (f", lr {s['lr']}" if s.get("lr") else "")
        + "; labs pbc, deepapl (patients kept whole), lisc, "
        "tecom, cvblog; a lab's missing classes are not negatives",
        "- left-out lab: accuracy over the classes the model knows, every image of that lab; "
        "DeepAPL left out has no Blast class to learn, so its blasts are scored as 'called an "
        "immature class'. BCCD dev: field type of the 148 adapt + val fields (never the eval "
        "fields). PBC test: the protocol's 360 crops",
        "",
    ]
    head = [
        "recipe",
        *(f"{lab} left out" for lab in LEFT_OUT),
        "BCCD dev fields (type / macro)",
        "PBC test",
        "mean left-out",
    ]
    body = []
    for recipe, rec in s["recipes"].items():
        cells = [f"{recipe} ({rec['augment']}, balance {rec['balance']})"]
        accs = []
        for lab in LEFT_OUT:
            row = r["rows"].get(f"{recipe}/{lab}")
            if row is None:
                cells.append("not run")
                continue
            lo = row["left_out"]
            accs.append(lo["accuracy"])
            extra = ""
            if "blasts_called_immature" in lo:
                extra = f"; blasts immature {_p(lo['blasts_called_immature'])}"
            elif "others_called_blast" in lo:
                extra = f"; called Blast {_p(lo['others_called_blast'])}"
            cells.append(f"{_p(lo['accuracy'])}{extra}")
        full = r["rows"].get(f"{recipe}/none")
        if full is not None:
            b = full["bccd_dev"]
            cells += [
                f"{_p(b['field_accuracy'])} / {b['macro_recall_NELM']:.2f}",
                _p(full["pbc_test"]),
            ]
        else:
            cells += ["not run", "not run"]
        cells.append(_p(float(np.mean(accs))) if accs else "n/a")
        body.append(cells)
    lines += [markdown_table(head, body), ""]
    lines += [
        "BCCD and PBC columns come from the run with no lab left out (BCCD is never trained "
        "on). Runs, wall time and each left-out run's own BCCD / PBC figures: the JSON beside "
        "this file.",
        "",
    ]
    return "\n".join(lines)


# --- finished models ------------------------------------------------------------------------


def score_models(args: argparse.Namespace) -> None:
    rows = {}
    for model in args.models:
        row: dict[str, Any] = {"model": model}
        for lab in SOURCES:
            if lab == "pbc":
                continue
            split = "test" if lab == "deepapl" else None
            row[lab] = lab_scores(model, lab_rows(lab, split))
        row["bccd_dev"] = bccd_dev(model)
        row["pbc_test"] = pbc_test(model)
        rows[model] = row
        print(json.dumps(row), flush=True)
    report = {
        "title": "Models on every lab",
        "date": utc_date(),
        "machine": machine_line(),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "rows": rows,
    }
    md = [
        f"# {report['title']}",
        "",
        f"- date: {report['date']}; machine: {report['machine']}",
        f"- command: `{report['command']}`",
        "",
        "DeepAPL: its test patients (never trained on by a multi-lab model); lisc, tecom, "
        "cvblog: every image (in training for a multi-lab model: a seen-lab figure).",
        "",
    ]
    head = [
        "model",
        "PBC test",
        "DeepAPL test",
        "DeepAPL blasts",
        "lisc",
        "tecom",
        "cvblog",
        "BCCD dev fields",
    ]
    body = []
    for model, row in rows.items():
        d, bd = row["deepapl"], row["bccd_dev"]
        blasts = (
            _p(d.get("blast_recall")) + " called Blast"
            if "blast_recall" in d
            else _p(d.get("blasts_called_immature")) + " called immature"
        )
        body.append(
            [
                f"`{model}`",
                _p(row["pbc_test"]),
                _p(d["accuracy"]),
                blasts,
                _p(row["lisc"]["accuracy"]),
                _p(row["tecom"]["accuracy"]),
                _p(row["cvblog"]["accuracy"]),
                f"{_p(bd['field_accuracy'])} / {bd['macro_recall_NELM']:.2f}",
            ]
        )
    md += [markdown_table(head, body), ""]
    write_record(args.out, report, "\n".join(md))
    print(f"wrote {args.out}.md / .json")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    lo = sub.add_parser("lolo")
    lo.add_argument("--recipe", action="append", choices=list(RECIPES), required=True)
    lo.add_argument("--student", default="tinyresnet_xs")
    lo.add_argument("--size", type=int, default=112)
    lo.add_argument("--epochs", type=int, default=6)
    lo.add_argument("--seed", type=int, default=0)
    lo.add_argument("--threads", type=int, default=1)
    lo.add_argument("--runs", default="runs/lolo")
    lo.add_argument(
        "--init",
        default=None,
        help="start every run from this student checkpoint (head rows by class name)",
    )
    lo.add_argument("--lr", type=float, default=None)
    lo.add_argument("--cache-dir", default=None)
    lo.add_argument("--out", type=Path, default=Path("benchmarks/results/many-labs-lolo"))
    lo.add_argument("--report-only", action="store_true")
    sc = sub.add_parser("score")
    sc.add_argument("models", nargs="+")
    sc.add_argument("--out", type=Path, default=Path("benchmarks/results/many-labs-models"))
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(getattr(args, "threads", 2)))
    (lolo if args.cmd == "lolo" else score_models)(args)


if __name__ == "__main__":
    main()
