"""The functions behind the model card's :class:`~wbc_edge.model.card.Preprocess`.

The card declares the preprocessing; this module carries it out, and training (``kd``), INT8
calibration and export parity (``export``) and deployment (``runtime``) all reach these
functions through ``card.preprocess``, so a model never sees pixels prepared differently from
how it was trained. Images enter as OpenCV BGR ``uint8`` arrays (HxWx3); models take float32
NCHW.

Two steps, kept apart so training can cache the first and augment between them:

1. :func:`crop_resize` - decode-time work: centred crop, square resize, stain normalisation
   (:mod:`wbc_edge.model.stain`, when the card has a reference), channel order -> uint8.
2. :func:`normalize` - ``(x / 255 - mean) / std``, NHWC uint8 -> NCHW float32. Its arithmetic
   is :func:`standardize`, which the torch training path calls too; :class:`LutNormalizer` is
   its fast runtime form, a table built by :func:`normalize` itself.

Those two steps are the *reference*. The runtime runs them fused (:class:`FusedPreprocess`):
each image is resized into a scratch buffer its thread reuses and normalised from there straight
into its slot of the batch, with the same OpenCV calls and the same table, so the tensor is
bit-identical to the reference's and no per-image array is allocated on the way.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

# Decoding has its own module (reduced JPEG decode at the model's scale); importable here too
# because training, export and tests read images through this name.
from wbc_edge.model.decode import read_image as read_image

if TYPE_CHECKING:
    from wbc_edge.model.card import Preprocess

_INTERP = {"area": 3, "linear": 1, "cubic": 2, "nearest": 0}  # cv2.INTER_* values
INTERPOLATIONS = tuple(_INTERP)
UNIT = 1.0 / 255.0  # uint8 -> [0, 1]; float32 arithmetic on both the numpy and torch paths


def crop_window(height: int, width: int, fraction: float, aspect: float | None) -> tuple:
    """``(y0, y1, x0, x1)`` of the centred crop a card's ``crop_fraction``/``crop_aspect`` keep.

    The window is the largest one of shape ``aspect`` (width / height; ``None``: the image's own
    shape) that fits the image, scaled by ``fraction``; at least one pixel each way.
    """
    if aspect is None:
        h, w = height * fraction, width * fraction
    elif width / height >= aspect:  # the image is wider than the window: height limits
        h = height * fraction
        w = h * aspect
    else:
        w = width * fraction
        h = w / aspect
    h, w = max(1, min(height, round(h))), max(1, min(width, round(w)))
    y0, x0 = (height - h) // 2, (width - w) // 2
    return y0, y0 + h, x0, x0 + w


def crop_resize(image_bgr: np.ndarray, pre: Preprocess) -> np.ndarray:
    """A BGR (or gray/BGRA) uint8 image -> the card's crop, resized square, in its channel order.

    Gray and 4-channel inputs are converted to 3 channels. The default crop keeps the whole
    image and squeezes it square rather than cutting it: cell crops are centred and near-square,
    and a square cut would lose the edge of large cells.
    """
    import cv2

    if image_bgr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image_bgr.dtype}")
    if image_bgr.ndim == 2:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    elif image_bgr.shape[2] == 4:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_BGRA2BGR)
    if pre.crop_fraction != 1.0 or pre.crop_aspect is not None:
        y0, y1, x0, x1 = crop_window(*image_bgr.shape[:2], pre.crop_fraction, pre.crop_aspect)
        image_bgr = image_bgr[y0:y1, x0:x1]
    size = pre.input_size
    interp = _INTERP[pre.interpolation]
    h, w = image_bgr.shape[:2]
    if (h, w) != (size, size):
        # INTER_AREA only anti-aliases when shrinking; enlarging uses linear.
        if pre.interpolation == "area" and (h < size or w < size):
            interp = _INTERP["linear"]
        image_bgr = cv2.resize(image_bgr, (size, size), interpolation=interp)
    if pre.stain is not None:  # after the resize: the same statistics at a fraction of the cost
        from wbc_edge.model.stain import normalize_stain

        image_bgr = normalize_stain(image_bgr, pre.stain)
    if pre.channel_order == "RGB":  # cvtColor: the same swap, ten times faster than [..., ::-1]
        return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image_bgr)


def standardize(x_unit: Any, mean: Any, std: Any) -> Any:
    """``(x - mean) / std`` on values in [0, 1]: the arithmetic of every normalisation.

    Written once for numpy arrays and torch tensors alike (the caller shapes ``mean``/``std``
    to broadcast over its layout), so training and deployment compute the same float32 values.
    """
    return (x_unit - mean) / std


def normalize(
    batch: np.ndarray,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> np.ndarray:
    """uint8 NHWC (or a single HWC) -> float32 NCHW, ``(x / 255 - mean) / std``."""
    if batch.ndim == 3:
        batch = batch[None]
    x = batch.astype(np.float32) * np.float32(UNIT)
    x = standardize(x, np.asarray(mean, np.float32), np.asarray(std, np.float32))
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def lut_table(pre: Preprocess) -> np.ndarray:
    """(256, 3) float32: :func:`normalize` of every uint8 value, per channel."""
    ramp = np.arange(256, dtype=np.uint8)
    table = normalize(np.stack([ramp, ramp, ramp], axis=-1)[None, None], pre.mean, pre.std)
    return np.ascontiguousarray(table[0, :, 0, :].T)  # (1,3,1,256) -> (256, 3)


class LutNormalizer:
    """:func:`normalize` through a 256-entry table per channel: the runtime's normaliser.

    The table is built by ``normalize`` itself, so every output value is bit-identical to it.
    Each channel plane goes through ``cv2.LUT`` straight into its slot of the NCHW batch: no
    float32 HxWx3 intermediate and no strided transpose (0.03 ms per 128 px image, against
    0.19 ms for one 3-channel LUT plus a transpose, and about 1 ms for numpy's float passes).
    """

    def __init__(self, pre: Preprocess) -> None:
        table = lut_table(pre)
        self.tables = [np.ascontiguousarray(table[:, c]).reshape(1, 256) for c in range(3)]
        self.size = pre.input_size

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        """Resized uint8 HxWx3 images (model channel order) -> float32 NCHW."""
        import cv2

        out = np.empty((len(images), 3, self.size, self.size), np.float32)
        for i, image in enumerate(images):
            for c, plane in enumerate(cv2.split(image)):
                cv2.LUT(plane, self.tables[c], dst=out[i, c])
        return out


class FusedPreprocess:
    """:func:`crop_resize` then :class:`LutNormalizer`, in one pass per image into a batch.

    The same OpenCV calls on the same pixels as the reference, so the output is bit-identical to
    ``LutNormalizer(pre)([crop_resize(im, pre) for im in images])``; what it saves is memory
    traffic. Every array the reference allocates per image (the resized image, its RGB copy,
    three split planes: 150 KB each at 224 px) is fresh memory above glibc's mmap threshold, so
    each one is faulted in and zeroed page by page: 36 minor faults and about 0.09 ms of CPU
    apiece, more than the resize itself (0.13 ms). Here the resize writes into a buffer its
    thread keeps, the planes are split into three more, the channel swap is which plane feeds
    which output slot, and each plane goes through its channel's table into the caller's float
    buffer: 0.19 ms per PBC crop at 224 px against 0.55 ms, and no allocation at all.

    Thread-safe: each thread gets its own scratch buffers (the pipeline's workers call it at
    once). Cards with a stain reference run the stain step on the resized image as the reference
    does (it allocates; stain cards are rare).
    """

    def __init__(self, pre: Preprocess) -> None:
        self.pre = pre
        self.size = pre.input_size
        self.tables = LutNormalizer(pre).tables
        # Output slot c reads plane order[c] of the BGR image: RGB models take planes 2, 1, 0.
        self.order = (2, 1, 0) if pre.channel_order == "RGB" else (0, 1, 2)
        self._local = threading.local()

    def _scratch(self) -> tuple[np.ndarray, list[np.ndarray]]:
        local = self._local
        if not hasattr(local, "image"):
            s = self.size
            local.image = np.empty((s, s, 3), np.uint8)
            local.planes = [np.empty((s, s), np.uint8) for _ in range(3)]
        return local.image, local.planes

    def into(self, out: np.ndarray, images: list[np.ndarray]) -> np.ndarray:
        """Preprocess ``images`` (BGR uint8, any size) into ``out`` (float32, N x 3 x S x S,
        C-contiguous: a batch buffer or a slice of one); returns ``out``."""
        import cv2

        pre, size = self.pre, self.size
        resized, planes = self._scratch()
        for i, image in enumerate(images):
            if image.dtype != np.uint8:
                raise ValueError(f"expected a uint8 image, got {image.dtype}")
            if image.ndim == 2 or image.shape[2] != 3:  # gray or BGRA: the reference's way
                bgr = crop_resize(image, pre.replace(channel_order="BGR"))
            else:
                if pre.crop_fraction != 1.0 or pre.crop_aspect is not None:
                    y0, y1, x0, x1 = crop_window(
                        *image.shape[:2], pre.crop_fraction, pre.crop_aspect
                    )
                    image = image[y0:y1, x0:x1]
                h, w = image.shape[:2]
                if (h, w) == (size, size):
                    bgr = image
                else:
                    interp = _INTERP[pre.interpolation]
                    if pre.interpolation == "area" and (h < size or w < size):
                        interp = _INTERP["linear"]  # as crop_resize: area only when shrinking
                    bgr = cv2.resize(image, (size, size), dst=resized, interpolation=interp)
                if pre.stain is not None:
                    from wbc_edge.model.stain import normalize_stain

                    bgr = normalize_stain(bgr, pre.stain)
            cv2.split(bgr, planes)
            slot = out[i]
            for c, (table, src) in enumerate(zip(self.tables, self.order, strict=True)):
                cv2.LUT(planes[src], table, dst=slot[c])
        return out

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        """BGR uint8 images of any size -> a new float32 NCHW batch."""
        out = np.empty((len(images), 3, self.size, self.size), np.float32)
        return self.into(out, images)
