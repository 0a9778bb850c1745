"""INT8 post-training quantization: a Q/DQ ONNX calibrated on WBC images.

One calibration pass (:mod:`.calibration`; images prepared by the card's own preprocessing)
feeds two artifacts:

- the quantized ONNX (:mod:`.quantization`), with settings per target (:mod:`.settings`,
  :data:`TARGETS`); for ``tensorrt`` the graph is checked to be in TensorRT's
  explicit-quantization form (:mod:`.check`);
- a TensorRT calibration cache (:mod:`wbc_edge.export.calib_cache`) for the FP32 ONNX, for the
  implicit-quantization path of TensorRT 8.5-10.x.

Then FP32 and INT8 are run on a held-out split and compared (:mod:`.compare`: accuracy,
macro-F1, agreement; :mod:`.sweep`: every CPU setting with its latency).

The names below are the public API (``from wbc_edge.export.int8 import quantize_int8``).
"""

from wbc_edge.export.int8.calibration import (
    CALIB_BATCH,
    CALIB_CHUNK,
    METHODS,
    ImageReader,
    cache_scales,
    calibrate,
    calibration_chunks,
    select_calibration_rows,
)
from wbc_edge.export.int8.check import check_qdq
from wbc_edge.export.int8.compare import Int8Report, compare_on, predict_probs
from wbc_edge.export.int8.quantization import (
    default_cache,
    default_out,
    quantize,
    quantize_int8,
    unshare_initializers,
)
from wbc_edge.export.int8.settings import (
    CPU,
    CPU_CANDIDATES,
    MIN_CALIBRATION_IMAGES,
    TARGETS,
    TENSORRT,
    WEIGHTED_OPS,
    QuantSettings,
)
from wbc_edge.export.int8.sweep import compare_settings, measure_latency

__all__ = [
    "CALIB_BATCH",
    "CALIB_CHUNK",
    "CPU",
    "CPU_CANDIDATES",
    "METHODS",
    "MIN_CALIBRATION_IMAGES",
    "TARGETS",
    "TENSORRT",
    "WEIGHTED_OPS",
    "ImageReader",
    "Int8Report",
    "QuantSettings",
    "cache_scales",
    "calibrate",
    "calibration_chunks",
    "check_qdq",
    "compare_on",
    "compare_settings",
    "default_cache",
    "default_out",
    "measure_latency",
    "predict_probs",
    "quantize",
    "quantize_int8",
    "select_calibration_rows",
    "unshare_initializers",
]
