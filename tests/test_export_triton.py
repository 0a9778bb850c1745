"""Triton repository: config.pbtxt parses with Triton's own ModelConfig (tritonclient's
model_config_pb2) and matches the model's inputs/outputs; the card's preprocessing travels in its
parameters and the shipped client uses it; labels, layout, engine variant and bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

sys.path.insert(0, str(Path(__file__).parent))
from export_phantoms import CLASSES, TinyNet, card  # noqa: E402

from wbc_edge import cli  # noqa: E402
from wbc_edge.errors import UserError  # noqa: E402
from wbc_edge.export import triton_client  # noqa: E402
from wbc_edge.export.onnx_export import export_onnx, onnx_io  # noqa: E402
from wbc_edge.export.triton import (  # noqa: E402
    model_config_class,
    preprocessing_parameters,
    write_repository,
)
from wbc_edge.model.backends import load_backend  # noqa: E402
from wbc_edge.model.card import ModelCard, Preprocess, read_sidecar, write_sidecar  # noqa: E402


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("triton") / "tiny.onnx"
    export_onnx(TinyNet().eval(), card(), path)
    return path


def _parse(folder: Path):
    msg = model_config_class()()
    text_format.Parse((folder / "config.pbtxt").read_text(), msg)
    return msg


def test_onnx_repository_matches_the_model(tiny_onnx, tmp_path):
    folder = write_repository(tiny_onnx, tmp_path / "repo", max_batch=16)
    assert folder == tmp_path / "repo" / "tinynet-test"  # named from the card
    cfg = _parse(folder)
    assert cfg.name == "tinynet-test" and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 16
    proto = onnx.load(str(folder / "1" / "model.onnx"))
    graph_in = [
        i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}
    ]
    assert [i.name for i in cfg.input] == [i.name for i in graph_in] == ["input"]
    assert [o.name for o in cfg.output] == [o.name for o in proto.graph.output]
    assert list(cfg.input[0].dims) == [3, 32, 32]
    assert [list(o.dims) for o in cfg.output] == [[len(CLASSES)], [len(CLASSES)]]
    assert cfg.input[0].data_type == model_config_pb2.TYPE_FP32
    assert model_config_class() is model_config_pb2.ModelConfig  # Triton's own message
    probs = next(o for o in cfg.output if o.name == "probs")
    assert probs.label_filename == "labels.txt"
    assert (folder / "labels.txt").read_text().split() == CLASSES
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 16]
    assert cfg.dynamic_batching.max_queue_delay_microseconds > 0


def test_engine_repository_uses_the_sidecar(tiny_onnx, tmp_path):
    engine = tmp_path / "tiny.int8.engine"
    engine.write_bytes(b"serialized engine")
    write_sidecar(engine, card(), io=onnx_io(tiny_onnx), batch=[1, 8, 32], precision="int8")
    folder = write_repository(engine, tmp_path / "repo", name="wbc")
    cfg = _parse(folder)
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 32
    assert [o.name for o in cfg.output] == ["logits", "probs"]
    assert (folder / "1" / "model.plan").read_bytes() == b"serialized engine"
    back, fields = read_sidecar(folder / "1" / "model.plan")
    assert back.class_names == CLASSES and fields["precision"] == "int8"
    with pytest.raises(UserError, match="exceeds the engine's profile maximum 32"):
        write_repository(engine, tmp_path / "repo", max_batch=64)


def test_bad_inputs(tmp_path, tiny_onnx):
    with pytest.raises(UserError, match="not found"):
        write_repository(tmp_path / "none.onnx", tmp_path / "repo")
    weird = tmp_path / "model.pt"
    weird.write_bytes(b"")
    with pytest.raises(UserError, match="Triton serves"):
        write_repository(weird, tmp_path / "repo")
    with pytest.raises(UserError, match="--max-batch 0"):
        write_repository(tiny_onnx, tmp_path / "repo", max_batch=0)


def test_cli(tiny_onnx, tmp_path, capsys):
    code = cli.run(["export", "triton", "--model", str(tiny_onnx), "--out", str(tmp_path / "r")])
    assert code == 0
    assert _parse(tmp_path / "r" / "tinynet-test").platform == "onnxruntime_onnx"


def _as_json(folder: Path) -> dict:
    """The config as Triton's client returns it (get_model_config(..., as_json=True))."""
    return json_format.MessageToDict(_parse(folder), preserving_proto_field_name=True)


def test_the_config_carries_the_cards_preprocessing(tiny_onnx, tmp_path):
    folder = write_repository(tiny_onnx, tmp_path / "repo")
    prep = triton_client.preprocessing(_as_json(folder))
    c = card()
    pre = c.preprocess
    assert prep["input_size"] == pre.input_size and prep["class_names"] == CLASSES
    assert prep["mean"] == list(pre.mean) and prep["std"] == list(pre.std)
    assert (prep["channel_order"], prep["interpolation"]) == (pre.channel_order, pre.interpolation)
    assert (prep["crop_fraction"], prep["crop_aspect"]) == (pre.crop_fraction, pre.crop_aspect)
    assert (folder / "client.py").read_text() == Path(triton_client.__file__).read_text()
    with pytest.raises(ValueError, match="lacks wbc_edge parameters"):
        triton_client.preprocessing({"parameters": {}})


@pytest.mark.parametrize(
    "pre",
    [
        Preprocess(24),
        Preprocess(24, 0.8, 0.75, (0.1, 0.4, 0.7), (0.2, 0.3, 0.9), "BGR", "cubic"),
    ],
)
def test_the_client_prepares_images_as_the_card_does(pre):
    c = ModelCard("x", CLASSES, pre)
    params = {k: {"string_value": v} for k, v in preprocessing_parameters(c).items()}
    prep = triton_client.preprocessing({"parameters": params})
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, shape, dtype=np.uint8)
        for shape in ((40, 50, 3), (16, 16, 3), (30, 30))
    ]
    np.testing.assert_allclose(
        triton_client.preprocess(images, prep), c.preprocess(images), rtol=0, atol=1e-6
    )


class _OnnxTriton:
    """Stands in for tritonclient.grpc.InferenceServerClient over one repository, serving its
    model.onnx with ONNX Runtime: the client snippet's own requests, without a server."""

    def __init__(self, folder: Path) -> None:
        from wbc_edge.model.backends.onnxruntime import open_session

        self.folder = folder
        self.session = open_session(folder / "1" / "model.onnx", device="cpu")

    def get_model_config(self, name: str, as_json: bool = False) -> dict:
        assert name == self.folder.name and as_json
        return {"config": _as_json(self.folder)}

    def infer(self, name: str, inputs: list, outputs: list):
        feed = {i.name(): self._array(i) for i in inputs}
        probs = self.session.run([outputs[0].name()], feed)[0]
        return type("Result", (), {"as_numpy": lambda self_, key: probs})()

    @staticmethod
    def _array(request) -> np.ndarray:
        shape = request.shape()
        return np.frombuffer(request._get_content(), np.float32).reshape(shape)


def test_the_shipped_client_classifies_like_the_runtime(tiny_onnx, tmp_path):
    folder = write_repository(tiny_onnx, tmp_path / "repo")
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(5)]
    got = triton_client.classify(_OnnxTriton(folder), folder.name, images)
    with load_backend(tiny_onnx) as backend:
        probs = backend.predict(backend.card.preprocess(images))
    assert [g[0] for g in got] == [CLASSES[i] for i in probs.argmax(1)]
    np.testing.assert_allclose([g[1] for g in got], probs.max(1), atol=1e-5)


def test_a_config_triton_would_reject_is_refused(tiny_onnx):
    from wbc_edge.export.triton import validate

    io = onnx_io(tiny_onnx)
    with pytest.raises(UserError, match="does not parse"):
        validate('name: "x"\nmax_batch_size: 4\ndynamic_batching { preferred_batch: 8 }\n', io)
