"""``wbc-edge ablation``: every distillation method x seed from one teacher, one table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wbc_edge.kd.cli_options import (
    AblationDataOpt,
    AugmentOpt,
    BatchOpt,
    CacheOpt,
    EpochsOpt,
    GroupByOpt,
    InitOpt,
    KeepOpt,
    LrOpt,
    ThreadsOpt,
)
from wbc_edge.kd.config import STUDENT_MODEL


def register(app: typer.Typer) -> None:
    @app.command("ablation")
    def ablation(
        teacher: Annotated[Path, typer.Option("--teacher", help="Trained teacher checkpoint.")],
        data: AblationDataOpt = None,
        group_by: GroupByOpt = None,
        methods: Annotated[
            str, typer.Option("--methods", help="Comma-separated distillation methods.")
        ] = "ce,kd,dkd,at,fusion,mlffakd",
        seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds.")] = "0,1,2",
        student: Annotated[str, typer.Option("--student", help="Student name.")] = STUDENT_MODEL,
        epochs: EpochsOpt = None,
        batch_size: BatchOpt = None,
        lr: LrOpt = None,
        out: Annotated[
            Path,
            typer.Option(
                "--out",
                help="Results prefix: writes OUT.md and OUT.json (the project's record: "
                "--out benchmarks/results/kd-ablation, in a checkout).",
            ),
        ] = Path("runs/ablation/kd-ablation"),
        runs_dir: Annotated[
            Path, typer.Option("--runs-dir", help="Where the individual runs go.")
        ] = Path("runs/ablation"),
        parallel: Annotated[
            int, typer.Option("--parallel", help="Runs side by side (threads split between).")
        ] = 1,
        cache_dir: CacheOpt = None,
        threads: ThreadsOpt = None,
        report_only: Annotated[
            bool, typer.Option("--report-only", help="Only write the table from finished runs.")
        ] = False,
        size: Annotated[
            int | None,
            typer.Option("--size", help="Student input size [default: the teacher's]."),
        ] = None,
        teacher_views: Annotated[
            str | None,
            typer.Option("--teacher-views", help="view or mean, as for distill [default: view]."),
        ] = None,
        keep: KeepOpt = None,
        init: InitOpt = None,
        augment: AugmentOpt = None,
    ) -> None:
        """Train every method x seed, reusing one teacher cache; write a mean +- std table."""
        from wbc_edge.data.labs import joined_manifest
        from wbc_edge.kd.ablation import run_ablation

        if not data:
            raise typer.BadParameter("give --data")
        if len(data) > 1 or "=" in data[0] or group_by:
            # Every run of the ablation trains on one joined split, written once.
            manifest = joined_manifest(data, group_by or [], runs_dir / "manifest.csv")
        else:
            manifest = Path(data[0])
        run_ablation(
            data=manifest,
            teacher=teacher,
            methods=[m.strip() for m in methods.split(",") if m.strip()],
            seeds=[int(s) for s in seeds.split(",") if s.strip()],
            student=student,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            out=out,
            runs_dir=runs_dir,
            parallel=parallel,
            cache_dir=cache_dir,
            threads=threads,
            report_only=report_only,
            size=size,
            teacher_views=teacher_views,
            keep=keep,
            init=init,
            augment=augment,
        )
