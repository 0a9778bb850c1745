"""One run at a time per results folder.

Two runs appending to the same folder would interleave their records and both resume from the
same state (the same files classified twice). The lock is an ``flock`` on ``<folder>/.lock``:
the kernel releases it when the process ends in any way, ``kill -9`` and power loss included,
so a lock is never stale and never needs deleting by hand. The file holds the holder's pid and
start time while it runs (for the refusal message) and is emptied on a clean release, so a
non-empty file found on acquiring means the last run did not end cleanly; that is said once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from wbc_edge.console import console
from wbc_edge.errors import UserError

LOCK_NAME = ".lock"


class FolderLock:
    """An exclusive, non-blocking lock on a folder, held until :meth:`release`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except OSError:
            holder = _read(fd).strip() or "unknown pid"
            os.close(fd)
            raise UserError(
                f"{self.folder} is in use by another wbc-edge run ({holder}): wait for it to "
                "end or stop it, or pass another --out"
            ) from None
        earlier = _read(fd).strip()
        if earlier:
            console.print(
                f"[yellow]recovered[/] {self.path}: the last run ({earlier}) ended without "
                "closing (killed?); its results are kept and it resumes from them",
                highlight=False,
                soft_wrap=True,
            )
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, started {stamp}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the file (a clean end) and drop the lock; safe to call twice."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> str:
    return os.pread(fd, 512, 0).decode("utf-8", "replace")


def _lock(fd: int) -> None:
    import fcntl  # POSIX only, like the runtime's targets (Jetson, Linux PCs)

    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
