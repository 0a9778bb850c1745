"""The pictures of the archived report: cell thumbnails and fields with their cells boxed.

Images are embedded as base64 JPEG (the page fetches nothing), framed by the colour of what
happened to the cell: counted by the model, under review, or confirmed by a technologist (the
legend above each picture section says so). Every name that came from a file or a card is
escaped.
"""

from __future__ import annotations

import base64
from html import escape as esc
from pathlib import Path

import numpy as np

from wbc_edge.runtime.differential import EXCLUDED, ReviewedCell
from wbc_edge.runtime.results import SampleResults
from wbc_edge.runtime.sinks import printable_name


def thumbnail_b64(image_bgr: np.ndarray, size: int = 96, quality: int = 80) -> str:
    """A JPEG thumbnail (longest side ``size``) as base64 text."""
    import cv2

    h, w = image_bgr.shape[:2]
    scale = size / max(h, w)
    if scale < 1:
        image_bgr = cv2.resize(
            image_bgr, (max(1, round(w * scale)), max(1, round(h * scale))), cv2.INTER_AREA
        )
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode thumbnail")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def image_b64(path: Path, size: int) -> str | None:
    """A saved image as base64 JPEG (longest side ``size``); None when it is missing or
    unreadable."""
    import cv2

    image = cv2.imread(str(path)) if path.is_file() else None
    return None if image is None else thumbnail_b64(image, size)


LEGEND = (
    '<p class="legend">Frames and boxes:'
    '<span style="background:#8bc34a"></span>counted by the model'
    '<span style="background:#ff9800"></span>under review, not counted (uncertain, or unlike '
    "the training images)"
    '<span style="background:#1565c0"></span>confirmed by a technologist</p>'
)


def thumb(cell: ReviewedCell, crops: dict[str, str | None]) -> str:
    """One cell's figure: its crop, class and probability, and what happened to it (counted,
    under review and why, or confirmed, with the model's word when the technologist changed it)."""
    r = cell.record
    data = crops.get(cell.id)
    where = printable_name(Path(r.file).name) if r.file else f"frame {r.frame}"
    state = "confirmed" if cell.confirmed else ("review" if cell.needs_review else "auto")
    shown = {"confirmed": "confirmed", "review": "under review", "auto": "counted"}[state]
    why = ""
    if state == "review":
        why = ": unlike the training images" if r.ood else ": uncertain"
    elif r.ood:
        why = " (out of distribution)"
    said = (
        f"<br>model: {esc(cell.predicted)}"
        if cell.confirmed and cell.label != cell.predicted
        else ""
    )
    img = (
        f'<img alt="{esc(cell.label)}" src="data:image/jpeg;base64,{data}">'
        if data
        else "<p>(no image saved)</p>"
    )
    return (
        f'<figure class="cell {state}" data-class="{esc(cell.label)}" data-cell="{cell.id}" '
        f'data-prob="{r.prob:.4f}">{img}<figcaption><b>{esc(cell.label)}</b> {r.prob:.2f} '
        f"{shown}{why}{said}<br>{esc(where)} #{r.cell}</figcaption></figure>"
    )


def gallery(results: SampleResults, crops: dict[str, str | None], per_class: int) -> str:
    """The cells by class, at most ``per_class`` each, those under review first."""
    groups: dict[str, list[ReviewedCell]] = {}
    for cell in results.cells:
        groups.setdefault(cell.label, []).append(cell)
    order = [*results.card.class_names, EXCLUDED]
    out = ["<h2>Cells by class</h2>", LEGEND]
    for name in [c for c in order if c in groups]:
        cells = groups[name]
        # Under review first (least confident first), then the rest in arrival order.
        unsure = sorted((c for c in cells if c.needs_review), key=lambda c: c.record.prob)
        sure = [c for c in cells if not c.needs_review]
        kept = (unsure + sure)[:per_class]
        shown = f"{len(kept)} shown of {len(cells)}"
        out.append(f'<section class="gallery" data-class="{esc(name)}">')
        out.append(f'<h3>{esc(name)} <small>({shown})</small></h3><div class="cells">')
        out.extend(thumb(c, crops) for c in kept)
        out.append("</div></section>")
    return "\n".join(out)


def fields_section(results: SampleResults, limit: int) -> str:
    """The saved fields (smear mode) with their cells boxed, at most ``limit``; "" when no
    field was saved."""
    folder = results.folder
    by_field: dict[str, list[ReviewedCell]] = {}
    for cell in results.cells:
        by_field.setdefault(cell.record.field_id, []).append(cell)
    saved = [f for f in by_field if folder.field_path(f).is_file()]
    if not saved:
        return ""
    out = [f"<h2>Fields</h2><p>{min(limit, len(saved))} shown of {len(saved)}.</p>", LEGEND]
    out.append('<div class="fields">')
    for fid in saved[:limit]:
        meta = folder.field_meta(fid) or {}
        data = image_b64(folder.field_path(fid), 320)
        width, height = meta.get("width"), meta.get("height")
        if not data or not width or not height:
            continue
        boxes = []
        for cell in by_field[fid]:
            x1, y1, x2, y2 = cell.record.box
            style = (
                f"left:{100 * x1 / width:.2f}%;top:{100 * y1 / height:.2f}%;"
                f"width:{100 * (x2 - x1) / width:.2f}%;height:{100 * (y2 - y1) / height:.2f}%"
            )
            state = "confirmed" if cell.confirmed else "review" if cell.needs_review else ""
            cls = f"box {state}".strip()
            tip = f"{cell.label}, under review" if state == "review" else cell.label
            boxes.append(f'<span class="{cls}" style="{style}" title="{esc(tip)}"></span>')
        counts: dict[str, int] = {}
        for cell in by_field[fid]:
            counts[cell.label] = counts.get(cell.label, 0) + 1
        caption = ", ".join(f"{esc(k)} {v}" for k, v in counts.items())
        waiting = sum(c.needs_review for c in by_field[fid])
        if waiting:
            caption += f" ({waiting} under review)"
        name = printable_name(Path(meta.get("file") or meta.get("key", "")).name)
        out.append(
            f'<figure class="fieldfig" data-field="{fid}"><div class="field">'
            f'<img alt="field" src="data:image/jpeg;base64,{data}">{"".join(boxes)}</div>'
            f'<figcaption class="fieldcap">{esc(name)}: {caption}</figcaption></figure>'
        )
    out.append("</div>")
    return "\n".join(out)
