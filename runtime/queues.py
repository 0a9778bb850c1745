"""Bounded queues between the pipeline's stage threads, one per back-pressure policy.

A live camera cannot wait, so its queue drops the *oldest* frame when full (the newest view of
the slide matters); a folder must lose nothing, so its queue blocks the reader instead. Both
expose ``dropped`` so the pipeline reports the same counter either way.
"""

from __future__ import annotations

import collections
import queue
import threading
from typing import Any


class DropOldestQueue:
    """A bounded queue whose ``put`` never blocks: when full, the oldest item is discarded.

    So the end-of-stream marker always gets in too, and the consumer always sees the end.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.dropped = 0
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()

    def put(self, item: Any, timeout: float | None = None) -> None:
        with self._cond:
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout):
                raise queue.Empty
            return self._items.popleft()

    def get_nowait(self) -> Any:
        return self.get(timeout=0)

    def qsize(self) -> int:
        return len(self._items)


class BlockingQueue(queue.Queue):
    """A bounded queue whose ``put`` waits for room (nothing may be lost); ``dropped`` is 0."""

    dropped = 0
