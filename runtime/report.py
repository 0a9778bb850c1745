"""The archived HTML report of a sample, rebuilt from its folder at any time.

Everything comes from the sample folder (header, records, corrections, saved crops and fields),
so ``wbc-edge report OUT/<sample>`` gives the same page after any number of resumes, and again
after the review. One self-contained file: images are embedded as base64 JPEG and a
Content-Security-Policy forbids every fetch, so it opens offline and can be mailed or archived
as it is. Every name that came from a file, a card or a person is escaped.

Sections: the model and its intended use, and how many cells were counted and how many await
review (with a "synthetic data, not clinical" banner for a model trained on phantoms); sample,
dates and operators; the model card in short; the flags, each with the cells that raised it
(no green "no flag" box when the counted cells cannot be trusted or nothing was counted); the
differential as a lab reports it; the cells by class (under review first) and the fields (smear
mode) with the cells boxed, under a legend of the colours.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.model.roles import NRBC, OTHER, PLATELET
from wbc_edge.runtime.differential import EXCLUDED, LabDifferential, ReviewedCell
from wbc_edge.runtime.flags import FlagRules
from wbc_edge.runtime.options import REPORT_PER_CLASS
from wbc_edge.runtime.results import SampleResults, load_results
from wbc_edge.runtime.sample import SampleFolder
from wbc_edge.runtime.sinks import now_iso, printable_name

esc = html.escape
PER_CLASS = REPORT_PER_CLASS  # thumbnails per class (under-review cells are kept first)
FIELDS = 40  # fields shown in the per-field view


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


def _image_b64(path: Path, size: int) -> str | None:
    import cv2

    image = cv2.imread(str(path)) if path.is_file() else None
    return None if image is None else thumbnail_b64(image, size)


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{margin:0 0 4px}h2{margin:28px 0 8px}
table{border-collapse:collapse;margin:8px 0 16px}
th,td{border:1px solid #bbb;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}
table.meta td,table.meta th{text-align:left}
.flag{background:#c62828;color:#fff;font-weight:bold;padding:10px 14px;margin:12px 0 4px}
.flag.ood{background:#f9a825;color:#000}
.noflag{background:#e8f5e9;padding:8px 14px;margin:12px 0}
.withheld{background:#eceff1;border-left:6px solid #f9a825;padding:8px 14px;margin:12px 0}
.synthetic{background:#6a1b9a;color:#fff;font-weight:bold;padding:10px 14px;margin:8px 0}
.banner{font-size:1.1em;font-weight:bold;margin:8px 0}
.modelline{margin:4px 0;color:#444}
.legend span{display:inline-block;width:14px;height:14px;vertical-align:middle;margin:0 4px 0 12px}
tr.immature td:first-child,tr.blast td:first-child{color:#c62828;font-weight:bold}
tr.total td{font-weight:bold}
.cells{display:flex;flex-wrap:wrap;gap:8px}
figure.cell{margin:0;padding:4px;border:2px solid #8bc34a;width:112px;font-size:11px}
figure.cell.review{border-color:#ff9800;background:#fff3e0}
figure.cell.confirmed{border-color:#1565c0}
figure.cell img{width:104px;height:104px;object-fit:contain;display:block;background:#eee}
figcaption{overflow-wrap:anywhere}
.fields{display:flex;flex-wrap:wrap;gap:12px}
.field{position:relative;display:inline-block;line-height:0}
.field img{width:320px;display:block}
.field .box{position:absolute;border:2px solid #8bc34a;box-sizing:border-box}
.field .box.review{border-color:#ff9800}
.field .box.confirmed{border-color:#1565c0}
.fieldcap{font-size:12px;max-width:320px;overflow-wrap:anywhere}
"""


def render_report(results: SampleResults, per_class: int = PER_CLASS, fields: int = FIELDS) -> str:
    header, card, diff = results.header, results.card, results.diff
    folder = results.folder
    crops = {c.id: _image_b64(folder.crop_path(c.id), 96) for c in results.cells}
    title = f"WBC differential: sample {results.folder.sample}"
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # No fetches at all: the report must render the same offline, years later.
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">",
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        _model_line(header, card),
        _synthetic_banner(card),
        f'<p class="banner" id="banner">{esc(diff.banner)}</p>',
        _uncertified(header, card),
        f'<div class="flag ood" id="ood">{esc(diff.ood_warning)}</div>' if diff.ood_warning else "",
        _meta_table(results),
        "<h2>Model</h2>",
        _card_table(header, card),
        "<h2>Flags</h2>",
        _flags(results, crops),
        "<h2>Differential</h2>",
        _differential(diff, results.verified),
        _gallery(results, crops, per_class),
        _fields(results, fields),
        "</body></html>",
    ]
    return "\n".join(part for part in out if part)


SYNTHETIC = "SYNTHETIC DATA, NOT CLINICAL"


def synthetic_note(card: Any) -> str:
    """The card's own word that its model was trained on synthetic phantoms ("" otherwise):
    ``extra["synthetic"]``, which ``make demo`` stamps into the models it trains."""
    note = (card.extra or {}).get("synthetic")
    if not note:
        return ""
    return note if isinstance(note, str) else "trained on synthetic phantoms"


def _synthetic_banner(card: Any) -> str:
    note = synthetic_note(card)
    if not note:
        return ""
    return (
        f'<div class="synthetic" id="synthetic">{SYNTHETIC}: this model was {esc(note)}; its '
        "results mean nothing for a patient.</div>"
    )


def _model_line(header: dict[str, Any], card: Any) -> str:
    """The model and what it is for, under the title: who reads the page sees both first."""
    name = Path(header.get("model", {}).get("file", "")).name or card.architecture
    use = (card.extra or {}).get("intended_use") or (
        "intended use not stated in the model card: research and engineering use only"
    )
    return (
        f'<p class="modelline" id="modelline">Model: <b>{esc(name)}</b> '
        f"({esc(card.architecture)}, {len(card.class_names)} classes). Intended use: "
        f"{esc(use)}</p>"
    )


def _uncertified(header: dict[str, Any], card: Any) -> str:
    """A plain warning when the counted cells carry no stated error: the card certifies no
    counting threshold and the run did not set one (``--min-confidence``)."""
    if card.confidence_threshold is not None:
        return ""
    used = header.get("settings", {}).get("min_confidence")
    why = (card.calibration or {}).get("reason") or "the model was never calibrated"
    return (
        '<div class="flag ood" id="uncertified">This model certifies no counting threshold '
        f"({esc(why)}): cells were counted at confidence {esc(str(used))} or above with no "
        "stated error among them; review the counted cells too.</div>"
    )


_LEGEND = (
    '<p class="legend">Frames and boxes:'
    '<span style="background:#8bc34a"></span>counted by the model'
    '<span style="background:#ff9800"></span>under review, not counted (uncertain, or unlike '
    "the training images)"
    '<span style="background:#1565c0"></span>confirmed by a technologist</p>'
)


def _rows(pairs: list[tuple[str, Any]], table_id: str, cls: str = "meta") -> str:
    body = "".join(
        f'<tr><th>{esc(str(k))}</th><td data-key="{esc(str(k))}">'
        f"{esc(printable_name(str(v)))}</td></tr>"
        for k, v in pairs
    )
    return f'<table class="{cls}" id="{table_id}">{body}</table>'


def _meta_table(results: SampleResults) -> str:
    header, diff = results.header, results.diff
    sessions = results.folder.sessions()
    lab = results.lab
    cells = len(results.cells)
    confirmed = sum(c.confirmed for c in results.cells)
    status = (
        f"reviewed: {confirmed} of {cells} cells confirmed by a technologist"
        if confirmed
        else "pre-classified by the model; not yet reviewed"
    )
    target = lab.get("target_cells") or 0
    progress = f"{diff.wbc} WBC counted" + (
        f" of a target of {target} ({'reached' if diff.reached else 'not reached'})"
        if target
        else ""
    )
    pairs = [
        ("sample", results.folder.sample),
        ("run started", header.get("created", "")),
        ("sessions", f"{len(sessions)} (last {sessions[-1]['time']})" if sessions else "0"),
        ("report written", now_iso()),
        ("operator", ", ".join(results.operators) or "(not given: --operator)"),
        ("source", header.get("source", {}).get("uri", "")),
        ("mode", header["settings"].get("mode", "")),
        ("counting", progress),
        ("status", status),
        ("files that could not be read", results.errors),
    ]
    return _rows(pairs, "meta")


def _card_table(header: dict[str, Any], card: Any) -> str:
    """The model card in short: what a reader signing off the differential needs, in words
    (`wbc-edge info --json MODEL` prints all of it)."""
    from wbc_edge.calibration import certificate_text
    from wbc_edge.model.adaptation import adaptation_notes, adaptation_summary
    from wbc_edge.runtime.info import metrics_text, training_text

    model = header["model"]
    roles = ", ".join(f"{c} ({card.roles[c]})" for c in card.class_names)
    x = card.extra
    pairs: list[tuple[str, Any]] = [
        ("file", Path(model.get("file", "")).name),
        ("sha256", model.get("sha256", "")),
        ("architecture", card.architecture),
        ("input", f"{card.preprocess.input_size} px, {card.preprocess.channel_order}"),
        ("classes (role)", roles),
        ("trained on (data fingerprint)", card.data_fingerprint or "(not recorded)"),
    ]
    trained = training_text(card)
    if trained:
        pairs.append(("training", trained))
    metrics = metrics_text(dict(sorted(card.metrics.items())))
    pairs.append(("measured", metrics or "not measured for this model"))
    pairs.append(
        (
            "confidence",
            f"temperature {card.temperature:g}; "
            + (certificate_text(card.calibration) or "no counted-cell certificate"),
        )
    )
    if card.ood is not None:
        pairs.append(
            (
                "out-of-distribution check",
                f"fitted on {card.ood.fitted_on} crops, threshold {card.ood.threshold:.2f}",
            )
        )
    summary = adaptation_summary(card)
    if summary:
        pairs.append(("adaptation", summary))
        pairs += [("adaptation note", note) for note in adaptation_notes(card)]
    for key, value in (x.get("provenance") or {}).items():
        pairs.append((f"provenance: {key}", value))
    if x.get("intended_use"):
        pairs.append(("intended use", x["intended_use"]))
    settings = header["settings"]
    pairs.append(("min. confidence (below: review)", settings.get("min_confidence")))
    return _rows(pairs, "card")


def _thumb(cell: ReviewedCell, crops: dict[str, str | None]) -> str:
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


def _flags(results: SampleResults, crops: dict[str, str | None]) -> str:
    rules = results.rules
    rule_text = (
        f"rules: immature granulocytes &gt; {rules.ig_percent:g}% of WBC; blasts &gt; "
        f"{rules.blasts}; nucleated red cells &gt; {rules.nrbc_per_100_wbc:g} per 100 WBC; "
        "cells under review raise none"
    )
    if not results.flags:
        diff = results.diff
        if diff.ood_warning or not diff.wbc:
            # Not the reassuring green box: no flag was raised because too little was counted
            # to raise one, and the page must not read as "all clear".
            if not diff.counted:
                why = "nothing was counted"
            elif diff.mostly_review:
                why = "most cells await review, so the counted ones cannot be trusted"
            elif not diff.wbc:
                why = "no white cell was counted"
            else:
                why = "many cells look unlike the training images"
            return (
                f'<div class="withheld" id="noflag-withheld">No flag can be judged from this '
                f"run: {why} ({esc(diff.banner)}). Flags come from counted cells only "
                f"({rule_text}).</div>"
            )
        return f'<div class="noflag" id="noflag">No flag raised ({rule_text}).</div>'
    by_id = {c.id: c for c in results.cells}
    out = []
    for flag in results.flags:
        out.append(f'<div class="flag" data-rule="{esc(flag.rule)}">{esc(flag.message)}</div>')
        shown = flag.cells[:24]
        more = f" (24 of {len(flag.cells)} shown)" if len(flag.cells) > 24 else ""
        out.append(f'<div class="cells flagcells" data-rule="{esc(flag.rule)}">')
        out.extend(_thumb(by_id[i], crops) for i in shown if i in by_id)
        out.append(f"</div><p>{len(flag.cells)} cells raised it{more}.</p>")
    if results.diff.mostly_review:
        out.append(
            '<p class="flagnote" id="flagnote">These flags come from the few cells counted in a '
            "run where most cells await review: confirm them by review before acting on them.</p>"
        )
    out.append(f"<p>{rule_text}</p>")
    return "\n".join(out)


def _differential(diff: LabDifferential, verified: LabDifferential) -> str:
    absolute = diff.wbc_count is not None
    heads = ["class", "count", "% of WBC"] + (["10^9/L"] if absolute else [])
    if verified.confirmed:
        heads += ["confirmed", "% confirmed"]
    out = ['<table id="differential"><thead><tr>']
    out += [f"<th>{h}</th>" for h in heads] + ["</tr></thead><tbody>"]
    for c in diff.wbc_classes:
        cells = [esc(c), str(diff.counts[c]), f"{diff.percent(c):.1f}"]
        if absolute:
            cells.append(f"{diff.absolute(c):.2f}")
        if verified.confirmed:
            cells += [str(verified.counts[c]), f"{verified.percent(c):.1f}"]
        row = "".join(f"<td>{v}</td>" for v in cells)
        out.append(f'<tr class="row {diff.roles[c]}" data-class="{esc(c)}">{row}</tr>')
    total = ["WBC counted", str(diff.wbc), "100.0" if diff.wbc else "-"]
    if absolute:
        total.append(f"{diff.corrected_wbc:.2f}")
    if verified.confirmed:
        total += [str(verified.wbc), "100.0" if verified.wbc else "-"]
    out.append('<tr class="total">' + "".join(f"<td>{v}</td>" for v in total) + "</tr>")
    out.append("</tbody></table>")
    apart = [
        (
            "nucleated red cells",
            f"{diff.nrbc} ({diff.nrbc_per_100_wbc:.1f} per 100 WBC)",
            ", ".join(diff.with_role(NRBC)),
        ),
        ("platelets", diff.platelets, ", ".join(diff.with_role(PLATELET))),
    ]
    apart += [(f"{c} (other)", diff.counts[c], "") for c in diff.with_role(OTHER)]
    review = ", ".join(f"{c} {n}" for c, n in diff.review.items() if n)
    ood = f"; {diff.review_ood} judged out-of-distribution" if diff.review_ood else ""
    apart.append(("under review (not counted until confirmed)", diff.in_review, review + ood))
    apart.append((f"excluded by review ({EXCLUDED})", diff.excluded, ""))
    body = "".join(
        f'<tr data-key="{esc(k)}"><td>{esc(k)}</td><td>{esc(str(v))}</td><td>{esc(w)}</td></tr>'
        for k, v, w in apart
    )
    out.append(
        '<table id="apart"><thead><tr><th>not in the WBC differential</th><th>count</th>'
        f"<th>classes</th></tr></thead><tbody>{body}</tbody></table>"
    )
    if diff.wbc_count is not None:
        out.append(
            f"<p>Absolute counts from the analyser's WBC {diff.wbc_count:g} x 10^9/L, "
            "corrected for nucleated red cells.</p>"
        )
    return "\n".join(out)


def _gallery(results: SampleResults, crops: dict[str, str | None], per_class: int) -> str:
    groups: dict[str, list[ReviewedCell]] = {}
    for cell in results.cells:
        groups.setdefault(cell.label, []).append(cell)
    order = [*results.card.class_names, EXCLUDED]
    out = ["<h2>Cells by class</h2>", _LEGEND]
    for name in [c for c in order if c in groups]:
        cells = groups[name]
        # Under review first (least confident first), then the rest in arrival order.
        unsure = sorted((c for c in cells if c.needs_review), key=lambda c: c.record.prob)
        sure = [c for c in cells if not c.needs_review]
        kept = (unsure + sure)[:per_class]
        shown = f"{len(kept)} shown of {len(cells)}"
        out.append(f'<section class="gallery" data-class="{esc(name)}">')
        out.append(f'<h3>{esc(name)} <small>({shown})</small></h3><div class="cells">')
        out.extend(_thumb(c, crops) for c in kept)
        out.append("</div></section>")
    return "\n".join(out)


def _fields(results: SampleResults, limit: int) -> str:
    folder = results.folder
    by_field: dict[str, list[ReviewedCell]] = {}
    for cell in results.cells:
        by_field.setdefault(cell.record.field_id, []).append(cell)
    saved = [f for f in by_field if folder.field_path(f).is_file()]
    if not saved:
        return ""
    out = [f"<h2>Fields</h2><p>{min(limit, len(saved))} shown of {len(saved)}.</p>", _LEGEND]
    out.append('<div class="fields">')
    for fid in saved[:limit]:
        meta = folder.field_meta(fid) or {}
        data = _image_b64(folder.field_path(fid), 320)
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
    folder: SampleFolder | str | Path,
    path: str | Path | None = None,
    rules: FlagRules | None = None,
    per_class: int = PER_CLASS,
) -> Path:
    """Rebuild the report of ``folder`` (default ``<folder>/report.html``), atomically."""
    folder = folder if isinstance(folder, SampleFolder) else SampleFolder.open(folder)
    path = report_path(path) if path is not None else folder.report_path
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(load_results(folder, rules), per_class=per_class)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
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
    """A copy of the frame with every cell's box and label (orange: in review, uncertain or
    out-of-distribution; green: counted)."""
    import cv2

    image = image_bgr.copy()
    scale = max(0.4, min(image.shape[:2]) / 600)
    for r in records:
        x1, y1, x2, y2 = r.box
        color = (0, 165, 255) if r.uncertain or r.ood else (0, 200, 0)  # review: never counted
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), color, max(1, round(2 * scale)))
        label = f"{r.label} {r.prob:.2f}"
        org = (x1 + 3, max(y1 + round(16 * scale), 12))
        cv2.putText(image, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (0, 0, 0), 3)
        cv2.putText(image, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, color, 1)
    return image
