"""``wbc-edge adapt``: fine-tune a model to a new microscope from a site's labelled examples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wbc_edge.kd.cli_options import CacheOpt, SeedOpt
from wbc_edge.kd.config import ADAPT_BATCH, ADAPT_LR, ADAPT_STEPS


def register(app: typer.Typer) -> None:
    @app.command("adapt")
    def adapt(
        model: Annotated[Path, typer.Option("--model", help="The model to adapt (.pt).")],
        data: Annotated[
            Path,
            typer.Option(
                "--data",
                help="The site's labelled examples: a folder of class folders of crops, or "
                "smear fields in VOC layout (JPEGImages/) with labels.csv (image,category).",
            ),
        ],
        out: Annotated[Path, typer.Option("--out", help="Adapted checkpoint to write (.pt).")],
        pbc: Annotated[
            Path | None,
            typer.Option(
                "--pbc",
                help="The model's training manifest: half of every batch comes from its train "
                "split, so classes the site lacks keep what the model knew (recommended).",
            ),
        ] = None,
        steps: Annotated[
            int | None, typer.Option(help=f"Optimizer steps [default: {ADAPT_STEPS}].")
        ] = None,
        lr: Annotated[
            float | None, typer.Option(help=f"Peak learning rate (AdamW) [default: {ADAPT_LR}].")
        ] = None,
        batch_size: Annotated[
            int | None,
            typer.Option("--batch-size", help=f"Crops per step [default: {ADAPT_BATCH}]."),
        ] = None,
        seed: SeedOpt = None,
        cache_dir: CacheOpt = None,
        stain_norm: Annotated[
            str | None,
            typer.Option(
                "--stain-norm",
                help="Set the card's stain normalisation before fine-tuning (reference: the "
                "--pbc train crops): unstained, crop or none [default: keep the model's].",
            ),
        ] = None,
        teacher: Annotated[
            Path | None,
            typer.Option(
                "--teacher",
                help="A larger model adapted to the same site first (e.g. the teacher through "
                "`adapt`): the student learns from its logits too (distill --method kd's "
                "loss). It must share the input size, field of view and stain normalisation.",
            ),
        ] = None,
    ) -> None:
        """Fine-tune a model to a new microscope from a site's few labelled examples."""
        from wbc_edge.console import console
        from wbc_edge.kd.adapt import (
            _skipped_text,
            adapt_model,
            check_stain_norm,
            check_teacher,
            read_site,
        )
        from wbc_edge.kd.checkpoint import read_checkpoint
        from wbc_edge.model.adaptation import adaptation_notes
        from wbc_edge.model.card import ModelCard

        check_stain_norm(stain_norm, pbc)
        card = ModelCard.from_dict(read_checkpoint(model, student=True)["card"])
        if teacher is not None:
            check_teacher(teacher, card)
        site = read_site(data, card, show_progress=True)
        say = lambda m: console.print(m, highlight=False, soft_wrap=True)  # noqa: E731
        say(
            f"site {data}: {len(site.labels)} crops of {', '.join(site.classes)}"
            + (
                f" from {len(site.fields)} fields ({_skipped_text(site.skipped)})"
                if site.fields
                else ""
            )
        )
        new = adapt_model(
            model,
            site,
            out,
            steps=ADAPT_STEPS if steps is None else steps,
            lr=ADAPT_LR if lr is None else lr,
            batch_size=ADAPT_BATCH if batch_size is None else batch_size,
            pbc=pbc,
            seed=0 if seed is None else seed,
            cache_dir=cache_dir,
            log=say,
            stain_norm=stain_norm,
            teacher=teacher,
        )
        say(
            f"wrote {out} (adaptation {new.extra['adaptation']['data_fingerprint']}, "
            f"{new.extra['adaptation']['seconds']} s)"
        )
        for note in adaptation_notes(new):
            say(f"[yellow]note:[/yellow] {note}")
