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
from explain_core.explain_condition import ExplainIf, check_card_condition
from explain_core.frameworks import MODEL_FILES, handler_for, handlers_named, handlers_with_output
from explain_core.frameworks.sagemaker import ARCHIVE_FILE
from explain_core.modalities import MODALITIES, modality_for


class TargetPolicy(BaseModel):
    """Which classes are explained when the upload does not say."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["predicted", "top_k"] = "predicted"
    k: int = Field(default=1, ge=1, le=10)


#: The card's file name beside the model: models/<name>/<version>/card.json.
CARD_FILE = "card.json"


class ModelArtifact(BaseModel):
    """Where the model is inside ``model.tar.gz`` (a SageMaker training artifact), and what to call."""

    model_config = ConfigDict(extra="forbid")
    #: A .keras file or a SavedModel folder inside the archive (e.g. "model/1"); None: its only one.
    path: str | None = Field(default=None, min_length=1, max_length=1024)
    #: The SavedModel signature explained.
    signature: str = Field(default="serving_default", min_length=1, max_length=256)
    #: The signature's output holding the class scores; None: its only output.
    output: str | None = Field(default=None, min_length=1, max_length=256)


class CardIdentity(BaseModel):
    """What a card is about: the model, its kind and its file."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    description: str = ""
    modality: Literal[tuple(MODALITIES)] = "image"  # type: ignore[valid-type]
    #: The model's file beside the card: it names the framework (XGBoost models are tabular only).
    model_file: Literal[tuple(MODEL_FILES)] = "model.keras"  # type: ignore[valid-type]
    #: model.tar.gz only: the model's place in the archive and the SavedModel signature (docs/models.md).
    artifact: ModelArtifact | None = None


# Bases in reverse so that pydantic, which collects fields from the last base first, orders a
# card's fields as people read them: identity, each modality's fields, then the rest.
class ModelCard(*reversed([modality.card_fields for modality in MODALITIES.values()]), CardIdentity):
    """One card type for every modality: its identity, the fields each modality plug-in declares
    (``card_fields``: an image model's input size, a table's feature names, ...) and the fields below."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    #: "logits" when the last layer has no softmax (best for gradient methods); "margin" for
    #: XGBoost's raw score (log-odds; one column for a binary model).
    output: Literal["logits", "probabilities", "margin"] = "logits"
    class_names: list[str] = Field(min_length=2, max_length=10000)
    target: TargetPolicy = Field(default_factory=TargetPolicy)
    #: Methods run when an upload names none, per family.
    default_methods: dict[str, list[str]] = Field(default_factory=dict)
    #: Quality metrics scoring every explanation when an upload names none (docs/metrics.md); empty: none.
    default_metrics: list[str] = Field(default_factory=list, max_length=20)
    top_k: int = Field(default=3, ge=1, le=20)
    #: Explain only inputs (images, table rows and text documents) whose prediction meets this condition, unless
    #: a request sets its own (docs/outputs.md#explain-only-what-is-asked); None: every input.
    explain_if: ExplainIf | None = None

    @model_validator(mode="after")
    def _modality_fields(self):
        modality, handler = modality_for(self), handler_for(self)
        modality.check_card(self)
        if handler.name not in modality.frameworks:
            files = ", ".join(f for f, name in MODEL_FILES.items() if name in modality.frameworks)
            kinds = " or ".join(dict.fromkeys(h.display_name for h in handlers_named(modality.frameworks)))
            raise ValueError(f"{modality.name} models must be {kinds} models ({files})")
        if self.output not in handler.outputs:
            kinds = " or ".join(dict.fromkeys(h.display_name for h in handlers_with_output(self.output)))
            raise ValueError(f'output "{self.output}" is for {kinds} models')
        if self.artifact is not None and self.model_file != ARCHIVE_FILE:
            raise ValueError("artifact describes a model.tar.gz; this card's model_file is " + self.model_file)
        check_card_condition(self.explain_if, self.class_names)
        if self.default_metrics:
            from explain_core.errors import ExplainError
            from explain_core.quality_metrics import check_metric_names

            try:
                check_metric_names(self.default_metrics, self.modality)
            except ExplainError as exc:
                raise ValueError(f"default_metrics: {exc.message}") from exc
        return self

    @property
    def framework(self) -> str:
        return MODEL_FILES[self.model_file]

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

    @property
    def passes_size(self) -> tuple:
        """The input size the registry's pass counts read (see Modality.passes_size)."""
        return modality_for(self).passes_size(self)

    def class_name(self, index: int) -> str:
        return self.class_names[index] if 0 <= index < len(self.class_names) else str(index)
