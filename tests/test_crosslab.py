"""Cross-lab robustness: the red-cell ruler, the card's crop scale, the crosslab augmentation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from wbc_edge.data.synth import CROP_FOV_UM, render_cell
from wbc_edge.data.synth_fields import render_field
from wbc_edge.errors import UserError
from wbc_edge.kd.data import AUGMENT_PRESETS, NO_JITTER, augment_preset, jitter_uint8
from wbc_edge.model.card import ModelCard, Preprocess
from wbc_edge.model.fieldcrop import cells_in_field
from wbc_edge.model.scale import CropScale, measure_crops, red_cell_diameter

RBC_UM = 2 * 3.8  # the phantoms' mean red-cell diameter (radius drawn from 3.5-4.1 um)


def field_at(mag: int, seed: int = 0) -> tuple[np.ndarray, list]:
    """A phantom field drawn at 2x (26 px/um) and seen at ``mag`` (1 = half the pixels)."""
    image, objects = render_field(np.random.default_rng(seed), size=(640, 480), px_per_um=13.0)
    if mag == 1:
        image = cv2.resize(image, (320, 240), interpolation=cv2.INTER_AREA)
    return image, objects


def test_red_cell_diameter_follows_magnification_and_the_drawn_cells() -> None:
    for seed in (0, 1):
        d1 = red_cell_diameter(field_at(1, seed)[0]).diameter_px
        d2 = red_cell_diameter(field_at(2, seed)[0]).diameter_px
        assert d1 and d2
        assert 1.8 <= d2 / d1 <= 2.2  # the same field measures twice as wide at 2x
        whole = [
            max(o.box[2] - o.box[0], o.box[3] - o.box[1])
            for o in field_at(2, seed)[1]
            if o.name == "RBC" and not o.truncated
        ]
        assert 0.9 <= d2 / np.median(whole) <= 1.1  # close to the drawn red cells' boxes


def test_cells_reach_the_model_at_one_size_at_1x_and_2x() -> None:
    """The issue's scale test: crops of the same field of view in red cells, whatever the
    magnification, so a white cell fills the same share of its crop (within 10%)."""
    share = {}
    for mag in (1, 2):
        image, _ = field_at(mag)
        found = cells_in_field(image, CropScale(rbc_px=75.0, fov_rbc=5.0, crop_px=375.0))
        assert found.scale.source == "measured" and found.boxes
        side = found.scale.crop_px
        assert all(c.shape[:2] == (round(side), round(side)) for c in found.crops)
        share[mag] = sorted(
            ((x1 + x2) / 2 / mag, max(x2 - x1, y2 - y1) / side) for x1, y1, x2, y2 in found.boxes
        )
    assert len(share[1]) == len(share[2])
    for (x1, s1), (x2, s2) in zip(share[1], share[2], strict=True):
        assert abs(x1 - x2) < 5  # the same cell
        assert s2 == pytest.approx(s1, rel=0.10)


def test_smear_run_records_the_scale_of_each_field(tmp_path: Path) -> None:
    from runtime_models import make_onnx

    from wbc_edge import cli
    from wbc_edge.runtime.sinks import read_records

    scale = CropScale(rbc_px=75.0, fov_rbc=4.8, crop_px=360.0)
    model = make_onnx(tmp_path / "m.onnx", preprocess=Preprocess(32, crop_scale=scale))
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "f.png"), field_at(1)[0])
    base = ["run", str(tmp_path / "in"), "-m", str(model), "--smear", "--no-live"]
    assert cli.run([*base, "--out", str(tmp_path / "a")]) == 0
    records = read_records(next((tmp_path / "a").rglob("cells.jsonl")))
    measured = red_cell_diameter(field_at(1)[0]).diameter_px
    assert records and {r.scale for r in records} == {"measured"}
    assert records[0].rbc_px == pytest.approx(measured, abs=0.01)
    assert cli.run([*base, "--out", str(tmp_path / "b"), "--um-per-px", "0.3"]) == 0
    records = read_records(next((tmp_path / "b").rglob("cells.jsonl")))
    assert {(r.scale, r.rbc_px) for r in records} == {("given", 25.0)}


def test_the_api_carries_a_streams_ruler_as_run_does(tmp_path: Path) -> None:
    """Model.predict_fields with a stream ruler measures the red cells on one frame in
    ``every`` and crops the rest at that scale (the pipeline's rule for a video), and the
    cells are those of a field measured on its own."""
    from runtime_models import make_onnx

    from wbc_edge.model.model import Model

    scale = CropScale(rbc_px=75.0, fov_rbc=4.8, crop_px=360.0)
    path = make_onnx(tmp_path / "m.onnx", preprocess=Preprocess(32, crop_scale=scale))
    frame = field_at(1)[0]
    with Model.load(path) as model:
        ruler = model.stream_ruler(every=5)
        fields = model.predict_fields([frame] * 10, ruler=ruler)
        alone = model.predict_fields([frame])[0]
        given = model.predict_fields([frame], um_per_px=0.3)[0]
    assert ruler.measurements == 2  # frames 0 and 5
    assert alone.cells and all(
        [(c.box, c.label) for c in f.cells] == [(c.box, c.label) for c in alone.cells]
        for f in fields
    )
    assert given.cells  # cropped at the given ruler instead
    with Model.load(path) as model, pytest.raises(UserError, match="not both"):
        model.predict_fields([frame], ruler=model.stream_ruler(), rbc_px=20.0)


def test_cells_unlike_the_training_data_are_ood_warned_and_raise_no_flag(tmp_path: Path) -> None:
    from runtime_models import make_onnx

    from wbc_edge import cli
    from wbc_edge.model import ood
    from wbc_edge.runtime.sinks import read_records

    rng = np.random.default_rng(0)
    # "Training" crops of another look entirely: dark, blue-grey.
    dark = [np.clip(rng.normal((90, 60, 50), 12, (32, 32, 3)), 0, 255).astype(np.uint8)]
    stats = ood.fit(
        [np.clip(d + rng.normal(0, 6, d.shape), 0, 255).astype(np.uint8) for d in dark * 20]
    )
    model = make_onnx(
        tmp_path / "m.onnx", classes=["Promyelocyte", "Lymphocyte", "Neutrophil"], ood=stats
    )
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "f.png"), field_at(1)[0])
    report = tmp_path / "r.html"
    args = ["run", str(tmp_path / "in"), "-m", str(model), "--smear", "--no-live"]
    assert cli.run([*args, "--out", str(tmp_path / "o"), "--report", str(report)]) == 0
    records = read_records(next((tmp_path / "o").rglob("cells.jsonl")))
    assert records and all(r.ood for r in records)
    html = report.read_text()
    assert 'id="ood"' in html and "adapt the model with" in html
    assert 'id="flag"' not in html  # every cell is a Promyelocyte, but none is trusted


def test_crop_scale_of_phantom_crops_is_their_field_of_view() -> None:
    rng = np.random.default_rng(0)
    crops = [render_cell(c, rng, size=96) for c in ("Neutrophil", "Lymphocyte") * 6]
    scale = measure_crops(crops)
    assert scale.measured >= 10 and scale.crop_px == 96
    assert scale.fov_rbc == pytest.approx(CROP_FOV_UM / RBC_UM, rel=0.15)
    assert scale.rbc_px_q25 <= scale.rbc_px <= scale.rbc_px_q75


def test_crop_scale_needs_red_cells() -> None:
    with pytest.raises(ValueError, match="no whole red cell"):
        measure_crops([np.full((64, 64, 3), 230, np.uint8)])


def test_card_carries_the_crop_scale() -> None:
    scale = CropScale(rbc_px=68.0, fov_rbc=5.3, crop_px=360.0, measured=10, sampled=12)
    card = ModelCard("tinyresnet_xs", ["A", "B"], preprocess=Preprocess(crop_scale=scale))
    back = ModelCard.from_json(card.to_json())
    assert back.preprocess.crop_scale == scale
    assert ModelCard.from_json(ModelCard("x", ["A"]).to_json()).preprocess.crop_scale is None


# --- augmentation ----------------------------------------------------------------------------

PARTS = {
    "zoom": dict(zoom_p=1.0, zoom=0.2),
    "stain": dict(stain=0.25),
    "colour": dict(hue=0.05, saturation=0.4, brightness=0.2),
    "tone": dict(contrast=0.3, gamma=0.3),
    "washout": dict(washout_p=1.0, washout=0.5),
    "blur": dict(blur_p=1.0, blur_sigma=2.0),
    "downscale": dict(downscale_p=1.0, downscale=0.4),
    "noise": dict(noise=0.03),
    "jpeg": dict(jpeg_p=1.0, jpeg_quality=30),
}


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    rng = np.random.default_rng(1)
    bgr = [render_cell("Eosinophil", rng, size=64) for _ in range(4)]
    return np.stack([im[:, :, ::-1] for im in bgr])  # RGB, as the training arrays


@pytest.mark.parametrize("part", sorted(PARTS))
def test_each_crosslab_part_changes_the_view_and_is_seeded(crops: np.ndarray, part: str) -> None:
    jitter = dataclasses.replace(NO_JITTER, **PARTS[part])
    assert jitter.active
    a = jitter_uint8(crops, jitter, np.random.default_rng(5))
    b = jitter_uint8(crops, jitter, np.random.default_rng(5))
    assert a.shape == crops.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(float) - crops).mean() > 0.5


def test_washout_moves_toward_light_grey(crops: np.ndarray) -> None:
    jitter = dataclasses.replace(NO_JITTER, washout_p=1.0, washout=0.5)
    out = jitter_uint8(crops, jitter, np.random.default_rng(0)).astype(float)
    assert out.std(axis=(1, 2)).mean() < crops.astype(float).std(axis=(1, 2)).mean()


def test_crosslab_preset_spans_every_part_and_unknown_names_are_one_line() -> None:
    crosslab = AUGMENT_PRESETS["crosslab"]
    for part in PARTS.values():
        assert all(getattr(crosslab, k) for k in part)
    assert augment_preset("none") == NO_JITTER and not NO_JITTER.active
    with pytest.raises(UserError, match="none, mild, crosslab"):
        augment_preset("heavy")


# --- adapt -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site_and_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import torch

    from wbc_edge.data.synth_cells import CLASSES
    from wbc_edge.data.synth_fields import make_fields
    from wbc_edge.kd.checkpoint import save_checkpoint
    from wbc_edge.kd.students import create_student

    root = tmp_path_factory.mktemp("site")
    make_fields(root, 4, size=(320, 240), seed=3, show_progress=False)
    torch.manual_seed(0)
    scale = CropScale(rbc_px=30.0, fov_rbc=4.8, crop_px=144.0)
    card = ModelCard("tinyresnet_xs", list(CLASSES), preprocess=Preprocess(32, crop_scale=scale))
    model = save_checkpoint(root / "m.pt", create_student("tinyresnet_xs", len(CLASSES)), card)
    return root / "fields", model


def test_adapt_two_steps_on_phantom_fields_records_the_adaptation(
    site_and_model: tuple[Path, Path], tmp_path: Path
) -> None:
    import torch

    from wbc_edge.cli import run
    from wbc_edge.kd.checkpoint import read_checkpoint

    fields, model = site_and_model
    out = tmp_path / "adapted.pt"
    args = ["adapt", "--model", str(model), "--data", str(fields), "--out", str(out)]
    assert run([*args, "--steps", "2", "--batch-size", "4"]) == 0
    before, after = read_checkpoint(model), read_checkpoint(out)
    done = after["card"]["extra"]["adaptation"]
    labels = {r.split(",")[1] for r in (fields / "labels.csv").read_text().splitlines()[1:]}
    assert done["steps"] == 2 and done["fields"] == 4 and len(done["data_fingerprint"]) == 16
    assert {c.upper() for c in done["classes_seen"]} <= labels and done["classes_seen"]
    assert after["card"]["data_fingerprint"] == before["card"]["data_fingerprint"]
    assert after["card"]["ood"] == before["card"]["ood"]  # 4 crops: too few to refit
    assert done["ood"] == {"refit": False, "site_crops": 4, "needs": 10}
    assert "NOT a clinical device" in after["card"]["extra"]["intended_use"]
    # The original model's figures are not the adapted one's: kept as the adaptation's record.
    assert after["card"]["metrics"] == {}
    assert done["metrics_before"] == before["card"]["metrics"]
    changed = [
        k for k, v in before["state_dict"].items() if not torch.equal(v, after["state_dict"][k])
    ]
    assert changed


def _teacher(root: Path, size: int) -> Path:
    """A second small model as the site's adapted teacher, standardised its own way."""
    import torch

    from wbc_edge.data.synth_cells import CLASSES
    from wbc_edge.kd.checkpoint import save_checkpoint
    from wbc_edge.kd.students import create_student

    torch.manual_seed(1)
    scale = CropScale(rbc_px=30.0, fov_rbc=4.8, crop_px=144.0)
    pre = Preprocess(size, crop_scale=scale, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    card = ModelCard("tinyresnet_xs", list(CLASSES), preprocess=pre)
    net = create_student("tinyresnet_xs", len(CLASSES))
    return save_checkpoint(root / f"t{size}.pt", net, card)


def test_adapt_learns_from_an_adapted_teacher_and_refuses_one_that_sees_otherwise(
    site_and_model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import torch

    from wbc_edge.cli import run
    from wbc_edge.kd.checkpoint import read_checkpoint

    fields, model = site_and_model
    base = ["adapt", "--model", str(model), "--data", str(fields), "--steps", "2"]
    base += ["--batch-size", "4"]
    plain, taught = tmp_path / "plain.pt", tmp_path / "taught.pt"
    teacher = _teacher(tmp_path, 32)
    assert run([*base, "--out", str(plain)]) == 0
    assert run([*base, "--out", str(taught), "--teacher", str(teacher)]) == 0
    a, b = read_checkpoint(plain), read_checkpoint(taught)
    assert b["card"]["extra"]["adaptation"]["teacher"] == str(teacher)
    assert a["card"]["extra"]["adaptation"]["teacher"] is None
    # Same seed, same batches: only the teacher's term differs.
    assert any(not torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())
    capsys.readouterr()
    wrong = tmp_path / "wrong.pt"
    assert run([*base, "--out", str(wrong), "--teacher", str(_teacher(tmp_path, 48))]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "its input is 48 px, the student's 32 px" in err
    assert not wrong.exists()


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("name,kind\nSynthField_00000.jpg,Neutrophil\n", "header 'image,category'"),
        ("image,category\nSynthField_00000.jpg,GIANTCELL\n", "it knows Basophil, "),
    ],
)
def test_bad_label_files_and_unknown_classes_are_one_line(
    site_and_model: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    text: str,
    expect: str,
) -> None:
    import shutil

    from wbc_edge.cli import run

    fields, model = site_and_model
    site = tmp_path / "site"
    shutil.copytree(fields, site)
    (site / "labels.csv").write_text(text)
    code = run(
        ["adapt", "--model", str(model), "--data", str(site), "--out", str(tmp_path / "a.pt")]
    )
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert "labels.csv" in err and expect in err
    assert not (tmp_path / "a.pt").exists()


def test_unknown_class_folder_names_the_known_classes(
    site_and_model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from wbc_edge.cli import run

    _, model = site_and_model
    (tmp_path / "site" / "Megakaryocyte").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "site" / "Megakaryocyte" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    code = run(["adapt", "--model", str(model), "--data", str(tmp_path / "site"), "--out", "x.pt"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert "'Megakaryocyte' is not a class" in err and "Neutrophil" in err


# --- OOD score -------------------------------------------------------------------------------


def test_ood_score_is_higher_on_a_colour_shifted_phantom_set() -> None:
    from wbc_edge.model import ood

    rng = np.random.default_rng(0)
    classes = ("Neutrophil", "Lymphocyte", "Eosinophil", "Monocyte")
    train = [render_cell(classes[i % 4], rng, size=64) for i in range(40)]
    fresh = [render_cell(classes[i % 4], rng, size=64) for i in range(12)]
    # Another lab: washed out toward light grey and bluer light.
    shifted = [
        np.clip(0.6 * c + 0.4 * np.array([215, 205, 200]), 0, 255).astype(np.uint8) for c in fresh
    ]
    stats = ood.fit(train)
    s_in, s_out = ood.scores(stats, fresh), ood.scores(stats, shifted)
    assert s_out.mean() > 1.3 * s_in.mean()  # measured: 3.68 vs 2.46
    assert ood.auroc(s_in, s_out) > 0.85  # measured: 0.91
    assert (s_out > stats.threshold).mean() > 0.4 > (s_in > stats.threshold).mean()
    back = ModelCard.from_json(ModelCard("x", ["A"], ood=stats).to_json()).ood
    np.testing.assert_allclose(ood.scores(back, shifted), s_out, rtol=1e-5)


def test_ood_method_in_the_card_decides_how_crops_are_scored() -> None:
    """A card fitted the older way (area-reduced crops) is scored that way; new fits use the
    point sample; a method this version does not know is refused with the fix."""
    import cv2

    from wbc_edge.model import ood

    rng = np.random.default_rng(1)
    crops = [render_cell("Neutrophil", rng, size=96) for _ in range(20)]
    new = ood.fit(crops)
    assert new.method == ood.METHOD
    old_x = np.array(
        [
            np.concatenate(
                [
                    v.ravel()
                    for v in cv2.meanStdDev(
                        cv2.cvtColor(
                            cv2.resize(c, (48, 48), interpolation=cv2.INTER_AREA),
                            cv2.COLOR_BGR2LAB,
                        )
                    )
                ]
            )
            for c in crops
        ]
    )
    np.testing.assert_allclose(ood.appearance(crops, ood.METHOD_AREA48), old_x)
    old = ood.OodStats(new.mean, new.precision, new.threshold, 20, ood.METHOD_AREA48)
    expected = np.sqrt(
        np.einsum("ij,jk,ik->i", old_x - new.mean, np.asarray(new.precision), old_x - new.mean)
    )
    np.testing.assert_allclose(ood.scores(old, crops), expected, rtol=1e-9)
    older = {k: v for k, v in old.to_dict().items() if k != "method"}  # a card from before
    assert ood.OodStats.from_dict(older).method == ood.METHOD_AREA48
    with pytest.raises(UserError, match="unknown OOD method 'lab-hog'.*upgrade wbc-edge"):
        ood.OodStats.from_dict({**new.to_dict(), "method": "lab-hog"})


def test_auroc_counts_ties_half_and_orders() -> None:
    from wbc_edge.model.ood import auroc

    assert auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    assert auroc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5


def test_immature_alarm_follows_the_runs_flag_rules() -> None:
    from wbc_edge.benchmarks.studies.cross_lab import _immature_alarm
    from wbc_edge.model.card import ModelCard

    names = ["Eosinophil", "Neutrophil", "Promyelocyte"]
    card = ModelCard("tinyresnet_xs", names)
    sure = lambda k: np.eye(3)[[k] * 20] * 0.9 + 0.1 / 3  # noqa: E731
    assert _immature_alarm({"a": sure(1)}, card, 0.5) is False
    assert _immature_alarm({"a": sure(1), "b": sure(2)[:5]}, card, 0.5) is True
    assert _immature_alarm({"a": sure(2)}, card, 0.99) is False  # none counted, none raised
    # Cells judged out-of-distribution go to review in the run: they raise no flag.
    probs = {"a": sure(1), "b": sure(2)[:5]}
    ood = {"a": [False] * 20, "b": [True] * 5}
    assert _immature_alarm(probs, card, 0.5, ood) is False
    assert _immature_alarm(probs, card, 0.5, {"a": [False] * 20, "b": [False] * 5}) is True


def test_adapt_refits_the_ood_statistics_on_the_site() -> None:
    """At the site its own images are in-distribution and the training lab's are foreign."""
    from wbc_edge.kd.adapt import SITE_OOD_MIN_CROPS, SiteData, _refit_ood
    from wbc_edge.model import ood

    rng = np.random.default_rng(1)
    classes = ("Neutrophil", "Lymphocyte", "Eosinophil", "Monocyte")

    def lab(n: int, shifted: bool) -> list[np.ndarray]:
        crops = [render_cell(classes[i % 4], rng, size=48) for i in range(n)]
        tint = np.array([215, 205, 200])
        return (
            [np.clip(0.6 * c + 0.4 * tint, 0, 255).astype(np.uint8) for c in crops]
            if (shifted)
            else crops
        )

    site = SiteData(lab(SITE_OOD_MIN_CROPS, True), ["Neutrophil"] * SITE_OOD_MIN_CROPS, "s", "f")
    stats, how = _refit_ood(ModelCard("x", ["Neutrophil"]), site, [])
    assert stats.fitted_on == SITE_OOD_MIN_CROPS
    assert how == {"refit": True, "site_crops": SITE_OOD_MIN_CROPS, "training_crops": 0}
    s_site, s_training_lab = ood.scores(stats, lab(12, True)), ood.scores(stats, lab(12, False))
    assert ood.auroc(s_site, s_training_lab) > 0.85
    assert (s_site > stats.threshold).mean() < 0.3 < (s_training_lab > stats.threshold).mean()

    # Too few site crops and no training crops to pool: the model's statistics stay, and the
    # notes say the run will keep warning on this site's images (not "adapt the model" again).
    card = ModelCard("x", ["Neutrophil", "Lymphocyte"])
    card.ood = stats
    few = SiteData(lab(ood.MIN_CROPS - 1, True), ["Neutrophil"] * (ood.MIN_CROPS - 1), "s", "f")
    kept, how = _refit_ood(card, few, [])
    assert kept is stats and how == {"refit": False, "site_crops": 9, "needs": ood.MIN_CROPS}


def test_adapt_given_an_onnx_names_the_packaged_students_checkpoint(tmp_path, capsys) -> None:
    from wbc_edge.cli import run

    onnx = tmp_path / "student.onnx"
    onnx.write_bytes(b"\x08\x07onnx")  # not zip or pickle: the suffix says what it is
    args = ["adapt", "--model", str(onnx), "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert run(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "is an ONNX model, not a PyTorch checkpoint" in err
    assert "the packaged student's is" in err and "student-tinyresnet" in err


def test_fields_beside_their_label_file_without_jpegimages_get_the_layout_in_one_line(
    tmp_path: Path,
) -> None:
    from wbc_edge.kd.adapt import read_site

    (tmp_path / "labels.csv").write_text("image,category\nf1.jpg,NEUTROPHIL\n")
    cv2.imwrite(str(tmp_path / "f1.jpg"), np.full((64, 64, 3), 200, np.uint8))
    with pytest.raises(UserError) as err:
        read_site(tmp_path, ModelCard("x", ["Neutrophil"]))
    assert "labels.csv but no JPEGImages/" in str(err.value) and "Pascal-VOC" in str(err.value)


def test_adaptation_notes_name_unseen_classes_a_missing_pbc_and_the_ood_check() -> None:
    """What adapt prints after writing the model, read from the adapted card alone."""
    from wbc_edge.model.adaptation import adaptation_notes, adaptation_summary

    card = ModelCard("x", ["Neutrophil", "Lymphocyte", "Basophil"])
    card.extra["adaptation"] = {
        "classes_seen": ["Neutrophil"],
        "mixed_in": None,
        "ood": {"refit": True, "site_crops": 60, "training_crops": 0},
    }
    said = " ".join(adaptation_notes(card))
    assert "not in the site data: Lymphocyte, Basophil" in said
    assert "no --pbc" in said and "refitted on 60 site crops" in said
    assert "calibration" not in said  # an uncalibrated card: nothing to warn about
    card.temperature = 0.65
    assert "(temperature 0.65) was fitted at the training lab" in " ".join(adaptation_notes(card))
    card.extra["adaptation"].update(
        classes_seen=["Neutrophil", "Lymphocyte", "Basophil"],
        mixed_in={"manifest": "m.csv", "rows": 9, "key": "k"},
        ood={"refit": False, "site_crops": 4, "needs": 10},
    )
    said = " ".join(adaptation_notes(card))
    assert "not in the site data" not in said and "no --pbc" not in said
    assert "the model had none and 4 site crops are too few" in said  # card.ood is None
    from wbc_edge.model import ood

    rng = np.random.default_rng(0)
    card.ood = ood.fit([rng.integers(0, 255, (24, 24, 3), dtype=np.uint8) for _ in range(12)])
    said = " ".join(adaptation_notes(card))
    assert "kept from the training lab" in said and "4 site crops are too few" in said
    card.extra["adaptation"]["ood"] = {"refit": True, "site_crops": 20, "training_crops": 300}
    assert "this site's or the training lab's no longer" in " ".join(adaptation_notes(card))
    assert adaptation_notes(ModelCard("x", ["Neutrophil"])) == []  # not adapted: nothing to say
    assert adaptation_summary(ModelCard("x", ["Neutrophil"])) is None
    card.extra["adaptation"].update(fields=12, crops=13, data="SITE", steps=100, from_model="m.pt")
    assert "adapted at a site on 12 fields (13 crops of Neutrophil" in adaptation_summary(card)


def test_stain_norm_in_adapt_needs_the_training_manifest(
    site_and_model: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from wbc_edge.cli import run

    fields, model = site_and_model
    args = ["adapt", "--model", str(model), "--data", str(fields), "--out", str(tmp_path / "a.pt")]
    assert run([*args, "--steps", "1", "--stain-norm", "unstained"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--stain-norm needs --pbc" in err
    assert not (tmp_path / "a.pt").exists()


def test_cross_lab_record_renders_rows_validation_rows_and_named_curves(tmp_path: Path) -> None:
    import json

    from wbc_edge.benchmarks.studies.cross_lab import write_results

    row = {
        "model": "m.pt",
        "crops": "4.83 RBC",
        "fields": 2,
        "field_accuracy": 0.5,
        "macro_recall_NELM": 0.25,
        "immature_alarm": False,
        "ood_auroc": 0.9,
        "ood_own": "fields",
        "confusion": {"Neutrophil": {"Neutrophil": 1, "Monocyte": 1}},
        "stain_norm": "unstained",
        "command": "wbc-edge cross-lab",
        "load_average": 3.2,
    }
    point = {"fields": 10, "seed": 0, "field_accuracy": 0.6, "macro_recall_NELM": 0.4}
    # Two draws of 50 pool fields, one of which held a field the reader skipped: one row.
    drawn = [
        {"fields": n, "pool_fields": 50, "seed": k, "field_accuracy": a, "macro_recall_NELM": 0.5}
        for k, (n, a) in enumerate([(50, 0.8), (49, 0.7)])
    ]
    report = {
        "rows": {"zero-shot": row},
        "val_rows": {"try": row},
        "curves": {
            "adapt, stain": {
                "model": "m.pt",
                "steps": 5,
                "seeds": [0],
                "scored_on": "val",
                "points": [point, *drawn],
            }
        },
        "models": {"zero_shot": "m.pt"},
        "stain_options": {
            "results": {
                "m.pt | unstained": {
                    "val": {"acc": 0.5, "macro": 0.3, "alarm": False},
                    "eval": {"acc": 0.25, "macro": 0.2, "alarm": True},
                    "pbc_test": 0.9,
                }
            },
            "command": "python benchmarks/studies/stain_options.py m.pt",
        },
    }
    js, md = write_results(report, tmp_path, "xl")
    text = md.read_text()
    assert json.loads(js.read_text())["rows"]["zero-shot"]["field_accuracy"] == 0.5
    assert (
        "| zero-shot | `m.pt` | unstained | 4.83 RBC | 50.0% | 0.250 | no | 0.900 | fields" in text
    )
    assert "30 validation fields" in text and "scored on the validation fields" in text
    assert "| 10 | 10 | 60.0 ± 0.0% | 0.400 ± 0.000 | 1 |" in text and "load average 3.2" in text
    assert "| 50 | 49-50 | 75.0 ± 5.0% | 0.500 ± 0.000 | 2 |" in text
    assert "| `m.pt` | unstained | 50.0% | 0.300 | 25.0% | 0.200 | yes | 90.0% |" in text


def test_cross_lab_takes_one_of_zero_shot_and_adapted(tmp_path, capsys) -> None:
    """models.zero_shot and models.adapted are two different models: both flags is one clear
    error before any field is read."""
    import subprocess
    import sys

    fields = tmp_path / "fields"
    fields.mkdir()
    study = Path(__file__).resolve().parents[1] / "benchmarks" / "studies" / "cross_lab.py"
    argv = ["--model", "m.pt", "--row", "r", "--fields", str(fields), "--zero-shot", "--adapted"]
    done = subprocess.run([sys.executable, str(study), *argv], capture_output=True, text=True)
    assert done.returncode != 0
    assert "--zero-shot and --adapted name two different models" in done.stdout + done.stderr
