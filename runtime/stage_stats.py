"""What a run's stages cost: wall clock and thread CPU per stage, counters, rates, latency.

The pipeline (:mod:`wbc_edge.runtime.pipeline`) times each stage once per chunk or group, not
per item, and adds it up here; the live view, ``summary.json`` and ``bench --stream`` read it.
(Reading a thread's CPU clock is a system call made while holding the GIL: per item, eight of
them were a visible share of a crop's cost on two loaded cores.)
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

import numpy as np

STAGES = ("read", "decode", "find", "preprocess", "infer", "archive", "write")


@dataclass
class Stats:
    """Counters the live view and the summary read while the pipeline runs."""

    started: float = field(default_factory=time.perf_counter)
    items: int = 0
    cells: int = 0
    errors: int = 0
    dropped: int = 0
    stream_losses: int = 0  # a camera or stream stopped delivering (each loss once)
    reconnects: int = 0  # ... and came back
    latencies: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=20000)
    )
    recent: collections.deque[tuple[float, int, int]] = field(
        default_factory=lambda: collections.deque(maxlen=200)
    )  # (time, items, cells) samples for rates over the last seconds
    # Seconds spent in each of STAGES, summed over items: wall clock, and the CPU time of the
    # thread doing it (on a loaded machine wall > CPU; the CPU figure is what the work costs).
    stage_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    stage_cpu_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    workers: int = 0

    def add_time(self, stage: str, wall: float, cpu: float) -> None:
        """Add one step's time (each stage is added to by one thread only)."""
        self.stage_s[stage] += wall
        self.stage_cpu_s[stage] += cpu

    def stage_line(self) -> str:
        """One log line: ms per cell in each stage (wall clock; CPU in brackets)."""
        parts = []
        for name, v in self.stage_summary().items():
            if v["wall_s"]:
                parts.append(f"{name} {v['ms_per_cell']:.3f} ({v['cpu_ms_per_cell']:.3f})")
        return f"ms per cell, wall (CPU), {self.workers} workers: " + ", ".join(parts)

    def stage_summary(self) -> dict[str, dict[str, float]]:
        """Per stage: total wall and CPU seconds, and ms per item and per cell."""
        out = {}
        for name in STAGES:
            wall, cpu = self.stage_s[name], self.stage_cpu_s[name]
            out[name] = {
                "wall_s": round(wall, 4),
                "cpu_s": round(cpu, 4),
                "ms_per_item": round(1000 * wall / self.items, 4) if self.items else 0.0,
                "ms_per_cell": round(1000 * wall / self.cells, 4) if self.cells else 0.0,
                "cpu_ms_per_cell": round(1000 * cpu / self.cells, 4) if self.cells else 0.0,
            }
        return out

    def rates(self, window_s: float = 5.0) -> tuple[float, float]:
        """Items/s and cells/s over the last ``window_s`` seconds."""
        now = time.perf_counter()
        # list() copies in one step: the output thread appends while the view reads.
        old = [s for s in list(self.recent) if now - s[0] <= window_s]
        if len(old) < 2:
            elapsed = now - self.started
            return (self.items / elapsed, self.cells / elapsed) if elapsed > 0 else (0.0, 0.0)
        t0, i0, c0 = old[0]
        dt = max(now - t0, 1e-6)
        return (self.items - i0) / dt, (self.cells - c0) / dt

    def latency_ms(self, q: float) -> float:
        values = list(self.latencies)
        return float(np.percentile(values, q) * 1000) if values else 0.0


class StageTimer:
    """Wall and thread-CPU seconds per stage, summed over laps (each lap: the time since the
    last one)."""

    def __init__(self) -> None:
        self.times: dict[str, tuple[float, float]] = {}
        self.wall, self.cpu = time.perf_counter(), time.thread_time()

    def lap(self, stage: str) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        w, c = self.times.get(stage, (0.0, 0.0))
        self.times[stage] = (w + wall - self.wall, c + cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
