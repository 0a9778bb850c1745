"""The split manifest: one CSV row per image (path, class, split, sha256[, group][, lab]).

Paths are stored relative to the manifest's own folder when possible, so a manifest and its
images can move together; :func:`read_manifest` resolves them back. The data fingerprint that
goes into every model card is a hash of the (sha256, class, split) rows, so it names the data a
model saw independently of where the files lie.

``lab`` names the laboratory (microscope, stain, patients) an image comes from when a manifest
joins several (:mod:`wbc_edge.data.labs`); a single-lab manifest leaves it empty, and the file
is then written without the column, exactly as before labs existed.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from wbc_edge.errors import UserError

FIELDS = ["path", "class", "split", "sha256", "group"]
LAB_FIELD = "lab"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ManifestRow:
    path: Path
    label: str
    split: str
    sha256: str
    group: str = ""
    lab: str = ""


def write_manifest(rows: Iterable[ManifestRow], out: str | Path) -> Path:
    """Write rows (sorted by split, class, path for a stable file) to ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.parent.resolve()
    ordered = sorted(rows, key=lambda r: (r.lab, SPLITS.index(r.split), r.label, str(r.path)))
    with_lab = any(r.lab for r in ordered)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(FIELDS + [LAB_FIELD] if with_lab else FIELDS)
        for r in ordered:
            row = [_relative(r.path, base), r.label, r.split, r.sha256, r.group]
            w.writerow(row + [r.lab] if with_lab else row)
    os.replace(tmp, out)  # never leave a half-written manifest behind
    return out


def _relative(path: Path, base: Path) -> str:
    p = Path(path).resolve()
    try:
        return os.path.relpath(p, base)
    except ValueError:  # another drive on Windows
        return str(p)


def read_manifest(path: str | Path, split: str | None = None) -> list[ManifestRow]:
    """Rows of a manifest, optionally one split, with paths resolved to absolute ones."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"manifest not found: {path}; make one with `wbc-edge data split DIR --out {path}`"
        )
    if split is not None and split not in SPLITS:
        raise UserError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    base = path.parent.resolve()
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"path", "class", "split"} <= set(reader.fieldnames):
            raise UserError(
                f"{path} is not a split manifest (needs columns path, class, split): "
                "make one with `wbc-edge data split`"
            )
        rows = [
            ManifestRow(
                path=(base / r["path"]).resolve()
                if not os.path.isabs(r["path"])
                else Path(r["path"]),
                label=r["class"],
                split=r["split"],
                sha256=r.get("sha256") or "",
                group=r.get("group") or "",
                lab=r.get(LAB_FIELD) or "",
            )
            for r in reader
        ]
    if split is not None:
        rows = [r for r in rows if r.split == split]
        if not rows:
            raise UserError(f"{path} has no rows in split {split!r}")
    return rows


def class_names(rows: Iterable[ManifestRow]) -> list[str]:
    """Sorted class names: the label order every model trained on a manifest uses."""
    return sorted({r.label for r in rows})


def fingerprint(rows: Iterable[ManifestRow]) -> str:
    """Short content hash of (sha256, class, split) rows: which images, labelled how, split how.

    The lab joins the key only when a row has one, so a single-lab manifest keeps the
    fingerprint it had before labs existed."""
    h = hashlib.sha256()
    for key in sorted(
        f"{r.sha256},{r.label},{r.split}" + (f",{r.lab}" if r.lab else "") for r in rows
    ):
        h.update(key.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]
