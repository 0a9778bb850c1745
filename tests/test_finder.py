"""The smear-field white-cell finder: synthetic fields drawn here, and BCCD when present."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from wbc_edge.cli import run
from wbc_edge.errors import UserError
from wbc_edge.model.fieldcrop import FieldScale, StreamRuler, crop_cell, field_scale
from wbc_edge.model.finder import Box, FinderParams, find_cells
from wbc_edge.runtime.finder_eval import evaluate, match, read_voc_boxes, voc_fields

REPO = Path(__file__).resolve().parents[1]
D = 24  # red-cell diameter of the synthetic fields, in pixels
BACKGROUND = (222, 226, 220)  # BGR, pale grey
RBC = (165, 150, 200)  # pink: red > blue ~ green
CYTOPLASM = (215, 195, 205)  # pale lilac
NUCLEUS = (190, 95, 125)  # purple: blue well above green


def _rbc(img: np.ndarray, cx: int, cy: int) -> None:
    cv2.circle(img, (cx, cy), D // 2, RBC, -1, cv2.LINE_AA)
    cv2.circle(img, (cx, cy), D // 5, (190, 180, 215), -1, cv2.LINE_AA)  # central pallor


def _platelet(img: np.ndarray, cx: int, cy: int) -> None:
    cv2.circle(img, (cx, cy), max(2, D // 8), NUCLEUS, -1, cv2.LINE_AA)


def _lymphocyte(img: np.ndarray, cx: int, cy: int) -> Box:
    """Round nucleus (one red-cell diameter) in a thin cytoplasm rim; returns the cell's box."""
    r = int(0.65 * D)
    cv2.circle(img, (cx, cy), r, CYTOPLASM, -1, cv2.LINE_AA)
    cv2.circle(img, (cx, cy), D // 2, NUCLEUS, -1, cv2.LINE_AA)
    return Box(cx - r, cy - r, cx + r + 1, cy + r + 1)


def _neutrophil(img: np.ndarray, cx: int, cy: int) -> Box:
    """Four lobes with gaps between them inside a wide cytoplasm; returns the cell's box."""
    r = int(0.9 * D)
    cv2.circle(img, (cx, cy), r, CYTOPLASM, -1, cv2.LINE_AA)
    s = int(0.3 * D)
    for dx, dy in ((-s, -s), (s, -s), (-s, s), (s, s)):
        cv2.ellipse(
            img, (cx + dx, cy + dy), (int(0.22 * D), int(0.17 * D)), 30, 0, 360, NUCLEUS, -1
        )
    return Box(cx - r, cy - r, cx + r + 1, cy + r + 1)


def _field(
    cells: str = "lymph neutro", rng_seed: int = 0, size: tuple[int, int] = (240, 180)
) -> tuple[np.ndarray, list[Box], list[tuple[int, int]]]:
    """A field: red cells and platelets everywhere except where the white cells sit.

    Returns the image, the white-cell boxes and the platelet centres."""
    w, h = size
    rng = np.random.default_rng(rng_seed)
    img = np.full((h, w, 3), BACKGROUND, np.uint8)
    centres = {"lymph": (60, 60), "neutro": (165, 110), "pair": (90, 90)}
    busy = [centres[c] for c in cells.split()]
    for _ in range(40):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if all(np.hypot(x - bx, y - by) > 1.6 * D for bx, by in busy):
            _rbc(img, x, y)
    platelets = []
    for x, y in ((20, 160), (220, 20), (130, 25)):
        if all(np.hypot(x - bx, y - by) > 1.6 * D for bx, by in busy):
            _platelet(img, x, y)
            platelets.append((x, y))
    boxes = []
    for c in cells.split():
        cx, cy = centres[c]
        if c == "lymph":
            boxes.append(_lymphocyte(img, cx, cy))
        elif c == "neutro":
            boxes.append(_neutrophil(img, cx, cy))
        else:  # two lymphocytes whose nuclei touch (centres one nucleus diameter apart)
            boxes.append(_lymphocyte(img, cx - D // 2, cy))
            boxes.append(_lymphocyte(img, cx + D // 2, cy))
            cv2.circle(img, (cx - D // 2, cy), D // 2, NUCLEUS, -1, cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (0, 0), 0.8)
    noise = rng.normal(0, 3, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8), boxes, platelets


PARAMS = FinderParams(rbc_diameter_px=D)


def _assert_found(found: list[Box], truth: list[Box]) -> None:
    assert len(found) == len(truth), (found, truth)
    pairs = match(truth, found, 0.5)
    assert len(pairs) == len(truth), [(t, [t.iou(f) for f in found]) for t in truth]


def test_finds_each_white_cell_and_no_red_cell_or_platelet() -> None:
    img, truth, platelets = _field("lymph neutro")
    assert platelets, "the field should hold platelets for this test to mean anything"
    found = find_cells(img, PARAMS)
    _assert_found(found, truth)
    for x, y in platelets:
        assert not any(b.x1 <= x <= b.x2 and b.y1 <= y <= b.y2 for b in found)


def test_lobes_of_one_neutrophil_are_one_cell() -> None:
    img, truth, _ = _field("neutro")
    b = truth[0]
    cell = img[int(b.y1) : int(b.y2), int(b.x1) : int(b.x2)]
    purple = (cell[:, :, 0].astype(int) - cell[:, :, 1] > 40).astype(np.uint8)
    assert cv2.connectedComponents(purple)[0] - 1 == 4  # the lobes really are apart
    _assert_found(find_cells(img, PARAMS), truth)


def test_touching_nuclei_of_two_cells_are_split() -> None:
    img, truth, _ = _field("pair")
    # the nuclei really touch: one connected purple blob
    purple = (img[:, :, 0].astype(int) - img[:, :, 1] > 40).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(purple)
    assert sorted(stats[1:, 4])[-1] > 1.5 * np.pi * (D / 2) ** 2
    _assert_found(find_cells(img, PARAMS), truth)


def test_field_without_white_cells_gives_nothing() -> None:
    img, truth, platelets = _field("", rng_seed=3)
    assert not truth and platelets
    assert find_cells(img, PARAMS) == []


def test_same_cells_at_another_resolution_and_white_balance() -> None:
    img, truth, _ = _field("lymph neutro")
    big = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    bluish = np.clip(big.astype(int) + (25, 5, -10), 0, 255).astype(np.uint8)
    found = find_cells(bluish, FinderParams(rbc_diameter_px=2 * D))
    _assert_found(found, [Box(b.x1 * 2, b.y1 * 2, b.x2 * 2, b.y2 * 2) for b in truth])
    # the default ruler is a fraction of the field's shorter side: the same at any resolution
    frac = FinderParams(rbc_diameter=D / img.shape[0])
    small = find_cells(img, frac)
    large = find_cells(big, frac)
    assert len(small) == len(large) == 2
    for s, g in zip(small, large, strict=True):
        assert Box(s.x1 * 2, s.y1 * 2, s.x2 * 2, s.y2 * 2).iou(g) > 0.85


def test_rejects_gray_images() -> None:
    with pytest.raises(ValueError, match="colour"):
        find_cells(np.zeros((50, 50), np.uint8), PARAMS)


def test_box_iou() -> None:
    a = Box(0, 0, 10, 10)
    assert a.iou(a) == 1.0
    assert a.iou(Box(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert a.iou(Box(10, 0, 20, 10)) == 0.0


def test_crop_cell_is_square_and_centred() -> None:
    img = np.arange(100 * 120 * 3, dtype=np.uint32).reshape(100, 120, 3).astype(np.uint8)
    crop = crop_cell(img, Box(40, 30, 60, 50), margin=0.25)
    assert crop.shape == (30, 30, 3)
    assert np.array_equal(crop, img[25:55, 35:65])


def test_crop_cell_pads_at_the_border_with_the_background_and_keeps_the_cell_centred() -> None:
    img = np.full((100, 120, 3), (40, 30, 20), np.uint8)  # cells and stain
    img[:, 60:] = (225, 215, 205)  # the bright half is empty slide
    img[0:20, 0:20] = 90  # the "cell" in the corner
    crop = crop_cell(img, Box(0, 0, 20, 20), margin=0.5)
    assert crop.shape == (40, 40, 3)
    # cell centre (10, 10) sits in the crop's centre; the padding is slide, not replicated cell
    assert (crop[10:30, 10:30] == 90).all()
    assert (crop[:10, :10] == (225, 215, 205)).all()
    assert (crop[35:, 35:] == (40, 30, 20)).all()  # inside the image: the image itself
    assert (crop_cell(img, Box(0, 0, 20, 20), 0.5, fill=(1, 2, 3))[:10, :10] == (1, 2, 3)).all()
    with pytest.raises(ValueError, match="outside"):
        crop_cell(img, Box(500, 500, 520, 520))


def test_crop_cell_with_a_fixed_field_of_view() -> None:
    img = np.zeros((480, 640, 3), np.uint8)
    side = field_scale(img, fov_rbc=4.8, rbc_px=100.0).crop_px
    assert side == pytest.approx(480.0)
    small, large = Box(300, 200, 340, 240), Box(250, 150, 390, 290)
    assert crop_cell(img, small, side=side).shape == crop_cell(img, large, side=side).shape
    assert crop_cell(img, small, side=side).shape == (480, 480, 3)
    assert field_scale(img, 4.8, um_per_px=0.075).rbc_px == pytest.approx(100.0)
    blank = field_scale(img)  # nothing to measure: the finder's assumed ruler, said so
    assert blank.source == "assumed" and blank.crop_px is None


def test_a_stream_measures_its_ruler_once_every_n_frames() -> None:
    img, _, _ = _field("lymph", 3)
    blank = np.full_like(img, 200)
    ruler = StreamRuler(every=5, fov_rbc=4.8)
    # Block 0 (frames 0-4): its first frame shows no red cell, so no stream ruler yet and each
    # of its other frames is measured on its own, as a folder's fields are.
    assert ruler.scale_for(blank, 0).source == "assumed"
    assert [ruler.scale_for(img, i).source for i in (1, 2)] == ["measured", "measured"]
    # Block 1: its first frame measures the ruler; the rest of the block reuses it.
    first = ruler.scale_for(img, 5)
    assert first.source == "measured" and first.rbc_px == pytest.approx(D, rel=0.2)
    reused = [ruler.scale_for(img, i) for i in range(6, 10)]
    assert {s.source for s in reused} == {"stream"} and ruler.measurements == 3
    assert all(s.rbc_px == first.rbc_px and s.crop_px == first.crop_px for s in reused)
    assert ruler.scale_for(img, 10).source == "measured" and ruler.measurements == 4
    # A block whose first frame has no red cells keeps the previous block's ruler.
    assert ruler.scale_for(blank, 15) == reused[0] and ruler.scale_for(img, 16) == reused[0]


def test_a_stream_ruler_does_not_depend_on_which_worker_finishes_first() -> None:
    """Two runs of one video gave different cells when the first frames raced to measure."""
    import random
    import threading
    import time

    img, _, _ = _field("lymph", 3)
    big = cv2.resize(img, None, fx=1.25, fy=1.25)[: img.shape[0], : img.shape[1]].copy()
    frames = [img if i % 3 else big for i in range(40)]  # the ruler differs by frame

    def run(workers: int, seed: int) -> dict[int, FieldScale]:
        ruler, out, rng = StreamRuler(every=10, fov_rbc=4.8), {}, random.Random(seed)
        for i in range(len(frames)):  # the dispatcher plans in frame order
            ruler.plan(i)
        todo = list(range(len(frames)))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    i = todo.pop(0)
                time.sleep(rng.random() * 0.004)  # finish in any order
                out[i] = ruler.scale_for(frames[i], i)

        threads = [threading.Thread(target=work) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    sequential = run(1, 0)
    assert {s.source for s in sequential.values()} == {"measured", "stream"}
    for seed in range(3):
        assert run(4, seed) == sequential


def test_a_lost_measuring_frame_is_not_waited_for() -> None:
    img, _, _ = _field("lymph", 3)
    ruler = StreamRuler(every=5, fov_rbc=4.8)
    for i in range(10):
        ruler.plan(i)
    assert ruler.scale_for(img, 0).source == "measured"
    ruler.release(5)  # frame 5 failed to decode: block 1 keeps block 0's ruler
    assert ruler.scale_for(img, 6).source == "stream"


def test_match_is_greedy_one_to_one() -> None:
    truth = [Box(0, 0, 10, 10), Box(20, 0, 30, 10)]
    found = [Box(1, 0, 11, 10), Box(0, 0, 10, 10), Box(50, 50, 60, 60)]
    pairs = match(truth, found, 0.5)
    assert [(t, f) for t, f, _ in pairs] == [(0, 1)]


def _write_voc(root: Path, n: int) -> None:
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    for i in range(n):
        img, boxes, _ = _field("lymph neutro" if i % 2 == 0 else "pair", rng_seed=i)
        cv2.imwrite(str(root / "JPEGImages" / f"f{i}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        objs = "".join(
            f"<object><name>WBC</name><bndbox><xmin>{b.x1}</xmin><ymin>{b.y1}</ymin>"
            f"<xmax>{b.x2}</xmax><ymax>{b.y2}</ymax></bndbox></object>"
            for b in boxes
        )
        rbc = "<object><name>RBC</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
        rbc += "<ymax>9</ymax></bndbox></object>"
        (root / "Annotations" / f"f{i}.xml").write_text(f"<annotation>{objs}{rbc}</annotation>")


def test_voc_reading_and_evaluate(tmp_path: Path) -> None:
    _write_voc(tmp_path, 4)
    assert len(read_voc_boxes(tmp_path / "Annotations" / "f0.xml")) == 2  # the RBC is left out
    summary, results = evaluate(tmp_path, PARAMS)
    assert summary["all"]["wbc_boxes"] == 8
    assert summary["all"]["recall"] == 1.0 and summary["all"]["precision"] == 1.0
    assert summary["first_half"]["fields"] == summary["second_half"]["fields"] == 2
    (tmp_path / "Annotations" / "f3.xml").write_text("<annotation><object>")
    with pytest.raises(UserError, match="f3.xml"):
        evaluate(tmp_path, PARAMS)
    with pytest.raises(UserError, match="JPEGImages"):
        voc_fields(tmp_path / "Annotations")


def test_finder_eval_cli_writes_json_and_md(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "fields"
    _write_voc(data, 2)
    out = tmp_path / "out"
    code = run(
        ["finder-eval", "--data", str(data), "--out", str(out), "--name", "syn"]
        + ["--rbc-px", str(D), "--overlays", str(tmp_path / "ov")]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["recall"] == 1.0
    saved = json.loads((out / "syn.json").read_text())
    assert saved["all"]["matched"] == 4 and saved["missed"] == [] and saved["false"] == []
    assert "| all |" in (out / "syn.md").read_text()
    assert run(["finder-eval", "--data", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err


def test_finder_imports_no_torch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from wbc_edge.model.finder import find_cells, FinderParams\n"
        "import wbc_edge.runtime.finder_eval, wbc_edge.runtime.finder_cli\n"
        "find_cells(np.full((60, 80, 3), 200, np.uint8), FinderParams(rbc_diameter_px=12))\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_bccd_recall_and_precision_hold(bccd_dir: Path) -> None:
    """All 250 BCCD fields (a few seconds): no worse than the recorded result."""
    recorded = json.loads((REPO / "benchmarks/results/finder-bccd.json").read_text())["all"]
    summary, _ = evaluate(bccd_dir)
    assert summary["all"]["recall"] >= recorded["recall"] - 0.01
    assert summary["all"]["precision"] >= recorded["precision"] - 0.01
    assert summary["all"]["mean_iou"] >= recorded["mean_iou"] - 0.02
