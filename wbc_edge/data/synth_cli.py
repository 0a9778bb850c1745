"""``wbc-edge data synth``: write phantom crops (and optionally smear fields) to a folder.

Imports only typer and the standard library at module level; numpy and OpenCV load when the
command runs. Options default to ``None`` so the library's defaults are the only defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wbc_edge.data.synth_defaults import (
    DEFAULT_DIFFICULTY,
    DEFAULT_FIELD_SIZE,
    DEFAULT_PER_CLASS,
    DEFAULT_SIZE,
)


def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the phantoms into.")],
    per_class: Annotated[
        int | None,
        typer.Option(
            help=f"Crops per class [default: {DEFAULT_PER_CLASS}; 0 with --fields: fields only].",
            show_default=False,
        ),
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(help=f"Crop side in pixels [default: {DEFAULT_SIZE}].", show_default=False),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 0,
    difficulty: Annotated[
        float | None,
        typer.Option(
            help="0..1: wider variation within a class, closer classes "
            f"[default: {DEFAULT_DIFFICULTY}].",
            show_default=False,
        ),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated subset of classes [default: all 10].", show_default=False
        ),
    ] = None,
    fields: Annotated[
        int, typer.Option(help="Also write this many whole smear fields with VOC boxes.")
    ] = 0,
    field_size: Annotated[
        str | None,
        typer.Option(
            help="Field size WIDTHxHEIGHT in pixels "
            f"[default: {DEFAULT_FIELD_SIZE[0]}x{DEFAULT_FIELD_SIZE[1]}].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Draw May-Grünwald-Giemsa-like phantoms: test and demo data, not clinical data.

    Crops of the model's 10 classes (the 9 pbc9 classes plus Blast) go to OUT/<class>/; with
    --fields, smear fields with Pascal-VOC boxes and labels.csv go to OUT/fields/.
    """
    from wbc_edge.console import console
    from wbc_edge.data.synth import make_crops
    from wbc_edge.data.synth_fields import make_fields, parse_field_size

    chosen = [c.strip() for c in classes.split(",") if c.strip()] if classes is not None else None
    options = {"per_class": per_class, "size": size, "difficulty": difficulty}
    given = {k: v for k, v in options.items() if v is not None}
    wh = parse_field_size(field_size) if fields and field_size is not None else None
    if per_class != 0 or not fields:  # --per-class 0 --fields N: fields only
        crops = make_crops(out, seed=seed, classes=chosen, **given)
        console.print(f"wrote {len(crops)} phantom crops to {out}")
    if fields:
        extra = {"difficulty": difficulty, "size": wh}
        given = {k: v for k, v in extra.items() if v is not None}
        made = make_fields(out, fields, seed=seed, classes=chosen, **given)
        console.print(f"wrote {len(made)} phantom fields to {out / 'fields'}")
