"""A method whose estimated peak memory cannot fit the function is refused with over_memory_budget before it
runs (explain_core.memory); the upload's other methods still run."""

import json

from devtools.local.events import deliver
from tests.conftest import clear_outputs, event_keys, load_event, png_bytes, read_json


def test_a_method_that_cannot_fit_the_memory_is_refused(deployment, published_model, samples, s3, lambda_context,
                                                        monkeypatch):
    """A 1700 MB function with 1000 MB in use leaves 530 MB (after its 170 MB reserve): GradientExplainer's
    5000 sample copies of the input (about 850 MB with its overhead, whatever the batch) cannot fit, a
    DeepExplainer over four references can."""
    from explain_core.session import ExplanationSession
    from explain_core.settings import Settings
    from explain_core.sqs_adapter import SqsAdapter

    images, _, _ = samples
    event = load_event("shap-upload.json")
    (key,) = event_keys(event)
    clear_outputs(s3, deployment, "shap")
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[0]),
                  Metadata={"methods": "GradientExplainer,DeepExplainer",
                            "params": json.dumps({"GradientExplainer": {"nb_samples": 5000},
                                                  "DeepExplainer": {"nb_background": 4}})})
    settings = Settings(input_bucket=deployment.bucket("InputBucket"),
                        results_bucket=deployment.bucket("ResultsBucket"),
                        model_bucket=deployment.bucket("ModelBucket"), memory_limit_mb=1700)
    monkeypatch.setattr("explain_core.memory.process_memory_mb", lambda field="VmRSS": 1000.0)
    uploads = SqsAdapter(ExplanationSession("shap", settings, s3))

    assert uploads.handle_sqs_event(deliver(event, s3), lambda_context) == {"batchItemFailures": []}

    manifest = read_json(s3, deployment.bucket("ResultsBucket"),
                         f"results/{key.removeprefix('incoming/')}/manifest.json")
    methods = {m["name"]: m for m in manifest["methods"]}
    assert manifest["status"] == "partial"
    assert methods["DeepExplainer"]["status"] == "succeeded"
    assert methods["DeepExplainer"]["outputs"][0]["base_value"] is not None
    refused = methods["GradientExplainer"]
    assert refused["status"] == "failed"
    assert refused["error"]["code"] == "over_memory_budget"
    details = refused["error"]["details"]
    assert details["memory_limit_mb"] == 1700 and details["available_mb"] == 530
    assert details["estimated_mb"] > details["available_mb"]
    assert not refused["outputs"]
