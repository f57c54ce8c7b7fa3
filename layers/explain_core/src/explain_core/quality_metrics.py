"""Quality metrics of explanations: which ones a request asks for, and their scores per explained row.

A request names metrics of the registry (:data:`explain_core.registry.METRICS`) in its upload
metadata (``metrics``: comma-separated names, ``all`` or ``none``; ``metric-params``: JSON
``{"MuFidelity": {"nb_samples": 64}}``) or in the API request (``metrics``, ``metric_params``);
without them the model card's ``default_metrics`` apply (empty: no metrics). Every explained
(image, class) row of every method is then scored with Xplique's metric classes
(:func:`score_rows`): one score per row, never a mean over the batch, and a score that is not a
finite number is an error entry of that metric, not a NaN in the manifest.

Only image models are scored: the metrics perturb pixels (Deletion, Insertion, MuFidelity) or
re-run the method on noisy copies of an image (AverageStability). A table asking for metrics is
refused with ``unsupported_model`` (docs/metrics.md).

The registry and the parsing import no ML library; :func:`score_rows` imports Xplique.
"""

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from explain_core.errors import (
    EmptyMapError,
    ExplainError,
    InvalidModelOutputError,
    InvalidParameterError,
    UnsupportedModelError,
)
from explain_core.manifest_parts import ErrorDetail, MetricScore
from explain_core.registry import METRICS, MethodSpec, MetricSpec, get_metric

#: Upload metadata keys.
METRICS_KEY = "metrics"
METRIC_PARAMS_KEY = "metric-params"
#: ``metrics`` values that are not names.
ALL, NONE = "all", "none"
#: Added to AverageStability's relative distance denominator: a map of zeros has distance 0 to itself.
_RELATIVE_EPS = 1e-12

RequestedMetrics = tuple[tuple[MetricSpec, dict], ...]


def metrics_for(modality: str) -> list[MetricSpec]:
    """The metrics that can score explanations of a modality's models."""
    return [spec for spec in METRICS if modality in spec.modalities]


def check_metric_names(names, modality: str) -> list[MetricSpec]:
    """The entries named (case-insensitive, first occurrence kept); a typed error for an unknown name or
    a metric that cannot score this modality's explanations."""
    specs = list(dict.fromkeys(get_metric(name) for name in names))
    unsupported = [spec for spec in specs if modality not in spec.modalities]
    if unsupported:
        available = ", ".join(spec.name for spec in metrics_for(modality)) or "none (docs/metrics.md)"
        scored = " and ".join(dict.fromkeys(m for spec in unsupported for m in spec.modalities))
        raise UnsupportedModelError(
            f"metric(s) {', '.join(spec.name for spec in unsupported)} score explanations of {scored} models, "
            f"not of {modality} models; metrics for {modality} models: {available}",
            metrics=[spec.name for spec in unsupported], modality=modality,
        )
    return specs


def parse_metrics(metadata: Mapping[str, str], card) -> RequestedMetrics:
    """The metrics an upload asks for, each with its parameters resolved and checked.

    ``metadata`` has lower-case keys (explain_core.request_options.parse_options lowers them).
    """
    raw = (metadata.get(METRICS_KEY) or "").strip()
    if raw.lower() == NONE:
        specs = []
    elif raw.lower() == ALL:
        specs = metrics_for(card.modality)
        if not specs:
            check_metric_names([spec.name for spec in METRICS], card.modality)  # raises: none applies
    elif raw:
        specs = check_metric_names([name.strip() for name in raw.split(",") if name.strip()], card.modality)
        if not specs:
            raise InvalidParameterError(f"metrics names no metric: {raw!r}; use metric names, all or none")
    else:
        specs = check_metric_names(card.default_metrics, card.modality)

    params = _metric_params(metadata.get(METRIC_PARAMS_KEY))
    by_name = {spec.name.lower(): spec for spec in specs}
    stray = [name for name in params if name.lower() not in by_name]
    if stray:
        raise InvalidParameterError(
            f"metric-params name metrics that were not requested: {', '.join(stray)}",
            metrics=[spec.name for spec in specs],
        )
    lowered = {name.lower(): value for name, value in params.items()}
    input_size = card.passes_size
    return tuple((spec, spec.resolve(lowered.get(spec.name.lower()), input_size)) for spec in specs)


def metrics_metadata(metrics: RequestedMetrics) -> dict[str, str]:
    """Canonical upload metadata of requested metrics, which :func:`parse_metrics` reads back to equal
    metrics whatever the card's defaults (no metrics is written ``none``)."""
    if not metrics:
        return {METRICS_KEY: NONE}
    return {METRICS_KEY: ",".join(spec.name for spec, _ in metrics),
            METRIC_PARAMS_KEY: json.dumps({spec.name: params for spec, params in metrics}, sort_keys=True)}


def describe_metrics(metrics: RequestedMetrics) -> list:
    """The requested metrics in a request fingerprint."""
    return [[spec.name, params] for spec, params in metrics]


def _metric_params(raw: str | None) -> dict:
    if raw in (None, ""):
        return {}
    try:
        params = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidParameterError(f"metric-params metadata is not valid JSON: {exc}") from exc
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise InvalidParameterError('metric-params must be a JSON object like {"MuFidelity": {"nb_samples": 64}}')
    return params


# ---------------------------------------------------------------------- scoring
def metric_passes(metric: MetricSpec, params: dict, method: MethodSpec, method_params: dict, card) -> int:
    """Model passes to score one row explained by ``method`` (typed error over the registry's limit)."""
    return metric.passes_for(params, method, method_params, card.passes_size)


class ProbabilityModels:
    """The model the fidelity metrics score: class probabilities, as the manifest's scores are.

    A logits model gets a softmax on top, built once per model object and kept across warm
    invocations (Xplique's traced operator is then traced once per model, not once per row).
    """

    def __init__(self, capacity: int = 4):
        self.capacity = capacity
        self._models: dict[int, tuple[Any, Any]] = {}

    def get(self, model, card):
        if card.output == "probabilities":
            return model
        if id(model) not in self._models:
            import keras

            probabilities = keras.layers.Softmax(name="metric_probabilities")(model.outputs[0])
            # The original model stays referenced so that its id cannot be reused by another object.
            self._models[id(model)] = (model, keras.Model(model.inputs, probabilities))
            while len(self._models) > self.capacity:
                self._models.pop(next(iter(self._models)))
        return self._models[id(model)][1]

    def retain(self, live_models) -> None:
        """Drop the wrappers of models the store no longer holds (replaced in S3 or evicted)."""
        live = {id(model) for model in live_models}
        for key in [key for key, (model, _) in self._models.items() if id(model) not in live]:
            del self._models[key]


PROBABILITY_MODELS = ProbabilityModels()


def score_rows(metrics: RequestedMetrics, method: MethodSpec, method_params: dict, *, model, card, explainer,
               inputs, targets, attributions, heatmaps, batch_size: int,
               check_budget: Callable[[MetricSpec, dict, int], None]) -> list[dict[str, MetricScore]]:
    """Each requested metric's score of each row (one dict per row of ``inputs``, by metric name).

    ``inputs`` (N, H, W, C) and ``targets`` (one-hot, (N, classes)) are the rows the method
    explained, ``attributions`` what it returned and ``heatmaps`` (N, H, W) its channel-reduced maps
    at model resolution, which the map metrics score. ``check_budget(metric, params, passes)``
    raises OverTimeBudgetError when the metric would outlast the invocation: that metric gets an
    error entry for every row and the others still run.
    """
    import numpy as np

    scored = [{} for _ in range(len(inputs))]
    for metric, params in metrics:
        started = time.perf_counter()
        try:
            passes = metric_passes(metric, params, method, method_params, card)
            check_budget(metric, params, passes)
            values = np.asarray(SCORERS[metric.scoring](
                metric.metric_class(), params, model=model, card=card, explainer=explainer, inputs=inputs,
                targets=targets, attributions=attributions, heatmaps=heatmaps, batch_size=batch_size,
            ), dtype=np.float64)
        except Exception as exc:  # a metric failing must not sink the explanation or the other metrics
            error = metric_error(exc, metric, method)
            for row_scores in scored:
                row_scores[metric.name] = MetricScore(params=params, higher_is_better=metric.higher_is_better,
                                                      error=error)
            continue
        seconds = (time.perf_counter() - started) / max(1, len(inputs))
        for row, value in enumerate(values):
            entry = {"params": params, "higher_is_better": metric.higher_is_better}
            if not np.any(heatmaps[row]):  # e.g. Grad-CAM of a class with no evidence: nothing to rank
                entry["error"] = metric_error(EmptyMapError(
                    f"{method.name}'s map is zero everywhere: {metric.name} has nothing to score",
                    metric=metric.name, method=method.name), metric, method)
            elif np.isfinite(value):
                entry.update(score=float(value), passes=passes, seconds=round(seconds, 4))
            else:
                entry["error"] = metric_error(InvalidModelOutputError(
                    f"{metric.name} of {method.name}'s map is {value}: not a finite number",
                    metric=metric.name, method=method.name), metric, method)
            scored[row][metric.name] = MetricScore(**entry)
    return scored


def metric_error(exc: Exception, metric: MetricSpec, method: MethodSpec) -> ErrorDetail:
    """A metric's error entry; a typed error is logged without a trace."""
    from explain_core.modalities.base import logger

    if isinstance(exc, ExplainError):
        logger.warning("metric refused", extra={"metric": metric.name, "method": method.name, "error": exc.to_dict()})
        return ErrorDetail(**exc.to_dict())
    logger.exception("metric failed", extra={"metric": metric.name, "method": method.name})
    return ErrorDetail(type=type(exc).__name__, code="metric_failed", message=str(exc)[:2000])


# One score per row with the metric's Xplique class, whose ``evaluate`` returns the mean over its
# inputs; a registry entry's ``scoring`` picks the scorer.
def _map_scores(cls, params, *, heatmaps, batch_size, **_):
    """Complexity metrics: the maps alone, the whole batch at once (no model pass)."""
    return cls(batch_size=batch_size).detailed_evaluate(heatmaps)


def _curve_scores(cls, params, *, model, card, inputs, targets, heatmaps, batch_size, **_):
    """Deletion and Insertion: Xplique averages the class score over the rows at each step, then takes the
    curve's area; built once over all rows (one batched model call per step, one trace), the per-row
    curves are recorded at its model calls and their areas taken alike."""
    causal = cls(PROBABILITY_MODELS.get(model, card), inputs, targets, batch_size=batch_size,
                 baseline_mode=params["baseline_value"], steps=params["steps"],
                 max_percentage_perturbed=params["max_percentage_perturbed"])
    return causal_row_scores(causal, heatmaps)


def _subset_scores(cls, params, *, model, card, inputs, targets, heatmaps, batch_size, **_):
    """MuFidelity: built once over all rows, evaluated one row at a time."""
    fidelity = cls(PROBABILITY_MODELS.get(model, card), inputs, targets, batch_size=batch_size,
                   grid_size=params["grid_size"], subset_percent=params["subset_percent"],
                   baseline_mode=params["baseline_value"], nb_samples=params["nb_samples"])
    every_row = fidelity.inputs, fidelity.targets, fidelity.base_predictions
    scores = []
    for row in range(len(inputs)):
        # evaluate() reads these three per input: one row at a time, its mean is that row's correlation.
        fidelity.inputs, fidelity.targets, fidelity.base_predictions = (part[row:row + 1] for part in every_row)
        scores.append(fidelity.evaluate(heatmaps[row:row + 1]))
    return scores


def _rerun_scores(cls, params, *, model, explainer, inputs, targets, attributions, batch_size, **_):
    """AverageStability: the session's own explainer run again on noisy copies, one instance per row
    (it explains each input on its own anyway)."""
    return [cls(model, inputs[row:row + 1], targets[row:row + 1], batch_size=batch_size, radius=params["radius"],
                distance=_distance(params["distance"]), nb_samples=params["nb_samples"]
                ).evaluate(explainer.explain, base_explanations=attributions[row:row + 1])
            for row in range(len(inputs))]


SCORERS = {"map": _map_scores, "curve": _curve_scores, "subsets": _subset_scores, "rerun": _rerun_scores}


def causal_row_scores(causal, explanations):
    """Per-row areas under a Deletion or Insertion curve (Xplique's ``evaluate`` is their mean)."""
    import numpy as np

    curves = []
    predict = causal.batch_inference_function

    def recorded(model, inputs, targets, batch_size):
        predictions = predict(model, inputs, targets, batch_size)
        curves.append(np.asarray(predictions, dtype=np.float64))
        return predictions

    causal.batch_inference_function = recorded
    causal.detailed_evaluate(explanations)
    scores = np.stack(curves, axis=1)  # (rows, steps + 1)
    return 0.5 * np.mean(scores[:, :-1] + scores[:, 1:], axis=1)  # the trapezoid rule of CausalFidelity.evaluate


def _distance(name: str):
    """AverageStability's distance: Xplique's l1/l2 by name, or the l2 distance relative to the map's norm."""
    if name != "relative_l2":
        return name
    import tensorflow as tf

    def relative_l2(neighbour, original):
        original = tf.cast(original, tf.float32)
        difference = tf.cast(neighbour, tf.float32) - original
        return tf.norm(tf.reshape(difference, [-1])) / (tf.norm(tf.reshape(original, [-1])) + _RELATIVE_EPS)

    return relative_l2
