"""Quality metrics: the registry entries, what a request asks for (metadata, card, API) and their cost."""

import json

import numpy as np
import pytest

from explain_core.api_models import ExplanationRequest
from explain_core.errors import (
    InvalidParameterError,
    ModelCardError,
    OverTimeBudgetError,
    UnknownMetricError,
    UnsupportedModelError,
)
from explain_core.manifest_parts import MetricScore
from explain_core.modalities.base import (
    GRADIENT_PASS_COST,
    METRIC_OVERHEAD_S,
    TIME_RESERVE_S,
    check_metric_time_budget,
    metric_seconds,
)
from explain_core.model_card import ModelCard
from explain_core.quality_metrics import parse_metrics, score_rows
from explain_core.registry import MAX_PASSES_PER_IMAGE, METRICS, REGISTRY, get_metric
from explain_core.request_options import parse_options

CLASSES = ["circle", "square", "triangle"]


def image_card(**changes) -> ModelCard:
    card = {"name": "shapes", "version": "v1", "input_height": 64, "input_width": 64, "class_names": CLASSES,
            **changes}
    return ModelCard.from_json(json.dumps(card), model="shapes", version="v1")


def table_card(**changes) -> ModelCard:
    card = {"name": "t", "version": "v1", "modality": "tabular", "feature_names": ["a", "b"],
            "class_names": ["no", "yes"], **changes}
    return ModelCard.from_json(json.dumps(card), model="t", version="v1")


def names(metrics) -> list[str]:
    return [spec.name for spec, _ in metrics]


# --------------------------------------------------------------------------- the registry
def test_the_six_xplique_metrics_are_registered_with_their_classes():
    assert [m.name for m in METRICS] == ["Deletion", "Insertion", "MuFidelity", "AverageStability", "Complexity",
                                         "Sparseness"]
    for spec in METRICS:
        assert spec.metric_class().__name__ == spec.name  # the Xplique class of the same name
        assert spec.reference.startswith(("Petsiuk", "Bhatt", "Chalasani")) and "https://" in spec.reference
        assert spec.kind in ("fidelity", "stability", "complexity") and spec.good
        for param in spec.params:
            assert param.validate(spec.name, param.default) == param.default


@pytest.mark.parametrize("name,params,method,expected", [
    ("Deletion", {"steps": 10}, "Saliency", 11),
    ("Insertion", {"steps": 32}, "IntegratedGradients", 33),
    ("MuFidelity", {"nb_samples": 32}, "Saliency", 33),
    ("AverageStability", {"nb_samples": 8}, "Saliency", 8),
    ("AverageStability", {"nb_samples": 8}, "IntegratedGradients", 8 * 50),
    ("AverageStability", {"nb_samples": 4}, "Rise", 4 * 2000),
    ("Complexity", {}, "Rise", 0),
    ("Sparseness", {}, "IntegratedGradients", 0),
])
def test_cost_in_model_passes(name, params, method, expected):
    spec, method_spec = get_metric(name), REGISTRY[method]
    resolved = spec.resolve(params, (64, 64))
    assert spec.passes_for(resolved, method_spec, method_spec.defaults, (64, 64)) == expected


def test_a_metric_over_the_pass_limit_on_a_method_is_refused():
    stability, rise = get_metric("AverageStability"), REGISTRY["Rise"]
    params = stability.resolve({"nb_samples": 64}, (64, 64))
    with pytest.raises(InvalidParameterError, match="passes per image") as raised:
        stability.passes_for(params, rise, {**rise.defaults, "nb_samples": 2000}, (64, 64))
    assert raised.value.details["passes"] == 64 * 2000 > MAX_PASSES_PER_IMAGE


@pytest.mark.parametrize("name,params,match", [
    ("Deletion", {"steps": 65}, "<= 64"),
    ("Deletion", {"steps": 1}, ">= 2"),
    ("Deletion", {"steps": 2.5}, "integer"),
    ("Insertion", {"max_percentage_perturbed": 0.0}, ">= 0.05"),
    ("MuFidelity", {"nb_samples": 10_000}, "<= 512"),
    ("MuFidelity", {"grid_size": 65}, "<= 64"),
    ("MuFidelity", {"subset_percent": float("nan")}, "finite"),
    ("AverageStability", {"distance": "cosine"}, "one of"),
    ("AverageStability", {"radius": -1}, ">= 0"),
    ("Complexity", {"steps": 3}, "no parameter steps"),
])
def test_parameters_are_checked_against_their_bounds(name, params, match):
    with pytest.raises(InvalidParameterError, match=match):
        get_metric(name).resolve(params, (64, 64))


def test_a_grid_larger_than_the_model_input_is_refused():
    with pytest.raises(InvalidParameterError, match="larger than the model input"):
        get_metric("MuFidelity").resolve({"grid_size": 16}, (8, 8))


def test_unknown_metric_is_a_typed_error_listing_the_metrics():
    assert get_metric("deletion") is get_metric("DELETION") is METRICS[0]
    with pytest.raises(UnknownMetricError, match="available: Deletion, Insertion") as raised:
        get_metric("Faithfulness")
    assert raised.value.code == "unknown_metric" and raised.value.status == 422


# --------------------------------------------------------------------------- requests
def test_metadata_names_all_none_and_card_defaults():
    card = image_card(default_metrics=["Sparseness", "deletion"])
    assert names(parse_metrics({}, card)) == ["Sparseness", "Deletion"]
    assert names(parse_metrics({"metrics": " "}, card)) == ["Sparseness", "Deletion"]
    assert names(parse_metrics({"metrics": "none"}, card)) == []
    assert names(parse_metrics({"metrics": "ALL"}, card)) == [m.name for m in METRICS]
    assert names(parse_metrics({"metrics": "mufidelity, Complexity,MuFidelity"}, card)) == ["MuFidelity",
                                                                                             "Complexity"]
    assert parse_metrics({}, image_card()) == ()
    with pytest.raises(InvalidParameterError, match="no metric"):
        parse_metrics({"metrics": " , "}, card)


def test_metric_params_are_resolved_and_checked():
    card = image_card()
    (found,) = parse_metrics({"metrics": "MuFidelity", "metric-params": '{"mufidelity": {"nb_samples": 64}}'}, card)
    assert found[1] == {**get_metric("MuFidelity").defaults, "nb_samples": 64}
    for raw, match in (("{", "not valid JSON"), ('{"MuFidelity": 3}', "JSON object"), ("[1]", "JSON object"),
                       ('{"Deletion": {"steps": 8}}', "not requested")):
        with pytest.raises(InvalidParameterError, match=match):
            parse_metrics({"metrics": "MuFidelity", "metric-params": raw}, card)


def test_tables_asking_for_metrics_are_refused_not_silently_unscored():
    card = table_card()
    assert parse_metrics({}, card) == ()
    for value in ("all", "Complexity"):
        with pytest.raises(UnsupportedModelError, match="image"):
            parse_metrics({"metrics": value}, card)
    with pytest.raises(ModelCardError, match="default_metrics"):
        table_card(default_metrics=["Sparseness"])
    with pytest.raises(ModelCardError, match="unknown metric"):
        image_card(default_metrics=["Faithfulness"])


def test_request_options_carry_metrics_in_fingerprint_and_metadata_round_trip():
    card = image_card(default_metrics=["Deletion"])
    options = parse_options({"methods": "Saliency", "metrics": "Insertion,Sparseness",
                             "metric-params": '{"Insertion": {"steps": 20}}'}, card, "gradient")
    assert names(options.metrics) == ["Insertion", "Sparseness"]
    again = parse_options(options.to_metadata(), card, "gradient")
    assert again == options and again.fingerprint == options.fingerprint
    # No metrics is written "none", so that the card's default does not come back on reading.
    none = parse_options({"methods": "Saliency", "metrics": "none"}, card, "gradient")
    assert none.to_metadata()["metrics"] == "none" and parse_options(none.to_metadata(), card, "gradient") == none
    assert len({options.fingerprint, none.fingerprint,
                parse_options({"methods": "Saliency"}, card, "gradient").fingerprint}) == 3
    # Without metrics the fingerprint is the one earlier requests had (their manifests still match).
    plain = parse_options({"methods": "Saliency"}, image_card(), "gradient")
    assert plain.fingerprint == type(plain)(plain.methods, plain.target, plain.top_k).fingerprint


@pytest.mark.parametrize("field,expected", [
    (["Deletion", "Sparseness"], "Deletion,Sparseness"),
    ("all", "all"),
    ([], "none"),
])
def test_api_request_metrics_become_upload_metadata(field, expected):
    request = ExplanationRequest(model={"name": "shapes", "version": "v1"}, input_base64="AA==", metrics=field,
                                 metric_params={"Deletion": {"steps": 8}} if field == "all" else {})
    metadata = request.options_metadata()
    assert metadata["metrics"] == expected
    assert ("metric-params" in metadata) == (field == "all")


def test_api_request_refuses_a_metrics_string_other_than_all_or_none():
    with pytest.raises(ValueError):
        ExplanationRequest(model={"name": "shapes", "version": "v1"}, input_base64="AA==", metrics="Deletion")


# --------------------------------------------------------------------------- cost and budget
class Context:
    def __init__(self, seconds: float):
        self.seconds = seconds

    def get_remaining_time_in_millis(self):
        return int(self.seconds * 1000)


def test_metric_seconds_count_the_methods_backward_passes_when_it_reruns_it():
    stability, deletion = get_metric("AverageStability"), get_metric("Deletion")
    saliency, rise = REGISTRY["Saliency"], REGISTRY["Rise"]
    assert metric_seconds(stability, 8, saliency, 2, 0.01) == pytest.approx(
        2 * (8 * 0.01 * GRADIENT_PASS_COST + METRIC_OVERHEAD_S))
    assert metric_seconds(stability, 8, rise, 1, 0.01) == pytest.approx(8 * 0.01 + METRIC_OVERHEAD_S)
    assert metric_seconds(deletion, 11, saliency, 1, 0.01) == pytest.approx(11 * 0.01 + METRIC_OVERHEAD_S)


def test_a_metric_over_the_time_left_is_refused_with_a_typed_error():
    stability, ig = get_metric("AverageStability"), REGISTRY["IntegratedGradients"]
    check_metric_time_budget(stability, {}, 400, ig, 1, 0.001, Context(TIME_RESERVE_S + 10))
    check_metric_time_budget(stability, {}, 10**6, ig, 1, 1.0, None)  # no context: no budget
    with pytest.raises(OverTimeBudgetError, match="AverageStability of IntegratedGradients") as raised:
        check_metric_time_budget(stability, {}, 400, ig, 1, 0.01, Context(TIME_RESERVE_S + 10))
    assert raised.value.details["method"] == "IntegratedGradients"


def test_score_rows_gives_one_finite_score_per_map_and_error_entries_for_refused_metrics():
    maps = np.zeros((3, 8, 8), dtype=np.float32)
    maps[0, 0, 0] = 1.0  # one pixel: as sparse as a map can be
    maps[1] = 1.0  # uniform
    maps[2] = np.arange(64, dtype=np.float32).reshape(8, 8)

    def refuse_complexity(metric, params, passes):
        if metric.name == "Complexity":
            raise OverTimeBudgetError("too late", metric=metric.name)

    requested = tuple((get_metric(n), {}) for n in ("Sparseness", "Complexity"))
    rows = score_rows(requested, REGISTRY["Saliency"], {}, model=None, card=image_card(), explainer=None,
                      inputs=np.zeros((3, 8, 8, 3), np.float32), targets=np.eye(3, dtype=np.float32),
                      attributions=maps, heatmaps=maps, batch_size=8, check_budget=refuse_complexity)

    sparseness = [row["Sparseness"].score for row in rows]
    assert sparseness[0] == pytest.approx(63 / 64, abs=1e-4) and sparseness[1] == pytest.approx(0.0, abs=1e-4)
    assert 0.0 < sparseness[2] < sparseness[0]
    assert all(row["Sparseness"].passes == 0 and row["Sparseness"].higher_is_better for row in rows)
    assert all(row["Complexity"].score is None and row["Complexity"].error.code == "over_time_budget"
               for row in rows)


def test_a_non_finite_score_is_an_error_entry_never_a_nan():
    maps = np.full((1, 8, 8), np.inf, dtype=np.float32)
    (row,) = score_rows(((get_metric("Sparseness"), {}),), REGISTRY["Saliency"], {}, model=None, card=image_card(),
                        explainer=None, inputs=np.zeros((1, 8, 8, 3), np.float32), targets=np.eye(3)[:1],
                        attributions=maps, heatmaps=maps, batch_size=8, check_budget=lambda *a: None)
    assert row["Sparseness"].score is None and row["Sparseness"].error.code == "invalid_model_output"
    with pytest.raises(ValueError):
        MetricScore(score=float("nan"), higher_is_better=True, params={})


def test_a_map_zero_everywhere_is_an_empty_map_entry_not_a_score_out_of_range():
    # Xplique's Sparseness of an all-zero map is about -1, outside the metric's [0, 1]: Grad-CAM of a
    # class without evidence gives such maps.
    maps = np.zeros((2, 8, 8), dtype=np.float32)
    maps[1, 2, 3] = 0.5
    rows = score_rows(tuple((get_metric(n), {}) for n in ("Sparseness", "Complexity")), REGISTRY["GradCAM"], {},
                      model=None, card=image_card(), explainer=None, inputs=np.zeros((2, 8, 8, 3), np.float32),
                      targets=np.eye(3, dtype=np.float32)[:2], attributions=maps, heatmaps=maps, batch_size=8,
                      check_budget=lambda *a: None)
    for name in ("Sparseness", "Complexity"):
        assert rows[0][name].score is None and rows[0][name].error.code == "empty_map"
        assert "zero everywhere" in rows[0][name].error.message
        assert rows[1][name].score is not None and rows[1][name].error is None
    assert rows[1]["Sparseness"].score == pytest.approx(63 / 64, abs=1e-4)


def test_a_stored_manifest_with_metrics_reads_into_scores_and_the_api_answer():
    from pathlib import Path

    from explain_core.api_models import MethodOutput
    from explain_core.manifest import Manifest

    raw = (Path(__file__).resolve().parents[1] / "data" / "manifests" / "gradient-image-metrics.json").read_bytes()
    manifest = Manifest.from_json(raw)
    assert manifest.to_json_bytes() == raw
    for method in manifest.methods:
        for output in method.outputs:
            assert list(output.metrics) == ["Deletion", "Insertion", "MuFidelity", "Sparseness"]
            answer = MethodOutput(**output.with_links(lambda key: f"https://signed/{key}"))
            for name, score in answer.metrics.items():
                low, high = get_metric(name).score_range
                assert low <= score.score <= high and score.higher_is_better == get_metric(name).higher_is_better


def test_a_parameter_error_names_the_metric_and_the_bounds():
    with pytest.raises(InvalidParameterError) as raised:
        get_metric("Insertion").resolve({"steps": 1000}, (64, 64))
    assert raised.value.details["metric"] == "Insertion" and "method" not in raised.value.details
    assert raised.value.details["parameter"] == "steps" and raised.value.details["bounds"]["maximum"] == 64


def test_every_metric_names_a_scorer():
    # A registry entry picks how its Xplique class scores rows; adding a metric of a known kind touches
    # only the registry.
    from explain_core.quality_metrics import SCORERS
    from explain_core.registry import METRICS

    assert {metric.scoring for metric in METRICS} <= set(SCORERS)
    assert {m.name for m in METRICS if m.scoring == "map"} == {"Complexity", "Sparseness"}
