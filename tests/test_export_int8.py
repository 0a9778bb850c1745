"""INT8: Q/DQ placement and symmetry for TensorRT, per-channel weight scales, agreement with
FP32 on a briefly trained phantom model, the card kept, the calibration cache, the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from export_phantoms import card, train_tiny, write_phantoms  # noqa: E402

from wbc_edge import cli  # noqa: E402
from wbc_edge.data.manifest import read_manifest  # noqa: E402
from wbc_edge.errors import UserError  # noqa: E402
from wbc_edge.export import calib_cache  # noqa: E402
from wbc_edge.export.int8 import (  # noqa: E402
    calibrate,
    check_qdq,
    quantize_int8,
    select_calibration_rows,
)
from wbc_edge.export.onnx_export import export_onnx  # noqa: E402
from wbc_edge.model.backends.onnxruntime import read_onnx_card  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(fp32 onnx, manifest) of a tiny CNN trained for a few seconds on phantom cells."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("int8")
    manifest = write_phantoms(root / "data", {"train": 60, "val": 30})
    model = train_tiny(manifest)
    path = root / "tiny.onnx"
    export_onnx(model, card(), path)
    return path, manifest


@pytest.fixture(scope="module")
def tensorrt_int8(trained, tmp_path_factory):
    onnx_path, manifest = trained
    out = tmp_path_factory.mktemp("trt") / "tiny.int8.onnx"
    report = quantize_int8(
        onnx_path,
        read_manifest(manifest, "train"),
        read_manifest(manifest, "val"),
        out=out,
        target="tensorrt",
        num=200,
    )
    return report, onnx.load(str(out))


def _consts(proto):
    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}


def test_tensorrt_every_conv_gemm_input_and_weight_is_quantized(tensorrt_int8):
    _, proto = tensorrt_int8
    producer = {o: n for n in proto.graph.node for o in n.output}
    weighted = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm")]
    assert {n.op_type for n in weighted} == {"Conv", "Gemm"}
    for node in weighted:
        for idx in (0, 1):
            dq = producer[node.input[idx]]
            assert dq.op_type == "DequantizeLinear", (node.name, idx)
        # Bias stays float (TensorRT folds it into the INT8 kernel itself).
        if len(node.input) > 2:
            assert node.input[2] not in producer or producer[node.input[2]].op_type != (
                "DequantizeLinear"
            )


def test_tensorrt_zero_points_are_int8_zero(tensorrt_int8):
    _, proto = tensorrt_int8
    consts = _consts(proto)
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for n in qdq:
        zp = consts[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), n.name


def test_tensorrt_weight_scales_are_per_output_channel(tensorrt_int8):
    _, proto = tensorrt_int8
    consts = _consts(proto)
    producer = {o: n for n in proto.graph.node for o in n.output}
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        dq = producer[node.input[1]]
        q = producer[dq.input[0]]  # float weight behind a Q->DQ pair
        weight, scale = consts[q.input[0]], consts[dq.input[1]]
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        out_channels = weight.shape[0] if node.op_type == "Conv" or trans_b else weight.shape[1]
        assert scale.shape == (out_channels,), node.name
        assert len({float(s) for s in scale}) > 1  # really one scale per channel
        # Symmetric: the scale covers each channel's largest weight.
        amax = np.abs(weight.reshape(weight.shape[0], -1)).max(1)
        if node.op_type == "Conv":
            np.testing.assert_allclose(scale, amax / 127, rtol=1e-5)


def test_tensorrt_int8_agrees_with_fp32_and_keeps_the_card(tensorrt_int8):
    report, proto = tensorrt_int8
    assert report.fp32["accuracy"] >= 0.9  # the model learned: agreement is meaningful
    assert report.agreement >= 0.95
    assert abs(report.accuracy_drop_points) <= 5.0
    back = read_onnx_card(report.out)
    assert back.class_names == card().class_names
    assert back.extra["precision"] == "int8" and back.extra["int8_target"] == "tensorrt"
    assert back.extra["calibration_images"] == 200
    assert [o.name for o in proto.graph.output] == ["logits", "probs"]
    assert any("fewer than 300" in w for w in report.warnings)


def test_checker_finds_unquantized_model(trained):
    onnx_path, _ = trained
    problems = check_qdq(onnx.load(str(onnx_path)))
    assert problems and all("is not quantized" in p for p in problems)


def test_cpu_target_agrees_with_fp32(trained, tmp_path, monkeypatch):
    onnx_path, manifest = trained
    report = quantize_int8(
        onnx_path,
        read_manifest(manifest, "train"),
        read_manifest(manifest, "val"),
        out=tmp_path / "cpu.onnx",
        target="cpu",
        num=240,
    )
    assert report.agreement >= 0.95
    assert report.int8_bytes < report.fp32_bytes  # int8 weights, unlike the TensorRT pairs
    assert read_onnx_card(report.out).extra["int8_target"] == "cpu"
    assert read_onnx_card(report.out).extra["int8_weight_bits"] == 7  # the runtime reads it
    # info shows the bits, and warns only about an 8-bit export on a saturating CPU.
    from wbc_edge.model.backends import onnxruntime as ort_backend
    from wbc_edge.runtime import info

    monkeypatch.setattr(ort_backend, "saturating_u8s8_cpu", lambda cpuinfo=None: True)
    lines = info.card_lines(Path(report.out))
    assert any(line.endswith("7-bit weights") for line in lines)
    assert not any(line.startswith("warning:") for line in lines)
    card = read_onnx_card(report.out)
    card.extra["int8_weight_bits"] = 8  # as exports before 7-bit weights
    monkeypatch.setattr(info, "read_any_card", lambda path: (card, {}))
    assert any("has 8-bit INT8 weights" in line for line in info.card_lines(Path(report.out)))
    # 7-bit weights: on an AVX2 CPU without VNNI, ONNX Runtime's U8S8 kernels add pairs of
    # u8 x s8 products in int16 (VPMADDUBSW); |w| <= 64 keeps 255 * 64 * 2 within 32767, where
    # full 8-bit weights cost the packaged student 14 points (export-int8-cpu.md).
    weights = [v for v in _consts(onnx.load(str(report.out))).values() if v.dtype == np.int8]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64


def test_calibration_cache_holds_the_calibrated_scales(trained, tmp_path):
    onnx_path, manifest = trained
    rows = select_calibration_rows(read_manifest(manifest, "train"), 64)
    spec = card().preprocess
    ranges = calibrate(onnx_path, [r.path for r in rows], spec, "minmax", symmetric=True)
    report = quantize_int8(
        onnx_path,
        read_manifest(manifest, "train"),
        None,
        out=tmp_path / "q.onnx",
        method="minmax",
        num=64,
        cache_out=tmp_path / "tiny.cache",
    )
    head, scales = calib_cache.read(report.calibration_cache)
    assert head == "TRT-8601-EntropyCalibration2"
    assert "input" in scales and "probs" in scales
    for name, data in ranges.items():
        lo, hi = (np.asarray(v).reshape(-1) for v in data.range_value)
        assert lo.size == hi.size == 1  # one range per tensor: activations are per-tensor
        lo, hi = float(lo[0]), float(hi[0])
        assert scales[name] == pytest.approx(max(abs(lo), abs(hi)) / 127, rel=1e-6)
    # the network input is normalised to [-1, 1]: its scale is about 1/127
    assert scales["input"] == pytest.approx(1 / 127, rel=0.02)


def test_calibration_rows_cover_every_class():
    rows = read_manifest_like(["A"] * 50 + ["B"] * 50 + ["C"] * 3)
    picked = select_calibration_rows(rows, 9)
    assert sorted(r.label for r in picked) == ["A", "A", "A", "B", "B", "B", "C", "C", "C"]
    assert picked == select_calibration_rows(rows, 9)  # deterministic


def read_manifest_like(labels):
    from wbc_edge.data.manifest import ManifestRow

    return [ManifestRow(Path(f"/x/{lab}{i}.png"), lab, "train", "") for i, lab in enumerate(labels)]


def test_already_int8_is_refused(tensorrt_int8, trained):
    report, _ = tensorrt_int8
    _, manifest = trained
    with pytest.raises(UserError, match="already INT8"):
        quantize_int8(report.out, read_manifest(manifest, "train"), num=8)


def test_cli_int8_writes_report(trained, tmp_path, capsys):
    onnx_path, manifest = trained
    out, rep = tmp_path / "cli.onnx", tmp_path / "report.json"
    args = ["export", "int8", "--onnx", str(onnx_path), "--calib", str(manifest)]
    args += ["--num", "48", "--out", str(out), "--report", str(rep), "--cache", str(tmp_path / "c")]
    assert cli.run(args) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "top-1 agreement" in err and "fewer than 300" in err
    data = json.loads(rep.read_text())
    assert data["num_calibration"] == 48 and data["num_eval"] == 120
    assert set(data["fp32"]) == {"accuracy", "macro_f1"}


def test_shared_and_identity_fed_constants_quantize(trained, tmp_path):
    """A fresh student's BatchNorms fold into equal biases, which the exporter shares through
    Identity nodes; every quantization format must still work on it."""
    from wbc_edge.export.int8 import CPU_CANDIDATES, quantize, unshare_initializers
    from wbc_edge.kd.students import create_student

    _, manifest = trained
    torch.manual_seed(0)
    path = tmp_path / "fresh.onnx"
    fresh = card()
    fresh.architecture = "tinyresnet_xs"
    export_onnx(create_student("tinyresnet_xs", len(fresh.class_names)).eval(), fresh, path)
    proto = onnx.load(str(path))
    assert any(n.op_type == "Identity" for n in proto.graph.node)  # the case being tested
    flat = unshare_initializers(proto)
    assert not any(n.op_type == "Identity" for n in flat.graph.node)
    users = [
        i for n in flat.graph.node for i in n.input if i in {t.name for t in flat.graph.initializer}
    ]
    assert len(users) == len(set(users))
    rows = read_manifest(manifest, "train")[:16]
    ranges = calibrate(path, [r.path for r in rows], fresh.preprocess, "minmax", False)
    for settings in CPU_CANDIDATES:
        out = quantize(path, tmp_path / f"{settings.name}.onnx", ranges, settings)
        assert read_onnx_card(out).extra["precision"] == "int8"


def test_cli_sweep_records_every_setting(trained, tmp_path, capsys):
    from wbc_edge.export.int8 import CPU_CANDIDATES

    onnx_path, manifest = trained
    results = tmp_path / "results" / "sweep"
    args = ["export", "int8-sweep", "--onnx", str(onnx_path), "--calib", str(manifest)]
    args += ["--out-dir", str(tmp_path / "v"), "--results", str(results), "--num", "32"]
    args += ["--eval-split", "val", "--batch", "1,4", "--rounds", "1"]
    assert cli.run(args) == 0, capsys.readouterr().err
    data = json.loads(results.with_suffix(".json").read_text())
    names = [r["setting"] for r in data["rows"]]
    assert names == ["fp32", "tensorrt", *[s.name for s in CPU_CANDIDATES]]
    defaults = {r["default_for"]: r["setting"] for r in data["rows"] if r["default_for"]}
    assert set(defaults) == {"tensorrt", "cpu"}
    for r in data["rows"]:
        assert set(r["latency_ms"]) == {"1", "4"} and all(v > 0 for v in r["latency_ms"].values())
    # The defaults must agree on any CPU; the other candidates are measured, not promised (8-bit
    # per-channel U8S8 saturates on AVX2 without VNNI: agreement 0.75 here on such a machine).
    for r in data["rows"]:
        if r["setting"] == "fp32" or r["default_for"]:
            assert r["agreement_with_fp32"] >= 0.9, r["setting"]
    md = results.with_suffix(".md").read_text()
    assert data["command"] in md and "| fp32 |" in md


def test_older_onnxruntime_recalibrates_to_the_same_model(trained, tmp_path, monkeypatch):
    """Without calibration_cache_path, quantize() recalibrates from the same images: the
    resulting scales must equal those from the precomputed ranges."""
    from wbc_edge.export.int8 import TENSORRT, ImageReader, quantization, quantize

    onnx_path, manifest = trained
    paths = [r.path for r in select_calibration_rows(read_manifest(manifest, "train"), 32)]
    spec = card().preprocess
    ranges = calibrate(onnx_path, paths, spec, "minmax", symmetric=True)
    a = quantize(onnx_path, tmp_path / "cached.onnx", ranges, TENSORRT)
    monkeypatch.setattr(quantization, "_accepts_cache", lambda: False)
    with pytest.raises(UserError, match="upgrade onnxruntime"):
        quantize(onnx_path, tmp_path / "x.onnx", ranges, TENSORRT)
    b = quantize(
        onnx_path,
        tmp_path / "recal.onnx",
        ranges,
        TENSORRT,
        reader_factory=lambda: ImageReader(paths, spec, batch_size=16),
    )

    def scales(path):
        proto = onnx.load(str(path))
        consts = _consts(proto)
        return {
            n.input[0]: consts[n.input[1]].tolist()
            for n in proto.graph.node
            if n.op_type == "QuantizeLinear"
        }

    sa, sb = scales(a), scales(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_allclose(sa[k], sb[k], rtol=1e-6)
