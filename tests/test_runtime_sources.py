"""Sources: URI normalisation, folders read once, watch mode, video as a camera, reconnection."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import pytest
from runtime_models import BLUE, GREEN, RED, solid, write_images

from wbc_edge.errors import UserError
from wbc_edge.runtime.resume import file_key
from wbc_edge.runtime.sources import EndOfStream, open_source, parse_uri


def drain(source, timeout: float = 0.2, max_none: int = 1) -> list:
    frames, nones = [], 0
    while True:
        try:
            frame = source.capture(timeout)
        except EndOfStream:
            return frames
        if frame is None:
            nones += 1
            if nones >= max_none:
                return frames
        else:
            frames.append(frame)


@pytest.mark.parametrize(
    ("uri", "kind", "resource", "live"),
    [
        ("0", "camera", "0", True),
        ("v4l2:///dev/video1", "v4l2", "/dev/video1", True),
        ("/dev/video0", "v4l2", "/dev/video0", True),
        ("csi://0", "csi", "0", True),
        ("videotestsrc ! videoconvert ! appsink", "gstreamer", None, True),
        ("rtsp://cam.local:8554/slide", "rtsp", "rtsp://cam.local:8554/slide", True),
        ("imgs/*.jpg", "glob", "imgs/*.jpg", False),
    ],
)
def test_parse_uri_normalises_like_jetson_utils(uri, kind, resource, live):
    opts = parse_uri(uri)
    assert (opts.kind, opts.live) == (kind, live)
    assert opts.resource == (resource if resource is not None else uri)
    assert opts.kind in opts.describe()


def test_parse_uri_files_and_errors(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    assert parse_uri(str(tmp_path)).kind == "folder"
    assert parse_uri(str(tmp_path), watch=True).kind == "watch"
    assert parse_uri(f"file://{tmp_path}/clip.mp4").kind == "video"
    assert parse_uri(str(tmp_path / "a.png")).kind == "image"
    with pytest.raises(UserError, match="not found"):
        parse_uri(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="needs a folder"):
        parse_uri(str(tmp_path / "a.png"), watch=True)
    with pytest.raises(UserError, match="csi://N"):
        parse_uri("csi://front")


def test_folder_is_read_once_sorted_recursive_and_skips_done(tmp_path):
    write_images(tmp_path / "b", [RED, GREEN])
    write_images(tmp_path / "a", [BLUE])
    (tmp_path / ".hidden.jpg").write_bytes(b"junk")
    (tmp_path / "upload.jpg.part").write_bytes(b"junk")
    frames = drain(open_source(str(tmp_path)))
    names = [Path(f.file).relative_to(tmp_path).as_posix() for f in frames]
    assert names == ["a/img_0000.jpg", "b/img_0000.jpg", "b/img_0001.jpg"]
    assert all(f.image is not None and not f.error for f in frames)
    assert [f.index for f in frames] == [0, 1, 2]
    source = open_source(str(tmp_path), done={frames[1].key})
    assert [f.key for f in drain(source)] == [frames[0].key, frames[2].key]
    assert source.skipped == 1 and len(source) == 2


def test_notes_beside_the_images_are_skipped_and_said_so(tmp_path, capsys):
    images = write_images(tmp_path, [RED, RED])
    (tmp_path / "README.txt").write_text("how these images were made")  # as `data synth` writes
    (tmp_path / "labels.csv").write_text("file,label\n")
    frames = drain(open_source(str(tmp_path)))
    assert sorted(Path(f.file).name for f in frames) == [p.name for p in images]
    assert all(not f.error for f in frames)
    said = " ".join(capsys.readouterr().err.split())  # the console is stderr (rich may wrap)
    assert "skipping 2 file(s) that are not images" in said and "README.txt" in said


def test_corrupt_truncated_and_non_image_files_become_error_frames(tmp_path):
    good = write_images(tmp_path, [RED])[0]
    data = good.read_bytes()
    (tmp_path / "img_0001.jpg").write_bytes(data[: len(data) // 2])  # cut short
    (tmp_path / "img_0002.jpg").write_bytes(b"\xff\xd8garbage\xff\xd9")
    (tmp_path / "scan.dat").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    frames = {Path(f.file).name: f for f in drain(open_source(str(tmp_path)))}
    assert frames["img_0000.jpg"].image is not None
    assert "truncated" in frames["img_0001.jpg"].error
    assert "not a readable image" in frames["img_0002.jpg"].error
    assert "not a readable image" in frames["scan.dat"].error
    assert "empty" in frames["empty.png"].error
    assert all(f.image is None for n, f in frames.items() if n != "img_0000.jpg")


def test_glob_and_single_image(tmp_path):
    paths = write_images(tmp_path, [RED, GREEN, BLUE])
    (tmp_path / "x.png").write_bytes(cv2.imencode(".png", solid(RED))[1].tobytes())
    assert len(drain(open_source(str(tmp_path / "*.jpg")))) == 3
    assert [f.file for f in drain(open_source(str(paths[1])))] == [file_key(paths[1])]
    with pytest.raises(UserError, match="no files match"):
        open_source(str(tmp_path / "*.bmp"))


def _write_slowly(path: Path, data: bytes, pieces: int, pause: float) -> None:
    step = len(data) // pieces + 1
    with path.open("wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            time.sleep(pause)


def test_watch_picks_up_files_written_slowly_only_once(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    ok, buf = cv2.imencode(".jpg", solid(GREEN, 64))
    data = buf.tobytes()
    source = open_source(str(inbox), watch=True, poll_s=0.05, settle_s=0.3)
    assert source.capture(0.2) is None  # nothing yet: a timeout, not the end
    writers = [
        threading.Thread(target=_write_slowly, args=(inbox / f"w{i}.jpg", data, 6, 0.08))
        for i in range(2)
    ]
    for w in writers:
        w.start()
    frames = []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and len(frames) < 2:
        frame = source.capture(0.2)
        if frame is not None:
            frames.append(frame)
    for w in writers:
        w.join()
    assert sorted(Path(f.file).name for f in frames) == ["w0.jpg", "w1.jpg"]
    assert all(f.image is not None and f.image.shape == (64, 64, 3) for f in frames)
    # Touching a done file again, or waiting longer, never yields it a second time.
    (inbox / "w0.jpg").write_bytes(data)
    assert drain(source, timeout=0.5, max_none=2) == []


def test_watch_waits_for_a_jpeg_whose_writer_pauses_longer_than_settle(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    data = cv2.imencode(".jpg", solid(RED, 64))[1].tobytes()
    source = open_source(str(inbox), watch=True, poll_s=0.05, settle_s=0.1)
    (inbox / "slow.jpg").write_bytes(data[:200])
    assert drain(source, timeout=0.5, max_none=2) == []  # looks settled, but has no end marker
    with (inbox / "slow.jpg").open("ab") as f:
        f.write(data[200:])
    frames = drain(source, timeout=0.5, max_none=3)
    assert len(frames) == 1 and frames[0].image is not None and not frames[0].error


def test_watch_skips_files_done_before_a_restart(tmp_path):
    paths = write_images(tmp_path, [RED, GREEN, BLUE])
    source = open_source(str(tmp_path), watch=True, done={file_key(paths[0])}, settle_s=0.05)
    source.options.poll_s = 0.05
    got = [Path(f.file).name for f in drain(source, timeout=0.3, max_none=2)]
    assert got == ["img_0001.jpg", "img_0002.jpg"]


def _write_video(path: Path, n: int, fps: float = 20.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for i in range(n):
        frame = solid(RED, 64, seed=i)[:48]
        frame[:, : 4 * (i + 1)] = (0, 200, 0)  # frame i has a green bar 4*(i+1) px wide
        writer.write(frame)
    writer.release()


def test_video_file_plays_to_its_end(tmp_path):
    video = tmp_path / "clip.avi"
    _write_video(video, 8)
    source = open_source(str(video))
    assert not source.live
    frames = drain(source)
    assert [f.index for f in frames] == list(range(8))
    assert frames[0].image.shape == (48, 64, 3)
    assert frames[0].key == f"video:{video}#0"
    assert all(f.image is not None and not f.error for f in frames)


def test_video_as_camera_is_paced_and_ends_with_the_file(tmp_path):
    video = tmp_path / "clip.avi"
    _write_video(video, 5, fps=50)
    source = open_source(str(video), realtime=True, max_backoff_s=0.1)
    assert source.live and source.options.fps == 50
    start = time.monotonic()
    first = [source.capture(1.0) for _ in range(5)]
    assert all(f is not None for f in first)
    assert time.monotonic() - start >= 4 / 50 * 0.9  # paced at the file's frame rate
    with pytest.raises(EndOfStream):  # the last frame is the end, not a lost camera
        source.capture(0.05)


def test_a_lost_stream_reconnects_says_so_and_gives_up_after_its_tries(capsys):
    from wbc_edge.benchmarks.studies.stream_server import MjpegServer

    server = MjpegServer(fps=100).start()
    try:
        source = open_source(server.url, max_backoff_s=0.1, reconnect_tries=3)
        assert source.live and source.options.kind == "rtsp"
        assert all(source.capture(2.0) is not None for _ in range(3))
        server.stop()  # unplugged
        seen = []
        for _ in range(300):  # the frames buffered before the loss, then None while down
            frame = source.capture(0.1)
            if frame is None and source.losses:
                break
            seen.append(frame)
        assert source.losses == 1
        server.start()  # plugged back in, same address
        again = None
        for _ in range(60):
            again = source.capture(0.2)
            if again is not None:
                break
        assert again is not None and source.reconnects == 1
        assert again.key.startswith("live:") and again.index >= 3  # numbers keep counting
        server.stop()
        with pytest.raises(EndOfStream):
            for _ in range(400):
                source.capture(0.1)
        err = capsys.readouterr().err
        assert "lost after frame" in err and "(loss 1)" in err
        assert "reconnected after" in err and "reconnect 1, 1 losses" in err
        assert "giving up after 3 reconnect tries (2 losses, 1 reconnects" in err
    finally:
        server.stop()


def test_a_stream_that_never_answers_fails_within_the_open_timeout():
    from wbc_edge.benchmarks.studies.stream_server import silent_server

    sock = silent_server()
    try:
        start = time.monotonic()
        with pytest.raises(UserError, match="within --open-timeout 1 s"):
            open_source(f"http://127.0.0.1:{sock.getsockname()[1]}/x", open_timeout_s=1.0)
        assert time.monotonic() - start < 6  # OpenCV's own default is 30 s
    finally:
        sock.close()


def test_missing_camera_fails_at_once_with_a_user_error():
    with pytest.raises(UserError, match="cannot open"):
        open_source("/dev/video99")


# -- cameras: what is asked of the device ----------------------------------------------------


def test_csi_pipeline_keeps_fractional_fps_and_takes_flip_and_sensor_mode():
    from wbc_edge.runtime.capture import csi_pipeline

    line = csi_pipeline(0, 1920, 1080, 29.97, flip=2, sensor_mode=1)
    assert "framerate=2997/100" in line  # not truncated to 29
    assert "nvarguscamerasrc sensor-id=0 sensor-mode=1 !" in line
    assert "nvvidconv flip-method=2 !" in line
    assert "framerate=30/1" in csi_pipeline(1) and "sensor-mode" not in csi_pipeline(1)
    opts = parse_uri("csi://1?flip=rotate-180&sensor-mode=4")
    assert (opts.resource, opts.flip, opts.sensor_mode) == ("1", 2, 4)
    assert "flip-method=2" in opts.describe() and "sensor-mode=4" in opts.describe()
    assert parse_uri("csi://0?flip=6").flip == 6
    for bad, message in (
        ("csi://0?flip=sideways", "flip="),
        ("csi://0?flip=9", "flip="),
        ("csi://0?sensor-mode=x", "sensor-mode"),
        ("csi://0?exposure=1", "unknown option 'exposure'"),
    ):
        with pytest.raises(UserError, match=message):
            parse_uri(bad)


def test_usb_camera_prefers_mjpeg_and_reports_what_it_got(monkeypatch):
    """UVC cameras give raw YUYV by default, too slow at high resolutions; MJPEG is asked for
    first, and the format the camera really delivers is what the source reports."""
    from wbc_edge.runtime.capture import VideoSource

    asked: list = []

    class FakeCapture:
        offered: tuple[str, ...] = ()

        def __init__(self, resource, backend=None):
            self.fourcc = cv2.VideoWriter_fourcc(*"YUYV")
            self.offers = {cv2.VideoWriter_fourcc(*f) for f in self.offered}

        def isOpened(self):  # noqa: N802 (OpenCV's name)
            return True

        def set(self, prop, value):
            asked.append((prop, value))
            if prop == cv2.CAP_PROP_FOURCC and int(value) in self.offers:
                self.fourcc = int(value)
                return True
            return prop != cv2.CAP_PROP_FOURCC

        def get(self, prop):
            return float(self.fourcc) if prop == cv2.CAP_PROP_FOURCC else 0.0

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture)
    for offered, uri, got in (
        (("YUYV", "MJPG"), "v4l2:///dev/video0", "MJPG"),
        (("YUYV",), "/dev/video0", "YUYV"),  # no MJPEG: keeps its own, says so
        (("YUYV", "MJPG"), "v4l2:///dev/video0?format=yuyv", "YUYV"),
    ):
        asked.clear()
        FakeCapture.offered = offered
        source = VideoSource(parse_uri(uri))
        props = [p for p, _ in asked]
        assert props[0] == cv2.CAP_PROP_FOURCC  # the format before the size
        assert source.options.fourcc_got == got and f"format={got}" in source.options.describe()
        source.close()


def test_watch_capture_returns_on_time_when_listing_is_slower_than_poll(tmp_path, monkeypatch):
    """A big folder on a busy machine: each listing outlasts poll_s. capture must still return
    (None) by its timeout, or the pipeline never sees a stop (a 10,000-file soak hung so)."""
    from wbc_edge.runtime.watch import WatchSource

    source = open_source(str(tmp_path), watch=True, poll_s=0.05, settle_s=0.1)
    listings = []

    def slow_poll(self) -> None:
        listings.append(time.monotonic())
        time.sleep(0.15)

    monkeypatch.setattr(WatchSource, "_poll", slow_poll)
    got = []
    worker = threading.Thread(target=lambda: got.append(source.capture(timeout=0.2)), daemon=True)
    worker.start()
    worker.join(2.0)  # a regression shows as a timeout here, not a hung test run
    assert got == [None] and 1 <= len(listings) <= 3
