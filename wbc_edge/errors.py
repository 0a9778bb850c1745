"""Errors a user can fix.

A :class:`UserError` carries one line that says what is wrong and what to do. The CLI prints it
without a traceback and exits non-zero (the traceback appears only with ``--debug``). Raise it
for bad input (a missing file, a wrong folder layout, a bad option); let real bugs raise normally.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with the user's input; the message is the whole explanation."""

    exit_code = 2


class MissingExtraError(UserError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed: install it with `pip install 'wbc-edge[{extra}]'`"
        )
        self.package = package
        self.extra = extra


def require_file(path: str | Path, what: str = "file", hint: str = "") -> Path:
    """Return ``path`` as a Path, or raise a UserError naming it when it is not a file."""
    p = Path(path)
    if not p.is_file():
        tail = f"; {hint}" if hint else ""
        raise UserError(f"{what} not found: {p}{tail}")
    return p


def require_dir(path: str | Path, what: str = "folder", hint: str = "") -> Path:
    """Return ``path`` as a Path, or raise a UserError naming it when it is not a folder."""
    p = Path(path)
    if not p.is_dir():
        tail = f"; {hint}" if hint else ""
        raise UserError(f"{what} not found: {p}{tail}")
    return p
