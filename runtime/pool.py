"""A small pool of worker threads over a stream, handing results back in the order items came.

Decoding a JPEG, finding cells and resizing are OpenCV calls that release the GIL, so a few
threads use every core while inference runs in its own thread. Order matters downstream (a
folder's records come out in file order, a camera's frames in time order), so results are
collected oldest first; a slow item holds back the ones behind it, never the other way round.
The number of items in flight is bounded, so memory stays flat however fast the source is.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

END = object()  # what :meth:`OrderedPool.next` returns after the last item


@dataclass
class Done:
    """One item's outcome: ``value`` from the function, or the ``error`` it raised."""

    item: Any
    value: Any = None
    error: BaseException | None = None


class OrderedPool:
    """``workers`` threads run ``fn`` over submitted items; :meth:`next` returns them in order.

    Every submitted item comes back exactly once, as a :class:`Done` whose ``error`` holds the
    exception when ``fn`` raised, so one failure never loses the items around it.
    """

    def __init__(
        self, fn: Callable[[Any], Any], workers: int, depth: int = 0, name: str = "wbc-pool"
    ) -> None:
        if workers < 1:
            raise ValueError("an OrderedPool needs at least one worker")
        self.fn = fn
        self.workers = workers
        self.depth = depth or 2 * workers  # enough to keep every worker busy while one is read
        self._room = threading.Semaphore(self.depth)
        self._order: queue.Queue[Any] = queue.Queue()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=name)

    def _call(self, item: Any) -> Done:
        try:
            return Done(item, self.fn(item))
        except Exception as exc:  # delivered with its item, in order
            return Done(item, error=exc)

    def submit(self, item: Any, timeout: float | None = None) -> bool:
        """Queue ``item``; waits while ``depth`` items are in flight. False on timeout."""
        if not self._room.acquire(timeout=timeout):
            return False
        self._order.put(self._executor.submit(self._call, item))
        return True

    def end(self) -> None:
        """No more items: :meth:`next` returns :data:`END` once the submitted ones are out."""
        self._order.put(END)

    def next(self, timeout: float | None = None) -> Any:
        """The oldest item's :class:`Done` (waiting for it), or :data:`END`.

        Raises ``queue.Empty`` when nothing was submitted within ``timeout``.
        """
        entry = self._order.get(timeout=timeout)
        if entry is END:
            return END
        assert isinstance(entry, Future)
        done = entry.result()
        self._room.release()
        return done

    def close(self) -> None:
        """Stop the workers once their current items are done (queued ones are dropped)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> OrderedPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
