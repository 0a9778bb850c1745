"""Files read once: a folder (recursively), a glob or one image, in sorted order.

A file done by an earlier run into the same results is skipped by its key; a file that failed
is read again once it has changed; a name reused for new bytes is a new item (its key carries
the revision), while the same bytes touched or copied back are counted once.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.markup import escape

from wbc_edge.console import console
from wbc_edge.model.decode import check_complete, decode_image
from wbc_edge.runtime.resume import ResumeState, content_digest, file_key, file_stat
from wbc_edge.runtime.sinks import printable_name
from wbc_edge.runtime.sources import EndOfStream, Frame, Source, SourceOptions


def read_frame(opts: SourceOptions, index: int, path: Path, key: str = "") -> Frame:
    """Read a file (and decode it in full unless ``opts.defer_decode``); errors go in the frame.
    ``key``: the item's key when it is not the file's own (a revision of a reused name)."""
    file = file_key(path)
    key = key or file
    captured = time.perf_counter()  # latency counts reading and decoding too
    cpu = time.thread_time()
    name = printable_name(str(path))  # messages and logs stay valid UTF-8
    stat = file_stat(path)
    image, data, error, digest = None, None, "", ""
    try:
        data = path.read_bytes()
        digest = content_digest(data)
        check_complete(data, name)
        if not opts.defer_decode:
            image, data = decode_image(data, name), None
    except (OSError, ValueError) as exc:
        data, error = None, printable_name(str(exc))
    frame = Frame(opts.uri, index, key, image, file=file, error=error, captured=captured, data=data)
    frame.read_s, frame.read_cpu_s = time.perf_counter() - captured, time.thread_time() - cpu
    frame.stat, frame.digest = stat, digest
    return frame


def said_revision(frame: Frame) -> None:
    console.print(
        escape(
            f"{printable_name(frame.file)} holds new content since it was recorded (a name used "
            "again): classified as a new item"
        ),
        highlight=False,
        soft_wrap=True,
    )


class FileSource(Source):
    """A fixed, sorted list of files (folder, glob or one image), read once."""

    def __init__(self, opts: SourceOptions, files: list[Path], resume: ResumeState) -> None:
        super().__init__(opts)
        self.files = files
        self.resume = resume
        todo = []
        for i, p in enumerate(files):
            path_key = file_key(p)
            key = resume.item_key(path_key, file_stat(p) if resume.known(path_key) else None)
            if key is not None:
                todo.append((i, p, key))
        self.skipped = len(files) - len(todo)
        self._todo = iter(todo)

    def __len__(self) -> int:
        return len(self.files) - self.skipped

    def capture(self, timeout: float = 1.0) -> Frame | None:
        while True:
            try:
                index, path, key = next(self._todo)
            except StopIteration:
                raise EndOfStream from None
            self.index = index
            frame = read_frame(self.options, index, path, key)
            if key == frame.file:
                return frame
            if not self.resume.same_content(frame.file, frame.stat, frame.digest):
                said_revision(frame)
                return frame
            self.skipped += 1  # only touched or copied back: the same bytes, counted once
