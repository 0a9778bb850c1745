"""The shared core: CLI wiring and error handling, model card, preprocessing, manifests."""

from __future__ import annotations

import json

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
from wbc_edge.model.card import ModelCard, Preprocess, read_sidecar, write_sidecar
from wbc_edge.model.preprocess import normalize


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
    card = ModelCard("tinyresnet_s", ["A", "B"], Preprocess(64), metrics={"accuracy": 0.9})
    assert ModelCard.from_json(card.to_json()) == card
    write_sidecar(tmp_path / "m.engine", card, tensorrt="10.3")
    back, extra = read_sidecar(tmp_path / "m.engine")
    assert back == card and extra["tensorrt"] == "10.3"
    with pytest.raises(UserError):
        ModelCard.from_dict({"class_names": ["A"]})


def test_version1_cards_with_flat_preprocessing_still_load():
    flat = {
        "architecture": "tinyresnet_xs",
        "class_names": ["A", "B"],
        "input_size": 96,
        "mean": [0.4, 0.5, 0.6],
        "std": [0.2, 0.25, 0.3],
        "channel_order": "BGR",
        "interpolation": "cubic",
        "card_version": 1,
    }
    card = ModelCard.from_dict(flat)
    assert card.preprocess == Preprocess(
        96, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), channel_order="BGR", interpolation="cubic"
    )
    again = ModelCard.from_json(card.to_json())
    assert again == card and again.to_dict()["preprocess"]["input_size"] == 96
    # Defaults are written once, in Preprocess: a card without any preprocessing gets them.
    assert ModelCard.from_dict({"architecture": "x", "class_names": ["A"]}).preprocess == (
        Preprocess()
    )


def test_a_preprocessing_step_this_version_does_not_know_is_refused():
    d = ModelCard("x", ["A"]).to_dict()
    d["preprocess"]["stain_reference"] = [0.1, 0.2]
    with pytest.raises(UserError, match="stain_reference"):
        ModelCard.from_dict(d)
    with pytest.raises(UserError, match="crop_fraction"):
        Preprocess(crop_fraction=1.5)


def test_crop_window_keeps_the_declared_field_of_view():
    from wbc_edge.model.preprocess import crop_window

    assert crop_window(40, 60, 1.0, None) == (0, 40, 0, 60)
    assert crop_window(40, 60, 0.5, None) == (10, 30, 15, 45)
    assert crop_window(40, 60, 1.0, 1.0) == (0, 40, 10, 50)  # centred square
    assert crop_window(60, 40, 0.5, 2.0) == (25, 35, 10, 30)  # wide window in a tall image


def test_preprocess_matches_definition():
    img = np.zeros((10, 20, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    rgb = Preprocess(input_size=8).resize(img)
    assert rgb.shape == (8, 8, 3) and rgb[0, 0].tolist() == [0, 0, 255]
    x = normalize(rgb, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32
    assert np.allclose(x[0, 2], 1.0) and np.allclose(x[0, 0], -1.0)
    batch = Preprocess(input_size=8)([img, img])
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


def test_records_have_one_writer_and_one_machine_line(tmp_path, monkeypatch):
    from wbc_edge import records

    monkeypatch.setattr(records, "gpu_line", lambda: None)  # a machine without a GPU
    line = records.machine_line(onnxruntime="1.2.3")
    assert line.startswith(records.cpu_name()) and line.endswith("no GPU, onnxruntime 1.2.3")
    monkeypatch.setattr(records, "gpu_line", lambda: "NVIDIA H200, driver 550.54")
    assert "NVIDIA H200, driver 550.54" in records.machine_line()  # detected, never passed
    assert records.cpu_name("model name\t: Test CPU @ 1GHz\n") == "Test CPU @ 1GHz"
    avx2 = records.cpu_flags("flags\t\t: fpu avx avx2\n")
    assert records.isa_note(avx2) == "AVX2, no VNNI"
    assert records.isa_note(avx2 | {"avx512_vnni"}) == "VNNI" and records.isa_note(set()) == ""
    table = records.markdown_table(["a", "b"], [[1, "x"]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | x |"]
    table = records.markdown_table(["a", "n"], [["x|y", 2]], align="lr")
    assert table.splitlines() == ["| a | n |", "|---|---:|", "| x\\|y | 2 |"]  # a | stays a cell
    smi = "NVIDIA H200, 550.54\n"
    assert records.gpu_names(lambda cmd: smi) == ["NVIDIA H200, driver 550.54"]
    assert records.gpu_names(lambda cmd: None) == []
    j, m = records.write_record(tmp_path / "r" / "bench-v1.2", {"x": 1}, "# r")
    assert j.name == "bench-v1.2.json" and m.read_text() == "# r\n"
    assert json.loads(j.read_text()) == {"x": 1}
    assert records.utc_date().endswith(" UTC")


def test_progress_in_a_log_leaves_no_blank_lines(capsys):
    """Output to a log (not a terminal): a transient bar writes nothing, a kept bar its last
    state once; neither leaves an empty line before what follows."""
    from wbc_edge.console import console, progress

    assert not console.is_terminal  # pytest captures stderr
    for transient in (True, False):
        with progress(transient=transient) as p:
            task = p.add_task("steps", total=3, status="")
            for _ in range(3):
                p.update(task, advance=1)
        console.print("done")
    err = capsys.readouterr().err
    assert "" not in err.splitlines()
    assert err.count("done") == 2 and err.count("steps") == 1 and "3/3" in err
