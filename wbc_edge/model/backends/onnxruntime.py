"""ONNX Runtime backend: CPU everywhere, CUDA or TensorRT execution providers when present.

The card comes from the file's metadata, so an ``.onnx`` file is all a deployment needs. An
export with a fixed batch dimension still accepts any batch: it is run in chunks of that size.
The backend reports the providers the session really got (``providers``, most preferred first):
onnxruntime falls back to the CPU without an error when a GPU provider cannot start.

``onnxruntime`` and ``onnxruntime-gpu`` from PyPI have no CUDA provider on aarch64, so on a
Jetson the GPU build comes from NVIDIA's Jetson AI Lab wheel index, the one jetson-containers
installs from (:data:`JETSON_AI_LAB_INDEX`).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.console import console
from wbc_edge.errors import UserError
from wbc_edge.model.backends import BackendBase, output_to_read, softmax
from wbc_edge.model.card import ModelCard, card_from_session
from wbc_edge.model.defaults import DEVICE, THREADS
from wbc_edge.optional import require

# Most capable first; onnxruntime falls back along the list when one cannot start.
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
# JetPack 6 (CUDA 12.6); jetson-containers' PIP_INDEX_URL for JetPack 6.1/6.2.
JETSON_AI_LAB_INDEX = "https://pypi.jetson-ai-lab.dev/jp6/cu126"


def gpu_install_hint(machine: str | None = None) -> str:
    """Where an onnxruntime with the CUDA provider comes from on this kind of machine."""
    machine = machine or platform.machine()
    if machine == "aarch64":
        return (
            "PyPI's onnxruntime wheels are CPU-only on aarch64; on a Jetson install NVIDIA's "
            f"build: pip install onnxruntime-gpu --index-url {JETSON_AI_LAB_INDEX} "
            "(Jetson AI Lab), or run a TensorRT engine (`wbc-edge build-engine`)"
        )
    return "install onnxruntime-gpu (and CUDA/cuDNN) or use --device cpu"


def choose_providers(available: list[str], device: str) -> list[str]:
    """Execution providers for ``device`` ("auto", "cpu" or "cuda") among those installed."""
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"unknown device {device!r}: use auto, cpu or cuda")
    gpu = [p for p in _GPU_PROVIDERS if p in available]
    if device == "cuda" and not gpu:
        raise UserError(
            "--device cuda: this onnxruntime has no CUDA provider "
            f"(it has {', '.join(available)}): {gpu_install_hint()}"
        )
    return ([] if device == "cpu" else gpu) + ["CPUExecutionProvider"]


def open_session(
    model: str | Path | bytes,
    device: str = DEVICE,
    threads: int = THREADS,
    optimize: bool = True,
    where: str | Path | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` on the providers for ``device``: the one place a
    session is made (the backend, :func:`read_onnx_card` and ``benchmarks.cost``'s probe of
    inner tensor shapes all come here), so every model runs with the same settings.

    ``model`` is a file or a serialized graph (``where`` then names it in messages).
    ``threads`` = 0 gives the model half the cores on CPU (the pipeline's decoding and resizing
    need the other half) and lets onnxruntime decide with a GPU provider. ``optimize`` False
    runs the graph as written, so inner tensors keep the names and shapes the file gives them.
    """
    ort = require("onnxruntime")
    providers = choose_providers(ort.get_available_providers(), device)
    options = ort.SessionOptions()
    if threads == 0 and providers == ["CPUExecutionProvider"]:
        threads = max(1, (os.cpu_count() or 2) // 2)
    options.intra_op_num_threads = threads
    # Idle intra-op threads spinning for work would steal the cores decoding needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    else:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3  # a shape probe: warnings about its extra outputs are noise
    try:
        return ort.InferenceSession(
            model if isinstance(model, bytes) else str(model), options, providers=providers
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UserError(
            f"{where or model} is not a readable ONNX model, or onnxruntime cannot load it ({exc})"
        ) from exc


def saturating_u8s8_cpu(cpuinfo: str | None = None) -> bool:
    """True on an x86 CPU whose U8S8 kernels saturate 8-bit weights
    (:func:`wbc_edge.records.saturates_u8s8`; the packaged student lost 14 points there).
    ``cpuinfo``: that file's text (this machine's when None); machines it cannot tell count as
    safe."""
    from wbc_edge.records import cpu_flags, saturates_u8s8

    if cpuinfo is None and platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return saturates_u8s8(cpu_flags(cpuinfo))


def int8_saturation_warning(card: ModelCard, path: str | Path, cpuinfo: str | None = None) -> str:
    """A warning for an INT8 CPU export with 8-bit weights on a CPU that saturates them ("" when
    there is nothing to say). Exports before 7-bit weights carry no ``int8_weight_bits``: 8."""
    x = card.extra
    if x.get("int8_target") != "cpu" or int(x.get("int8_weight_bits", 8)) <= 7:
        return ""
    if not saturating_u8s8_cpu(cpuinfo):
        return ""
    return (
        f"{path} has 8-bit INT8 weights, and this CPU (AVX2 without VNNI) saturates them in "
        "ONNX Runtime: its accuracy can fall far (14 points for the packaged student, "
        "benchmarks/results/export-int8-cpu.md). Export it again with `wbc-edge export int8 "
        "--target cpu` (7-bit weights), or run the FP32 .onnx"
    )


def read_onnx_card(path: str | Path) -> ModelCard:
    """The model card in an ONNX file's metadata, through the backend's session on the CPU (no
    ``onnx`` package needed). To run the model as well, open a backend: it reads the card from
    its own session, so the file is loaded once."""
    return card_from_session(open_session(path, device="cpu", threads=1), path)


class OnnxRuntimeBackend(BackendBase):
    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str = DEVICE, threads: int = THREADS) -> None:
        """``device`` and ``threads`` as :func:`open_session` takes them."""
        super().__init__()
        self.path = Path(path)
        self.session = open_session(self.path, device, threads)
        self.card = card_from_session(self.session, self.path)  # one load: card and weights
        self.providers = self.session.get_providers()
        if self.providers[0] == "CPUExecutionProvider":
            warning = int8_saturation_warning(self.card, self.path)
            if warning:
                console.print(f"[yellow]warning:[/] {warning}")
        if device == "cuda" and not set(self.providers) & set(_GPU_PROVIDERS):
            raise UserError(
                f"{self.path}: --device cuda, but onnxruntime could not start its CUDA provider "
                "and fell back to the CPU (CUDA or cuDNN libraries missing?); see its warnings "
                "above, or use --device cpu"
            )
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        fixed = first.shape[0]
        self.fixed_batch = fixed if isinstance(fixed, int) and fixed > 0 else None
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = output_to_read(outputs)

    def run_outputs(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output of the graph, raw (logits and probs), in the graph's order: what an
        export parity check compares; classification uses :meth:`predict`."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})

    def _run(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: batch})[0]
        return out if self.output_name == "probs" else softmax(out, self.card.temperature)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        step = self.fixed_batch
        if step is None or len(batch) == step:
            return self._run(batch)
        parts = []
        for i in range(0, len(batch), step):
            chunk = batch[i : i + step]
            n = len(chunk)
            if n < step:  # pad the last chunk to the fixed size, keep only real rows
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - n, axis=0)])
            parts.append(self._run(chunk)[:n])
        return np.concatenate(parts)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
