"""Every cell's crop, and in smear mode every field, kept in the sample folder as small JPEGs.

The report's gallery and the review page show them after any number of resumes (a camera's
frames exist nowhere else), and a confirmed crop is what ``wbc-edge adapt`` learns from. They are
written *before* the item's records (:meth:`CellArchive.save` runs in the output stage ahead of
``write_item``), so a record never lacks its image; an image whose record a kill prevented is
written again, under the same name, when the item is redone. Each file is written to a temporary
name and renamed, so a reader never sees half a JPEG.

In crops mode a cell *is* its file: when that file is a JPEG its own bytes are kept, not the
pixels encoded again (a resize to 160 px and a JPEG encode cost 0.5 ms a cell on the output
stage's one thread), which keeps the cell exactly as it came from the analyser and lets ``adapt``
learn from the very pixels the runtime classified.

How the bytes are kept: a **hard link** (``os.link``) to the source file, one system call a cell
with nothing copied and no space used, atomic (a reader never sees half a file), and bytes equal
to the source's by construction, since it is the same file. A copy of the bytes already in
memory (a temporary name, then a rename: four system calls, each handing the GIL to the decode
workers and waiting to get it back) is the fallback where a link cannot be made: the results on
another filesystem than the crops (``EXDEV``), a filesystem without hard links (FAT, exFAT), a
kernel that refuses links to another user's files (``fs.protected_hardlinks``). The first refusal
switches the run to copies, so it is paid once. ``copy_file_range`` was not chosen: it would read
the source again (by then it may hold other bytes than the ones classified) and costs as many
calls as the copy from memory. A *reference* to the source (no file at all) was not chosen
either: analysers' export folders are cleaned or moved, and the gallery, the review page and
``adapt`` would then lose the cell or have to serve files from outside the sample folder.

A link is the source file itself: the link's size and modification time are checked against the
file's when it was read (a file replaced since is copied from memory instead), but a source
rewritten *in place* afterwards changes the kept crop too. Analysers and cameras write new files
(and ``run --watch`` classifies a changed file again as a new revision), so this is accepted.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.runtime.sample import SampleFolder
from wbc_edge.runtime.sinks import field_id, writing

FIELD_PX = 640  # longest side of a field image: boxes stay visible, a field costs ~40 KB
QUALITY = 90


def _shrink(image: np.ndarray, longest: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    scale = longest / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def write_jpeg(path: Path, image_bgr: np.ndarray, longest: int, quality: int = QUALITY) -> None:
    import cv2

    ok, buf = cv2.imencode(".jpg", _shrink(image_bgr, longest), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot encode {path.name}")
    write_bytes(path, buf.tobytes())


def write_bytes(path: Path, data: bytes) -> None:
    """``data`` to ``path`` through a temporary name: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        tmp.write_bytes(data)
        os.replace(tmp, path)


class CellArchive:
    """Writes the crops (encoded ones at most ``crop_px`` on their longest side; a crop file's
    own JPEG as it is) and smear fields."""

    def __init__(self, folder: SampleFolder, crop_px: int, smear: bool) -> None:
        self.folder = folder
        self.crop_px = crop_px
        self.smear = smear
        folder.cells_dir.mkdir(parents=True, exist_ok=True)
        if smear:
            folder.fields_dir.mkdir(parents=True, exist_ok=True)
        self._cells = str(folder.cells_dir)
        self.link = True  # until a link is refused (another filesystem, no hard links)
        self.linked = 0  # cells kept as links to their source files (the rest: copies)

    def __call__(self, item: Any) -> None:
        self.save(item)

    def save_all(self, items: list[Any]) -> None:
        """:meth:`save` for each of ``items`` (the pipeline's output stage calls this once a
        group)."""
        for item in items:
            self.save(item)

    def save(self, item: Any) -> None:  # pipeline.Item, with its records built
        encoded = getattr(item, "encoded", None)  # a crop file's own JPEG bytes
        if encoded is not None and not self.smear and len(item.records) == 1:
            dest = f"{self._cells}/{item.records[0].id}.jpg"
            if not (self.link and self._link(item.frame.file, dest, item.frame.stat)):
                write_bytes(Path(dest), encoded)
            return
        for record, crop in zip(item.records, item.crops, strict=False):
            write_jpeg(self.folder.crop_path(record.id), crop, self.crop_px)
        image = item.frame.image
        if self.smear and item.records and image is not None:
            name = field_id(item.frame.key)
            # The field's own size, so the cells' boxes can be drawn on its smaller image.
            meta = {"key": item.frame.key, "file": item.frame.file, "frame": item.frame.index}
            meta.update(width=int(image.shape[1]), height=int(image.shape[0]))
            tmp = self.folder.fields_dir / f"{name}.json.tmp"
            with writing(tmp):
                tmp.write_text(json.dumps(meta), encoding="utf-8")
                os.replace(tmp, self.folder.fields_dir / f"{name}.json")
            write_jpeg(self.folder.field_path(name), image, FIELD_PX)

    def _link(self, source: str, dest: str, stat: tuple[int, int] | None) -> bool:
        """Hard-link ``dest`` to ``source`` when it still holds what was read (``stat``: its
        size and mtime then); False when the caller must copy the bytes instead."""
        if not source or stat is None:
            return False
        try:
            try:
                os.link(source, dest)
            except FileExistsError:  # kept before a kill, its record not written: again
                tmp = dest + ".tmp"
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                os.link(source, tmp)
                os.replace(tmp, dest)
        except FileNotFoundError:  # the source is gone since it was read
            return False
        except OSError:  # EXDEV, EPERM, ENOTSUP, EMLINK: no links here, copies from now on
            self.link = False
            return False
        st = os.stat(dest)
        if (st.st_size, st.st_mtime_ns) != tuple(stat):  # replaced since it was read
            os.unlink(dest)
            return False
        self.linked += 1
        return True


def crop_px_for(input_size: int) -> int:
    """Crops are kept at the model's input size, and at least 160 px for people to look at."""
    return max(160, int(input_size))
