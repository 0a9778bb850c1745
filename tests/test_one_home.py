"""One home per fact (issue 13): each piece below is written once, and these tests fail when a
second copy comes back. They read the source tree only, so they take milliseconds."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("kd", "export", "runtime", "benchmarks", "wbc_edge", "jetson")


def _sources() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))]
    assert len(files) > 100, "the source tree was not found"
    return files


def _hits(pattern: str, allowed: tuple[str, ...] = ()) -> list[str]:
    """``path:line: text`` of every source line matching ``pattern`` outside ``allowed``."""
    rx = re.compile(pattern)
    found = []
    for path in _sources():
        rel = path.relative_to(REPO).as_posix()
        if rel in allowed:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if rx.search(line):
                found.append(f"{rel}:{n}: {line.strip()}")
    return found


def test_markdown_tables_are_built_by_the_records_module() -> None:
    """A table row or rule written by hand (``"| a | b |"``, ``|---|``) instead of
    ``wbc_edge.records.markdown_table``."""
    assert _hits(r"""["']\| |\|---""", ("wbc_edge/records.py",)) == []


def test_dates_machines_and_load_come_from_the_records_module() -> None:
    only = ("wbc_edge/records.py",)
    assert _hits(r"%H:%M UTC|getloadavg|/proc/cpuinfo|nvidia-smi", only) == []
    assert _hits(r"def machine_description|def _machine\b") == []


def test_records_are_written_by_the_records_module() -> None:
    """``<name>.json`` beside ``<name>.md`` goes through ``records.write_record``."""
    assert _hits(r"""with_suffix\(["']\.(md|json)["']\)\.write_text""") == []


def test_only_the_runtime_backend_opens_an_onnxruntime_session() -> None:
    """Every place that runs or inspects an ONNX model goes through the backend."""
    assert _hits(r"InferenceSession\(", ("wbc_edge/model/backends/onnxruntime.py",)) == []


def test_one_normalize_one_softmax_one_label_check() -> None:
    assert [h.split(":")[0] for h in _hits(r"^def normalize\b")] == ["wbc_edge/model/preprocess.py"]
    assert [h.split(":")[0] for h in _hits(r"^def softmax\b")] == [
        "wbc_edge/model/backends/__init__.py"
    ]
    # a label looked up in the card's class list without check_labels' one clear error
    assert _hits(r"class_names\.index\(|\{\w+: i for i, \w+ in enumerate\(card\.class_names") == [
        "wbc_edge/model/labelled.py:27: "
        "index = {name: i for i, name in enumerate(card.class_names)}"
    ]


def test_one_tensorrt_version_parser() -> None:
    """A version string taken apart anywhere but ``wbc_edge/model/tensorrt_versions.py``."""
    pattern = r"version\w*\)?\.split\(|__version__\)?\.split|int\(\w*version"
    assert _hits(pattern, ("wbc_edge/model/tensorrt_versions.py",)) == []


def test_results_hold_records_and_tests_run_no_scripts() -> None:
    """benchmarks/results holds records (no code, no models); tests import code, never exec it."""
    kept = {".md", ".json", ".csv", ".png"}
    odd = [p for p in (REPO / "benchmarks" / "results").rglob("*") if p.is_file()]
    assert [p.name for p in odd if p.suffix not in kept] == []
    tests = sorted((REPO / "tests").glob("*.py"))
    assert [t.name for t in tests if re.search(r"\brunpy\b|\bexec\(", t.read_text())] == []


def test_help_strings_show_defaults_from_the_code() -> None:
    """A default typed into a help string drifts from the code's: the CLI modules take it from
    the constant the library uses (``[default: {X}]``) or let typer show it."""
    hits = _hits(r"""default:? \d|\[\d[\d.,]*\]\.?["']""")
    assert [h for h in hits if h.split(":")[0].endswith("cli.py")] == []


def test_help_shows_the_library_defaults() -> None:
    from typer.testing import CliRunner

    from wbc_edge import cli
    from wbc_edge.benchmarks.bench import DEFAULT_ITERS
    from wbc_edge.export import DEFAULT_CALIB_NUM, DEFAULT_OPSET, DEFAULT_TRT_BATCH

    def shown(*argv: str) -> str:
        result = CliRunner().invoke(cli.app, [*argv, "--help"], terminal_width=200)
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    assert f"[default: {DEFAULT_OPSET}]" in shown("export", "onnx")
    engine = shown("build-engine")
    assert f"[default: {','.join(map(str, DEFAULT_TRT_BATCH))};" in engine
    assert f"default: {DEFAULT_CALIB_NUM}" in engine
    assert f"[default: {DEFAULT_ITERS}]" in shown("bench")
