"""The model as the product runs it: ``Model.load(path)``, the one way to run a model.

    import wbc_edge
    m = wbc_edge.load()                     # Model.load(): the packaged student; or a path
    r = m("cell.jpg")                       # Prediction: r.label, r.prob, r.top, r.review
    rs = m.predict(["a.jpg", "b.jpg", arr]) # a list in, a list out (one batch)
    f = m("field.jpg", smear=True)          # Field: f.cells (each a Prediction with .box)
    fs = m.predict_fields(frames, ruler=m.stream_ruler())  # a video's frames, one ruler
    f.counts()                              # {"Neutrophil": 3, ...}; .not_counted, .note: why not
    probs, y = m.score(paths, labels, "my set")  # accuracy, as evaluate and bench measure it

A :class:`Model` holds the card (``.card``), its preprocessing (``card.preprocess``), the
backend the file's type calls for (:func:`~wbc_edge.model.backends.load_backend`: .onnx,
.engine with its sidecar, .pt), the field-to-crop rule (:mod:`~wbc_edge.model.fieldcrop`), the
OOD check (:mod:`~wbc_edge.model.ood`) and the review rule (:mod:`~wbc_edge.model.review`). The
streaming pipeline calls the same object one step at a time (:meth:`Model.decode`,
:meth:`Model.find_cells`, :meth:`Model.prepare_into`, :meth:`Model.infer`,
:meth:`Model.verdicts`), so ``run``, the Python API, ``evaluate`` and ``bench`` cannot cut,
prepare or judge a cell differently.
Arrays are OpenCV images: uint8, BGR (or gray/BGRA), HxWxC, as ``cv2.imread`` returns them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wbc_edge.errors import UserError
from wbc_edge.model import ood
from wbc_edge.model.backends import Backend, load_backend
from wbc_edge.model.card import ModelCard
from wbc_edge.model.defaults import DEVICE, MARGIN, RULER_EVERY, THREADS, TOPK
from wbc_edge.model.review import MOST, REASONS, for_review, predictions, reason, review_threshold

if TYPE_CHECKING:
    from wbc_edge.model.fieldcrop import FieldCells, FieldScale, StreamRuler

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
    the words ``run``'s records give (:func:`wbc_edge.model.review.reason`).
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
    """A loaded classifier: the card, its backend, and the rules that turn images into cells.

    Open one with :meth:`load` (or ``wbc_edge.load()``); use it as a context manager or call
    :meth:`close`. ``threshold`` marks cells whose top probability is below it as uncertain
    (default: the card's certified ``confidence_threshold``, else the fallback 0.5); ``topk``
    is how many classes each :class:`Prediction` lists; ``margin`` is the smear crop margin
    for a card without a crop scale.
    """

    def __init__(
        self,
        backend: Backend,
        threshold: float | None = None,
        topk: int = TOPK,
        margin: float = MARGIN,
    ) -> None:
        self.backend = backend
        self.card: ModelCard = backend.card
        threshold = review_threshold(threshold, self.card)  # the rule `run` uses too
        if not 0.0 <= threshold <= 1.0:
            raise UserError(f"threshold {threshold}: give a probability between 0 and 1")
        self.spec = self.card.preprocess
        self.threshold, self.topk, self.margin = threshold, max(1, topk), margin

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        device: str = DEVICE,
        threads: int = THREADS,
        threshold: float | None = None,
        topk: int = TOPK,
        margin: float = MARGIN,
    ) -> Model:
        """Open a model file (.onnx, .engine with its sidecar, .pt); ``None``: the packaged
        student. ``device`` is auto, cpu or cuda; ``threads`` ONNX Runtime's CPU threads."""
        if path is None:
            from wbc_edge.models import default_model

            path = default_model()
        backend = load_backend(path, device=device, threads=threads)
        try:
            return cls(backend, threshold=threshold, topk=topk, margin=margin)
        except BaseException:
            backend.close()
            raise

    @property
    def class_names(self) -> list[str]:
        return self.card.class_names

    @property
    def name(self) -> str:
        """The backend's name (onnxruntime, tensorrt, torch)."""
        return self.backend.name

    @property
    def min_side(self) -> int:
        """The smallest side a single-cell crop is decoded at (a reduced JPEG decode that still
        fills the model's input); fields are decoded whole."""
        from wbc_edge.model.decode import model_min_side

        return model_min_side(self.spec)

    # -- whole calls ------------------------------------------------------------------------

    def __call__(self, images: Image | Sequence[Image], smear: bool = False) -> Any:
        """Classify one image (-> :class:`Prediction`, or :class:`Field` with ``smear``) or a
        list / an NxHxWxC array of them (-> a list of those). With ``smear`` every image is a
        whole field whose white cells are found first; otherwise every image is one cell."""
        single = _is_single(images)
        batch = [images] if single else list(images)  # type: ignore[list-item]
        results = self.predict_fields(batch) if smear else self.predict(batch)
        return results[0] if single else results

    def predict(self, images: Sequence[Image]) -> list[Prediction]:
        """Each image one cell: a :class:`Prediction` each, in order (one batch). A cell decodes
        reduced to the model's input, as ``run``, ``evaluate`` and ``bench`` decode it."""
        loaded = [_load(x, self.min_side) for x in images]
        crops = [image for _, image in loaded]
        probs = self.probs(crops)
        out = self.ood_flags(crops)
        return [
            self._prediction(p, row, (0, 0, image.shape[1], image.shape[0]), src, out[i])
            for i, ((src, image), p, row) in enumerate(
                zip(loaded, probs, self.verdicts(probs), strict=True)
            )
        ]

    def predict_fields(
        self,
        fields: Sequence[Image],
        ruler: StreamRuler | None = None,
        rbc_px: float | None = None,
        um_per_px: float | None = None,
    ) -> list[Field]:
        """Each image a smear field: its white cells found, cropped at the card's scale and
        classified, a :class:`Field` each. The red-cell ruler is measured in every field
        (fields of a folder may come from different microscopes), given (``rbc_px`` or
        ``um_per_px``), or, with ``ruler`` (:meth:`stream_ruler`), carried along the frames of
        one video or camera in order, as ``run`` does for a stream."""
        if ruler is not None and (rbc_px is not None or um_per_px is not None):
            raise UserError("give a stream ruler or rbc_px / um_per_px, not both")
        loaded = [_load(x) for x in fields]
        found = []
        for _, image in loaded:
            scale = ruler.next_scale(image) if ruler is not None else None
            found.append(self.find_cells(image, rbc_px=rbc_px, um_per_px=um_per_px, scale=scale))
        crops = [c for f in found for c in f.crops]
        probs = self.probs(crops)
        rows, out = self.verdicts(probs), self.ood_flags(crops)
        results, start = [], 0
        for (src, image), boxes in zip(loaded, (f.boxes for f in found), strict=True):
            cells = [
                self._prediction(probs[start + i], rows[start + i], box, src, out[start + i])
                for i, box in enumerate(boxes)
            ]
            start += len(boxes)
            results.append(Field(src, image.shape, cells))
        return results

    def score(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[str],
        where: str,
        batch_size: int = 32,
        views: int = 1,
        min_side: int | None = None,
        label: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(probs, y)`` on a labelled set: the one way any accuracy is measured
        (:func:`wbc_edge.model.labelled.score`: decoded and prepared as ``run`` does)."""
        from wbc_edge.model.labelled import score

        return score(self.backend, paths, labels, where, batch_size, views, min_side, label)

    # -- the streaming steps (the pipeline runs them on its own threads) --------------------

    def decode(self, data: bytes, name: str, field: bool = False) -> tuple[np.ndarray, Any]:
        """A file's bytes decoded: ``(image, (width, height) of the file)``; a single-cell crop
        at :attr:`min_side`, a ``field`` in full (the finder works in its own pixels)."""
        from wbc_edge.model.decode import decode_scaled

        return decode_scaled(data, name, 0 if field else self.min_side)

    def find_cells(
        self,
        image: np.ndarray,
        rbc_px: float | None = None,
        um_per_px: float | None = None,
        scale: FieldScale | None = None,
    ) -> FieldCells:
        """A field's white cells, cropped by the card's field-to-crop rule
        (:func:`wbc_edge.model.fieldcrop.cells_in_field`): ``scale`` from a
        :meth:`stream_ruler`, else ``rbc_px`` / ``um_per_px`` given, else measured here."""
        from wbc_edge.model.fieldcrop import cells_in_field

        return cells_in_field(
            image,
            self.spec.crop_scale,
            self.margin,
            rbc_px=rbc_px,
            um_per_px=um_per_px,
            scale=scale,
        )

    def stream_ruler(self, every: int = RULER_EVERY) -> StreamRuler:
        """A red-cell ruler for the frames of one video or camera, measured on one frame in
        ``every`` (:class:`~wbc_edge.model.fieldcrop.StreamRuler`)."""
        from wbc_edge.model.fieldcrop import stream_ruler

        return stream_ruler(self.spec.crop_scale, every)

    def prepare_into(self, buffer: np.ndarray, crops: Sequence[np.ndarray]) -> np.ndarray:
        """``crops`` resized and normalised by the card's preprocessing straight into the first
        rows of ``buffer`` (float32 NCHW); returns that view (no copy, no per-cell array)."""
        return self.spec.fused.into(buffer[: len(crops)], crops)

    def prepare(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """``crops`` as the network's float32 NCHW input (the card's preprocessing)."""
        return self.spec.fused(crops)

    def probs(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Calibrated probabilities (N, classes) of decoded single-cell images (BGR uint8)."""
        if not len(crops):
            return np.zeros((0, len(self.class_names)), np.float32)
        return self.infer(self.prepare(crops))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, classes) of a prepared batch."""
        return self.backend.predict(batch)

    def ood_flags(self, crops: Sequence[np.ndarray]) -> list[bool]:
        """Per crop: out of distribution by the card's check (all False when it has none)."""
        return self.ood_check(crops) or [False] * len(crops)

    def ood_check(self, crops: Sequence[np.ndarray]) -> list[bool] | None:
        """:meth:`ood_flags`, or None when the card cannot judge (records say "no stats")."""
        return ood.flags(self.card.ood, list(crops))

    def verdicts(self, probs: np.ndarray) -> list[tuple[str, float, list[tuple[str, float]], bool]]:
        """(label, prob, top-k, uncertain) per row: the review rule at this model's threshold."""
        return predictions(probs, self.class_names, self.threshold, self.topk)

    # -- the rest ---------------------------------------------------------------------------

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
    device: str = DEVICE,
    threads: int = THREADS,
    threshold: float | None = None,
    topk: int = TOPK,
    margin: float = MARGIN,
) -> Model:
    """``wbc_edge.load()``: :meth:`Model.load` (``None``: the packaged student)."""
    return Model.load(model, device, threads, threshold, topk, margin)


def _is_single(images: Any) -> bool:
    if isinstance(images, (str, Path, bytes, bytearray, memoryview)):
        return True
    if isinstance(images, np.ndarray):
        return images.ndim != 4  # HxW, HxWxC (anything else is refused); NxHxWxC is a batch
    return False


def _load(x: Image, min_side: int = 0) -> tuple[str, np.ndarray]:
    from wbc_edge.model.decode import decode_image, read_image
    from wbc_edge.model.imagecheck import check_array

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
