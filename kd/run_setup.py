"""Building a training run before its first step.

The distiller (``CE`` over a teacher, or a method over a registered student with its teacher
loaded and checked), the preprocessing and model card the run declares, the manifest rows it
trains on, its optimizer and its weight average. :mod:`wbc_edge.kd.trainer` runs the epochs;
:mod:`wbc_edge.kd.ablation` builds the same distillers to fill the teacher cache ahead.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wbc_edge.data.labs import joined_manifest
from wbc_edge.data.manifest import fingerprint, read_manifest
from wbc_edge.errors import UserError
from wbc_edge.kd.card_stats import training_ood, training_scale, training_stain
from wbc_edge.kd.checkpoint import load_model
from wbc_edge.kd.config import TrainConfig
from wbc_edge.kd.run_folder import RunLog
from wbc_edge.kd.run_teachers import teacher_members
from wbc_edge.model.card import ModelCard, Preprocess


def _distiller_kwargs(method: str, options: dict[str, Any], label_smoothing: float) -> dict:
    """Pass label smoothing to a method that takes it (CE-based ones do)."""
    from wbc_edge.kd.distillers import DISTILLERS

    opts = dict(options)
    cls = DISTILLERS[method]
    params = inspect.signature(cls.__init__).parameters
    if "label_smoothing" in params:
        opts.setdefault("label_smoothing", label_smoothing)
    return opts


def build_for_config(
    cfg: TrainConfig, num_classes: int, names: list[str] | None = None, log: Any = None
) -> tuple[nn.Module, ModelCard | None]:
    """The distiller of a run and (for distillation) the teacher's card; with ``cfg.init`` the
    trained model starts from that checkpoint (its head rows matched by class name)."""
    distiller, teacher_card = _build_for_config(cfg, num_classes)
    if cfg.init:
        from wbc_edge.kd.warm_start import warm_start

        carried = warm_start(distiller.student, cfg.init, names or [])
        if log is not None:
            fresh = [n for n in names or [] if n not in carried]
            log(
                f"started from {cfg.init}: head rows of {len(carried)} classes carried over; "
                f"new: {', '.join(fresh) or 'none'}"
            )
    return distiller, teacher_card


def _build_for_config(cfg: TrainConfig, num_classes: int) -> tuple[nn.Module, ModelCard | None]:
    if cfg.kind == "teacher":
        from wbc_edge.kd.distillers import CE
        from wbc_edge.kd.teacher import create_teacher, freeze_early_stages

        weights = None if str(cfg.weights).lower() in ("none", "random") else cfg.weights
        model = create_teacher(cfg.model, num_classes=num_classes, weights=weights)
        freeze_early_stages(model, cfg.freeze_stages)
        return CE(model, label_smoothing=cfg.label_smoothing), None
    from wbc_edge.kd.distillers import DISTILLERS, build_distiller
    from wbc_edge.kd.registry import create_model, is_registered, registered

    if cfg.teacher_views not in ("view", "mean"):
        raise UserError(f"teacher_views must be 'view' or 'mean', not {cfg.teacher_views!r}")
    if cfg.method not in DISTILLERS:
        raise UserError(f"unknown method {cfg.method!r}: use one of {', '.join(DISTILLERS)}")
    if not is_registered(cfg.model):
        raise UserError(f"unknown student {cfg.model!r}: use one of {', '.join(registered())}")
    opts = _distiller_kwargs(cfg.method, cfg.method_options, cfg.label_smoothing)
    student = create_model(cfg.model, num_classes)
    teacher_model, teacher_card = None, None
    if cfg.teachers:
        if len(cfg.teachers) > 1 and not cfg.teacher_cache and cfg.method != "ce":
            raise UserError(
                "several teachers are distilled from their teacher caches: drop "
                "--no-teacher-cache (or give one --teacher)"
            )
        teacher_model, teacher_card = load_model(cfg.teachers[0])
        check_teacher(cfg.teachers[0], teacher_card, num_classes)
    elif cfg.method != "ce":
        raise UserError(f"method {cfg.method!r} needs --teacher TEACHER.pt")
    return build_distiller(cfg.method, student, teacher_model, **opts), teacher_card


def check_teacher(path: str, card: ModelCard, num_classes: int) -> None:
    """A teacher must know the data's classes (and so every member of an ensemble the same)."""
    if card.num_classes != num_classes:
        raise UserError(
            f"teacher {path} knows {card.num_classes} classes, the data has "
            f"{num_classes}: train a teacher on this manifest"
        )


def run_preprocess(cfg: TrainConfig, teacher_card: ModelCard | None) -> Preprocess:
    """The preprocessing a run trains with, which its card then declares.

    A teacher uses its ImageNet weights' mean/std; a student takes the teacher's whole
    declaration (so it is deployed exactly as the teacher that taught it saw its images);
    everything not set here keeps :class:`Preprocess`'s defaults.
    """
    if cfg.kind == "teacher":
        from wbc_edge.kd.teacher import teacher_preprocess

        mean, std = teacher_preprocess(cfg.model)
        pre = Preprocess(mean=mean, std=std)
    elif teacher_card is not None:
        # Same view of the cell as the teacher; a smaller --size trades detail for speed (the
        # teacher cache is computed from the teacher's own preprocessing either way).
        pre = teacher_card.preprocess
    else:
        pre = Preprocess()
    return pre.replace(input_size=cfg.size) if cfg.size else pre


def training_rows(cfg: TrainConfig, out: Path, main: bool = True) -> list:
    """The run's manifest rows: the one manifest given, or the labs' sources joined.

    Joined sources are written once, to ``OUT/manifest.csv``, and a resumed run reads that file
    back: the split a run started with stays its split even if a source folder changes later.
    """
    if not cfg.multi_source:
        return read_manifest(cfg.data)
    joined = out / "manifest.csv"
    if not joined.is_file() and not main:
        raise UserError(f"{joined} is missing: start the run on rank 0 first")
    return read_manifest(joined_manifest(cfg.sources, cfg.group_by, joined, cfg.split_seed))


def run_card(
    cfg: TrainConfig,
    rows: list,  # list[ManifestRow]
    names: list[str],
    train_rows: list,
    teacher_card: ModelCard | None,
    log: RunLog,
) -> ModelCard:
    """The run's model card: its preprocessing (the teacher's or the config's, with the training
    crops' scale and stain reference), provenance, OOD statistics and teacher(s)."""
    pre = run_preprocess(cfg, teacher_card).replace(crop_scale=training_scale(train_rows, log))
    if cfg.stain_norm is not None:
        over = cfg.stain_norm
        pre = pre.replace(
            stain=None if over == "none" else training_stain(train_rows, pre, over, log)
        )
    card = ModelCard(
        architecture=cfg.model,
        class_names=names,
        preprocess=pre,
        data_fingerprint=fingerprint(rows),
        extra={
            "role": "teacher" if cfg.kind == "teacher" else "student",  # names its artifacts
            "method": cfg.method,
            "seed": cfg.seed,
            "epochs": cfg.epochs,
            "augment": cfg.augment if cfg.jitter else "none",
        },
    )
    if cfg.ema:
        card.extra["ema"] = cfg.ema  # best.pt / last.pt hold the weight average
    card.ood = training_ood(train_rows, log)
    if teacher_card is not None:
        card.extra["teacher"] = teacher_card.architecture
        card.extra["teacher_test_accuracy"] = teacher_card.metrics.get("test_accuracy")
    members = teacher_members(cfg) if teacher_card is not None else []
    if len(members) > 1:
        card.extra["teachers"] = members
    return card


def make_ema(student: nn.Module, decay: float) -> Any:  # timm.utils.ModelEmaV3 | None
    """The weight average a run keeps when ``--ema`` is on (None when off).

    Warm-up on, with timm's power 3/4 for short schedules: the decay grows as
    1 - (1 + step)^-0.75 up to ``decay``, so a short run is not averaged with its random start.
    """
    if not decay:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(student, decay=decay, use_warmup=True, warmup_power=0.75)


def make_optimizer(distiller: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; biases and norm weights without weight decay."""
    params = [p for p in distiller.get_learnable_parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
