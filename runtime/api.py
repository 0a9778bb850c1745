"""The Python API: load a model once, call it on cells or smear fields, get typed results.

    import wbc_edge
    m = wbc_edge.load()                     # the packaged student; or load("student.onnx")
    r = m("cell.jpg")                       # Prediction: r.label, r.prob, r.top, r.review
    rs = m(["a.jpg", "b.jpg", array])       # a list in, a list out (one batch)
    f = m("field.jpg", smear=True)          # Field: f.cells (each a Prediction with .box)
    f.counts()                              # {"Neutrophil": 3, ...}; .not_counted, .note: why not

Everything goes through what ``wbc-edge run`` uses: :func:`~wbc_edge.runtime.backends.
load_backend` (any .onnx, .engine or .pt), the card's preprocessing
(``card.preprocess``, :class:`~wbc_edge.runtime.card.Preprocess`), the smear-field cell finder and
:func:`predictions` for the top-k and the review threshold, and :func:`ood.flags` for the
out-of-distribution check, which the pipeline's records use too.
Arrays are OpenCV images: uint8, BGR (or gray/BGRA), HxWxC, as ``cv2.imread`` returns them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.errors import UserError
from wbc_edge.runtime import ood
from wbc_edge.runtime.backends import Backend, load_backend
from wbc_edge.runtime.card import ModelCard
from wbc_edge.runtime.options import FALLBACK_THRESHOLD, TOPK, PipelineConfig
from wbc_edge.runtime.post import (
    MOST,
    REASONS,
    for_review,
    predictions,
    reason,
    review_threshold,
)

# The streaming pipeline's defaults, so `wbc-edge run` and the API agree.
DEFAULT_THRESHOLD: float = FALLBACK_THRESHOLD  # when neither caller nor card gives one
DEFAULT_MARGIN: float = PipelineConfig.margin
DEFAULT_TOPK = TOPK

Image = str | Path | bytes | np.ndarray  # a path, an encoded file, or pixels


@dataclass(frozen=True)
class Prediction:
    """One classified cell: the top class, its probability, the top-k, whether to review it.

    ``uncertain``: its probability is below the review threshold. ``ood``: it looks unlike the
    model's training images (the card's OOD check), so its label means little. Either sends it
    to review (``review``), as in ``wbc-edge run``'s differential: neither is ever counted.
    ``box`` is ``(x1, y1, x2, y2)`` in the field's pixels for a cell found in a smear field, and
    the whole image for a single-cell crop. ``probs`` follows ``class_names`` of the model card.
    ``reason`` says why the cell is not counted as a white cell ("" when it is): ``"ood"``,
    ``"uncertain"`` or ``"not_wbc"`` (a confident platelet or nucleated red cell, counted apart),
    the words ``run``'s records give (:func:`wbc_edge.runtime.post.reason`).
    """

    label: str
    prob: float
    top: list[tuple[str, float]]
    uncertain: bool
    probs: np.ndarray = field(repr=False)
    box: tuple[int, int, int, int] | None = None
    source: str = ""
    ood: bool = False
    role: str = ""  # the label's role in the card (leukocyte, immature, blast, nrbc, ...)

    @property
    def review(self) -> bool:
        return for_review(self.uncertain, self.ood)

    @property
    def reason(self) -> str:
        return reason(self.uncertain, self.ood, self.role)


class Counts(dict):
    """``Field.counts()``: cells per class (a plain dict), and what was left out and why.

    ``not_counted`` maps a reason (``"ood"``, ``"uncertain"``) to its number of cells;
    ``note`` says it in words ("" when every cell was counted), so an empty count says why.
    """

    def __init__(self, counts: dict[str, int], not_counted: dict[str, int]) -> None:
        super().__init__(counts)
        self.not_counted = not_counted

    @property
    def note(self) -> str:
        if not self.not_counted:
            return ""
        left = sum(self.not_counted.values())
        words = ", ".join(f"{n} {REASONS[r]}" for r, n in sorted(self.not_counted.items()))
        head = "nothing counted" if not self else f"{left} cells not counted"
        if left > MOST * (left + sum(self.values())):  # the words of the run's warning
            words += ": the model is not reliable on these images"
        return f"{head}: {words}"


@dataclass(frozen=True)
class Field:
    """A smear field: the white cells found in it, each classified."""

    source: str
    shape: tuple[int, ...]
    cells: list[Prediction]

    def counts(self, include_uncertain: bool = False) -> Counts:
        """Cells per class; those for review (uncertain or out-of-distribution) are left out
        unless asked for, and ``.not_counted`` / ``.note`` of the result say how many and why."""
        kept = Counter(c.label for c in self.cells if include_uncertain or not c.review)
        left = Counter(c.reason for c in self.cells if c.review and not include_uncertain)
        return Counts(dict(kept), dict(left))

    def __len__(self) -> int:
        return len(self.cells)

    def __iter__(self) -> Iterator[Prediction]:
        return iter(self.cells)


class Model:
    """A loaded classifier; call it on images. Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        backend: Backend,
        threshold: float | None = None,
        topk: int = DEFAULT_TOPK,
        margin: float = DEFAULT_MARGIN,
    ) -> None:
        self.backend = backend
        self.card: ModelCard = backend.card
        threshold = review_threshold(threshold, self.card)  # the rule `run` uses too
        if not 0.0 <= threshold <= 1.0:
            raise UserError(f"threshold {threshold}: give a probability between 0 and 1")
        self.spec = self.card.preprocess
        self.threshold, self.topk, self.margin = threshold, max(1, topk), margin

    @property
    def class_names(self) -> list[str]:
        return self.card.class_names

    def __call__(self, images: Image | Sequence[Image], smear: bool = False) -> Any:
        """Classify one image (-> :class:`Prediction`, or :class:`Field` with ``smear``) or a
        list / an NxHxWxC array of them (-> a list of those). With ``smear`` every image is a
        whole field whose white cells are found first; otherwise every image is one cell."""
        from wbc_edge.runtime.decode import model_min_side

        single = _is_single(images)
        batch = [images] if single else list(images)  # type: ignore[list-item]
        # A cell decodes reduced to the model's input (as evaluate and bench do); a field whole.
        min_side = 0 if smear else model_min_side(self.spec)
        loaded = [_load(x, min_side) for x in batch]
        results = self._fields(loaded) if smear else self._cells(loaded)
        return results[0] if single else results

    def _cells(self, loaded: list[tuple[str, np.ndarray]]) -> list[Prediction]:
        images = [image for _, image in loaded]
        probs = self.backend.predict(self.spec(images))
        out = self._ood(images)
        return [
            self._prediction(p, row, (0, 0, image.shape[1], image.shape[0]), src, out[i])
            for i, ((src, image), p, row) in enumerate(
                zip(loaded, probs, self._rows(probs), strict=True)
            )
        ]

    def _fields(self, loaded: list[tuple[str, np.ndarray]]) -> list[Field]:
        from wbc_edge.runtime.finder import cells_in_field

        scale = self.spec.crop_scale
        found = [
            cells_in_field(image, self.margin, fov_rbc=scale.fov_rbc if scale else None)
            for _, image in loaded
        ]
        crops = [c for f in found for c in f.crops]
        probs = self.backend.predict(self.spec(crops))
        rows, out = self._rows(probs), self._ood(crops)
        fields, start = [], 0
        for (src, image), boxes in zip(loaded, (f.boxes for f in found), strict=True):
            cells = [
                self._prediction(probs[start + i], rows[start + i], box, src, out[start + i])
                for i, box in enumerate(boxes)
            ]
            start += len(boxes)
            fields.append(Field(src, image.shape, cells))
        return fields

    def _rows(self, probs: np.ndarray) -> list[tuple[str, float, list[tuple[str, float]], bool]]:
        return predictions(probs, self.class_names, self.threshold, self.topk)

    def _ood(self, crops: list[np.ndarray]) -> list[bool]:
        """Per crop: out-of-distribution by the card's check (all False when it has none)."""
        return ood.flags(self.card.ood, crops) or [False] * len(crops)

    def _prediction(
        self,
        p: np.ndarray,
        row: tuple[str, float, list[tuple[str, float]], bool],
        box: Any,
        src: str,
        is_ood: bool,
    ) -> Prediction:
        label, prob, top, uncertain = row
        box = tuple(int(v) for v in box)
        role = self.card.roles.get(label, "")
        return Prediction(label, prob, top, uncertain, p, box, src, is_ood, role)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        c = self.card
        return (
            f"Model({c.architecture}, {c.num_classes} classes, {c.preprocess.input_size}px, "
            f"backend={self.backend.name})"
        )


def load(
    model: str | Path | None = None,
    device: str = "auto",
    threads: int = 0,
    threshold: float | None = None,
    topk: int = DEFAULT_TOPK,
    margin: float = DEFAULT_MARGIN,
) -> Model:
    """Open a model file (.onnx, .engine with its sidecar, .pt); ``None``: the packaged student.

    ``threshold`` marks cells whose top probability is below it as uncertain (default: the
    card's calibrated ``confidence_threshold``, else the pipeline's 0.5); ``topk`` is how
    many classes each :class:`Prediction` lists; ``margin`` is the smear crop margin.
    """
    if model is None:
        from wbc_edge.models import default_model

        model = default_model()
    backend = load_backend(model, device=device, threads=threads)
    return Model(backend, threshold=threshold, topk=topk, margin=margin)


def _is_single(images: Any) -> bool:
    if isinstance(images, (str, Path, bytes, bytearray, memoryview)):
        return True
    if isinstance(images, np.ndarray):
        return images.ndim != 4  # HxW, HxWxC (anything else is refused); NxHxWxC is a batch
    return False


def _load(x: Image, min_side: int = 0) -> tuple[str, np.ndarray]:
    from wbc_edge.runtime.decode import decode_image, read_image
    from wbc_edge.runtime.imagecheck import check_array

    try:
        if isinstance(x, np.ndarray):
            return "", check_array(x)
        if isinstance(x, (bytes, bytearray, memoryview)):  # an encoded file, read by content
            return "", decode_image(bytes(x), "image bytes", min_side)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if isinstance(x, (str, Path)):
        from wbc_edge.errors import require_file

        path = require_file(x, "image")
        try:
            return str(path), read_image(path, min_side)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
    raise UserError(
        f"cannot classify a {type(x).__name__}: give a path, encoded bytes or a numpy image"
    )
