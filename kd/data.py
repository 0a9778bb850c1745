"""Training data: decode each image once, then augment whole batches as uint8 tensors.

Decoding and resizing 360 px JPEGs costs more CPU than a tiny student's forward pass, so every
manifest split is decoded once with the model card's own preprocessing
(:func:`wbc_edge.runtime.preprocess.read_image` + ``card.preprocess.resize``) into a uint8
``.npy`` file under the cache folder, keyed by the data fingerprint and the decode-time fields of
the card's :class:`~wbc_edge.runtime.card.Preprocess`; later runs memory-map it. Normalisation
comes from the same card (:func:`normalize_tensor`), through the runtime's own arithmetic.

Augmentation is split in two on purpose:

* the 8 **dihedral** transforms (flips and 90 degree rotations) are indexed by ``k`` in 0..7,
  chosen per sample by a seeded generator. A cell has no "up", so all eight are label-preserving,
  and because there are only eight, a frozen teacher's outputs can be cached per (image, k)
  (:mod:`wbc_edge.kd.teacher_cache`);
* mild **colour and blur jitter** is applied afterwards to the student's view only (the cached
  teacher saw the un-jittered dihedral view). Stain and focus vary between slides; the jitter is
  kept small so a cell's colour, which separates eosinophils from neutrophils, stays meaningful.

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
import torch.nn.functional as F

from wbc_edge.data.manifest import ManifestRow, fingerprint
from wbc_edge.errors import UserError
from wbc_edge.runtime.card import Preprocess
from wbc_edge.runtime.preprocess import UNIT, read_image, standardize

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
            try:
                image = read_image(str(r.path))
            except (ValueError, OSError) as exc:
                raise UserError(f"{exc}: fix or remove it from the manifest") from exc
            out[i] = pre.resize(image)
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
    :func:`wbc_edge.runtime.preprocess.standardize` (a test holds it bit-equal to the runtime)."""
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
    """Mild colour and focus jitter (fractions; 0 disables a part).

    Defaults are small on purpose: brightness/contrast/saturation +-10%, hue +-0.02 of the
    colour circle (about 7 degrees), and a Gaussian blur with sigma up to 1 px on a third of
    the images, which mimics slight defocus without washing out granules.
    """

    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.02
    blur_p: float = 0.3
    blur_sigma: float = 1.0

    @property
    def active(self) -> bool:
        return any((self.brightness, self.contrast, self.saturation, self.hue, self.blur_p))


NO_JITTER = Jitter(0, 0, 0, 0, 0, 0)
_GRAY = (0.299, 0.587, 0.114)


def _uniform(n: int, amount: float, gen: torch.Generator) -> torch.Tensor:
    return 1.0 + (torch.rand(n, generator=gen) * 2 - 1) * amount


def jitter_batch(x: torch.Tensor, jitter: Jitter, gen: torch.Generator) -> torch.Tensor:
    """Colour/blur jitter on float NCHW RGB in [0, 1]; one random draw per image.

    Brightness, saturation and hue are linear maps of RGB, so they are folded into one 3x3
    matrix per image (one batched matmul instead of a pass per effect); contrast then blends
    with the image's mean gray, and blur is a separable Gaussian.
    """
    n = x.shape[0]
    eye = torch.eye(3).expand(n, 3, 3)
    gray_row = torch.tensor(_GRAY).view(1, 1, 3).expand(n, 3, 3)  # rows: luminance weights
    m = eye.clone()
    if jitter.hue:
        m = _hue_matrix((torch.rand(n, generator=gen) * 2 - 1) * jitter.hue) @ m
    if jitter.saturation:
        s = _uniform(n, jitter.saturation, gen).view(n, 1, 1)
        m = (s * eye + (1 - s) * gray_row) @ m
    if jitter.brightness:
        m = _uniform(n, jitter.brightness, gen).view(n, 1, 1) * m
    h, w = x.shape[2:]
    y = torch.bmm(m, x.reshape(n, 3, h * w)).view(n, 3, h, w)
    if jitter.contrast:
        c = _uniform(n, jitter.contrast, gen).view(n, 1, 1, 1)
        mean = torch.einsum("c,nchw->n", torch.tensor(_GRAY), y).view(n, 1, 1, 1) / (h * w)
        y = (y - mean) * c + mean
    y = y.clamp_(0.0, 1.0)
    if jitter.blur_p and jitter.blur_sigma:
        picked = (torch.rand(n, generator=gen) < jitter.blur_p).nonzero().flatten()
        if len(picked):
            sig = 0.1 + torch.rand(len(picked), generator=gen) * (jitter.blur_sigma - 0.1)
            y[picked] = _gaussian_blur(y[picked], sig)
    return y


def _hue_matrix(turns: torch.Tensor) -> torch.Tensor:
    """Per-image RGB matrices rotating hue by ``turns`` of the colour circle (in YIQ space)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    from_yiq = torch.linalg.inv(to_yiq)
    theta = turns * 2 * math.pi
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(len(turns), 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    return from_yiq @ rot @ to_yiq


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image separable 5-tap Gaussian blur (depthwise convs, reflect padding)."""
    n, c, h, w = x.shape
    r = torch.arange(-2, 3, dtype=torch.float32)
    k1 = torch.exp(-(r.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
    k1 = (k1 / k1.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, 5)
    xp = F.pad(x.reshape(1, n * c, h, w), (2, 2, 2, 2), mode="reflect")
    xp = F.conv2d(xp, k1.view(n * c, 1, 1, 5), groups=n * c)
    return F.conv2d(xp, k1.view(n * c, 1, 5, 1), groups=n * c).view(n, c, h, w)


# --- batches ---------------------------------------------------------------------------------


@dataclass
class Batch:
    images: torch.Tensor  # float32 NCHW, normalised (student view)
    targets: torch.Tensor  # int64 class indices
    index: torch.Tensor  # row indices into the split
    k: torch.Tensor  # dihedral transform per sample (0 = identity)


class BatchLoader:
    """Shuffled, augmented batches over a decoded split, one epoch per iteration.

    ``augment=False`` yields the images as they are (k = 0), in order, for validation. With
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
    ) -> None:
        if len(images) != len(targets):
            raise ValueError("images and targets differ in length")
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
                x = raw.permute(0, 3, 1, 2).float() * UNIT
                x = jitter_batch(x, self.jitter, gen)
                x = _normalize_unit(x, self.pre, self.channels_last)
            else:
                x = normalize_tensor(raw, self.pre, self.channels_last)
            yield Batch(x, self.targets[sel], sel, k)
