"""The run's log says once how to make a teacher's CPU passes fast, and only when it helps."""

from __future__ import annotations

import sys

import pytest

from wbc_edge.kd.allocator import HINT, allocator_hint, fast_allocator

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
    monkeypatch.setattr("wbc_edge.kd.allocator.fast_allocator", lambda: True)
    assert allocator_hint("cpu") is None
