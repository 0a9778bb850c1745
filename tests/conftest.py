"""Shared fixtures. Real data lives at ../shared/data beside the checkout (CI has it, a fresh
clone does not): tests that need it skip, saying why, when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("WBC_EDGE_SHARED_DATA", REPO.parent / "shared" / "data"))


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is absent (only CI and dev checkouts have ../shared/data)")
    return path


@pytest.fixture(scope="session")
def pbc9_dir() -> Path:
    return _shared("pbc9")


@pytest.fixture(scope="session")
def bccd_dir() -> Path:
    return _shared("bccd-smears")
