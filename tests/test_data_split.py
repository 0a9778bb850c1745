"""`data split`: stratified quotas, no content across splits, determinism, groups kept whole."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from wbc_edge import cli
from wbc_edge.data.manifest import SPLITS, read_manifest
from wbc_edge.data.split import make_split, parse_ratios, quotas
from wbc_edge.errors import UserError


def _tree(root: Path, sizes: dict[str, int], seed: int = 0, name=None) -> Path:
    """Files with distinct random bytes; the split hashes files and never decodes them."""
    rng = random.Random(seed)
    for c, n in sizes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            fname = name(c, i) if name else f"{c[:2]}_{i:03d}.png"
            (root / c / fname).write_bytes(rng.randbytes(64))
    return root


def _splits_by_sha(rows) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        out[r.sha256].add(r.split)
    return out


@pytest.mark.parametrize("ratios", [None, "0.7,0.2,0.1", "60,20,20"])
def test_per_class_counts_within_one_image_of_ratios(tmp_path, ratios):
    sizes = {"A": 10, "B": 17, "C": 33, "D": 1}
    root = _tree(tmp_path / "d", sizes)
    # duplicates inside a class and across classes must not push a class off its quota
    (root / "C" / "copy.png").write_bytes((root / "C" / "C_000.png").read_bytes())
    (root / "A" / "copy.png").write_bytes((root / "B" / "B_003.png").read_bytes())
    sizes = {"A": 11, "B": 17, "C": 34, "D": 1}
    result = make_split(root, seed=3, ratios=ratios, show_progress=False)
    fractions = parse_ratios(ratios)
    counts = result.counts()
    for c, n in sizes.items():
        assert sum(counts[c].values()) == n
        for s, frac in zip(SPLITS, fractions, strict=True):
            assert abs(counts[c][s] - n * frac) <= 1, (c, s, counts[c], n * frac)


def test_quotas_sum_and_round():
    assert quotas(400, (0.8, 0.1, 0.1)) == [320, 40, 40]
    for n in range(0, 40):
        q = quotas(n, (0.7, 0.2, 0.1))
        assert sum(q) == n
        assert all(abs(k - n * r) < 1 for k, r in zip(q, (0.7, 0.2, 0.1), strict=True))


def test_identical_content_never_straddles_splits(tmp_path):
    root = _tree(tmp_path / "d", {"A": 20, "B": 20})
    # copies within a class, across classes, and triples (k odd)
    for k in range(8):
        cls = "AB"[k % 2]
        src = root / cls / f"{cls}_{k:03d}.png"
        for j in range(1 + k % 2):
            (root / "AB"[(k + j) % 2] / f"dup{k}_{j}.png").write_bytes(src.read_bytes())
    for seed in range(6):
        result = make_split(root, seed=seed, show_progress=False)
        assert all(len(s) == 1 for s in _splits_by_sha(result.rows).values())
        assert len(result.duplicate_units()) == 8


def test_same_seed_same_bytes_other_seed_other_manifest(tmp_path):
    root = _tree(tmp_path / "d", {"A": 25, "B": 25})
    (root / "B" / "dup.png").write_bytes((root / "A" / "A_001.png").read_bytes())
    outs = []
    for i, seed in enumerate([7, 7, 8]):
        out = tmp_path / f"m{i}.csv"
        assert cli.run(["data", "split", str(root), "--out", str(out), "--seed", str(seed)]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


def test_group_by_keeps_each_patient_in_one_split(tmp_path):
    # 12 patients, 3-5 cells each, spread over two classes
    root = _tree(
        tmp_path / "d",
        {"A": 30, "B": 20},
        name=lambda c, i: f"P{(i * 7 + len(c)) % 12:02d}_{c}{i}.png",
    )
    result = make_split(root, seed=0, group_by=r"^(P\d+)_", show_progress=False)
    by_group: dict[str, set[str]] = defaultdict(set)
    for r in result.rows:
        assert r.group.startswith("P")
        by_group[r.group].add(r.split)
    assert len(by_group) == 12
    assert all(len(s) == 1 for s in by_group.values())
    # every split still gets someone
    assert set(Counter(r.split for r in result.rows)) == set(SPLITS)


def test_group_by_whole_match_and_unmatched_files(tmp_path):
    root = _tree(
        tmp_path / "d",
        {"A": 12},
        name=lambda c, i: f"slide{i % 3}-x{i}.png" if i < 9 else f"z{i}.png",
    )
    result = make_split(root, seed=0, group_by=r"slide\d", show_progress=False)
    assert result.unmatched == 3
    assert {r.group for r in result.rows} == {"slide0", "slide1", "slide2", ""}
    for g in ("slide0", "slide1", "slide2"):
        assert len({r.split for r in result.rows if r.group == g}) == 1


def test_bad_options_are_user_errors(tmp_path):
    root = _tree(tmp_path / "d", {"A": 4})
    for ratios in ["0.8,0.2", "a,b,c", "-1,1,1", "0,0.5,0.5"]:
        with pytest.raises(UserError, match="ratios"):
            make_split(root, ratios=ratios, show_progress=False)
    with pytest.raises(UserError, match="regular expression"):
        make_split(root, group_by="(", show_progress=False)
    with pytest.raises(UserError, match="matches no file"):
        make_split(root, group_by="^nothing", show_progress=False)


def test_cli_missing_folder_is_one_line(tmp_path, capsys):
    code = cli.run(["data", "split", str(tmp_path / "nope"), "--out", str(tmp_path / "x.csv")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "nope" in err and "\n" not in err
    assert not (tmp_path / "x.csv").exists()


def test_manifest_reader_yields_each_split(tmp_path):
    root = _tree(tmp_path / "d", {"A": 10, "B": 10})
    out = tmp_path / "out" / "split.csv"
    assert cli.run(["data", "split", str(root), "--out", str(out)]) == 0
    for s, n in zip(SPLITS, (16, 2, 2), strict=True):
        rows = read_manifest(out, s)
        assert len(rows) == n and all(r.path.is_file() for r in rows)


def test_pbc9_duplicate_pair_lands_in_one_split(pbc9_dir):
    result = make_split(pbc9_dir, seed=42, show_progress=False)
    by_sha: dict[str, list] = defaultdict(list)
    for r in result.rows:
        by_sha[r.sha256].append(r)
    dups = [rows for rows in by_sha.values() if len(rows) > 1]
    assert dups, "pbc9 is documented to hold a byte-identical pair"
    for rows in dups:
        assert len({r.split for r in rows}) == 1
        first = rows[0].path.read_bytes()
        assert all(r.path.read_bytes() == first for r in rows[1:])
    counts = result.counts()
    n = Counter(r.label for r in result.rows)
    for c, per in counts.items():
        for s, frac in zip(SPLITS, (0.8, 0.1, 0.1), strict=True):
            assert abs(per[s] - n[c] * frac) <= 1
