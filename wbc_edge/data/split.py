"""Stratified train/val/test split that cannot leak an image across splits.

A split is made of *units*, not files: files with the same bytes (sha256) form one unit, and so
do files whose names share a ``--group-by`` key (a patient, a slide). Units are joined
transitively, so a patient that shares a byte-identical image with another patient drags both
into the same split. Multi-file units are placed first, each into a split drawn in proportion to
what that split still needs of the unit's classes (never overshooting when another split has
room); single files then fill each class's remaining quota, in a seeded random order. With only
single files every class lands exactly on its quota (largest-remainder rounding of the ratios),
and pairs of duplicates keep it there; large groups can push a class off by at most a group.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wbc_edge.console import progress
from wbc_edge.data.manifest import SPLITS, ManifestRow
from wbc_edge.data.scan import LabelledFile, scan_class_folders, sha256_file
from wbc_edge.errors import UserError

DEFAULT_RATIOS = (0.8, 0.1, 0.1)
DEFAULT_SEED = 42


@dataclass(frozen=True)
class Unit:
    """Files that must share a split, and why (``reasons``: 'same content', 'group KEY')."""

    files: tuple[LabelledFile, ...]
    reasons: tuple[str, ...]

    def class_counts(self) -> Counter[str]:
        return Counter(f.label for f in self.files)


@dataclass
class SplitResult:
    """The rows to write plus what a user needs to trust them."""

    rows: list[ManifestRow]
    targets: dict[str, dict[str, int]]  # class -> split -> quota from the ratios
    units: list[Unit] = field(default_factory=list)  # multi-file units only, as placed
    unit_splits: list[str] = field(default_factory=list)
    unmatched: int = 0  # files the --group-by regex did not match (each its own group)

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {c: dict.fromkeys(SPLITS, 0) for c in self.targets}
        for r in self.rows:
            out[r.label][r.split] += 1
        return out

    def duplicate_units(self) -> list[tuple[Unit, str]]:
        """Units held together because files share bytes, with the split each went to."""
        return [
            (u, s)
            for u, s in zip(self.units, self.unit_splits, strict=True)
            if "same content" in u.reasons
        ]


def parse_ratios(text: str | Sequence[float] | None) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` (or ``80,10,10``) -> fractions summing to one."""
    if text is None:
        return DEFAULT_RATIOS
    if isinstance(text, str):
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise UserError(
                f"--ratios {text!r} is not three numbers: write train,val,test like 0.8,0.1,0.1"
            ) from None
    else:
        values = [float(v) for v in text]
    if len(values) != 3 or any(v < 0 for v in values) or values[0] <= 0:
        raise UserError(
            f"--ratios {text!r} must be three non-negative numbers train,val,test with train > 0, "
            "like 0.8,0.1,0.1"
        )
    total = sum(values)
    return (values[0] / total, values[1] / total, values[2] / total)


def quotas(n: int, ratios: Sequence[float]) -> list[int]:
    """Largest-remainder rounding: integer counts summing to ``n``, each within one of n*ratio."""
    exact = [n * r for r in ratios]
    base = [int(x) for x in exact]
    by_remainder = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - base[i]), i))
    for i in by_remainder[: n - sum(base)]:
        base[i] += 1
    return base


def group_key(pattern: re.Pattern[str], name: str) -> str | None:
    """The first capture group of ``pattern`` in ``name`` (the whole match if it has none)."""
    m = pattern.search(name)
    if m is None:
        return None
    return m.group(1) if pattern.groups else m.group(0)


def compile_group_by(regex: str | None) -> re.Pattern[str] | None:
    if regex is None:
        return None
    try:
        return re.compile(regex)
    except re.error as exc:
        raise UserError(f"--group-by {regex!r} is not a valid regular expression: {exc}") from None


def make_split(
    root: str | Path,
    seed: int = DEFAULT_SEED,
    ratios: str | Sequence[float] | None = None,
    group_by: str | None = None,
    show_progress: bool = True,
) -> SplitResult:
    """Split the ImageFolder tree at ``root``; the same inputs and seed give the same rows."""
    fractions = parse_ratios(ratios)
    pattern = compile_group_by(group_by)
    files = scan_class_folders(root)  # sorted, so the seed alone decides the outcome
    hashes = _hash_all(files, show_progress)

    keys: list[str] = [""] * len(files)
    unmatched = 0
    if pattern is not None:
        for i, f in enumerate(files):
            k = group_key(pattern, f.path.name)
            if k is None:
                unmatched += 1
            else:
                keys[i] = k
        if unmatched == len(files):
            raise UserError(
                f"--group-by {group_by!r} matches no file name under {root}: "
                f"e.g. {files[0].path.name!r}; fix the pattern or leave it out"
            )

    units = _units(files, hashes, keys)
    per_class = Counter(f.label for f in files)
    targets = {
        c: dict(zip(SPLITS, quotas(n, fractions), strict=True))
        for c, n in sorted(per_class.items())
    }
    rng = random.Random(seed)
    assigned: dict[int, str] = {}  # file index -> split
    placed: dict[str, dict[str, int]] = {c: dict.fromkeys(SPLITS, 0) for c in targets}

    multi = [u for u in units if len(u) > 1]
    single = [u[0] for u in units if len(u) == 1]
    order = list(range(len(multi)))
    rng.shuffle(order)
    order.sort(key=lambda j: -len(multi[j]))  # big units first, while every split has room
    placed_units: list[Unit] = []
    unit_splits: list[str] = []
    for j in order:
        members = multi[j]
        need = Counter(files[i].label for i in members)
        split = _choose_split(need, targets, placed, rng)
        for i in members:
            assigned[i] = split
        for c, k in need.items():
            placed[c][split] += k
        placed_units.append(_describe(files, hashes, keys, members))
        unit_splits.append(split)

    by_class: dict[str, list[int]] = defaultdict(list)
    for i in single:
        by_class[files[i].label].append(i)
    for c in sorted(by_class):
        members = by_class[c]
        rng.shuffle(members)
        for i in members:
            # the split furthest below its quota; ties go to the earlier split
            split = max(SPLITS, key=lambda s: (targets[c][s] - placed[c][s], -SPLITS.index(s)))
            assigned[i] = split
            placed[c][split] += 1

    rows = [
        ManifestRow(f.path, f.label, assigned[i], hashes[i], keys[i]) for i, f in enumerate(files)
    ]
    return SplitResult(rows, targets, placed_units, unit_splits, unmatched)


def _hash_all(files: list[LabelledFile], show_progress: bool) -> list[str]:
    if not show_progress:
        return [sha256_file(f.path) for f in files]
    out = []
    with progress(transient=True) as p:
        task = p.add_task("hashing", total=len(files), status="")
        for f in files:
            out.append(sha256_file(f.path))
            p.update(task, advance=1, status=f.label)
    return out


def _units(files: list[LabelledFile], hashes: list[str], keys: list[str]) -> list[list[int]]:
    """Connected components of 'same sha256' and 'same group key' (union-find), sorted."""
    parent = list(range(len(files)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i in range(len(files)):
        for tag in (("sha", hashes[i]), ("key", keys[i])):
            if tag[0] == "key" and not tag[1]:
                continue
            if tag in first:
                parent[find(i)] = find(first[tag])
            else:
                first[tag] = i
    comps: dict[int, list[int]] = defaultdict(list)
    for i in range(len(files)):
        comps[find(i)].append(i)
    return sorted(comps.values(), key=lambda m: m[0])


def _choose_split(
    need: Counter[str],
    targets: dict[str, dict[str, int]],
    placed: dict[str, dict[str, int]],
    rng: random.Random,
) -> str:
    """Among splits the unit overshoots least, draw one weighted by the room it has left."""

    def overshoot(s: str) -> int:
        return sum(max(0, placed[c][s] + k - targets[c][s]) for c, k in need.items())

    def room(s: str) -> int:
        return sum(max(0, targets[c][s] - placed[c][s]) for c in need)

    best = min(overshoot(s) for s in SPLITS)
    candidates = [s for s in SPLITS if overshoot(s) == best]
    # a split whose ratio gives these classes no place at all is the last resort
    wanted = [s for s in candidates if any(targets[c][s] > 0 for c in need)]
    candidates = wanted or candidates
    weights = [room(s) for s in candidates]
    if sum(weights) == 0:
        weights = [1] * len(candidates)
    return rng.choices(candidates, weights=weights)[0]


def _describe(
    files: list[LabelledFile], hashes: list[str], keys: list[str], members: list[int]
) -> Unit:
    reasons = []
    if len({hashes[i] for i in members}) < len(members):
        reasons.append("same content")
    reasons += sorted({f"group {keys[i]}" for i in members if keys[i]})
    return Unit(tuple(files[i] for i in members), tuple(reasons))
