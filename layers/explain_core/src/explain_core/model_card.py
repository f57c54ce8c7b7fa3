"""The model card: a JSON document stored beside each model that says how to use it.

Two modalities share one card type: ``image`` models (Keras, RGB input of a fixed size) and
``tabular`` models (Keras or XGBoost, one row of named numeric features). The card also names
the model file, which fixes the loader: ``model.keras`` (Keras v3, ``safe_mode``), or
``model.json`` / ``model.ubj`` (XGBoost's own formats). Nothing is ever unpickled.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from explain_core.errors import ModelCardError


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
#: Model files the store loads, and the framework each one means.
MODEL_FILES = {"model.keras": "keras", "model.json": "xgboost", "model.ubj": "xgboost"}
MAX_FEATURES = 2000


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    version: str
    description: str = ""
    modality: Literal["image", "tabular"] = "image"
    #: The model's file beside the card; XGBoost models are tabular only.
    model_file: Literal["model.keras", "model.json", "model.ubj"] = "model.keras"
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
        if self.modality == "image":
            if self.input_height is None or self.input_width is None:
                raise ValueError("an image model needs input_height and input_width")
            if self.framework != "keras":
                raise ValueError("image models must be Keras models (model.keras)")
        else:
            if self.feature_names and len(set(self.feature_names)) != len(self.feature_names):
                raise ValueError("feature_names must be unique")
            unknown = [c for c in self.explained_classes or () if c not in self.class_names]
            if unknown:
                raise ValueError(f"explained_classes {unknown} are not in class_names")
        if self.output == "margin" and self.framework != "xgboost":
            raise ValueError('output "margin" is for XGBoost models')
        return self

    @property
    def framework(self) -> str:
        return MODEL_FILES[self.model_file]

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) of an image model; None for a tabular one."""
        return (self.input_height, self.input_width) if self.modality == "image" else None

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
