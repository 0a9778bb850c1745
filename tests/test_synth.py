"""``data synth``: reproducible bytes, class layout, VOC fields, and phantoms that are neither
trivially separable by colour nor void of morphology."""

from __future__ import annotations

import csv
import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from wbc_edge.cli import app, run
from wbc_edge.data.synth import image_rng, make_crops, render_cell
from wbc_edge.data.synth_cells import CLASSES
from wbc_edge.data.synth_fields import make_fields
from wbc_edge.errors import UserError

FIELD = (320, 240)
CORNERS = ("xmin", "ymin", "xmax", "ymax")


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def synth_tree(out: Path, seed: int) -> Path:
    make_crops(out, per_class=2, size=40, seed=seed, show_progress=False)
    make_fields(out, 2, size=FIELD, seed=seed, show_progress=False)
    return out


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = tree_hash(synth_tree(tmp_path / "a", seed=7))
    b = tree_hash(synth_tree(tmp_path / "b", seed=7))
    c = tree_hash(synth_tree(tmp_path / "c", seed=8))
    assert a == b
    assert a != c


def test_every_class_with_requested_count(tmp_path: Path) -> None:
    paths = make_crops(tmp_path, per_class=3, size=36, seed=1, show_progress=False)
    assert len(paths) == 3 * len(CLASSES)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(CLASSES)
    for cls in CLASSES:
        files = sorted((tmp_path / cls).glob("*.jpg"))
        assert [f.name for f in files] == [f"{cls}_{i:04d}.jpg" for i in range(3)]
        image = cv2.imread(str(files[0]))
        assert image is not None and image.shape == (36, 36, 3)
    assert "NOT clinical data" in (tmp_path / "README.txt").read_text()


def test_class_subset_gives_the_same_images(tmp_path: Path) -> None:
    make_crops(tmp_path / "all", per_class=2, size=40, seed=3, show_progress=False)
    subset = ["Monocyte", "Lymphocyte"]
    make_crops(tmp_path / "sub", per_class=2, size=40, seed=3, classes=subset, show_progress=False)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir() if p.is_dir()) == sorted(subset)
    for cls in subset:
        for i in range(2):
            name = f"{cls}/{cls}_{i:04d}.jpg"
            assert (tmp_path / "sub" / name).read_bytes() == (tmp_path / "all" / name).read_bytes()


def _purple(image_bgr: np.ndarray) -> np.ndarray:
    """Chromatin-like pixels: blue well above green and above red (red cells are pink)."""
    b, g, r = (image_bgr[..., i].astype(np.int32) for i in range(3))
    return (b - g > 45) & (b > r)


def test_fields_have_voc_boxes_around_the_white_cells(tmp_path: Path) -> None:
    paths = make_fields(tmp_path, 4, size=FIELD, seed=2, show_progress=False)
    root = tmp_path / "fields"
    with open(root / "labels.csv", newline="") as f:
        labels = {row["image"]: row["category"] for row in csv.DictReader(f)}
    assert sorted(labels) == sorted(p.name for p in paths)
    for path in paths:
        tree = ET.parse(root / "Annotations" / f"{path.stem}.xml")
        assert tree.findtext("filename") == path.name
        assert (int(tree.findtext("size/width")), int(tree.findtext("size/height"))) == FIELD
        image = cv2.imread(str(path))
        assert image.shape == (FIELD[1], FIELD[0], 3)
        purple = _purple(image)
        outside = np.ones(purple.shape, bool)
        wbc = []
        names = set()
        for obj in tree.iter("object"):
            names.add(obj.findtext("name"))
            x0, y0, x1, y1 = (int(obj.findtext(f"bndbox/{k}")) for k in CORNERS)
            assert 1 <= x0 < x1 <= FIELD[0] and 1 <= y0 < y1 <= FIELD[1]
            if obj.findtext("name") == "WBC":
                assert obj.findtext("wbc_class") in CLASSES
                wbc.append((obj.findtext("wbc_class"), (x0 - 1, y0 - 1, x1, y1)))
                outside[y0 - 1 : y1, x0 - 1 : x1] = False
        assert names <= {"WBC", "RBC", "Platelets"} and "RBC" in names
        assert 1 <= len(wbc) <= 4
        expected = ", ".join(dict.fromkeys(cls.upper() for cls, _ in wbc))
        assert labels[path.name] == expected
        background = purple[outside].mean()
        for cls, (x0, y0, x1, y1) in wbc:
            inside = purple[y0:y1, x0:x1].mean()
            assert inside > 0.05 and inside > 5 * background, (path.name, cls, inside, background)
        # White cells do not overlap: their inscribed discs are apart.
        for i, (_, a) in enumerate(wbc):
            for _, b in wbc[i + 1 :]:
                ca, cb = np.add(a[:2], a[2:]) / 2, np.add(b[:2], b[2:]) / 2
                ra, rb = min(a[2] - a[0], a[3] - a[1]) / 2, min(b[2] - b[0], b[3] - b[1]) / 2
                assert np.hypot(*(ca - cb)) >= ra + rb


def _nearest_centroid_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    """Fit class centroids on even rows, score odd rows (features z-scored on the fit half)."""
    fit = np.arange(len(y)) % 2 == 0
    mu, sd = x[fit].mean(0), x[fit].std(0) + 1e-6
    z = (x - mu) / sd
    centroids = np.stack([z[fit & (y == k)].mean(0) for k in range(y.max() + 1)])
    pred = np.argmin(((z[~fit, None] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((pred == y[~fit]).mean())


def _morphology_features(image_bgr: np.ndarray) -> np.ndarray:
    """Crude shape/stain-layer measures of the central cell: the recorded study's own."""
    from wbc_edge.benchmarks.studies.synth_phantoms import morphology

    return morphology(image_bgr)


def test_mean_colour_does_not_separate_the_classes_but_morphology_does() -> None:
    colour, morph, y = [], [], []
    for k, cls in enumerate(CLASSES):
        for i in range(20):
            image = render_cell(cls, image_rng(0, cls, i), 64)
            colour.append(image.reshape(-1, 3).mean(0))
            morph.append(_morphology_features(image))
            y.append(k)
    labels = np.array(y)
    by_colour = _nearest_centroid_accuracy(np.array(colour), labels)
    by_morphology = _nearest_centroid_accuracy(np.array(morph), labels)
    assert by_colour < 0.8
    # Five crude measures already beat colour by far; a CNN sees much more than these.
    assert by_morphology > by_colour + 0.25, (by_colour, by_morphology)


def test_difficulty_widens_within_class_spread() -> None:
    def cell_area_spread(difficulty: float) -> float:
        areas = []
        for i in range(12):
            image = render_cell("Lymphocyte", image_rng(5, "Lymphocyte", i), 64, difficulty)
            areas.append(_morphology_features(image)[0])
        return float(np.std(areas))

    assert cell_area_spread(1.0) > cell_area_spread(0.0)


def test_library_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="Megakaryocyte"):
        make_crops(tmp_path, per_class=1, classes=["Megakaryocyte"], show_progress=False)
    with pytest.raises(UserError, match="difficulty"):
        make_crops(tmp_path, per_class=1, difficulty=1.5, show_progress=False)
    with pytest.raises(UserError, match="--size"):
        make_crops(tmp_path, per_class=1, size=8, show_progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        make_crops(tmp_path / "file", per_class=1, show_progress=False)


def test_cli_writes_crops_and_fields(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "phantoms"
    args = ["--per-class", "2", "--size", "32", "--classes", "Lymphocyte, Neutrophil"]
    args += ["--fields", "1", "--field-size", "320x240"]
    code = run(["data", "synth", "--out", str(out), *args])
    assert code == 0, capsys.readouterr().err
    assert len(list((out / "Lymphocyte").glob("*.jpg"))) == 2
    assert len(list((out / "Neutrophil").glob("*.jpg"))) == 2
    assert not (out / "Monocyte").exists()
    field = cv2.imread(str(out / "fields" / "JPEGImages" / "SynthField_00000.jpg"))
    assert field.shape == (240, 320, 3)
    assert (out / "fields" / "Annotations" / "SynthField_00000.xml").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--classes", "Myeloblast"], "unknown phantom class"),
        (["--difficulty", "2"], "out of range"),
        (["--fields", "1", "--field-size", "640by480"], "WIDTHxHEIGHT"),
    ],
)
def test_cli_bad_options_say_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    code = run(["data", "synth", "--out", str(tmp_path), "--per-class", "1", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_cli_help() -> None:
    result = CliRunner().invoke(app, ["data", "synth", "--help"])
    assert result.exit_code == 0
    assert "--difficulty" in result.output and "not clinical" in result.output


@pytest.mark.slow
def test_tiny_cnn_learns_what_mean_colour_cannot() -> None:
    """The phantoms carry morphology a small CNN learns (2-3 minutes on 2 busy CPU cores).

    Uses the recorded study's own code (benchmarks/studies/synth_phantoms.py), smaller.
    """
    pytest.importorskip("torch", reason="torch comes with the train extra")
    from wbc_edge.benchmarks.studies import synth_phantoms as study

    x_fit, y_fit = study.images(0, 100, 0.5)
    x_test, y_test = study.images(1000, 30, 0.5)
    cnn, _ = study.cnn(x_fit, y_fit, x_test, y_test, epochs=12)
    by_colour = study.nearest_centroid(
        x_fit.mean((1, 2)), y_fit, x_test.mean((1, 2)), y_test, zscore=False
    )
    assert by_colour < 0.8
    print(f"tiny CNN {cnn:.3f}, nearest mean colour {by_colour:.3f}")
    assert cnn > 0.75 and cnn > by_colour + 0.4, (cnn, by_colour)
