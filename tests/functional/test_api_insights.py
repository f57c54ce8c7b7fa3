"""POST /insights and GET /jobs/<id> of an insights job, through the light ApiFunction's handler.

The API stores the job's specification file (its upload event starts the insights function) and
its record; the stages of the job are simulated here by writing what the insights function writes
(plan.json, parts/<plan>/<id>/part.json, report.json and the record's progress), so no TensorFlow runs.
"""

import copy
import json
import time
import urllib.request
import uuid
from decimal import Decimal

import pytest

from devtools.local import lambda_service
from devtools.local.api_gateway import TEST_CLIENT
from explain_core.insights.jobs import INDEX_FILE, PLAN_FILE, REPORT_FILE, job_ref, part_prefix_name
from explain_core.insights.spec import parse_spec
from explain_core.jobs import JobStore
from explain_core.keys import KeyLayout, client_segment
from tests.conftest import load_event

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16  # served as stored: the test only checks the link reaches it


@pytest.fixture(scope="module")
def api(deployment, published_model):
    """The ApiFunction's handler (a light import: no family function is loaded)."""
    wiring = deployment.functions["ApiFunction"]
    handler = lambda_service.load_handler(deployment, wiring)
    return lambda event: lambda_service.invoke(deployment, wiring, handler, event)



@pytest.fixture(scope="module")
def store(settings):
    return JobStore(settings)


def body(response: dict) -> dict:
    return json.loads(response["body"])


def create_event(title: str, **spec_changes) -> dict:
    """events/api-create-insights.json with its own title (a new request, not the idempotent replay of another
    test's) and spec fields replaced (None removes one)."""
    event = load_event("api-create-insights.json")
    request = json.loads(event["body"])
    request["spec"]["title"] = title
    for field, value in spec_changes.items():
        if value is None:
            request["spec"].pop(field, None)
        else:
            request["spec"][field] = value
    event["body"] = json.dumps(request)
    return event


def job_event(job_id: str, client: str = TEST_CLIENT) -> dict:
    event = load_event("api-get-insights-job.json")
    event["path"], event["pathParameters"] = f"/jobs/{job_id}", {"job_id": job_id}
    event["requestContext"]["authorizer"] = {"principalId": client}
    return event


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def put_json(s3, bucket: str, key: str, document: dict) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(document).encode(), ContentType="application/json")


@pytest.fixture
def job(api, unique_prefix):
    """A job created by POST /insights: (its acceptance, the request's spec)."""
    event = create_event(f"job {unique_prefix}")
    response = api(event)
    assert response["statusCode"] == 202, response["body"]
    return body(response), json.loads(event["body"])["spec"]


# ----------------------------------------------------------------------------- POST /insights
def test_the_api_function_has_the_idempotency_table(deployment):
    """POST /insights' idempotency records (template.yaml: IDEMPOTENCY_TABLE and its IAM grant on ApiFunction)."""
    environment = deployment.functions["ApiFunction"].environment
    assert environment.get("IDEMPOTENCY_TABLE") == deployment.tables["IdempotencyTable"]


def test_a_job_stores_its_specification_with_its_metadata_and_its_record(api, job, s3, settings, store):
    accepted, spec = job
    job_id = accepted["job_id"]
    assert accepted["status"] == "queued" and accepted["status_url"] == f"/jobs/{job_id}"
    spec_key = f"incoming/insights/shapes/v1/jobs/{job_id}.json"
    prefix = f"results/insights/shapes/v1/jobs/{job_id}/"
    assert accepted["spec_key"] == spec_key and accepted["results_prefix"] == prefix
    assert (accepted["report_key"], accepted["index_key"]) == (prefix + REPORT_FILE, prefix + INDEX_FILE)
    assert accepted["error_key"] == KeyLayout(settings).error_key(spec_key)
    # The file the insights function reads: the same job (the "class" alias kept), tagged with its job and client.
    stored = s3.get_object(Bucket=settings.input_bucket, Key=spec_key)
    assert stored["Metadata"] == {"job-id": job_id, "client": client_segment(TEST_CLIENT)}
    assert stored["ContentType"] == "application/json"
    parsed = parse_spec(stored["Body"].read())
    assert parsed.title == spec["title"] and parsed.seed == 7
    assert parsed.feature_visualization.objectives[0].class_ == "circle"
    assert parsed.feature_visualization.steps == 32
    record = store.get(job_id, TEST_CLIENT)
    assert (record["family"], record["model"], record["version"]) == ("insights", "shapes", "v1")
    assert record["input_key"] == spec_key and record["manifest_key"] == prefix + REPORT_FILE
    assert record["error_key"] == accepted["error_key"]
    assert job_ref(KeyLayout(settings), spec_key).job_id == job_id  # the engine names it the same


def test_the_same_request_twice_is_one_job(api, s3, settings, unique_prefix):
    event = create_event(f"twice {unique_prefix}")
    first, second = api(event), api(copy.deepcopy(event))
    assert first["statusCode"] == second["statusCode"] == 202
    assert body(first)["job_id"] == body(second)["job_id"]
    other = api(create_event(f"twice {unique_prefix}", seed=8))  # another job: another seed
    assert body(other)["job_id"] != body(first)["job_id"]
    listed = s3.list_objects_v2(Bucket=settings.input_bucket, Prefix="incoming/insights/shapes/v1/jobs/")["Contents"]
    assert {body(first)["spec_key"], body(other)["spec_key"]} <= {item["Key"] for item in listed}


@pytest.mark.parametrize("changes, field", [
    ({"feature_visualization": {"objectives": [{"class": "circle"}], "steps": 100000}},
     "spec.feature_visualization.steps"),
    ({"feature_visualization": {"objectives": [{"class": "circle", "layer": "logits"}]}},
     "spec.feature_visualization.objectives.0"),
    ({"feature_visualization": None}, "spec: "),  # no kind at all
    ({"nonsense": {}}, "spec.nonsense"),
    ({"seed": -1}, "spec.seed"),
])
def test_an_invalid_specification_is_a_422_naming_the_field(api, s3, settings, unique_prefix, changes, field):
    response = api(create_event(f"bad {unique_prefix}", **changes))
    assert response["statusCode"] == 422, response["body"]
    error = body(response)["error"]
    assert error["code"] == "invalid_insights_spec"
    assert field in error["message"] and any(p.startswith(field.rstrip(": ")) for p in error["details"]["problems"])
    listed = s3.list_objects_v2(Bucket=settings.input_bucket, Prefix="incoming/insights/")
    assert not [o for o in listed.get("Contents", []) if unique_prefix in o["Key"]]


def test_a_request_outside_the_schema_is_malformed_and_an_unknown_model_is_404(api):
    event = load_event("api-create-insights.json")
    request = json.loads(event["body"])
    event["body"] = json.dumps({"spec": request["spec"]})  # no model
    response = api(event)
    assert response["statusCode"] == 400 and body(response)["error"]["code"] == "malformed_request"

    event["body"] = json.dumps({**request, "model": {"name": "no-such-model", "version": "v1"}})
    response = api(event)
    assert response["statusCode"] == 404 and body(response)["error"]["code"] == "unknown_model"


def test_a_request_without_the_authorizers_principal_stores_nothing(api, s3, settings, unique_prefix):
    event = create_event(f"anonymous {unique_prefix}")
    event["requestContext"].pop("authorizer")
    response = api(event)
    assert response["statusCode"] == 500 and body(response)["error"]["code"] == "missing_authorizer_context"
    listed = s3.list_objects_v2(Bucket=settings.input_bucket, Prefix="incoming/insights/shapes/v1/jobs/")
    stored = [s3.get_object(Bucket=settings.input_bucket, Key=o["Key"])["Body"].read()
              for o in listed.get("Contents", [])]
    assert not [data for data in stored if unique_prefix.encode() in data]


def test_a_specification_that_cannot_be_stored_leaves_no_job(api, store, monkeypatch, unique_prefix):
    from explain_core import api as api_module
    from explain_core import jobs

    api(create_event(f"warm {unique_prefix}"))  # the route's services exist
    requests = api_module.services.insights
    job_id = uuid.uuid4().hex
    monkeypatch.setattr(jobs, "new_job_id", lambda: job_id)

    class Refusing:
        def put_object(self, **kwargs):
            raise ConnectionError("S3 is unreachable")

    monkeypatch.setattr(requests, "s3", Refusing())
    event = create_event(f"unstored {unique_prefix}")
    response = api(event)
    assert response["statusCode"] == 500 and body(response)["error"]["code"] == "internal_error"
    assert store.table.get_item(Key={"job_id": job_id}).get("Item") is None
    monkeypatch.undo()
    again = api(event)  # the idempotency record went with the failure: the same request runs now
    assert again["statusCode"] == 202 and body(again)["job_id"] != job_id


# ----------------------------------------------------------------------------- GET /jobs/<id>
def record_progress(store, job_id: str, **fields) -> None:
    """Progress fields as the insights function records them (explain_core.insights.jobs.InsightsJobs._record)."""
    values = {f":{name}": Decimal(str(value)) if isinstance(value, float) else value for name, value in fields.items()}
    store.table.update_item(Key={"job_id": job_id}, UpdateExpression="SET " + ", ".join(f"{n} = :{n}" for n in fields),
                            ExpressionAttributeValues=values)


def part_outcome(part_id: str, status: str, etag: str, **fields) -> dict:
    return {"id": part_id, "kind": "feature_visualization", "title": f"part {part_id}", "status": status,
            "summary": {}, "files": {}, "error": None, "attempt": 1, "seconds": 1.5,
            "finished_at": "2026-12-01T00:00:00+00:00", "spec_etag": etag, **fields}


def test_an_insights_job_goes_from_queued_to_running_to_done_with_links(api, job, s3, settings, store):
    accepted, spec = job
    job_id, prefix, results = accepted["job_id"], accepted["results_prefix"], settings.results_bucket
    queued = api(job_event(job_id))
    assert queued["statusCode"] == 200, queued["body"]
    status = body(queued)
    assert (status["status"], status["family"], status["input_key"]) == ("queued", "insights", accepted["spec_key"])
    assert status["progress"] == {"parts_total": None, "parts_done": 0, "parts_failed": 0,
                                  "estimated_seconds": None, "current_part": None}
    assert status["result"] is None and status["error"] is None

    # Planned: three parts.
    etag = s3.head_object(Bucket=settings.input_bucket, Key=accepted["spec_key"])["ETag"].strip('"')
    parts = [{"id": f"fv-{i}", "kind": "feature_visualization", "title": f"objective {i}", "params": {},
              "estimated_seconds": 100.0} for i in range(3)]
    put_json(s3, results, prefix + PLAN_FILE, {"job": {"job_id": job_id}, "spec_etag": etag, "spec": spec,
                                               "parts": parts, "estimated_seconds": 300.0,
                                               "created_at": "2026-12-01T00:00:00+00:00"})
    status = body(api(job_event(job_id)))
    assert status["status"] == "running"
    assert status["progress"]["parts_total"] == 3 and status["progress"]["parts_done"] == 0
    assert status["progress"]["estimated_seconds"] == 300.0

    # One part done, the second running.
    put_json(s3, results, prefix + part_prefix_name(etag, "fv-0") + "part.json",
             part_outcome("fv-0", "succeeded", etag))
    record_progress(store, job_id, current_part="fv-1", current_part_title="objective 1", current_part_attempt=1,
                    current_part_deadline=time.time() + 800.0)
    progress = body(api(job_event(job_id)))["progress"]
    assert (progress["parts_done"], progress["parts_failed"]) == (1, 0)
    assert progress["current_part"] == {"id": "fv-1", "title": "objective 1", "attempt": 1, "killed": False,
                                        "message": None}

    # Its second attempt passed its invocation's deadline without an outcome: killed.
    record_progress(store, job_id, current_part_attempt=2, current_part_deadline=time.time() - 120.0,
                    last_error="part fv-1 attempt 1: ResourceExhaustedError: OOM")
    status = body(api(job_event(job_id)))
    current = status["progress"]["current_part"]
    assert status["status"] == "running" and current["killed"] is True and current["attempt"] == 2
    assert "attempt 2 of part fv-1" in current["message"] and "killed" in current["message"]
    assert status["last_error"] == "part fv-1 attempt 1: ResourceExhaustedError: OOM"

    # Every part has an outcome; the kind assembled its pictures; the report is written last.
    failed = part_outcome("fv-1", "failed", etag, error={"type": "X", "code": "internal_error", "message": "m",
                                                          "details": {}})
    put_json(s3, results, prefix + part_prefix_name(etag, "fv-1") + "part.json", failed)
    put_json(s3, results, prefix + part_prefix_name(etag, "fv-2") + "part.json",
             part_outcome("fv-2", "succeeded", etag))
    grid = prefix + "feature_visualization/grid.png"
    s3.put_object(Bucket=results, Key=grid, Body=PNG, ContentType="image/png")
    s3.put_object(Bucket=results, Key=prefix + INDEX_FILE, Body=b"<html></html>", ContentType="text/html")
    outcomes = [part_outcome(p["id"], "failed" if p["id"] == "fv-1" else "succeeded", etag) for p in parts]
    report = {"status": "partial", "title": spec["title"], "spec_etag": etag,
              "kinds": {"feature_visualization": {
                  "status": "partial", "failed_parts": [{"id": "fv-1", "title": "square logit", "error": {}}],
                  "files": {"grid.png": grid}, "pictures": [grid]}},
              "parts": outcomes, "pictures": [grid], "index": prefix + INDEX_FILE,
              "created_at": "2026-12-01T00:10:00+00:00"}
    put_json(s3, results, prefix + REPORT_FILE, report)
    done = body(api(job_event(job_id)))
    assert done["status"] == "partial"
    assert (done["progress"]["parts_total"], done["progress"]["parts_done"], done["progress"]["parts_failed"]) == (
        3, 2, 1)
    result = done["result"]
    assert result["title"] == spec["title"] and result["status"] == "partial"
    assert result["kinds"] == [{"name": "feature_visualization", "status": "partial", "failed_parts": ["fv-1"],
                                "error": None}]
    assert json.loads(fetch(result["report_url"]))["status"] == "partial"
    assert fetch(result["index_url"]) == b"<html></html>"
    (picture,) = result["pictures"]
    assert (picture["kind"], picture["name"]) == ("feature_visualization", "feature_visualization/grid.png")
    assert fetch(picture["url"]) == PNG
    assert result["urls_expire_in"] > 0


def test_a_job_that_cannot_be_planned_has_failed(api, job, s3, settings):
    accepted, _ = job
    error = {"type": "InvalidInsightsSpecError", "code": "invalid_insights_spec", "message": "no layer nope",
             "details": {"layer": "nope"}}
    record = {"status": "failed", "input": {"bucket": settings.input_bucket, "key": accepted["spec_key"]},
              "family": "insights", "error": error, "retrying": True}
    put_json(s3, settings.results_bucket, accepted["error_key"], record)
    status = body(api(job_event(accepted["job_id"])))
    assert status["status"] == "queued" and status["retrying"] is True and status["error"]["code"] == error["code"]

    put_json(s3, settings.results_bucket, accepted["error_key"], {**record, "retrying": False})
    status = body(api(job_event(accepted["job_id"])))
    assert status["status"] == "failed" and status["retrying"] is False
    assert status["error"] == error and status["result"] is None


def test_another_clients_insights_job_is_unknown(api, job):
    accepted, _ = job
    response = api(job_event(accepted["job_id"], client="someone-else"))
    assert response["statusCode"] == 404 and body(response)["error"]["code"] == "unknown_job"
    assert accepted["spec_key"] not in response["body"]  # nothing of the job is shown
    unknown = api(load_event("api-get-insights-job.json"))  # the event's placeholder id: no such job
    assert unknown["statusCode"] == 404 and body(unknown)["error"]["code"] == "unknown_job"
