"""Whether this process runs with an allocator that keeps a teacher's forward pass fast on CPU.

A teacher's forward pass without gradients (the teacher cache, ``adapt --teacher``) frees each
large activation as soon as the next layer has it, and glibc's default ``malloc`` hands every
one back to the kernel: on the project's 2-core machines the pass ran 3.2x faster under jemalloc
and 1.9x with glibc's ``hugetlb`` tunable (``benchmarks/results/cpu-allocator.md``). Both are
chosen when the process starts, so the most the program can do is say so once in the run's log.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

HINT = (
    "tip: the teacher's CPU passes run 3.2x faster with jemalloc (LD_PRELOAD=libjemalloc.so.2 "
    "MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1) or 1.9x with "
    "GLIBC_TUNABLES=glibc.malloc.hugetlb=1; docs/ml-engineer.md: Training on a CPU"
)


def fast_allocator(environ: dict[str, str] | None = None, maps: str | None = None) -> bool:
    """True off Linux (nothing to say there), or when jemalloc is mapped into the process or
    glibc's huge-page tunable is set."""
    if not sys.platform.startswith("linux"):
        return True
    env = os.environ if environ is None else environ
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb=1" in tunables or "glibc.malloc.hugetlb=2" in tunables:
        return True
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return True  # cannot tell: say nothing
    return "jemalloc" in maps


def allocator_hint(device: str) -> str | None:
    """The one-line tip for a CPU run whose allocator makes teacher passes slow, else None."""
    if device != "cpu" or fast_allocator():
        return None
    return HINT


def log_allocator_hint(log: Callable[[str], None], device: str) -> None:
    """Put the tip in ``log`` where a teacher is about to run on this process's CPU."""
    if hint := allocator_hint(device):
        log(hint)
