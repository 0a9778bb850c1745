"""`wbc-edge evaluate`: files written, numbers equal to a hand computation, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wbc_edge.data.manifest import ManifestRow, write_manifest
from wbc_edge.data.scan import sha256_file
from wbc_edge.errors import UserError
from wbc_edge.kd.checkpoint import save_checkpoint
from wbc_edge.kd.evaluate import evaluate
from wbc_edge.kd.students import create_student
from wbc_edge.model.card import ModelCard, Preprocess
from wbc_edge.model.preprocess import read_image

CLASSES = ["class0", "class1", "class2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A random student checkpoint, a class-folder tree and a manifest over it."""
    import cv2

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    rows = []
    for c, name in enumerate(CLASSES):
        for i in range(5):
            img = rng.integers(0, 256, (36, 30, 3), dtype=np.uint8)
            img[..., c] = 255 - i * 20
            path = root / "cells" / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), img)
            rows.append(ManifestRow(path, name, "test" if i < 3 else "train", sha256_file(path)))
    manifest = write_manifest(rows, root / "split.csv")
    torch.manual_seed(0)
    model = create_student("tinyresnet_xs", 3)
    with torch.no_grad():  # make predictions depend strongly on colour so classes differ
        model.fc.bias.copy_(torch.tensor([0.3, 0.0, -0.3]))
    card = ModelCard("tinyresnet_xs", CLASSES, Preprocess(32))
    ckpt = save_checkpoint(root / "student.pt", model.eval(), card)
    return ckpt, root / "cells", manifest


def hand_predictions(ckpt: Path, paths: list[Path]) -> np.ndarray:
    payload = torch.load(ckpt, map_location="cpu", weights_only=True)
    card = ModelCard.from_dict(payload["card"])
    model = create_student(card.architecture, card.num_classes)
    model.load_state_dict(payload["state_dict"])
    x = card.preprocess([read_image(str(p)) for p in paths])
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).argmax(1).numpy()


def test_evaluate_folder_matches_hand_computation(setup, tmp_path: Path) -> None:  # noqa: ANN001
    ckpt, cells, _ = setup
    result = evaluate(ckpt, cells, out=tmp_path / "ev")
    paths = sorted(cells.glob("*/*.png"))
    y = np.array([CLASSES.index(p.parent.name) for p in paths])
    pred = hand_predictions(ckpt, paths)
    assert result["num_images"] == 15
    assert result["accuracy"] == pytest.approx((pred == y).mean())
    f1s = []
    for c in range(3):
        tp = ((pred == c) & (y == c)).sum()
        prec = tp / max((pred == c).sum(), 1)
        rec = tp / (y == c).sum()
        f1s.append(0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec))
    assert result["macro_f1"] == pytest.approx(np.mean(f1s))
    cm = np.zeros((3, 3), int)
    for t, p in zip(y, pred, strict=True):
        cm[t, p] += 1
    assert result["confusion"] == cm.tolist()
    for name in ("metrics.json", "report.md", "confusion.png", "predictions.csv"):
        assert (tmp_path / "ev" / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["accuracy"] == result["accuracy"] and 0 <= saved["ece"] <= 1
    assert f"{100 * result['macro_f1']:.2f}%" in (tmp_path / "ev" / "report.md").read_text()


def test_evaluate_manifest_uses_only_the_split(setup) -> None:  # noqa: ANN001
    ckpt, _, manifest = setup
    assert evaluate(ckpt, manifest, split="test")["num_images"] == 9
    assert evaluate(ckpt, manifest, split="train")["num_images"] == 6


def test_unknown_class_is_a_user_error(setup, tmp_path: Path) -> None:  # noqa: ANN001
    import shutil

    ckpt, cells, _ = setup
    shutil.copytree(cells, tmp_path / "cells")
    (tmp_path / "cells" / "class1").rename(tmp_path / "cells" / "Basophil")
    with pytest.raises(UserError, match="Basophil"):
        evaluate(ckpt, tmp_path / "cells")


def test_cli_evaluate_errors_are_one_line(
    setup,
    tmp_path: Path,  # noqa: ANN001
    capsys: pytest.CaptureFixture,
) -> None:
    from wbc_edge.cli import run

    ckpt, _, _ = setup
    code = run(["evaluate", "--model", str(ckpt), "--data", str(tmp_path / "missing.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "missing.csv" in err
    code = run(["evaluate", "--model", str(tmp_path / "none.pt"), "--data", str(ckpt.parent)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "none.pt" in err


def test_cli_evaluate_prints_summary(
    setup,
    tmp_path: Path,  # noqa: ANN001
    capsys: pytest.CaptureFixture,
) -> None:
    from wbc_edge.cli import run

    ckpt, _, manifest = setup
    code = run(
        ["evaluate", "--model", str(ckpt), "--data", str(manifest), "--out", str(tmp_path / "o")]
    )
    assert code == 0
    assert "accuracy" in capsys.readouterr().err
    assert (tmp_path / "o" / "metrics.json").is_file()


def test_dihedral_views_are_the_training_views() -> None:
    from wbc_edge.kd.data import dihedral
    from wbc_edge.kd.evaluate import dihedral_views

    x = np.random.default_rng(0).normal(size=(2, 3, 5, 5)).astype(np.float32)
    views = dihedral_views(x, 8)
    for k, v in enumerate(views):
        np.testing.assert_array_equal(v, dihedral(torch.from_numpy(x), k).numpy())
    assert len({v.tobytes() for v in views}) == 8
    with pytest.raises(UserError, match="views"):
        dihedral_views(x, 4)


def test_tta_averages_the_eight_views(setup) -> None:  # noqa: ANN001
    from wbc_edge.kd.evaluate import predict

    ckpt, cells, _ = setup
    one = predict(ckpt, cells, views=1)
    eight = predict(ckpt, cells, views=8)
    payload = torch.load(ckpt, map_location="cpu", weights_only=True)
    card = ModelCard.from_dict(payload["card"])
    model = create_student(card.architecture, card.num_classes).eval()
    model.load_state_dict(payload["state_dict"])
    x = torch.from_numpy(card.preprocess([read_image(str(s.path)) for s in one.samples]))
    from wbc_edge.kd.data import dihedral

    with torch.no_grad():
        by_hand = torch.stack(
            [torch.softmax(model(dihedral(x, k)) / card.temperature, 1) for k in range(8)]
        ).mean(0)
    np.testing.assert_allclose(eight.probs, by_hand.numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(one.probs, eight.probs)


def test_ensemble_is_the_mean_of_its_members_calibrated_probabilities(
    setup,  # noqa: ANN001
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    from wbc_edge.cli import run
    from wbc_edge.kd.evaluate import predict

    ckpt, cells, manifest = setup
    torch.manual_seed(1)
    other = create_student("tinyresnet_xs", 3).eval()
    # Its own input size and a temperature: the member runs at its card's preprocessing and
    # enters the mean calibrated.
    card = ModelCard("tinyresnet_xs", CLASSES, Preprocess(24), temperature=2.0)
    second = save_checkpoint(tmp_path / "second.pt", other, card)
    result = evaluate([ckpt, second], cells, out=tmp_path / "ens")
    first = predict(ckpt, cells)
    x = torch.from_numpy(card.preprocess([read_image(str(s.path)) for s in first.samples]))
    with torch.no_grad():
        by_hand = torch.softmax(other(x) / 2.0, 1).numpy()
    np.testing.assert_allclose(predict(second, cells).probs, by_hand, rtol=1e-4, atol=1e-5)
    mean = (first.probs + by_hand) / 2
    y = np.array([CLASSES.index(s.label) for s in first.samples])
    assert result["accuracy"] == pytest.approx((mean.argmax(1) == y).mean())
    assert not np.allclose(mean, first.probs, atol=1e-2)  # the second member counts
    assert [m["model"] for m in result["members"]] == [str(ckpt), str(second)]
    assert result["input_size"] == [32, 24] and result["confidence_threshold"] is None
    assert [m["temperature"] for m in result["members"]] == [1.0, 2.0]
    confidences = [
        float(line.rsplit(",", 1)[1])
        for line in (tmp_path / "ens" / "predictions.csv").read_text().splitlines()[1:]
    ]
    np.testing.assert_allclose(confidences, mean.max(1), atol=1e-4)
    report = (tmp_path / "ens" / "report.md").read_text()
    assert "ensemble of `student.pt`, `second.pt`" in report and "| 24 |" in report
    code = run(["evaluate", "--model", str(ckpt), "--model", str(second), "--data", str(manifest)])
    err = capsys.readouterr().err
    assert code == 0 and "student.pt + second.pt: accuracy" in err and "member second.pt" in err
