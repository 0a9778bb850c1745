"""One training loop for the teacher and for every distillation method.

The loop knows nothing about methods: it runs a distiller (``CE`` for teacher training, built
by :mod:`wbc_edge.kd.run_setup` with the run's card, rows, optimizer and weight average), calls
``forward_train`` and sums the returned loss dict (mdistiller's design). Around it:

* AdamW, linear warm-up then cosine decay (set per step, so the schedule state is one number),
  label smoothing (passed to the distiller), AMP on CUDA only;
* determinism: every epoch's shuffling, augmentation and dropout draw from generators seeded
  by (seed, epoch), so ``--resume`` repeats exactly what an uninterrupted run would have done;
* a run folder (:mod:`wbc_edge.kd.run_folder`): ``config.yaml`` (the resolved
  :class:`~wbc_edge.kd.config.TrainConfig`), ``metrics.csv``, ``curves.png``,
  ``train.log``, ``best.pt`` (best validation epoch), ``last.pt`` and ``resume.pt`` (optimizer,
  connectors, step); after training the kept one (``--keep``) is calibrated on the validation split
  (temperature and counted-cell threshold), scored on the test split, and its card gets
  ``test_accuracy`` / ``test_macro_f1`` / ECE before and after (:mod:`wbc_edge.kd.run_finish`);
* ``--ema``: best.pt / last.pt hold an exponential moving average of the weights (timm's
  ModelEmaV3), and the summary scores the final un-averaged weights beside it;
* DDP when started by ``torchrun`` (``WORLD_SIZE`` > 1, :mod:`wbc_edge.kd.distributed`): each
  rank trains on its share, rank 0 validates and writes.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wbc_edge.console import progress
from wbc_edge.data.labs import lab_classes, present_mask, sample_weights, training_data
from wbc_edge.data.manifest import class_names as manifest_classes
from wbc_edge.errors import UserError
from wbc_edge.kd.checkpoint import save_checkpoint
from wbc_edge.kd.config import TrainConfig
from wbc_edge.kd.data import (
    NO_JITTER,
    BatchLoader,
    augment_preset,
    decode_cached,
)
from wbc_edge.kd.distributed import TrainStep, barrier, init_distributed
from wbc_edge.kd.run_finish import finish_run
from wbc_edge.kd.run_folder import (
    RunLog,
    load_resume,
    plot_curves,
    save_resume,
    write_config,
    write_metrics,
)
from wbc_edge.kd.run_setup import (
    build_for_config,
    make_ema,
    make_optimizer,
    run_card,
    training_rows,
)
from wbc_edge.kd.run_teachers import teacher_caches


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up to ``base`` then cosine decay to 1% of it."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def train(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) one training run; returns the summary written to ``summary.json``.

    A new run that fails before its first checkpoint (bad data, a missing teacher) removes the
    folder it created, so nothing is left that looks like a run but holds no model.
    """
    out = Path(cfg.out)
    fresh = not resume and not out.exists()
    try:
        return _train(cfg, resume)
    except BaseException:
        if fresh and not (out / "last.pt").exists() and os.environ.get("RANK", "0") == "0":
            shutil.rmtree(out, ignore_errors=True)
        raise


def _train(cfg: TrainConfig, resume: bool) -> dict[str, Any]:
    t_start = time.time()
    device = _device(cfg)
    dist_info = init_distributed(device.type)
    if device.type == "cuda" and dist_info.world_size > 1:
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    if dist_info.main:
        if not resume and (out / "last.pt").exists():
            raise UserError(
                f"{out} already holds a run: continue it with --resume {out}, or pick a new --out"
            )
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, cfg.to_yaml())
    log = RunLog(out / "train.log" if dist_info.main else None)

    jitter = augment_preset(cfg.augment) if cfg.jitter else NO_JITTER
    rows = training_rows(cfg, out, dist_info.main)
    names = manifest_classes(rows)
    by_split = {s: [r for r in rows if r.split == s] for s in ("train", "val", "test")}
    if not by_split["train"] or not by_split["val"]:
        raise UserError(f"{cfg.data} needs train and val rows: make it with `wbc-edge data split`")
    label_of = {n: i for i, n in enumerate(names)}
    of_lab = lab_classes(rows)
    masked_labs = (
        ", ".join(
            f"{lab} lacks {'/'.join(sorted(set(names) - have))}"
            for lab, have in sorted(of_lab.items())
            if set(names) - have
        )
        or "none"
    )

    torch.manual_seed(cfg.seed)
    distiller, teacher_card = build_for_config(cfg, len(names), names, log)
    card = run_card(cfg, rows, names, by_split["train"], teacher_card, log)
    if any(r.lab for r in rows):
        card.training_data = training_data(rows)
        log(
            "labs: "
            + "; ".join(
                f"{d['lab']} {sum(d['images'].values())} images ({len(d['classes'])} classes)"
                for d in card.training_data
            )
        )
    pre = card.preprocess
    size = pre.input_size

    arrays = {
        s: decode_cached(by_split[s], pre, cfg.cache_dir)
        for s in ("train", "val", "test")
        if by_split[s]
    }
    targets = {s: [label_of[r.label] for r in by_split[s]] for s in arrays}

    distiller.to(device)
    if cfg.channels_last:
        distiller.to(memory_format=torch.channels_last)
    student = distiller.student
    ema = make_ema(student, cfg.ema)
    kept_model = ema.module if ema is not None else student  # validated and saved each epoch
    n_student = sum(p.numel() for p in student.parameters())
    n_extra = int(distiller.get_extra_parameters())
    log(
        f"run {out.name}: {cfg.kind} {cfg.model} method={cfg.method} seed={cfg.seed} "
        f"size={size} epochs={cfg.epochs} augment={cfg.augment if cfg.jitter else 'none'} "
        f"ema={cfg.ema or 'off'} device={device} threads={torch.get_num_threads()}"
    )
    log(
        f"trained model parameters: {n_student:,}; connector/fusion parameters (training only): "
        f"{n_extra:,}"
    )

    if cfg.kind == "distill" and distiller.needs_teacher and not cfg.teacher_cache:
        from wbc_edge.kd.allocator import log_allocator_hint

        log_allocator_hint(log, str(device))  # the teacher runs every step

    cache = None
    if cfg.kind == "distill" and distiller.needs_teacher and cfg.teacher_cache and cfg.teacher:
        # Rank 0 builds it; the other ranks wait and then open the finished folder.
        for building in (True, False):
            if dist_info.main == building:
                cache = teacher_caches(cfg, distiller, by_split["train"], pre, arrays["train"], log)
            barrier(dist_info)
        for member in getattr(cache, "members", [cache]):
            log(f"teacher cache: {member.folder}")

    balance = cfg.balance if cfg.balance != "auto" else ("sqrt" if len(of_lab) > 1 else "none")
    log(f"sampling: balance={balance}; class masks for labs lacking classes: {masked_labs}")
    train_loader = BatchLoader(
        arrays["train"],
        targets["train"],
        cfg.batch_size,
        pre,
        augment=True,
        jitter=jitter,
        weights=sample_weights(by_split["train"], balance),
        present=present_mask(by_split["train"], names, of_lab),
        seed=cfg.seed,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
        channels_last=cfg.channels_last,
        drop_last=len(arrays["train"]) > cfg.batch_size,
    )
    eval_bs = max(cfg.batch_size, 128)

    def loader(split: str) -> BatchLoader:
        return BatchLoader(
            arrays[split],
            targets[split],
            eval_bs,
            pre,
            augment=False,
            channels_last=cfg.channels_last,
        )

    optimizer = make_optimizer(distiller, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")

    start_epoch, step, best = 0, 0, {"val_accuracy": -1.0, "val_loss": float("inf"), "epoch": -1}
    history: list[dict[str, float]] = []
    if resume:
        start_epoch, step, best, history = load_resume(out, distiller, optimizer, scaler, ema)
        log(f"resumed at epoch {start_epoch} (step {step})")

    step_module: nn.Module = TrainStep(distiller)
    if dist_info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        step_module = DDP(step_module, device_ids=[device.index] if device.type == "cuda" else None)

    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.time()
        row, step = _train_epoch(
            cfg,
            distiller,
            step_module,
            train_loader,
            optimizer,
            scaler,
            cache,
            device,
            epoch,
            step,
            ema,
        )
        if dist_info.main:
            rep = _validate(kept_model, loader("val"), device, names, row)
            row["epoch_seconds"] = time.time() - t_epoch
            history.append(row)
            improved = (row["val_accuracy"], -row["val_loss"]) > (
                best["val_accuracy"],
                -best["val_loss"],
            )
            card.metrics.update(val_accuracy=rep.accuracy, val_macro_f1=rep.macro_f1)
            if improved:
                best = {
                    "val_accuracy": rep.accuracy,
                    "val_loss": row["val_loss"],
                    "epoch": epoch + 1,
                }
                save_checkpoint(out / "best.pt", kept_model, card, epoch + 1)
            save_checkpoint(out / "last.pt", kept_model, card, epoch + 1)
            save_resume(out, distiller, optimizer, scaler, epoch + 1, step, best, history, ema)
            write_metrics(out, history)
            log(
                f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f} "
                f"acc {100 * row['train_accuracy']:.2f}% | val loss {row['val_loss']:.4f} "
                f"acc {100 * rep.accuracy:.2f}% F1 {100 * rep.macro_f1:.2f}% | "
                f"{row['epoch_seconds']:.0f}s{' *' if improved else ''}"
            )
        barrier(dist_info)

    summary: dict[str, Any] = {}
    if dist_info.main:
        plot_curves(out, history)
        summary = finish_run(
            out,
            cfg,
            names,
            arrays,
            targets,
            loader,
            device,
            best,
            n_student,
            n_extra,
            time.time() - t_start,
            log,
            (student, ema.get_decay(step)) if ema is not None else None,
            labs={sp: [r.lab for r in by_split[sp]] for sp in arrays},
        )
    barrier(dist_info)
    return summary


def _train_epoch(
    cfg: TrainConfig,
    distiller: nn.Module,
    step_module: nn.Module,
    train_loader: BatchLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    cache: Any,  # a teacher cache (or an ensemble's), or None
    device: torch.device,
    epoch: int,
    step: int,
    ema: Any = None,  # timm.utils.ModelEmaV3 of the student, updated after every step
) -> tuple[dict[str, float], int]:
    """One epoch of optimiser steps (warm-up then cosine LR per step); returns the epoch's
    metrics row (train part) and the step count after it."""
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    use_amp = cfg.amp and device.type == "cuda"
    torch.manual_seed(cfg.seed * 1_000 + epoch)  # dropout / drop-path of this epoch
    train_loader.set_epoch(epoch)
    distiller.train()
    if hasattr(distiller, "set_epoch"):  # loss warm-ups of DKD / fusion
        distiller.set_epoch(epoch)
    sums = {"loss": 0.0, "correct": 0.0, "n": 0.0}
    parts: dict[str, float] = {}
    with progress(transient=True) as p:
        task = p.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch, status="")
        for batch in train_loader:
            lr = lr_at(step, total_steps, warmup, cfg.lr)
            for g in optimizer.param_groups:
                g["lr"] = lr
            x, y = batch.images.to(device), batch.targets.to(device)
            t_out = None
            if cache is not None:
                from wbc_edge.kd.distillers import TeacherOut

                t_logits, t_feats = cache.lookup(
                    batch.index, batch.k, distiller.needs_teacher_features
                )
                if cfg.teacher_views == "mean":
                    t_logits = cache.view_mean_logits(batch.index)
                t_out = TeacherOut(t_logits.to(device), [f.to(device) for f in t_feats])
            # The classes this batch's labs label; the hard-label loss ignores the others.
            distiller.present = None if batch.present is None else batch.present.to(device)
            with torch.autocast(device.type, enabled=use_amp):
                logits, losses = step_module(x, y, t_out)
                loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            if ema is not None:
                ema.update(distiller.student, step=step)
            n = len(y)
            sums["loss"] += float(loss.detach()) * n
            sums["correct"] += float((logits.argmax(1) == y).sum())
            sums["n"] += n
            for k, v in losses.items():
                parts[k] = parts.get(k, 0.0) + float(v.detach()) * n
            p.update(
                task,
                advance=1,
                status=(
                    f"loss {sums['loss'] / sums['n']:.3f} "
                    f"acc {100 * sums['correct'] / sums['n']:.1f}%"
                ),
            )
    row: dict[str, float] = {
        "epoch": epoch + 1,
        "lr": lr,
        "train_loss": sums["loss"] / max(sums["n"], 1),
        "train_accuracy": sums["correct"] / max(sums["n"], 1),
        **{f"train_{k}": v / max(sums["n"], 1) for k, v in parts.items()},
    }
    return row, step


def _validate(
    student: nn.Module,
    val_loader: BatchLoader,
    device: torch.device,
    names: list[str],
    row: dict[str, float],
) -> Any:  # ClassificationReport
    """Val loss, accuracy and macro-F1 of ``student`` into ``row``; returns the report."""
    from wbc_edge.kd.evaluate import predict_loader
    from wbc_edge.metrics import classification_report

    probs, y_val = predict_loader(student, val_loader, device)
    row["val_loss"] = float(
        F.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-12)), torch.from_numpy(y_val))
    )
    rep = classification_report(probs, y_val, names)
    row["val_accuracy"], row["val_macro_f1"] = rep.accuracy, rep.macro_f1
    return rep
