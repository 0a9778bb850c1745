"""Reliability (issue 15): a bad file never stops the run, damaged input is never counted, one
run per results folder, SIGTERM drains like Ctrl-C, and usage errors read like click's."""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_models import BLUE, CLASSES, GREEN, RED, make_onnx, run_args, solid, write_images

from wbc_edge import cli
from wbc_edge.runtime.pipeline import Pipeline, PipelineConfig
from wbc_edge.runtime.sinks import RunOutput, csv_cell, read_records
from wbc_edge.runtime.sources import open_source

COLOURS = [RED, GREEN, BLUE]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_onnx(tmp_path_factory.mktemp("model") / "colour.onnx")


def errors_of(out: Path) -> dict[str, str]:
    path = out / "errors.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return {Path(e["key"]).name: e["error"] for e in map(json.loads, lines)}


# 1 -------------------------------------------------------------------------------------------
def test_a_file_name_that_is_not_utf8_is_classified_and_recorded_reversibly(tmp_path, model):
    src = tmp_path / "in"
    images = write_images(src, COLOURS + [RED])
    odd = os.fsencode(src) + b"/a_\xff.jpg"
    os.rename(images[3], odd)
    out = tmp_path / "out"
    report = tmp_path / "report.html"
    assert cli.run(run_args(src, model, out, "--report", str(report))) == 0
    records = read_records(out / "cells.jsonl")
    assert len(records) == 4 and not errors_of(out)
    odd_record = next(r for r in records if "a_" in r.file)
    assert os.fsencode(odd_record.file) == odd  # the exact bytes come back from the record
    csv_text = (out / "cells.csv").read_bytes().decode("utf-8")  # valid UTF-8 throughout
    assert "a_\\xff.jpg" in csv_text
    assert "a_\\xff.jpg" in report.read_text(encoding="utf-8")
    assert cli.run(run_args(src, model, out)) == 0  # a rerun neither fails nor repeats
    assert len(read_records(out / "cells.jsonl")) == 4


# 2 -------------------------------------------------------------------------------------------
def test_a_second_run_on_a_results_folder_in_use_is_refused(tmp_path, model, capsys):
    write_images(tmp_path / "in", COLOURS)
    out = tmp_path / "out"
    with RunOutput(out):  # a run holding the folder
        code = cli.run(run_args(tmp_path / "in", model, out))
        err = capsys.readouterr().err
    assert code == 2
    assert "in use by another wbc-edge run (pid" in err and "another --out" in err
    assert not (out / "cells.jsonl").read_text()  # nothing written by the refused run
    assert cli.run(run_args(tmp_path / "in", model, out)) == 0  # released: the next one runs
    assert len(read_records(out / "cells.jsonl")) == 3


# 4 -------------------------------------------------------------------------------------------
def test_report_into_a_folder_writes_report_html_and_leaves_no_tmp(tmp_path, model):
    write_images(tmp_path / "in", COLOURS)
    reports = tmp_path / "reports"
    reports.mkdir()
    code = cli.run(run_args(tmp_path / "in", model, tmp_path / "out", "--report", str(reports)))
    assert code == 0
    assert (reports / "report.html").read_text().startswith("<!doctype html>")
    assert not list(tmp_path.glob("*.tmp")) and not list(reports.glob("*.tmp"))


# 5 and 6 -------------------------------------------------------------------------------------
def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height; its pixel data is never needed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_damaged_and_implausible_images_go_to_errors_never_to_the_count(tmp_path, model):
    pytest.importorskip("simplejpeg", reason="the runtime extra brings it; CI has it")
    src = tmp_path / "in"
    good = write_images(src, [RED, GREEN])
    data = cv2.imencode(".jpg", solid(BLUE, 160))[1].tobytes()
    mid = len(data) // 2
    noise = np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes()
    corrupt = data[:mid] + noise + data[mid + 300 :]  # end marker intact
    (src / "corrupt.jpg").write_bytes(corrupt)
    assert cv2.imdecode(np.frombuffer(corrupt, np.uint8), cv2.IMREAD_COLOR) is not None
    (src / "huge.png").write_bytes(_png_header_only(16000, 16000))
    cv2.imwrite(str(src / "dot.png"), solid(BLUE, 1))
    cv2.imwrite(str(src / "gray.png"), solid((90, 90, 90), 64)[:, :, 0])
    cv2.imwrite(str(src / "blank.png"), np.full((64, 64, 3), (30, 40, 200), np.uint8))
    white = np.full((64, 64, 3), 255, np.uint8)
    white[:2, :2] = (0, 0, 200)
    cv2.imwrite(str(src / "white.png"), white)
    out = tmp_path / "out"
    assert cli.run(run_args(src, model, out, "--flag-ig", "0")) == 0
    errors = errors_of(out)
    assert "corrupt JPEG data" in errors["corrupt.jpg"]
    assert "too large (16000x16000 pixels" in errors["huge.png"]
    assert "too small (1x1" in errors["dot.png"]
    assert "grey image" in errors["gray.png"]
    assert "blank image" in errors["blank.png"]
    assert "saturated image" in errors["white.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["errors"] == 6 and summary["differential"]["wbc_counted"] == len(good)
    assert not summary["flags"]  # no Promyelocyte (blue) was counted


def test_non_finite_model_outputs_are_errors_not_confident_cells(tmp_path, model):
    from wbc_edge.model.backends import load_backend
    from wbc_edge.model.model import Model

    write_images(tmp_path / "in", [RED, BLUE, GREEN])

    class NanOnBlue:
        def __init__(self, inner):
            self.inner, self.card, self.name = inner, inner.card, "nan"
            self.total_inference_s, self.images, self.last_inference_s = 0.0, 0, 0.0

        def predict(self, batch):
            probs = self.inner.predict(batch)
            probs[probs.argmax(axis=1) == 2] = np.nan
            return probs

    with RunOutput(tmp_path / "out") as output:
        backend = NanOnBlue(load_backend(model))
        Pipeline(open_source(str(tmp_path / "in")), Model(backend), output, PipelineConfig()).run()
    labels = [r.label for r in read_records(tmp_path / "out" / "cells.jsonl")]
    assert sorted(labels) == ["Lymphocyte", "Neutrophil"]
    assert "non-finite" in errors_of(tmp_path / "out")["img_0001.jpg"]


# 8 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("card", "message"),
    [
        ({"preprocess": {"std": [0.0, 0.5, 0.5]}}, "std must be finite and positive"),
        ({"preprocess": {"std": [-0.5, 0.5, 0.5]}}, "std must be finite and positive"),
        ({"preprocess": {"input_size": 0}}, "input_size must be 8..4096"),
        ({"class_names": [*CLASSES, "Extra"]}, "does not match its card"),
        ({"preprocess": {"input_size": 48}}, "does not match its card"),
    ],
)
def test_a_card_that_does_not_fit_the_model_fails_the_run_not_the_files(
    tmp_path, card, message, capsys
):
    import onnx

    from wbc_edge.model.card import ONNX_METADATA_KEY, ModelCard, Preprocess

    path = make_onnx(tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    card = dict(card)
    fields = ModelCard("colour_test", CLASSES, Preprocess(32)).to_dict()
    fields["preprocess"].update(card.pop("preprocess", {}))
    fields.update(card)
    onnx.helper.set_model_props(proto, {ONNX_METADATA_KEY: json.dumps(fields)})
    onnx.save(proto, str(path))
    write_images(tmp_path / "in", COLOURS)
    out = tmp_path / "out"
    assert cli.run(run_args(tmp_path / "in", path, out)) == 2
    assert message in capsys.readouterr().err
    assert not errors_of(out) and not (out / "cells.jsonl").exists()


# 9 -------------------------------------------------------------------------------------------
def test_a_failed_file_is_tried_again_once_it_changes_in_a_watch_and_after_a_restart(tmp_path):
    pytest.importorskip("watchdog", reason="the runtime extra brings it; CI has it")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    bmp = cv2.imencode(".bmp", solid(GREEN, 64))[1].tobytes()
    source = open_source(str(inbox), watch=True, poll_s=0.05, settle_s=0.1)
    assert source.options.notify == "inotify"
    (inbox / "half.bmp").write_bytes(bmp[: len(bmp) // 2])  # the writer pauses half-way

    def next_frame(timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = source.capture(0.1)
            if frame is not None:
                return frame
        return None

    first = next_frame()
    assert first is not None and "not a readable image" in first.error
    assert next_frame(0.5) is None  # unchanged: not tried again
    (inbox / "half.bmp").write_bytes(bmp)  # the writer finishes
    again = next_frame()
    assert again is not None and not again.error and again.image.shape == (64, 64, 3)
    source.close()

    # Across a restart: the error record carries the file's size and mtime.
    out = tmp_path / "out"
    (inbox / "late.jpg").write_bytes(cv2.imencode(".jpg", solid(RED, 64))[1].tobytes()[:300])
    with RunOutput(out) as output:
        frame = open_source(str(inbox / "late.jpg")).capture()
        output.write_error(frame.key, frame.source, frame.error, frame.stat)
    with RunOutput(out) as output:  # unchanged: skipped
        assert len(open_source(str(inbox), done=output.resume)) == 1
    (inbox / "late.jpg").write_bytes(cv2.imencode(".jpg", solid(RED, 64))[1].tobytes())
    with RunOutput(out) as output:  # completed since: tried again
        assert len(open_source(str(inbox), done=output.resume)) == 2


def test_an_idle_watch_over_many_finished_files_costs_almost_no_cpu(tmp_path):
    pytest.importorskip("watchdog", reason="the runtime extra brings it; CI has it")
    inbox = tmp_path / "inbox"
    for d in range(10):
        (inbox / f"d{d}").mkdir(parents=True)
        for i in range(300):
            (inbox / f"d{d}" / f"c{i}.jpg").write_bytes(b"x")
    done = {str((inbox / f"d{d}" / f"c{i}.jpg").absolute()) for d in range(10) for i in range(300)}
    shares = {}
    for notify, poll in (("inotify", 0.05), ("polling", 0.05)):
        source = open_source(str(inbox), watch=True, done=done, poll_s=poll, settle_s=0.1)
        if notify == "polling":  # what a machine without watchdog (or inotify) gets
            source.close()
            source._observer = None
            source.options.notify = "polling"
        assert source.options.notify == notify
        source.capture(0.1)  # the first full listing
        cpu = time.process_time()
        start = time.monotonic()
        while time.monotonic() - start < 1.5:
            assert source.capture(0.1) is None
        shares[notify] = (time.process_time() - cpu) / (time.monotonic() - start)
        source.close()
    assert shares["inotify"] < 0.03, f"idle watch with inotify used {shares}"
    assert shares["polling"] > 3 * shares["inotify"]  # the listing every poll is what it saves


# 11 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["run", "x", "-m", "m.onnx", "--batch", "abc"], "'--batch'"),
        (["run", "x", "--model"], "'--model'"),
        (["run", "x", "-m", "m.onnx", "--bogus"], "--bogus"),
        (["frobnicate"], "frobnicate"),
        (["run", "x", "-m", "m.onnx", "--limit", "-1"], "'--limit'"),
        (["run", "x", "-m", "m.onnx", "--flag-ig", "-1"], "'--flag-ig'"),
        (["export", "onnx", "--bogus"], "--bogus"),
        (["run", "x", "--batch", "0"], "'--batch'"),
        (["run", "x", "--min-confidence", "2"], "'--min-confidence'"),
    ],
)
def test_usage_errors_show_the_usage_line_name_the_option_and_exit_2(argv, names, capsys):
    assert cli.run(argv) == 2
    err = capsys.readouterr().err
    assert "Usage: wbc-edge" in err and "Error:" in err and names in err
    assert "Traceback" not in err


# 12 ------------------------------------------------------------------------------------------
def test_out_inside_the_source_folder_is_refused(tmp_path, model, capsys):
    write_images(tmp_path / "in", COLOURS)
    assert cli.run(run_args(tmp_path / "in", model, tmp_path / "in" / "results")) == 2
    assert "inside the source folder" in capsys.readouterr().err
    assert not (tmp_path / "in" / "results").exists()


# 13 ------------------------------------------------------------------------------------------
def test_csv_cells_that_spreadsheets_would_run_are_neutralised():
    assert csv_cell('=HYPERLINK("http://x","y")') == '\'=HYPERLINK("http://x","y")'
    assert [csv_cell(t) for t in ("+1", "-2", "@SUM(A1)", "\tx")] == [
        "'+1",
        "'-2",
        "'@SUM(A1)",
        "'\tx",
    ]
    assert csv_cell("/data/cell.jpg") == "/data/cell.jpg"


def test_a_formula_class_name_from_a_card_goes_into_cells_csv_as_text(tmp_path):
    import csv

    classes = ['=HYPERLINK("http://evil","x")', "Lymphocyte", "Promyelocyte"]
    path = make_onnx(tmp_path / "m.onnx", classes=classes)
    write_images(tmp_path / "in", [RED])
    assert cli.run(run_args(tmp_path / "in", path, tmp_path / "out")) == 0
    with (tmp_path / "out" / "cells.csv").open(newline="") as f:
        row = next(csv.DictReader(f))
    assert row["class"] == "'" + classes[0] and row["top3"].startswith("'=")
    assert read_records(tmp_path / "out" / "cells.jsonl")[0].label == classes[0]  # JSON exact


# 12 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["train-teacher", "--data", "m.csv", "--epochs", "0"], "'--epochs'"),
        (["train-teacher", "--data", "m.csv", "--epochs", "-1"], "'--epochs'"),
        (["distill", "--data", "m.csv", "--epochs", "-2"], "'--epochs'"),
        (["train-teacher", "--data", "m.csv", "--size", "0"], "'--size'"),
        (["export", "onnx", "--model", "m.pt", "--num", "0"], "'--num'"),
        (
            ["export", "triton", "--model", "m.onnx", "--out", "r", "--max-batch", "0"],
            "'--max-batch'",
        ),
    ],
)
def test_values_that_were_accepted_silently_are_usage_errors(argv, option, capsys):
    assert cli.run(argv) == 2
    err = capsys.readouterr().err
    assert "Usage: wbc-edge" in err and option in err


def test_training_options_from_yaml_or_the_api_get_the_same_rules(tmp_path):
    pytest.importorskip("torch")
    from wbc_edge.errors import UserError
    from wbc_edge.kd.config import TrainConfig

    for bad in ({"epochs": 0}, {"size": 0}, {"batch_size": -1}, {"lr": 0.0}):
        with pytest.raises(UserError, match="training options"):
            TrainConfig(**bad)
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 0\n")
    with pytest.raises(UserError, match="epochs must be >= 1"):
        TrainConfig.from_sources(str(config))


def test_a_training_run_that_fails_at_the_start_leaves_no_run_folder(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "runs" / "teacher"
    argv = ["train-teacher", "--data", str(tmp_path / "missing.csv"), "--out", str(out)]
    assert cli.run([*argv, "--weights", "none", "--epochs", "1"]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert not out.exists()


# 13 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", "/abs", ""])
def test_triton_name_can_never_leave_the_repository(tmp_path, model, name, capsys):
    pytest.importorskip("onnx")
    repo = tmp_path / "deep" / "repo"
    repo.mkdir(parents=True)
    victim = tmp_path / "escape"
    victim.mkdir()
    (victim / "keep.txt").write_text("must survive")
    argv = ["export", "triton", "--model", str(model), "--out", str(repo), "--name", name]
    assert cli.run(argv) == 2
    assert "a Triton model name is one folder name" in capsys.readouterr().err
    assert (victim / "keep.txt").read_text() == "must survive"
    assert not any(repo.iterdir())


# 14 ------------------------------------------------------------------------------------------
def test_a_refused_checkpoint_or_a_wrong_file_type_is_one_line(tmp_path, model, capsys):
    pytest.importorskip("torch")
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"card": {}, "state_dict": Evil()}))
    assert cli.run(["export", "onnx", "--model", str(evil)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refuses to unpickle" in err
    assert "weights_only=False" not in err and not (tmp_path / "pwned").exists()
    assert cli.run(["export", "onnx", "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an ONNX model, not a PyTorch checkpoint" in err


# issue 18, item 4 ----------------------------------------------------------------------------
def test_camera_keys_are_unique_across_restarts_and_never_kept_for_resume(tmp_path):
    from wbc_edge.benchmarks.studies.stream_server import MjpegServer

    server = MjpegServer(fps=100).start()
    keys = []
    try:
        for _ in range(2):  # two runs of the same camera: frame numbers restart at 0
            with RunOutput(tmp_path / "out") as output, open_source(server.url) as camera:
                frames = [camera.capture(2.0) for _ in range(3)]
                for frame in frames:
                    output.write_item(frame.key, [])
                keys += [f.key for f in frames]
                assert [f.index for f in frames] == [0, 1, 2]
    finally:
        server.stop()
    assert len(set(keys)) == 6 and all(k.startswith("live:") for k in keys)
    assert (tmp_path / "out" / "done.txt").read_text() == ""
    with RunOutput(tmp_path / "out") as output:
        assert len(output.resume) == 0  # nothing of a camera is held in memory


def test_results_rotate_by_size_and_resume_still_sees_every_file(tmp_path, model):
    src = tmp_path / "in"
    write_images(src, COLOURS * 10)
    out = tmp_path / "out"
    assert cli.run(run_args(src, model, out, "--rotate-mb", "0.002")) == 0  # ~2 KB parts
    parts = sorted(out.glob("cells.*.jsonl"))
    assert len(parts) >= 3 and (out / "cells.jsonl").stat().st_size < 2000
    records = [r for p in [*parts, out / "cells.jsonl"] for r in read_records(p)]
    assert len(records) == 30 and len({r.key for r in records}) == 30
    for part in parts:  # each part is a complete pair: as many CSV rows as JSONL records
        rows = part.with_suffix(".csv").read_text().splitlines()
        assert rows[0].startswith("time,") and len(rows) - 1 == len(read_records(part))
    assert cli.run(run_args(src, model, out, "--rotate-mb", "0.002")) == 0  # nothing repeated
    assert sum(len(read_records(p)) for p in out.glob("cells*.jsonl")) == 30
