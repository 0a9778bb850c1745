"""One declaration of run options (issue 30): ``wbc-edge run``'s options are built from
:class:`~wbc_edge.runtime.options.RunOptions`, each default is declared there once, the service
receives the object whole, and a resumed sample's recorded settings are resolved in one place."""

from __future__ import annotations

import ast
import json
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import typer.main
from runtime_models import BLUE, GREEN, RED, make_onnx, run_args, write_images

from wbc_edge import cli
from wbc_edge.errors import UserError
from wbc_edge.model.defaults import MARGIN
from wbc_edge.runtime import service
from wbc_edge.runtime.cli_options import cli_params, options_from
from wbc_edge.runtime.options import (
    FLAG_BLASTS,
    FLAG_IG_PERCENT,
    FLAG_NRBC_PER_100_WBC,
    CaptureOptions,
    LabOptions,
    PipelineConfig,
    RunOptions,
    option_of,
)
from wbc_edge.runtime.sources import SourceOptions, open_source

REPO = Path(__file__).resolve().parents[1]
RUN = typer.main.get_command(cli.app).commands["run"]
# A few values mean "off" or "not set" wherever they appear (0, False, None, ""); every other
# default of a run option is a decision, and is made once, in runtime/options.py.
OFF = (None, False, 0, 0.0, "")


def _declared() -> dict[str, object]:
    """Every field of the declaration (groups walked) -> its default."""
    out: dict[str, object] = {}

    def walk(cls: type) -> None:
        for f in fields(cls):
            if (
                option_of(f) is None
                and f.default_factory is not None
                and is_dataclass(f.default_factory)
            ):
                walk(f.default_factory)
            else:
                meta = option_of(f)
                out[f.name] = meta.fallback if meta and meta.recorded else f.default

    walk(RunOptions)
    return out


def test_the_command_line_has_exactly_the_declared_options():
    params = {p.name: p for p in RUN.params if p.name != "help"}
    declared = cli_params()
    assert sorted(params) == sorted(p.name for p in declared)
    for p in declared:
        click = params[p.name]
        names = [*click.opts, *click.secondary_opts]
        if p.meta.argument:
            assert click.param_type_name == "argument"
        elif p.meta.flags:  # "--smear/--crops" is one declaration of two names
            assert names == [n.strip() for f in p.meta.flags for n in f.split("/")]
        else:
            assert names[0] == "--" + p.path[-1].replace("_", "-")
        assert " ".join(click.help.split()) == " ".join(
            p.meta.help.format(default=p.default).split()
        )
        if click.param_type_name == "option" and not p.meta.says_default:
            assert click.default == p.default, p.name  # typer shows it: the declared one


def test_only_deliberate_fields_are_not_options():
    """A field without an Option is a group or an internal setting the command line lacks."""
    internal = []

    def walk(cls: type, path: str) -> None:
        for f in fields(cls):
            if option_of(f) is None:
                if f.default_factory is not None and is_dataclass(f.default_factory):
                    walk(f.default_factory, f"{path}{f.name}.")
                else:
                    internal.append(path + f.name)

    walk(RunOptions, "")
    assert internal == ["pipeline.ruler_every"]


def test_the_help_shows_every_default_from_the_declaration():
    text = " ".join(RUN.get_help(RUN.context_class(RUN, info_name="run")).split())
    for shown in ("[default: 16]", "[default: 32]", f"[default: {MARGIN};", "[default: 1.0",
                  "[default: 0.5]", "[default: 10.0", "[default: wbc-run]", "[default: 60]",
                  f"[default: {FLAG_IG_PERCENT:g};", "[default: auto]"):  # fmt: skip
        assert shown in text, shown


# Parameters that share a run option's name but not its meaning.
SAME_NAME_OTHER_MEANING = {
    ("Annotator.__init__", "fps"),  # an annotated video's rate when its source has none
}


def _defaults(tree: ast.Module) -> list[tuple[str, str, ast.expr]]:
    """(function or class, parameter or field, default) of every keyword default of a function
    and every dataclass-style field of a class in ``tree``."""
    out = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{where}{child.name}"
                a = child.args
                positional = [*a.posonlyargs, *a.args]
                with_default = positional[len(positional) - len(a.defaults) :]
                pairs = [*zip(with_default, a.defaults, strict=True)]
                pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d]
                out.extend((name, arg.arg, d) for arg, d in pairs)
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                for s in child.body:
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name) and s.value:
                        out.append((child.name, s.target.id, s.value))
                visit(child, f"{where}{child.name}.")
            else:
                visit(child, where)

    visit(tree, "")
    return out


def test_every_run_option_default_is_declared_once():
    """No module of the runtime (nor the top-level CLI) gives a run option a default of its own:
    as a function's keyword default or a dataclass field, under the field's name or its flag's
    (SourceOptions once repeated poll_s, settle_s, open_timeout_s...; the CLI 16 more)."""
    names = set(_declared()) | {p.name for p in cli_params()}
    repeats = []
    files = sorted((REPO / "runtime").glob("*.py")) + [REPO / "wbc_edge" / "cli.py"]
    for path in files:
        if path.name == "options.py":
            continue
        for where, name, value in _defaults(ast.parse(path.read_text())):
            if (
                name in names
                and (where, name) not in SAME_NAME_OTHER_MEANING
                and isinstance(value, ast.Constant)
                and value.value not in OFF
            ):
                repeats.append(f"{path.relative_to(REPO)}:{value.lineno} {where} {name}")
    assert repeats == []


def test_a_source_takes_its_defaults_from_the_declaration():
    assert issubclass(SourceOptions, CaptureOptions)
    opts, capture = SourceOptions("0"), CaptureOptions()
    for f in fields(CaptureOptions):
        assert getattr(opts, f.name) == getattr(capture, f.name), f.name
    defaults = [p.default for p in __import__("inspect").signature(open_source).parameters.values()]
    assert not [d for d in defaults if isinstance(d, (int, float)) and d not in OFF]


HEADER = {
    "settings": {"mode": "smear", "min_confidence": 0.7, "margin": 0.2},
    "lab": {
        "operator": "AB",
        "target_cells": 20,
        "wbc_count": 7.5,
        "flags": {"ig_percent": 3.0, "blasts": 1, "nrbc_per_100_wbc": 2.0},
    },
}


def test_a_resumed_sample_keeps_what_it_recorded_unless_given():
    kept = RunOptions(source="slide").resolved(HEADER)
    assert (kept.pipeline.mode, kept.pipeline.threshold, kept.pipeline.margin) == (
        "smear",
        0.7,
        0.2,
    )
    assert (
        RunOptions(source="slide").resolved(HEADER).lab.header() == HEADER["lab"]
    )  # read back where the header keeps it
    given = RunOptions(
        source="slide",
        pipeline=PipelineConfig(mode="crops", margin=0.3),
        lab=LabOptions(operator="CD", flag_blasts=0),
    ).resolved(HEADER)
    assert (given.pipeline.mode, given.pipeline.threshold, given.pipeline.margin) == (
        "crops", 0.7, 0.3
    )  # fmt: skip
    assert given.lab.operator == "CD" and given.lab.flag_blasts == 0 and given.lab.flag_ig == 3.0


def test_a_new_sample_takes_the_declared_defaults():
    new = RunOptions(source="slide").resolved({})
    assert (new.pipeline.mode, new.pipeline.threshold, new.pipeline.margin) == (
        "crops",
        None,
        MARGIN,
    )
    assert new.lab.header() == {
        "operator": "",
        "target_cells": 0,
        "wbc_count": None,
        "flags": {
            "ig_percent": FLAG_IG_PERCENT,
            "blasts": FLAG_BLASTS,
            "nrbc_per_100_wbc": FLAG_NRBC_PER_100_WBC,
        },
    }


def test_the_command_line_gives_what_it_was_told_and_leaves_the_rest_unresolved():
    """A flag not given is None (the declaration's default, or the sample's record), so the
    command line decides nothing about a resumed sample itself."""
    argv = ["slide", "--smear", "--queue", "4", "--settle", "0.2"]
    values = RUN.make_context("run", argv).params  # what click parsed, as typer passes it
    options = options_from(values)
    assert options == RunOptions(
        source="slide",
        pipeline=PipelineConfig(mode="smear", queue_size=4),
        capture=CaptureOptions(settle_s=0.2),
    )
    assert options.pipeline.margin is None and options.lab.operator is None


def test_the_service_receives_the_options_whole(tmp_path, monkeypatch):
    got = []
    monkeypatch.setattr(service, "run_service", got.append)
    argv = ["run", str(tmp_path), "--smear", "--margin", "0.25", "--flag-ig", "2", "--poll", "0.1"]
    assert cli.run([*argv, "--open-timeout", "3", "--limit", "7", "--no-live"]) == 0
    [options] = got
    assert isinstance(options, RunOptions) and options.source == str(tmp_path)
    assert (options.pipeline.mode, options.pipeline.margin, options.pipeline.max_items) == (
        "smear", 0.25, 7
    )  # fmt: skip
    assert options.lab.flag_ig == 2.0 and options.live is False
    assert (options.capture.poll_s, options.capture.open_timeout_s) == (0.1, 3.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (RunOptions(), "exactly one source"),
        (RunOptions(source="a", camera=0), "exactly one source"),
        (RunOptions(source="a", pipeline=PipelineConfig(rbc_px=9.0, um_per_px=0.3)), "not both"),
        (RunOptions(source="a", pipeline=PipelineConfig(batch=0)), "--batch must be >= 1"),
        (RunOptions(source="a", pipeline=PipelineConfig(margin=float("nan"))), "--margin"),
        (RunOptions(source="a", pipeline=PipelineConfig(mode="field")), "(mode) must be smear"),
        (RunOptions(source="a", capture=CaptureOptions(poll_s=0.0)), "--poll must be > 0"),
        (RunOptions(source="a", capture=CaptureOptions(open_timeout_s=0.0)), "--open-timeout"),
        (RunOptions(source="a", lab=LabOptions(wbc_count=0.0)), "--wbc-count must be > 0"),
        (RunOptions(source="a", lab=LabOptions(flag_blasts=-1)), "--flag-blasts"),
        (RunOptions(source="a", threads=-1), "--threads"),
    ],
)
def test_the_declared_checks_refuse_what_the_api_is_given(options, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        options.check()


def test_a_resumed_run_without_flags_keeps_mode_margin_confidence_and_lab(tmp_path):
    """End to end: the second run gives none of the first run's settings, and resumes the
    sample (a setting taken from anywhere but the record would refuse it as another run)."""
    model = make_onnx(tmp_path / "colour.onnx")
    src, out = tmp_path / "in", tmp_path / "out" / "s"
    write_images(src, [RED, GREEN, BLUE] * 2)
    first = ["--smear", "--margin", "0.2", "--min-confidence", "0.7", "--operator", "AB"]
    first += ["--flag-ig", "3", "--wbc-count", "7.5", "--limit", "2"]
    assert cli.run(run_args(src, model, out, *first)) == 0
    header = json.loads((out / "run.json").read_text())
    assert cli.run(run_args(src, model, out)) == 0
    assert json.loads((out / "run.json").read_text()) == header
    assert header["settings"] == {"mode": "smear", "margin": 0.2, "min_confidence": 0.7}
    sessions = [json.loads(line) for line in (out / "sessions.jsonl").read_text().splitlines()]
    assert len(sessions) == 2 and sessions[1]["operator"] == "AB"
    assert sessions[1]["flags"]["ig_percent"] == 3.0 and sessions[1]["wbc_count"] == 7.5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "smear" and summary["items"] == 6
