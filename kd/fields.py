"""Whole smear fields as an evaluation: the dominant white-cell type of each field, against its
label.

On fields with one labelled white-cell type per field (bccd-smears' ``labels.csv``), a field's
predicted type is the dominant class of its confident cells (top probability at or above the
model's review threshold; all found cells when none is). Unlike ``run``'s count, the OOD check
is not applied: a model whose OOD check fires on every cell of a lab (the PBC-only student on
BCCD) still gets a field type, so the figure says what its labels are worth there, and
``cross-lab.md``'s figures stay comparable. Scored: field-type accuracy,
macro recall over Neutrophil / Eosinophil / Lymphocyte / Monocyte (neutrophil fields are 58% of
BCCD, so accuracy alone flatters a model that calls everything a neutrophil) and the confusion.
The cells are found and cut by the model itself (:meth:`wbc_edge.model.model.Model.find_cells`,
the card's field-to-crop rule), as ``run --smear`` cuts them.

The fields are split once (:func:`make_field_split`, stratified by type, seed 42) into an adapt
pool, validation fields and held-out evaluation fields; ``benchmarks/results/bccd-split.csv``
holds BCCD's, so nothing is adapted or tuned on an evaluation field. ``wbc-edge evaluate
--fields`` and the studies (``benchmarks/studies/cross_lab.py``, ``many_labs.py``) score fields
through this module.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wbc_edge.errors import UserError
from wbc_edge.model.defaults import MARGIN

if TYPE_CHECKING:
    from wbc_edge.model.model import Model
    from wbc_edge.model.scale import CropScale

FOUR = ("Neutrophil", "Eosinophil", "Lymphocyte", "Monocyte")
EVAL_FRACTION = 0.4
VAL_FRACTION = 0.2  # of the adapt pool: the "all but validation" point leaves this out
SPLIT_SEED = 42
SPLITS = ("adapt", "val", "eval")


def make_field_split(root: str | Path, class_names: Sequence[str], seed: int = SPLIT_SEED):
    """[(field, type, split)] over the fields with one white-cell type; split is ``eval``
    (EVAL_FRACTION of each type), ``val`` (VAL_FRACTION of the rest) or ``adapt``."""
    from wbc_edge.kd.adapt import LABEL_FILE, map_label, read_field_labels

    table = read_field_labels(Path(root) / LABEL_FILE)
    by_type: dict[str, list[str]] = {}
    for name, labels in sorted(table.items()):
        types = {map_label(t, class_names, LABEL_FILE) for t in labels}
        if len(types) == 1 and (Path(root) / "JPEGImages" / name).is_file():
            by_type.setdefault(types.pop(), []).append(name)
    rng = np.random.default_rng(seed)
    rows = []
    for t, names in sorted(by_type.items()):
        order = [names[i] for i in rng.permutation(len(names))]
        n_eval = int(round(EVAL_FRACTION * len(order)))
        n_val = int(round(VAL_FRACTION * (len(order) - n_eval)))
        for i, name in enumerate(order):
            split = "eval" if i < n_eval else "val" if i < n_eval + n_val else "adapt"
            rows.append((name, t, split))
    return sorted(rows)


def write_field_split(rows, path: str | Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image", "type", "split"])
        w.writerows(rows)


def read_field_split(path: str | Path) -> list[tuple[str, str, str]]:
    try:
        with open(path, newline="") as f:
            rows = [(r["image"], r["type"], r["split"]) for r in csv.DictReader(f)]
    except (OSError, KeyError) as exc:
        raise UserError(f"{path}: not a field split (image,type,split) ({exc})") from exc
    return rows


def field_crops(
    root: Path, names: Sequence[str], crop_scale: CropScale | None, margin: float = MARGIN
) -> dict[str, list]:
    """{field: its white-cell crops} cut by the field-to-crop rule at ``crop_scale`` (None: the
    box + ``margin``), best finder score first. The cross-lab study cuts at scales other than a
    card's (one measured for an old card, or none) with it."""
    from wbc_edge.model.fieldcrop import cells_in_field
    from wbc_edge.model.labelled import read_labelled

    return {
        n: cells_in_field(
            read_labelled(root / "JPEGImages" / n, str(root)), crop_scale, margin
        ).crops
        for n in names
    }


def cut_fields(model: Model, root: Path, names: Sequence[str]) -> dict[str, list]:
    """{field: its white-cell crops} cut as ``run --smear`` cuts them for ``model``: at its
    card's crop scale and margin (:meth:`wbc_edge.model.model.Model.find_cells`'s rule)."""
    return field_crops(root, names, model.spec.crop_scale, model.margin)


def field_types(probs_by_field: dict[str, np.ndarray], names: Sequence[str], threshold: float):
    """{field: dominant class of its counted cells, or "none" when no cell was found}."""
    out = {}
    for f, p in probs_by_field.items():
        if not len(p):
            out[f] = "none"
            continue
        counted = p[p.max(1) >= threshold]
        use = counted if len(counted) else p
        out[f] = names[int(np.bincount(use.argmax(1), minlength=len(names)).argmax())]
    return out


def field_metrics(truth: dict[str, str], pred: dict[str, str]) -> dict[str, Any]:
    fields = sorted(truth)
    acc = float(np.mean([pred[f] == truth[f] for f in fields]))
    recall = {}
    for c in FOUR:
        mine = [f for f in fields if truth[f] == c]
        if mine:
            recall[c] = float(np.mean([pred[f] == c for f in mine]))
    confusion: dict[str, dict[str, int]] = {}
    for f in fields:
        row = confusion.setdefault(truth[f], {})
        row[pred[f]] = row.get(pred[f], 0) + 1
    return {
        "fields": len(fields),
        "field_accuracy": acc,
        "macro_recall_NELM": float(np.mean(list(recall.values()))) if recall else float("nan"),
        "recall": recall,
        "confusion": confusion,
    }


def score_fields(
    model: Model, root: Path, fields: Sequence[tuple[str, str, str]], on: str = "eval"
) -> dict[str, Any]:
    """Field-type accuracy, macro recall (NELM) and confusion of ``model`` on the ``on``
    fields of a split (``eval``: the held-out fields; ``val``, for choosing settings)."""
    if on not in SPLITS:
        raise UserError(f"fields split {on!r}: use one of {', '.join(SPLITS)}")
    truth = {f: t for f, t, s in fields if s == on}
    if not truth:
        raise UserError(f"the field split has no {on!r} fields")
    return _score(model, root, truth)


def evaluate_fields(
    model_path: str | Path,
    root: str | Path,
    split_path: str | Path | None = None,
    split: str = "eval",
    out: str | Path | None = None,
) -> dict[str, Any]:
    """``wbc-edge evaluate --fields``: the field-type scores of a model on a folder of fields
    (``JPEGImages/`` + ``labels.csv``), on a field split's ``split`` fields, or on every field
    of one type without a split; written to ``out/fields.json|md`` when given."""
    from wbc_edge.errors import require_dir
    from wbc_edge.model.model import Model
    from wbc_edge.records import markdown_table, portable_path, record_header, write_record

    root = require_dir(root, "fields folder", "pass --fields with JPEGImages/ and labels.csv")
    with Model.load(model_path) as model:
        if split_path is not None:
            rows, on = read_field_split(split_path), split
        else:  # no split: every field with one type is scored
            rows = [(f, t, "all") for f, t, _ in make_field_split(root, model.class_names)]
            on = "all"
        if on == "all":
            truth = {f: t for f, t, _ in rows}
            if not truth:
                raise UserError(f"{root}: no field with one labelled white-cell type to score")
            result = _score(model, root, truth)
        else:
            result = score_fields(model, root, rows, on)
    result.update(
        model=portable_path(model_path),
        fields_folder=portable_path(root),
        field_split=portable_path(split_path) if split_path is not None else None,
        scored=on,
        **record_header(),
    )
    if out is not None:
        confusion = result["confusion"]
        called = sorted({c for row in confusion.values() for c in row} | set(confusion))
        table = markdown_table(
            ["labelled \\ called", *called],
            [[t, *(confusion[t].get(c, 0) for c in called)] for t in sorted(confusion)],
        )
        md = (
            f"# Field types: {Path(model_path).name} on {root.name}\n\n"
            f"{result['fields']} fields ({on}): field type right in "
            f"{100 * result['field_accuracy']:.1f}%, macro recall over "
            f"{', '.join(FOUR)} {result['macro_recall_NELM']:.3f}.\n\n{table}\n\n"
            f"Command: `{result['command']}`; {result['machine']}; {result['date']}.\n"
        )
        write_record(Path(out) / "fields", result, md)
    return result


def _score(model: Model, root: Path, truth: dict[str, str]) -> dict[str, Any]:
    crops = cut_fields(model, root, sorted(truth))
    probs = {f: model.probs(c) for f, c in crops.items()}
    return field_metrics(truth, field_types(probs, model.class_names, model.threshold))
