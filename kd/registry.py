"""One registry of architectures (timm's ``register_model`` / ``create_model`` idea).

Every place that builds a network from a name (a checkpoint's card, the torch backend, the
trainer, the size study) calls :func:`create_model`; a new student family registers its
entry points here and needs no ``if arch in STUDENTS`` branch anywhere else. Names that are not
registered fall through to timm (the EfficientNet teachers), built without weights: a
checkpoint's own weights are loaded by the caller.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from wbc_edge.errors import UserError

_ENTRY_POINTS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: ``fn(num_classes=...) -> nn.Module`` becomes buildable by ``name``."""

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _ENTRY_POINTS:
            raise ValueError(f"architecture {name!r} is registered twice")
        _ENTRY_POINTS[name] = fn
        return fn

    return add


def _register_builtins() -> None:
    import wbc_edge.kd.students  # noqa: F401  (registers the TinyResNet family)


def registered() -> list[str]:
    """The registered (student) architectures, in registration order."""
    _register_builtins()
    return list(_ENTRY_POINTS)


def is_registered(name: str) -> bool:
    return name in registered()


def create_model(name: str, num_classes: int) -> nn.Module:
    """A freshly initialised network of architecture ``name`` with ``num_classes`` outputs."""
    _register_builtins()
    if name in _ENTRY_POINTS:
        return _ENTRY_POINTS[name](num_classes=num_classes)
    import timm

    if not timm.is_model(name):
        raise UserError(
            f"unknown architecture {name!r}: a student ({', '.join(_ENTRY_POINTS)}) or a timm "
            "EfficientNet name"
        )
    from wbc_edge.kd.teacher import create_teacher

    return create_teacher(name, num_classes=num_classes, weights=None)
