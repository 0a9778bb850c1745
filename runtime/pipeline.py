"""The streaming pipeline: capture -> prepare (a pool of workers) -> infer -> output.

Capture reads files (or grabs camera frames); a small pool of worker threads
(:class:`~wbc_edge.runtime.pool.OrderedPool`) decodes each file at the model's scale
(:func:`~wbc_edge.runtime.decode.decode_image`), finds the cells of a field and preprocesses
them, in parallel and in order; inference runs in its own thread, one batch at a time, and the
output stage writes the records. OpenCV and ONNX Runtime release the GIL, so on two cores the
workers decode the next files while the model runs.

Stages talk through bounded queues, so memory stays flat however fast the source is. What
happens when inference falls behind depends on the source: a live camera's queue drops the
*oldest* frame (the newest view of the slide matters, and the camera cannot wait), a folder's
queue blocks the reader instead (every file must be classified). Inference gathers the
prepared cells of whatever frames are waiting into one batch and never waits for more, so a
camera frame is never held back for a batch to fill.

Frames of a folder travel between the stages in *chunks*: the frames already waiting when a
worker is free (at most one batch), never waiting for more, so each thread hand-off (a lock, a
wake-up, a future) is paid once per chunk instead of once per file: on two cores those hand-offs
were a third of a PBC crop's CPU cost. A live source moves one frame at a time: its backlog
must stay in the drop-oldest queue, where the newest frame replaces the oldest, not in chunks
behind it.

Every item's time in each stage (read, decode, find, preprocess, infer, archive (the cells'
images kept in the sample folder), write; wall clock and
the thread's CPU) adds up in :attr:`Stats.stage_s` / :attr:`Stats.stage_cpu_s`: what bounds a
run on a given machine, for the summary and ``bench --stream``.

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

from wbc_edge.runtime import ood
from wbc_edge.runtime.backends import Backend
from wbc_edge.runtime.decode import decode_scaled, model_min_side
from wbc_edge.runtime.finder import FieldScale
from wbc_edge.runtime.options import PipelineConfig
from wbc_edge.runtime.pool import END as POOL_END
from wbc_edge.runtime.pool import OrderedPool
from wbc_edge.runtime.post import cell_records, review_threshold
from wbc_edge.runtime.queues import BlockingQueue, DropOldestQueue
from wbc_edge.runtime.sinks import CellRecord, RunOutput
from wbc_edge.runtime.sources import EndOfStream, Frame, Source

_END = object()  # passed down the queues after the last item
# Chunks waiting between the workers and inference, and inference and output. A chunk of 16
# crops at 224 px holds about 16 MB (decoded crops and float input), so each chunk of depth
# is peak memory. At one chunk here and one per worker in the pool, the pbc9 folder peaks at
# 262-282 MB (runtime-throughput.md); in unrecorded trial runs four and four peaked at 350-411
# MB at the same cells/s (the queues only absorb jitter; inference takes what is waiting and
# never waits for more).
_CHUNKS_QUEUED = 1
STAGES = ("read", "decode", "find", "preprocess", "infer", "archive", "write")


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
    ood: list[bool] | None = None  # per crop: out-of-distribution (None: card has no stats)
    done: float = 0.0
    times: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage: (wall, cpu) s
    size: tuple[int, int] | None = None  # a decoded file's own (width, height)
    # A crop file's own JPEG bytes: the archive keeps them as the cell's image instead of
    # encoding the pixels again (crops mode only; None otherwise).
    encoded: bytes | None = None

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
        archive: Observer | None = None,
    ) -> None:
        self.source, self.backend, self.output = source, backend, output
        self.config = config or PipelineConfig()
        self.observers = list(observers or [])
        self.archive = archive  # keeps an item's crops; runs before its records are written
        self.stats = Stats()
        self.threshold = review_threshold(self.config.threshold, backend.card)
        self.preprocess = backend.card.preprocess
        self.ood_stats = backend.card.ood  # None: the model's card cannot judge OOD
        self.class_names = backend.card.class_names
        size = self.config.queue_size
        self.frames = DropOldestQueue(size) if source.live else BlockingQueue(size)
        # Chunks (lists of items, each chunk at most a batch of frames): room for one being
        # inferred and a few filling. Counted in chunks, so a camera that moves one frame a
        # chunk queues few frames after the drop point: when it saturates the machine, frames
        # are dropped at capture instead of waiting here for seconds.
        self.prepared: queue.Queue[Any] = queue.Queue(_CHUNKS_QUEUED)
        self.results: queue.Queue[Any] = queue.Queue(_CHUNKS_QUEUED)
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._failure: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._ended: list[threading.Event] = []  # one per stage, set as its last act
        self._finder: Any = None
        self._ruler: Any = None  # smear mode, a video or camera: its StreamRuler
        # Crops are decoded at the smallest scale that still fills the model's input; a smear
        # field is decoded in full (the finder works in the field's own pixels).
        self.min_side = model_min_side(self.preprocess) if self.config.mode == "crops" else 0
        options = getattr(source, "options", None)
        if options is not None and hasattr(options, "defer_decode"):
            options.defer_decode = True  # files arrive as bytes; the workers decode them
        self.stats.workers = self.config.resolved_workers()
        # One chunk in flight per worker (see _CHUNKS_QUEUED for why no more).
        self.pool = OrderedPool(
            self._prepare_chunk, self.stats.workers, self.stats.workers, name="wbc-prepare"
        )

    # -- control ------------------------------------------------------------------------------

    def start(self) -> None:
        if self.config.mode == "smear":
            from wbc_edge.runtime import finder

            self._finder = finder
            opts = getattr(self.source, "options", None)
            stream = opts is not None and (opts.live or opts.kind == "video")
            if stream and self.config.rbc_px is None and self.config.um_per_px is None:
                crop_scale = self.preprocess.crop_scale
                self._ruler = finder.StreamRuler(
                    self.config.ruler_every, crop_scale.fov_rbc if crop_scale else None
                )
        stages = [
            ("capture", self._capture),
            ("dispatch", self._dispatch),
            ("collect", self._collect),
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
        self.pool.close()
        if self._failure is not None:
            raise self._failure
        return self.stats

    # -- stages -------------------------------------------------------------------------------

    def _guard(self, name: str, stage: Callable[[], None], ended: threading.Event) -> None:
        try:
            stage()
        except BaseException as exc:  # handed to the main thread by finish()
            if self._failure is None:
                self._failure = exc
            self._abort.set()
            self._stop.set()
        finally:
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
                finally:
                    self.stats.stream_losses = getattr(self.source, "losses", 0)
                    self.stats.reconnects = getattr(self.source, "reconnects", 0)
                if frame is None:
                    continue
                count += 1
                self.stats.add_time("read", frame.read_s, frame.read_cpu_s)
                if not self._put(self.frames, frame):
                    return
        finally:
            if isinstance(self.frames, DropOldestQueue):
                self.frames.put(_END)  # never blocks, and the consumer is still reading
            else:
                self._put(self.frames, _END)

    def _dispatch(self) -> None:
        """Hand chunks of frames to the worker pool (waiting while it has enough in flight):
        the first frame waited for, then those already queued behind it, up to a batch (one
        frame at a time for a live source)."""
        size = 1 if self.source.live else self.config.batch
        try:
            end = False
            while not end and (frame := self._get(self.frames)) is not _END:
                more, end = _take_waiting(self.frames, lambda _: 1, size - 1)
                chunk = [frame, *more]
                if self._ruler is not None:  # in frame order: which frame measures is fixed here
                    for f in chunk:
                        self._ruler.plan(f.index)
                while not self.pool.submit(chunk, timeout=0.1):
                    if self._abort.is_set():
                        return
        finally:
            self.pool.end()

    def _collect(self) -> None:
        """Take the workers' items in capture order and pass them on to inference."""
        while not self._abort.is_set():
            try:
                done = self.pool.next(timeout=0.1)
            except queue.Empty:
                continue
            if done is POOL_END:
                break
            items = done.value
            if done.error is not None:  # _prepare_one keeps its errors; this is a last resort
                items = []
                for frame in done.item:
                    frame.error = f"{frame.key}: cannot prepare ({done.error})"
                    items.append(Item(frame))
            for item in items:
                for stage, (wall, cpu) in item.times.items():
                    self.stats.add_time(stage, wall, cpu)
            if not self._put(self.prepared, items):
                return
        self._put(self.prepared, _END)

    def _prepare_chunk(self, frames: list[Frame]) -> list[Item]:
        return [self._prepare_one(frame) for frame in frames]

    def _prepare_one(self, frame: Frame) -> Item:
        """Decode (files), find the cells (smear), preprocess: one worker, one frame."""
        item = Item(frame)
        try:
            if frame.data is not None:
                t0, c0 = time.perf_counter(), time.thread_time()
                data, frame.data = frame.data, None
                frame.image, item.size = decode_scaled(data, frame.file or frame.key, self.min_side)
                item.times["decode"] = (time.perf_counter() - t0, time.thread_time() - c0)
                if self.min_side and data[:2] == b"\xff\xd8":
                    item.encoded = data
            if frame.image is not None:
                self._find_and_crop(item)
        except Exception as exc:  # one bad frame must not end a long run
            if not frame.error:
                frame.error = (
                    str(exc)
                    if isinstance(exc, ValueError) and "decode" not in item.times
                    else f"{frame.key}: cannot prepare ({type(exc).__name__}: {exc})"
                )
            item.boxes, item.crops, item.batch = [], [], None
        finally:
            if self._ruler is not None:  # a frame that never asked must not be waited for
                self._ruler.release(frame.index)
        return item

    def _find_and_crop(self, item: Item) -> None:
        image = item.frame.image
        if self.config.mode == "smear":
            t0, c0 = time.perf_counter(), time.thread_time()
            crop_scale = self.preprocess.crop_scale
            ruler = self._ruler
            found = self._finder.cells_in_field(
                image,
                self.config.margin,
                fov_rbc=crop_scale.fov_rbc if crop_scale else None,
                rbc_px=self.config.rbc_px,
                um_per_px=self.config.um_per_px,
                scale=ruler.scale_for(image, item.frame.index) if ruler is not None else None,
            )
            item.boxes, item.crops, item.scale = found.boxes, found.crops, found.scale
            item.times["find"] = (time.perf_counter() - t0, time.thread_time() - c0)
        else:  # the box is the whole file, in its own pixels (not the reduced decode's)
            w, h = item.size or (image.shape[1], image.shape[0])
            item.crops, item.boxes = [image], [(0, 0, w, h)]
        t0, c0 = time.perf_counter(), time.thread_time()
        item.batch = self.preprocess(item.crops)
        item.ood = ood.flags(self.ood_stats, item.crops)
        item.times["preprocess"] = (time.perf_counter() - t0, time.thread_time() - c0)

    def _infer(self) -> None:
        end = False
        while not end:
            first = self._get(self.prepared)
            if first is _END:
                break
            group = list(first)
            cells = sum(_cells(it) for it in group)
            # Top the batch up with whatever is already waiting; never wait for more.
            more, end = _take_waiting(
                self.prepared,
                lambda chunk: sum(_cells(it) for it in chunk),
                self.config.batch - cells,
            )
            group.extend(it for chunk in more for it in chunk)
            batches = [it.batch for it in group if _cells(it)]
            if batches:
                t0, c0 = time.perf_counter(), time.thread_time()
                # Chunks (and a smear field's many cells) can top the group up past the batch
                # size: the backend never sees more than it (a TensorRT profile's maximum).
                x, size = np.concatenate(batches), self.config.batch
                probs = np.concatenate(
                    [self.backend.predict(x[i : i + size]) for i in range(0, len(x), size)]
                )
                self.stats.add_time("infer", time.perf_counter() - t0, time.thread_time() - c0)
                start = 0
                for it in group:
                    n = _cells(it)
                    if n:
                        it.probs, start = probs[start : start + n], start + n
                    # The float input is spent: dropping it here rather than after the write
                    # keeps the results queue from holding 0.6 MB a cell (224 px) for nothing.
                    it.batch = None
            if not self._put(self.results, group):
                return
        self._put(self.results, _END)

    def _output(self) -> None:
        while (group := self._get(self.results)) is not _END:
            for item in group:
                if self._abort.is_set():  # e.g. the target was reached: the rest stays undone
                    return
                self._write(item)

    def _write(self, item: Item) -> None:
        """One item's records (or error) out, then its counters and observers."""
        frame = item.frame
        if not frame.error and item.probs is not None and not np.isfinite(item.probs).all():
            # NaN compares False with the threshold, so it would count as confident.
            frame.error = f"{frame.key}: the model gave non-finite probabilities"
        t0, c0 = time.perf_counter(), time.thread_time()
        if frame.error:
            self.output.write_error(frame.key, frame.source, frame.error, frame.stat, frame.file)
            self.stats.errors += 1
        else:
            item.records = self._records(item)
            if self.archive is not None:  # first, so a written record has its image
                self.archive(item)
                t1, c1 = time.perf_counter(), time.thread_time()
                self.stats.add_time("archive", t1 - t0, c1 - c0)
                t0, c0 = t1, c1
            self.output.write_item(frame.key, item.records, frame.file, frame.stat, frame.digest)
        item.done = time.perf_counter()
        self.stats.add_time("write", item.done - t0, time.thread_time() - c0)
        self.stats.items += 1
        self.stats.cells += len(item.records)
        if not frame.error:
            self.stats.latencies.append(item.latency_s)
        self.stats.recent.append((item.done, self.stats.items, self.stats.cells))
        self.stats.dropped = self.frames.dropped
        for observe in self.observers:
            observe(item)
        item.crops, item.batch, item.encoded, frame.image = [], None, None, None  # free them now

    def _records(self, item: Item) -> list[CellRecord]:
        if item.probs is None:
            return []
        return cell_records(
            item.frame,
            item.boxes,
            item.probs,
            self.class_names,
            self.threshold,
            item.scale,
            item.ood,
        )


def _take_waiting(q: Any, size: Callable[[Any], int], room: int) -> tuple[list, bool]:
    """What ``q`` already holds, taken without waiting while the sizes taken stay under
    ``room``; and whether the end marker was among them (it is consumed, not returned)."""
    taken: list = []
    used = 0
    while used < room:
        try:
            nxt = q.get_nowait()
        except queue.Empty:
            break
        if nxt is _END:
            return taken, True
        taken.append(nxt)
        used += size(nxt)
    return taken, False


def _cells(item: Item) -> int:
    return 0 if item.batch is None else len(item.batch)
