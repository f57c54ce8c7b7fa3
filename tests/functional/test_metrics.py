"""Quality metrics end to end: uploads and API requests asking for them, scored on the demo model."""

import io
import json
import math
import time

import numpy as np
import pytest

from devtools.local import lambda_service
from devtools.local.events import deliver
from devtools.local.lambda_service import SqsEventSource
from explain_core.attribution import to_model_input
from explain_core.frameworks import handler_for
from explain_core.modalities.base import METHOD_OVERHEAD_S, METRIC_OVERHEAD_S
from explain_core.model_card import ModelCard
from explain_core.quality_metrics import PROBABILITY_MODELS, score_rows
from explain_core.registry import METRIC_REGISTRY, METRICS, REGISTRY, get_metric
from tests.conftest import clear_outputs, load_event, png_bytes, read_json, upload_event
from tests.functional.test_api import body, explain_event
from tests.functional.test_queue_path import empty_queue

SCORED = "Deletion,Insertion,MuFidelity,AverageStability,Complexity,Sparseness"
CIRCLE, TRIANGLE = 0, 2


def in_range(name: str, score: float) -> bool:
    low, high = METRIC_REGISTRY[name].score_range
    return math.isfinite(score) and (low is None or score >= low - 1e-6) and (high is None or score <= high + 1e-6)


@pytest.fixture(scope="module")
def demo(demo_model_dir):
    card = ModelCard.from_json((demo_model_dir / "card.json").read_text(), model="shapes", version="v1")
    return card, handler_for(card).load(str(demo_model_dir / "model.keras"), "shapes", "v1")


def random_map_scores(demo, pixels, class_index: int) -> dict:
    """Deletion and Insertion of a random map of the image, through the same code as the functions."""
    card, model = demo
    inputs = to_model_input([pixels], card)
    targets = np.eye(len(card.class_names), dtype=np.float32)[[class_index]]
    noise = np.random.default_rng(0).random(inputs.shape[:3]).astype(np.float32)
    metrics = tuple((get_metric(name), get_metric(name).defaults) for name in ("Deletion", "Insertion"))
    (scores,) = score_rows(metrics, REGISTRY["Saliency"], {}, model=model, card=card, explainer=None, inputs=inputs,
                           targets=targets, attributions=noise, heatmaps=noise, batch_size=16,
                           check_budget=lambda *args: None)
    return {name: score.score for name, score in scores.items()}


def test_uploads_asking_for_metrics_get_finite_per_image_scores_that_beat_a_random_map(
        invoke, s3, deployment, samples, unique_prefix, demo):
    images, labels, _ = samples
    picked = {label: images[list(labels).index(label)] for label in (CIRCLE, TRIANGLE)}
    keys = {label: f"incoming/gradient/shapes/v1/{unique_prefix}/{label}.png" for label in picked}
    clear_outputs(s3, deployment, "gradient")
    for label, key in keys.items():  # one batch: each row must get its own score, not the batch's mean
        s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(picked[label]),
                      Metadata={"methods": "Saliency,GradCAM", "metrics": SCORED.lower(),
                                "metric-params": json.dumps({"MuFidelity": {"nb_samples": 16}})})

    assert invoke("gradient", upload_event(*keys.values(), family="gradient")) == {"batchItemFailures": []}

    results = deployment.bucket("ResultsBucket")
    manifests = {label: read_json(s3, results, f"results/{key.removeprefix('incoming/')}/manifest.json")
                 for label, key in keys.items()}
    for label, manifest in manifests.items():
        assert manifest["status"] == "succeeded"
        for method in manifest["methods"]:
            (output,) = method["outputs"]
            assert output["class_index"] == label
            assert list(output["metrics"]) == SCORED.split(",")
            for name, metric in output["metrics"].items():
                assert "error" not in metric, metric
                assert in_range(name, metric["score"]), (method["name"], name, metric)
                assert metric["higher_is_better"] == METRIC_REGISTRY[name].higher_is_better
                assert metric["params"] == {**get_metric(name).defaults,
                                            **({"nb_samples": 16} if name == "MuFidelity" else {})}
                assert metric["passes"] == {"Deletion": 11, "Insertion": 11, "MuFidelity": 17,
                                            "AverageStability": 8, "Complexity": 0, "Sparseness": 0}[name]
            # The score is the stored map's: Xplique's Sparseness of the .npy written beside it.
            stored = np.load(io.BytesIO(s3.get_object(Bucket=results, Key=output["attributions"])["Body"].read()))
            assert stored.shape == (64, 64, 1)  # Xplique's maps, at the model's input size
            expected = get_metric("Sparseness").metric_class()().detailed_evaluate(stored[None, :, :, 0])[0]
            assert output["metrics"]["Sparseness"]["score"] == pytest.approx(float(expected), abs=1e-5)

    def score(label, method, name):
        found = next(m for m in manifests[label]["methods"] if m["name"] == method)
        return found["outputs"][0]["metrics"][name]["score"]

    # Per image, not the batch's mean: the two images' scores differ.
    assert score(CIRCLE, "Saliency", "Insertion") != score(TRIANGLE, "Saliency", "Insertion")
    # They discriminate: Saliency's map brings the circle back far sooner than a random map does, and
    # removing what it ranks first erases the triangle far sooner (measured here, on the same images).
    random_circle = random_map_scores(demo, picked[CIRCLE], CIRCLE)
    random_triangle = random_map_scores(demo, picked[TRIANGLE], TRIANGLE)
    assert score(CIRCLE, "Saliency", "Insertion") > random_circle["Insertion"] + 0.3
    assert score(TRIANGLE, "Saliency", "Deletion") < random_triangle["Deletion"] - 0.3


def test_per_row_deletion_scores_average_to_xpliques_own_score(demo, samples):
    card, model = demo
    images, labels, _ = samples
    inputs = to_model_input(list(images[:4]), card)
    targets = np.eye(len(card.class_names), dtype=np.float32)[labels[:4]]
    maps = np.random.default_rng(1).random(inputs.shape[:3]).astype(np.float32)
    deletion = get_metric("Deletion")
    rows = score_rows(((deletion, deletion.defaults),), REGISTRY["Saliency"], {}, model=model, card=card,
                      explainer=None, inputs=inputs, targets=targets, attributions=maps, heatmaps=maps, batch_size=16,
                      check_budget=lambda *args: None)
    per_row = [row["Deletion"].score for row in rows]
    xplique = deletion.metric_class()(PROBABILITY_MODELS.get(model, card), inputs, targets, batch_size=16,
                                      **{k: v for k, v in deletion.defaults.items() if k != "baseline_value"})
    assert len(set(per_row)) == 4
    assert np.mean(per_row) == pytest.approx(xplique.evaluate(maps), abs=1e-6)


def test_unknown_metric_and_bad_metric_params_get_typed_error_records(invoke, s3, deployment, samples,
                                                                      unique_prefix):
    images, _, _ = samples
    cases = {
        "unknown": ({"metrics": "Deletion,Faithfulness"}, "unknown_metric"),
        "bounds": ({"metrics": "Deletion", "metric-params": '{"Deletion": {"steps": 100000}}'}, "invalid_parameter"),
        "stray": ({"metrics": "Deletion", "metric-params": '{"MuFidelity": {"nb_samples": 16}}'},
                  "invalid_parameter"),
    }
    keys = {case: f"incoming/gradient/shapes/v1/{unique_prefix}/{case}.png" for case in cases}
    for case, key in keys.items():
        s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[0]),
                      Metadata={"methods": "Saliency", **cases[case][0]})

    assert invoke("gradient", upload_event(*keys.values(), family="gradient")) == {"batchItemFailures": []}

    for case, key in keys.items():
        record = read_json(s3, deployment.bucket("ResultsBucket"), f"errors/{key.removeprefix('incoming/')}.json")
        assert record["error"]["code"] == cases[case][1], record
    assert "Faithfulness" in read_json(s3, deployment.bucket("ResultsBucket"),
                                       f"errors/{keys['unknown'].removeprefix('incoming/')}.json")["error"]["message"]


def test_a_metric_over_the_time_left_is_refused_and_the_explanation_kept(handlers, deployment, s3, samples,
                                                                        unique_prefix):
    images, _, _ = samples
    key = f"incoming/gradient/shapes/v1/{unique_prefix}/late.png"
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[0]),
                  Metadata={"methods": "IntegratedGradients", "params": '{"IntegratedGradients": {"steps": 512}}',
                            "metrics": "Sparseness,AverageStability",
                            "metric-params": '{"AverageStability": {"nb_samples": 64}}'})
    function = deployment.function_for_family("gradient")
    # 25 s left: 5 s after the 20 s reserve, for 64 x 512 backward passes.
    context = lambda_service.LocalLambdaContext(function.logical_id, 3008, 25)
    event = deliver(upload_event(key, family="gradient"), s3)
    response = lambda_service.invoke(deployment, function, handlers["gradient"], event, context)

    assert response == {"batchItemFailures": []}
    manifest = read_json(s3, deployment.bucket("ResultsBucket"),
                         f"results/{key.removeprefix('incoming/')}/manifest.json")
    (method,) = manifest["methods"]
    assert method["status"] == "succeeded"
    metrics = method["outputs"][0]["metrics"]
    assert in_range("Sparseness", metrics["Sparseness"]["score"])
    assert "score" not in metrics["AverageStability"]
    assert metrics["AverageStability"]["error"]["code"] == "over_time_budget"
    assert metrics["AverageStability"]["error"]["details"]["method"] == "IntegratedGradients"


@pytest.fixture(scope="module")
def call(invoke_function, published_model, tabular_models, api_key):
    def _call(event: dict, function: str) -> dict:
        return invoke_function(function, event)

    return _call


def test_the_api_returns_the_scores_and_refuses_metrics_for_tables(call):
    response = call(explain_event("api-explain-gradient.json", metrics=["Deletion", "sparseness"],
                                  metric_params={"Deletion": {"steps": 8}}), "GradientFunction")

    assert response["statusCode"] == 200, response["body"][:2000]
    for method in body(response)["methods"]:
        for output in method["outputs"]:
            assert sorted(output["metrics"]) == ["Deletion", "Sparseness"]
            assert output["metrics"]["Deletion"]["params"]["steps"] == 8
            assert all(in_range(name, m["score"]) for name, m in output["metrics"].items())

    tabular = call(explain_event("api-explain-shap-table.json", metrics="all"), "ShapFunction")
    assert tabular["statusCode"] == 422, tabular["body"][:2000]
    assert body(tabular)["error"]["code"] == "unsupported_model"


def test_the_metrics_cost_counts_in_the_apis_sync_or_job_estimate(call, unique_prefix, deployment, sqs):
    # API Gateway received these requests 28 s ago: both become jobs, with the estimate that decided it.
    def late(**changes) -> dict:
        event = explain_event("api-explain-gradient.json", **{
            "methods": ["IntegratedGradients"], "params": {"IntegratedGradients": {"steps": 512}}, "mode": "auto",
            "filename": f"{unique_prefix}-{len(changes)}.png", **changes})
        event["requestContext"]["requestTimeEpoch"] = int((time.time() - 28) * 1000)
        return event

    plain = call(late(), "GradientFunction")
    scored = call(late(metrics=["AverageStability"], metric_params={"AverageStability": {"nb_samples": 64}}),
                  "GradientFunction")
    assert plain["statusCode"] == scored["statusCode"] == 202, (plain["body"], scored["body"])
    # 64 noisy re-runs of 512 steps: about 64 times the method's own passes, on top of its estimate.
    extra = body(scored)["estimated_seconds"] - body(plain)["estimated_seconds"]
    assert extra > METRIC_OVERHEAD_S
    assert extra > 10 * (body(plain)["estimated_seconds"] - METHOD_OVERHEAD_S)
    # The two jobs are not run: a later test draining the queue would spend half a minute on them.
    empty_queue(sqs, SqsEventSource(deployment, deployment.function_for_family("gradient")).queue_url)


def test_the_catalog_lists_the_metrics_with_their_bounds(call):
    listed = body(call(load_event("api-list-methods.json"), "ApiFunction"))["metrics"]
    assert [m["name"] for m in listed] == [m.name for m in METRICS]
    fidelity = next(m for m in listed if m["name"] == "MuFidelity")
    assert (fidelity["kind"], fidelity["higher_is_better"], fidelity["range"]) == ("fidelity", True, [-1.0, 1.0])
    assert (fidelity["params"]["nb_samples"]["default"], fidelity["params"]["nb_samples"]["maximum"]) == (128, 512)


def test_lrp_and_xrai_are_scored_by_every_metric(invoke, s3, deployment, samples, unique_prefix):
    """explain_core's own methods (not Xplique explainers) go through the same metrics: AverageStability runs
    them again on noisy copies; XRAI's stored map is its ranked (H, W) heatmap, LRP's the relevance per channel."""
    images, labels, _ = samples
    key = f"incoming/gradient/shapes/v1/{unique_prefix}/circle.png"
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[list(labels).index(CIRCLE)]),
                  Metadata={"methods": "LRP,XRAI", "metrics": SCORED.lower(),
                            "params": json.dumps({"XRAI": {"steps": 8}}),
                            "metric-params": json.dumps({"MuFidelity": {"nb_samples": 16},
                                                         "AverageStability": {"nb_samples": 2}})})

    assert invoke("gradient", upload_event(key, family="gradient")) == {"batchItemFailures": []}

    results = deployment.bucket("ResultsBucket")
    manifest = read_json(s3, results, f"results/{key.removeprefix('incoming/')}/manifest.json")
    assert manifest["status"] == "succeeded", manifest
    shapes = {}
    for method in manifest["methods"]:
        (output,) = method["outputs"]
        assert list(output["metrics"]) == SCORED.split(",")
        for name, metric in output["metrics"].items():
            assert "error" not in metric, (method["name"], metric)
            assert in_range(name, metric["score"]), (method["name"], name, metric)
        shapes[method["name"]] = tuple(output["attributions_shape"])
        assert (output.get("region_mask") is not None) == (method["name"] == "XRAI")
    assert shapes == {"LRP": (64, 64, 3), "XRAI": (64, 64)}
