"""Calibration: the temperature and the counted-cell threshold travel in the card of every
artifact (.pt, ONNX, engine sidecar: see test_runtime_backends for the engine) and every
backend turns logits into softmax(logits / T)."""

from __future__ import annotations

import numpy as np
import pytest

from wbc_edge.model.backends import load_backend, softmax
from wbc_edge.model.backends.onnxruntime import read_onnx_card
from wbc_edge.model.card import ModelCard, Preprocess

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


# -- temperature scaling ----------------------------------------------------------------------


def _overconfident(n: int, seed: int, scale: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """A tiny linear classifier on 2-D Gaussian blobs whose weights are `scale` times too large
    (what a network trained to zero training loss looks like on new data)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [1.5, 0.0], [0.0, 1.5], [1.5, 1.5]])
    y = rng.integers(0, 4, n)
    x = centres[y] + rng.normal(0, 0.7, (n, 2))
    # The Bayes logits of equal-variance Gaussians are linear in x; scale makes them too sharp.
    logits = scale * (x @ centres.T - 0.5 * (centres**2).sum(1)) / 0.49
    return logits, y


def test_temperature_scaling_lowers_nll_and_keeps_argmax():
    from wbc_edge.calibration import fit_temperature, log_softmax, nll
    from wbc_edge.metrics import expected_calibration_error

    val_logits, val_y = _overconfident(600, seed=1)
    test_logits, test_y = _overconfident(600, seed=2)
    t = fit_temperature(val_logits, val_y)
    assert 4.0 < t < 16.0  # the scale of 8 it was made overconfident by, roughly
    assert nll(test_logits, test_y, t) < 0.7 * nll(test_logits, test_y)
    before = np.exp(log_softmax(test_logits))
    after = np.exp(log_softmax(test_logits, t))
    assert (after.argmax(1) == before.argmax(1)).all()
    assert expected_calibration_error(after, test_y) < 0.5 * expected_calibration_error(
        before, test_y
    )
    # A calibrated model is left (nearly) alone.
    assert 0.8 < fit_temperature(val_logits / 8.0, val_y) < 1.25


def test_temperature_from_probabilities_composes_with_the_cards():
    from wbc_edge.calibration import calibrate, fit_temperature, log_softmax

    logits, y = _overconfident(400, seed=3)
    direct = fit_temperature(logits, y)
    probs_at_2 = np.exp(log_softmax(logits, 2.0))  # a model whose card already says T = 2
    cal = calibrate(probs_at_2, y, current_temperature=2.0)
    assert cal.temperature == pytest.approx(direct, rel=1e-3)
    assert cal.val_nll_after < cal.val_nll_before


# -- the counted-cell threshold ---------------------------------------------------------------


def _scores(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated synthetic confidences: c = 1 - u^3 / 2, wrong with probability 1 - c.

    Error among cells with c >= l is exactly (1 - l) / 4, so a 1% target means l* = 0.96,
    which counts (0.08)^(1/3) = 43% of the cells.
    """
    c = 1.0 - 0.5 * rng.random(n) ** 3
    correct = rng.random(n) >= 1.0 - c
    return c, correct


def test_threshold_rule_gives_the_stated_error():
    from wbc_edge.calibration import certify_threshold

    rng = np.random.default_rng(0)
    trials, alpha, delta = 120, 0.01, 0.1
    true_error, coverage = [], []
    for _ in range(trials):
        c, correct = _scores(5000, rng)
        thr = certify_threshold(c, correct, alpha, delta)
        if thr.threshold is None:  # an unlucky error near the top: nothing counted, no risk
            assert "few enough errors" in thr.reason
            coverage.append(0.0)
            continue
        true_error.append((1.0 - thr.threshold) / 4.0)  # the exact risk of that threshold
        coverage.append(thr.coverage)
    assert len(true_error) >= 0.95 * trials
    violations = np.sum(np.array(true_error) > alpha) / trials
    # At most delta of the certificates may be wrong (plus 3 standard errors of 120 trials).
    assert violations <= delta + 3 * np.sqrt(delta * (1 - delta) / trials)
    assert np.mean(true_error) <= alpha
    # ... and the rule is not vacuous: it counts a good part of the 43% that l* = 0.96 allows.
    assert np.median(coverage) > 0.25
    # The stated error holds on fresh cells at a typical chosen threshold.
    c, correct = _scores(200_000, rng)
    lam = float(np.median([1 - 4 * e for e in true_error]))
    assert (~correct[c >= lam]).mean() <= alpha


def test_threshold_rule_says_when_it_cannot_certify():
    from wbc_edge.calibration import certify_threshold, min_certifiable

    assert min_certifiable(0.01, 0.1) == 230  # 0.99^230 < 0.1 < 0.99^229
    rng = np.random.default_rng(1)
    c, correct = _scores(100, rng)
    thr = certify_threshold(c, correct, 0.01, 0.1)
    assert thr.threshold is None and "needs at least 230" in thr.reason
    c = np.full(1000, 0.9)
    thr = certify_threshold(c, rng.random(1000) > 0.1, 0.01, 0.1)  # 10% wrong everywhere
    assert thr.threshold is None and "few enough errors" in thr.reason


def test_selective_counts_and_errors():
    from wbc_edge.calibration import selective

    probs = np.array([[0.95, 0.05], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55]])
    y = np.array([0, 1, 1, 0])
    s = selective(probs, y, 0.7)
    assert (s.counted, s.errors, s.coverage) == (2, 0, 0.5)
    everything = selective(probs, y, None)
    assert everything.counted == 4 and everything.error == 0.5


# -- the command and evaluate -----------------------------------------------------------------


def test_calibrate_command_writes_a_new_checkpoint(tmp_path, capsys):
    torch = pytest.importorskip("torch", reason="calibrate needs the train extra")
    from test_kd_train import make_phantoms

    from wbc_edge import cli
    from wbc_edge.kd.checkpoint import load_model, save_checkpoint
    from wbc_edge.kd.students import create_student

    torch.manual_seed(0)
    torch.set_num_threads(1)
    split = make_phantoms(tmp_path, per_class=10)
    names = ["class0", "class1", "class2"]
    model = create_student("tinyresnet_xs", 3).eval()
    ckpt = save_checkpoint(
        tmp_path / "m.pt", model, ModelCard("tinyresnet_xs", names, Preprocess(32))
    )
    before = ckpt.read_bytes()
    assert cli.run(["calibrate", "--model", str(ckpt), "--data", str(split)]) == 0
    out = capsys.readouterr().err
    assert "calibration on val: temperature" in out and "m-calibrated.pt" in out
    assert ckpt.read_bytes() == before  # the input is never touched unless --out names it
    _, card = load_model(tmp_path / "m-calibrated.pt")
    assert card.calibration["fitted_on"] == "val" and card.calibration["n_val"] == 6
    assert card.confidence_threshold is None  # 6 validation cells certify nothing, and it says so
    assert "test_ece_uncalibrated" in card.metrics
    assert (
        cli.run(["evaluate", "--model", str(tmp_path / "m-calibrated.pt"), "--data", str(split)])
        == 0
    )
    assert "coverage 100.0%" in capsys.readouterr().err
    # Calibrating a calibrated card again: the ECE before it is not an uncalibrated one.
    again = tmp_path / "m-again.pt"
    args = ["calibrate", "--model", str(tmp_path / "m-calibrated.pt"), "--data", str(split)]
    assert cli.run([*args, "--out", str(again)]) == 0
    metrics = load_model(again)[1].metrics
    assert "test_ece_before_refit" in metrics  # and the uncalibrated figure stays the first one's
    assert metrics["test_ece_uncalibrated"] == card.metrics["test_ece_uncalibrated"]
    assert (
        cli.run(["calibrate", "--model", str(ckpt), "--data", str(split), "--out", str(ckpt)]) == 0
    )
    assert "(replaced the input checkpoint)" in capsys.readouterr().err
    rec = tmp_path / "results" / "calibration"
    args = ["calibrate", "--model", str(ckpt), "--data", str(split), "--record", str(rec)]
    assert cli.run([*args, "--out", str(tmp_path / "r.pt")]) == 0
    import json

    saved = json.loads(rec.with_suffix(".json").read_text())
    assert saved["command"].startswith("wbc-edge calibrate") and saved["machine"]
    assert [r["target_error"] for r in saved["targets"]] == [0.01, 0.02, 0.05]
    assert "| 1% | none | 6 of 6 |" in rec.with_suffix(".md").read_text()
    assert (
        cli.run(["calibrate", "--model", str(ckpt), "--data", str(split), "--target-error", "2"])
        == 2
    )
