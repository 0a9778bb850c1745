"""Find the images of an ImageFolder tree (one sub-folder per class)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from wbc_edge.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    label: str


def scan_class_folders(root: str | Path, all_files: bool = False) -> list[LabelledFile]:
    """Every file under ``root/<class>/`` in sorted order.

    ``all_files`` also returns files without an image suffix (``data check`` reports them);
    hidden files (``.DS_Store``) are always skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder: pass a folder with one sub-folder per class")
    classes = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and not _is_voc_folder(p)
    )
    if not classes:
        raise UserError(
            f"{root} has no class folders: expected {root}/<class>/<image> (an ImageFolder tree)"
        )
    files = [
        LabelledFile(f, c.name)
        for c in classes
        for f in sorted(c.rglob("*"))
        if f.is_file()
        and not f.name.startswith(".")
        and (all_files or f.suffix.lower() in IMAGE_SUFFIXES)
    ]
    if not files:
        raise UserError(f"{root} has class folders but no images in them")
    return files


def _is_voc_folder(path: Path) -> bool:
    """A Pascal-VOC field set (``data synth --fields`` writes one as ``fields/``) is not a class."""
    return (path / "JPEGImages").is_dir() and (path / "Annotations").is_dir()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
