"""`--version`, `python -m wbc_edge`, `wbc-edge info`, and help text that shows every flag."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer
from runtime_models import make_onnx

import wbc_edge
from wbc_edge import cli
from wbc_edge.runtime.backends.onnxruntime import read_onnx_card
from wbc_edge.runtime.card import write_sidecar

REPO = Path(__file__).resolve().parents[1]


def test_version_and_python_dash_m(capsys):
    assert cli.run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"wbc-edge {wbc_edge.__version__}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "wbc_edge", "--version"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0 and result.stdout.strip() == f"wbc-edge {wbc_edge.__version__}"


def test_info_prints_the_packaged_card(capsys):
    assert cli.run(["info"]) == 0
    out = capsys.readouterr().out
    card = read_onnx_card(wbc_edge.models.default_model())
    assert f"classes ({card.num_classes}): " + ", ".join(card.class_names) in out
    size = card.preprocess.input_size
    assert f"input: {size}x{size} RGB, crop whole image" in out
    assert "provenance.trained_on: PBC" in out and "provenance.checkpoint_sha256: " in out
    assert f"test_accuracy {100 * card.metrics['test_accuracy']:.2f}%" in out
    assert "calibration: " in out and "INT8 target none" in out
    assert "NOT a clinical device" in out


def test_info_of_an_engine_shows_its_build_key(tmp_path, capsys):
    onnx = make_onnx(tmp_path / "colour.onnx")
    card = read_onnx_card(onnx)
    card.extra.update(format="tensorrt", precision="int8", int8_target="tensorrt")
    engine = tmp_path / "colour.int8.engine"
    engine.write_bytes(b"engine bytes")
    write_sidecar(engine, card, engine_key="abc123", tensorrt_version="10.3.0")
    assert cli.run(["info", str(engine)]) == 0
    out = capsys.readouterr().out
    assert "engine key: abc123" in out and "engine.tensorrt_version: 10.3.0" in out
    assert "precision int8, INT8 target tensorrt" in out
    assert cli.run(["info", str(tmp_path / "missing.onnx")]) != 0


def _commands(command, path: tuple[str, ...] = ()):
    """Every command under ``command`` (typer ships its own click, so duck-typed)."""
    yield path, command
    if hasattr(command, "list_commands"):
        with command.context_class(command) as ctx:
            for name in command.list_commands(ctx):
                yield from _commands(command.get_command(ctx, name), (*path, name))


def _help(command, name: str = "wbc-edge") -> str:
    with command.context_class(command, info_name=name) as ctx:
        return command.get_help(ctx)


def test_every_help_shows_flags_without_a_type():
    root = typer.main.get_command(cli.app)
    seen = 0
    for path, command in _commands(root):
        assert "<bool>" not in _help(command), path
        seen += 1
    assert seen > 15
    with root.context_class(root) as ctx:
        assert "--smear / --crops" in _help(root.get_command(ctx, "run"))
        assert "--size <int>" in _help(root.get_command(ctx, "distill"))
