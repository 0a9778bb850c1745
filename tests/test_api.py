"""The Python API (`wbc_edge.load`) on phantoms: a path, an array, a batch, a smear field; the
same results as `wbc-edge run`; the packaged default model and `run` without --model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_models import BLUE, CLASSES, GREEN, RED, make_onnx, paint_field, write_images

import wbc_edge
from wbc_edge import cli
from wbc_edge.errors import UserError
from wbc_edge.model.backends.onnxruntime import read_onnx_card
from wbc_edge.models import INTENDED_USE, default_model
from wbc_edge.runtime.sinks import read_records

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return make_onnx(tmp_path_factory.mktemp("model") / "colour.onnx")


@pytest.fixture(scope="module")
def model(model_path):
    with wbc_edge.load(model_path) as m:
        yield m


def test_a_path_gives_a_typed_prediction(tmp_path, model):
    path = write_images(tmp_path, [RED])[0]
    r = model(path)
    assert isinstance(r, wbc_edge.Prediction)
    assert r.label == "Neutrophil" and r.prob > 0.9 and not r.uncertain
    assert [name for name, _ in r.top] == ["Neutrophil", "Lymphocyte", "Promyelocyte"]
    assert r.top[0][1] == r.prob and r.probs.shape == (len(CLASSES),)
    assert r.box == (0, 0, 40, 40) and r.source == str(path)


def test_an_array_and_its_file_agree(tmp_path, model):
    path = write_images(tmp_path, [GREEN])[0]
    from_file, from_array = model(str(path)), model(cv2.imread(str(path)))
    assert from_array.label == from_file.label == "Lymphocyte"
    np.testing.assert_array_equal(from_array.probs, from_file.probs)
    assert from_array.source == ""


def test_a_batch_gives_one_result_per_image(tmp_path, model):
    paths = write_images(tmp_path, [RED, GREEN, BLUE])
    mixed = model([paths[0], cv2.imread(str(paths[1])), str(paths[2])])
    assert [r.label for r in mixed] == CLASSES
    stacked = model(np.stack([cv2.imread(str(p)) for p in paths]))  # N x H x W x 3
    assert [r.label for r in stacked] == CLASSES
    assert model([]) == []


def test_a_smear_field_gives_its_cells_with_boxes(model):
    centres = [(120, 120), (400, 300), (560, 100)]
    field = model(paint_field(centres, 0), smear=True)
    assert isinstance(field, wbc_edge.Field) and len(field) == 3
    for x, y in centres:
        assert any(x1 < x < x2 and y1 < y < y2 for x1, y1, x2, y2 in (c.box for c in field))
    assert sum(field.counts(include_uncertain=True).values()) == 3
    fields = model([paint_field(centres, 0), paint_field([], 1)], smear=True)
    assert [len(f) for f in fields] == [3, 0]


def test_the_api_matches_wbc_edge_run(tmp_path, model, model_path):
    paths = write_images(tmp_path / "in", [RED, GREEN, BLUE, (128, 128, 128)])
    out = tmp_path / "out"
    argv = ["run", str(tmp_path / "in"), "-m", str(model_path), "--out", str(out), "--no-live"]
    assert cli.run(argv) == 0
    records = {Path(r.file).name: r for r in read_records(out / "in" / "cells.jsonl")}
    for p, api in zip(paths, model(paths), strict=True):
        rec = records[p.name]
        assert (rec.label, rec.uncertain) == (api.label, api.uncertain)
        assert rec.prob == pytest.approx(api.prob, abs=1e-5)  # records keep 5 decimals
        assert [n for n, _ in rec.top3] == [n for n, _ in api.top]


def test_cells_unlike_the_training_data_go_to_review_as_in_wbc_edge_run(tmp_path):
    from wbc_edge.model import ood

    # The card's "training" crops are all red: the blue and green cells look foreign.
    reds = write_images(tmp_path / "train", [RED] * 40)
    path = make_onnx(tmp_path / "ood.onnx", ood=ood.fit([cv2.imread(str(p)) for p in reds]))
    paths = write_images(tmp_path / "in", [RED, GREEN, BLUE])
    out = tmp_path / "out"
    argv = ["run", str(tmp_path / "in"), "-m", str(path), "--out", str(out), "--no-live"]
    assert cli.run(argv) == 0
    records = {Path(r.file).name: r for r in read_records(out / "in" / "cells.jsonl")}
    with wbc_edge.load(path) as m:
        cells = m(paths)
        field = m(paint_field([(120, 120), (400, 300)], 0), smear=True)
        grey = m([np.full((40, 40), 120, np.uint8), np.full((40, 40, 1), 120, np.uint8)])
    assert all(g.ood for g in grey)  # grey arrays (the API takes them) are judged, not refused
    assert [c.ood for c in cells] == [records[p.name].ood for p in paths] == [False, True, True]
    assert [c.review for c in cells] == [False, True, True]  # confident, yet not trusted
    assert not any(c.uncertain for c in cells)
    # A field's counts leave out the cells run would send to review.
    assert all(c.ood for c in field) and field.counts() == {}
    assert sum(field.counts(include_uncertain=True).values()) == len(field) == 2


def test_bad_input_is_one_clear_error(tmp_path, model):
    with pytest.raises(UserError, match="uint8"):
        model(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(UserError, match="not found"):
        model(tmp_path / "missing.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(UserError, match="bad.jpg"):
        model(tmp_path / "bad.jpg")
    with pytest.raises(UserError, match="threshold"):
        wbc_edge.load(model.backend.path, threshold=2.0)


def test_the_packaged_student_loads_and_states_what_it_is():
    path = default_model()
    assert path.parent == REPO / "wbc_edge" / "models" and path.suffix == ".onnx"
    card = read_onnx_card(path)
    assert card.extra["role"] == "student" and path.name == f"student-{card.architecture}.onnx"
    assert "NOT a clinical device" in card.extra["intended_use"] == INTENDED_USE
    prov = card.extra["provenance"]
    assert prov["trained_on"].startswith("PBC") and len(prov["checkpoint_sha256"]) == 64
    assert prov["test_accuracy"] == card.metrics["test_accuracy"] > 0.5
    with wbc_edge.load() as m:
        assert m.class_names == card.class_names
        r = m(np.full((90, 90, 3), 200, np.uint8))
        assert r.label in card.class_names and len(r.top) == 3


def test_run_without_model_uses_the_packaged_student(tmp_path):
    write_images(tmp_path / "in", [RED, GREEN])
    out = tmp_path / "out"
    assert cli.run(["run", str(tmp_path / "in"), "--out", str(out), "--no-live"]) == 0
    card = read_onnx_card(default_model())
    records = read_records(out / "in" / "cells.jsonl")
    assert len(records) == 2 and {r.label for r in records} <= set(card.class_names)


def test_the_api_never_imports_torch(tmp_path, model_path):
    write_images(tmp_path, [RED])
    code = (
        "import sys, wbc_edge\n"
        f"m = wbc_edge.load({str(model_path)!r})\n"
        f"assert m({str(tmp_path / 'img_0000.jpg')!r}).label == 'Neutrophil'\n"
        "heavy = [n for n in sys.modules if n.split('.')[0] in ('torch', 'timm')]\n"
        "print('HEAVY', heavy)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_the_default_model_is_never_an_int8_build_or_an_adapted_export(tmp_path, monkeypatch):
    import wbc_edge.models as models

    for name in ("student-a.onnx", "student-a.int8-cpu.onnx", "student-a-adapted.onnx"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setattr(models, "MODELS_DIR", tmp_path)
    assert models.default_model() == tmp_path / "student-a.onnx"
