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
from wbc_edge.runtime.card import ModelCard, Preprocess
from wbc_edge.runtime.finder import cells_in_field
from wbc_edge.runtime.scale import CropScale, measure_crops, red_cell_diameter

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
        found = cells_in_field(image, fov_rbc=5.0)
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
