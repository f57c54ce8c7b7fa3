"""The manifest: what one explained input produced, as typed models (pydantic). Defined once here.

``results/<family>/<model>/<version>/<input>/manifest.json`` is written last by the family
function (its presence means every output it lists is in place) and read back by the API (a
cached answer, a job's result). The API's response models (explain_core.api_models) reuse these
classes, so openapi.json documents the same fields; each Field's description is the
documentation of that manifest field.

The manifest is assembled from the parts every modality shares (:mod:`explain_core.manifest_parts`:
the writing rules, ErrorDetail, ClassScore, the input's location and the model's identity) and
the parts each modality plug-in declares (``input_type``, ``model_type``, ``predictions_type``,
``output_type`` of ``explain_core/modalities/<name>.py``)::

    Manifest            status, family, input, model, predictions, explained_classes, methods,
                        background?, rendering?, condition?, timings, versions, results_prefix, attempt,
                        request_id, created_at, output_keys
    MethodEntry         name, params, passes_per_image, reference, status="succeeded", outputs=[],
                        error?, seconds?, seconds_per_image?, batch_rows?
    BackgroundDescription  source, rows?, etag?, description?

(``?``: absent from the JSON when not given.) ``InputDescription``, ``ModelDescription`` (by
``modality``), ``Predictions`` and ``OutputEntry`` are the unions of the modalities' parts; the
parts of one union are told apart by their required fields.

Writing (the session and the modalities)::

    entry = MethodEntry(name=spec.name, params=params, passes_per_image=..., reference=spec.reference)
    entry.outputs.append(modality.output_type(...))
    entry.status = "failed"; entry.error = ErrorDetail(**exc.to_dict())
    manifest = Manifest(status=..., family=..., input=modality.input_type(...), ...)
    manifest.request_id = ...; manifest.created_at = ...; manifest.output_keys = [...]
    body = manifest.to_json_bytes()             # strict JSON, the bytes of manifest.json
    document = manifest.to_dict()               # the same, as a dict (ResultWriter.put_manifest)

Reading: ``Manifest.from_json(body)`` (bytes or str) or ``Manifest.from_dict(document)``; a
document read keeps exactly its keys (tests/data/manifests holds manifests of every kind).

Nothing here imports the ML stack: the API and authorizer images use it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field

from explain_core.explain_condition import ConditionOutcome
from explain_core.manifest_parts import (  # noqa: F401  (the API's models import them from here)
    ADDITIVITY_MAX_ERROR,
    ATTRIBUTIONS_SHAPE,
    BASE_VALUE,
    CLASS_INDEX,
    CLASS_NAME,
    OUTPUT_KIND,
    READING,
    SCORE,
    ClassScore,
    ErrorDetail,
    ManifestPart,
)
from explain_core.modalities import MODALITIES
from explain_core.registry import FAMILIES
from explain_core.rendering import RENDERING, RenderOptions

Family = Literal[FAMILIES]  # type: ignore[valid-type]


def _union(kinds: list):
    """The union of every modality's part of one kind (deduplicated, in MODALITIES order)."""
    return Union[tuple(dict.fromkeys(kinds))]  # noqa: UP007  (built from a list at import)


InputDescription = Annotated[
    _union([modality.input_type for modality in MODALITIES.values()]),
    Field(description="The input explained: an image (width, height, ...) or a table (rows, columns, ...)"),
]
ModelDescription = Annotated[
    _union([modality.model_type for modality in MODALITIES.values()]),
    Field(discriminator="modality", description="The model that explained the input"),
]
Predictions = Annotated[
    _union([modality.predictions_type for modality in MODALITIES.values()]),
    Field(description="Images: the top-k classes, most probable first; tables: rows per predicted class"),
]
#: One explained class of a method, as its modality writes it.
OutputEntry = _union([modality.output_type for modality in MODALITIES.values()])


# ----------------------------------------------------------------------------------------- methods
METHOD_NAME = Field(description="Method name (GET /methods)")
METHOD_PARAMS = Field(description="Parameters used, defaults filled in")
PASSES_PER_IMAGE = Field(description="Model passes per input (the registry's cost)")
REFERENCE = Field(description="The paper the method implements")
METHOD_STATUS = Field(description="succeeded, failed, or skipped: nothing of the input met the explanation "
                                  "condition (condition), so the method did not run")
METHOD_ERROR = Field(description="Why the method failed; absent when it succeeded")
METHOD_SECONDS = Field(description="Seconds the method took (images: for the whole batch it ran on); "
                                   "absent when it failed")
MethodStatus = Literal["succeeded", "failed", "skipped"]


class MethodEntry(ManifestPart):
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


class BackgroundDescription(ManifestPart):
    """SHAP: where the background (the reference inputs) came from."""

    source: str = Field(description="background.npy (stored with the model) or default")
    rows: int | None = Field(default=None, description="Rows of background.npy")
    etag: str | None = Field(default=None, description="ETag of background.npy")
    description: str | None = Field(default=None, description="What the default background is")


Timings = Annotated[dict[str, int | float], Field(
    description="Seconds per stage (model_s, download_s, decode_s, predict_s, write_s) and the batch "
                "(batch_images for images, rows for tables)")]


Status = Literal["succeeded", "partial", "failed", "skipped"]
STATUS = Field(description="succeeded; partial: some methods failed; failed: every method failed; skipped: the "
                           "input (every row or document of it) did not meet the explanation condition, so nothing "
                           "was explained: the predictions only, and condition says why")
RESULTS_PREFIX = Field(description="Key prefix of this input's results in the results bucket")
EXPLAINED_CLASSES = Field(description="The classes each method explains (none when the input was skipped)")
CONDITION = Field(description="What the explanation condition (the request's explain_if, else the card's) decided: "
                              "the condition, the prediction tested and why an input, or which rows or documents, "
                              "were not explained; absent without a condition")


class Manifest(ManifestPart):
    """Everything one explained input produced: ``results/<family>/<model>/<version>/<input>/manifest.json``."""

    status: Annotated[Status, STATUS]
    family: Family = Field(description="The family function that explained the input")
    input: InputDescription
    model: ModelDescription
    predictions: Predictions
    explained_classes: Annotated[list[ClassScore], EXPLAINED_CLASSES]
    methods: list[MethodEntry] = Field(description="One entry per requested method, in request order")
    background: BackgroundDescription | None = Field(default=None, description="SHAP family only")
    rendering: Annotated[RenderOptions | None, RENDERING] = None
    condition: Annotated[ConditionOutcome | None, CONDITION] = None
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
