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

This module holds what every source shares (:class:`Frame`, :class:`SourceOptions`,
:class:`Source`, :class:`EndOfStream`), the URI rules (:func:`parse_uri`, :func:`list_files`)
and :func:`open_source`; each kind of source lives in its own module:
:mod:`~wbc_edge.runtime.files` (folders, globs, images), :mod:`~wbc_edge.runtime.watch`
(a watched folder) and :mod:`~wbc_edge.runtime.capture` (cameras, streams, video files).
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
from rich.markup import escape

from wbc_edge.console import console
from wbc_edge.errors import UserError
from wbc_edge.runtime.options import CaptureOptions
from wbc_edge.runtime.resume import ResumeState
from wbc_edge.runtime.sinks import printable_name

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
class SourceOptions(CaptureOptions):
    """Everything that decides how a source behaves; printed when it opens.

    The run options among them (poll, settle, camera size and rate, reconnect tries, the open
    timeout, realtime) and their defaults are :class:`~wbc_edge.runtime.options.CaptureOptions`'
    (keyword-only); the rest is what the URI named and what opening the source found."""

    uri: str
    kind: str = ""
    resource: str = ""
    live: bool = False  # drop the oldest frames when behind; reconnect when lost
    reconnect: bool = True
    max_backoff_s: float = 16.0
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
    **options: float | int | bool,
) -> Source:
    """The source for ``uri``; ``done`` is what to skip (a results folder's ``resume``, or a set
    of keys); ``options`` set :class:`SourceOptions` fields, the run's
    :class:`~wbc_edge.runtime.options.CaptureOptions` among them, whose ``realtime`` makes a
    video file behave like a camera (paced at its frame rate, oldest frames dropped when behind)
    until its last frame."""
    opts = parse_uri(uri, watch)
    for name, value in options.items():
        if not hasattr(opts, name):
            raise TypeError(f"unknown source option {name}")
        setattr(opts, name, value)
    resume = ResumeState.of(done)
    # Imported here: each implementation imports this module for Frame and Source.
    if opts.kind in ("folder", "glob", "image"):
        from wbc_edge.runtime.files import FileSource

        return FileSource(opts, list_files(opts), resume)
    if opts.kind == "watch":
        from wbc_edge.runtime.watch import WatchSource

        return WatchSource(opts, resume)
    from wbc_edge.runtime.capture import VideoSource

    if opts.realtime and opts.kind == "video":
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
    found = Path(opts.resource).rglob("*")
    files = sorted(p for p in found if is_candidate_name(p.name) and p.is_file())
    return _without_documents(files, opts.resource)


def is_document(name: str) -> bool:
    """Notes and metadata (:data:`DOCUMENT_SUFFIXES`), never images."""
    return os.path.splitext(name)[1].lower() in DOCUMENT_SUFFIXES


def _without_documents(files: list[Path], where: str) -> list[Path]:
    """``files`` less the notes and metadata among them, saying how many were skipped."""
    documents = [p for p in files if is_document(p.name)]
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
    return [p for p in files if not is_document(p.name)]


def is_candidate_name(name: str) -> bool:
    """Not a hidden file, nor a name writers use while a file is incomplete."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() not in PARTIAL_SUFFIXES
