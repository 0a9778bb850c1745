"""How the CLI reports a failure it did not foresee: one line, and for a package an install
lacks (`import torch` inside train-teacher on a runtime-only install), the extra to install."""

from __future__ import annotations

import pytest
import typer

from wbc_edge import cli


def _needs_torch() -> None:
    raise ModuleNotFoundError("No module named 'torch'", name="torch")


def _needs_unknown() -> None:
    raise ModuleNotFoundError("No module named 'nothing_we_know'", name="nothing_we_know")


@pytest.mark.parametrize(
    ("command", "code", "said"),
    [
        (
            _needs_torch,
            2,
            "torch is not installed: install it with `pip install 'wbc-edge[train]'`",
        ),
        (_needs_unknown, 1, "ModuleNotFoundError: No module named 'nothing_we_know' (rerun with"),
    ],
)
def test_a_missing_package_names_its_extra(monkeypatch, capsys, command, code, said) -> None:
    app = typer.Typer()
    app.command("go")(command)
    app.command("other")(lambda: None)  # two commands, so typer keeps the subcommand name
    monkeypatch.setattr(cli, "app", app)
    assert cli.run(["go"]) == code
    assert said in " ".join(capsys.readouterr().err.split())
