"""wbc-edge bench: statistics on known timings, Jetson probes on recorded command output, and a
tiny model benchmarked end to end through the CLI."""

from __future__ import annotations

import json
import os
import stat
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from wbc_edge.benchmarks.bench import BenchConfig, latency_stats, load_data, parse_batches
from wbc_edge.benchmarks.machine import (
    PowerMonitor,
    describe,
    machine_info,
    parse_jetson_clocks,
    parse_nvpmodel,
    parse_tegrastats_power,
    wait_for_samples,
)
from wbc_edge.cli import run
from wbc_edge.errors import UserError

CLASSES = ["Basophil", "Lymphocyte", "Neutrophil"]


# --- statistics -----------------------------------------------------------------------------------


def test_latency_stats_on_known_timings() -> None:
    times = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    s = latency_stats(times, batch=4)
    assert s["iters"] == 100
    assert s["mean_ms"] == pytest.approx(50.5)
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p90_ms"] == pytest.approx(90.1)  # linear interpolation between 90 and 91
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["min_ms"] == pytest.approx(1.0)
    assert s["ms_per_image"] == pytest.approx(50.5 / 4)
    # 400 images in 5.05 s, not the mean of per-call rates
    assert s["images_per_s"] == pytest.approx(400 / 5.05)


def test_latency_stats_one_outlier_moves_p99_not_p50() -> None:
    s = latency_stats([0.010] * 99 + [1.0], batch=1)
    assert s["p50_ms"] == pytest.approx(10.0)
    assert s["p99_ms"] > 10.0 and s["mean_ms"] == pytest.approx(19.9)
    with pytest.raises(ValueError):
        latency_stats([], batch=1)


def test_parse_batches_and_config_errors() -> None:
    assert parse_batches("32, 1,8,8") == [1, 8, 32]
    for bad in ("", "0", "a,b", "-1"):
        with pytest.raises(UserError):
            parse_batches(bad)
    with pytest.raises(UserError, match="not both"):
        BenchConfig(students=[Path("x.onnx")], iters=5, duration=1.0)
    assert BenchConfig(students=[Path("x.onnx")]).iters == 50


# --- machine and Jetson probes (recorded output) ------------------------------------------------

NVPMODEL_Q = "NV Fan Mode:quiet\nNV Power Mode: MAXN_SUPER\n2\n"

_CPU = "Online=1 Governor=schedutil MinFreq=1728000 MaxFreq=1728000 CurrentFreq=1728000"
CLOCKS_ON = f"""SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano Developer Kit Super
Online CPUs: 0-5
cpu0: {_CPU} IdleStates: WFI=0 c7=0
cpu1: {_CPU} IdleStates: WFI=0 c7=0
cpu5: Online=0 Governor=schedutil MinFreq=115200 MaxFreq=1728000 CurrentFreq=729600
GPU MinFreq=1020000000 MaxFreq=1020000000 CurrentFreq=1020000000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1
DLA0_CORE:   Online=1 MinFreq=0 MaxFreq=1600000000 CurrentFreq=1600000000
FAN Dynamic Speed control=active hwmon2_pwm=85
NV Power Mode: MAXN_SUPER
"""
CLOCKS_OFF = CLOCKS_ON.replace("MinFreq=1728000", "MinFreq=115200").replace(
    "GPU MinFreq=1020000000", "GPU MinFreq=306000000"
)

TEGRASTATS_ORIN_NANO = (
    "11-25-2026 22:00:00 RAM 2351/7620MB (lfb 3x4MB) SWAP 0/3810MB (cached 0MB) CPU "
    "[12%@1728,8%@1728,off,off,3%@1728,5%@1728] GR3D_FREQ 61% cpu@48.5C soc2@47.2C "
    "VDD_IN 7342mW/6120mW VDD_CPU_GPU_CV 2211mW/1900mW VDD_SOC 1869mW/1800mW"
)
TEGRASTATS_AGX_ORIN = (
    "RAM 5001/30536MB CPU [1%@2201,off] GR3D_FREQ 0% VDD_GPU_SOC 3072mW/3072mW "
    "VDD_CPU_CV 768mW/768mW VIN_SYS_5V0 4220mW/4220mW VDDQ_VDD2_1V8AO 503mW/503mW"
)


def test_parse_nvpmodel() -> None:
    assert parse_nvpmodel(NVPMODEL_Q) == {"name": "MAXN_SUPER", "id": 2}
    assert parse_nvpmodel("NV Power Mode: 15W\n") == {"name": "15W", "id": None}
    assert parse_nvpmodel("nvpmodel: command failed") is None


def test_parse_jetson_clocks() -> None:
    on = parse_jetson_clocks(CLOCKS_ON)
    assert on is not None and on["locked"] is True
    assert set(on["units"]) == {"cpu0", "cpu1", "GPU", "EMC"}  # offline cpu5 and DLA left out
    off = parse_jetson_clocks(CLOCKS_OFF)
    assert off is not None and off["locked"] is False
    assert off["units"]["GPU"] is False and off["units"]["EMC"] is True
    assert parse_jetson_clocks("no clocks here") is None


def test_parse_tegrastats_power() -> None:
    assert parse_tegrastats_power(TEGRASTATS_ORIN_NANO) == pytest.approx(7.342)  # VDD_IN, now
    assert parse_tegrastats_power(TEGRASTATS_AGX_ORIN) == pytest.approx(8.563)  # sum of rails
    assert parse_tegrastats_power("RAM 2351/7620MB CPU [12%@1728]") is None


def _fake_jetson_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "nv_tegra_release").write_text(
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n"
    )
    (root / "proc" / "device-tree").mkdir(parents=True)
    (root / "proc" / "device-tree" / "model").write_text(
        "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\x00"
    )
    return root


def test_machine_info_on_a_fake_jetson(tmp_path: Path) -> None:
    outputs = {"nvpmodel": NVPMODEL_Q, "jetson_clocks": CLOCKS_ON}
    info = machine_info(runner=lambda cmd: outputs.get(cmd[0]), root=_fake_jetson_root(tmp_path))
    j = info["jetson"]
    assert j["model"] == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"
    assert j["l4t"] == "R36.4.3"
    assert j["nvpmodel"] == {"name": "MAXN_SUPER", "id": 2}
    assert j["jetson_clocks"]["locked"] is True
    assert info["gpus"] == [f"{j['model']} (integrated)"]
    line = describe(info)[-1]
    assert "nvpmodel MAXN_SUPER (mode 2)" in line and "jetson_clocks on" in line


def test_machine_info_jetson_without_root(tmp_path: Path) -> None:
    """jetson_clocks --show fails without root: recorded as unknown, not as off."""
    info = machine_info(runner=lambda cmd: None, root=_fake_jetson_root(tmp_path))
    assert info["jetson"]["jetson_clocks"] is None
    assert "jetson_clocks unknown" in describe(info)[-1]


def test_machine_info_elsewhere(tmp_path: Path) -> None:
    info = machine_info(runner=lambda cmd: None, root=tmp_path)
    assert info["jetson"] is None and info["gpus"] == []
    assert info["cpu_cores"] >= 1 and info["python"]
    assert "numpy" in info["libraries"]
    assert len(describe(info)) == 3


def fake_tegrastats(folder: Path) -> Path:
    """A `tegrastats` that prints Orin Nano lines (VDD_IN 5000 mW) until it is stopped."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "tegrastats"
    line = TEGRASTATS_ORIN_NANO.replace("7342mW", "5000mW")
    script.write_text(
        f"#!{sys.executable}\nimport sys, time\n"
        f"while True:\n    print({line!r}, flush=True)\n    time.sleep(0.02)\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


def test_power_monitor_reads_tegrastats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PATH", f"{fake_tegrastats(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}"
    )
    with PowerMonitor(interval_ms=20) as mon:
        wait_for_samples(mon, n=3, timeout_s=30)  # the fake is a Python start-up: slow under load
    assert mon.available and len(mon.samples) >= 3
    assert mon.mean_w == pytest.approx(5.0)


def test_power_monitor_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with PowerMonitor() as mon:
        pass
    assert not mon.available and mon.mean_w is None


# --- end to end -----------------------------------------------------------------------------------


def tiny_onnx(path: Path, width: int, seed: int, size: int = 32, role: str = "") -> Path:
    """Conv(3->width) + ReLU + global pool + MatMul + softmax, with a model card, built with onnx
    directly (no torch): params = 27*width + width + width*3, MACs = size^2*width*27 + width*3."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from wbc_edge.model.card import ONNX_METADATA_KEY, ModelCard, Preprocess

    rng = np.random.default_rng(seed)
    k = len(CLASSES)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (width, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros(width, np.float32), "b"),
        numpy_helper.from_array(rng.normal(0, 0.5, (width, k)).astype(np.float32), "g"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "g"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", k])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    card = ModelCard(
        f"tiny{width}", CLASSES, Preprocess(size), extra={"role": role} if role else {}
    )
    helper.set_model_props(model, {ONNX_METADATA_KEY: card.to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def class_tree(root: Path, per_class: int = 4) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    for i, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            img = np.full((40, 44, 3), 60 * (i + 1), np.uint8)
            img += rng.integers(0, 30, img.shape, dtype=np.uint8)
            cv2.imwrite(str(root / name / f"{j}.png"), img)
    return root


def test_bench_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = tiny_onnx(tmp_path / "teacher.onnx", width=8, seed=1, role="teacher")
    student = tiny_onnx(tmp_path / "student.onnx", width=4, seed=2, role="student")
    data = class_tree(tmp_path / "cells")
    out = tmp_path / "report"
    argv = ["bench", "--student", str(student), "--teacher", str(teacher), "--data", str(data)]
    argv += ["--batch", "1,4", "--warmup", "1", "--iters", "5", "--threads", "1"]
    argv += ["--out", str(out), "--name", "tiny", "--note", "models: made by the test"]
    assert run(argv) == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["tiny-accuracy.png", "tiny-latency.png", "tiny.json", "tiny.md"]
    for png in ("tiny-accuracy.png", "tiny-latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = json.loads((out / "tiny.json").read_text())
    assert report["settings"]["images"] == 12 and report["machine"]["cpu_cores"] >= 1
    assert "wbc-edge bench --model" in report["command"] and "--iters 5" in report["command"]
    t_row, s_row = report["rows"]
    assert (t_row["role"], s_row["role"]) == ("teacher", "student")
    assert s_row["params"] == 27 * 4 + 4 + 4 * 3
    assert s_row["macs"] == 32 * 32 * 4 * 27 + 4 * 3
    for row in (t_row, s_row):
        assert row["backend"] == "onnxruntime" and row["peak_rss_mb"] > 10
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["macro_f1"] <= 1.0
        assert set(row["batches"]) == {"1", "4"}
        for b, st in row["batches"].items():
            assert st["iters"] == 5 and st["batch"] == int(b)
            assert st["p50_ms"] <= st["p90_ms"] <= st["p99_ms"]
            assert st["images_per_s"] > 0 and st["preprocess_ms_per_image"] > 0
            assert st["energy_mj_per_image"] is None  # no tegrastats here
    assert t_row["batches"]["1"]["speedup"] == pytest.approx(1.0)
    ratio = t_row["batches"]["4"]["p50_ms"] / s_row["batches"]["4"]["p50_ms"]
    assert s_row["batches"]["4"]["speedup"] == pytest.approx(ratio)
    assert 0.0 <= s_row["agreement"] <= 1.0 and t_row["agreement"] is None

    md = (out / "tiny.md").read_text()
    # Rows are named from the cards (runtime.names), not from the file names.
    assert "| student-tiny4.onnx | student | onnxruntime (CPU) | 4 |" in md
    assert "## Machine" in md and report["command"] in md
    delta = 100 * (s_row["accuracy"] - t_row["accuracy"])
    assert f"{delta:+.2f} points from the teacher's" in md.split("## Summary")[1]
    assert report["notes"] == ["models: made by the test"] and "- models: made by the test" in md
    assert "mJ/img" not in md.split("## How")[0]  # all-n/a energy column dropped off a Jetson


def test_bench_speedup_against_a_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--baseline: speed-up against another model (the reference study's B3) while agreement
    stays against the teacher; the baseline gets a row of its own."""
    teacher = tiny_onnx(tmp_path / "teacher.onnx", width=8, seed=1, role="teacher")
    base = tiny_onnx(tmp_path / "b3.onnx", width=16, seed=3)
    student = tiny_onnx(tmp_path / "student.onnx", width=4, seed=2, role="student")
    out = tmp_path / "r"
    other = tiny_onnx(tmp_path / "resnet.onnx", width=6, seed=4)
    argv = ["bench", "--student", str(student), "--teacher", str(teacher), "--baseline", str(base)]
    argv += ["--reference", str(other), "--batch", "2", "--warmup", "0", "--iters", "3"]
    argv += ["--out", str(out)]
    assert run(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "bench.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert [r["role"] for r in report["rows"]] == ["teacher", "baseline", "reference", "student"]
    assert report["settings"]["speedup_against"] == str(base)
    base_row, student_row = rows["tiny16.onnx"], rows["student-tiny4.onnx"]
    assert base_row["batches"]["2"]["speedup"] == pytest.approx(1.0)
    ratio = base_row["batches"]["2"]["p50_ms"] / student_row["batches"]["2"]["p50_ms"]
    assert student_row["batches"]["2"]["speedup"] == pytest.approx(ratio)
    assert "Speed-up: tiny16.onnx's p50" in (out / "bench.md").read_text()


def test_rows_with_the_same_card_name_get_their_file_added() -> None:
    from wbc_edge.benchmarks.bench import unique_names

    rows = [
        {"name": "student-t.onnx", "path": "runs/kd/student-t.onnx"},
        {"name": "student-t.onnx", "path": "runs/mlffakd/student-t.onnx"},
        {"name": "student-t.onnx", "path": "runs/ce/other.onnx"},
        {"name": "teacher-e.onnx", "path": "t.onnx"},
    ]
    unique_names(rows)
    assert [r["name"] for r in rows] == [
        "student-t.onnx (kd/student-t.onnx)",
        "student-t.onnx (mlffakd/student-t.onnx)",
        "student-t.onnx (other.onnx)",
        "teacher-e.onnx",
    ]


def test_bench_energy_with_tegrastats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a Jetson the workers sample tegrastats; here a fake one reports a steady 5 W."""
    monkeypatch.setenv(
        "PATH", f"{fake_tegrastats(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}"
    )
    student = tiny_onnx(tmp_path / "s.onnx", width=4, seed=2)
    out = tmp_path / "r"
    argv = ["bench", "--student", str(student), "--batch", "2", "--warmup", "0"]
    argv += ["--duration", "0.3", "--out", str(out)]
    assert run(argv) == 0, capsys.readouterr().err
    st = json.loads((out / "bench.json").read_text())["rows"][0]["batches"]["2"]
    assert st["power_w"] == pytest.approx(5.0)
    # 5 W x seconds per image, in mJ
    assert st["energy_mj_per_image"] == pytest.approx(5.0 * st["ms_per_image"], rel=1e-6)
    assert st["iters"] >= 3
    assert "mJ/img" in (out / "bench.md").read_text()


def test_bench_torch_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    from wbc_edge.kd.checkpoint import save_checkpoint
    from wbc_edge.kd.students import create_student
    from wbc_edge.model.card import ModelCard, Preprocess

    torch.manual_seed(0)
    model = create_student("tinyresnet_xs", num_classes=len(CLASSES))
    card = ModelCard("tinyresnet_xs", CLASSES, Preprocess(32))
    ckpt = save_checkpoint(tmp_path / "student.pt", model, card)
    out = tmp_path / "r"
    argv = ["bench", "--student", str(ckpt), "--batch", "2", "--warmup", "1", "--iters", "3"]
    argv += ["--threads", "1", "--out", str(out)]
    assert run(argv) == 0, capsys.readouterr().err
    row = json.loads((out / "bench.json").read_text())["rows"][0]
    assert row["backend"] == "torch"
    assert row["params"] == sum(p.numel() for p in model.parameters())
    assert row["macs"] > 0 and "torch hooks" in row["cost_method"]


# --- errors ---------------------------------------------------------------------------------------


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err  # the progress bar's last state comes first
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["bench", "--student", str(tmp_path / "nope.onnx"), "--out", str(tmp_path)]) == 2
    err = _one_line_error(capsys)
    assert "model file not found" in err and "nope.onnx" in err


def test_wrong_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a model")
    assert run(["bench", "--student", str(bad), "--iters", "1", "--out", str(tmp_path)]) == 2
    err = _one_line_error(capsys)
    assert "bad.onnx" in err and "ONNX" in err
    assert not (tmp_path / "bench.json").exists()


def test_unknown_model_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    txt = tmp_path / "model.txt"
    txt.write_text("x")
    assert run(["bench", "--student", str(txt)]) == 2
    assert "unknown model type '.txt'" in _one_line_error(capsys)


def test_classes_the_model_does_not_know(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    student = tiny_onnx(tmp_path / "s.onnx", width=4, seed=2)
    data = class_tree(tmp_path / "cells", per_class=1)
    (data / "Basophil").rename(data / "Myeloblast")
    argv = ["bench", "--student", str(student), "--data", str(data), "--batch", "1"]
    argv += ["--iters", "1", "--out", str(tmp_path / "r")]
    assert run(argv) == 2
    assert "Myeloblast" in _one_line_error(capsys)


def test_load_data_limit_keeps_every_class(tmp_path: Path) -> None:
    paths, labels = load_data(class_tree(tmp_path / "cells", per_class=10), "test", limit=6)
    assert len(paths) == 6 and sorted(set(labels)) == CLASSES


def test_cost_of_qdq_int8_matches_fp32(tmp_path: Path) -> None:
    """A Q/DQ INT8 model does the same convolutions: same MACs and parameters as its FP32
    source; the scales and zero points it adds are not parameters."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from wbc_edge.benchmarks.cost import onnx_cost

    fp32 = tiny_onnx(tmp_path / "fp32.onnx", width=4, seed=0)
    rng = np.random.default_rng(0)
    feeds = iter([{"input": rng.random((1, 3, 32, 32), np.float32)} for _ in range(4)])

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    int8 = tmp_path / "int8.onnx"
    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    a, b = onnx_cost(fp32, 32), onnx_cost(int8, 32)
    assert a["macs"] == b["macs"] == 32 * 32 * 4 * 27 + 4 * 3
    assert a["params"] == b["params"] == 27 * 4 + 4 + 4 * 3


def test_cost_onnx_matches_torch_with_computed_padding(tmp_path: Path) -> None:
    """timm's TF-"same" convolutions pad by a size computed from the input at run time; static
    shape inference gives up there, so the ONNX count must still match the torch count."""
    torch = pytest.importorskip("torch")
    timm_layers = pytest.importorskip("timm.layers")
    from wbc_edge.benchmarks.cost import onnx_cost, torch_cost

    model = torch.nn.Sequential(
        timm_layers.Conv2dSame(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        timm_layers.Conv2dSame(8, 16, 3, stride=2),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 3),
    ).eval()
    path = tmp_path / "same.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (torch.zeros(2, 3, 30, 30),),
            str(path),
            dynamo=False,
            input_names=["input"],
            dynamic_axes={"input": {0: "batch"}},
        )
    expected = torch_cost(model, 30)
    got = onnx_cost(path, 30)
    assert got["macs"] == expected["macs"] == 15 * 15 * 8 * 27 + 8 * 8 * 16 * 72 + 16 * 3
    assert got["params"] == expected["params"]


def test_bench_teacher_checkpoint_is_exported_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bench --teacher X.pt`: exported to ONNX in --out (named from its card), then benched on
    the same backend as the student."""
    pytest.importorskip("torch", reason="exporting a checkpoint needs the train extra")
    from wbc_edge.kd.checkpoint import save_checkpoint
    from wbc_edge.kd.students import create_student
    from wbc_edge.model.card import ModelCard, Preprocess

    card = ModelCard("tinyresnet_xs", CLASSES, Preprocess(32), extra={"role": "teacher"})
    ckpt = save_checkpoint(tmp_path / "best.pt", create_student("tinyresnet_xs", 3), card)
    student = tiny_onnx(tmp_path / "student.onnx", width=4, seed=2, role="student")
    out = tmp_path / "r"
    argv = ["bench", "--student", str(student), "--teacher", str(ckpt), "--batch", "1"]
    argv += ["--warmup", "0", "--iters", "2", "--out", str(out)]
    assert run(argv) == 0, capsys.readouterr().err
    exported = out / "teacher-tinyresnet_xs.onnx"
    report = json.loads((out / "bench.json").read_text())
    teacher_row = report["rows"][0]
    assert teacher_row["role"] == "teacher" and teacher_row["path"] == str(exported)
    assert teacher_row["backend"] == "onnxruntime" and teacher_row["name"] == exported.name
    assert "--teacher " + str(exported) in report["command"]
