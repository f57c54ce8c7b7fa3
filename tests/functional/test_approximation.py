"""Approximation errors in the manifest of a real upload (the SHAP family's are checked beside its
additivity tests, tests/functional/test_shap_family.py)."""

import io
import json

import numpy as np
import pytest

from devtools import demo_model
from explain_core.approximation import RELATIVE_ERROR_THRESHOLD
from tests.conftest import png_bytes, read_json, upload_event

pytestmark = pytest.mark.slow


def test_integrated_gradients_with_few_steps_is_warned_about_and_more_steps_shrink_its_gap(
        invoke, s3, deployment, samples, demo_model_dir, unique_prefix):
    import keras

    images, labels, _ = samples
    keys = {steps: f"incoming/gradient/shapes/v1/{unique_prefix}/ig-steps-{steps}.png" for steps in (2, 128)}
    for steps, key in keys.items():
        s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[0]),
                      Metadata={"methods": "IntegratedGradients",
                                "params": json.dumps({"IntegratedGradients": {"steps": steps}})})
    assert invoke("gradient", upload_event(*keys.values(), family="gradient")) == {"batchItemFailures": []}

    results = deployment.bucket("ResultsBucket")
    outputs = {}
    for steps, key in keys.items():
        manifest = read_json(s3, results, f"results/{key.removeprefix('incoming/')}/manifest.json")
        assert manifest["status"] == "succeeded"
        (outputs[steps],) = manifest["methods"][0]["outputs"]

    # The manifest's figures are the values: recomputed here from the .npy and the model itself.
    model = keras.saving.load_model(demo_model_dir / "model.keras", compile=False, safe_mode=True)
    inputs = demo_model.to_model_input(images[:1])
    cls = outputs[2]["class_index"]
    gap = float(model.predict_on_batch(inputs)[0, cls] - model.predict_on_batch(np.zeros_like(inputs))[0, cls])
    for output in outputs.values():
        attributions = np.load(io.BytesIO(s3.get_object(Bucket=results, Key=output["attributions"])["Body"].read()),
                               allow_pickle=False)
        found = output["approximation"]
        assert found["check"] == "completeness" and found["output_kind"] == "logit"
        assert found["threshold"] == RELATIVE_ERROR_THRESHOLD["completeness"] and found["parameter"] == "steps"
        assert found["output_gap"] == pytest.approx(gap, rel=1e-4)
        # Xplique's map is the mean over the 3 channels: the attributions' sum is 3 x the map's.
        assert found["absolute_error"] == pytest.approx(abs(3 * attributions.sum(dtype=np.float64) - gap), abs=1e-4)
        assert found["relative_error"] == pytest.approx(found["absolute_error"] / max(abs(gap), 0.1), rel=1e-6)

    coarse, fine = outputs[2], outputs[128]
    assert coarse["approximation"]["relative_error"] > RELATIVE_ERROR_THRESHOLD["completeness"]
    (warning,) = coarse["warnings"]
    assert warning["code"] == "approximation_error" and (warning["parameter"], warning["value"]) == ("steps", 2)
    assert "raise steps (now 2)" in warning["message"]
    assert fine["warnings"] == []
    assert fine["approximation"]["relative_error"] < coarse["approximation"]["relative_error"] / 10
