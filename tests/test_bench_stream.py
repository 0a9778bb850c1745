"""`wbc-edge bench --stream`: the run pipeline end to end beside its decode limit, per stage."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from runtime_models import BLUE, GREEN, RED, make_onnx, solid

from wbc_edge.benchmarks.stream import StreamConfig, markdown, run_stream_bench
from wbc_edge.cli import run
from wbc_edge.runtime.stage_stats import STAGES


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_onnx(tmp_path_factory.mktemp("model") / "colour.onnx", size=32)


def phantom_folder(folder: Path, n: int = 12) -> list[Path]:
    """``n`` 96 px phantom crops (big enough for a 1/2-scale decode at 32 px) and one bad file."""
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        path = folder / f"cell_{i:03d}.jpg"
        cv2.imwrite(str(path), solid((RED, GREEN, BLUE)[i % 3], size=96, seed=i))
        paths.append(path)
    (folder / "cell_zzz.jpg").write_bytes(b"\xff\xd8 not really a jpeg \xff\xd9")
    return paths


def test_stream_bench_on_a_phantom_folder_reports_every_stage(tmp_path, model):
    phantom_folder(tmp_path / "in")
    r = run_stream_bench(
        StreamConfig(model, str(tmp_path / "in"), workers=2, batch=4, infer_s=0.05)
    )
    assert (r["items"], r["cells"], r["errors"], r["dropped"]) == (13, 12, 1, 0)
    assert r["min_side"] == 32 and r["workers"] == 2
    assert r["interpolation"] == "area" and len(r["model_sha256"]) == 64
    assert set(r["stages"]) == set(STAGES)
    for stage in ("read", "decode", "preprocess", "infer", "archive", "write"):
        assert r["stages"][stage]["wall_s"] > 0, stage
        assert r["stages"][stage]["ms_per_cell"] > 0, stage
    assert r["stages"]["find"]["wall_s"] == 0  # crops: nothing to find
    assert r["cells_per_s"] > 0 and 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
    lim = r["decode_limit"]
    assert (lim["images"], lim["errors"]) == (13, 1) and lim["images_per_s"] > 0
    assert r["decode_preprocess_limit"]["images_per_s"] > 0
    assert r["limit_ratio"] == pytest.approx(lim["images_per_s"] / r["items_per_s"], rel=0.02)
    cpu_ratio = r["process_cpu_ms_per_item"] / lim["cpu_ms_per_image"]
    assert r["cpu_ratio"] == pytest.approx(cpu_ratio, rel=0.02)
    assert r["peak_rss_mb"] > 0 and len(r["load_avg_1m"]) == 2
    text = markdown(r)
    assert "decode limit" in text and all(f"| {s} |" in text for s in STAGES)


def test_stream_bench_cli_writes_json_and_markdown(tmp_path, model):
    phantom_folder(tmp_path / "in", n=6)
    out = tmp_path / "bench"
    args = ["bench", "--stream", str(tmp_path / "in"), "--student", str(model), "--out", str(out)]
    assert run([*args, "--workers", "1", "--name", "s"]) == 0
    report = json.loads((out / "s.json").read_text())
    assert report["cells"] == 6 and report["workers"] == 1
    assert "--stream" in report["command"] and (out / "s.md").is_file()
    assert run([*args, "--batch", "1,8"]) == 2  # one batch size only: a usage error


def test_smear_stream_times_the_finder(tmp_path, model):
    from test_runtime_pipeline import paint_field

    (tmp_path / "in").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "in" / f"f{i}.jpg"), paint_field([(200, 200), (450, 300)], i))
    r = run_stream_bench(
        StreamConfig(model, str(tmp_path / "in"), smear=True, workers=2, infer_s=0.05)
    )
    assert r["min_side"] == 0  # fields decode in full: the finder works in their pixels
    assert r["items"] == 3 and r["cells"] >= 3
    assert r["stages"]["find"]["wall_s"] > 0 and r["decode_preprocess_limit"] is None


def test_stream_bench_writes_its_run_on_the_given_disk(tmp_path, model, monkeypatch):
    """The run being measured keeps its records and cell images under ``work_dir`` (the
    results folder's disk, as ``run --out``), not the system's temp folder, and leaves
    nothing behind there."""
    import tempfile

    seen: list = []
    real = tempfile.TemporaryDirectory

    def spy(*args, **kwargs):
        seen.append(kwargs.get("dir"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryDirectory", spy)
    phantom_folder(tmp_path / "in", n=4)
    work = tmp_path / "results"
    work.mkdir()
    run_stream_bench(StreamConfig(model, str(tmp_path / "in"), workers=1, work_dir=work))
    assert seen == [work]
    assert list(work.iterdir()) == []


def test_stream_bench_puts_the_run_against_its_serial_roof(tmp_path, model):
    phantom_folder(tmp_path / "in")
    r = run_stream_bench(
        StreamConfig(model, str(tmp_path / "in"), workers=2, batch=4, infer_s=0.05)
    )
    inf = r["infer_rate"]
    assert inf["batch"] == 32 and inf["images_per_s"] > 0 and inf["cpu_ms_per_image"] > 0
    roof = 1 / (1 / r["decode_limit"]["images_per_s"] + 1 / inf["images_per_s"])
    assert r["serial_roof_items_per_s"] == pytest.approx(roof, rel=0.01)
    assert r["roof_ratio"] == pytest.approx(r["items_per_s"] / roof, rel=0.01)
    stages = r["stages"]
    needed = stages["decode"]["cpu_ms_per_cell"] + stages["infer"]["cpu_ms_per_cell"]
    outside = r["cpu_ms_per_cell"] - needed
    assert r["cpu_ms_per_cell_outside_decode_infer"] == pytest.approx(outside, abs=1e-3)
    assert r["int8_vs_fp32"]["cpu_support"] and "faster" not in r["int8_vs_fp32"]
    text = markdown(r)
    assert "serial roof" in text and "outside decode and inference" in text


def test_stream_bench_times_the_other_export_and_says_which_is_faster(tmp_path, model):
    import shutil

    phantom_folder(tmp_path / "in", n=4)
    fp32 = tmp_path / "m" / "student.onnx"
    fp32.parent.mkdir()
    shutil.copy(model, fp32)
    shutil.copy(model, fp32.with_name("student.int8-cpu.onnx"))  # stands in for the INT8 one
    r = run_stream_bench(
        StreamConfig(fp32, str(tmp_path / "in"), workers=1, device="cpu", infer_s=0.05)
    )
    q = r["int8_vs_fp32"]
    assert q["model"]["precision"] == "fp32" and q["other"]["precision"] == "int8"
    assert q["faster"] in ("fp32", "int8") and q["other"]["images_per_s"] > 0
    assert "is faster here" in markdown(r)


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ("fpu avx2 avx512f avx512_vnni", "AVX-512 VNNI"),
        ("fpu avx2 avx_vnni", "AVX-VNNI"),
        ("fpu avx2 fma", "AVX2 without VNNI"),
    ],
)
def test_the_cpus_8_bit_arithmetic_is_named(flags, words):
    from wbc_edge.benchmarks.stream import int8_cpu_support

    assert int8_cpu_support(f"processor: 0\nflags\t\t: {flags}\n").startswith(words)
    arm = int8_cpu_support("Features\t: fp asimd asimddp i8mm\n")
    assert arm.startswith("ARM dot product") and "I8MM" in arm
