"""Training commands: ``train-teacher``, ``distill``, ``evaluate``, ``ablation``.

Only typer, the standard library and the torch-free defaults (:mod:`wbc_edge.kd.config`,
calibration) load here; torch comes in inside each command. Options default to None and are
resolved once by :class:`~wbc_edge.kd.config.TrainConfig` (so a YAML file can fill them);
``--help`` shows the value that applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from wbc_edge.calibration import DEFAULT_DELTA, DEFAULT_TARGET_ERROR
from wbc_edge.kd.config import (
    ADAPT_BATCH,
    ADAPT_LR,
    ADAPT_STEPS,
    DEFAULT_AUGMENT,
    DEFAULT_KEEP,
    DISTILL_METHOD,
    STUDENT_LR,
    STUDENT_MODEL,
    TEACHER_LR,
    TEACHER_MODEL,
    TrainConfig,
)

_DATA_HELP = (
    "Split manifest CSV (`wbc-edge data split`), or one lab's labelled images as LAB=PATH (a "
    "manifest, or a folder of class folders, split here). Repeat it to train on several labs: "
    "each lab contributes only the classes it has, and the joined split is written to the run "
    "folder's manifest.csv"
)
# Not click-required (a --config or --resume can give it), so the help marks it.
DataOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        metavar="<[lab=]path>",
        help=f"{_DATA_HELP} [required unless --config or --resume gives it].",
    ),
]
AblationDataOpt = Annotated[
    list[str] | None,
    typer.Option("--data", metavar="<[lab=]path>", help=f"{_DATA_HELP} [required]."),
]
GroupByOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--group-by",
        metavar="<lab=regex>",
        help="LAB=REGEX: the file-name pattern whose first group names a patient or slide of "
        "that lab's folder, kept in one split (e.g. deepapl='^(P\\d+)_'). Repeatable.",
    ),
]
InitOpt = Annotated[
    Path | None,
    typer.Option(
        "--init",
        help="Start from this wbc-edge checkpoint (.pt) of the same architecture, e.g. the "
        "packaged model: its weights, and its classifier rows matched by class name (a class it "
        "lacks, such as Blast, starts fresh).",
    ),
]
BalanceOpt = Annotated[
    str | None,
    typer.Option(
        "--balance",
        help="How training images are drawn: sqrt (each image weighted 1/sqrt of its lab and "
        "class count), equal (1/count), none (a plain shuffle) or auto (sqrt for several "
        "labs, none for one) [default: auto].",
    ),
]
OutOpt = Annotated[
    Path | None, typer.Option("--out", help="Run folder [default: runs/<model>-<method>].")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="YAML file of options; command-line options win.")
]
ResumeOpt = Annotated[
    Path | None,
    typer.Option("--resume", help="Continue the run in this folder from its last saved epoch."),
]
EpochsOpt = Annotated[
    int | None,
    typer.Option("--epochs", min=1, help=f"Training epochs [default: {TrainConfig.epochs}]."),
]
BatchOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size", min=1, help=f"Images per step [default: {TrainConfig.batch_size}]."
    ),
]
TeacherLrOpt = Annotated[
    float | None,
    typer.Option("--lr", help=f"Peak learning rate (AdamW) [default: {TEACHER_LR}]."),
]
LrOpt = Annotated[
    float | None,
    typer.Option("--lr", help=f"Peak learning rate (AdamW) [default: {STUDENT_LR}]."),
]
SeedOpt = Annotated[
    int | None,
    typer.Option("--seed", help=f"Random seed (data order, init) [default: {TrainConfig.seed}]."),
]
CacheOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Decoded-image and teacher cache [default: $WBC_EDGE_CACHE or ~/.cache/wbc-edge].",
    ),
]
AugmentOpt = Annotated[
    str | None,
    typer.Option(
        "--augment",
        help="Augmentation preset of the training view: none, mild (flips/rotations + small "
        "colour and blur jitter) or crosslab (+ HED stain, gamma, wash-out, strong defocus, "
        "JPEG, downscale, sensor noise, zoom: spans other labs' microscopes) "
        f"[default: {DEFAULT_AUGMENT}].",
    ),
]
StainOpt = Annotated[
    str | None,
    typer.Option(
        "--stain-norm",
        help="Stain normalisation declared in the card (Reinhard in Lab towards the train "
        "crops' statistics): unstained (statistics over background and red-cell pixels, so a "
        "cell's own colour survives), crop (all pixels) or none [default: the teacher's card; "
        "none for a teacher].",
    ),
]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="torch CPU threads.")]
KeepOpt = Annotated[
    str | None,
    typer.Option(
        "--keep",
        help="The epoch the run hands on (calibrated, scored on test): best (best validation "
        "epoch, best.pt) or last (final epoch of the schedule, last.pt) "
        f"[default: {DEFAULT_KEEP}].",
    ),
]
EmaOpt = Annotated[
    float | None,
    typer.Option(
        "--ema",
        help="Keep an exponential moving average of the weights with this decay (e.g. 0.998; "
        "0 = off; timm's warm-up grows it as 1 - (1 + step)^-0.75 up to this value, so a short "
        "run averages fewer steps): best.pt / last.pt then hold the average, and the run also "
        "scores the final un-averaged weights beside it [default: off].",
    ),
]
ChannelsLastOpt = Annotated[
    bool | None,
    typer.Option("--channels-last/--no-channels-last", help="NHWC memory format."),
]


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

    @app.command("evaluate")
    def evaluate(
        model: Annotated[
            list[Path],
            typer.Option(
                "--model",
                metavar="<path>",
                help="Any model artifact (.pt, .onnx, .engine). Repeat it to score an ensemble: "
                "the mean of the models' calibrated probabilities, each model run through its "
                "own backend at its own card's input size and preprocessing.",
            ),
        ],
        data: Annotated[
            Path, typer.Option("--data", help="Split manifest CSV, or a folder of class folders.")
        ],
        split: Annotated[
            str, typer.Option("--split", help="Manifest split to score (ignored for a folder).")
        ] = "test",
        out: Annotated[
            Path | None, typer.Option("--out", help="Write metrics.json, report.md, PNG here.")
        ] = None,
        batch_size: BatchOpt = None,
        tta: Annotated[
            bool,
            typer.Option(
                "--tta/--no-tta",
                help="Average over the 8 dihedral views (flips and 90-degree rotations).",
            ),
        ] = False,
    ) -> None:
        """Accuracy, macro P/R/F1, per-class report, confusion matrix, ECE, and the coverage and
        error of counted cells at the card's confidence threshold."""
        from wbc_edge.console import console
        from wbc_edge.kd.evaluate import evaluate as run_evaluate

        result = run_evaluate(model, data, split, out, batch_size or 32, 8 if tta else 1)
        for member in result.get("members", []):
            console.print(
                f"  member {Path(member['model']).name}: accuracy "
                f"{100 * member['accuracy']:.2f}%  macro-F1 {100 * member['macro_f1']:.2f}%  "
                f"ECE {member['ece']:.4f}",
                highlight=False,
                soft_wrap=True,
            )
        console.print(
            f"{' + '.join(m.name for m in model)}: accuracy {100 * result['accuracy']:.2f}%  "
            "macro-F1 "
            f"{100 * result['macro_f1']:.2f}%  ECE {result['ece']:.4f}  coverage "
            f"{100 * result['coverage']:.1f}% (error of counted cells "
            f"{100 * result['counted_error']:.2f}%)  "
            f"({result['num_images']} images)" + (f" -> {out}" if out else ""),
            highlight=False,
            soft_wrap=True,
        )

    @app.command("calibrate")
    def calibrate(
        model: Annotated[Path, typer.Option("--model", help="Trained checkpoint (.pt).")],
        data: Annotated[
            Path, typer.Option("--data", help="Split manifest: fitted on val, reported on test.")
        ],
        out: Annotated[
            Path | None,
            typer.Option(
                "--out",
                help="New checkpoint [default: MODEL-calibrated.pt]; MODEL itself replaces it.",
            ),
        ] = None,
        target_error: Annotated[
            float,
            typer.Option(
                "--target-error", help="Error allowed among counted cells (sets the threshold)."
            ),
        ] = DEFAULT_TARGET_ERROR,
        delta: Annotated[
            float,
            typer.Option("--delta", help="Chance that the validation certificate is wrong."),
        ] = DEFAULT_DELTA,
        batch_size: BatchOpt = None,
        record: Annotated[
            Path | None,
            typer.Option(
                "--record", help="Also write the numbers to RECORD.md and RECORD.json (results)."
            ),
        ] = None,
    ) -> None:
        """Fit temperature scaling and the counted-cell confidence threshold on the val split
        and write them into a new checkpoint's card (export it again to carry them on)."""
        from wbc_edge.console import console
        from wbc_edge.errors import UserError
        from wbc_edge.kd.calibrate import calibrate_checkpoint, summary_line

        if not 0 < target_error < 1 or not 0 < delta < 1:
            raise UserError("--target-error and --delta must lie strictly between 0 and 1")
        path, summary = calibrate_checkpoint(
            model, data, out, target_error, delta, batch_size or 32
        )
        console.print(summary_line(summary), highlight=False, soft_wrap=True)
        note = " (replaced the input checkpoint)" if summary["replaced_input"] else ""
        console.print(f"calibrated checkpoint: {path}{note}", highlight=False, soft_wrap=True)
        if record is not None:
            import shlex

            from wbc_edge.kd.calibrate import write_calibration_record

            words = ["calibrate", "--model", model, "--data", data, "--out", path]
            words += ["--target-error", target_error, "--delta", delta, "--record", record]
            command = "wbc-edge " + " ".join(shlex.quote(str(w)) for w in words)
            written = write_calibration_record(record, summary, model, data, command)
            console.print(f"record: {written}", highlight=False, soft_wrap=True)

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
        )

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
