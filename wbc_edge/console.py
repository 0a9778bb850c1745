"""One console and one progress-bar style for every command.

Output for people goes to stderr; stdout stays for data and results (``wbc-edge info``, the
final differential of ``run`` through :data:`results`), so ``run ... > out.txt`` keeps them. On
a terminal it is fitted to the screen; in a log or CI, where there is no screen to fit, lines
are not wrapped and tables are printed at their full width by :func:`print_table`, so nothing
is cut ("bes…", "Baso…").
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
if not console.is_terminal:
    console.soft_wrap = True
results = Console()  # stdout
if not results.is_terminal:
    results.soft_wrap = True


def print_table(table: Any, to: Console | None = None) -> None:
    """Print a rich table whole: fitted to a terminal, at its natural width anywhere else; on
    stderr (``console``) unless ``to`` is :data:`results`."""
    out = console if to is None else to
    if out.is_terminal:
        out.print(table)
        return
    wide = Console(file=io.StringIO(), width=10_000, color_system=None, soft_wrap=True)
    wide.print(table)
    text = "\n".join(line.rstrip() for line in wide.file.getvalue().splitlines())
    out.file.write(text + "\n")
    out.file.flush()


def progress(transient: bool = False) -> Progress:
    """A progress bar with counts and times; use as a context manager.

    A transient bar is for a terminal: its caller prints the outcome as a line of its own. In a
    log, where rich draws a bar only when it stops, a transient one would leave a blank line
    and nothing else, so there it is off.
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=transient,
        disable=transient and not console.is_terminal,
    )
