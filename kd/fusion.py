"""Training-only fusion connectors (ReviewKD, Chen et al. 2021), with SE channel attention.

The student's stages are reviewed from deep to shallow: each attention-based fusion (ABF) block
projects its stage to ``mid`` channels, blends in the (upsampled) fused result of the deeper
stage with two learned spatial attention maps, re-weights channels with squeeze-and-excitation
(Hu et al. 2018), and projects to the teacher stage's channels and resolution. The outputs are
compared with the teacher's stages by the hierarchical context loss
(:func:`wbc_edge.kd.losses.hcl_loss`).

Projections end in BatchNorm, never ReLU: EfficientNet stage outputs (linear bottlenecks) are
negative about half the time, and a ReLU would make those values unreachable.
None of these weights are part of the student; they are dropped after training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SqueezeExcite(nn.Module):
    """Channel attention: global pool -> bottleneck MLP -> sigmoid gate per channel."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class ABF(nn.Module):
    """One attention-based fusion block: (student stage, deeper fused) -> (to teacher, fused)."""

    def __init__(
        self, in_chs: int, mid_chs: int, out_chs: int, fuse: bool, se_reduction: int = 4
    ) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_chs, mid_chs, 1, bias=False), nn.BatchNorm2d(mid_chs)
        )
        self.att = nn.Conv2d(2 * mid_chs, 2, 1) if fuse else None
        self.se = SqueezeExcite(mid_chs, se_reduction)
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_chs, out_chs, 3, 1, 1, bias=False), nn.BatchNorm2d(out_chs)
        )
        for conv in (self.conv1[0], self.conv2[0]):
            nn.init.kaiming_uniform_(conv.weight, a=1)  # as ReviewKD: linear projections

    def forward(
        self, x: Tensor, deeper: Tensor | None, out_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        x = self.conv1(x)
        if self.att is not None and deeper is not None:
            deeper = F.interpolate(deeper, size=x.shape[-2:], mode="nearest")
            w = torch.sigmoid(self.att(torch.cat([x, deeper], dim=1)))
            x = x * w[:, 0:1] + deeper * w[:, 1:2]
        x = self.se(x)
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=out_size, mode="nearest")
        return self.conv2(x), x


class ReviewFusion(nn.Module):
    """ABF blocks over all stages; maps student stages to teacher-shaped features."""

    def __init__(
        self,
        student_chs: Sequence[int],
        teacher_chs: Sequence[int],
        mid_chs: int = 64,
        se_reduction: int = 4,
    ) -> None:
        super().__init__()
        if len(student_chs) != len(teacher_chs):
            raise ValueError(f"{len(student_chs)} student vs {len(teacher_chs)} teacher stages")
        last = len(student_chs) - 1
        self.abfs = nn.ModuleList(
            ABF(cs, mid_chs, ct, fuse=i < last, se_reduction=se_reduction)
            for i, (cs, ct) in enumerate(zip(student_chs, teacher_chs, strict=True))
        )

    def forward(
        self, student_feats: Sequence[Tensor], teacher_sizes: Sequence[tuple[int, int]]
    ) -> list[Tensor]:
        """Fused features, shallow to deep, each with its teacher stage's channels and size."""
        outs: list[Tensor] = []
        fused: Tensor | None = None
        for i in reversed(range(len(self.abfs))):
            out, fused = self.abfs[i](student_feats[i], fused, teacher_sizes[i])
            outs.insert(0, out)
        return outs
