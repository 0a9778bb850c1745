"""Frame sources behind one URI scheme (the jetson-utils ``videoSource`` idea).

:func:`open_source` normalises what the user typed and picks the implementation:

==========================  ==========================================================
``0`` (``--camera 0``)      camera by index (OpenCV)
``v4l2:///dev/video0``      V4L2 device; a bare ``/dev/video0`` means the same
``csi://0``                 Jetson CSI camera through an ``nvarguscamerasrc`` pipeline
``... ! ... ! appsink``     any GStreamer pipeline (contains ``!``)
``rtsp://host/path``        network stream
``clip.mp4``                video file, read to the end
``cell.jpg``                one image
``"imgs/*.png"``            a glob, sorted
``folder/``                 every file below it once, sorted (recursively)
``folder/`` + ``watch``     new files as they arrive, each once, after it stops growing
==========================  ==========================================================

``capture(timeout)`` says what happened: a :class:`Frame` (whose ``error`` is set when an image
is not accepted, :mod:`wbc_edge.model.imagecheck`, so the caller logs it and goes on),
``None`` for a timeout, or :class:`EndOfStream`. A lost camera or stream is reopened with
exponential back-off, each loss and reconnect said in the log with its count; while it is down
``capture`` returns ``None``. A video file ends at its last frame, ``--realtime`` or not.
Sources take what an earlier run into the same results finished
(:class:`~wbc_edge.runtime.resume.ResumeState`) and never yield it again: files by key (a failed
file again once it has changed), a video file from the frame after the last one done.
"""

from __future__ import annotations

import contextlib
import glob
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
from rich.markup import escape

from wbc_edge.console import console
from wbc_edge.errors import UserError
from wbc_edge.model.decode import check_complete, decode_image
from wbc_edge.model.imagecheck import check_pixels
from wbc_edge.runtime.resume import (
    ResumeState,
    content_digest,
    file_key,
    file_stat,
    live_key,
    new_session_id,
    video_key,
)
from wbc_edge.runtime.sinks import printable_name

__all__ = ["file_key"]  # re-exported: callers and tests name it from here

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".h264"}
# Files a writer is still producing under a temporary name; they appear later under the real one.
PARTIAL_SUFFIXES = {".part", ".tmp", ".crdownload", ".partial", ".swp"}
# Notes and metadata that sit beside images (a data set's README, annotations, label files):
# never images, so a folder run skips them (saying so) instead of reporting each as bad.
DOCUMENT_SUFFIXES = {
    ".txt", ".md", ".csv", ".tsv", ".json", ".jsonl", ".xml", ".yaml", ".yml", ".html", ".htm",
    ".pdf", ".log",
}  # fmt: skip
LIVE_KINDS = {"camera", "v4l2", "csi", "gstreamer", "rtsp"}


class EndOfStream(Exception):
    """The source has no more frames (end of a file or folder, or a camera given up on)."""


@dataclass
class Frame:
    """One captured image; ``key`` identifies it in the results (file path or source#index).

    ``data`` holds a file's encoded bytes while the decode is deferred to the pipeline's decode
    workers (``SourceOptions.defer_decode``); ``image`` is None until they decode it.
    """

    source: str
    index: int
    key: str
    image: np.ndarray | None
    file: str = ""
    error: str = ""
    captured: float = field(default_factory=time.perf_counter)
    data: bytes | None = None
    read_s: float = 0.0  # wall and CPU seconds reading it (a video frame: grab and decode)
    read_cpu_s: float = 0.0
    stat: tuple[int, int] | None = None  # a file's (size, mtime_ns) when it was read
    digest: str = ""  # a file's content digest (resume tells new bytes under an old name)


@dataclass
class SourceOptions:
    """Everything that decides how a source behaves; printed when it opens."""

    uri: str
    kind: str = ""
    resource: str = ""
    live: bool = False  # drop the oldest frames when behind; reconnect when lost
    width: int = 0
    height: int = 0
    fps: float = 0.0
    poll_s: float = 0.5  # watch: how often the folder is listed
    settle_s: float = 1.0  # watch: a file must keep its size this long before it is read
    reconnect: bool = True
    max_backoff_s: float = 16.0
    reconnect_tries: int = 0  # 0: keep trying for ever (a lab camera that was unplugged)
    # Files: hand over the checked bytes and let the pipeline's decode workers decode them at
    # the model's scale, in parallel (set by the pipeline; a plain capture() decodes in full).
    defer_decode: bool = False
    # Cameras. USB (v4l2/camera): the pixel format asked for; "" prefers MJPEG, which UVC
    # cameras deliver at high resolutions where raw YUYV cannot keep the frame rate; the
    # format the camera really gave is ``fourcc_got``. CSI: nvvidconv's flip-method (0-7) and
    # nvarguscamerasrc's sensor-mode (-1: the sensor's default for the size asked).
    fourcc: str = ""
    fourcc_got: str = ""
    flip: int = 0
    sensor_mode: int = -1
    open_timeout_s: float = 10.0  # streams: give up opening (or reading) after this long
    notify: str = ""  # watch: "inotify" (events) or "polling" (listings), set when it opens

    def describe(self) -> str:
        parts = [f"source {self.uri!r}", f"kind={self.kind}", f"live={self.live}"]
        if self.resource and self.resource != self.uri:
            parts.append(f"resource={self.resource!r}")
        if self.kind == "watch":
            parts += [f"poll={self.poll_s}s", f"settle={self.settle_s}s", f"notify={self.notify}"]
        if self.kind == "rtsp":
            parts.append(f"open timeout={self.open_timeout_s:g}s")
        if self.width or self.height:
            parts.append(f"size={self.width}x{self.height}")
        if self.fps:
            parts.append(f"fps={self.fps:g}")
        if self.fourcc_got or self.fourcc:
            parts.append(f"format={self.fourcc_got or self.fourcc}")
        if self.kind == "csi":
            parts.append(f"flip-method={self.flip}")
            if self.sensor_mode >= 0:
                parts.append(f"sensor-mode={self.sensor_mode}")
        if self.live:
            limit = self.reconnect_tries or "unlimited"
            parts.append(
                f"reconnect={self.reconnect} (tries {limit}, back-off <= {self.max_backoff_s}s)"
            )
        return ", ".join(parts)


# nvvidconv's flip-method values by the names jetson-utils' --input-flip uses.
FLIP_METHODS = {
    "none": 0,
    "counterclockwise": 1,
    "rotate-180": 2,
    "clockwise": 3,
    "horizontal": 4,
    "upper-right-diagonal": 5,
    "vertical": 6,
    "upper-left-diagonal": 7,
}


def gst_fraction(fps: float) -> str:
    """A GStreamer framerate: 30 -> "30/1", 29.97 -> "2997/100" (not truncated to 29)."""
    rate = Fraction(fps or 30).limit_denominator(1001)
    return f"{rate.numerator}/{rate.denominator}"


def csi_pipeline(
    sensor: int,
    width: int = 1280,
    height: int = 720,
    fps: float = 30,
    flip: int = 0,
    sensor_mode: int = -1,
) -> str:
    """GStreamer pipeline for a Jetson CSI camera, ending in BGR frames for OpenCV."""
    mode = f" sensor-mode={sensor_mode}" if sensor_mode >= 0 else ""
    return (
        f"nvarguscamerasrc sensor-id={sensor}{mode} ! "
        f"video/x-raw(memory:NVMM), width={width}, height={height}, "
        f"framerate={gst_fraction(fps)}, format=NV12 ! nvvidconv flip-method={flip} ! "
        "video/x-raw, format=BGRx ! videoconvert ! "
        "video/x-raw, format=BGR ! appsink drop=true max-buffers=1"
    )


def _camera_query(uri: str, query: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """``flip=rotate-180&sensor-mode=2`` -> {"flip": "rotate-180", "sensor-mode": "2"}."""
    params = {}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if key not in allowed:
            raise UserError(
                f"{uri}: unknown option {key!r} (this source takes {', '.join(allowed)})"
            )
        params[key] = values[-1]
    return params


def _csi_options(uri: str, text: str) -> SourceOptions:
    sensor, _, query = text[len("csi://") :].partition("?")
    if not sensor.isdigit():
        raise UserError(f"{uri}: a CSI camera is csi://N with a sensor number, e.g. csi://0")
    params = _camera_query(uri, query, ("flip", "sensor-mode"))
    opts = SourceOptions(uri, "csi", sensor, live=True)
    flip = params.get("flip", "none")
    if flip.isdigit() and int(flip) in FLIP_METHODS.values():
        opts.flip = int(flip)
    elif flip in FLIP_METHODS:
        opts.flip = FLIP_METHODS[flip]
    else:
        raise UserError(f"{uri}: flip={flip!r}: use 0-7 or one of {', '.join(FLIP_METHODS)}")
    mode = params.get("sensor-mode", "-1")
    if not mode.lstrip("-").isdigit():
        raise UserError(
            f"{uri}: sensor-mode={mode!r} is not a number (see v4l2-ctl --list-formats-ext)"
        )
    opts.sensor_mode = int(mode)
    return opts


def _v4l2_options(uri: str, device: str) -> SourceOptions:
    device, _, query = device.partition("?")
    params = _camera_query(uri, query, ("format",))
    fourcc = params.get("format", "").upper()
    if fourcc and len(fourcc) != 4:
        raise UserError(f"{uri}: format={fourcc!r}: give a FOURCC such as MJPG or YUYV")
    opts = SourceOptions(uri, "v4l2", device, live=True)
    opts.fourcc = fourcc
    return opts


def parse_uri(uri: str, watch: bool = False) -> SourceOptions:
    """Normalise a source string into its kind and the resource to open (no I/O beyond stat)."""
    text = uri.strip()
    if not text:
        raise UserError("empty source: pass a folder, file, glob, camera index or stream URI")
    if text.isdigit():
        return SourceOptions(uri, "camera", text, live=True)
    if text.startswith("v4l2://"):
        return _v4l2_options(uri, text[len("v4l2://") :])
    if text.startswith("/dev/video"):
        return _v4l2_options(uri, text)
    if text.startswith("csi://"):
        return _csi_options(uri, text)
    if "!" in text:
        return SourceOptions(uri, "gstreamer", text, live=True)
    if text.startswith(("rtsp://", "rtsps://", "http://", "https://")):
        return SourceOptions(uri, "rtsp", text, live=True)
    if text.startswith("file://"):
        text = text[len("file://") :]
    if any(ch in text for ch in "*?["):
        return SourceOptions(uri, "glob", text)
    path = Path(text).expanduser()
    if path.is_dir():
        return SourceOptions(uri, "watch" if watch else "folder", str(path))
    if watch:
        raise UserError(f"--watch needs a folder, but {uri} is not one")
    if not path.is_file():
        raise UserError(
            f"source not found: {uri} (expected a folder, image, video, glob, camera index, "
            "v4l2:///dev/videoN, csi://N, rtsp://... or a GStreamer pipeline)"
        )
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return SourceOptions(uri, "video", str(path))
    return SourceOptions(uri, "image", str(path))


def open_source(
    uri: str,
    watch: bool = False,
    done: Iterable[str] | ResumeState = (),
    realtime: bool = False,
    **options: float | int | bool,
) -> Source:
    """The source for ``uri``; ``done`` is what to skip (a results folder's ``resume``, or a set
    of keys); ``realtime`` makes a video file behave like a camera (paced at its frame rate,
    oldest frames dropped when behind) until its last frame."""
    opts = parse_uri(uri, watch)
    for name, value in options.items():
        if not hasattr(opts, name):
            raise TypeError(f"unknown source option {name}")
        setattr(opts, name, value)
    resume = ResumeState.of(done)
    if opts.kind in ("folder", "glob", "image"):
        return FileSource(opts, list_files(opts), resume)
    if opts.kind == "watch":
        return WatchSource(opts, resume)
    if realtime and opts.kind == "video":
        opts.live = True
    return VideoSource(opts, resume)


def list_files(opts: SourceOptions) -> list[Path]:
    """The files a folder, glob or image source reads, in sorted order."""
    if opts.kind == "image":
        return [Path(opts.resource)]
    if opts.kind == "glob":
        paths = [Path(p) for p in glob.glob(opts.resource, recursive=True)]
        files = _without_documents(sorted(p for p in paths if p.is_file()), opts.uri)
        if not files:
            raise UserError(f"no files match {opts.uri}")
        return files
    files = sorted(p for p in Path(opts.resource).rglob("*") if _candidate(p) and p.is_file())
    return _without_documents(files, opts.resource)


def _is_document(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in DOCUMENT_SUFFIXES


def _without_documents(files: list[Path], where: str) -> list[Path]:
    """``files`` less the notes and metadata among them, saying how many were skipped."""
    documents = [p for p in files if _is_document(p.name)]
    if documents:
        names = ", ".join(printable_name(p.name) for p in documents[:3])
        more = f" and {len(documents) - 3} more" if len(documents) > 3 else ""
        console.print(
            escape(
                f"skipping {len(documents)} file(s) that are not images ({names}{more}) in "
                f"{printable_name(where)}"
            ),
            highlight=False,
        )
    return [p for p in files if not _is_document(p.name)]


def _candidate(path: Path) -> bool:
    """Skip hidden files and names writers use while a file is incomplete."""
    return _candidate_name(path.name)


def _candidate_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() not in PARTIAL_SUFFIXES


def _watched_name(name: str) -> bool:
    """A watch also leaves notes and metadata alone (a folder run says it skipped them)."""
    return _candidate_name(name) and not _is_document(name)


def read_frame(opts: SourceOptions, index: int, path: Path, key: str = "") -> Frame:
    """Read a file (and decode it in full unless ``opts.defer_decode``); errors go in the frame.
    ``key``: the item's key when it is not the file's own (a revision of a reused name)."""
    file = file_key(path)
    key = key or file
    captured = time.perf_counter()  # latency counts reading and decoding too
    cpu = time.thread_time()
    name = printable_name(str(path))  # messages and logs stay valid UTF-8
    stat = file_stat(path)
    image, data, error, digest = None, None, "", ""
    try:
        data = path.read_bytes()
        digest = content_digest(data)
        check_complete(data, name)
        if not opts.defer_decode:
            image, data = decode_image(data, name), None
    except (OSError, ValueError) as exc:
        data, error = None, printable_name(str(exc))
    frame = Frame(opts.uri, index, key, image, file=file, error=error, captured=captured, data=data)
    frame.read_s, frame.read_cpu_s = time.perf_counter() - captured, time.thread_time() - cpu
    frame.stat, frame.digest = stat, digest
    return frame


def _said_revision(frame: Frame) -> None:
    console.print(
        escape(
            f"{printable_name(frame.file)} holds new content since it was recorded (a name used "
            "again): classified as a new item"
        ),
        highlight=False,
        soft_wrap=True,
    )


class Source:
    """Base of every source: options, a frame counter and the context-manager lifecycle."""

    def __init__(self, opts: SourceOptions) -> None:
        self.options = opts
        self.index = 0

    @property
    def live(self) -> bool:
        return self.options.live

    def capture(self, timeout: float = 1.0) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file handles."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileSource(Source):
    """A fixed, sorted list of files (folder, glob or one image), read once."""

    def __init__(self, opts: SourceOptions, files: list[Path], resume: ResumeState) -> None:
        super().__init__(opts)
        self.files = files
        self.resume = resume
        todo = []
        for i, p in enumerate(files):
            path_key = file_key(p)
            key = resume.item_key(path_key, file_stat(p) if resume.known(path_key) else None)
            if key is not None:
                todo.append((i, p, key))
        self.skipped = len(files) - len(todo)
        self._todo = iter(todo)

    def __len__(self) -> int:
        return len(self.files) - self.skipped

    def capture(self, timeout: float = 1.0) -> Frame | None:
        while True:
            try:
                index, path, key = next(self._todo)
            except StopIteration:
                raise EndOfStream from None
            self.index = index
            frame = read_frame(self.options, index, path, key)
            if key == frame.file:
                return frame
            if not self.resume.same_content(frame.file, frame.stat, frame.digest):
                _said_revision(frame)
                return frame
            self.skipped += 1  # only touched or copied back: the same bytes, counted once


# How often a watch with inotify still lists the whole folder, in case an event was missed
# (the kernel's queue overflowed, or a network file system sends none).
RESCAN_S = 30.0


class WatchSource(Source):
    """New files in a folder, each read once, after its size and mtime stop changing.

    A file is ready when two looks at least ``settle_s`` apart saw the same size and mtime; a
    JPEG/PNG that still lacks its end marker then waits for more data, and is logged as
    truncated only if it stays that way for ``20 x settle_s``. A file that failed is read again
    when its size or mtime changes (a writer that paused, then finished it).

    With ``watchdog`` (inotify on Linux) only the files that events name are looked at, plus a
    full listing every :data:`RESCAN_S`, so an idle watch over a large folder costs nearly
    nothing; without it (or when inotify refuses, e.g. out of watches) the folder is listed
    every ``poll_s``.
    """

    def __init__(self, opts: SourceOptions, resume: ResumeState) -> None:
        super().__init__(opts)
        self.root = file_key(opts.resource)
        self.resume = resume
        # key -> (stat, monotonic time it was first seen with that stat)
        self._watching: dict[str, tuple[tuple[int, int], float]] = {}
        self._ready: list[str] = []
        self._next_poll = 0.0
        self._next_scan = 0.0
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._first_seen: dict[str, float] = {}  # truncated files waiting for their end
        self._observer = self._start_observer()
        opts.notify = "inotify" if self._observer is not None else "polling"

    def _start_observer(self):  # -> watchdog Observer | None
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            return None
        source = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                if event.is_directory:
                    source._next_scan = 0.0  # a folder moved in: list it all
                    return
                paths = [event.src_path, getattr(event, "dest_path", "")]
                with source._dirty_lock:
                    source._dirty.update(os.fsdecode(p) for p in paths if p)

        observer = Observer()
        try:
            observer.schedule(Handler(), self.root, recursive=True)
            observer.start()
        except OSError as exc:  # inotify watch or instance limit
            console.print(f"[yellow]watch[/] {self.root}: inotify unavailable ({exc}); polling")
            return None
        return observer

    def _scan(self) -> Iterator[str]:
        for dirpath, _dirs, names in os.walk(self.root):
            for name in names:
                if _watched_name(name):
                    yield os.path.join(dirpath, name)

    def _consider(self, key: str, now: float, recheck: bool = True) -> None:
        """Watch ``key`` if it holds something new; ``recheck`` False skips files done before
        without a stat (a polling listing between rechecks: 10,800 stats every 0.5 s cost a
        fifth of a core)."""
        if key in self._watching or not _watched_name(os.path.basename(key)):
            return
        if not recheck and key in self.resume.done and key not in self.resume.failed:
            return
        stat = file_stat(key)
        if stat is None or not os.path.isfile(key):
            return
        if self.resume.item_key(key, stat) is None:
            return  # done, or failed, and unchanged since
        self._watching[key] = (stat, now)

    def _poll(self) -> None:
        now = time.monotonic()
        if self._observer is None or now >= self._next_scan:
            # Polling lists every poll_s but looks again at files done before (a name reused
            # for new content) only every RESCAN_S; inotify's events name such files at once.
            recheck = now >= self._next_scan
            if recheck:
                self._next_scan = now + RESCAN_S
            for key in self._scan():
                self._consider(key, now, recheck)
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        for key in dirty:
            self._consider(key, now)
        ready = []
        for key, (stat, since) in list(self._watching.items()):
            current = file_stat(key)
            if current is None:  # deleted or renamed away
                del self._watching[key]
            elif current != stat:
                self._watching[key] = (current, now)
            elif stat[0] > 0 and now - since >= self.options.settle_s:
                ready.append(key)
        for key in sorted(ready):
            del self._watching[key]
        self._ready.extend(sorted(ready))

    def _read(self, key: str) -> Frame | None:
        item = self.resume.item_key(key, file_stat(key))
        if item is None:
            return None
        frame = read_frame(self.options, self.index, Path(key), item)
        if item != key and self.resume.same_content(key, frame.stat, frame.digest):
            return None  # only touched or copied back: the same bytes, counted once
        if "truncated" in frame.error:
            first = self._first_seen.get(key, time.monotonic())
            if time.monotonic() - first < 20 * self.options.settle_s:
                self._first_seen.setdefault(key, first)
                self._consider(key, time.monotonic())  # not finished yet: look again later
                return None
        self._first_seen.pop(key, None)
        # Handed out: a later look must not offer it again (the output marks it for good).
        if frame.error:
            self.resume.add_failed(item, frame.stat, key)
        else:
            self.resume.add_done(item, key, frame.stat, frame.digest)
            if item != key:
                _said_revision(frame)
        self.index += 1
        return frame

    def capture(self, timeout: float = 1.0) -> Frame | None:
        deadline = time.monotonic() + timeout
        while True:
            while self._ready:
                frame = self._read(self._ready.pop(0))
                if frame is not None:
                    return frame
            now = time.monotonic()
            if now >= self._next_poll:
                self._next_poll = now + self.options.poll_s
                self._poll()
                if self._ready or time.monotonic() < deadline:
                    continue
                # A listing slower than poll_s (10,000 files on a busy machine) would otherwise
                # poll again at once, for ever: return, so the caller can see a stop.
                return None
            if now >= deadline:
                return None
            time.sleep(min(self._next_poll, deadline) - now)

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._observer = None


class VideoSource(Source):
    """Cameras, streams, GStreamer pipelines and video files through OpenCV's VideoCapture.

    A video file's frames are keyed by the file and frame number and resume after the last
    frame done; a live source's keys carry this run's session id, so frame numbers that restart
    at 0 never collide with an earlier run's.
    """

    def __init__(self, opts: SourceOptions, resume: ResumeState | None = None) -> None:
        super().__init__(opts)
        self._cap = None
        self._tries = 0
        self._retry_at = 0.0
        self._pace_next = 0.0
        self._lost_at = 0.0
        self.losses = 0  # times a live source stopped delivering
        self.reconnects = 0  # times it came back
        self.session = new_session_id()
        self.skipped = 0
        self._open(first=True)
        if opts.kind == "video" and resume is not None:
            self._skip_to(resume.next_frame(opts.resource))

    @property
    def is_file(self) -> bool:
        return self.options.kind == "video"

    def _skip_to(self, first: int) -> None:
        """Resume a video file: step over the frames done before (grab does not decode)."""
        while self.index < first and self._cap is not None and self._cap.grab():
            self.index += 1
        self.skipped = self.index

    def _open(self, first: bool = False) -> bool:
        import cv2

        o = self.options
        # OpenCV logs its own warnings when a device fails to open ("can't open camera by
        # index"); ours says it once, in one line, so theirs are silenced for the open.
        with _opencv_quiet():
            if o.kind == "camera":
                cap = cv2.VideoCapture(int(o.resource))
            elif o.kind == "v4l2":
                cap = cv2.VideoCapture(o.resource, cv2.CAP_V4L2)
            elif o.kind == "csi":
                pipeline = csi_pipeline(
                    int(o.resource), o.width or 1280, o.height or 720, o.fps or 30, o.flip,
                    o.sensor_mode,
                )  # fmt: skip
                cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
            elif o.kind == "gstreamer":
                cap = cv2.VideoCapture(o.resource, cv2.CAP_GSTREAMER)
            elif o.kind == "rtsp":
                # OpenCV's own default is 30 s for a server that accepts and never answers.
                ms = int(1000 * o.open_timeout_s)
                params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
                cap = cv2.VideoCapture(o.resource, cv2.CAP_FFMPEG, params)
            else:  # video files
                cap = cv2.VideoCapture(o.resource)
        if cap.isOpened() and o.kind in ("camera", "v4l2"):
            # The pixel format first: V4L2 picks the sizes and rates a format offers. A camera
            # without MJPEG refuses it and keeps its own format, which is then reported.
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*(o.fourcc or "MJPG")))
            code = int(cap.get(cv2.CAP_PROP_FOURCC))
            o.fourcc_got = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00")
            if o.width and o.height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, o.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, o.height)
            if o.fps:
                cap.set(cv2.CAP_PROP_FPS, o.fps)
        if not cap.isOpened():
            cap.release()
            if first:  # a typo or a missing device should fail now, not retry for ever
                hint = ""
                if o.kind in ("csi", "gstreamer") and not _opencv_has_gstreamer():
                    hint = " (this OpenCV build has no GStreamer support)"
                if o.kind == "rtsp":
                    hint = f" within --open-timeout {o.open_timeout_s:g} s"
                raise UserError(f"{o.uri}: OpenCV cannot open this {o.kind} source{hint}")
            return False
        if o.kind == "video" and o.live and not o.fps:
            o.fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        self._cap = cap
        return True

    def _lost(self) -> None:
        """Drop the device and schedule a reopen (or end the stream when not reconnecting)."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        o = self.options
        if self.is_file or not (o.live and o.reconnect):
            raise EndOfStream  # the end of a video file is its end, --realtime or not
        if self._tries == 0:
            self.losses += 1
            self._lost_at = time.monotonic()
        self._tries += 1
        if o.reconnect_tries and self._tries > o.reconnect_tries:
            console.print(
                f"stream {o.uri} lost: giving up after {o.reconnect_tries} reconnect tries "
                f"({self.losses} losses, {self.reconnects} reconnects in this run)",
                highlight=False,
                soft_wrap=True,
            )
            raise EndOfStream
        delay = min(o.max_backoff_s, 0.25 * 2 ** (self._tries - 1))
        self._retry_at = time.monotonic() + delay
        console.print(
            f"stream {o.uri} lost after frame {self.index - 1} (loss {self.losses}): "
            f"reconnect try {self._tries} in {delay:.2f} s",
            highlight=False,
            soft_wrap=True,
        )

    def capture(self, timeout: float = 1.0) -> Frame | None:
        if self._cap is None:
            wait = self._retry_at - time.monotonic()
            if wait > timeout:
                time.sleep(timeout)
                return None
            time.sleep(max(wait, 0.0))
            if not self._open():
                self._lost()
                return None
            self.reconnects += 1
            console.print(
                f"stream {self.options.uri} reconnected after "
                f"{time.monotonic() - self._lost_at:.1f} s (reconnect {self.reconnects}, "
                f"{self.losses} losses in this run)",
                highlight=False,
                soft_wrap=True,
            )
        if self.is_file and self.options.live:
            self._pace()
        t0, c0 = time.perf_counter(), time.thread_time()
        ok, image = self._cap.read()
        if not ok or image is None:
            self._lost()
            return None
        self._tries = 0
        index = self.index
        self.index += 1
        o = self.options
        key = video_key(o.resource, index) if self.is_file else live_key(o.uri, self.session, index)
        frame = Frame(o.uri, index, key, image)
        frame.read_s, frame.read_cpu_s = frame.captured - t0, time.thread_time() - c0
        if o.kind == "video":
            # A file's frame exists before it is decoded: its latency counts the decode. A
            # camera's read() waits for the sensor, so its latency starts when read() returns.
            frame.captured = t0
        try:
            check_pixels(image, f"{o.uri} frame {index}")
        except ValueError as exc:
            frame.image, frame.error = None, str(exc)
        return frame

    def _pace(self) -> None:
        """A video file standing in for a camera delivers frames at its own frame rate."""
        now = time.monotonic()
        if self._pace_next > now:
            time.sleep(self._pace_next - now)
        self._pace_next = max(now, self._pace_next) + 1.0 / self.options.fps

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _opencv_has_gstreamer() -> bool:
    import cv2

    return any(
        "GStreamer" in line and "YES" in line for line in cv2.getBuildInformation().splitlines()
    )


@contextlib.contextmanager
def _opencv_quiet() -> Iterator[None]:
    """OpenCV's log at errors only, for the duration of the block (restored after)."""
    import cv2

    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:  # an OpenCV build without the logging module
        yield
        return
    before = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        logging.setLogLevel(before)
