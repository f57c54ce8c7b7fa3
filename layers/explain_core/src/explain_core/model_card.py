"""The model card: a JSON document stored beside each model that says how to use it."""

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


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    version: str
    description: str = ""
    input_height: int = Field(ge=8, le=1024)
    input_width: int = Field(ge=8, le=1024)
    input_channels: Literal[3] = 3
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    #: "logits" when the last layer has no softmax (best for gradient methods).
    output: Literal["logits", "probabilities"] = "logits"
    class_names: list[str] = Field(min_length=2, max_length=10000)
    #: Layer used by Grad-CAM, Grad-CAM++ and FEM; None lets Xplique pick the last conv layer.
    cam_layer: str | None = None
    target: TargetPolicy = Field(default_factory=TargetPolicy)
    #: Methods run when an upload names none, per family.
    default_methods: dict[str, list[str]] = Field(default_factory=dict)
    top_k: int = Field(default=3, ge=1, le=20)

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
