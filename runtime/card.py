"""The model card: everything needed to use a model file, carried inside every artifact.

A checkpoint holds it as a dict under ``"card"``, an ONNX file as JSON in ``metadata_props``
under :data:`ONNX_METADATA_KEY`, a TensorRT engine in a sidecar ``<engine>.json``. Training,
calibration and deployment all build their preprocessing from the card
(:meth:`ModelCard.preprocess_spec`), so they cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wbc_edge.errors import UserError

CARD_VERSION = 1
ONNX_METADATA_KEY = "wbc_edge.card"

# Classes whose presence in blood suggests leukaemia or another marrow disorder. The runtime
# flags them by default; "blast" matches Myeloblast, Lymphoblast, ... by substring.
DEFAULT_IMMATURE = ("Promyelocyte", "ImmatureGranulocyte", "Erythroblast", "blast")


@dataclass
class ModelCard:
    """Typed description of a trained classifier (the idea of timm's PretrainedCfg)."""

    architecture: str
    class_names: list[str]
    input_size: int = 128
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    channel_order: str = "RGB"
    interpolation: str = "area"
    data_fingerprint: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    # Probabilities are softmax(logits / temperature) everywhere (backends and the ONNX graph);
    # fitted on the validation split by `wbc-edge calibrate` or at the end of training.
    temperature: float = 1.0
    # Cells whose top probability is below this go to review; set on the validation split so
    # the counted cells' error stays at or below ``calibration["target_error"]``. None: no
    # threshold could be certified (the runtime then uses its plain default).
    confidence_threshold: float | None = None
    calibration: dict[str, Any] = field(default_factory=dict)  # how both were chosen
    extra: dict[str, Any] = field(default_factory=dict)
    card_version: int = CARD_VERSION

    def __post_init__(self) -> None:
        self.class_names = list(self.class_names)
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        if len(self.mean) != 3 or len(self.std) != 3:
            raise UserError("model card: mean and std need three values (one per channel)")
        if self.channel_order not in ("RGB", "BGR"):
            raise UserError(
                f"model card: channel_order must be RGB or BGR, not {self.channel_order}"
            )
        if not self.class_names:
            raise UserError("model card: class_names is empty")
        self.temperature = float(self.temperature)
        if not self.temperature > 0:
            raise UserError(f"model card: temperature must be > 0, not {self.temperature}")
        if self.confidence_threshold is not None:
            self.confidence_threshold = float(self.confidence_threshold)
            if not 0.0 <= self.confidence_threshold <= 1.0:
                raise UserError(
                    "model card: confidence_threshold must be between 0 and 1, "
                    f"not {self.confidence_threshold}"
                )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        known = {f for f in cls.__dataclass_fields__}
        missing = {"architecture", "class_names"} - set(d)
        if missing:
            raise UserError(
                f"model card lacks {sorted(missing)}: re-export the model with wbc-edge"
            )
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        return cls.from_dict(json.loads(text))

    def preprocess_spec(self):  # -> PreprocessSpec (imported lazily to keep modules acyclic)
        from wbc_edge.runtime.preprocess import PreprocessSpec

        return PreprocessSpec(
            input_size=self.input_size,
            mean=self.mean,
            std=self.std,
            channel_order=self.channel_order,
            interpolation=self.interpolation,
        )


def sidecar_path(model_path: str | Path) -> Path:
    """Where an artifact's sidecar card lives: ``student.engine`` -> ``student.engine.json``."""
    p = Path(model_path)
    return p.with_name(p.name + ".json")


def write_sidecar(model_path: str | Path, card: ModelCard, **fields: Any) -> Path:
    """Write the card (plus extra top-level fields, e.g. TensorRT version) beside a model file."""
    path = sidecar_path(model_path)
    payload = {"card": card.to_dict(), **fields}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))
    return path


def read_sidecar(model_path: str | Path) -> tuple[ModelCard, dict[str, Any]]:
    """Read ``<model>.json``; returns the card and the other fields."""
    path = sidecar_path(model_path)
    if not path.is_file():
        raise UserError(
            f"{model_path} has no sidecar card {path.name}: rebuild it with `wbc-edge build-engine`"
        )
    try:
        payload = json.loads(path.read_text())
        card = ModelCard.from_dict(payload.pop("card"))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a wbc-edge sidecar card ({exc})") from exc
    return card, payload


def read_onnx_card(onnx_path: str | Path) -> ModelCard:
    """Read the card from an ONNX file's ``metadata_props`` with onnxruntime (no onnx needed)."""
    from wbc_edge.optional import require

    ort = require("onnxruntime")
    try:
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UserError(f"{onnx_path} is not a readable ONNX model ({exc})") from exc
    meta = sess.get_modelmeta().custom_metadata_map
    if ONNX_METADATA_KEY not in meta:
        raise UserError(
            f"{onnx_path} carries no wbc-edge model card: export it with `wbc-edge export onnx`"
        )
    return ModelCard.from_json(meta[ONNX_METADATA_KEY])
