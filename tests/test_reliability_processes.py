"""Reliability in real processes (issue 15): kill -9 at random moments on a folder, a watched
folder and a video file (three cycles each: nothing lost, nothing repeated), SIGTERM drains
exactly like SIGINT, one run per results folder, a lost stream said in the log."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import cv2
import pytest
from runtime_models import BLUE, GREEN, RED, make_onnx, solid, write_images

from wbc_edge.benchmarks.studies.reliability import (
    Run,
    complete_lines,
    concurrent_runs,
    file_keys,
    kill_cycles,
    stop_with,
    video_keys,
    wait_for,
)
from wbc_edge.benchmarks.studies.stream_server import MjpegServer

COLOURS = [RED, GREEN, BLUE]


@pytest.fixture(scope="module")
def slow(tmp_path_factory) -> Path:
    """128 px and 30 convolutions: slow enough at batch 1 for a kill to land mid-run."""
    return make_onnx(tmp_path_factory.mktemp("model") / "slow.onnx", size=128, extra_nodes=30)


def run_args(src: Path | str, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run",
        str(src),
        "-m",
        str(model),
        "--out",  # the results land in ``out`` itself: it is the sample folder
        str(out.parent),
        "--sample",
        out.name,
        "--no-live",
        "--batch",
        "1",
        *extra,
    ]


def test_kill_9_three_times_on_a_folder_loses_and_repeats_nothing(tmp_path, slow):
    write_images(tmp_path / "in", COLOURS * 12)
    out = tmp_path / "out"
    result = kill_cycles(
        run_args(tmp_path / "in", slow, out), out, lambda: file_keys(tmp_path / "in")
    )
    assert result["killed_mid_run"] == 3, result
    assert result["lost"] == result["repeated"] == result["unexpected"] == 0, result
    assert result["records"] == 36 and result["final_exit"] == 0


def test_kill_9_three_times_on_a_watched_folder_loses_and_repeats_nothing(tmp_path, slow):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()

    def arrive(cycle: int) -> None:  # new files before every (re)start, some while it is down
        write_images(inbox, COLOURS * 3, prefix=f"c{cycle}")

    args = run_args(inbox, slow, out, "--watch", "--settle", "0.1", "--poll", "0.05")
    result = kill_cycles(
        args, out, lambda: file_keys(inbox), step=4, before_each=arrive, endless=True
    )
    assert result["killed_mid_run"] == 3, result
    assert result["lost"] == result["repeated"] == result["unexpected"] == 0, result
    assert result["records"] == 36 and result["final_exit"] == 0  # SIGTERM ends it cleanly


def _write_video(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 64))
    for i in range(frames):
        writer.write(solid(COLOURS[i % 3], 64, seed=i))
    writer.release()
    return path


def test_kill_9_three_times_on_a_video_file_loses_and_repeats_no_frame(tmp_path, slow):
    video = _write_video(tmp_path / "clip.avi", 60)
    out = tmp_path / "out"
    result = kill_cycles(run_args(video, slow, out), out, lambda: video_keys(video, 60))
    assert result["killed_mid_run"] == 3, result
    assert result["lost"] == result["repeated"] == result["unexpected"] == 0, result
    assert result["final_exit"] == 0
    again = Run(run_args(video, slow, out), tmp_path / "again.log")
    assert again.wait() == 0 and complete_lines(out / "cells.jsonl") == 60  # a rerun adds none


def test_realtime_on_a_finite_video_ends_with_the_file(tmp_path, slow):
    video = _write_video(tmp_path / "clip.avi", 10)
    out = tmp_path / "out"
    run = Run(run_args(video, slow, out, "--realtime"), tmp_path / "rt.log")
    assert run.wait(timeout=30) == 0, run.stderr()
    assert complete_lines(out / "cells.jsonl") <= 10  # each frame at most once (drops allowed)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_drains_exactly_like_sigint(tmp_path, slow, signum):
    write_images(tmp_path / "in", COLOURS * 20)
    out, report = tmp_path / "out", tmp_path / "report.html"
    result = stop_with(signum, run_args(tmp_path / "in", slow, out, "--report", str(report)), out)
    assert result["sent_mid_run"], result
    assert result["exit"] == 0, result["stderr"]
    assert "stopping: finishing queued frames" in result["stderr"]
    assert result["summary_written"] and result["summary_items"] == result["records"] < 60
    assert result["repeated"] == 0 and report.is_file() and not list(tmp_path.glob("*.tmp"))


def test_a_second_concurrent_run_is_refused_and_a_kill_9_leaves_no_stale_lock(tmp_path, slow):
    write_images(tmp_path / "in", COLOURS * 10)
    out = tmp_path / "out"
    args = run_args(tmp_path / "in", slow, out)
    result = concurrent_runs([*args, "--watch", "--settle", "0.1"], args, out)
    assert result["first_running_when_second_started"], result
    assert (
        result["second_exit"] == 2 and "in use by another wbc-edge run" in result["second_stderr"]
    )
    assert result["third_exit"] == 0 and result["third_recovered_lock"], result
    assert result["records"] == 30 and result["repeated"] == 0


def test_a_lost_stream_is_said_with_counts_in_the_log_and_the_summary(tmp_path, slow):
    server = MjpegServer(fps=30).start()
    out = tmp_path / "out"
    run = Run(run_args(server.url, slow, out), tmp_path / "stream.log")
    try:
        assert wait_for(lambda: complete_lines(out / "cells.jsonl") >= 5, 30, run.proc)
        server.stop()  # the camera is unplugged for a moment
        assert wait_for(lambda: "lost after frame" in run.stderr(), 30, run.proc)
        time.sleep(0.5)
        server.start()
        assert wait_for(lambda: "reconnected after" in run.stderr(), 30, run.proc)
        before = complete_lines(out / "cells.jsonl")
        assert wait_for(lambda: complete_lines(out / "cells.jsonl") > before + 3, 30, run.proc)
        run.signal(signal.SIGTERM)
        assert run.wait() == 0
    finally:
        server.stop()
        run.signal(signal.SIGKILL)
    err = run.stderr()
    assert "(loss 1)" in err and "reconnect 1, 1 losses in this run" in err
    assert "stream lost 1x and reconnected 1x" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stream_losses"] == 1 and summary["reconnects"] == 1
    keys = [json.loads(line)["key"] for line in (out / "cells.jsonl").read_text().splitlines()]
    assert all(k.startswith("live:") for k in keys) and len(set(keys)) == len(keys)
    assert not (out / "done.txt").read_text()  # camera frames are not kept for resume
