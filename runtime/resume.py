"""What a results folder remembers so a restarted run neither repeats nor skips an item.

Every item has a key, and the key's form says how it resumes:

=============================  ===============================================================
``/abs/path/cell.jpg``         a file: remembered by key (a folder, a glob, ``--watch``)
``video:/abs/clip.mp4#123``    frame 123 of a video file: only the highest frame done is kept,
                               so a rerun goes on after it and memory does not grow per frame
``live:<uri>@<session>#123``   a camera or stream frame: never replayed, so nothing is kept; the
                               session id (start time) keeps keys unique across restarts
=============================  ===============================================================

A file that failed (unreadable, truncated, too large) is remembered with the size and mtime it
had then: if it changes afterwards (a writer finished it), it is tried again, by a watching run
as by a restarted one. Keys are Python strings; a file name that is not valid UTF-8 keeps its raw
bytes as lone surrogates (``os.fsdecode``), which JSON escapes and ``os.fsencode`` reverses.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

VIDEO_PREFIX = "video:"
LIVE_PREFIX = "live:"


def file_key(path: str | Path) -> str:
    """How a file is named in the results: its absolute path, so resume matches it exactly."""
    return str(Path(path).absolute())


def video_key(path: str | Path, index: int) -> str:
    return f"{VIDEO_PREFIX}{file_key(path)}#{index}"


def live_key(uri: str, session: str, index: int) -> str:
    return f"{LIVE_PREFIX}{uri}@{session}#{index}"


def new_session_id() -> str:
    """A run's id for live keys: UTC start time to the millisecond plus the pid."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}.{int(now * 1000) % 1000:03d}Z-{os.getpid()}"


def file_stat(path: str | Path) -> tuple[int, int] | None:
    """(size, mtime in ns) of a file, or None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


@dataclass
class ResumeState:
    """The items of a results folder finished by earlier runs, in the least memory that works."""

    done: set[str] = field(default_factory=set)  # file keys
    failed: dict[str, tuple[int, int] | None] = field(default_factory=dict)  # key -> stat then
    positions: dict[str, int] = field(default_factory=dict)  # video file key -> last frame done

    @classmethod
    def of(cls, keys: Iterable[str] | ResumeState) -> ResumeState:
        """Accept a plain set of keys as well (callers that resume by key only)."""
        if isinstance(keys, ResumeState):
            return keys
        state = cls()
        for key in keys:
            state.add_done(key)
        return state

    def add_done(self, key: str) -> None:
        if key.startswith(LIVE_PREFIX):
            return
        if key.startswith(VIDEO_PREFIX):
            path, _, index = key[len(VIDEO_PREFIX) :].rpartition("#")
            if index.isdigit():
                self.positions[path] = max(self.positions.get(path, -1), int(index))
            return
        self.done.add(key)
        self.failed.pop(key, None)

    def add_failed(self, key: str, stat: tuple[int, int] | None) -> None:
        if key.startswith(VIDEO_PREFIX):
            self.add_done(key)  # a bad frame of a video is not retried: the frame cannot change
        elif not key.startswith(LIVE_PREFIX) and key not in self.done:
            self.failed[key] = stat

    def finished(self, key: str, stat: tuple[int, int] | None = None) -> bool:
        """True when ``key`` needs no (new) attempt: done, or failed and unchanged since."""
        if key in self.done:
            return True
        if key in self.failed:
            then = self.failed[key]
            return then is None or stat is None or then == stat
        return False

    def next_frame(self, path: str | Path) -> int:
        """The first frame of a video file not done yet."""
        return self.positions.get(file_key(path), -1) + 1

    def __len__(self) -> int:
        return len(self.done) + len(self.failed) + len(self.positions)
