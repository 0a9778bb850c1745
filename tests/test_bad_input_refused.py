"""Issue 32, cases 6, 8, 9 and 10: bad input is refused in one line naming what to fix, before
a byte is written; a JPEG is a JPEG whatever its name; a summary after a resume that adds
nothing describes the sample it sits in."""

from __future__ import annotations

import builtins
import errno
import json
import pathlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_models import BLUE, GREEN, RED, make_onnx, run_args, solid, write_images

from wbc_edge import cli
from wbc_edge.errors import UserError
from wbc_edge.runtime.sinks import read_records


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_onnx(tmp_path_factory.mktemp("model") / "colour.onnx")


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return " ".join(" ".join(lines).split())


@pytest.mark.parametrize(
    "extra",
    [
        ["--margin", "nan"],
        ["--margin", "-5"],
        ["--margin", "inf"],
        ["--threads", "-5"],
        ["--settle", "-1"],
        ["--settle", "nan"],
        ["--poll", "0"],
        ["--rbc-px", "nan"],
        ["--open-timeout", "nan"],
        ["--fps", "-1"],
        ["--width", "-2"],
    ],
    ids=lambda e: " ".join(e),
)
def test_case06_bad_option_values_are_refused_before_anything_is_written(
    tmp_path, model, capsys, extra
):
    src, out = tmp_path / "in", tmp_path / "out" / "s"
    write_images(src, [RED])
    assert cli.run(run_args(src, model, out, *extra)) == 2
    assert extra[0] in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_case06_margin_nan_never_reaches_run_json(tmp_path, model):
    src, out = tmp_path / "in", tmp_path / "out" / "s"
    write_images(src, [RED, GREEN])
    assert cli.run(run_args(src, model, out, "--smear", "--margin", "nan")) == 2
    assert not out.exists()
    assert cli.run(run_args(src, model, out, "--smear", "--margin", "0.2")) == 0
    assert cli.run(run_args(src, model, out, "--smear", "--margin", "0.2")) == 0  # resumes


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_case06_review_port_out_of_range_is_a_usage_error(tmp_path, capsys, port):
    assert cli.run(["review", str(tmp_path), "--port", port]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "OverflowError" not in err and "--port" in err


def _card_json(model: Path, dest: Path, text: str) -> Path:
    import onnx

    from wbc_edge.model.card import ONNX_METADATA_KEY

    proto = onnx.load(str(model))
    props = {p.key: p.value for p in proto.metadata_props}
    props[ONNX_METADATA_KEY] = text
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(dest))
    return dest


@pytest.mark.parametrize("text", ['{"architecture": "x", "class_names": [', "[1, 2]"])
def test_case08_an_onnx_card_of_malformed_json_is_one_line_naming_the_file(
    tmp_path, model, capsys, text
):
    bad = _card_json(model, tmp_path / "bad-card.onnx", text)
    src, out = tmp_path / "in", tmp_path / "out" / "s"
    write_images(src, [RED])
    assert cli.run(run_args(src, bad, out)) == 2
    err = one_line_error(capsys)
    assert "bad-card.onnx" in err and "export" in err and "JSONDecodeError" not in err


@pytest.fixture
def reviewed(tmp_path, model):
    src, out = tmp_path / "in", tmp_path / "out" / "s"
    write_images(src, [RED, GREEN, BLUE])
    assert cli.run(run_args(src, model, out)) == 0
    return out, read_records(out / "cells.jsonl")


@pytest.mark.parametrize(
    "line",
    [
        {"action": "reclassify", "class": "Unicorn"},
        {"action": "reclassify", "class": None},
        {"action": "confirm", "class": None},
        {"action": "explode", "class": "Lymphocyte"},
        {"class": "Lymphocyte"},
        b"\xff\xfe not utf-8\n",
        b"[1, 2]\n",
    ],
    ids=["unknown class", "null class", "null confirm", "bad action", "no action", "bad utf-8",
         "array"],
)  # fmt: skip
def test_case08_a_bad_corrections_file_is_one_line_naming_file_and_line(reviewed, capsys, line):
    out, records = reviewed
    good = {"cell": records[0].id, "action": "confirm", "class": records[0].label}
    bad = line if isinstance(line, bytes) else json.dumps({"cell": records[1].id, **line}).encode()
    (out / "corrections.jsonl").write_bytes(
        json.dumps(good).encode() + b"\n" + bad.rstrip() + b"\n"
    )
    before = (out / "corrections.jsonl").read_bytes()
    for argv in (["report", str(out)], ["review", str(out), "--export", str(out.parent / "x")]):
        assert cli.run(argv) == 2
        err = one_line_error(capsys)
        assert "corrections.jsonl:2" in err and "KeyError" not in err.split(":")[0], err
    assert (out / "corrections.jsonl").read_bytes() == before


def test_case08_a_full_disk_names_the_file_and_keeps_what_was_written(
    tmp_path, model, capsys, monkeypatch
):
    src, out = tmp_path / "in", tmp_path / "out" / "s"
    images = write_images(src, [RED, GREEN, BLUE] * 3)
    assert cli.run(run_args(src, model, out, "--limit", "3")) == 0
    kept = (out / "cells.jsonl").read_bytes()
    real_open = pathlib.Path.open
    real_builtin_open = builtins.open

    class Full:
        """A file on a full disk: every write fails as the kernel says it."""

        def __init__(self, f):
            self._f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    def full(path, mode="r", *args, **kwargs):
        f = real_builtin_open(path, mode, *args, **kwargs)
        inside = str(Path(path).absolute()).startswith(str(out))
        return Full(f) if inside and any(m in mode for m in "wa") else f

    monkeypatch.setattr(pathlib.Path, "open", lambda self, *a, **k: full(self, *a, **k))
    monkeypatch.setattr(builtins, "open", full)
    code = cli.run(run_args(src, model, out))
    monkeypatch.setattr(pathlib.Path, "open", real_open)
    monkeypatch.setattr(builtins, "open", real_builtin_open)
    err = one_line_error(capsys)
    assert code == 2 and "No space left on device" in err and str(out) in err, err
    assert (out / "cells.jsonl").read_bytes().startswith(kept)
    assert cli.run(run_args(src, model, out)) == 0  # space freed: it resumes
    assert sorted(r.key for r in read_records(out / "cells.jsonl")) == sorted(map(str, images))


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((40, 40, 2), np.uint8),
        np.zeros((40, 40, 5), np.uint8),
        np.zeros(1600, np.uint8),
        np.zeros((40, 40, 3), np.float32),
    ],
    ids=["0x0", "2 channels", "5 channels", "1-D", "float"],
)
def test_case08_api_arrays_it_cannot_use_are_one_user_error(model, array):
    import wbc_edge

    with wbc_edge.load(model) as m, pytest.raises(UserError, match="image") as info:
        m(array)
    message = str(info.value)  # ours, not OpenCV's "(-215:Assertion failed) ... in function"
    assert "cv::" not in message and "in function" not in message and "\n" not in message


def test_case08_api_bytes_are_an_encoded_image(model):
    import wbc_edge

    data = cv2.imencode(".jpg", solid(RED))[1].tobytes()
    with wbc_edge.load(model) as m:
        assert m(data).label == "Neutrophil"
        with pytest.raises(UserError, match="not a readable image"):
            m(b"not an image")


def test_case09_a_jpeg_named_png_is_decoded_by_content(tmp_path, model):
    src, out = tmp_path / "in", tmp_path / "out" / "s"
    src.mkdir()
    (src / "cell.png").write_bytes(cv2.imencode(".jpg", solid(RED))[1].tobytes())
    (src / "field.jpg").write_bytes(cv2.imencode(".png", solid(GREEN))[1].tobytes())
    cut = cv2.imencode(".jpg", solid(BLUE, size=200))[1].tobytes()
    (src / "cut.png").write_bytes(cut[: len(cut) // 2])  # a cut JPEG stays refused
    assert cli.run(run_args(src, model, out)) == 0
    labels = {Path(r.key).name: r.label for r in read_records(out / "cells.jsonl")}
    assert labels == {"cell.png": "Neutrophil", "field.jpg": "Lymphocyte"}
    errors = [json.loads(x)["error"] for x in (out / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and "cut.png" in errors[0] and "truncated" in errors[0]


def test_case10_summary_after_a_resume_that_adds_nothing_describes_the_sample(tmp_path, model):
    src, out = tmp_path / "in", tmp_path / "out" / "s"
    write_images(src, [RED, GREEN, BLUE, RED])
    (src / "empty.jpg").write_bytes(b"")
    assert cli.run(run_args(src, model, out)) == 0
    first = json.loads((out / "summary.json").read_text())
    assert cli.run(run_args(src, model, out)) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["this_run"] == {"items": 0, "cells": 0, "errors": 0}
    assert (again["items"], again["cells"], again["errors"]) == (5, 4, 1)
    assert (first["items"], first["cells"], first["errors"]) == (5, 4, 1)
    assert again["differential"] == first["differential"]
