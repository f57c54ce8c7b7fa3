"""The base of a modality plug-in: one kind of input (images, tables, ...) from bytes to outputs.

A modality owns everything that differs between kinds of input: the card fields its models
need, the size limit of an input and how it is decoded, the model's expected input shape and
SHAP background, how a batch of inputs is explained (predictions, method runs, output files and
the manifest's per-input parts) and its cost estimate. The session (:mod:`explain_core.session`)
drives the steps every modality shares and never branches on the modality.

Modules of this package import the ML stack inside their methods: the light API image (no
NumPy) validates model cards through :meth:`Modality.check_card`.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from aws_lambda_powertools import Logger

from explain_core.errors import ExplainError, InvalidModelOutputError, OverTimeBudgetError
from explain_core.manifest_parts import ErrorDetail

if TYPE_CHECKING:
    from explain_core.manifest import MethodEntry
    from explain_core.model_store import LoadedModel
    from explain_core.registry import MethodSpec, MetricSpec

#: A pass with a backward pass (MethodSpec.backward) costs about three forward passes. The benchmark measures
#: the ratio (methods section: forward+backward / forward, about 2-2.5 on MobileNetV2); the handler measures
#: only a forward pass per invocation (a backward one would trace a gradient graph per model), and a budget
#: check must not underestimate, so the estimate keeps the upper bound.
GRADIENT_PASS_COST = 3.0
#: Seconds kept in reserve at the end of an invocation for writing results.
TIME_RESERVE_S = 20.0
#: Per method, on top of its model passes: building the explainer, tracing, rendering outputs.
METHOD_OVERHEAD_S = 1.0
#: Per quality metric and map, on top of its model passes: building the metric, one unbatched call per step.
METRIC_OVERHEAD_S = 0.1

logger = Logger(child=True)


@dataclass
class Explained:
    """One input's explanation before it is written: its output files and its manifest parts."""

    #: (key, body, content type) of every output file.
    objects: list[tuple[str, bytes, str]]
    #: The manifest's entry per requested method.
    methods: list["MethodEntry"]
    #: The manifest's input fields this modality adds to the input's location (its ``input_type``).
    input_description: dict
    predictions: object
    explained_classes: list
    timings: dict = field(default_factory=dict)
    #: How heatmaps were drawn (explain_core.rendering.RenderOptions): the manifest's ``rendering``; None without.
    rendering: object = None
    #: What the explanation condition decided (explain_core.explain_condition.ConditionOutcome): the manifest's
    #: ``condition``; None without a condition.
    condition: object = None


class Modality:
    """One kind of input. Subclasses set the class attributes and implement the methods."""

    #: The card's ``modality``.
    name: ClassVar[str]
    #: Frameworks whose models of this modality can be explained.
    frameworks: ClassVar[tuple[str, ...]]
    #: The model card's fields this modality needs (a pydantic model; ModelCard inherits them all).
    card_fields: ClassVar[type]
    #: This modality's parts of the manifest (explain_core.manifest, built on explain_core.manifest_parts):
    #: the input's description, the model's, the predictions and one explained class of a method.
    input_type: ClassVar[type]
    model_type: ClassVar[type]
    predictions_type: ClassVar[object]
    output_type: ClassVar[type]

    # ------------------------------------------------------------------ the model card and model
    def check_card(self, card) -> None:
        """Raise ValueError when the card lacks or contradicts what this modality needs."""

    def model_input_shape(self, card, handler, model) -> tuple:
        """The shape of one model input (without the batch axis) that the card prescribes."""
        raise NotImplementedError

    def passes_size(self, card) -> tuple:
        """The input size the registry's pass counts read (MethodSpec.passes): (height, width) of an image;
        (1, max_length) of a text."""
        return (card.input_height, card.input_width)

    def companion_files(self, card) -> tuple[str, ...]:
        """Files beside the model that its modality needs (a text model's vocabulary), read by the model store."""
        return ()

    def prepare_model(self, loaded: "LoadedModel", files: dict[str, bytes]):
        """What explaining needs beside the model (``LoadedModel.companion``), built once per loaded model
        from the model and its :meth:`companion_files`; InvalidModelError when they disagree."""
        return None

    def build_explainer(self, spec: "MethodSpec", model, card, params: dict, batch_size: int, background=None):
        """A method's explainer for ``model`` (the loaded model, or its companion for a modality that has one)."""
        from explain_core.attribution import build_explainer

        return build_explainer(spec, model, card, params, batch_size, background)

    def describe_model(self, loaded: "LoadedModel") -> dict:
        """The manifest's modality-specific model fields."""
        raise NotImplementedError

    def prepare_background(self, array, loaded_card):
        """A stored SHAP background (already checked against :meth:`model_input_shape`) in model input space."""
        raise NotImplementedError

    def default_background(self, card, inputs):
        """The SHAP background when none is stored beside the model, in model input space."""
        raise NotImplementedError

    #: False for a modality whose methods never read a SHAP background (background.npy is not even looked up).
    uses_background: ClassVar[bool] = True
    #: True when the default background does not depend on the inputs (explainers are then reused).
    default_background_is_fixed: ClassVar[bool] = True
    #: True when inputs of one model are explained together (images share method runs over a batch); False
    #: when each input is explained on its own anyway (a table's rows, a text file's documents), so a batch
    #: is handed over one input at a time and a failing input never makes the others run twice.
    explains_in_batches: ClassVar[bool] = True
    #: What the manifest says of the default background.
    default_background_description: ClassVar[str]

    # ------------------------------------------------------------------ inputs
    def size_limit(self, settings) -> tuple[int, type[ExplainError]]:
        """The largest input in bytes, and the error that refuses a larger one (before it is read)."""
        raise NotImplementedError

    def decode(self, data: bytes, filename: str, loaded: "LoadedModel", settings):
        """The decoded input (what :meth:`explain` reads); a typed ExplainError when it cannot be."""
        raise NotImplementedError

    # ------------------------------------------------------------------ explaining
    def forward_batch(self, batch_size: int) -> int:
        """Rows per model call in explainers that call the model many times (SHAP's samplers)."""
        return batch_size

    #: dtype of attribution arrays the SHAP explainers return.
    attribution_dtype: ClassVar[str] = "float64"

    def explain(self, session, uploads: list, loaded: "LoadedModel", context) -> list[Explained]:
        """Predict and run every requested method on accepted inputs; one :class:`Explained` per input."""
        raise NotImplementedError

    def estimate_seconds(self, session, upload, loaded: "LoadedModel") -> float:
        """Predicted seconds of the model passes of every requested method on one accepted input."""
        raise NotImplementedError

    # ------------------------------------------------------------------ for people
    def prediction_summary(self, manifest: dict) -> str:
        """A manifest's predictions in a few words (the demo's one line per input)."""
        raise NotImplementedError


# ---------------------------------------------------------------------- what every modality shares
def method_seconds(spec: "MethodSpec", params: dict, rows: int, pass_seconds: float, card) -> float:
    """Registry cost of a method on ``rows`` inputs at ``pass_seconds`` per model pass."""
    passes = spec.passes(params, card.passes_size)
    return passes * rows * pass_seconds * (GRADIENT_PASS_COST if spec.backward else 1.0)


def seconds_available(context) -> float | None:
    """Seconds the invocation has left for work (its reserve for writing results kept); None outside Lambda."""
    if context is None or not hasattr(context, "get_remaining_time_in_millis"):
        return None
    return context.get_remaining_time_in_millis() / 1000 - TIME_RESERVE_S


def check_time_budget(spec: "MethodSpec", params: dict, rows: int, pass_seconds: float, card, context) -> None:
    """Refuse a method that would outlast the invocation: a timeout would fail the whole batch."""
    available = seconds_available(context)
    estimate = method_seconds(spec, params, rows, pass_seconds, card)
    if available is not None and estimate > available:
        passes = spec.passes(params, card.passes_size)
        raise OverTimeBudgetError(
            f"{spec.name} needs about {estimate:.0f} s for {rows} input(s) ({passes} model passes each at "
            f"{pass_seconds * 1000:.1f} ms) but the invocation has {max(0.0, available):.0f} s left; "
            "use fewer samples or upload fewer images at once",
            method=spec.name, estimated_seconds=round(estimate, 1), available_seconds=round(available, 1),
        )


def metric_seconds(metric: "MetricSpec", passes: int, spec: "MethodSpec", rows: int, pass_seconds: float) -> float:
    """Cost of a quality metric on ``rows`` maps of ``spec`` (``passes`` per map, MetricSpec.passes_for): forward
    passes, or the method's own passes when the metric re-runs it (AverageStability), plus a per-map overhead."""
    backward = metric.reruns_method and spec.backward
    return rows * (passes * pass_seconds * (GRADIENT_PASS_COST if backward else 1.0) + METRIC_OVERHEAD_S)


def check_metric_time_budget(metric: "MetricSpec", params: dict, passes: int, spec: "MethodSpec", rows: int,
                             pass_seconds: float, context) -> None:
    """Refuse a metric that would outlast the invocation; the explanation it scores is kept."""
    available = seconds_available(context)
    estimate = metric_seconds(metric, passes, spec, rows, pass_seconds)
    if available is not None and estimate > available:
        raise OverTimeBudgetError(
            f"metric {metric.name} of {spec.name} needs about {estimate:.0f} s for {rows} map(s) ({passes} model "
            f"passes each) but the invocation has {max(0.0, available):.0f} s left; ask for fewer samples or steps",
            metric=metric.name, method=spec.name, params=params, estimated_seconds=round(estimate, 1),
            available_seconds=round(available, 1),
        )


def method_entry(spec: "MethodSpec", params: dict, card) -> "MethodEntry":
    """A method's manifest entry before it runs."""
    from explain_core.manifest import MethodEntry  # the manifest is assembled from the modalities

    return MethodEntry(name=spec.name, params=params,
                       passes_per_image=spec.passes(params, card.passes_size),
                       reference=spec.reference)


def method_error(exc: Exception, method: str, card) -> ErrorDetail:
    """The manifest's error entry of a failed method; a typed error is logged without a trace."""
    if isinstance(exc, ExplainError):
        logger.warning("method refused", extra={"method": method, "model": card.name, "error": exc.to_dict()})
        return ErrorDetail(**exc.to_dict())
    logger.exception("method failed", extra={"method": method, "model": card.name})
    return ErrorDetail(type=type(exc).__name__, code="method_failed", message=str(exc)[:2000])


def check_finite(values, what: str, **details) -> None:
    """Raise InvalidModelOutputError naming ``what`` when ``values`` hold NaN or infinity."""
    import numpy as np

    array = np.asarray(values, dtype=np.float64) if values is not None else np.zeros(0)
    if not np.all(np.isfinite(array)):
        nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
        raise InvalidModelOutputError(f"{what} contain {nan} NaN and {inf} infinite value(s)", nan=nan,
                                      infinite=inf, **details)
