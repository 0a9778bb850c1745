"""Results that are never lost: append-only CSV and JSONL records, an errors log, resume state.

An output folder holds::

    cells.jsonl   one JSON object per classified cell (the record of truth)
    cells.csv     the same records as a spreadsheet row each
    errors.jsonl  files that could not be read (corrupt, truncated, not an image)
    done.txt      the key of every finished item (file or frame), written after its records

All the records of one item go out in one ``write`` and are flushed before the item is marked
done, so a process killed at any moment leaves at most a torn last line. Reopening the folder
repairs that (cuts the torn line, brings the CSV level with the JSONL) and :meth:`done` lists the
items to skip: those in ``done.txt``, in the records, or in the errors log (an unreadable file
is not retried for ever).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from wbc_edge.console import console
from wbc_edge.errors import UserError

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
]


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
    # (measured / given / assumed, :class:`wbc_edge.runtime.finder.FieldScale`). JSONL only:
    # the CSV keeps its columns so older run folders still resume.
    rbc_px: float | None = None
    scale: str = ""
    # Out-of-distribution (the crop looks unlike the training data, runtime/ood.py): such a
    # cell is counted apart, under review, and raises no flag.
    ood: bool = False

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
            "key": self.key,
            **({"rbc_px": round(self.rbc_px, 2), "scale": self.scale} if self.rbc_px else {}),
            "ood": self.ood,
        }

    def csv_row(self) -> list[Any]:
        top3 = ";".join(f"{name}:{p:.4f}" for name, p in self.top3)
        x1, y1, x2, y2 = self.box
        return [
            self.time,
            self.source,
            self.frame,
            self.file,
            self.cell,
            x1,
            y1,
            x2,
            y2,
            self.label,
            f"{self.prob:.5f}",
            top3,
            int(self.uncertain),
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


def read_records(path: str | Path) -> list[CellRecord]:
    """Every record of a ``cells.jsonl`` (a torn last line is ignored)."""
    records = []
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                continue
            try:
                records.append(CellRecord.from_dict(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise UserError(
                    f"{path}:{number} is not a wbc-edge cell record ({exc}): fix or move the "
                    "file, or write to another --out"
                ) from exc
    return records


class RunOutput:
    """The output folder of a run; reopening it continues where the last run stopped."""

    def __init__(self, out_dir: str | Path) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.dir / "cells.jsonl"
        self.csv_path = self.dir / "cells.csv"
        self.errors_path = self.dir / "errors.jsonl"
        self.done_path = self.dir / "done.txt"
        self._done = self._recover()
        self._jsonl = self.jsonl_path.open("a", encoding="utf-8")
        new_csv = not self.csv_path.is_file() or self.csv_path.stat().st_size == 0
        self._csv = self.csv_path.open("a", encoding="utf-8", newline="")
        if new_csv:
            self._csv.write(_csv_text([CSV_FIELDS]))
            self._csv.flush()
        self._errors = self.errors_path.open("a", encoding="utf-8")
        self._done_file = self.done_path.open("a", encoding="utf-8")
        self.records_written = 0
        self.errors_written = 0

    def _recover(self) -> set[str]:
        for path in (self.jsonl_path, self.csv_path, self.errors_path, self.done_path):
            if _trim_torn_line(path):
                console.print(f"[yellow]repaired[/] {path}: cut a line torn by an interruption")
        done: set[str] = set()
        records = read_records(self.jsonl_path) if self.jsonl_path.is_file() else []
        done.update(r.key for r in records)
        if self.errors_path.is_file():
            with self.errors_path.open(encoding="utf-8") as f:
                done.update(json.loads(line)["key"] for line in f)
        if self.done_path.is_file():
            done.update(self.done_path.read_text(encoding="utf-8").splitlines())
        self._level_csv(records)
        return done

    def _level_csv(self, records: list[CellRecord]) -> None:
        """Append the rows a kill between the JSONL and CSV writes left out of the CSV."""
        if not self.csv_path.is_file():
            return
        with self.csv_path.open(encoding="utf-8", newline="") as f:
            rows = max(0, sum(1 for _ in csv.reader(f)) - 1)
        if rows < len(records):
            with self.csv_path.open("a", encoding="utf-8", newline="") as f:
                f.write(_csv_text([r.csv_row() for r in records[rows:]]))
            console.print(f"[yellow]repaired[/] {self.csv_path}: {len(records) - rows} rows added")

    def done(self) -> set[str]:
        """Keys of items finished by earlier runs into this folder."""
        return set(self._done)

    def write_item(self, key: str, records: list[CellRecord]) -> None:
        """Append an item's records (possibly none: a field without white cells), then mark it
        done; each file is flushed before the next is written."""
        if records:
            self._jsonl.write("".join(json.dumps(r.to_dict()) + "\n" for r in records))
            self._jsonl.flush()
            self._csv.write(_csv_text([r.csv_row() for r in records]))
            self._csv.flush()
        self._done_file.write(key + "\n")
        self._done_file.flush()
        self._done.add(key)
        self.records_written += len(records)

    def write_error(self, key: str, source: str, message: str) -> None:
        entry = {"time": now_iso(), "source": source, "key": key, "error": message}
        self._errors.write(json.dumps(entry) + "\n")
        self._errors.flush()
        self._done.add(key)
        self.errors_written += 1

    def close(self) -> None:
        for f in (self._jsonl, self._csv, self._errors, self._done_file):
            f.close()

    def __enter__(self) -> RunOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _csv_text(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()
