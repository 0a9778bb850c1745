"""Distillation losses as pure functions (mdistiller style): tensors in, a scalar out.

Every function computes in float32 whatever the inputs are, because a cached teacher arrives as
float16 and autocast may hand over half-precision student outputs; KL terms lose their small
probabilities in half precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def ce_loss(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy with label smoothing (Szegedy et al. 2016)."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def masked_ce_loss(
    logits: Tensor, targets: Tensor, present: Tensor, label_smoothing: float = 0.0
) -> Tensor:
    """Cross-entropy over the classes each sample's lab labels (``present``, (N, C) bool).

    A lab without a Blast class says nothing about whether its cells are blasts, so the softmax
    is taken over that lab's own classes (the others are left out, not pushed down), and label
    smoothing spreads over those classes only. With every class present it equals
    :func:`ce_loss`.
    """
    present = present | F.one_hot(targets, logits.shape[1]).bool()  # the label is always in
    z = logits.float().masked_fill(~present, float("-inf"))
    logp = F.log_softmax(z, dim=1)
    nll = -logp.gather(1, targets[:, None]).squeeze(1)
    if not label_smoothing:
        return nll.mean()
    smooth = -(logp.masked_fill(~present, 0.0).sum(1)) / present.sum(1)
    return ((1 - label_smoothing) * nll + label_smoothing * smooth).mean()


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton et al. 2015: T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes, mean
    over the batch. The T^2 keeps gradient magnitudes comparable across temperatures."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1)
    return kl.mean() * temperature**2


def dkd_parts(
    student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, temperature: float = 4.0
) -> tuple[Tensor, Tensor]:
    """Per-sample (TCKD, NCKD) of Decoupled KD (Zhao et al. 2022), both scaled by T^2.

    TCKD compares the binary (target, rest) probabilities; NCKD compares the distributions over
    the non-target classes alone. They satisfy KD = TCKD + (1 - p_target_teacher) * NCKD, which
    is why KD under-weights NCKD exactly when the teacher is confident. Non-target classes are
    selected exactly (not masked with -1000 as in the reference code).
    """
    s = student_logits.float() / temperature
    t = teacher_logits.float() / temperature
    n, c = s.shape
    gt = F.one_hot(targets, c).bool()

    def binary_log_probs(z: Tensor) -> Tensor:
        log_all = torch.logsumexp(z, dim=1)
        log_gt = z[gt] - log_all
        log_rest = torch.logsumexp(z[~gt].view(n, c - 1), dim=1) - log_all
        return torch.stack([log_gt, log_rest], dim=1)

    log_b_s, log_b_t = binary_log_probs(s), binary_log_probs(t)
    tckd = (log_b_t.exp() * (log_b_t - log_b_s)).sum(1)
    log_q_s = F.log_softmax(s[~gt].view(n, c - 1), dim=1)
    log_q_t = F.log_softmax(t[~gt].view(n, c - 1), dim=1)
    nckd = (log_q_t.exp() * (log_q_t - log_q_s)).sum(1)
    return tckd * temperature**2, nckd * temperature**2


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Tensor:
    """alpha * TCKD + beta * NCKD, each averaged over the batch (defaults: DKD's CIFAR recipe)."""
    tckd, nckd = dkd_parts(student_logits, teacher_logits, targets, temperature)
    return alpha * tckd.mean() + beta * nckd.mean()


def attention_map(feature: Tensor, p: float = 2.0, size: tuple[int, int] | None = None) -> Tensor:
    """Spatial attention of Zagoruyko & Komodakis 2017: channel mean of |F|^p, flattened and
    L2-normalised per sample, shape (N, H*W). ``size`` average-pools the map first, so maps of
    two networks at different resolutions can be compared."""
    am = feature.float().abs().pow(p).mean(1, keepdim=True)
    if size is not None and tuple(am.shape[-2:]) != tuple(size):
        am = F.adaptive_avg_pool2d(am, size)
    return F.normalize(am.flatten(1), dim=1)


def at_loss(
    student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], p: float = 2.0
) -> Tensor:
    """Attention transfer, resolution-independent: per stage pair the squared distance of the
    two unit attention vectors, averaged over the batch and then over the stages.

    Each stage's term lies in [0, 2] (0: same map, 2: disjoint maps), whatever the map size, so
    the loss starts below the cross-entropy's ln(C) and a weight of about 1 balances them. The
    paper's ``beta/(H*W*N) * sum`` (beta = 1000, its ``mean`` form) weights each stage by
    1/(H*W) instead: at 128 px that is 1000/16 per unit of distance at the 4x4 stage against
    1000/1024 at 32x32, so the deepest stage dominated and the sum started near 17 against a
    cross-entropy of 2.2 (kd-ablation.md). Channel counts may differ (the map averages channels
    away); when spatial sizes differ the larger map is pooled to the smaller.
    """
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"{len(student_feats)} student vs {len(teacher_feats)} teacher stages")
    total = student_feats[0].new_zeros((), dtype=torch.float32)
    for fs, ft in zip(student_feats, teacher_feats, strict=True):
        size = _smaller_size(fs, ft)
        diff = attention_map(fs, p, size) - attention_map(ft, p, size)
        total = total + diff.pow(2).sum(1).mean()
    return total / len(student_feats)


def standardize(feature: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-channel zero mean and unit variance over (batch, height, width), in float32.

    Applied to the teacher's stage outputs before the hierarchical context loss: Lite0's raw
    stage outputs have standard deviations of 3-9, so the loss on them started at 53-76 and the
    connectors never fitted them (kd-ablation.md). A connector ending in BatchNorm can produce
    any per-channel mean and scale, so the standardised target is always within its reach.
    """
    f = feature.float()
    mean = f.mean(dim=(0, 2, 3), keepdim=True)
    var = f.var(dim=(0, 2, 3), keepdim=True, unbiased=False)
    return (f - mean) / torch.sqrt(var + eps)


def hcl_loss(
    student_feats: Sequence[Tensor],
    teacher_feats: Sequence[Tensor],
    levels: Sequence[int] = (4, 2, 1),
    standardize_teacher: bool = True,
) -> Tensor:
    """Hierarchical context loss of ReviewKD (Chen et al. 2021), averaged over stage pairs.

    Per pair: MSE of the full maps plus MSE of their average-pooled pyramids (levels 4, 2, 1,
    skipping levels not smaller than the map), weights halving per level, normalised by the sum
    of the weights. With ``standardize_teacher`` (the default) the teacher's maps are first
    standardised per channel (:func:`standardize`), so the loss has a known size: a zero
    prediction scores at most 1 per stage, a fresh connector (unit-variance output, unrelated
    to the target) about 2, a perfect one 0. Averaging (not summing) over stages keeps that
    size for any number of taps. Channels must match (the fusion connectors project to teacher
    channels); when spatial sizes differ the larger map is pooled to the smaller.
    """
    total = student_feats[0].new_zeros((), dtype=torch.float32)
    for fs, ft in zip(student_feats, teacher_feats, strict=True):
        if fs.shape[1] != ft.shape[1]:
            raise ValueError(f"hcl_loss: {fs.shape[1]} vs {ft.shape[1]} channels; project first")
        size = _smaller_size(fs, ft)
        fs, ft = _pool_to(fs.float(), size), _pool_to(ft.float(), size)
        if standardize_teacher:
            ft = standardize(ft)
        loss, weight, weights = F.mse_loss(fs, ft), 1.0, 1.0
        for level in levels:
            if level >= size[0]:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(
                F.adaptive_avg_pool2d(fs, level), F.adaptive_avg_pool2d(ft, level)
            )
            weights += weight
        total = total + loss / weights
    return total / len(student_feats)


def _smaller_size(a: Tensor, b: Tensor) -> tuple[int, int]:
    return min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])


def _pool_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    return x if tuple(x.shape[-2:]) == size else F.adaptive_avg_pool2d(x, size)
