"""The packaged-model refresh completes an older card from the training split it names."""

from __future__ import annotations

from pathlib import Path

from tests.test_kd_train import make_phantoms
from wbc_edge.model.card import ModelCard, Preprocess
from wbc_edge.models.refresh import complete_card


def test_complete_card_adds_ood_statistics_once(tmp_path: Path) -> None:
    manifest = make_phantoms(tmp_path, per_class=12)
    card = ModelCard("tinyresnet_xs", ["class0", "class1", "class2"], Preprocess(32))
    assert card.ood is None
    assert complete_card(card, manifest) is True
    assert card.ood is not None and card.ood.fitted_on > 0
    assert card.preprocess.crop_scale is not None  # measured on the same train crops
    before = card.to_dict()
    assert complete_card(card, manifest) is False
    assert card.to_dict() == before


def test_complete_card_refits_ood_statistics_of_an_older_method(tmp_path: Path) -> None:
    from dataclasses import replace

    from wbc_edge.model import ood

    manifest = make_phantoms(tmp_path, per_class=12)
    card = ModelCard("tinyresnet_xs", ["class0", "class1", "class2"], Preprocess(32))
    complete_card(card, manifest)
    assert card.ood is not None and card.ood.method == ood.METHOD
    card.ood = replace(card.ood, method=ood.METHOD_AREA48, threshold=99.0)
    assert complete_card(card, manifest) is True
    assert card.ood.method == ood.METHOD and card.ood.threshold != 99.0


def test_complete_card_keeps_an_adapted_cards_site_statistics(tmp_path: Path) -> None:
    """An adapted card's OOD statistics are the site's: refitting them on the training lab
    would make the site warn about its own images again."""
    from dataclasses import replace

    from wbc_edge.model import ood

    manifest = make_phantoms(tmp_path, per_class=12)
    card = ModelCard("tinyresnet_xs", ["class0", "class1", "class2"], Preprocess(32))
    complete_card(card, manifest)
    site_stats = replace(card.ood, method=ood.METHOD_AREA48, threshold=42.0)
    card.ood, card.extra = site_stats, {"adaptation": {"data": "site"}}
    assert complete_card(card, manifest) is False
    assert card.ood == site_stats
