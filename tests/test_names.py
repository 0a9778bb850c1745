"""One naming rule from checkpoint to engine, derived from the card (runtime.names)."""

from __future__ import annotations

from wbc_edge.model.card import ModelCard
from wbc_edge.model.names import (
    calib_cache_name,
    file_name,
    int8_name,
    model_name,
    model_role,
    triton_name,
)


def _card(arch: str = "tinyresnet_xs", **extra) -> ModelCard:
    return ModelCard(arch, ["a", "b"], extra=extra)


def test_names_chain_from_checkpoint_to_engine():
    fp32 = _card(role="student", format="onnx", precision="fp32")
    assert file_name(fp32, "checkpoint") == "student-tinyresnet_xs.pt"
    assert file_name(fp32, "onnx") == "student-tinyresnet_xs.onnx"
    assert int8_name(fp32, "tensorrt") == "student-tinyresnet_xs.int8-tensorrt.onnx"
    assert calib_cache_name(fp32) == "student-tinyresnet_xs.calib.cache"
    int8 = _card(role="student", format="onnx", precision="int8", int8_target="tensorrt")
    assert file_name(int8, "onnx") == int8_name(fp32, "tensorrt")  # the INT8 card agrees
    # The engine says its own precision, not the ONNX's target: no ".int8-tensorrt.int8".
    assert file_name(int8, "engine", "int8") == "student-tinyresnet_xs.int8.engine"
    engine = _card(role="student", format="tensorrt", precision="int8")
    assert model_name(engine) + ".engine" == file_name(int8, "engine", "int8")
    assert triton_name(int8) == "student-tinyresnet_xs-int8-tensorrt"


def test_an_adapted_model_never_takes_the_name_of_the_model_it_came_from():
    adapted = _card(role="student", adaptation={"data_fingerprint": "f"})
    assert file_name(adapted, "onnx") == "student-tinyresnet_xs-adapted.onnx"
    assert int8_name(adapted, "cpu") == "student-tinyresnet_xs-adapted.int8-cpu.onnx"


def test_roles_of_cards_written_before_the_trainer_recorded_them():
    assert model_role(_card("tinyresnet_s")) == "student"
    assert model_role(_card("x", teacher="tf_efficientnet_lite0")) == "student"
    assert model_role(_card("tf_efficientnet_lite0", method="ce", epochs=10)) == "teacher"
    # A random-init reference (bench) has no role: named by its architecture alone.
    assert model_role(_card("efficientnet_b3", untrained=True)) == ""
    assert file_name(_card("efficientnet_b3", untrained=True), "onnx") == "efficientnet_b3.onnx"
