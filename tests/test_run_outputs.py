"""What `wbc-edge run` writes for people and for other tools: whole tables in a log, no OpenCV
noise before its own error, and annotated output to a video file or an image folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from runtime_models import GREEN, RED, make_onnx, paint_field, write_images

from wbc_edge import cli

REPO = Path(__file__).resolve().parents[1]
LONG = ["Neutrophil", "AVeryLongClassNameThatA80ColumnTableWouldCutShort_Lymphocyte", "Blast"]


def _wbc_edge(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "wbc_edge", *args], capture_output=True, text=True, env=env
    )


def test_tables_are_whole_in_a_log(tmp_path):
    model = make_onnx(tmp_path / "long.onnx", classes=LONG)
    write_images(tmp_path / "in", [RED, GREEN, GREEN])
    done = _wbc_edge("run", str(tmp_path / "in"), "-m", str(model), "--out", str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr
    # Live view on (the default) but stderr is a pipe: log lines, and the whole table on
    # stdout (the result; the log stays on stderr).
    table = [line for line in done.stdout.splitlines() if LONG[1] in line]
    assert table and "│" in table[0] and "…" not in done.stdout + done.stderr
    assert len(table[0]) > 80
    assert f"results in {tmp_path / 'o'}" in done.stderr  # a long line is not wrapped either


def test_a_missing_camera_is_one_line_without_opencv_warnings(tmp_path):
    done = _wbc_edge("run", "7", "--out", str(tmp_path / "o"), "--no-live")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == ["error: 7: OpenCV cannot open this camera source"]


def test_annotate_to_a_video_file(tmp_path):
    model = make_onnx(tmp_path / "colour.onnx")
    fields = tmp_path / "fields"
    fields.mkdir()
    for i, centres in enumerate([[(120, 120), (400, 300)], [(320, 240)], []]):
        cv2.imwrite(str(fields / f"f{i}.png"), paint_field(centres, i))
    video = tmp_path / "ann" / "out.mp4"
    args = ["run", str(fields), "-m", str(model), "--smear", "--out", str(tmp_path / "o")]
    assert cli.run([*args, "--no-live", "--annotate", str(video)]) == 0
    cap = cv2.VideoCapture(str(video))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    assert len(frames) == 3 and frames[0].shape == (480, 640, 3)


def test_annotate_to_an_image_folder_or_refuse_an_image_file(tmp_path, capsys):
    model = make_onnx(tmp_path / "colour.onnx")
    write_images(tmp_path / "in", [RED, GREEN])
    args = ["run", str(tmp_path / "in"), "-m", str(model), "--no-live"]
    assert cli.run([*args, "--out", str(tmp_path / "o1"), "--annotate", str(tmp_path / "a")]) == 0
    assert len(list((tmp_path / "a").glob("*.jpg"))) == 2
    code = cli.run([*args, "--out", str(tmp_path / "o2"), "--annotate", str(tmp_path / "a.jpg")])
    assert code != 0 and "give a folder" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["info"], ["--version"]])
def test_data_goes_to_stdout(command):
    done = _wbc_edge(*command)
    assert done.returncode == 0 and done.stdout and not done.stderr
