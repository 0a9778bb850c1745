"""One sample per folder: OUT/<sample>/, a header naming source, model and settings, resume only
for the same run, and a cell target that stops the run."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from runtime_models import BLUE, GREEN, RED, make_onnx, write_images

from wbc_edge import cli
from wbc_edge.errors import UserError
from wbc_edge.runtime.sample import check_sample_id, derive_sample_id
from wbc_edge.runtime.sinks import read_records
from wbc_edge.runtime.sources import parse_uri

COLOURS = [RED, GREEN, BLUE]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_onnx(tmp_path_factory.mktemp("model") / "colour.onnx")


def run(*args: str) -> int:
    return cli.run(["run", *args, "--no-live"])


def test_two_samples_into_one_out_give_two_folders(tmp_path, model):
    a = write_images(tmp_path / "slideA", COLOURS * 2)
    b = write_images(tmp_path / "slideB", [RED] * 3)
    out = tmp_path / "out"
    assert run(str(tmp_path / "slideA"), "-m", str(model), "--out", str(out)) == 0
    assert run(str(tmp_path / "slideB"), "-m", str(model), "--out", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["slideA", "slideB"]
    files_a = {r.file for r in read_records(out / "slideA" / "cells.jsonl")}
    files_b = {r.file for r in read_records(out / "slideB" / "cells.jsonl")}
    assert files_a == {str(p.absolute()) for p in a} and files_b == {str(p.absolute()) for p in b}
    summary = json.loads((out / "slideB" / "summary.json").read_text())
    assert summary["sample"] == "slideB" and summary["differential"]["wbc_counted"] == 3
    header = json.loads((out / "slideA" / "run.json").read_text())
    assert header["sample"] == "slideA" and len(header["model"]["sha256"]) == 64
    assert header["card"]["class_names"] == ["Neutrophil", "Lymphocyte", "Promyelocyte"]
    assert header["settings"] == {"mode": "crops", "min_confidence": 0.5, "margin": 0.15}


def test_another_model_or_source_on_a_sample_is_refused_with_the_reason(tmp_path, model, capsys):
    write_images(tmp_path / "slide", COLOURS)
    write_images(tmp_path / "other", COLOURS)
    teacher = make_onnx(tmp_path / "teacher.onnx", gain=3.0)
    out = str(tmp_path / "out")
    assert run(str(tmp_path / "slide"), "-m", str(model), "--out", out) == 0
    capsys.readouterr()
    assert run(str(tmp_path / "slide"), "-m", str(teacher), "--out", out) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "model colour.onnx (sha256" in err and "not teacher.onnx" in err
    assert "--sample slide-2" in err and "Traceback" not in err
    assert run(str(tmp_path / "other"), "-m", str(model), "--out", out, "--sample", "slide") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "source" in err and "other" in err
    # Two models of one file name: their folders tell them apart.
    (tmp_path / "b").mkdir()
    same_name = make_onnx(tmp_path / "b" / model.name, gain=3.0)
    assert run(str(tmp_path / "slide"), "-m", str(same_name), "--out", out) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"not {same_name.resolve()} (sha256" in err
    assert run(str(tmp_path / "slide"), "-m", str(model), "--out", out, "--smear") == 2
    assert "mode 'crops', not 'smear'" in " ".join(capsys.readouterr().err.split())
    # Nothing was added to the sample by the refused runs.
    assert len(read_records(tmp_path / "out" / "slide" / "cells.jsonl")) == 3
    assert len((tmp_path / "out" / "slide" / "sessions.jsonl").read_text().splitlines()) == 1


def test_a_resume_keeps_the_recorded_settings_unless_given_again(tmp_path, model, capsys):
    images = write_images(tmp_path / "slide", COLOURS * 3)
    args = [str(tmp_path / "slide"), "-m", str(model), "--out", str(tmp_path / "out")]
    assert run(*args, "--min-confidence", "0.7", "--limit", "4", "--operator", "AB") == 0
    assert run(*args) == 0  # resumes at 0.7, as recorded
    sample = tmp_path / "out" / "slide"
    assert len(read_records(sample / "cells.jsonl")) == len(images)
    assert json.loads((sample / "run.json").read_text())["lab"]["operator"] == "AB"
    capsys.readouterr()
    assert run(*args, "--min-confidence", "0.8") == 2
    assert "min_confidence 0.7, not 0.8" in " ".join(capsys.readouterr().err.split())


def test_the_target_stops_the_run_and_a_higher_target_counts_on(tmp_path, model, capsys):
    write_images(tmp_path / "slide", COLOURS * 10)
    args = ["run", str(tmp_path / "slide"), "-m", str(model), "--out", str(tmp_path / "out")]
    args += ["--batch", "1"]
    assert cli.run([*args, "--target-cells", "10"]) == 0  # the live view
    err = capsys.readouterr().err
    assert "WBC counted 10 / 10" in err and "TARGET REACHED" in err
    sample = tmp_path / "out" / "slide"
    assert len(read_records(sample / "cells.jsonl")) == 10
    summary = json.loads((sample / "summary.json").read_text())["differential"]
    assert summary["target_reached"] and summary["wbc_counted"] == 10
    # Resuming without a new target: already reached; with a higher one: counts on to it.
    assert cli.run([*args, "--no-live"]) == 2
    assert "already has 10 WBC counted" in " ".join(capsys.readouterr().err.split())
    assert cli.run([*args, "--no-live", "--target-cells", "25"]) == 0
    records = read_records(sample / "cells.jsonl")
    assert len(records) == 25 and len({r.key for r in records}) == 25


def test_the_default_sample_comes_from_the_source(tmp_path):
    (tmp_path / "slide 7").mkdir()
    (tmp_path / "clip.mp4").write_bytes(b"")
    assert derive_sample_id(parse_uri(str(tmp_path / "slide 7"))) == "slide-7"
    assert derive_sample_id(parse_uri(str(tmp_path / "slide 7"), watch=True)) == "slide-7"
    assert derive_sample_id(parse_uri(f"{tmp_path}/slide 7/*.jpg")) == "slide-7"
    assert derive_sample_id(parse_uri(str(tmp_path / "clip.mp4"))) == "clip"
    at = datetime(2026, 12, 1, 9, 30, 5)
    assert derive_sample_id(parse_uri("0"), at) == "camera0-20261201-093005"
    assert derive_sample_id(parse_uri("csi://1"), at) == "csi1-20261201-093005"
    assert derive_sample_id(parse_uri("rtsp://cam/live"), at).startswith("rtsp-rtsp-cam-live-")
    for bad in ("../x", "a/b", "", ".hidden", "x" * 81):
        with pytest.raises(UserError, match="--sample"):
            check_sample_id(bad)
    assert check_sample_id("S-2026_0142.a") == "S-2026_0142.a"
