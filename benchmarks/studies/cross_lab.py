"""The cross-lab study: how a model trained on one lab does on another lab's smear fields.

    python benchmarks/studies/cross_lab.py --model student.pt --row zero-shot --zero-shot
    python benchmarks/studies/cross_lab.py --model student.pt --row zero-shot --curve

A study, not a product command (issue 30): ``wbc-edge evaluate --fields`` scores a model's
field types (:mod:`wbc_edge.kd.fields`, which this study uses). Recorded per row (a model and a
way of cropping): field-type accuracy, macro recall over Neutrophil / Eosinophil / Lymphocyte
/ Monocyte, the confusion, immature alarms raised (the run's own flag rules), the
out-of-distribution AUROC (PBC test crops against the fields' crops), and the PBC test accuracy
beside it. With ``--curve`` also the learning curve of ``wbc-edge adapt`` on 0 / 10 / 25 / 50
/ 100 / all adapt-pool fields, several seeds, scored on the held-out evaluation fields. Rows
accumulate in ``OUT/NAME.json`` and ``.md`` (``--out benchmarks/results`` for the project's
record ``cross-lab.md``).

The fields' split is :func:`wbc_edge.kd.fields.make_field_split`'s, recorded in
``benchmarks/results/bccd-split.csv``: nothing is adapted or tuned on an evaluation field.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from wbc_edge.errors import UserError
from wbc_edge.kd.config import ADAPT_LR, ADAPT_STEPS
from wbc_edge.kd.fields import (
    field_crops,
    field_metrics,
    field_types,
    make_field_split,
    read_field_split,
    write_field_split,
)

CURVE_SIZES = ("0", "10", "25", "50", "100", "all")
# A user's cross-lab run writes here, never into the project's records (benchmarks/results/).
CROSS_LAB_OUT = "cross-lab-out"


def _immature_alarm(probs_by_field, card, threshold: float, ood_by_field=None) -> bool:
    """Would the run's immature-cell or blast flag go up over these (normal) fields? The run's
    own rules (card roles, default lab thresholds) over the cells it would count: confident
    ones not judged out-of-distribution (``ood_by_field``: per field, per cell; the run sends
    those to review, so they raise no flag)."""
    from wbc_edge.runtime import flags
    from wbc_edge.runtime.differential import LabDifferential

    fields = [f for f, x in probs_by_field.items() if len(x)]
    if not fields:
        return False
    p = np.concatenate([probs_by_field[f] for f in fields])
    keep = p.max(1) >= threshold
    if ood_by_field is not None:
        keep &= ~np.concatenate([np.asarray(ood_by_field[f], bool) for f in fields])
    counted = p[keep].argmax(1)
    diff = LabDifferential(card.class_names, card.roles)
    for i, k in enumerate(counted):
        name = card.class_names[int(k)]
        diff.counts[name] += 1
        diff.cells[name].append(str(i))
    return any(f.rule in ("IG", "BLAST") for f in flags.evaluate(diff, flags.FlagRules()))


def score_row(
    model: str | Path,
    root: Path,
    fields: list[tuple[str, str, str]],
    crops: dict[str, list],
    pbc: str | Path | None,
    pbc_crops: list | None = None,
    on: str = "eval",
) -> dict[str, Any]:
    """The row of one model on the ``on`` fields (``eval``, or ``val`` to choose settings),
    crops already cut.

    The OOD AUROC asks whether the card's score tells the lab's own images from foreign ones.
    For a model trained on PBC, PBC test crops are its own and the fields' crops foreign; for a
    model adapted to the fields' lab (its card records an adaptation, and ``adapt`` refits the
    statistics on the site), the fields' crops are its own and the PBC crops foreign.
    """
    from wbc_edge.model import ood
    from wbc_edge.model.model import Model

    evals = {f: t for f, t, s in fields if s == on}
    with Model.load(model) as m:
        card, thr = m.card, m.threshold
        probs = {f: m.probs(crops[f]) for f in evals}
        row = field_metrics(evals, field_types(probs, card.class_names, thr))
        ood_cells, field_scores = None, None
        if card.ood is not None:  # the run's own per-cell judgement (pipeline: item.ood)
            field_scores = {
                f: ood.scores(card.ood, crops[f]) if crops[f] else np.zeros(0) for f in evals
            }
            ood_cells = {f: sc > card.ood.threshold for f, sc in field_scores.items()}
        row["immature_alarm"] = _immature_alarm(probs, card, thr, ood_cells)
        cells = [c for f in evals for c in crops[f]]
        if pbc_crops is not None and cells:
            p_in = m.probs(pbc_crops)
            p_out = np.concatenate([probs[f] for f in evals if len(probs[f])])
            row["ood_auroc_msp"] = ood.auroc(1 - p_in.max(1), 1 - p_out.max(1))
            if field_scores is not None and card.ood is not None:
                s_pbc = ood.scores(card.ood, pbc_crops)
                s_fields = np.concatenate([field_scores[f] for f in evals])
                at_site = "adaptation" in card.extra
                row["ood_own"] = "fields" if at_site else "PBC test"
                row["ood_auroc"] = (
                    ood.auroc(s_fields, s_pbc) if at_site else ood.auroc(s_pbc, s_fields)
                )
                row["ood_share_fields"] = float(np.mean(s_fields > card.ood.threshold))
                row["ood_share_pbc_test"] = float(np.mean(s_pbc > card.ood.threshold))
    if pbc:
        from wbc_edge.kd.evaluate import predict

        pr = predict(model, pbc, "test")
        row["pbc_test_accuracy"] = float((pr.probs.argmax(1) == pr.y).mean())
    return row


def learning_curve(
    model: str | Path,
    root: Path,
    fields: list[tuple[str, str, str]],
    crops: dict[str, list],
    pbc: str | Path | None,
    sizes: Sequence[str],
    seeds: Sequence[int],
    steps: int,
    save_all: str | Path | None,
    log,
    on: str = "eval",
    stain_norm: str | None = None,
    lr: float | None = None,
    teacher: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Adapt on growing subsets of the adapt pool; score each on the ``on`` fields.

    ``teacher`` (adapt --teacher) has seen the whole pool: use it for the "all" point only,
    or a smaller point learns from fields outside its subset."""
    from wbc_edge.kd.adapt import adapt_model, read_site
    from wbc_edge.model.card import ModelCard

    pool = [(f, t) for f, t, s in fields if s == "adapt"]
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        card = _card(model)
        for size in sizes:
            n = len(pool) if size == "all" else int(size)
            if n == 0:
                row = score_row(model, root, fields, crops, None, on=on)
                points.append({"fields": 0, "pool_fields": 0, "seed": None, **_curve_part(row)})
                continue
            for seed in seeds:
                rng = np.random.default_rng(1000 + seed)
                subset = _stratified(pool, min(n, len(pool)), rng)
                site = read_site(root, card, fields=subset)
                out = Path(tmp) / f"adapted-{size}-{seed}.pt"
                t0 = time.time()
                new: ModelCard = adapt_model(
                    model,
                    site,
                    out,
                    steps=steps,
                    pbc=pbc,
                    seed=seed,
                    stain_norm=stain_norm,
                    teacher=teacher,
                    **({"lr": lr} if lr else {}),
                )
                row = score_row(out, root, fields, crops, None, on=on)
                points.append(
                    {
                        "fields": len(site.fields),  # used: the reader skips unusable ones
                        "pool_fields": min(n, len(pool)),  # asked of the adapt pool
                        "crops": len(site.labels),
                        "seed": seed,
                        "adapt_seconds": round(time.time() - t0, 1),
                        **_curve_part(row),
                    }
                )
                log(
                    f"curve {size} fields seed {seed}: accuracy "
                    f"{100 * row['field_accuracy']:.1f}% "
                    f"macro recall {row['macro_recall_NELM']:.2f}"
                )
                if size == "all" and seed == seeds[0] and save_all:
                    Path(save_all).parent.mkdir(parents=True, exist_ok=True)
                    Path(save_all).write_bytes(out.read_bytes())
                    del new
    return points


def _curve_part(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("field_accuracy", "macro_recall_NELM", "recall", "immature_alarm")
    return {k: row[k] for k in keys}


def _stratified(pool: list[tuple[str, str]], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` fields of the pool in the pool's type proportions, each type at least once."""
    by_type: dict[str, list[str]] = {}
    for f, t in pool:
        by_type.setdefault(t, []).append(f)
    take = {t: max(1, int(round(n * len(v) / len(pool)))) for t, v in by_type.items()}
    while sum(take.values()) > n:
        biggest = max(take, key=lambda t: take[t])
        take[biggest] -= 1
    out = []
    for t, names in sorted(by_type.items()):
        out += [names[i] for i in rng.permutation(len(names))[: min(take[t], len(names))]]
    return sorted(out)


def _card(model: str | Path):  # noqa: ANN202
    from wbc_edge.model.model import Model

    with Model.load(model) as m:
        return m.card


def training_scale(card, pbc: str | Path | None):  # noqa: ANN001, ANN201
    """The crop scale of the model's training crops: its card's, else measured on ``pbc``'s
    train split (the data it was trained on), else None (box + margin)."""
    if card.preprocess.crop_scale is not None:
        return card.preprocess.crop_scale
    if pbc is None:
        return None
    from wbc_edge.data.manifest import read_manifest
    from wbc_edge.model.scale import measure_files

    return measure_files([str(r.path) for r in read_manifest(pbc, "train")])


def write_results(report: dict[str, Any], out: Path, name: str) -> tuple[Path, Path]:
    """``out/name.json`` and ``out/name.md`` through the project's record writer."""
    from wbc_edge.records import write_record

    return write_record(out / name, report, markdown(report))


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f}%"


def _num(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


_ROW_HEADER = (
    "row",
    "model",
    "stain norm.",
    "crops",
    "field-type accuracy",
    "macro recall N/E/L/M",
    "immature alarm",
    "OOD AUROC",
    "OOD: own images",
    "(max-softmax)",
    "PBC test accuracy",
)


def _row_cells(name: str, r: dict[str, Any]) -> list[str]:
    return [
        name,
        f"`{r['model']}`",
        r.get("stain_norm") or "as card",
        r["crops"],
        _pct(r["field_accuracy"]),
        _num(r["macro_recall_NELM"]),
        "yes" if r["immature_alarm"] else "no",
        _num(r.get("ood_auroc")),
        r.get("ood_own", "PBC test" if r.get("ood_auroc") is not None else "n/a"),
        _num(r.get("ood_auroc_msp")),
        _pct(r.get("pbc_test_accuracy")),
    ]


def _stamp(r: dict[str, Any]) -> str:
    if "command" not in r:
        return ""
    load = r.get("load_average")
    return (
        f"`{r['command']}`; {r.get('machine', '?')}, load average "
        f"{load if load is not None else '?'}; {r.get('date', '?')}"
        + (f"; {r['seconds']} s" if "seconds" in r else "")
    )


def markdown(report: dict[str, Any]) -> str:
    from wbc_edge.records import markdown_table

    rows = report.get("rows", {})
    lines = [
        "# Another lab's microscope: bccd-smears evaluation fields",
        "",
        f"{report.get('eval_fields', '?')} held-out evaluation fields of bccd-smears (split in "
        "`benchmarks/results/bccd-split.csv`; never adapted on, no setting chosen on them). A "
        "field's type is the dominant class of its counted cells. Macro recall is over "
        "Neutrophil, Eosinophil, Lymphocyte and Monocyte. OOD AUROC: the card's appearance "
        "score separating the model's own images (PBC test crops; for an adapted model the "
        "site's evaluation-field crops) from foreign ones (the other set); max-softmax beside "
        "it. Stain norm.: the stain normalisation put into the card for the row (reference: "
        "the PBC train crops), or the card's own.",
        "",
        markdown_table(_ROW_HEADER, [_row_cells(n, r) for n, r in rows.items()]),
    ]
    val_rows = report.get("val_rows", {})
    if val_rows:
        lines += [
            "",
            "## Scored on the 30 validation fields (for choosing settings; not the result)",
            "",
            markdown_table(_ROW_HEADER, [_row_cells(n, r) for n, r in val_rows.items()]),
        ]
    for name, r in {**rows, **val_rows}.items():
        types = sorted({p for row in r["confusion"].values() for p in row})
        lines += ["", f"Confusion of {name} (rows: BCCD type, columns: predicted):", ""]
        lines.append(
            markdown_table(
                ["type", *types],
                [[t, *(row.get(p, 0) for p in types)] for t, row in sorted(r["confusion"].items())],
            )
        )
    options = report.get("stain_options")
    if options:
        lines += [
            "",
            "## Stain normalisation: which pixels the statistics are taken over (zero-shot)",
            "",
            "Reinhard in Lab towards the PBC train crops' statistics, put in front of models "
            "trained without it. none: off; crop / unstained: the crop's own statistics over all "
            "its pixels / over its unstained (background and red-cell) pixels, the runtime's "
            "options; field-*: the whole field's statistics (PBC crops: their own), which "
            "the one-crop transform cannot do, measured to see whether it would be worth it. "
            "val: the 30 validation fields (the choice), eval: the 97 held-out fields.",
            "",
        ]
        table = []
        for key, r in options["results"].items():
            model, opt = (part.strip() for part in key.split("|"))
            table.append(
                [
                    f"`{model}`",
                    opt,
                    _pct(r["val"]["acc"]),
                    _num(r["val"]["macro"]),
                    _pct(r["eval"]["acc"]),
                    _num(r["eval"]["macro"]),
                    "yes" if r["eval"]["alarm"] else "no",
                    _pct(r["pbc_test"]),
                ]
            )
        lines.append(
            markdown_table(
                [
                    "model",
                    "statistics over",
                    "val accuracy",
                    "val macro",
                    "eval accuracy",
                    "eval macro",
                    "immature alarm (eval)",
                    "PBC test",
                ],
                table,
            )
        )
        lines += ["", f"Measured: {_stamp(options)}."]
    for title, curve in report.get("curves", {}).items():
        on = curve.get("scored_on", "eval")
        lines += [
            "",
            f"## {title}: `wbc-edge adapt` learning curve",
            "",
            f"From `{curve['model']}`, {curve['steps']} steps"
            + (f", lr {curve['lr']}" if curve.get("lr") else "")
            + (f", stain normalisation {curve['stain_norm']}" if curve.get("stain_norm") else "")
            + (f", taught by `{curve['teacher']}`" if curve.get("teacher") else "")
            + f", seeds {', '.join(map(str, curve['seeds']))}; scored on the "
            + ("evaluation" if on == "eval" else "validation")
            + " fields.",
            "",
        ]
        # One row per requested pool size: a draw can hold a field fewer (one the reader skips).
        by_n: dict[int, list] = {}
        for pt in curve["points"]:
            by_n.setdefault(pt.get("pool_fields", pt["fields"]), []).append(pt)
        table = []
        for n, ps in sorted(by_n.items()):
            a = np.array([pt["field_accuracy"] for pt in ps])
            m = np.array([pt["macro_recall_NELM"] for pt in ps])
            used = sorted({pt["fields"] for pt in ps})
            table.append(
                [
                    n,
                    f"{used[0]}-{used[-1]}" if used[0] != used[-1] else used[0],
                    f"{100 * a.mean():.1f} ± {100 * a.std():.1f}%",
                    f"{m.mean():.3f} ± {m.std():.3f}",
                    len(ps),
                ]
            )
        header = ["adapt pool fields", "fields used", "field-type accuracy (mean ± sd)"]
        lines.append(markdown_table([*header, "macro recall N/E/L/M", "runs"], table))
        if _stamp(curve):
            lines += ["", f"Measured: {_stamp(curve)}."]
    lines += [
        "",
        f"Models: zero-shot `{report['models'].get('zero_shot')}`, adapted "
        f"`{report['models'].get('adapted')}`.",
        "",
        "Rows measured:",
        "",
    ]
    lines += [
        f"- {n}: {_stamp(r) or 'before rows carried their command'}"
        for n, r in {**rows, **val_rows}.items()
    ]
    if report.get("notes"):
        lines += ["", report["notes"]]
    lines.append("")
    return "\n".join(lines)


def with_stain(model: Path, pbc: Path | None, over: str, folder: Path, log) -> Path:
    """A copy of checkpoint ``model`` whose card declares stain normalisation ``over`` (reference:
    ``pbc``'s train crops, as training and ``adapt`` fit it), written into ``folder``."""
    from wbc_edge.kd.adapt import stain_preprocess
    from wbc_edge.kd.checkpoint import read_checkpoint, save_checkpoint_payload
    from wbc_edge.model.card import ModelCard

    if Path(model).suffix != ".pt":
        raise UserError(f"--stain-norm needs a checkpoint (.pt), not {model}")
    payload = read_checkpoint(model)
    card = ModelCard.from_dict(payload["card"])
    card.preprocess = stain_preprocess(card.preprocess, over, pbc, log)
    out = folder / f"{Path(model).stem}-stain-{over}.pt"
    save_checkpoint_payload(out, {**payload, "card": card.to_dict()})
    return out


def run_cross_lab(
    model: Path,
    row: str,
    fields_root: Path,
    split_path: Path,
    pbc: Path | None,
    crop: str,
    curve: bool,
    sizes: Sequence[str],
    seeds: Sequence[int],
    steps: int,
    save_adapted: Path | None,
    out: Path,
    name: str,
    log,
    on: str = "eval",
    stain_norm: str | None = None,
    lr: float | None = None,
    teacher: str | Path | None = None,
) -> dict[str, Any]:
    """Score ``model`` as ``row`` (and the curve) on the ``on`` fields, merge into
    ``out/name.json`` and rewrite ``out/name.md`` (through :mod:`wbc_edge.records`).

    ``stain_norm`` scores the model with that stain normalisation put into its card (fitted
    on ``pbc``); with ``curve`` it is the adaptation's (``adapt --stain-norm``) instead.
    """
    from wbc_edge import records

    if on not in ("eval", "val"):
        raise UserError(f"--score-on {on}: use eval or val")
    tmp = tempfile.TemporaryDirectory()
    scored = model
    if stain_norm is not None and not curve:
        scored = with_stain(model, pbc, stain_norm, Path(tmp.name), log)
    card = _card(scored)
    if not split_path.is_file():
        write_field_split(make_field_split(fields_root, card.class_names), split_path)
        log(f"wrote the field split {split_path}")
    fields = read_field_split(split_path)
    crop_scale = training_scale(card, pbc) if crop == "scale" else None
    fov = crop_scale.fov_rbc if crop_scale else None
    log(f"cropping at {f'{fov:.2f} red-cell diameters' if fov else 'box + 15%'}")
    t0 = time.time()
    crops = field_crops(fields_root, [f for f, _, s in fields if s == on], crop_scale)
    pbc_crops = None
    if pbc is not None and on == "eval" and not curve:  # choosing settings needs neither
        from wbc_edge.data.manifest import read_manifest
        from wbc_edge.model.labelled import read_labelled

        pbc_crops = [read_labelled(r.path, str(pbc)) for r in read_manifest(pbc, "test")]
    path = out / f"{name}.json"
    report = json.loads(path.read_text()) if path.is_file() else {"rows": {}, "models": {}}
    if "curve" in report:  # one curve per file before curves were named by their row
        old = report.pop("curve")
        report.setdefault("curves", {})[f"curve of {old['model']}"] = old
    stamp = {
        "command": records.command_line(),
        "machine": records.machine_line(),
        "load_average": records.load_average(),
        "date": records.utc_date(),
    }
    if curve:
        points = learning_curve(
            model,
            fields_root,
            fields,
            crops,
            pbc,
            sizes,
            seeds,
            steps,
            save_adapted,
            log,
            on=on,
            stain_norm=stain_norm,
            lr=lr,
            teacher=teacher,
        )
        settings = {
            "model": str(model),
            "scored_on": on,
            "steps": steps,
            "lr": lr,
            "stain_norm": stain_norm,
            "teacher": str(teacher) if teacher else None,
        }
        earlier = report.setdefault("curves", {}).get(row)
        if earlier and all(earlier.get(k) == v for k, v in settings.items()):
            # The same curve measured in parts (a slow machine): a rerun point replaces its own.
            def key(pt: dict[str, Any]) -> tuple:  # the requested pool size and the seed
                return pt.get("pool_fields", pt["fields"]), pt["seed"]

            new_keys = {key(pt) for pt in points}
            points = [pt for pt in earlier["points"] if key(pt) not in new_keys] + points
            seeds = sorted({*earlier["seeds"], *seeds})
        report["curves"][row] = {
            **settings,
            "seeds": list(seeds),
            "points": points,
            "seconds": round(time.time() - t0, 1),
            **stamp,
        }
        if save_adapted:
            report["models"]["adapted"] = str(save_adapted)
    else:
        result = score_row(
            scored, fields_root, fields, crops, pbc if on == "eval" else None, pbc_crops, on=on
        )
        result.update(
            model=str(model),
            stain_norm=stain_norm,
            scored_on=on,
            crops=f"{fov:.2f} RBC" if fov else "box+15%",
            seconds=round(time.time() - t0, 1),
            **stamp,
        )
        report["rows" if on == "eval" else "val_rows"] = {
            **report.get("rows" if on == "eval" else "val_rows", {}),
            row: result,
        }
        if on == "eval":
            report["eval_fields"] = result["fields"]
    report["models"].setdefault("zero_shot", None)
    report.update(stamp)
    write_results(report, out, name)
    tmp.cleanup()
    return report


def cross_lab(
    model: Annotated[Path, typer.Option(help="The model to score (.pt, .onnx, .engine).")],
    row: Annotated[str, typer.Option(help="Name of the table row (e.g. 'zero-shot').")],
    fields: Annotated[Path, typer.Option(help="Another lab's VOC fields with labels.csv.")] = Path(
        "../shared/data/bccd-smears"
    ),
    split: Annotated[
        Path, typer.Option(help="The fixed adapt/val/eval split of those fields (made if absent).")
    ] = Path("benchmarks/results/bccd-split.csv"),
    pbc: Annotated[
        Path | None,
        typer.Option(
            help="The model's training manifest: PBC test accuracy, OOD in-distribution "
            "crops, the field of view of old cards, rows mixed into adapt."
        ),
    ] = Path("benchmarks/results/pbc9-split.csv"),
    crops: Annotated[
        str, typer.Option(help="scale: the card's field of view in red cells; box: box + 15%.")
    ] = "scale",
    curve: Annotated[bool, typer.Option("--curve", help="Also the adapt learning curve.")] = False,
    sizes: Annotated[str, typer.Option(help="Curve: adapt-pool fields per point.")] = ",".join(
        CURVE_SIZES
    ),
    seeds: Annotated[str, typer.Option(help="Curve: seeds per point.")] = "0,1,2",
    steps: Annotated[int, typer.Option(help="Curve: adapt steps per run.")] = ADAPT_STEPS,
    lr: Annotated[
        float | None,
        typer.Option(help=f"Curve: adapt's peak learning rate [default: {ADAPT_LR}]."),
    ] = None,
    stain_norm: Annotated[
        str | None,
        typer.Option(
            "--stain-norm",
            help="Score MODEL with this stain normalisation put into its card (unstained, crop "
            "or none; reference: the --pbc train crops); with --curve, adapt with it.",
        ),
    ] = None,
    score_on: Annotated[
        str,
        typer.Option(
            "--score-on",
            help="eval: the held-out fields (the result); val: the 30 validation fields of the "
            "adapt pool, for choosing settings.",
        ),
    ] = "eval",
    save_adapted: Annotated[
        Path | None,
        typer.Option(help="Curve: keep the model adapted on all pool fields (seed 0) here."),
    ] = None,
    zero_shot: Annotated[
        bool, typer.Option("--zero-shot", help="Record MODEL as models.zero_shot.")
    ] = False,
    adapted: Annotated[
        bool,
        typer.Option(
            "--adapted", help="Record MODEL as models.adapted (the committed adapted model)."
        ),
    ] = False,
    teacher: Annotated[
        Path | None,
        typer.Option(
            help="Curve: adapt --teacher, a model adapted on the whole pool (so: --sizes all)."
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            help="Results folder (the project's own records: --out benchmarks/results, in a "
            "checkout)."
        ),
    ] = Path(CROSS_LAB_OUT),
    name: Annotated[str, typer.Option(help="Results file name.")] = "cross-lab",
) -> None:
    """Field-type accuracy, macro recall, confusion, OOD AUROC and PBC accuracy on another
    lab's fields; rows accumulate in OUT/NAME.json and .md."""
    from wbc_edge.console import console
    from wbc_edge.errors import UserError, require_dir

    require_dir(fields, "fields folder", "pass --fields with JPEGImages/ and labels.csv")
    if crops not in ("scale", "box"):
        raise UserError(f"--crops {crops}: use scale or box")
    if zero_shot and adapted:
        raise UserError("--zero-shot and --adapted name two different models: pass one")
    if adapted and curve:
        raise UserError("--adapted records MODEL itself: with --curve, --save-adapted names it")
    if teacher is not None and (not curve or sizes.strip() != "all"):
        raise UserError(
            "--teacher is adapt's, for the curve's 'all' point (it has seen the whole pool): "
            "pass --curve --sizes all"
        )
    say = lambda m: console.print(m, highlight=False, soft_wrap=True)  # noqa: E731
    report = run_cross_lab(
        model,
        row,
        fields,
        split,
        pbc,
        crops,
        curve,
        [s.strip() for s in sizes.split(",") if s.strip()],
        [int(s) for s in seeds.split(",") if s.strip()],
        steps,
        save_adapted,
        out,
        name,
        say,
        on=score_on,
        stain_norm=stain_norm,
        lr=lr,
        teacher=teacher,
    )
    if zero_shot or adapted:
        report["models"]["zero_shot" if zero_shot else "adapted"] = str(model)
        write_results(report, out, name)
    if curve:
        return
    r = report["rows" if score_on == "eval" else "val_rows"][row]
    say(
        f"{row}: field-type accuracy {100 * r['field_accuracy']:.1f}% on {r['fields']} fields, "
        f"macro recall {r['macro_recall_NELM']:.3f}, "
        f"OOD AUROC {r.get('ood_auroc', float('nan')):.3f}"
        f", PBC test {100 * r.get('pbc_test_accuracy', float('nan')):.2f}% -> {out / name}.md"
    )


if __name__ == "__main__":
    typer.run(cross_lab)
