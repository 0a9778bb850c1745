"""Start a run from a trained wbc-edge checkpoint whose classes may differ from the data's.

Training a multi-lab, ten-class model from ImageNet on 2 CPU cores costs hours; starting from
the packaged PBC teacher or student, which already knows nine of the ten classes, costs a few
epochs. The backbone loads as it is. The classifier's rows are carried over **by class name**
(Neutrophil's row stays Neutrophil's, wherever it now sits in the sorted class list); a class
the checkpoint never had (Blast) keeps the fresh initialisation of the new head.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from wbc_edge.errors import UserError


def classifier_of(model: nn.Module) -> nn.Linear:
    """The final linear layer: timm's ``get_classifier()`` or a student's ``fc``."""
    head = (
        model.get_classifier() if hasattr(model, "get_classifier") else getattr(model, "fc", None)
    )
    if not isinstance(head, nn.Linear):
        raise UserError(f"{type(model).__name__} has no linear classifier to warm-start")
    return head


def warm_start(model: nn.Module, checkpoint: str | Path, class_names: Sequence[str]) -> list[str]:
    """Load ``checkpoint`` (a wbc-edge .pt) into ``model`` whose head has ``class_names``.

    Returns the classes whose head rows were carried over. The architectures must match; the
    checkpoint's classes may be a subset, superset or reordering of the new ones.
    """
    from wbc_edge.kd.checkpoint import read_checkpoint
    from wbc_edge.model.card import ModelCard

    payload = read_checkpoint(checkpoint)
    card = ModelCard.from_dict(payload["card"])
    state = dict(payload["state_dict"])
    head = classifier_of(model)
    prefix = next(
        (n.removesuffix(".weight") for n, p in model.named_parameters() if p is head.weight),
        None,
    )
    if prefix is None:
        raise UserError(f"cannot find the classifier of {type(model).__name__} by name")
    old_w, old_b = state.pop(f"{prefix}.weight", None), state.pop(f"{prefix}.bias", None)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape: another architecture
        missing, unexpected = [str(exc).splitlines()[-1].strip()], []
    missing = [k for k in missing if not k.startswith(prefix + ".")]
    if missing or unexpected:
        raise UserError(
            f"{checkpoint} is a {card.architecture}; its weights do not fit this model "
            f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. "
            f"{(missing or unexpected)[0]}): start from a checkpoint of the same architecture"
        )
    carried = []
    if old_w is not None and old_w.shape[1] == head.weight.shape[1]:
        row_of = dict(zip(card.class_names, range(card.num_classes), strict=True))
        with torch.no_grad():
            for i, name in enumerate(class_names):
                if name in row_of:
                    j = row_of[name]
                    head.weight[i] = old_w[j]
                    if old_b is not None and head.bias is not None:
                        head.bias[i] = old_b[j]
                    carried.append(name)
    return carried
