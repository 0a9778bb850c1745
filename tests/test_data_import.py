"""`data import-pbc`: PBC's 8 folders become the 9 pbc9 classes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wbc_edge import cli
from wbc_edge.data.import_pbc import PBC_SUBDIR, import_pbc
from wbc_edge.data.scan import scan_class_folders
from wbc_edge.errors import UserError

# a miniature PBC download: folder -> file names
FAKE_PBC = {
    "basophil": ["BA_1.jpg", "BA_2.jpg"],
    "eosinophil": ["EO_1.jpg"],
    "erythroblast": ["ERB_1.jpg"],
    "ig": ["PMY_1.jpg", "PMY_2.jpg", "MY_1.jpg", "MMY_1.jpg", "IG_1.jpg", "IG_2.jpg"],
    "lymphocyte": ["LY_1.jpg"],
    "monocyte": ["MO_1.jpg"],
    "neutrophil": ["SNE_1.jpg", "BNE_1.jpg", "NEUTROPHIL_1.jpg"],
    "platelet": ["PLATELET_1.jpg"],
}
N_FAKE = sum(len(v) for v in FAKE_PBC.values())


def _fake_pbc(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for folder, names in FAKE_PBC.items():
        d = root / PBC_SUBDIR / folder
        d.mkdir(parents=True)
        for n in names:
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(d / n)
    (root / PBC_SUBDIR / "basophil" / "Thumbs.db").write_bytes(b"x")
    return root


def test_import_makes_the_nine_class_layout(tmp_path):
    src = _fake_pbc(tmp_path / "pbc")
    out = tmp_path / "pbc9"
    result = import_pbc(src, out, show_progress=False)
    files = scan_class_folders(out, all_files=True)
    by_class: dict[str, set[str]] = {}
    for f in files:
        by_class.setdefault(f.label, set()).add(f.path.name)
    assert by_class["Promyelocyte"] == {"PMY_1.jpg", "PMY_2.jpg"}
    assert by_class["ImmatureGranulocyte"] == {"MY_1.jpg", "MMY_1.jpg", "IG_1.jpg", "IG_2.jpg"}
    assert by_class["Neutrophil"] == {"SNE_1.jpg", "BNE_1.jpg", "NEUTROPHIL_1.jpg"}
    assert len(by_class) == 9 and sum(result.counts.values()) == N_FAKE
    assert [p.name for p in result.ignored] == ["Thumbs.db"]
    copied = out / "Basophil" / "BA_1.jpg"
    original = src / PBC_SUBDIR / "basophil" / "BA_1.jpg"
    assert copied.read_bytes() == original.read_bytes()
    assert copied.stat().st_ino != original.stat().st_ino


def test_link_hard_links_and_accepts_the_inner_folder(tmp_path):
    src = _fake_pbc(tmp_path / "pbc")
    out = tmp_path / "linked"
    import_pbc(src / PBC_SUBDIR, out, link=True, show_progress=False)
    a = out / "Promyelocyte" / "PMY_1.jpg"
    assert os.path.samefile(a, src / PBC_SUBDIR / "ig" / "PMY_1.jpg")


def test_non_empty_out_needs_force(tmp_path):
    src = _fake_pbc(tmp_path / "pbc")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty.*--force"):
        import_pbc(src, out, show_progress=False)
    result = import_pbc(src, out, force=True, show_progress=False)
    assert sum(result.counts.values()) == N_FAKE and (out / "keep.txt").read_text() == "mine"


def test_unknown_ig_prefix_is_reported_not_guessed(tmp_path):
    src = _fake_pbc(tmp_path / "pbc")
    (src / PBC_SUBDIR / "ig" / "XX_1.jpg").write_bytes(
        (src / PBC_SUBDIR / "ig" / "MY_1.jpg").read_bytes()
    )
    result = import_pbc(src, tmp_path / "out", show_progress=False)
    assert [p.name for p in result.unplaced] == ["XX_1.jpg"]
    assert not list((tmp_path / "out").rglob("XX_1.jpg"))


def test_wrong_layout_is_one_clear_line(tmp_path, capsys):
    src = _fake_pbc(tmp_path / "pbc")
    (src / PBC_SUBDIR / "platelet").rename(src / PBC_SUBDIR / "plt")
    code = cli.run(["data", "import-pbc", str(src), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "platelet" in err and "\n" not in err
    assert cli.run(["data", "import-pbc", str(tmp_path / "nope"), "--out", "x"]) == 2
    assert "nope" in capsys.readouterr().err


def test_cli_import_then_split(tmp_path, capsys):
    src = _fake_pbc(tmp_path / "pbc")
    out = tmp_path / "pbc9"
    assert cli.run(["data", "import-pbc", str(src), "--out", str(out)]) == 0
    assert "Promyelocyte" in capsys.readouterr().err
    assert cli.run(["data", "import-pbc", str(src), "--out", str(out)]) == 2  # now non-empty
    assert cli.run(["data", "split", str(out), "--out", str(tmp_path / "s.csv")]) == 0
