"""DDP plumbing for the trainer: join torchrun's process group, wait for the other ranks, and
route DDP's gradient synchronisation through a distiller's ``forward_train``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch import nn


@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> Dist:
    """Join the process group when torchrun started us; a plain run stays single-process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def barrier(d: Dist) -> None:
    """Wait for every rank (a no-op in a single-process run)."""
    if d.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


class TrainStep(nn.Module):
    """DDP synchronises gradients through ``forward``; this routes it to ``forward_train``."""

    def __init__(self, distiller: nn.Module) -> None:
        super().__init__()
        self.distiller = distiller

    def forward(self, images, targets, teacher_out=None):  # noqa: ANN001
        return self.distiller.forward_train(images, targets, teacher_out)
