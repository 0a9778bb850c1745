"""The HTML report: offline, uncertain cells first, and rendered by a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_models import BLUE, CLASSES, GREEN, RED, make_onnx, write_images

from wbc_edge import cli
from wbc_edge.runtime.post import Differential
from wbc_edge.runtime.report import Gallery, render_html
from wbc_edge.runtime.sinks import CellRecord

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
GREY = (128, 128, 128)


def record(label: str, prob: float, uncertain: bool, i: int) -> CellRecord:
    return CellRecord("t", "s", i, f"/x/{i}.jpg", 0, (0, 0, 8, 8), label, prob, [], uncertain)


def test_gallery_puts_uncertain_first_and_keeps_them_when_full():
    gallery = Gallery(CLASSES, per_class=3)
    crop = np.zeros((8, 8, 3), np.uint8)
    for i, (prob, unsure) in enumerate([(0.9, False), (0.95, False), (0.8, False), (0.4, True)]):
        gallery.add(record("Neutrophil", prob, unsure, i), crop)
    gallery.add(record("Neutrophil", 0.3, True, 4), crop)
    gallery.add(record("Neutrophil", 0.99, False, 5), crop)  # full: a confident one is left out
    kept = gallery.ordered("Neutrophil")
    assert [t.record.frame for t in kept] == [4, 3, 0]  # least confident first
    assert gallery.total["Neutrophil"] == 6


def test_html_is_self_contained():
    diff = Differential(CLASSES)
    diff.add([record("Neutrophil", 0.9, False, 0), record("Promyelocyte", 0.9, False, 1)])
    gallery = Gallery(CLASSES)
    gallery.add(record("Neutrophil", 0.9, False, 0), np.full((20, 20, 3), 90, np.uint8))
    text = render_html(diff, gallery, {"title": "T <&>", "source": "s"})
    assert "T &lt;&amp;&gt;" in text and 'id="flag"' in text
    assert "default-src 'none'" in text  # the browser may fetch nothing at all
    assert not re.search(r"(src|href)=\"(?!data:)", text)
    assert text.count('<figure class="cell') == 1


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
    cells = re.findall(r'<figure class="(cell[^"]*)" data-class="([^"]+)"', dom)
    assert len(cells) == 8
    assert sum(c == "cell uncertain" for c, _ in cells) == 2
    rows = dict(
        re.findall(r'<tr class="row[^"]*" data-class="([^"]+)"><td>[^<]+</td><td>(\d+)', dom)
    )
    assert rows == {"Neutrophil": "3", "Lymphocyte": "1", "Promyelocyte": "2"}
    assert 'id="flag"' in dom
    # Within each class the uncertain cells come first.
    for name in CLASSES:
        kinds = [c for c, label in cells if label == name]
        assert kinds == sorted(kinds, key=lambda c: c != "cell uncertain")

    shot = tmp_path / "shot.png"
    _chromium([f"--screenshot={shot}", "--window-size=900,1400", report.as_uri()], tmp_path / "p2")
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (1400, 900)
    # The page is not blank: dark text, the red flag, and the painted thumbnails all render.
    non_white = (image < 235).any(axis=2).mean()
    assert non_white > 0.05
    red = (image[:, :, 2] > 200) & (image[:, :, 1] < 80) & (image[:, :, 0] < 80)
    green = (image[:, :, 1] > 200) & (image[:, :, 2] < 80) & (image[:, :, 0] < 80)
    assert red.sum() > 5000 and green.sum() > 5000  # thumbnails of 104 px: ~10k px each
