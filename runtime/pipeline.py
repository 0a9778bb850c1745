"""The streaming pipeline: capture -> prepare -> infer -> output, each stage its own thread.

Stages talk through bounded queues, so memory stays flat however fast the source is. What
happens when inference falls behind depends on the source: a live camera's queue drops the
*oldest* frame (the newest view of the slide matters, and the camera cannot wait), a folder's
queue blocks the reader instead (every file must be classified). Inference gathers the
prepared cells of several frames into one batch for throughput.

:meth:`Pipeline.stop` (Ctrl-C) stops capture only: frames already in the queues are still
classified and written, then every stage ends in order. A failure in any stage aborts the rest
and is raised again from :meth:`Pipeline.run`.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wbc_edge.runtime.backends import Backend
from wbc_edge.runtime.finder import FieldScale
from wbc_edge.runtime.options import PipelineConfig
from wbc_edge.runtime.post import cell_records, review_threshold
from wbc_edge.runtime.queues import BlockingQueue, DropOldestQueue
from wbc_edge.runtime.sinks import CellRecord, RunOutput
from wbc_edge.runtime.sources import EndOfStream, Frame, Source

_END = object()  # passed down the queues after the last item


@dataclass
class Item:
    """A frame on its way through the pipeline, with its cells once found and classified."""

    frame: Frame
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    batch: np.ndarray | None = None
    probs: np.ndarray | None = None
    records: list[CellRecord] = field(default_factory=list)
    scale: FieldScale | None = None  # smear: the scale the field's cells were cropped at
    done: float = 0.0

    @property
    def latency_s(self) -> float:
        return self.done - self.frame.captured


@dataclass
class Stats:
    """Counters the live view and the summary read while the pipeline runs."""

    started: float = field(default_factory=time.perf_counter)
    items: int = 0
    cells: int = 0
    errors: int = 0
    dropped: int = 0
    latencies: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=2000)
    )
    recent: collections.deque[tuple[float, int, int]] = field(
        default_factory=lambda: collections.deque(maxlen=200)
    )  # (time, items, cells) samples for rates over the last seconds
    stage_cpu_s: dict[str, float] = field(default_factory=dict)  # CPU time of each stage thread

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


Observer = Callable[[Item], None]


class Pipeline:
    """Runs ``source`` through ``backend`` into ``output``; observers see every finished item."""

    def __init__(
        self,
        source: Source,
        backend: Backend,
        output: RunOutput,
        config: PipelineConfig | None = None,
        observers: list[Observer] | None = None,
    ) -> None:
        self.source, self.backend, self.output = source, backend, output
        self.config = config or PipelineConfig()
        self.observers = list(observers or [])
        self.stats = Stats()
        self.threshold = review_threshold(self.config.threshold, backend.card)
        self.preprocess = backend.card.preprocess
        self.class_names = backend.card.class_names
        size = self.config.queue_size
        self.frames = DropOldestQueue(size) if source.live else BlockingQueue(size)
        # Room for two batches of one-cell frames: one being inferred, the next one filling.
        self.prepared: queue.Queue[Any] = queue.Queue(2 * self.config.batch)
        self.results: queue.Queue[Any] = queue.Queue(2 * self.config.batch)
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._failure: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._ended: list[threading.Event] = []  # one per stage, set as its last act
        self._finder: Any = None

    # -- control ------------------------------------------------------------------------------

    def start(self) -> None:
        if self.config.mode == "smear":
            from wbc_edge.runtime import finder

            self._finder = finder
        stages = [
            ("capture", self._capture),
            ("prepare", self._prepare),
            ("infer", self._infer),
            ("output", self._output),
        ]
        for name, target in stages:
            ended = threading.Event()
            t = threading.Thread(target=self._guard, args=(name, target, ended), name=f"wbc-{name}")
            t.daemon = True
            self._threads.append(t)
            self._ended.append(ended)
            t.start()

    def stop(self) -> None:
        """Stop capturing; what is already captured is still classified and written."""
        self._stop.set()

    def abort(self) -> None:
        """Stop at once, leaving queued frames unprocessed (written results stay intact)."""
        self._stop.set()
        self._abort.set()

    @property
    def running(self) -> bool:
        return not all(e.is_set() for e in self._ended)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for every stage to end; True when they have.

        Waits on each stage's own event, not on ``Thread.join``/``is_alive``: before Python
        3.13 a Ctrl-C that interrupts ``join`` marks the thread as ended although it still
        runs (cpython#90882), so the first Ctrl-C could end the run while the output stage
        was still writing the drained results. An interrupted ``Event.wait`` leaves nothing
        behind, so waiting again after a Ctrl-C is safe.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for ended in self._ended:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ended.wait(remaining)
        return not self.running

    def run(self) -> Stats:
        """Start, wait for the end of the stream (Ctrl-C drains), raise a stage's failure."""
        self.start()
        try:
            while not self.wait(0.2):
                pass
        except KeyboardInterrupt:
            self.stop()
            self.wait()
        return self.finish()

    def finish(self) -> Stats:
        """After the stages ended: final counters, or the exception that ended a stage."""
        self.stats.dropped = self.frames.dropped
        if self._failure is not None:
            raise self._failure
        return self.stats

    # -- stages -------------------------------------------------------------------------------

    def _guard(self, name: str, stage: Callable[[], None], ended: threading.Event) -> None:
        start = time.thread_time()
        try:
            stage()
        except BaseException as exc:  # handed to the main thread by finish()
            if self._failure is None:
                self._failure = exc
            self._abort.set()
            self._stop.set()
        finally:
            # Which stage is busiest tells where a faster machine (or more threads) would help.
            self.stats.stage_cpu_s[name] = round(time.thread_time() - start, 3)
            ended.set()

    def _put(self, q: Any, item: Any) -> bool:
        """Put, waiting for room but giving up when the pipeline aborts."""
        while not self._abort.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: Any) -> Any:
        while not self._abort.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _END

    def _capture(self) -> None:
        count = 0
        try:
            while not self._stop.is_set():
                if self.config.max_items and count >= self.config.max_items:
                    break
                try:
                    frame = self.source.capture(timeout=0.2)
                except EndOfStream:
                    break
                if frame is None:
                    continue
                count += 1
                if not self._put(self.frames, frame):
                    return
        finally:
            if isinstance(self.frames, DropOldestQueue):
                self.frames.put(_END)  # never blocks, and the consumer is still reading
            else:
                self._put(self.frames, _END)

    def _prepare(self) -> None:
        while (frame := self._get(self.frames)) is not _END:
            item = Item(frame)
            if frame.image is not None:
                try:
                    self._find_and_crop(item)
                except Exception as exc:  # one bad frame must not end a long run
                    frame.error = f"{frame.key}: cannot prepare ({type(exc).__name__}: {exc})"
                    item.boxes, item.crops, item.batch = [], [], None
            if not self._put(self.prepared, item):
                return
        self._put(self.prepared, _END)

    def _find_and_crop(self, item: Item) -> None:
        image = item.frame.image
        if self.config.mode == "smear":
            crop_scale = self.preprocess.crop_scale
            found = self._finder.cells_in_field(
                image,
                self.config.margin,
                fov_rbc=crop_scale.fov_rbc if crop_scale else None,
                rbc_px=self.config.rbc_px,
                um_per_px=self.config.um_per_px,
            )
            item.boxes, item.crops, item.scale = found.boxes, found.crops, found.scale
        else:
            h, w = image.shape[:2]
            item.crops, item.boxes = [image], [(0, 0, w, h)]
        item.batch = self.preprocess(item.crops)

    def _infer(self) -> None:
        end = False
        while not end:
            first = self._get(self.prepared)
            if first is _END:
                break
            group, cells = [first], _cells(first)
            # Top the batch up with whatever is already waiting; never wait for more.
            while cells < self.config.batch:
                try:
                    nxt = self.prepared.get_nowait()
                except queue.Empty:
                    break
                if nxt is _END:
                    end = True
                    break
                group.append(nxt)
                cells += _cells(nxt)
            batches = [it.batch for it in group if _cells(it)]
            if batches:
                probs = self.backend.predict(np.concatenate(batches))
                start = 0
                for it in group:
                    n = _cells(it)
                    if n:
                        it.probs, start = probs[start : start + n], start + n
            for it in group:
                if not self._put(self.results, it):
                    return
        self._put(self.results, _END)

    def _output(self) -> None:
        while (item := self._get(self.results)) is not _END:
            frame = item.frame
            if frame.error:
                self.output.write_error(frame.key, frame.source, frame.error)
                self.stats.errors += 1
            else:
                item.records = self._records(item)
                self.output.write_item(frame.key, item.records)
            item.done = time.perf_counter()
            self.stats.items += 1
            self.stats.cells += len(item.records)
            if not frame.error:
                self.stats.latencies.append(item.latency_s)
            self.stats.recent.append((item.done, self.stats.items, self.stats.cells))
            self.stats.dropped = self.frames.dropped
            for observe in self.observers:
                observe(item)
            item.crops, item.batch, frame.image = [], None, None  # free the pixels now

    def _records(self, item: Item) -> list[CellRecord]:
        if item.probs is None:
            return []
        return cell_records(
            item.frame, item.boxes, item.probs, self.class_names, self.threshold, item.scale
        )


def _cells(item: Item) -> int:
    return 0 if item.batch is None else len(item.batch)
