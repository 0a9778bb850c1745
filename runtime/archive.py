"""Every cell's crop, and in smear mode every field, kept in the sample folder as small JPEGs.

The report's gallery and the review page show them after any number of resumes (a camera's
frames exist nowhere else), and a confirmed crop is what ``wbc-edge adapt`` learns from. They are
written *before* the item's records (:meth:`CellArchive.save` runs in the output stage ahead of
``write_item``), so a record never lacks its image; an image whose record a kill prevented is
written again, under the same name, when the item is redone. Each file is written to a temporary
name and renamed, so a reader never sees half a JPEG.

In crops mode a cell *is* its file: when that file is a JPEG its own bytes are kept, not the
pixels encoded again. That costs 0.07 ms a cell instead of 0.5 ms (a resize to 160 px and a JPEG
encode, on the output stage's one thread: more than the model's own time on two cores), keeps the
cell exactly as it came from the analyser, and lets ``adapt`` learn from the very pixels the
runtime classified (its decode of a 160 px re-encode would differ).
"""

from __future__ import annotations

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

    def save(self, item: Any) -> None:  # pipeline.Item, with its records built
        encoded = getattr(item, "encoded", None)  # a crop file's own JPEG bytes
        if encoded is not None and not self.smear and len(item.records) == 1:
            write_bytes(self.folder.crop_path(item.records[0].id), encoded)
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


def crop_px_for(input_size: int) -> int:
    """Crops are kept at the model's input size, and at least 160 px for people to look at."""
    return max(160, int(input_size))
