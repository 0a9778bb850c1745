"""``wbc-edge train-teacher`` and ``wbc-edge distill``: one training run from the command line.

Both resolve their options once into a :class:`~wbc_edge.kd.config.TrainConfig` (a ``--config``
YAML fills what the line leaves out; ``--resume`` reads the run folder's own ``config.yaml``) and
hand it to :func:`wbc_edge.kd.trainer.train`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from wbc_edge.kd.cli_options import (
    AugmentOpt,
    BalanceOpt,
    BatchOpt,
    CacheOpt,
    ChannelsLastOpt,
    ConfigOpt,
    DataOpt,
    EmaOpt,
    EpochsOpt,
    GroupByOpt,
    InitOpt,
    KeepOpt,
    LrOpt,
    OutOpt,
    ResumeOpt,
    SeedOpt,
    StainOpt,
    TeacherLrOpt,
    ThreadsOpt,
)
from wbc_edge.kd.config import DISTILL_METHOD, STUDENT_MODEL, TEACHER_MODEL, TrainConfig


def _run(config: Path | None, resume: Path | None, **options: Any) -> None:
    from wbc_edge.kd.trainer import train

    if resume is not None:
        from wbc_edge.errors import require_file

        saved = require_file(resume / "config.yaml", "run config", "is it a wbc-edge run folder?")
        cfg = TrainConfig.from_sources(str(saved), **{**options, "out": str(resume)})
        train(cfg, resume=True)
        return
    if options.get("out") is None:
        name = options.get("model") or "run"
        options["out"] = str(Path("runs") / f"{name}-{options.get('method') or 'teacher'}")
    cfg = TrainConfig.from_sources(str(config) if config else None, **options)
    train(cfg)


def _method_options(items: list[str] | None) -> dict[str, Any] | None:
    if not items:
        return None
    from wbc_edge.kd.distillers import parse_options

    return parse_options(items)


def register(app: typer.Typer) -> None:
    @app.command("train-teacher")
    def train_teacher(
        data: DataOpt = None,
        group_by: GroupByOpt = None,
        balance: BalanceOpt = None,
        model: Annotated[
            str | None,
            typer.Option("--model", help=f"timm EfficientNet name [default: {TEACHER_MODEL}]."),
        ] = None,
        weights: Annotated[
            str | None,
            typer.Option("--weights", help="imagenet (offline), a checkpoint PATH, or none."),
        ] = None,
        size: Annotated[
            int | None, typer.Option("--size", min=8, max=4096, help="Input size in pixels.")
        ] = None,
        init: InitOpt = None,
        epochs: EpochsOpt = None,
        batch_size: BatchOpt = None,
        lr: TeacherLrOpt = None,
        seed: SeedOpt = None,
        out: OutOpt = None,
        config: ConfigOpt = None,
        resume: ResumeOpt = None,
        cache_dir: CacheOpt = None,
        threads: ThreadsOpt = None,
        channels_last: ChannelsLastOpt = None,
        augment: AugmentOpt = None,
        keep: KeepOpt = None,
        ema: EmaOpt = None,
        stain_norm: StainOpt = None,
        freeze_stages: Annotated[
            int | None,
            typer.Option(
                "--freeze-stages",
                help="Keep the stem and this many early blocks at ImageNet weights (CPU speed).",
            ),
        ] = None,
    ) -> None:
        """Fine-tune an EfficientNet teacher on a split manifest (see --keep for the epoch kept)."""
        if data is None and config is None and resume is None:
            raise typer.BadParameter("give --data (or --config / --resume)")
        _run(
            config,
            resume,
            data=list(data) if data else None,
            group_by=list(group_by) if group_by else None,
            balance=balance,
            init=str(init) if init else None,
            kind="teacher",
            model=model,
            weights=weights,
            size=size,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            out=str(out) if out else None,
            cache_dir=str(cache_dir) if cache_dir else None,
            threads=threads,
            channels_last=channels_last,
            freeze_stages=freeze_stages,
            augment=augment,
            keep=keep,
            ema=ema,
            stain_norm=stain_norm,
            method="ce",
        )

    @app.command("distill")
    def distill(
        data: DataOpt = None,
        group_by: GroupByOpt = None,
        balance: BalanceOpt = None,
        teacher: Annotated[
            list[Path] | None,
            typer.Option(
                "--teacher",
                metavar="<path>",
                help="Trained teacher checkpoint (.pt). Repeat it for an ensemble: the logit "
                "target is the mean of the teachers' cached logits, each teacher seen at its own "
                "card's preprocessing; feature methods (at, fusion, mlffakd) use the first "
                "teacher's features, and the student takes the first teacher's preprocessing.",
            ),
        ] = None,
        method: Annotated[
            str | None,
            typer.Option(
                "--method",
                help="ce, kd, dkd, at, fusion or mlffakd; the default is the method the "
                "recorded ablations chose (benchmarks/results/kd-ablation*.md in a checkout, "
                f"docs for the figures) [default: {DISTILL_METHOD}].",
            ),
        ] = None,
        student: Annotated[
            str | None,
            typer.Option("--student", help=f"Student name [default: {STUDENT_MODEL}]."),
        ] = None,
        size: Annotated[
            int | None,
            typer.Option(
                "--size",
                help="Input size in pixels [default: the teacher's input size; a smaller one "
                "trades detail for speed, the teacher still sees its own; 128 without one].",
            ),
        ] = None,
        epochs: EpochsOpt = None,
        batch_size: BatchOpt = None,
        lr: LrOpt = None,
        seed: SeedOpt = None,
        init: InitOpt = None,
        out: OutOpt = None,
        config: ConfigOpt = None,
        resume: ResumeOpt = None,
        cache_dir: CacheOpt = None,
        threads: ThreadsOpt = None,
        channels_last: ChannelsLastOpt = None,
        augment: AugmentOpt = None,
        keep: KeepOpt = None,
        ema: EmaOpt = None,
        stain_norm: StainOpt = None,
        teacher_views: Annotated[
            str | None,
            typer.Option(
                "--teacher-views",
                help="view: the teacher's output on the student's view; mean: its mean over "
                "the 8 dihedral views (test-time augmentation as the target).",
            ),
        ] = None,
        no_teacher_cache: Annotated[
            bool, typer.Option("--no-teacher-cache", help="Run the teacher live every step.")
        ] = False,
        option: Annotated[
            list[str] | None,
            typer.Option(
                "--option",
                metavar="<key=value>",
                help="A method option KEY=VALUE, repeatable (e.g. at_weight=1, fusion_weight=0.5;"
                " kd/README.md lists them).",
            ),
        ] = None,
    ) -> None:
        """Distil a student from a frozen teacher (or train it alone with --method ce)."""
        if data is None and config is None and resume is None:
            raise typer.BadParameter("give --data (or --config / --resume)")
        _run(
            config,
            resume,
            data=list(data) if data else None,
            group_by=list(group_by) if group_by else None,
            balance=balance,
            init=str(init) if init else None,
            kind="distill",
            model=student,
            teacher=[str(t) for t in teacher] if teacher else None,
            method=method,
            size=size,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            out=str(out) if out else None,
            cache_dir=str(cache_dir) if cache_dir else None,
            threads=threads,
            channels_last=channels_last,
            teacher_views=teacher_views,
            teacher_cache=False if no_teacher_cache else None,
            augment=augment,
            keep=keep,
            ema=ema,
            stain_norm=stain_norm,
            method_options=_method_options(option),
        )
