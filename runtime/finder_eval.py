"""How well the smear-field finder finds the white cells someone boxed by hand.

A folder in Pascal-VOC layout (``JPEGImages/*.jpg`` + ``Annotations/*.xml``, as BCCD and the
synthetic fields of :mod:`wbc_edge.data.synth` are) is run through :func:`find_cells`; found boxes
are matched greedily to the hand-drawn ``WBC`` boxes by IoU, the usual detection protocol, so the
numbers compare with the ones people quote for BCCD. Files are split in two halves by sorted name:
the finder's few parameters were set by looking at the first half only, so the second half is the
honest check that they were not tuned to the set.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from wbc_edge.errors import UserError, require_dir
from wbc_edge.model.finder import Box, FinderParams, find_cells
from wbc_edge.records import markdown_table

WBC_NAMES = ("WBC",)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


@dataclass
class FieldResult:
    """One field: what was there, what was found, and which pairs matched."""

    image: str
    truth: list[Box]
    found: list[Box]
    matches: list[tuple[int, int, float]]  # (truth index, found index, IoU)
    seconds: float

    @property
    def missed(self) -> list[Box]:
        hit = {t for t, _, _ in self.matches}
        return [b for i, b in enumerate(self.truth) if i not in hit]

    @property
    def false(self) -> list[Box]:
        hit = {f for _, f, _ in self.matches}
        return [b for i, b in enumerate(self.found) if i not in hit]


@dataclass
class Score:
    """Detection counts and the rates they give; zero denominators give 1.0 (nothing to miss)."""

    fields: int = 0
    truth: int = 0
    found: int = 0
    matched: int = 0
    iou_sum: float = 0.0
    seconds: float = 0.0

    def add(self, r: FieldResult) -> None:
        self.fields += 1
        self.truth += len(r.truth)
        self.found += len(r.found)
        self.matched += len(r.matches)
        self.iou_sum += sum(m[2] for m in r.matches)
        self.seconds += r.seconds

    def as_dict(self) -> dict:
        return {
            "fields": self.fields,
            "wbc_boxes": self.truth,
            "found": self.found,
            "matched": self.matched,
            "recall": self.matched / self.truth if self.truth else 1.0,
            "precision": self.matched / self.found if self.found else 1.0,
            "mean_iou": self.iou_sum / self.matched if self.matched else 0.0,
            "ms_per_field": 1000 * self.seconds / self.fields if self.fields else 0.0,
        }


def read_voc_boxes(xml_path: str | Path, names: tuple[str, ...] = WBC_NAMES) -> list[Box]:
    """Boxes of the given object names from one Pascal-VOC file (score 1.0)."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise UserError(f"{xml_path}: not a Pascal-VOC XML file ({exc}); fix or remove it") from exc
    boxes = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        if name not in names or bb is None:
            continue
        x1, y1, x2, y2 = (float(bb.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append(Box(x1, y1, x2, y2, 1.0))
    return boxes


def match(truth: list[Box], found: list[Box], iou: float = 0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching: highest-IoU pairs first, each box used once, IoU >= ``iou``."""
    pairs = [(t.iou(f), ti, fi) for ti, t in enumerate(truth) for fi, f in enumerate(found)]
    pairs.sort(reverse=True)
    used_t: set[int] = set()
    used_f: set[int] = set()
    out = []
    for v, ti, fi in pairs:
        if v < iou:
            break
        if ti in used_t or fi in used_f:
            continue
        used_t.add(ti)
        used_f.add(fi)
        out.append((ti, fi, v))
    return out


def voc_fields(data: str | Path) -> list[tuple[Path, Path]]:
    """(image, annotation) pairs of a VOC folder, sorted by name; images without XML are skipped."""
    root = require_dir(data, "smear-field folder")
    images = root / "JPEGImages"
    notes = root / "Annotations"
    if not images.is_dir() or not notes.is_dir():
        raise UserError(
            f"{root}: expected Pascal-VOC layout with JPEGImages/ and Annotations/ inside "
            "(for synthetic fields point at the fields/ folder)"
        )
    pairs = []
    for img in sorted(images.iterdir()):
        xml = notes / (img.stem + ".xml")
        if (
            img.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
            and xml.is_file()
        ):
            pairs.append((img, xml))
    if not pairs:
        raise UserError(f"{root}: no image in JPEGImages/ has an XML file in Annotations/")
    return pairs


def evaluate_field(
    image_path: Path, xml_path: Path, params: FinderParams, iou: float = 0.5
) -> FieldResult:
    from wbc_edge.model.preprocess import read_image

    try:
        image = read_image(str(image_path))
    except ValueError as exc:
        raise UserError(f"{exc}; remove it from JPEGImages/") from exc
    truth = read_voc_boxes(xml_path)
    t0 = time.perf_counter()
    found = find_cells(image, params)
    dt = time.perf_counter() - t0
    return FieldResult(image_path.name, truth, found, match(truth, found, iou), dt)


def evaluate(
    data: str | Path,
    params: FinderParams | None = None,
    iou: float = 0.5,
    limit: int | None = None,
    show_progress: bool = False,
) -> tuple[dict, list[FieldResult]]:
    """Run the finder over a VOC folder; returns the summary (all, first half, second half)
    and the per-field results (for overlays and the list of misses)."""
    params = params or FinderParams()
    pairs = voc_fields(data)
    if limit is not None:
        pairs = pairs[:limit]
    results: list[FieldResult] = []
    if show_progress:
        from wbc_edge.console import progress

        with progress() as p:
            task = p.add_task("finding cells", total=len(pairs), status="")
            for img, xml in pairs:
                results.append(evaluate_field(img, xml, params, iou))
                p.update(task, advance=1, status=img.name)
    else:
        results = [evaluate_field(img, xml, params, iou) for img, xml in pairs]
    half = (len(results) + 1) // 2
    summary = {"iou_threshold": iou, "params": asdict(params)}
    for name, part in (
        ("all", results),
        ("first_half", results[:half]),
        ("second_half", results[half:]),
    ):
        s = Score()
        for r in part:
            s.add(r)
        summary[name] = s.as_dict()
        if part:
            summary[name]["files"] = f"{part[0].image} .. {part[-1].image}"
    summary["missed"] = [
        {"image": r.image, "box": [round(v) for v in b.to_list()]}
        for r in results
        for b in r.missed
    ]
    summary["false"] = [
        {"image": r.image, "box": [round(v) for v in b.to_list()], "score": round(b.score, 2)}
        for r in results
        for b in r.false
    ]
    return summary, results


SWEPT = (
    "rbc_diameter",
    "min_stain",
    "lobe_gap",
    "min_nucleus_area",
    "nucleus_core",
    "neck_ratio",
    "cytoplasm_rim",
)


def sensitivity(
    data: str | Path,
    params: FinderParams | None = None,
    iou: float = 0.5,
    factors: tuple[float, ...] = (0.75, 1.25),
    limit: int | None = None,
) -> list[dict]:
    """Each parameter scaled by each factor, the others kept: recall and precision per half.

    A parameter whose +-25 % moves the numbers a lot is one the result depends on, and one to
    check first on a new microscope."""
    import dataclasses

    params = params or FinderParams()
    rows = []
    configs = [("(as set)", 1.0, params)] + [
        (name, f, dataclasses.replace(params, **{name: getattr(params, name) * f}))
        for name in SWEPT
        for f in factors
        if not (name == "rbc_diameter" and params.rbc_diameter_px is not None)
    ]
    for name, f, p in configs:
        summary, _ = evaluate(data, p, iou=iou, limit=limit)
        row = {"param": name, "factor": f, "value": getattr(p, name, None)}
        for half in ("first_half", "second_half"):
            row[half] = {k: summary[half][k] for k in ("recall", "precision", "mean_iou")}
        rows.append(row)
    return rows


def to_markdown(summary: dict, title: str) -> str:
    """The summary as a results page: the table per half, then every miss and false find."""
    lines = [f"# {title}", ""]
    for key in ("command", "data", "date", "machine"):
        if key in summary:
            lines.append(
                f"- {key.capitalize()}: `{summary[key]}`"
                if key == "command"
                else f"- {key.capitalize()}: {summary[key]}"
            )
    lines += [f"- IoU threshold: {summary['iou_threshold']} (greedy one-to-one matching)", ""]
    parts = []
    for name in ("first_half", "second_half", "all"):
        s = summary[name]
        parts.append(
            [name.replace("_", " "), s.get("files", ""), s["fields"], s["wbc_boxes"], s["found"]]
            + [s["matched"], f"{s['recall']:.3f}", f"{s['precision']:.3f}"]
            + [f"{s['mean_iou']:.3f}", f"{s['ms_per_field']:.1f}"]
        )
    header = ["part", "files", "fields", "WBC boxes", "found", "matched", "recall", "precision"]
    header += ["mean IoU", "ms/field (finder only)"]
    lines.append(markdown_table(header, parts, align="llrrrrrrrr"))
    lines += ["", "Parameters (`FinderParams`, lengths in red-cell diameters):", ""]
    lines += [f"- `{k}` = {v}" for k, v in summary["params"].items()]
    lines += ["", f"Missed WBC boxes ({len(summary['missed'])}):", ""]
    lines += [f"- {m['image']} {m['box']}" for m in summary["missed"]] or ["- none"]
    lines += ["", f"Found boxes matching no WBC box ({len(summary['false'])}):", ""]
    lines += [f"- {f['image']} {f['box']} score {f['score']}" for f in summary["false"]] or [
        "- none"
    ]
    if "sensitivity" in summary:
        lines += [
            "",
            "Sensitivity: one parameter scaled, the others as set (recall / precision per half):",
            "",
        ]
        rows = []
        for r in summary["sensitivity"]:
            a, b = r["first_half"], r["second_half"]
            value = f"{r['value']:.3g}" if isinstance(r["value"], (int, float)) else ""
            rows.append(
                [r["param"], f"{r['factor']:g}", value]
                + [f"{a['recall']:.3f} / {a['precision']:.3f}"]
                + [f"{b['recall']:.3f} / {b['precision']:.3f}"]
            )
        header = ["parameter", "x", "value", "first half", "second half"]
        lines.append(markdown_table(header, rows, align="lrr"))
    return "\n".join(lines) + "\n"


def draw_overlay(image: np.ndarray, r: FieldResult) -> np.ndarray:
    """Truth in green, found in blue (matched) or red (false), missed truth thick yellow."""
    import cv2

    out = image.copy()
    matched_f = {f for _, f, _ in r.matches}
    for b in r.truth:
        cv2.rectangle(out, b.p1, b.p2, (0, 200, 0), 2)
    for b in r.missed:
        cv2.rectangle(out, b.p1, b.p2, (0, 220, 255), 4)
    for i, b in enumerate(r.found):
        color = (255, 80, 0) if i in matched_f else (0, 0, 255)
        cv2.rectangle(out, b.p1, b.p2, color, 2)
        cv2.putText(out, f"{b.score:.2f}", (b.p1[0] + 3, b.p1[1] + 15), 0, 0.5, color, 1)
    return out
