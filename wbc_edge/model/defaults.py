"""The model core's defaults, each declared once; the run options (``wbc_edge.runtime.options``)
and the Python API take them from here. Standard library only, so ``--help`` can show them
without loading numpy, OpenCV or a backend."""

FALLBACK_THRESHOLD = 0.5  # review threshold for a model whose card certifies none
TOPK = 3  # classes each result lists (the records' top3)
# Smear fields: crop margin as a fraction of the cell's box side, for cards without a crop
# scale (with one, crops span the card's field of view in red cells).
MARGIN = 0.15
DEVICE = "auto"  # an accelerator when one is present, else the CPU
THREADS = 0  # ONNX Runtime CPU threads; 0: half the cores (decoding needs the rest)
RULER_EVERY = 30  # a stream measures its red-cell ruler on one frame in this many (a second)
