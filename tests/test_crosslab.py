"""Cross-lab robustness: the red-cell ruler, the card's crop scale, the crosslab augmentation."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from wbc_edge.data.synth import CROP_FOV_UM, render_cell
from wbc_edge.data.synth_fields import render_field
from wbc_edge.errors import UserError
from wbc_edge.kd.data import AUGMENT_PRESETS, NO_JITTER, augment_preset, jitter_uint8
from wbc_edge.runtime.card import ModelCard, Preprocess
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
        assert 0.8 <= d2 / np.median(whole) <= 1.1  # close to the drawn red cells' boxes


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
