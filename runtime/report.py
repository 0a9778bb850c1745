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
mode) with the cells boxed, under a legend of the colours. The tables and flags are
:mod:`~wbc_edge.runtime.report_tables`, the thumbnails and fields
:mod:`~wbc_edge.runtime.report_images`; this module lays out the page and writes it.
"""

from __future__ import annotations

from html import escape as esc
from pathlib import Path
from typing import Any

from wbc_edge.runtime.flags import FlagRules
from wbc_edge.runtime.options import REPORT_PER_CLASS
from wbc_edge.runtime.report_images import fields_section, gallery, image_b64
from wbc_edge.runtime.report_tables import (
    card_table,
    differential_tables,
    flags_section,
    meta_table,
)
from wbc_edge.runtime.results import SampleResults, load_results
from wbc_edge.runtime.sample import SampleFolder

PER_CLASS = REPORT_PER_CLASS  # thumbnails per class (under-review cells are kept first)
FIELDS = 40  # fields shown in the per-field view

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
    crops = {c.id: image_b64(folder.crop_path(c.id), 96) for c in results.cells}
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
        meta_table(results),
        "<h2>Model</h2>",
        card_table(header, card),
        "<h2>Flags</h2>",
        flags_section(results, crops),
        "<h2>Differential</h2>",
        differential_tables(diff, results.verified),
        gallery(results, crops, per_class),
        fields_section(results, fields),
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
