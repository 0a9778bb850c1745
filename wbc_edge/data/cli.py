"""``wbc-edge data ...``: check, split, join, import-pbc, synth."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from wbc_edge.data.check import DEFAULT_MIN_SIZE, DEFAULT_NEAR_DUP_THRESHOLD
from wbc_edge.data.split import DEFAULT_RATIOS, DEFAULT_SEED
from wbc_edge.model.scale import DEFAULT_SCALE_SAMPLE

if TYPE_CHECKING:  # the commands import these lazily
    from rich.console import Console

    from wbc_edge.data.check import CheckReport
    from wbc_edge.data.split import SplitResult

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None)  # plain help: see wbc_edge.cli

MAX_LISTED = 200  # problems printed; --json holds them all


@app.command("check")
def check_cmd(
    root: Annotated[Path, typer.Argument(help="ImageFolder tree: one sub-folder per class.")],
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit with status 1 when any problem is found.")
    ] = False,
    min_size: Annotated[
        int | None,
        typer.Option(help=f"Smallest usable image side in pixels [default: {DEFAULT_MIN_SIZE}]."),
    ] = None,
    near_dup_threshold: Annotated[
        int | None,
        typer.Option(
            help="Max Hamming distance (of 256 pHash bits) for a near-duplicate; -1 skips the "
            f"perceptual hash [default: {DEFAULT_NEAR_DUP_THRESHOLD}]."
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the full report as JSON here.")
    ] = None,
) -> None:
    """Decode every image; report broken, tiny, odd-mode, duplicate and near-duplicate files."""
    import json

    from wbc_edge.console import console
    from wbc_edge.data.check import DEFAULT_MIN_SIZE, DEFAULT_NEAR_DUP_THRESHOLD, check_tree
    from wbc_edge.errors import require_dir

    require_dir(root, "image folder", "pass a folder with one sub-folder per class")
    report = check_tree(
        root,
        DEFAULT_MIN_SIZE if min_size is None else min_size,
        DEFAULT_NEAR_DUP_THRESHOLD if near_dup_threshold is None else near_dup_threshold,
    )
    _print_check(report, console)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        console.print(f"wrote the report to {json_out}", highlight=False)
    if strict and not report.ok:
        raise typer.Exit(code=1)


def _print_check(report: CheckReport, console: Console) -> None:
    from rich.table import Table

    from wbc_edge.console import print_table
    from wbc_edge.data.check import KINDS

    table = Table(title=f"data check: {report.root}")
    table.add_column("class")
    table.add_column("files", justify="right")
    for k in KINDS:
        table.add_column(k.replace("_", " "), justify="right")
    by_class = report.by_class()
    for c, n in report.files.items():
        table.add_row(c, str(n), *(str(by_class[c][k] or "") for k in KINDS))
    kinds = report.kinds()
    table.add_row(
        "all", str(sum(report.files.values())), *(str(kinds[k]) for k in KINDS), style="bold"
    )
    print_table(table)
    for p in report.problems[:MAX_LISTED]:
        console.print(f"{p.kind:>14}  {p.label}/{p.path.name}: {p.detail}", highlight=False)
    if len(report.problems) > MAX_LISTED:
        console.print(f"... and {len(report.problems) - MAX_LISTED} more (see --json)")
    if report.ok:
        console.print("[green]no problems found[/]")
    else:
        console.print(
            f"[yellow]{len(report.problems)} problem(s)[/]: "
            + ", ".join(f"{kinds[k]} {k}" for k in KINDS if kinds[k]),
            highlight=False,
        )


@app.command("split")
def split_cmd(
    root: Annotated[Path, typer.Argument(help="ImageFolder tree: one sub-folder per class.")],
    out: Annotated[Path, typer.Option("--out", help="Manifest CSV to write.")],
    seed: Annotated[
        int | None,
        typer.Option(
            help=f"Random seed; the same seed gives the same file [default: {DEFAULT_SEED}]."
        ),
    ] = None,
    ratios: Annotated[
        str | None,
        typer.Option(
            help="train,val,test fractions per class "
            f"[default: {','.join(f'{r:g}' for r in DEFAULT_RATIOS)}]."
        ),
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


@app.command("join")
def join_cmd(
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            metavar="<lab=path>",
            help="One lab's labelled images as LAB=PATH: a split manifest (its split is kept) "
            "or a folder of class folders (split here). Repeat it for each lab.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Joined manifest CSV to write.")],
    group_by: Annotated[
        list[str] | None,
        typer.Option(
            "--group-by",
            metavar="<lab=regex>",
            help="LAB=REGEX: the first group of this file-name pattern names a patient or slide "
            "of that lab, kept in one split (e.g. deepapl='^(P\\d+)_'). Repeatable.",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help=f"Random seed of the folders' splits [default: {DEFAULT_SEED}]."),
    ] = None,
    ratios: Annotated[
        str | None,
        typer.Option(
            help="train,val,test fractions per class of each folder "
            f"[default: {','.join(f'{r:g}' for r in DEFAULT_RATIOS)}]."
        ),
    ] = None,
) -> None:
    """Join several labs into one manifest with a lab column (the model's ten classes only)."""
    from collections import Counter

    from rich.table import Table

    from wbc_edge.console import console, print_table
    from wbc_edge.data.labs import combine_sources, parse_sources
    from wbc_edge.data.manifest import SPLITS, write_manifest
    from wbc_edge.errors import UserError

    if out.exists():
        raise UserError(f"{out} exists: joined manifests are never overwritten; pick a new --out")
    rows = combine_sources(parse_sources(data, group_by or []), seed=seed, ratios=ratios)
    write_manifest(rows, out)
    counts = Counter((r.lab, r.split) for r in rows)
    table = Table(title=f"joined manifest {out}")
    table.add_column("lab")
    for sp in SPLITS:
        table.add_column(sp, justify="right")
    table.add_column("classes", justify="right")
    for lab in sorted({r.lab for r in rows}):
        n_classes = len({r.label for r in rows if r.lab == lab})
        table.add_row(lab, *(str(counts[(lab, sp)]) for sp in SPLITS), str(n_classes))
    print_table(table)
    console.print(f"wrote {len(rows)} rows to {out}", highlight=False)


def _print_split(result: SplitResult, console: Console) -> None:
    from rich.table import Table

    from wbc_edge.console import print_table
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
    print_table(table)

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


@app.command("import-pbc")
def import_pbc_cmd(
    pbc_dir: Annotated[
        Path, typer.Argument(help="The unpacked PBC download (holding PBC_dataset_normal_DIB/).")
    ],
    out: Annotated[Path, typer.Option("--out", help="New folder for the 9-class tree.")],
    link: Annotated[
        bool, typer.Option("--link", help="Hard-link instead of copying (same file system).")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Write into a non-empty --out, replacing same-named files."),
    ] = False,
) -> None:
    """PBC's 8 folders -> the 9 pbc9 classes (promyelocytes split out of ig by PMY_)."""
    from rich.table import Table

    from wbc_edge.console import console, print_table
    from wbc_edge.data.import_pbc import import_pbc

    result = import_pbc(pbc_dir, out, link=link, force=force)
    table = Table(title=f"imported into {out}")
    table.add_column("class")
    table.add_column("images", justify="right")
    for c in sorted(result.counts):
        table.add_row(c, str(result.counts[c]))
    table.add_row("all", str(sum(result.counts.values())), style="bold")
    print_table(table)
    if result.unplaced:
        names = ", ".join(p.name for p in result.unplaced[:5])
        console.print(
            f"[yellow]warning:[/] {len(result.unplaced)} file(s) in ig have no known prefix "
            f"(PMY_, MY_, MMY_, IG_) and were not imported: {names}"
            + (" ..." if len(result.unplaced) > 5 else ""),
            highlight=False,
        )
    if result.ignored:
        console.print(f"skipped {len(result.ignored)} non-image file(s)", highlight=False)


@app.command("scale")
def scale_cmd(
    source: Annotated[
        Path,
        typer.Argument(
            help="A split manifest (its train split is measured), or a folder of images "
            "(crops in class folders, or smear fields; a VOC folder's JPEGImages/)."
        ),
    ],
    split: Annotated[
        str | None, typer.Option(help="Manifest split to measure [default: train].")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            help="Measure an evenly spaced sample of this many images; 0 = all "
            f"[default: {DEFAULT_SCALE_SAMPLE}]."
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the measurement as JSON here.")
    ] = None,
) -> None:
    """Median red-cell diameter (px) of the images and the crop's field of view in red cells.

    Training records the same measurement of its train split in the model card; the finder
    cuts crops of that field of view in every field.
    """
    import json

    from wbc_edge.console import console
    from wbc_edge.data.manifest import read_manifest
    from wbc_edge.data.scan import IMAGE_SUFFIXES
    from wbc_edge.errors import UserError
    from wbc_edge.model.scale import measure_files

    if source.is_file():
        paths = [str(r.path) for r in read_manifest(source, split or "train")]
    elif source.is_dir():
        root = source / "JPEGImages" if (source / "JPEGImages").is_dir() else source
        paths = [str(f) for f in root.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        raise UserError(f"{source} is neither a manifest nor a folder of images")
    if not paths:
        raise UserError(f"{source} holds no images (split {split or 'train'})")
    n = DEFAULT_SCALE_SAMPLE if limit is None else (limit or None)
    try:
        scale = measure_files(paths, n)
    except ValueError as exc:
        raise UserError(f"{source}: {exc}") from exc
    console.print(
        f"{source}: red-cell diameter {scale.rbc_px:.1f} px (median; IQR "
        f"{scale.rbc_px_q25:.1f}-{scale.rbc_px_q75:.1f}) over {scale.measured} of "
        f"{scale.sampled} images; shorter side {scale.crop_px:.0f} px = "
        f"{scale.fov_rbc:.2f} red-cell diameters",
        highlight=False,
        soft_wrap=True,
    )
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"source": str(source), "images": len(paths), **scale.to_dict()}
        json_out.write_text(json.dumps(payload, indent=2) + "\n")


from wbc_edge.data.synth_cli import synth  # noqa: E402

app.command("synth")(synth)
