"""Calibrate a trained model: temperature and counted-cell threshold into its card.

Used at the end of every training run (the trainer's finish step, with the probabilities it
already has) and by ``wbc-edge calibrate`` for an existing checkpoint (probabilities made
through the runtime backend, as ``evaluate`` makes them). With a split manifest, fitting uses
its validation split only and the test split, when present, only reports what the fit bought
(ECE before and after, coverage and the error of counted cells). With a folder of class
folders (``--data ../shared/data/pbc9-extra``: labelled cells in no split the model was trained
or selected on), every image of it is the calibration set: the way to certify a threshold on
more cells than a validation split holds. Re-certifying a model is one command::

    wbc-edge calibrate --model M.pt --data ../shared/data/pbc9-extra --out M.pt \
        --record benchmarks/results/calibration-student
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.calibration import (
    DEFAULT_DELTA,
    DEFAULT_TARGET_ERROR,
    calibrate,
    certify_threshold,
    rescale,
    selective,
)
from wbc_edge.errors import UserError
from wbc_edge.metrics import expected_calibration_error
from wbc_edge.model.card import ModelCard

# Targets also reported (never stored) so a lab can see what its validation split can certify.
SWEEP_TARGETS = (0.01, 0.02, 0.05)


def calibrate_card(
    card: ModelCard,
    val_probs: np.ndarray,
    val_y: np.ndarray,
    test_probs: np.ndarray | None = None,
    test_y: np.ndarray | None = None,
    target_error: float = DEFAULT_TARGET_ERROR,
    delta: float = DEFAULT_DELTA,
    fitted_on: str = "val",
) -> tuple[ModelCard, dict[str, Any]]:
    """A copy of ``card`` with temperature, threshold and their provenance; plus a summary.

    ``val_probs``/``test_probs`` are the model's probabilities at the card's current
    temperature. The summary has the test ECE before/after and the test coverage and error of
    counted cells at the new threshold (when a test split is given).
    """
    if len(val_y) == 0:
        raise UserError("calibration needs a validation split: make one with `wbc-edge data split`")
    cal = calibrate(val_probs, val_y, card.temperature, target_error, delta)
    cal.fitted_on = fitted_on
    new = ModelCard.from_dict(card.to_dict())
    for key, value in cal.card_fields().items():
        setattr(new, key, value)
    thr = cal.threshold
    summary: dict[str, Any] = {
        "temperature": cal.temperature,
        "confidence_threshold": thr.threshold,
        "target_error": target_error,
        "delta": delta,
        "fitted_on": fitted_on,
        "val_nll_before": cal.val_nll_before,
        "val_nll_after": cal.val_nll_after,
        "val_coverage": thr.coverage,
        "val_counted_errors": thr.errors,
        "threshold_reason": thr.reason,
    }
    val_after = rescale(val_probs, cal.temperature / card.temperature)
    val_conf, val_ok = val_after.max(1), val_after.argmax(1) == np.asarray(val_y)
    sweep = []
    for target in SWEEP_TARGETS:
        t = certify_threshold(val_conf, val_ok, target, delta)
        sweep.append({"target_error": target, **t.to_dict()})
    summary["targets"] = sweep
    if test_probs is None:
        # The test figures of the old threshold no longer describe this card.
        for key in ("test_coverage", "test_counted_error"):
            new.metrics.pop(key, None)
    if test_probs is not None and test_y is not None and len(test_y):
        after = rescale(test_probs, cal.temperature / card.temperature)
        for row in sweep:
            on_test = selective(after, test_y, row["threshold"])
            row.update(test_coverage=on_test.coverage, test_counted_error=on_test.error)
        counted = selective(after, test_y, thr.threshold)
        summary.update(
            test_ece_before=expected_calibration_error(test_probs, test_y),
            test_ece_after=expected_calibration_error(after, test_y),
            test_coverage=counted.coverage,
            test_counted_error=counted.error,
            test_counted=counted.counted,
        )
        new.metrics.update(
            test_ece=summary["test_ece_after"],
            **(
                {"test_ece_uncalibrated": summary["test_ece_before"]}
                if not card.calibration
                # A card calibrated before (say, refitted after a preprocessing change): the
                # ECE before this fit is not the uncalibrated one; keep the original figure.
                else {"test_ece_before_refit": summary["test_ece_before"]}
            ),
            test_coverage=counted.coverage,
            test_counted_error=counted.error,
        )
    return new, summary


def summary_line(s: dict[str, Any]) -> str:
    """One line for the run log and the console."""
    thr = s["confidence_threshold"]
    text = f"calibration on {s.get('fitted_on', 'val')}: temperature {s['temperature']:.3f} (NLL "
    text += f"{s['val_nll_before']:.4f} -> {s['val_nll_after']:.4f}); "
    if thr is None:
        text += f"no threshold certified for {100 * s['target_error']:g}% ({s['threshold_reason']})"
    else:
        text += (
            f"threshold {thr:.4f} for counted-cell error <= {100 * s['target_error']:g}% "
            f"(delta {s['delta']:g}; coverage {100 * s['val_coverage']:.1f}% on "
            f"{s.get('fitted_on', 'val')})"
        )
    if "test_ece_after" in s:
        text += (
            f" | test ECE {s['test_ece_before']:.4f} -> {s['test_ece_after']:.4f}, coverage "
            f"{100 * s['test_coverage']:.1f}%, error of counted cells "
            f"{100 * s['test_counted_error']:.2f}%"
        )
    return text


def calibrate_checkpoint(
    model: str | Path,
    data: str | Path,
    out: str | Path | None = None,
    target_error: float = DEFAULT_TARGET_ERROR,
    delta: float = DEFAULT_DELTA,
    batch_size: int = 32,
) -> tuple[Path, dict[str, Any]]:
    """Write ``out`` (default ``<model>-calibrated.pt`` beside it): the same weights with a
    calibrated card. Probabilities come from the model's runtime backend on the manifest's
    val split (fit) and test split (report only), or on every image of a folder of class
    folders (fit; nothing to report on)."""
    from wbc_edge.data.manifest import read_manifest
    from wbc_edge.kd.checkpoint import read_checkpoint, save_checkpoint_payload
    from wbc_edge.kd.evaluate import predict

    model = Path(model)
    if model.suffix.lower() not in (".pt", ".pth"):
        raise UserError(
            f"{model}: calibrate takes a .pt checkpoint; calibrate it, then export it again"
        )
    payload = read_checkpoint(model)
    if Path(data).is_dir():  # a calibration set: every image, none of them trained on
        val, test, fitted_on = predict(model, data, None, batch_size), None, str(data)
    elif not Path(data).is_file():
        raise UserError(
            f"{data}: pass the split manifest (.csv) the model was trained on, or a folder of "
            "class folders it never trained on"
        )
    else:
        splits = {r.split for r in read_manifest(data)}
        if "val" not in splits:
            raise UserError(f"{data} has no val rows: make the split with `wbc-edge data split`")
        val = predict(model, data, "val", batch_size)
        test = predict(model, data, "test", batch_size) if "test" in splits else None
        fitted_on = "val"
    card, summary = calibrate_card(
        val.card,
        val.probs,
        val.y,
        test.probs if test else None,
        test.y if test else None,
        target_error,
        delta,
        fitted_on,
    )
    target = Path(out) if out is not None else model.with_name(f"{model.stem}-calibrated.pt")
    summary["replaced_input"] = target.resolve() == model.resolve()
    save_checkpoint_payload(target, {**payload, "card": card.to_dict()})
    return target, summary


def write_calibration_record(
    prefix: str | Path, summary: dict[str, Any], model: Path, data: Path, command: str
) -> Path:
    """``prefix``.json (the numbers, command, machine, date) and ``prefix``.md (for people),
    through the project's record writer; returns the ``.md``."""
    from wbc_edge.records import record_header, write_record

    record = {"model": str(model), "data": str(data), **record_header(command), **summary}
    _, md = write_record(prefix, record, calibration_markdown(record))
    return md


def calibration_markdown(record: dict[str, Any]) -> str:
    """The calibration record for people: the temperature and the counted-cell thresholds."""
    from wbc_edge.records import markdown_table

    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    on_val = record.get("fitted_on", "val") == "val"
    fit_set = "val" if on_val else "calibration-set"
    fit = [
        f"{record['temperature']:.4f}",
        f"{record['val_nll_before']:.4f} -> {record['val_nll_after']:.4f}",
        f"{record['test_ece_before']:.4f} -> {record['test_ece_after']:.4f}"
        if "test_ece_after" in record
        else "n/a (no test split given)",
    ]
    thresholds = [
        [
            f"{100 * r['target_error']:g}%",
            "none" if r["threshold"] is None else f"{r['threshold']:.4f}",
            f"{r['counted']} of {r['n_val']}",
            r["errors"],
            pct(r.get("test_coverage")),
            pct(r.get("test_counted_error")),
            r["reason"],
        ]
        for r in record["targets"]
    ]
    lines = [
        f"# Calibration of `{record['model']}`",
        "",
        f"- data: `{record['data']}` ("
        + (
            "fitted on val, reported on test)"
            if record.get("fitted_on", "val") == "val"
            else "every image of it is the calibration set)"
        ),
        f"- date: {record['date']}",
        f"- machine: {record['machine']}",
        f"- command: `{record['command']}`",
        "",
        markdown_table(
            ["temperature", f"{fit_set} NLL before -> after", "test ECE before -> after"], [fit]
        ),
        "",
        f"Counted-cell threshold (Learn-then-Test, delta {record['delta']:g}; the card keeps "
        f"the {100 * record['target_error']:g}% row):",
        "",
        markdown_table(
            ["target error", "threshold", f"{fit_set} counted", f"{fit_set} errors among them"]
            + ["test coverage", "test error of counted cells", "why none"],
            thresholds,
        ),
    ]
    return "\n".join(lines) + "\n"
