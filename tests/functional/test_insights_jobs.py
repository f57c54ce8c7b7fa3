"""Insights jobs end to end on the emulator: a spec upload plans parts, part messages on the real queue run
them with the real handler, the last part assembles the report. Killed, failing and redelivered parts."""

import json
import time

import numpy as np
import pytest

from devtools import insights_demo
from devtools.local import lambda_service
from devtools.local.lambda_service import SqsEventSource
from explain_core.insights import feature_visualization, pictures
from explain_core.insights.jobs import INDEX_FILE, PLAN_FILE, REPORT_FILE, job_progress, job_ref
from explain_core.jobs import JobStore
from explain_core.keys import KeyLayout

PREFIX = insights_demo.PREFIX


class SimulatedTimeout(BaseException):
    """Lambda killing the invocation: nothing after it runs, no outcome is written."""



@pytest.fixture(scope="module")
def source(deployment, published_model, s3, settings):
    """The insights function's queue, polled by the real handler; the demo's image sets uploaded once."""
    insights_demo.upload_image_sets(s3, settings.input_bucket, small=True)
    wiring = deployment.functions["InsightsFunction"]
    source = SqsEventSource(deployment, wiring, lambda_service.load_handler(deployment, wiring))
    drain(source)
    return source


def drain(source, limit: int = 100, on_batch=None) -> int:
    """Invoke the handler until the queue has nothing visible; returns the invocations."""
    for count in range(limit):
        messages = source.receive_batch(wait=False)
        if not messages:
            return count
        if on_batch is None:
            source.invoke(messages)
        else:
            on_batch(messages)
    raise AssertionError("the queue never drained")


def invoke_once(source) -> None:
    """One invocation with the next message: a spec's upload plans its job, its parts wait in the queue."""
    messages = source.receive_batch(wait=False)
    assert messages, "nothing in the queue"
    source.invoke(messages)


def upload_spec(s3, settings, name: str, spec: dict, metadata: dict | None = None) -> str:
    key = f"{PREFIX}{name}.json"
    s3.put_object(Bucket=settings.input_bucket, Key=key, Body=json.dumps(spec).encode(), Metadata=metadata or {})
    return key


def read(s3, bucket: str, key: str) -> dict:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def prefix_set(folder: str, count: int) -> dict:
    return {"source": "prefix", "prefix": PREFIX + folder, "count": count}


def tiny_spec() -> dict:
    """Every kind, at sizes that run in seconds."""
    return {
        "seed": 3,
        "feature_visualization": {"objectives": [{"class": "circle"}, {"layer": "last_conv", "type": "channel",
                                                                       "index": 5}], "steps": 16},
        "tcav": {"concept": {"name": "round", "images": prefix_set("concepts/round/", 10)},
                 "random": [prefix_set(f"concepts/random-{i}/", 10) for i in range(3)],
                 "classes": {"circle": prefix_set("classes/circle/", 10)}},
        "craft": {"classes": ["triangle"], "class_images": {"triangle": prefix_set("classes/triangle/", 8)},
                  "number_of_concepts": 2, "nb_design": 4, "crops": 2},
        "similar_examples": {"queries": prefix_set("queries/", 1), "cases": prefix_set("cases/", 24), "k": 3},
        "prototypes": {"cases": prefix_set("cases/", 24), "classes": ["circle", "square"], "nb_prototypes": 2},
    }


def two_parts_spec(seed: int = 1) -> dict:
    return {"seed": seed, "feature_visualization": {
        "objectives": [{"class": "circle"}, {"class": "square"}], "steps": 8, "transformations": "none"}}


@pytest.fixture(scope="module")
def finished_job(source, s3, settings):
    key = upload_spec(s3, settings, "tiny", tiny_spec())
    invocations = drain(source)
    return key, invocations


def test_a_job_plans_parts_runs_each_and_assembles_a_report(finished_job, s3, settings):
    key, invocations = finished_job
    job = job_ref(KeyLayout(settings), key)
    etag = s3.head_object(Bucket=settings.input_bucket, Key=key)["ETag"].strip('"')
    plan = read(s3, settings.results_bucket, job.key(PLAN_FILE))
    report = read(s3, settings.results_bucket, job.key(REPORT_FILE))
    assert plan["spec_etag"] == etag and report["spec_etag"] == etag  # the report of this version of the spec
    assert invocations == 1 + len(plan["parts"])  # one for the plan, one per part
    assert {part["kind"] for part in plan["parts"]} == {
        "feature_visualization", "tcav", "craft", "similar_examples", "prototypes"}
    assert report["status"] == "succeeded", json.dumps(report["kinds"], indent=1)[:3000]
    assert [part["id"] for part in report["parts"]] == [part["id"] for part in plan["parts"]]
    assert all(part["status"] == "succeeded" and part["attempt"] == 1 for part in report["parts"])
    assert set(report["kinds"]) == {"feature_visualization", "tcav", "craft", "similar_examples", "prototypes"}
    for picture in report["pictures"]:  # every picture decodes, is not blank, and is this job's
        assert picture.startswith(job.results_prefix)
        pixels = pictures.decode_png(s3.get_object(Bucket=settings.results_bucket, Key=picture)["Body"].read())
        assert pixels.shape[0] > 32 and pixels.shape[1] > 32 and pixels.std() > 5, picture
    for name, section in report["kinds"].items():
        assert section["pictures"], name
    page = s3.get_object(Bucket=settings.results_bucket, Key=job.key(INDEX_FILE))["Body"].read().decode()
    for picture in report["pictures"]:
        assert f"src='{picture[len(job.results_prefix):]}'" in page
    progress = job_progress(s3, settings, key)
    assert (progress["status"], progress["parts_done"], progress["parts_total"]) == (
        "succeeded", len(plan["parts"]), len(plan["parts"]))


def test_the_job_values_are_the_models(finished_job, s3, settings):
    """Values, not shapes: the circle logit's visualization excites the circle logit of the model."""
    key, _ = finished_job
    report = read(s3, settings.results_bucket, job_ref(KeyLayout(settings), key).key(REPORT_FILE))
    images = report["kinds"]["feature_visualization"]["images"]
    circle = next(image for image in images if "circle" in image["label"])
    assert np.isfinite(circle["last"]) and circle["last"] > circle["first"]
    similar = report["kinds"]["similar_examples"]
    assert similar["queries"] and all(len(q["examples"]) == 3 for q in similar["queries"])
    tcav = report["kinds"]["tcav"]["classes"]
    assert [row["class"] for row in tcav] == ["circle"] and 0 <= tcav[0]["p_value"] <= 1


def test_a_spec_delivered_again_does_not_run_its_parts_again(finished_job, source, s3, settings):
    key, _ = finished_job
    job = job_ref(KeyLayout(settings), key)
    before = s3.head_object(Bucket=settings.results_bucket, Key=job.key(REPORT_FILE))["ETag"]
    event = lambda_service.sqs_event([], source.queue_arn)
    from tests.conftest import upload_event

    event = upload_event(key, family="insights")
    event["Records"][0]["eventSourceARN"] = source.queue_arn
    response = lambda_service.invoke(source.deployment, source.wiring, source.handler, event)
    assert response == {"batchItemFailures": []}
    assert drain(source) == 0  # every part has its outcome: nothing re-sent
    assert s3.head_object(Bucket=settings.results_bucket, Key=job.key(REPORT_FILE))["ETag"] == before


def test_a_killed_part_runs_again_and_finished_parts_are_kept(source, s3, settings, monkeypatch):
    store = JobStore(settings)
    from explain_core.insights.jobs import api_spec_key
    from explain_core.jobs import new_job_id

    job_id = new_job_id()
    keys = KeyLayout(settings)
    key = api_spec_key(keys, insights_demo.MODEL, insights_demo.VERSION, job_id)
    store.table.put_item(Item={"job_id": job_id, "client_id": "c", "family": "insights", "input_key": key,
                               "created_at": "2026-12-01T00:00:00+00:00", "expires_at": 2**40})
    s3.put_object(Bucket=settings.input_bucket, Key=key, Body=json.dumps(two_parts_spec()).encode(),
                  Metadata={"job-id": job_id})
    job = job_ref(keys, key)
    invoke_once(source)  # the plan; two part messages wait
    real = feature_visualization.FeatureVisualization.run_part
    killed = []

    def run_part(self, spec, part, ctx):
        if part.id.endswith("1") and not killed:
            killed.append(part.id)
            raise SimulatedTimeout()
        return real(self, spec, part, ctx)

    monkeypatch.setattr(feature_visualization.FeatureVisualization, "run_part", run_part)
    in_flight = []

    def run(messages):
        # A 2 s invocation: the killed attempt's lock on its part expires with it, as on Lambda.
        context = lambda_service.LocalLambdaContext(source.wiring.logical_id, source.wiring.memory, 2)
        try:
            lambda_service.invoke(source.deployment, source.wiring, source.handler,
                                  lambda_service.sqs_event(messages, source.queue_arn), context)
        except SimulatedTimeout:
            in_flight.extend(messages)
            return
        for message in messages:
            source.sqs.delete_message(QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"])

    drain(source, on_batch=run)
    assert killed and len(in_flight) == 1
    record = store.table.get_item(Key={"job_id": job_id})["Item"]
    progress = job_progress(s3, settings, key, record)
    assert (progress["status"], progress["parts_done"], progress["parts_total"]) == ("running", 1, 2)
    assert progress["current_part"]["id"] == killed[0] and not progress["current_part"].get("killed")
    later = job_progress(s3, settings, key, record, now=float(record["current_part_deadline"]) + 61)
    assert later["current_part"]["killed"] and "killed" in later["current_part"]["message"]
    plan = read(s3, settings.results_bucket, job.key(PLAN_FILE))
    done = next(p["id"] for p in plan["parts"] if p["id"] != killed[0])
    done_key = job.part_prefix(plan["spec_etag"], done) + "part.json"
    first_outcome = s3.head_object(Bucket=settings.results_bucket, Key=done_key)["ETag"]

    # SQS makes the killed part's message visible again after its visibility timeout (here: now, once the killed
    # invocation's deadline, and with it its lock on the part, has passed).
    time.sleep(max(0.0, float(record["current_part_deadline"]) - time.time()) + 0.5)
    source.sqs.change_message_visibility(QueueUrl=source.queue_url, ReceiptHandle=in_flight[0]["ReceiptHandle"],
                                         VisibilityTimeout=0)
    assert drain(source) == 1
    report = read(s3, settings.results_bucket, job.key(REPORT_FILE))
    assert report["status"] == "succeeded"
    attempts = {part["id"]: part["attempt"] for part in report["parts"]}
    assert attempts == {killed[0]: 2, done: 1}
    assert s3.head_object(Bucket=settings.results_bucket, Key=done_key)["ETag"] == first_outcome  # not redone
    record = store.table.get_item(Key={"job_id": job_id})["Item"]
    assert (int(record["parts_done"]), record["job_status"]) == (2, "succeeded")


def test_a_failing_part_is_retried_then_reported_without_losing_the_others(source, s3, settings, monkeypatch):
    key = upload_spec(s3, settings, "flaky", two_parts_spec(seed=2))
    job = job_ref(KeyLayout(settings), key)
    invoke_once(source)
    real = feature_visualization.FeatureVisualization.run_part
    calls = []

    def run_part(self, spec, part, ctx):
        if part.id.endswith("1"):
            calls.append(part.id)
            raise RuntimeError("S3 was unavailable")
        return real(self, spec, part, ctx)

    monkeypatch.setattr(feature_visualization.FeatureVisualization, "run_part", run_part)

    def run(messages):
        response = source.invoke(messages)
        for message in messages:  # a failed message comes back after its visibility timeout: now, here
            if message["MessageId"] in {f["itemIdentifier"] for f in response["batchItemFailures"]}:
                source.sqs.change_message_visibility(QueueUrl=source.queue_url,
                                                     ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)

    drain(source, on_batch=run)
    assert len(calls) == settings.max_receive_count  # retried, then recorded on the last receive
    report = read(s3, settings.results_bucket, job.key(REPORT_FILE))
    assert report["status"] == "partial"
    failed = [part for part in report["parts"] if part["status"] == "failed"]
    assert [part["id"] for part in failed] == calls[:1] and "S3 was unavailable" in failed[0]["error"]["message"]
    section = report["kinds"]["feature_visualization"]
    assert section["status"] == "partial" and [p["id"] for p in section["failed_parts"]] == calls[:1]
    assert report["pictures"]  # the other part's pictures are assembled


@pytest.mark.parametrize("name, body, code", [
    ("not-json", b"{not json", "invalid_insights_spec"),
    ("no-kind", b'{"seed": 1}', "invalid_insights_spec"),
    ("too-many-steps", json.dumps({"feature_visualization": {"objectives": [{"class": "circle"}],
                                                               "steps": 10**6}}).encode(), "invalid_insights_spec"),
    ("unknown-layer", json.dumps({"feature_visualization": {"objectives": [{"layer": "nope", "type": "layer"}],
                                                              "steps": 8}}).encode(), "invalid_insights_spec"),
    ("unknown-class", json.dumps({"feature_visualization": {"objectives": [{"class": "hexagon"}],
                                                              "steps": 8}}).encode(), "invalid_insights_spec"),
])
def test_a_bad_spec_is_an_error_record_and_nothing_runs(name, body, code, source, s3, settings):
    key = f"{PREFIX}{name}.json"
    s3.put_object(Bucket=settings.input_bucket, Key=key, Body=body)
    assert drain(source) == 1
    keys = KeyLayout(settings)
    record = read(s3, settings.results_bucket, keys.error_key(key))
    assert record["error"]["code"] == code and not record["retrying"], record
    assert job_progress(s3, settings, key)["status"] == "failed"
    listed = s3.list_objects_v2(Bucket=settings.results_bucket, Prefix=job_ref(keys, key).results_prefix)
    assert listed.get("KeyCount", 0) == 0


def test_an_image_prefix_outside_the_insights_inputs_fails_its_part_with_a_typed_error(source, s3, settings):
    spec = {"similar_examples": {"queries": {"source": "prefix", "prefix": "incoming/gradient/", "count": 1},
                                 "cases": prefix_set("cases/", 8), "k": 2}}
    key = upload_spec(s3, settings, "outside", spec)
    drain(source)
    report = read(s3, settings.results_bucket, job_ref(KeyLayout(settings), key).key(REPORT_FILE))
    assert report["status"] == "failed"
    assert report["parts"][0]["error"]["code"] == "invalid_insights_spec"
    assert "incoming/insights/" in report["parts"][0]["error"]["message"]


def test_insights_refuse_a_model_that_is_not_an_image_model(source, s3, settings, text_model):
    key = f"incoming/insights/{text_model[0]}/{text_model[1]}/fv.json"
    s3.put_object(Bucket=settings.input_bucket, Key=key, Body=json.dumps(two_parts_spec()).encode())
    drain(source)
    record = read(s3, settings.results_bucket, KeyLayout(settings).error_key(key))
    assert record["error"]["code"] == "unsupported_model"


def test_a_replaced_spec_plans_anew_and_the_old_plans_messages_are_skipped(source, s3, settings):
    key = upload_spec(s3, settings, "replaced", two_parts_spec(seed=4))
    invoke_once(source)  # planned; its two part messages wait
    old = source.receive_batch(wait=False)  # hold one old part message back
    upload_spec(s3, settings, "replaced", {"seed": 5, "feature_visualization": {
        "objectives": [{"class": "triangle"}], "steps": 8, "transformations": "none"}})
    drain(source)
    job = job_ref(KeyLayout(settings), key)
    report = read(s3, settings.results_bucket, job.key(REPORT_FILE))
    etag = s3.head_object(Bucket=settings.input_bucket, Key=key)["ETag"].strip('"')
    assert report["spec_etag"] == etag and len(report["parts"]) == 1
    assert "triangle" in report["parts"][0]["title"]
    source.sqs.change_message_visibility(QueueUrl=source.queue_url, ReceiptHandle=old[0]["ReceiptHandle"],
                                         VisibilityTimeout=0)
    before = s3.head_object(Bucket=settings.results_bucket, Key=job.key(REPORT_FILE))["ETag"]
    drain(source)  # the old plan's message: skipped, nothing rewritten
    assert s3.head_object(Bucket=settings.results_bucket, Key=job.key(REPORT_FILE))["ETag"] == before


def test_a_part_held_by_another_invocation_is_left_to_it(source, s3, settings, monkeypatch):
    """S3 and SQS deliver at least once: a second delivery of a part while another invocation holds it is
    dropped (the holder's own message comes back if the holder dies), so a part runs once at a time."""
    from explain_core.input_lock import InputIdentity, LockOutcome

    key = upload_spec(s3, settings, "held", {"seed": 6, "feature_visualization": {
        "objectives": [{"class": "circle"}], "steps": 8, "transformations": "none"}})
    invoke_once(source)
    job = job_ref(KeyLayout(settings), key)
    etag = read(s3, settings.results_bucket, job.key(PLAN_FILE))["spec_etag"]
    lock = source.handler.session.input_lock
    identity = InputIdentity(settings.results_bucket, job.part_prefix(etag, "fv-00-000"), etag, "insights-part")
    assert lock.acquire(identity, 60_000) is LockOutcome.ACQUIRED  # another invocation holds the part
    runs = []
    real = feature_visualization.FeatureVisualization.run_part
    monkeypatch.setattr(feature_visualization.FeatureVisualization, "run_part",
                        lambda self, *args: runs.append(1) or real(self, *args))
    message = source.receive_batch(wait=False)
    body = json.loads(message[0]["Body"])["insights_part"]
    assert body["part"] == "fv-00-000"
    source.invoke(message)  # the duplicate: consumed, nothing run
    assert runs == [] and job_progress(s3, settings, key)["status"] == "running"
    lock.release(identity, RuntimeError("the holder failed"))
    s3.put_object(Bucket=settings.input_bucket, Key=key, Body=s3.get_object(
        Bucket=settings.input_bucket, Key=key)["Body"].read())  # the same bytes again: the same ETag
    drain(source)  # the spec's redelivery re-sends the part without an outcome, which now runs
    assert runs == [1] and job_progress(s3, settings, key)["status"] == "succeeded"


def test_a_spec_replaced_by_an_invalid_one_reports_the_refusal_not_the_old_result(source, s3, settings):
    key = upload_spec(s3, settings, "then-invalid", two_parts_spec(seed=8))
    drain(source)
    assert job_progress(s3, settings, key)["status"] == "succeeded"
    s3.put_object(Bucket=settings.input_bucket, Key=key, Body=b'{"feature_visualization": {"steps": 8}}')
    drain(source)
    progress = job_progress(s3, settings, key)
    assert progress["status"] == "failed" and progress["error"]["code"] == "invalid_insights_spec"
    assert "objectives" in progress["error"]["message"]


def test_a_part_out_of_time_on_its_last_receive_is_recorded_and_the_job_assembled(source, s3, settings, monkeypatch):
    """Killed on the queue's last receive, a part would write nothing and its job would never end: shortly
    before the deadline, its outcome says timed out and the job is assembled without it."""
    key = upload_spec(s3, settings, "slow", two_parts_spec(seed=9))
    invoke_once(source)
    real = feature_visualization.FeatureVisualization.run_part

    def run_part(self, spec, part, ctx):
        if part.id.endswith("1"):
            time.sleep(8)  # past the 25 s invocation's guard (20 s before its deadline)
        return real(self, spec, part, ctx)

    monkeypatch.setattr(feature_visualization.FeatureVisualization, "run_part", run_part)
    messages = []
    while len(messages) < 2:
        messages += source.receive_batch(wait=False)
    for message in messages:
        message["Attributes"]["ApproximateReceiveCount"] = str(settings.max_receive_count)
        context = lambda_service.LocalLambdaContext(source.wiring.logical_id, source.wiring.memory, 25)
        lambda_service.invoke(source.deployment, source.wiring, source.handler,
                              lambda_service.sqs_event([message], source.queue_arn), context)
        source.sqs.delete_message(QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"])
    report = read(s3, settings.results_bucket, job_ref(KeyLayout(settings), key).key(REPORT_FILE))
    outcomes = {part["id"]: part for part in report["parts"]}
    slow = next(part for part_id, part in outcomes.items() if part_id.endswith("1"))
    assert report["status"] == "partial" and slow["status"] == "failed"
    assert slow["error"]["code"] == "timed_out" and slow["attempt"] == settings.max_receive_count
