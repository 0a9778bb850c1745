"""CLI commands of the runtime: ``wbc-edge run``, a thin layer over the run service.

``run``'s options are built from their one declaration, :class:`~wbc_edge.runtime.options.
RunOptions` (:mod:`wbc_edge.runtime.cli_options`): its defaults, help, names and ranges; the
command hands the service that object whole. Only typer, the standard library and the stdlib-only
declaration at module level: the runtime's packages load inside the command, and nothing here
ever imports torch (only a ``.pt`` model pulls it in).
"""

from __future__ import annotations

import typer

from wbc_edge.runtime.cli_options import command
from wbc_edge.runtime.options import RunOptions


def _run(options: RunOptions) -> None:
    """Classify the white cells of one sample (slide) from a camera, stream or folder into
    OUT/<sample>/; a restarted run of the same sample continues where the last one stopped."""
    from wbc_edge.runtime.service import run_service

    run_service(options)


run = command(_run)


def register(app: typer.Typer) -> None:
    """Add ``run`` to the top-level app."""
    from wbc_edge.runtime.finder_cli import register as register_finder
    from wbc_edge.runtime.review_cli import register as register_review

    app.command("run")(run)
    register_finder(app)
    register_review(app)
