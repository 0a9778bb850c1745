"""Stain normalisation declared in the card: maps a set's colour statistics to the reference, is
the identity on the reference, and is the one transform every path through the card applies."""

from __future__ import annotations

import numpy as np
import pytest

from wbc_edge.data.synth import render_cell
from wbc_edge.errors import UserError
from wbc_edge.model import stain
from wbc_edge.model.card import ModelCard, Preprocess

CLASSES = ("Neutrophil", "Lymphocyte", "Eosinophil", "Monocyte")


def phantoms(seed: int, n: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [render_cell(CLASSES[i % 4], rng, size=64) for i in range(n)]


def other_lab(crops: list[np.ndarray]) -> list[np.ndarray]:
    """Washed out toward a bluish light and darker: another lab's stain and lamp."""
    tint = np.array([230, 200, 170])  # BGR
    return [np.clip(0.55 * c + 0.35 * tint, 0, 255).astype(np.uint8) for c in crops]


@pytest.mark.parametrize("over", stain.OVER)
def test_normalisation_maps_a_shifted_set_to_the_reference(over: str) -> None:
    ref = stain.fit(phantoms(0), over)
    shifted = other_lab(phantoms(1))
    before = np.mean([stain.lab_statistics(c, over)[0] for c in shifted], axis=0)
    after = np.mean(
        [stain.lab_statistics(stain.normalize_stain(c, ref), over)[0] for c in shifted], axis=0
    )
    target = np.asarray(ref.mean)
    assert np.abs(before - target).max() > 10  # the shift is real
    # uint8 rounding and a mask recomputed on the new colours leave a few levels
    assert np.abs(after - target).max() < 4.0


def test_normalisation_is_the_identity_on_the_reference() -> None:
    crop = phantoms(0, 1)[0]
    mean, std = stain.lab_statistics(crop)
    ref = stain.StainReference(tuple(mean), tuple(std))
    out = stain.normalize_stain(crop, ref)
    # Lab -> BGR -> Lab in 8 bits: at most a level or two per channel
    assert np.abs(out.astype(int) - crop.astype(int)).max() <= 3


def test_card_declares_it_and_every_path_through_the_card_applies_it() -> None:
    crops = phantoms(2, 4)
    ref = stain.fit(phantoms(0))
    plain = Preprocess(32)
    spec = Preprocess(32, stain=ref)
    card = ModelCard.from_json(ModelCard("x", ["A"], preprocess=spec).to_json())
    assert card.preprocess.stain == ref
    assert card.preprocess.decode_key() != plain.decode_key()  # training caches stay apart
    shifted = other_lab(crops)
    a = card.preprocess(shifted)
    b = plain.lut([plain.replace(channel_order="BGR").resize(c)[:, :, ::-1] for c in shifted])
    assert not np.allclose(a, b)
    # the normalised batch is closer to the un-shifted crops' than the raw one
    target = plain(crops)
    assert np.abs(a - target).mean() < 0.6 * np.abs(plain(shifted) - target).mean()
    assert ModelCard.from_json(ModelCard("x", ["A"]).to_json()).preprocess.stain is None


def test_an_unknown_stain_method_is_one_clear_line() -> None:
    with pytest.raises(UserError, match="upgrade wbc-edge"):
        Preprocess(stain={"mean": [1, 2, 3], "std": [1, 1, 1], "method": "macenko-v9"})
