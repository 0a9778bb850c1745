"""The end of a training run: the kept checkpoint calibrated on val and scored on test.

The kept model (``best.pt`` or ``last.pt``, ``--keep``) gets its temperature and counted-cell
threshold (:mod:`wbc_edge.kd.calibrate`) and its test figures (overall and per lab) in its card;
with ``--ema`` the final un-averaged weights are scored beside it; ``summary.json`` records it all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wbc_edge.kd.checkpoint import load_model, save_checkpoint
from wbc_edge.kd.config import TrainConfig
from wbc_edge.kd.data import BatchLoader
from wbc_edge.kd.run_folder import RunLog, write_summary
from wbc_edge.kd.run_teachers import teacher_members


def _score_raw(model, loader, arrays, names, device) -> dict[str, float]:  # noqa: ANN001
    """Accuracy and macro-F1 on val and test of the final un-averaged weights."""
    from wbc_edge.kd.evaluate import predict_loader
    from wbc_edge.metrics import classification_report

    scores: dict[str, float] = {}
    for split in ("val", "test"):
        if split in arrays:
            rep = classification_report(*predict_loader(model, loader(split), device), names)
            scores[f"{split}_accuracy"], scores[f"{split}_macro_f1"] = rep.accuracy, rep.macro_f1
    return scores


def finish_run(
    out: Path,
    cfg: TrainConfig,
    names: list[str],
    arrays: dict[str, Any],
    targets: dict[str, list[int]],
    loader: Callable[[str], BatchLoader],
    device: torch.device,
    best: dict[str, Any],
    n_student: int,
    n_extra: int,
    wall: float,
    log: RunLog,
    raw: tuple[nn.Module, float] | None = None,
    labs: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Calibrate the kept checkpoint (best.pt or last.pt, ``cfg.keep``) on val, score it on
    test, store the numbers in its card, write summary.json. ``raw``: with ``--ema``, the
    final un-averaged student and the decay the warm-up had reached, so the record shows what
    the average bought and how long it was."""
    from wbc_edge.kd.calibrate import calibrate_card, summary_line
    from wbc_edge.kd.evaluate import per_lab_scores, predict_loader
    from wbc_edge.metrics import classification_report

    summary: dict[str, Any] = {
        "run": out.name,
        "kind": cfg.kind,
        "model": cfg.model,
        "method": cfg.method,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "best_epoch": best["epoch"],
        "best_val_accuracy": best["val_accuracy"],
        "kept": cfg.keep,
        "ema": cfg.ema,
        "teachers": teacher_members(cfg) if cfg.kind == "distill" else [],
        "student_parameters": n_student,
        "extra_parameters": n_extra,
        "wall_seconds": round(wall, 1),
        "threads": torch.get_num_threads(),
    }
    kept_path = out / f"{cfg.keep}.pt"
    if kept_path.exists():
        from wbc_edge.kd.checkpoint import read_checkpoint

        payload = read_checkpoint(kept_path)
        summary["kept_epoch"] = payload["epoch"]
        model, card = load_model(kept_path)
        model.to(device)
        val_probs, val_y = predict_loader(model, loader("val"), device)
        test_probs, test_y = (
            predict_loader(model, loader("test"), device) if "test" in arrays else (None, None)
        )
        summary["kept_val_accuracy"] = classification_report(val_probs, val_y, names).accuracy
        card, cal = calibrate_card(
            card, val_probs, val_y, test_probs, test_y, cfg.target_error, cfg.calibration_delta
        )
        log(summary_line(cal))
        summary["calibration"] = cal
        if test_probs is not None:
            # Accuracy and F1 do not depend on the temperature; ECE is the calibrated one.
            rep = classification_report(test_probs, test_y, names)
            card.metrics.update(test_accuracy=rep.accuracy, test_macro_f1=rep.macro_f1)
            summary.update(
                test_accuracy=rep.accuracy,
                test_macro_f1=rep.macro_f1,
                test_ece=cal["test_ece_after"],
                test_ece_uncalibrated=cal["test_ece_before"],
            )
            test_labs = (labs or {}).get("test") or []
            # evaluate's own per-lab figures (accuracy, macro-F1, counted share and error)
            per_lab = (
                per_lab_scores(test_probs, test_y, test_labs, names, card.confidence_threshold)
                if any(test_labs)
                else {}
            )
            if per_lab:
                summary["test_per_lab"] = per_lab
                for lab, m in per_lab.items():
                    card.metrics[f"test_accuracy_{lab}"] = m["accuracy"]
                log(
                    "test per lab: "
                    + ", ".join(
                        f"{lab} {100 * m['accuracy']:.2f}% of {m['images']}"
                        for lab, m in per_lab.items()
                    )
                )
            log(
                f"{cfg.keep} epoch {payload['epoch']} ({kept_path.name}): "
                f"test accuracy {100 * rep.accuracy:.2f}% "
                f"macro-F1 {100 * rep.macro_f1:.2f}% ECE {cal['test_ece_after']:.4f} "
                f"(uncalibrated {cal['test_ece_before']:.4f})"
            )
        save_checkpoint(kept_path, model, card, payload["epoch"])
    if raw is not None:
        raw_model, final_decay = raw
        summary["without_ema"] = _score_raw(raw_model, loader, arrays, names, device)
        summary["ema_final_decay"] = final_decay
        log(
            f"weight average: decay {final_decay:.5f} at the last step (warm-up toward "
            f"{cfg.ema}); final epoch without it: "
            + ", ".join(f"{k} {100 * v:.2f}%" for k, v in summary["without_ema"].items())
        )
    log(f"wall time {wall:.0f}s")
    write_summary(out, summary)
    return summary
