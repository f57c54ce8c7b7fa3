"""Explain only what is asked: a model card's or a request's explain_if, end to end against the emulator.

An input that does not meet the condition gets a manifest with its predictions and why (status skipped, no
output file, no method run); its neighbours in a batch are explained as if it were not there; a table's rows
and a text's documents are each one record."""

import io
import json
import uuid

import numpy as np
import pytest

from devtools.local import FAMILY_FUNCTIONS
from devtools.shapes import MODEL_CLASSES
from explain_core.attribution import class_scores, to_model_input
from explain_core.frameworks import handler_for
from explain_core.model_card import ModelCard
from tests.conftest import png_bytes, read_json, upload_event
from tests.functional.test_api import body, explain_event, fetch, job_event
from tests.functional.test_queue_path import drain
from tests.functional.test_shap_family import values_table

METHODS = "Saliency,GradCAM"


def results_of(key: str) -> str:
    return f"results/{key.removeprefix('incoming/')}/"


def listed(s3, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def load_npy(s3, bucket: str, key: str) -> np.ndarray:
    return np.load(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()), allow_pickle=False)


@pytest.fixture(scope="module")
def probabilities(demo_model_dir, samples):
    """The demo model's class probabilities for the sample images, computed here as the functions do."""
    card = ModelCard.from_json((demo_model_dir / "card.json").read_text(), model="shapes", version="v1")
    model = handler_for(card).load(str(demo_model_dir / "model.keras"), "shapes", "v1")
    return class_scores(model, to_model_input(list(samples[0]), card), card, 16)


def publish_variant(s3, deployment, directory, name: str, version: str, files: tuple[str, ...], **card_changes):
    """A copy of a published model under another version, its card changed (explain_if, ...)."""
    bucket = deployment.bucket("ModelBucket")
    card = json.loads((directory / "card.json").read_text())
    card.update(version=version, **card_changes)
    ModelCard.from_json(json.dumps(card), model=name, version=version)  # a valid card
    for filename in files:
        s3.upload_file(str(directory / filename), bucket, f"models/{name}/{version}/{filename}")
    s3.put_object(Bucket=bucket, Key=f"models/{name}/{version}/card.json", Body=json.dumps(card).encode())


# --------------------------------------------------------------------------- images
def test_an_image_over_the_card_s_threshold_is_skipped_and_a_request_overriding_it_is_explained(
        invoke, s3, deployment, published_model, demo_model_dir, samples, probabilities, unique_prefix):
    images, labels, _ = samples
    top = float(probabilities[0].max())
    assert int(np.argmax(probabilities[0])) == labels[0]
    threshold = round(top / 2, 4)  # the card explains only predictions less sure than this one
    version = f"cond-{uuid.uuid4().hex[:8]}"
    publish_variant(s3, deployment, demo_model_dir, "shapes", version, ("model.keras", "background.npy"),
                    explain_if={"top_probability_below": threshold})
    inputs, results = deployment.bucket("InputBucket"), deployment.bucket("ResultsBucket")
    skipped_key = f"incoming/gradient/shapes/{version}/{unique_prefix}/skipped.png"
    asked_key = f"incoming/gradient/shapes/{version}/{unique_prefix}/asked.png"
    s3.put_object(Bucket=inputs, Key=skipped_key, Body=png_bytes(images[0]), Metadata={"methods": METHODS})
    s3.put_object(Bucket=inputs, Key=asked_key, Body=png_bytes(images[0]),
                  Metadata={"methods": METHODS, "explain-if": "always"})

    # One invocation, one batch: the skipped image and its neighbour.
    assert invoke("gradient", upload_event(skipped_key, asked_key, family="gradient")) == {"batchItemFailures": []}

    manifest = read_json(s3, results, results_of(skipped_key) + "manifest.json")
    assert manifest["status"] == "skipped"
    assert manifest["predictions"][0]["class_index"] == labels[0]
    assert manifest["predictions"][0]["score"] == pytest.approx(top, abs=1e-5)
    condition = manifest["condition"]
    assert condition["explain_if"] == {"top_probability_below": threshold} and condition["source"] == "card"
    assert condition["explained"] is False
    assert condition["predicted"] == manifest["predictions"][0]
    assert condition["reason"] == (f"top probability {manifest['predictions'][0]['score']:.4g} "
                                   f"({MODEL_CLASSES[labels[0]]}) is not below {threshold:g}")
    assert [(m["name"], m["status"], m["outputs"]) for m in manifest["methods"]] == [
        ("Saliency", "skipped", []), ("GradCAM", "skipped", [])]
    assert manifest["explained_classes"] == [] and manifest["output_keys"] == []
    # Nothing but the manifest and its gallery page, which says why.
    assert listed(s3, results, results_of(skipped_key)) == [results_of(skipped_key) + "index.html",
                                                            results_of(skipped_key) + "manifest.json"]
    page = s3.get_object(Bucket=results, Key=results_of(skipped_key) + "index.html")["Body"].read().decode()
    assert f"Not explained: {condition['reason']}" in page

    explained = read_json(s3, results, results_of(asked_key) + "manifest.json")
    assert explained["status"] == "succeeded"
    assert explained["condition"] == {"explain_if": "always", "source": "request", "explained": True}
    for method in explained["methods"]:
        (output,) = method["outputs"]
        assert output["class_index"] == labels[0]
        # Its method ran over its own row only: the skipped neighbour cost no method run.
        assert method["batch_rows"] == 1
        assert load_npy(s3, results, output["attributions"]).shape[:2] == (64, 64)
    assert set(explained["output_keys"]) <= set(listed(s3, results, results_of(asked_key)))


def test_in_a_batch_one_image_is_skipped_and_its_neighbour_explained_as_if_alone(
        invoke, s3, deployment, published_model, samples, unique_prefix):
    images, labels, _ = samples
    first, other = 0, next(i for i in range(1, len(labels)) if labels[i] != labels[0])
    wanted = MODEL_CLASSES[labels[first]]
    inputs, results = deployment.bucket("InputBucket"), deployment.bucket("ResultsBucket")
    condition = json.dumps({"predicted_classes": [wanted]})
    keys = {name: f"incoming/gradient/shapes/v1/{unique_prefix}/{name}.png" for name in ("kept", "left", "alone")}
    s3.put_object(Bucket=inputs, Key=keys["kept"], Body=png_bytes(images[first]),
                  Metadata={"methods": "Saliency", "explain-if": condition})
    s3.put_object(Bucket=inputs, Key=keys["left"], Body=png_bytes(images[other]),
                  Metadata={"methods": "Saliency", "explain-if": condition})
    assert invoke("gradient", upload_event(keys["kept"], keys["left"], family="gradient")) == {"batchItemFailures": []}
    s3.put_object(Bucket=inputs, Key=keys["alone"], Body=png_bytes(images[first]), Metadata={"methods": "Saliency"})
    assert invoke("gradient", upload_event(keys["alone"], family="gradient")) == {"batchItemFailures": []}

    kept, left, alone = (read_json(s3, results, results_of(keys[n]) + "manifest.json") for n in ("kept", "left",
                                                                                                    "alone"))
    assert left["status"] == "skipped" and left["methods"][0]["status"] == "skipped"
    assert left["condition"]["reason"] == (f"top class {MODEL_CLASSES[labels[other]]} is not one of "
                                           f"{wanted}")
    assert left["condition"]["source"] == "request"
    assert left["predictions"][0]["class_index"] == labels[other]
    assert kept["status"] == "succeeded" and kept["condition"]["explained"] is True
    assert kept["condition"]["explain_if"] == {"predicted_classes": [wanted]}
    assert "condition" not in alone
    (kept_output,) = kept["methods"][0]["outputs"]
    (alone_output,) = alone["methods"][0]["outputs"]
    assert kept["methods"][0]["batch_rows"] == 1
    np.testing.assert_allclose(load_npy(s3, results, kept_output["attributions"]),
                               load_npy(s3, results, alone_output["attributions"]), rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- the API
@pytest.fixture(scope="module")
def call(invoke_function, published_model, api_key):
    def _call(event: dict, function: str = FAMILY_FUNCTIONS["gradient"]) -> dict:
        return invoke_function(function, event)

    return _call


def test_the_api_answers_a_skipped_request_now_with_its_predictions_and_why(call, probabilities, samples,
                                                                            unique_prefix):
    _, labels, _ = samples
    threshold = round(float(probabilities[0].max()) / 2, 4)
    response = call(explain_event("api-explain-gradient.json", filename=f"{unique_prefix}.png",
                                  explain_if={"top_probability_below": threshold}))
    assert response["statusCode"] == 200, response["body"][:2000]
    result = body(response)
    assert result["status"] == "skipped" and result["explained_classes"] == []
    assert result["predictions"][0]["class_index"] == labels[0]
    assert result["condition"]["source"] == "request" and result["condition"]["explained"] is False
    assert result["condition"]["reason"].endswith(f"is not below {threshold:g}")
    assert [(m["name"], m["status"], m["outputs"]) for m in result["methods"]] == [
        ("Saliency", "skipped", []), ("GradCAM", "skipped", [])]
    assert b"Not explained: top probability" in fetch(result["gallery_url"])

    explained = body(call(explain_event("api-explain-gradient.json", filename=f"{unique_prefix}.png",
                                        explain_if={"top_probability_above": threshold})))
    assert explained["status"] == "succeeded" and explained["condition"]["explained"] is True
    assert all(len(m["outputs"]) == 1 for m in explained["methods"])


@pytest.mark.parametrize(("explain_if", "status", "code"), [
    ({"predicted_classes": ["hexagon"]}, 422, "invalid_parameter"),
    ({"top_probability_below": 2}, 400, "malformed_request"),
    ({"top_probability_above": 0.8, "top_probability_below": 0.2}, 400, "malformed_request"),
    ({"below": 0.5}, 400, "malformed_request"),
])
def test_a_bad_condition_is_refused_before_anything_runs(call, explain_if, status, code):
    response = call(explain_event("api-explain-gradient.json", explain_if=explain_if))
    assert response["statusCode"] == status and body(response)["error"]["code"] == code


def test_a_job_with_a_condition_reports_skipped(call, deployment, handlers, sqs, probabilities, unique_prefix):
    from devtools.local.lambda_service import SqsEventSource
    from tests.functional.test_queue_path import empty_queue

    source = SqsEventSource(deployment, deployment.function_for_family("perturbation"),
                            handler=handlers["perturbation"])
    empty_queue(sqs, source.queue_url)
    threshold = round(float(probabilities[0].max()) / 2, 4)
    event = explain_event("api-explain-perturbation-async.json", filename=f"{unique_prefix}-job.png",
                          explain_if={"top_probability_below": threshold})
    accepted = call(event, FAMILY_FUNCTIONS["perturbation"])
    assert accepted["statusCode"] == 202, accepted["body"]
    assert all(r == {"batchItemFailures": []} for r in drain(source))
    done = body(call(job_event(body(accepted)["job_id"]), "ApiFunction"))
    assert done["status"] == "skipped"
    # The condition travelled with the job's input as its metadata: still the request's.
    assert done["result"]["condition"]["source"] == "request"
    assert done["result"]["methods"][0]["status"] == "skipped"


# --------------------------------------------------------------------------- tables and texts
def test_a_table_explains_the_rows_that_meet_the_condition_against_the_whole_upload_s_background(
        invoke, s3, deployment, tabular_models, unique_prefix):
    """Each row is a record. Without a stored background, the default one stays the uploaded rows, skipped
    ones included: Kernel SHAP's base value (the mean output over it) is that of the whole upload."""
    import keras

    from devtools import tabular_demo

    name, version = tabular_demo.MLP, f"nobg-{uuid.uuid4().hex[:8]}"
    publish_variant(s3, deployment, tabular_models[name], name, version, ("model.keras",))
    rows, _ = tabular_demo.sample_rows(8)
    model = keras.saving.load_model(tabular_models[name] / "model.keras", compile=False, safe_mode=True)
    logits = np.asarray(model.predict_on_batch(rows.astype(np.float32)), dtype=np.float64)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)
    assert 0 < (predicted == 0).sum() < len(rows)  # both classes, so some rows are skipped and some kept

    inputs, results = deployment.bucket("InputBucket"), deployment.bucket("ResultsBucket")
    keys = {kind: f"incoming/shap/{name}/{version}/{unique_prefix}/{kind}.csv" for kind in ("all", "malignant")}
    metadata = {"methods": "KernelExplainer", "params": json.dumps({"KernelExplainer": {"nb_samples": 64}})}
    s3.put_object(Bucket=inputs, Key=keys["all"], Body=tabular_demo.sample_csv(rows), Metadata=metadata)
    s3.put_object(Bucket=inputs, Key=keys["malignant"], Body=tabular_demo.sample_csv(rows),
                  Metadata={**metadata, "explain-if": json.dumps({"predicted_classes": ["malignant"]})})
    assert invoke("shap", upload_event(*keys.values())) == {"batchItemFailures": []}

    everything, some = (read_json(s3, results, results_of(keys[k]) + "manifest.json") for k in keys)
    assert everything["status"] == some["status"] == "succeeded"
    assert some["input"]["rows"] == 8 and sum(some["predictions"]["rows_per_class"].values()) == 8
    lines = np.arange(2, 10)  # data rows start on line 2, after the header
    condition = some["condition"]
    assert (condition["records"], condition["explained_records"]) == (8, int((predicted == 0).sum()))
    assert [r["line"] for r in condition["skipped"]] == lines[predicted == 1].tolist()
    for record in condition["skipped"]:
        row = record["line"] - 2
        assert record["class_name"] == "benign" and record["reason"] == "top class benign is not one of malignant"
        assert record["score"] == pytest.approx(probabilities[row, 1], rel=1e-5)

    (all_output,) = everything["methods"][0]["outputs"]
    (some_output,) = some["methods"][0]["outputs"]
    _, all_values, all_leading = values_table(s3, results, next(f for f in all_output["files"]
                                                                if f.endswith("values.csv")))
    _, some_values, some_leading = values_table(s3, results, next(f for f in some_output["files"]
                                                                  if f.endswith("values.csv")))
    assert [int(r["line"]) for r in some_leading] == lines[predicted == 0].tolist()
    assert len(all_leading) == 8 and some_values.shape == (int((predicted == 0).sum()), 30)
    assert some_output["base_value"] == pytest.approx(all_output["base_value"], abs=1e-9)
    # Kernel SHAP is additive: each kept row's values add up to its own logit from that base.
    np.testing.assert_allclose(some_values.sum(axis=1) + some_output["base_value"], logits[predicted == 0, 0],
                               atol=1e-4)


def test_a_text_file_explains_the_documents_that_meet_the_condition(invoke, s3, deployment, text_model,
                                                                    unique_prefix):
    from tests.conftest import REPO

    name, version = text_model
    inputs, results = deployment.bucket("InputBucket"), deployment.bucket("ResultsBucket")
    key = f"incoming/gradient/{name}/{version}/{unique_prefix}/reviews.jsonl"
    s3.put_object(Bucket=inputs, Key=key, Body=(REPO / "events" / "samples" / "reviews.jsonl").read_bytes(),
                  Metadata={"methods": "Saliency", "explain-if": json.dumps({"predicted_classes": ["positive"]})})
    assert invoke("gradient", upload_event(key, family="gradient")) == {"batchItemFailures": []}

    manifest = read_json(s3, results, results_of(key) + "manifest.json")
    documents = manifest["predictions"]["documents"]
    positive = [d["document"] for d in documents if d["class_name"] == "positive"]
    assert 0 < len(positive) < len(documents)  # the sample has reviews of both kinds
    assert manifest["status"] == "succeeded"
    condition = manifest["condition"]
    assert (condition["records"], condition["explained_records"]) == (len(documents), len(positive))
    assert [(r["document"], r["line"], r["class_name"]) for r in condition["skipped"]] == [
        (d["document"], d["line"], "negative") for d in documents if d["class_name"] != "positive"]
    for record in condition["skipped"]:
        assert record["score"] == pytest.approx(documents[record["document"]]["score"])
    (method,) = manifest["methods"]
    assert sorted(o["document"] for o in method["outputs"]) == positive
    assert manifest["explained_classes"] == [{"class_index": 1, "class_name": "positive"}]
