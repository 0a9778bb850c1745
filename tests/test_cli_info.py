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
from wbc_edge.model.backends.onnxruntime import read_onnx_card
from wbc_edge.model.card import write_sidecar

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


def test_info_says_an_adapted_models_notes_and_its_certificate_in_words(tmp_path, capsys):
    """`wbc-edge info` on an adapted checkpoint: the adaptation in one line, its notes, and the
    counted-cell certificate as a sentence (with its threshold when one was certified)."""
    from wbc_edge import cli
    from wbc_edge.kd.checkpoint import save_checkpoint
    from wbc_edge.kd.students import create_student
    from wbc_edge.model.card import ModelCard, Preprocess

    card = ModelCard("tinyresnet_xs", ["Neutrophil", "Lymphocyte"], Preprocess(32))
    card.temperature = 0.7
    card.calibration = {"target_error": 0.05, "delta": 0.1, "threshold": 0.93, "counted": 300,
                        "n_val": 360, "errors": 4, "rule": "learn-then-test"}  # fmt: skip
    card.extra["adaptation"] = {"classes_seen": ["Neutrophil"], "crops": 40, "data": "SITE",
                                "steps": 100, "from_model": "m.pt", "mixed_in": None}  # fmt: skip
    path = save_checkpoint(tmp_path / "site.pt", create_student("tinyresnet_xs", 2), card)
    assert cli.run(["info", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "adaptation: adapted at a site on 40 crops of Neutrophil from SITE" in out
    assert "adaptation note: not in the site data: Lymphocyte" in out
    assert "target 5.0% error of counted cells at delta 0.1: threshold 0.93, 300 of 360" in out
    assert '"adaptation"' not in out  # in words, not the card's dictionary
