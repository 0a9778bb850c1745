"""The float32 batch buffers of the pipeline: reused between chunks, handed to the backend
without copying where the rows already lie one after the other."""

from __future__ import annotations

import threading

import numpy as np


class BatchBuffers:
    """The float32 buffers chunks are preprocessed into, handed back after inference and used
    again. A fresh 9.6 MB buffer (16 cells at 224 px) is faulted in and zeroed by the kernel on
    first touch: 0.16 ms of CPU a cell, as much as the resize. At most ``keep`` wait to be used
    again (as many as can be in flight: one a worker, one queued, one being inferred), so memory
    stays what the chunks in flight need."""

    def __init__(self, shape: tuple[int, int, int], rows: int, keep: int) -> None:
        self.shape, self.rows, self.keep = shape, rows, keep
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self, cells: int) -> np.ndarray:
        """A buffer of at least ``cells`` rows (whatever it held before)."""
        with self._lock:
            for i, buffer in enumerate(self._free):
                if len(buffer) >= cells:
                    return self._free.pop(i)
        return np.empty((max(cells, self.rows), *self.shape), np.float32)

    def give(self, buffer: np.ndarray) -> None:
        """Keep ``buffer`` for a later chunk (one made for a field of many cells is let go)."""
        with self._lock:
            if len(self._free) < self.keep and len(buffer) <= 2 * self.rows:
                self._free.append(buffer)


def backend_inputs(parts: list[np.ndarray], batch: int) -> list[np.ndarray]:
    """The backend's inputs for a group's cells (each item's rows, in order) without copying
    them when they can be left where they are: rows that lie one after the other in one chunk's
    buffer are one view of it. Several buffers are joined into one array only when together
    they make at most one batch (a camera's frames, one call instead of several); larger ones go
    buffer by buffer (a copy of 16 cells at 224 px moves 9.6 MB)."""
    runs: list[np.ndarray] = []
    for part in parts:
        if runs and _follows(runs[-1], part):
            prev = runs[-1]
            base = prev.base if prev.base is not None else prev
            start = _row_of(base, prev)
            runs[-1] = base[start : start + len(prev) + len(part)]
        else:
            runs.append(part)
    if len(runs) > 1 and sum(len(r) for r in runs) <= batch:
        return [np.concatenate(runs)]
    return runs


def _row_of(base: np.ndarray, view: np.ndarray) -> int:
    return (view.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // (
        base.strides[0]
    )


def _follows(prev: np.ndarray, part: np.ndarray) -> bool:
    """Whether ``part`` starts where ``prev`` ends, in the same C-contiguous buffer."""
    base = prev.base if prev.base is not None else prev
    if part.base is not base or not base.flags.c_contiguous:
        return False
    end = prev.__array_interface__["data"][0] + prev.nbytes
    return part.__array_interface__["data"][0] == end
