"""Request and response models of the REST API (pydantic).

They are the API's contract: Powertools validates requests against them and generates the
OpenAPI document (``openapi.json`` in the repository) from them. Nothing here imports the ML
stack, so the light API and authorizer images can use it.
"""

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from explain_core.approximation import (
    APPROXIMATION,
    WARNINGS,
    Approximation,
    ExplanationWarning,
    TableApproximation,
)
from explain_core.explain_condition import METADATA_KEY as CONDITION_KEY
from explain_core.explain_condition import ConditionOutcome, ExplainIfOption
from explain_core.insights.spec import InsightsSpec
from explain_core.keys import NAME_PATTERN
from explain_core.manifest import (  # the manifest's models are the API's: one definition of each field
    ADDITIVITY_MAX_ERROR,
    ATTRIBUTIONS_SHAPE,
    BASE_VALUE,
    CLASS_INDEX,
    CLASS_NAME,
    CONDITION,
    EXPLAINED_CLASSES,
    METHOD_ERROR,
    METHOD_NAME,
    METHOD_PARAMS,
    METHOD_SECONDS,
    METHOD_STATUS,
    OUTPUT_KIND,
    PASSES_PER_IMAGE,
    REFERENCE,
    RESULTS_PREFIX,
    SCORE,
    STATUS,
    ClassScore,
    ErrorDetail,
    Family,
    InputDescription,
    MethodStatus,
    ModelDescription,
    Predictions,
    Status,
    Timings,
)
from explain_core.manifest_parts import METRICS_FIELD, MetricScore
from explain_core.modalities.text import TopToken
from explain_core.rendering import HEATMAP_RANGE, RENDERING, RenderOptions, rendering_metadata
from explain_core.sanity import SanityReport, SanityRequest

#: Names of models and versions: the key layout's own rule.
NAME_REGEX = NAME_PATTERN.pattern
#: A file name for an input: its extension says CSV or JSON Lines for tables; images are sniffed.
FILENAME_REGEX = r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$"
UPLOAD_KEY_REGEX = r"^uploads/[0-9a-f]{32}/[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$"
JOB_ID_REGEX = r"^[0-9a-f]{32}$"
#: Largest decoded inline input: Lambda's 6 MB request payload holds about 4.4 MB once base64-encoded.
MAX_INLINE_INPUT_BYTES = 4 * 1024 * 1024
#: Inline inputs' default file names: the name's extension says how the input is read.
DEFAULT_IMAGE_FILENAME, DEFAULT_TEXT_FILENAME = "input.png", "input.txt"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelRef(_Strict):
    name: str = Field(pattern=NAME_REGEX, description="Model name, as stored under models/<name>/")
    version: str = Field(pattern=NAME_REGEX, description="Model version, as stored under models/<name>/<version>/")


class ExplanationRequest(_Strict):
    """What to explain, with what, and where the input is (inline base64 or an uploaded object)."""

    model: ModelRef
    methods: list[str] | None = Field(
        default=None, min_length=1, max_length=20,
        description='Method names of the family (GET /methods), or ["all"]; default: the model card\'s defaults',
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description='Per-method parameters, e.g. {"IntegratedGradients": {"steps": 32}}'
    )
    target: int | str | None = Field(default=None, description="A class index or name to explain")
    top_k: int | None = Field(default=None, ge=1, le=10, description="Explain the k most probable classes")
    input_base64: str | None = Field(
        default=None,
        description=f"The image (PNG, JPEG, WebP, ...), table (CSV, JSON Lines) or text file (.txt, .jsonl, .csv: "
                    f"give its filename) base64-encoded; at most {MAX_INLINE_INPUT_BYTES} bytes once decoded, larger "
                    "inputs go through POST /uploads",
    )
    input_text: str | None = Field(
        default=None, min_length=1,
        description=f"Text models: one document as plain text (explained as a .txt file, default filename "
                    f"{DEFAULT_TEXT_FILENAME}); at most {MAX_INLINE_INPUT_BYTES} bytes in UTF-8",
    )
    input_key: str | None = Field(
        default=None, pattern=UPLOAD_KEY_REGEX, description="The input_key returned by POST /uploads"
    )
    filename: str | None = Field(
        default=None, pattern=FILENAME_REGEX,
        description="Name of an inline input; its extension matters for tables and texts (.csv, .jsonl, .txt). "
                    f"Default {DEFAULT_IMAGE_FILENAME}, or {DEFAULT_TEXT_FILENAME} with input_text (whose "
                    "filename must end in .txt)",
    )
    rendering: RenderOptions | None = Field(
        default=None,
        description="Images: how heatmaps are drawn; the fields given override the model card's rendering "
                    '(docs/outputs.md#heatmaps-visual-options), e.g. {"polarity": "signed", "colorbar": true}',
    )
    metrics: list[str] | Literal["all", "none"] | None = Field(
        default=None, max_length=20,
        description='Quality metrics scoring each explanation (docs/metrics.md): names (Deletion, Insertion, '
                    'MuFidelity, AverageStability, Complexity, Sparseness), "all" or "none" ([] is none); '
                    "default: the model card's default_metrics",
    )
    metric_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description='Per-metric parameters, e.g. {"MuFidelity": {"nb_samples": 64}}'
    )
    explain_if: ExplainIfOption = None
    mode: Literal["auto", "sync", "async"] = Field(
        default="auto",
        description="auto: answer now when the estimate fits API Gateway's timeout, else start a job (202); "
                    "sync: answer now or refuse with over_time_budget; async: always start a job",
    )

    @model_validator(mode="after")
    def _one_input(self):
        given = [self.input_base64, self.input_key, self.input_text]
        if sum(value is not None for value in given) != 1:
            raise ValueError("give exactly one of input_base64, input_key and input_text")
        if self.input_text is not None and self.filename is not None and not self.filename.lower().endswith(".txt"):
            raise ValueError("input_text is one plain-text document: its filename must end in .txt")
        return self

    def options_metadata(self) -> dict[str, str]:
        """The request's options in the S3 user-metadata form the S3 path reads (explain_core.request_options)."""
        metadata = {}
        if self.methods:
            metadata["methods"] = ",".join(self.methods)
        if self.params:
            metadata["params"] = json.dumps(self.params, sort_keys=True)
        if self.target is not None:
            metadata["target"] = str(self.target)
        if self.top_k is not None:
            metadata["top-k"] = str(self.top_k)
        if self.metrics is not None:
            metadata["metrics"] = (self.metrics if isinstance(self.metrics, str)
                                   else ",".join(self.metrics) or "none")
        if self.metric_params:
            metadata["metric-params"] = json.dumps(self.metric_params, sort_keys=True)
        if self.rendering is not None:  # only the fields given: the card's default fills in the others
            metadata.update(rendering_metadata(self.rendering, fields=self.rendering.model_fields_set))
        if self.explain_if is not None:  # replaces the card's condition as a whole
            metadata[CONDITION_KEY] = (self.explain_if if isinstance(self.explain_if, str)
                                       else json.dumps(self.explain_if.to_dict(), sort_keys=True))
        return metadata


class ErrorResponse(BaseModel):
    error: ErrorDetail
    request_id: str | None = None


class MethodOutput(BaseModel):
    """One explained class of one method (images, tables: of the input; texts: of one document): links to its
    files, never the arrays themselves."""

    class_index: Annotated[int, CLASS_INDEX]
    class_name: Annotated[str, CLASS_NAME]
    score: Annotated[float | None, SCORE] = None
    heatmap_url: str | None = Field(default=None, description="Heatmap over the image (PNG)")
    raw_heatmap_url: str | None = Field(
        default=None, description="Heatmap alone at the model's input size, coloured as the overlay (PNG)")
    region_mask_url: str | None = Field(
        default=None, description="XRAI: mask of its top regions, 255 inside (greyscale PNG)")
    heatmap_range: Annotated[list[float] | None, HEATMAP_RANGE] = None
    attributions_url: str | None = Field(default=None, description="Raw attributions (NumPy .npy)")
    attributions_shape: Annotated[list[int] | None, ATTRIBUTIONS_SHAPE] = None
    base_value: Annotated[float | None, BASE_VALUE] = None
    output_kind: Annotated[str | None, OUTPUT_KIND] = None
    summary_url: str | None = Field(default=None, description="Tables: the summary JSON")
    additivity_max_error: Annotated[float | None, ADDITIVITY_MAX_ERROR] = None
    files: dict[str, str] = Field(default_factory=dict, description="Tables: file name -> URL (values, plots)")
    document: int | None = Field(default=None, description="Texts: 0-based index of the document in the file")
    line: int | None = Field(default=None, description="Texts: 1-based line of the file where the document starts")
    unit: Literal["word", "sentence"] | None = Field(
        default=None, description="Texts: what each value covers, a word or a sentence")
    tokens_url: str | None = Field(
        default=None, description="Texts: the attributions JSON: per token (or sentence) its text, character "
                                  "offsets [start, end) in the document and value")
    html_url: str | None = Field(
        default=None, description="Texts: the document as an HTML snippet, each token highlighted by its value")
    image_url: str | None = Field(default=None, description="Texts: the same highlighted document (PNG)")
    values_url: str | None = Field(
        default=None, description="Texts: the method's values CSV (every document and token of the file)")
    top_tokens: list[TopToken] | None = Field(
        default=None, description="Texts: the tokens with the largest |value|, largest first")
    sum_of_values: float | None = Field(
        default=None, description="Texts: sum of the values over the tokens the model saw")
    padding_value: float | None = Field(
        default=None, description="Texts, gradient methods: attribution that fell on padding positions")
    metrics: Annotated[dict[str, MetricScore] | None, METRICS_FIELD] = None
    approximation: Annotated[Approximation | TableApproximation | None, APPROXIMATION] = None
    warnings: Annotated[list[ExplanationWarning] | None, WARNINGS] = None


class MethodResult(BaseModel):
    """One method of the manifest (explain_core.manifest.MethodEntry), with links instead of keys."""

    name: Annotated[str, METHOD_NAME]
    status: Annotated[MethodStatus, METHOD_STATUS]
    params: Annotated[dict[str, Any], METHOD_PARAMS]
    reference: Annotated[str, REFERENCE]
    seconds: Annotated[float | None, METHOD_SECONDS] = None
    passes_per_image: Annotated[int | None, PASSES_PER_IMAGE] = None
    error: Annotated[ErrorDetail | None, METHOD_ERROR] = None
    outputs: list[MethodOutput] = Field(default_factory=list)


class ExplanationResult(BaseModel):
    """The explanation of one input: predictions, a summary per method and presigned links to the outputs."""

    status: Annotated[Status, STATUS]
    family: Family
    model: ModelDescription
    input: InputDescription
    predictions: Predictions
    explained_classes: Annotated[list[ClassScore], EXPLAINED_CLASSES]
    methods: list[MethodResult]
    manifest_url: str = Field(description="The manifest (manifest.json, explain_core.manifest.Manifest)")
    rendering: Annotated[RenderOptions | None, RENDERING] = None
    condition: Annotated[ConditionOutcome | None, CONDITION] = None
    gallery_url: str = Field(
        description="The input's gallery page (index.html beside the manifest): a self-contained HTML page with "
                    "the input, its predictions and every method's overlays, plots, times and parameters "
                    "(docs/gallery.md); written just after the manifest")
    results_prefix: Annotated[str, RESULTS_PREFIX]
    urls_expire_in: int = Field(description="Seconds the presigned URLs stay valid")
    cached: bool = Field(default=False, description="True when the same request had been explained before")
    timings: Timings = Field(default_factory=dict)


class JobAccepted(BaseModel):
    job_id: str
    status: Literal["queued"]
    estimated_seconds: float | None = None
    reason: str
    status_url: str


class JobStatus(BaseModel):
    job_id: str
    status: Literal["queued", "succeeded", "partial", "failed", "skipped"]
    family: str
    model: ModelRef
    created_at: str
    input_key: str
    estimated_seconds: float | None = None
    retrying: bool = Field(default=False, description="A transient failure: the job is queued again")
    result: ExplanationResult | None = None
    error: ErrorDetail | None = Field(
        default=None,
        description="Why the job failed or is being retried. timed_out: an attempt was killed (the function's "
                    "time or memory limit); details.dead_lettered: the job's message went to the dead-letter "
                    "queue after its last attempt (details.redrive says how to run it again)",
    )


class ModelInfo(BaseModel):
    name: str
    version: str
    card: dict[str, Any] | None = None
    error: ErrorDetail | None = Field(default=None, description="Set when the stored card is invalid")


class ModelList(BaseModel):
    models: list[ModelInfo]
    truncated: bool = Field(description="True when there were more models than one answer lists")


class ParamInfo(BaseModel):
    type: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: list[Any] | None = None
    power_of_two: bool = False
    doc: str = ""


class MethodInfo(BaseModel):
    name: str
    family: str
    description: str
    reference: str
    modalities: list[str]
    frameworks: list[str]
    params: dict[str, ParamInfo]


class MetricInfo(BaseModel):
    """A quality metric of the registry (docs/metrics.md): ask for it with the request's ``metrics``."""

    name: str
    kind: str = Field(description="fidelity, stability or complexity")
    description: str
    reference: str
    higher_is_better: bool
    range: list[float | None] = Field(description="[minimum, maximum] of the score; null: unbounded")
    good: str = Field(description="What a good score looks like")
    modalities: list[str] = Field(description="The models whose explanations it scores")
    params: dict[str, ParamInfo]


class MethodList(BaseModel):
    methods: list[MethodInfo]
    metrics: list[MetricInfo] = Field(default_factory=list, description="The quality metrics (docs/metrics.md)")


class UploadRequest(_Strict):
    filename: str = Field(pattern=FILENAME_REGEX, description="The file's name; keep its extension")


class UploadTicket(BaseModel):
    """A presigned POST: send the file as multipart/form-data with these fields, the file last."""

    input_key: str = Field(description="Pass it as input_key to POST /explanations/{family}")
    url: str
    fields: dict[str, str]
    expires_in: int
    max_bytes: int


# ---------------------------------------------------------------------------------------- sanity checks
SANITY_REQUEST_ID_REGEX = r"^[0-9a-f]{32}$"


class SanityCheckRequest(SanityRequest):
    """POST /sanity-checks: the fields of a sanity-check request file (explain_core.sanity.SanityRequest)
    plus the family whose methods are checked and the model."""

    family: Family
    model: ModelRef

    def request_file(self) -> bytes:
        """The request file the family's function reads (``sanity-checks/<id>.json``)."""
        return SanityRequest(**self.model_dump(exclude={"family", "model"})).model_dump_json(indent=2).encode()


class SanityCheckAccepted(BaseModel):
    """A sanity check queued: the family's function runs it and writes its report and chart."""

    request_id: str
    status: Literal["queued"]
    request_key: str = Field(description="The request file stored in the input bucket (its upload starts the check)")
    report_key: str = Field(description="Where the report (JSON) will appear in the results bucket")
    chart_key: str = Field(description="Where the chart (PNG) will appear in the results bucket")
    error_key: str = Field(description="Where an error record appears instead when the check cannot run")
    status_url: str = Field(description="GET it for the status, and the report once written")


class SanityCheckStatus(BaseModel):
    request_id: str
    status: Literal["queued", "succeeded", "partial", "failed"]
    family: str
    model: ModelRef
    retrying: bool = Field(default=False, description="A transient failure: the request is queued again")
    report: SanityReport | None = None
    report_url: str | None = Field(default=None, description="Presigned link to the report (JSON)")
    chart_url: str | None = Field(default=None, description="Presigned link to the chart (PNG)")
    urls_expire_in: int | None = None
    error: ErrorDetail | None = None


# ---------------------------------------------------------------------------------------- insights
class InsightsRequest(_Strict):
    """POST /insights: a model and a job specification (explain_core.insights.spec): the file the API
    stores under ``incoming/insights/<model>/<version>/jobs/<job id>.json``."""

    model: ModelRef
    spec: InsightsSpec = Field(description="One optional entry per insight kind (at least one), with its options "
                                           "and their bounds; plus seed and title")


class InsightsJobAccepted(BaseModel):
    """An insights job queued: the spec file's upload starts it (the insights function plans its parts)."""

    job_id: str
    status: Literal["queued"]
    status_url: str = Field(description="GET it for the progress, and the report's links once done")
    spec_key: str = Field(description="The specification stored in the input bucket (its upload starts the job)")
    results_prefix: str = Field(description="Where the job's files appear in the results bucket")
    report_key: str = Field(description="The report (JSON), written last: its presence means the job is over")
    index_key: str = Field(description="The report page (HTML) with every picture")
    error_key: str = Field(description="Where an error record appears instead when the job cannot be planned")


class InsightsCurrentPart(BaseModel):
    """The part the insights function started last (and has not finished)."""

    id: str
    title: str | None = None
    attempt: int = Field(description="SQS receive count of the part's message: 2 and more are retries")
    killed: bool = Field(default=False, description="The attempt passed its invocation's deadline without an "
                                                    "outcome: the function's time or memory limit killed it")
    message: str | None = Field(default=None, description="For a killed attempt: what happened and what comes next")


class InsightsProgress(BaseModel):
    parts_total: int | None = Field(default=None, description="Parts planned; null until the job is planned")
    parts_done: int = 0
    parts_failed: int = 0
    estimated_seconds: float | None = Field(default=None, description="Sum of the parts' estimates")
    current_part: InsightsCurrentPart | None = None


class InsightsKindStatus(BaseModel):
    name: str = Field(description="The kind's key in the specification (its folder in the results)")
    status: Literal["succeeded", "partial", "failed"]
    failed_parts: list[str] = Field(default_factory=list)
    error: ErrorDetail | None = Field(default=None, description="Why its assembly failed")


class InsightsPicture(BaseModel):
    kind: str
    name: str = Field(description="Its path in the job's results folder (e.g. feature_visualization/grid.png)")
    url: str = Field(description="Presigned link (PNG)")


class InsightsResult(BaseModel):
    """The report's headline with presigned links: report.json holds every number."""

    status: Literal["succeeded", "partial", "failed"]
    title: str | None = None
    kinds: list[InsightsKindStatus]
    report_url: str = Field(description="Presigned link to report.json")
    index_url: str = Field(description="Presigned link to index.html, a page of every picture")
    pictures: list[InsightsPicture]
    urls_expire_in: int = Field(description="Seconds the presigned URLs stay valid")
    created_at: str | None = None


class InsightsJobStatus(BaseModel):
    """GET /jobs/{job_id} of an insights job (family "insights")."""

    job_id: str
    family: Literal["insights"]
    status: Literal["queued", "running", "succeeded", "partial", "failed"]
    model: ModelRef
    created_at: str
    input_key: str = Field(description="The specification file (spec_key)")
    results_prefix: str
    progress: InsightsProgress
    retrying: bool = Field(default=False, description="Planning failed transiently: the job is queued again")
    last_error: str | None = Field(default=None, description="The last transient failure of a part (it is retried)")
    error: ErrorDetail | None = Field(default=None, description="Why the job could not be planned (failed), or "
                                                                "the transient error it is retried after")
    result: InsightsResult | None = None
