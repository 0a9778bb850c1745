"""Contract tests over every registered distiller (tiny inputs, randomly initialised teacher)."""

from __future__ import annotations

import pytest
import torch

from wbc_edge.errors import UserError
from wbc_edge.kd.distillers import DISTILLERS, TeacherOut, build_distiller
from wbc_edge.kd.students import create_student
from wbc_edge.kd.teacher import create_teacher

SIZE, BATCH, CLASSES = 64, 6, 9
HAS_CONNECTORS = {"fusion", "mlffakd"}


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_teacher(weights=None, num_classes=CLASSES)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(BATCH, 3, SIZE, SIZE, generator=g), torch.arange(BATCH) % CLASSES


def _build(method: str, teacher: torch.nn.Module, **options: object):  # noqa: ANN202
    torch.manual_seed(1)
    student = create_student("tinyresnet_xs", CLASSES)
    return build_distiller(method, student, teacher, **options).train()


@pytest.mark.parametrize("method", list(DISTILLERS))
def test_distiller_contract(method: str, teacher, batch) -> None:  # noqa: ANN001
    x, y = batch
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    d = _build(method, teacher)
    logits, losses = d.forward_train(x, y)
    assert logits.shape == (BATCH, CLASSES)
    assert losses and all(k.startswith("loss_") for k in losses)
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
    sum(losses.values()).backward()
    for name, p in d.student.named_parameters():
        assert p.grad is not None, f"no gradient reaches student {name}"
    assert sum(p.grad.abs().sum() for p in d.student.parameters()) > 0

    # Connectors are counted and never part of the student's weights.
    fresh = create_student("tinyresnet_xs", CLASSES)
    assert set(d.student.state_dict()) == set(fresh.state_dict())
    extra = sum(
        p.numel() for n, p in d.named_parameters() if not n.startswith(("student.", "teacher."))
    )
    assert d.get_extra_parameters() == extra
    assert (extra > 0) == (method in HAS_CONNECTORS)
    learnable = {id(p) for p in d.get_learnable_parameters()}
    assert all(id(p) in learnable for p in d.student.parameters())

    # The teacher is frozen: eval mode, no gradients, unchanged weights and BN statistics.
    if method == "ce":
        assert d.teacher is None and not d.needs_teacher
    else:
        assert d.teacher is teacher and not teacher.training
        assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
        assert all(id(p) not in learnable for p in teacher.parameters())
        for k, v in teacher.state_dict().items():
            assert torch.equal(v, teacher_before[k]), k


@pytest.mark.parametrize("method", [m for m in DISTILLERS if m != "ce"])
def test_cached_teacher_outputs_give_the_same_losses(method: str, teacher, batch) -> None:  # noqa: ANN001
    x, y = batch
    d = _build(method, teacher)
    cached = d.teacher_outputs(x)
    assert isinstance(cached, TeacherOut)
    assert bool(cached.features) == d.needs_teacher_features
    assert not cached.logits.requires_grad
    torch.manual_seed(2)
    logits_a, live = d.forward_train(x, y)
    torch.manual_seed(2)
    logits_b, from_cache = d.forward_train(x, y, cached)
    assert torch.equal(logits_a, logits_b)
    assert live.keys() == from_cache.keys()
    for k in live:
        assert torch.allclose(live[k], from_cache[k], rtol=1e-5, atol=1e-6), k
    # A float16 cache (as the trainer stores it) gives nearly the same losses.
    half = TeacherOut(cached.logits.half(), [f.half() for f in cached.features])
    _, from_half = d.forward_train(x, y, half)
    for k in live:
        assert torch.allclose(live[k], from_half[k], rtol=2e-2, atol=1e-3), k


@pytest.mark.parametrize("method", list(DISTILLERS))
def test_two_steps_lower_the_loss(method: str, teacher, batch) -> None:  # noqa: ANN001
    x, y = batch
    d = _build(method, teacher)
    cached = d.teacher_outputs(x) if d.needs_teacher else None
    opt = torch.optim.Adam(d.get_learnable_parameters(), lr=1e-3)
    totals = []
    for _ in range(3):
        _, losses = d.forward_train(x, y, cached)
        total = sum(losses.values())
        totals.append(total.item())
        opt.zero_grad()
        total.backward()
        opt.step()
    assert totals[2] < totals[0], totals


def test_student_checkpoint_loads_weights_only(tmp_path, teacher) -> None:  # noqa: ANN001
    d = _build("mlffakd", teacher)
    path = tmp_path / "student.pt"
    torch.save({"state_dict": d.student.state_dict(), "card": {"architecture": "x"}}, path)
    payload = torch.load(path, weights_only=True)
    again = create_student("tinyresnet_xs", CLASSES)
    again.load_state_dict(payload["state_dict"])  # strict: no connector keys, none missing


def test_loss_warmup_follows_set_epoch(teacher, batch) -> None:  # noqa: ANN001
    x, y = batch
    d = _build("dkd", teacher, warmup_epochs=4)
    cached = d.teacher_outputs(x)
    full = d.forward_train(x, y, cached)[1]["loss_dkd"]
    d.set_epoch(0)
    first = d.forward_train(x, y, cached)[1]["loss_dkd"]
    d.set_epoch(3)
    done = d.forward_train(x, y, cached)[1]["loss_dkd"]
    assert first.item() == pytest.approx(full.item() / 4, rel=1e-5)
    assert done.item() == pytest.approx(full.item(), rel=1e-5)


def test_mlffakd_with_dkd(teacher, batch) -> None:  # noqa: ANN001
    x, y = batch
    d = _build("mlffakd", teacher, logit="dkd", at_weight=10.0)
    _, losses = d.forward_train(x, y)
    assert set(losses) == {"loss_ce", "loss_dkd", "loss_at", "loss_fusion"}
    with pytest.raises(UserError, match="logit"):
        _build("mlffakd", teacher, logit="crd")


def test_options_and_teacher_are_checked(teacher) -> None:  # noqa: ANN001
    student = create_student("tinyresnet_xs", CLASSES)
    with pytest.raises(UserError, match="unknown method 'fitnet'"):
        build_distiller("fitnet", student, teacher)
    with pytest.raises(UserError, match="no option"):
        build_distiller("kd", student, teacher, temprature=4.0)
    with pytest.raises(UserError, match="needs a teacher"):
        build_distiller("at", student, None)
    kd = build_distiller("kd", student, teacher, temperature=2.0, label_smoothing=0.0)
    assert kd.temperature == 2.0 and kd.label_smoothing == 0.0


def test_forward_is_the_student(teacher, batch) -> None:  # noqa: ANN001
    x, _ = batch
    d = _build("fusion", teacher).eval()
    with torch.no_grad():
        assert torch.equal(d(x), d.student(x))
