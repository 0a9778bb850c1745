"""Training on several labs at once: sources, group rules, class masks, balance, the card.

Two phantom "labs" with different class sets (one has Blast, the other lacks it) train
together in a few seconds at 32 px.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wbc_edge.data.labs import (
    CLASSES,
    combine_sources,
    lab_classes,
    parse_sources,
    present_mask,
    sample_weights,
)
from wbc_edge.data.manifest import read_manifest
from wbc_edge.errors import UserError
from wbc_edge.kd import losses

# BGR means: each class its own colour, so a 32 px model learns them in a few epochs.
COLOURS = {
    "Neutrophil": (200, 60, 60),
    "Lymphocyte": (60, 200, 60),
    "Blast": (60, 60, 200),
    "Monocyte": (200, 200, 60),
}


def make_lab(root: Path, classes: list[str], patients: int = 10, per_patient: int = 2) -> Path:
    """A class-folder tree whose file names start with a patient id (``P3_...``)."""
    import cv2

    rng = np.random.default_rng(abs(hash(root.name)) % 2**32)
    for c in classes:
        for p in range(patients):
            for i in range(per_patient):
                img = rng.normal(COLOURS[c], 20, (36, 36, 3)).clip(0, 255).astype(np.uint8)
                path = root / c / f"P{p}_{c}_{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), img)
    return root


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("labs")
    return {
        "alpha": make_lab(base / "alpha", ["Neutrophil", "Lymphocyte", "Blast"]),
        "beta": make_lab(base / "beta", ["Neutrophil", "Lymphocyte", "Monocyte"]),
    }


def test_sources_join_with_their_labs_and_group_rules(labs: dict[str, Path]) -> None:
    sources = parse_sources(
        [f"alpha={labs['alpha']}", f"beta={labs['beta']}"], [r"alpha=^(P\d+)_"]
    )
    assert [s.group_by for s in sources] == [r"^(P\d+)_", None]
    rows = combine_sources(sources, show_progress=False)
    assert {r.lab for r in rows} == {"alpha", "beta"}
    assert lab_classes(rows) == {
        "alpha": {"Neutrophil", "Lymphocyte", "Blast"},
        "beta": {"Neutrophil", "Lymphocyte", "Monocyte"},
    }
    # The group rule keeps each of alpha's patients in one split.
    split_of: dict[str, set[str]] = {}
    for r in rows:
        if r.lab == "alpha":
            split_of.setdefault(r.path.name.split("_")[0], set()).add(r.split)
    assert all(len(s) == 1 for s in split_of.values()), split_of


def test_a_group_rule_naming_no_lab_is_refused(labs: dict[str, Path]) -> None:
    with pytest.raises(UserError, match="names no lab"):
        parse_sources([f"alpha={labs['alpha']}", f"beta={labs['beta']}"], [r"gamma=^(P\d+)_"])


def test_an_unknown_class_folder_gives_one_line_naming_the_known_classes(tmp_path: Path) -> None:
    make_lab(tmp_path / "odd", ["Neutrophil"])
    (tmp_path / "odd" / "Lymphocytes").mkdir()
    with pytest.raises(UserError) as err:
        combine_sources(parse_sources([f"odd={tmp_path / 'odd'}"]), show_progress=False)
    text = str(err.value)
    assert "\n" not in text and "'Lymphocytes'" in text
    assert all(c in text for c in CLASSES)


def test_a_missing_class_is_never_a_negative(labs: dict[str, Path]) -> None:
    rows = combine_sources(
        parse_sources([f"alpha={labs['alpha']}", f"beta={labs['beta']}"]), show_progress=False
    )
    names = sorted({r.label for r in rows})
    mask = present_mask(rows, names, lab_classes(rows))
    assert mask is not None
    beta = np.array([r.lab == "beta" for r in rows])
    assert not mask[beta, names.index("Blast")].any()  # beta lacks Blast
    assert mask[~beta, names.index("Blast")].all()
    # A beta neutrophil's loss does not move the Blast logit at all.
    logits = torch.zeros(1, len(names), requires_grad=True)
    y = torch.tensor([names.index("Neutrophil")])
    present = torch.as_tensor(mask[beta][:1])
    losses.masked_ce_loss(logits, y, present, 0.1).backward()
    assert logits.grad[0, names.index("Blast")] == 0
    assert logits.grad[0, names.index("Monocyte")] != 0  # beta's own other class is a negative


def test_sqrt_balance_weighs_small_cells_up(labs: dict[str, Path]) -> None:
    rows = combine_sources(
        parse_sources([f"alpha={labs['alpha']}", f"beta={labs['beta']}"]), show_progress=False
    )
    rows = rows + rows[:3]  # one (lab, class) cell now larger than the others
    w = sample_weights(rows, "sqrt")
    assert w is not None and np.isclose(w.sum(), 1.0)
    assert w[0] < w[-4]  # an image of the larger cell weighs less than one of a smaller cell
    assert sample_weights(rows, "none") is None


def test_two_labs_train_together_and_the_card_lists_them(
    labs: dict[str, Path], tmp_path: Path
) -> None:
    from wbc_edge.kd.checkpoint import load_model
    from wbc_edge.kd.config import TrainConfig
    from wbc_edge.kd.trainer import train

    torch.set_num_threads(1)
    cfg = TrainConfig(
        data=[f"alpha={labs['alpha']}", f"beta={labs['beta']}"],
        group_by=[r"alpha=^(P\d+)_", r"beta=^(P\d+)_"],
        out=str(tmp_path / "run"),
        kind="distill",
        method="ce",
        model="tinyresnet_xs",
        size=32,
        epochs=2,
        batch_size=8,
        cache_dir=str(tmp_path / "cache"),
        device="cpu",
    )
    summary = train(cfg)
    manifest = read_manifest(tmp_path / "run" / "manifest.csv")
    assert {r.lab for r in manifest} == {"alpha", "beta"}
    assert set(summary["test_per_lab"]) == {"alpha", "beta"}
    _, card = load_model(tmp_path / "run" / "best.pt")
    assert card.class_names == ["Blast", "Lymphocyte", "Monocyte", "Neutrophil"]
    assert {d["lab"] for d in card.training_data} == {"alpha", "beta"}
    alpha = next(d for d in card.training_data if d["lab"] == "alpha")
    assert sum(alpha["images"].values()) == 60 and "Blast" in alpha["classes"]
    assert "test_accuracy_alpha" in card.metrics
    # The round trip through the card's JSON keeps both lists.
    from wbc_edge.model.card import ModelCard

    again = ModelCard.from_json(card.to_json())
    assert again.class_names == card.class_names and again.training_data == card.training_data


def test_one_blast_among_many_cells_raises_the_blast_flag_first() -> None:
    from wbc_edge.model.card import ModelCard
    from wbc_edge.runtime import flags
    from wbc_edge.runtime.differential import LabDifferential

    card = ModelCard("tinyresnet_xs", list(CLASSES))
    assert card.roles["Blast"] == "blast"
    diff = LabDifferential(card.class_names, card.roles)
    for i in range(400):  # 1 blast, 30 immature granulocytes (7.5%), 369 neutrophils
        name = "Blast" if i == 0 else "ImmatureGranulocyte" if i < 31 else "Neutrophil"
        diff.counts[name] += 1
        diff.cells[name].append(str(i))
    raised = flags.evaluate(diff, flags.FlagRules())
    assert [f.rule for f in raised][:2] == ["BLAST", "IG"]
    assert raised[0].cells == ["0"] and diff.blasts == 1


def test_warm_start_carries_head_rows_by_class_name(tmp_path: Path) -> None:
    from wbc_edge.kd.checkpoint import save_checkpoint
    from wbc_edge.kd.registry import create_model
    from wbc_edge.kd.warm_start import warm_start
    from wbc_edge.model.card import ModelCard

    old_names = ["Lymphocyte", "Neutrophil"]
    old = create_model("tinyresnet_xs", len(old_names))
    path = save_checkpoint(tmp_path / "old.pt", old, ModelCard("tinyresnet_xs", old_names))
    new_names = ["Blast", "Lymphocyte", "Neutrophil"]
    new = create_model("tinyresnet_xs", len(new_names))
    fresh_blast = new.fc.weight[0].detach().clone()
    assert warm_start(new, path, new_names) == ["Lymphocyte", "Neutrophil"]
    assert torch.equal(new.fc.weight[2], old.fc.weight[1])  # Neutrophil's row moved along
    assert torch.equal(new.fc.weight[0], fresh_blast)  # Blast keeps its fresh start
    assert torch.equal(new.stem[0].weight, old.stem[0].weight)
    with pytest.raises(UserError, match="same architecture"):
        warm_start(create_model("tinyresnet_s", 3), path, new_names)


def test_the_card_keeps_classes_and_training_data_in_pt_onnx_and_engine_sidecar(
    labs: dict[str, Path], tmp_path: Path
) -> None:
    from wbc_edge.data.labs import training_data
    from wbc_edge.export.onnx_export import export_onnx
    from wbc_edge.kd.checkpoint import load_model, save_checkpoint
    from wbc_edge.kd.registry import create_model
    from wbc_edge.model.backends.onnxruntime import read_onnx_card
    from wbc_edge.model.card import ModelCard, Preprocess, read_sidecar, write_sidecar

    rows = combine_sources(
        parse_sources([f"alpha={labs['alpha']}", f"beta={labs['beta']}"]), show_progress=False
    )
    card = ModelCard(
        "tinyresnet_xs",
        list(CLASSES),
        preprocess=Preprocess(input_size=32),
        training_data=training_data(rows),
    )
    model = create_model("tinyresnet_xs", len(CLASSES)).eval()
    _, from_pt = load_model(save_checkpoint(tmp_path / "m.pt", model, card))
    export_onnx(model, card, tmp_path / "m.onnx")
    from_onnx = read_onnx_card(tmp_path / "m.onnx")
    write_sidecar(tmp_path / "m.engine", card, tensorrt="10.3")
    from_engine, _ = read_sidecar(tmp_path / "m.engine")
    for got in (from_pt, from_onnx, from_engine):
        assert got.class_names == list(CLASSES)
        assert got.training_data == card.training_data
        assert got.roles["Blast"] == "blast"


def test_info_lists_each_training_lab_with_its_terms(
    labs: dict[str, Path], tmp_path: Path
) -> None:
    from wbc_edge.data.labs import training_data
    from wbc_edge.model.card import ModelCard
    from wbc_edge.runtime.info import training_data_lines

    rows = combine_sources(
        parse_sources([f"deepapl={labs['alpha']}", f"lisc={labs['beta']}"]), show_progress=False
    )
    card = ModelCard("tinyresnet_xs", list(CLASSES), training_data=training_data(rows))
    lines = training_data_lines(card)
    assert len(lines) == 2 and lines[0].startswith("deepapl: 60 images")
    assert "Johns Hopkins" in lines[0] and "research use" in lines[0]
    assert "terms: research use, cite" in lines[1]
