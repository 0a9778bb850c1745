"""INT8 post-training quantization: a Q/DQ ONNX calibrated on WBC images.

Calibration images go through the model card's own preprocessing (``card.preprocess``), the
same code the runtime uses, so the ranges are those the deployed model meets. One calibration
pass (ONNX Runtime's calibrators, run here so the statistics are ours) feeds two artifacts:

- the quantized ONNX, with settings per target (:data:`TARGETS`):
  ``tensorrt``: symmetric INT8 activations and weights (zero point 0), per-output-channel
  weight scales, float weights behind Q->DQ pairs and float biases, Q/DQ on the inputs of every
  Conv/Gemm/MatMul and residual Add: the explicit-quantization pattern TensorRT fuses into INT8
  kernels. ``cpu``: what measured fastest at equal accuracy in ONNX Runtime on this project's
  CPU (see ``benchmarks/results/export-int8-cpu.md``);
- a TensorRT calibration cache (:mod:`wbc_edge.export.calib_cache`) for the FP32 ONNX, for the
  implicit-quantization path of TensorRT 8.5-10.x.

Then FP32 and INT8 are run on a held-out split and compared (accuracy, macro-F1, agreement).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.console import console, progress
from wbc_edge.data.manifest import ManifestRow, fingerprint
from wbc_edge.errors import UserError
from wbc_edge.export import calib_cache
from wbc_edge.export.onnx_export import set_metadata
from wbc_edge.metrics import agreement, classification_report
from wbc_edge.optional import require
from wbc_edge.runtime import names
from wbc_edge.runtime.card import ModelCard, Preprocess, read_onnx_card
from wbc_edge.runtime.preprocess import read_image

onnx = require("onnx")
ort = require("onnxruntime")
quant = require("onnxruntime.quantization")
calibrate_mod = require("onnxruntime.quantization.calibrate")

METHODS = {
    "entropy": quant.CalibrationMethod.Entropy,
    "percentile": quant.CalibrationMethod.Percentile,
    "minmax": quant.CalibrationMethod.MinMax,
}
MIN_CALIBRATION_IMAGES = 300  # below this, rare classes barely reach the activation histograms
CALIB_CHUNK = 64  # images per calibrator pass: bounds the intermediate outputs held in memory
CALIB_BATCH = 16
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class QuantSettings:
    """One way to quantize; the fields map onto ``quantize_static`` arguments."""

    name: str
    quant_format: str = "qdq"  # "qdq" or "qoperator"
    activation: str = "s8"  # "s8" (QInt8) or "u8" (QUInt8)
    weight: str = "s8"
    per_channel: bool = True
    reduce_range: bool = False
    symmetric_activations: bool = False
    # None: every op ONNX Runtime can quantize except Softmax (the output probabilities stay
    # float, so confidence thresholds keep their meaning).
    op_types: tuple[str, ...] | None = None
    weight_qdq_pair: bool = False  # keep float weights behind Q->DQ (what TensorRT 8.x parses)
    quantize_bias: bool = True
    # Ops whose outputs stay float: TensorRT wants Q/DQ on the inputs of weighted ops only and
    # fuses the rest; quantized outputs would also round the logits.
    float_outputs: tuple[str, ...] = ()

    def quantize_kwargs(self) -> dict[str, Any]:
        qtype = {"s8": quant.QuantType.QInt8, "u8": quant.QuantType.QUInt8}
        fmt = {"qdq": quant.QuantFormat.QDQ, "qoperator": quant.QuantFormat.QOperator}
        return {
            "quant_format": fmt[self.quant_format],
            "activation_type": qtype[self.activation],
            "weight_type": qtype[self.weight],
            "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
            "op_types_to_quantize": list(self.op_types or _default_op_types()),
            "extra_options": {
                "ActivationSymmetric": self.symmetric_activations,
                "WeightSymmetric": True,
                "AddQDQPairToWeight": self.weight_qdq_pair,
                "QuantizeBias": self.quantize_bias,
                "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
                "CalibTensorRangeSymmetric": self.symmetric_activations,
                "OpTypesToExcludeOutputQuantization": list(self.float_outputs),
            },
        }


TENSORRT = QuantSettings(
    name="tensorrt",
    quant_format="qdq",
    activation="s8",
    per_channel=True,
    symmetric_activations=True,
    op_types=(*WEIGHTED_OPS, "Add"),
    weight_qdq_pair=True,
    quantize_bias=False,
    float_outputs=(*WEIGHTED_OPS, "Add"),
)
# Chosen by measurement (benchmarks/results/export-int8-cpu.md): see CPU_CANDIDATES.
CPU = QuantSettings(name="cpu", quant_format="qdq", activation="u8", per_channel=True)
TARGETS = {"tensorrt": TENSORRT, "cpu": CPU}

# What `export int8-sweep` measures for the cpu target.
CPU_CANDIDATES = (
    QuantSettings("qdq-u8s8-channel", "qdq", "u8", per_channel=True),
    QuantSettings("qdq-u8s8-tensor", "qdq", "u8", per_channel=False),
    QuantSettings("qdq-s8s8-channel", "qdq", "s8", per_channel=True),
    QuantSettings("qdq-s8s8-tensor", "qdq", "s8", per_channel=False),
    QuantSettings("qop-u8s8-channel", "qoperator", "u8", per_channel=True),
    QuantSettings("qop-u8s8-tensor", "qoperator", "u8", per_channel=False),
    QuantSettings("qop-s8s8-channel", "qoperator", "s8", per_channel=True),
)


@dataclass
class Int8Report:
    """FP32 against INT8 on a held-out split, plus what produced the INT8 file."""

    onnx: str
    out: str
    calibration_cache: str
    target: str
    method: str
    settings: dict[str, Any]
    num_calibration: int
    calibration_fingerprint: str
    eval_split: str
    num_eval: int
    fp32: dict[str, float] = field(default_factory=dict)
    int8: dict[str, float] = field(default_factory=dict)
    agreement: float = float("nan")
    fp32_bytes: int = 0
    int8_bytes: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def accuracy_drop_points(self) -> float:
        return 100.0 * (self.fp32.get("accuracy", 0.0) - self.int8.get("accuracy", 0.0))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["accuracy_drop_points"] = self.accuracy_drop_points
        return d


class ImageReader(quant.CalibrationDataReader):
    """Feeds ONNX Runtime's calibrator batches of images prepared exactly as the runtime does."""

    def __init__(
        self,
        paths: Sequence[Path],
        spec: Preprocess,
        input_name: str = "input",
        batch_size: int = 16,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.paths = list(paths)
        self.spec = spec
        self.input_name = input_name
        self.batch_size = batch_size
        self.on_batch = on_batch
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.paths):
            return None
        chunk = self.paths[self._next : self._next + self.batch_size]
        self._next += len(chunk)
        batch = self.spec([_read(p) for p in chunk])
        if self.on_batch:
            self.on_batch(len(chunk))
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._next = 0


def select_calibration_rows(
    rows: Sequence[ManifestRow], num: int, seed: int = 0
) -> list[ManifestRow]:
    """``num`` rows, classes interleaved (round robin over shuffled classes) so every class is
    represented even when ``num`` is small; deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[ManifestRow]] = {}
    for r in sorted(rows, key=lambda r: (r.label, str(r.path))):
        by_class.setdefault(r.label, []).append(r)
    queues = []
    for label in sorted(by_class):
        items = by_class[label]
        queues.append([items[i] for i in rng.permutation(len(items))])
    picked: list[ManifestRow] = []
    depth = 0
    while len(picked) < num and any(depth < len(q) for q in queues):
        picked.extend(q[depth] for q in queues if depth < len(q))
        depth += 1
    return picked[:num]


def calibrate(
    onnx_path: str | Path,
    paths: Sequence[Path],
    spec: Preprocess,
    method: str = "entropy",
    symmetric: bool = True,
) -> Any:
    """ONNX Runtime ``TensorsData``: a calibrated range for every float tensor of the graph.

    Every tensor, not only those the chosen target quantizes, so the TensorRT cache covers the
    whole network. Images go through in chunks: the calibrators hold all intermediate outputs
    of one ``collect_data`` call in memory.
    """
    if method not in METHODS:
        raise UserError(f"unknown calibration method {method!r}: use {', '.join(METHODS)}")
    if not paths:
        raise UserError("no calibration images: the manifest split is empty")
    input_name = _input_name(onnx_path)
    with tempfile.TemporaryDirectory(prefix="wbc-calib-") as tmp:
        calibrator = quant.create_calibrator(
            Path(onnx_path),
            None,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=METHODS[method],
            extra_options={"symmetric": symmetric},
        )
        with progress() as p:
            task = p.add_task(f"calibrate ({method})", total=len(paths), status="")
            for chunk, batch_size in calibration_chunks(len(paths)):
                reader = ImageReader(
                    [paths[i] for i in chunk],
                    spec,
                    input_name,
                    batch_size,
                    on_batch=lambda n: p.advance(task, n),
                )
                with _quiet_ort_logging():
                    calibrator.collect_data(reader)
            p.update(task, status="computing ranges")
            with _quiet_ort_logging():
                ranges = calibrator.compute_data()
        del calibrator
    return ranges


def calibration_chunks(n: int) -> list[tuple[range, int]]:
    """(image indices, batch size) of each calibrator pass.

    Every batch within one pass has the same size (ONNX Runtime stacks a pass's outputs into
    one array), and a pass holds at most CALIB_CHUNK images; the remainder gets its own pass.
    """
    full = n - n % CALIB_BATCH
    chunks = [
        (range(start, min(start + CALIB_CHUNK, full)), CALIB_BATCH)
        for start in range(0, full, CALIB_CHUNK)
    ]
    if n % CALIB_BATCH:
        chunks.append((range(full, n), n - full))
    return chunks


def cache_scales(ranges: Any) -> dict[str, float]:
    """TensorRT scales (amax / 127) of calibrated ranges."""
    scales = {}
    for name, data in ranges.items():
        lo, hi = data.range_value
        scales[name] = calib_cache.scale_from_range(float(np.min(lo)), float(np.max(hi)))
    return scales


def quantize(
    onnx_path: str | Path,
    out: str | Path,
    ranges: Any,
    settings: QuantSettings,
    card_extra: dict[str, Any] | None = None,
    reader_factory: Callable[[], Any] | None = None,
) -> Path:
    """Write the INT8 model with ``settings`` from precomputed ``ranges``; atomic like export.

    An ONNX Runtime whose ``quantize_static`` takes ``calibration_cache_path`` reuses the ranges;
    older ones recalibrate from ``reader_factory()`` with the same images and method, which
    gives the same ranges for every tensor they quantize.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    card = read_onnx_card(onnx_path)
    tmp = out.with_name(out.name + ".tmp")
    kwargs = settings.quantize_kwargs()
    try:
        with tempfile.TemporaryDirectory(prefix="wbc-quant-") as tdir, _quiet_ort_logging():
            src = Path(tdir) / "unshared.onnx"
            onnx.save(unshare_initializers(onnx.load(str(onnx_path))), str(src))
            if _accepts_cache():
                cache_json = Path(tdir) / "ranges.json"
                calibrate_mod.save_tensors_data(ranges, cache_json)
                quant.quantize_static(
                    str(src),
                    str(tmp),
                    None,
                    calibrate_method=ranges.calibration_method,
                    calibration_cache_path=str(cache_json),
                    **kwargs,
                )
            else:
                if reader_factory is None:
                    raise UserError(
                        "this onnxruntime cannot reuse calibration ranges: upgrade onnxruntime"
                    )
                quant.quantize_static(
                    str(src),
                    str(tmp),
                    reader_factory(),
                    calibrate_method=ranges.calibration_method,
                    **kwargs,
                )
        proto = onnx.load(str(tmp))
        qcard = ModelCard.from_dict(card.to_dict())
        qcard.extra = {**card.extra, "precision": "int8", **(card_extra or {})}
        set_metadata(proto, qcard)
        onnx.save(proto, str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def unshare_initializers(proto: Any) -> Any:
    """Give every node its own copy of each constant input.

    The exporter deduplicates equal constants (a second user reads the first through an
    Identity node), so BatchNorm layers that still hold equal statistics fold into convolutions
    that share one bias. ONNX Runtime's quantizer only sees initializers and rewrites a bias per
    node, so it fails on shared or Identity-fed weights. Activations keep their names, so the
    calibrated ranges still apply.
    """
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}

    def add_copy(src: str, name: str) -> None:
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[src])
        copy.name = name
        graph.initializer.append(copy)
        inits[name] = copy

    for node in [n for n in graph.node if n.op_type == "Identity"]:
        if node.input[0] in inits and node.output[0] not in outputs:
            add_copy(node.input[0], node.output[0])
            graph.node.remove(node)
    seen: set[str] = set()
    for index, node in enumerate(graph.node):
        for k, name in enumerate(node.input):
            if name not in inits:
                continue
            if name in seen:
                add_copy(name, f"{name}__{index}_{k}")
                node.input[k] = f"{name}__{index}_{k}"
            else:
                seen.add(name)
    return proto


def quantize_int8(
    onnx_path: str | Path,
    calib_rows: Sequence[ManifestRow],
    eval_rows: Sequence[ManifestRow] | None = None,
    out: str | Path | None = None,
    target: str = "tensorrt",
    method: str = "entropy",
    num: int = 512,
    cache_out: str | Path | None = None,
    eval_split: str = "val",
    seed: int = 0,
) -> Int8Report:
    """Calibrate, quantize, check and compare: the whole ``export int8`` command."""
    if target not in TARGETS:
        raise UserError(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")
    onnx_path = Path(onnx_path)
    card = read_onnx_card(onnx_path)
    if card.extra.get("precision") == "int8":
        raise UserError(f"{onnx_path} is already INT8: quantize the FP32 export instead")
    settings = TARGETS[target]
    out = Path(out) if out else default_out(onnx_path, card, target)
    cache_out = Path(cache_out) if cache_out else default_cache(onnx_path, card)
    picked = select_calibration_rows(calib_rows, num, seed)
    warnings = []
    if len(picked) < MIN_CALIBRATION_IMAGES:
        warnings.append(
            f"only {len(picked)} calibration images (fewer than {MIN_CALIBRATION_IMAGES}): "
            "INT8 ranges may not cover rare cells; pass a larger split or --num"
        )
        console.print(f"[yellow]warning:[/] {warnings[-1]}")
    _check_labels(card, picked, "calibration")
    spec = card.preprocess
    paths = [r.path for r in picked]
    ranges = calibrate(onnx_path, paths, spec, method, symmetric=settings.symmetric_activations)
    calib_cache.write(cache_out, cache_scales(ranges))
    extra = {
        "int8_target": target,
        "calibration_method": method,
        "calibration_images": len(picked),
        "calibration_fingerprint": fingerprint(picked),
    }
    quantize(
        onnx_path,
        out,
        ranges,
        settings,
        extra,
        # batch 1: the fallback calibrator stacks one pass, so every batch must be one size
        reader_factory=lambda: ImageReader(paths, spec, _input_name(onnx_path), batch_size=1),
    )
    if target == "tensorrt":
        problems = check_qdq(onnx.load(str(out)), symmetric=True)
        if problems:
            out.unlink()
            raise UserError(
                "the Q/DQ model is not in TensorRT's explicit-quantization form: "
                + "; ".join(problems[:5])
                + " (file removed; please report it with the ONNX)"
            )
    report = Int8Report(
        onnx=str(onnx_path),
        out=str(out),
        calibration_cache=str(cache_out),
        target=target,
        method=method,
        settings=asdict(settings),
        num_calibration=len(picked),
        calibration_fingerprint=extra["calibration_fingerprint"],
        eval_split=eval_split,
        num_eval=len(eval_rows or []),
        fp32_bytes=onnx_path.stat().st_size,
        int8_bytes=out.stat().st_size,
        warnings=warnings,
    )
    if eval_rows:
        compare_on(report, onnx_path, out, card, eval_rows)
    return report


def compare_on(
    report: Int8Report, fp32: Path, int8: Path, card: ModelCard, rows: Sequence[ManifestRow]
) -> None:
    """Fill ``report`` with FP32 and INT8 accuracy, macro-F1 and top-1 agreement on ``rows``."""
    _check_labels(card, rows, "evaluation")
    y = np.array([card.class_names.index(r.label) for r in rows])
    p32 = predict_probs(fp32, rows, card, "FP32")
    p8 = predict_probs(int8, rows, card, "INT8")
    r32 = classification_report(p32, y, card.class_names)
    r8 = classification_report(p8, y, card.class_names)
    report.fp32 = {"accuracy": r32.accuracy, "macro_f1": r32.macro_f1}
    report.int8 = {"accuracy": r8.accuracy, "macro_f1": r8.macro_f1}
    report.agreement = agreement(p32, p8)


def predict_probs(
    path: str | Path,
    rows: Sequence[ManifestRow],
    card: ModelCard,
    label: str = "predict",
    batch_size: int = 32,
) -> np.ndarray:
    """Class probabilities of an ONNX model (output ``probs``) on manifest images."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name
    spec = card.preprocess
    chunks = []
    with progress() as p:
        task = p.add_task(label, total=len(rows), status="")
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            x = spec([_read(r.path) for r in chunk])
            chunks.append(sess.run(["probs"], {input_name: x})[0])
            p.advance(task, len(chunk))
    return np.concatenate(chunks) if chunks else np.zeros((0, card.num_classes), np.float32)


def check_qdq(
    proto: Any,
    symmetric: bool = True,
    per_channel: bool = True,
    op_types: Sequence[str] = WEIGHTED_OPS,
) -> list[str]:
    """Problems that keep a Q/DQ model from TensorRT's INT8 kernels (empty list: none).

    Every ``op_types`` node needs DequantizeLinear on its data input and on its weight;
    ``symmetric``: every zero point is int8 0; ``per_channel``: one weight scale per output
    channel.
    """
    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
    problems = []
    if symmetric:
        for n in graph.node:
            if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
                zp = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
                if zp is None or zp.dtype != np.int8 or np.any(zp != 0):
                    problems.append(f"{n.name or n.output[0]}: zero point is not int8 0")
    for n in graph.node:
        if n.op_type not in op_types:
            continue
        for idx, role in ((0, "input"), (1, "weight")):
            dq = producer.get(n.input[idx])
            if dq is None or dq.op_type != "DequantizeLinear":
                problems.append(f"{n.name}: {role} {n.input[idx]!r} is not quantized")
                continue
            if role == "weight" and per_channel:
                weight = _weight_of(dq, producer, consts)
                scale = consts.get(dq.input[1])
                if weight is None or scale is None:
                    problems.append(f"{n.name}: weight or scale is not a constant")
                    continue
                out_ch = _out_channels(n, weight)
                if scale.size != out_ch:
                    problems.append(
                        f"{n.name}: {scale.size} weight scale(s) for {out_ch} output channels"
                    )
    return problems


def measure_latency(
    path: str | Path, input_size: int, batch: int = 1, threads: int = 1, runs: int = 30
) -> float:
    """Median milliseconds per batch on this CPU, ``threads`` intra-op threads."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, 3, input_size, input_size))
    feed = {sess.get_inputs()[0].name: x.astype(np.float32)}
    for _ in range(3):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000.0)


def compare_settings(
    onnx_path: str | Path,
    calib_rows: Sequence[ManifestRow],
    eval_rows: Sequence[ManifestRow],
    out_dir: str | Path,
    method: str = "entropy",
    num: int = 512,
    batches: Sequence[int] = (1, 16),
    rounds: int = 5,
) -> list[dict[str, Any]]:
    """FP32, the TensorRT target and every :data:`CPU_CANDIDATES` setting side by side:
    accuracy, macro-F1, agreement with FP32, file size and single-thread CPU latency.

    Latency rounds interleave the models, so load from other processes on a shared machine
    hits them all alike; each figure is the median over rounds of a round's median.
    """
    onnx_path = Path(onnx_path)
    out_dir = Path(out_dir)
    card = read_onnx_card(onnx_path)
    picked = select_calibration_rows(calib_rows, num)
    paths = [r.path for r in picked]
    spec = card.preprocess
    files: dict[str, Path] = {"fp32": onnx_path}
    settings: dict[str, QuantSettings | None] = {"fp32": None}
    for symmetric, group in ((True, (TENSORRT,)), (False, CPU_CANDIDATES)):
        ranges = calibrate(onnx_path, paths, spec, method, symmetric=symmetric)
        for s in group:
            out = out_dir / f"{onnx_path.stem}.{s.name}.onnx"
            files[s.name] = quantize(onnx_path, out, ranges, s)
            settings[s.name] = s
    y = np.array([card.class_names.index(r.label) for r in eval_rows])
    probs = {k: predict_probs(f, eval_rows, card, k) for k, f in files.items()}
    lat: dict[tuple[str, int], list[float]] = {(k, b): [] for k in files for b in batches}
    with progress() as p:
        task = p.add_task("latency", total=rounds * len(lat), status="")
        for _ in range(rounds):
            for k, b in lat:
                lat[k, b].append(measure_latency(files[k], card.preprocess.input_size, batch=b))
                p.advance(task)
    rows = []
    for k, f in files.items():
        rep = classification_report(probs[k], y, card.class_names)
        s = settings[k]
        rows.append(
            {
                "setting": k,
                "default_for": _default_for(s),
                "accuracy": rep.accuracy,
                "macro_f1": rep.macro_f1,
                "agreement_with_fp32": agreement(probs["fp32"], probs[k]),
                "bytes": Path(f).stat().st_size,
                "latency_ms": {str(b): float(np.median(lat[k, b])) for b in batches},
                "settings": asdict(s) if s else {"precision": "fp32"},
            }
        )
    return rows


def _default_for(s: QuantSettings | None) -> str:
    if s is None:
        return ""
    same = [t for t, d in TARGETS.items() if replace(d, name=s.name) == s]
    return ",".join(same)


def default_out(onnx_path: Path, card: ModelCard, target: str) -> Path:
    """Beside the FP32 ONNX, named from its card (:mod:`wbc_edge.runtime.names`):
    ``student-tinyresnet_xs.int8-tensorrt.onnx``."""
    return onnx_path.with_name(names.int8_name(card, target))


def default_cache(onnx_path: Path, card: ModelCard) -> Path:
    """``student-tinyresnet_xs.calib.cache`` (it belongs to the FP32 network)."""
    return onnx_path.with_name(names.calib_cache_name(card))


def _default_op_types() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - {"Softmax"})


def _accepts_cache() -> bool:
    params = inspect.signature(quant.quantize_static).parameters
    return "calibration_cache_path" in params and hasattr(calibrate_mod, "save_tensors_data")


def _input_name(onnx_path: str | Path) -> str:
    proto = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    return next(i.name for i in proto.graph.input if i.name not in inits)


def _weight_of(dq: Any, producer: dict[str, Any], consts: dict[str, np.ndarray]) -> Any:
    src = dq.input[0]
    if src in consts:
        return consts[src]
    q = producer.get(src)
    if q is not None and q.op_type == "QuantizeLinear":
        return consts.get(q.input[0])
    return None


def _out_channels(node: Any, weight: np.ndarray) -> int:
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return int(weight.shape[0] if trans_b else weight.shape[1])
    if node.op_type == "MatMul":
        return int(weight.shape[-1])
    return int(weight.shape[0])


def _check_labels(card: ModelCard, rows: Sequence[ManifestRow], what: str) -> None:
    unknown = sorted({r.label for r in rows} - set(card.class_names))
    if unknown:
        raise UserError(
            f"{what} images have classes the model does not know: {unknown}; "
            f"the model's classes are {card.class_names}"
        )


def _read(path: Path) -> np.ndarray:
    try:
        return read_image(str(path))
    except ValueError as exc:
        raise UserError(f"{exc}: fix or drop it from the manifest") from exc


@contextlib.contextmanager
def _quiet_ort_logging() -> Iterator[None]:
    """Keep ONNX Runtime's quantization chatter off stdout (it prints progress; our bar shows
    it) and drop its advice to pre-process: pre-processing renames tensors, and the TensorRT
    cache must use the FP32 graph's names."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
