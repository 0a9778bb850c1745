"""What a results folder remembers so a restarted run neither repeats nor skips an item.

Every item has a key, and the key's form says how it resumes:

=============================  ===============================================================
``/abs/path/cell.jpg``         a file: remembered by key (a folder, a glob, ``--watch``)
``/abs/path/cell.jpg#rev-...`` the same file name holding new content (a camera that reuses
                               names): its own item, so neither capture hides the other
``video:/abs/clip.mp4#123``    frame 123 of a video file: only the highest frame done is kept,
                               so a rerun goes on after it and memory does not grow per frame
``live:<uri>@<session>#123``   a camera or stream frame: never replayed, so nothing is kept; the
                               session id (start time) keeps keys unique across restarts
=============================  ===============================================================

A finished file is remembered with the size, mtime and content digest it had: when its size or
mtime changes and its bytes are new, it is read again as a new revision of that name (a file
only touched, or copied back unchanged, is not counted twice). A file that failed (unreadable,
truncated, deleted before it was read) is remembered with the size and mtime it had then, or
with none when it was gone: once it changes, or comes back, it is tried again, by a watching run
as by a restarted one. Keys are Python strings; a file name that is not valid UTF-8 keeps its
raw bytes as lone surrogates (``os.fsdecode``), which JSON escapes and ``os.fsencode`` reverses.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

VIDEO_PREFIX = "video:"
LIVE_PREFIX = "live:"
REVISION_MARK = "#rev-"

Stat = tuple[int, int]  # (size, mtime in ns)


def file_key(path: str | Path) -> str:
    """How a file is named in the results: its absolute path, so resume matches it exactly."""
    return str(Path(path).absolute())


def revision_key(path_key: str, stat: Stat) -> str:
    """The key of a file name's later content, named by the size and mtime it was read at (the
    same after a restart, so a kill between its records and ``done.txt`` repeats nothing)."""
    return f"{path_key}{REVISION_MARK}{stat[1]}-{stat[0]}"


def video_key(path: str | Path, index: int) -> str:
    return f"{VIDEO_PREFIX}{file_key(path)}#{index}"


def live_key(uri: str, session: str, index: int) -> str:
    return f"{LIVE_PREFIX}{uri}@{session}#{index}"


def new_session_id() -> str:
    """A run's id for live keys: UTC start time to the millisecond plus the pid."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}.{int(now * 1000) % 1000:03d}Z-{os.getpid()}"


def file_stat(path: str | Path) -> Stat | None:
    """(size, mtime in ns) of a file, or None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def content_digest(data: bytes) -> str:
    """What tells a file's new bytes from its old ones (not a security boundary)."""
    return hashlib.blake2b(data, digest_size=12).hexdigest()


@dataclass
class ResumeState:
    """The items of a results folder finished by earlier runs, in the least memory that works."""

    done: set[str] = field(default_factory=set)  # item keys (files and their revisions)
    # file key -> (stat, digest) of the content last done; stat None: recorded without it
    files: dict[str, tuple[Stat | None, str]] = field(default_factory=dict)
    # file key -> (item key, stat when it failed; None: it was gone or could not be read)
    failed: dict[str, tuple[str, Stat | None]] = field(default_factory=dict)
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

    def add_done(
        self, key: str, file: str = "", stat: Stat | None = None, digest: str = ""
    ) -> None:
        """``key`` is done; ``file`` is its file's key when that is not ``key`` itself (a
        revision), ``stat`` and ``digest`` what the file was when it was read."""
        if key.startswith(LIVE_PREFIX):
            return
        if key.startswith(VIDEO_PREFIX):
            path, _, index = key[len(VIDEO_PREFIX) :].rpartition("#")
            if index.isdigit():
                self.positions[path] = max(self.positions.get(path, -1), int(index))
            return
        self.done.add(key)
        path = file or key
        if stat is not None or path not in self.files:
            self.files[path] = (stat, digest)
        failure = self.failed.get(path)
        if failure is not None and failure[0] == key:
            del self.failed[path]

    def add_failed(self, key: str, stat: Stat | None, file: str = "") -> None:
        if key.startswith(VIDEO_PREFIX):
            self.add_done(key)  # a bad frame of a video is not retried: the frame cannot change
        elif not key.startswith(LIVE_PREFIX) and key not in self.done:
            self.failed[file or key] = (key, stat)

    def known(self, path_key: str) -> bool:
        """Whether an earlier run saw this file (so its stat decides what to do with it)."""
        return path_key in self.files or path_key in self.failed

    def item_key(self, path_key: str, stat: Stat | None) -> str | None:
        """The key to read the file ``path_key`` under now (``stat``: its size and mtime), or
        None when there is nothing new in it: done and unchanged, failed and unchanged since, or
        still gone. A file done before whose stat has changed gets a :func:`revision_key`; the
        caller compares its bytes (:meth:`same_content`) before counting it again."""
        failure = self.failed.get(path_key)
        if failure is not None:
            then = failure[1]
            if stat is None or then == stat:
                return None  # still gone or unreadable, or unchanged since it failed
        version = self.files.get(path_key)
        if version is None:
            return path_key
        then = version[0]
        if then is None or stat is None or then == stat:
            return None  # done (an older folder's record, without a stat: as it was then)
        revision = revision_key(path_key, stat)
        return None if revision in self.done else revision

    def same_content(self, path_key: str, stat: Stat | None, digest: str) -> bool:
        """True when a file whose stat changed holds the bytes done before (touched, or copied
        back): it is remembered at its new stat and not counted again."""
        version = self.files.get(path_key)
        if version is None or not digest or version[1] != digest:
            return False
        self.files[path_key] = (stat, digest)
        return True

    def finished(self, key: str, stat: Stat | None = None) -> bool:
        """True when the file ``key`` needs no (new) attempt."""
        return self.item_key(key, stat) is None

    def next_frame(self, path: str | Path) -> int:
        """The first frame of a video file not done yet."""
        return self.positions.get(file_key(path), -1) + 1

    def items(self) -> int:
        """Files, revisions and video frames done or failed (camera frames are not kept)."""
        return len(self.done) + len(self.failed) + sum(p + 1 for p in self.positions.values())

    def __len__(self) -> int:
        return len(self.done) + len(self.failed) + len(self.positions)
