"""The parts of the manifest that every modality shares, and the rules of how they are written.

The manifest itself (:mod:`explain_core.manifest`) is assembled from these parts and from the
parts each modality plug-in adds (its input, model, predictions and outputs: see
``explain_core/modalities/``). Which keys are written: a field given to the constructor (or
assigned) is written, unless its value is None (absent, not null); ``request_id`` is the one field
written as null. A field left at its default is not written, except those a part lists in
``_always``. A document read keeps exactly its keys, so it re-serialises to the same bytes.

Writers are strict, readers are lenient: constructing a part with an unknown field name is an
error (a typo would otherwise vanish into the JSON), while reading (``from_dict``, and
``Manifest.from_json``) keeps unknown keys (an older or newer writer's) and writes them back.

Nothing here imports the ML stack: the API and authorizer images use it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    model_serializer,
    model_validator,
)

#: Validation context of a document being read: unknown keys are kept instead of refused.
READING = "reading_manifest"


class ManifestPart(BaseModel):
    """A part of the manifest. See the module docstring for which keys are written."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    #: Fields written even when left at their default.
    _always: ClassVar[frozenset[str]] = frozenset()
    #: Fields written as null when set to None (all others are then absent).
    _keep_null: ClassVar[frozenset[str]] = frozenset()

    #: Parts users write inside another model (a card's condition, a request's rendering options) are checked
    #: there too: info.field_name is then the enclosing field's, not an assignment's.
    _known_fields_when_nested: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any, info: ValidationInfo) -> Any:
        """A writer's unknown keyword is an error; a reader (context READING) keeps unknown keys."""
        if (info.field_name is not None and not cls._known_fields_when_nested) or (info.context or {}).get(READING) \
                or not isinstance(data, dict):
            return data  # an assignment, a document read, or a model instance
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise ValueError(cls._unknown_fields_message(unknown))
        return data

    @classmethod
    def _unknown_fields_message(cls, unknown: list[str]) -> str:
        """The refusal of unknown keys (parts users write themselves say which keys there are)."""
        return f"{cls.__name__} has no field(s) {', '.join(unknown)}"

    @classmethod
    def from_dict(cls, document: dict):
        """A stored document (or part of one), unknown keys kept."""
        return cls.model_validate(document, context={READING: True})

    def to_dict(self) -> dict:
        """The JSON document: plain dicts, lists and values, with the keys the rule above writes."""
        return _written(self)


def _written(value: Any) -> Any:
    if isinstance(value, ManifestPart):
        document = {}
        fields_set = value.model_fields_set
        for name in type(value).model_fields:
            field_value = getattr(value, name)
            if name not in fields_set and name not in value._always:
                continue
            if field_value is None and name not in value._keep_null:
                continue
            document[name] = _written(field_value)
        for name, extra in (value.__pydantic_extra__ or {}).items():
            document[name] = _written(extra)
        return document
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {key: _written(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_written(item) for item in value]
    return value


# ------------------------------------------------------------------------------------------ errors
class ErrorDetail(ManifestPart):
    """Why something failed: a method in a manifest, an input (error record), an API request or a job."""

    type: str = Field(description="Exception class, e.g. InvalidParameterError")
    code: str = Field(description="Stable machine-readable code, e.g. unknown_method, over_time_budget, "
                                  "unsupported_model, invalid_model_output, method_failed")
    message: str = Field(description="What went wrong, for a person")
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="Machine-readable specifics of the code (e.g. method, class_name, estimated_seconds); "
                    "absent from a manifest for an unexpected exception (code method_failed)",
    )


# ------------------------------------------------------------------------------------------- input
# Descriptions shared by several fields (here and in explain_core.api_models): ``Annotated[type, X]``.
VERSION_ID = Field(description="S3 version id of the input explained; absent when the bucket is not versioned")


class InputLocation(ManifestPart):
    bucket: str = Field(description="S3 bucket of the input")
    key: str = Field(description="S3 key of the input (incoming/... for uploads, requests/... for the API's "
                                 "inline inputs)")
    etag: str | None = Field(description="ETag of the input version explained (without quotes)")
    version_id: Annotated[str | None, VERSION_ID] = None

    @model_serializer(mode="wrap")
    def _without_absent_version(self, serialize):
        """API responses too leave out version_id for an unversioned bucket (not null), as the manifest does."""
        document = serialize(self)
        if document.get("version_id", "") is None:
            del document["version_id"]
        return document


# ------------------------------------------------------------------------------------------- model
class ModelIdentity(ManifestPart):
    name: str = Field(description="Model name (models/<name>/)")
    version: str = Field(description="Model version (models/<name>/<version>/)")
    etag: str = Field(description="ETag of the model file used")
    card_etag: str | None = Field(description="ETag of the model card (card.json) used")
    modality: str = Field(description="image or tabular (the card's)")
    framework: str = Field(description="The card's framework (keras, xgboost)")


LOADED_FROM = Field(
    description="Where this invocation found the model: memory (warm), tmp (/tmp cache) or s3 (downloaded)")


# ------------------------------------------------------------------------------ classes and outputs
CLASS_INDEX = Field(description="Class index in the model's outputs")
CLASS_NAME = Field(description="Class name from the model card (the index as text without names)")
SCORE = Field(description="Probability of the class (images; absent for tables)")
ATTRIBUTIONS_SHAPE = Field(description="Images: shape of the attributions array")
BASE_VALUE = Field(description="SHAP: the expected model output the attributions add to (in output_kind units)")
OUTPUT_KIND = Field(description="SHAP: what the values explain: logit, probability or log-odds")
ADDITIVITY_MAX_ERROR = Field(
    description="Tables: largest |base value + sum of a row's values - model output| over the rows")


class ClassScore(ManifestPart):
    """A class, with the model's probability for images."""

    class_index: Annotated[int, CLASS_INDEX]
    class_name: Annotated[str, CLASS_NAME]
    score: Annotated[float | None, SCORE] = None


# ------------------------------------------------------------------------------ quality metrics
class MetricScore(ManifestPart):
    """One quality metric's score of one explained class of one method (docs/metrics.md)."""

    model_config = ConfigDict(allow_inf_nan=False)

    score: float | None = Field(default=None, description="The metric's value for this map; absent when it failed")
    higher_is_better: bool = Field(description="True when a higher score means a better explanation "
                                               "(Insertion, MuFidelity, Sparseness)")
    params: dict[str, Any] = Field(description="Parameters used, defaults filled in")
    passes: int | None = Field(default=None, description="Model passes it spent on this map")
    seconds: float | None = Field(default=None, description="Seconds it took per map")
    error: ErrorDetail | None = Field(
        default=None, description="Why there is no score: unknown parameters, over_time_budget, a score that "
                                  "is not a finite number (invalid_model_output), metric_failed")

    _always = frozenset({"higher_is_better", "params"})


METRICS_FIELD = Field(
    description="Quality metrics asked for (metadata metrics, API metrics or the card's default_metrics), by "
                "name: Deletion, Insertion, MuFidelity, AverageStability, Complexity, Sparseness; absent when "
                "none was asked for")
