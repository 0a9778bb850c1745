"""What an adapted model's card says a lab must know before trusting its counts.

``wbc-edge adapt`` prints these notes when it writes the model; ``wbc-edge info`` and the HTML
report print them again from the card, so they travel with the model (runtime-only installs
included: no torch here).
"""

from __future__ import annotations

from typing import Any

from wbc_edge.model.card import ModelCard


def adaptation_summary(card: ModelCard) -> str | None:
    """One line: where, on what and from which model the card was adapted; None if it was not."""
    a: dict[str, Any] | None = card.extra.get("adaptation")
    if not a:
        return None
    classes = ", ".join(a.get("classes_seen", [])) or "no class"
    where = (
        f"{a.get('fields')} fields ({a.get('crops')} crops of {classes})"
        if a.get("fields")
        else f"{a.get('crops')} crops of {classes}"
    )
    return (
        f"adapted at a site on {where} from {a.get('data')}, "
        f"{a.get('steps')} steps from {a.get('from_model')}"
        + (f", taught by {a['teacher']}" if a.get("teacher") else "")
        + f"; data fingerprint {a.get('data_fingerprint')}"
    )


def adaptation_notes(card: ModelCard) -> list[str]:
    """What a lab engineer must know about an adapted model before trusting its counts: the
    classes its site data lacked, a missing ``--pbc`` and what the OOD check now compares with.
    ``adapt`` prints these; they come from the card, so anyone can print them again."""
    a = card.extra.get("adaptation")
    if not a:
        return []
    notes = []
    unseen = [c for c in card.class_names if c not in set(a.get("classes_seen", []))]
    if unseen:
        notes.append(
            f"not in the site data: {', '.join(unseen)}. The adapted model never saw these "
            "classes at this microscope"
            + (
                " (it keeps what it learnt of them at its training lab, --pbc)"
                if a.get("mixed_in")
                else ""
            )
            + ", and it can call such cells one of the classes it did see, confidently: label "
            "examples of them and adapt again before counting them."
        )
    if not a.get("mixed_in"):
        notes.append(
            "no --pbc: every batch held site crops only, so the classes the site lacks can be "
            "forgotten; pass the model's training manifest (e.g. "
            "benchmarks/results/pbc9-split.csv with its images) to keep them."
        )
    ood = a.get("ood") or {}
    if ood.get("refit"):
        pooled = ood.get("training_crops", 0)
        notes.append(
            f"out-of-distribution check refitted on {ood['site_crops']} site crops"
            + (
                f" and {pooled} training crops: images that look like this site's or the "
                "training lab's no longer raise the warning, whatever their class; images "
                "unlike both (another stain, lamp or lab) still do."
                if pooled
                else ": images that look like this site's no longer raise the warning, "
                "whatever their class; images unlike them (another stain, lamp or lab, the "
                "training lab's included) still do."
            )
        )
    elif ood and card.ood is not None:
        notes.append(
            f"out-of-distribution check kept from the training lab: {ood['site_crops']} site "
            f"crops are too few to fit it ({ood['needs']} needed, or pass --pbc to pool the "
            "training crops in), so runs will keep saying this site's images look unlike the "
            "training data: label more fields."
        )
    elif ood:
        notes.append(
            f"no out-of-distribution check: the model had none and {ood['site_crops']} site "
            f"crops are too few to fit one ({ood['needs']} needed)."
        )
    # adapt refits neither the temperature nor the counted-cell threshold: both still describe
    # the training lab's validation split.
    if card.calibration or card.temperature != 1.0 or card.confidence_threshold is not None:
        notes.append(
            f"confidence calibration (temperature {card.temperature:g}"
            + (
                f", review threshold {card.confidence_threshold:g}"
                if card.confidence_threshold is not None
                else ""
            )
            + ") was fitted at the training lab, not at this site: confidences can be "
            "over-confident here, so review a sample of counted cells before trusting them."
        )
    return notes
