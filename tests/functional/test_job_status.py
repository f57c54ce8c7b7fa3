"""A job's status when its message never ends normally: dead-lettered, or its invocation killed.

The jobs table and the results bucket are the emulator's (``deployment``); the job records are
written by :class:`JobStore` as the API writes them, the attempts as the family's SQS adapter records
them (:meth:`JobStore.record_attempt`), and the error records as the SQS adapter writes them.
"""

import json
import time
import uuid
from decimal import Decimal

import pytest

from explain_core import jobs
from explain_core.api_responses import Links
from explain_core.jobs import JobStore, job_status

CLIENT = "job-status-client"
#: The grace period after an invocation's deadline (explain_core.jobs.GRACE).
GRACE = 60



@pytest.fixture(scope="module")
def store(settings):
    return JobStore(settings)


@pytest.fixture(scope="module")
def links(settings, s3):
    return Links(settings, s3)


@pytest.fixture
def job(store):
    job_id = uuid.uuid4().hex
    input_key = store.input_key("perturbation", "shapes", "v1", job_id, "input.png")
    store.create(job_id=job_id, family="perturbation", model="shapes", version="v1", input_key=input_key,
                 client_id=CLIENT, estimated_seconds=42.5, reason="mode async was requested")
    yield job_id
    store.delete(job_id)


def status_of(store, s3, links, job_id: str):
    return job_status(store.get(job_id, CLIENT), s3, links)


def put_error_record(s3, settings, store, job_id: str, **fields) -> None:
    """An error record as the SQS adapter writes it (explain_core.results.ResultWriter.put_error)."""
    job = store.get(job_id, CLIENT)
    record = {"status": "failed", "input": {"bucket": settings.input_bucket, "key": job["input_key"], "etag": "e"},
              "family": job["family"], "request_id": "r-1", "time": fields.pop("time", None) or _iso(time.time()),
              "error": {"type": "ConnectionError", "code": "internal_error", "details": {},
                        "message": "Could not connect to the endpoint URL"}, **fields}
    s3.put_object(Bucket=settings.results_bucket, Key=job["error_key"], Body=json.dumps(record).encode())


def attempted(store, job_id: str, *, attempt: int, max_attempts: int, started_at: float, deadline: float) -> None:
    """The attempt attributes as the SQS adapter records them (written directly: the status tests need
    only the stored record, whichever code wrote it)."""
    store.table.update_item(
        Key={"job_id": job_id},
        UpdateExpression="SET attempts = :a, max_attempts = :m, last_attempt_at = :s, last_attempt_deadline = :d",
        ExpressionAttributeValues={":a": attempt, ":m": max_attempts, ":s": Decimal(str(started_at)),
                                   ":d": Decimal(str(deadline))},
    )


def _iso(epoch: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")


def test_a_dead_lettered_job_has_failed_and_says_how_to_redrive_it(store, s3, settings, links, job):
    attempted(store, job, attempt=3, max_attempts=3, started_at=time.time() - 30, deadline=time.time() + 870)
    put_error_record(s3, settings, store, job, retrying=False, dead_lettered=True, attempt=3, max_attempts=3)

    status = status_of(store, s3, links, job)
    assert status.status == "failed" and status.retrying is False
    error = status.error
    assert error.code == "internal_error"  # the cause, unchanged
    assert "Could not connect" in error.message
    assert "dead-letter queue after 3 attempts" in error.message and "redrive" in error.message
    assert error.details["dead_lettered"] is True
    assert (error.details["attempts"], error.details["max_attempts"]) == (3, 3)
    assert "start-message-move-task" in error.details["redrive"]


def test_a_final_attempt_killed_by_the_timeout_has_failed(store, s3, links, job):
    started = time.time() - 900 - GRACE - 5
    attempted(store, job, attempt=3, max_attempts=3, started_at=started, deadline=started + 900)

    status = status_of(store, s3, links, job)
    assert status.status == "failed" and status.retrying is False
    assert status.error.code == "timed_out"
    message = status.error.message
    assert "the last of 3 attempts started at " + _iso(started)[:19] in message
    assert "killed" in message and "dead-letter queue" in message
    assert status.error.details["attempts"] == 3 and status.error.details["max_attempts"] == 3


def test_an_earlier_attempt_killed_by_the_timeout_is_queued_again(store, s3, links, job):
    started = time.time() - 900 - GRACE - 5
    attempted(store, job, attempt=1, max_attempts=3, started_at=started, deadline=started + 900)

    status = status_of(store, s3, links, job)
    assert status.status == "queued" and status.retrying is True
    assert status.error.code == "timed_out"
    assert "attempt 1 of 3" in status.error.message and "redeliver" in status.error.message


def test_an_attempt_in_progress_is_queued(store, s3, links, job):
    assert jobs.ATTEMPT_GRACE_SECONDS == GRACE
    store.record_attempt(job, attempt=1, max_attempts=3, started_at=time.time() - 10, deadline=time.time() + 890)
    # Within the grace period after the deadline the invocation may still be writing its outputs.
    status = status_of(store, s3, links, job)
    assert status.status == "queued" and status.retrying is False and status.error is None
    item = store.table.get_item(Key={"job_id": job})["Item"]
    assert (item["attempts"], item["max_attempts"]) == (1, 3)

    store.record_attempt(job, attempt=2, max_attempts=3, started_at=time.time() - 901,
                         deadline=time.time() - GRACE + 10)
    status = status_of(store, s3, links, job)
    assert status.status == "queued" and status.error is None


def test_a_transient_error_after_the_last_attempt_started_is_that_attempts_outcome(store, s3, settings, links,
                                                                                   job):
    """The attempt ended (with a retrying error record), it was not killed: its error is the job's."""
    started = time.time() - 900 - GRACE - 5
    attempted(store, job, attempt=2, max_attempts=3, started_at=started, deadline=started + 900)
    put_error_record(s3, settings, store, job, retrying=True, time=_iso(started + 20))

    status = status_of(store, s3, links, job)
    assert status.status == "queued" and status.retrying is True
    assert status.error.code == "internal_error"

    # An older error record (from an attempt before the last): the last one was killed.
    put_error_record(s3, settings, store, job, retrying=True, time=_iso(started - 1000))
    status = status_of(store, s3, links, job)
    assert status.status == "queued" and status.retrying is True and status.error.code == "timed_out"


def test_recording_an_attempt_of_an_unknown_job_does_nothing(store):
    job_id = uuid.uuid4().hex
    store.record_attempt(job_id, attempt=1, max_attempts=3, started_at=time.time(), deadline=time.time() + 900)
    assert store.table.get_item(Key={"job_id": job_id}).get("Item") is None


def test_an_attempt_is_stored_with_its_times(store, job):
    store.record_attempt(job, attempt=2, max_attempts=3, started_at=1_800_000_000.25, deadline=1_800_000_900.25)
    item = store.table.get_item(Key={"job_id": job})["Item"]
    assert (item["attempts"], item["max_attempts"]) == (2, 3)
    assert float(item["last_attempt_at"]) == 1_800_000_000.25
    assert float(item["last_attempt_deadline"]) == 1_800_000_900.25


# ----------------------------------------------------------------- through the family's handler
def staged_job_input(store, s3, settings, samples, job_id: str) -> str:
    """The job's input as the API uploads it: under jobs/<id>/, its id in the metadata."""
    from tests.conftest import png_bytes

    key = store.get(job_id, CLIENT)["input_key"]
    s3.put_object(Bucket=settings.input_bucket, Key=key, Body=png_bytes(samples[0][0]),
                  Metadata={"methods": "Occlusion", "job-id": job_id})
    return key


def test_the_handler_records_each_attempt_at_a_job(store, s3, settings, links, job, samples, invoke):
    from tests.conftest import upload_event

    key = staged_job_input(store, s3, settings, samples, job)
    before = time.time()

    assert invoke("perturbation", upload_event(key, family="perturbation")) == {"batchItemFailures": []}

    record = store.get(job, CLIENT)
    assert (record["attempts"], record["max_attempts"]) == (1, 3)
    assert before <= float(record["last_attempt_at"]) <= time.time()
    assert float(record["last_attempt_deadline"]) > float(record["last_attempt_at"])  # + the invocation's time
    assert status_of(store, s3, links, job).status == "succeeded"


def test_a_job_that_fails_on_its_last_receive_reports_failed(store, s3, settings, links, job, samples, invoke,
                                                             handlers, monkeypatch):
    """The handler's own record of the last receive (not a test-made one) makes the job fail."""
    from tests.conftest import upload_event

    key = staged_job_input(store, s3, settings, samples, job)

    def unavailable(*args, **kwargs):
        raise ConnectionError("simulated outage of the model bucket")

    monkeypatch.setattr(handlers["perturbation"].session.store, "get", unavailable)
    event = upload_event(key, family="perturbation", receive_count=3)
    retried = {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert invoke("perturbation", event) == retried

    status = status_of(store, s3, links, job)
    assert status.status == "failed"
    assert status.error.details["dead_lettered"] is True and "dead-letter queue" in status.error.message
