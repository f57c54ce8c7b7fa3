"""The REST API's handlers invoked with the API Gateway events in events/ against the emulator.

Family functions answer POST /explanations/<family>; the light ApiFunction answers the catalog,
upload and job routes; the AuthorizerFunction checks API keys. Outputs are fetched through the
presigned URLs the responses carry, as a client would.
"""

import base64
import copy
import io
import json
import time
import urllib.request

import numpy as np
import pytest

from devtools.local import FAMILY_FUNCTIONS
from devtools.local.api_gateway import TEST_API_KEY, TEST_CLIENT
from devtools.local.lambda_service import SqsEventSource
from explain_core.registry import METHODS
from tests.conftest import load_event, read_json
from tests.functional.test_queue_path import drain, empty_queue


def header(response: dict, name: str) -> str:
    """A response header (Powertools' REST resolver answers with multiValueHeaders)."""
    (value,) = response["multiValueHeaders"][name]
    return value


def body(response: dict) -> dict:
    assert header(response, "Content-Type") == "application/json"
    return json.loads(response["body"])


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def explain_event(name: str, **changes) -> dict:
    """An explanation event from events/ with fields of its JSON body replaced (None removes one)."""
    event = load_event(name)
    request = json.loads(event["body"])
    for field, value in changes.items():
        if value is None:
            request.pop(field, None)
        else:
            request[field] = value
    event["body"] = json.dumps(request)
    return event


def family_of(event: dict) -> str:
    return event["path"].rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def call(invoke_function, published_model, tabular_models, api_key):
    def _call(event: dict, function: str | None = None) -> dict:
        function = function or (FAMILY_FUNCTIONS[family_of(event)] if event["path"].startswith("/explanations/")
                                else "ApiFunction")
        return invoke_function(function, event)

    return _call


# ----------------------------------------------------------------------------- synchronous
def test_sync_explanation_returns_predictions_and_links_to_the_outputs(call, samples):
    _, labels, _ = samples
    response = call(explain_event("api-explain-gradient.json"))

    assert response["statusCode"] == 200, response["body"][:2000]
    result = body(response)
    assert len(response["body"]) < 20_000  # links, never arrays or images inline
    assert result["status"] == "succeeded" and not result["cached"]
    assert result["predictions"][0]["class_index"] == labels[0]
    assert [m["name"] for m in result["methods"]] == ["Saliency", "GradCAM"]
    for method in result["methods"]:
        (output,) = method["outputs"]
        assert output["class_index"] == labels[0]
        assert fetch(output["heatmap_url"]).startswith(b"\x89PNG")
        attributions = np.load(io.BytesIO(fetch(output["attributions_url"])), allow_pickle=False)
        assert list(attributions.shape) == output["attributions_shape"]
        assert np.isfinite(attributions).all() and np.abs(attributions).max() > 0
    manifest = json.loads(fetch(result["manifest_url"]))
    assert manifest["input"]["key"].startswith("requests/gradient/shapes/v1/api/")
    assert manifest["status"] == "succeeded"


def test_a_request_chooses_how_heatmaps_are_drawn(call):
    from PIL import Image

    rendering = {"polarity": "signed", "colorbar": True, "clip_percentiles": [1, 99]}
    response = call(explain_event("api-explain-gradient.json", methods=["GradientInput"], params={},
                                  rendering=rendering))
    assert response["statusCode"] == 200, response["body"][:2000]
    result = body(response)
    assert result["rendering"] == {"polarity": "signed", "colormap": "RdBu_r", "clip_percentiles": [1.0, 99.0],
                                   "alpha": 0.9, "overlay": "blend", "colorbar": True}
    (output,) = result["methods"][0]["outputs"]
    low, high = output["heatmap_range"]
    assert 0 <= low < high
    raw = Image.open(io.BytesIO(fetch(output["raw_heatmap_url"])))
    assert raw.format == "PNG" and raw.size == (64, 64)
    overlay = Image.open(io.BytesIO(fetch(output["heatmap_url"])))
    assert overlay.height == 224 and overlay.width > 224 + 40  # the colour bar's panel on the right
    assert json.loads(fetch(result["manifest_url"]))["rendering"] == result["rendering"]

    refused = call(explain_event("api-explain-gradient.json", rendering={"polarity": "sideways"}))
    assert refused["statusCode"] == 400 and body(refused)["error"]["code"] == "malformed_request"


def unsigned(value):
    """``value`` with every presigned URL cut to its object path (the signature changes with time)."""
    if isinstance(value, dict):
        return {k: unsigned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unsigned(v) for v in value]
    return value.split("?X-Amz-", 1)[0] if isinstance(value, str) else value


def test_the_same_request_is_answered_from_its_results(call):
    first = body(call(explain_event("api-explain-gradient.json", methods=["Saliency"])))
    started = time.perf_counter()
    second = body(call(explain_event("api-explain-gradient.json", methods=["Saliency"])))
    assert not first["cached"] and second["cached"]
    assert second["results_prefix"] == first["results_prefix"]
    # The same outputs; the links are signed anew (their X-Amz-Date may differ by a second).
    assert unsigned(second["methods"]) == unsigned(first["methods"])
    assert time.perf_counter() - started < 5
    other = body(call(explain_event("api-explain-gradient.json", methods=["Saliency"], target="square")))
    assert other["results_prefix"] != first["results_prefix"]  # other options, other results
    assert [(c["class_index"], c["class_name"]) for c in other["explained_classes"]] == [(1, "square")]


def test_tabular_explanation_links_values_summary_and_plots(call):
    response = call(load_event("api-explain-shap-table.json"))

    assert response["statusCode"] == 200, response["body"][:2000]
    result = body(response)
    assert sum(result["predictions"]["rows_per_class"].values()) == 4
    (method,) = result["methods"]
    assert method["name"] == "TreeExplainer" and method["status"] == "succeeded"
    (output,) = method["outputs"]
    assert output["additivity_max_error"] < 1e-5
    files = {name.split(".", 1)[1]: url for name, url in output["files"].items()}  # "1-benign.values.csv"
    assert {"values.csv", "bar.png", "beeswarm.png"} <= set(files)
    summary = json.loads(fetch(output["summary_url"]))
    assert summary["base_value"] == pytest.approx(output["base_value"])
    values = fetch(files["values.csv"]).decode().splitlines()
    assert len(values) == 1 + 4


def test_upload_ticket_then_explain_the_uploaded_object(call, samples):
    images, labels, _ = samples
    ticket = call(load_event("api-create-upload.json"))
    assert ticket["statusCode"] == 201, ticket["body"]
    ticket = body(ticket)
    assert ticket["input_key"].startswith("uploads/") and ticket["input_key"].endswith("/large photo.jpg")
    assert ticket["max_bytes"] >= 10 * 1024 * 1024

    from devtools.samples import encode_image

    status = post_form(ticket["url"], ticket["fields"], encode_image(images[2], "JPEG", quality=92))
    assert status in (200, 201, 204)

    event = explain_event("api-explain-gradient.json", input_base64=None, filename=None,
                          input_key=ticket["input_key"], methods=["GradCAM"])
    response = call(event)
    assert response["statusCode"] == 200, response["body"][:2000]
    result = body(response)
    assert result["predictions"][0]["class_index"] == labels[2]
    assert result["input"]["format"] == "JPEG"


def post_form(url: str, fields: dict, content: bytes) -> int:
    """A presigned POST as a browser or curl -F sends it: the fields, then the file."""
    boundary = "----explain-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
    data = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


# ----------------------------------------------------------------------------- jobs
@pytest.fixture
def perturbation_source(deployment, handlers, sqs):
    source = SqsEventSource(deployment, deployment.function_for_family("perturbation"),
                            handler=handlers["perturbation"])
    empty_queue(sqs, source.queue_url)
    return source


def job_event(job_id: str, client: str = TEST_CLIENT) -> dict:
    event = load_event("api-get-job.json")
    event["path"] = f"/jobs/{job_id}"
    event["pathParameters"] = {"job_id": job_id}
    event["requestContext"]["authorizer"] = {"principalId": client}
    return event


def test_async_job_is_idempotent_runs_through_the_queue_and_reports_results(call, perturbation_source, s3,
                                                                          deployment, samples, unique_prefix):
    _, labels, _ = samples
    # A fresh request (the filename is part of it), so the job is new.
    event = explain_event("api-explain-perturbation-async.json", filename=f"{unique_prefix}.png")
    accepted = call(event)
    assert accepted["statusCode"] == 202, accepted["body"]
    job = body(accepted)
    assert header(accepted, "Location") == f"/jobs/{job['job_id']}" == job["status_url"]
    assert job["status"] == "queued" and "async" in job["reason"]

    again = body(call(copy.deepcopy(event)))
    assert again["job_id"] == job["job_id"]  # the same request twice: one job
    listed = s3.list_objects_v2(Bucket=deployment.bucket("InputBucket"),
                                Prefix="incoming/perturbation/shapes/v1/jobs/")["Contents"]
    assert sum(o["Key"].endswith(f"/{unique_prefix}.png") for o in listed) == 1

    queued = body(call(job_event(job["job_id"])))
    assert queued["status"] == "queued" and queued["result"] is None

    responses = drain(perturbation_source)
    assert responses and all(r == {"batchItemFailures": []} for r in responses)

    done = call(job_event(job["job_id"]))
    assert done["statusCode"] == 200
    done = body(done)
    assert done["status"] == "succeeded"
    result = done["result"]
    assert result["predictions"][0]["class_index"] == labels[0]
    (method,) = result["methods"]
    assert method["name"] == "Occlusion" and method["params"]["patch_size"] == 16
    assert fetch(method["outputs"][0]["heatmap_url"]).startswith(b"\x89PNG")

    stranger = call(job_event(job["job_id"], client="someone-else"))
    assert stranger["statusCode"] == 404 and body(stranger)["error"]["code"] == "unknown_job"


def test_a_request_over_the_remaining_time_becomes_a_job_or_is_refused_in_sync_mode(call, unique_prefix):
    # API Gateway received this request 28 s ago: 1 s is left of its 29 s timeout.
    def late(mode: str) -> dict:
        event = explain_event("api-explain-gradient.json", methods=["IntegratedGradients"], mode=mode,
                              filename=f"{unique_prefix}-{mode}.png")
        event["requestContext"]["requestTimeEpoch"] = int((time.time() - 28) * 1000)
        return event

    refused = call(late("sync"))
    assert refused["statusCode"] == 422
    error = body(refused)["error"]
    assert error["code"] == "over_time_budget" and error["details"]["available_seconds"] == 0

    accepted = call(late("auto"))
    assert accepted["statusCode"] == 202, accepted["body"]
    assert "more than the" in body(accepted)["reason"]


def test_sam_locals_frozen_request_time_is_not_trusted(call, monkeypatch, unique_prefix):
    """SAM CLI stamps every event with the time it started; under SAM the function's clock counts."""
    monkeypatch.setenv("AWS_SAM_LOCAL", "true")
    event = explain_event("api-explain-gradient.json", methods=["Saliency"], mode="sync",
                          filename=f"{unique_prefix}-sam.png")
    event["requestContext"]["requestTimeEpoch"] = int((time.time() - 28) * 1000)
    response = call(event)
    assert response["statusCode"] == 200, response["body"][:500]


def test_failed_job_reports_its_error(call, perturbation_source, unique_prefix, deployment, s3):
    # Requests are validated before a job starts, so a job fails only on the worker: here the
    # model is removed between the request and the worker's run.
    event = explain_event("api-explain-perturbation-async.json", filename=f"{unique_prefix}-fail.png")
    job = body(call(event))
    card_key = "models/shapes/v1/card.json"
    model_bucket = deployment.bucket("ModelBucket")
    card = s3.get_object(Bucket=model_bucket, Key=card_key)["Body"].read()
    s3.delete_object(Bucket=model_bucket, Key=card_key)
    try:
        perturbation_source.handler.session.store._memory.clear()
        drain(perturbation_source)
    finally:
        s3.put_object(Bucket=model_bucket, Key=card_key, Body=card)
    failed = body(call(job_event(job["job_id"])))
    assert failed["status"] == "failed" and failed["error"]["code"] == "unknown_model"


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name,status,code", [
    ("api-explain-malformed.json", 400, "malformed_request"),
    ("api-explain-unknown-model.json", 404, "unknown_model"),
    ("api-explain-invalid-params.json", 422, "invalid_parameter"),
])
def test_error_events(call, name, status, code):
    response = call(load_event(name))
    assert response["statusCode"] == status
    error = body(response)["error"]
    assert error["code"] == code and error["message"]


def tiff_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="TIFF")
    return buffer.getvalue()


@pytest.mark.parametrize("changes,status,code", [
    ({"methods": ["NoSuchMethod"]}, 422, "unknown_method"),
    ({"methods": ["Saliencé"]}, 422, "unknown_method"),  # never reaches S3 metadata (ASCII only)
    ({"target": "carré"}, 422, "invalid_target"),
    ({"methods": ["TreeExplainer"]}, 422, "unknown_method"),  # a shap method on the gradient route
    ({"target": "hexagon"}, 422, "invalid_target"),
    ({"top_k": 11}, 400, "malformed_request"),
    ({"input_base64": "not base64!"}, 400, "malformed_request"),
    ({"input_key": "uploads/0123456789abcdef0123456789abcdef/missing.png"}, 400, "malformed_request"),  # both
    ({"input_base64": None, "input_key": "uploads/0123456789abcdef0123456789abcdef/missing.png"}, 404,
     "unknown_input"),
    ({"input_base64": None, "input_key": "incoming/gradient/shapes/v1/x.png"}, 400, "malformed_request"),
    ({"model": {"name": "../etc", "version": "v1"}}, 400, "malformed_request"),
    ({"mode": "later"}, 400, "malformed_request"),
    ({"extra": 1}, 400, "malformed_request"),
    ({"input_base64": base64.b64encode(b"GIF89a" + b"\0" * 64).decode()}, 400, "invalid_image"),
    ({"input_base64": base64.b64encode(tiff_bytes()).decode()}, 415, "unsupported_format"),
    ({"input_base64": "A" * (6 * 1024 * 1024)}, 413, "request_too_large"),
])
def test_bad_requests_get_typed_errors(call, changes, status, code):
    response = call(explain_event("api-explain-gradient.json", **changes))
    assert response["statusCode"] == status, response["body"][:1000]
    error = body(response)["error"]
    assert error["code"] == code
    assert "Traceback" not in response["body"]


@pytest.mark.parametrize("content_type,status", [
    ("text/plain", 415), ("application/xml", 415), ("multipart/form-data; boundary=x", 415),
    ("APPLICATION/JSON; charset=utf-8", 201), (None, 201),
    ("application/x-www-form-urlencoded", 201),  # what curl -d says about a JSON body
])
def test_request_bodies_are_json(call, content_type, status):
    event = load_event("api-create-upload.json")
    for field in ("headers", "multiValueHeaders"):
        event[field] = {k: v for k, v in event[field].items() if k != "Content-Type"}
        if content_type:
            event[field]["content-type"] = content_type if field == "headers" else [content_type]
    response = call(event)
    assert response["statusCode"] == status, response["body"]
    if status == 415:
        assert body(response)["error"]["code"] == "unsupported_media_type"


def test_a_refused_input_leaves_an_error_record(call, s3, deployment, unique_prefix):
    corrupt = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20).decode()
    response = call(explain_event("api-explain-gradient.json", input_base64=corrupt,
                                  filename=f"{unique_prefix}.png"))
    assert response["statusCode"] == 400
    listed = s3.list_objects_v2(Bucket=deployment.bucket("ResultsBucket"),
                                Prefix="errors/gradient/shapes/v1/api/").get("Contents", [])
    records = [o["Key"] for o in listed if o["Key"].endswith(f"/{unique_prefix}.png.json")]
    assert len(records) == 1
    record = read_json(s3, deployment.bucket("ResultsBucket"), records[0])
    assert record["error"]["code"] == "invalid_image" and record["retrying"] is False


def test_unexpected_failure_is_a_500_without_a_trace(call, monkeypatch):
    from explain_core import api

    def broken():
        raise RuntimeError("secret internal detail")

    # A property (a data descriptor) wins over the catalog cached on the instance.
    monkeypatch.setattr(type(api.services), "catalog", property(lambda self: broken()))
    response = call(load_event("api-list-models.json"))
    assert response["statusCode"] == 500
    error = body(response)["error"]
    assert error["code"] == "internal_error"
    assert "secret internal detail" not in response["body"] and "Traceback" not in response["body"]


def test_a_job_request_being_created_concurrently_is_a_409(call, handlers, monkeypatch, unique_prefix):
    from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

    def in_progress(**kwargs):
        raise IdempotencyAlreadyInProgressError("Execution already in progress with idempotency key")

    # What Powertools raises while another invocation holds the same request's idempotency record.
    monkeypatch.setattr(handlers["perturbation"].endpoint.requests, "start_job", in_progress)
    event = explain_event("api-explain-perturbation-async.json", filename=f"{unique_prefix}-busy.png")
    response = call(event)
    assert response["statusCode"] == 409
    assert body(response)["error"]["code"] == "request_in_progress"


def test_unknown_route_and_family_not_served_here(call):
    event = load_event("api-list-models.json")
    event["path"] = event["resource"] = "/nothing-here"
    response = call(event)
    assert response["statusCode"] == 404 and body(response)["error"]["code"] == "not_found"
    # The light ApiFunction does not explain: API Gateway never routes explanations to it.
    response = call(load_event("api-explain-gradient.json"), function="ApiFunction")
    assert response["statusCode"] == 404 and body(response)["error"]["code"] == "not_found"


# ----------------------------------------------------------------------------- catalog
def test_models_are_listed_with_their_cards(call):
    listed = body(call(load_event("api-list-models.json")))
    by_name = {(m["name"], m["version"]): m for m in listed["models"]}
    assert {("shapes", "v1"), ("breast-cancer-xgb", "v1"), ("breast-cancer-mlp", "v1")} <= set(by_name)
    assert by_name[("shapes", "v1")]["card"]["class_names"][:3] == ["circle", "square", "triangle"]
    assert by_name[("breast-cancer-xgb", "v1")]["card"]["modality"] == "tabular"
    assert listed["truncated"] is False

    one = body(call(load_event("api-get-model.json")))
    assert one["card"] == by_name[("shapes", "v1")]["card"]

    missing = load_event("api-get-model.json")
    missing["path"], missing["pathParameters"] = "/models/nope/v9", {"name": "nope", "version": "v9"}
    response = call(missing)
    assert response["statusCode"] == 404 and body(response)["error"]["code"] == "unknown_model"


def test_methods_are_listed_with_defaults_and_bounds(call):
    shap_only = body(call(load_event("api-list-methods.json")))["methods"]
    assert {m["family"] for m in shap_only} == {"shap"}
    tree = next(m for m in shap_only if m["name"] == "TreeExplainer")
    assert tree["params"]["feature_perturbation"]["choices"] == ["tree_path_dependent", "interventional"]
    assert tree["frameworks"] == ["xgboost"]

    event = load_event("api-list-methods.json")
    event["queryStringParameters"] = event["multiValueQueryStringParameters"] = None
    every = body(call(event))["methods"]
    assert len(every) == len(METHODS)
    steps = next(m for m in every if m["name"] == "IntegratedGradients")["params"]["steps"]
    assert (steps["default"], steps["minimum"], steps["maximum"]) == (50, 2, 512)

    event["queryStringParameters"], event["multiValueQueryStringParameters"] = {"family": "x"}, {"family": ["x"]}
    response = call(event)
    assert response["statusCode"] == 400


# ----------------------------------------------------------------------------- authorizer
def test_authorizer_allows_a_registered_key_and_denies_the_rest(invoke_function, api_key, deployment, capsys):
    allowed = invoke_function("AuthorizerFunction", load_event("api-authorizer-token.json"))
    assert allowed["principalId"] == TEST_CLIENT
    (statement,) = allowed["policyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Resource"] == ["arn:aws:execute-api:us-east-1:123456789012:abcdef1234/v1/*/*"]
    assert allowed["context"] == {"client_id": TEST_CLIENT}

    from devtools import api_keys
    from explain_core.authorizer import new_api_key

    table_name = deployment.tables["ApiClientsTable"]
    api_keys.main(["create", "--table", table_name, "--client", "cli-client"])
    created = capsys.readouterr().out.strip()
    event = load_event("api-authorizer-token.json")
    event["authorizationToken"] = f"Bearer {created}"
    assert invoke_function("AuthorizerFunction", event)["principalId"] == "cli-client"
    api_keys.main(["disable", "--table", table_name, "--key", created])

    for token in (f"Bearer {new_api_key()}", TEST_API_KEY, f"Basic {TEST_API_KEY}", "", f"Bearer {created}",
                  f"Bearer {TEST_API_KEY}x"):
        event = load_event("api-authorizer-token.json")
        event["authorizationToken"] = token
        denied = invoke_function("AuthorizerFunction", event)
        assert denied["policyDocument"]["Statement"][0]["Effect"] == "Deny", token
        assert denied["principalId"] == "unknown"
    table = deployment.table("ApiClientsTable")
    assert table.get_item(Key={"key_hash": TEST_API_KEY}).get("Item") is None  # only hashes are stored


# ----------------------------------------------------------------------------- isolation between clients
CLIENT_A, CLIENT_B = "isolation-client-a", "isolation-client-b"


def as_client(event: dict, client: str) -> dict:
    """The event as API Gateway sends it after the Lambda authorizer allowed ``client``."""
    event["requestContext"]["authorizer"] = {"principalId": client, "client_id": client, "integrationLatency": 3}
    return event


def output_objects(result: dict) -> set[str]:
    """The bucket paths (presigned query strings dropped) of every link in an explanation result."""
    urls = [result["manifest_url"]]
    for method in result["methods"]:
        for output in method["outputs"]:
            urls += [output[f] for f in ("heatmap_url", "attributions_url", "summary_url") if output.get(f)]
            urls += list(output["files"].values())
    return {url.split("?", 1)[0] for url in urls}


def test_clients_never_share_cached_requests_or_results(call, s3, deployment, unique_prefix):
    def explain(client: str) -> dict:
        event = explain_event("api-explain-gradient.json", methods=["Saliency"], filename=f"{unique_prefix}.png")
        response = call(as_client(event, client))
        assert response["statusCode"] == 200, response["body"][:1000]
        return body(response)

    first_a = explain(CLIENT_A)
    assert first_a["cached"] is False
    first_b = explain(CLIENT_B)  # the same bytes and options from another client
    assert first_b["cached"] is False, "client B learnt that client A had sent this input"
    assert first_b["results_prefix"] != first_a["results_prefix"]
    assert not output_objects(first_a) & output_objects(first_b)  # none of A's links

    again_a, again_b = explain(CLIENT_A), explain(CLIENT_B)
    assert again_a["cached"] is True and again_a["results_prefix"] == first_a["results_prefix"]
    assert again_b["cached"] is True and again_b["results_prefix"] == first_b["results_prefix"]
    assert not output_objects(again_a) & output_objects(again_b)

    # One stored request per client, and no client id in any key.
    stored = [o["Key"] for o in s3.list_objects_v2(Bucket=deployment.bucket("InputBucket"),
                                                   Prefix="requests/gradient/shapes/v1/api/")["Contents"]
              if o["Key"].endswith(f"/{unique_prefix}.png")]
    assert len(stored) == 2
    for key in stored + [first_a["results_prefix"], first_b["results_prefix"]]:
        assert CLIENT_A not in key and CLIENT_B not in key
    manifest = json.loads(fetch(first_b["manifest_url"]))
    assert manifest["input"]["key"] in stored


def test_jobs_and_their_idempotency_are_per_client(call, unique_prefix):
    def explain(client: str, mode: str, name: str = unique_prefix) -> dict:
        event = explain_event("api-explain-gradient.json", methods=["Saliency"], filename=f"{name}.png", mode=mode)
        return call(as_client(event, client))

    assert explain(CLIENT_A, "sync")["statusCode"] == 200
    # Client A's explanation is not client B's: B's request is new to B, so it becomes B's job.
    accepted_b = explain(CLIENT_B, "async")
    assert accepted_b["statusCode"] == 202, accepted_b["body"][:500]
    job_b = body(accepted_b)["job_id"]
    assert body(explain(CLIENT_B, "async"))["job_id"] == job_b  # idempotent for B
    cached_a = explain(CLIENT_A, "async")  # A's own results answer A's request
    assert cached_a["statusCode"] == 200 and body(cached_a)["cached"] is True

    # The same new request from two clients: two jobs, each idempotent for its client.
    job_a = body(explain(CLIENT_A, "async", f"{unique_prefix}-y"))["job_id"]
    job_b_y = body(explain(CLIENT_B, "async", f"{unique_prefix}-y"))["job_id"]
    assert job_a != job_b_y
    assert body(explain(CLIENT_A, "async", f"{unique_prefix}-y"))["job_id"] == job_a

    for job, owner, stranger in ((job_b, CLIENT_B, CLIENT_A), (job_a, CLIENT_A, CLIENT_B)):
        assert call(job_event(job, client=owner))["statusCode"] == 200
        refused = call(job_event(job, client=stranger))
        assert refused["statusCode"] == 404 and body(refused)["error"]["code"] == "unknown_job"


def keys_containing(s3, bucket: str, text: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", []) if text in o["Key"]]


@pytest.mark.parametrize("authorizer", [None, {}, {"integrationLatency": 0}, {"principalId": ""}])
@pytest.mark.parametrize("name", ["api-explain-gradient.json", "api-explain-perturbation-async.json",
                                  "api-get-job.json", "api-list-models.json", "api-create-upload.json"])
def test_a_request_without_the_authorizers_principal_is_refused(call, s3, deployment, unique_prefix, name,
                                                               authorizer):
    """A route without the Lambda authorizer is a deployment error: never served as some shared client."""
    event = load_event(name)
    if event["body"] and "input_base64" in event["body"]:
        event = explain_event(name, filename=f"{unique_prefix}.png")
    event["requestContext"]["authorizer"] = authorizer
    response = call(event)

    assert response["statusCode"] == 500, response["body"][:500]
    error = body(response)["error"]
    assert error["code"] == "missing_authorizer_context"
    assert "authorizer" in error["message"] and "deployment" in error["message"]
    for bucket in ("InputBucket", "ResultsBucket"):
        assert keys_containing(s3, deployment.bucket(bucket), unique_prefix) == []


def test_a_job_whose_last_attempt_was_killed_reports_failed(call, deployment):
    """The family's SQS adapter records each attempt on the job; a final one past its deadline was killed."""
    from decimal import Decimal

    from explain_core.jobs import JobStore, new_job_id
    from explain_core.settings import Settings

    settings = Settings(input_bucket=deployment.bucket("InputBucket"),
                        results_bucket=deployment.bucket("ResultsBucket"),
                        model_bucket=deployment.bucket("ModelBucket"), jobs_table=deployment.tables["JobsTable"])
    store, job_id = JobStore(settings), new_job_id()
    store.create(job_id=job_id, family="gradient", model="shapes", version="v1", client_id=TEST_CLIENT,
                 input_key=store.input_key("gradient", "shapes", "v1", job_id, "big.png"),
                 estimated_seconds=None, reason="mode async was requested")
    started = time.time() - 2000
    store.table.update_item(
        Key={"job_id": job_id},
        UpdateExpression="SET attempts = :a, max_attempts = :m, last_attempt_at = :s, last_attempt_deadline = :d",
        ExpressionAttributeValues={":a": 3, ":m": 3, ":s": Decimal(str(started)), ":d": Decimal(str(started + 900))},
    )
    response = call(job_event(job_id))
    assert response["statusCode"] == 200, response["body"][:500]
    job = body(response)
    assert job["status"] == "failed" and job["retrying"] is False
    assert job["error"]["code"] == "timed_out" and "dead-letter queue" in job["error"]["message"]
