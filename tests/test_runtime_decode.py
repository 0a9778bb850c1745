"""Reduced JPEG decode at the model's scale, and the ordered pool of decode workers."""

from __future__ import annotations

import random
import threading
import time

import cv2
import numpy as np
import pytest

from wbc_edge.model.card import Preprocess
from wbc_edge.model.decode import (
    decode_image,
    decode_scaled,
    jpeg_size,
    model_min_side,
    read_image,
    reduction,
)
from wbc_edge.runtime.pool import END, OrderedPool


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful image (JPEG-friendly, so decoded pixels are close to these)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def jpeg(image: np.ndarray, progressive: bool = False) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 92, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    ok, buf = cv2.imencode(".jpg", image, params)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("min_side", [32, 128, 224])
def test_reduction_never_goes_below_the_input_size(min_side):
    for side in range(1, 2100):
        factor = reduction(side, side + 3, min_side)
        assert factor in (1, 2, 4, 8)
        if factor > 1:  # libjpeg rounds a scaled side up
            assert -(-side // factor) >= min_side
        else:  # full decode only when even 1/2 would be too small
            assert -(-side // 2) < min_side
        if factor < 8:  # and the next factor up would have been too small
            assert -(-side // (2 * factor)) < min_side
        assert reduction(side, side, 0) == 1  # 0 asks for a full decode


@pytest.mark.parametrize(
    ("shape", "min_side", "expected"),
    [
        ((363, 360), 128, (182, 180)),  # a PBC crop at 128 px: 1/2
        ((363, 360), 224, (363, 360)),  # at 224 px 1/2 would be 180: full
        ((200, 150), 128, (200, 150)),  # small image: full
        ((1080, 1280), 128, (135, 160)),  # a camera frame: 1/8
        ((600, 700), 128, (150, 175)),  # 1/4
        ((363, 360), 0, (363, 360)),  # no model size: full
    ],
)
@pytest.mark.parametrize("progressive", [False, True])
def test_decode_is_as_small_as_the_input_allows_and_no_smaller(
    shape, min_side, expected, progressive
):
    data = jpeg(textured(*shape), progressive)
    assert jpeg_size(data) == (shape[1], shape[0])
    image = decode_image(data, "x.jpg", min_side)
    assert image.shape == (*expected, 3) and image.dtype == np.uint8
    assert min(image.shape[:2]) >= min(min_side, *shape)


def test_reduced_decode_shows_the_model_the_same_picture():
    """After the card's resize, 1/2-scale decode and full decode differ by JPEG-level noise."""
    spec = Preprocess(input_size=128)
    data = jpeg(textured(363, 360, seed=3))
    full = spec.resize(decode_image(data, "a.jpg"))
    reduced = spec.resize(decode_image(data, "a.jpg", model_min_side(spec)))
    assert reduced.shape == full.shape == (128, 128, 3)
    diff = np.abs(full.astype(np.int16) - reduced.astype(np.int16))
    # pbc9 crops: mean 1.0 (at most 1.4), 99th percentile at most 14 grey levels
    assert diff.mean() < 3.0 and np.percentile(diff, 99) < 16
    other = spec.resize(decode_image(jpeg(textured(363, 360, seed=4)), "b.jpg"))
    assert np.abs(full.astype(np.int16) - other).mean() > 20  # what a different picture gives


def test_other_formats_and_odd_bytes_decode_in_full_or_fail_naming_the_file(tmp_path):
    image = textured(300, 400)
    ok, png = cv2.imencode(".png", image)
    assert jpeg_size(png.tobytes()) is None
    np.testing.assert_array_equal(decode_image(png.tobytes(), "a.png", 128), image)
    for junk in (b"", b"\xff\xd8", b"\xff\xd8\xff\xe0\x00\x10JFIF", b"not an image at all"):
        assert jpeg_size(junk) is None
        with pytest.raises(ValueError, match="b.jpg"):
            decode_image(junk, "b.jpg", 128)
    path = tmp_path / "c.jpg"
    path.write_bytes(jpeg(image))
    assert read_image(path, 128).shape == (150, 200, 3)
    assert read_image(path).shape == (300, 400, 3)


def test_model_min_side_is_the_card_input_size():
    assert model_min_side(Preprocess(input_size=224)) == 224
    # A crop keeps part of the image: the image must be large enough for the window.
    assert model_min_side(Preprocess(input_size=100, crop_fraction=0.8)) == 125
    assert model_min_side(Preprocess(input_size=100, crop_fraction=0.5, crop_aspect=1.5)) == 300


def test_pool_keeps_order_and_loses_no_item_when_one_fails():
    rng = random.Random(0)
    delays = [rng.uniform(0, 0.004) for _ in range(60)]

    def work(i: int) -> int:
        time.sleep(delays[i])  # later items often finish first
        if i == 17:
            raise ValueError("item 17: not a readable image")
        return i * i

    out = []
    with OrderedPool(work, workers=3) as pool:
        feeder = threading.Thread(
            target=lambda: ([pool.submit(i) for i in range(60)], pool.end()), daemon=True
        )
        feeder.start()
        while (done := pool.next(timeout=5)) is not END:
            out.append(done)
        feeder.join(5)
    assert [d.item for d in out] == list(range(60))
    assert [d.value for d in out if d.item != 17] == [i * i for i in range(60) if i != 17]
    assert isinstance(out[17].error, ValueError) and out[17].value is None


def test_pool_bounds_the_items_in_flight():
    running, peak, lock = 0, 0, threading.Lock()

    def work(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.002)
        with lock:
            running -= 1
        return i

    with OrderedPool(work, workers=2, depth=3) as pool:
        assert [pool.submit(i, timeout=1) for i in range(3)] == [True] * 3
        assert pool.submit(3, timeout=0.05) is False  # full until the oldest is collected
        assert pool.next(timeout=1).value == 0
        assert pool.submit(3, timeout=1)
        pool.end()
        assert [pool.next(timeout=1).value for _ in range(3)] == [1, 2, 3]
        assert pool.next(timeout=1) is END
    assert peak <= 2


def test_decode_scaled_reports_the_files_own_size():
    image, size = decode_scaled(jpeg(textured(363, 360)), "a.jpg", 128)
    assert image.shape == (182, 180, 3) and size == (360, 363)
    image, size = decode_scaled(jpeg(textured(100, 120)), "b.jpg", 128)
    assert image.shape == (100, 120, 3) and size == (120, 100)


def test_rgb_resize_is_the_bgr_resize_with_channels_swapped():
    from wbc_edge.model.card import Preprocess

    image = textured(90, 70)
    rgb = Preprocess(input_size=32, channel_order="RGB").resize(image)
    bgr = Preprocess(input_size=32, channel_order="BGR").resize(image)
    assert rgb.flags.c_contiguous and np.array_equal(rgb, bgr[:, :, ::-1])
