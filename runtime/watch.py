"""A watched folder: new files as they arrive, each read once, after it stops growing."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from wbc_edge.console import console
from wbc_edge.runtime.files import read_frame, said_revision
from wbc_edge.runtime.resume import ResumeState, file_key, file_stat
from wbc_edge.runtime.sources import Frame, Source, SourceOptions, is_candidate_name, is_document

# How often a watch with inotify still lists the whole folder, in case an event was missed
# (the kernel's queue overflowed, or a network file system sends none).
RESCAN_S = 30.0


def _watched_name(name: str) -> bool:
    """A watch also leaves notes and metadata alone (a folder run says it skipped them)."""
    return is_candidate_name(name) and not is_document(name)


class WatchSource(Source):
    """New files in a folder, each read once, after its size and mtime stop changing.

    A file is ready when two looks at least ``settle_s`` apart saw the same size and mtime; a
    JPEG/PNG that still lacks its end marker then waits for more data, and is logged as
    truncated only if it stays that way for ``20 x settle_s``. A file that failed is read again
    when its size or mtime changes (a writer that paused, then finished it).

    With ``watchdog`` (inotify on Linux) only the files that events name are looked at, plus a
    full listing every :data:`RESCAN_S`, so an idle watch over a large folder costs nearly
    nothing; without it (or when inotify refuses, e.g. out of watches) the folder is listed
    every ``poll_s``.
    """

    def __init__(self, opts: SourceOptions, resume: ResumeState) -> None:
        super().__init__(opts)
        self.root = file_key(opts.resource)
        self.resume = resume
        # key -> (stat, monotonic time it was first seen with that stat)
        self._watching: dict[str, tuple[tuple[int, int], float]] = {}
        self._ready: list[str] = []
        self._next_poll = 0.0
        self._next_scan = 0.0
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._first_seen: dict[str, float] = {}  # truncated files waiting for their end
        self._observer = self._start_observer()
        opts.notify = "inotify" if self._observer is not None else "polling"

    def _start_observer(self):  # -> watchdog Observer | None
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            return None
        source = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                if event.is_directory:
                    source._next_scan = 0.0  # a folder moved in: list it all
                    return
                paths = [event.src_path, getattr(event, "dest_path", "")]
                with source._dirty_lock:
                    source._dirty.update(os.fsdecode(p) for p in paths if p)

        observer = Observer()
        try:
            observer.schedule(Handler(), self.root, recursive=True)
            observer.start()
        except OSError as exc:  # inotify watch or instance limit
            console.print(f"[yellow]watch[/] {self.root}: inotify unavailable ({exc}); polling")
            return None
        return observer

    def _scan(self) -> Iterator[str]:
        for dirpath, _dirs, names in os.walk(self.root):
            for name in names:
                if _watched_name(name):
                    yield os.path.join(dirpath, name)

    def _consider(self, key: str, now: float, recheck: bool = True) -> None:
        """Watch ``key`` if it holds something new; ``recheck`` False skips files done before
        without a stat (a polling listing between rechecks: 10,800 stats every 0.5 s cost a
        fifth of a core)."""
        if key in self._watching or not _watched_name(os.path.basename(key)):
            return
        if not recheck and key in self.resume.done and key not in self.resume.failed:
            return
        stat = file_stat(key)
        if stat is None or not os.path.isfile(key):
            return
        if self.resume.item_key(key, stat) is None:
            return  # done, or failed, and unchanged since
        self._watching[key] = (stat, now)

    def _poll(self) -> None:
        now = time.monotonic()
        if self._observer is None or now >= self._next_scan:
            # Polling lists every poll_s but looks again at files done before (a name reused
            # for new content) only every RESCAN_S; inotify's events name such files at once.
            recheck = now >= self._next_scan
            if recheck:
                self._next_scan = now + RESCAN_S
            for key in self._scan():
                self._consider(key, now, recheck)
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        for key in dirty:
            self._consider(key, now)
        ready = []
        for key, (stat, since) in list(self._watching.items()):
            current = file_stat(key)
            if current is None:  # deleted or renamed away
                del self._watching[key]
            elif current != stat:
                self._watching[key] = (current, now)
            elif stat[0] > 0 and now - since >= self.options.settle_s:
                ready.append(key)
        for key in sorted(ready):
            del self._watching[key]
        self._ready.extend(sorted(ready))

    def _read(self, key: str) -> Frame | None:
        item = self.resume.item_key(key, file_stat(key))
        if item is None:
            return None
        frame = read_frame(self.options, self.index, Path(key), item)
        if item != key and self.resume.same_content(key, frame.stat, frame.digest):
            return None  # only touched or copied back: the same bytes, counted once
        if "truncated" in frame.error:
            first = self._first_seen.get(key, time.monotonic())
            if time.monotonic() - first < 20 * self.options.settle_s:
                self._first_seen.setdefault(key, first)
                self._consider(key, time.monotonic())  # not finished yet: look again later
                return None
        self._first_seen.pop(key, None)
        # Handed out: a later look must not offer it again (the output marks it for good).
        if frame.error:
            self.resume.add_failed(item, frame.stat, key)
        else:
            self.resume.add_done(item, key, frame.stat, frame.digest)
            if item != key:
                said_revision(frame)
        self.index += 1
        return frame

    def capture(self, timeout: float = 1.0) -> Frame | None:
        deadline = time.monotonic() + timeout
        while True:
            while self._ready:
                frame = self._read(self._ready.pop(0))
                if frame is not None:
                    return frame
            now = time.monotonic()
            if now >= self._next_poll:
                self._next_poll = now + self.options.poll_s
                self._poll()
                if self._ready or time.monotonic() < deadline:
                    continue
                # A listing slower than poll_s (10,000 files on a busy machine) would otherwise
                # poll again at once, for ever: return, so the caller can see a stop.
                return None
            if now >= deadline:
                return None
            time.sleep(min(self._next_poll, deadline) - now)

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._observer = None
