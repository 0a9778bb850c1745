"""The direction of dependencies (DESIGN.md, issue 30): the model core stands on nothing above
it, kd and export stand on the core and never on the application (runtime), and nothing above
the core opens a backend or cuts a field itself. Read from the source tree (every import,
top-level or inside a function), so these take milliseconds and fail the moment a layer is
crossed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# package folder -> import name (pyproject.toml's package-dir)
FOLDERS = {
    "wbc_edge/model": "wbc_edge.model",
    "kd": "wbc_edge.kd",
    "export": "wbc_edge.export",
    "runtime": "wbc_edge.runtime",
    "benchmarks": "wbc_edge.benchmarks",
}


def _modules(folder: str) -> list[Path]:
    files = sorted((REPO / folder).rglob("*.py"))
    return [p for p in files if "studies" not in p.parts]


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, resolved to its dotted name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _crossings(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in _modules(folder):
        for name in sorted(_imports(path)):
            if name.startswith(forbidden):
                out.append(f"{path.relative_to(REPO)} imports {name}")
    return out


def test_the_model_core_imports_nothing_above_it() -> None:
    above = ("wbc_edge.runtime", "wbc_edge.kd", "wbc_edge.export", "wbc_edge.benchmarks")
    assert _crossings("wbc_edge/model", above) == []
    assert _crossings("wbc_edge/model", ("torch", "timm")) == []  # a Jetson installs it alone


def test_training_and_export_never_import_the_application() -> None:
    assert _crossings("kd", ("wbc_edge.runtime",)) == []
    assert _crossings("export", ("wbc_edge.runtime",)) == []


def _lines(pattern: str, folders: tuple[str, ...]) -> list[str]:
    rx = re.compile(pattern)
    out = []
    for folder in folders:
        for path in _modules(folder):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if rx.search(line) and not line.lstrip().startswith("#"):
                    out.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    return out


ABOVE_THE_CORE = ("kd", "export", "runtime", "benchmarks")
OPENS = (
    r"\b(load_backend|OnnxRuntimeBackend|TensorRTBackend|TorchBackend|open_session)\("
    r"|InferenceSession\("
)
# Runners, not models: the parity check reads every raw output of the file export just wrote,
# the INT8 sweep times the network alone, and two probes open a copy of the graph edited to
# expose inner tensors (MAC counting, the feature-space review signal).
RUNNERS = (
    "export/onnx_export.py",
    "export/int8/sweep.py",
    "benchmarks/cost.py",
    "benchmarks/studies/counted_right_score.py",
)


def test_nothing_above_the_core_opens_a_backend_or_applies_the_field_to_crop_rule() -> None:
    """``Model.load`` is the one way to run a model; the field of view of a crop is the card's,
    applied in ``wbc_edge.model.fieldcrop`` only (the studies included)."""
    studies = sorted((REPO / "benchmarks" / "studies").glob("*.py"))
    assert studies, "the studies were not found"
    pattern = rf"{OPENS}|\bfov_rbc="
    hits = _lines(pattern, ABOVE_THE_CORE)
    for path in studies:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(pattern, line):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    # the torch backend is a backend (it lives with the training code it loads)
    allowed = ("kd/torch_backend.py", *RUNNERS)
    assert [h for h in hits if not h.startswith(allowed)] == []
    assert all(any(h.startswith(r) for h in hits) for r in RUNNERS), "a runner went: drop it"


def test_the_torch_backend_is_found_by_its_entry_point() -> None:
    from wbc_edge.kd.torch_backend import TorchBackend
    from wbc_edge.model.backends import plugin_backend

    assert plugin_backend("torch") is TorchBackend
