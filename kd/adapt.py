"""``wbc-edge adapt``: fine-tune a model to a new microscope from a site's few labelled examples.

Site data comes in one of two layouts:

* a folder of class folders of cell crops (``SITE/Neutrophil/*.jpg``, ...), e.g. what
  ``wbc-edge review`` exports from confirmed cells;
* smear fields in Pascal-VOC layout (``JPEGImages/``) with a per-field label file like BCCD's
  ``labels.csv`` (``image,category``): the finder cuts each field's white cell at the model's
  field of view, exactly as ``run --smear`` will. A field labelled with two different types, or
  with none, cannot say which cell is which and is skipped (and counted); a field whose label
  names one type twice (``NEUTROPHIL, NEUTROPHIL``) keeps its two best-scoring cells.

The recipe, and why: a site has tens of cells, too few to learn nine classes from, and usually
lacks the rare ones (blasts, promyelocytes). So each step's batch is half site crops
(class-balanced, so 60% neutrophil fields do not teach "everything is a neutrophil") and half
rows of the model's own training split (``--pbc``, optional but recommended): the classes the
site lacks keep what the model knew, and the site's classes are learnt at the site's look.
Both halves get the dihedral views and mild colour jitter; label smoothing 0.1; AdamW with a
short warm-up and cosine decay. The card of the result records the adaptation (data
fingerprint, classes seen, fields used and skipped, recipe) next to the original training data.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.errors import UserError
from wbc_edge.kd.config import ADAPT_BATCH, ADAPT_LR, ADAPT_STEPS
from wbc_edge.model.card import ModelCard
from wbc_edge.model.labelled import check_labels, read_labelled

LABEL_FILE = "labels.csv"
# Fewer site crops than this cannot pin down the six appearance statistics and their 99th
# percentile on their own: the training crops are pooled in (the site then warns less, the
# training lab is not flagged).
SITE_OOD_MIN_CROPS = 50


@dataclass
class SiteData:
    """A site's labelled crops (BGR uint8, any size) and where they came from."""

    crops: list[np.ndarray]
    labels: list[str]  # class names of the model
    source: str
    fingerprint: str
    fields: list[str] = field(default_factory=list)  # field file names the crops came from
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> number of fields

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))


def map_label(text: str, class_names: Sequence[str], where: str) -> str:
    """A site's label (``NEUTROPHIL``, ``neutrophil``, ``Neutrophil``) -> the model's class name;
    an unknown label is one clear error listing the classes the model knows."""
    by_key = {_key(c): c for c in class_names}
    key = _key(text)
    if key not in by_key:
        raise UserError(
            f"{where}: label {text.strip()!r} is not a class of the model; it knows "
            f"{', '.join(class_names)}"
        )
    return by_key[key]


def _key(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())


def read_field_labels(path: Path) -> dict[str, list[str]]:
    """``labels.csv`` -> {image file name: the labels of its white cells (maybe empty)}."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: not a readable label file ({exc})") from exc
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["image", "category"]:
        raise UserError(
            f"{path}: the first line must be the header 'image,category' (one row per field, "
            "e.g. BloodImage_00001.jpg,NEUTROPHIL)"
        )
    out: dict[str, list[str]] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        if len(row) < 2:
            raise UserError(f"{path}, line {n}: expected 'image,category', got {','.join(row)!r}")
        name = row[0].strip()
        if not name.lower().endswith((".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")):
            name += ".jpg"  # BCCD's original file lists bare numbers
        out[name] = [t for t in re.split(r"[,;]", ",".join(row[1:])) if t.strip()]
    return out


def read_site(
    data: str | Path,
    card: ModelCard,
    fields: Sequence[str] | None = None,
    show_progress: bool = False,
) -> SiteData:
    """The labelled crops of a site folder, cut as the model's card says (see the module doc).

    ``fields`` restricts a VOC folder to those field file names (a learning curve's subset).
    """
    data = Path(data)
    if not data.is_dir():
        raise UserError(
            f"site data not found: {data}; pass a folder of class folders or a VOC "
            "folder (JPEGImages/ + labels.csv)"
        )
    if (data / "JPEGImages").is_dir():
        return _read_fields(data, card, fields, show_progress)
    if (data / LABEL_FILE).is_file():  # fields beside their label file: the VOC layout half-made
        raise UserError(
            f"{data} has {LABEL_FILE} but no JPEGImages/ folder: put the smear fields it names in "
            f"{data / 'JPEGImages'}/ (Pascal-VOC layout), or pass a folder of class folders of "
            "cell crops instead"
        )
    return _read_class_folders(data, card)


def _read_class_folders(data: Path, card: ModelCard) -> SiteData:
    from wbc_edge.data.scan import scan_class_folders

    files = scan_class_folders(data)
    if not files:
        raise UserError(f"{data} holds no images in class folders (SITE/<class>/*.jpg)")
    labels = [map_label(f.label, card.class_names, f"{data / f.label}") for f in files]
    crops, h = [], hashlib.sha256()
    for f, label in zip(files, labels, strict=True):
        crops.append(read_labelled(f.path, str(data)))
        h.update(f"{label},".encode() + hashlib.sha256(Path(f.path).read_bytes()).digest())
    return SiteData(crops, labels, str(data), h.hexdigest()[:16])


def _read_fields(
    data: Path, card: ModelCard, subset: Sequence[str] | None, show_progress: bool
) -> SiteData:
    from wbc_edge.console import progress
    from wbc_edge.model.decode import read_image
    from wbc_edge.model.fieldcrop import cells_in_field

    label_path = data / LABEL_FILE
    if not label_path.is_file():
        raise UserError(
            f"{data} has JPEGImages/ but no {LABEL_FILE}: add one row 'image,category' per field"
        )
    table = read_field_labels(label_path)
    images = sorted((data / "JPEGImages").iterdir())
    if subset is not None:
        wanted = set(subset)
        images = [p for p in images if p.name in wanted]
    skipped: dict[str, int] = {}
    crops, labels, used = [], [], []
    h = hashlib.sha256()
    scale = card.preprocess.crop_scale
    with progress(transient=True) as p:
        p.disable = p.disable or not show_progress  # off in a log already (console)
        task = p.add_task("cutting cells from the fields", total=len(images), status="")
        for path in images:
            p.advance(task)
            types = {
                map_label(t, card.class_names, str(label_path)) for t in table.get(path.name, [])
            }
            if not types:
                skipped["no label"] = skipped.get("no label", 0) + 1
                continue
            if len(types) > 1:
                skipped["two types"] = skipped.get("two types", 0) + 1
                continue
            try:
                image = read_image(str(path))
            except (ValueError, OSError):
                skipped["unreadable"] = skipped.get("unreadable", 0) + 1
                continue
            found = cells_in_field(image, scale)
            if not found.crops:
                skipped["no cell found"] = skipped.get("no cell found", 0) + 1
                continue
            keep = min(len(found.crops), len(table[path.name]))  # boxes come best first
            label = types.pop()
            crops += found.crops[:keep]
            labels += [label] * keep
            used.append(path.name)
            h.update(f"{path.name},{label},".encode() + hashlib.sha256(path.read_bytes()).digest())
    if not crops:
        raise UserError(f"{data}: no labelled field gave a white cell ({_skipped_text(skipped)})")
    return SiteData(crops, labels, str(data), h.hexdigest()[:16], used, skipped)


def _skipped_text(skipped: dict[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())) or "none skipped"


def adapt_model(
    model_path: str | Path,
    site: SiteData,
    out: str | Path,
    steps: int = ADAPT_STEPS,
    lr: float = ADAPT_LR,
    batch_size: int = ADAPT_BATCH,
    pbc: str | Path | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    stain_norm: str | None = None,
    teacher: str | Path | None = None,
) -> ModelCard:
    """Fine-tune ``model_path`` on ``site`` (see the module doc); writes ``out`` (.pt) and
    returns its card.

    ``teacher``: a model already adapted to the same site (a larger one learns a new lab from
    few cells better). The loss is then the distillation's own (:class:`~wbc_edge.kd.distillers.KD`
    weights and temperature) on each batch as the teacher sees it, instead of cross-entropy
    alone; the teacher must share the input size, field of view and stain normalisation.

    ``stain_norm`` (``unstained``, ``crop`` or ``none``) sets the card's stain normalisation
    before fine-tuning, its reference fitted on ``pbc``'s train split (the model's own training
    lab, so the site is moved toward what the model knew); None keeps the model's.
    """
    import torch
    import torch.nn.functional as F

    from wbc_edge.kd.checkpoint import load_model, save_checkpoint
    from wbc_edge.kd.data import AUGMENT_PRESETS, BatchLoader, decode_cached, rows_key

    log = log or (lambda msg: None)
    if steps < 1 or batch_size < 2 or not lr > 0:
        raise UserError("--steps must be >= 1, --batch-size >= 2 and --lr > 0")
    t0 = time.time()
    torch.manual_seed(seed)
    model, card = load_model(model_path)
    if stain_norm is not None:
        card.preprocess = stain_preprocess(card.preprocess, stain_norm, pbc, log)
    pre = card.preprocess
    site_x = np.stack([pre.resize(c) for c in site.crops])
    kd_teacher = _site_teacher(teacher, card) if teacher is not None else None
    if kd_teacher is not None:
        from wbc_edge.kd.allocator import log_allocator_hint

        log_allocator_hint(log, "cpu")  # adapt runs on the CPU
    site_y = check_labels(card, site.labels, site.source)
    half = batch_size // 2 if pbc else batch_size
    pbc_rows, pbc_x, pbc_y = [], None, None
    if pbc:
        from wbc_edge.data.manifest import read_manifest

        pbc_rows = read_manifest(pbc, "train")
        pbc_y = check_labels(card, [r.label for r in pbc_rows], str(pbc))
        pbc_x = decode_cached(pbc_rows, pre, cache_dir)

    rng = np.random.default_rng(seed)
    # Class-balanced site draws: a class, then one of its crops.
    by_class = [np.flatnonzero(site_y == c) for c in np.unique(site_y)]
    jitter = AUGMENT_PRESETS["mild"]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warmup = max(1, steps // 10)
    model.train()
    for step in range(steps):
        g = (
            lr * (step + 1) / warmup
            if step < warmup
            else lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        )
        for group in opt.param_groups:
            group["lr"] = g
        pick = [
            by_class[int(c)][int(rng.integers(len(by_class[int(c)])))]
            for c in rng.integers(len(by_class), size=half)
        ]
        xs, ys = [site_x[pick]], [site_y[pick]]
        if pbc_x is not None:
            rows = np.sort(rng.choice(len(pbc_y), batch_size - half, replace=False))
            xs.append(np.asarray(pbc_x[rows]))
            ys.append(pbc_y[rows])
        x, y = np.concatenate(xs), np.concatenate(ys)
        loader = BatchLoader(x, y, len(y), pre, augment=True, jitter=jitter, seed=seed)
        loader.set_epoch(step)
        batch = next(iter(loader))
        logits = model(batch.images)
        loss = F.cross_entropy(logits, batch.targets, label_smoothing=0.1)
        if kd_teacher is not None:
            loss = kd_teacher.loss(logits, batch.images, loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step == 0 or (step + 1) % 25 == 0 or step + 1 == steps:
            log(f"adapt step {step + 1}/{steps}: loss {float(loss.detach()):.3f}")
    model.eval()
    new = ModelCard.from_dict(card.to_dict())
    new.extra = dict(card.extra)
    new.extra["adaptation"] = {
        "data": site.source,
        "data_fingerprint": site.fingerprint,
        "classes_seen": site.classes,
        "crops": len(site.labels),
        "fields": len(site.fields),
        "skipped_fields": dict(site.skipped),
        "mixed_in": {"manifest": str(pbc), "rows": len(pbc_rows), "key": rows_key(pbc_rows)}
        if pbc
        else None,
        "steps": steps,
        "stain_norm": pre.stain.over if pre.stain else None,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "from_model": str(model_path),
        "teacher": str(teacher) if teacher is not None else None,
        "seconds": round(time.time() - t0, 1),
    }
    # The original model's figures describe the original weights, not these: they move into
    # the adaptation's record instead of reading as the adapted model's own.
    new.extra["adaptation"]["metrics_before"] = dict(card.metrics)
    new.metrics = {}
    new.ood, new.extra["adaptation"]["ood"] = _refit_ood(card, site, pbc_rows)
    # Whatever it was adapted on, the model is the product's: research use, never clinical.
    from wbc_edge.models import INTENDED_USE

    new.extra.setdefault("intended_use", INTENDED_USE)
    save_checkpoint(out, model, new)
    return new


class _SiteTeacher:
    """An adapted teacher's logits on the student's batch, and the distillation loss on them."""

    def __init__(self, model: Any, card: ModelCard, student: ModelCard) -> None:
        import torch

        from wbc_edge.kd.distillers import KD

        self.model = model.eval()
        shape = (1, 3, 1, 1)
        s, t = student.preprocess, card.preprocess
        # The student's normalised batch back to [0, 1], then normalised as the teacher's card
        # says: the same pixels, each model's own standardisation.
        self.s_mean = torch.tensor(s.mean).view(shape)
        self.s_std = torch.tensor(s.std).view(shape)
        self.t_mean = torch.tensor(t.mean).view(shape)
        self.t_std = torch.tensor(t.std).view(shape)
        self.swap = s.channel_order != t.channel_order
        self.weights = KD(torch.nn.Identity(), torch.nn.Identity())

    def loss(self, logits: Any, images: Any, ce: Any) -> Any:
        import torch

        from wbc_edge.kd import losses
        from wbc_edge.model.preprocess import standardize

        with torch.no_grad():
            x = images * self.s_std + self.s_mean
            if self.swap:
                x = x.flip(1)
            t_logits = self.model(standardize(x, self.t_mean, self.t_std))
        w = self.weights  # distill --method kd's own weights and temperature
        kd = losses.kd_loss(logits, t_logits, w.temperature)
        return w.ce_weight * ce + w.kd_weight * kd


def check_teacher(path: str | Path, student: ModelCard) -> ModelCard:
    """The card of ``adapt --teacher``, or one clear error when it cannot teach ``student``
    (checked before the slow site reading)."""
    from wbc_edge.kd.checkpoint import read_checkpoint

    card = ModelCard.from_dict(read_checkpoint(path)["card"])
    _fits(card, student, path)
    return card


def _fits(card: ModelCard, student: ModelCard, path: str | Path) -> None:
    """One clear error unless the teacher ``card`` sees cells as the ``student`` does."""
    s, t = student.preprocess, card.preprocess
    problems = []
    if list(card.class_names) != list(student.class_names):
        problems.append("its classes differ")
    if t.input_size != s.input_size:
        problems.append(f"its input is {t.input_size} px, the student's {s.input_size} px")
    fov = [x.crop_scale.fov_rbc if x.crop_scale else None for x in (t, s)]
    if None not in fov and abs(fov[0] - fov[1]) > 0.05 * fov[1]:
        problems.append(f"its field of view is {fov[0]:.2f} red cells, the student's {fov[1]:.2f}")
    if (t.stain.over if t.stain else None) != (s.stain.over if s.stain else None):
        problems.append("its stain normalisation differs")
    if problems:
        raise UserError(f"--teacher {path}: cannot teach this student: {'; '.join(problems)}")


def _site_teacher(path: str | Path, student: ModelCard) -> _SiteTeacher:
    from wbc_edge.kd.checkpoint import load_model

    model, card = load_model(path)
    _fits(card, student, path)
    for q in model.parameters():
        q.requires_grad_(False)
    return _SiteTeacher(model, card, student)


def check_stain_norm(over: str | None, pbc: str | Path | None) -> None:
    """The one-line usage errors of ``--stain-norm`` (checked before the slow site reading)."""
    from wbc_edge.model.stain import OVER

    if over is None or over == "none":
        return
    if over not in OVER:
        raise UserError(f"--stain-norm {over}: use {', '.join(OVER)} or none")
    if pbc is None:
        raise UserError(
            "--stain-norm needs --pbc (the model's training manifest): its train crops are the "
            "stain reference"
        )


def stain_preprocess(
    pre: Any, over: str, pbc: str | Path | None, log: Callable[[str], None]
) -> Any:
    """``pre`` with the stain normalisation ``over`` (``none``: off), fitted on ``pbc``."""
    check_stain_norm(over, pbc)
    if over == "none":
        return pre.replace(stain=None)
    from wbc_edge.data.manifest import read_manifest
    from wbc_edge.kd.card_stats import training_stain
    from wbc_edge.kd.run_folder import RunLog

    ref = training_stain(read_manifest(pbc, "train"), pre, over, RunLog(None))
    log(f"stain normalisation: Reinhard over {over} pixels toward {ref.fitted_on} train crops")
    return pre.replace(stain=ref)


def _refit_ood(card: ModelCard, site: SiteData, pbc_rows: list) -> tuple[Any, dict[str, Any]]:
    """OOD statistics of the site's own crops, and what they were fitted on: at the site, its
    images are the in-distribution ones (they stop raising the warning) and anything that looks
    unlike them (the training lab's slides included, or a change of stain or lamp at the site)
    is flagged. With fewer crops than the statistics need, the training crops are pooled in;
    with too few and no training crops, the model's own statistics stay."""
    from wbc_edge.model import ood

    n = len(site.crops)
    if n >= SITE_OOD_MIN_CROPS:
        return ood.fit(list(site.crops)), {"refit": True, "site_crops": n, "training_crops": 0}
    from wbc_edge.model.decode import read_image
    from wbc_edge.model.scale import DEFAULT_SCALE_SAMPLE, evenly_spaced

    base = [
        read_image(p) for p in evenly_spaced([str(r.path) for r in pbc_rows], DEFAULT_SCALE_SAMPLE)
    ]
    try:
        stats = ood.fit(base + list(site.crops))
    except ValueError:  # too few crops to fit: keep what the model had
        return card.ood, {"refit": False, "site_crops": n, "needs": ood.MIN_CROPS}
    return stats, {"refit": True, "site_crops": n, "training_crops": len(base)}
