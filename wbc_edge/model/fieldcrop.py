"""The field-to-crop rule: from a smear field to the crops a model sees, at the card's scale.

A model's card records the field of view its training crops spanned, in red-cell diameters
(``preprocess.crop_scale``, :class:`~wbc_edge.model.scale.CropScale`). A field's crops span the
same number of *this* field's red cells (measured per field, given by the user, or carried
along a stream by a :class:`StreamRuler`), so a cell reaches the network at its training size
whatever the camera. This module is the one place that rule is applied: :class:`~wbc_edge.
model.model.Model` (the pipeline and the Python API) and ``adapt`` all cut fields here, given
the card's crop scale, never a field of view of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from wbc_edge.model.defaults import MARGIN
from wbc_edge.model.finder import Box, FinderParams, background_colour, find_cells

if TYPE_CHECKING:
    from wbc_edge.model.scale import CropScale


def crop_cell(
    image: np.ndarray,
    box: Box,
    margin: float = MARGIN,
    side: float | None = None,
    fill: Sequence[float] | None = None,
) -> np.ndarray:
    """A square crop centred on ``box``: ``margin`` of its side added on each side, or a fixed
    ``side`` in pixels (the model's field of view, :func:`field_scale`).

    The classifier was trained on centred single-cell crops, so the crop keeps the cell in the
    middle: where the square runs past the field's edge it is padded with ``fill`` (default: the
    field's :func:`background_colour`), which looks like empty slide; replicated border pixels
    would draw stripes of cells the model never saw.
    """
    import cv2

    if side is None:
        side = max(box.width, box.height) * (1 + 2 * margin)
    side_i = max(1, int(round(side)))
    cx, cy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
    x1 = int(round(cx - side_i / 2))
    y1 = int(round(cy - side_i / 2))
    x2, y2 = x1 + side_i, y1 + side_i
    h, w = image.shape[:2]
    pad = (max(0, -y1), max(0, y2 - h), max(0, -x1), max(0, x2 - w))
    crop = image[max(0, y1) : min(h, y2), max(0, x1) : min(w, x2)]
    if any(pad):
        if crop.size == 0:
            raise ValueError(f"box {box.to_list()} lies outside the {w}x{h} image")
        value = [float(v) for v in (fill if fill is not None else background_colour(image))]
        crop = cv2.copyMakeBorder(crop, *pad, cv2.BORDER_CONSTANT, value=value)
    return np.ascontiguousarray(crop)


RBC_UM = 7.5  # a normal red cell's diameter in micrometres, for --um-per-px


@dataclass(frozen=True)
class FieldScale:
    """The scale one field was cropped at, recorded with its cells.

    ``source`` says where ``rbc_px`` came from: ``measured`` in this field
    (:func:`wbc_edge.model.scale.red_cell_diameter`), ``stream`` (measured in a recent frame
    of the same video or camera, :class:`StreamRuler`), ``given`` by the user (``--rbc-px`` or
    ``--um-per-px``), or ``assumed`` (no whole red cell in the field: ``rbc_diameter`` x its
    shorter side). ``crop_px`` is the side of the crops cut; None when the model's card records
    no crop scale and cells are cropped by their box + margin.
    """

    rbc_px: float
    source: str
    crop_px: float | None = None


def field_scale(
    image: np.ndarray,
    fov_rbc: float | None = None,
    rbc_px: float | None = None,
    um_per_px: float | None = None,
    params: FinderParams | None = None,
) -> FieldScale:
    """The red-cell diameter of a field and the side of crops spanning ``fov_rbc`` of them."""
    from wbc_edge.model.scale import red_cell_diameter

    if rbc_px is not None:
        d, source = float(rbc_px), "given"
    elif um_per_px is not None:
        d, source = RBC_UM / float(um_per_px), "given"
    else:
        measured = red_cell_diameter(image).diameter_px
        if measured is not None:
            d, source = measured, "measured"
        else:
            d, source = (params or FinderParams()).rbc_px(image.shape), "assumed"
    return FieldScale(d, source, fov_rbc * d if fov_rbc else None)


class StreamRuler:
    """The red-cell ruler of one video or camera, measured once every ``every`` frames.

    Measuring the ruler costs about 20 ms of a 640x480 field, seven times the finding itself,
    and at 30 frames/s that alone is most of a core. One microscope's magnification does not
    change between frames, so a stream measures it on one frame of each block of ``every``
    frames (the first of the block that reaches the workers) and the block's other frames are
    cropped at that scale (``source`` ``stream``). A block whose frame shows no red cell keeps
    the previous block's ruler; before any block has measured one, each frame is measured on
    its own, as a folder of fields is (it may mix microscopes).

    Deterministic under the pipeline's parallel workers: which frame measures and which ruler a
    frame gets depend only on the frames' order, never on which worker finishes first (two
    full runs of one video file give the same cells). The pipeline's dispatcher calls
    :meth:`plan` in frame order; a frame waits only for its block's measuring frame, which
    comes before it.
    """

    WAIT_S = 10.0  # a measuring frame lost without :meth:`release`: measure, don't hang
    KEEP_FRAMES = 4096  # far more than the frames the pipeline's workers hold at once

    def __init__(self, every: int, fov_rbc: float | None) -> None:
        import threading

        self.every = max(1, int(every))
        self.fov_rbc = fov_rbc  # the card's (CropScale.fov_rbc); see stream_ruler()
        self._cond = threading.Condition()
        self._measurer: dict[int, int] = {}  # block -> index of the frame that measures it
        self._previous: dict[int, int | None] = {}  # block -> the block planned before it
        self._ruler: dict[int, FieldScale | None] = {}  # block -> its ruler, once known
        self._last_block: int | None = None
        self._next = -1  # next_scale()'s last frame
        self.measurements = 0

    def plan(self, index: int) -> None:
        """Say that frame ``index`` will be processed (in frame order, before any worker asks)."""
        block = index // self.every
        with self._cond:
            if self._last_block is not None and block <= self._last_block:
                return  # planned already (or forgotten: see below), never planned again
            self._measurer[block] = index
            self._previous[block] = self._last_block
            self._last_block = block
            # A camera runs for days: forget blocks far behind any frame still in flight.
            keep = max(2, -(-self.KEEP_FRAMES // self.every))
            for old in [b for b in self._measurer if b < block - keep]:
                for table in (self._measurer, self._previous, self._ruler):
                    table.pop(old, None)

    def release(self, index: int) -> None:
        """Frame ``index`` will not ask (it failed before finding): if it was to measure its
        block, the block keeps the previous ruler, so no other frame waits for it."""
        block = index // self.every
        with self._cond:
            if self._measurer.get(block) == index and block not in self._ruler:
                self._ruler[block] = self._wait_ruler(self._previous.get(block))
                self._cond.notify_all()

    def scale_for(self, image: np.ndarray, index: int) -> FieldScale:
        self.plan(index)  # no-op when the dispatcher planned it; direct callers go in order
        block = index // self.every
        with self._cond:
            measurer, previous = self._measurer.get(block), self._previous.get(block)
        if measurer == index:
            scale = None
            try:
                scale = self._measure(image)
            finally:
                with self._cond:
                    if scale is not None and scale.source == "measured":
                        self._ruler[block] = scale
                    else:
                        self._ruler[block] = self._wait_ruler(previous)
                    self._cond.notify_all()
                    ruler = self._ruler[block]
            if scale.source != "measured" and ruler is not None:
                return FieldScale(ruler.rbc_px, "stream", ruler.crop_px)
            return scale
        with self._cond:
            ruler = self._wait_ruler(block)
        if ruler is None:  # no block has measured a ruler yet: this field on its own
            return self._measure(image)
        return FieldScale(ruler.rbc_px, "stream", ruler.crop_px)

    def next_scale(self, image: np.ndarray) -> FieldScale:
        """:meth:`scale_for` the next frame of a caller that goes one frame at a time, in
        order (the Python API's ``predict_fields``): it numbers the frames itself."""
        with self._cond:
            self._next += 1
            index = self._next
        return self.scale_for(image, index)

    def _measure(self, image: np.ndarray) -> FieldScale:
        scale = field_scale(image, self.fov_rbc)
        if scale.source == "measured":
            with self._cond:
                self.measurements += 1
        return scale

    def _wait_ruler(self, block: int | None) -> FieldScale | None:
        """The ruler of ``block`` (None: none yet), waiting for its measuring frame; call with
        the condition held."""
        if block is None or block not in self._measurer:
            return None
        if not self._cond.wait_for(lambda: block in self._ruler, timeout=self.WAIT_S):
            return None
        return self._ruler[block]


@dataclass
class FieldCells:
    """The white cells of one field: boxes ``(x1, y1, x2, y2)``, centred crops, the scale."""

    boxes: list[tuple[int, int, int, int]]
    crops: list[np.ndarray]
    scale: FieldScale


def stream_ruler(crop_scale: CropScale | None, every: int) -> StreamRuler:
    """The :class:`StreamRuler` of a stream cropped for a card with ``crop_scale``."""
    return StreamRuler(every, crop_scale.fov_rbc if crop_scale else None)


def cells_in_field(
    image: np.ndarray,
    crop_scale: CropScale | None,
    margin: float = MARGIN,
    params: FinderParams | None = None,
    rbc_px: float | None = None,
    um_per_px: float | None = None,
    scale: FieldScale | None = None,
) -> FieldCells:
    """Find the white cells of a smear field and crop each as the model saw its training cells.

    With the card's ``crop_scale`` (``card.preprocess.crop_scale``) every crop spans its
    ``fov_rbc`` red-cell diameters of this field, so a cell reaches the network at its training
    size whatever the camera; without one (None), the box + ``margin``. ``scale`` (a
    :class:`StreamRuler`'s) skips the measurement.
    """
    if scale is None:
        fov_rbc = crop_scale.fov_rbc if crop_scale else None
        scale = field_scale(image, fov_rbc, rbc_px, um_per_px, params)
    found = find_cells(image, replace(params or FinderParams(), rbc_diameter_px=scale.rbc_px))
    fill = background_colour(image)
    crops = [crop_cell(image, b, margin, side=scale.crop_px, fill=fill) for b in found]
    return FieldCells([(*b.p1, *b.p2) for b in found], crops, scale)
