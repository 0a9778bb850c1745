"""Results that are never lost: append-only CSV and JSONL records, an errors log, resume state.

An output folder holds::

    cells.jsonl   one JSON object per classified cell (the record of truth)
    cells.csv     the same records as a spreadsheet row each
    errors.jsonl  items that could not be used (corrupt, truncated, not an image, rejected)
    done.txt      every finished file or video frame, written after its records: one JSON line
                  each (a file's key with its size, mtime and digest; a frame's key alone)
    .lock         held by the run writing here (:mod:`wbc_edge.runtime.lock`)

The records of a batch of items (the pipeline writes one group at a time) go out in one
``write`` per file, JSONL first, then CSV, then ``done.txt``, each flushed before the next, so a
process killed at any moment leaves at most a torn last line, and records complete in the JSONL
count as done whether or not their ``done.txt`` lines got out. Reopening the folder
repairs that (cuts the torn line, brings the CSV level with the JSONL) and :attr:`resume` holds
what to skip (:mod:`wbc_edge.runtime.resume`): files done or failed (a failed file is tried again
only once it changes), the last frame of each video file; frames of cameras and streams are not
remembered at all, since they never come again.

A file name that is not valid UTF-8 stays exact in the JSON (``\\udcff`` escapes, which
``os.fsencode`` turns back into the bytes) and appears as ``\\xff`` in the CSV, the report and
messages. A CSV cell that a spreadsheet would run as a formula is prefixed with ``'``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wbc_edge.console import console
from wbc_edge.errors import UserError
from wbc_edge.runtime.lock import FolderLock
from wbc_edge.runtime.resume import LIVE_PREFIX, ResumeState, Stat

CSV_FIELDS = [
    "time",
    "source",
    "frame",
    "file",
    "cell",
    "x1",
    "y1",
    "x2",
    "y2",
    "class",
    "prob",
    "top3",
    "uncertain",
    "ood",
    "id",
]


# Spreadsheets run a cell starting with one of these as a formula (CSV injection): OWASP's advice
# is to prefix the cell with a single quote, which they show as text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def printable_name(text: str) -> str:
    """``text`` as valid UTF-8: bytes of a file name that are not UTF-8 become ``\\xNN``."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that did not come from a file name
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def csv_cell(text: str) -> str:
    """A text cell for cells.csv: printable, and never run as a formula by a spreadsheet."""
    text = printable_name(text)
    return "'" + text if text.startswith(_FORMULA_START) else text


REPORT_SUFFIXES = (".html", ".htm")


def report_target(path: str | Path, option: str = "--report") -> Path:
    """Where a report may be written for ``option PATH``: PATH, or PATH/report.html for a
    folder. Refused (before anything is written) unless it names an HTML file that is not there
    yet or is an HTML page already, so an image, a sample's records or any other file is never
    replaced by a report."""
    text = str(path)
    path = Path(path)
    if path.is_dir() or text.endswith(("/", "\\")):
        path = path / "report.html"
    name = printable_name(str(path))
    if path.suffix.lower() not in REPORT_SUFFIXES:
        raise UserError(
            f"{option} {name}: a report is an .html file (or a folder, for report.html in it); "
            "give a path ending in .html"
        )
    if path.exists() or path.is_symlink():
        head = b""
        if path.is_file():
            with path.open("rb") as f:
                head = f.read(512).lstrip().lower()
        if not head.startswith((b"<!doctype html", b"<html")):
            raise UserError(
                f"{option} {name} exists and is not an HTML page: it would be overwritten; "
                "give another path, or move it first"
            )
    return path


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Say which file a full disk (or a failing device) stopped, in one line: the OS's own
    "No space left on device" names none."""
    try:
        yield
    except OSError as exc:
        raise UserError(
            f"cannot write {printable_name(str(path))} ({exc.strerror or exc}): free space or "
            "fix the device; what is already written is kept, and the run resumes from it"
        ) from exc


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


@dataclass
class CellRecord:
    """One classified cell. ``key`` is the item it came from (file path or source#frame)."""

    time: str
    source: str
    frame: int
    file: str
    cell: int
    box: tuple[int, int, int, int]
    label: str
    prob: float
    top3: list[tuple[str, float]]
    uncertain: bool
    key: str = ""
    # Smear fields: the red-cell diameter (px) the field was cropped at and where it came from
    # (measured / given / assumed, :class:`wbc_edge.model.fieldcrop.FieldScale`). JSONL only:
    # the CSV keeps its columns so older run folders still resume.
    rbc_px: float | None = None
    scale: str = ""
    # Out-of-distribution (the crop looks unlike the training data, wbc_edge/model/ood.py): such a
    # cell is counted apart, under review, and raises no flag.
    ood: bool = False

    @property
    def id(self) -> str:
        """A stable name for the cell (its item's key and its index there): review, crops and
        corrections refer to it, whatever order the records were written in."""
        return cell_id(self.key, self.cell)

    @property
    def field_id(self) -> str:
        """The name of the frame (field) the cell was found in."""
        return field_id(self.key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "source": self.source,
            "frame": self.frame,
            "file": self.file,
            "cell": self.cell,
            "box": list(self.box),
            "class": self.label,
            "prob": round(self.prob, 5),
            "top3": [[name, round(p, 5)] for name, p in self.top3],
            "uncertain": self.uncertain,
            "ood": self.ood,
            "key": self.key,
            **({"rbc_px": round(self.rbc_px, 2), "scale": self.scale} if self.rbc_px else {}),
            "id": self.id,
        }

    def csv_row(self) -> list[Any]:
        top3 = ";".join(f"{name}:{p:.4f}" for name, p in self.top3)
        x1, y1, x2, y2 = self.box
        return [
            self.time,
            csv_cell(self.source),
            self.frame,
            csv_cell(self.file),
            self.cell,
            x1,
            y1,
            x2,
            y2,
            csv_cell(self.label),
            f"{self.prob:.5f}",
            csv_cell(top3),
            int(self.uncertain),
            int(self.ood),
            self.id,
        ]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellRecord:
        return cls(
            time=d["time"],
            source=d["source"],
            frame=int(d["frame"]),
            file=d["file"],
            cell=int(d["cell"]),
            box=tuple(d["box"]),  # type: ignore[arg-type]
            label=d["class"],
            prob=float(d["prob"]),
            top3=[(n, float(p)) for n, p in d["top3"]],
            uncertain=bool(d["uncertain"]),
            key=d.get("key", ""),
            rbc_px=d.get("rbc_px"),
            scale=d.get("scale", ""),
            ood=bool(d.get("ood", False)),
        )


def field_id(key: str) -> str:
    """16 hex digits naming the item (file or frame) ``key``."""
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def cell_id(key: str, cell: int) -> str:
    """16 hex digits naming cell ``cell`` of item ``key`` (safe in a file name and a URL)."""
    return hashlib.sha1(f"{key}\n{cell}".encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _trim_torn_line(path: Path) -> bool:
    """Cut a last line that a killed writer left without its newline; True if it did."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with path.open("rb+") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return False
        # Walk back to the previous newline in 64 KiB steps.
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            chunk = f.read(end - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                f.truncate(start + nl + 1)
                return True
            end = start
        f.truncate(0)
        return True


def iter_records(path: str | Path) -> Iterator[CellRecord]:
    """The records of a ``cells.jsonl`` one at a time (a torn last line is ignored), so a
    folder with millions of records is read in constant memory."""
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                continue
            try:
                record = CellRecord.from_dict(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise UserError(
                    f"{path}:{number} is not a wbc-edge cell record ({exc}): fix or move the "
                    "file, or write to another --out"
                ) from exc
            yield record


def read_records(path: str | Path) -> list[CellRecord]:
    """Every record of a ``cells.jsonl`` (a torn last line is ignored)."""
    return list(iter_records(path))


class RunOutput:
    """The output folder of a run; reopening it continues where the last run stopped.

    The folder is locked for as long as this object is open: a second run on it is refused
    with a one-line error instead of interleaving its records with this one's.

    ``rotate_mb`` > 0 keeps a camera that runs for weeks from growing one file without bound:
    when ``cells.jsonl`` reaches that size, it, ``cells.csv`` and ``errors.jsonl`` are renamed
    to ``<name>.<UTC time>.<ext>`` and new ones begin (the earlier parts are complete files and
    can be archived or removed). ``done.txt`` is not rotated: it holds files and video frames,
    which resume needs, never camera frames.
    """

    def __init__(self, out_dir: str | Path, rotate_mb: float = 0.0) -> None:
        self.dir = Path(out_dir)
        self.rotate_bytes = int(rotate_mb * 1e6)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = FolderLock(self.dir).acquire()  # before the repair: it writes too
        try:
            self._open()
        except BaseException:
            self.lock.release()
            raise

    def _open(self) -> None:
        self.jsonl_path = self.dir / "cells.jsonl"
        self.csv_path = self.dir / "cells.csv"
        self.errors_path = self.dir / "errors.jsonl"
        self.done_path = self.dir / "done.txt"
        self.resume = self._recover()
        self._jsonl = self.jsonl_path.open("a", encoding="utf-8")
        new_csv = not self.csv_path.is_file() or self.csv_path.stat().st_size == 0
        self._csv = self.csv_path.open("a", encoding="utf-8", newline="")
        if new_csv:
            self._csv.write(_csv_text([CSV_FIELDS]))
            self._csv.flush()
        self._errors = self.errors_path.open("a", encoding="utf-8")
        # surrogateescape: a key holding a non-UTF-8 file name goes out as its original bytes.
        self._done_file = self.done_path.open("a", encoding="utf-8", errors="surrogateescape")
        self.records_written = 0
        self.errors_written = 0

    def _recover(self) -> ResumeState:
        for path in (self.jsonl_path, self.csv_path, self.errors_path, self.done_path):
            if _trim_torn_line(path):
                console.print(f"[yellow]repaired[/] {path}: cut a line torn by an interruption")
        state = ResumeState()
        # Rotated parts first, the current file last: a later failure of a file wins.
        for path in [*sorted(self.dir.glob("errors.*.jsonl")), self.errors_path]:
            if not path.is_file():
                continue
            with path.open(encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    entry = _json_line(path, number, line)
                    stat = (entry["size"], entry["mtime_ns"]) if "size" in entry else None
                    state.add_failed(entry["key"], stat, entry.get("file", ""))
        records = 0
        if self.jsonl_path.is_file():
            for record in iter_records(self.jsonl_path):
                state.add_done(record.key, record.file if record.key != record.file else "")
                records += 1
        if self.done_path.is_file():
            with self.done_path.open(encoding="utf-8", errors="surrogateescape") as f:
                for number, line in enumerate(f, 1):
                    _add_done_line(state, self.done_path, number, line)
        self._level_csv(records)
        return state

    def _level_csv(self, records: int) -> None:
        """Append the rows a kill between the JSONL and CSV writes left out of the CSV."""
        if not self.csv_path.is_file() or not records:
            return
        with self.csv_path.open(encoding="utf-8", newline="") as f:
            rows = max(0, sum(1 for _ in csv.reader(f)) - 1)
        if rows < records:
            missing = [r for i, r in enumerate(iter_records(self.jsonl_path)) if i >= rows]
            with self.csv_path.open("a", encoding="utf-8", newline="") as f:
                f.write(_csv_text([r.csv_row() for r in missing]))
            console.print(f"[yellow]repaired[/] {self.csv_path}: {records - rows} rows added")

    def done(self) -> set[str]:
        """Keys of files finished (or failed and unchanged) by earlier runs into this folder."""
        return self.resume.done | {key for key, _ in self.resume.failed.values()}

    def write_item(
        self,
        key: str,
        records: list[CellRecord],
        file: str = "",
        stat: Stat | None = None,
        digest: str = "",
    ) -> None:
        """Append an item's records (possibly none: a field without white cells), then mark it
        done, with its file's ``stat`` and content ``digest`` when it is a file (a later change
        is read as new content); each file is flushed before the next is written. Camera and
        stream frames are not marked: they never come again, and a camera's done list would
        grow for ever."""
        self.write_items([(key, records, file, stat, digest)])

    def write_items(self, items: list[tuple[str, list[CellRecord], str, Stat | None, str]]) -> None:
        """:meth:`write_item` for a batch of ``(key, records, file, stat, digest)``: every
        record in one append to the JSONL, then one to the CSV, then the items' ``done.txt``
        lines in one, three system calls for the whole batch instead of three per item. A kill
        in between loses nothing and repeats nothing: reopening cuts a torn line, levels the
        CSV with the JSONL and counts every complete record's item as done."""
        texts = ["".join(json.dumps(r.to_dict()) + "\n" for r in rs) for _, rs, _, _, _ in items]
        if not self.rotate_bytes:
            self._append(items, texts)
            return
        # Rotating: the batch is cut where the JSONL reaches its size, so parts stay that size.
        start, size = 0, self._jsonl.tell()
        for i, text in enumerate(texts):
            size += len(text)
            if size >= self.rotate_bytes:
                self._append(items[start : i + 1], texts[start : i + 1])
                self.rotate()
                start, size = i + 1, 0
        if start < len(items):
            self._append(items[start:], texts[start:])

    def _append(
        self, items: list[tuple[str, list[CellRecord], str, Stat | None, str]], texts: list[str]
    ) -> None:
        records = [r for _, rs, _, _, _ in items for r in rs]
        if records:
            self._write(self._jsonl, "".join(texts))
            self._write(self._csv, _csv_text([r.csv_row() for r in records]))
        done = [
            (key, file if file != key else "", stat, digest)
            for key, _, file, stat, digest in items
            if not key.startswith(LIVE_PREFIX)
        ]
        if done:
            self._write(self._done_file, "".join(_done_line(*entry) for entry in done))
            for entry in done:
                self.resume.add_done(*entry)
        self.records_written += len(records)

    def rotate(self) -> list[Path]:
        """Close the current records and errors as complete parts and start new ones.

        Renamed CSV and errors first, the JSONL (the record of truth) last: a kill in between
        at worst leaves CSV rows that the next open adds again from the JSONL, never a lost or
        repeated JSONL record.
        """
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        self._jsonl.close()
        self._csv.close()
        self._errors.close()
        parts = []
        for path in (self.csv_path, self.errors_path, self.jsonl_path):
            if path.is_file() and path.stat().st_size:
                part = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
                path.replace(part)
                parts.append(part)
        self._jsonl = self.jsonl_path.open("a", encoding="utf-8")
        self._csv = self.csv_path.open("a", encoding="utf-8", newline="")
        self._csv.write(_csv_text([CSV_FIELDS]))
        self._csv.flush()
        self._errors = self.errors_path.open("a", encoding="utf-8")
        console.print(f"rotated {self.dir}: {', '.join(p.name for p in parts)}", highlight=False)
        return parts

    def write_error(
        self, key: str, source: str, message: str, stat: Stat | None = None, file: str = ""
    ) -> None:
        """Log an item that could not be used; ``stat`` (size, mtime_ns) of a file lets a later
        run try it again once it has changed (without one, once it is there again)."""
        entry: dict[str, Any] = {"time": now_iso(), "source": source, "key": key}
        if file and file != key:
            entry["file"] = file
        entry["error"] = message
        if stat is not None:
            entry["size"], entry["mtime_ns"] = stat
        self._write(self._errors, json.dumps(entry) + "\n")
        self.resume.add_failed(key, stat, file if file != key else "")
        self.errors_written += 1

    def _write(self, f: Any, text: str) -> None:
        """Append and flush; a full disk or a failing device is said with the file's name."""
        with writing(f.name):
            f.write(text)
            f.flush()

    def close(self) -> None:
        for f in (self._jsonl, self._csv, self._errors, self._done_file):
            f.close()
        self.lock.release()

    def __enter__(self) -> RunOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_line(path: Path, number: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path}:{number} is not a wbc-edge line ({exc.msg}): fix or move the file, or write "
            "to another --out"
        ) from exc


def _done_line(key: str, file: str, stat: Stat | None, digest: str) -> str:
    """One line of ``done.txt``: JSON, so a file name holding a newline stays one line."""
    if stat is None:
        return json.dumps(key) + "\n"
    entry: dict[str, Any] = {"key": key, **({"file": file} if file else {})}
    entry.update(size=stat[0], mtime_ns=stat[1], digest=digest)
    return json.dumps(entry) + "\n"


def _add_done_line(state: ResumeState, path: Path, number: int, line: str) -> None:
    """A line of ``done.txt``: JSON, or a bare key as folders before JSON lines wrote them."""
    if not line.startswith(('"', "{")):
        state.add_done(line.rstrip("\n"))
        return
    entry = _json_line(path, number, line)
    if isinstance(entry, str):
        state.add_done(entry)
    else:
        stat = (entry["size"], entry["mtime_ns"]) if "size" in entry else None
        state.add_done(entry["key"], entry.get("file", ""), stat, entry.get("digest", ""))


def _csv_text(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()
