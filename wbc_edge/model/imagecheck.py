"""What the runtime accepts as an image of cells; everything else becomes an error record.

A classifier answers for any array it is given, often confidently: a corrupt JPEG, a 1x1 image,
a grey image or a blank frame came out as Erythroblast or Platelet with p > 0.75 and raised the
immature flag. So every image is checked before it reaches the model, cheapest check first:

1. the header, before any pixel is decoded: width x height within ``max_pixels`` (a 730 KB PNG
   can hold 16000x16000 pixels, 768 MB decoded) and each side at least ``min_side``;
2. the decode (:func:`wbc_edge.model.decode.decode_image`): JPEGs go through libjpeg-turbo
   in strict mode (``simplejpeg``), so data that libjpeg only warns about ("Corrupt JPEG data:
   premature end of data segment") is refused instead of being decoded with grey or smeared
   blocks; :func:`strict_jpeg` gives the same pixels as OpenCV at the same DCT scale;
3. the pixels (on a 1-in-16 sample): a grey image (the model reads stain colour), a blank frame
   (lens cap, empty field: no contrast at all) or a saturated one (the lamp or the exposure).

Each refusal is a ``ValueError`` with one line naming the file and the reason.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass

import numpy as np

_warned: list[bool] = []


def _simplejpeg():  # -> the simplejpeg module, or None (said once) when it is not installed
    try:
        import simplejpeg
    except ImportError:
        if not _warned:
            _warned.append(True)
            from wbc_edge.console import console

            console.print(
                "[yellow]warning[/]: simplejpeg is not installed, so corrupt JPEG data is not "
                "detected; install it with `pip install 'wbc-edge[runtime]'`",
                highlight=False,
                soft_wrap=True,
            )
        return None
    return simplejpeg


@dataclass(frozen=True)
class ImageLimits:
    """The accepted range; the defaults hold for PBC crops and microscope fields alike."""

    min_side: int = 16  # px; a cell crop is ~360 px, a smear field thousands
    max_pixels: int = 50_000_000  # 50 MP: above any microscope camera, 150 MB decoded
    blank_std: float = 2.0  # grey levels; a real crop or field has tens
    saturated_share: float = 0.95  # of pixels at 0 or 255 in every channel


DEFAULT_LIMITS = ImageLimits()


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the file's header without decoding pixels; None when unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)  # a negative height is a top-down BMP
    if data[:2] == b"\xff\xd8" and (simplejpeg := _simplejpeg()) is not None:
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            return None
        return width, height
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            return im.size
    except Image.DecompressionBombError:
        return (1 << 31, 1 << 31)  # beyond Pillow's own limit, so beyond ours
    except Exception:  # not a format Pillow knows: OpenCV gets its chance below
        return None


def check_header(data: bytes, name: str, limits: ImageLimits = DEFAULT_LIMITS) -> bool:
    """Refuse a file whose header declares too many pixels or too short a side, before any
    pixel is decoded; True when the header told the size (so the sides are checked)."""
    size = header_size(data)
    if size is None:
        return False
    width, height = size
    if width * height > limits.max_pixels:
        shown = f"{width}x{height}" if width < 1 << 31 else "more than 179M"
        raise ValueError(
            f"{name}: image too large ({shown} pixels > {limits.max_pixels / 1e6:g} MP): "
            "not decoded; crop or scale it first"
        )
    _check_sides(width, height, name, limits)
    return True


def _check_sides(width: int, height: int, name: str, limits: ImageLimits) -> None:
    if min(width, height) < limits.min_side:
        raise ValueError(
            f"{name}: image too small ({width}x{height}; a cell needs at least "
            f"{limits.min_side} px a side)"
        )


def check_pixels(
    image: np.ndarray, name: str, limits: ImageLimits = DEFAULT_LIMITS, sides: bool = True
) -> None:
    """Refuse what cannot be a colour picture of cells: too small (``sides``; off for a reduced
    decode, whose header was checked), grey, blank or saturated."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{name}: expected an 8-bit colour image, got {image.dtype} {image.shape}")
    if sides:
        _check_sides(image.shape[1], image.shape[0], name, limits)
    import cv2

    # 1 in 16 pixels decides; a decision needs no more. OpenCV's reductions on one contiguous
    # copy of the sample: numpy's std and boolean passes cost 0.2 ms a 180 px crop, 10x this.
    sample = np.ascontiguousarray(image[::4, ::4])
    b, g, r = cv2.split(sample)
    if cv2.countNonZero(cv2.absdiff(b, g)) == 0 and cv2.countNonZero(cv2.absdiff(g, r)) == 0:
        raise ValueError(f"{name}: grey image (no colour channels); the model reads stain colour")
    _, std = cv2.meanStdDev(sample)
    if float(std.max()) < limits.blank_std:
        raise ValueError(f"{name}: blank image (no contrast); check the focus, lamp and slide")
    low = cv2.inRange(sample, (0, 0, 0), (2, 2, 2))
    high = cv2.inRange(sample, (253, 253, 253), (255, 255, 255))
    share = (cv2.countNonZero(low) + cv2.countNonZero(high)) / float(b.size)
    if share > limits.saturated_share:
        raise ValueError(
            f"{name}: saturated image ({100 * share:.0f}% of pixels black or white); "
            "check the exposure and lamp"
        )


def check_array(image: np.ndarray, name: str = "image array") -> np.ndarray:
    """An array handed to the API as an image: uint8 HxW (grey), HxWx1, HxWx3 (BGR, as OpenCV
    reads) or HxWx4 (BGRA), with pixels; ValueError in one line otherwise (OpenCV's own error
    for a 2-channel or empty array names neither the array nor what to pass)."""
    channels = image.shape[2] if image.ndim == 3 else 1
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or channels not in (1, 3, 4):
        kind = f"{image.dtype} with shape {image.shape}"
        if image.ndim == 1:
            kind = "a 1-D array (encoded file bytes? pass them as bytes)"
        raise ValueError(
            f"{name}: an image is a uint8 HxW, HxWx3 (OpenCV BGR) or HxWx4 array, not {kind}"
        )
    if 0 in image.shape:
        raise ValueError(f"{name}: an empty image (shape {image.shape}): it has no pixels")
    return image


def strict_jpeg(data: bytes, name: str, factor: int = 1) -> np.ndarray | None:
    """Decode a JPEG at 1/``factor`` scale, refusing data libjpeg only warns about.

    The output is bit-identical to OpenCV's ``IMREAD_REDUCED_COLOR_<factor>`` (both are
    libjpeg-turbo; asking for exactly ``ceil(side / factor)`` selects that DCT scaling). None
    when it cannot decode at all (CMYK, arithmetic coding, no simplejpeg): OpenCV then tries.
    """
    simplejpeg = _simplejpeg()
    if simplejpeg is None:
        return None
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        size = {"min_height": math.ceil(height / factor), "min_width": math.ceil(width / factor)}
        return simplejpeg.decode_jpeg(data, colorspace="BGR", strict=True, **size)
    except ValueError as strict_error:
        try:
            simplejpeg.decode_jpeg(data, colorspace="BGR", strict=False)
        except ValueError:
            return None
        # Decodable only by ignoring libjpeg's warnings: damaged data, not a picture of cells.
        raise ValueError(f"{name}: corrupt JPEG data ({strict_error})") from None
