"""``wbc-edge finder-eval``: measure the smear-field white-cell finder against boxed fields."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wbc_edge.model.finder import FinderParams


def finder_eval(
    data: Annotated[
        Path,
        typer.Option(
            help="Folder in Pascal-VOC layout (JPEGImages/, Annotations/ with WBC boxes), e.g. "
            "../shared/data/bccd-smears or the fields/ folder of synthetic fields."
        ),
    ],
    iou: Annotated[
        float, typer.Option(help="IoU a found box needs with a WBC box to count as found.")
    ] = 0.5,
    out: Annotated[
        Path | None,
        typer.Option(help="Write <name>.json and <name>.md with the metrics into this folder."),
    ] = None,
    name: Annotated[str, typer.Option(help="File name (without suffix) of the results.")] = (
        "finder-eval"
    ),
    overlays: Annotated[
        Path | None,
        typer.Option(
            help="Write an image per field with a miss or a false find into this folder "
            "(truth green, found blue, false red, missed yellow)."
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Only the first N fields (sorted by name).")
    ] = None,
    sweep: Annotated[
        bool,
        typer.Option(
            "--sensitivity",
            help="Also rerun with each parameter at 0.75x and 1.25x (15 runs) and record "
            "recall/precision per half.",
        ),
    ] = False,
    rbc_px: Annotated[
        float | None,
        typer.Option(
            help="Red-cell diameter in pixels [default: "
            f"{FinderParams.rbc_diameter} of the field's shorter side (BCCD's camera)]. Set it "
            "once per microscope and camera."
        ),
    ] = None,
) -> None:
    """Recall, precision and mean IoU of the white-cell finder on boxed smear fields."""
    import json

    import cv2
    from rich.table import Table

    from wbc_edge.console import console, print_table
    from wbc_edge.errors import UserError
    from wbc_edge.records import command_line, record_header, write_record
    from wbc_edge.runtime.finder_eval import (
        draw_overlay,
        evaluate,
        sensitivity,
        to_markdown,
    )

    if not 0.0 < iou <= 1.0:
        raise UserError(f"--iou {iou}: must be in (0, 1]")
    if rbc_px is not None and rbc_px <= 0:
        raise UserError(f"--rbc-px {rbc_px}: must be a positive number of pixels")
    params = FinderParams(rbc_diameter_px=rbc_px)
    summary, results = evaluate(data, params, iou=iou, limit=limit, show_progress=True)
    summary = {
        **record_header(command_line(f"wbc-edge finder-eval --data {data}")),
        "data": str(data),
        **summary,
    }

    table = Table(title=f"white-cell finder on {data} (IoU >= {iou})")
    for col in ("part", "fields", "WBC boxes", "found", "recall", "precision", "mean IoU", "ms"):
        table.add_column(col, justify="left" if col == "part" else "right", no_wrap=True)
    for part in ("first_half", "second_half", "all"):
        s = summary[part]
        table.add_row(
            part.replace("_", " "),
            str(s["fields"]),
            str(s["wbc_boxes"]),
            str(s["found"]),
            f"{s['recall']:.3f}",
            f"{s['precision']:.3f}",
            f"{s['mean_iou']:.3f}",
            f"{s['ms_per_field']:.1f}",
        )
    print_table(table)
    if sweep:
        with console.status("sensitivity: each parameter at 0.75x and 1.25x"):
            summary["sensitivity"] = sensitivity(data, params, iou=iou, limit=limit)
    print(json.dumps({k: summary["all"][k] for k in ("recall", "precision", "mean_iou")}))

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_record(out / name, summary, to_markdown(summary, f"{name}: the white-cell finder"))
        console.print(f"wrote {out / name}.json and .md")
    if overlays is not None:
        overlays.mkdir(parents=True, exist_ok=True)
        images = Path(data) / "JPEGImages"
        for r in results:
            if r.missed or r.false:
                image = cv2.imread(str(images / r.image))
                cv2.imwrite(str(overlays / (Path(r.image).stem + ".png")), draw_overlay(image, r))
        console.print(f"overlays of the fields with a miss or a false find in {overlays}")


def register(app: typer.Typer) -> None:
    app.command("finder-eval")(finder_eval)
