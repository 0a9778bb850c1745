"""The model card: everything needed to use a model file, carried inside every artifact.

A checkpoint holds it as a dict under ``"card"``, an ONNX file as JSON in ``metadata_props``
under :data:`ONNX_METADATA_KEY`, a TensorRT engine in a sidecar ``<engine>.json``.

The card's :class:`Preprocess` is the one declaration of how an image becomes a model input:
training, the teacher cache, INT8 calibration, export parity checks and every runtime backend
call ``card.preprocess`` (its methods are the functions of :mod:`wbc_edge.model.preprocess`),
so they cannot drift apart. Nothing else names an input size, mean or std.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wbc_edge.errors import UserError
from wbc_edge.model import preprocess as _pre
from wbc_edge.model.ood import OodStats
from wbc_edge.model.roles import resolve_roles
from wbc_edge.model.scale import CropScale
from wbc_edge.model.stain import StainReference

# 2: preprocessing nested under "preprocess" (version 1 cards kept it flat; both load).
CARD_VERSION = 2
ONNX_METADATA_KEY = "wbc_edge.card"

CHANNEL_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class Preprocess:
    """How an image (a cell crop, OpenCV BGR uint8) becomes the model's float32 NCHW input.

    The steps, in order: a centred crop (the field of view), a resize to ``input_size`` square,
    the stain normalisation towards ``stain`` when the card has one, the model's channel order,
    then ``(x / 255 - mean) / std``.

    * ``crop_fraction`` - the field of view as a fraction of the source image's side: 1.0 keeps
      the whole image, 0.8 keeps its central 80 %;
    * ``crop_aspect`` - the window's shape as width / height; ``None`` follows the source
      image's own shape (the whole crop is squeezed to a square, which is how the cell crops
      were always prepared), 1.0 is a centred square. The window is the largest one of that
      shape inside the image, scaled by ``crop_fraction``.

    Adding a field: give it a default that means "what models made before it did", so old
    cards keep loading unchanged; :meth:`from_dict` refuses keys it does not know, because a
    model fed without a step it was trained with would be silently wrong.
    """

    input_size: int = 128
    crop_fraction: float = 1.0
    crop_aspect: float | None = None
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    channel_order: str = "RGB"
    interpolation: str = "area"
    # The training crops' scale (median red-cell diameter in px, the crop's field of view in
    # red-cell diameters), measured on the training split: the finder cuts crops of the same
    # field of view from any field. None: not recorded (the finder crops by box + margin).
    crop_scale: CropScale | None = None
    # Reinhard stain normalisation towards the training crops' Lab statistics
    # (:mod:`wbc_edge.model.stain`), fitted at training time. None: no normalisation (every
    # card made before it existed).
    stain: StainReference | None = None

    def __post_init__(self) -> None:
        # Frozen: normalise through object.__setattr__ (lists from JSON become tuples).
        object.__setattr__(self, "input_size", int(self.input_size))
        object.__setattr__(self, "crop_fraction", float(self.crop_fraction))
        if self.crop_aspect is not None:
            object.__setattr__(self, "crop_aspect", float(self.crop_aspect))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if isinstance(self.crop_scale, dict):
            object.__setattr__(self, "crop_scale", CropScale.from_dict(self.crop_scale))
        if isinstance(self.stain, dict):
            object.__setattr__(self, "stain", StainReference.from_dict(self.stain))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise UserError("model card: mean and std need three values (one per channel)")
        # A zero, negative or non-finite std turns inputs into NaN or inf, and NaN
        # probabilities would pass as confident cells (NaN < threshold is False).
        if not all(math.isfinite(v) for v in self.mean):
            raise UserError(f"model card: mean must be finite numbers, not {list(self.mean)}")
        if not all(math.isfinite(v) and v > 0 for v in self.std):
            raise UserError(f"model card: std must be finite and positive, not {list(self.std)}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise UserError(
                f"model card: channel_order must be RGB or BGR, not {self.channel_order}"
            )
        if self.interpolation not in _pre.INTERPOLATIONS:
            raise UserError(
                f"model card: interpolation must be one of {', '.join(_pre.INTERPOLATIONS)}, "
                f"not {self.interpolation}"
            )
        if not 8 <= self.input_size <= 4096:  # below a few pixels no cell can be seen
            raise UserError(f"model card: input_size must be 8..4096 pixels, not {self.input_size}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise UserError(
                f"model card: crop_fraction must be in (0, 1], not {self.crop_fraction}"
            )
        if self.crop_aspect is not None and self.crop_aspect <= 0:
            raise UserError(f"model card: crop_aspect must be positive, not {self.crop_aspect}")

    # -- the transform ------------------------------------------------------------------------

    def resize(self, image_bgr: np.ndarray) -> np.ndarray:
        """Decode-time work: crop, resize, stain, channel order -> uint8 ``input_size`` HxWx3."""
        return _pre.crop_resize(image_bgr, self)

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """uint8 NHWC (model channel order) -> float32 NCHW, the one definition."""
        return _pre.normalize(batch, self.mean, self.std)

    @functools.cached_property
    def lut(self) -> _pre.LutNormalizer:
        """:meth:`normalize` as a lookup table (bit-identical, several times faster)."""
        return _pre.LutNormalizer(self)

    @functools.cached_property
    def fused(self) -> _pre.FusedPreprocess:
        """:meth:`resize` then :attr:`lut` in one pass per image, into a batch buffer
        (bit-identical to them; what the runtime runs)."""
        return _pre.FusedPreprocess(self)

    def __call__(self, images_bgr: list[np.ndarray]) -> np.ndarray:
        """BGR uint8 images of any size -> float32 NCHW batch."""
        return self.fused(images_bgr)

    def decode_key(self) -> str:
        """The fields the uint8 decode step depends on, for naming caches of decoded images.

        A crop-less spec keeps the name caches had before crops existed, so they stay valid.
        """
        key = f"{self.input_size}-{self.interpolation}-{self.channel_order}"
        if self.crop_fraction != 1.0 or self.crop_aspect is not None:
            key += f"-crop{self.crop_fraction:g}x{self.crop_aspect or 0:g}"
        if self.stain is not None:
            key += "-" + self.stain.key()
        return key

    # -- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["crop_scale"] = self.crop_scale.to_dict() if self.crop_scale else None
        d["stain"] = self.stain.to_dict() if self.stain else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(
                f"model card: preprocessing step(s) {unknown} are unknown to this wbc-edge: "
                "upgrade wbc-edge to run this model"
            )
        return cls(**d)

    def replace(self, **changes: Any) -> Preprocess:
        return dataclasses.replace(self, **changes)


# Version 1 cards kept these at the top level of the card.
_FLAT_PREPROCESS_KEYS = ("input_size", "mean", "std", "channel_order", "interpolation")


@dataclass
class ModelCard:
    """Typed description of a trained classifier (the idea of timm's PretrainedCfg)."""

    architecture: str
    class_names: list[str]
    preprocess: Preprocess = field(default_factory=Preprocess)
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
    # Appearance statistics of the training crops for the out-of-distribution score
    # (:mod:`wbc_edge.model.ood`); None: the model cannot tell (older cards).
    ood: OodStats | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # class -> role (wbc_edge/model/roles.py): what the differential counts each class as. A card
    # without roles (written before they existed) gets them derived from the class names.
    roles: dict[str, str] = field(default_factory=dict)
    # What the model was trained on, one entry per lab: {lab, source, terms, images (per
    # split), classes (image counts)} (wbc_edge.data.labs.training_data). Empty: not recorded
    # (a single-lab run of an older wbc-edge; its data_fingerprint still names the data).
    training_data: list[dict[str, Any]] = field(default_factory=list)
    card_version: int = CARD_VERSION

    def __post_init__(self) -> None:
        self.class_names = list(self.class_names)
        if isinstance(self.preprocess, dict):
            self.preprocess = Preprocess.from_dict(self.preprocess)
        if isinstance(self.ood, dict):
            self.ood = OodStats.from_dict(self.ood)
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
        if len(set(self.class_names)) != len(self.class_names):
            raise UserError(f"model card: class_names repeat a name ({self.class_names})")
        self.roles = resolve_roles(self.class_names, self.roles)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        d["ood"] = self.ood.to_dict() if self.ood else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        known = {f for f in cls.__dataclass_fields__}
        missing = {"architecture", "class_names"} - set(d)
        if missing:
            raise UserError(
                f"model card lacks {sorted(missing)}: re-export the model with wbc-edge"
            )
        values = {k: v for k, v in d.items() if k in known}
        if "preprocess" not in d:  # a version 1 card: preprocessing at the top level
            values["preprocess"] = {k: d[k] for k in _FLAT_PREPROCESS_KEYS if k in d}
        values["card_version"] = CARD_VERSION  # read into, and written back as, this version
        try:
            return cls(**values)
        except TypeError as exc:
            raise UserError(f"model card is malformed ({exc})") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        return cls.from_dict(json.loads(text))


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


def card_from_session(session: Any, onnx_path: str | Path) -> ModelCard:
    """The card of an open ``onnxruntime.InferenceSession`` (so a backend loads its model once;
    ``wbc_edge.model.backends.onnxruntime.read_onnx_card`` reads a file's card)."""
    meta = session.get_modelmeta().custom_metadata_map
    if ONNX_METADATA_KEY not in meta:
        raise UserError(
            f"{onnx_path} carries no wbc-edge model card: export it with `wbc-edge export onnx`"
        )
    try:
        payload = json.loads(meta[ONNX_METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{onnx_path}: its model card ({ONNX_METADATA_KEY} in the ONNX metadata) is not valid "
            f"JSON ({exc.msg} at character {exc.pos}): export the model again with `wbc-edge "
            "export onnx`"
        ) from exc
    if not isinstance(payload, dict):
        raise UserError(
            f"{onnx_path}: its model card is a JSON {type(payload).__name__}, not an object: "
            "export the model again with `wbc-edge export onnx`"
        )
    try:
        return ModelCard.from_dict(payload)
    except UserError as exc:
        raise UserError(f"{onnx_path}: {exc}") from exc
