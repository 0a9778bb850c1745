"""The run options, declared once: each one's default, help, command-line name and check.

``wbc-edge run``'s options are built from these dataclasses (:mod:`wbc_edge.runtime.cli_options`)
and the run service receives one :class:`RunOptions` whole; the pipeline takes its
:class:`PipelineConfig`, the source its :class:`CaptureOptions` (which
:class:`~wbc_edge.runtime.sources.SourceOptions` extends), the way Ultralytics keeps every
default in one ``default.yaml`` that the CLI and the Python API both override.

Each option field carries an :class:`Option` in its metadata; the builder and the checks read
these rules from it:

- ``help`` may name the default as ``{default}``. Help that states its own ``[default: ...]``
  has no default on the command line: there None means "not given", and the value comes from
  here, or for a ``recorded`` option from the sample being resumed.
- ``ge``/``le`` become click ranges on the command line (so ``--help`` shows them) and are
  checked again by :meth:`RunOptions.check` for the Python API; ``gt`` and finiteness only
  there (click has no open bounds, and NaN slips through a range with no upper bound).
- ``recorded`` names where a sample's header keeps the value: a resumed sample keeps it unless
  the option is given. :meth:`RunOptions.resolved` is the one place that happens; such a field
  defaults to None (not given) and takes ``fallback`` for a new sample.

Standard library only, so ``--help`` can show these without importing numpy, OpenCV or a
backend. The model core's own defaults (review threshold, crop margin) come from
:mod:`wbc_edge.model.defaults`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from wbc_edge.errors import UserError
from wbc_edge.model.defaults import DEVICE, FALLBACK_THRESHOLD, MARGIN, RULER_EVERY, THREADS

DEFAULT_OUT = "wbc-run"  # `wbc-edge run`'s results folder: one sub-folder per sample
# Flag thresholds (runtime/flags.py), starting points a lab replaces with its own; a rule fires
# when its value is above the threshold.
FLAG_IG_PERCENT = 5.0  # immature granulocytes, % of the WBC counted
FLAG_BLASTS = 0  # blasts counted (0: any blast)
FLAG_NRBC_PER_100_WBC = 5.0  # nucleated red cells per 100 WBC
REPORT_PER_CLASS = 60  # cells shown per class in the archived report
REVIEW_HOST = "127.0.0.1"  # the review page: loopback only unless told otherwise
REVIEW_PORT = 8765

OPTION = "wbc_edge.option"  # the metadata key of a field's Option


@dataclass(frozen=True)
class Option:
    """How one run option is named on the command line, checked and resumed."""

    help: str
    flags: tuple[str, ...] = ()  # command-line names; none: --field-name
    argument: bool = False  # positional on the command line (SOURCE)
    ge: float | None = None
    le: float | None = None
    gt: float | None = None
    recorded: tuple[str, ...] = ()  # keys of the sample header that keep it (resumed samples)
    fallback: Any = None  # a recorded option's value when neither given nor recorded

    @property
    def says_default(self) -> bool:
        """The help states the default itself, so the command line has none (None)."""
        return "[default:" in self.help

    @property
    def choices(self) -> tuple[str, ...]:
        """A text option given as a two-way flag (``--smear/--crops``) is one of its names."""
        if len(self.flags) == 1 and "/" in self.flags[0]:
            return tuple(name.strip().lstrip("-") for name in self.flags[0].split("/"))
        return ()


def option(default: Any, help: str, *flags: str, **rules: Any) -> Any:
    """A dataclass field that is a run option (see the module docstring for ``rules``)."""
    return field(default=default, metadata={OPTION: Option(help, flags, **rules)})


def recorded(fallback: Any, help: str, *flags: str, keys: tuple[str, ...], **rules: Any) -> Any:
    """An option a resumed sample keeps as its header recorded it (``keys``) unless given."""
    meta = Option(help, flags, recorded=keys, fallback=fallback, **rules)
    return field(default=None, metadata={OPTION: meta})


def option_of(f: Any) -> Option | None:
    """The :class:`Option` of a dataclass field; None for a group or an internal field."""
    return f.metadata.get(OPTION)


def groups(obj: Any) -> list[Any]:
    """``obj`` and the option groups nested in it, outermost first."""
    out = [obj]
    for f in fields(obj):
        value = getattr(obj, f.name)
        if option_of(f) is None and is_dataclass(value):
            out += groups(value)
    return out


@dataclass
class PipelineConfig:
    """How frames become cells: what each image is, batching, the review threshold, crops.

    ``mode``, ``threshold`` and ``margin`` stay None until :meth:`RunOptions.resolved` fills
    them in; a config built directly (a benchmark, a test) that leaves ``mode`` None reads
    crops, the pipeline's test being ``mode == "smear"``."""

    mode: str | None = recorded(
        "crops",
        "--smear: frames are whole fields, find the white cells first; --crops: every image is "
        "one cell [default: --crops; a resumed sample: as recorded].",
        "--smear/--crops",
        keys=("settings", "mode"),
    )
    batch: int = option(16, "Cells per inference batch [default: {default}].", ge=1)
    # None: the card's certified confidence_threshold, or FALLBACK_THRESHOLD when it has none
    # (resolved by the model, Model.load(threshold=...)).
    threshold: float | None = recorded(
        None,
        "Cells below this probability go to review, not the count [default: the model card's "
        f"certified confidence_threshold; {FALLBACK_THRESHOLD} when it has none; a resumed "
        "sample: as recorded].",
        "--min-confidence",
        keys=("settings", "min_confidence"),
        ge=0.0,
        le=1.0,
    )
    margin: float | None = recorded(
        MARGIN,
        "Smear: crop margin, a fraction of the cell box [default: {default}; a resumed sample: "
        "as recorded].",
        keys=("settings", "margin"),
        ge=0.0,
        le=1.0,
    )
    rbc_px: float | None = option(
        None,
        "Smear: red-cell diameter in pixels, for a calibrated microscope [default: measured in "
        "every field].",
        gt=0.0,
    )
    um_per_px: float | None = option(
        None,
        "Smear: micrometres per pixel of the camera (a red cell is taken as 7.5 um); instead of "
        "--rbc-px [default: measured in every field].",
        gt=0.0,
    )
    # Not an option: smear, a video or camera: the red-cell ruler is measured on one frame in
    # this many (one microscope's scale does not change between frames; the model core's).
    ruler_every: int = RULER_EVERY
    queue_size: int = option(
        32,
        "Frames waiting for inference; a camera drops the oldest beyond [default: {default}].",
        "--queue",
        ge=1,
    )
    max_items: int = option(
        0, "Stop after this many frames or files (0: no limit).", "--limit", ge=0
    )
    workers: int = option(
        0,
        "Threads decoding and preprocessing images [default: {default}, one per core, <= 4].",
        ge=0,
    )

    def resolved_workers(self) -> int:
        return self.workers if self.workers > 0 else max(1, min(4, os.cpu_count() or 1))


@dataclass
class LabOptions:
    """Who counts, to what target, and the flag thresholds: the header's ``lab`` block."""

    operator: str | None = recorded(
        "",
        "Who runs the sample: in the header and the report [default: none; a resumed sample: "
        "as recorded].",
        keys=("lab", "operator"),
    )
    target_cells: int | None = recorded(
        0,
        "Stop when this many white cells are counted (a lab's 100 or 200) [default: {default}, "
        "no target; a resumed sample: as recorded]; a resume with a higher target counts on.",
        keys=("lab", "target_cells"),
        ge=0,
    )
    wbc_count: float | None = recorded(
        None,
        "The analyser's WBC (10^9/L): the report adds absolute counts per class [default: none; "
        "a resumed sample: as recorded].",
        keys=("lab", "wbc_count"),
        gt=0.0,
    )
    flag_ig: float | None = recorded(
        FLAG_IG_PERCENT,
        "Flag when immature granulocytes exceed this % of the WBC counted [default: "
        "{default:g}; a resumed sample, and `report`: as recorded].",
        keys=("lab", "flags", "ig_percent"),
        ge=0.0,
    )
    flag_blasts: int | None = recorded(
        FLAG_BLASTS,
        "Flag when more blasts than this are counted [default: {default}, any blast; a resumed "
        "sample, and `report`: as recorded].",
        keys=("lab", "flags", "blasts"),
        ge=0,
    )
    flag_nrbc: float | None = recorded(
        FLAG_NRBC_PER_100_WBC,
        "Flag when nucleated red cells exceed this many per 100 WBC [default: {default:g}; a "
        "resumed sample, and `report`: as recorded].",
        keys=("lab", "flags", "nrbc_per_100_wbc"),
        ge=0.0,
    )

    def header(self) -> dict[str, Any]:
        """The header's ``lab`` block, laid out as :meth:`RunOptions.resolved` reads it back."""
        block: dict[str, Any] = {}
        for f in fields(self):
            *parents, key = option_of(f).recorded[1:]
            place = block
            for name in parents:
                place = place.setdefault(name, {})
            place[key] = getattr(self, f.name)
        return block


# kw_only: SourceOptions extends these after its positional uri, kind and resource.
@dataclass(kw_only=True)
class CaptureOptions:
    """How a source is read: pacing, the watch's timing, the camera's format, reconnects."""

    realtime: bool = option(
        False, "Treat a video file as a live camera (paced, drops frames if behind)."
    )
    settle_s: float = option(
        1.0, "--watch: seconds a file must stop growing before it is read.", "--settle", ge=0.0
    )
    poll_s: float = option(0.5, "--watch: seconds between folder listings.", "--poll", gt=0.0)
    width: int = option(0, "Camera capture width (0: its default).", ge=0)
    height: int = option(0, "Camera capture height (0: its default).", ge=0)
    fps: float = option(0.0, "Camera frame rate (0: its default).", ge=0.0)
    reconnect_tries: int = option(
        0, "Camera/stream: give up after this many failed reconnects (0: never).", ge=0
    )
    open_timeout_s: float = option(
        10.0,
        "Network stream: seconds to wait for it to open or send a frame.",
        "--open-timeout",
        ge=0.1,
    )


@dataclass
class RunOptions:
    """Everything one ``wbc-edge run`` needs: the options, grouped, each with its one default.

    ``source`` or ``camera`` names what to read. Options a resumed sample recorded are None
    until :meth:`resolved` fills them in."""

    model: Path | None = option(
        None,
        "Model file: .onnx, .engine (with its .json) or .pt [default: the student packaged with "
        "wbc-edge; `wbc-edge info` describes it].",
        "--model",
        "-m",
    )
    source: str | None = option(
        None,
        "Folder, image, glob, video file, camera index, v4l2:///dev/videoN, csi://N, rtsp://... "
        "or a GStreamer pipeline [required unless --camera].",
        argument=True,
    )
    camera: int | None = option(None, "Camera index; the same as giving SOURCE as a number.")
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    watch: bool = option(False, "Watch the folder: classify new files as they arrive.")
    out: Path = option(
        Path(DEFAULT_OUT),
        "Results folder: each sample's results go to OUT/<sample>/ (records, crops, report); a "
        "sample's folder is reused to resume.",
    )
    sample: str | None = option(
        None,
        "Sample (slide) ID: its results go to OUT/<sample>/ [default: from the source: the "
        "folder's name (for a VOC folder's JPEGImages/, the folder above), the file's stem, or "
        "the camera and start time].",
    )
    lab: LabOptions = field(default_factory=LabOptions)
    report: Path | None = option(
        None, "Also write the HTML report here (it is always in OUT/<sample>/)."
    )
    report_per_class: int = option(REPORT_PER_CLASS, "Most cells shown per class in the report.")
    annotate: Path | None = option(
        None,
        "Write every frame with boxes and labels: to a video file (out.mp4, .avi, .mkv, .mov; at "
        "the source's frame rate) or to a folder of JPEGs (any other path).",
    )
    live: bool = option(True, "Live console view, or log lines.", "--live/--no-live")
    device: str = option(DEVICE, "auto, cpu or cuda.")
    threads: int = option(THREADS, "ONNX Runtime CPU threads (0: half the cores on CPU).", ge=0)
    capture: CaptureOptions = field(default_factory=CaptureOptions)
    rotate_mb: float = option(
        0.0,
        "Start new cells/errors files when cells.jsonl reaches this many MB; the earlier ones "
        "stay as dated parts (0: never). For cameras that run for weeks.",
        ge=0.0,
    )

    @property
    def uri(self) -> str:
        """What to read: SOURCE, or the camera's index."""
        return str(self.camera) if self.camera is not None else str(self.source)

    def check(self) -> None:
        """Refuse every value a run cannot use, before anything is read or written (the
        command line's ranges already refused some; the Python API gets the same checks)."""
        if (self.source is None) == (self.camera is None):
            raise UserError("give exactly one source: SOURCE or --camera N")
        for group in groups(self):
            for f in fields(group):
                meta, value = option_of(f), getattr(group, f.name)
                problem = "" if meta is None or value is None else _problem(meta, value)
                if problem:
                    # A wrong text for a two-way flag comes from the API, which names the field.
                    where = (
                        f"{meta.flags[0]} ({f.name})" if meta.choices else flag_name(f.name, meta)
                    )
                    raise UserError(f"{where} {problem}")
        if self.pipeline.rbc_px is not None and self.pipeline.um_per_px is not None:
            raise UserError("give --rbc-px or --um-per-px, not both")

    def resolved(self, header: dict[str, Any]) -> RunOptions:
        """A copy in which every recorded option not given takes the value ``header`` (a
        resumed sample's, {} for a new one) recorded, else its fallback: the one place a
        sample's recorded settings come back."""

        def fill(group: Any) -> Any:
            changes = {}
            for f in fields(group):
                meta, value = option_of(f), getattr(group, f.name)
                if meta is None and is_dataclass(value):
                    changes[f.name] = fill(value)
                elif meta is not None and meta.recorded and value is None:
                    found = _lookup(header, meta.recorded)
                    changes[f.name] = meta.fallback if found is None else found
            return replace(group, **changes)

        return fill(self)


def flag_name(name: str, meta: Option) -> str:
    """The option's first command-line name (``--min-confidence``), as messages name it."""
    if meta.argument:
        return name.upper()
    if meta.flags:
        return meta.flags[0].split("/")[0].strip()
    return "--" + name.replace("_", "-")


def _problem(meta: Option, value: Any) -> str:
    """What is wrong with ``value`` under ``meta``'s rules ("" when nothing)."""
    if meta.choices and isinstance(value, str) and value not in meta.choices:
        return f"must be {' or '.join(meta.choices)}, not {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    if not math.isfinite(value):  # NaN passes every comparison below
        return f"must be a finite number, not {value}"
    if meta.ge is not None and value < meta.ge:
        return f"must be >= {meta.ge:g}, not {value:g}"
    if meta.le is not None and value > meta.le:
        return f"must be <= {meta.le:g}, not {value:g}"
    if meta.gt is not None and value <= meta.gt:
        return f"must be > {meta.gt:g}, not {value:g}"
    return ""


def _lookup(header: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """``header[k1][k2]...``, None where a level is missing or not a mapping."""
    value: Any = header
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value
