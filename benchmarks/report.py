"""The bench report as a console table, JSON and markdown: the same numbers in each.

The JSON is the record (every figure, the machine, the command, the date); the markdown and the
table are views of it, one line per model and batch size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wbc_edge.benchmarks.machine import describe
from wbc_edge.records import markdown_table, write_record

COLUMNS = [
    "model", "role", "backend", "batch", "mean ms", "p50 ms", "p90 ms", "p99 ms", "img/s",
    "pre ms/img", "size MB", "params", "MACs", "peak RSS MB", "accuracy", "macro-F1",
    "agreement", "speed-up", "mJ/img",
]  # fmt: skip


# The console gets the columns that decide between models; the files get all of them.
CONSOLE_COLUMNS = [
    "model", "backend", "batch", "p50 ms", "p99 ms", "img/s", "size MB", "MACs", "peak RSS MB",
    "accuracy", "agreement", "speed-up", "mJ/img",
]  # fmt: skip


def visible(columns: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """``columns`` (of COLUMNS) without those that are n/a in every row (energy off a Jetson)."""
    keep = [
        COLUMNS.index(c)
        for c in columns
        if any(not r[COLUMNS.index(c)].startswith("n/a") for r in rows)
    ]
    return [COLUMNS[i] for i in keep], [[r[i] for i in keep] for r in rows]


def si(value: float | None) -> str:
    """1234567 -> '1.23M'; None -> 'n/a'."""
    if value is None:
        return "n/a"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _pct(value: float | None, row: dict[str, Any]) -> str:
    if value is None:
        return "n/a (random init)" if row.get("untrained") else "n/a"
    return f"{100 * value:.2f}%"


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """One list of cell strings per (model, batch size), in COLUMNS order."""
    out = []
    for row in report["rows"]:
        backend = row["backend"]
        if row.get("providers"):
            backend += f" ({row['providers'][0].replace('ExecutionProvider', '')})"
        for b, s in row["batches"].items():
            out.append(
                [
                    row["name"],
                    row["role"],
                    backend,
                    str(b),
                    _num(s["mean_ms"], ".2f"),
                    _num(s["p50_ms"], ".2f"),
                    _num(s["p90_ms"], ".2f"),
                    _num(s["p99_ms"], ".2f"),
                    _num(s["images_per_s"], ".1f"),
                    _num(s["preprocess_ms_per_image"], ".3f"),
                    _num(row["size_bytes"] / 1e6, ".2f"),
                    si(row.get("params")),
                    si(row.get("macs")),
                    _num(row.get("peak_rss_mb"), ".0f"),
                    _pct(row.get("accuracy"), row),
                    _pct(row.get("macro_f1"), row),
                    _pct(row.get("agreement"), {}),
                    "n/a" if s.get("speedup") is None else f"{s['speedup']:.1f}x",
                    _num(s.get("energy_mj_per_image"), ".2f"),
                ]
            )
    return out


def _base_name(report: dict[str, Any]) -> str:
    base = report["settings"].get("speedup_against")
    row = next((r for r in report["rows"] if base and r["path"] == base), None)
    return row["name"] if row else "the teacher"


def notes(report: dict[str, Any]) -> list[str]:
    """How each figure was measured, so a reader can judge it."""
    st = report["settings"]
    loop = f"{st['iters']} timed calls" if st["iters"] else f"{st['duration_s']} s of calls"
    lines = [
        f"Latency: wall time of one `predict` call on a preprocessed float32 batch, after "
        f"{st['warmup']} warm-up calls, {loop} per batch size (the GPU backends synchronise "
        "inside predict). img/s = images / total time.",
        "pre ms/img: the model card's preprocessing (resize + normalise) of decoded images, "
        "timed apart from inference.",
        f"Speed-up: {_base_name(report)}'s p50 / this model's p50 at the same batch size.",
        "Load: the 1-minute load average after each model's runs: "
        + ", ".join(f"{r['name']} {r.get('load_avg_1m')}" for r in report["rows"])
        + f" (on {report['machine']['cpu_cores']} cores; above that, other work shared the CPU).",
        "Peak RSS: the peak resident memory of the worker process that ran only this model "
        "(Python, runtime libraries, model, buffers).",
    ]
    by_method: dict[str, list[str]] = {}
    for r in report["rows"]:
        by_method.setdefault(str(r.get("cost_method")), []).append(r["name"])
    methods = "; ".join(f"{m} for {', '.join(names)}" for m, names in by_method.items())
    lines.append(f"Params/MACs (one image; MACs of Conv and Gemm/MatMul/Linear): {methods}.")
    decode = [r["decode_ms_per_image"] for r in report["rows"] if r.get("decode_ms_per_image")]
    if decode:
        lines.append(f"JPEG decode (not in pre ms/img): {min(decode):.2f} ms per image.")
    if st["images"]:
        lines.append(
            f"Accuracy and macro-F1 on {st['images']} images of {st['data']}"
            + (f" (split {st['split']})" if st.get("split") else "")
            + "; agreement = share of images where the model's top-1 matches the teacher's."
        )
    else:
        lines.append("No --data: latency on synthetic images of pbc9's size; no accuracy.")
    untrained = [r["name"] for r in report["rows"] if r.get("untrained")]
    if untrained:
        lines.append(
            f"Random-init weights (timed only, accuracy n/a): {', '.join(untrained)}. Latency "
            "does not depend on the weights' values."
        )
    jetson = report["machine"].get("jetson")
    if jetson and jetson.get("power_source"):
        lines.append(
            "mJ/img: mean board power from tegrastats (VDD_IN, or the sum of rails where the "
            "module has no VDD_IN) during the timed calls x time per image; idle power included."
        )
    else:
        lines.append("mJ/img: n/a, no tegrastats on this machine (Jetson only).")
    return lines


def summary(report: dict[str, Any]) -> list[str]:
    """Per student, the two questions a deployment asks: how much faster than the speed-up
    baseline at the smallest batch, and how many accuracy points from the teacher."""
    teacher = next((r for r in report["rows"] if r["role"] == "teacher"), None)
    lines = []
    for row in report["rows"]:
        if row["role"] != "student":
            continue
        b = str(min(int(k) for k in row["batches"]))
        st = row["batches"][b]
        parts = [f"{row['name']}: p50 {st['p50_ms']:.2f} ms at batch {b}"]
        if st.get("speedup") is not None:
            parts.append(f"{st['speedup']:.1f}x faster than {_base_name(report)}")
        if teacher and teacher.get("accuracy") is not None and row.get("accuracy") is not None:
            delta = 100 * (row["accuracy"] - teacher["accuracy"])
            parts.append(
                f"accuracy {100 * row['accuracy']:.2f}%, {delta:+.2f} points from the teacher's "
                f"{100 * teacher['accuracy']:.2f}%"
            )
        lines.append("; ".join(parts) + ".")
    return lines


def markdown(report: dict[str, Any], title: str = "wbc-edge bench") -> str:
    st = report["settings"]
    cols, rows = visible(COLUMNS, table_rows(report))
    parts = [
        f"# {title}",
        "",
        f"Date: {report['date']}  ",
        f"Command: `{report['command']}`",
        "",
        "## Machine",
        "",
        *[f"- {line}" for line in describe(report["machine"])],
        "",
        *(["## Summary", "", *[f"- {x}" for x in summary(report)], ""] if summary(report) else []),
        "## Results",
        "",
        markdown_table(cols, rows),
        "",
        *(
            ["## Notes", "", *[f"- {n}" for n in report.get("notes", [])], ""]
            if report.get("notes")
            else []
        ),
        "## How it was measured",
        "",
        *[f"- {line}" for line in notes(report)],
        f"- Settings: batch sizes {st['batches']}, threads {st['threads'] or 'default'}, "
        f"device {st['device']}.",
        "",
    ]
    return "\n".join(parts)


def write_reports(report: dict[str, Any], out: Path, name: str) -> list[Path]:
    """``<out>/<name>.json`` and ``<out>/<name>.md``; returns the paths written."""
    return list(write_record(out / name, report, markdown(report)))


def print_table(report: dict[str, Any]) -> None:
    from rich.table import Table

    from wbc_edge.console import console, print_table

    cols, rows = visible(CONSOLE_COLUMNS, table_rows(report))
    table = Table(title="wbc-edge bench", show_lines=False)
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "backend") else "right")
    for r in rows:
        table.add_row(*r)
    print_table(table)
    for line in describe(report["machine"]):
        console.print(line, highlight=False)
