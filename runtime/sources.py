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

``capture(timeout)`` says what happened: a :class:`Frame` (whose ``error`` is set when a file
could not be decoded, so the caller logs it and goes on), ``None`` for a timeout, or
:class:`EndOfStream`. A lost live camera is reopened with exponential back-off; while it is
down ``capture`` returns ``None``. File sources take the set of items already done (from the
results of an earlier run) and never yield them again.
"""

from __future__ import annotations

import contextlib
import glob
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np

from wbc_edge.errors import UserError
from wbc_edge.runtime.decode import check_complete, decode_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".h264"}
# Files a writer is still producing under a temporary name; they appear later under the real one.
PARTIAL_SUFFIXES = {".part", ".tmp", ".crdownload", ".partial", ".swp"}
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

    def describe(self) -> str:
        parts = [f"source {self.uri!r}", f"kind={self.kind}", f"live={self.live}"]
        if self.resource and self.resource != self.uri:
            parts.append(f"resource={self.resource!r}")
        if self.kind == "watch":
            parts += [f"poll={self.poll_s}s", f"settle={self.settle_s}s"]
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
    done: Iterable[str] = (),
    realtime: bool = False,
    **options: float | int | bool,
) -> Source:
    """The source for ``uri``; ``done`` holds keys to skip (resume); ``realtime`` makes a video
    file behave like a camera (paced at its frame rate, oldest frames dropped when behind)."""
    opts = parse_uri(uri, watch)
    for name, value in options.items():
        if not hasattr(opts, name):
            raise TypeError(f"unknown source option {name}")
        setattr(opts, name, value)
    if opts.kind in ("folder", "glob", "image"):
        return FileSource(opts, list_files(opts), set(done))
    if opts.kind == "watch":
        return WatchSource(opts, set(done))
    if realtime and opts.kind == "video":
        opts.live = True
    return VideoSource(opts)


def list_files(opts: SourceOptions) -> list[Path]:
    """The files a folder, glob or image source reads, in sorted order."""
    if opts.kind == "image":
        return [Path(opts.resource)]
    if opts.kind == "glob":
        paths = [Path(p) for p in glob.glob(opts.resource, recursive=True)]
        files = sorted(p for p in paths if p.is_file())
        if not files:
            raise UserError(f"no files match {opts.uri}")
        return files
    return sorted(p for p in Path(opts.resource).rglob("*") if _candidate(p) and p.is_file())


def _candidate(path: Path) -> bool:
    """Skip hidden files and names writers use while a file is incomplete."""
    return not path.name.startswith(".") and path.suffix.lower() not in PARTIAL_SUFFIXES


def file_key(path: str | Path) -> str:
    """How a file is named in the results: its absolute path, so resume matches it exactly."""
    return str(Path(path).absolute())


def read_frame(opts: SourceOptions, index: int, path: Path) -> Frame:
    """Read a file (and decode it in full unless ``opts.defer_decode``); errors go in the frame."""
    key = file_key(path)
    captured = time.perf_counter()  # latency counts reading and decoding too
    cpu = time.thread_time()
    image, data, error = None, None, ""
    try:
        data = path.read_bytes()
        check_complete(data, str(path), path.suffix)
        if not opts.defer_decode:
            image, data = decode_image(data, str(path)), None
    except (OSError, ValueError) as exc:
        data, error = None, str(exc)
    frame = Frame(opts.uri, index, key, image, file=key, error=error, captured=captured, data=data)
    frame.read_s, frame.read_cpu_s = time.perf_counter() - captured, time.thread_time() - cpu
    return frame


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

    def __init__(self, opts: SourceOptions, files: list[Path], done: set[str]) -> None:
        super().__init__(opts)
        self.files = files
        self.skipped = sum(file_key(p) in done for p in files)
        self._todo = iter([(i, p) for i, p in enumerate(files) if file_key(p) not in done])

    def __len__(self) -> int:
        return len(self.files) - self.skipped

    def capture(self, timeout: float = 1.0) -> Frame | None:
        try:
            index, path = next(self._todo)
        except StopIteration:
            raise EndOfStream from None
        self.index = index
        return read_frame(self.options, index, path)


class WatchSource(Source):
    """New files in a folder, each read once, after its size and mtime stop changing.

    A file is ready when two listings at least ``settle_s`` apart saw the same size and mtime;
    a JPEG/PNG that still lacks its end marker then waits for more data, and is logged as
    truncated only if it stays that way for ``20 x settle_s``.
    """

    def __init__(self, opts: SourceOptions, done: set[str]) -> None:
        super().__init__(opts)
        self.root = Path(opts.resource)
        self.seen = set(done)
        self._watching: dict[str, tuple[int, float, float]] = {}  # key -> size, mtime, since
        self._ready: list[Path] = []
        self._next_poll = 0.0

    def _poll(self) -> None:
        now = time.monotonic()
        ready = []
        for path in sorted(self.root.rglob("*")):
            key = file_key(path)
            if key in self.seen or not _candidate(path):
                continue
            try:
                st = path.stat()
            except OSError:  # deleted or renamed between listing and stat
                continue
            if not path.is_file():
                continue
            previous = self._watching.get(key)
            if previous is None or previous[:2] != (st.st_size, st.st_mtime):
                self._watching[key] = (st.st_size, st.st_mtime, now)
            elif st.st_size > 0 and now - previous[2] >= self.options.settle_s:
                ready.append(path)
        for path in ready:
            self.seen.add(file_key(path))
        self._ready.extend(ready)

    def _read(self, path: Path) -> Frame | None:
        key = file_key(path)
        frame = read_frame(self.options, self.index, path)
        if "truncated" in frame.error:
            since = self._watching.get(key, (0, 0.0, time.monotonic()))[2]
            if time.monotonic() - since < 20 * self.options.settle_s:
                self.seen.discard(key)  # not finished yet: look again on a later poll
                return None
        self._watching.pop(key, None)
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


class VideoSource(Source):
    """Cameras, streams, GStreamer pipelines and video files through OpenCV's VideoCapture."""

    def __init__(self, opts: SourceOptions) -> None:
        super().__init__(opts)
        self._cap = None
        self._tries = 0
        self._retry_at = 0.0
        self._pace_next = 0.0
        self._open(first=True)

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
            else:  # rtsp and video files
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
        if not (o.live and o.reconnect):
            raise EndOfStream
        self._tries += 1
        if o.reconnect_tries and self._tries > o.reconnect_tries:
            raise EndOfStream
        self._retry_at = time.monotonic() + min(o.max_backoff_s, 0.25 * 2 ** (self._tries - 1))

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
        if self.options.kind == "video" and self.options.live:
            self._pace()
        t0, c0 = time.perf_counter(), time.thread_time()
        ok, image = self._cap.read()
        if not ok or image is None:
            self._lost()
            return None
        self._tries = 0
        index = self.index
        self.index += 1
        frame = Frame(self.options.uri, index, f"{self.options.uri}#{index}", image)
        frame.read_s, frame.read_cpu_s = frame.captured - t0, time.thread_time() - c0
        if self.options.kind == "video":
            # A file's frame exists before it is decoded: its latency counts the decode. A
            # camera's read() waits for the sensor, so its latency starts when read() returns.
            frame.captured = t0
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
