"""A training run's folder: ``train.log``, ``config.yaml``, ``metrics.csv``, ``curves.png``,
``resume.pt`` and ``summary.json`` (the checkpoints themselves are :mod:`wbc_edge.kd.checkpoint`).

``resume.pt`` holds what the model checkpoint does not: the connectors, the optimizer and
scaler state, the step and the history, written atomically after each epoch so ``--resume``
continues exactly where an interrupted run stopped.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wbc_edge.console import console
from wbc_edge.errors import UserError
from wbc_edge.kd.checkpoint import torch_load


class RunLog:
    """Lines to train.log and the console (rank 0 only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def __call__(self, msg: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(f"{stamp} {msg}\n")
            console.print(msg, highlight=False, soft_wrap=True)


def write_config(out: Path, yaml_text: str) -> None:
    (out / "config.yaml").write_text(yaml_text)


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


def learnable_state(distiller: nn.Module) -> dict[str, torch.Tensor]:
    """Student + connectors (not the frozen teacher, which is reloaded from its file)."""
    return {
        k: v.detach().cpu()
        for k, v in distiller.state_dict().items()
        if not k.startswith("teacher.")
    }


def save_resume(out, distiller, optimizer, scaler, epoch, step, best, history, ema=None) -> None:  # noqa: ANN001
    payload = {
        "epoch": epoch,
        "step": step,
        "best": best,
        "history": history,
        "distiller": learnable_state(distiller),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
    }
    if ema is not None:  # the averaged student (timm ModelEmaV3), when the run keeps one
        payload["ema"] = ema.module.state_dict()
    tmp = out / "resume.pt.tmp"
    torch.save(payload, tmp)
    tmp.replace(out / "resume.pt")


def load_resume(out, distiller, optimizer, scaler, ema=None):  # noqa: ANN001, ANN202
    path = out / "resume.pt"
    if not path.is_file():
        raise UserError(f"{out} has no resume.pt: it is not a wbc-edge run folder")
    payload = torch_load(path, "resume file")
    distiller.load_state_dict(payload["distiller"], strict=False)
    if ema is not None and "ema" not in payload:
        raise UserError(f"{path} was saved without --ema: resume it without --ema")
    if ema is None and "ema" in payload:
        raise UserError(f"{path} keeps a weight average: resume it with its --ema (config.yaml)")
    if ema is not None:
        ema.module.load_state_dict(payload["ema"])
    optimizer.load_state_dict(payload["optimizer"])
    scaler.load_state_dict(payload["scaler"])
    return payload["epoch"], payload["step"], payload["best"], payload["history"]


def write_metrics(out: Path, history: list[dict[str, float]]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        w.writerows(history)


_NOT_TERMS = ("train_loss", "train_accuracy")


def plot_curves(out: Path, history: list[dict[str, float]]) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, t, b) = plt.subplots(1, 3, figsize=(15, 4))
    a.plot(ep, [h["train_loss"] for h in history], label="train (sum of losses)")
    a.plot(ep, [h["val_loss"] for h in history], label="val (cross-entropy)")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    # Each weighted term of the method (train_loss_ce, _kd, _at, _fusion, ...): whether the
    # feature terms sit at the cross-entropy's scale, and whether they fall.
    terms = [k for k in history[0] if k.startswith("train_") and k not in _NOT_TERMS]
    for k in terms:
        t.plot(ep, [h.get(k, float("nan")) for h in history], label=k.removeprefix("train_"))
    t.set_xlabel("epoch")
    t.set_ylabel("weighted loss term (train)")
    t.set_yscale("log")
    t.legend()
    b.plot(ep, [100 * h["train_accuracy"] for h in history], label="train")
    b.plot(ep, [100 * h["val_accuracy"] for h in history], label="val")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy (%)")
    b.legend()
    fig.suptitle(out.name)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)
