"""Approximation error of every explanation whose method has one, always (docs/approximation.md).

A registry entry declares its check (``MethodSpec.approximation``) and the parameter that makes
the method more accurate (``MethodSpec.accuracy_param``); every output of such a method carries
the figures below in the manifest, and a warning when they exceed the thresholds defined here.

- ``completeness``: Integrated Gradients' attributions sum to f(x) − f(baseline) when the path
  integral is exact (Sundararajan et al., Axiomatic Attribution for Deep Networks (2017),
  https://arxiv.org/abs/1703.01365); Xplique approximates it with ``steps`` points (trapezoidal
  rule) and returns the mean over channels, so the check uses the sum over channels.
- ``additivity``: SHAP values sum to f(x) − base value ("local accuracy", Lundberg and Lee, A
  Unified Approach to Interpreting Model Predictions (2017), https://arxiv.org/abs/1705.07874).

Both are ``|sum of attributions + reference − f(x)|`` in the output space the explainer works in
(the model's raw output: logits, probabilities or XGBoost log-odds), with reference f(baseline) or
the base value. The output gap ``f(x) − reference`` is what the attributions distribute: the
relative error divides by it, floored at :data:`MIN_OUTPUT_GAP`, and a gap under that floor gets
a warning of its own (the input scores like its reference: there is almost nothing to explain).

Nothing here imports NumPy at module level: the light API image reads these manifest parts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from explain_core.manifest_parts import ManifestPart
from explain_core.registry import APPROXIMATION_CHECKS

COMPLETENESS, ADDITIVITY = APPROXIMATION_CHECKS

#: Largest relative error (absolute error / max(|output gap|, MIN_OUTPUT_GAP)) before a warning,
#: per check. Chosen from the demo model's figures in docs/approximation.md.
RELATIVE_ERROR_THRESHOLD = {COMPLETENESS: 0.05, ADDITIVITY: 0.05}
#: Smallest |output gap| worth explaining, per output kind (the units of the gap): 0.1 in logit or
#: log-odds units changes the odds by about 10 %; 0.01 is one point of probability.
MIN_OUTPUT_GAP = {"logit": 0.1, "log-odds": 0.1, "probability": 0.01}
#: Rows (table lines) a warning names at most.
MAX_LINES_NAMED = 10

_REFERENCE = {COMPLETENESS: "f(baseline)", ADDITIVITY: "base value"}
CheckName = Literal[APPROXIMATION_CHECKS]  # type: ignore[valid-type]


# ---------------------------------------------------------------------- the manifest's parts
# Descriptions of the output fields (images, tables and the API's MethodOutput): ``Annotated[type, X]``.
APPROXIMATION = Field(description="Methods with an approximation check, always: how far the attributions are from "
                                  "the sum they should reach (docs/approximation.md)")
WARNINGS = Field(description="Methods with an approximation check, always (empty when all is well): what a person "
                             "should know before trusting the output, e.g. which parameter to raise")

class ExplanationWarning(ManifestPart):
    """Something a person should know before trusting an output (docs/approximation.md)."""

    code: Literal["approximation_error", "small_output_gap", "approximation_unavailable"] = Field(
        description="approximation_error: the error exceeds its threshold (raise `parameter`); small_output_gap: "
                    "f(x) is within the threshold of its reference, the attributions explain almost nothing; "
                    "approximation_unavailable: the figures could not be computed (non-finite outputs)")
    message: str = Field(description="What is wrong and what to do, for a person")
    parameter: str | None = Field(default=None, description="approximation_error: the parameter to raise")
    value: Any = Field(default=None, description="approximation_error: the parameter's current value")


class _ApproximationBase(ManifestPart):
    check: CheckName = Field(
        description="completeness (IntegratedGradients: sum of attributions vs f(x) - f(baseline)) or additivity "
                    "(SHAP: sum of values + base value vs f(x))")
    output_kind: str = Field(description="Units of the errors and gaps: the model output the method explains "
                                         "(logit, probability or log-odds)")
    threshold: float = Field(description="Relative error above which a warning is given (docs/approximation.md)")
    min_output_gap: float = Field(description="Smallest |output gap| worth explaining (output_kind units): "
                                              "floor of the relative error's denominator, and a warning below it")
    exact: bool = Field(description="True for an exact method (TreeExplainer): any error is float rounding")
    parameter: str | None = Field(default=None, description="The parameter that makes the method more accurate "
                                                            "(absent for an exact method)")


class Approximation(_ApproximationBase):
    """Images: the approximation error of one explained class (docs/approximation.md)."""

    absolute_error: float = Field(description="|sum of attributions + reference - f(x)|, reference being "
                                              "f(baseline) (completeness) or the base value (additivity)")
    relative_error: float = Field(description="absolute_error / max(|output_gap|, min_output_gap)")
    output_gap: float = Field(description="f(x) - reference: what the attributions distribute")


class TableApproximation(_ApproximationBase):
    """Tables: the approximation error of one explained class, summarised over the rows."""

    rows: int = Field(description="Rows checked")
    max_absolute_error: float = Field(description="Largest |sum of a row's values + base value - f(x)|")
    mean_absolute_error: float = Field(description="Mean of the rows' absolute errors")
    max_relative_error: float = Field(description="Largest absolute error / max(|output gap|, min_output_gap)")
    mean_relative_error: float = Field(description="Mean of the rows' relative errors")
    min_abs_output_gap: float = Field(description="Smallest |f(x) - base value| over the rows")
    mean_abs_output_gap: float = Field(description="Mean |f(x) - base value| over the rows")
    rows_over_threshold: int = Field(description="Rows whose relative error exceeds the threshold")
    rows_with_small_output_gap: int = Field(description="Rows whose |output gap| is under min_output_gap")


# ---------------------------------------------------------------------- the math
def approximation_errors(sums, references, outputs, output_kind: str) -> dict:
    """Per row: absolute error |sums + references − outputs|, output gap outputs − references, and
    relative error absolute / max(|gap|, MIN_OUTPUT_GAP[output_kind]) (float64 arrays)."""
    import numpy as np

    sums, references, outputs = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (sums, references, outputs))
    absolute = np.abs(sums + references - outputs)
    return _with_gap(absolute, outputs - references, output_kind)


def _with_gap(absolute, gap, output_kind: str) -> dict:
    import numpy as np

    floor = MIN_OUTPUT_GAP[output_kind]
    return {"absolute": absolute, "gap": gap, "relative": absolute / np.maximum(np.abs(gap), floor)}


def completeness_sums(attributions, input_channels: int):
    """Per row, the sum of Integrated Gradients' attributions over pixels and channels.

    Xplique reduces the channel axis with a mean (``reducer="mean"``), which is linear: the sum
    over the input's channels is the reduced map's sum times channels / map channels.
    """
    import numpy as np

    attributions = np.asarray(attributions, dtype=np.float64)
    return attributions.reshape(len(attributions), -1).sum(axis=1) * (input_channels / attributions.shape[-1])


def baseline_outputs(model, card, params: dict, input_shape: tuple, batch_size: int):
    """f(baseline) for every class: Xplique's baseline is the input filled with ``baseline_value``."""
    import numpy as np

    from explain_core.attribution import raw_outputs

    baseline = np.full((1, *input_shape), params.get("baseline_value", 0.0), dtype=np.float32)
    return np.asarray(raw_outputs(model, baseline, card, batch_size), dtype=np.float64)[0]


# ---------------------------------------------------------------------- judging
def _base_fields(spec, output_kind: str) -> dict:
    check = spec.approximation
    return {"check": check, "output_kind": output_kind, "threshold": RELATIVE_ERROR_THRESHOLD[check],
            "min_output_gap": MIN_OUTPUT_GAP[output_kind], "exact": spec.accuracy_param is None,
            "parameter": spec.accuracy_param}


def _raise_advice(spec, params: dict) -> tuple[str, dict]:
    """The end of an approximation_error warning, and its parameter fields."""
    if spec.accuracy_param is None:
        return (f"{spec.name} is exact: the model's outputs differ from the ones it explained", {})
    value = params.get(spec.accuracy_param)
    return (f"raise {spec.accuracy_param} (now {value})", {"parameter": spec.accuracy_param, "value": value})


def _unavailable(spec, what: str) -> ExplanationWarning:
    return ExplanationWarning(code="approximation_unavailable",
                              message=f"{spec.name}'s approximation error could not be computed: {what} is not "
                                      "finite")


def image_check(spec, params: dict, figures: dict, row: int, output_kind: str
                ) -> tuple[Approximation | None, list[ExplanationWarning]]:
    """One image row's approximation and warnings, from :func:`approximation_errors`' arrays."""
    import math

    absolute, gap, relative = (float(figures[k][row]) for k in ("absolute", "gap", "relative"))
    reference = _REFERENCE[spec.approximation]
    if not all(math.isfinite(v) for v in (absolute, gap, relative)):
        return None, [_unavailable(spec, f"f(x), {reference} or the sum of attributions")]
    fields = _base_fields(spec, output_kind)
    approximation = Approximation(**fields, absolute_error=absolute, relative_error=relative, output_gap=gap)
    warnings = []
    if relative > fields["threshold"]:
        advice, parameter = _raise_advice(spec, params)
        warnings.append(ExplanationWarning(
            code="approximation_error", **parameter,
            message=f"{spec.name}'s attributions are off by {relative:.1%} of f(x) − {reference} "
                    f"({absolute:.3g} {output_kind} of {gap:.3g}); {advice}"))
    if abs(gap) < fields["min_output_gap"]:
        warnings.append(ExplanationWarning(
            code="small_output_gap",
            message=f"f(x) − {reference} is only {gap:.3g} {output_kind} (under {fields['min_output_gap']}): the "
                    f"input scores like its reference, so {spec.name}'s attributions explain almost nothing"))
    return approximation, warnings


def image_checks(spec, params: dict, attributions, inputs, outputs, classes, model, card, batch_size: int,
                 base_values=None) -> list[tuple[Approximation | None, list[ExplanationWarning]]] | None:
    """Every row of one method's batch on images: (approximation, warnings) per row; None without a check.

    ``outputs`` are the model's raw outputs (rows, classes) of the batch's inputs, ``classes`` the
    explained class of each row, ``base_values`` the SHAP explainer's expected values.
    """
    if spec.approximation is None:
        return None
    try:
        return _image_checks(spec, params, attributions, inputs, outputs, classes, model, card, batch_size,
                             base_values)
    except Exception as exc:  # the check must never fail the explanation it checks
        warning = _check_failed(spec, exc)
        return [(None, [warning]) for _ in classes]


def _check_failed(spec, exc: Exception) -> ExplanationWarning:
    """The warning of a check that raised (logged with its trace)."""
    from aws_lambda_powertools import Logger

    Logger(child=True).exception("approximation check failed", extra={"method": spec.name})
    return ExplanationWarning(code="approximation_unavailable",
                              message=f"{spec.name}'s approximation error could not be computed: "
                                      f"{type(exc).__name__}: {str(exc)[:300]}")


def _image_checks(spec, params: dict, attributions, inputs, outputs, classes, model, card, batch_size: int,
                  base_values) -> list[tuple[Approximation | None, list[ExplanationWarning]]]:
    import numpy as np

    from explain_core.shap_methods import output_kind as kind_of

    rows = np.arange(len(classes))
    explained = np.asarray(outputs, dtype=np.float64)[rows, classes]
    if spec.approximation == COMPLETENESS:
        sums = completeness_sums(attributions, inputs.shape[-1])
        references = baseline_outputs(model, card, params, inputs.shape[1:], batch_size)[classes]
    else:
        sums = np.asarray(attributions, dtype=np.float64).reshape(len(rows), -1).sum(axis=1)
        references = base_values
    output_kind = kind_of(card)
    with np.errstate(all="ignore"):  # a non-finite figure becomes an approximation_unavailable warning
        figures = approximation_errors(sums, references, explained, output_kind)
    return [image_check(spec, params, figures, row, output_kind) for row in rows]


def text_check(spec, params: dict, found, row: int, cls: int, output: float, encoded, text_model, card,
               batch_size: int) -> tuple[Approximation | None, list[ExplanationWarning]]:
    """One document's explained class ``cls`` (row ``row`` of a :class:`explain_core.text_methods.TextAttributions`):
    completeness against f(baseline embeddings) masked like the document, or additivity against the SHAP base
    value; ``output`` is the model's raw output for the class. (None, []) without a check."""
    if spec.approximation is None:
        return None, []
    try:
        import numpy as np

        from explain_core.attribution import raw_outputs
        from explain_core.shap_methods import output_kind as kind_of

        if spec.approximation == COMPLETENESS:
            text_model.use_mask(encoded.ids)
            dims = text_model.embeddings_model.inputs[0].shape[1:]
            baseline = np.full((1, *dims), params.get("baseline_value", 0.0), dtype=np.float32)
            reference = raw_outputs(text_model.embeddings_model, baseline, card, batch_size)[0, cls]
        else:
            reference = found.base_values[row]
        output_kind = kind_of(card)
        with np.errstate(all="ignore"):
            figures = approximation_errors([found.sums[row]], [reference], [output], output_kind)
        return image_check(spec, params, figures, 0, output_kind)
    except Exception as exc:  # the check must never fail the explanation it checks
        return None, [_check_failed(spec, exc)]


def table_check(spec, params: dict, explanation) -> tuple[TableApproximation | None, list[ExplanationWarning]]:
    """One table class (a :class:`explain_core.tabular_report.TabularExplanation`): the rows summarised."""
    import numpy as np

    from explain_core.tabular_report import additivity_errors

    if spec.approximation is None:
        return None, []
    output_kind = explanation.output_kind
    with np.errstate(all="ignore"):
        figures = _with_gap(additivity_errors(explanation), explanation.model_output - explanation.base_values,
                            output_kind)
    if not all(np.all(np.isfinite(a)) for a in figures.values()):
        return None, [_unavailable(spec, "f(x), the base value or the sum of values of a row")]
    fields = _base_fields(spec, output_kind)
    absolute, gap, relative = figures["absolute"], np.abs(figures["gap"]), figures["relative"]
    over = np.flatnonzero(relative > fields["threshold"])
    small = np.flatnonzero(gap < fields["min_output_gap"])
    approximation = TableApproximation(
        **fields, rows=len(absolute), max_absolute_error=float(absolute.max()),
        mean_absolute_error=float(absolute.mean()), max_relative_error=float(relative.max()),
        mean_relative_error=float(relative.mean()), min_abs_output_gap=float(gap.min()),
        mean_abs_output_gap=float(gap.mean()), rows_over_threshold=len(over), rows_with_small_output_gap=len(small),
    )
    rows = len(absolute)
    warnings = []
    if len(over):
        advice, parameter = _raise_advice(spec, params)
        warnings.append(ExplanationWarning(
            code="approximation_error", **parameter,
            message=f"{spec.name}'s values are off by more than {fields['threshold']:.0%} of f(x) − base value on "
                    f"{len(over)} of {rows} rows (at most {relative.max():.1%}; {_lines(explanation, over)}); "
                    f"{advice}"))
    if len(small):
        warnings.append(ExplanationWarning(
            code="small_output_gap",
            message=f"on {len(small)} of {rows} rows ({_lines(explanation, small)}) f(x) − base value is under "
                    f"{fields['min_output_gap']} {output_kind}: those rows score like the background, so "
                    f"{spec.name}'s values explain almost nothing of them"))
    return approximation, warnings


def _lines(explanation, rows) -> str:
    named = ", ".join(str(explanation.line_numbers[i]) for i in rows[:MAX_LINES_NAMED])
    more = f" and {len(rows) - MAX_LINES_NAMED} more" if len(rows) > MAX_LINES_NAMED else ""
    return f"line{'s' if len(rows) > 1 else ''} {named}{more}"
