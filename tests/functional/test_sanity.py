"""Sanity checks on demand against the emulator: a request file through the gradient function's SQS
handler, and POST /sanity-checks through the API function (explain_core.sanity)."""

import io
import json
import math

import pytest
from PIL import Image

from devtools.local.api_gateway import rest_event
from tests.conftest import png_bytes, read_json, upload_event


def request_key(name: str) -> str:
    return f"incoming/gradient/shapes/v1/sanity-checks/{name}.json"


def report_prefix(name: str) -> str:
    return f"results/gradient/shapes/v1/sanity/{name}/"


def check_report(report: dict, methods: list[str], images: int) -> None:
    assert report["status"] == "succeeded", report
    assert [m["name"] for m in report["methods"]] == methods
    assert report["images"]["count"] == images and len(report["images"]["predicted"]) == images
    assert report["randomisation"]["randomised_layers"] == ["logits"]
    assert report["randomisation"]["max_output_change"] > 0
    for method in report["methods"]:
        assert method["status"] == "succeeded" and method["verdict"].startswith(("passes:", "fails:"))
        for check in ("model_randomisation", "random_logit"):
            values = method[check]["per_image"]
            assert len(values) == images and all(math.isfinite(v) and -1 <= v <= 1 for v in values)
            assert method[check]["mean"] == pytest.approx(sum(values) / images, abs=1e-3)


def test_a_request_file_upload_writes_a_report_and_a_chart_once(invoke, deployment, s3, published_model,
                                                                 unique_prefix):
    inputs, results = deployment.bucket("InputBucket"), deployment.bucket("ResultsBucket")
    key = request_key(unique_prefix)
    s3.put_object(Bucket=inputs, Key=key, Body=json.dumps({
        "methods": ["Saliency", "GradCAM"], "images": {"source": "background", "count": 4}}).encode())

    response = invoke("gradient", upload_event(key, family="gradient"))

    assert response == {"batchItemFailures": []}
    prefix = report_prefix(unique_prefix)
    report = read_json(s3, results, prefix + "report.json")
    check_report(report, ["Saliency", "GradCAM"], 4)
    assert report["request_key"] == key and report["chart"] == prefix + "chart.png"
    chart = Image.open(io.BytesIO(s3.get_object(Bucket=results, Key=prefix + "chart.png")["Body"].read()))
    assert chart.format == "PNG" and chart.width >= 600

    # Redelivery: the report of this request file exists, so it is neither recomputed nor rewritten.
    written = s3.head_object(Bucket=results, Key=prefix + "report.json")["ETag"]
    assert invoke("gradient", upload_event(key, family="gradient", receive_count=2)) == {"batchItemFailures": []}
    assert s3.head_object(Bucket=results, Key=prefix + "report.json")["ETag"] == written
    assert read_json(s3, results, prefix + "report.json") == report


def test_images_under_a_prefix_are_checked(invoke, deployment, s3, published_model, samples, unique_prefix):
    inputs, results = deployment.bucket("InputBucket"), deployment.bucket("ResultsBucket")
    images, _, _ = samples
    folder = f"incoming/gradient/shapes/v1/{unique_prefix}/"
    # An API job's input in the folder is another client's: never read (nor its sanity-check requests).
    s3.put_object(Bucket=inputs, Key=f"{folder}0/jobs/abc/secret.png", Body=png_bytes(images[3]))
    for i in range(3):
        s3.put_object(Bucket=inputs, Key=f"{folder}{i}.png", Body=png_bytes(images[i]))
    key = request_key(unique_prefix)
    s3.put_object(Bucket=inputs, Key=key, Body=json.dumps({
        "methods": ["Saliency"], "images": {"source": "prefix", "prefix": folder, "count": 3},
    }).encode())

    assert invoke("gradient", upload_event(key, family="gradient")) == {"batchItemFailures": []}

    report = read_json(s3, results, report_prefix(unique_prefix) + "report.json")
    check_report(report, ["Saliency"], 3)
    assert report["images"]["keys"] == [f"{folder}0.png", f"{folder}1.png", f"{folder}2.png"]


@pytest.mark.parametrize("body, code", [
    (b'{"images": {"count": 1000}}', "invalid_sanity_request"),
    (b'{"methods": ["Occlusion"]}', "unknown_method"),  # a perturbation method sent to the gradient family
    (b'{"images": {"source": "prefix", "prefix": "models/"}}', "invalid_sanity_request"),
    (b'{"images": {"source": "prefix", "prefix": "uploads/"}}', "invalid_sanity_request"),  # API clients' files
    (b'{"images": {"source": "prefix", "prefix": "incoming/gradient/shapes/v1/jobs/"}}', "invalid_sanity_request"),
])
def test_a_bad_request_file_gets_an_error_record(invoke, deployment, s3, published_model, unique_prefix, body,
                                                 code):
    key = request_key(unique_prefix)
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=body)

    assert invoke("gradient", upload_event(key, family="gradient")) == {"batchItemFailures": []}

    record = read_json(s3, deployment.bucket("ResultsBucket"),
                       f"errors/gradient/shapes/v1/sanity-checks/{unique_prefix}.json.json")
    assert record["error"]["code"] == code and not record["retrying"]


def test_the_api_stores_a_request_file_and_reports_its_status(invoke, invoke_function, deployment, s3,
                                                              published_model, api_key):
    request = {"family": "gradient", "model": {"name": "shapes", "version": "v1"}, "methods": ["GradCAM"],
               "images": {"count": 2}}
    response = invoke_function("ApiFunction", rest_event("POST", "/sanity-checks", "/sanity-checks", body=request))

    assert response["statusCode"] == 202, response["body"]
    accepted = json.loads(response["body"])
    request_id = accepted["request_id"]
    assert accepted["status"] == "queued"
    assert accepted["request_key"] == request_key(request_id)
    assert accepted["report_key"] == report_prefix(request_id) + "report.json"
    stored = s3.get_object(Bucket=deployment.bucket("InputBucket"), Key=accepted["request_key"])
    assert json.loads(stored["Body"].read())["methods"] == ["GradCAM"]

    path = accepted["status_url"]
    parameters = dict(zip(("family", "name", "version", "request_id"), path.split("/")[2:], strict=True))
    status_event = rest_event("GET", "/sanity-checks/{family}/{name}/{version}/{request_id}", path,
                              path_parameters=parameters)
    assert json.loads(invoke_function("ApiFunction", status_event)["body"])["status"] == "queued"

    # The upload's notification reaches the gradient function, which runs the check.
    assert invoke("gradient", upload_event(accepted["request_key"], family="gradient")) == {"batchItemFailures": []}

    status = json.loads(invoke_function("ApiFunction", status_event)["body"])
    assert status["status"] == "succeeded"
    check_report(status["report"], ["GradCAM"], 2)
    assert status["chart_url"].startswith("http") and status["report_url"].startswith("http")

    other_client = rest_event("GET", "/sanity-checks/{family}/{name}/{version}/{request_id}", path,
                              path_parameters=parameters, client="another-client")
    refused = invoke_function("ApiFunction", other_client)
    assert refused["statusCode"] == 404 and json.loads(refused["body"])["error"]["code"] == "unknown_sanity_check"


def test_the_api_refuses_a_method_of_another_family(invoke_function, published_model, api_key):
    request = {"family": "gradient", "model": {"name": "shapes", "version": "v1"}, "methods": ["Rise"]}
    response = invoke_function("ApiFunction", rest_event("POST", "/sanity-checks", "/sanity-checks", body=request))
    assert response["statusCode"] == 422 and json.loads(response["body"])["error"]["code"] == "unknown_method"


def test_the_api_refuses_images_under_a_prefix(invoke_function, deployment, s3, published_model, api_key):
    # A prefix could name other API clients' inputs: through the API a check reads the background only.
    request = {"family": "gradient", "model": {"name": "shapes", "version": "v1"}, "methods": ["Saliency"],
               "images": {"source": "prefix", "prefix": "incoming/gradient/shapes/v1/", "count": 2}}
    response = invoke_function("ApiFunction", rest_event("POST", "/sanity-checks", "/sanity-checks", body=request))

    assert response["statusCode"] == 422, response["body"]
    assert json.loads(response["body"])["error"]["code"] == "invalid_sanity_request"
