"""The demo's own pieces (the full `make demo` run takes minutes and is tried by hand)."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

from wbc_edge.demo import summarise, write_smear_video
from wbc_edge.errors import UserError


def test_smear_video_has_every_field(tmp_path):
    frames = tmp_path / "JPEGImages"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"f{i}.jpg"), np.full((48, 64, 3), 60 * i, np.uint8))
    video = write_smear_video(frames, tmp_path / "smear.mp4")
    cap = cv2.VideoCapture(str(video))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 3
    with pytest.raises(UserError):
        write_smear_video(tmp_path / "empty", tmp_path / "x.mp4")


def test_summary_table_from_bench_json(tmp_path, capsys):
    rows = [
        {
            "path": f"demo-out/models/{path}",
            "name": name,
            "role": role,
            "accuracy": acc,
            "size_bytes": 2_000_000,
            "batches": {
                "1": {"p50_ms": ms, "speedup": sp},
                "32": {"images_per_s": 1000.0},
            },
        }
        for path, name, role, acc, ms, sp in [
            ("teacher.onnx", "teacher-tf_efficientnet_lite0.onnx", "teacher", 0.9, 4.0, 1.0),
            ("student.int8.onnx", "student-tinyresnet_xs.int8-cpu.onnx", "student", 0.85, 0.5, 8.0),
        ]
    ]
    (tmp_path / "bench.json").write_text(json.dumps({"rows": rows}))
    summarise(tmp_path / "bench.json", [tmp_path / "r.html"], tmp_path)
    err = capsys.readouterr().err
    # The file the demo wrote names the row, with the card's name beside it.
    assert "student.int8.onnx" in err and "student-tinyresnet_xs.int8-cpu.onnx" in err
    assert "85.0%" in err and "8.0x" in err and "r.html" in err


def test_a_second_demo_in_the_same_folder_is_refused_before_it_starts(tmp_path, capsys):
    from wbc_edge import cli

    (tmp_path / "demo-out" / "teacher").mkdir(parents=True)
    (tmp_path / "demo-out" / "teacher" / "last.pt").write_bytes(b"a finished run")
    code = cli.run(["demo", "--out", str(tmp_path / "demo-out")])
    assert code != 0
    assert not (tmp_path / "demo-out" / "phantoms").exists()  # no step ran
    assert (tmp_path / "demo-out" / "teacher" / "last.pt").read_bytes() == b"a finished run"
    said = " ".join(capsys.readouterr().err.split())
    assert "holds a previous demo" in said and "rm -rf" in said and "--out" in said


def test_each_step_is_numbered_timed_and_recorded(tmp_path, capsys):
    from wbc_edge.demo import Steps, write_demo_record

    steps = Steps(2, time.perf_counter())
    steps("the version", "--version")
    said = " ".join(capsys.readouterr().err.split())
    assert "step 1/2: the version" in said and "$ wbc-edge --version" in said
    assert "step 1/2 done in" in said and "since the demo started" in said
    assert steps.done[0]["command"] == "wbc-edge --version" and steps.done[0]["seconds"] >= 0
    with pytest.raises(UserError, match="demo step 'a bad one' failed"):
        steps("a bad one", "no-such-command")

    (tmp_path / "bench").mkdir()
    row = {"path": "m/student.onnx", "name": "student-x.onnx", "accuracy": 0.5}
    (tmp_path / "bench" / "bench.json").write_text(json.dumps({"rows": [row]}))
    (tmp_path / "run-smear" / "smear").mkdir(parents=True)
    summary = {"items": 8, "cells": 13, "differential": {"wbc_counted": 3, "in_review": 9}}
    (tmp_path / "run-smear" / "smear" / "summary.json").write_text(json.dumps(summary))
    json_path, md_path = write_demo_record(
        tmp_path / "rec" / "demo", steps, {"size": 48}, tmp_path, time.perf_counter()
    )
    record = json.loads(json_path.read_text())
    assert record["steps"][0]["step"] == "the version"
    assert record["test_accuracy"] == {"student.onnx": 0.5}
    assert record["smear_run"] == {"fields": 8, "cells": 13, "counted": 3, "under_review": 9}
    assert (
        "| 1 | the version |" in md_path.read_text() and "student.onnx 50.0%" in md_path.read_text()
    )
