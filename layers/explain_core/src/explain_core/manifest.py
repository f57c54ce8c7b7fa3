"""The manifest: what one explained input produced, as typed models (pydantic). Defined once here.

``results/<family>/<model>/<version>/<input>/manifest.json`` is written last by the family
function (its presence means every output it lists is in place) and read back by the API (a
cached answer, a job's result). The API's response models (explain_core.api_models) reuse these
classes, so openapi.json documents the same fields; each Field's description is the
documentation of that manifest field.

Models (fields in the order they are written; ``?`` = absent from the JSON when not given)::

    Manifest            status, family, input, model, predictions, explained_classes, methods,
                        background?, timings, versions, results_prefix, attempt,
                        request_id, created_at, output_keys
    ImageInput          bucket, key, etag, version_id?, format, width, height, source_mode, conversions
    TableInput          bucket, key, etag, version_id?, format, rows, columns, feature_names_from
    ImageModel          name, version, etag, card_etag, modality="image", framework, input_size, loaded_from
    TableModel          name, version, etag, card_etag, modality="tabular", framework, features, loaded_from
    ClassScore          class_index, class_name, score?          (score: images only)
    TablePredictions    rows_per_class                           (tables' ``predictions``)
    MethodEntry         name, params, passes_per_image, reference, status="succeeded", outputs=[],
                        error?, seconds?, seconds_per_image?, batch_rows?
    ImageOutput         class_index, class_name, score, heatmap, attributions, attributions_shape,
                        base_value?, output_kind?                (the last two: SHAP only)
    TableOutput         class_index, class_name, output_kind, base_value, additivity_max_error,
                        summary, files
    ErrorDetail         type, code, message, details?            (also the API's error object)
    BackgroundDescription  source, rows?, etag?, description?

Unions: ``InputDescription`` (ImageInput | TableInput, told apart by their fields),
``ModelDescription`` (ImageModel | TableModel, by ``modality``), ``Predictions``
(list[ClassScore] | TablePredictions), ``OutputEntry`` (ImageOutput | TableOutput).

Writing (the family session)::

    entry = MethodEntry(name=spec.name, params=params, passes_per_image=..., reference=spec.reference)
    entry.outputs.append(ImageOutput(...))      # or TableOutput(...)
    entry.status = "failed"; entry.error = ErrorDetail(**exc.to_dict())
    manifest = Manifest(status=..., family=..., input=ImageInput(...), model=ImageModel(...), ...)
    manifest.request_id = ...; manifest.created_at = ...; manifest.output_keys = [...]
    manifest.timings["write_s"] = ...
    body = manifest.to_json_bytes()             # strict JSON, the bytes of manifest.json
    document = manifest.to_dict()               # the same, as a dict (ResultWriter.put_manifest)

Reading: ``Manifest.from_json(body)`` (bytes or str) or ``Manifest.from_dict(document)``.

Which keys are written (the JSON of every manifest written so far must keep reading, and a new
one must look the same): a field given to the constructor (or assigned) is written, unless its
value is None (absent, not null: ``version_id``, ``base_value`` on gradient outputs, ``error``
on a succeeded method, ``background`` outside the SHAP family ...); ``request_id`` is the one
field written as null. A field left at its default is not written (``ErrorDetail.details`` of an
unexpected exception), except ``MethodEntry.status``, ``MethodEntry.outputs``,
``ImageInput.conversions`` and ``Manifest.output_keys``. A document read keeps exactly its keys,
so it re-serialises to the same bytes (tests/data/manifests holds manifests of every kind).

Writers are strict, readers are lenient: constructing a model with an unknown field name is an
error (a typo would otherwise vanish into the JSON), while ``from_json`` / ``from_dict`` keep
unknown keys (an older or newer writer's) and write them back unchanged.

Nothing here imports the ML stack: the API and authorizer images use it.
"""

from __future__ import annotations

import posixpath
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    model_serializer,
    model_validator,
)

from explain_core.registry import FAMILIES

#: Validation context of a document being read: unknown keys are kept instead of refused.
READING = "reading_manifest"

Family = Literal[FAMILIES]  # type: ignore[valid-type]


class _Document(BaseModel):
    """A part of the manifest. See the module docstring for which keys are written."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    #: Fields written even when left at their default.
    _always: ClassVar[frozenset[str]] = frozenset()
    #: Fields written as null when set to None (all others are then absent).
    _keep_null: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any, info: ValidationInfo) -> Any:
        """A writer's unknown keyword is an error; a reader (context READING) keeps unknown keys."""
        if info.field_name is not None or (info.context or {}).get(READING) or not isinstance(data, dict):
            return data  # an assignment, a document read, or a model instance
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
        return data

    @classmethod
    def from_dict(cls, document: dict):
        """A stored document (or part of one), unknown keys kept."""
        return cls.model_validate(document, context={READING: True})

    def to_dict(self) -> dict:
        """The JSON document: plain dicts, lists and values, with the keys the rule above writes."""
        return _written(self)


def _written(value: Any) -> Any:
    if isinstance(value, _Document):
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
class ErrorDetail(_Document):
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


class _InputLocation(_Document):
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


class ImageInput(_InputLocation):
    """An image input: where it was read from and what decoding it did (docs/inputs.md)."""

    format: str = Field(description="Image format detected from the bytes (JPEG, PNG, WEBP, BMP, GIF)")
    width: int = Field(description="Width in pixels after EXIF rotation (before resizing to the model)")
    height: int = Field(description="Height in pixels after EXIF rotation (before resizing to the model)")
    source_mode: str = Field(description="Pillow mode of the decoded file (RGB, RGBA, L, P, I;16, CMYK, ...)")
    conversions: dict[str, Any] = Field(
        default_factory=dict,
        description="Conversions applied to reach 8-bit sRGB, empty for an ordinary RGB or greyscale image: "
                    "scaled_from ([min, max] of a 16-bit or float image), reduced_to_8_bit, icc_profile, "
                    "icc_profile_description, cmyk, alpha, exif_orientation (docs/inputs.md)",
    )

    _always = frozenset({"conversions"})


class TableInput(_InputLocation):
    """A tabular input (CSV or JSON Lines): where it was read from and its shape."""

    format: Literal["csv", "jsonl"] = Field(description="csv or jsonl (from the file's extension)")
    rows: int = Field(description="Data rows explained")
    columns: int = Field(description="Feature columns")
    feature_names_from: Literal["model", "upload"] = Field(
        description="Where the feature names came from: the model (its card or model file) or the upload's header")


InputDescription = Annotated[
    ImageInput | TableInput,
    Field(description="The input explained: an image (width, height, ...) or a table (rows, columns, ...)"),
]


# ------------------------------------------------------------------------------------------- model
class _ModelIdentity(_Document):
    name: str = Field(description="Model name (models/<name>/)")
    version: str = Field(description="Model version (models/<name>/<version>/)")
    etag: str = Field(description="ETag of the model file used")
    card_etag: str | None = Field(description="ETag of the model card (card.json) used")
    modality: str = Field(description="image or tabular (the card's)")
    framework: str = Field(description="The card's framework (keras, xgboost)")


_LOADED_FROM = Field(
    description="Where this invocation found the model: memory (warm), tmp (/tmp cache) or s3 (downloaded)")


class ImageModel(_ModelIdentity):
    """The image model that explained the input."""

    modality: Literal["image"] = Field(description="image")
    input_size: list[int] = Field(description="[height, width] the image was resized to")
    loaded_from: Annotated[str, _LOADED_FROM]


class TableModel(_ModelIdentity):
    """The tabular model that explained the input."""

    modality: Literal["tabular"] = Field(description="tabular")
    features: int = Field(description="Number of input features")
    loaded_from: Annotated[str, _LOADED_FROM]


ModelDescription = Annotated[
    ImageModel | TableModel, Field(discriminator="modality", description="The model that explained the input")
]


# ------------------------------------------------------------------------------ classes and outputs
CLASS_INDEX = Field(description="Class index in the model's outputs")
CLASS_NAME = Field(description="Class name from the model card (the index as text without names)")
SCORE = Field(description="Probability of the class (images; absent for tables)")
ATTRIBUTIONS_SHAPE = Field(description="Images: shape of the attributions array")
BASE_VALUE = Field(description="SHAP: the expected model output the attributions add to (in output_kind units)")
OUTPUT_KIND = Field(description="SHAP: what the values explain: logit, probability or log-odds")
ADDITIVITY_MAX_ERROR = Field(
    description="Tables: largest |base value + sum of a row's values - model output| over the rows")


class ClassScore(_Document):
    """A class, with the model's probability for images."""

    class_index: Annotated[int, CLASS_INDEX]
    class_name: Annotated[str, CLASS_NAME]
    score: Annotated[float | None, SCORE] = None


class TablePredictions(_Document):
    """A table's predictions: how many rows the model assigns to each class."""

    rows_per_class: dict[str, int] = Field(description="Class name -> rows whose most probable class it is")


Predictions = Annotated[
    list[ClassScore] | TablePredictions,
    Field(description="Images: the top-k classes, most probable first; tables: rows per predicted class"),
]


class ImageOutput(ClassScore):
    """One explained class of one method on an image: result-bucket keys of its files."""

    score: Annotated[float, SCORE]
    heatmap: str = Field(description="Key of the heatmap overlaid on the image (PNG)")
    attributions: str = Field(description="Key of the raw attributions (NumPy .npy)")
    attributions_shape: Annotated[list[int], ATTRIBUTIONS_SHAPE]
    base_value: Annotated[float | None, BASE_VALUE] = None
    output_kind: Annotated[str | None, OUTPUT_KIND] = None

    def with_links(self, sign) -> dict:
        """The API's view (explain_core.api_models.MethodOutput): file keys as ``sign(key)`` URLs."""
        return {"class_index": self.class_index, "class_name": self.class_name, "score": self.score,
                "heatmap_url": sign(self.heatmap), "attributions_url": sign(self.attributions),
                "attributions_shape": self.attributions_shape, "base_value": self.base_value,
                "output_kind": self.output_kind}


class TableOutput(_Document):
    """One explained class of one method on a table: result-bucket keys of its files."""

    class_index: Annotated[int, CLASS_INDEX]
    class_name: Annotated[str, CLASS_NAME]
    output_kind: Annotated[str, OUTPUT_KIND]
    base_value: Annotated[float, BASE_VALUE]
    additivity_max_error: Annotated[float, ADDITIVITY_MAX_ERROR]
    summary: str = Field(description="Key of the summary JSON (per-feature statistics)")
    files: list[str] = Field(description="Keys of the values CSV and the plots (PNG)")

    def with_links(self, sign) -> dict:
        """The API's view (explain_core.api_models.MethodOutput): file keys as ``sign(key)`` URLs."""
        return {"class_index": self.class_index, "class_name": self.class_name, "output_kind": self.output_kind,
                "base_value": self.base_value, "summary_url": sign(self.summary),
                "additivity_max_error": self.additivity_max_error,
                "files": {posixpath.basename(key): sign(key) for key in self.files}}


#: One explained class of a method; each kind has its own required keys, which tell them apart.
OutputEntry = ImageOutput | TableOutput


# ----------------------------------------------------------------------------------------- methods
METHOD_NAME = Field(description="Method name (GET /methods)")
METHOD_PARAMS = Field(description="Parameters used, defaults filled in")
PASSES_PER_IMAGE = Field(description="Model passes per input (the registry's cost)")
REFERENCE = Field(description="The paper the method implements")
METHOD_STATUS = Field(description="succeeded or failed")
METHOD_ERROR = Field(description="Why the method failed; absent when it succeeded")
METHOD_SECONDS = Field(description="Seconds the method took (images: for the whole batch it ran on); "
                                   "absent when it failed")
MethodStatus = Literal["succeeded", "failed"]


class MethodEntry(_Document):
    """One method on the input: its parameters, cost, outcome and outputs (one per explained class)."""

    name: Annotated[str, METHOD_NAME]
    params: Annotated[dict[str, Any], METHOD_PARAMS]
    passes_per_image: Annotated[int, PASSES_PER_IMAGE]
    reference: Annotated[str, REFERENCE]
    status: Annotated[MethodStatus, METHOD_STATUS] = "succeeded"
    outputs: list[OutputEntry] = Field(default_factory=list, description="One entry per explained class")
    error: Annotated[ErrorDetail | None, METHOD_ERROR] = None
    seconds: Annotated[float | None, METHOD_SECONDS] = None
    seconds_per_image: float | None = Field(default=None, description="Images: seconds / batch_rows")
    batch_rows: int | None = Field(default=None, description="Images: (image, class) rows of the batch it ran on")

    _always = frozenset({"status", "outputs"})


class BackgroundDescription(_Document):
    """SHAP: where the background (the reference inputs) came from."""

    source: str = Field(description="background.npy (stored with the model) or default")
    rows: int | None = Field(default=None, description="Rows of background.npy")
    etag: str | None = Field(default=None, description="ETag of background.npy")
    description: str | None = Field(default=None, description="What the default background is")


Timings = Annotated[dict[str, int | float], Field(
    description="Seconds per stage (model_s, download_s, decode_s, predict_s, write_s) and the batch "
                "(batch_images for images, rows for tables)")]


Status = Literal["succeeded", "partial", "failed"]
STATUS = Field(description="succeeded; partial: some methods failed; failed: every method failed")
RESULTS_PREFIX = Field(description="Key prefix of this input's results in the results bucket")
EXPLAINED_CLASSES = Field(description="The classes each method explains")


class Manifest(_Document):
    """Everything one explained input produced: ``results/<family>/<model>/<version>/<input>/manifest.json``."""

    status: Annotated[Status, STATUS]
    family: Family = Field(description="The family function that explained the input")
    input: InputDescription
    model: ModelDescription
    predictions: Predictions
    explained_classes: Annotated[list[ClassScore], EXPLAINED_CLASSES]
    methods: list[MethodEntry] = Field(description="One entry per requested method, in request order")
    background: BackgroundDescription | None = Field(default=None, description="SHAP family only")
    timings: Timings
    versions: dict[str, str | None] = Field(description="Library versions (null: not installed)")
    results_prefix: Annotated[str, RESULTS_PREFIX]
    attempt: str = Field(description="The attempt whose outputs it lists (<results_prefix>attempts/<attempt>/)")
    request_id: str | None = Field(default=None, description="Lambda request id of the invocation that wrote it")
    created_at: str | None = Field(default=None, description="When it was written (ISO 8601, UTC)")
    output_keys: list[str] = Field(default_factory=list, description="Every output object of the attempt")

    _always = frozenset({"output_keys"})
    _keep_null = frozenset({"request_id"})

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        """A stored manifest.json (any writer's: unknown keys are kept)."""
        return cls.model_validate_json(data, context={READING: True})

    def to_json_bytes(self) -> bytes:
        """The bytes of manifest.json: strict JSON (a NaN or infinity raises ValueError)."""
        from explain_core.results import strict_json  # results may import this module

        return strict_json(self.to_dict())
