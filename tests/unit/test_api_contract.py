"""The API's request models, OpenAPI document, light images and API keys, without AWS."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from devtools import openapi
from explain_core.api_models import ExplanationRequest, UploadRequest
from explain_core.authorizer import BEARER, key_hash, new_api_key
from explain_core.registry import methods_of

REPO = Path(__file__).resolve().parents[2]
MODEL = {"name": "shapes", "version": "v1"}


def test_options_become_the_s3_metadata_the_upload_path_reads():
    request = ExplanationRequest(model=MODEL, input_base64="aGk=", methods=["Saliency", "GradCAM"],
                                 params={"GradCAM": {}, "Saliency": {}}, target="circle", top_k=2)
    assert request.options_metadata() == {
        "methods": "Saliency,GradCAM", "params": '{"GradCAM": {}, "Saliency": {}}', "target": "circle", "top-k": "2",
    }
    assert ExplanationRequest(model=MODEL, input_base64="aGk=").options_metadata() == {}
    assert ExplanationRequest(model=MODEL, input_base64="aGk=", target=0).options_metadata() == {"target": "0"}


@pytest.mark.parametrize("fields", [
    {},  # no input
    {"input_base64": "aGk=", "input_key": "uploads/0123456789abcdef0123456789abcdef/a.png"},  # two inputs
    {"input_key": "incoming/gradient/shapes/v1/a.png"},  # only presigned uploads may be named
    {"input_key": "uploads/0123456789abcdef0123456789abcdef/../../secret"},
    {"input_base64": "aGk=", "filename": "../x.png"},
    {"input_base64": "aGk=", "top_k": 0},
    {"input_base64": "aGk=", "methods": []},
    {"input_base64": "aGk=", "mode": "now"},
    {"input_base64": "aGk=", "unexpected": 1},
])
def test_malformed_requests_are_refused_by_the_schema(fields):
    with pytest.raises(ValidationError):
        ExplanationRequest(model=MODEL, **fields)


def test_model_names_cannot_escape_their_prefix():
    for name in ("../x", "a/b", "", ".hidden", "x" * 129):
        with pytest.raises(ValidationError):
            ExplanationRequest(model={"name": name, "version": "v1"}, input_base64="aGk=")
    with pytest.raises(ValidationError):
        UploadRequest(filename="a/b.png")


def test_openapi_document_in_the_repository_matches_the_code():
    assert (REPO / "openapi.json").read_text() == openapi.generate(), "run `make openapi`"
    document = json.loads(openapi.generate())
    assert set(document["paths"]) == {"/methods", "/models", "/models/{name}/{version}", "/uploads",
                                      "/jobs/{job_id}", "/explanations/{family}", "/sanity-checks",
                                      "/sanity-checks/{family}/{name}/{version}/{request_id}", "/insights"}
    explain = document["paths"]["/explanations/{family}"]["post"]
    assert {"200", "202", "400", "404", "413", "422"} <= set(explain["responses"])
    assert explain["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    (family,) = explain["parameters"]
    assert family["schema"]["enum"] == ["gradient", "perturbation", "shap"]
    assert document["security"] == [{"apiKey": []}]


def test_openapi_documents_every_insight_kinds_options_and_both_job_answers():
    from explain_core.insights.kinds import KINDS

    document = json.loads(openapi.generate())
    schemas = document["components"]["schemas"]
    create = document["paths"]["/insights"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/InsightsRequest")
    assert {"202", "400", "404", "409", "422"} <= set(create["responses"])
    spec = schemas["InsightsSpec"]["properties"]
    for kind in KINDS:
        (documented,) = [option["$ref"] for option in spec[kind.name]["anyOf"] if "$ref" in option]
        options = schemas[documented.rsplit("/", 1)[1]]["properties"]
        assert set(options) == {field.alias or name for name, field in kind.Spec.model_fields.items()}
    answer = document["paths"]["/jobs/{job_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {option["$ref"].rsplit("/", 1)[1] for option in answer["anyOf"]} == {"JobStatus", "InsightsJobStatus"}
    assert schemas["InsightsJobStatus"]["properties"]["status"]["enum"] == [
        "queued", "running", "succeeded", "partial", "failed"]


LIGHT_IMPORT = """
import json, sys
# The light images have no ML stack: importing any of it must fail loudly here.
for blocked in ("numpy", "tensorflow", "keras", "xplique", "shap", "xgboost", "PIL", "matplotlib"):
    sys.modules[blocked] = None
sys.path[:0] = ["functions/api", "layers/explain_core/src"]
import app
sys.path[0] = "functions/authorizer"
del sys.modules["app"]
import app as authorizer_app
event = json.load(open("events/api-list-methods.json"))

class Context:
    function_name, memory_limit_in_mb, aws_request_id = "ApiFunction", 512, "r"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ApiFunction"

response = app.lambda_handler(event, Context())
# POST /insights validates a job specification with every kind's spec model: no ML library either.
request = json.load(open("events/api-create-insights.json"))
body = json.loads(request["body"])
body["spec"]["feature_visualization"]["steps"] = 10**6
request["body"] = json.dumps(body)
refused = app.lambda_handler(request, Context())
import explain_core.insights.jobs, explain_core.jobs  # what POST /insights and GET /jobs import on first use
print(refused["statusCode"], json.loads(refused["body"])["error"]["code"])
print(response["statusCode"], len(json.loads(response["body"])["methods"]))
"""


def test_api_and_authorizer_functions_run_without_the_ml_stack():
    env = {"INPUT_BUCKET": "i", "RESULTS_BUCKET": "r", "MODEL_BUCKET": "m", "POWERTOOLS_TRACE_DISABLED": "true",
           "POWERTOOLS_METRICS_NAMESPACE": "Test", "AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"}
    completed = subprocess.run([sys.executable, "-c", LIGHT_IMPORT], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().splitlines()[-2].split() == ["422", "invalid_insights_spec"]
    status, count = completed.stdout.strip().splitlines()[-1].split()
    assert status == "200" and int(count) == len(methods_of("shap"))  # the event asks for ?family=shap


def test_api_keys_are_random_and_only_their_hash_is_kept():
    first, second = new_api_key(), new_api_key()
    assert first != second and BEARER.match(f"Bearer {first}") and BEARER.match(f"Bearer {second}")
    assert key_hash(first) != key_hash(second) and len(key_hash(first)) == 64 and first not in key_hash(first)
    for token in (first, f"bearer {first}", f"Bearer {first} ", f"Bearer {first[:-1]}", "Bearer xk_short"):
        assert not BEARER.match(token)


def test_request_options_round_trip_through_ascii_metadata():
    from explain_core.model_card import ModelCard
    from explain_core.request_options import parse_options

    card = ModelCard(name="m", version="v1", input_height=32, input_width=32, class_names=["carré", "rond", "étoile"])
    options = parse_options({"methods": "saliency,IntegratedGradients", "target": "carré",
                             "params": json.dumps({"integratedgradients": {"steps": 16}})}, card, "gradient")
    metadata = options.to_metadata()
    assert all(value.isascii() for value in metadata.values())
    assert metadata["methods"] == "Saliency,IntegratedGradients" and metadata["target"] == "0"
    assert parse_options(metadata, card, "gradient") == options
    assert parse_options(metadata, card, "gradient").fingerprint == options.fingerprint
