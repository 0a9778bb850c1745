"""The HTML report of a run: the differential table and a gallery of the classified cells.

One self-contained file: thumbnails are embedded as base64 JPEG and a Content-Security-Policy
forbids every fetch, so it opens offline and can be mailed or archived as it is. Within each
class the uncertain cells come first (they are the ones a person must look at), then the rest
in arrival order. The gallery keeps at most ``per_class`` thumbnails per class, preferring
uncertain cells, so memory stays small on long runs; the table counts every cell.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.runtime.post import Differential
from wbc_edge.runtime.sinks import CellRecord, printable_name


@dataclass
class Thumb:
    record: CellRecord
    jpeg_b64: str
    seq: int


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


class Gallery:
    """Collects thumbnails per predicted class while a run goes on (a pipeline observer)."""

    def __init__(self, class_names: list[str], per_class: int = 60, thumb_px: int = 96) -> None:
        self.class_names = list(class_names)
        self.per_class = per_class
        self.thumb_px = thumb_px
        self.thumbs: dict[str, list[Thumb]] = {c: [] for c in self.class_names}
        self.total = dict.fromkeys(self.class_names, 0)
        self._seq = 0

    def __call__(self, item: Any) -> None:  # pipeline.Item
        for record, crop in zip(item.records, item.crops, strict=False):
            self.add(record, crop)

    def add(self, record: CellRecord, crop_bgr: np.ndarray) -> None:
        kept = self.thumbs[record.label]
        self.total[record.label] += 1
        self._seq += 1
        if len(kept) >= self.per_class:
            if not record.uncertain:
                return
            confident = [i for i, t in enumerate(kept) if not t.record.uncertain]
            if not confident:
                return
            kept.pop(confident[-1])  # an uncertain cell displaces the newest confident one
        kept.append(Thumb(record, thumbnail_b64(crop_bgr, self.thumb_px), self._seq))

    def ordered(self, name: str) -> list[Thumb]:
        """Uncertain first (least confident first), then the others in arrival order."""
        kept = self.thumbs[name]
        unsure = sorted((t for t in kept if t.record.uncertain), key=lambda t: t.record.prob)
        sure = sorted((t for t in kept if not t.record.uncertain), key=lambda t: t.seq)
        return unsure + sure


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{margin:0 0 4px}.meta{color:#555;margin:0 0 16px}
.flag{background:#c62828;color:#fff;font-weight:bold;padding:10px 14px;margin:12px 0}
table{border-collapse:collapse;margin:8px 0 24px}
th,td{border:1px solid #bbb;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}
tr.immature td:first-child{color:#c62828;font-weight:bold}
.cells{display:flex;flex-wrap:wrap;gap:8px}
figure.cell{margin:0;padding:4px;border:2px solid #8bc34a;width:112px;font-size:11px}
figure.cell.uncertain{border-color:#ff9800;background:#fff3e0}
figure.cell img{width:104px;height:104px;object-fit:contain;display:block;background:#eee}
figcaption{overflow-wrap:anywhere}
"""


def render_html(diff: Differential, gallery: Gallery | None, info: dict[str, Any]) -> str:
    """``info`` (model, source, counts, ...) is shown under the title as key: value pairs."""
    esc = html.escape
    info = dict(info)
    title = str(info.pop("title", "WBC differential"))
    meta = " &middot; ".join(
        f"{esc(printable_name(str(k)))}: {esc(printable_name(str(v)))}" for k, v in info.items()
    )
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # No fetches at all: the report must render the same offline, years later.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">",
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">{meta}</p>',
    ]
    if diff.flagged:
        out.append(f'<div class="flag" id="flag">{esc(diff.flag_text())}</div>')
    if diff.ood_warning:
        out.append(f'<div class="flag" id="ood">{esc(diff.ood_warning)}</div>')
    out.append('<table id="differential"><thead><tr><th>class</th><th>count</th><th>%</th>')
    out.append("<th>review</th></tr></thead><tbody>")
    for c in diff.class_names:
        cls = "row immature" if c in diff.immature else "row"
        out.append(
            f'<tr class="{cls}" data-class="{esc(c)}"><td>{esc(c)}</td><td>{diff.counts[c]}</td>'
            f"<td>{diff.percent(c):.1f}</td><td>{diff.review[c]}</td></tr>"
        )
    out.append(
        f'<tr class="total"><td>total</td><td>{diff.counted}</td>'
        f"<td>{'100.0' if diff.counted else '-'}</td>"
        f"<td>{diff.in_review}</td></tr></tbody></table>"
    )
    if gallery is not None:
        out.append("<h2>Cells</h2>")
        for c in gallery.class_names:
            thumbs = gallery.ordered(c)
            if not thumbs:
                continue
            shown = f"{len(thumbs)} shown of {gallery.total[c]}"
            out.append(f'<section class="gallery" data-class="{esc(c)}">')
            out.append(f'<h3>{esc(c)} <small>({shown})</small></h3><div class="cells">')
            out.extend(_figure(t) for t in thumbs)
            out.append("</div></section>")
    out.append("</body></html>")
    return "\n".join(out)


def _figure(t: Thumb) -> str:
    r = t.record
    esc = html.escape
    where = printable_name(Path(r.file).name) if r.file else f"frame {r.frame}"
    top3 = " ".join(f"{esc(n)} {p:.2f}" for n, p in r.top3)
    cls = "cell uncertain" if r.uncertain else "cell"
    return (
        f'<figure class="{cls}" data-class="{esc(r.label)}" data-prob="{r.prob:.4f}">'
        f'<img alt="{esc(r.label)} {r.prob:.2f}" src="data:image/jpeg;base64,{t.jpeg_b64}">'
        f"<figcaption><b>{esc(r.label)} {r.prob:.2f}</b>{' (review)' if r.uncertain else ''}"
        f"<br>{esc(where)} #{r.cell}<br>{top3}</figcaption></figure>"
    )


REPORT_NAME = "report.html"


def report_path(path: str | Path) -> Path:
    """Where ``--report PATH`` writes: PATH itself, or ``PATH/report.html`` when PATH is a
    folder (existing, or written with a trailing slash)."""
    text = str(path)
    path = Path(path)
    if path.is_dir() or text.endswith(("/", "\\")):
        return path / REPORT_NAME
    return path


def write_report(
    path: str | Path, diff: Differential, gallery: Gallery | None, info: dict[str, Any]
) -> Path:
    """Write the report atomically: a half-written report, or its temporary file, is never
    left behind. ``path`` may be a folder (see :func:`report_path`)."""
    path = report_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(render_html(diff, gallery, info), encoding="utf-8")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


VIDEO_SUFFIXES = {".mp4": "mp4v", ".m4v": "mp4v", ".avi": "MJPG", ".mkv": "MJPG", ".mov": "mp4v"}


class Annotator:
    """Writes each frame with its cells boxed and labelled (``--annotate``), to an output URI as
    jetson-inference names them: a video file (``out.mp4``, ``.avi``, ``.mkv``, ``.mov``) or a
    folder of JPEGs (any other path).

    A video plays at ``fps`` (the source's own rate for a video or camera); frames of another
    size than the first are resized to it, since a video has one frame size.
    """

    def __init__(self, out: str | Path, fps: float = 5.0) -> None:
        from wbc_edge.errors import UserError

        self.path = Path(out)
        self.fourcc = VIDEO_SUFFIXES.get(self.path.suffix.lower())
        if self.fourcc is None and self.path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"):
            raise UserError(
                f"--annotate {out}: give a folder (one JPEG per frame) or a video file "
                f"({', '.join(sorted(VIDEO_SUFFIXES))})"
            )
        self.fps = fps if fps and fps > 0 else 5.0
        self._writer: Any = None
        self._size: tuple[int, int] | None = None
        self.frames = 0
        if self.fourcc is None:
            self.path.mkdir(parents=True, exist_ok=True)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, item: Any) -> None:  # pipeline.Item
        import cv2

        frame = item.frame
        if frame.image is None:
            return
        image = draw_cells(frame.image, item.records)
        if self.fourcc is None:
            stem = Path(frame.file).stem if frame.file else "frame"
            cv2.imwrite(str(self.path / f"{frame.index:06d}_{stem}.jpg"), image)
        else:
            self._write_video(image)
        self.frames += 1

    def _write_video(self, image: Any) -> None:
        import cv2

        from wbc_edge.errors import UserError

        if self._writer is None:
            h, w = image.shape[:2]
            self._size = (w, h)
            fourcc = cv2.VideoWriter_fourcc(*self.fourcc)
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, self._size)
            if not self._writer.isOpened():
                raise UserError(f"--annotate {self.path}: OpenCV cannot write this video type")
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)

    def close(self) -> None:
        """Finish the video file (its index is written here); safe to call twice."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def draw_cells(image_bgr: Any, records: list[Any]) -> Any:
    """A copy of the frame with every cell's box and label (orange: in review, green: counted)."""
    import cv2

    image = image_bgr.copy()
    scale = max(0.4, min(image.shape[:2]) / 600)
    for r in records:
        x1, y1, x2, y2 = r.box
        color = (0, 165, 255) if r.uncertain else (0, 200, 0)
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), color, max(1, round(2 * scale)))
        label = f"{r.label} {r.prob:.2f}"
        org = (x1 + 3, max(y1 + round(16 * scale), 12))
        cv2.putText(image, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (0, 0, 0), 3)
        cv2.putText(image, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, color, 1)
    return image
