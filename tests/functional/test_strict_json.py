"""Non-finite numbers never reach a result, and every JSON document the project writes is strict JSON.

A model whose outputs are NaN (a diverged training run, a broken export) used to get `succeeded`,
blank overlays and a manifest with a literal ``NaN``, which JSON parsers refuse. This module runs
after the other functional tests (file order) and ends by parsing every JSON object in the results
bucket with a parser that refuses NaN and infinity.
"""

import json

import numpy as np
import pytest

from devtools import demo_model
from tests.conftest import png_bytes, read_json, upload_event


def strict_loads(body: bytes):
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(body, parse_constant=refuse)


@pytest.fixture(scope="module")
def nan_image_model(deployment, s3, demo_model_dir, tmp_path_factory):
    """The demo CNN with its classifier's weights set to NaN (what a diverged training run saves)."""
    import keras

    model = keras.saving.load_model(demo_model_dir / "model.keras", compile=False, safe_mode=True)
    dense = [layer for layer in model.layers if layer.weights][-1]
    dense.set_weights([np.full_like(w, np.nan) for w in dense.get_weights()])
    directory = tmp_path_factory.mktemp("nan-model")
    model.save(directory / "model.keras")
    card = {**json.loads((demo_model_dir / "card.json").read_text()), "name": "nan-shapes"}
    models = deployment.bucket("ModelBucket")
    s3.upload_file(str(directory / "model.keras"), models, "models/nan-shapes/v1/model.keras")
    s3.put_object(Bucket=models, Key="models/nan-shapes/v1/card.json", Body=json.dumps(card).encode())
    return "nan-shapes"


@pytest.mark.parametrize("family", ["gradient", "shap"])
def test_nan_predictions_are_a_typed_final_error(family, nan_image_model, invoke, s3, deployment, samples,
                                                 unique_prefix):
    images, _, _ = samples
    key = f"incoming/{family}/{nan_image_model}/v1/{unique_prefix}/nan.png"
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[0]))

    response = invoke(family, upload_event(key, family=family))

    assert response == {"batchItemFailures": []}  # final: retrying cannot fix a model
    results = deployment.bucket("ResultsBucket")
    record = strict_loads(s3.get_object(Bucket=results, Key=f"errors/{key.removeprefix('incoming/')}.json")
                          ["Body"].read())
    assert record["error"]["code"] == "invalid_model_output" and record["retrying"] is False
    assert "predictions" in record["error"]["message"] and record["error"]["details"]["nan"] > 0
    listed = s3.list_objects_v2(Bucket=results, Prefix=f"results/{key.removeprefix('incoming/')}/")
    assert listed.get("KeyCount", 0) == 0  # no blank overlay, no manifest


def test_nan_attributions_fail_their_method_only(invoke, s3, deployment, samples, unique_prefix, monkeypatch):
    """A method whose attributions are NaN (e.g. a gradient through a saturated op) is reported failed
    with the method and class named; the other methods' results stand and the manifest is partial."""
    from explain_core import attribution

    real_run_method = attribution.run_method

    def saliency_goes_nan(explainer, inputs, targets):
        result = real_run_method(explainer, inputs, targets)
        if type(explainer).__name__ == "Saliency":
            result.attributions[...] = np.nan
        return result

    monkeypatch.setattr(attribution, "run_method", saliency_goes_nan)
    images, labels, _ = samples
    key = f"incoming/gradient/shapes/v1/{unique_prefix}/nan-method.png"
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[0]),
                  Metadata={"methods": "Saliency,GradCAM"})

    assert invoke("gradient", upload_event(key, family="gradient")) == {"batchItemFailures": []}

    manifest = read_json(s3, deployment.bucket("ResultsBucket"),
                         f"results/{key.removeprefix('incoming/')}/manifest.json")
    methods = {m["name"]: m for m in manifest["methods"]}
    assert manifest["status"] == "partial"
    assert methods["GradCAM"]["status"] == "succeeded" and methods["GradCAM"]["outputs"]
    assert methods["Saliency"]["status"] == "failed" and not methods["Saliency"]["outputs"]
    error = methods["Saliency"]["error"]
    assert error["code"] == "invalid_model_output"
    assert error["details"]["method"] == "Saliency"
    assert error["details"]["class_name"] == demo_model.shapes.CLASSES[labels[0]]  # the predicted class
    assert all("Saliency" not in k for k in manifest["output_keys"])


def test_every_json_document_in_the_results_bucket_is_strict_json(s3, deployment):
    """Manifests, error records and tabular summaries written by all the functional tests before this one."""
    results = deployment.bucket("ResultsBucket")
    checked = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=results):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".json"):
                strict_loads(s3.get_object(Bucket=results, Key=obj["Key"])["Body"].read())
                checked += 1
    assert checked >= 3, checked  # at least this module's records and manifest; in a full run, hundreds
