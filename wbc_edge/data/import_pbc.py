"""Turn the PBC download into the 9-class layout of ``../shared/data/pbc9``.

PBC (Acevedo et al., Data in Brief 2020) ships ``PBC_dataset_normal_DIB/<class>/`` with eight
folders. Its ``ig`` folder mixes promyelocytes (``PMY_``) with myelocytes, metamyelocytes and
unlabelled immature granulocytes (``MY_``, ``MMY_``, ``IG_``); the reference study treats
promyelocytes as a class of their own, so they are split out by file-name prefix. A file in
``ig`` with any other prefix cannot be placed and is listed, not guessed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from wbc_edge.console import progress
from wbc_edge.data.scan import IMAGE_SUFFIXES
from wbc_edge.errors import UserError

PBC_SUBDIR = "PBC_dataset_normal_DIB"
# PBC folder -> pbc9 class; "ig" is resolved per file by IG_PREFIXES
PBC_CLASSES = {
    "basophil": "Basophil",
    "eosinophil": "Eosinophil",
    "erythroblast": "Erythroblast",
    "ig": None,
    "lymphocyte": "Lymphocyte",
    "monocyte": "Monocyte",
    "neutrophil": "Neutrophil",
    "platelet": "Platelet",
}
IG_PREFIXES = {
    "PMY": "Promyelocyte",
    "MY": "ImmatureGranulocyte",
    "MMY": "ImmatureGranulocyte",
    "IG": "ImmatureGranulocyte",
}


@dataclass
class ImportResult:
    out: Path
    counts: Counter[str] = field(default_factory=Counter)  # pbc9 class -> files written
    unplaced: list[Path] = field(default_factory=list)  # ig files with an unknown prefix
    ignored: list[Path] = field(default_factory=list)  # non-image files (Thumbs.db, ...)


def find_pbc_root(pbc_dir: str | Path) -> Path:
    """The folder holding the eight class folders: PBC_DIR itself or its PBC_dataset_normal_DIB."""
    pbc_dir = Path(pbc_dir)
    if not pbc_dir.is_dir():
        raise UserError(
            f"PBC folder not found: {pbc_dir}; pass the unpacked PBC download "
            f"(the folder holding {PBC_SUBDIR}/)"
        )
    candidates = [pbc_dir / PBC_SUBDIR, pbc_dir]
    for c in candidates:
        if c.is_dir() and all((c / name).is_dir() for name in PBC_CLASSES):
            return c
    best = candidates[0] if candidates[0].is_dir() else pbc_dir
    missing = [name for name in PBC_CLASSES if not (best / name).is_dir()]
    raise UserError(
        f"{best} is not the PBC layout: missing class folder(s) {', '.join(missing)}; "
        f"expected {PBC_SUBDIR}/<{','.join(PBC_CLASSES)}>/"
    )


def target_class(pbc_class: str, name: str) -> str | None:
    """The pbc9 class of file ``name`` from PBC folder ``pbc_class`` (None: cannot place it)."""
    mapped = PBC_CLASSES[pbc_class]
    if mapped is not None:
        return mapped
    return IG_PREFIXES.get(name.split("_", 1)[0].upper())


def import_pbc(
    pbc_dir: str | Path,
    out: str | Path,
    link: bool = False,
    force: bool = False,
    show_progress: bool = True,
) -> ImportResult:
    """Copy (or hard-link) PBC images into ``out/<pbc9 class>/``, keeping file names."""
    src_root = find_pbc_root(pbc_dir)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: pass a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(
            f"--out {out} is not empty: pass an empty or new folder, or --force to write into it "
            "(files with the same name are replaced)"
        )
    if out.resolve().is_relative_to(src_root.resolve()):
        raise UserError(f"--out {out} lies inside the PBC folder {src_root}: pick another folder")

    result = ImportResult(out)
    jobs: list[tuple[Path, str]] = []
    for pbc_class in PBC_CLASSES:
        for f in sorted((src_root / pbc_class).iterdir()):
            if not f.is_file() or f.name.startswith("."):
                continue
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                result.ignored.append(f)
                continue
            target = target_class(pbc_class, f.name)
            if target is None:
                result.unplaced.append(f)
            else:
                jobs.append((f, target))
    if not jobs:
        raise UserError(f"{src_root} has the PBC class folders but no images in them")

    for target in sorted({t for _, t in jobs}):
        (out / target).mkdir(parents=True, exist_ok=True)
    bar = progress(transient=True) if show_progress else None
    with bar or contextlib.nullcontext():
        task = (
            bar.add_task("linking" if link else "copying", total=len(jobs), status="") if bar else 0
        )
        for f, target in jobs:
            _place(f, out / target / f.name, link)
            result.counts[target] += 1
            if bar:
                bar.update(task, advance=1, status=target)
    return result


def _place(src: Path, dst: Path, link: bool) -> None:
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if not link:
        shutil.copy2(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError as exc:
        raise UserError(
            f"cannot hard-link {src} into {dst.parent} ({exc.strerror}); hard links need the "
            "same file system: drop --link to copy instead"
        ) from None
