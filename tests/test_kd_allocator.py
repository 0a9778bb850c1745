"""The run's log says once how to make a teacher's CPU passes fast, and only when it helps."""

from __future__ import annotations

import sys

import pytest

from wbc_edge.kd.allocator import HINT, allocator_hint, fast_allocator, log_allocator_hint

linux = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc/jemalloc: Linux only"
)


@linux
def test_the_hint_names_both_fixes_and_only_shows_on_a_slow_cpu_allocator(monkeypatch) -> None:
    plain_maps = "7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
    assert fast_allocator({}, plain_maps) is False
    assert fast_allocator({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, plain_maps) is True
    jemalloc_maps = plain_maps + "7f02-7f03 r-xp 0 08:01 2 /usr/lib/libjemalloc.so.2\n"
    assert fast_allocator({}, jemalloc_maps) is True
    assert "jemalloc" in HINT and "glibc.malloc.hugetlb=1" in HINT
    monkeypatch.setattr("wbc_edge.kd.allocator.fast_allocator", lambda: False)
    assert allocator_hint("cpu") == HINT
    assert allocator_hint("cuda:0") is None
    said: list[str] = []
    log_allocator_hint(said.append, "cpu")
    log_allocator_hint(said.append, "cuda:0")
    assert said == [HINT]
    monkeypatch.setattr("wbc_edge.kd.allocator.fast_allocator", lambda: True)
    assert allocator_hint("cpu") is None


def test_the_teacher_cache_gives_the_tip_when_it_builds_and_not_when_it_reuses(
    tmp_path, monkeypatch
) -> None:
    """The tip belongs where the teacher's passes run: a build, not a reused cache."""
    import numpy as np
    import torch

    from wbc_edge.kd.students import create_student
    from wbc_edge.kd.teacher_cache import build_teacher_cache
    from wbc_edge.model.card import Preprocess

    monkeypatch.setattr("wbc_edge.kd.allocator.fast_allocator", lambda: False)
    torch.manual_seed(0)
    teacher = create_student("tinyresnet_xs", 3).eval()
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    said: list[str] = []
    build_teacher_cache(teacher, images, Preprocess(32), tmp_path / "t", log=said.append)
    assert said == [HINT]
    build_teacher_cache(teacher, images, Preprocess(32), tmp_path / "t", log=said.append)
    assert said == [HINT]  # reused: the teacher did not run
