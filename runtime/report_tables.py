"""The text sections of the archived report: the sample's and the model card's tables, the
flags with the cells that raised them, and the differential as a lab reports it.

Each function returns one HTML fragment for :func:`~wbc_edge.runtime.report.render_report`;
every name that came from a file, a card or a person is escaped.
"""

from __future__ import annotations

from html import escape as esc
from pathlib import Path
from typing import Any

from wbc_edge.model.roles import NRBC, OTHER, PLATELET
from wbc_edge.runtime.differential import EXCLUDED, LabDifferential
from wbc_edge.runtime.report_images import thumb
from wbc_edge.runtime.results import SampleResults
from wbc_edge.runtime.sinks import now_iso, printable_name


def _rows(pairs: list[tuple[str, Any]], table_id: str, cls: str = "meta") -> str:
    body = "".join(
        f'<tr><th>{esc(str(k))}</th><td data-key="{esc(str(k))}">'
        f"{esc(printable_name(str(v)))}</td></tr>"
        for k, v in pairs
    )
    return f'<table class="{cls}" id="{table_id}">{body}</table>'


def meta_table(results: SampleResults) -> str:
    """The sample: dates, sessions, operators, source, counting progress and review status."""
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


def card_table(header: dict[str, Any], card: Any) -> str:
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


def flags_section(results: SampleResults, crops: dict[str, str | None]) -> str:
    """Each raised flag with the cells that raised it, or why none was raised (a withheld
    verdict, never the green box, when too little was counted to judge)."""
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
        out.extend(thumb(by_id[i], crops) for i in shown if i in by_id)
        out.append(f"</div><p>{len(flag.cells)} cells raised it{more}.</p>")
    if results.diff.mostly_review:
        out.append(
            '<p class="flagnote" id="flagnote">These flags come from the few cells counted in a '
            "run where most cells await review: confirm them by review before acting on them.</p>"
        )
    out.append(f"<p>{rule_text}</p>")
    return "\n".join(out)


def differential_tables(diff: LabDifferential, verified: LabDifferential) -> str:
    """The WBC differential (with the confirmed counts beside it once a review began) and the
    cells kept out of it: nucleated red cells, platelets, others, under review, excluded."""
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
