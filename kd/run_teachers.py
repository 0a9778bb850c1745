"""A distillation run's teachers: who they are (for the summary and card) and their outputs on
the train rows, one teacher cache per member (:mod:`wbc_edge.kd.teacher_cache` stores them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from wbc_edge.errors import UserError
from wbc_edge.kd.checkpoint import load_model
from wbc_edge.kd.config import TrainConfig
from wbc_edge.kd.data import decode_cached, rows_key
from wbc_edge.model.card import ModelCard, Preprocess


def teacher_members(cfg: TrainConfig) -> list[dict[str, Any]]:
    """Path, architecture, input size and test accuracy of each teacher (run summary, card)."""
    from wbc_edge.kd.checkpoint import read_checkpoint

    out = []
    for path in cfg.teachers:
        card = ModelCard.from_dict(read_checkpoint(path)["card"])
        out.append(
            {
                "path": str(path),
                "architecture": card.architecture,
                "input_size": card.preprocess.input_size,
                "test_accuracy": card.metrics.get("test_accuracy"),
            }
        )
    return out


def teacher_caches(cfg, distiller, rows, student_pre, student_images, log=None):  # noqa: ANN001, ANN201
    """The teacher cache of a run: the one teacher's, or an
    :class:`~wbc_edge.kd.teacher_cache.EnsembleCache` over one cache per teacher, each built
    (or reused) from its own checkpoint and preprocessing. ``log`` gets the CPU allocator tip
    when a cache has to be built (:mod:`wbc_edge.kd.allocator`)."""
    from wbc_edge.kd.checkpoint import read_checkpoint
    from wbc_edge.kd.teacher_cache import EnsembleCache

    first = cfg.teachers[0]
    first_card = ModelCard.from_dict(read_checkpoint(first)["card"])
    caches = [
        _teacher_cache(
            cfg, distiller, rows, first_card.preprocess, student_pre, student_images, log=log
        )
    ]
    for path in cfg.teachers[1:]:
        model, card = load_model(path)
        from wbc_edge.kd.run_setup import check_teacher  # run_setup imports this module

        check_teacher(path, card, first_card.num_classes)
        if card.class_names != first_card.class_names:
            raise UserError(
                f"teacher {path} orders its classes differently from {first}: "
                "an ensemble's teachers must share one class list"
            )
        caches.append(
            _teacher_cache(
                cfg, distiller, rows, card.preprocess, student_pre, student_images, path, model, log
            )
        )
        del model
    return caches[0] if len(caches) == 1 else EnsembleCache(caches)


def _teacher_cache(
    cfg: TrainConfig,
    distiller: nn.Module,
    rows: list,  # list[ManifestRow]
    pre: Preprocess,
    student_pre: Preprocess,
    student_images: Any,
    path: str | None = None,
    teacher: nn.Module | None = None,
    log: Callable[[str], None] | None = None,
) -> Any:  # TeacherCache
    """One teacher's outputs on the train rows, seen through its own preprocessing ``pre``
    (decoded again when the student's differs, e.g. a smaller --size). ``path``/``teacher``
    None: the run's first teacher, the distiller's own.

    A later ensemble member (``teacher`` given) reuses its full cache when one exists (built by
    a run that distilled from it alone) and otherwise caches its logits only."""
    images = student_images if pre == student_pre else decode_cached(rows, pre, cfg.cache_dir)
    from wbc_edge.kd.data import DEFAULT_CACHE_DIR
    from wbc_edge.kd.teacher_cache import (
        build_teacher_cache,
        cache_key,
        file_digest,
        output_signature,
    )

    model = distiller.teacher if teacher is None else teacher
    digest = file_digest(cfg.teachers[0] if path is None else path)
    root = Path(cfg.cache_dir) if cfg.cache_dir else DEFAULT_CACHE_DIR

    def folder(features: bool) -> Path:
        sig = output_signature(model, pre.input_size, features)
        return root / f"teacher-{cache_key(digest, rows_key(rows), pre, sig)}"

    features = teacher is None or (folder(True) / "meta.json").is_file()
    return build_teacher_cache(model, images, pre, folder(features), features=features, log=log)
