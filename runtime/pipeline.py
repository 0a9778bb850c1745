"""The streaming pipeline: capture -> prepare (a pool of workers) -> infer -> output.

Every step that touches the model is a step of the one :class:`~wbc_edge.model.model.Model` the
run holds (decode at the model's scale, find and crop a field's cells by the card's rule,
preprocess, infer, the OOD check, the review verdict); the pipeline only decides which thread
runs it when. Capture reads files (or grabs camera frames); a small pool of worker threads
(:class:`~wbc_edge.runtime.pool.OrderedPool`) decodes each file, finds the cells of a field and
preprocesses them, in parallel and in order; inference runs in its own thread, one batch at a
time, and the output stage writes the records. OpenCV and ONNX Runtime release the GIL, so on
two cores the workers decode the next files while the model runs.

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

A chunk stays one unit all the way: its worker decodes its files, then resizes and normalises
every cell straight into one float32 buffer (:meth:`~wbc_edge.model.model.Model.prepare_into`,
no per-cell array; buffers reused: :mod:`~wbc_edge.runtime.batching`), which inference hands to
the backend as it is when the chunk is the batch (no concatenation); the output stage keeps the
cells' images (a crop file is hard-linked, not copied: :mod:`~wbc_edge.runtime.archive`) and
appends the whole group's records in one write per file
(:meth:`~wbc_edge.runtime.sinks.RunOutput.write_items`). Observers see each item in order once
its records are built and its image kept, just before its group's records are appended: an
observer that aborts the run (a reached target) keeps every later item out of the records.

The time of each stage (read, decode, find, preprocess, infer, archive (the cells' images kept in
the sample folder), write; wall clock and the thread's CPU) is taken once per chunk or group, not
per item, and adds up in :class:`~wbc_edge.runtime.stage_stats.Stats`: what bounds a run on a
given machine, for the summary and ``bench --stream``.

:meth:`Pipeline.stop` (Ctrl-C) stops capture only: frames already in the queues are still
classified and written, then every stage ends in order. A failure in any stage aborts the rest
and is raised again from :meth:`Pipeline.run`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from wbc_edge.model.fieldcrop import FieldScale
from wbc_edge.runtime.batching import BatchBuffers, backend_inputs
from wbc_edge.runtime.options import PipelineConfig
from wbc_edge.runtime.pool import END as POOL_END
from wbc_edge.runtime.pool import OrderedPool
from wbc_edge.runtime.post import cell_records
from wbc_edge.runtime.queues import BlockingQueue, DropOldestQueue
from wbc_edge.runtime.sinks import CellRecord, RunOutput
from wbc_edge.runtime.sources import EndOfStream, Frame, Source
from wbc_edge.runtime.stage_stats import StageTimer, Stats

if TYPE_CHECKING:
    from wbc_edge.model.model import Model

_END = object()  # passed down the queues after the last item
# Chunks waiting between the workers and inference, and inference and output. A chunk of 16
# crops at 224 px holds about 16 MB (decoded crops and float input), so each chunk of depth
# is peak memory. At one chunk here and one per worker in the pool, the pbc9 folder peaks at
# 262-282 MB (runtime-throughput.md); in unrecorded trial runs four and four peaked at 350-411
# MB at the same cells/s (the queues only absorb jitter; inference takes what is waiting and
# never waits for more).
_CHUNKS_QUEUED = 1


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
    done: float = 0.0  # when its group's records were written (0 while observers see it)
    size: tuple[int, int] | None = None  # a decoded file's own (width, height)
    # A crop file's own JPEG bytes: the archive keeps them as the cell's image instead of
    # encoding the pixels again (crops mode only; None otherwise).
    encoded: bytes | None = None

    @property
    def latency_s(self) -> float:
        return self.done - self.frame.captured


@dataclass
class Chunk:
    """A worker's chunk of items, prepared, with the stage times it took (once per chunk)."""

    items: list[Item]
    times: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage: (wall, cpu) s


Observer = Callable[[Item], None]


class Pipeline:
    """Runs ``source`` through ``model`` into ``output``; observers see every finished item.

    The review threshold is the model's (``Model.load(..., threshold=config.threshold)``)."""

    def __init__(
        self,
        source: Source,
        model: Model,
        output: RunOutput,
        config: PipelineConfig | None = None,
        observers: list[Observer] | None = None,
        archive: Observer | None = None,
    ) -> None:
        self.source, self.model, self.output = source, model, output
        self.config = config or PipelineConfig()
        self._check_model_settings()
        self.observers = list(observers or [])
        self.archive = archive  # keeps an item's crops; runs before its records are written
        self.stats = Stats()
        # The archive's batch form (CellArchive.save_all) when it has one; else one call an item.
        self._archive_all = getattr(archive, "save_all", None)
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
        self._ruler: Any = None  # smear mode, a video or camera: its StreamRuler
        self._field = self.config.mode == "smear"  # decoded whole, its cells found
        options = getattr(source, "options", None)
        if options is not None and hasattr(options, "defer_decode"):
            options.defer_decode = True  # files arrive as bytes; the workers decode them
        self.stats.workers = self.config.resolved_workers()
        size = model.card.preprocess.input_size
        self.buffers = BatchBuffers((3, size, size), self.config.batch, self.stats.workers + 3)
        # One chunk in flight per worker (see _CHUNKS_QUEUED for why no more).
        self.pool = OrderedPool(
            self._prepare_chunk, self.stats.workers, self.stats.workers, name="wbc-prepare"
        )

    def _check_model_settings(self) -> None:
        """The review threshold and the crop margin are the model's (``Model.load(...,
        threshold=, margin=)``): a config that names others would be ignored, so it is refused."""
        from wbc_edge.model.review import review_threshold

        c, m = self.config, self.model
        if c.threshold is not None and review_threshold(c.threshold, m.card) != m.threshold:
            raise ValueError(
                f"the config's threshold {c.threshold} is not the model's {m.threshold}: "
                "give it to Model.load(threshold=...)"
            )
        if c.margin is not None and c.margin != m.margin:
            raise ValueError(
                f"the config's margin {c.margin} is not the model's {m.margin}: "
                "give it to Model.load(margin=...)"
            )

    # -- control ------------------------------------------------------------------------------

    def start(self) -> None:
        if self.config.mode == "smear":
            opts = getattr(self.source, "options", None)
            stream = opts is not None and (opts.live or opts.kind == "video")
            if stream and self.config.rbc_px is None and self.config.um_per_px is None:
                self._ruler = self.model.stream_ruler(self.config.ruler_every)
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
            if done.error is None:
                items = done.value.items
                for stage, (wall, cpu) in done.value.times.items():
                    self.stats.add_time(stage, wall, cpu)
            else:  # _prepare_chunk keeps each item's errors; this is a last resort
                items = []
                for frame in done.item:
                    frame.error = f"{frame.key}: cannot prepare ({done.error})"
                    items.append(Item(frame))
            if not self._put(self.prepared, items):
                return
        self._put(self.prepared, _END)

    def _prepare_chunk(self, frames: list[Frame]) -> Chunk:
        """Decode (files), find the cells (smear), preprocess into one buffer: one worker, one
        chunk. A bad frame gets its error and leaves the rest alone.

        A crop is preprocessed (and its OOD sample taken) right after its decode, while its
        pixels are still in the core's cache: decoding a whole chunk first and preprocessing it
        after read every crop back from memory (the OOD point sample, 4,096 scattered pixels,
        cost 2-3x as much)."""
        chunk = Chunk([Item(frame) for frame in frames])
        timer = StageTimer()
        if self.config.mode == "smear":
            for item in chunk.items:
                try:
                    if self._decode(item):
                        timer.lap("decode")
                    if item.frame.image is not None and not item.frame.error:
                        self._find(item)
                        timer.lap("find")
                except Exception as exc:  # one bad frame must not end a long run
                    self._failed(item, exc)
                finally:
                    if self._ruler is not None:  # a frame that never asked must not be waited for
                        self._ruler.release(item.frame.index)
            self._preprocess(chunk.items)
            timer.lap("preprocess")
        else:  # one cell a file: the box is the whole file, in its own pixels
            buffer, row = self.buffers.take(len(frames)), 0
            for item in chunk.items:
                if self._decode(item):
                    timer.lap("decode")
                image = item.frame.image
                if image is not None and not item.frame.error:
                    w, h = item.size or (image.shape[1], image.shape[0])
                    item.crops, item.boxes = [image], [(0, 0, w, h)]
                    row += self._preprocess_into(buffer, row, item)
                    timer.lap("preprocess")
            if not row:
                self.buffers.give(buffer)
        chunk.times = timer.times
        return chunk

    def _decode(self, item: Item) -> bool:
        """Decode a file's bytes at the model's scale; True when there were bytes to decode."""
        frame = item.frame
        if frame.data is None:
            return False
        data, frame.data = frame.data, None
        try:
            frame.image, item.size = self.model.decode(data, frame.file or frame.key, self._field)
        except Exception as exc:  # decode_scaled names the file in its ValueErrors
            if not frame.error:
                frame.error = (
                    str(exc)
                    if isinstance(exc, ValueError)
                    else f"{frame.key}: cannot prepare ({type(exc).__name__}: {exc})"
                )
            return True
        if not self._field and data[:2] == b"\xff\xd8":
            item.encoded = data
        return True

    def _failed(self, item: Item, exc: Exception) -> None:
        if not item.frame.error:
            item.frame.error = f"{item.frame.key}: cannot prepare ({type(exc).__name__}: {exc})"
        item.boxes, item.crops, item.batch = [], [], None

    def _find(self, item: Item) -> None:
        image = item.frame.image
        ruler = self._ruler
        found = self.model.find_cells(
            image,
            rbc_px=self.config.rbc_px,
            um_per_px=self.config.um_per_px,
            scale=ruler.scale_for(image, item.frame.index) if ruler is not None else None,
        )
        item.boxes, item.crops, item.scale = found.boxes, found.crops, found.scale

    def _preprocess(self, items: list[Item]) -> None:
        """Every cell of ``items`` resized and normalised into one float32 buffer, each item's
        ``batch`` a view of its rows."""
        cells = sum(len(it.crops) for it in items)
        if not cells:
            return
        buffer, row = self.buffers.take(cells), 0
        for item in items:
            if item.crops:
                row += self._preprocess_into(buffer, row, item)
        if not row:
            self.buffers.give(buffer)

    def _preprocess_into(self, buffer: np.ndarray, row: int, item: Item) -> int:
        """``item``'s cells into ``buffer`` from ``row`` on (its ``batch`` a view of them) and
        their OOD flags; the rows used (none when it failed: the next item takes them)."""
        n = len(item.crops)
        try:
            view = self.model.prepare_into(buffer[row : row + n], item.crops)
            item.ood = self.model.ood_check(item.crops)
        except Exception as exc:
            self._failed(item, exc)
            return 0
        item.batch = view
        return n

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
                size = self.config.batch
                probs = np.concatenate(
                    [
                        self.model.infer(x[i : i + size])
                        for x in backend_inputs(batches, size)
                        for i in range(0, len(x), size)
                    ]
                )
                self.stats.add_time("infer", time.perf_counter() - t0, time.thread_time() - c0)
                start = 0
                spent: dict[int, np.ndarray] = {}
                for it in group:
                    n = _cells(it)
                    if n:
                        it.probs, start = probs[start : start + n], start + n
                        base = it.batch.base if it.batch.base is not None else it.batch
                        spent[id(base)] = base
                    # The float input is spent: dropping it here rather than after the write
                    # keeps the results queue from holding 0.6 MB a cell (224 px) for nothing.
                    it.batch = None
                for buffer in spent.values():
                    self.buffers.give(buffer)
            if not self._put(self.results, group):
                return
        self._put(self.results, _END)

    def _output(self) -> None:
        while (group := self._get(self.results)) is not _END:
            if not self._write_group(group):
                return

    def _write_group(self, group: list[Item]) -> bool:
        """A group's records out in one batch: each item's records built (or its error logged)
        and seen by the observers in order, then the cells' images kept, then every record
        appended at once; False when the run was aborted (what follows stays undone)."""
        t0, c0 = time.perf_counter(), time.thread_time()
        taken: list[Item] = []
        for item in group:
            if self._abort.is_set():  # e.g. the target was reached: the rest stays undone
                break
            frame = item.frame
            if not frame.error and item.probs is not None and not np.isfinite(item.probs).all():
                # NaN compares False with the threshold, so it would count as confident.
                frame.error = f"{frame.key}: the model gave non-finite probabilities"
            if frame.error:
                self.output.write_error(
                    frame.key, frame.source, frame.error, frame.stat, frame.file
                )
                self.stats.errors += 1
            else:
                item.records = self._records(item)
            taken.append(item)
            for observe in self.observers:
                observe(item)
        ok = [it for it in taken if not it.frame.error]
        t1, c1 = time.perf_counter(), time.thread_time()
        wall, cpu = t1 - t0, c1 - c0  # records built and errors logged: the write stage's
        if self.archive is not None and ok:  # first, so a written record has its image
            if self._archive_all is not None:
                self._archive_all(ok)
            else:
                for item in ok:
                    self.archive(item)
            t2, c2 = time.perf_counter(), time.thread_time()
            self.stats.add_time("archive", t2 - t1, c2 - c1)
            t1, c1 = t2, c2
        if ok:
            entries = [
                (it.frame.key, it.records, it.frame.file, it.frame.stat, it.frame.digest)
                for it in ok
            ]
            self.output.write_items(entries)
        done = time.perf_counter()
        self.stats.add_time("write", wall + done - t1, cpu + time.thread_time() - c1)
        stats = self.stats
        for item in taken:
            item.done = done
            stats.items += 1
            stats.cells += len(item.records)
            if not item.frame.error:
                stats.latencies.append(done - item.frame.captured)
            # free them now
            item.crops, item.batch, item.encoded, item.frame.image = [], None, None, None
        stats.recent.append((done, stats.items, stats.cells))
        stats.dropped = self.frames.dropped
        return len(taken) == len(group)

    def _records(self, item: Item) -> list[CellRecord]:
        if item.probs is None:
            return []
        rows = self.model.verdicts(item.probs)
        return cell_records(item.frame, item.boxes, rows, item.scale, item.ood)


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
