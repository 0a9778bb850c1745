"""The packaged default model from an installed wheel, in a fresh venv: `wbc_edge.load()` and
`wbc-edge run FOLDER` work with no --model, and the wheel ships the ONNX but no checkpoints.

Slow (a wheel build and a venv). Nothing downloads: the wheel is installed with --no-deps and
the fresh venv sees this environment's dependencies through a plain path entry (the editable
wbc-edge of this checkout is not on it: path entries do not run other .pth files).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from runtime_models import GREEN, RED, write_images

REPO = Path(__file__).resolve().parents[1]


def _run(*cmd: str | Path, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done


@pytest.mark.slow
def test_the_packaged_model_runs_from_an_installed_wheel(tmp_path):
    src = tmp_path / "src"
    tracked = _run("git", "-C", REPO, "ls-files", "-co", "--exclude-standard").stdout.split()
    for rel in tracked:
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run(*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", src, "-w", dist)
    (wheel,) = dist.glob("wbc_edge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("wbc_edge/models/student-") and n.endswith(".onnx") for n in names)
    assert not [n for n in names if n.endswith(".pt")], "checkpoints must not ship"

    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = Path(
        _run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    )
    deps = [p for p in sys.path if p.endswith("site-packages")] + [sysconfig.get_paths()["purelib"]]
    (site / "_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    _run(*pip, "install", "-q", "--no-deps", "--no-index", "--target", site, wheel)

    cells = tmp_path / "cells"
    write_images(cells, [RED, GREEN])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (
        "import wbc_edge, pathlib\n"
        f"assert pathlib.Path(wbc_edge.__file__).is_relative_to({str(site)!r}), wbc_edge.__file__\n"
        "m = wbc_edge.load()\n"
        f"r = m({str(cells / 'img_0000.jpg')!r})\n"
        "print('OK', m.card.architecture, r.label)\n"
    )
    assert _run(py, "-c", code, env=env, cwd=tmp_path).stdout.startswith("OK ")
    out = tmp_path / "out"
    done = _run(
        py, "-m", "wbc_edge", "run", cells, "--out", out, "--no-live", env=env, cwd=tmp_path
    )
    assert "student-" in done.stderr and (out / "cells.jsonl").read_text().count("\n") == 2
    info = _run(py, "-m", "wbc_edge", "info", env=env, cwd=tmp_path).stdout
    assert "NOT a clinical device" in info and "provenance.trained_on: PBC" in info


def test_every_package_folder_is_in_the_wheel():
    """Fast guard for the slow test above: a sub-package missing from pyproject's explicit
    list installs from a checkout (editable) but not from the wheel."""
    import tomllib

    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, dirs = set(cfg["packages"]), cfg["package-dir"]
    found = set()
    for package, folder in dirs.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([package, *rel.parts]))
    assert found - listed == set(), "add these to [tool.setuptools] packages"
