"""Writing explanation outputs and error records to the results bucket."""

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import ClientError

from explain_core.errors import is_missing_object
from explain_core.keys import KeyLayout
from explain_core.settings import Settings

SOURCE_ETAG = "source-etag"
REQUEST_FINGERPRINT = "request-fingerprint"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class ResultWriter:
    def __init__(self, s3_client, settings: Settings, max_workers: int = 8):
        self.s3 = s3_client
        self.bucket = settings.results_bucket
        self.keys = KeyLayout(settings)
        # boto3 clients are thread-safe; parallel PUTs hide S3 latency for many small outputs.
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="s3-put")

    def put_many(self, objects: list[tuple[str, bytes, str]]) -> None:
        """PUT (key, body, content type) objects in parallel; raises the first failure."""
        futures = [
            self._pool.submit(self.s3.put_object, Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
            for key, body, content_type in objects
        ]
        for future in futures:
            future.result()

    def put_json(self, key: str, document: dict, metadata: dict | None = None) -> None:
        self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=json.dumps(document, indent=2, default=str).encode(),
            ContentType="application/json",
            Metadata=metadata or {},
        )

    def manifest_metadata(self, manifest_key: str) -> dict | None:
        """User metadata of an existing manifest, or None when there is none."""
        try:
            return self.s3.head_object(Bucket=self.bucket, Key=manifest_key)["Metadata"]
        except ClientError as exc:
            if is_missing_object(exc):
                return None
            raise

    def put_error(self, *, bucket: str, key: str, etag: str | None, family: str, error: dict, retrying: bool,
                  request_id: str | None) -> str:
        error_key = self.keys.error_key(key)
        self.put_json(
            error_key,
            {
                "status": "failed",
                "input": {"bucket": bucket, "key": key, "etag": etag},
                "family": family,
                "error": error,
                # True when the message goes back to the queue (transient failure); after the
                # queue's maximum receives it lands in the dead-letter queue.
                "retrying": retrying,
                "request_id": request_id,
                "time": now_iso(),
            },
        )
        return error_key

    def delete_error(self, key: str) -> None:
        """Remove a stale error record once the input has been explained."""
        self.s3.delete_object(Bucket=self.bucket, Key=self.keys.error_key(key))
