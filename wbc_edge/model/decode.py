"""Reading images: the one place where a file's bytes become pixels.

Everything that feeds a model (``run``, ``evaluate``, ``bench``) decodes through here, so the
accuracy measured on a labelled set is the accuracy of the pixels the runtime classifies.

Why a reduced decode: a 360x363 PBC crop shrunk to a 128 px input throws away most of what a
full decode produced. libjpeg can decode at 1/2, 1/4 or 1/8 scale straight from the DCT
coefficients (OpenCV's ``IMREAD_REDUCED_COLOR_N``), which costs less than half of a full decode
plus the larger resize (0.55 vs 1.30 ms per PBC crop on one core). :func:`reduction` picks the
largest factor that keeps both sides at least ``min_side`` (never below the model's input: the
final resize only ever shrinks), and 1 for small images and for anything that is not a plain
JPEG. OpenCV implements the reduced modes natively only for JPEG; for other formats it would
decode in full and then resize with a different filter, so those always decode in full.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wbc_edge.model.imagecheck import (
    DEFAULT_LIMITS,
    ImageLimits,
    check_header,
    check_pixels,
    strict_jpeg,
)

if TYPE_CHECKING:
    from wbc_edge.model.card import Preprocess

JPEG_FACTORS = (8, 4, 2)  # libjpeg's DCT scalings OpenCV exposes, largest first
# SOF markers whose decoders support DCT scaling: baseline, extended and progressive Huffman.
# (Lossless and arithmetic-coded JPEGs are rare and decode in full.)
_SCALABLE_SOF = {0xC0, 0xC1, 0xC2}
_NO_LENGTH = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no segment length


def jpeg_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header when it can be DCT-scaled, else None.

    Reads only the markers before the first frame header (a few hundred bytes for a camera or
    CellaVision file); anything unexpected returns None, which means "decode in full".
    """
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i = 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in _NO_LENGTH:
            i += 2
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if marker not in _SCALABLE_SOF or i + 9 > n:
                return None
            height = (data[i + 5] << 8) | data[i + 6]
            width = (data[i + 7] << 8) | data[i + 8]
            return (width, height) if width and height else None
        if marker in (0xD9, 0xDA) or length < 2:  # end of image / start of scan before a frame
            return None
        i += 2 + length
    return None


def reduction(width: int, height: int, min_side: int) -> int:
    """The largest libjpeg factor (8, 4, 2, else 1) that keeps both sides >= ``min_side``.

    libjpeg rounds a scaled side up (``ceil(side / factor)``), so that is the size checked.
    ``min_side <= 0`` asks for a full decode.
    """
    if min_side <= 0:
        return 1
    for factor in JPEG_FACTORS:
        if min(math.ceil(width / factor), math.ceil(height / factor)) >= min_side:
            return factor
    return 1


def model_min_side(pre: Preprocess) -> int:
    """The smallest side a decoded cell image may have for the card's preprocessing.

    The card crops a centred window of ``crop_fraction`` of the image (of shape ``crop_aspect``)
    and resizes it to ``input_size`` square, so each side of the image must be at least
    ``input_size * max(aspect, 1 / aspect) / crop_fraction`` for the window never to be enlarged.
    """
    aspect = pre.crop_aspect or 1.0
    return math.ceil(pre.input_size * max(aspect, 1.0 / aspect) / pre.crop_fraction - 1e-9)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def looks_complete(data: bytes) -> bool:
    """False for a JPEG or PNG that is cut short (still being written, or truncated on disk).

    Decoders accept a truncated JPEG and fill the missing rows with grey, so the end marker is
    the only reliable sign that the whole file is there. The format is read from the bytes, not
    the name (a JPEG saved as ``.png`` is still a JPEG).
    """
    if data[:2] == b"\xff\xd8":
        return b"\xff\xd9" in data[-1024:]
    if data[:8] == PNG_SIGNATURE:
        return b"IEND" in data[-16:]
    return True


def check_complete(data: bytes, name: str) -> None:
    """Raise ValueError naming the file when it is empty or cut short (no pixels decoded)."""
    if not data:
        raise ValueError(f"{name}: empty file")
    if not looks_complete(data):
        raise ValueError(f"{name}: truncated image (no end marker)")


def decode_image(
    data: bytes, name: str, min_side: int = 0, limits: ImageLimits = DEFAULT_LIMITS
) -> np.ndarray:
    """Bytes of an image file -> BGR uint8, as small as ``min_side`` allows (0: full size).

    Raises ValueError naming the file when it is not a readable image or not one the runtime
    accepts (:mod:`~wbc_edge.model.imagecheck`: too many pixels, judged from the header
    before decoding; too small; corrupt JPEG data; grey, blank or saturated). A reduced JPEG
    decode that somehow came back smaller than asked is redone in full, so the caller can rely
    on ``min(h, w) >= min_side`` whenever the image itself is that large.
    """
    return decode_scaled(data, name, min_side, limits)[0]


def decode_scaled(
    data: bytes, name: str, min_side: int = 0, limits: ImageLimits = DEFAULT_LIMITS
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_image`, plus the file's own (width, height): records give boxes in the
    file's pixels, whatever scale it was decoded at."""
    import cv2

    if not data:
        raise ValueError(f"{name}: empty file")
    header_checked = check_header(data, name, limits)
    buf = np.frombuffer(data, np.uint8)
    factor, size = 1, None
    if min_side > 0:
        size = jpeg_size(data)
        if size is not None:
            factor = reduction(size[0], size[1], min_side)
    image = strict_jpeg(data, name, factor) if data[:2] == b"\xff\xd8" else None
    if image is not None and min(image.shape[:2]) < min_side:
        image = None
    if image is None and factor > 1:
        flag = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}.get(
            factor, cv2.IMREAD_REDUCED_COLOR_8
        )
        image = cv2.imdecode(buf, flag)
        if image is not None and min(image.shape[:2]) < min_side:
            image = None
    if image is None:
        image, factor = cv2.imdecode(buf, cv2.IMREAD_COLOR), 1
    if image is None:
        raise ValueError(f"{name}: not a readable image")
    check_pixels(image, name, limits, sides=not header_checked)
    if factor == 1 or size is None:
        size = (image.shape[1], image.shape[0])
    return image, size


def read_image(path: str | Path, min_side: int = 0) -> np.ndarray:
    """Read and decode an image file (see :func:`decode_image`); ValueError names the file."""
    return decode_image(Path(path).read_bytes(), str(path), min_side)
