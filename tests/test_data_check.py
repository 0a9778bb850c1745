"""`data check`: each kind of bad file is flagged, and nothing else is."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wbc_edge import cli
from wbc_edge.data.check import check_tree


def _smooth(seed: int, size: int = 64) -> Image.Image:
    """A random colour texture: distinct per seed, with enough detail for a stable pHash (a
    much smoother image leaves most DCT terms near the median, and re-encoding flips them)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    return small.resize((size, size), Image.Resampling.BICUBIC)


def _jpeg_bytes(im: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _clean_tree(root: Path) -> Path:
    for c, seeds in {"A": (1, 2, 3), "B": (4, 5, 6)}.items():
        (root / c).mkdir(parents=True)
        for s in seeds:
            if s % 2:
                (root / c / f"img{s}.jpg").write_bytes(_jpeg_bytes(_smooth(s)))
            else:
                _smooth(s).save(root / c / f"img{s}.png")
    return root


def _add_bad_files(root: Path) -> dict[str, str]:
    """Each bad file (relative path) -> the kind it must be reported as."""
    a, b = root / "A", root / "B"
    bad: dict[str, str] = {}

    (a / "cut.jpg").write_bytes(_jpeg_bytes(_smooth(10))[:-300])
    bad["A/cut.jpg"] = "truncated"
    (a / "notes.jpg").write_text("this is not a picture\n")
    bad["A/notes.jpg"] = "not_image"
    (b / "empty.png").write_bytes(b"")
    bad["B/empty.png"] = "empty"
    (b / "tiny.png").parent.mkdir(exist_ok=True)
    _smooth(11, size=16).save(b / "tiny.png")
    bad["B/tiny.png"] = "too_small"

    rgba = _smooth(12).convert("RGBA")
    rgba.putalpha(200)
    rgba.save(a / "alpha.png")
    bad["A/alpha.png"] = "odd_mode"
    palette = _smooth(13).convert("P")
    palette.info["transparency"] = 0
    palette.save(b / "palette_alpha.png", transparency=0)
    bad["B/palette_alpha.png"] = "odd_mode"
    _smooth(14).convert("L").save(b / "gray.png")
    bad["B/gray.png"] = "odd_mode"
    deep = (np.asarray(_smooth(15).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(a / "gray16.png")
    bad["A/gray16.png"] = "odd_mode"
    cv2 = pytest.importorskip("cv2", reason="opencv writes the 16-bit colour PNG")
    rgb16 = np.asarray(_smooth(16), dtype=np.uint16) * 257
    assert cv2.imwrite(str(a / "rgb16.png"), rgb16[..., ::-1])
    bad["A/rgb16.png"] = "odd_mode"

    # byte-identical copy of A/img1.jpg in another class
    (b / "zz_copy.jpg").write_bytes((a / "img1.jpg").read_bytes())
    bad["B/zz_copy.jpg"] = "duplicate"
    # a re-encoded, slightly scaled copy of A/img2.png
    (b / "zz_near.jpg").write_bytes(_jpeg_bytes(_smooth(2).resize((58, 58)), quality=75))
    bad["B/zz_near.jpg"] = "near_duplicate"
    return bad


def _found(report) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for p in report.problems:
        out.setdefault(p.path.relative_to(report.root).as_posix(), set()).add(p.kind)
    return out


def test_clean_tree_passes_strict(tmp_path, capsys):
    root = _clean_tree(tmp_path / "d")
    report = check_tree(root, show_progress=False)
    assert report.ok, report.problems
    assert report.files == {"A": 3, "B": 3}
    assert cli.run(["data", "check", str(root), "--strict"]) == 0
    assert "no problems found" in capsys.readouterr().err


def test_each_bad_kind_is_flagged_and_nothing_else(tmp_path):
    root = _clean_tree(tmp_path / "d")
    bad = _add_bad_files(root)
    report = check_tree(root, show_progress=False)
    found = _found(report)
    assert set(found) == set(bad), found
    for path, kind in bad.items():
        assert found[path] == {kind}, (path, found[path])

    dup = report.of_kind("duplicate")[0]
    assert dup.other == root / "A" / "img1.jpg" and "across classes" in dup.detail
    near = report.of_kind("near_duplicate")[0]
    assert near.other == root / "A" / "img2.png" and "across classes" in near.detail
    modes = {p.path.name: p.detail for p in report.of_kind("odd_mode")}
    assert "alpha" in modes["alpha.png"] and "transparen" in modes["palette_alpha.png"]
    assert "grayscale" in modes["gray.png"] and "16-bit" in modes["gray16.png"]
    assert "16 bits" in modes["rgb16.png"]


def test_thresholds_change_what_is_flagged(tmp_path):
    root = _clean_tree(tmp_path / "d")
    _add_bad_files(root)
    report = check_tree(root, min_size=8, near_dup_threshold=-1, show_progress=False)
    assert not report.of_kind("too_small")
    assert not report.of_kind("near_duplicate")
    assert report.of_kind("duplicate")  # byte duplicates need no perceptual hash


def test_within_class_duplicates(tmp_path):
    root = _clean_tree(tmp_path / "d")
    (root / "A" / "zz.jpg").write_bytes((root / "A" / "img3.jpg").read_bytes())
    (root / "A" / "zz_near.png").parent.mkdir(exist_ok=True)
    Image.open(root / "A" / "img3.jpg").resize((70, 70)).save(root / "A" / "zz_near.png")
    report = check_tree(root, show_progress=False)
    assert {p.kind for p in report.problems} == {"duplicate", "near_duplicate"}
    assert all("within class A" in p.detail for p in report.problems)


def test_cli_strict_exit_code_and_json(tmp_path, capsys):
    root = _clean_tree(tmp_path / "d")
    bad = _add_bad_files(root)
    out = tmp_path / "report.json"
    assert cli.run(["data", "check", str(root), "--json", str(out)]) == 0
    assert cli.run(["data", "check", str(root), "--strict"]) == 1
    err = capsys.readouterr().err
    assert "truncated" in err and "cut.jpg" in err
    doc = json.loads(out.read_text())
    assert sum(doc["problems_by_kind"].values()) == len(bad)
    assert {p["path"] for p in doc["problems"]} == set(bad)


def test_cli_missing_folder_is_user_error(tmp_path, capsys):
    assert cli.run(["data", "check", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
