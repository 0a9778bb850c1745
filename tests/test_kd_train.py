"""Training path of kd: data pipeline, teacher cache, trainer, checkpoints, resume, CLI errors.

Everything runs on tiny phantoms (3 colour classes, 32 px) so the file stays well under a minute.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wbc_edge.data.manifest import ManifestRow, read_manifest, write_manifest
from wbc_edge.data.scan import sha256_file
from wbc_edge.errors import UserError
from wbc_edge.kd import trainer as trainer_mod
from wbc_edge.kd.checkpoint import load_model, read_checkpoint, save_checkpoint
from wbc_edge.kd.config import TrainConfig
from wbc_edge.kd.data import (
    BatchLoader,
    Jitter,
    decode_cached,
    dihedral,
    jitter_uint8,
    normalize_tensor,
)
from wbc_edge.kd.distillers import build_distiller
from wbc_edge.kd.distributed import init_distributed
from wbc_edge.kd.features import stage_features
from wbc_edge.kd.run_setup import build_for_config
from wbc_edge.kd.students import create_student
from wbc_edge.kd.teacher import create_teacher
from wbc_edge.kd.teacher_cache import build_teacher_cache
from wbc_edge.kd.trainer import train
from wbc_edge.model.card import ModelCard, Preprocess
from wbc_edge.model.preprocess import normalize, read_image

COLOURS = [(200, 60, 60), (60, 200, 60), (60, 60, 200)]  # BGR means of the 3 phantom classes


def make_phantoms(root: Path, per_class: int = 10, size: int = 40) -> Path:
    """Class folders of noisy single-colour images and an 60/20/20 split manifest."""
    import cv2

    rng = np.random.default_rng(0)
    rows = []
    for c, colour in enumerate(COLOURS):
        for i in range(per_class):
            img = np.clip(rng.normal(colour, 25, (size, size + 4, 3)), 0, 255).astype(np.uint8)
            path = root / "cells" / f"class{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), img)
            split = "train" if i < per_class * 0.6 else "val" if i < per_class * 0.8 else "test"
            rows.append(ManifestRow(path, f"class{c}", split, sha256_file(path)))
    return write_manifest(rows, root / "split.csv")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return make_phantoms(tmp_path_factory.mktemp("kd"))


@pytest.fixture(scope="module")
def teacher_ckpt(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised Lite0 teacher saved as a checkpoint with its card."""
    torch.manual_seed(0)
    model = create_teacher("tf_efficientnet_lite0", num_classes=3, weights=None)
    card = ModelCard(
        "tf_efficientnet_lite0", ["class0", "class1", "class2"], Preprocess(input_size=32)
    )
    return save_checkpoint(tmp_path_factory.mktemp("teacher") / "teacher.pt", model, card)


def tiny_cfg(phantoms: Path, out: Path, **kw) -> TrainConfig:
    values = dict(
        data=str(phantoms),
        out=str(out),
        kind="distill",
        model="tinyresnet_xs",
        method="ce",
        size=32,
        epochs=2,
        batch_size=6,
        lr=3e-3,
        warmup_epochs=0.5,
        threads=1,
        cache_dir=str(out.parent / "cache"),
    )
    values.update(kw)
    return TrainConfig(**values)


# --- data pipeline ---------------------------------------------------------------------------


def test_torch_normalisation_equals_runtime_numpy() -> None:
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ours = normalize_tensor(torch.from_numpy(batch), Preprocess(mean=mean, std=std)).numpy()
    np.testing.assert_array_equal(ours, normalize(batch, mean, std))


def test_card_preprocessing_is_the_same_at_train_and_run_time(phantoms: Path, tmp_path: Path):
    """BGR + cubic + a non-square crop: the trainer's tensors are the runtime's, bit for bit."""
    from wbc_edge.model.backends import load_backend

    pre = Preprocess(
        24,
        crop_fraction=0.7,
        crop_aspect=1.5,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        channel_order="BGR",
        interpolation="cubic",
    )
    rows = read_manifest(phantoms, "val")
    decoded = decode_cached(rows, pre, tmp_path)
    loader = BatchLoader(decoded, [0] * len(rows), len(rows), pre, augment=False)
    train_view = next(iter(loader)).images
    card = ModelCard("tinyresnet_xs", ["class0", "class1", "class2"], pre)
    ckpt = save_checkpoint(tmp_path / "m.pt", create_student("tinyresnet_xs", 3), card)
    with load_backend(ckpt) as backend:  # the card as the model file carries it
        assert backend.card.preprocess == pre
        run_view = backend.card.preprocess([read_image(str(r.path)) for r in rows])
        assert backend.predict(run_view).shape == (len(rows), 3)
    assert torch.equal(train_view, torch.from_numpy(run_view))
    # Each declared step took effect: without the crop, BGR or cubic the tensors differ.
    image = read_image(str(rows[0].path))
    for change in (
        {"crop_fraction": 1.0, "crop_aspect": None},
        {"channel_order": "RGB"},
        {"interpolation": "area"},
    ):
        assert not np.array_equal(pre.replace(**change)([image])[0], run_view[0]), change


def test_dihedral_gives_eight_distinct_views_and_identity() -> None:
    x = torch.arange(9.0).view(1, 1, 3, 3)
    views = [dihedral(x, k) for k in range(8)]
    assert torch.equal(views[0], x)
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8


def test_decode_cache_matches_runtime_preprocessing(phantoms: Path, tmp_path: Path) -> None:
    rows = read_manifest(phantoms, "val")
    pre = Preprocess(input_size=32)
    arr = decode_cached(rows, pre, tmp_path)
    assert isinstance(arr, np.memmap)  # served from the cache file
    assert len(list(tmp_path.glob("decoded-*.npy"))) == 1
    np.testing.assert_array_equal(arr[1], pre.resize(read_image(str(rows[1].path))))
    again = decode_cached(rows, pre, tmp_path)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(arr))


def test_jitter_is_mild_and_off_means_off() -> None:
    rng = np.random.default_rng(0)
    ramp = np.linspace(50, 200, 16)
    x = (ramp[None, :, None] * ramp[:, None, None] / 200 * np.array([1.0, 0.8, 0.6])).astype(
        np.uint8
    )
    x = np.stack([x] * 4)  # a smooth, coloured image
    y = jitter_uint8(x, Jitter(), rng)
    assert y.shape == x.shape and y.dtype == np.uint8
    assert 0 < np.abs(y.astype(float) - x).mean() < 0.1 * 255
    np.testing.assert_array_equal(jitter_uint8(x, Jitter(0, 0, 0, 0, 0, 0), rng), x)


def test_loader_shards_cover_the_epoch_and_order_depends_on_epoch() -> None:
    images = np.zeros((10, 8, 8, 3), np.uint8)
    args = dict(
        images=images,
        targets=list(range(10)),
        batch_size=4,
        pre=Preprocess(input_size=8),
        seed=3,
    )
    seen = [
        int(i) for r in (0, 1) for b in BatchLoader(**args, rank=r, world_size=2) for i in b.index
    ]
    assert sorted(set(seen)) == list(range(10)) and len(seen) == 10
    one = BatchLoader(**args)
    first = torch.cat([b.index for b in one])
    one.set_epoch(1)
    assert not torch.equal(first, torch.cat([b.index for b in one]))
    one.set_epoch(0)
    assert torch.equal(first, torch.cat([b.index for b in one]))


# --- distillation and the teacher cache ------------------------------------------------------


def test_two_steps_of_distillation_lower_the_loss() -> None:
    torch.manual_seed(0)
    teacher = create_teacher("tf_efficientnet_lite0", num_classes=3, weights=None)
    d = build_distiller("mlffakd", create_student("tinyresnet_xs", 3), teacher)
    d.train()
    d.set_epoch(5)  # past the loss warm-up
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    t_out = d.teacher_outputs(x)
    opt = torch.optim.AdamW(d.get_learnable_parameters(), lr=1e-3)
    totals = []
    for _ in range(3):
        _, losses = d.forward_train(x, y, t_out)
        loss = sum(losses.values())
        totals.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert totals[2] < totals[0]


def test_teacher_cache_equals_live_teacher(
    phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    teacher, card = load_model(teacher_ckpt)
    images = decode_cached(read_manifest(phantoms, "train"), card.preprocess, tmp_path)
    cache = build_teacher_cache(teacher, images, card.preprocess, tmp_path / "t")
    index, k = torch.tensor([4, 0, 7]), torch.tensor([5, 0, 3])
    logits, feats = cache.lookup(index, k)
    live = torch.cat(
        [
            dihedral(
                normalize_tensor(torch.from_numpy(images[int(i)][None].copy()), card.preprocess),
                int(kk),
            )
            for i, kk in zip(index, k, strict=True)
        ]
    )
    with torch.no_grad():
        live_logits, live_feats = stage_features(teacher, live)
    torch.testing.assert_close(logits, live_logits, rtol=1e-2, atol=1e-2)
    assert len(feats) == len(live_feats) == 4
    for a, b in zip(feats, live_feats, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)
    # The distillation losses agree too, cached or live.
    torch.manual_seed(0)
    d = build_distiller("mlffakd", create_student("tinyresnet_xs", 3), teacher).eval()
    y = torch.tensor([0, 1, 2])
    from wbc_edge.kd.distillers import TeacherOut

    _, cached = d.forward_train(live, y, TeacherOut(logits, feats))
    _, direct = d.forward_train(live, y)
    for name in direct:
        torch.testing.assert_close(cached[name], direct[name], rtol=2e-2, atol=1e-3)


def test_view_mean_target_is_the_log_of_the_mean_softmax_over_views(
    phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    teacher, card = load_model(teacher_ckpt)
    images = decode_cached(read_manifest(phantoms, "train"), card.preprocess, tmp_path)
    cache = build_teacher_cache(teacher, images, card.preprocess, tmp_path / "t")
    index = torch.tensor([3, 1])
    mean = cache.view_mean_logits(index)
    per_view = torch.stack([cache.lookup(index, torch.full((2,), k))[0] for k in range(8)], 1)
    expected = torch.log(torch.softmax(per_view, -1).mean(1))
    torch.testing.assert_close(mean, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(per_view[:, 0], per_view[:, 5])  # the views really differ


# --- trainer, checkpoints, resume ---------------------------------------------------------------


def test_student_smaller_than_teacher_learns_from_the_teachers_own_view(
    phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    cfg = tiny_cfg(
        phantoms,
        tmp_path / "run",
        method="kd",
        teacher=str(teacher_ckpt),
        size=24,
        teacher_views="mean",
        epochs=1,
    )
    summary = train(cfg)
    _, card = load_model(tmp_path / "run" / "best.pt")
    assert card.preprocess.input_size == 24  # the student's own size, not the teacher's 32
    assert summary["test_accuracy"] >= 0.0
    caches = list((tmp_path / "cache").glob("teacher-*"))
    assert len(caches) == 1
    logits = np.load(caches[0] / "logits.npy", mmap_mode="r")
    assert logits.shape[:2] == (len(read_manifest(phantoms, "train")), 8)
    with pytest.raises(UserError, match="teacher_views"):
        train(tiny_cfg(phantoms, tmp_path / "bad", teacher=str(teacher_ckpt), teacher_views="x"))


def test_two_teachers_distil_the_mean_of_their_cached_logits(
    phantoms: Path, teacher_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wbc_edge.kd.distillers import KD
    from wbc_edge.kd.teacher_cache import TeacherCache

    torch.manual_seed(1)
    other = create_teacher("tf_efficientnet_lite0", num_classes=3, weights=None)
    card = ModelCard(
        "tf_efficientnet_lite0", ["class0", "class1", "class2"], Preprocess(input_size=40)
    )
    second = save_checkpoint(tmp_path / "second.pt", other, card)  # its own input size
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []  # (rows, views) the trainer looked up
    targets: list[torch.Tensor] = []  # the logit targets KD was given
    real_caches, real_forward = trainer_mod.teacher_caches, KD.forward_train

    def caches(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        cache = real_caches(*args, **kwargs)
        lookup = cache.lookup
        cache.lookup = lambda i, k, f=True: (seen.append((i, k)), lookup(i, k, f))[1]
        return cache

    def forward(self, images, y, teacher_out=None):  # noqa: ANN001, ANN202
        targets.append(teacher_out.logits.detach().clone())
        return real_forward(self, images, y, teacher_out)

    monkeypatch.setattr(trainer_mod, "teacher_caches", caches)
    monkeypatch.setattr(KD, "forward_train", forward)
    cfg = tiny_cfg(
        phantoms, tmp_path / "run", method="kd", teacher=[str(teacher_ckpt), str(second)], epochs=1
    )
    summary = train(cfg)
    assert [t["path"] for t in summary["teachers"]] == [str(teacher_ckpt), str(second)]
    assert [t["input_size"] for t in summary["teachers"]] == [32, 40]
    _, student_card = load_model(tmp_path / "run" / "best.pt")
    assert student_card.preprocess.input_size == 32  # the first teacher's preprocessing
    assert len(student_card.extra["teachers"]) == 2
    # One cache per teacher: the first with its features, the second logits only.
    folders = sorted((tmp_path / "cache").glob("teacher-*"), key=lambda f: f.stat().st_mtime)
    assert len(folders) == 2
    first, later = (TeacherCache(f) for f in folders)
    assert (first.num_features, later.num_features) == (4, 0)
    assert seen and len(seen) == len(targets)
    for (rows, views), target in zip(seen, targets, strict=True):
        expected = (first.lookup(rows, views)[0] + later.lookup(rows, views)[0]) / 2
        torch.testing.assert_close(target, expected)
        assert not torch.allclose(target, first.lookup(rows, views)[0])  # both really count
    with pytest.raises(UserError, match="teacher cache"):
        train(
            tiny_cfg(
                phantoms, tmp_path / "live", method="kd", teacher=cfg.teacher, teacher_cache=False
            )
        )


def test_ensemble_view_mean_is_the_mean_of_the_members_view_means(
    phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    from wbc_edge.kd.teacher_cache import EnsembleCache

    teacher, card = load_model(teacher_ckpt)
    torch.manual_seed(2)
    other = create_teacher("tf_efficientnet_lite0", num_classes=3, weights=None).eval()
    images = decode_cached(read_manifest(phantoms, "train"), card.preprocess, tmp_path)
    a = build_teacher_cache(teacher, images, card.preprocess, tmp_path / "a")
    b = build_teacher_cache(other, images, card.preprocess, tmp_path / "b", features=False)
    both = EnsembleCache([a, b])
    index = torch.tensor([2, 0])
    expected = (a.view_mean_logits(index) + b.view_mean_logits(index)) / 2
    torch.testing.assert_close(both.view_mean_logits(index), expected)
    logits, feats = both.lookup(index, torch.tensor([1, 6]))
    assert len(feats) == 4 and logits.shape == (2, 3)


def test_distill_run_writes_folder_and_saves_student_only(
    phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    cfg = tiny_cfg(phantoms, tmp_path / "run", method="mlffakd", teacher=str(teacher_ckpt))
    summary = train(cfg)
    out = tmp_path / "run"
    for name in (
        "config.yaml",
        "metrics.csv",
        "curves.png",
        "train.log",
        "best.pt",
        "last.pt",
        "resume.pt",
        "summary.json",
    ):
        assert (out / name).is_file(), name
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    log = (out / "train.log").read_text()
    assert f"connector/fusion parameters (training only): {summary['extra_parameters']:,}" in log
    assert summary["extra_parameters"] > 0
    assert list((cache := tmp_path / "cache").glob("teacher-*")), f"no teacher cache in {cache}"

    payload = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    student_keys = set(create_student("tinyresnet_xs", 3).state_dict())
    assert set(payload["state_dict"]) == student_keys  # no connector or fusion weights
    model, card = load_model(out / "best.pt")
    assert card.class_names == ["class0", "class1", "class2"] and card.preprocess.input_size == 32
    assert card.architecture == "tinyresnet_xs" and card.data_fingerprint
    assert card.metrics["test_accuracy"] == summary["test_accuracy"]
    assert ModelCard.from_dict(read_checkpoint(out / "best.pt")["card"]) == card
    # The finish step calibrated best.pt on val (6 cells: too few to certify a threshold).
    assert card.calibration["fitted_on"] == "val" and card.calibration["n_val"] == 6
    assert card.temperature == summary["calibration"]["temperature"] > 0
    assert card.confidence_threshold is None and "needs at least" in card.calibration["reason"]
    assert card.metrics["test_ece"] == summary["test_ece"]
    assert "test_ece_uncalibrated" in card.metrics and "calibration on val" in log
    # Every loss term of the method has its own column (curves.png plots them).
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    for term in ("loss_ce", "loss_kd", "loss_at", "loss_fusion"):
        assert f"train_{term}" in header


def test_keep_last_calibrates_and_scores_the_final_epoch(phantoms: Path, tmp_path: Path) -> None:
    # epochs=3 with a val split of 6 cells: the best-val epoch is usually not the last one, and
    # whichever it is, --keep last must score and calibrate last.pt and leave best.pt alone.
    summary = train(tiny_cfg(phantoms, tmp_path / "run", epochs=3, keep="last"))
    out = tmp_path / "run"
    assert summary["kept"] == "last" and summary["kept_epoch"] == 3
    _, last = load_model(out / "last.pt")
    assert last.metrics["test_accuracy"] == summary["test_accuracy"]
    assert last.calibration["fitted_on"] == "val"
    _, best = load_model(out / "best.pt")
    assert "test_accuracy" not in best.metrics and not best.calibration
    assert "last epoch 3 (last.pt): test accuracy" in (out / "train.log").read_text()
    with pytest.raises(UserError, match="keep must be one of best, last"):
        tiny_cfg(phantoms, tmp_path / "bad", keep="final")


def test_ema_keeps_the_weight_average_and_scores_the_raw_weights_beside_it(
    phantoms: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    validated: list[dict[str, torch.Tensor]] = []
    real_validate = trainer_mod._validate

    def record_validate(model, *args):  # noqa: ANN001, ANN202
        validated.append({k: v.clone() for k, v in model.state_dict().items()})
        return real_validate(model, *args)

    monkeypatch.setattr(trainer_mod, "_validate", record_validate)
    out = tmp_path / "run"
    summary = train(tiny_cfg(phantoms, out, epochs=2, ema=0.9, keep="last"))
    assert summary["ema"] == 0.9
    assert set(summary["without_ema"]) == {
        "val_accuracy",
        "val_macro_f1",
        "test_accuracy",
        "test_macro_f1",
    }
    kept = read_checkpoint(out / "last.pt")
    resume = torch.load(out / "resume.pt", weights_only=False)
    # last.pt holds the average (resume.pt's "ema"), not the final optimiser step's weights.
    for key, value in resume["ema"].items():
        assert torch.equal(kept["state_dict"][key], value), key
    raw = {k.removeprefix("student."): v for k, v in resume["distiller"].items()}
    assert any(
        not torch.equal(v, raw[k]) for k, v in kept["state_dict"].items() if v.is_floating_point()
    )
    # Each epoch validates (and picks best.pt by) the average it saves, not the raw weights.
    for key, value in validated[-1].items():
        assert torch.equal(kept["state_dict"][key], value), key
    _, card = load_model(out / "last.pt")
    assert card.extra["ema"] == 0.9
    assert 0 < summary["ema_final_decay"] <= 0.9
    log = (out / "train.log").read_text()
    assert "weight average: decay" in log and "final epoch without it: val_accuracy" in log
    # Resuming it without --ema would silently switch what last.pt holds: refused.
    with pytest.raises(UserError, match="keeps a weight average"):
        train(tiny_cfg(phantoms, out, epochs=3, keep="last"), resume=True)
    with pytest.raises(UserError, match="ema must be 0"):
        tiny_cfg(phantoms, tmp_path / "bad", ema=1.0)


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_repeats_the_uninterrupted_run(
    phantoms: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ema: float
) -> None:
    whole = tiny_cfg(phantoms, tmp_path / "whole", epochs=3, ema=ema)
    train(whole)

    real_save = trainer_mod.save_resume

    def save_then_crash(out, distiller, optimizer, scaler, epoch, *args):  # noqa: ANN001
        real_save(out, distiller, optimizer, scaler, epoch, *args)
        if epoch == 2:
            raise KeyboardInterrupt

    cut = tiny_cfg(phantoms, tmp_path / "cut", epochs=3, ema=ema)
    monkeypatch.setattr(trainer_mod, "save_resume", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(cut)
    monkeypatch.setattr(trainer_mod, "save_resume", real_save)
    assert read_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 2
    train(cut, resume=True)
    assert "resumed at epoch 2" in (tmp_path / "cut" / "train.log").read_text()

    a = read_checkpoint(tmp_path / "whole" / "last.pt")
    b = read_checkpoint(tmp_path / "cut" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def test_existing_run_folder_is_not_overwritten(phantoms: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(phantoms, tmp_path / "r", epochs=1)
    train(cfg)
    from wbc_edge.errors import UserError

    with pytest.raises(UserError, match="--resume"):
        train(cfg)


def test_single_process_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d = init_distributed("cpu")
    assert (d.rank, d.world_size, d.main) == (0, 1, True)
    assert not torch.distributed.is_initialized()


def test_yaml_config_is_overridden_by_cli_values(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 7\nlr: 0.01\nmethod: kd\n")
    cfg = TrainConfig.from_sources(str(path), lr=0.5, epochs=None)
    assert (cfg.epochs, cfg.lr, cfg.method) == (7, 0.5, "kd")
    path.write_text("epoch: 7\n")
    from wbc_edge.errors import UserError

    with pytest.raises(UserError, match="unknown option"):
        TrainConfig.from_sources(str(path))


# --- CLI ------------------------------------------------------------------------------------


def test_cli_missing_manifest_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from wbc_edge.cli import run

    missing = tmp_path / "nope.csv"
    code = run(["distill", "--data", str(missing), "--method", "ce", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "manifest not found" in err and "nope.csv" in err


def test_cli_train_teacher_runs_end_to_end(phantoms: Path, tmp_path: Path) -> None:
    from wbc_edge.cli import run

    out = tmp_path / "t"
    code = run(
        [
            "train-teacher",
            "--data",
            str(phantoms),
            "--weights",
            "none",
            "--size",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "6",
            "--threads",
            "1",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    _, card = load_model(out / "best.pt")
    assert card.architecture == "tf_efficientnet_lite0" and "test_accuracy" in card.metrics
    assert card.preprocess.mean == (0.5, 0.5, 0.5)


def test_ablation_table_is_mean_and_sample_std(tmp_path: Path) -> None:
    import json

    from wbc_edge.kd.ablation import collect, markdown

    for seed, acc in ((0, 0.90), (1, 0.94)):
        run = tmp_path / f"tinyresnet_xs-kd-s{seed}"
        run.mkdir()
        summary = dict(
            run=run.name,
            best_val_accuracy=acc + 0.02,
            test_accuracy=acc,
            test_macro_f1=acc - 0.01,
            epochs=3,
            best_epoch=3,
            student_parameters=405_913,
            extra_parameters=0,
            wall_seconds=100.0 + seed,
        )
        (run / "summary.json").write_text(json.dumps(summary))
    table = collect(tmp_path, ["kd", "at"], [0, 1], "tinyresnet_xs")
    kd = table["methods"]["kd"]
    assert kd["runs"] == 2 and kd["accuracy_mean"] == pytest.approx(0.92)
    assert kd["accuracy_std"] == pytest.approx(np.std([0.90, 0.94], ddof=1))
    assert table["methods"]["at"]["runs"] == 0
    table.update(
        data="split.csv",
        command="wbc-edge ablation",
        machine="m",
        date="d",
        teacher={
            "path": "t.pt",
            "architecture": "lite0",
            "test_accuracy": 0.99,
            "test_macro_f1": 0.99,
        },
        teacher_cache_seconds=1.0,
        parallel=1,
        threads_per_run=2,
        total_wall_seconds=60.0,
    )
    text = markdown(table)
    assert "| kd | 2 | 3 | 94.00 +- 2.83 | 92.00 +- 2.83 |" in text
    assert "| at | 0 | | | not run |" in text


def test_ablation_prebuilds_the_cache_its_runs_read(
    phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    from wbc_edge.kd.ablation import prebuild_teacher_cache

    prebuild_teacher_cache(phantoms, teacher_ckpt, ["ce", "kd", "at"], "tinyresnet_xs", tmp_path)
    folders = list(tmp_path.glob("teacher-*"))
    assert len(folders) == 1  # one cache (logits + features) serves kd and at
    cfg = tiny_cfg(phantoms, tmp_path / "run", method="at", teacher=str(teacher_ckpt))
    cfg.cache_dir, cfg.epochs = str(tmp_path), 1
    train(cfg)
    assert "teacher cache: " + str(folders[0]) in (tmp_path / "run" / "train.log").read_text()


def test_ablation_variants_carry_method_options(
    tmp_path: Path, teacher_ckpt: Path, capsys: pytest.CaptureFixture
) -> None:
    from wbc_edge.errors import UserError
    from wbc_edge.kd.ablation import parse_variant, run_name

    assert parse_variant("kd") == ("kd", {})
    assert parse_variant("at@at_weight=1+p=3") == ("at", {"at_weight": 1, "p": 3})
    assert parse_variant("mlffakd@logit=dkd") == ("mlffakd", {"logit": "dkd"})
    assert run_name("tinyresnet_xs", "at@at_weight=1", 2) == "tinyresnet_xs-at@at_weight=1-s2"
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_variant("at@at_weight")
    from wbc_edge.cli import run

    code = run(["distill", "--data", str(tmp_path / "s.csv"), "--option", "nonsense"])
    assert code == 2 and "KEY=VALUE" in capsys.readouterr().err
    cfg = TrainConfig(
        model="tinyresnet_xs",
        method="at",
        teacher=str(teacher_ckpt),
        method_options={"at_weight": 1},
    )
    assert build_for_config(cfg, 3)[0].at_weight == 1


def test_ablation_runs_get_size_teacher_views_keep_init_and_augment(
    phantoms: Path, teacher_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every run of an ablation must train the way a single distill run would (a 128 px student
    # of a 224 px teacher, the 8-view target, the final epoch), or the table compares the wrong
    # thing. The runs themselves are covered above; here only what each is started with.
    from wbc_edge.kd import ablation

    started: list[list[str]] = []
    monkeypatch.setattr(ablation, "prebuild_teacher_cache", lambda *a, **k: None)
    monkeypatch.setattr(
        ablation, "_run_jobs", lambda jobs, parallel: started.extend(a for _, a in jobs)
    )
    ablation.run_ablation(
        phantoms,
        teacher_ckpt,
        ["kd", "at"],
        [0],
        out=tmp_path / "abl",
        runs_dir=tmp_path / "runs",
        size=24,
        teacher_views="mean",
        keep="last",
        init=tmp_path / "start.pt",
        augment="crosslab",
    )
    assert len(started) == 2
    for argv in started:
        text = " ".join(argv)
        assert "--size 24" in text and "--teacher-views mean" in text and "--keep last" in text
        assert f"--init {tmp_path / 'start.pt'}" in text and "--augment crosslab" in text


def test_loader_view_is_the_cached_teacher_view(phantoms: Path, tmp_path: Path) -> None:
    """Batch image j is dihedral k[j] of decoded row index[j]: the key the teacher cache uses."""
    pre = Preprocess(input_size=32)
    images = decode_cached(read_manifest(phantoms, "train"), pre, tmp_path)
    loader = BatchLoader(
        images,
        [0] * len(images),
        8,
        pre,
        jitter=Jitter(0, 0, 0, 0, 0, 0),
        seed=1,
    )
    batch = next(iter(loader))
    assert len(set(batch.k.tolist())) > 1
    expected = torch.cat(
        [
            dihedral(
                normalize_tensor(torch.from_numpy(np.array(images[int(i)]))[None], pre),
                int(k),
            )
            for i, k in zip(batch.index, batch.k, strict=True)
        ]
    )
    assert torch.equal(batch.images, expected)


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_train_and_rank0_writes(
    phantoms: Path, teacher_ckpt: Path, tmp_path: Path
) -> None:
    """The DDP path under torchrun (gloo on CPU): both ranks train, rank 0 writes the run."""
    import shutil
    import socket
    import subprocess
    import sys

    script = shutil.which("wbc-edge", path=str(Path(sys.executable).parent))
    assert script, "the wbc-edge console script is not installed beside this python"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
        script,
        "distill",
        "--data",
        str(phantoms),
        "--teacher",
        str(teacher_ckpt),
        "--method",
        "kd",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--threads",
        "1",
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "best.pt").is_file() and (out / "summary.json").is_file()
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 2


def test_cli_and_api_share_one_default_per_option(capsys) -> None:
    """TrainConfig resolves each default once; --help shows that same value."""
    from wbc_edge import cli
    from wbc_edge.kd import config

    teacher, student = TrainConfig(kind="teacher"), TrainConfig(kind="distill")
    assert (teacher.lr, teacher.method, teacher.model) == (1e-3, "ce", "tf_efficientnet_lite0")
    assert (student.lr, student.method, student.model) == (2e-3, "kd", "tinyresnet_xs")
    assert TrainConfig(kind="teacher", method="kd").method == "ce"  # a teacher is plain CE
    for command, lr in (("train-teacher", config.TEACHER_LR), ("distill", config.STUDENT_LR)):
        with pytest.raises(SystemExit):
            cli.app([command, "--help"], prog_name="wbc-edge")
        text = " ".join(capsys.readouterr().out.split())
        assert f"[default: {lr}]" in text and f"[default: {TrainConfig.epochs}]" in text
