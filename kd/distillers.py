"""Distillation methods: each a small class whose training forward returns named losses.

The trainer only sums the dict (mdistiller's design), so a new method needs no trainer change.
The teacher is frozen (eval mode, no gradients, run under ``no_grad``); its outputs can come
from a cache (:class:`TeacherOut`), because the trainer computes them once per (image, view).
Connectors and fusion modules are learnable but belong to the distiller, not the student:
``distiller.student.state_dict()`` never contains them.

Defaults come from the papers; kd/README.md says which and why.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import torch
from torch import Tensor, nn

from wbc_edge.errors import UserError
from wbc_edge.kd import losses
from wbc_edge.kd.features import stage_features, stage_info
from wbc_edge.kd.fusion import ReviewFusion

# Weights of the rescaled feature terms: AT's start (mean squared distance of unit attention
# maps, about 0.55-0.6 for a fresh student against Lite0) times 4 is about a fresh student's
# cross-entropy of ln(9) = 2.2; HCL on standardised teacher features starts near 1.3 at weight 1.
AT_WEIGHT = 4.0
FUSION_WEIGHT = 1.0


class TeacherOut(NamedTuple):
    """What a distiller needs from the teacher for one batch (possibly read from a cache)."""

    logits: Tensor
    features: list[Tensor]


class Distiller(nn.Module):
    """Base: holds the student and the frozen teacher; subclasses add losses and connectors."""

    needs_teacher: bool = True
    needs_teacher_features: bool = False

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, label_smoothing: float = 0.1
    ) -> None:
        super().__init__()
        if self.needs_teacher and teacher is None:
            raise UserError(f"{type(self).__name__} needs a teacher: pass a teacher checkpoint")
        self.student = student
        self.teacher = teacher if self.needs_teacher else None
        if self.teacher is not None:
            self.teacher.eval()
            self.teacher.requires_grad_(False)
        self.label_smoothing = label_smoothing
        self.epoch: float | None = None
        # (N, C) bool of the current batch, set by the trainer: the classes each sample's lab
        # labels. None: all of them. Not a buffer, so it is never saved.
        self.present: Tensor | None = None

    def train(self, mode: bool = True) -> Distiller:
        """Train the student and connectors; the teacher stays in eval mode (frozen BN)."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def set_epoch(self, epoch: float) -> None:
        """Tell loss warm-ups where training is (0-based epoch, may be fractional)."""
        self.epoch = float(epoch)

    def warmup(self, epochs: float) -> float:
        """Linear loss warm-up factor over the first ``epochs`` (1.0 when the epoch is unknown).

        As in DKD/ReviewKD: ``min((epoch + 1) / epochs, 1)``, so the first epoch already
        carries ``1 / epochs`` of the loss.
        """
        if epochs <= 0 or self.epoch is None:
            return 1.0
        return min((self.epoch + 1.0) / epochs, 1.0)

    @torch.no_grad()
    def teacher_outputs(self, images: Tensor) -> TeacherOut:
        """Teacher logits and, for feature methods, its stage outputs at strides 4-32."""
        if self.teacher is None:
            raise RuntimeError(f"{type(self).__name__} has no teacher")
        if self.needs_teacher_features:
            logits, feats = stage_features(self.teacher, images)
            return TeacherOut(logits, list(feats))
        return TeacherOut(self.teacher(images), [])

    def forward(self, images: Tensor) -> Tensor:
        return self.student(images)

    def forward_train(
        self, images: Tensor, targets: Tensor, teacher_out: TeacherOut | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Student logits and the named losses of this method (the trainer sums them)."""
        raise NotImplementedError

    def get_learnable_parameters(self) -> list[nn.Parameter]:
        """Student and connector parameters (never the teacher's)."""
        return [p for n, p in self.named_parameters() if not n.startswith("teacher.")]

    def get_extra_parameters(self) -> int:
        """Parameters of training-only modules (connectors, fusion), not saved with the student."""
        student = sum(p.numel() for p in self.student.parameters())
        return sum(p.numel() for p in self.get_learnable_parameters()) - student

    def _teacher(self, images: Tensor, teacher_out: TeacherOut | None) -> TeacherOut:
        out = self.teacher_outputs(images) if teacher_out is None else teacher_out
        if self.needs_teacher_features and not out.features:
            raise ValueError(f"{type(self).__name__} needs teacher features; the cache has none")
        return TeacherOut(out.logits.float(), [f.float() for f in out.features])

    def _ce(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.present is not None and self.training:
            return losses.masked_ce_loss(logits, targets, self.present, self.label_smoothing)
        return losses.ce_loss(logits, targets, self.label_smoothing)


class CE(Distiller):
    """The student alone: cross-entropy with label smoothing (also trains the teacher)."""

    needs_teacher = False

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, label_smoothing: float = 0.1
    ) -> None:
        super().__init__(student, None, label_smoothing)

    def forward_train(self, images, targets, teacher_out=None):  # noqa: ANN001, ANN201
        logits = self.student(images)
        return logits, {"loss_ce": self._ce(logits, targets)}


class KD(Distiller):
    """Logit distillation (Hinton et al. 2015); weights as mdistiller's KD (0.1 CE, 0.9 KD)."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        label_smoothing: float = 0.1,
        temperature: float = 4.0,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
    ) -> None:
        super().__init__(student, teacher, label_smoothing)
        self.temperature, self.ce_weight, self.kd_weight = temperature, ce_weight, kd_weight

    def forward_train(self, images, targets, teacher_out=None):  # noqa: ANN001, ANN201
        t = self._teacher(images, teacher_out)
        logits = self.student(images)
        return logits, {
            "loss_ce": self.ce_weight * self._ce(logits, targets),
            "loss_kd": self.kd_weight * losses.kd_loss(logits, t.logits, self.temperature),
        }


class DKD(Distiller):
    """Decoupled KD (Zhao et al. 2022), CIFAR recipe: alpha 1, beta 8, T 4, loss warm-up."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        label_smoothing: float = 0.1,
        temperature: float = 4.0,
        ce_weight: float = 1.0,
        alpha: float = 1.0,
        beta: float = 8.0,
        warmup_epochs: float = 2.0,
    ) -> None:
        super().__init__(student, teacher, label_smoothing)
        self.temperature, self.ce_weight = temperature, ce_weight
        self.alpha, self.beta, self.warmup_epochs = alpha, beta, warmup_epochs

    def forward_train(self, images, targets, teacher_out=None):  # noqa: ANN001, ANN201
        t = self._teacher(images, teacher_out)
        logits = self.student(images)
        dkd = losses.dkd_loss(logits, t.logits, targets, self.alpha, self.beta, self.temperature)
        return logits, {
            "loss_ce": self.ce_weight * self._ce(logits, targets),
            "loss_dkd": self.warmup(self.warmup_epochs) * dkd,
        }


class AT(Distiller):
    """Multi-layer attention transfer (Zagoruyko & Komodakis 2017) over the 4 stride-matched
    stages, p 2 as in the paper; the loss is resolution-independent (:func:`losses.at_loss`)
    and weighted 4 so it starts at the cross-entropy's size (kd/README.md)."""

    needs_teacher_features = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        label_smoothing: float = 0.1,
        ce_weight: float = 1.0,
        at_weight: float = AT_WEIGHT,
        p: float = 2.0,
    ) -> None:
        super().__init__(student, teacher, label_smoothing)
        self.ce_weight, self.at_weight, self.p = ce_weight, at_weight, p

    def forward_train(self, images, targets, teacher_out=None):  # noqa: ANN001, ANN201
        t = self._teacher(images, teacher_out)
        logits, feats = stage_features(self.student, images)
        return logits, {
            "loss_ce": self.ce_weight * self._ce(logits, targets),
            "loss_at": self.at_weight * losses.at_loss(feats, t.features, self.p),
        }


class Fusion(Distiller):
    """ReviewKD-style multi-layer feature fusion (ABF + SE) with the hierarchical context loss
    on standardised teacher features; weight 1 and a loss warm-up as in ReviewKD's CIFAR
    recipe, 64 mid channels as its CIFAR ResNets."""

    needs_teacher_features = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        label_smoothing: float = 0.1,
        ce_weight: float = 1.0,
        fusion_weight: float = FUSION_WEIGHT,
        mid_channels: int = 64,
        se_reduction: int = 4,
        warmup_epochs: float = 2.0,
    ) -> None:
        super().__init__(student, teacher, label_smoothing)
        self.ce_weight, self.fusion_weight, self.warmup_epochs = (
            ce_weight,
            fusion_weight,
            warmup_epochs,
        )
        self.fusion = _review_fusion(student, self.teacher, mid_channels, se_reduction)

    def forward_train(self, images, targets, teacher_out=None):  # noqa: ANN001, ANN201
        t = self._teacher(images, teacher_out)
        logits, feats = stage_features(self.student, images)
        fused = self.fusion(feats, [tuple(f.shape[-2:]) for f in t.features])
        hcl = losses.hcl_loss(fused, t.features)
        return logits, {
            "loss_ce": self.ce_weight * self._ce(logits, targets),
            "loss_fusion": self.warmup(self.warmup_epochs) * self.fusion_weight * hcl,
        }


class MLFFAKD(Distiller):
    """Multi-level feature fusion and attention KD: logit KD (or DKD) + AT + fusion.

    CE 1 and KD 1 at T 4 as RepDistiller combines a feature method with KD; the feature terms
    at the weights that make each start near the cross-entropy (AT 4, fusion 1 on standardised
    teacher features; measured starts in kd/README.md).
    """

    needs_teacher_features = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        label_smoothing: float = 0.1,
        logit: str = "kd",
        temperature: float = 4.0,
        ce_weight: float = 1.0,
        kd_weight: float = 1.0,
        alpha: float = 1.0,
        beta: float = 8.0,
        at_weight: float = AT_WEIGHT,
        p: float = 2.0,
        fusion_weight: float = FUSION_WEIGHT,
        mid_channels: int = 64,
        se_reduction: int = 4,
        warmup_epochs: float = 2.0,
    ) -> None:
        super().__init__(student, teacher, label_smoothing)
        if logit not in ("kd", "dkd"):
            raise UserError(f"mlffakd: logit must be 'kd' or 'dkd', not {logit!r}")
        self.logit, self.temperature = logit, temperature
        self.ce_weight, self.kd_weight, self.alpha, self.beta = ce_weight, kd_weight, alpha, beta
        self.at_weight, self.p, self.fusion_weight = at_weight, p, fusion_weight
        self.warmup_epochs = warmup_epochs
        self.fusion = _review_fusion(student, self.teacher, mid_channels, se_reduction)

    def forward_train(self, images, targets, teacher_out=None):  # noqa: ANN001, ANN201
        t = self._teacher(images, teacher_out)
        logits, feats = stage_features(self.student, images)
        ramp = self.warmup(self.warmup_epochs)
        if self.logit == "kd":
            logit_loss = losses.kd_loss(logits, t.logits, self.temperature)
        else:  # DKD carries its own warm-up
            logit_loss = ramp * losses.dkd_loss(
                logits, t.logits, targets, self.alpha, self.beta, self.temperature
            )
        fused = self.fusion(feats, [tuple(f.shape[-2:]) for f in t.features])
        return logits, {
            "loss_ce": self.ce_weight * self._ce(logits, targets),
            f"loss_{self.logit}": self.kd_weight * logit_loss,
            "loss_at": self.at_weight * losses.at_loss(feats, t.features, self.p),
            "loss_fusion": ramp * self.fusion_weight * losses.hcl_loss(fused, t.features),
        }


def _review_fusion(
    student: nn.Module, teacher: nn.Module | None, mid_channels: int, se_reduction: int
) -> ReviewFusion:
    assert teacher is not None  # guarded by Distiller.__init__
    return ReviewFusion(
        [c for c, _ in stage_info(student)],
        [c for c, _ in stage_info(teacher)],
        mid_channels,
        se_reduction,
    )


DISTILLERS: dict[str, type[Distiller]] = {
    "ce": CE,
    "kd": KD,
    "dkd": DKD,
    "at": AT,
    "fusion": Fusion,
    "mlffakd": MLFFAKD,
}


def build_distiller(
    method: str, student: nn.Module, teacher: nn.Module | None = None, **options: object
) -> Distiller:
    """The distiller for ``method``; ``options`` are its keyword arguments (temperature, ...)."""
    if method not in DISTILLERS:
        raise UserError(f"unknown method {method!r}: use one of {', '.join(DISTILLERS)}")
    cls = DISTILLERS[method]
    known = [
        n
        for n in inspect.signature(cls.__init__).parameters
        if n not in ("self", "student", "teacher")
    ]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UserError(f"method {method!r} has no option(s) {unknown}: it takes {known}")
    return cls(student, teacher, **options)


def parse_options(items: list[str], what: str = "--option") -> dict[str, object]:
    """``["at_weight=1", "logit=dkd"]`` -> ``{"at_weight": 1, "logit": "dkd"}`` (values read as
    YAML scalars); :func:`build_distiller` then checks the names against the method."""
    import yaml

    options: dict[str, object] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"{what} {item!r}: write method options as KEY=VALUE")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise UserError(f"{what} {item!r}: {value!r} is not a value ({exc})") from exc
    return options
