"""The shared core: CLI wiring and error handling, model card, preprocessing, manifests."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from wbc_edge import cli
from wbc_edge.data.manifest import (
    ManifestRow,
    class_names,
    fingerprint,
    read_manifest,
    write_manifest,
)
from wbc_edge.errors import UserError
from wbc_edge.runtime.card import ModelCard, read_sidecar, write_sidecar
from wbc_edge.runtime.preprocess import PreprocessSpec, normalize, resize_rgb


def test_help_lists_command_groups():
    result = CliRunner().invoke(cli.app, ["--help"])
    assert result.exit_code == 0
    assert "data" in result.output


def test_user_error_is_one_line_and_nonzero(capsys):
    code = cli.run(["data", "split", "/nonexistent/folder", "--out", "/tmp/x.csv"])
    assert code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "/nonexistent/folder" in err


def test_card_roundtrip(tmp_path):
    card = ModelCard("tinyresnet_s", ["A", "B"], input_size=64, metrics={"accuracy": 0.9})
    assert ModelCard.from_json(card.to_json()) == card
    write_sidecar(tmp_path / "m.engine", card, tensorrt="10.3")
    back, extra = read_sidecar(tmp_path / "m.engine")
    assert back == card and extra["tensorrt"] == "10.3"
    with pytest.raises(UserError):
        ModelCard.from_dict({"class_names": ["A"]})


def test_preprocess_matches_definition():
    img = np.zeros((10, 20, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    rgb = resize_rgb(img, 8)
    assert rgb.shape == (8, 8, 3) and rgb[0, 0].tolist() == [0, 0, 255]
    x = normalize(rgb, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32
    assert np.allclose(x[0, 2], 1.0) and np.allclose(x[0, 0], -1.0)
    batch = PreprocessSpec(input_size=8)([img, img])
    assert batch.shape == (2, 3, 8, 8)


def test_manifest_roundtrip_and_fingerprint(tmp_path):
    (tmp_path / "data").mkdir()
    rows = [
        ManifestRow(
            tmp_path / "data" / f"{i}.png", "AB"[i % 2], "train" if i < 4 else "test", f"h{i}"
        )
        for i in range(6)
    ]
    out = write_manifest(rows, tmp_path / "m" / "split.csv")
    back = read_manifest(out)
    assert sorted(r.path for r in back) == sorted(r.path.resolve() for r in rows)
    assert "../data/0.png" in out.read_text()
    assert len(read_manifest(out, "test")) == 2
    assert class_names(back) == ["A", "B"]
    assert fingerprint(back) == fingerprint(rows)
    with pytest.raises(UserError):
        read_manifest(out, "bogus")


def test_scan_skips_voc_field_folder(tmp_path):
    from wbc_edge.data.scan import scan_class_folders

    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "x.png").write_bytes(b"x")
    for sub in ("JPEGImages", "Annotations"):
        (tmp_path / "fields" / sub).mkdir(parents=True)
    (tmp_path / "fields" / "JPEGImages" / "f.jpg").write_bytes(b"x")
    assert {f.label for f in scan_class_folders(tmp_path)} == {"A"}
