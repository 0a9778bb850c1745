"""The student: one BasicBlock ResNet class, variants as rows of a table (timm's resnet.py way).

Only plain conv / BatchNorm / ReLU, a max-pool, global average pooling and a linear head: every
block folds into conv+bias+ReLU in TensorRT and quantises well to INT8 (no squeeze-excitation,
no depthwise convolutions, no activations outside ReLU). The four stages sit at strides 4, 8, 16
and 32, the same as the EfficientNet teacher's taps, so features match stage for stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wbc_edge.errors import UserError
from wbc_edge.kd.config import STUDENT_MODEL
from wbc_edge.kd.registry import register_model

DEFAULT_STUDENT = STUDENT_MODEL  # the one default (kd.config)


@dataclass(frozen=True)
class StudentCfg:
    widths: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    stem_width: int
    stem_kernel: int = 3


# Parameter counts (9 classes) are printed in kd/README.md and checked by tests.
STUDENTS: dict[str, StudentCfg] = {
    # ~0.41M: the edge default; two blocks in the early stages keep fine granule texture.
    "tinyresnet_xs": StudentCfg((16, 32, 64, 128), (2, 2, 2, 1), stem_width=16),
    # ~0.46M: xs's budget with blocks moved from the high-resolution stages (where batch-1 time
    # goes) to the low-resolution ones (where parameters go): about 1.3x faster than xs at the
    # same input size on ONNX Runtime CPU (benchmarks/results/student-size.md).
    "tinyresnet_xs_late": StudentCfg((16, 32, 64, 96), (1, 1, 2, 2), stem_width=16),
    # ~0.60M: xs's widths with one block in each of the first three stages and two in the last,
    # where a 7x7 map (224 px) makes parameters cheap in time: faster than xs_late at 224 px
    # with 0.14M more parameters (over the 0.5M budget; student-size.md weighs the trade).
    "tinyresnet_xs_wide": StudentCfg((16, 32, 64, 128), (1, 1, 1, 2), stem_width=16),
    # ~1.6M: twice the width of xs.
    "tinyresnet_s": StudentCfg((32, 64, 128, 256), (2, 2, 2, 1), stem_width=32),
    # ~11.2M: torchvision's ResNet-18 layout (7x7 stem), the reference study's "TinyResNet".
    "resnet18": StudentCfg((64, 128, 256, 512), (2, 2, 2, 2), stem_width=64, stem_kernel=7),
}


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut, as in ResNet-18."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.downsample(x))


class TinyResNet(nn.Module):
    """BasicBlock ResNet with configurable widths/depths and stage outputs for distillation.

    ``feature_info`` follows timm (``num_chs``, ``reduction``, ``module`` per stage), and
    :meth:`forward_intermediates` returns the four stage outputs the way timm models do
    (``indices`` into :attr:`feature_info`), so distillation needs no hooks and treats a
    student and a timm teacher alike.
    """

    def __init__(self, cfg: StudentCfg, num_classes: int, in_chans: int = 3) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        k = cfg.stem_kernel
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, cfg.stem_width, k, 2, k // 2, bias=False),
            nn.BatchNorm2d(cfg.stem_width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages, in_chs = [], cfg.stem_width
        self.feature_info = []
        for i, (width, depth) in enumerate(zip(cfg.widths, cfg.depths, strict=True)):
            stride = 1 if i == 0 else 2
            blocks = [
                BasicBlock(in_chs if j == 0 else width, width, stride if j == 0 else 1)
                for j in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            in_chs = width
            self.feature_info.append(
                {"num_chs": width, "reduction": 4 * 2**i, "module": f"stages.{i}"}
            )
        self.stages = nn.Sequential(*stages)
        self.num_features = in_chs
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_chs, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            # Zero-init the last BN of each residual branch: every block starts as identity,
            # which trains faster and more stably (Goyal et al. 2017; timm zero_init_last).
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        intermediates_only: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]] | list[torch.Tensor]:
        """timm's contract: (final feature map, [stage outputs at ``indices``]).

        ``indices``: positions in :attr:`feature_info` (strides 4, 8, 16, 32), or an int for the
        last n stages; None takes all four. ``intermediates_only`` returns the list alone.
        """
        n = len(self.stages)
        if indices is None:
            take = list(range(n))
        elif isinstance(indices, int):
            take = list(range(n - indices, n))
        else:
            take = [i if i >= 0 else n + i for i in indices]
        x = self.stem(x)
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in take:
                feats.append(x)
        return feats if intermediates_only else (x, feats)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.stages(self.stem(x)))


def create_student(name: str = DEFAULT_STUDENT, num_classes: int = 9) -> TinyResNet:
    """A randomly initialised student from the :data:`STUDENTS` table."""
    if name not in STUDENTS:
        raise UserError(f"unknown student {name!r}: pick one of {', '.join(STUDENTS)}")
    return TinyResNet(STUDENTS[name], num_classes)


def _entry_point(name: str) -> None:
    register_model(name)(lambda num_classes: TinyResNet(STUDENTS[name], num_classes))


for _name in STUDENTS:  # every row of the table is an architecture of the registry
    _entry_point(_name)


def num_parameters(module: nn.Module) -> int:
    """Number of parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters())
