"""Stage outputs of students and teachers, at strides 4, 8, 16 and 32, without hooks.

Feature distillation pairs a student stage with the teacher stage at the same stride. Students
and timm EfficientNets alike expose ``forward_intermediates`` and ``feature_info`` (an
EfficientNet's first tap, at stride 2, is skipped). The logits come from the same pass, so a
distiller never runs a network twice.
"""

from __future__ import annotations

import torch
from torch import nn

from wbc_edge.errors import UserError

STRIDES = (4, 8, 16, 32)


def stage_info(model: nn.Module) -> list[tuple[int, int]]:
    """(channels, stride) of each tap :func:`stage_features` returns, in order."""
    info = _feature_info(model)
    return [(int(info[i]["num_chs"]), int(info[i]["reduction"])) for i in _tap_indices(model)]


def stage_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(logits, [stage outputs at strides 4, 8, 16, 32]) from one forward pass."""
    if not hasattr(model, "forward_intermediates"):
        raise UserError(f"{type(model).__name__} exposes no stage outputs for distillation")
    final, feats = model.forward_intermediates(x, indices=_tap_indices(model))
    return model.forward_head(final), list(feats)


def _feature_info(model: nn.Module) -> list[dict]:
    info = getattr(model, "feature_info", None)
    if not isinstance(info, list) or not info:
        raise UserError(f"{type(model).__name__} has no feature_info to match stages by stride")
    return info


def _tap_indices(model: nn.Module) -> list[int]:
    """feature_info positions of the deepest tap at each of :data:`STRIDES`."""
    by_stride: dict[int, int] = {}
    for i, f in enumerate(_feature_info(model)):
        if int(f["reduction"]) in STRIDES:
            by_stride[int(f["reduction"])] = i
    missing = [s for s in STRIDES if s not in by_stride]
    if missing:
        raise UserError(f"{type(model).__name__} has no stage at stride(s) {missing}")
    return [by_stride[s] for s in STRIDES]
