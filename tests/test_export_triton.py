"""Triton repository: config.pbtxt parses as protobuf text (Triton's field numbers) and matches
the model's inputs/outputs; labels, layout, engine variant and bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest
import torch
from google.protobuf import text_format

sys.path.insert(0, str(Path(__file__).parent))
from export_phantoms import CLASSES, TinyNet, card  # noqa: E402

from wbc_edge import cli  # noqa: E402
from wbc_edge.errors import UserError  # noqa: E402
from wbc_edge.export.onnx_export import export_onnx, onnx_io  # noqa: E402
from wbc_edge.export.triton import model_config_class, write_repository  # noqa: E402
from wbc_edge.runtime.card import read_sidecar, write_sidecar  # noqa: E402


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
    assert folder == tmp_path / "repo" / "tiny"
    cfg = _parse(folder)
    assert cfg.name == "tiny" and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 16
    proto = onnx.load(str(folder / "1" / "model.onnx"))
    graph_in = [
        i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}
    ]
    assert [i.name for i in cfg.input] == [i.name for i in graph_in] == ["input"]
    assert [o.name for o in cfg.output] == [o.name for o in proto.graph.output]
    assert list(cfg.input[0].dims) == [3, 32, 32]
    assert [list(o.dims) for o in cfg.output] == [[len(CLASSES)], [len(CLASSES)]]
    dtypes = model_config_class()().DESCRIPTOR.file.enum_types_by_name["DataType"]
    assert dtypes.values_by_number[cfg.input[0].data_type].name == "TYPE_FP32"
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
    assert _parse(tmp_path / "r" / "tiny").platform == "onnxruntime_onnx"
