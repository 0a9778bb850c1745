"""The frozen teacher's outputs, computed once per (image, dihedral transform) and kept on disk.

A distillation run spends most of its CPU in the teacher when the teacher runs live, yet the
teacher is frozen and in eval mode: its output for a given image depends only on the pixels it
sees. Training views are one of 8 dihedral transforms of a decoded image (see
:mod:`wbc_edge.kd.data`), so all views the teacher can be asked about are enumerated up front:
logits and (when the method needs them) stage features are stored as fp16 memory-mapped
``.npy`` files, shape ``(N, 8, ...)``. Every run of an ablation reuses the same files.

The price of the cache: colour and blur jitter reach the student's view only; the teacher's
targets come from the un-jittered view. Jitter is mild (it models stain and focus variation the
teacher should be invariant to), so the student learns to match the clean-view targets from a
jittered input, a form of consistency training. Live teacher runs (``teacher_cache=False``)
show the teacher the jittered view instead.

For pbc9 (2,880 training images) at 128 px with Lite0's four stage outputs the cache is about
2.2 GB; logits alone are about 0.4 MB.

Several teachers (an ensemble) get one cache each, keyed by their own checkpoint and
preprocessing, and :class:`EnsembleCache` answers for them together: the mean of the members'
logits, the first member's features. A member after the first reuses a complete cache of its
own when one exists and otherwise stores logits only (``features=False``), since no method reads
its features.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from wbc_edge.kd.data import dihedral, normalize_tensor
from wbc_edge.kd.features import stage_features
from wbc_edge.model.card import Preprocess


def file_digest(path: str | Path, limit: int = 1 << 26) -> str:
    """Short hash of a file's first 64 MB and size: names a teacher checkpoint in cache keys."""
    h = hashlib.sha256()
    p = Path(path)
    h.update(str(p.stat().st_size).encode())
    with open(p, "rb") as f:
        h.update(f.read(limit))
    return h.hexdigest()[:16]


class TeacherCache:
    """fp16 teacher logits and stage features for every (image, k); look up by batch."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        meta = json.loads((folder / "meta.json").read_text())
        self.num_features = int(meta["num_features"])
        self.logits = np.load(folder / "logits.npy", mmap_mode="r")
        self.features = [
            np.load(folder / f"feature{i}.npy", mmap_mode="r") for i in range(self.num_features)
        ]

    def lookup(
        self, index: torch.Tensor, k: torch.Tensor, with_features: bool = True
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits, features) as float32 tensors for rows ``index`` viewed through ``k``."""
        i, kk = index.numpy(), k.numpy()
        logits = torch.from_numpy(np.asarray(self.logits[i, kk], np.float32))
        feats = (
            [torch.from_numpy(np.asarray(f[i, kk], np.float32)) for f in self.features]
            if with_features
            else []
        )
        return logits, feats

    def view_mean_logits(self, index: torch.Tensor) -> torch.Tensor:
        """log of the mean softmax over the 8 dihedral views of rows ``index``: the teacher's
        test-time-augmented prediction, the same for every view (a sharper, view-invariant
        target; +1.0 point for the 128 px Lite0 on PBC crops outside ../shared, PROBES.md)."""
        logits = torch.from_numpy(np.asarray(self.logits[index.numpy()], np.float32))
        return torch.log(torch.softmax(logits, dim=-1).mean(dim=1).clamp_min(1e-12))


class EnsembleCache:
    """Several teachers' caches as one: the logit target is the mean over the members of what
    each member's cache alone would give (its logits for the view, or its view mean), and the
    features are the first member's (feature methods distil from the first teacher only)."""

    def __init__(self, members: Sequence[TeacherCache]) -> None:
        if not members:
            raise ValueError("an ensemble cache needs at least one member")
        sizes = {len(m.logits) for m in members}
        if len(sizes) != 1:
            raise ValueError(f"the members' caches hold different numbers of images: {sizes}")
        self.members = list(members)
        self.folder = members[0].folder
        self.num_features = members[0].num_features

    def lookup(
        self, index: torch.Tensor, k: torch.Tensor, with_features: bool = True
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(mean of the members' logits, first member's features) of rows ``index``, views
        ``k``."""
        logits, feats = self.members[0].lookup(index, k, with_features)
        rest = [m.lookup(index, k, with_features=False)[0] for m in self.members[1:]]
        return torch.stack([logits, *rest]).mean(0), feats

    def view_mean_logits(self, index: torch.Tensor) -> torch.Tensor:
        """The mean over the members of each one's :meth:`TeacherCache.view_mean_logits`."""
        return torch.stack([m.view_mean_logits(index) for m in self.members]).mean(0)


def cache_key(teacher_digest: str, data_key: str, pre: Preprocess, signature: Sequence) -> str:
    """Names a cache by teacher, data, the preprocessing of the card and the output shapes.

    A crop-less RGB/area card keeps the key caches had before the card owned all of its
    preprocessing, so the existing (multi-GB) caches stay valid.
    """
    sig = [*signature, list(pre.mean), list(pre.std)]
    if pre.decode_key() != Preprocess(input_size=pre.input_size).decode_key():
        sig.append(pre.decode_key())
    text = json.dumps([teacher_digest, data_key, pre.input_size, sig])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@torch.no_grad()
def build_teacher_cache(
    teacher: torch.nn.Module,
    images: np.ndarray,
    pre: Preprocess,
    folder: str | Path,
    batch_size: int = 64,
    features: bool = True,
    log: Callable[[str], None] | None = None,
) -> TeacherCache:
    """Run the teacher on every image under all 8 dihedral transforms.

    Stores the logits and all stage outputs as :func:`wbc_edge.kd.features.stage_features`
    returns them (what ``Distiller.teacher_outputs`` gives a feature method), so logit-only
    and feature methods share one cache. ``features=False`` stores the logits alone (an
    ensemble's later members, whose features no method reads).

    Reuses ``folder`` when it is complete (``meta.json`` is written last, so an interrupted
    build is redone rather than trusted).
    """
    from wbc_edge.console import progress

    folder = Path(folder)
    if (folder / "meta.json").is_file():
        return TeacherCache(folder)
    if log is not None:  # the teacher runs now: 8 passes over every train image
        from wbc_edge.kd.allocator import log_allocator_hint

        log_allocator_hint(log, next(teacher.parameters()).device.type)
    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n = len(images)
    logits_mm = None
    feat_mms: list[np.memmap] = []
    with progress(transient=True) as p:
        task = p.add_task(f"teacher cache ({n} images x 8 views)", total=n * 8, status="")
        for start in range(0, n, batch_size):
            raw = torch.from_numpy(np.array(images[start : start + batch_size]))
            x0 = normalize_tensor(raw, pre)
            for k in range(8):
                logits, feats = stage_features(teacher, dihedral(x0, k).contiguous())
                feats = feats if features else []
                if logits_mm is None:
                    logits_mm = np.lib.format.open_memmap(
                        tmp / "logits.npy", "w+", np.float16, (n, 8, *logits.shape[1:])
                    )
                    feat_mms = [
                        np.lib.format.open_memmap(
                            tmp / f"feature{j}.npy", "w+", np.float16, (n, 8, *f.shape[1:])
                        )
                        for j, f in enumerate(feats)
                    ]
                sl = slice(start, start + len(raw))
                logits_mm[sl, k] = logits.float().cpu().numpy().astype(np.float16)
                for mm, f in zip(feat_mms, feats, strict=True):
                    mm[sl, k] = f.float().cpu().numpy().astype(np.float16)
                p.advance(task, len(raw))
    for mm in [logits_mm, *feat_mms]:
        mm.flush()
    del logits_mm, feat_mms
    meta = {"num_images": n, "num_features": len(list(tmp.glob("feature*.npy")))}
    (tmp / "meta.json").write_text(json.dumps(meta))
    if folder.exists():  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, folder)
    return TeacherCache(folder)


def output_signature(teacher: torch.nn.Module, size: int, features: bool = True) -> list:
    """Shapes of the teacher's logits and (with ``features``) its stage outputs: part of the
    cache key, so a logits-only cache never passes for a full one."""
    with torch.no_grad():
        logits, feats = stage_features(teacher.eval(), torch.zeros(1, 3, size, size))
    return [list(logits.shape[1:])] + ([list(f.shape[1:]) for f in feats] if features else [])
