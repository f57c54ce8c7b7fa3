"""POST /explanations/{family}: explain one input now, or start a job when it would not fit.

The decision, per request (``mode=auto``, the default):

1. the input (base64, ``input_text`` as a ``.txt`` file, or an uploaded object) is stored under
   ``requests/<family>/<model>/<version>/api/<client>/<digest>/<file>`` (``client``: a hash of the
   API client's id; ``digest``: of that hash, the bytes and the options: the same request from the
   same client maps to the same key), validated and decoded exactly as the S3 path does; a request
   the same client had explained before is answered from its manifest. Clients never
   share a stored request or its results, so no client learns what another sent;
2. ``estimate`` = the session's cost estimate: the model's pass time measured on this input,
   times each method's registry pass count (x3 with a backward pass), plus a fixed overhead per
   method (:meth:`ExplanationSession.estimate_seconds`);
3. ``available`` = API Gateway's integration timeout (29 s) counted from when API Gateway received
   the request (so a cold start's time is already spent), capped by the Lambda's remaining time,
   minus SYNC_RESERVE_S for writing outputs and presigning links;
4. ``estimate <= available``: explained now (200). Otherwise a job (202): the input is uploaded
   to the family's S3 path ``incoming/<family>/.../jobs/<job id>/<file>`` with the options as
   metadata, so the queue, retries, dead-letter queue and error records of the S3 path apply.

``mode=sync`` refuses instead of starting a job (422 over_time_budget); ``mode=async`` always
starts one. Job creation is idempotent (Powertools idempotency, DynamoDB): the same request from
the same client within IDEMPOTENCY_SECONDS returns the same job (the idempotency key covers the
client id); a job is only ever shown to the client that started it (JobStore.get).
"""

import base64
import binascii
import hashlib
import json
import time

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

from explain_core.api_models import (
    DEFAULT_IMAGE_FILENAME,
    DEFAULT_TEXT_FILENAME,
    MAX_INLINE_INPUT_BYTES,
    ExplanationRequest,
    ExplanationResult,
    JobAccepted,
)
from explain_core.api_responses import Links, explanation_result
from explain_core.errors import (
    ExplainError,
    InputDeletedError,
    MalformedRequestError,
    OverTimeBudgetError,
    RequestTooLargeError,
    UnknownInputError,
)
from explain_core.jobs import JobStore, new_job_id
from explain_core.keys import client_segment
from explain_core.model_store import LoadedModel
from explain_core.request_options import parse_options
from explain_core.session import ExplanationSession, Upload

#: API Gateway's default (and, for most accounts, maximum) integration timeout for REST APIs.
API_GATEWAY_TIMEOUT_S = 29.0
#: Kept for writing the outputs, presigning the links and answering.
SYNC_RESERVE_S = 3.0
#: The same job request within this time returns the same job.
IDEMPOTENCY_SECONDS = 24 * 3600

logger = Logger(child=True)


class ExplanationRequests:
    """The API adapter: one POST /explanations/<family> request through the family's explanation session."""

    def __init__(self, session: ExplanationSession, jobs: JobStore, links: Links, idempotency_table: str):
        self.family = session.family
        self.session = session
        self.settings = session.settings
        self.jobs = jobs
        self.links = links
        self.idempotency = IdempotencyConfig(expires_after_seconds=IDEMPOTENCY_SECONDS)
        persistence = DynamoDBPersistenceLayer(table_name=idempotency_table)
        self.start_job = idempotent_function(
            data_keyword_argument="job_request", persistence_store=persistence, config=self.idempotency
        )(self._start_job)

    def handle(self, request: ExplanationRequest, *, client_id: str, received_at: float,
               context) -> ExplanationResult | JobAccepted:
        """Explain now (returns the result) or start a job (returns its acceptance)."""
        self.idempotency.register_lambda_context(context)
        model, version = request.model.name, request.model.version
        loaded = self.session.load(model, version)
        data, filename = self._input(request, loaded)
        # Checked before anything is stored; stored in canonical form, which S3 metadata can hold
        # (ASCII) and under which equivalent requests share one key.
        options = parse_options(request.options_metadata(), loaded.card, self.family)
        metadata = options.to_metadata()
        # Per client: another client's identical request has its own key and results (never "cached").
        client = client_segment(client_id)
        digest = hashlib.sha256(client.encode() + b"\n" + data + json.dumps(metadata, sort_keys=True).encode())
        digest = digest.hexdigest()[:32]
        key = f"{self.session.keys.request_prefix(self.family)}{model}/{version}/api/{client}/{digest}/{filename}"
        stored = self.session.s3.put_object(Bucket=self.settings.input_bucket, Key=key, Body=data, Metadata=metadata)
        request_id = getattr(context, "aws_request_id", None)
        upload = Upload(request_id or "", self.settings.input_bucket, key, stored["ETag"].strip('"'))
        upload.ref = self.session.keys.parse_input(upload.bucket, key, self.family)
        try:
            self.session.accept(upload, loaded, data, options=options)
            manifest_key = self.session.manifest_key(upload)
            if upload.duplicate:
                return explanation_result(self.session.read_manifest(upload), self.links, manifest_key, cached=True)
            estimate = None
            reason = "mode async was requested"
            if request.mode != "async":
                estimate = self.session.estimate_seconds(upload, loaded)
                available = self._available_seconds(received_at, context)
                logger.info("sync decision", extra={"estimate_s": round(estimate, 2),
                                                    "available_s": round(available, 2)})
                if estimate <= available:
                    manifest = self.session.explain_and_write(upload, loaded, context)
                    return explanation_result(manifest, self.links, manifest_key)
                reason = (f"estimated {estimate:.1f} s, more than the {max(available, 0):.1f} s left of API "
                          f"Gateway's {API_GATEWAY_TIMEOUT_S:.0f} s timeout")
                if request.mode == "sync":
                    raise OverTimeBudgetError(
                        f"{reason}; send mode async (or auto) to run it as a job, or ask for fewer samples",
                        estimated_seconds=round(estimate, 1), available_seconds=round(max(available, 0), 1),
                    )
        except ExplainError as exc:
            self.session.put_error(upload, exc.to_dict(), retrying=False, request_id=request_id)
            raise
        job = self.start_job(
            job_request={"family": self.family, "model": model, "version": version, "filename": filename,
                         "digest": digest, "metadata": metadata, "client_id": client_id},
            data=data, estimate=estimate, reason=reason,
        )
        return JobAccepted(job_id=job["job_id"], status="queued", estimated_seconds=job["estimated_seconds"],
                           reason=job["reason"], status_url=f"/jobs/{job['job_id']}")

    def _start_job(self, job_request: dict, data: bytes, estimate: float | None, reason: str) -> dict:
        """Record the job, then upload its input to the S3 path (the upload's notification starts it)."""
        job_id = new_job_id()
        input_key = self.jobs.input_key(self.family, job_request["model"], job_request["version"], job_id,
                                        job_request["filename"])
        self.jobs.create(job_id=job_id, family=self.family, model=job_request["model"],
                         version=job_request["version"], input_key=input_key, client_id=job_request["client_id"],
                         estimated_seconds=estimate, reason=reason)
        try:
            self.session.s3.put_object(Bucket=self.settings.input_bucket, Key=input_key, Body=data,
                               Metadata={**job_request["metadata"], "job-id": job_id})
        except Exception:
            self.jobs.delete(job_id)  # no job without its input; the idempotency record is released too
            raise
        logger.info("job started", extra={"job_id": job_id, "key": input_key, "estimate_s": estimate})
        return {"job_id": job_id, "estimated_seconds": None if estimate is None else round(estimate, 2),
                "reason": reason}

    def _input(self, request: ExplanationRequest, loaded: LoadedModel) -> tuple[bytes, str]:
        """The input's bytes and file name, size-checked before decoding or reading."""
        if request.input_text is not None:
            # Unpaired surrogates never get here: the schema refuses them (400 malformed_request).
            data = request.input_text.encode("utf-8")
            if len(data) > MAX_INLINE_INPUT_BYTES:  # the bytes stored and explained, not the characters
                raise RequestTooLargeError(
                    f"input_text is limited to {MAX_INLINE_INPUT_BYTES} bytes in UTF-8 ({len(data)} sent); upload "
                    "larger texts with POST /uploads and send their input_key", limit=MAX_INLINE_INPUT_BYTES,
                )
            return data, request.filename or DEFAULT_TEXT_FILENAME
        if request.input_base64 is not None:
            # 4 base64 characters hold 3 bytes: refuse before decoding anything large.
            if len(request.input_base64) > (MAX_INLINE_INPUT_BYTES + 2) // 3 * 4:
                raise RequestTooLargeError(
                    f"inline inputs are limited to {MAX_INLINE_INPUT_BYTES} bytes; upload larger files "
                    "with POST /uploads and send their input_key", limit=MAX_INLINE_INPUT_BYTES,
                )
            try:
                data = base64.b64decode(request.input_base64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise MalformedRequestError(f"input_base64 is not valid base64: {exc}") from exc
            if not data:
                raise MalformedRequestError("input_base64 is empty")
            return data, request.filename or DEFAULT_IMAGE_FILENAME
        uploaded = Upload("", self.settings.input_bucket, request.input_key, None)
        try:
            data, _ = self.session.download(uploaded, loaded)
        except InputDeletedError as exc:
            raise UnknownInputError(f"no uploaded object {request.input_key}; upload it first with the "
                                    "ticket of POST /uploads", input_key=request.input_key) from exc
        return data, request.filename or request.input_key.rsplit("/", 1)[1]

    @staticmethod
    def _available_seconds(received_at: float, context) -> float:
        available = received_at + API_GATEWAY_TIMEOUT_S - time.time()
        if context is not None and hasattr(context, "get_remaining_time_in_millis"):
            available = min(available, context.get_remaining_time_in_millis() / 1000)
        return available - SYNC_RESERVE_S
