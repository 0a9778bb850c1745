"""``wbc-edge evaluate`` and ``wbc-edge calibrate``: score a trained model, fit its calibration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wbc_edge.calibration import DEFAULT_DELTA, DEFAULT_TARGET_ERROR
from wbc_edge.kd.cli_options import BatchOpt


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate(
        model: Annotated[
            list[Path],
            typer.Option(
                "--model",
                metavar="<path>",
                help="Any model artifact (.pt, .onnx, .engine). Repeat it to score an ensemble: "
                "the mean of the models' calibrated probabilities, each model run through its "
                "own backend at its own card's input size and preprocessing.",
            ),
        ],
        data: Annotated[
            Path | None,
            typer.Option(
                "--data",
                help="Split manifest CSV, or a folder of class folders [required unless --fields].",
                show_default=False,
            ),
        ] = None,
        split: Annotated[
            str | None,
            typer.Option(
                "--split",
                help="Split to score: a manifest's (ignored for a folder) [default: test], or "
                "with --field-split its adapt, val or eval fields [default: eval].",
                show_default=False,
            ),
        ] = None,
        fields: Annotated[
            Path | None,
            typer.Option(
                "--fields",
                help="Whole smear fields instead (JPEGImages/ + labels.csv of image,category): "
                "the field type (dominant class of the cells at or above the review threshold, "
                "all found cells when none is; the OOD check is not applied, unlike run's "
                "count) against each field's label, and macro recall over Neutrophil, "
                "Eosinophil, Lymphocyte, Monocyte.",
            ),
        ] = None,
        field_split: Annotated[
            Path | None,
            typer.Option(
                "--field-split",
                help="With --fields: a fixed image,type,split file (e.g. "
                "benchmarks/results/bccd-split.csv) [default: every field of one type].",
            ),
        ] = None,
        out: Annotated[
            Path | None,
            typer.Option(
                "--out",
                help="Write metrics.json, report.md, PNG here (with --fields: fields.json, "
                "fields.md).",
            ),
        ] = None,
        batch_size: BatchOpt = None,
        tta: Annotated[
            bool,
            typer.Option(
                "--tta/--no-tta",
                help="Average over the 8 dihedral views (flips and 90-degree rotations).",
            ),
        ] = False,
    ) -> None:
        """Accuracy, macro P/R/F1, per-class report, confusion matrix, ECE, and the coverage and
        error of counted cells at the card's confidence threshold."""
        from wbc_edge.console import console
        from wbc_edge.errors import UserError
        from wbc_edge.kd.evaluate import evaluate as run_evaluate

        if (data is None) == (fields is None):
            raise UserError("give --data (cells) or --fields (whole smear fields), one of them")
        if fields is not None:
            if tta or batch_size is not None:
                raise UserError("--tta and --batch-size score cells (--data), not --fields")
            _evaluate_fields(model, fields, field_split, split, out)
            return
        if field_split is not None:
            raise UserError("--field-split goes with --fields")
        result = run_evaluate(model, data, split or "test", out, batch_size or 32, 8 if tta else 1)
        for member in result.get("members", []):
            console.print(
                f"  member {Path(member['model']).name}: accuracy "
                f"{100 * member['accuracy']:.2f}%  macro-F1 {100 * member['macro_f1']:.2f}%  "
                f"ECE {member['ece']:.4f}",
                highlight=False,
                soft_wrap=True,
            )
        console.print(
            f"{' + '.join(m.name for m in model)}: accuracy {100 * result['accuracy']:.2f}%  "
            "macro-F1 "
            f"{100 * result['macro_f1']:.2f}%  ECE {result['ece']:.4f}  coverage "
            f"{100 * result['coverage']:.1f}% (error of counted cells "
            f"{100 * result['counted_error']:.2f}%)  "
            f"({result['num_images']} images)" + (f" -> {out}" if out else ""),
            highlight=False,
            soft_wrap=True,
        )

    @app.command("calibrate")
    def calibrate(
        model: Annotated[Path, typer.Option("--model", help="Trained checkpoint (.pt).")],
        data: Annotated[
            Path, typer.Option("--data", help="Split manifest: fitted on val, reported on test.")
        ],
        out: Annotated[
            Path | None,
            typer.Option(
                "--out",
                help="New checkpoint [default: MODEL-calibrated.pt]; MODEL itself replaces it.",
            ),
        ] = None,
        target_error: Annotated[
            float,
            typer.Option(
                "--target-error", help="Error allowed among counted cells (sets the threshold)."
            ),
        ] = DEFAULT_TARGET_ERROR,
        delta: Annotated[
            float,
            typer.Option("--delta", help="Chance that the validation certificate is wrong."),
        ] = DEFAULT_DELTA,
        batch_size: BatchOpt = None,
        record: Annotated[
            Path | None,
            typer.Option(
                "--record", help="Also write the numbers to RECORD.md and RECORD.json (results)."
            ),
        ] = None,
    ) -> None:
        """Fit temperature scaling and the counted-cell confidence threshold on the val split
        and write them into a new checkpoint's card (export it again to carry them on)."""
        from wbc_edge.console import console
        from wbc_edge.errors import UserError
        from wbc_edge.kd.calibrate import calibrate_checkpoint, summary_line

        if not 0 < target_error < 1 or not 0 < delta < 1:
            raise UserError("--target-error and --delta must lie strictly between 0 and 1")
        path, summary = calibrate_checkpoint(
            model, data, out, target_error, delta, batch_size or 32
        )
        console.print(summary_line(summary), highlight=False, soft_wrap=True)
        note = " (replaced the input checkpoint)" if summary["replaced_input"] else ""
        console.print(f"calibrated checkpoint: {path}{note}", highlight=False, soft_wrap=True)
        if record is not None:
            import shlex

            from wbc_edge.kd.calibrate import write_calibration_record

            words = ["calibrate", "--model", model, "--data", data, "--out", path]
            words += ["--target-error", target_error, "--delta", delta, "--record", record]
            command = "wbc-edge " + " ".join(shlex.quote(str(w)) for w in words)
            written = write_calibration_record(record, summary, model, data, command)
            console.print(f"record: {written}", highlight=False, soft_wrap=True)


def _evaluate_fields(
    model: list[Path], fields: Path, split_path: Path | None, split: str | None, out: Path | None
) -> None:
    from wbc_edge.console import console
    from wbc_edge.errors import UserError
    from wbc_edge.kd.fields import evaluate_fields

    if len(model) != 1:
        raise UserError("--fields scores one --model at a time")
    if split is not None and split_path is None:
        raise UserError("--split with --fields needs --field-split (which fields are which)")
    r = evaluate_fields(model[0], fields, split_path, split or "eval", out)
    console.print(
        f"{model[0].name} on {r['fields']} fields ({r['scored']}): field type right "
        f"{100 * r['field_accuracy']:.1f}%, macro recall (N, E, L, M) "
        f"{r['macro_recall_NELM']:.3f}" + (f" -> {out / 'fields.md'}" if out else ""),
        highlight=False,
        soft_wrap=True,
    )
