"""Annotated frames (``--annotate``): each frame with its cells boxed and labelled, written to
a video file or a folder of JPEGs.

The boxes are orange for a cell in review (uncertain or out-of-distribution, never counted) and
green for a counted one, as the archived report frames them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

VIDEO_SUFFIXES = {".mp4": "mp4v", ".m4v": "mp4v", ".avi": "MJPG", ".mkv": "MJPG", ".mov": "mp4v"}


class Annotator:
    """Writes each frame with its cells boxed and labelled (``--annotate``), to an output URI as
    jetson-inference names them: a video file (``out.mp4``, ``.avi``, ``.mkv``, ``.mov``) or a
    folder of JPEGs (any other path).

    A video plays at ``fps`` (the source's own rate for a video or camera); frames of another
    size than the first are resized to it, since a video has one frame size.
    """

    def __init__(self, out: str | Path, fps: float = 5.0) -> None:
        from wbc_edge.errors import UserError

        self.path = Path(out)
        self.fourcc = VIDEO_SUFFIXES.get(self.path.suffix.lower())
        if self.fourcc is None and self.path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"):
            raise UserError(
                f"--annotate {out}: give a folder (one JPEG per frame) or a video file "
                f"({', '.join(sorted(VIDEO_SUFFIXES))})"
            )
        self.fps = fps if fps and fps > 0 else 5.0
        self._writer: Any = None
        self._size: tuple[int, int] | None = None
        self.frames = 0
        if self.fourcc is None:
            self.path.mkdir(parents=True, exist_ok=True)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, item: Any) -> None:  # pipeline.Item
        import cv2

        frame = item.frame
        if frame.image is None:
            return
        image = draw_cells(frame.image, item.records)
        if self.fourcc is None:
            stem = Path(frame.file).stem if frame.file else "frame"
            cv2.imwrite(str(self.path / f"{frame.index:06d}_{stem}.jpg"), image)
        else:
            self._write_video(image)
        self.frames += 1

    def _write_video(self, image: Any) -> None:
        import cv2

        from wbc_edge.errors import UserError

        if self._writer is None:
            h, w = image.shape[:2]
            self._size = (w, h)
            fourcc = cv2.VideoWriter_fourcc(*self.fourcc)
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, self._size)
            if not self._writer.isOpened():
                raise UserError(f"--annotate {self.path}: OpenCV cannot write this video type")
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)

    def close(self) -> None:
        """Finish the video file (its index is written here); safe to call twice."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def draw_cells(image_bgr: Any, records: list[Any]) -> Any:
    """A copy of the frame with every cell's box and label (orange: in review, uncertain or
    out-of-distribution; green: counted)."""
    import cv2

    image = image_bgr.copy()
    scale = max(0.4, min(image.shape[:2]) / 600)
    for r in records:
        x1, y1, x2, y2 = r.box
        color = (0, 165, 255) if r.uncertain or r.ood else (0, 200, 0)  # review: never counted
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), color, max(1, round(2 * scale)))
        label = f"{r.label} {r.prob:.2f}"
        org = (x1 + 3, max(y1 + round(16 * scale), 12))
        cv2.putText(image, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (0, 0, 0), 3)
        cv2.putText(image, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, color, 1)
    return image
