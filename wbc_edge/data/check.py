"""Find what would quietly spoil training in an ImageFolder tree.

Every file is decoded in full (``Image.load()``; truncated files are *not* tolerated, so a cut
JPEG is reported instead of being padded with grey), then checked for size, pixel mode and bit
depth. Byte-identical files are grouped by sha256; near-duplicates (re-encoded, rescaled or
slightly re-exposed copies) by a 256-bit perceptual hash (DCT pHash, ``imagehash``) within a
Hamming distance. On pbc9 distinct cells sit 66 or more bits apart in that hash while a JPEG
re-encode or a rescale moves an image by at most a few bits and a 20% brightness change by about
20, hence the default threshold of 24 bits.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.console import progress
from wbc_edge.data.scan import LabelledFile, scan_class_folders
from wbc_edge.optional import require

DEFAULT_MIN_SIZE = 32
DEFAULT_NEAR_DUP_THRESHOLD = 24
HASH_SIZE = 16  # pHash side: 16x16 = 256 bits

# kind -> what it means; the order is the order of the summary table's columns
KINDS: dict[str, str] = {
    "empty": "zero-byte file",
    "not_image": "not an image file (cannot be identified)",
    "truncated": "image data ends early",
    "corrupt": "image cannot be decoded",
    "too_small": "smaller than the minimum side",
    "odd_mode": "alpha, grayscale, palette with alpha, or more than 8 bits per sample",
    "duplicate": "byte-identical to another file",
    "near_duplicate": "perceptually near-identical to another file",
}

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_WIDE_MODES = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Problem:
    kind: str
    path: Path
    label: str
    detail: str
    other: Path | None = None  # the file a duplicate or near-duplicate matches

    def to_dict(self, root: Path) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": _rel(self.path, root),
            "class": self.label,
            "detail": self.detail,
            "other": None if self.other is None else _rel(self.other, root),
        }


@dataclass
class CheckReport:
    root: Path
    files: dict[str, int]  # class -> files found (images or not)
    problems: list[Problem] = field(default_factory=list)
    min_size: int = DEFAULT_MIN_SIZE
    near_dup_threshold: int = DEFAULT_NEAR_DUP_THRESHOLD

    @property
    def ok(self) -> bool:
        return not self.problems

    def kinds(self) -> Counter[str]:
        return Counter(p.kind for p in self.problems)

    def by_class(self) -> dict[str, Counter[str]]:
        out: dict[str, Counter[str]] = {c: Counter() for c in self.files}
        for p in self.problems:
            out[p.label][p.kind] += 1
        return out

    def of_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "min_size": self.min_size,
            "near_dup_threshold": self.near_dup_threshold,
            "hash": f"phash {HASH_SIZE}x{HASH_SIZE}",
            "files": self.files,
            "problems_by_kind": {k: self.kinds()[k] for k in KINDS},
            "problems_by_class": {c: dict(v) for c, v in self.by_class().items()},
            "problems": [p.to_dict(self.root) for p in self.problems],
        }


def check_tree(
    root: str | Path,
    min_size: int = DEFAULT_MIN_SIZE,
    near_dup_threshold: int = DEFAULT_NEAR_DUP_THRESHOLD,
    show_progress: bool = True,
) -> CheckReport:
    """Decode and inspect every file under ``root/<class>/``; a negative threshold skips pHash."""
    require("PIL")
    from PIL import Image, ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False  # truncation must raise, never be padded over
    imagehash = require("imagehash") if near_dup_threshold >= 0 else None

    root = Path(root)
    files = scan_class_folders(root, all_files=True)
    report = CheckReport(
        root, dict(Counter(f.label for f in files)), [], min_size, near_dup_threshold
    )
    shas: dict[int, str] = {}
    hashes: dict[int, np.ndarray] = {}

    def inspect(i: int, f: LabelledFile) -> None:
        data = f.path.read_bytes()
        if not data:
            report.problems.append(Problem("empty", f.path, f.label, "zero-byte file"))
            return
        shas[i] = hashlib.sha256(data).hexdigest()
        try:
            im = Image.open(io.BytesIO(data))
        except Image.UnidentifiedImageError:
            report.problems.append(
                Problem("not_image", f.path, f.label, "not an image that Pillow can identify")
            )
            return
        try:
            im.load()
        except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, ...
            kind = "truncated" if "truncat" in str(exc).lower() else "corrupt"
            report.problems.append(
                Problem(kind, f.path, f.label, f"{im.format}: {type(exc).__name__}: {exc}")
            )
            return
        if min(im.size) < min_size:
            report.problems.append(
                Problem(
                    "too_small",
                    f.path,
                    f.label,
                    f"{im.size[0]}x{im.size[1]} px, below --min-size {min_size}",
                )
            )
        reason = odd_mode(im, data)
        if reason:
            report.problems.append(Problem("odd_mode", f.path, f.label, reason))
        if imagehash is not None:
            bits = imagehash.phash(_for_hash(im), hash_size=HASH_SIZE).hash
            hashes[i] = np.packbits(bits.ravel())

    if show_progress:
        with progress(transient=True) as p:
            task = p.add_task("checking", total=len(files), status="")
            for i, f in enumerate(files):
                inspect(i, f)
                p.update(task, advance=1, status=f.label)
    else:
        for i, f in enumerate(files):
            inspect(i, f)

    report.problems += _duplicates(files, shas)
    if imagehash is not None:
        report.problems += _near_duplicates(files, shas, hashes, near_dup_threshold)
    return report


def odd_mode(im: Any, data: bytes) -> str | None:
    """Why this decoded PIL image would not reach the model as plain 8-bit colour, if it won't."""
    mode = im.mode
    if mode in _ALPHA_MODES:
        return f"{mode}: has an alpha channel, dropped when the image is read as BGR"
    if "transparency" in im.info:
        return f"{mode} with a transparent colour: transparency is dropped when read as BGR"
    if mode in _WIDE_MODES:
        return (
            f"{mode}: {_WIDE_MODES[mode]}-bit single channel (grayscale); "
            "readers scale or clip it to 8-bit"
        )
    if mode in ("L", "1"):
        return f"{mode}: grayscale; the classifier is trained on colour stains"
    if mode not in ("RGB", "P", "YCbCr"):
        return f"{mode}: unusual colour mode; convert to RGB"
    depth = _bits_per_sample(im, data)
    if depth > 8:
        return f"{mode} with {depth} bits per sample: readers reduce it to 8-bit"
    return None


def _bits_per_sample(im: Any, data: bytes) -> int:
    """Pillow opens 16-bit RGB PNG/TIFF as 8-bit RGB, so read the depth from the header."""
    if data[:8] == _PNG_SIGNATURE and len(data) > 24:
        return data[24]  # IHDR bit depth
    tags = getattr(im, "tag_v2", None)
    if tags is not None and 258 in tags:
        value = tags[258]
        return max(value) if isinstance(value, tuple) else int(value)
    return 8


def _for_hash(im: Any) -> Any:
    """pHash works on luminance; wide modes must be brought to 8-bit first."""
    if im.mode in _WIDE_MODES:
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        scaled = (a - lo) / (hi - lo or 1.0) * 255.0
        from PIL import Image

        return Image.fromarray(scaled.astype(np.uint8))
    return im


def _where(f: LabelledFile) -> str:
    return f"{f.label}/{f.path.name}"


def _across(a: LabelledFile, b: LabelledFile) -> str:
    return (
        f"across classes {a.label} and {b.label}"
        if a.label != b.label
        else f"within class {a.label}"
    )


def _duplicates(files: list[LabelledFile], shas: dict[int, str]) -> list[Problem]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i in sorted(shas):
        groups[shas[i]].append(i)
    out = []
    for members in groups.values():
        first = files[members[0]]
        for i in members[1:]:
            f = files[i]
            out.append(
                Problem(
                    "duplicate",
                    f.path,
                    f.label,
                    f"same bytes as {_where(first)} ({_across(first, f)})",
                    first.path,
                )
            )
    return out


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)


def hamming_pairs(packed: np.ndarray, threshold: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) for i < j whose packed bit rows differ in at most ``threshold`` bits."""
    n = len(packed)
    out: list[tuple[int, int, int]] = []
    chunk = max(1, 2_000_000 // max(1, n * packed.shape[1]))
    for start in range(0, n, chunk):
        block = packed[start : start + chunk]
        d = _POPCOUNT[block[:, None, :] ^ packed[None, :, :]].sum(-1)
        for a, j in zip(*np.nonzero(d <= threshold), strict=True):
            i = start + int(a)
            if i < j:
                out.append((i, int(j), int(d[a, j])))
    return out


def _near_duplicates(
    files: list[LabelledFile],
    shas: dict[int, str],
    hashes: dict[int, np.ndarray],
    threshold: int,
) -> list[Problem]:
    """Near-duplicate clusters among distinct contents, each reported against its first file.

    Byte-identical copies are left to the duplicate check: only the first file of each sha256
    is hashed here, so a copy is not reported twice.
    """
    seen: set[str] = set()
    index = []
    for i in sorted(hashes):
        if shas[i] not in seen:
            seen.add(shas[i])
            index.append(i)
    if len(index) < 2:
        return []
    packed = np.stack([hashes[i] for i in index])
    pairs = hamming_pairs(packed, threshold)

    parent = list(range(len(index)))

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for a, b, _ in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    out = []
    for k in range(len(index)):
        r = find(k)
        if r == k:
            continue
        first, f = files[index[r]], files[index[k]]
        dist = int(_POPCOUNT[packed[r] ^ packed[k]].sum())
        out.append(
            Problem(
                "near_duplicate",
                f.path,
                f.label,
                f"{dist} of {HASH_SIZE * HASH_SIZE} hash bits from {_where(first)} "
                f"({_across(first, f)})",
                first.path,
            )
        )
    return out


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
