"""The options of a training run: one dataclass that the CLI, a YAML file and the API fill.

Each option has its one default here; ``wbc-edge train-teacher`` / ``distill`` read them from
this class for their ``--help`` and pass only what the user gave (None otherwise), so the CLI
and the API cannot disagree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

from wbc_edge.calibration import DEFAULT_DELTA, DEFAULT_TARGET_ERROR
from wbc_edge.errors import UserError, require_file
from wbc_edge.model.stain import OVER as STAIN_OVER

# Standard library, yaml and numpy only (no torch), so the CLI can read the defaults for --help.
DEFAULT_AUGMENT = "mild"  # a preset of kd.data.AUGMENT_PRESETS
# Which epoch a run hands on (calibrated, scored on test, written as its model): "best" is the
# best validation epoch; "last" the final epoch of the cosine schedule, which on a 360-image
# validation split (one image = 0.28 points) is the less noisy choice for a converged run.
KEEP_RULES = ("best", "last")
DEFAULT_KEEP = "best"
# wbc-edge adapt (fine-tuning on a site's labelled cells): optimiser steps, peak lr, batch.
ADAPT_STEPS = 100
ADAPT_LR = 1e-3
ADAPT_BATCH = 32
# Defaults that differ between teacher and student runs, each the value its recorded results
# used: the Lite0 teacher (benchmarks/results/kd-teacher.md) trained at lr 1e-3, the students
# of kd-ablation / kd-longer at 2e-3.
TEACHER_MODEL = "tf_efficientnet_lite0"
STUDENT_MODEL = "tinyresnet_xs"
TEACHER_LR = 1e-3
STUDENT_LR = 2e-3
# `distill`'s method when none is given: the one that won the recorded ablation
# (kd-ablation.md: kd 91.94 +- 0.28% against mlffakd 82.13 +- 2.26% before the feature terms
# were rescaled; the rescaled at/mlffakd are not yet measured). A teacher run is always "ce".
DISTILL_METHOD = "kd"


@dataclass
class TrainConfig:
    """Every option of a training run; the CLI, a YAML file and the API all fill this."""

    # A split manifest, or several labs' sources ("LAB=PATH": a manifest or a class-folder tree;
    # wbc_edge.data.labs), joined into the run folder's manifest.csv at the start of the run.
    data: str | list[str] = ""
    group_by: list[str] = field(default_factory=list)  # "LAB=REGEX": keep a patient in one split
    split_seed: int = 42  # how a source folder is split (wbc_edge.data.split.DEFAULT_SEED)
    # Drawing weights of training images (wbc_edge.data.labs.BALANCE_RULES): "auto" is "sqrt"
    # when the data joins several labs and "none" (a plain shuffle) for one lab.
    balance: str = "auto"
    out: str = ""
    kind: str = "distill"  # "teacher" or "distill"
    model: str = ""  # teacher: timm EfficientNet name; distill: student name ("": the default)
    weights: str | None = "imagenet"  # teacher initialisation (imagenet | PATH | none)
    # A wbc-edge checkpoint (.pt) of the same architecture to start from, teacher or student:
    # its backbone, and its classifier rows by class name (kd/warm_start.py).
    init: str | None = None
    # distill: trained teacher checkpoint, or a list of them (an ensemble: the logit target is
    # the mean of the members' cached logits, features come from the first; see `teachers`)
    teacher: str | list[str] | None = None
    method: str = ""  # "": DISTILL_METHOD for distill; teacher runs are always "ce"
    method_options: dict[str, Any] = field(default_factory=dict)
    size: int | None = None  # None: the teacher's input size, or Preprocess's default
    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None  # None: TEACHER_LR or STUDENT_LR
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    seed: int = 0
    augment: str = DEFAULT_AUGMENT  # preset of kd.data.AUGMENT_PRESETS: none, mild, crosslab
    jitter: bool = True  # older run folders' switch; False = augment "none"
    # Stain normalisation into the card (wbc_edge.model.stain): "unstained" or "crop" (the
    # pixels its statistics are taken over), "none" (off, also for a student whose teacher has it);
    # None: as the teacher's card says (a teacher run: off).
    stain_norm: str | None = None
    channels_last: bool = False
    freeze_stages: int = 0  # teacher: stem + this many early blocks kept at ImageNet weights
    keep: str = DEFAULT_KEEP  # KEEP_RULES: best.pt or last.pt is calibrated and scored
    # Exponential moving average of the weights (timm's ModelEmaV3, warm-up on): 0 is off; else
    # the decay, and best.pt / last.pt hold the averaged weights, so the model handed on does not
    # depend on where the last optimiser steps happened to land.
    ema: float = 0.0
    teacher_cache: bool = True
    # "view": the teacher's output for the view the student sees; "mean": the mean of the
    # teacher's softmax over all 8 dihedral views (test-time augmentation as the target).
    teacher_views: str = "view"
    cache_dir: str | None = None
    threads: int | None = None
    amp: bool = True
    device: str = "auto"
    target_error: float = DEFAULT_TARGET_ERROR  # calibration: error allowed among counted cells
    calibration_delta: float = DEFAULT_DELTA

    @classmethod
    def from_sources(cls, config_file: str | None, **overrides: Any) -> TrainConfig:
        """Defaults < YAML file < explicit (non-None) overrides."""
        values: dict[str, Any] = {}
        if config_file:
            path = require_file(config_file, "config file")
            try:
                loaded = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as exc:
                raise UserError(f"{path} is not valid YAML ({exc})") from exc
            if not isinstance(loaded, dict):
                raise UserError(f"{path} must be a mapping of option: value")
            values.update(loaded)
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown option(s) {unknown}: known are {sorted(known)}")
        return cls(**values)

    def __post_init__(self) -> None:
        """Resolve the kind-dependent defaults once (so config.yaml records real values), then
        check the values."""
        teacher = self.kind == "teacher"
        self.model = self.model or (TEACHER_MODEL if teacher else STUDENT_MODEL)
        self.method = "ce" if teacher else (self.method or DISTILL_METHOD)
        if self.lr is None:
            self.lr = TEACHER_LR if teacher else STUDENT_LR
        if isinstance(self.data, list | tuple):
            # One plain manifest reads as before; several sources stay a list.
            specs = [str(d) for d in self.data]
            self.data = specs[0] if len(specs) == 1 and "=" not in specs[0] else specs
        self.group_by = [str(g) for g in (self.group_by or [])]
        if isinstance(self.teacher, list | tuple):
            # One member is the single teacher (its config.yaml reads as before); none is none.
            members = [str(t) for t in self.teacher]
            self.teacher = members[0] if len(members) == 1 else (members or None)
        # The CLI refuses these as usage errors; a YAML file or the API gets the same rule here
        # (epochs 0 ran "successfully" without writing best.pt; size 0 silently became 128).
        bad = []
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            bad.append(f"epochs must be >= 1, not {self.epochs!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            bad.append(f"batch_size must be >= 1, not {self.batch_size!r}")
        if self.size is not None and not (isinstance(self.size, int) and 8 <= self.size <= 4096):
            bad.append(f"size must be 8..4096 pixels, not {self.size!r}")
        if not (isinstance(self.lr, int | float) and self.lr > 0):
            bad.append(f"lr must be > 0, not {self.lr!r}")
        if not (isinstance(self.ema, int | float) and 0.0 <= self.ema < 1.0):
            bad.append(f"ema must be 0 (off) or a decay in (0, 1), not {self.ema!r}")
        if self.balance not in ("auto", "none", "sqrt", "equal"):
            bad.append(f"balance must be auto, none, sqrt or equal, not {self.balance!r}")
        if self.keep not in KEEP_RULES:
            bad.append(f"keep must be one of {', '.join(KEEP_RULES)}, not {self.keep!r}")
        if self.stain_norm not in (None, "none", *STAIN_OVER):
            bad.append(
                f"stain_norm must be none, {' or '.join(STAIN_OVER)}, not {self.stain_norm!r}"
            )
        if bad:
            raise UserError("training options: " + "; ".join(bad))

    @property
    def sources(self) -> list[str]:
        """The data specs: one manifest, or several labs' ``LAB=PATH`` sources."""
        return [self.data] if isinstance(self.data, str) else list(self.data)

    @property
    def multi_source(self) -> bool:
        """True when the run joins labs itself (several sources, or a LAB=PATH one)."""
        return len(self.sources) > 1 or "=" in self.sources[0] or bool(self.group_by)

    @property
    def teachers(self) -> list[str]:
        """The teacher checkpoints of a distillation run, first (the features' source) first."""
        if self.teacher is None:
            return []
        return [self.teacher] if isinstance(self.teacher, str) else list(self.teacher)

    def to_yaml(self) -> str:
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)
