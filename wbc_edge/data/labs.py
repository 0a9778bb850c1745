"""Labelled images from several labs as one manifest: the model's ten classes, each lab's terms.

A *source* is one lab's labelled images: a folder of class folders (split here, with that lab's
own group rule, e.g. DeepAPL's patients ``^(P\\d+)_``) or an existing split manifest (its split
is kept, so PBC's protocol split stays the one the reference study is compared on). Sources are
joined into one manifest whose ``lab`` column says where each image came from; a lab contributes
only the classes it has (:func:`lab_classes`), and training never treats a class that lab lacks
as a negative for its images (:func:`present_mask`).

The class list is one declaration, :data:`CLASSES`: the nine of pbc9 plus Blast. A source
folder holding any other class is refused in one line that names the known ones, so a typo
(``Lymphocytes``) cannot quietly become an eleventh class.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from wbc_edge.data.manifest import SPLITS, ManifestRow, read_manifest, write_manifest
from wbc_edge.errors import UserError

PBC9_CLASSES = (
    "Basophil",
    "Eosinophil",
    "Erythroblast",
    "ImmatureGranulocyte",
    "Lymphocyte",
    "Monocyte",
    "Neutrophil",
    "Platelet",
    "Promyelocyte",
)
# The packaged model's classes, sorted as every manifest-trained model orders them.
CLASSES = tuple(sorted((*PBC9_CLASSES, "Blast")))


@dataclass(frozen=True)
class LabInfo:
    """Who made a lab's images and on what terms (from ``../shared/data/README.md``)."""

    title: str
    terms: str


KNOWN_LABS: dict[str, LabInfo] = {
    "pbc": LabInfo(
        "PBC, Hospital Clinic of Barcelona; CellaVision DM96, May-Grunwald-Giemsa "
        "(Acevedo et al., Data in Brief 30 (2020) 105474)",
        "CC BY 4.0",
    ),
    "deepapl": LabInfo(
        "DeepAPL, Johns Hopkins Hospital; CellaVision exports, AML/APL patients "
        "(Sidhom et al. 2021)",
        "copyright Johns Hopkins University, research use",
    ),
    "lisc": LabInfo(
        "LISC, Imam Khomeini Hospital, Tehran; Zeiss Axioskop 40, Gismo-Right stain "
        "(Rezatofighi and Soltanian-Zadeh 2011)",
        "research use, cite",
    ),
    "tecom": LabInfo(
        "Jiangxi Tecom Science; Motic camera, N800-D microscope, rapid stain (Zheng et al. 2018)",
        "GPL-3.0; labels by the authors, not checked by experts",
    ),
    "cvblog": LabInfo("CellaVision blog images (the repository of Zheng et al. 2018)", "GPL-3.0"),
    "bccd": LabInfo("BCCD (github.com/Shenggan/BCCD_Dataset)", "MIT"),
}


@dataclass(frozen=True)
class Source:
    """One lab's labelled images: ``path`` is a class-folder tree or a split manifest."""

    lab: str
    path: Path
    group_by: str | None = None


def parse_sources(specs: Sequence[str], group_rules: Sequence[str] = ()) -> list[Source]:
    """``["pbc=split.csv", "deepapl=DIR"]`` + ``["deepapl=^(P\\d+)_"]`` -> sources.

    A spec without ``LAB=`` is named after its folder (or the manifest's file stem). A group
    rule names its lab; a rule without one applies to a single source.
    """
    sources: list[Source] = []
    for spec in specs:
        lab, sep, path = spec.partition("=")
        if not sep:
            path, lab = spec, ""
        p = Path(path)
        lab = lab or (p.stem if p.suffix == ".csv" else p.name)
        if not lab.replace("-", "").replace("_", "").isalnum():
            raise UserError(f"--data {spec!r}: a lab name is letters, digits, - or _")
        if any(s.lab == lab for s in sources):
            raise UserError(f"--data names lab {lab!r} twice: give each source its own LAB=")
        sources.append(Source(lab, p))
    by_lab = {s.lab: i for i, s in enumerate(sources)}
    for rule in group_rules:
        lab, sep, regex = rule.partition("=")
        if sep and lab in by_lab:
            i = by_lab[lab]
        elif len(sources) == 1:
            i, regex = 0, rule
        else:
            raise UserError(
                f"--group-by {rule!r} names no lab of --data ({', '.join(by_lab)}): "
                "write LAB=REGEX, e.g. deepapl=^(P\\d+)_"
            )
        sources[i] = replace(sources[i], group_by=regex)
    return sources


def source_rows(
    source: Source,
    classes: Sequence[str] = CLASSES,
    seed: int | None = None,
    ratios: str | Sequence[float] | None = None,
    show_progress: bool = True,
) -> list[ManifestRow]:
    """The rows of one source, each carrying its lab; a folder is split here."""
    from wbc_edge.data.split import DEFAULT_SEED, make_split

    p = source.path
    if p.is_file():
        if source.group_by:
            raise UserError(
                f"--group-by {source.lab}=...: {p} is a manifest, already split; the rule "
                "applies to a folder of class folders"
            )
        rows = read_manifest(p)
    elif p.is_dir():
        _check_folder_classes(p, classes)
        rows = make_split(
            p,
            DEFAULT_SEED if seed is None else seed,
            ratios,
            source.group_by,
            show_progress=show_progress,
        ).rows
    else:
        raise UserError(
            f"--data {source.lab}={p}: no such manifest or folder; give a split manifest "
            "(wbc-edge data split) or a folder with one sub-folder per class"
        )
    unknown = sorted({r.label for r in rows} - set(classes))
    if unknown:
        raise UserError(
            f"{p}: class {unknown[0]!r} is not one of the model's classes "
            f"({', '.join(classes)}): rename or leave out that folder"
        )
    return [replace(r, lab=source.lab) for r in rows]


def _check_folder_classes(root: Path, classes: Sequence[str]) -> None:
    """Refuse a class folder the model has no class for, before anything is hashed."""
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith(".") and d.name not in classes:
            raise UserError(
                f"{d}: class {d.name!r} is not one of the model's classes "
                f"({', '.join(classes)}): rename or leave out that folder"
            )


def combine_sources(
    sources: Sequence[Source],
    classes: Sequence[str] = CLASSES,
    seed: int | None = None,
    ratios: str | Sequence[float] | None = None,
    show_progress: bool = True,
) -> list[ManifestRow]:
    """All sources' rows as one manifest. An image found in two labs is refused: its two
    copies could land in different splits and leak a test image into training."""
    rows: list[ManifestRow] = []
    seen: dict[str, ManifestRow] = {}
    for src in sources:
        for r in source_rows(src, classes, seed, ratios, show_progress):
            other = seen.get(r.sha256) if r.sha256 else None
            if other is not None and other.lab != r.lab:
                raise UserError(
                    f"{r.path} ({r.lab}) has the same bytes as {other.path} ({other.lab}): "
                    "remove one copy so no image sits in two labs"
                )
            if r.sha256:
                seen[r.sha256] = r
            rows.append(r)
    return rows


def joined_manifest(
    specs: Sequence[str],
    group_rules: Sequence[str],
    path: str | Path,
    seed: int | None = None,
    ratios: str | Sequence[float] | None = None,
) -> Path:
    """Write the labs' joined manifest to ``path`` unless it exists; return ``path``.

    An existing file is kept as it is: a resumed run (or the next run of an ablation) trains on
    the split it started with, even if a source folder has changed since.
    """
    path = Path(path)
    if not path.is_file():
        rows = combine_sources(parse_sources(specs, group_rules), seed=seed, ratios=ratios)
        write_manifest(rows, path)
    return path


def lab_classes(rows: Iterable[ManifestRow]) -> dict[str, set[str]]:
    """Each lab's classes (all splits); a row without a lab belongs to lab ``""``."""
    out: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        out[r.lab].add(r.label)
    return dict(out)


def present_mask(
    rows: Sequence[ManifestRow], names: Sequence[str], of_lab: dict[str, set[str]]
) -> np.ndarray | None:
    """(N, C) bool: the classes each row's lab has, or None when every lab has every class.

    A lab without Blast (or Platelet) says nothing about whether its cells are blasts, so the
    cross-entropy of its images is taken over the classes it labels only.
    """
    full = set(names)
    if all(of_lab.get(r.lab, full) >= full for r in rows):
        return None
    table = {lab: np.array([n in have for n in names]) for lab, have in of_lab.items()}
    every = np.ones(len(names), bool)
    return np.stack([table.get(r.lab, every) for r in rows]) if rows else None


# How --balance weighs each training image when a manifest joins labs.
BALANCE_RULES = ("none", "sqrt", "equal")


def sample_weights(rows: Sequence[ManifestRow], rule: str) -> np.ndarray | None:
    """Per-image drawing weights for balanced sampling, or None for a plain shuffle.

    ``sqrt`` (the default for several labs) weighs each image by 1 / sqrt(n) of its
    (lab, class) cell: a cell of 400 PBC neutrophils is drawn 20 times as often as one image,
    not 400 times, yet tecom's single basophil is not repeated 400 times an epoch either (which
    ``equal``, 1 / n, would do). It is square-root sampling (Mahajan et al. 2018), the usual
    middle ground between the natural mix and full class balance on long-tailed data.
    """
    if rule not in BALANCE_RULES:
        raise UserError(f"unknown --balance {rule!r}: use one of {', '.join(BALANCE_RULES)}")
    if rule == "none" or not rows:
        return None
    cells = Counter((r.lab, r.label) for r in rows)
    power = 0.5 if rule == "sqrt" else 1.0
    w = np.array([cells[(r.lab, r.label)] ** -power for r in rows], np.float64)
    return w / w.sum()


def training_data(rows: Sequence[ManifestRow]) -> list[dict]:
    """The card's list of training data: per lab, its images per split and class, and terms."""
    out = []
    for lab in sorted({r.lab for r in rows}):
        mine = [r for r in rows if r.lab == lab]
        info = KNOWN_LABS.get(lab)
        out.append(
            {
                "lab": lab or "(unnamed)",
                "source": info.title if info else "",
                "terms": info.terms if info else "not stated: check the data's licence",
                "images": {s: sum(r.split == s for r in mine) for s in SPLITS},
                "classes": dict(sorted(Counter(r.label for r in mine).items())),
            }
        )
    return out
