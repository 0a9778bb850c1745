"""Calibration: the temperature and the counted-cell threshold travel in the card of every
artifact (.pt, ONNX, engine sidecar: see test_runtime_backends for the engine) and every
backend turns logits into softmax(logits / T)."""

from __future__ import annotations

import numpy as np
import pytest

from wbc_edge.runtime.backends import load_backend, softmax
from wbc_edge.runtime.card import ModelCard, Preprocess, read_onnx_card

CLASSES = ["Basophil", "Eosinophil", "Lymphocyte", "Neutrophil"]


def _calibrated_card(size: int = 32) -> ModelCard:
    card = ModelCard(
        "tinyresnet_xs", CLASSES, Preprocess(size), temperature=2.5, confidence_threshold=0.875
    )
    card.calibration = {"target_error": 0.01, "delta": 0.1, "rule": "learn-then-test"}
    return card


def test_card_checks_temperature_and_threshold():
    from wbc_edge.errors import UserError

    with pytest.raises(UserError, match="temperature must be > 0"):
        ModelCard("x", CLASSES, temperature=0.0)
    with pytest.raises(UserError, match="confidence_threshold must be between 0 and 1"):
        ModelCard("x", CLASSES, confidence_threshold=1.5)
    old = ModelCard("x", CLASSES).to_dict()
    for key in ("temperature", "confidence_threshold", "calibration"):
        old.pop(key)
    back = ModelCard.from_dict(old)  # a card written before calibration existed
    assert back.temperature == 1.0 and back.confidence_threshold is None


def test_card_round_trips_through_checkpoint_and_onnx(tmp_path):
    torch = pytest.importorskip("torch", reason="export needs the train extra")
    from wbc_edge.export.onnx_export import export_onnx, run_onnx
    from wbc_edge.kd.checkpoint import load_model, save_checkpoint
    from wbc_edge.kd.students import create_student

    torch.manual_seed(0)
    torch.set_num_threads(1)
    card = _calibrated_card()
    model = create_student("tinyresnet_xs", num_classes=len(CLASSES)).eval()
    # Spread the logits so a temperature visibly changes the probabilities.
    with torch.no_grad():
        model.fc.weight.mul_(40.0)
    ckpt = save_checkpoint(tmp_path / "s.pt", model, card)
    assert load_model(ckpt)[1] == card
    report = export_onnx(model, card, tmp_path / "s.onnx")
    assert report.ok, report.line()
    onnx_card = read_onnx_card(tmp_path / "s.onnx")
    assert onnx_card.temperature == 2.5 and onnx_card.confidence_threshold == 0.875
    assert onnx_card.calibration == card.calibration

    x = np.random.default_rng(0).normal(size=(6, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        raw = model(torch.from_numpy(x)).numpy()
    logits, graph_probs = run_onnx(tmp_path / "s.onnx", x)
    np.testing.assert_allclose(logits, raw, atol=1e-3)  # the logits output stays raw
    expected = softmax(raw, 2.5)
    np.testing.assert_allclose(graph_probs, expected, atol=1e-5)  # T inside the graph
    assert np.abs(expected - softmax(raw)).max() > 1e-3  # and T mattered
    with load_backend(ckpt, device="cpu") as pt, load_backend(tmp_path / "s.onnx") as ox:
        assert pt.card == card and ox.card.temperature == 2.5
        np.testing.assert_allclose(pt.predict(x), expected, atol=1e-5)
        np.testing.assert_allclose(ox.predict(x), expected, atol=1e-5)
