"""ONNX export: parity with PyTorch for every student variant and the teacher, the card inside,
dynamic batch, nothing written when parity fails, and the CLI on a checkpoint."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from wbc_edge import cli
from wbc_edge.errors import UserError
from wbc_edge.export import onnx_export
from wbc_edge.export.onnx_export import export_onnx, onnx_io, run_onnx, sample_inputs
from wbc_edge.kd.students import STUDENTS, create_student
from wbc_edge.model.backends import softmax
from wbc_edge.model.backends.onnxruntime import read_onnx_card
from wbc_edge.model.card import ModelCard, Preprocess

CLASSES = ["Basophil", "Eosinophil", "Lymphocyte", "Neutrophil"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _check_exported(model: torch.nn.Module, card: ModelCard, path) -> None:
    report = export_onnx(model, card, path)
    assert report.ok and report.max_abs_diff_probs < 1e-5, report.line()
    back = read_onnx_card(path)
    assert back.class_names == card.class_names
    assert back.architecture == card.architecture and back.preprocess == card.preprocess
    assert back.extra["precision"] == "fp32"
    io = onnx_io(path)
    assert [t["name"] for t in io["inputs"]] == ["input"]
    assert [t["name"] for t in io["outputs"]] == ["logits", "probs"]
    size = card.preprocess.input_size
    assert io["inputs"][0]["shape"] == ["batch", 3, size, size]
    # Dynamic batch: a batch size never seen in the trace runs, probabilities sum to one.
    x = sample_inputs(card, num=5)[0]
    logits, probs = run_onnx(path, x)
    assert logits.shape == probs.shape == (5, len(card.class_names))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(torch.from_numpy(x)).numpy(), atol=1e-3)


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_every_student_exports_with_parity(tmp_path, name):
    torch.manual_seed(0)
    model = create_student(name, len(CLASSES)).eval()
    card = ModelCard(name, CLASSES, Preprocess(32))
    _check_exported(model, card, tmp_path / f"{name}.onnx")


def test_teacher_exports_with_parity(tmp_path):
    from wbc_edge.kd.teacher import DEFAULT_TEACHER, create_teacher

    torch.manual_seed(0)
    model = create_teacher(DEFAULT_TEACHER, len(CLASSES), weights=None).eval()
    card = ModelCard(DEFAULT_TEACHER, CLASSES, Preprocess(64))
    _check_exported(model, card, tmp_path / "teacher.onnx")
    proto = onnx.load(str(tmp_path / "teacher.onnx"))
    assert proto.producer_name == "wbc-edge"


def test_parity_failure_reports_numbers_and_writes_nothing(tmp_path, monkeypatch):
    model = create_student("tinyresnet_xs", len(CLASSES)).eval()
    card = ModelCard("tinyresnet_xs", CLASSES, Preprocess(32))
    real = onnx_export.run_onnx

    def off_by_a_bit(path, batch, threads=None):
        logits, probs = real(path, batch, threads)
        return [logits + 0.5, probs + 0.01]

    monkeypatch.setattr(onnx_export, "run_onnx", off_by_a_bit)
    out = tmp_path / "bad.onnx"
    with pytest.raises(UserError, match=r"does not match PyTorch: max \|Δlogit\| 5\.00e-01"):
        export_onnx(model, card, out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_near_ties_are_not_counted_as_flips():
    ref = np.array([[1.0, 1.0 + 1e-7], [5.0, 0.0]], np.float32)
    got = np.array([[1.0 + 1e-7, 1.0], [0.0, 5.0]], np.float32)
    report = onnx_export.compare(ref, got, softmax(got))
    assert report.top1_agreement == 0.0
    assert report.unexplained_flips == 1  # the clear-margin sample only


def test_cli_exports_checkpoint_with_manifest_images(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from export_phantoms import write_phantoms

    from wbc_edge.kd.checkpoint import save_checkpoint

    manifest = write_phantoms(tmp_path / "data", {"train": 2, "val": 3})
    model = create_student("tinyresnet_xs", 4).eval()
    card = ModelCard("tinyresnet_xs", ["Disc", "Ring", "Square", "Twin"], Preprocess(32))
    ckpt = save_checkpoint(tmp_path / "student.pt", model, card)
    code = cli.run(["export", "onnx", "--model", str(ckpt), "--data", str(manifest)])
    assert code == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "12 manifest images" in " ".join(err.split())
    # Named from the card (role inferred: a tinyresnet is a student), not from the .pt's name.
    assert read_onnx_card(tmp_path / "student-tinyresnet_xs.onnx").architecture == "tinyresnet_xs"


def test_cli_missing_checkpoint_is_a_user_error(tmp_path, capsys):
    code = cli.run(["export", "onnx", "--model", str(tmp_path / "none.pt")])
    assert code == 2
    assert "none.pt" in capsys.readouterr().err
