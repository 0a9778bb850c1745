"""Training data: decode each image once, then augment whole batches as uint8 tensors.

Decoding and resizing 360 px JPEGs costs more CPU than a tiny student's forward pass, so every
manifest split is decoded once with the model card's own preprocessing
(:func:`wbc_edge.model.labelled.read_labelled` + ``card.preprocess.resize``) into a uint8
``.npy`` file under the cache folder, keyed by the data fingerprint and the decode-time fields of
the card's :class:`~wbc_edge.model.card.Preprocess`; later runs memory-map it. Normalisation
comes from the same card (:func:`normalize_tensor`), through the runtime's own arithmetic.

Augmentation is split in two on purpose:

* the 8 **dihedral** transforms (flips and 90 degree rotations) are indexed by ``k`` in 0..7,
  chosen per sample by a seeded generator. A cell has no "up", so all eight are label-preserving,
  and because there are only eight, a frozen teacher's outputs can be cached per (image, k)
  (:mod:`wbc_edge.kd.teacher_cache`);
* **colour, stain, optics and zoom jitter** is applied afterwards to the student's view only
  (the cached teacher saw the un-jittered dihedral view), from a named preset
  (:data:`AUGMENT_PRESETS`): ``mild`` keeps a cell's colour, which separates eosinophils from
  neutrophils, close to the training lab's; ``crosslab`` spans other labs' stain, light,
  focus, cameras and magnification.

Batches come from :class:`BatchLoader` (no DataLoader workers: on a 2-core machine the memmap
slice plus batched tensor ops beat worker processes). Its order depends only on (seed, epoch,
rank), which makes a resumed run repeat the uninterrupted one exactly.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wbc_edge.data.manifest import ManifestRow, fingerprint
from wbc_edge.errors import UserError
from wbc_edge.model.card import Preprocess
from wbc_edge.model.labelled import read_labelled
from wbc_edge.model.preprocess import UNIT, standardize

DEFAULT_CACHE_DIR = Path(os.environ.get("WBC_EDGE_CACHE", Path.home() / ".cache" / "wbc-edge"))


def rows_key(rows: Sequence[ManifestRow]) -> str:
    """The data fingerprint, or a hash of the paths when a manifest carries no sha256 column."""
    if all(r.sha256 for r in rows):
        return fingerprint(rows)
    h = hashlib.sha256()
    for r in rows:
        st = Path(r.path).stat() if Path(r.path).exists() else None
        h.update(
            f"{r.path},{r.label},{st.st_size if st else -1},{st.st_mtime if st else -1}\n".encode()
        )
    return h.hexdigest()[:16]


def decode_cached(
    rows: Sequence[ManifestRow], pre: Preprocess, cache_dir: str | Path | None = None
) -> np.ndarray:
    """All images of ``rows`` as one (N, size, size, 3) uint8 array (memory-mapped from cache),
    prepared by ``pre.resize`` (crop, resize, channel order of the card).

    The array follows the order of ``rows``. A cache file is written atomically, so two runs
    started together at worst both decode; neither reads a half-written file.
    """
    from wbc_edge.console import progress

    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    cache.mkdir(parents=True, exist_ok=True)
    size = pre.input_size
    key = f"decoded-{rows_key(rows)}-{len(rows)}-{pre.decode_key()}.npy"
    path = cache / key
    if path.is_file():
        arr = np.load(path, mmap_mode="r")
        if arr.shape == (len(rows), size, size, 3):
            return arr
    out = np.empty((len(rows), size, size, 3), np.uint8)
    with progress(transient=True) as p:
        task = p.add_task(f"decoding {len(rows)} images", total=len(rows), status="")
        for i, r in enumerate(rows):
            out[i] = pre.resize(read_labelled(r.path, "the manifest"))
            p.advance(task)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


# --- dihedral transforms -------------------------------------------------------------------


def dihedral(x: torch.Tensor, k: int, dims: tuple[int, int] = (-2, -1)) -> torch.Tensor:
    """The k-th of the 8 symmetries of a square: rotate by 90*(k % 4) degrees, then flip if k>=4."""
    y = torch.rot90(x, k % 4, dims) if k % 4 else x
    return torch.flip(y, (dims[1],)) if k >= 4 else y


def dihedral_batch(x: torch.Tensor, ks: torch.Tensor, dims: tuple[int, int]) -> torch.Tensor:
    """Apply a per-sample dihedral transform ``ks[i]`` to ``x[i]`` (grouped, so at most 8 ops)."""
    out = torch.empty_like(x)
    for k in ks.unique().tolist():
        sel = (ks == k).nonzero().flatten()
        out[sel] = dihedral(x[sel], int(k), dims)
    return out


# --- normalisation and jitter on tensors ----------------------------------------------------


def normalize_tensor(
    x_uint8_nhwc: torch.Tensor, pre: Preprocess, channels_last: bool = False
) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW ``(x / 255 - mean) / std`` with the card's mean/std, through
    :func:`wbc_edge.model.preprocess.standardize` (a test holds it bit-equal to the runtime)."""
    x = x_uint8_nhwc.permute(0, 3, 1, 2).float() * UNIT
    return _normalize_unit(x, pre, channels_last)


def _normalize_unit(x: torch.Tensor, pre: Preprocess, channels_last: bool) -> torch.Tensor:
    """Float NCHW in [0, 1] (e.g. after jitter) -> normalised, with the card's mean/std."""
    m = torch.tensor(pre.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(pre.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    x = standardize(x, m, s)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


@dataclass(frozen=True)
class Jitter:
    """Colour, stain, optics and scale jitter of the student's view (fractions; 0 disables a part).

    The defaults (the ``mild`` preset) are small on purpose: brightness/contrast/saturation
    +-10%, hue +-0.02 of the colour circle (about 7 degrees), and a Gaussian blur with sigma up
    to 1 px on a third of the images, which mimics slight defocus without washing out granules.
    The other parts default to off; the ``crosslab`` preset (:data:`AUGMENT_PRESETS`) turns them
    on to span what differs between labs: stain uptake (in HED optical-density space), light,
    washed-out contrast, focus, JPEG compression, camera resolution, sensor noise and the field
    of view of the crop.
    """

    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.02
    blur_p: float = 0.3
    blur_sigma: float = 1.0  # px at the input size
    stain: float = 0.0  # each HED stain's density x U(1 -+ stain), + U(-+ stain / 4)
    gamma: float = 0.0  # x ** g, log g uniform in +-log(1 + gamma)
    washout_p: float = 0.0  # share of images blended toward light grey
    washout: float = 0.0  # up to this fraction of light grey (PBC-trained students fail at 0.4)
    zoom_p: float = 0.0  # share of images zoomed in or out about the centre
    zoom: float = 0.0  # field of view x exp(U(-+ zoom)); the border fills with the background
    downscale_p: float = 0.0  # share of images downscaled then upscaled (a coarser camera)
    downscale: float = 0.5  # smallest scale factor of that round trip
    noise: float = 0.0  # Gaussian sensor noise, std up to this (of full scale)
    jpeg_p: float = 0.0  # share of images JPEG-compressed
    jpeg_quality: int = 30  # lowest JPEG quality drawn (up to 90)

    @property
    def active(self) -> bool:
        return any(
            (
                self.brightness,
                self.contrast,
                self.saturation,
                self.hue,
                self.blur_p,
                self.stain,
                self.gamma,
                self.washout_p,
                self.zoom_p,
                self.downscale_p,
                self.noise,
                self.jpeg_p,
            )
        )


NO_JITTER = Jitter(0, 0, 0, 0, 0, 0)
# Named augmentation presets for TrainConfig.augment / --augment. "crosslab" spans another
# lab's microscope (PROBES.md: a 60/40 wash-out toward grey takes a PBC-only student from 94%
# to 39%; BCCD fields are lighter, less saturated and softer than PBC's).
AUGMENT_PRESETS: dict[str, Jitter] = {
    "none": NO_JITTER,
    "mild": Jitter(),
    "crosslab": Jitter(
        brightness=0.2,
        contrast=0.3,
        saturation=0.4,
        hue=0.05,
        blur_p=0.4,
        blur_sigma=2.0,
        stain=0.25,
        gamma=0.3,
        washout_p=0.5,
        washout=0.5,
        zoom_p=0.8,
        zoom=0.2,
        downscale_p=0.3,
        downscale=0.4,
        noise=0.03,
        jpeg_p=0.3,
        jpeg_quality=30,
    ),
}


def augment_preset(name: str) -> Jitter:
    """The :class:`Jitter` of a preset name; a UserError lists the known names."""
    if name not in AUGMENT_PRESETS:
        raise UserError(f"unknown augmentation {name!r}: use one of {', '.join(AUGMENT_PRESETS)}")
    return AUGMENT_PRESETS[name]


_GRAY = np.array([0.299, 0.587, 0.114], np.float32)  # luminance weights of R, G, B
_RAMP = np.arange(256, dtype=np.float32) / 255.0
_NOISE_SHIFT = 32
_OD_LUT = -np.log(np.maximum(np.arange(256, dtype=np.float32), 1.0) / 255.0)  # optical density


def jitter_uint8(images: np.ndarray, jitter: Jitter, rng: np.random.Generator) -> np.ndarray:
    """Jitter uint8 NHWC RGB images (a new array); one random draw per image and part.

    Geometry first (zoom), then the slide (stain densities), the light (brightness, saturation
    and hue as one 3x3 matrix per image; contrast, gamma and wash-out as one lookup table per
    channel), the optics (blur) and the camera (resolution, noise, JPEG), in the order light
    meets them. Each image goes through OpenCV's uint8 kernels: on this 2-core CPU that is
    10-40x cheaper than the same edits as float32 tensor ops over the batch (measured).
    """
    import cv2

    out = np.empty_like(images)
    tile = None
    if jitter.noise and len(images):
        # One noise field per batch, each image reading it at its own offset: drawing a fresh
        # Gaussian per pixel per image costs more than every other part together.
        h, w = images.shape[1:3]
        tile = rng.standard_normal((h + _NOISE_SHIFT, w + _NOISE_SHIFT, 3), np.float32)
    for i, im in enumerate(images):
        im = np.ascontiguousarray(im)
        if jitter.zoom_p and rng.random() < jitter.zoom_p:
            im = _zoom(im, float(np.exp(rng.uniform(-jitter.zoom, jitter.zoom))))
        if jitter.stain:
            im = _stain(im, jitter.stain, rng)
        m = _colour_matrix(jitter, rng)
        if m is not None:
            im = cv2.transform(im, m)
        lut = _tone_lut(im, jitter, rng)
        if lut is not None:
            im = cv2.LUT(im, lut)
        if jitter.blur_p and jitter.blur_sigma and rng.random() < jitter.blur_p:
            im = cv2.GaussianBlur(im, (0, 0), rng.uniform(0.1, jitter.blur_sigma))
        if jitter.downscale_p and rng.random() < jitter.downscale_p:
            h, w = im.shape[:2]
            f = rng.uniform(jitter.downscale, 1.0)
            small = cv2.resize(
                im, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA
            )
            im = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        if tile is not None:
            h, w = im.shape[:2]
            dy, dx = rng.integers(0, _NOISE_SHIFT + 1, 2)
            sd = rng.uniform(0, jitter.noise) * 255
            noisy = cv2.scaleAdd(tile[dy : dy + h, dx : dx + w], sd, im.astype(np.float32))
            im = np.clip(noisy, 0, 255).astype(np.uint8)
        if jitter.jpeg_p and rng.random() < jitter.jpeg_p:
            q = int(rng.integers(jitter.jpeg_quality, 91))
            ok, data = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, q])
            im = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)  # channel order passes through
        out[i] = im
    return out


def _zoom(im: np.ndarray, f: float) -> np.ndarray:
    """Zoom about the centre so the view spans ``f`` x the crop's field of view (f > 1: out).

    Zooming out shows more than the stored crop holds; that border is filled with the crop's
    background colour (:func:`wbc_edge.model.finder.background_colour`, what the finder pads
    field-edge crops with), never with replicated edge pixels.
    """
    import cv2

    from wbc_edge.model.finder import background_colour

    h, w = im.shape[:2]
    s = 1.0 / f
    m = np.float32([[s, 0, (1 - s) * w / 2], [0, s, (1 - s) * h / 2]])
    return cv2.warpAffine(
        im,
        m,
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=background_colour(im),
    )


def _stain(im: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Stain jitter in HED optical-density space (Tellez et al. 2018's HED jitter).

    Optical density ``-log(rgb)`` is linear in each dye's amount; scikit-image's HED basis
    splits it into three dyes, each scaled by U(1 -+ amount) and shifted by U(-+ amount / 4).
    The whole edit is one 3x3 matrix plus an offset in OD space (``cv2.transform``).
    """
    import cv2
    from skimage.color import hed_from_rgb, rgb_from_hed

    alpha = rng.uniform(1 - amount, 1 + amount, 3)
    beta = rng.uniform(-amount / 4, amount / 4, 3)
    # Row vectors (as scikit-image): od' = od @ hed_from_rgb @ diag(alpha) @ rgb_from_hed + b
    mix = hed_from_rgb @ np.diag(alpha) @ rgb_from_hed
    affine = np.hstack([mix.T, (beta @ rgb_from_hed)[:, None]]).astype(np.float32)
    od = cv2.transform(cv2.LUT(im, _OD_LUT), affine)
    rgb = cv2.exp(-np.maximum(od, 0.0))
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def _colour_matrix(jitter: Jitter, rng: np.random.Generator) -> np.ndarray | None:
    """Hue rotation, saturation and brightness folded into one 3x3 RGB matrix (or None)."""
    if not (jitter.hue or jitter.saturation or jitter.brightness):
        return None
    m = np.eye(3, dtype=np.float32)
    if jitter.hue:
        m = _hue_matrix(rng.uniform(-jitter.hue, jitter.hue)) @ m
    if jitter.saturation:
        s = rng.uniform(1 - jitter.saturation, 1 + jitter.saturation)
        m = (s * np.eye(3) + (1 - s) * np.tile(_GRAY, (3, 1))) @ m
    if jitter.brightness:
        m = rng.uniform(1 - jitter.brightness, 1 + jitter.brightness) * m
    return m.astype(np.float32)


def _tone_lut(im: np.ndarray, jitter: Jitter, rng: np.random.Generator) -> np.ndarray | None:
    """Contrast about the image's mean grey, gamma and wash-out toward light grey, as one
    256-entry table (they are all the same map on every channel)."""
    washed = bool(jitter.washout_p and jitter.washout and rng.random() < jitter.washout_p)
    if not (jitter.contrast or jitter.gamma or washed):
        return None
    y = _RAMP.copy()
    if jitter.contrast:
        c = rng.uniform(1 - jitter.contrast, 1 + jitter.contrast)
        mean = float(im[::4, ::4].reshape(-1, 3).astype(np.float32).mean(0) @ _GRAY) / 255.0
        y = np.clip((y - mean) * c + mean, 0.0, 1.0)
    if jitter.gamma:
        lg = math.log1p(jitter.gamma)
        y = np.power(y, math.exp(rng.uniform(-lg, lg)))
    if washed:
        a = rng.uniform(0, jitter.washout)
        y = (1 - a) * y + a * rng.uniform(0.8, 0.95)
    return np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _hue_matrix(turns: float) -> np.ndarray:
    """The RGB matrix rotating hue by ``turns`` of the colour circle (in YIQ space)."""
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    theta = turns * 2 * math.pi
    rot = np.array(
        [[1, 0, 0], [0, math.cos(theta), -math.sin(theta)], [0, math.sin(theta), math.cos(theta)]]
    )
    return np.linalg.inv(to_yiq) @ rot @ to_yiq


# --- batches ---------------------------------------------------------------------------------


@dataclass
class Batch:
    images: torch.Tensor  # float32 NCHW, normalised (student view)
    targets: torch.Tensor  # int64 class indices
    index: torch.Tensor  # row indices into the split
    k: torch.Tensor  # dihedral transform per sample (0 = identity)
    # (N, C) bool: the classes each sample's lab labels (None: every lab has every class)
    present: torch.Tensor | None = None


class BatchLoader:
    """Shuffled, augmented batches over a decoded split, one epoch per iteration.

    ``augment=False`` yields the images as they are (k = 0), in order, for validation.
    ``weights`` (one per image, :func:`wbc_edge.data.labs.sample_weights`) draws each epoch's
    images with replacement in proportion to them instead of a permutation, so small labs and
    rare classes are seen more often; ``present`` rides along with each batch. With
    ``world_size > 1`` each rank takes every world_size-th sample of the epoch's permutation
    (what DistributedSampler does), padded so every rank sees the same number of batches.
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: Sequence[int],
        batch_size: int,
        pre: Preprocess,
        augment: bool = True,
        jitter: Jitter | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        drop_last: bool = False,
        weights: np.ndarray | None = None,
        present: np.ndarray | None = None,
    ) -> None:
        if len(images) != len(targets):
            raise ValueError("images and targets differ in length")
        for name, extra in (("weights", weights), ("present", present)):
            if extra is not None and len(extra) != len(images):
                raise ValueError(f"{name} and images differ in length")
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.present = None if present is None else torch.as_tensor(present, dtype=torch.bool)
        self.images = images
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
        self.batch_size = batch_size
        self.pre = pre
        self.augment = augment
        self.jitter = (jitter or Jitter()) if augment else NO_JITTER
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.channels_last = channels_last
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> tuple[torch.Tensor, torch.Tensor, torch.Generator | None]:
        n = len(self.images)
        if not self.augment:
            idx = torch.arange(n)[self.rank :: self.world_size]
            return idx, torch.zeros(len(idx), dtype=torch.int64), None
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            idx = torch.multinomial(self.weights, n, replacement=True, generator=gen)
        else:
            idx = torch.randperm(n, generator=gen)
        ks = torch.randint(0, 8, (n,), generator=gen)
        if self.world_size > 1:
            per_rank = math.ceil(n / self.world_size)
            pad = per_rank * self.world_size - n
            idx, ks = torch.cat([idx, idx[:pad]]), torch.cat([ks, ks[:pad]])
            idx, ks = idx[self.rank :: self.world_size], ks[self.rank :: self.world_size]
        return idx, ks, gen

    def __len__(self) -> int:
        n = math.ceil(len(self.images) / self.world_size)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        idx, ks, gen = self._order()
        for b in range(len(self)):
            part = slice(b * self.batch_size, (b + 1) * self.batch_size)
            sel = idx[part]
            k = ks[part] if self.augment else torch.zeros(len(sel), dtype=torch.int64)
            order = np.sort(sel.numpy())  # sorted reads are kinder to a memmap
            back = torch.as_tensor(np.searchsorted(order, sel.numpy()))
            raw = torch.from_numpy(np.ascontiguousarray(self.images[order]))[back]
            if self.augment:
                raw = dihedral_batch(raw, k, dims=(1, 2))
            if self.jitter.active:
                # One numpy generator per batch, seeded from the epoch's torch generator, so a
                # resumed run draws the same jitter.
                rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=gen)))
                raw = torch.from_numpy(jitter_uint8(raw.numpy(), self.jitter, rng))
            x = normalize_tensor(raw, self.pre, self.channels_last)
            present = None if self.present is None else self.present[sel]
            yield Batch(x, self.targets[sel], sel, k, present)
