"""PNG plots of a bench report: latency and throughput against batch size; accuracy against
latency (the trade-off a deployment picks from). matplotlib is optional on a runtime-only
device: without it the plots are skipped with a warning and the tables still get written."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_plot(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, (ax_lat, ax_tp) = plt.subplots(1, 2, figsize=(11, 4.2))
    for row in report["rows"]:
        batches = sorted(int(b) for b in row["batches"])
        stats = [row["batches"][str(b)] for b in batches]
        p50 = [s["p50_ms"] for s in stats]
        p90 = [s["p90_ms"] for s in stats]
        label = f"{row['name']} ({row['role']})"
        line = ax_lat.plot(batches, p50, marker="o", label=label)[0]
        ax_lat.fill_between(batches, p50, p90, color=line.get_color(), alpha=0.15)
        ax_tp.plot(batches, [s["images_per_s"] for s in stats], marker="o", label=label)
    from matplotlib.ticker import FuncFormatter, ScalarFormatter

    for ax in (ax_lat, ax_tp):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.set_xlabel("batch size")
        ax.grid(True, which="both", alpha=0.3)
    ax_lat.set_ylabel("latency per batch, ms (p50; band to p90)")
    ax_tp.set_ylabel("throughput, images/s")
    ax_tp.legend(fontsize=8)
    fig.suptitle(f"wbc-edge bench — {report['machine']['cpu']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def accuracy_plot(report: dict[str, Any], path: Path) -> Path | None:
    """Accuracy against latency per image at the smallest batch measured; models timed without
    an accuracy (random-init references) appear as dashed lines at their latency. None when no
    row has an accuracy."""
    from matplotlib.ticker import FuncFormatter

    def per_image(row: dict[str, Any]) -> tuple[float, int]:
        b = min(int(k) for k in row["batches"])
        return row["batches"][str(b)]["p50_ms"] / b, b

    scored = [r for r in report["rows"] if r.get("accuracy") is not None]
    if not scored:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, row in enumerate(scored):
        x, _ = per_image(row)
        y = 100 * row["accuracy"]
        ax.scatter([x], [y], s=70, marker="*" if row["role"] == "teacher" else "o", zorder=3)
        # alternate label sides so models with equal accuracy do not print over each other
        ax.annotate(
            row["name"],
            (x, y),
            textcoords="offset points",
            xytext=(7, 8 if i % 2 == 0 else -14),
            fontsize=8,
        )
    for row in report["rows"]:
        if row.get("accuracy") is None:
            x, _ = per_image(row)
            ax.axvline(x, linestyle="--", color="grey", linewidth=1)
            ax.annotate(
                f"{row['name']} (latency only)",
                (x, 0.02),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=7,
                color="grey",
                xytext=(-9, 0),
                textcoords="offset points",
            )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.set_xlabel(f"latency per image at batch {per_image(scored[0])[1]}, ms (p50)")
    ax.set_ylabel("accuracy, %")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("accuracy against latency (up and left is better)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(report: dict[str, Any], out: Path, name: str) -> list[Path]:
    """The PNGs written (``<name>-latency.png``, ``<name>-accuracy.png`` when there is data)."""
    from wbc_edge.console import console

    try:
        _pyplot()
    except ImportError:
        console.print(
            "[yellow]warning:[/] matplotlib is not installed, so no plots: "
            "`pip install matplotlib` (the tables are written all the same)"
        )
        return []
    written = [latency_plot(report, out / f"{name}-latency.png")]
    acc = accuracy_plot(report, out / f"{name}-accuracy.png")
    if acc is not None:
        written.append(acc)
    return written
