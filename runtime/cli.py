"""CLI commands of this part; register() adds them to the top-level app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this part's commands to ``app`` (filled in by the part's issue)."""
