"""API jobs: a DynamoDB record per job; its state is read from the results bucket.

A job is an ordinary S3-path upload (``incoming/<family>/<model>/<version>/jobs/<job id>/<file>``,
options in its metadata), so the family's queue, retries, dead-letter queue and error records
apply unchanged. The record maps the job id to that input; the manifest (written last) or the
error record says how it ended.

What no record can say is an invocation killed by its timeout or memory limit: it writes
nothing. So the family's SQS adapter records each attempt on the job (:meth:`JobStore.record_attempt`:
the SQS receive count, the maximum, when it started and the latest its invocation can end), and
a job whose last attempt is past that deadline (plus ATTEMPT_GRACE_SECONDS) with no outcome was
killed: queued again (SQS redelivers it after the visibility timeout) or, after the last attempt,
failed (``timed_out``: the message goes to the dead-letter queue). A final error record of a
message moved to the dead-letter queue (``dead_lettered``) says so, and how to redrive it.

An insights job (family ``insights``, POST /insights: :class:`InsightsJobRequests`) is a specification
file ``incoming/insights/<model>/<version>/jobs/<job id>.json``; its record's "manifest" is the job's
report, and its status is the insights function's progress (:func:`insights_job_status`).
"""

import datetime as dt
import json
import time
import uuid
from decimal import Decimal

from botocore.exceptions import ClientError

from explain_core.api_models import (
    ErrorDetail,
    InsightsJobAccepted,
    InsightsJobStatus,
    InsightsKindStatus,
    InsightsPicture,
    InsightsProgress,
    InsightsRequest,
    InsightsResult,
    JobStatus,
)
from explain_core.api_responses import Links, explanation_result
from explain_core.errors import JobTimedOutError, UnknownJobError, is_missing_object
from explain_core.keys import KeyLayout, check_name
from explain_core.manifest import Manifest
from explain_core.results import now_iso
from explain_core.settings import Settings

#: Job records expire (DynamoDB TTL) after a week; the results stay in the results bucket.
JOB_RECORD_SECONDS = 7 * 24 * 3600
#: An attempt past its invocation's deadline by more than this, with no outcome, was killed.
ATTEMPT_GRACE_SECONDS = 60


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    def __init__(self, settings: Settings, dynamodb=None):
        import boto3

        self.settings = settings
        self.keys = KeyLayout(settings)
        self.table = (dynamodb or boto3.resource("dynamodb")).Table(settings.jobs_table)

    def input_key(self, family: str, model: str, version: str, job_id: str, filename: str) -> str:
        model, version = check_name(model, "model"), check_name(version, "version")
        return f"{self.keys.family_prefix(family)}{model}/{version}/jobs/{job_id}/{filename}"

    def create(self, *, job_id: str, family: str, model: str, version: str, input_key: str, client_id: str,
               estimated_seconds: float | None, reason: str, manifest_key: str | None = None) -> dict:
        """Record a new job; ``manifest_key`` (default: the manifest of ``input_key``) is where its outcome
        appears (an insights job's: its report)."""
        if manifest_key is None:
            manifest_key = self.keys.manifest_key(self.keys.parse_input(self.settings.input_bucket, input_key, family))
        job = {
            "job_id": job_id,
            "client_id": client_id,
            "family": family,
            "model": model,
            "version": version,
            "input_key": input_key,
            "manifest_key": manifest_key,
            "error_key": self.keys.error_key(input_key),
            "created_at": now_iso(),
            "expires_at": int(time.time()) + JOB_RECORD_SECONDS,
            "reason": reason,
        }
        if estimated_seconds is not None:
            job["estimated_seconds"] = Decimal(str(round(estimated_seconds, 2)))  # DynamoDB takes no floats
        self.table.put_item(Item=job, ConditionExpression="attribute_not_exists(job_id)")
        return job

    def delete(self, job_id: str) -> None:
        self.table.delete_item(Key={"job_id": job_id})

    def record_attempt(self, job_id: str, *, attempt: int, max_attempts: int, started_at: float,
                       deadline: float) -> None:
        """Record, at its start, an attempt of the family's SQS adapter on a job's input (its S3 metadata
        carries ``job-id``): ``attempt`` is the SQS receive count, ``max_attempts`` the queue's
        maximum receives, ``started_at`` and ``deadline`` (the latest the invocation can end: its
        timeout) epoch seconds. A job without a record (expired, or not an API job) is left alone;
        any other DynamoDB error propagates."""
        try:
            self.table.update_item(
                Key={"job_id": job_id},
                UpdateExpression="SET attempts = :attempt, max_attempts = :max_attempts, "
                                 "last_attempt_at = :started_at, last_attempt_deadline = :deadline",
                ConditionExpression="attribute_exists(job_id)",
                ExpressionAttributeValues={  # DynamoDB takes no floats
                    ":attempt": int(attempt), ":max_attempts": int(max_attempts),
                    ":started_at": Decimal(str(round(float(started_at), 3))),
                    ":deadline": Decimal(str(round(float(deadline), 3))),
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def get(self, job_id: str, client_id: str) -> dict:
        """The caller's job; another client's job is reported as unknown, never shown."""
        item = self.table.get_item(Key={"job_id": job_id}).get("Item")
        expired = item is not None and int(item.get("expires_at", 0)) < time.time()
        if item is None or expired or item.get("client_id") != client_id:
            raise UnknownJobError(f"no job {job_id}", job_id=job_id)
        return item


def read_optional(s3, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None when it does not exist."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if is_missing_object(exc):
            return None
        raise


def iso_seconds(epoch: float) -> str:
    """An epoch time as ISO 8601 (UTC, seconds)."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def _epoch(iso: str | None) -> float | None:
    try:
        return dt.datetime.fromisoformat(iso).timestamp() if iso else None
    except (TypeError, ValueError):
        return None


def _redrive(family: str) -> str:
    return (f"aws sqs start-message-move-task --source-arn <ARN of the {family} dead-letter queue> "
            f"(moves its messages back to the {family} queue)")


def _final_error(record: dict, family: str) -> ErrorDetail:
    """The error of a final error record; one whose message went to the dead-letter queue says so."""
    error = {"details": {}, **record["error"]}
    if record.get("dead_lettered"):
        attempts = record.get("max_attempts") or record.get("attempt")
        after = f"after {attempts} attempts" if attempts else "after its retries"
        cause = error["message"].rstrip(".")
        error["message"] = (f"{cause}. The message went to the dead-letter queue {after}; once the cause is "
                            f"fixed, redrive it to run the job again: {_redrive(family)}")
        error["details"] = {**error["details"], "dead_lettered": True, "attempts": record.get("attempt"),
                            "max_attempts": record.get("max_attempts"), "redrive": _redrive(family)}
    return ErrorDetail.from_dict(error)


def _killed_attempt(job: dict, record: dict | None, now: float) -> tuple[ErrorDetail, bool] | None:
    """(error, final) when the job's last recorded attempt passed its deadline without an outcome."""
    if job.get("last_attempt_deadline") is None:
        return None
    deadline = float(job["last_attempt_deadline"])
    if now <= deadline + ATTEMPT_GRACE_SECONDS:
        return None  # still running, or writing its outputs
    started = float(job.get("last_attempt_at", deadline))
    written = _epoch(record.get("time")) if record is not None else None
    if written is not None and written >= started:
        return None  # that attempt ended, with this (retrying) error record
    attempts, max_attempts = int(job.get("attempts", 0)), int(job.get("max_attempts", 0))
    final = 0 < max_attempts <= attempts
    what = f"the last of {max_attempts} attempts" if final else f"attempt {attempts} of {max_attempts or '?'}"
    then = ("the message is in the dead-letter queue (redrive it to run the job again)" if final else
            "SQS will redeliver the message after its visibility timeout")
    details = {"attempts": attempts, "max_attempts": max_attempts, "last_attempt_at": iso_seconds(started),
               "last_attempt_deadline": iso_seconds(deadline)}
    if final:
        details.update(dead_lettered=True, redrive=_redrive(job["family"]))
    error = JobTimedOutError(
        f"{what} started at {iso_seconds(started)} and did not finish before the function's timeout: it was killed "
        f"(time or memory limit); {then}", **details)
    return ErrorDetail(**error.to_dict()), final


def job_status(job: dict, s3, links: Links, *, now: float | None = None) -> JobStatus:
    bucket = links.settings.results_bucket
    described = {
        "job_id": job["job_id"], "family": job["family"],
        "model": {"name": job["model"], "version": job["version"]},
        "created_at": job["created_at"], "input_key": job["input_key"],
        "estimated_seconds": float(job["estimated_seconds"]) if "estimated_seconds" in job else None,
    }
    body = read_optional(s3, bucket, job["manifest_key"])
    if body is not None:
        manifest = Manifest.from_json(body)
        result = explanation_result(manifest, links, job["manifest_key"])
        return JobStatus(**described, status=manifest.status, result=result)
    body = read_optional(s3, bucket, job["error_key"])
    record = json.loads(body) if body is not None else None
    if record is not None and not record.get("retrying"):
        return JobStatus(**described, status="failed", error=_final_error(record, job["family"]))
    killed = _killed_attempt(job, record, time.time() if now is None else now)
    if killed is not None:
        error, final = killed
        return JobStatus(**described, status="failed" if final else "queued", retrying=not final, error=error)
    if record is None:
        return JobStatus(**described, status="queued")
    error = ErrorDetail.from_dict({"details": {}, **record["error"]})
    return JobStatus(**described, status="queued", retrying=True, error=error)


# ---------------------------------------------------------------------------------------- insights jobs
#: The same insights job request within this time returns the same job: long enough for a client's retries,
#: short enough that asking again later (the images under a prefix may have changed) runs anew.
INSIGHTS_IDEMPOTENCY_SECONDS = 3600


class InsightsJobRequests:
    """POST /insights: record the job, then store its specification file, whose upload event starts it
    (the insights function plans the parts; :mod:`explain_core.insights.jobs`).

    Idempotent as POST /explanations' jobs are (Powertools idempotency on the DynamoDB table): the same
    specification of the same model from the same client within INSIGHTS_IDEMPOTENCY_SECONDS returns the
    same job; a concurrent duplicate gets 409 request_in_progress."""

    def __init__(self, store: JobStore, s3, idempotency_table: str):
        from aws_lambda_powertools.utilities.idempotency import (
            DynamoDBPersistenceLayer,
            IdempotencyConfig,
            idempotent_function,
        )

        if not idempotency_table:
            raise ValueError("POST /insights needs the idempotency table (IDEMPOTENCY_TABLE)")
        self.store, self.s3, self.settings = store, s3, store.settings
        self.idempotency = IdempotencyConfig(expires_after_seconds=INSIGHTS_IDEMPOTENCY_SECONDS)
        persistence = DynamoDBPersistenceLayer(table_name=idempotency_table)
        self.start = idempotent_function(data_keyword_argument="job_request", persistence_store=persistence,
                                         config=self.idempotency)(self._start)

    def handle(self, request: InsightsRequest, *, client_id: str, context) -> InsightsJobAccepted:
        from explain_core.insights.spec import parse_spec

        self.idempotency.register_lambda_context(context)
        spec = request.spec.model_dump(mode="json", by_alias=True)  # as a spec file says it ("class")
        parse_spec(_spec_file(spec))  # the file the function reads passes the same checks (its size)
        job = self.start(job_request={"client_id": client_id, "model": request.model.name,
                                      "version": request.model.version, "spec": spec})
        return InsightsJobAccepted(**job)

    def _start(self, job_request: dict) -> dict:
        from explain_core.insights import INSIGHTS
        from explain_core.insights.jobs import INDEX_FILE, JOB_ID, REPORT_FILE, api_spec_key, job_ref
        from explain_core.keys import client_segment
        from explain_core.sanity import CLIENT_METADATA

        job_id, model, version = new_job_id(), job_request["model"], job_request["version"]
        spec_key = api_spec_key(self.store.keys, model, version, job_id)
        job = job_ref(self.store.keys, spec_key)
        self.store.create(job_id=job_id, family=INSIGHTS, model=model, version=version, input_key=spec_key,
                          client_id=job_request["client_id"], estimated_seconds=None, reason="POST /insights",
                          manifest_key=job.key(REPORT_FILE))
        try:
            self.s3.put_object(Bucket=self.settings.input_bucket, Key=spec_key, Body=_spec_file(job_request["spec"]),
                               ContentType="application/json",
                               Metadata={JOB_ID: job_id, CLIENT_METADATA: client_segment(job_request["client_id"])})
        except Exception:
            self.store.delete(job_id)  # no job without its specification; the idempotency record is released too
            raise
        return {"job_id": job_id, "status": "queued", "status_url": f"/jobs/{job_id}", "spec_key": spec_key,
                "results_prefix": job.results_prefix, "report_key": job.key(REPORT_FILE),
                "index_key": job.key(INDEX_FILE), "error_key": self.store.keys.error_key(spec_key)}


def _spec_file(spec: dict) -> bytes:
    return json.dumps(spec, indent=2, sort_keys=True).encode()


def insights_job_status(job: dict, s3, links: Links, *, now: float | None = None) -> InsightsJobStatus:
    """GET /jobs/<id> of an insights job: its progress (:func:`explain_core.insights.jobs.job_progress`, which
    reads the results bucket and the record's progress), and once done the report's headline and links."""
    from explain_core.insights.jobs import job_progress

    progress = job_progress(s3, links.settings, job["input_key"], job, now=now)
    error = progress.get("error")
    return InsightsJobStatus(
        job_id=job["job_id"], family=job["family"], status=progress["status"],
        model={"name": job["model"], "version": job["version"]}, created_at=job["created_at"],
        input_key=job["input_key"], results_prefix=progress["results_prefix"],
        progress=InsightsProgress(
            parts_total=progress.get("parts_total"), parts_done=progress.get("parts_done", 0),
            parts_failed=progress.get("parts_failed", 0), estimated_seconds=progress.get("estimated_seconds"),
            current_part=progress.get("current_part")),
        retrying=bool(progress.get("retrying")), last_error=progress.get("last_error"),
        error=ErrorDetail.from_dict({"details": {}, **error}) if error else None,
        result=_insights_result(progress, links) if "report" in progress else None,
    )


def _insights_result(progress: dict, links: Links) -> InsightsResult:
    report, prefix = progress["report"], progress["results_prefix"]
    kinds = [InsightsKindStatus(name=name, status=section["status"],
                                failed_parts=[part["id"] for part in section.get("failed_parts", [])],
                                error=ErrorDetail.from_dict({"details": {}, **section["error"]})
                                if section.get("error") else None)
             for name, section in report["kinds"].items()]
    # Each kind's pictures in the order its report page shows them, named by their path in the job's folder.
    pictures = [InsightsPicture(kind=name, name=key[len(prefix):], url=links.result(key))
                for name, section in report["kinds"].items() for key in section.get("pictures", [])]
    return InsightsResult(status=report["status"], title=report.get("title"), kinds=kinds,
                          report_url=links.result(progress["report_key"]),
                          index_url=links.result(progress["index_key"]), pictures=pictures,
                          urls_expire_in=links.seconds, created_at=report.get("created_at"))
