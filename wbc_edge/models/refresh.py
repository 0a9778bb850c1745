"""Re-export the packaged default student from a checkpoint (maintainers; needs the train and
export extras)::

    python -m wbc_edge.models.refresh wbc_edge/models/student-tinyresnet_xs.pt \\
        --data benchmarks/results/pbc9-split.csv --record benchmarks/results/student-size.md

(``make default-model`` runs exactly that.) The export is ``wbc-edge export onnx``'s own
(parity-checked against PyTorch on the manifest's val images); the card gets the provenance
(source checkpoint and its sha256, what it was trained on, the record that measured it, its
test accuracy) and the intended use, then the file replaces the previous default in
``wbc_edge/models/``. Copy a new student's ``best.pt`` over the checkpoint first (or pass it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wbc_edge.model.card import ModelCard
from wbc_edge.model.preprocess import INTERPOLATIONS
from wbc_edge.models import INTENDED_USE, MODELS_DIR

TRAINED_ON = (
    "PBC (Acevedo et al. 2020, Mendeley Data doi 10.17632/snkd93bnjr.1; normal peripheral "
    "blood cells, one lab, May-Grünwald-Giemsa, CellaVision DM96), 9 classes x 400 crops, split "
    "80/10/10 per class (benchmarks/results/pbc9-split.csv, seed 42)"
)


def trained_on_text(card: ModelCard, default: str = TRAINED_ON) -> str:
    """What the card's model was trained on, in words: its labs (from the card's training
    data, with their sources and terms), or ``default`` for a card that does not list them."""
    if not card.training_data:
        return default
    return "; ".join(
        f"{d['lab']}: {sum(d['images'].values())} crops of {len(d['classes'])} classes "
        f"({d['source'] or 'source not stated'}; {d['terms']})"
        for d in card.training_data
    )


def complete_card(card: ModelCard, data: Path) -> bool:
    """Fill what an older card lacks, measured on ``data``'s train split by the trainer's own
    functions: the crops' scale (the finder's field of view), and the appearance statistics of
    the OOD check when it has none or has them by an older method (the area-reduced
    appearance, 0.54 ms a crop against 0.09), unless the card was adapted to a site. Returns
    whether anything was added."""
    from wbc_edge.data.manifest import read_manifest
    from wbc_edge.kd.card_stats import training_ood, training_scale
    from wbc_edge.kd.run_folder import RunLog
    from wbc_edge.model import ood

    rows = read_manifest(data, "train")
    log = RunLog(None)
    changed = False
    if card.preprocess.crop_scale is None:
        card.preprocess = card.preprocess.replace(crop_scale=training_scale(rows, log))
        changed = card.preprocess.crop_scale is not None
    # An adapted card's statistics are the site's own (adapt refits them on the site's
    # crops): refitting them on the training lab would make the site warn about itself again.
    at_site = "adaptation" in card.extra
    if card.ood is None or (card.ood.method != ood.METHOD and not at_site):
        card.ood = training_ood(rows, log)
        changed = changed or card.ood is not None
    return changed


def refresh(
    checkpoint: Path,
    data: Path | None = None,
    record: str = "",
    trained_on: str | None = None,
    out_dir: Path = MODELS_DIR,
    interpolation: str | None = None,
) -> Path:
    """Export ``checkpoint`` as the default model into ``out_dir``; returns the ONNX path.

    ``interpolation`` puts another resize filter into the card (checkpoint and ONNX) before the
    export: measure what it changes first (``benchmarks/studies/interpolation_accuracy.py``),
    then calibrate the checkpoint again, since its temperature was fitted on the old pixels.
    """
    from wbc_edge.data.manifest import read_manifest
    from wbc_edge.data.scan import sha256_file
    from wbc_edge.export.onnx_export import (
        DEFAULT_OPSET,
        export_onnx,
        load_checkpoint,
        sample_inputs,
    )
    from wbc_edge.model.names import file_name

    net, card = load_checkpoint(checkpoint)
    changed = data is not None and complete_card(card, data)
    if interpolation is not None and interpolation != card.preprocess.interpolation:
        card.preprocess = card.preprocess.replace(interpolation=interpolation)
        changed = True
    if changed:
        # Keep the checkpoint and its ONNX describing the same model.
        from wbc_edge.kd.checkpoint import read_checkpoint, save_checkpoint_payload

        save_checkpoint_payload(checkpoint, {**read_checkpoint(checkpoint), "card": card.to_dict()})
        print(f"{checkpoint}: card updated (scale, OOD statistics, resize filter)")
    card.extra["role"] = "student"
    accuracy = card.metrics.get("test_accuracy")
    card.extra["provenance"] = {
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sha256_file(checkpoint),
        "trained_on": trained_on or trained_on_text(card),
        "record": record,
        "test_accuracy": accuracy,
    }
    card.extra["intended_use"] = INTENDED_USE
    rows = None
    if data is not None:
        rows = [r for r in read_manifest(data, "val") if Path(r.path).is_file()] or None
    sample, source = sample_inputs(card, rows, 64)
    out = out_dir / file_name(card, "onnx")
    report = export_onnx(net, card, out, DEFAULT_OPSET, sample, source)
    for old in out_dir.glob("student-*.onnx"):
        if old != out:
            old.unlink()
    print(f"wrote {out}: {report.line()}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wbc_edge.models.refresh", description=__doc__)
    parser.add_argument("checkpoint", type=Path, help="the student's .pt (its card is kept)")
    parser.add_argument("--data", type=Path, help="split manifest: parity check on its val images")
    parser.add_argument("--record", default="", help="results file that measured this student")
    parser.add_argument(
        "--trained-on", default=None, help="what it was trained on [default: the card's labs]"
    )
    parser.add_argument("--out-dir", type=Path, default=MODELS_DIR, help="where the ONNX goes")
    parser.add_argument(
        "--interpolation",
        choices=INTERPOLATIONS,
        help="put this resize filter into the card (measure it first; calibrate again after)",
    )
    args = parser.parse_args(argv)
    refresh(
        args.checkpoint, args.data, args.record, args.trained_on, args.out_dir, args.interpolation
    )


if __name__ == "__main__":
    main()
