"""The model card: a JSON document stored beside each model that says how to use it.

Every modality shares one card type: ``image`` models (Keras, RGB input of a fixed size) and
``tabular`` models (Keras or XGBoost, one row of named numeric features); each modality plug-in
(:mod:`explain_core.modalities`) checks the fields it needs. The card also names the model file,
which picks the framework handler (:mod:`explain_core.frameworks`): ``model.keras`` (Keras v3,
``safe_mode``), or ``model.json`` / ``model.ubj`` (XGBoost's own formats). Nothing is ever unpickled.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from explain_core.errors import ModelCardError
from explain_core.frameworks import MODEL_FILES, handler_for, handlers_with_output
from explain_core.modalities import MODALITIES, modality_for


class Preprocessing(BaseModel):
    """``x = (pixels * scale - mean) / std`` per channel, applied to RGB uint8 pixels."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    scale: float = 1.0 / 255.0
    mean: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0], min_length=3, max_length=3)
    std: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0], min_length=3, max_length=3)

    @model_validator(mode="after")
    def _std_positive(self):
        if any(s <= 0 for s in self.std):
            raise ValueError("preprocessing.std values must be > 0")
        return self


class TargetPolicy(BaseModel):
    """Which classes are explained when the upload does not say."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["predicted", "top_k"] = "predicted"
    k: int = Field(default=1, ge=1, le=10)


#: The card's file name beside the model: models/<name>/<version>/card.json.
CARD_FILE = "card.json"
MAX_FEATURES = 2000


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    version: str
    description: str = ""
    modality: Literal[tuple(MODALITIES)] = "image"  # type: ignore[valid-type]
    #: The model's file beside the card: it names the framework (XGBoost models are tabular only).
    model_file: Literal[tuple(MODEL_FILES)] = "model.keras"  # type: ignore[valid-type]
    #: Image models: the input size.
    input_height: int | None = Field(default=None, ge=8, le=1024)
    input_width: int | None = Field(default=None, ge=8, le=1024)
    input_channels: Literal[3] = 3
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    #: Tabular models: the features, in the model's column order. Uploaded files may order their
    #: columns freely; they are matched by name. Without them, an XGBoost model's stored names are
    #: used, else the upload's (CSV header, JSON keys) in the file's order.
    feature_names: list[str] | None = Field(default=None, min_length=1, max_length=MAX_FEATURES)
    #: Tabular models: the classes explained when the upload names no target; default: the
    #: positive class (index 1) of a binary model, every class of a multi-class one.
    explained_classes: list[str] | None = Field(default=None, min_length=1, max_length=50)
    #: "logits" when the last layer has no softmax (best for gradient methods); "margin" for
    #: XGBoost's raw score (log-odds; one column for a binary model).
    output: Literal["logits", "probabilities", "margin"] = "logits"
    class_names: list[str] = Field(min_length=2, max_length=10000)
    #: Layer used by Grad-CAM, Grad-CAM++ and FEM; None lets Xplique pick the last conv layer.
    cam_layer: str | None = None
    target: TargetPolicy = Field(default_factory=TargetPolicy)
    #: Methods run when an upload names none, per family.
    default_methods: dict[str, list[str]] = Field(default_factory=dict)
    top_k: int = Field(default=3, ge=1, le=20)

    @model_validator(mode="after")
    def _modality_fields(self):
        modality, handler = modality_for(self), handler_for(self)
        modality.check_card(self)
        if handler.name not in modality.frameworks:
            files = ", ".join(f for f, name in MODEL_FILES.items() if name in modality.frameworks)
            kinds = " or ".join(h.display_name for h in _handlers(modality.frameworks))
            raise ValueError(f"{modality.name} models must be {kinds} models ({files})")
        if self.output not in handler.outputs:
            kinds = " or ".join(h.display_name for h in handlers_with_output(self.output))
            raise ValueError(f'output "{self.output}" is for {kinds} models')
        handler.check_card(self)
        return self

    @property
    def framework(self) -> str:
        return MODEL_FILES[self.model_file]

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) of a model with a fixed input size (images); else None."""
        return None if self.input_height is None or self.input_width is None else (self.input_height, self.input_width)

    def default_explained_classes(self) -> list[int]:
        """Tabular: the class indices explained when the upload names no target."""
        if self.explained_classes:
            return [self.class_names.index(c) for c in self.explained_classes]
        return [1] if len(self.class_names) == 2 else list(range(len(self.class_names)))

    @classmethod
    def from_json(cls, raw: bytes | str, *, model: str, version: str) -> "ModelCard":
        try:
            card = cls.model_validate_json(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<card>'}: {e['msg']}" for e in exc.errors())
            raise ModelCardError(f"model card of {model}/{version} is invalid: {problems}", model=model) from exc
        if (card.name, card.version) != (model, version):
            raise ModelCardError(
                f"model card says {card.name}/{card.version} but is stored as {model}/{version}", model=model
            )
        return card

    def class_name(self, index: int) -> str:
        return self.class_names[index] if 0 <= index < len(self.class_names) else str(index)


def _handlers(names) -> list:
    from explain_core.frameworks import HANDLERS

    return [handler for handler in HANDLERS if handler.name in names]
