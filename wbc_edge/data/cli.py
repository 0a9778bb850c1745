"""``wbc-edge data ...``: check, split, import-pbc, synth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("split")
def split_cmd(
    root: Annotated[Path, typer.Argument(help="ImageFolder tree: one sub-folder per class.")],
    out: Annotated[Path, typer.Option("--out", help="Manifest CSV to write.")],
    seed: Annotated[
        int | None, typer.Option(help="Random seed; the same seed gives the same file. [42]")
    ] = None,
    ratios: Annotated[
        str | None, typer.Option(help="train,val,test fractions per class. [0.8,0.1,0.1]")
    ] = None,
    group_by: Annotated[
        str | None,
        typer.Option(
            "--group-by",
            help="Regex on the file name; its first group (or whole match) names a patient or "
            "slide whose images stay in one split.",
        ),
    ] = None,
) -> None:
    """Stratified train/val/test manifest; identical images never straddle two splits."""
    from wbc_edge.console import console
    from wbc_edge.data.manifest import write_manifest
    from wbc_edge.data.split import DEFAULT_SEED, make_split
    from wbc_edge.errors import require_dir

    require_dir(root, "image folder", "pass a folder with one sub-folder per class")
    result = make_split(root, DEFAULT_SEED if seed is None else seed, ratios, group_by)
    write_manifest(result.rows, out)
    _print_split(result, console)
    console.print(f"wrote {len(result.rows)} rows to {out}", highlight=False)


def _print_split(result, console) -> None:  # noqa: ANN001 - rich types stay out of module scope
    from rich.table import Table

    from wbc_edge.data.manifest import SPLITS

    counts = result.counts()
    table = Table(title="split per class (target in brackets)")
    table.add_column("class")
    for s in SPLITS:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    for c, per in counts.items():
        cells = [
            f"{per[s]}" if per[s] == result.targets[c][s] else f"{per[s]} ({result.targets[c][s]})"
            for s in SPLITS
        ]
        table.add_row(c, *cells, str(sum(per.values())))
    totals = [sum(counts[c][s] for c in counts) for s in SPLITS]
    table.add_row("all", *map(str, totals), str(len(result.rows)), style="bold")
    console.print(table)

    dups = result.duplicate_units()
    console.print(
        f"{len(dups)} group(s) of byte-identical images kept together "
        f"({sum(len(u.files) for u, _ in dups)} files)",
        highlight=False,
    )
    for unit, split in dups[:20]:
        names = ", ".join(f"{f.label}/{f.path.name}" for f in unit.files)
        console.print(f"  {split}: {names}", highlight=False)
    if len(dups) > 20:
        console.print(f"  ... and {len(dups) - 20} more", highlight=False)
    groups = [u for u in result.units if any(r.startswith("group ") for r in u.reasons)]
    if groups:
        console.print(f"{len(groups)} --group-by group(s) of several files kept whole")
    if result.unmatched:
        console.print(
            f"[yellow]warning:[/] --group-by matched no key in {result.unmatched} file name(s); "
            "each of those is its own group",
            highlight=False,
        )
