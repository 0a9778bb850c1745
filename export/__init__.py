"""Export: ONNX, INT8 Q/DQ, TensorRT engines, Triton model folders.

The defaults below are the library's and the CLI's (``wbc-edge export --help`` shows them):
written once here, standard library only, so the CLI can show them without loading torch or
onnx.
"""

DEFAULT_OPSET = 17
# TensorRT optimisation profile MIN, OPT, MAX; DLA needs MIN = OPT = MAX (the GPU default's OPT).
DEFAULT_TRT_BATCH = (1, 8, 32)
DEFAULT_DLA_BATCH = (8, 8, 8)
DEFAULT_WORKSPACE_MB = 1024
# INT8 calibration: images (classes interleaved) and the range method.
DEFAULT_CALIB_NUM = 512
DEFAULT_CALIB_METHOD = "entropy"
# The FP32/INT8 latency sweep: batch sizes timed and interleaved rounds.
DEFAULT_SWEEP_BATCHES = (1, 16)
DEFAULT_SWEEP_ROUNDS = 5
