"""``wbc-edge run``'s typer parameters, built from the run-option declaration.

Every option field of :class:`~wbc_edge.runtime.options.RunOptions` and of its groups becomes
one ``Annotated[..., typer.Option(...)]`` parameter of the command's signature (the
``inspect.Signature`` typer reads), named by its first flag; so the command line has exactly
the declared options, with their help, defaults and ranges, and :func:`options_from` turns what
click parsed back into one nested :class:`RunOptions`. Only typer and the standard library:
``--help`` loads nothing else.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import typer

from wbc_edge.runtime.options import Option, RunOptions, flag_name, option_of


@dataclass(frozen=True)
class CliParam:
    """One declared option as a command-line parameter."""

    path: tuple[str, ...]  # the groups, then the field: ("pipeline", "batch")
    name: str  # the Python parameter (and click) name: "batch", "min_confidence", "smear"
    meta: Option
    hint: Any  # the field's type, without None: int, float, Path, str, bool
    default: Any  # the field's declared default (a recorded option's: its fallback)

    @property
    def two_way_text(self) -> bool:
        """A text option given as ``--a/--b``: the flag's names are its two values."""
        return self.hint is str and bool(self.meta.choices)

    @property
    def cli_default(self) -> Any:
        """None (not given) where the help states the default or a resumed sample's record
        decides it, so the command line never gives what it was not told; else the default,
        which typer shows."""
        if self.meta.says_default or self.meta.recorded or self.two_way_text:
            return None
        return self.default

    def annotation(self) -> Any:
        """``Annotated[type, typer.Option(...)]`` (or ``typer.Argument``) for the signature."""
        meta = self.meta
        kind = bool if self.two_way_text else self.hint
        if self.cli_default is None:  # None: not given
            kind = kind | None
        help_text = meta.help.format(default=self.default)
        if meta.argument:
            return Annotated[kind, typer.Argument(help=help_text, show_default=False)]
        ranges: dict[str, Any] = {}
        if self.hint in (int, float):  # cast, so click shows 0.0 for a float's bound
            if meta.ge is not None:
                ranges["min"] = self.hint(meta.ge)
            if meta.le is not None:
                ranges["max"] = self.hint(meta.le)
        shown = {"show_default": False} if meta.says_default else {}
        param = typer.Option(*meta.flags, help=help_text, **ranges, **shown)
        return Annotated[kind, param]


def cli_params(cls: type = RunOptions, path: tuple[str, ...] = ()) -> list[CliParam]:
    """The declared options of ``cls`` and its groups, in declaration order."""
    hints = get_type_hints(cls)
    out = []
    for f in fields(cls):
        meta, hint = option_of(f), hints[f.name]
        if meta is None:
            if is_dataclass(hint):
                out += cli_params(hint, (*path, f.name))
            continue  # an internal setting (PipelineConfig.ruler_every): no option
        default = meta.fallback if meta.recorded else f.default
        if default is MISSING:
            raise TypeError(f"run option {f.name} has no default")
        name = f.name if meta.argument else flag_name(f.name, meta).lstrip("-").replace("-", "_")
        out.append(CliParam((*path, f.name), name, meta, _without_none(hint), default))
    return out


def cli_param(dotted: str) -> CliParam:
    """The parameter of one declared option, by its path (``"lab.flag_ig"``)."""
    for param in cli_params():
        if ".".join(param.path) == dotted:
            return param
    raise KeyError(dotted)


def options_from(values: dict[str, Any], params: list[CliParam] | None = None) -> RunOptions:
    """The :class:`RunOptions` the command line gave: a None leaves the declared default."""
    given: dict[tuple[str, ...], dict[str, Any]] = {}
    for param in params or cli_params():
        value = values[param.name]
        if param.two_way_text and value is not None:
            first, second = param.meta.choices
            value = first if value else second
        if value is not None:
            given.setdefault(param.path[:-1], {})[param.path[-1]] = value
    return _build(RunOptions, (), given)


def command(body: Callable[[RunOptions], None]) -> Callable[..., None]:
    """A typer command whose parameters are the declared options, calling ``body`` with the
    :class:`RunOptions` they make (its docstring is the command's help)."""
    params = cli_params()

    def run(**values: Any) -> None:
        body(options_from(values, params))

    run.__doc__, run.__name__ = body.__doc__, body.__name__.lstrip("_")
    kind = inspect.Parameter.KEYWORD_ONLY
    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(p.name, kind, default=p.cli_default, annotation=p.annotation())
            for p in params
        ]  # fmt: skip
    )
    return run


def _build(cls: type, path: tuple[str, ...], given: dict[tuple[str, ...], dict[str, Any]]) -> Any:
    hints = get_type_hints(cls)
    kwargs = dict(given.get(path, {}))
    for f in fields(cls):
        if option_of(f) is None and is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], (*path, f.name), given)
    return cls(**kwargs)


def _without_none(hint: Any) -> Any:
    """``float | None`` -> float."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint
