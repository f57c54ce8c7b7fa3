"""The shap family's handler on image and tabular uploads: real SHAP values, checked for additivity."""

import csv
import io
import json

import numpy as np
import pytest

from tests.conftest import clear_outputs, event_keys, load_event, png_bytes, read_json

pytestmark = pytest.mark.slow

IMAGE_METHODS = ("GradientExplainer", "DeepExplainer", "PartitionExplainer", "SuperpixelKernelExplainer")
#: Cheaper than the defaults; additivity does not depend on the sample counts except for
#: GradientExplainer (a Monte-Carlo estimate).
IMAGE_PARAMS = {"GradientExplainer": {"nb_samples": 200}, "PartitionExplainer": {"max_evals": 200},
                "SuperpixelKernelExplainer": {"nb_samples": 300, "nb_segments": 40}}


def image_key(name: str) -> str:
    return f"incoming/shap/shapes/v1/functional/{name}"


def results_of(key: str) -> str:
    return f"results/{key.removeprefix('incoming/')}/"


def upload_event(key: str, etag: str = "etag") -> dict:
    """An SQS event for one upload, built from the shap family's event file."""
    from urllib.parse import quote_plus

    event = load_event("shap-upload.json")
    body = json.loads(event["Records"][0]["body"])
    body["Records"][0]["s3"]["object"]["key"] = quote_plus(key)
    body["Records"][0]["s3"]["object"]["eTag"] = etag
    event["Records"] = event["Records"][:1]
    event["Records"][0]["body"] = json.dumps(body)
    return event


def load_npy(s3, bucket, key) -> np.ndarray:
    return np.load(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()), allow_pickle=False)


@pytest.fixture(scope="module")
def demo_keras_model(demo_model_dir):
    import keras

    return keras.saving.load_model(demo_model_dir / "model.keras", compile=False, safe_mode=True)


@pytest.fixture(scope="module")
def image_results(invoke, s3, deployment, samples):
    """One upload per demo class, explained by every image method of the family."""
    images, labels, masks = samples
    clear_outputs(s3, deployment, "shap")
    keys = []
    for i in range(3):
        key = image_key(f"sample-{i}.png")
        s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[i]),
                      Metadata={"methods": ",".join(IMAGE_METHODS), "params": json.dumps(IMAGE_PARAMS)})
        keys.append(key)
    event = upload_event(keys[0])
    template = event["Records"][0]
    event["Records"] = []
    for i, key in enumerate(keys):
        record = json.loads(json.dumps(template))
        body = json.loads(record["body"])
        from urllib.parse import quote_plus

        body["Records"][0]["s3"]["object"]["key"] = quote_plus(key)
        record["body"] = json.dumps(body)
        record["messageId"] = f"00000000-0000-4000-8000-00000000010{i}"
        event["Records"].append(record)
    response = invoke("shap", event)
    results = deployment.bucket("ResultsBucket")
    manifests = [read_json(s3, results, results_of(key) + "manifest.json") for key in keys]
    return response, keys, manifests


def test_every_image_method_succeeds_with_base_values(image_results, samples):
    response, keys, manifests = image_results
    _, labels, _ = samples
    assert response == {"batchItemFailures": []}
    for manifest, label in zip(manifests, labels[:3], strict=True):
        assert manifest["status"] == "succeeded", json.dumps(manifest["methods"], indent=1)[:3000]
        assert manifest["predictions"][0]["class_index"] == label
        assert [m["name"] for m in manifest["methods"]] == list(IMAGE_METHODS)
        assert manifest["background"]["source"] == "background.npy"
        for method in manifest["methods"]:
            (output,) = method["outputs"]
            assert output["class_index"] == label
            assert output["output_kind"] == "logit"
            assert np.isfinite(output["base_value"])


#: |sum(values) + base - output| allowed, as a share of |output - base|. Deep SHAP, Partition and
#: Kernel SHAP are additive by construction (float rounding only); expected gradients estimates
#: an integral with nb_samples Monte-Carlo samples.
ADDITIVITY_TOLERANCE = {"DeepExplainer": 1e-3, "PartitionExplainer": 1e-3, "SuperpixelKernelExplainer": 1e-3,
                        "GradientExplainer": 0.15}


@pytest.mark.parametrize("method", IMAGE_METHODS)
def test_image_values_add_up_to_the_model_output(method, image_results, samples, s3, deployment, demo_keras_model):
    from devtools import demo_model

    _, keys, manifests = image_results
    images, _, _ = samples
    logits = demo_keras_model.predict_on_batch(demo_model.to_model_input(images[:3]))
    for i, manifest in enumerate(manifests):
        entry = next(m for m in manifest["methods"] if m["name"] == method)
        (output,) = entry["outputs"]
        values = load_npy(s3, deployment.bucket("ResultsBucket"), output["attributions"])
        assert values.shape == (64, 64, 3)
        explained = float(logits[i, output["class_index"]])
        error = abs(values.sum() + output["base_value"] - explained)
        assert error <= ADDITIVITY_TOLERANCE[method] * abs(explained - output["base_value"]) + 1e-4, (
            method, error, explained, output["base_value"])
