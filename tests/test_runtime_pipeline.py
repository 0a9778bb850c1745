"""`wbc-edge run` end to end: records, resume after a stop or a kill, errors, smear mode,
drop-oldest for cameras, draining on stop, and no torch in the runtime."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_models import BLUE, CLASSES, GREEN, RED, make_onnx, paint_field, solid, write_images

from wbc_edge import cli
from wbc_edge.model.backends import load_backend
from wbc_edge.model.model import Model
from wbc_edge.runtime.options import PipelineConfig
from wbc_edge.runtime.pipeline import Pipeline
from wbc_edge.runtime.queues import DropOldestQueue
from wbc_edge.runtime.sinks import RunOutput, read_records
from wbc_edge.runtime.sources import EndOfStream, Frame, Source, SourceOptions, open_source

REPO = Path(__file__).resolve().parents[1]
COLOURS = [RED, GREEN, BLUE]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_onnx(tmp_path_factory.mktemp("model") / "colour.onnx")


def csv_rows(out: Path) -> list[dict]:
    with (out / "cells.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def assert_each_once(out: Path, images: list[Path]) -> None:
    """Every image has exactly one record, in JSONL and CSV alike, with the colour's class."""
    records = read_records(out / "cells.jsonl")
    files = [r.file for r in records]
    assert sorted(files) == sorted(str(p.absolute()) for p in images)
    assert [r["file"] for r in csv_rows(out)] == files
    for r in records:
        index = int(Path(r.file).stem.split("_")[1])
        assert r.label == CLASSES[index % 3]


def test_folder_run_writes_one_record_per_image(tmp_path, model, capsys):
    images = write_images(tmp_path / "in", COLOURS * 7)
    out = tmp_path / "out"
    res = out / "in"  # the sample folder (named after the source folder)
    code = cli.run(["run", str(tmp_path / "in"), "-m", str(model), "--out", str(out), "--no-live"])
    assert code == 0
    assert_each_once(res, images)
    # A JPEG crop is archived as its own bytes, not decoded and encoded again.
    for r in read_records(res / "cells.jsonl"):
        assert (res / "cells" / f"{r.id}.jpg").read_bytes() == Path(r.file).read_bytes()
    record = json.loads((res / "cells.jsonl").read_text().splitlines()[0])
    assert set(record) >= {"time", "source", "frame", "file", "box", "class", "prob", "top3"}
    assert record["box"] == [0, 0, 40, 40] and len(record["top3"]) == 3
    assert record["uncertain"] is False
    summary = json.loads((res / "summary.json").read_text())
    assert summary["cells"] == 21 and summary["errors"] == 0
    assert {c: v["count"] for c, v in summary["differential"]["wbc"].items()} == {
        c: 7 for c in CLASSES
    }
    assert [f["rule"] for f in summary["flags"]] == ["IG"]  # Promyelocyte: 33% > 5%
    assert "IMMATURE GRANULOCYTES" in capsys.readouterr().err


def test_stopped_after_k_files_and_restarted_neither_repeats_nor_skips(tmp_path, model):
    images = write_images(tmp_path / "in", COLOURS * 5)
    out = tmp_path / "out"
    res = out / "in"  # the sample folder (named after the source folder)
    args = ["run", str(tmp_path / "in"), "-m", str(model), "--out", str(out), "--no-live"]
    assert cli.run([*args, "--limit", "4", "--batch", "3"]) == 0
    assert len(read_records(res / "cells.jsonl")) == 4
    assert cli.run([*args, "--limit", "5"]) == 0
    assert len(read_records(res / "cells.jsonl")) == 9
    assert cli.run(args) == 0
    assert_each_once(res, images)
    assert cli.run(args) == 0  # nothing left: nothing added
    assert_each_once(res, images)
    summary = json.loads((res / "summary.json").read_text())
    assert summary["this_run"]["items"] == 0 and summary["differential"]["wbc_counted"] == 15
    assert summary["items"] == summary["cells"] == 15  # the sample's, as the differential


def test_killed_mid_run_and_restarted_neither_repeats_nor_skips(tmp_path):
    # A slower model (128 px, 30 convolutions) and batch 1 so the kill lands mid-run.
    slow = make_onnx(tmp_path / "slow.onnx", size=128, extra_nodes=30)
    images = write_images(tmp_path / "in", COLOURS * 30)
    out = tmp_path / "out"
    res = out / "in"  # the sample folder (named after the source folder)
    cmd = [sys.executable, "-c", "from wbc_edge.cli import main; main()", "run"]
    cmd += [str(tmp_path / "in"), "-m", str(slow), "--out", str(out), "--no-live", "--batch", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    jsonl = res / "cells.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if jsonl.is_file() and jsonl.read_text().count("\n") >= 20:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(read_records(jsonl))
    assert 20 <= done_before < len(images), "the kill must land mid-run for this test to mean much"
    assert (
        cli.run(["run", str(tmp_path / "in"), "-m", str(slow), "--out", str(out), "--no-live"]) == 0
    )
    assert_each_once(res, images)
    # Each cell's crop was kept before its record was written: the gallery lacks none.
    assert all((res / "cells" / f"{r.id}.jpg").is_file() for r in read_records(jsonl))


def test_torn_lines_are_cut_and_csv_levelled_on_reopen(tmp_path, model):
    images = write_images(tmp_path / "in", COLOURS * 2)
    out = tmp_path / "out"
    res = out / "in"  # the sample folder (named after the source folder)
    args = ["run", str(tmp_path / "in"), "-m", str(model), "--out", str(out), "--no-live"]
    assert cli.run([*args, "--limit", "4"]) == 0
    jsonl, csv_path = res / "cells.jsonl", res / "cells.csv"
    lines = jsonl.read_text().splitlines(keepends=True)
    # As if killed while writing record 4 (torn) and before its CSV row and done mark.
    jsonl.write_text("".join(lines[:3]) + lines[3][:25])
    rows = csv_path.read_text().splitlines(keepends=True)
    csv_path.write_text("".join(rows[:3]))  # header + 2 rows: one row behind the JSONL
    (res / "done.txt").write_text("".join(r.key + "\n" for r in read_records(jsonl)[:2]))
    with RunOutput(res) as output:
        assert len(output.done()) == 3
        assert jsonl.read_text().endswith("\n") and len(csv_rows(res)) == 3
    assert cli.run(args) == 0
    assert_each_once(res, images)


def test_corrupt_and_non_image_files_are_logged_and_the_stream_goes_on(tmp_path, model):
    images = write_images(tmp_path / "in", COLOURS * 2)
    good = images[0].read_bytes()
    (tmp_path / "in" / "img_0002.jpg").write_bytes(good[:100])  # truncated in place
    (tmp_path / "in" / "scan.dat").write_text("not an image")
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40 + b"IEND....")
    out = tmp_path / "out"
    res = out / "in"  # the sample folder (named after the source folder)
    args = ["run", str(tmp_path / "in"), "-m", str(model), "--out", str(out), "--no-live"]
    assert cli.run(args) == 0
    errors = [json.loads(line) for line in (res / "errors.jsonl").read_text().splitlines()]
    assert sorted(Path(e["key"]).name for e in errors) == [
        "broken.png",
        "img_0002.jpg",
        "scan.dat",
    ]
    assert all(e["error"] for e in errors)
    assert_each_once(res, [p for p in images if p.name != "img_0002.jpg"])
    assert cli.run(args) == 0  # errors are not retried on resume
    assert len((res / "errors.jsonl").read_text().splitlines()) == 3


def test_smear_mode_classifies_each_white_cell_found(tmp_path, model):
    fields = {
        "f0.png": [(120, 120), (400, 300), (560, 100)],
        "f1.png": [(320, 240)],
        "f2.png": [],
    }
    (tmp_path / "in").mkdir()
    for i, (name, centres) in enumerate(fields.items()):
        cv2.imwrite(str(tmp_path / "in" / name), paint_field(centres, i))
    out, ann = tmp_path / "out", tmp_path / "ann"
    res = out / "in"  # the sample folder
    args = ["run", str(tmp_path / "in"), "-m", str(model), "--smear", "--out", str(out)]
    assert cli.run([*args, "--no-live", "--annotate", str(ann)]) == 0
    records = read_records(res / "cells.jsonl")
    for name, centres in fields.items():
        boxes = [r.box for r in records if Path(r.file).name == name]
        assert len(boxes) == len(centres), name
        for x, y in centres:
            assert any(x1 < x < x2 and y1 < y < y2 for x1, y1, x2, y2 in boxes)
    assert sorted(r.cell for r in records if r.file.endswith("f0.png")) == [0, 1, 2]
    # The empty field is done too (a restart does not look at it again).
    assert len((res / "done.txt").read_text().splitlines()) == 3
    assert len(list(ann.glob("*.jpg"))) == 3


def test_low_confidence_cells_go_to_review_not_the_count(tmp_path, model):
    grey = (128, 128, 128)
    write_images(tmp_path / "in", [RED, grey, grey, GREEN])
    out = tmp_path / "out"
    res = out / "in"  # the sample folder (named after the source folder)
    args = ["run", str(tmp_path / "in"), "-m", str(model), "--out", str(out), "--no-live"]
    assert cli.run([*args, "--min-confidence", "0.6"]) == 0
    records = read_records(res / "cells.jsonl")
    assert [r.uncertain for r in records] == [False, True, True, False]
    diff = json.loads((res / "summary.json").read_text())["differential"]
    assert diff["wbc_counted"] == 2 and diff["in_review"] == 2
    percent = {c: v["percent"] for c, v in diff["wbc"].items()}
    assert percent == {"Neutrophil": 50.0, "Lymphocyte": 50.0, "Promyelocyte": 0.0}
    assert not json.loads((res / "summary.json").read_text())["flags"]


def test_review_threshold_comes_from_the_card_unless_given(tmp_path, model, capsys):
    import onnx

    from wbc_edge.export.onnx_export import set_metadata
    from wbc_edge.model.backends.onnxruntime import read_onnx_card

    card = read_onnx_card(model)
    card.confidence_threshold = 0.6
    card.calibration = {"target_error": 0.01}
    proto = onnx.load(str(model))
    set_metadata(proto, card)
    calibrated = tmp_path / "calibrated.onnx"
    onnx.save(proto, str(calibrated))
    grey = (128, 128, 128)
    write_images(tmp_path / "in", [RED, grey, grey, GREEN])
    args = ["run", str(tmp_path / "in"), "-m", str(calibrated), "--no-live"]
    assert cli.run([*args, "--out", str(tmp_path / "card")]) == 0
    assert "review: cells below 0.6000 (the card's certified threshold" in capsys.readouterr().err
    records = read_records(tmp_path / "card" / "in" / "cells.jsonl")
    assert [r.uncertain for r in records] == [False, True, True, False]
    assert cli.run([*args, "--out", str(tmp_path / "given"), "--min-confidence", "0.1"]) == 0
    assert "(--min-confidence)" in capsys.readouterr().err
    assert not any(r.uncertain for r in read_records(tmp_path / "given" / "in" / "cells.jsonl"))


def test_onnx_run_never_imports_torch(tmp_path, model):
    write_images(tmp_path / "in", COLOURS)
    code = f"""
import sys
from wbc_edge.cli import run
assert run(["run", {str(tmp_path / "in")!r}, "-m", {str(model)!r}, "--out",
            {str(tmp_path / "out")!r}, "--no-live", "--report", {str(tmp_path / "r.html")!r}]) == 0
# The CLI registers every part's commands, so kd/export's thin cli modules load; nothing else.
# kd.config holds the training defaults --help shows, torch-free on purpose.
cli_only = {"wbc_edge.kd", "wbc_edge.kd.cli", "wbc_edge.kd.cli_options", "wbc_edge.kd.train_cli",
            "wbc_edge.kd.evaluate_cli", "wbc_edge.kd.ablation_cli", "wbc_edge.kd.adapt_cli",
            "wbc_edge.kd.config", "wbc_edge.export", "wbc_edge.export.cli"}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm", "torchvision")
               or (m.startswith(("wbc_edge.kd", "wbc_edge.export")) and m not in cli_only))
print("HEAVY", heavy)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    assert len(read_records(tmp_path / "out" / "in" / "cells.jsonl")) == 3


def test_drop_oldest_queue_keeps_the_newest():
    q = DropOldestQueue(3)
    for i in range(5):
        q.put(i)
    assert q.dropped == 2 and q.qsize() == 3
    assert [q.get_nowait() for _ in range(3)] == [2, 3, 4]
    with pytest.raises(Exception):  # noqa: B017 - queue.Empty
        q.get(timeout=0.01)


class FakeCamera(Source):
    """A camera delivering numbered frames at a fixed rate, however slow the consumer."""

    def __init__(self, n: int, fps: float) -> None:
        super().__init__(SourceOptions("fake", "camera", "fake", live=True))
        self.n, self.period = n, 1.0 / fps

    def capture(self, timeout: float = 1.0) -> Frame | None:
        if self.index >= self.n:
            raise EndOfStream
        time.sleep(self.period)
        self.index += 1
        return Frame("fake", self.index - 1, f"fake#{self.index - 1}", solid(RED))


class SlowBackend:
    """Wraps a backend, sleeping per batch, and remembers batch sizes."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay, self.sizes = inner, delay, []
        self.card, self.name = inner.card, "slow"
        self.total_inference_s, self.images, self.last_inference_s = 0.0, 0, 0.0

    def predict(self, batch):
        self.sizes.append(len(batch))
        time.sleep(self.delay)
        return self.inner.predict(batch)

    def close(self):
        self.inner.close()


def test_live_camera_drops_oldest_frames_when_inference_lags(tmp_path, model):
    backend = SlowBackend(load_backend(model), delay=0.05)
    camera = FakeCamera(n=60, fps=400)
    with RunOutput(tmp_path / "out") as output:
        config = PipelineConfig(batch=1, queue_size=2)
        stats = Pipeline(camera, Model(backend), output, config).run()
    indices = [r.frame for r in read_records(tmp_path / "out" / "cells.jsonl")]
    assert stats.dropped > 20 and stats.items + stats.dropped >= 58
    assert indices == sorted(indices) and indices[-1] >= 57  # the newest frames survive


def test_folder_blocks_instead_of_dropping_and_batches_fill(tmp_path, model):
    write_images(tmp_path / "in", COLOURS * 10)
    backend = SlowBackend(load_backend(model), delay=0.02)
    with RunOutput(tmp_path / "out") as output:
        config = PipelineConfig(batch=8, queue_size=16)
        stats = Pipeline(open_source(str(tmp_path / "in")), Model(backend), output, config).run()
    assert stats.dropped == 0 and stats.items == 30
    assert max(backend.sizes) == 8 and sum(backend.sizes) == 30


def test_stop_drains_queued_frames_before_ending(tmp_path, model):
    backend = SlowBackend(load_backend(model), delay=0.02)
    # More frames than every queue between reader and writer holds together (frames 32, the
    # pool, and one chunk of a batch before and after inference), so the stop
    # must land while the reader still has files left.
    write_images(tmp_path / "in", COLOURS * 40)
    with RunOutput(tmp_path / "out") as output:
        pipeline = Pipeline(
            open_source(str(tmp_path / "in")), Model(backend), output, PipelineConfig(batch=2)
        )
        pipeline.start()
        time.sleep(0.15)
        pipeline.stop()  # what Ctrl-C does
        assert pipeline.wait(10)
        stats = pipeline.finish()
    captured = pipeline.source.index + 1
    assert 0 < stats.items < 120
    assert stats.items == captured  # every captured frame was classified and written
    assert len(read_records(tmp_path / "out" / "cells.jsonl")) == stats.items


def test_ctrl_c_while_waiting_for_the_output_stage_still_drains_it(tmp_path, model):
    """Python < 3.13 marks a thread as ended when Ctrl-C interrupts its join (cpython#90882):
    the run must still wait for the output stage to write everything it was given."""
    write_images(tmp_path / "in", COLOURS)
    main = threading.get_ident()
    written = []

    def slow_output(item):
        if not written:  # capture, prepare and infer are done: the main thread waits for us
            deadline = time.monotonic() + 10
            while not all(e.is_set() for e in pipeline._ended[:3]):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            time.sleep(0.3)
            signal.pthread_kill(main, signal.SIGINT)  # Ctrl-C, received by the main thread
        time.sleep(0.3)
        written.append(item.frame.key)

    with RunOutput(tmp_path / "out") as output:
        source = open_source(str(tmp_path / "in"))
        pipeline = Pipeline(source, Model.load(model), output, observers=[slow_output])
        stats = pipeline.run()
        assert not pipeline.running
        assert stats.items == len(written) == 3  # nothing was still being written
    assert len(read_records(tmp_path / "out" / "cells.jsonl")) == 3


def test_a_failing_stage_ends_the_run_with_its_error(tmp_path, model):
    class Broken(SlowBackend):
        def predict(self, batch):
            raise RuntimeError("device lost")

    write_images(tmp_path / "in", COLOURS)
    with RunOutput(tmp_path / "out") as output:
        pipeline = Pipeline(
            open_source(str(tmp_path / "in")), Model(Broken(load_backend(model), 0)), output
        )
        with pytest.raises(RuntimeError, match="device lost"):
            pipeline.run()
    assert not pipeline.running


def _wait_for_lines(path: Path, n: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = path.read_text().count("\n") if path.is_file() else 0
        if count >= n:
            break
        time.sleep(0.05)
    return count


def test_watch_run_classifies_arrivals_and_ctrl_c_drains_then_resumes(tmp_path, model):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    res = out / "inbox"  # the sample folder
    write_images(inbox, [RED, GREEN])  # there before the start: classified too
    # A child inherits an ignored SIGINT (pytest started with `&` from a script), and Python
    # then raises no KeyboardInterrupt at all: restore what a terminal's foreground job has.
    boot = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    cmd = [sys.executable, "-c", boot + "from wbc_edge.cli import main; main()"]
    cmd += ["run", str(inbox), "-m", str(model), "--out", str(out), "--watch"]
    cmd += ["--settle", "0.2", "--poll", "0.05", "--no-live"]

    def session(new: list, prefix: str, expect: int) -> str:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.0)
            write_images(inbox, new, prefix=prefix)
            assert _wait_for_lines(res / "cells.jsonl", expect, timeout=60) == expect
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"Ctrl-C did not end the run within 30 s:\n{err}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err
        return err

    err = session([BLUE, BLUE], "late", 4)
    assert "stopping" in err and "source" in err and "kind=watch" in err
    # Restarted: only files it has not seen, whether they came while it was down or after.
    write_images(inbox, [GREEN], prefix="down")
    session([RED], "after", 6)
    records = read_records(res / "cells.jsonl")
    names = [Path(r.file).name for r in records]
    assert len(names) == len(set(names)) == 6
    assert {n.split("_")[0] for n in names} == {"img", "late", "down", "after"}


def test_live_view_shows_rates_and_the_differential(tmp_path, model, capsys, monkeypatch):
    from wbc_edge.console import console

    monkeypatch.setattr(console, "_force_terminal", True)  # the live view is for terminals
    write_images(tmp_path / "in", COLOURS * 3)
    args = ["run", str(tmp_path / "in"), "-m", str(model), "--out", str(tmp_path / "out")]
    assert cli.run(args) == 0
    err = capsys.readouterr().err
    assert "cells/s" in err and "latency p50" in err and "Promyelocyte" in err
    assert "IMMATURE GRANULOCYTES" in err


def test_in_a_log_the_live_view_becomes_log_lines_and_a_final_status(tmp_path, model, capsys):
    write_images(tmp_path / "in", COLOURS * 3)
    args = ["run", str(tmp_path / "in"), "-m", str(model), "--out", str(tmp_path / "out")]
    assert cli.run(args) == 0  # --live is the default, but capsys is no terminal
    captured = capsys.readouterr()
    err = captured.err
    assert "cells/s" in err and "latency p50" in err and "Differential" in captured.out
    assert "\x1b[" not in err + captured.out  # no cursor movement or colour in a log
    # The recent rate and the whole run's are told apart (they differ on a short run).
    assert "cells/s (last 5 s)" in err and "cells/s over the whole run" in err


@pytest.mark.parametrize("channel_order", ["RGB", "BGR"])
def test_lut_normalizer_is_bit_identical_to_the_preprocessing_spec(channel_order):
    from wbc_edge.model.card import Preprocess
    from wbc_edge.model.preprocess import LutNormalizer

    spec = Preprocess(24, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                      channel_order=channel_order)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (30 + i, 20, 3), dtype=np.uint8) for i in range(3)]
    resized = [spec.resize(im) for im in images]
    fast = LutNormalizer(spec)(resized)
    definition = spec.normalize(np.stack(resized))
    assert fast.dtype == np.float32 and np.array_equal(fast, definition)
    assert np.array_equal(spec(images), definition)  # what every backend's caller gets


@pytest.mark.realdata
def test_smear_run_on_bccd_fields_finds_the_annotated_white_cells(bccd_dir, tmp_path, model):
    import xml.etree.ElementTree as ET

    from wbc_edge.model.finder import Box

    fields = sorted((bccd_dir / "JPEGImages").glob("*.jpg"))[:12]
    (tmp_path / "in").mkdir()
    for f in fields:
        (tmp_path / "in" / f.name).symlink_to(f)
    out = tmp_path / "out"
    res = out / "in"  # the sample folder (named after the source folder)
    args = ["run", str(tmp_path / "in"), "-m", str(model), "--smear", "--out", str(out)]
    assert cli.run([*args, "--no-live"]) == 0
    records = read_records(res / "cells.jsonl")
    truth, matched = 0, 0
    for f in fields:
        root = ET.parse(bccd_dir / "Annotations" / f"{f.stem}.xml").getroot()
        found = [Box(*r.box) for r in records if Path(r.file).name == f.name]
        for obj in root.iter("object"):
            if obj.findtext("name") != "WBC":
                continue
            bb = obj.find("bndbox")
            wbc = Box(*(float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")))
            truth += 1
            matched += any(wbc.iou(b) >= 0.5 for b in found)
    assert truth >= 10 and matched / truth >= 0.9
    assert len((res / "done.txt").read_text().splitlines()) == len(fields)


def test_a_damaged_results_file_is_a_one_line_user_error(tmp_path, model, capsys):
    write_images(tmp_path / "in", COLOURS)
    out = tmp_path / "out"
    res = out / "in"  # the sample folder (named after the source folder)
    args = ["run", str(tmp_path / "in"), "-m", str(model), "--out", str(out), "--no-live"]
    assert cli.run([*args, "--limit", "1"]) == 0
    (res / "cells.jsonl").write_text('{"time": 1}\nnot json\n')
    assert cli.run(args) == 2
    err = capsys.readouterr().err
    assert "cells.jsonl:1 is not a wbc-edge cell record" in err and "Traceback" not in err


def test_run_decodes_crops_at_the_model_scale_and_reports_each_stage(tmp_path, monkeypatch):
    """96 px JPEGs for a 32 px model decode at 1/2 (48 px): the box is still the file's 96 px."""
    seen = []
    model = make_onnx(tmp_path / "m32.onnx", size=32)
    (tmp_path / "in").mkdir()
    for i, colour in enumerate(COLOURS * 2):
        cv2.imwrite(str(tmp_path / "in" / f"img_{i:04d}.jpg"), solid(colour, size=96, seed=i))
    original = Pipeline._preprocess_into

    def spy(self, buffer, row, item):
        seen.append(item.frame.image.shape)
        return original(self, buffer, row, item)

    monkeypatch.setattr(Pipeline, "_preprocess_into", spy)
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "in"), "-m", str(model), "--out", str(out), "--no-live"]
    assert cli.run([*args, "--workers", "2"]) == 0
    assert seen == [(48, 48, 3)] * 6
    records = read_records(out / "in" / "cells.jsonl")
    assert [r.box for r in records] == [(0, 0, 96, 96)] * 6
    assert [r.label for r in records] == CLASSES * 2  # colours survive the reduced decode
    summary = json.loads((out / "in" / "summary.json").read_text())
    assert summary["workers"] == 2
    for stage in ("read", "decode", "preprocess", "infer", "write"):
        assert summary["stages"][stage]["wall_s"] > 0, stage


def _field_with_red_cells(radius: int, seed: int) -> np.ndarray:
    """paint_field's smear field, with red cells of another size (another magnification)."""
    rng = np.random.default_rng(seed)
    image = np.full((480, 640, 3), (215, 205, 220), np.uint8)
    for _ in range(14):
        centre = (int(rng.integers(40, 600)), int(rng.integers(40, 440)))
        cv2.circle(image, centre, radius, (170, 150, 215), -1)
    cv2.circle(image, (320, 240), 60, (220, 190, 200), -1)
    cv2.circle(image, (320, 240), 38, (170, 60, 120), -1)
    return image


def test_a_smear_video_gives_the_same_cells_with_one_worker_or_four(tmp_path, monkeypatch):
    """Two runs of one video gave different cells when its first frames raced to measure the
    red-cell ruler; a frame lost before finding at a block's start must not be waited for."""
    from wbc_edge.model.card import Preprocess
    from wbc_edge.model.fieldcrop import StreamRuler
    from wbc_edge.model.scale import CropScale

    monkeypatch.setattr(StreamRuler, "WAIT_S", 120.0)  # a wait for a lost frame would show
    # Red cells of 90 px and 60 px alternate; frame 30 (block 1's first) is blank, so the
    # video source rejects it before any worker sees its pixels.
    frames = [_field_with_red_cells(45 if i % 2 == 0 else 30, i) for i in range(40)]
    frames[30] = np.full_like(frames[0], 128)
    video = tmp_path / "smear.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for f in frames:
        writer.write(f)
    writer.release()
    scale = CropScale(rbc_px=60.0, fov_rbc=4.0, crop_px=240.0, measured=10, sampled=10)
    model = make_onnx(tmp_path / "m.onnx", preprocess=Preprocess(32, crop_scale=scale))
    cells = {}
    for workers in (1, 4):
        out = tmp_path / f"out{workers}"
        args = ["run", str(video), "-m", str(model), "--smear", "--no-live", "--out", str(out)]
        started = time.perf_counter()
        assert cli.run([*args, "--workers", str(workers)]) == 0
        assert time.perf_counter() - started < 60
        records = read_records(next(out.rglob("cells.jsonl")))
        cells[workers] = [(r.frame, r.box, r.rbc_px, r.scale, r.label) for r in records]
    assert cells[1] == cells[4]
    by_frame = {frame: (rbc, how) for frame, _, rbc, how, _ in cells[1]}
    assert by_frame[0][1] == "measured" and by_frame[1] == (by_frame[0][0], "stream")
    assert 30 not in by_frame and by_frame[31] == (by_frame[0][0], "stream")  # block 0's ruler


def test_the_pipeline_refuses_a_threshold_or_margin_that_is_not_its_models(tmp_path, model):
    """The review threshold and the crop margin belong to the Model; a config naming others
    would be silently ignored, so it is refused before anything runs."""
    write_images(tmp_path / "in", COLOURS)
    with RunOutput(tmp_path / "out") as output, Model.load(model, threshold=0.5) as m:
        for config in (PipelineConfig(threshold=0.9), PipelineConfig(margin=0.3)):
            with pytest.raises(ValueError, match="give it to Model.load"):
                Pipeline(open_source(str(tmp_path / "in")), m, output, config)
        Pipeline(open_source(str(tmp_path / "in")), m, output, PipelineConfig(threshold=0.5))
