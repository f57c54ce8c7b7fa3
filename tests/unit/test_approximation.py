"""Approximation errors (explain_core.approximation): the math on models where the answer is known."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from explain_core import approximation
from explain_core.approximation import (
    MIN_OUTPUT_GAP,
    RELATIVE_ERROR_THRESHOLD,
    Approximation,
    ExplanationWarning,
    image_check,
    image_checks,
    table_check,
)
from explain_core.attribution import build_explainer, raw_outputs, run_method
from explain_core.modalities.image import ImageOutput
from explain_core.model_card import ModelCard
from explain_core.registry import METHODS, REGISTRY, MethodSpec, Param
from explain_core.results import strict_json
from explain_core.tabular_report import TabularExplanation

DOC = Path(__file__).resolve().parents[2] / "docs" / "approximation.md"
SIDE = 8


def _card() -> ModelCard:
    return ModelCard.model_validate({"name": "toy", "version": "v1", "input_height": SIDE, "input_width": SIDE,
                                     "class_names": ["a", "b"], "output": "logits"})


def _toy_model(activation: str | None):
    """Flatten -> Dense(2): linear logits, or exp(w . x) with ``activation="exponential"``."""
    import keras

    inputs = keras.Input((SIDE, SIDE, 3))
    dense = keras.layers.Dense(2, activation=activation)
    outputs = dense(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    # Weights scaled so that w . x is about 2 for the input below (exp is then far from linear).
    dense.set_weights([rng.uniform(0.5, 1.5, (SIDE * SIDE * 3, 2)).astype(np.float32) / (SIDE * SIDE * 4.5),
                       np.zeros(2, np.float32)])
    return model


def _integrated_gradients(model, steps: int, inputs):
    spec, card = REGISTRY["IntegratedGradients"], _card()
    params = spec.resolve({"steps": steps}, (SIDE, SIDE))
    targets = np.array([[1.0, 0.0]] * len(inputs), dtype=np.float32)
    result = run_method(build_explainer(spec, model, card, params, 64), inputs, targets)
    outputs = raw_outputs(model, inputs, card, 64)
    return params, image_checks(spec, params, result.attributions, inputs, outputs, [0] * len(inputs), model, card,
                                64, base_values=result.base_values)


def _inputs():
    rng = np.random.default_rng(1)
    return np.abs(rng.normal(3.0, 1.0, (2, SIDE, SIDE, 3))).astype(np.float32)


def test_integrated_gradients_of_a_linear_model_is_complete_even_with_two_steps():
    params, checks = _integrated_gradients(_toy_model(None), 2, _inputs())
    for found, warnings in checks:
        assert found.check == "completeness" and found.output_kind == "logit" and found.parameter == "steps"
        assert found.relative_error < 1e-4, found  # float32 sums only
        assert abs(found.output_gap) > 0.1
        assert warnings == []


def test_integrated_gradients_of_an_exponential_misses_what_the_trapezoidal_rule_misses():
    model, inputs = _toy_model("exponential"), _inputs()
    # f(x) = exp(s), s = w . x; baseline 0: f(0) = 1. Two points: (grad at 0 + grad at x) / 2 . x, whose
    # sum is s (1 + e^s) / 2, against e^s - 1 exactly.
    weights = model.layers[-1].get_weights()[0][:, 0].astype(np.float64)
    s = inputs.reshape(len(inputs), -1).astype(np.float64) @ weights
    _, checks = _integrated_gradients(model, 2, inputs)
    for (found, warnings), si in zip(checks, s, strict=True):
        expected_error = abs(si * (1 + math.exp(si)) / 2 - (math.exp(si) - 1))
        assert found.output_gap == pytest.approx(math.exp(si) - 1, rel=1e-4)
        assert found.absolute_error == pytest.approx(expected_error, rel=1e-3)
        assert found.relative_error == pytest.approx(expected_error / abs(math.exp(si) - 1), rel=1e-3)
        assert found.relative_error > RELATIVE_ERROR_THRESHOLD["completeness"]
        (warning,) = warnings
        assert warning.code == "approximation_error" and warning.parameter == "steps" and warning.value == 2
        assert "raise steps (now 2)" in warning.message and "f(x) − f(baseline)" in warning.message
    # More steps: the trapezoidal error falls as 1 / steps^2.
    _, fine = _integrated_gradients(model, 64, inputs)
    for (coarse, _), (found, warnings) in zip(checks, fine, strict=True):
        assert found.relative_error < coarse.relative_error / 100
        assert warnings == []


def test_errors_are_relative_to_the_output_gap_floored_for_a_near_zero_gap():
    figures = approximation.approximation_errors(sums=[1.9, 0.004], references=[0.0, 1.0], outputs=[2.0, 1.005],
                                   output_kind="logit")
    assert figures["absolute"] == pytest.approx([0.1, 0.001])
    assert figures["gap"] == pytest.approx([2.0, 0.005])
    # 0.1 / 2.0; then 0.001 / max(0.005, 0.1): a tiny gap does not blow the relative error up.
    assert figures["relative"] == pytest.approx([0.05, 0.01])
    spec = REGISTRY["GradientExplainer"]
    found, warnings = image_check(spec, {"nb_samples": 200}, figures, 1, "logit")
    assert [w.code for w in warnings] == ["small_output_gap"]
    assert "f(x) − base value is only 0.005 logit" in warnings[0].message


def test_a_non_finite_figure_becomes_a_warning_never_json_nan():
    spec = REGISTRY["IntegratedGradients"]
    with np.errstate(all="ignore"):
        figures = approximation.approximation_errors([np.nan], [0.0], [1.0], "logit")
    found, warnings = image_check(spec, {"steps": 50}, figures, 0, "logit")
    assert found is None and [w.code for w in warnings] == ["approximation_unavailable"]
    output = ImageOutput(class_index=0, class_name="a", score=0.5, heatmap="h.png", attributions="a.npy",
                         attributions_shape=[8, 8, 1], approximation=found, warnings=warnings)
    assert "NaN" not in strict_json(output.to_dict()).decode()


def _explanation(values, base, outputs) -> TabularExplanation:
    rows = len(outputs)
    return TabularExplanation(method="m", class_index=1, class_name="b", output_kind="log-odds",
                              feature_names=["f0", "f1"], data=np.zeros((rows, 2)), values=np.asarray(values),
                              base_values=np.full(rows, base), model_output=np.asarray(outputs),
                              line_numbers=list(range(2, rows + 2)), predicted=["b"] * rows)


def test_a_table_summarises_its_rows_and_names_the_lines_over_the_threshold():
    # Rows: exact; 20 % off; a gap of 0.05 (under 0.1 log-odds) with a 0.001 error.
    explanation = _explanation([[1.0, 1.0], [0.8, 0.8], [0.02, 0.029]], base=0.5, outputs=[2.5, 2.5, 0.55])
    spec = REGISTRY["KernelExplainer"]
    found, warnings = table_check(spec, {"nb_samples": 500}, explanation)
    assert found.rows == 3 and found.check == "additivity" and found.parameter == "nb_samples"
    assert found.max_absolute_error == pytest.approx(0.4)
    assert found.mean_absolute_error == pytest.approx((0 + 0.4 + 0.001) / 3)
    assert found.max_relative_error == pytest.approx(0.2)
    assert found.mean_relative_error == pytest.approx((0 + 0.2 + 0.001 / MIN_OUTPUT_GAP["log-odds"]) / 3)
    assert found.min_abs_output_gap == pytest.approx(0.05)
    assert (found.rows_over_threshold, found.rows_with_small_output_gap) == (1, 1)
    over, small = warnings
    assert over.code == "approximation_error" and over.parameter == "nb_samples" and over.value == 500
    assert "on 1 of 3 rows (at most 20.0%; line 3); raise nb_samples (now 500)" in over.message
    assert small.code == "small_output_gap" and "line 4" in small.message


def test_an_exact_method_says_so_and_names_no_parameter():
    explanation = _explanation([[1.0, 1.0]], base=0.5, outputs=[2.5 + 1e-7])
    found, warnings = table_check(REGISTRY["TreeExplainer"], {}, explanation)
    assert found.exact and found.parameter is None and warnings == []
    assert found.max_absolute_error == pytest.approx(1e-7, rel=1e-3)
    _, warnings = table_check(REGISTRY["TreeExplainer"], {}, _explanation([[1.0, 1.0]], base=0.5, outputs=[3.5]))
    assert warnings[0].parameter is None and "TreeExplainer is exact" in warnings[0].message


def test_methods_declare_their_check_and_the_parameter_that_raises_accuracy():
    declared = {spec.name: (spec.approximation, spec.accuracy_param) for spec in METHODS if spec.approximation}
    assert declared == {
        "IntegratedGradients": ("completeness", "steps"),
        "GradientExplainer": ("additivity", "nb_samples"),
        "DeepExplainer": ("additivity", "nb_background"),
        "PartitionExplainer": ("additivity", "max_evals"),
        "TextPartitionExplainer": ("additivity", "max_evals"),
        "SuperpixelKernelExplainer": ("additivity", "nb_samples"),
        "KernelExplainer": ("additivity", "nb_samples"),
        "TreeExplainer": ("additivity", None),
    }
    with pytest.raises(ValueError, match="accuracy_param"):
        MethodSpec("X", "shap", "x.Y", "ref", params=(Param("n", int, 1, 1, 2),), approximation="additivity",
                   accuracy_param="steps")
    with pytest.raises(ValueError, match="approximation"):
        MethodSpec("X", "shap", "x.Y", "ref", approximation="closeness")


def test_the_doc_lists_every_checked_method_and_the_thresholds_in_the_code():
    text = DOC.read_text()
    for spec in METHODS:
        if spec.approximation:
            assert re.search(rf"^\| {spec.name} \| {spec.approximation} \| `{spec.accuracy_param or '-'}`",
                             text, re.M), spec.name
    for check, threshold in RELATIVE_ERROR_THRESHOLD.items():
        assert f"| {check} | {threshold:.0%} |" in text
    for kind, gap in MIN_OUTPUT_GAP.items():
        assert f"| {kind} | {gap} |" in text


def test_warnings_and_approximation_are_typed_parts_of_the_api_answer():
    from explain_core.api_models import MethodOutput

    found = Approximation(check="additivity", output_kind="logit", threshold=0.05, min_output_gap=0.1, exact=False,
                          parameter="nb_samples", absolute_error=0.2, relative_error=0.1, output_gap=2.0)
    warning = ExplanationWarning(code="approximation_error", message="m", parameter="nb_samples", value=200)
    output = ImageOutput(class_index=0, class_name="a", score=0.5, heatmap="h.png", attributions="a.npy",
                         attributions_shape=[8, 8, 3], approximation=found, warnings=[warning])
    answer = json.loads(MethodOutput(**output.with_links(lambda key: f"https://x/{key}")).model_dump_json())
    assert answer["approximation"]["relative_error"] == 0.1 and answer["approximation"]["check"] == "additivity"
    assert answer["warnings"][0]["parameter"] == "nb_samples" and answer["warnings"][0]["value"] == 200


def test_a_table_output_with_its_approximation_reads_back_to_the_same_document():
    from explain_core.api_models import MethodOutput
    from explain_core.modalities.table import TableOutput

    explanation = _explanation([[1.0, 1.0], [0.8, 0.8]], base=0.5, outputs=[2.5, 2.5])
    found, warnings = table_check(REGISTRY["GradientExplainer"], {"nb_samples": 200}, explanation)
    output = TableOutput(class_index=1, class_name="b", output_kind="log-odds", base_value=0.5,
                         additivity_max_error=0.4, summary="s.json", files=["v.csv"], approximation=found,
                         warnings=warnings)
    document = json.loads(strict_json(output.to_dict()))
    assert document["approximation"]["rows_over_threshold"] == 1 and document["warnings"][0]["value"] == 200
    assert TableOutput.from_dict(document).to_dict() == document
    answer = json.loads(MethodOutput(**output.with_links(lambda key: key)).model_dump_json())
    assert answer["approximation"] == document["approximation"]


def test_a_check_that_fails_is_an_unavailable_warning_never_a_failed_method():
    # A SHAP adapter without base values (a bug, say) must not fail the explanation the check is about.
    from explain_core.approximation import image_checks
    from explain_core.registry import REGISTRY

    spec = REGISTRY["DeepExplainer"]
    attributions = np.ones((2, 4, 4, 3), np.float32)
    checked = image_checks(spec, spec.defaults, attributions, attributions, np.zeros((2, 3)), [0, 1], None, None, 8,
                           base_values=None)
    assert [approximation for approximation, _ in checked] == [None, None]
    assert all(w.code == "approximation_unavailable" and "DeepExplainer" in w.message
               for _, warnings in checked for w in warnings)
