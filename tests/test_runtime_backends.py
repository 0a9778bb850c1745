"""Backends: one contract (card, predict -> probabilities, timing, lifecycle) for every kind.

TensorRT cannot run on this CPU machine, so its buffer and API logic is exercised against
the recording stand-in of ``tests/trt_standin.py`` (named I/O tensors, a numpy "engine"); the
names it records are checked against NVIDIA's real bindings by test_tensorrt_real_bindings.py,
and the real thing runs under the tensorrt mark.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from runtime_models import BLUE, CLASSES, GREEN, RED, make_onnx, solid
from trt_standin import StandIn, device_memory_in_use

from wbc_edge.errors import UserError
from wbc_edge.model.backends import Backend, backend_kind, load_backend, softmax
from wbc_edge.model.backends.onnxruntime import choose_providers
from wbc_edge.model.card import ModelCard, Preprocess, write_sidecar


def colour_batch(size: int = 32) -> np.ndarray:
    spec = ModelCard("x", CLASSES, Preprocess(size)).preprocess
    return spec([solid(c, seed=i) for i, c in enumerate([RED, GREEN, BLUE, GREEN, RED])])


EXPECTED = [0, 1, 2, 1, 0]


def check_contract(backend: Backend, size: int = 32) -> np.ndarray:
    assert isinstance(backend, Backend)
    probs = backend.predict(colour_batch(size))
    assert probs.shape == (5, backend.card.num_classes) and probs.dtype == np.float32
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert backend.last_inference_s > 0
    with pytest.raises(ValueError, match="expected a float32 batch"):
        backend.predict(np.zeros((1, 3, size + 1, size + 1), np.float32))
    return probs


@pytest.mark.parametrize("probs_output", [True, False])
@pytest.mark.parametrize("fixed_batch", [None, 2])
def test_onnxruntime_backend(tmp_path, probs_output, fixed_batch):
    path = make_onnx(tmp_path / "m.onnx", probs_output=probs_output, fixed_batch=fixed_batch)
    with load_backend(path, device="cpu") as backend:
        assert backend.name == "onnxruntime" and backend.card.class_names == CLASSES
        assert backend.output_name == "logits"  # the card's temperature applies to logits
        probs = check_contract(backend)
        assert probs.argmax(1).tolist() == EXPECTED
        assert backend.images == 5


def test_onnx_without_card_or_unreadable_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="carries no wbc-edge model card"):
        load_backend(make_onnx(tmp_path / "bare.onnx", card=False))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a readable ONNX model"):
        load_backend(tmp_path / "junk.onnx")
    with pytest.raises(UserError, match="model file not found"):
        load_backend(tmp_path / "missing.onnx")
    with pytest.raises(UserError, match="unknown model type"):
        backend_kind("model.tflite")


def test_provider_choice():
    avail = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(avail, "auto") == avail
    assert choose_providers(avail, "cpu") == ["CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider"], "auto") == ["CPUExecutionProvider"]
    with pytest.raises(UserError, match="no CUDA provider"):
        choose_providers(["CPUExecutionProvider"], "cuda")


def test_gpu_hint_names_where_jetson_builds_come_from(monkeypatch):
    from wbc_edge.model.backends import onnxruntime as ort_backend

    assert "pypi.jetson-ai-lab" in ort_backend.gpu_install_hint("aarch64")
    assert "CPU-only on aarch64" in ort_backend.gpu_install_hint("aarch64")
    assert "jetson" not in ort_backend.gpu_install_hint("x86_64")
    monkeypatch.setattr(ort_backend.platform, "machine", lambda: "aarch64")
    with pytest.raises(UserError, match="Jetson AI Lab"):
        choose_providers(["CPUExecutionProvider"], "cuda")


def test_onnxruntime_reports_the_provider_it_got(tmp_path):
    with load_backend(make_onnx(tmp_path / "m.onnx"), device="cpu") as model:
        assert model.providers == ["CPUExecutionProvider"]


def test_softmax_is_stable():
    p = softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    assert np.allclose(p, [[1, 0], [0.5, 0.5]])


def test_torch_checkpoint_backend_matches_its_onnx_export(tmp_path):
    torch = pytest.importorskip("torch", reason="the torch backend needs the train extra")
    from wbc_edge.export.onnx_export import export_onnx
    from wbc_edge.kd.checkpoint import save_checkpoint
    from wbc_edge.kd.students import create_student

    torch.manual_seed(0)
    torch.set_num_threads(1)
    card = ModelCard("tinyresnet_xs", CLASSES, Preprocess(32))
    model = create_student("tinyresnet_xs", num_classes=3).eval()
    ckpt = save_checkpoint(tmp_path / "s.pt", model, card)
    export_onnx(model, card, tmp_path / "s.onnx")
    with load_backend(ckpt, device="cpu") as pt, load_backend(tmp_path / "s.onnx") as ox:
        assert pt.name == "torch" and pt.card == card
        a, b = check_contract(pt), check_contract(ox)
    assert np.abs(a - b).max() < 1e-4


# -- TensorRT against stand-ins ------------------------------------------------------------


def _standin(monkeypatch, version: str, dynamic: bool = True, output: str = "probs") -> StandIn:
    spec = {"size": 32, "classes": CLASSES, "max_batch": 4, "dynamic": dynamic, "output": output}
    return StandIn(version, engine=spec).install(monkeypatch)


@pytest.mark.parametrize("version", ["8.5.2.2", "8.6.1", "10.3.0", "11.4.0.106"])
@pytest.mark.parametrize("dynamic", [True, False])
@pytest.mark.parametrize("output", ["probs", "logits"])
def test_tensorrt_backend_one_io_path(tmp_path, monkeypatch, version, dynamic, output):
    """Named I/O tensors on every supported version (8.5 added them, 10 removed bindings)."""
    trt = _standin(monkeypatch, version, dynamic, output)
    in_use = device_memory_in_use()  # other tests' calibrators may hold stand-in buffers
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"ENGINE")
    write_sidecar(engine, ModelCard("colour", CLASSES, Preprocess(32)), tensorrt_version=version)
    backend = load_backend(engine)
    assert backend.name == "tensorrt" and backend.max_batch == 4
    del trt.log[:]  # loading ran one probe image through the engine (check_against_card)
    probs = check_contract(backend)  # 5 images: two chunks for a max batch of 4
    assert probs.argmax(1).tolist() == EXPECTED
    copies = [e[1] for e in trt.log if isinstance(e, tuple) and e[0] == "htod"]
    assert copies == ([4, 1] if dynamic else [4, 4])  # dynamic engines copy only real rows
    assert trt.log.count("push") == trt.log.count("pop")  # every call leaves the context as found
    assert ("deserialize", None) in trt.calls  # a GPU engine: no DLA core set
    backend.close()
    assert "detach" in trt.log and device_memory_in_use() == in_use
    assert not any(name.startswith(("num_bindings", "get_binding")) for _, name in trt.used)


def test_tensorrt_dla_engine_deserializes_onto_its_core(tmp_path, monkeypatch):
    trt = _standin(monkeypatch, "10.3.0", dynamic=False)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"ENGINE")
    card = ModelCard("colour", CLASSES, Preprocess(32))
    write_sidecar(engine, card, tensorrt_version="10.3.0", dla_core=1)
    with load_backend(engine) as backend:
        check_contract(backend)
    assert ("deserialize", 1) in trt.calls and ("Runtime", "DLA_core") in trt.used


@pytest.mark.parametrize("version", ["8.6.1", "10.3.0"])
def test_tensorrt_backend_applies_the_sidecar_temperature(tmp_path, monkeypatch, version):
    """The engine's sidecar card carries temperature and threshold; the backend divides the
    engine's logits by that temperature (as the .pt and .onnx backends do)."""
    spec = {"size": 32, "classes": CLASSES, "max_batch": 8, "dynamic": True, "output": "logits"}
    StandIn(version, engine=spec).install(monkeypatch)
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"ENGINE")
    card = ModelCard("colour", CLASSES, Preprocess(32), temperature=2.5, confidence_threshold=0.8)
    card.calibration = {"target_error": 0.01, "rule": "ltt"}
    write_sidecar(engine, card, tensorrt_version=version)
    with load_backend(engine) as backend:
        assert backend.card == card  # temperature, threshold and calibration round-trip
        batch = colour_batch()
        probs = backend.predict(batch)
    logits = 4.0 * batch.mean(axis=(2, 3))
    np.testing.assert_allclose(probs, softmax(logits / 2.5), atol=1e-6)
    assert not np.allclose(probs, softmax(logits), atol=1e-3)


def test_tensorrt_version_gate_and_stale_engines(tmp_path, monkeypatch):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"ENGINE")
    card = ModelCard("colour", CLASSES, Preprocess(32))
    _standin(monkeypatch, "8.4.1")
    write_sidecar(engine, card, tensorrt_version="8.4.1")
    with pytest.raises(UserError, match="TensorRT 8.4.1 is too old"):
        load_backend(engine)
    _standin(monkeypatch, "10.3.0")
    Path(f"{engine}.json").unlink()
    with pytest.raises(UserError, match="no sidecar card"):
        load_backend(engine)
    write_sidecar(engine, card, tensorrt_version="8.6.1")
    with pytest.raises(UserError, match="built with TensorRT 8.6.1 but 10.3.0"):
        load_backend(engine)
    write_sidecar(engine, card, tensorrt_version="10.3.1")
    engine.write_bytes(b"OTHER GPU")
    with pytest.raises(UserError, match="cannot deserialize"):
        load_backend(engine)
    assert json.loads(Path(f"{engine}.json").read_text())["tensorrt_version"] == "10.3.1"


def test_tensorrt_missing_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"ENGINE")
    write_sidecar(engine, ModelCard("colour", CLASSES, Preprocess(32)))
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    # no extra brings TensorRT: the message names what does
    with pytest.raises(UserError, match=r"comes with JetPack.*pip install tensorrt-cu12"):
        load_backend(engine)


@pytest.mark.tensorrt
def test_tensorrt_engine_built_on_this_device_matches_onnxruntime(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    pytest.importorskip("pycuda.driver", reason="pycuda is not installed")
    from wbc_edge.export.tensorrt_build import build_engine

    onnx_path = make_onnx(tmp_path / "m.onnx")
    built = build_engine(onnx_path, tmp_path / "m.engine", precision="fp32", batch=(1, 4, 8))
    with load_backend(built.engine) as trt_model, load_backend(onnx_path) as ort_model:
        a, b = check_contract(trt_model), check_contract(ort_model)
        assert trt_model.max_batch == 8
        big = np.concatenate([colour_batch()] * 4)  # 20 images: three engine calls
        assert np.allclose(trt_model.predict(big), ort_model.predict(big), atol=1e-4)
    assert np.allclose(a, b, atol=1e-4)


def test_cuda_requested_but_fallen_back_to_cpu_is_refused(tmp_path, monkeypatch):
    """onnxruntime drops a GPU provider that cannot start without raising; --device cuda must
    not then run on the CPU unnoticed."""
    import onnxruntime as ort

    from wbc_edge.model.backends import onnxruntime as ort_backend

    class Session(ort.InferenceSession):
        def __init__(self, path, options, providers):
            super().__init__(path, options, providers=["CPUExecutionProvider"])

    fake = types.SimpleNamespace(
        get_available_providers=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        SessionOptions=ort.SessionOptions,
        GraphOptimizationLevel=ort.GraphOptimizationLevel,
        InferenceSession=Session,
    )
    real = ort_backend.require
    monkeypatch.setattr(ort_backend, "require", lambda m: fake if m == "onnxruntime" else real(m))
    with pytest.raises(UserError, match="fell back to the CPU"):
        load_backend(make_onnx(tmp_path / "m.onnx"), device="cuda")


def test_onnx_backend_loads_its_model_once(tmp_path, monkeypatch):
    """The card comes from the backend's own session: one InferenceSession per model."""
    import onnxruntime as ort

    path = make_onnx(tmp_path / "m.onnx")
    real, made = ort.InferenceSession, []

    def counting(*args, **kwargs):
        made.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", counting)
    with load_backend(path, device="cpu") as backend:
        assert backend.card.class_names == CLASSES
    assert made == [str(path)]


def test_a_labelled_set_is_scored_through_the_backend(tmp_path):
    """wbc_edge.model.labelled.score: probabilities in input order, labels checked against the
    card."""
    import cv2

    from wbc_edge.model.labelled import score

    colours = [RED, GREEN, BLUE]
    paths = []
    for i, c in enumerate(colours):
        paths.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(paths[-1]), solid(c))
    with load_backend(make_onnx(tmp_path / "m.onnx"), device="cpu") as backend:
        pre = backend.card.preprocess
        labels = [CLASSES[int(backend.predict(pre([solid(c)])).argmax())] for c in colours]
        probs, y = score(backend, paths, labels, "the test images", batch_size=2)
        assert probs.shape == (3, len(CLASSES)) and probs.argmax(1).tolist() == y.tolist()
        with pytest.raises(UserError, match="classes the model does not know: Unicorn"):
            score(backend, paths, ["Unicorn"] * 3, "the test images")


AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
AVX512_VNNI = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 avx512f avx512_vnni\n"


def test_8bit_cpu_int8_on_a_saturating_cpu_is_warned_about(tmp_path, monkeypatch, capsys):
    from wbc_edge.model.backends import onnxruntime as ort_backend

    old = ModelCard("x", CLASSES, Preprocess(32), extra={"int8_target": "cpu"})  # before 7-bit
    new = ModelCard(
        "x", CLASSES, Preprocess(32), extra={"int8_target": "cpu", "int8_weight_bits": 7}
    )
    trt = ModelCard("x", CLASSES, Preprocess(32), extra={"int8_target": "tensorrt"})
    assert ort_backend.saturating_u8s8_cpu(AVX2_ONLY)
    assert not ort_backend.saturating_u8s8_cpu(AVX512_VNNI)
    assert not ort_backend.saturating_u8s8_cpu("flags\t\t: fpu sse4_2\n")  # no AVX2 kernels
    warning = ort_backend.int8_saturation_warning(old, "m.int8.onnx", AVX2_ONLY)
    assert "m.int8.onnx has 8-bit INT8 weights" in warning and "--target cpu" in warning
    assert ort_backend.int8_saturation_warning(old, "m", AVX512_VNNI) == ""
    assert ort_backend.int8_saturation_warning(new, "m", AVX2_ONLY) == ""
    assert ort_backend.int8_saturation_warning(trt, "m", AVX2_ONLY) == ""

    # Opening such a model says so once, on the CPU provider.
    path = make_onnx(tmp_path / "m.onnx")
    real = ort_backend.card_from_session

    def as_old_cpu_int8(session, where):  # noqa: ANN001, ANN202
        card = real(session, where)
        card.extra["int8_target"] = "cpu"
        return card

    monkeypatch.setattr(ort_backend, "card_from_session", as_old_cpu_int8)
    monkeypatch.setattr(ort_backend, "saturating_u8s8_cpu", lambda cpuinfo=None: True)
    load_backend(path, device="cpu").close()
    assert "has 8-bit INT8 weights" in capsys.readouterr().err
