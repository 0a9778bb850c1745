"""Counted cells are right (issue 29): the certificate holds on synthetic scores of a known error
rate, a run whose cells are all unlike the training images shows no green "no flag" box and
says why nothing was counted, and the API's reasons are those of `run`'s records."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_models import BLUE, GREEN, RED, make_onnx, paint_field, write_images

import wbc_edge
from wbc_edge import cli
from wbc_edge.runtime.sinks import read_records

PURPLE = (115, 0, 115)  # BGR: half blue, half red

# -- the certificate ----------------------------------------------------------------------------


def _draw(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Confidences with a known error: c = 1 - u^3 / 2, wrong with probability (1 - c); and 0.05%
    of cells confidently wrong at the very top (c in [0.9995, 1)), as a model's worst mistakes
    are. True error of counted cells at threshold l: Monte Carlo on a large draw."""
    c = 1.0 - 0.5 * rng.random(n) ** 3
    wrong = rng.random(n) < 1.0 - c
    top = rng.random(n) < 0.0005
    c[top] = 0.9995 + 0.0005 * rng.random(top.sum())
    wrong[top] = True
    return c, ~wrong


def test_the_certificate_keeps_the_error_at_target_in_90_percent_of_draws():
    from wbc_edge.calibration import certify_threshold

    rng = np.random.default_rng(7)
    big_c, big_ok = _draw(1_000_000, rng)
    order = np.argsort(-big_c)
    big_sorted, big_err = big_c[order], np.cumsum(~big_ok[order])

    def true_error(lam: float) -> float:
        n = int(np.searchsorted(-big_sorted, -lam, side="right"))
        return big_err[n - 1] / n

    target, delta, trials = 0.01, 0.1, 100
    held, coverage = 0, []
    for _ in range(trials):
        c, ok = _draw(5000, rng)
        thr = certify_threshold(c, ok, target, delta)
        if thr.threshold is None:
            held += 1  # nothing counted: no counted error to exceed
            coverage.append(0.0)
            continue
        held += true_error(thr.threshold) <= target
        coverage.append(thr.coverage)
    assert held >= 0.9 * trials
    # Not vacuous: a confidently wrong cell at the top no longer stops the walk at its start.
    assert np.median(coverage) > 0.2


def test_calibrate_takes_a_folder_of_class_folders_as_its_calibration_set(tmp_path):
    pytest.importorskip("torch", reason="calibrate needs the train extra")
    from wbc_edge.kd.calibrate import calibrate_card
    from wbc_edge.model.card import ModelCard

    card = ModelCard("x", ["a", "b"], metrics={"test_coverage": 1.0, "test_counted_error": 0.1})
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 800)
    logits = np.where(np.eye(2)[y] > 0, 4.0, 0.0) + rng.normal(0, 1.5, (800, 2))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    new, summary = calibrate_card(card, probs, y, fitted_on="../shared/data/pbc9-extra")
    assert new.calibration["fitted_on"] == "../shared/data/pbc9-extra"
    assert summary["fitted_on"] == "../shared/data/pbc9-extra"
    # The old threshold's test figures no longer describe the card.
    assert "test_coverage" not in new.metrics and "test_counted_error" not in new.metrics


# -- what the run and the API say ---------------------------------------------------------------


@pytest.fixture
def foreign(tmp_path) -> Path:
    """A colour model whose card's training crops are all red (OOD statistics)."""
    from wbc_edge.model import ood

    reds = write_images(tmp_path / "train", [RED] * 40)
    return make_onnx(tmp_path / "ood.onnx", ood=ood.fit([cv2.imread(str(p)) for p in reds]))


def test_a_run_of_foreign_cells_shows_no_green_box_and_says_why_nothing_was_counted(
    tmp_path, foreign
):
    write_images(tmp_path / "in", [GREEN, BLUE] * 3)
    out = tmp_path / "out"
    argv = ["run", str(tmp_path / "in"), "-m", str(foreign), "--out", str(out), "--no-live"]
    assert cli.run(argv) == 0
    records = read_records(out / "in" / "cells.jsonl")
    assert len(records) == 6 and all(r.ood for r in records)
    text = (out / "in" / "report.html").read_text()
    assert 'class="noflag"' not in text and "No flag raised" not in text
    assert 'id="noflag-withheld"' in text
    assert "nothing counted: all 6 cells await review" in text
    assert "the model is not reliable on these images" in text
    assert "0 of 6 cells counted (0 WBC); 6 await review (6 unlike the training images)" in text
    assert 'class="legend"' in text
    assert "under review: unlike the training images" in text  # each cell's caption
    assert 'id="modelline"' in text and "Intended use" in text
    summary = (out / "in" / "summary.json").read_text()
    assert "nothing counted" in summary
    # The API says the same of a field whose cells are all foreign.
    with wbc_edge.load(foreign) as m:
        field = m(paint_field([(120, 120), (400, 300)], 0), smear=True)
    counts = field.counts()
    assert counts == {} and counts.not_counted == {"ood": len(field)}
    assert counts.note == (
        f"nothing counted: {len(field)} unlike the training images: the model is not reliable "
        "on these images"
    )
    assert {c.reason for c in field} == {"ood"}


def test_the_apis_reasons_match_runs_records(tmp_path):
    from wbc_edge.model import ood
    from wbc_edge.model.review import reason

    # Training crops red, blue and purple; blue is the Platelet class (not a white cell), green
    # looks foreign, purple is half red, half blue: in distribution, but uncertain.
    train = write_images(tmp_path / "train", [RED, BLUE, PURPLE] * 14)
    stats = ood.fit([cv2.imread(str(p)) for p in train])
    model = make_onnx(
        tmp_path / "m.onnx", classes=["Neutrophil", "Lymphocyte", "Platelet"], ood=stats
    )
    paths = write_images(tmp_path / "in", [RED, BLUE, GREEN, PURPLE])
    out = tmp_path / "out"
    argv = ["run", str(tmp_path / "in"), "-m", str(model), "--out", str(out), "--no-live"]
    assert cli.run([*argv, "--min-confidence", "0.9"]) == 0
    records = {Path(r.file).name: r for r in read_records(out / "in" / "cells.jsonl")}
    with wbc_edge.load(model, threshold=0.9) as m:
        roles = m.card.roles
        cells = m(paths)
        field = m(paint_field([(120, 120), (400, 300)], 0), smear=True)
    said = [
        reason(records[p.name].uncertain, records[p.name].ood, roles[records[p.name].label])
        for p in paths
    ]
    assert [c.reason for c in cells] == said == ["", "not_wbc", "ood", "uncertain"]
    counts = field.counts()
    assert sum(counts.not_counted.values()) == sum(c.review for c in field)
    assert counts.not_counted == dict(Counter(c.reason for c in field if c.review))
    if not counts:
        assert counts.note.startswith("nothing counted:")
        assert counts.note.endswith("the model is not reliable on these images")


def _edit_card(path: Path, edit) -> Path:  # noqa: ANN001
    """Change the card inside an ONNX file (``edit`` takes and changes its dict)."""
    import json

    import onnx

    from wbc_edge.model.card import ONNX_METADATA_KEY

    graph = onnx.load(path)
    for prop in graph.metadata_props:
        if prop.key == ONNX_METADATA_KEY:
            card = json.loads(prop.value)
            edit(card)
            prop.value = json.dumps(card)
    onnx.save(graph, path)
    return path


def test_counted_cells_without_a_certificate_are_said_to_carry_no_stated_error(tmp_path):
    write_images(tmp_path / "in", [RED, GREEN])
    plain = make_onnx(tmp_path / "plain.onnx")  # calibrated by nobody
    certified = _edit_card(
        make_onnx(tmp_path / "certified.onnx"),
        lambda c: c.update(confidence_threshold=0.6, calibration={"target_error": 0.01}),
    )
    for model, warned in ((plain, True), (certified, False)):
        out = tmp_path / model.stem
        argv = ["run", str(tmp_path / "in"), "-m", str(model), "--out", str(out), "--no-live"]
        assert cli.run(argv) == 0
        text = (out / "in" / "report.html").read_text()
        assert ('id="uncertified"' in text) is warned
        assert ("no stated error among them" in text) is warned


def test_a_model_trained_on_phantoms_says_so_in_its_card_and_every_report(tmp_path, capsys):
    from wbc_edge.demo import SYNTHETIC_NOTE

    path = _edit_card(
        make_onnx(tmp_path / "m.onnx"), lambda c: c["extra"].update(synthetic=SYNTHETIC_NOTE)
    )  # what make demo stamps
    write_images(tmp_path / "in", [RED, GREEN])
    out = tmp_path / "out"
    argv = ["run", str(tmp_path / "in"), "-m", str(path), "--out", str(out), "--no-live"]
    assert cli.run(argv) == 0
    text = (out / "in" / "report.html").read_text()
    assert 'id="synthetic"' in text and "SYNTHETIC DATA, NOT CLINICAL" in text
    capsys.readouterr()
    assert cli.run(["info", "--model", str(path)]) == 0
    assert "SYNTHETIC DATA, NOT CLINICAL" in capsys.readouterr().out


def test_flags_of_a_run_where_most_cells_await_review_say_so(tmp_path):
    from wbc_edge.model import ood

    blues = write_images(tmp_path / "train", [BLUE] * 40)  # blue: Promyelocyte, an IG
    model = make_onnx(tmp_path / "m.onnx", ood=ood.fit([cv2.imread(str(p)) for p in blues]))
    write_images(tmp_path / "in", [BLUE, RED, GREEN, RED])
    out = tmp_path / "out"
    argv = ["run", str(tmp_path / "in"), "-m", str(model), "--out", str(out), "--no-live"]
    assert cli.run(argv) == 0
    text = (out / "in" / "report.html").read_text()
    assert 'data-rule="IG"' in text and 'id="flagnote"' in text
    assert "most cells (3 of 4) await review" in text


def test_make_demo_stamps_its_phantom_models_synthetic_and_the_export_carries_it(tmp_path):
    pytest.importorskip("torch", reason="checkpoints need the train extra")
    import onnx

    from wbc_edge.demo import SYNTHETIC_NOTE, mark_synthetic
    from wbc_edge.export.onnx_export import export_onnx
    from wbc_edge.kd.checkpoint import load_model, save_checkpoint
    from wbc_edge.kd.students import create_student
    from wbc_edge.model.card import ModelCard, Preprocess

    names = ["Neutrophil", "Lymphocyte", "Monocyte"]
    net = create_student("tinyresnet_xs", 3).eval()
    ckpt = save_checkpoint(
        tmp_path / "best.pt", net, ModelCard("tinyresnet_xs", names, Preprocess(32))
    )
    mark_synthetic(ckpt)
    net, card = load_model(ckpt)
    assert card.extra["synthetic"] == SYNTHETIC_NOTE
    out = tmp_path / "m.onnx"
    export_onnx(net, card, out)
    assert (
        SYNTHETIC_NOTE in {p.key: p.value for p in onnx.load(out).metadata_props}["wbc_edge.card"]
    )
