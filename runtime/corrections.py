"""What a technologist made of each cell: an append-only log in the sample folder.

``corrections.jsonl`` holds one line per action, never rewritten: ``confirm`` (the model's class
is right), ``reclassify`` (it is another class, or :data:`EXCLUDED`: not a cell) and ``reset``
(back to unreviewed). The latest action on a cell wins, so the log is also the history of the
review, and a restart of the review page (or of the device) loses nothing. Confirmed cells can
be exported as a folder of class folders of crops, the layout ``wbc-edge adapt`` learns from.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from wbc_edge.errors import UserError
from wbc_edge.runtime.differential import EXCLUDED, ReviewedCell
from wbc_edge.runtime.sample import SampleFolder
from wbc_edge.runtime.sinks import CellRecord, _trim_torn_line, now_iso, writing

ACTIONS = ("confirm", "reclassify", "reset")


def read_corrections(
    path: str | Path, classes: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """The latest action per cell id (a line torn by a kill is ignored). A line that is not a
    correction wbc-edge wrote (bad UTF-8, not JSON, an unknown action, a missing or null class,
    or with ``classes`` a class the model does not have) is refused naming the file and line."""
    path = Path(path)
    latest: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return latest
    known = None if classes is None else {*classes, EXCLUDED}
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                continue
            try:
                entry = _correction(raw.decode("utf-8"), known)
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
                raise UserError(
                    f"{path}:{number} is not a correction ({type(exc).__name__}: {exc}): fix or "
                    "move the line (the review's other lines are kept)"
                ) from exc
            except ValueError as exc:
                raise UserError(f"{path}:{number}: {exc}: fix or move the line") from exc
            latest[str(entry["cell"])] = entry
    return latest


def _correction(line: str, known: set[str] | None) -> dict[str, Any]:
    entry = json.loads(line)
    if not isinstance(entry, dict):
        raise TypeError(f"a JSON {type(entry).__name__}, not an object")
    entry["cell"]  # noqa: B018 - KeyError when the line names no cell
    action = entry["action"]
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    label = entry.get("class")
    if action != "reset" and not isinstance(label, str):
        raise ValueError(f"{action} without a class (class {label!r})")
    if action != "reset" and known is not None and label not in known:
        raise ValueError(f"class {label!r} is not one of the model's ({', '.join(sorted(known))})")
    return entry


def apply(records: list[CellRecord], latest: dict[str, dict[str, Any]]) -> list[ReviewedCell]:
    """Each record as review left it."""
    cells = []
    for r in records:
        entry = latest.get(r.id)
        if entry is None or entry["action"] == "reset":
            cells.append(ReviewedCell(r, r.label))
        else:
            cells.append(ReviewedCell(r, entry["class"], True, entry.get("operator", "")))
    return cells


def reviewed_cells(folder: SampleFolder) -> list[ReviewedCell]:
    classes = folder.header().get("card", {}).get("class_names")
    return apply(folder.records(), read_corrections(folder.corrections_path, classes))


class CorrectionLog:
    """Appends actions to a sample's ``corrections.jsonl``, each flushed to disk at once."""

    def __init__(self, folder: SampleFolder, classes: list[str]) -> None:
        self.path = folder.corrections_path
        self.classes = [*classes, EXCLUDED] if EXCLUDED not in classes else list(classes)
        _trim_torn_line(self.path)  # after a kill mid-line, the next entry starts a new line

    def append(
        self,
        cell: CellRecord,
        action: str,
        label: str | None = None,
        operator: str = "",
        client: str = "",
    ) -> dict[str, Any]:
        """One action, with who (``operator``), when, and from where (``client``: the address
        the review page's request came from, "" when not through the page)."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, not {action!r}")
        if action == "confirm":
            label = label or cell.label
        if action == "reclassify" and label is None:
            raise ValueError("reclassify needs a class")
        if action != "reset" and label not in self.classes:
            raise ValueError(f"unknown class {label!r}; classes: {', '.join(self.classes)}")
        entry = {
            "time": now_iso(),
            "cell": cell.id,
            "action": action,
            "class": None if action == "reset" else label,
            "predicted": cell.label,
            "operator": operator,
            **({"client": client} if client else {}),
        }
        with writing(self.path), self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())  # a technologist's click must survive a power cut
        return entry


def _class_folder(label: str) -> str:
    """A class name as a folder name; a card's class names are not trusted to be paths."""
    if not label or label in (".", "..") or any(ch in label for ch in "/\\\0"):
        raise UserError(f"class {label!r} cannot be a folder name: rename it in the model card")
    return label


def export_labelled(
    folder: SampleFolder, dest: str | Path | None = None, cells: list[ReviewedCell] | None = None
) -> tuple[Path, dict[str, int]]:
    """Copy every confirmed cell's crop to ``dest/<class>/<sample>_<id>.jpg``.

    Artefacts are left out (no model class to learn). Exporting again brings the folder level
    with the review: a cell reclassified since moves to its new class folder, one reset or
    excluded since is removed. Returns the folder and the number of crops per class.
    """
    dest = Path(dest) if dest is not None else folder.labelled_dir
    cells = reviewed_cells(folder) if cells is None else cells
    exported = {p.name: p for p in dest.glob("*/*.jpg")} if dest.is_dir() else {}
    counts: dict[str, int] = {}
    missing = 0
    for cell in cells:
        name = f"{folder.sample}_{cell.id}.jpg"
        old = exported.get(name)
        keep = cell.confirmed and cell.label != EXCLUDED
        if old is not None and (not keep or old.parent.name != cell.label):
            old.unlink()  # reset, excluded or reclassified since the last export
        if not keep:
            continue
        src = folder.crop_path(cell.id)
        if not src.is_file():
            missing += 1
            continue
        target = dest / _class_folder(cell.label) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        counts[cell.label] = counts.get(cell.label, 0) + 1
    if missing:
        counts["(no crop saved)"] = missing
    return dest, counts
