"""The wheel is the product: `make wheel` builds it from a copy of this checkout, it holds the
packaged model and no study, probe, test or checkpoint, and installed into a fresh venv with the
`[runtime]` extra alone (no torch) `wbc-edge info` and `wbc-edge run` work with no --model.

Nothing downloads from the internet: the wheel is built offline (no build isolation) and its
dependencies come from the package index pip is configured with (this machine's registry).
About a minute on 2 cores, most of it pip installing onnxruntime and OpenCV.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from runtime_models import GREEN, RED, write_images

REPO = Path(__file__).resolve().parents[1]
# Modules that are studies, probes or test fixtures, not the product: they live in
# benchmarks/studies/ (the checkout's editable install imports them) and never in the wheel.
# These three sat in the package until issue 30 moved them there.
STUDIES = "wbc_edge/benchmarks/studies/"
PROBES = [
    "wbc_edge/benchmarks/reliability.py",
    "wbc_edge/benchmarks/stream_server.py",
    "wbc_edge/benchmarks/student_size.py",
]


def _run(*cmd: str | Path, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`make wheel` in a copy of the checkout's files (tracked and new, not ignored ones), with
    this interpreter's environment standing in for .venv."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    files = _run("git", "-C", REPO, "ls-files", "-co", "--exclude-standard").stdout.splitlines()
    for rel in files:
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    # A developer's checkout holds the editable install's egg-info, whose SOURCES.txt lists
    # files the wheel leaves out: setuptools would add them back unless `make wheel` clears it.
    stale = src / "wbc_edge.egg-info"
    stale.mkdir()
    (stale / "SOURCES.txt").write_text("benchmarks/studies/__init__.py\nbenchmarks/studies/x.py\n")
    (src / "benchmarks" / "studies" / "x.py").write_text("# a study\n")
    env_dir = Path(sys.prefix)
    # -o: .venv/.installed counts as up to date, so make never installs into this environment.
    make = ["make", "-s", "-o", f"{env_dir}/.installed", "wheel", f"VENV={env_dir}"]
    _run(*make, f"DIST={tmp / 'dist'}", cwd=src)
    (built,) = (tmp / "dist").glob("wbc_edge-*.whl")
    return built


def _names(wheel: Path) -> list[str]:
    return zipfile.ZipFile(wheel).namelist()


def test_the_wheel_holds_the_packaged_model_and_no_study_test_or_checkpoint(wheel):
    names = _names(wheel)
    models = [n for n in names if n.startswith("wbc_edge/models/")]
    assert "wbc_edge/models/student-tinyresnet_xs_wide.onnx" in models
    assert not [n for n in names if n.endswith((".pt", ".pth"))], "checkpoints must not ship"
    assert not [n for n in names if n.startswith(STUDIES)], "studies stay in the checkout"
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "jetson/"))]
    assert not [n for n in names if "/results/" in n], "recorded results stay in the checkout"
    assert {"wbc_edge/runtime/static/review.html", "wbc_edge/cli.py"} <= set(names)
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Provides-Extra: runtime" in text and "Provides-Extra: train" in text


def test_the_wheel_holds_no_probe(wheel):
    present = [p for p in PROBES if (REPO / p.replace("wbc_edge/", "", 1)).is_file()]
    assert present == [], f"{present} are back in the package tree: move them to studies/"
    assert not [n for n in _names(wheel) if n in PROBES]


def test_a_fresh_runtime_install_runs_info_and_run_with_the_packaged_model(wheel, tmp_path):
    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run(bin_dir / "python", "-m", "pip", "install", "-q", f"{wheel}[runtime]", env=env)
    # [runtime] alone: torch is not there, and nothing needs it.
    absent = subprocess.run([bin_dir / "python", "-c", "import torch"], capture_output=True)
    assert absent.returncode != 0

    info = _run(bin_dir / "wbc-edge", "info", env=env, cwd=tmp_path).stdout
    assert "student-tinyresnet_xs_wide" in info and "NOT a clinical device" in info

    cells = tmp_path / "cells"
    write_images(cells, [RED, GREEN, RED])
    out = tmp_path / "out"
    done = _run(
        bin_dir / "wbc-edge", "run", cells, "--out", out, "--no-live", env=env, cwd=tmp_path
    )
    assert "Differential of sample cells" in done.stdout
    assert "student-tinyresnet_xs_wide" in done.stderr
    assert (out / "cells" / "cells.jsonl").read_text().count("\n") == 3
    assert Path(_run(bin_dir / "python", "-c", "import wbc_edge; print(wbc_edge.__file__)",
                     env=env, cwd=tmp_path).stdout.strip()).is_relative_to(env_dir)  # fmt: skip


def test_every_package_folder_is_in_the_wheel_or_named_as_left_out():
    """Fast guard: a sub-package missing from pyproject's explicit list installs from a checkout
    (editable) but not from the wheel; only the studies are left out on purpose."""
    import tomllib

    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, dirs = set(cfg["packages"]), cfg["package-dir"]
    found = set()
    for package, folder in dirs.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([package, *rel.parts]))
    assert found - listed == {"wbc_edge.benchmarks.studies"}, "add these to [tool.setuptools]"
