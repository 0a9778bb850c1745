"""The preprocessing spec: the one definition of how an image becomes a model input.

Training (``kd``), INT8 calibration (``export``) and deployment (``runtime``) all call these
functions, so a model never sees pixels prepared differently from how it was trained.
Images enter as OpenCV BGR ``uint8`` arrays (HxWx3); models take float32 NCHW.

Two steps, kept apart so training can cache the first and augment between them:

1. :func:`resize_rgb` – decode-time work: square resize, channel order -> uint8 HxWx3.
2. :func:`normalize` – ``(x / 255 - mean) / std``, NHWC uint8 -> NCHW float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Decoding has its own module (reduced JPEG decode at the model's scale); importable here too
# because training, export and tests read images through this name.
from wbc_edge.runtime.decode import read_image as read_image

_INTERP = {"area": 3, "linear": 1, "cubic": 2, "nearest": 0}  # cv2.INTER_* values


@dataclass(frozen=True)
class PreprocessSpec:
    input_size: int = 128
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    channel_order: str = "RGB"
    interpolation: str = "area"

    def resize(self, image_bgr: np.ndarray) -> np.ndarray:
        return resize_rgb(image_bgr, self.input_size, self.channel_order, self.interpolation)

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        return normalize(batch, self.mean, self.std)

    def __call__(self, images_bgr: list[np.ndarray]) -> np.ndarray:
        """BGR uint8 images of any size -> float32 NCHW batch."""
        if not len(images_bgr):
            return np.zeros((0, 3, self.input_size, self.input_size), np.float32)
        return self.normalize(np.stack([self.resize(im) for im in images_bgr]))


def resize_rgb(
    image_bgr: np.ndarray, size: int, channel_order: str = "RGB", interpolation: str = "area"
) -> np.ndarray:
    """Resize a BGR (or gray/BGRA) uint8 image to ``size`` x ``size`` in the model's channel order.

    A square resize rather than crop: cell crops are centred and near-square, and a crop would
    cut the edge of large cells. Gray and 4-channel inputs are converted to 3 channels.
    """
    import cv2

    if image_bgr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image_bgr.dtype}")
    if image_bgr.ndim == 2:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    elif image_bgr.shape[2] == 4:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_BGRA2BGR)
    interp = _INTERP[interpolation]
    h, w = image_bgr.shape[:2]
    if (h, w) != (size, size):
        # INTER_AREA only anti-aliases when shrinking; enlarging uses linear.
        if interpolation == "area" and (h < size or w < size):
            interp = _INTERP["linear"]
        image_bgr = cv2.resize(image_bgr, (size, size), interpolation=interp)
    if channel_order == "RGB":
        image_bgr = image_bgr[:, :, ::-1]
    return np.ascontiguousarray(image_bgr)


def normalize(
    batch: np.ndarray,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> np.ndarray:
    """uint8 NHWC (or a single HWC) -> float32 NCHW, ``(x / 255 - mean) / std``."""
    if batch.ndim == 3:
        batch = batch[None]
    x = batch.astype(np.float32) * np.float32(1.0 / 255.0)
    x -= np.asarray(mean, np.float32)
    x /= np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
