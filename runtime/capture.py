"""Cameras, streams, GStreamer pipelines and video files, through OpenCV's VideoCapture.

A lost camera or stream is reopened with exponential back-off, each loss and reconnect said in
the log with its count; while it is down ``capture`` returns ``None``. A video file ends at its
last frame, ``--realtime`` or not, and resumes after the last frame an earlier run finished.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from fractions import Fraction

from wbc_edge.console import console
from wbc_edge.errors import UserError
from wbc_edge.model.imagecheck import check_pixels
from wbc_edge.runtime.resume import ResumeState, live_key, new_session_id, video_key
from wbc_edge.runtime.sources import EndOfStream, Frame, Source, SourceOptions

# What a CSI camera is asked for where --width, --height or --fps is 0 ("its default"):
# nvarguscamerasrc's caps must name a size and a rate, so "the camera's default" is this one.
CSI_WIDTH, CSI_HEIGHT, CSI_FPS = 1280, 720, 30


def gst_fraction(fps: float) -> str:
    """A GStreamer framerate: 30 -> "30/1", 29.97 -> "2997/100" (not truncated to 29)."""
    rate = Fraction(fps).limit_denominator(1001)
    return f"{rate.numerator}/{rate.denominator}"


def csi_pipeline(
    sensor: int,
    width: int = 0,
    height: int = 0,
    fps: float = 0,
    flip: int = 0,
    sensor_mode: int = -1,
) -> str:
    """GStreamer pipeline for a Jetson CSI camera, ending in BGR frames for OpenCV; a size or
    rate of 0 asks for :data:`CSI_WIDTH`, :data:`CSI_HEIGHT`, :data:`CSI_FPS`."""
    mode = f" sensor-mode={sensor_mode}" if sensor_mode >= 0 else ""
    width, height = width or CSI_WIDTH, height or CSI_HEIGHT
    return (
        f"nvarguscamerasrc sensor-id={sensor}{mode} ! "
        f"video/x-raw(memory:NVMM), width={width}, height={height}, "
        f"framerate={gst_fraction(fps or CSI_FPS)}, format=NV12 ! nvvidconv flip-method={flip} ! "
        "video/x-raw, format=BGRx ! videoconvert ! "
        "video/x-raw, format=BGR ! appsink drop=true max-buffers=1"
    )


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
                    int(o.resource), o.width, o.height, o.fps, o.flip, o.sensor_mode
                )
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
