"""Writing explanation outputs and error records to the results bucket.

Every JSON document is strict JSON (``allow_nan=False``): a NaN or infinity that reached a
document is a bug, raised here rather than written as a literal ``NaN`` that JSON parsers refuse.

A manifest is replaced only by compare-and-swap (S3 conditional writes: ``If-Match`` on the ETag
read, ``If-None-Match: *`` for the first one), and never by an older version of its input (the
S3 event's ``sequencer`` orders versions of one key). Outputs live under a per-attempt prefix
that the manifest lists, so a manifest never points at another attempt's files.
"""

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import ClientError

from explain_core.errors import InputChangedError, is_missing_object, is_precondition_failed
from explain_core.keys import KeyLayout
from explain_core.settings import Settings

SOURCE_ETAG = "source-etag"
REQUEST_FINGERPRINT = "request-fingerprint"
#: Orders versions of one input key: the S3 event's sequencer (or, without one, its event time).
SOURCE_ORDER = "source-order"
#: Compare-and-swap rounds before giving up (each lost round means another writer just won).
MANIFEST_WRITE_ATTEMPTS = 5
#: Parallel PUTs of one input's outputs.
PUT_THREADS = 8


def strict_json(document) -> bytes:
    """``document`` as strict JSON (no NaN or infinity: ValueError instead)."""
    return json.dumps(document, indent=2, default=str, allow_nan=False).encode()


def newer_order(candidate: str | None, current: str | None) -> bool:
    """True when ``candidate`` is a strictly later version than ``current`` (both SOURCE_ORDER values).

    Orders of different kinds (sequencer vs event time), or missing ones, cannot be compared:
    then the later writer wins, as S3 itself would do.
    """
    if not candidate or not current or candidate[:2] != current[:2]:
        return False
    return candidate > current


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class ResultWriter:
    def __init__(self, s3_client, settings: Settings, max_workers: int = PUT_THREADS):
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
            Body=strict_json(document),
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

    def put_manifest(self, key: str, manifest: dict, metadata: dict, *, seen_absent: bool = False) -> list[str]:
        """Write ``manifest`` unless a newer version of the input has one already; returns the output
        keys of the manifest it replaced (the caller deletes them), or raises InputChangedError.

        ``seen_absent``: the caller found no manifest earlier in this attempt (its duplicate check), so
        the first round writes with ``If-None-Match: *`` without reading: S3 refuses it atomically
        if a manifest appeared since, and the rounds that read and compare follow.
        """
        body = strict_json(manifest)
        order = metadata.get(SOURCE_ORDER)
        if seen_absent and self._put_conditional(key, body, metadata, {"IfNoneMatch": "*"}):
            return []
        for _ in range(MANIFEST_WRITE_ATTEMPTS):
            current = self._read_manifest(key)
            condition = {"IfNoneMatch": "*"}
            replaced: list[str] = []
            if current is not None:
                etag, current_metadata, document = current
                if newer_order(current_metadata.get(SOURCE_ORDER), order):
                    raise InputChangedError(
                        "a newer version of this input was explained already; this event's version is superseded",
                        key=manifest["input"]["key"], current_order=current_metadata.get(SOURCE_ORDER),
                        event_order=order,
                    )
                condition = {"IfMatch": etag}
                replaced = [k for k in document.get("output_keys", []) if k not in manifest["output_keys"]]
            if self._put_conditional(key, body, metadata, condition):
                return replaced
            # Another writer replaced the manifest between our read and our write: read again.
        raise RuntimeError(f"could not write {key}: {MANIFEST_WRITE_ATTEMPTS} concurrent writers won first")

    def _put_conditional(self, key: str, body: bytes, metadata: dict, condition: dict) -> bool:
        """A conditional PUT of a manifest; False when S3 refused the condition (another writer came first)."""
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json",
                               Metadata=metadata, **condition)
            return True
        except ClientError as exc:
            if not is_precondition_failed(exc):
                raise
            return False

    def _read_manifest(self, key: str) -> tuple[str, dict, dict] | None:
        """(ETag, metadata, document) of a manifest, or None."""
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if is_missing_object(exc):
                return None
            raise
        try:
            document = json.loads(response["Body"].read())
        except ValueError:
            document = {}  # an unreadable manifest is simply replaced
        return response["ETag"], response.get("Metadata", {}), document

    def delete_many(self, keys: list[str]) -> list[dict]:
        """Delete objects (another attempt's outputs, stale error records), 1000 per request as S3 allows;
        returns the keys S3 could not delete (DeleteObjects answers 200 even then: its ``Errors``)."""
        errors = []
        for start in range(0, len(keys), 1000):
            chunk = keys[start:start + 1000]
            response = self.s3.delete_objects(Bucket=self.bucket,
                                              Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
            errors += response.get("Errors") or []
        return errors

    def put_error(self, *, bucket: str, key: str, etag: str | None, family: str, error: dict, retrying: bool,
                  request_id: str | None, **delivery) -> str:
        """The input's error record. ``delivery``: the SQS attempt, max_attempts and dead_lettered."""
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
                **delivery,
                "request_id": request_id,
                "time": now_iso(),
            },
        )
        return error_key

    def delete_error(self, key: str) -> None:
        """Remove a stale error record once the input has been explained."""
        self.s3.delete_object(Bucket=self.bucket, Key=self.keys.error_key(key))

    def delete_errors(self, keys: list[str]) -> None:
        """Remove the stale error records of inputs explained together: one DeleteObjects for a batch."""
        if len(keys) == 1:
            self.delete_error(keys[0])
        elif keys:
            errors = self.delete_many([self.keys.error_key(key) for key in keys])
            if errors:  # as delete_error would have raised
                raise RuntimeError(f"could not delete {len(errors)} error record(s), e.g. {errors[0].get('Key')}: "
                                   f"{errors[0].get('Code')} {errors[0].get('Message')}")
