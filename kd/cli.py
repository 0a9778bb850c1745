"""Training commands: ``train-teacher``, ``distill``, ``evaluate``, ``calibrate``, ``ablation``,
``adapt``, joined here in the order ``--help`` lists them.

Each family lives in its own module (:mod:`~wbc_edge.kd.train_cli`,
:mod:`~wbc_edge.kd.evaluate_cli`, :mod:`~wbc_edge.kd.ablation_cli`,
:mod:`~wbc_edge.kd.adapt_cli`), the options they share in :mod:`~wbc_edge.kd.cli_options`.
Only typer, the standard library and the torch-free defaults (:mod:`wbc_edge.kd.config`,
calibration) load here; torch comes in inside each command. Options default to None and are
resolved once by :class:`~wbc_edge.kd.config.TrainConfig` (so a YAML file can fill them);
``--help`` shows the value that applies.
"""

from __future__ import annotations

import typer

from wbc_edge.kd import ablation_cli, adapt_cli, evaluate_cli, train_cli


def register(app: typer.Typer) -> None:
    train_cli.register(app)
    evaluate_cli.register(app)
    ablation_cli.register(app)
    adapt_cli.register(app)
