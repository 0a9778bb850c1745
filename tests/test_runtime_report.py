"""The archived report: rebuilt from the sample folder (gallery included) after any number of
resumes, self-contained, names escaped, a per-field view, and rendered by a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import cv2
import pytest
from runtime_models import BLUE, CLASSES, GREEN, RED, make_onnx, paint_field, write_images

from wbc_edge import cli
from wbc_edge.runtime.sinks import read_records

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
GREY = (128, 128, 128)


def gallery_figures(text: str) -> list[tuple[str, str, str]]:
    """(state, class, cell id) of each cell in the gallery sections (not the flags')."""
    sections = re.findall(r'<section class="gallery".*?</section>', text, re.S)
    pattern = r'<figure class="cell (\w+)" data-class="([^"]+)" data-cell="(\w+)"'
    return [f for s in sections for f in re.findall(pattern, s)]


def test_report_rebuilt_after_three_resumes_has_every_cell(tmp_path):
    model = make_onnx(tmp_path / "m.onnx")
    write_images(tmp_path / "slide", [RED, GREEN, BLUE, GREY] * 3)
    args = ["run", str(tmp_path / "slide"), "-m", str(model), "--out", str(tmp_path / "out")]
    args += ["--no-live", "--min-confidence", "0.6"]
    for _ in range(3):  # the first run, then two resumes, each stopped after 3 files
        assert cli.run([*args, "--limit", "3"]) == 0
    assert cli.run(args) == 0  # the third resume finishes the folder
    sample = tmp_path / "out" / "slide"
    records = read_records(sample / "cells.jsonl")
    assert len(records) == 12 and len({r.id for r in records}) == 12
    (sample / "report.html").unlink()
    assert cli.run(["report", str(sample)]) == 0
    text = (sample / "report.html").read_text()
    figures = gallery_figures(text)
    assert sorted(i for _, _, i in figures) == sorted(r.id for r in records)
    assert "(no image saved)" not in text
    assert sum(state == "review" for state, _, _ in figures) == 3  # the grey ones
    # Under review first within each class.
    for name in CLASSES:
        states = [s for s, c, _ in figures if c == name]
        assert states == sorted(states, key=lambda s: s != "review")


def test_report_is_self_contained_and_escapes_every_name(tmp_path):
    classes = ["Neutrophil", "<b>Lympho</b>", "Promyelocyte"]
    model = make_onnx(tmp_path / "m.onnx", classes=classes)
    write_images(tmp_path / "s<1>", [RED, GREEN, BLUE])
    args = ["run", str(tmp_path / "s<1>"), "-m", str(model), "--out", str(tmp_path / "out")]
    assert cli.run([*args, "--no-live", "--sample", "S1", "--operator", "Ann <i>"]) == 0
    text = (tmp_path / "out" / "S1" / "report.html").read_text()
    assert "<b>Lympho" not in text and "&lt;b&gt;Lympho&lt;/b&gt;" in text
    assert "Ann &lt;i&gt;" in text and "<i>" not in text
    assert "default-src 'none'" in text  # the browser may fetch nothing at all
    assert not re.search(r"(src|href)=\"(?!data:)", text)
    for key in ("sample", "run started", "report written", "operator"):
        assert f'data-key="{key}"' in text
    assert 'id="card"' in text and "colour_test" in text and "sha256" in text
    assert 'data-rule="IG"' in text  # the Promyelocyte, with its cell shown under the flag


def test_report_shows_each_field_with_its_cells_boxed(tmp_path):
    model = make_onnx(tmp_path / "m.onnx")
    fields = {"f0.png": [(120, 120), (400, 300), (560, 100)], "f1.png": [(320, 240)]}
    (tmp_path / "in").mkdir()
    for i, (name, centres) in enumerate(fields.items()):
        cv2.imwrite(str(tmp_path / "in" / name), paint_field(centres, i))
    args = ["run", str(tmp_path / "in"), "-m", str(model), "--smear", "--out", str(tmp_path / "o")]
    assert cli.run([*args, "--no-live"]) == 0
    text = (tmp_path / "o" / "in" / "report.html").read_text()
    figures = re.findall(r'<figure class="fieldfig".*?</figure>', text, re.S)
    assert len(figures) == 2
    boxes = sorted(f.count('class="box') for f in figures)
    assert boxes == [1, 3]
    assert all("f0.png" in f or "f1.png" in f for f in figures)


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run(
        [CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it)")
def test_report_renders_in_headless_chromium(tmp_path):
    model = make_onnx(tmp_path / "m.onnx")
    write_images(tmp_path / "in", [RED, GREEN, BLUE, GREY, RED, BLUE, GREY, RED])
    report = tmp_path / "report.html"
    args = ["run", str(tmp_path / "in"), "-m", str(model), "--out", str(tmp_path / "out")]
    assert cli.run([*args, "--no-live", "--min-confidence", "0.6", "--report", str(report)]) == 0

    dom = _chromium(["--dump-dom", report.as_uri()], tmp_path / "p1").stdout
    figures = gallery_figures(dom)
    assert len(figures) == 8
    assert sum(state == "review" for state, _, _ in figures) == 2
    rows = dict(
        re.findall(r'<tr class="row[^"]*" data-class="([^"]+)"><td>[^<]+</td><td>(\d+)', dom)
    )
    assert rows == {"Neutrophil": "3", "Lymphocyte": "1", "Promyelocyte": "2"}
    assert 'class="flag" data-rule="IG"' in dom

    shot = tmp_path / "shot.png"
    _chromium([f"--screenshot={shot}", "--window-size=900,1400", report.as_uri()], tmp_path / "p2")
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (1400, 900)
    # The page is not blank: dark text, the red flag, and the painted thumbnails all render.
    non_white = (image < 235).any(axis=2).mean()
    assert non_white > 0.05
    banner = (abs(image.astype(int) - (40, 40, 198)) < 25).all(axis=2)  # the flag's #c62828
    blue = (image[:, :, 0] > 200) & (image[:, :, 1] < 80) & (image[:, :, 2] < 80)
    assert banner.sum() > 5000 and blue.sum() > 5000  # the Promyelocytes under their flag


def test_the_card_in_short_says_an_adapted_models_notes_in_words():
    """A technologist reads the card section: sentences, not the card's dictionaries."""
    from wbc_edge.model.card import ModelCard
    from wbc_edge.models import INTENDED_USE
    from wbc_edge.runtime.report_tables import card_table

    card = ModelCard("tinyresnet_xs_wide", ["Neutrophil", "Lymphocyte"])
    card.metrics = {"test_accuracy": 0.9722, "test_ece": 0.0138}
    card.calibration = {"target_error": 0.01, "delta": 0.1, "threshold": None, "reason": "few"}
    card.extra = {
        "intended_use": INTENDED_USE,
        "adaptation": {
            "classes_seen": ["Neutrophil"],
            "fields": 12,
            "crops": 12,
            "data": "SITE",
            "steps": 100,
            "from_model": "m.pt",
            "mixed_in": {"manifest": "pbc.csv"},
            "ood": {"refit": True, "site_crops": 60, "training_crops": 0},
        },
    }
    html = card_table({"model": {"file": "m.pt"}, "settings": {"min_confidence": 0.5}}, card)
    assert "test_accuracy 97.22%" in html and "target 1.0% error of counted cells" in html
    assert "adapted at a site on 12 fields" in html and "not in the site data: Lymphocyte" in html
    assert "NOT a clinical device" in html
    assert "{" not in html  # no dictionary dumped as text
