"""The typer options the training commands share, declared once.

``train-teacher``, ``distill``, ``evaluate``, ``calibrate``, ``ablation`` and ``adapt`` take
these as ``Annotated`` aliases; an option only one command has is declared with that command.
Defaults show the value :class:`~wbc_edge.kd.config.TrainConfig` resolves (options default to
None so a YAML file can fill them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wbc_edge.kd.config import DEFAULT_AUGMENT, DEFAULT_KEEP, STUDENT_LR, TEACHER_LR, TrainConfig

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
