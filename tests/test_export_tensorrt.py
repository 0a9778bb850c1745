"""TensorRT engine building without TensorRT: version gates, the engine-cache key, reuse, the
trtexec line, the calibration feed and the cache format, and the CLI's failure where TensorRT
is absent. One test builds a real engine where TensorRT and a GPU exist (marker tensorrt)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from export_phantoms import TinyNet, card, write_phantoms  # noqa: E402
from trt_standin import StandIn  # noqa: E402

from wbc_edge import cli  # noqa: E402
from wbc_edge.data.manifest import read_manifest  # noqa: E402
from wbc_edge.data.scan import sha256_file  # noqa: E402
from wbc_edge.errors import UserError  # noqa: E402
from wbc_edge.export import calib_cache, tensorrt_build  # noqa: E402
from wbc_edge.export.engine_cache import EngineKey, reusable  # noqa: E402
from wbc_edge.export.onnx_export import export_onnx  # noqa: E402
from wbc_edge.export.tensorrt_build import parse_batch, resolve_batch, trtexec_command  # noqa: E402
from wbc_edge.export.tensorrt_calibrator import calibration_batches  # noqa: E402
from wbc_edge.model.card import read_sidecar, write_sidecar  # noqa: E402
from wbc_edge.model.tensorrt_versions import (  # noqa: E402
    features,
    parse_version,
    same_engine_series,
    version_code,
)
from wbc_edge.optional import MissingTensorRTError  # noqa: E402


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("trt") / "tiny.onnx"
    export_onnx(TinyNet().eval(), card(), path)
    return path


@pytest.fixture
def no_tensorrt(monkeypatch):
    """Behave as on a machine without TensorRT, even where it is installed."""
    real = tensorrt_build.require

    def fake(module):
        if module.split(".")[0] == "tensorrt":
            raise MissingTensorRTError()
        return real(module)

    monkeypatch.setattr(tensorrt_build, "require", fake)


def test_version_gates():
    jp5, jp6, jp61, late10, trt11 = (
        features(v) for v in ("8.5.2.2", "8.6.1", "10.3.0", "10.12.0.36", "11.4.0.106")
    )
    assert jp5.explicit_batch_flag and jp6.explicit_batch_flag
    assert not jp61.explicit_batch_flag and not trt11.explicit_batch_flag
    assert jp5.implicit_int8 and jp61.implicit_int8 and not trt11.implicit_int8
    assert not jp6.implicit_int8_deprecated and jp61.implicit_int8_deprecated
    assert jp61.precision_flags and late10.precision_flags and not trt11.precision_flags
    assert not jp61.precision_flags_deprecated and late10.precision_flags_deprecated
    assert trt11.strongly_typed and not late10.strongly_typed
    with pytest.raises(UserError, match="8.4.1 is too old"):
        features("8.4.1")
    assert parse_version("10.3.0.26") == (10, 3, 0) and parse_version("8.6.1.post1") == (8, 6, 1)
    assert parse_version("11") == (11, 0, 0)
    with pytest.raises(UserError, match="not a TensorRT version"):
        parse_version("abc")
    assert same_engine_series("10.3.0", "10.3.0.26") and not same_engine_series("8.6.1", "10.3.0")
    assert version_code("8.6.1") == 8601 and version_code("10.3.0") == 100300


def test_engine_key_changes_when_any_part_changes():
    base = EngineKey("a" * 64, "fp16", "8.6.1", "Orin", "", (1, 8, 32), None)
    changes = {
        "onnx_sha256": "b" * 64,
        "precision": "int8",
        "tensorrt_version": "10.3.0",
        "device_name": "Xavier",
        "calibration_sha256": "images:0123",
        "batch": (1, 4, 16),
        "dla_core": 0,
    }
    assert set(changes) == {f.name for f in dataclasses.fields(EngineKey)}
    digests = {base.digest()}
    for name, value in changes.items():
        digests.add(dataclasses.replace(base, **{name: value}).digest())
    assert len(digests) == len(changes) + 1
    assert base.digest() == dataclasses.replace(base).digest()


def test_engine_reused_only_with_matching_key_and_bytes(tmp_path):
    engine = tmp_path / "m.engine"
    key = EngineKey("a" * 64, "fp16", "8.6.1", "Orin", "", (1, 8, 32), None)
    assert not reusable(engine, key)
    engine.write_bytes(b"engine bytes")
    write_sidecar(engine, card(), engine_key=key.digest(), engine_sha256=sha256_file(engine))
    assert reusable(engine, key)
    assert not reusable(engine, dataclasses.replace(key, tensorrt_version="10.3.0"))
    engine.write_bytes(b"another engine")  # replaced behind the sidecar's back
    assert not reusable(engine, key)


def test_trtexec_command_matches_options():
    line = trtexec_command(
        "m.onnx", "m.engine", "int8", "input", 128, (1, 4, 16), 512, 1, "m.cache", "t.cache"
    )
    for part in (
        "trtexec --onnx=m.onnx --saveEngine=m.engine",
        "--minShapes=input:1x3x128x128",
        "--optShapes=input:4x3x128x128",
        "--maxShapes=input:16x3x128x128",
        "--fp16 --int8 --calib=m.cache",
        "--memPoolSize=workspace:512",
        "--useDLACore=1 --allowGPUFallback",
        "--timingCacheFile=t.cache",
    ):
        assert part in line
    fp32 = trtexec_command("m.onnx", "m.engine", "fp32", "input", 64)
    assert "--fp16" not in fp32 and "--int8" not in fp32 and "DLA" not in fp32
    trt11 = trtexec_command("m.onnx", "m.engine", "int8", "input", 64, strongly_typed=True)
    assert "--fp16" not in trt11 and "--int8" not in trt11  # removed in TensorRT 11


def test_parse_batch():
    assert parse_batch(None) is None
    assert resolve_batch(None, None) == (1, 8, 32)
    assert resolve_batch(None, 0) == (8, 8, 8)  # DLA: static
    assert resolve_batch((4, 4, 4), 1) == (4, 4, 4)
    with pytest.raises(UserError, match="static batch"):
        resolve_batch((1, 8, 32), 0)
    assert parse_batch("2,4,8") == (2, 4, 8)
    assert parse_batch("4") == (4, 4, 4)
    for bad in ("8,4,16", "0,1,2", "a,b,c", "1,2"):
        with pytest.raises(UserError):
            parse_batch(bad)


def test_calibration_batches_use_the_runtime_preprocessing(tmp_path):
    manifest = write_phantoms(tmp_path, {"train": 5})
    rows = read_manifest(manifest, "train")
    spec = card().preprocess
    batches = list(calibration_batches([r.path for r in rows], spec, batch_size=8))
    assert len(batches) == 20 // 8  # the short tail is dropped (fixed calibration profile)
    from wbc_edge.model.preprocess import read_image

    expected = spec([read_image(str(r.path)) for r in rows[8:16]])
    assert batches[1].dtype == np.float32 and batches[1].flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(batches[1], expected)


def test_cli_without_tensorrt_fails_with_trtexec_line(tiny_onnx, no_tensorrt, capsys):
    code = cli.run(["build-engine", "--onnx", str(tiny_onnx), "--batch", "1,4,16"])
    out, err = capsys.readouterr()
    assert code != 0
    assert "trtexec --onnx=" in out and "--maxShapes=input:16x3x32x32" in out and "--fp16" in out
    err = " ".join(err.split())
    assert "tensorrt is not installed" in err and "JetPack" in err and "on the device" in err
    assert "Traceback" not in err


def test_int8_without_scales_is_refused(tiny_onnx, capsys):
    code = cli.run(["build-engine", "--onnx", str(tiny_onnx), "--precision", "int8"])
    assert code == 2
    assert "needs scales" in capsys.readouterr().err


def test_qdq_onnx_defaults_to_int8_and_refuses_fp16(tmp_path, tiny_onnx, no_tensorrt, capsys):
    from wbc_edge.export.int8 import quantize_int8

    manifest = write_phantoms(tmp_path, {"train": 4})
    qdq = tmp_path / "q.onnx"
    quantize_int8(tiny_onnx, read_manifest(manifest, "train"), out=qdq, num=16)
    assert tensorrt_build.is_qdq(qdq) and not tensorrt_build.is_qdq(tiny_onnx)
    assert cli.run(["build-engine", "--onnx", str(qdq)]) != 0
    out = capsys.readouterr().out
    assert "--int8" in out and "--calib" not in out  # explicit: scales are in the graph
    with pytest.raises(UserError, match="Q/DQ"):
        tensorrt_build.build_engine(qdq, precision="fp16", echo=lambda s: None)


def test_dla_needs_reduced_precision(tiny_onnx):
    with pytest.raises(UserError, match="DLA runs FP16 or INT8"):
        tensorrt_build.build_engine(tiny_onnx, precision="fp32", dla_core=0, echo=lambda s: None)


def test_malformed_calibration_cache_is_refused(tiny_onnx, tmp_path):
    bad = tmp_path / "bad.cache"
    bad.write_text("not a cache\n")
    with pytest.raises(UserError, match="not a TensorRT calibration cache"):
        tensorrt_build.build_engine(
            tiny_onnx, precision="int8", calib_cache_path=bad, echo=lambda s: None
        )


def test_calibration_cache_roundtrip():
    scales = {"input": 1 / 127, "/stem/Conv_output_0": 0.0421, "onnx::Conv_43": 0.5, "p": 1e-9}
    text = calib_cache.dumps(scales, calib_cache.header("10.3.0"))
    assert text.splitlines()[0] == "TRT-100300-EntropyCalibration2"
    assert "input: 3c010204" in text  # TensorRT's own encoding of 1/127
    head, back = calib_cache.loads(text)
    assert head == "TRT-100300-EntropyCalibration2"
    assert back == {k: np.float32(v) for k, v in scales.items()}
    assert version_code("8.6.1") == 8601 and version_code("8.5.2") == 8502
    moved = calib_cache.with_header(text, "8.5.2")
    assert moved.startswith("TRT-8502-") and calib_cache.loads(moved)[1] == back
    for bad in ("", "input: 3c010204\n", "TRT-8601-EntropyCalibration2\ninput 3c01\n"):
        with pytest.raises(ValueError):
            calib_cache.loads(bad)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_builds_and_reuses_a_real_engine(tiny_onnx, tmp_path):
    pytest.importorskip("tensorrt", reason="needs TensorRT")
    engine = tmp_path / "tiny.fp16.engine"
    first = tensorrt_build.build_engine(tiny_onnx, engine, "fp16", batch=(1, 2, 4))
    assert engine.stat().st_size > 0 and not first.reused
    second = tensorrt_build.build_engine(tiny_onnx, engine, "fp16", batch=(1, 2, 4))
    assert second.reused and second.key == first.key


def test_build_engine_and_triton_never_import_torch(tiny_onnx, tmp_path):
    """A Jetson builds engines and Triton repositories without torch installed."""
    import subprocess

    model, repo = str(tiny_onnx), str(tmp_path)
    code = (
        "import sys\n"
        "from wbc_edge import cli\n"
        f"cli.run(['build-engine', '--onnx', {model!r}])\n"
        f"cli.run(['export', 'triton', '--model', {model!r}, '--out', {repo!r}])\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'torchvision')]\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr
    assert (tmp_path / "tinynet-test" / "config.pbtxt").is_file()  # named from the card


@pytest.fixture(scope="module")
def qdq_onnx(tiny_onnx, tmp_path_factory):
    from wbc_edge.export.int8 import quantize_int8

    folder = tmp_path_factory.mktemp("qdq")
    manifest = write_phantoms(folder, {"train": 4})
    out = folder / "tiny.int8.onnx"
    quantize_int8(tiny_onnx, read_manifest(manifest, "train"), out=out, num=16)
    return out


def quiet(line: str) -> None:
    pass


def test_build_calls_follow_the_tensorrt_version(monkeypatch, tiny_onnx, tmp_path):
    for version, flags in (("8.6.1", 1), ("10.3.0", 0)):
        trt = StandIn(version).install(monkeypatch)
        engine = tmp_path / f"{version}.engine"
        timing = tmp_path / "timing.cache"
        result = tensorrt_build.build_engine(
            tiny_onnx, engine, "fp16", batch=(1, 4, 16), timing_cache=timing, echo=quiet
        )
        assert ("network", flags) in trt.calls  # EXPLICIT_BATCH only before TensorRT 10
        assert ("parse_from_file", str(tiny_onnx)) in trt.calls  # finds external weights
        assert not any(c[0] == "parse_bytes" for c in trt.calls)
        assert ("pool", "workspace", 1024 << 20) in trt.calls
        assert ("flag", "FP16") in trt.calls and ("flag", "INT8") not in trt.calls
        assert ("shape", "input", (1, 3, 32, 32), (4, 3, 32, 32), (16, 3, 32, 32)) in trt.calls
        assert timing.read_bytes() == b"timing-cache" and not result.reused
        assert engine.read_bytes() == b"fake engine"
        card_back, fields = read_sidecar(engine)
        assert card_back.class_names == card().class_names
        assert card_back.extra["precision"] == "fp16"
        assert fields["tensorrt_version"] == version and fields["device_name"] == "Fake Orin"
        assert fields["engine_sha256"] == sha256_file(engine)
        assert [t["name"] for t in fields["io"]["outputs"]] == ["logits", "probs"]
    again = tensorrt_build.build_engine(tiny_onnx, engine, "fp16", batch=(1, 4, 16), echo=quiet)
    assert again.reused
    rebuilt = tensorrt_build.build_engine(tiny_onnx, engine, "fp16", batch=(1, 8, 16), echo=quiet)
    assert not rebuilt.reused  # another batch profile is another engine


def test_too_old_tensorrt_is_refused_after_the_trtexec_line(monkeypatch, tiny_onnx, tmp_path):
    StandIn("8.4.1").install(monkeypatch)
    notes: list[str] = []
    with pytest.raises(UserError, match="TensorRT 8.4.1 is too old"):
        tensorrt_build.build_engine(tiny_onnx, tmp_path / "a.engine", "fp16", echo=notes.append)
    assert notes and notes[0].startswith("equivalent trtexec command")


def test_tensorrt_11_is_strongly_typed(monkeypatch, tiny_onnx, qdq_onnx, tmp_path):
    """TensorRT 11 removed BuilderFlag.FP16/INT8: no flag is set, FP16 from FP32 is refused."""
    trt = StandIn("11.4.0.106").install(monkeypatch)
    with pytest.raises(UserError, match="strongly typed.*AutoCast"):
        tensorrt_build.build_engine(tiny_onnx, tmp_path / "a.engine", "fp16", echo=quiet)
    tensorrt_build.build_engine(tiny_onnx, tmp_path / "b.engine", "fp32", echo=quiet)
    notes: list[str] = []
    tensorrt_build.build_engine(qdq_onnx, tmp_path / "c.engine", "int8", echo=notes.append)
    line = next(n for n in notes if n.startswith("equivalent trtexec"))
    assert "--int8" not in line and "--fp16" not in line  # trtexec 11 has neither
    assert ("network", 0) in trt.calls
    assert not [c for c in trt.calls if c[0] == "flag"]
    assert ("BuilderFlag", "FP16") not in trt.used and (
        "Builder",
        "platform_has_fast_fp16",
    ) not in trt.used
    assert any("strongly typed" in n for n in notes)
    trt = StandIn("10.3.0").install(monkeypatch)
    tensorrt_build.build_engine(qdq_onnx, tmp_path / "d.engine", "int8", echo=quiet)
    assert ("flag", "FP16") in trt.calls and ("flag", "INT8") in trt.calls
    assert ("calibration_profile",) not in trt.calls  # explicit: scales are in the graph


def test_dla_builds_a_static_engine_and_names_gpu_layers(monkeypatch, qdq_onnx, tmp_path):
    trt = StandIn("10.3.0", gpu_only_layers=("/pool/GlobalAveragePool",)).install(monkeypatch)
    notes: list[str] = []
    engine = tmp_path / "dla.engine"
    tensorrt_build.build_engine(qdq_onnx, engine, "int8", dla_core=1, echo=notes.append)
    assert ("shape", "input", (8, 3, 32, 32), (8, 3, 32, 32), (8, 3, 32, 32)) in trt.calls
    assert ("device", "DLA") in trt.calls and ("dla_core", 1) in trt.calls
    assert ("flag", "GPU_FB") in trt.calls
    assert any("1 of 4 layers" in n and "/pool/GlobalAveragePool" in n for n in notes)
    _, fields = read_sidecar(engine)
    assert fields["dla_core"] == 1 and fields["batch"] == [8, 8, 8]
    assert fields["dla_gpu_fallback_layers"] == ["/pool/GlobalAveragePool"]
    assert (
        "--useDLACore=1" in fields["trtexec"] and "--minShapes=input:8x3x32x32" in fields["trtexec"]
    )
    with pytest.raises(UserError, match="static batch"):
        tensorrt_build.build_engine(qdq_onnx, engine, "int8", dla_core=1, batch=(1, 8, 32))
    with pytest.raises(UserError, match="has 2 DLA core"):
        tensorrt_build.build_engine(qdq_onnx, engine, "int8", dla_core=2, echo=quiet, force=True)


def test_timing_cache_rejected_or_absent_never_loses_the_engine(monkeypatch, tiny_onnx, tmp_path):
    timing = tmp_path / "timing.cache"
    timing.write_bytes(b"from another GPU")
    trt = StandIn("10.3.0", timing_cache_ok=False).install(monkeypatch)
    notes: list[str] = []
    engine = tmp_path / "a.engine"
    tensorrt_build.build_engine(tiny_onnx, engine, "fp16", timing_cache=timing, echo=notes.append)
    assert ("set_timing_cache", False, False) in trt.calls  # the file's cache: rejected
    assert ("set_timing_cache", False, True) in trt.calls  # then a fresh one
    assert any("rejected the timing cache" in n for n in notes)
    assert timing.read_bytes() == b"timing-cache" and engine.read_bytes() == b"fake engine"
    StandIn("10.3.0", timing_cache_back=False).install(monkeypatch)
    timing.write_bytes(b"old")
    notes.clear()
    engine = tmp_path / "b.engine"
    tensorrt_build.build_engine(tiny_onnx, engine, "fp16", timing_cache=timing, echo=notes.append)
    assert engine.read_bytes() == b"fake engine" and timing.read_bytes() == b"old"
    assert any("no timing cache" in n for n in notes)


def test_parse_and_build_failures_are_user_errors(monkeypatch, tiny_onnx, tmp_path):
    StandIn("8.6.1", parse_ok=False).install(monkeypatch)
    with pytest.raises(UserError, match="cannot parse .*unsupported attribute"):
        tensorrt_build.build_engine(tiny_onnx, tmp_path / "a.engine", "fp32", echo=quiet)
    StandIn("8.6.1", build_ok=False).install(monkeypatch)
    with pytest.raises(UserError, match="failed to build"):
        tensorrt_build.build_engine(tiny_onnx, tmp_path / "b.engine", "fp32", echo=quiet)
    assert not (tmp_path / "b.engine").exists()


def test_implicit_int8_from_images_and_from_cache(monkeypatch, tiny_onnx, tmp_path):
    trt = StandIn("8.5.2").install(monkeypatch)
    manifest = write_phantoms(tmp_path / "data", {"train": 5})
    rows = read_manifest(manifest, "train")
    engine = tmp_path / "i8.engine"
    tensorrt_build.build_engine(tiny_onnx, engine, "int8", calib_rows=rows, dla_core=1, echo=quiet)
    assert ("flag", "INT8") in trt.calls and ("calibration_profile",) in trt.calls
    assert trt.batches == [(8, 3, 32, 32)] * (20 // 8)
    assert ("flag", "GPU_FB") in trt.calls and ("device", "DLA") in trt.calls
    assert (tmp_path / "i8.engine.calib.cache").is_file()
    cache = calib_cache.write(tmp_path / "c.cache", {"input": 1 / 127}, calib_cache.header("8.6.1"))
    trt = StandIn("10.3.0").install(monkeypatch)
    notes: list[str] = []
    tensorrt_build.build_engine(
        tiny_onnx, tmp_path / "c.engine", "int8", calib_cache_path=cache, echo=notes.append
    )
    # the cache is handed over under the running TensorRT's own header
    assert ("cache_used", "TRT-100300-EntropyCalibration2") in trt.calls
    assert any("deprecated in TensorRT 10.3.0" in n for n in notes)
    StandIn("11.0.0").install(monkeypatch)
    with pytest.raises(UserError, match="no implicit INT8 calibration"):
        tensorrt_build.build_engine(
            tiny_onnx, tmp_path / "d.engine", "int8", calib_cache_path=cache, echo=notes.append
        )


def test_build_engine_with_only_the_jetson_extras(tmp_path):
    """What setup.sh and the Dockerfile install (`.[runtime,jetson]`, no TensorRT on this
    machine) is enough for build-engine to read the ONNX, print the trtexec line, and fail
    only for the missing TensorRT."""
    import subprocess

    from runtime_models import make_onnx

    if sys.version_info < (3, 11):
        pytest.skip("only_extras.py reads pyproject.toml with tomllib (Python 3.11+)")
    onnx = make_onnx(tmp_path / "m.onnx")
    helper = Path(__file__).parent / "only_extras.py"
    cmd = [sys.executable, str(helper), "runtime,jetson", "--"]
    cmd += ["build-engine", "--model", str(onnx)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "trtexec --onnx=" in done.stdout and "--fp16" in done.stdout
    errors = [line for line in done.stderr.splitlines() if not line.startswith("REFUSED")]
    assert len(errors) == 1 and "tensorrt is not installed" in errors[0], done.stderr
    refused = done.stderr.splitlines()[-1]
    assert "torch" not in refused and "onnx'" not in refused, refused  # nothing else missing
