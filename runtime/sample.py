"""One sample per results folder: ``OUT/<sample>/`` and the run header that says whose it is.

A lab's result belongs to one slide, classified by one model. ``wbc-edge run --out OUT`` puts a
sample's results in ``OUT/<sample>/`` (the sample named by ``--sample``, or derived from the
source: a folder's name, a file's stem, a camera and its start time) and writes a header,
``run.json``, before the first record: sample, source, model file with its content hash, the
model card, and the settings that decide what a cell is counted as. A later run into the same
folder resumes only when all of these agree; anything else is refused with what differs, so two
slides or two models can never be mixed into one differential.

A sample folder holds::

    run.json           the header (lab settings -- operator, target, flag thresholds -- are
                       those of the latest session; sessions.jsonl keeps each one)
    sessions.jsonl     one line per run or resume
    cells.jsonl ...    the records (runtime/sinks.py: cells.csv, errors.jsonl, done.txt)
    cells/<id>.jpg     each cell's crop (a crop file's own JPEG; runtime/archive.py)
    fields/<id>.jpg    smear mode: each field the cells were found in, downscaled, and
    fields/<id>.json   its full size (to draw the cells' boxes on it)
    corrections.jsonl  what review confirmed or reclassified, append-only
    report.html        the archived report, rebuilt from all of the above
    labelled/<class>/  the confirmed crops exported for ``wbc-edge adapt``
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from wbc_edge.errors import UserError
from wbc_edge.runtime.sinks import CellRecord, now_iso, read_records, writing
from wbc_edge.runtime.sources import LIVE_KINDS, SourceOptions, parse_uri

HEADER_NAME = "run.json"
HEADER_FORMAT = "wbc-edge sample"
_SAMPLE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
# What decides how a cell is counted: a resume must not change any of it.
IDENTITY_SETTINGS = ("mode", "min_confidence", "margin")


def check_sample_id(sample: str) -> str:
    """A sample ID is a folder name: letters, digits, '.', '_' and '-', at most 80."""
    if not _SAMPLE_RE.fullmatch(sample) or sample in (".", ".."):
        raise UserError(
            f"--sample {sample!r}: use letters, digits, '.', '_' and '-' only (at most 80, "
            "starting with a letter or digit), e.g. --sample S-2026-0142"
        )
    return sample


def _clean(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    return text[:80] or "sample"


def derive_sample_id(opts: SourceOptions, started: datetime | None = None) -> str:
    """The default sample of a source: a folder's name (the one above a Pascal-VOC
    ``JPEGImages/``), a file's stem, the folder of a glob; a camera or stream by its name and
    the start time (each start of a camera is a new slide)."""
    if opts.kind in LIVE_KINDS:
        stamp = (started or datetime.now()).strftime("%Y%m%d-%H%M%S")
        name = {"camera": f"camera{opts.resource}", "csi": f"csi{opts.resource}"}.get(opts.kind)
        if name is None:
            name = opts.kind if opts.kind == "gstreamer" else f"{opts.kind}-{opts.resource}"
        return _clean(f"{name[:60]}-{stamp}")
    path = Path(opts.resource)
    if opts.kind == "glob":  # the folder above the first wildcard: "slide7/*.jpg" -> slide7
        parts = []
        for part in path.parts:
            if any(ch in part for ch in "*?["):
                break
            parts.append(part)
        path = Path(*parts) if parts else Path(".")
    if opts.kind in ("folder", "watch", "glob"):
        folder = path.resolve()
        if folder.name == "JPEGImages" and folder.parent.name:  # a Pascal-VOC slide's fields
            folder = folder.parent
        return _clean(folder.name)
    return _clean(path.stem)


def sample_of(uri: str, watch: bool, sample: str | None) -> tuple[SourceOptions, str]:
    """The source's options and the sample ID: ``sample`` checked, or derived from the source."""
    opts = parse_uri(uri, watch)
    return opts, check_sample_id(sample) if sample else derive_sample_id(opts)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomically: a kill leaves the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        os.replace(tmp, path)


class SampleFolder:
    """The results folder of one sample (see the module docstring for its files)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.header_path = self.path / HEADER_NAME
        self.sessions_path = self.path / "sessions.jsonl"
        self.jsonl_path = self.path / "cells.jsonl"
        self.errors_path = self.path / "errors.jsonl"
        self.cells_dir = self.path / "cells"
        self.fields_dir = self.path / "fields"
        self.corrections_path = self.path / "corrections.jsonl"
        self.summary_path = self.path / "summary.json"
        self.report_path = self.path / "report.html"
        self.labelled_dir = self.path / "labelled"

    @property
    def sample(self) -> str:
        return self.path.name

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path) -> SampleFolder:
        """An existing sample folder (for ``report`` and ``review``)."""
        folder = cls(path)
        if not folder.header_path.is_file():
            hint = ""
            if folder.path.is_dir():
                inside = sorted(p.parent.name for p in folder.path.glob(f"*/{HEADER_NAME}"))
                if inside:
                    hint = f"; it holds the samples {', '.join(inside[:8])}: pass one of them"
            raise UserError(
                f"{folder.path} is not a wbc-edge sample folder (no {HEADER_NAME}): pass "
                f"OUT/<sample> as written by `wbc-edge run`{hint}"
            )
        folder.header()  # validates
        return folder

    @classmethod
    def recorded(cls, out: str | Path, sample: str) -> dict[str, Any]:
        """The header of an existing ``out/<sample>`` ({} for a new sample)."""
        folder = cls(Path(out) / sample)
        return folder.header() if folder.header_path.is_file() else {}

    @classmethod
    def for_run(cls, out: str | Path, header: dict[str, Any]) -> tuple[SampleFolder, bool]:
        """Create ``out/<sample>`` with ``header``, or check that its run is this one.

        Returns the folder and whether it resumes an earlier run. The header's ``lab``
        settings (operator, target, flags) are updated to this run's and the session logged.
        """
        out = Path(out)
        if (out / HEADER_NAME).is_file():
            raise UserError(
                f"--out {out} is itself a sample folder: pass its parent, "
                f"`--out {out.parent} --sample {out.name}`"
            )
        folder = cls(out / check_sample_id(header["sample"]))
        resumed = folder.header_path.is_file()
        if resumed:
            old = folder.header()
            differs = differences(old, header)
            if differs:
                raise UserError(
                    f"{folder.path} holds another run ({'; '.join(differs)}): a sample resumes "
                    "only with the same source, model and settings; to start a new run give "
                    f"another --sample (e.g. --sample {folder.sample}-2) or another --out"
                )
            header = {**old, "lab": header.get("lab", {})}
        elif folder.jsonl_path.is_file() and folder.jsonl_path.stat().st_size:
            raise UserError(
                f"{folder.path} has results but no {HEADER_NAME} (an older wbc-edge wrote "
                "it): move it away or give another --sample"
            )
        folder.path.mkdir(parents=True, exist_ok=True)
        _write_json(folder.header_path, header)
        return folder, resumed

    def header(self) -> dict[str, Any]:
        try:
            header = json.loads(self.header_path.read_text(encoding="utf-8"))
            if header.get("format") != HEADER_FORMAT:
                raise ValueError(f"format is {header.get('format')!r}")
            for key in ("sample", "model", "card", "settings"):
                header[key]  # noqa: B018 - presence check
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(
                f"{self.header_path} is not a wbc-edge run header ({exc}): restore it from the "
                "session that wrote it, or start the sample again in another folder"
            ) from exc
        return header

    def discard_empty(self) -> None:
        """Remove a sample folder that holds no result (a run that could not open its source)."""
        if self.jsonl_path.is_file() and self.jsonl_path.stat().st_size:
            return
        if self.errors_path.is_file() and self.errors_path.stat().st_size:
            return
        shutil.rmtree(self.path, ignore_errors=True)

    # -- contents -----------------------------------------------------------------------------

    def add_session(self, entry: dict[str, Any]) -> None:
        with writing(self.sessions_path), self.sessions_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"time": now_iso(), **entry}) + "\n")

    def sessions(self) -> list[dict[str, Any]]:
        if not self.sessions_path.is_file():
            return []
        lines = self.sessions_path.read_text(encoding="utf-8").splitlines(keepends=True)
        return [json.loads(line) for line in lines if line.endswith("\n")]

    def records(self) -> list[CellRecord]:
        """Every record, the parts a long run rotated out (``cells.<time>.jsonl``) first."""
        parts = sorted(self.path.glob("cells.*.jsonl"))
        current = [self.jsonl_path] if self.jsonl_path.is_file() else []
        return [r for part in [*parts, *current] for r in read_records(part)]

    def crop_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.jpg"

    def field_path(self, field_id: str) -> Path:
        return self.fields_dir / f"{field_id}.jpg"

    def field_meta(self, field_id: str) -> dict[str, Any] | None:
        """The field's key, file and full-size width and height (None: no field saved)."""
        path = self.fields_dir / f"{field_id}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What makes ``new`` another run than ``old``, in words (empty: the same run)."""
    out = []
    if old["sample"] != new["sample"]:
        out.append(f"sample {old['sample']!r}, not {new['sample']!r}")
    o_src, n_src = old.get("source", {}), new.get("source", {})
    if o_src.get("resource") != n_src.get("resource"):
        out.append(f"source {o_src.get('resource')!r}, not {n_src.get('resource')!r}")
    o_model, n_model = old["model"], new["model"]
    if o_model.get("sha256") != n_model.get("sha256"):
        o_file, n_file = Path(o_model.get("file", "?")), Path(n_model.get("file", "?"))
        if o_file.name != n_file.name:  # else two files of one name: their folders tell them apart
            o_file, n_file = Path(o_file.name), Path(n_file.name)
        out.append(
            f"model {o_file} (sha256 {str(o_model.get('sha256'))[:12]}), not {n_file} "
            f"(sha256 {str(n_model.get('sha256'))[:12]})"
        )
    for key in IDENTITY_SETTINGS:
        a, b = old["settings"].get(key), new["settings"].get(key)
        if a != b:
            out.append(f"{key} {a!r}, not {b!r}")
    return out


def make_header(
    sample: str,
    opts: SourceOptions,
    model_path: str | Path,
    model_sha256: str,
    card: Any,  # ModelCard
    settings: dict[str, Any],
    lab: dict[str, Any],
) -> dict[str, Any]:
    """The header of a new run (``settings`` must hold :data:`IDENTITY_SETTINGS`)."""
    missing = [k for k in IDENTITY_SETTINGS if k not in settings]
    if missing:
        raise ValueError(f"settings lack {missing}")
    return {
        "format": HEADER_FORMAT,
        "version": 1,
        "sample": sample,
        "created": now_iso(),
        "source": {"uri": opts.uri, "kind": opts.kind, "resource": _resource(opts)},
        "model": {
            "file": str(Path(model_path).resolve()),
            "sha256": model_sha256,
            "architecture": card.architecture,
            "classes": list(card.class_names),
        },
        "card": card.to_dict(),
        "settings": dict(settings),
        "lab": dict(lab),
    }


def _resource(opts: SourceOptions) -> str:
    if opts.kind in LIVE_KINDS:
        return opts.resource
    return str(Path(opts.resource).resolve())
