"""One convention over every command's --help: a model is named with --model, a default is
shown one way (``[default: X]``), and a required option or argument says so."""

from __future__ import annotations

import re

import pytest
import typer.main

from wbc_edge import cli

# Options that commands refuse to go without although click cannot require them (a --config or
# --resume can stand in for --data; SOURCE or --camera): their help says "[required unless".
REQUIRED_UNLESS = {
    ("train-teacher", "--data"),
    ("distill", "--data"),
    ("run", "source"),
}
# Refused when missing, though not click-required (a list option): their help says "[required]".
REQUIRED_LISTS = {("ablation", "--data")}
# Commands that run a model file, and so take it as --model.
TAKES_A_MODEL = [
    "run", "info", "evaluate", "calibrate", "adapt", "bench", "build-engine",
    "export onnx", "export int8", "export int8-sweep", "export triton",
]  # fmt: skip
# A bracket in help text is a default, a required mark or one of click's ranges ("[x>=1]").
ALLOWED_BRACKET = re.compile(r"^(default: .+|required( unless .+)?|[-\d.x<=>]+)$")


def _commands(command, path: tuple[str, ...] = ()):
    if hasattr(command, "list_commands"):
        with command.context_class(command) as ctx:
            for name in command.list_commands(ctx):
                yield from _commands(command.get_command(ctx, name), (*path, name))
    else:
        yield " ".join(path), command


COMMANDS = dict(_commands(typer.main.get_command(cli.app)))


def _is_option(param) -> bool:
    return param.param_type_name == "option"


def _help_records(command) -> list[tuple[object, str, str]]:
    """(parameter, its names, its help text) as --help prints them. typer >= 0.20 runs on its
    own copy of click, so parameters are told apart by duck typing, not by click's classes."""
    ctx = command.context_class(command, info_name="wbc-edge")
    out = []
    for param in command.params:
        if getattr(param, "hidden", False) or not hasattr(param, "get_help_record"):
            continue
        record = param.get_help_record(ctx)
        if record:
            out.append((param, record[0], " ".join(record[1].split())))
    return out


def test_every_command_is_walked():
    assert len(COMMANDS) > 20 and set(TAKES_A_MODEL) <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_shows_defaults_one_way_and_marks_required_options(name):
    for param, names, text in _help_records(COMMANDS[name]):
        where = f"wbc-edge {name} {names}: {text!r}"
        assert "<list[" not in names, where  # a repeatable option takes one value at a time
        assert "(default" not in text.lower(), where
        for bracket in re.findall(r"\[([^\[\]]*)\]", text):
            assert ALLOWED_BRACKET.match(bracket), f"{where}: [{bracket}]"
        assert "default:" not in re.sub(r"\[[^\[\]]*\]", "", text), where  # outside [...]
        if param.required:
            assert "[required]" in text or "; required]" in text, where
        if (name, param.opts[0] if _is_option(param) else param.name) in (
            REQUIRED_UNLESS
        ):
            assert "[required unless" in text, where
        if (name, param.opts[0] if _is_option(param) else param.name) in REQUIRED_LISTS:
            assert "[required]" in text, where
        default = param.default
        shows = _is_option(param) and not param.is_flag and not param.multiple
        if shows and default not in (None, "", (), []) and not callable(default):
            assert "default: " in text, f"{where}: its default {default!r} is not shown"


def test_a_model_is_named_with_model_everywhere():
    for name in TAKES_A_MODEL:
        opts = {o for p in COMMANDS[name].params if _is_option(p) for o in p.opts}
        assert "--model" in opts, name
        assert "--onnx" not in opts, name
    # --student stays only where it names a student architecture, not a model file.
    uses = {n for n, c in COMMANDS.items() for p in c.params if "--student" in p.opts}
    assert uses == {"distill", "ablation"}


def test_train_teacher_without_data_is_a_usage_error_naming_it(capsys):
    assert cli.run(["train-teacher"]) == 2
    assert "--data" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (["export", "int8", "--onnx", "m.onnx", "--calib", "s.csv"],
         ["export", "int8", "--model", "m.onnx", "--calib", "s.csv"]),
        (["export", "int8-sweep", "--onnx=m.onnx"], ["export", "int8-sweep", "--model=m.onnx"]),
        (["build-engine", "--onnx", "m.onnx"], ["build-engine", "--model", "m.onnx"]),
        (["bench", "--student", "a.onnx", "--student", "b.onnx", "--teacher", "t.onnx"],
         ["bench", "--model", "a.onnx", "--model", "b.onnx", "--teacher", "t.onnx"]),
        (["info", "m.onnx"], ["info", "--model=m.onnx"]),
        (["info", "--json", "m.onnx"], ["info", "--json", "--model=m.onnx"]),
    ],
)  # fmt: skip
def test_old_spellings_still_work_for_one_release_and_say_so(old, new, capsys):
    assert cli.rename_old_spellings(old) == new
    assert "still works in this release only" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize(
    "args",
    [
        ["distill", "--student", "tinyresnet_xs"],  # an architecture name: not renamed
        ["info", "--model", "m.onnx"],
        ["info"],
        ["run", "cells", "--model", "m.onnx"],
        ["bench", "--help"],
    ],
)
def test_new_spellings_and_other_commands_are_left_alone(args, capsys):
    assert cli.rename_old_spellings(args) == args
    assert capsys.readouterr().err == ""


def test_old_spellings_are_in_no_help():
    for name in ("export int8", "export int8-sweep", "build-engine", "bench", "info"):
        command = COMMANDS[name]
        text = command.get_help(command.context_class(command, info_name=name))
        assert "--onnx" not in text and "--student" not in text, name


def test_no_command_writes_into_the_packages_records_by_default():
    """A user's run never writes into benchmarks/results/ unless its --out says so."""
    writes = ("--out", "--runs-dir", "--record", "--results", "--out-dir")
    for name, command in COMMANDS.items():
        for param in command.params:
            if _is_option(param) and set(param.opts) & set(writes) and param.default:
                assert not str(param.default).startswith("benchmarks/results"), (name, param.opts)
