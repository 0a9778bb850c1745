"""The models that ship with wbc-edge: the default student as ONNX (package data).

``wbc-edge run FOLDER`` and ``wbc_edge.load()`` use :func:`default_model` when no model is
given. The ONNX carries its card (classes, preprocessing, provenance, test accuracy, intended
use); ``wbc-edge info`` prints it. The checkpoints beside it in the source tree (``*.pt``, the
student it was exported from and its teacher) are not in the wheel: the runtime never needs
torch. ``python -m wbc_edge.models.refresh`` re-exports the default from a new checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from wbc_edge.errors import UserError

MODELS_DIR = Path(__file__).resolve().parent
# Every shipped model, whatever its card says, is for research and engineering only.
INTENDED_USE = (
    "Research and engineering use only: NOT a clinical device. Not validated for diagnosis or "
    "for any decision about a patient."
)


def default_model() -> Path:
    """The packaged default student (one ``student-*.onnx`` in this folder)."""
    found = sorted(MODELS_DIR.glob("student-*.onnx"))
    # An INT8 build or an adapted model exported beside it is not the default.
    found = [p for p in found if ".int8" not in p.name and "-adapted" not in p.name]
    if len(found) != 1:
        raise UserError(
            f"this wbc-edge install has {len(found)} default models in {MODELS_DIR} (expected "
            "one student-*.onnx): pass --model, or reinstall wbc-edge"
        )
    return found[0]
