"""The defaults of ``wbc-edge data synth``, for the library and its ``--help`` alike: standard
library only, so the CLI shows them without loading OpenCV."""

DEFAULT_PER_CLASS = 100  # crops per class
DEFAULT_SIZE = 128  # crop side in pixels
DEFAULT_DIFFICULTY = 0.5  # 0..1: wider variation within a class, closer classes
DEFAULT_FIELD_SIZE = (640, 480)  # smear field WIDTH, HEIGHT in pixels
