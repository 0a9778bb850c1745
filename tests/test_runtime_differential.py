"""The differential as a lab counts it: roles from the card, WBC % over white cells only,
nucleated red cells per 100 WBC, platelets apart, review apart, flags with their cells."""

from __future__ import annotations

import pytest

from wbc_edge.data.labs import PBC9_CLASSES
from wbc_edge.errors import UserError
from wbc_edge.model.card import ModelCard
from wbc_edge.model.roles import derive_role
from wbc_edge.runtime.differential import EXCLUDED, LabDifferential, ReviewedCell
from wbc_edge.runtime.flags import FlagRules, evaluate
from wbc_edge.runtime.sinks import CellRecord

PBC9 = list(PBC9_CLASSES)


def test_roles_are_derived_for_known_names_and_declared_ones_win():
    card = ModelCard("a", [*PBC9, "Myeloblast", "Smudge cell", "Mystery"])
    assert card.roles["Neutrophil"] == "leukocyte"
    assert card.roles["Promyelocyte"] == card.roles["ImmatureGranulocyte"] == "immature"
    assert card.roles["Erythroblast"] == "nrbc" and card.roles["Platelet"] == "platelet"
    assert card.roles["Myeloblast"] == "blast" and card.roles["Smudge cell"] == "other"
    assert card.roles["Mystery"] == "other"
    assert derive_role("NEUTROPHIL") == "leukocyte" and derive_role("Lymphoblast") == "blast"
    assert derive_role("normoblast") == "nrbc"
    # A card written before roles existed gets them; one that declares them keeps its own.
    old = card.to_dict()
    del old["roles"]
    assert ModelCard.from_dict(old).roles == card.roles
    declared = ModelCard("a", ["Neutrophil", "Mystery"], roles={"Mystery": "blast"})
    assert ModelCard.from_json(declared.to_json()).roles == {
        "Neutrophil": "leukocyte",
        "Mystery": "blast",
    }
    with pytest.raises(UserError, match="unknown class roles"):
        ModelCard("a", ["Neutrophil"], roles={"Neutrophil": "granulocyte"})
    with pytest.raises(UserError, match="does not have"):
        ModelCard("a", ["Neutrophil"], roles={"Monocyte": "leukocyte"})


def cell(label, i, uncertain=False, ood=False, confirmed=None):
    record = CellRecord("t", "s", i, f"/x/{i}.jpg", 0, (0, 0, 8, 8), label, 0.9, [], uncertain)
    record.key, record.ood = f"/x/{i}.jpg", ood
    if confirmed is None:
        return ReviewedCell(record, label)
    return ReviewedCell(record, confirmed, True)


def hand_counted_fixture():
    """40 Neutrophil, 30 Lymphocyte, 10 Monocyte, 5 Eosinophil, 3 Basophil, 2 Promyelocyte,
    10 ImmatureGranulocyte: 100 WBC. Plus 7 Erythroblast, 12 Platelet, 4 low-confidence
    Neutrophils and 2 out-of-distribution Promyelocytes under review."""
    labels = ["Neutrophil"] * 40 + ["Lymphocyte"] * 30 + ["Monocyte"] * 10
    labels += ["Eosinophil"] * 5 + ["Basophil"] * 3 + ["Promyelocyte"] * 2
    labels += ["ImmatureGranulocyte"] * 10 + ["Erythroblast"] * 7 + ["Platelet"] * 12
    cells = [cell(label, i) for i, label in enumerate(labels)]
    cells += [cell("Neutrophil", 200 + i, uncertain=True) for i in range(4)]
    cells += [cell("Promyelocyte", 300 + i, ood=True) for i in range(2)]
    return cells


def test_wbc_percent_excludes_nucleated_red_cells_and_platelets():
    card = ModelCard("a", PBC9)
    diff = LabDifferential.of(hand_counted_fixture(), card.class_names, card.roles, target=100)
    assert diff.wbc == 100 and diff.reached
    assert diff.percent("Neutrophil") == 40.0 and diff.percent("Basophil") == 3.0
    assert sum(diff.percent(c) for c in diff.wbc_classes) == pytest.approx(100.0)
    assert "Erythroblast" not in diff.wbc_classes and "Platelet" not in diff.wbc_classes
    assert diff.percent("Erythroblast") == 0.0
    assert diff.nrbc == 7 and diff.nrbc_per_100_wbc == 7.0
    assert diff.platelets == 12
    assert diff.in_review == 6 and diff.review_ood == 2 and diff.review["Neutrophil"] == 4
    assert diff.percent_of("immature") == 12.0
    d = diff.to_dict()
    assert d["wbc"]["Lymphocyte"] == {"count": 30, "percent": 30.0}
    assert d["nrbc_per_100_wbc"] == 7.0 and d["platelets"] == 12 and d["in_review"] == 6


def test_absolute_counts_use_the_wbc_corrected_for_nucleated_red_cells():
    card = ModelCard("a", PBC9)
    diff = LabDifferential.of(hand_counted_fixture(), card.class_names, card.roles, wbc_count=10.7)
    assert diff.corrected_wbc == pytest.approx(10.7 * 100 / 107)  # 7 NRBC per 100 WBC
    assert diff.absolute("Neutrophil") == pytest.approx(4.0)
    assert diff.to_dict()["wbc"]["Neutrophil"]["absolute_1e9_per_l"] == 4.0


def test_review_cells_count_once_confirmed_and_confirmed_only_counts_nothing_else():
    card = ModelCard("a", PBC9)
    cells = [cell("Neutrophil", 0, uncertain=True, confirmed="Lymphocyte")]
    cells += [cell("Neutrophil", 1, uncertain=True), cell("Monocyte", 2)]
    cells += [
        cell("Monocyte", 3, confirmed=EXCLUDED),
        cell("Eosinophil", 4, confirmed="Eosinophil"),
    ]
    diff = LabDifferential.of(cells, card.class_names, card.roles)
    assert diff.counts["Lymphocyte"] == 1 and diff.counts["Monocyte"] == 1
    assert diff.in_review == 1 and diff.excluded == 1 and diff.wbc == 3
    verified = LabDifferential.of(cells, card.class_names, card.roles, confirmed_only=True)
    assert verified.wbc == 2 and verified.not_confirmed == 2 and verified.excluded == 1
    assert verified.percent("Lymphocyte") == 50.0 and verified.confirmed == 3


def test_flags_follow_the_lab_thresholds_and_name_their_cells():
    card = ModelCard("a", [*PBC9, "Myeloblast"])
    cells = hand_counted_fixture() + [cell("Myeloblast", 400)]
    diff = LabDifferential.of(cells, card.class_names, card.roles)
    flags = {f.rule: f for f in evaluate(diff, FlagRules())}
    assert set(flags) == {"BLAST", "IG", "NRBC"}  # 12.0% IG of 101 WBC, 1 blast, 6.9 NRBC
    assert flags["BLAST"].cells == [cells[-1].id]
    ig_ids = {c.id for c in cells if c.label in ("Promyelocyte", "ImmatureGranulocyte")}
    ig_ids -= {c.id for c in cells if c.needs_review}  # the OOD Promyelocytes raise nothing
    assert set(flags["IG"].cells) == ig_ids and len(ig_ids) == 12
    assert len(flags["NRBC"].cells) == 7
    lab = FlagRules(ig_percent=15, blasts=1, nrbc_per_100_wbc=7)
    assert evaluate(diff, lab) == []


def test_cells_under_review_or_ood_raise_no_flag():
    card = ModelCard("a", [*PBC9, "Myeloblast"])
    cells = [cell("Neutrophil", i) for i in range(10)]
    cells += [cell("Myeloblast", 50, uncertain=True), cell("Promyelocyte", 51, ood=True)]
    cells += [cell("Erythroblast", 52, ood=True)]
    diff = LabDifferential.of(cells, card.class_names, card.roles)
    assert evaluate(diff, FlagRules()) == [] and diff.in_review == 3
    # Once a technologist confirms the blast, it flags.
    cells[10] = cell("Myeloblast", 50, uncertain=True, confirmed="Myeloblast")
    diff = LabDifferential.of(cells, card.class_names, card.roles)
    assert [f.rule for f in evaluate(diff, FlagRules())] == ["BLAST"]


def test_a_run_reports_nucleated_red_cells_and_platelets_apart(tmp_path):
    """Through `wbc-edge run`: 4 red cells (Neutrophil), 2 green (Erythroblast), 3 blue
    (Platelet): 100 % Neutrophil, 50 NRBC per 100 WBC, 3 platelets, NRBC flag."""
    import json

    from runtime_models import BLUE, GREEN, RED, make_onnx, write_images

    from wbc_edge import cli

    model = make_onnx(tmp_path / "m.onnx", classes=["Neutrophil", "Erythroblast", "Platelet"])
    write_images(tmp_path / "slide", [RED] * 4 + [GREEN] * 2 + [BLUE] * 3)
    args = ["run", str(tmp_path / "slide"), "-m", str(model), "--out", str(tmp_path / "out")]
    assert cli.run([*args, "--no-live", "--wbc-count", "8.4"]) == 0
    summary = json.loads((tmp_path / "out" / "slide" / "summary.json").read_text())
    diff = summary["differential"]
    assert diff["wbc"] == {
        "Neutrophil": {"count": 4, "percent": 100.0, "absolute_1e9_per_l": 5.6}
    }  # 8.4 x 100 / 150: the analyser counted the NRBC as white cells
    assert diff["nrbc"] == 2 and diff["nrbc_per_100_wbc"] == 50.0 and diff["platelets"] == 3
    assert [f["rule"] for f in summary["flags"]] == ["NRBC"]
    assert len(summary["flags"][0]["cells"]) == 2
