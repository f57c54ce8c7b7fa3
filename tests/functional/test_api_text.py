"""The REST API with the text demo model (sentiment-lstm/v1): inline text, text files, jobs and typed errors.

The family handlers are invoked with the events in events/ (api-explain-text*.json, gradient-text-upload.json)
against the emulator; outputs are fetched through the presigned URLs the responses carry.
"""

import base64
import json
import string
import time

import pytest

from devtools import text_demo
from devtools.api_events import TEXT_REVIEW
from devtools.local.lambda_service import SqsEventSource
from tests.conftest import event_keys, load_event, read_json
from tests.functional.test_api import body, explain_event, fetch, job_event, post_form
from tests.functional.test_queue_path import drain, empty_queue

pytestmark = pytest.mark.slow

#: Words the demo's reviews carry their sentiment with (devtools.text_demo's clauses).
POLARITY_WORDS = {"loved", "wonderful", "great", "brilliant", "amazing", "excellent", "awful", "bad", "boring"}


@pytest.fixture(scope="module")
def call(invoke_function, text_model, api_key):
    from devtools.local import FAMILY_FUNCTIONS

    def _call(event: dict) -> dict:
        function = (FAMILY_FUNCTIONS[event["path"].rsplit("/", 1)[1]] if event["path"].startswith("/explanations/")
                    else "ApiFunction")
        return invoke_function(function, event)

    return _call


def text_event(name: str = "api-explain-text.json", **changes) -> dict:
    return explain_event(name, **changes)


def documents(result: dict) -> list[dict]:
    return result["predictions"]["documents"]


def check_tokens_json(url: str, text: str) -> dict:
    """The tokens JSON behind tokens_url: its offsets slice ``text`` to each token."""
    tokens = json.loads(fetch(url))
    assert tokens["tokens"], tokens
    for token in tokens["tokens"]:
        assert text[token["start"]:token["end"]] == token["text"], token
        # The tokenizer lowercases and strips ASCII punctuation: the token is the normalised slice.
        assert token["token"] == "".join(c for c in token["text"].lower() if c not in string.punctuation), token
    return tokens


# ----------------------------------------------------------------------------- synchronous
def test_inline_text_is_explained_now_with_token_links(call):
    started = time.perf_counter()
    response = call(text_event())
    seconds = time.perf_counter() - started
    print(f"sync one-sentence request: {seconds:.2f} s")

    assert response["statusCode"] == 200, response["body"][:2000]
    result = body(response)
    assert result["status"] == "succeeded"
    assert result["input"]["format"] == "txt" and result["input"]["documents"] == 1
    assert result["input"]["key"].endswith("/input.txt")
    assert result["model"]["modality"] == "text"
    (document,) = documents(result)
    assert document["class_name"] == "positive" and document["score"] > 0.8
    assert result["predictions"]["documents_per_class"]["positive"] == 1
    methods = {m["name"]: m for m in result["methods"]}
    assert set(methods) == {"IntegratedGradients", "Saliency"}
    for method in methods.values():
        assert method["status"] == "succeeded", method
        (output,) = method["outputs"]
        assert output["class_name"] == "positive" and output["document"] == 0 and output["line"] == 1
        assert output["unit"] == "word"
        tokens = check_tokens_json(output["tokens_url"], TEXT_REVIEW)
        assert [t["token"] for t in tokens["tokens"]] == ["i", "loved", "it", "truly", "wonderful"]
        assert fetch(output["image_url"]).startswith(b"\x89PNG")
        assert b"wonderful" in fetch(output["html_url"])
        values = fetch(output["values_url"]).decode().splitlines()
        assert len(values) == 1 + 5  # header, one row per token
        # The manifest's top tokens are the JSON's, largest |value| first.
        top = output["top_tokens"]
        assert top == sorted(top, key=lambda t: -abs(t["value"]))
        for entry in top:
            assert TEXT_REVIEW[entry["start"]:entry["end"]] == entry["text"]
    top_word = methods["IntegratedGradients"]["outputs"][0]["top_tokens"][0]["text"].lower()
    assert top_word in POLARITY_WORDS, methods["IntegratedGradients"]["outputs"][0]["top_tokens"]
    # Integrated gradients on the positive class: the polarity words push it up.
    assert methods["IntegratedGradients"]["outputs"][0]["top_tokens"][0]["value"] > 0


def test_the_same_text_is_answered_from_its_results(call):
    first = body(call(text_event(methods=["Saliency"])))
    second = body(call(text_event(methods=["Saliency"])))
    assert second["cached"] and second["results_prefix"] == first["results_prefix"]
    other = body(call(text_event(methods=["Saliency"], input_text=TEXT_REVIEW + " Really.")))
    assert other["results_prefix"] != first["results_prefix"]


def test_a_text_file_in_base64_is_explained_per_document(call):
    response = call(load_event("api-explain-text-file.json"))
    assert response["statusCode"] == 200, response["body"][:2000]
    result = body(response)
    truth = text_demo.sample_truth()["reviews.jsonl"]
    assert result["input"]["format"] == "jsonl" and result["input"]["documents"] == len(truth)
    predicted = documents(result)
    assert [d["line"] for d in predicted] == [t["line"] for t in truth]
    right = sum(d["class_name"] == t["label"] for d, t in zip(predicted, truth, strict=True))
    assert right >= len(truth) - 1, (predicted, truth)
    (method,) = result["methods"]
    assert method["name"] == "WordOcclusion" and method["status"] == "succeeded"
    assert [o["document"] for o in method["outputs"]] == list(range(len(truth)))
    for output, document in zip(method["outputs"], truth, strict=True):
        assert output["line"] == document["line"]
        check_tokens_json(output["tokens_url"], document["text"])


def test_an_uploaded_text_file_is_explained_by_its_input_key(call):
    ticket = call(load_event("api-create-upload.json") | {"body": json.dumps({"filename": "reviews.csv"})})
    assert ticket["statusCode"] == 201, ticket["body"]
    ticket = body(ticket)
    assert ticket["input_key"].endswith("/reviews.csv")
    assert post_form(ticket["url"], ticket["fields"], text_demo.sample_files()["reviews.csv"]) in (200, 201, 204)

    response = call(text_event(input_text=None, input_key=ticket["input_key"], methods=["Saliency"]))
    assert response["statusCode"] == 200, response["body"][:2000]
    result = body(response)
    truth = text_demo.sample_truth()["reviews.csv"]
    assert result["input"]["format"] == "csv"
    assert [d["line"] for d in documents(result)] == [t["line"] for t in truth]  # the header is line 1


# ----------------------------------------------------------------------------- sync or job
@pytest.fixture
def gradient_source(deployment, handlers, sqs):
    source = SqsEventSource(deployment, deployment.function_for_family("gradient"), handler=handlers["gradient"])
    empty_queue(sqs, source.queue_url)
    return source


def test_an_async_text_request_runs_as_a_job_on_a_txt_file(call, gradient_source, s3, deployment, unique_prefix):
    text = f"{TEXT_REVIEW} ({unique_prefix})"  # a new request, so a new job
    accepted = call(text_event(input_text=text, methods=["Saliency"], mode="async"))
    assert accepted["statusCode"] == 202, accepted["body"]
    job = body(accepted)
    listed = s3.list_objects_v2(Bucket=deployment.bucket("InputBucket"),
                                Prefix=f"incoming/gradient/{text_demo.MODEL}/{text_demo.VERSION}/jobs/")
    (key,) = [o["Key"] for o in listed["Contents"] if f"/jobs/{job['job_id']}/" in o["Key"]]
    assert key.endswith("/input.txt")
    assert s3.get_object(Bucket=deployment.bucket("InputBucket"), Key=key)["Body"].read() == text.encode()

    responses = drain(gradient_source)
    assert responses and all(r == {"batchItemFailures": []} for r in responses)
    done = body(call(job_event(job["job_id"])))
    assert done["status"] == "succeeded", done
    (document,) = documents(done["result"])
    assert document["class_name"] == "positive"
    (output,) = done["result"]["methods"][0]["outputs"]
    check_tokens_json(output["tokens_url"], text)


def many_reviews_event(mode: str, unique_prefix: str, documents: int = 100) -> dict:
    """TextPartitionExplainer with its largest max_evals on a JSON Lines file of many held-out reviews."""
    reviews = text_demo.test_reviews(documents)
    jsonl = "".join(json.dumps({"text": r["text"]}) + "\n" for r in reviews).encode()
    event = load_event("api-explain-text-file.json")
    event["path"] = event["resource"] = event["requestContext"]["resourcePath"] = "/explanations/shap"
    request = json.loads(event["body"])
    request.update(methods=["TextPartitionExplainer"], params={"TextPartitionExplainer": {"max_evals": 20000}},
                   input_base64=base64.b64encode(jsonl).decode(), mode=mode, filename=f"{unique_prefix}-{mode}.jsonl")
    event["body"] = json.dumps(request)
    return event


def test_a_text_request_over_the_sync_budget_is_refused_in_sync_mode_and_a_job_in_auto(call, unique_prefix):
    refused = call(many_reviews_event("sync", unique_prefix))
    assert refused["statusCode"] == 422, refused["body"][:2000]
    error = body(refused)["error"]
    assert error["code"] == "over_time_budget", error
    print(f"TextPartitionExplainer max_evals 20000 on 100 reviews: {error['details']}")
    assert error["details"]["estimated_seconds"] > error["details"]["available_seconds"] > 0

    accepted = call(many_reviews_event("auto", unique_prefix))
    assert accepted["statusCode"] == 202, accepted["body"][:2000]
    job = body(accepted)
    assert "more than the" in job["reason"] and job["estimated_seconds"] > 25


def test_a_small_text_request_estimate_is_close_to_its_time(call, handlers, unique_prefix):
    """The estimate the sync decision uses, against the time the request took (both printed)."""
    session = handlers["gradient"].session
    estimates = []
    original = session.estimate_seconds

    def recorded(upload, loaded):
        estimates.append(original(upload, loaded))
        return estimates[-1]

    session.estimate_seconds = recorded
    try:
        started = time.perf_counter()
        response = call(text_event(input_text=f"{TEXT_REVIEW}, {unique_prefix}", methods=["IntegratedGradients"]))
        seconds = time.perf_counter() - started
    finally:
        del session.estimate_seconds
    assert response["statusCode"] == 200, response["body"][:2000]
    (estimate,) = estimates
    print(f"IntegratedGradients on one sentence: estimate {estimate:.2f} s, request {seconds:.2f} s")
    assert 0 < estimate < 25


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("changes,status,code,says", [
    ({"input_base64": base64.b64encode(b"fine\nbad \xff\xfe bytes\n").decode(), "input_text": None,
      "filename": "bad.txt"}, 422, "invalid_text", "line 2"),
    ({"input_base64": base64.b64encode(b"\x89PNG\r\n\x1a\n\x00\x00\x00").decode(), "input_text": None,
      "filename": "photo.txt"}, 422, "invalid_text", "not UTF-8"),
    ({"input_text": "one line\nand a NUL \u0000 here"}, 422, "invalid_text", "NUL"),
    ({"input_text": "an unpaired \ud800 surrogate"}, 400, "malformed_request", "input_text"),
    ({"input_base64": base64.b64encode(b"hello").decode(), "input_text": None, "filename": "notes.docx"},
     415, "unsupported_text_format", ".docx"),
    ({"methods": ["GradCAM"]}, 422, "unsupported_model", "GradCAM"),
    ({"input_text": ""}, 400, "malformed_request", "input_text"),
    ({"input_base64": "aGVsbG8="}, 400, "malformed_request", "exactly one of"),
    ({"filename": "review.png"}, 400, "malformed_request", ".txt"),
])
def test_bad_text_requests_get_typed_errors(call, changes, status, code, says):
    response = call(text_event(**changes))
    assert response["statusCode"] == status, response["body"][:2000]
    error = body(response)["error"]
    assert error["code"] == code and says in error["message"], error
    if code == "invalid_text":
        assert error["details"]["line"] >= 1


def test_a_too_large_input_text_is_a_413(call):
    from explain_core.api_models import MAX_INLINE_INPUT_BYTES

    text = "é" * (MAX_INLINE_INPUT_BYTES // 2 + 1)  # within the limit in characters, over it in UTF-8 bytes
    response = call(text_event(input_text=text))
    assert response["statusCode"] == 413, response["body"][:500]
    assert body(response)["error"]["code"] == "request_too_large"


def test_deep_explainer_on_the_lstm_names_shaps_limitation(call):
    event = text_event(methods=["DeepExplainer"])
    event["path"] = event["resource"] = event["requestContext"]["resourcePath"] = "/explanations/shap"
    response = call(event)
    assert response["statusCode"] == 422, response["body"][:2000]
    error = body(response)["error"]
    assert error["code"] == "unsupported_model"
    assert "LSTM" in error["message"] and "TextPartitionExplainer" in error["message"], error


# ----------------------------------------------------------------------------- the S3 path's event
def test_the_text_upload_event_explains_the_review(invoke, s3, deployment):
    from tests.conftest import clear_outputs

    event = load_event("gradient-text-upload.json")
    (key,) = event_keys(event)
    clear_outputs(s3, deployment, "gradient")
    review = text_demo.sample_files()["review.txt"]
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=review,
                  Metadata={"methods": "Saliency,IntegratedGradients"})
    assert invoke("gradient", event) == {"batchItemFailures": []}
    manifest = read_json(s3, deployment.bucket("ResultsBucket"),
                         f"results/{key.removeprefix('incoming/')}/manifest.json")
    assert manifest["status"] == "succeeded", manifest
    (document,) = manifest["predictions"]["documents"]
    assert document["class_name"] == text_demo.sample_truth()["review.txt"][0]["label"] == "positive"
    assert {m["name"] for m in manifest["methods"]} == {"Saliency", "IntegratedGradients"}
