"""How the CLI reports a failure it did not foresee: one line, and for a package an install
lacks (`import torch` inside train-teacher on a runtime-only install), the extra to install."""

from __future__ import annotations

import pytest
import typer

from wbc_edge import cli


def _needs_pycuda() -> None:  # not installed here (a Jetson package)
    raise ModuleNotFoundError("No module named 'pycuda'", name="pycuda")


def _broken_torch() -> None:  # installed, but part of it is missing: the real message shows
    raise ModuleNotFoundError("No module named 'torch._C'", name="torch._C")


def _needs_unknown() -> None:
    raise ModuleNotFoundError("No module named 'nothing_we_know'", name="nothing_we_know")


@pytest.mark.parametrize(
    ("command", "code", "said"),
    [
        (
            _needs_pycuda,
            2,
            "pycuda is not installed: install it with `pip install 'wbc-edge[jetson]'`",
        ),
        (_broken_torch, 1, "ModuleNotFoundError: No module named 'torch._C' (rerun with"),
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
