"""API jobs: a DynamoDB record per job; its state is read from the results bucket.

A job is an ordinary S3-path upload (``incoming/<family>/<model>/<version>/jobs/<job id>/<file>``,
options in its metadata), so the family's queue, retries, dead-letter queue and error records
apply unchanged. The record maps the job id to that input; the manifest (written last) or the
error record says how it ended. Nothing has to update the record, so it cannot go stale.
"""

import json
import time
import uuid
from decimal import Decimal

from botocore.exceptions import ClientError

from explain_core.api_models import ErrorDetail, JobStatus
from explain_core.api_responses import Links, explanation_result
from explain_core.errors import UnknownJobError, is_missing_object
from explain_core.keys import KeyLayout, check_name
from explain_core.results import now_iso
from explain_core.settings import Settings

#: Job records expire (DynamoDB TTL) after a week; the results stay in the results bucket.
JOB_RECORD_SECONDS = 7 * 24 * 3600


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
               estimated_seconds: float | None, reason: str) -> dict:
        ref = self.keys.parse_input(self.settings.input_bucket, input_key, family)
        job = {
            "job_id": job_id,
            "client_id": client_id,
            "family": family,
            "model": model,
            "version": version,
            "input_key": input_key,
            "manifest_key": self.keys.manifest_key(ref),
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

    def get(self, job_id: str, client_id: str) -> dict:
        """The caller's job; another client's job is reported as unknown, never shown."""
        item = self.table.get_item(Key={"job_id": job_id}).get("Item")
        expired = item is not None and int(item.get("expires_at", 0)) < time.time()
        if item is None or expired or item.get("client_id") != client_id:
            raise UnknownJobError(f"no job {job_id}", job_id=job_id)
        return item


def _read_json(s3, bucket: str, key: str) -> dict | None:
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        if is_missing_object(exc):
            return None
        raise


def job_status(job: dict, s3, links: Links) -> JobStatus:
    bucket = links.settings.results_bucket
    described = {
        "job_id": job["job_id"], "family": job["family"],
        "model": {"name": job["model"], "version": job["version"]},
        "created_at": job["created_at"], "input_key": job["input_key"],
        "estimated_seconds": float(job["estimated_seconds"]) if "estimated_seconds" in job else None,
    }
    manifest = _read_json(s3, bucket, job["manifest_key"])
    if manifest is not None:
        result = explanation_result(manifest, links, job["manifest_key"])
        return JobStatus(**described, status=manifest["status"], result=result)
    record = _read_json(s3, bucket, job["error_key"])
    if record is None:
        return JobStatus(**described, status="queued")
    error = ErrorDetail(**{"details": {}, **record["error"]})
    if record.get("retrying"):
        return JobStatus(**described, status="queued", retrying=True, error=error)
    return JobStatus(**described, status="failed", error=error)

