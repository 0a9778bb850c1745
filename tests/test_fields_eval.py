"""Whole fields as an evaluation (kd/fields.py): the split, the cut, the scores."""

from __future__ import annotations

from pathlib import Path

import pytest

from wbc_edge.errors import UserError
from wbc_edge.kd.fields import (
    cut_fields,
    field_metrics,
    field_types,
    make_field_split,
    read_field_split,
    score_fields,
    write_field_split,
)

REPO = Path(__file__).resolve().parents[1]
PACKAGED = REPO / "wbc_edge" / "models" / "student-tinyresnet_xs_wide.onnx"


@pytest.fixture(scope="module")
def phantom_fields(tmp_path_factory) -> Path:
    from wbc_edge import cli

    out = tmp_path_factory.mktemp("synth")
    args = ["data", "synth", "--out", str(out), "--per-class", "0", "--fields", "12"]
    four = ["--classes", "Neutrophil,Eosinophil,Lymphocyte,Monocyte"]
    assert cli.run([*args, *four, "--field-size", "320x240", "--seed", "3"]) == 0
    return out / "fields"


def test_a_field_is_cut_as_run_cuts_it_and_scored_by_its_counted_cells(phantom_fields) -> None:
    """The evaluation's crops are the model's own cut (Model.predict_fields, which run shares):
    same cells, same order; the scores cover exactly the split's eval fields."""
    from wbc_edge.model.model import Model

    with Model.load(PACKAGED) as model:
        rows = make_field_split(phantom_fields, model.class_names)
        names = sorted({f for f, _, _ in rows})
        crops = cut_fields(model, phantom_fields, names)
        fields = model.predict_fields([phantom_fields / "JPEGImages" / n for n in names])
        assert [len(crops[n]) for n in names] == [len(f.cells) for f in fields]
        assert sum(len(c) for c in crops.values()) > 0
        scores = score_fields(model, phantom_fields, rows, on="eval")
        assert scores["fields"] == sum(s == "eval" for _, _, s in rows) > 0
        assert 0.0 <= scores["field_accuracy"] <= 1.0
        with pytest.raises(UserError, match="use one of adapt, val, eval"):
            score_fields(model, phantom_fields, rows, on="test")


def test_the_split_round_trips_and_a_bad_file_is_one_line(tmp_path: Path) -> None:
    rows = [("a.jpg", "Neutrophil", "eval"), ("b.jpg", "Lymphocyte", "adapt")]
    write_field_split(rows, tmp_path / "split.csv")
    assert read_field_split(tmp_path / "split.csv") == rows
    (tmp_path / "bad.csv").write_text("name,kind\nx,y\n")
    with pytest.raises(UserError, match="not a field split"):
        read_field_split(tmp_path / "bad.csv")


def test_field_type_is_the_dominant_counted_class_and_recall_is_over_four_types() -> None:
    import numpy as np

    names = ["Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"]
    probs = {
        "f1": np.array([[0.1, 0.1, 0.1, 0.7], [0.9, 0.05, 0.03, 0.02], [0.1, 0.1, 0.1, 0.7]]),
        "f2": np.array([[0.4, 0.35, 0.25, 0.0]]),  # nothing counted at 0.5: all found cells
        "f3": np.zeros((0, 4)),
    }
    types = field_types(probs, names, threshold=0.5)
    assert types == {"f1": "Neutrophil", "f2": "Eosinophil", "f3": "none"}
    m = field_metrics({"f1": "Neutrophil", "f2": "Lymphocyte", "f3": "Monocyte"}, types)
    assert m["field_accuracy"] == pytest.approx(1 / 3)
    assert m["recall"] == {"Neutrophil": 1.0, "Lymphocyte": 0.0, "Monocyte": 0.0}
    assert m["macro_recall_NELM"] == pytest.approx(1 / 3)


def test_evaluate_fields_from_the_cli_writes_its_record(phantom_fields, tmp_path, capsys) -> None:
    import json

    from wbc_edge import cli

    base = ["evaluate", "--model", str(PACKAGED)]
    assert cli.run([*base, "--fields", str(phantom_fields), "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "fields.json").read_text())
    assert record["scored"] == "all" and record["fields"] > 0 and "machine" in record
    assert "field type right" in (tmp_path / "fields.md").read_text()
    assert cli.run([*base, "--fields", str(phantom_fields), "--data", str(tmp_path)]) != 0
    assert cli.run([*base, "--fields", str(phantom_fields), "--split", "val"]) != 0
    err = capsys.readouterr()
    assert "give --data (cells) or --fields" in err.out + err.err
    assert "needs --field-split" in err.out + err.err
