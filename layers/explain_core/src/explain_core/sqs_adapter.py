"""The SQS adapter: from an SQS batch of S3 upload notifications to explanations in S3.

One invocation explains the whole batch: uploads are grouped by model, and each group goes
through the explanation session (:mod:`explain_core.session`) together, so that its inputs are
predicted in one batch and each method runs once per group of inputs with the same parameters.
The per-input steps around it (download, checks, lock, rendering, writes) run side by side on the
session's threads, and what the group's inputs share is written once (``ExplanationSession.finish``).

Failure policy (nothing is silently lost, the function never crashes on user data):

- a problem with the upload itself (:class:`ExplainError`: bad image, unknown model, method or
  parameter) writes an error record to ``s3://RESULTS_BUCKET/errors/...`` and the message is
  done: retrying cannot fix it;
- anything else (S3 unavailable, out of memory, ...) also writes an error record, marked
  ``retrying``, and reports the message as a batch item failure: SQS redelivers it and, after
  the queue's maximum receives, moves it to the dead-letter queue;
- a message whose body is not an S3 notification is reported as failed, so it ends in the DLQ;
- on the message's last receive (``MAX_RECEIVE_COUNT``) a transient failure's record says
  ``dead_lettered``: nothing will retry it, and an API job reports ``failed``;
- one input never fails its neighbours: when a batched step fails, each input of the group is
  tried alone, so only the input that causes the failure fails.

A sanity-check request file (``incoming/<family>/<model>/<version>/sanity-checks/<id>.json``) is
not an input to explain: it is routed to :mod:`explain_core.sanity`, one request at a time after the
batch's uploads (a check may take minutes and must not eat their time budget), with
the same error records and retries.

Non-finite numbers never reach a result: NaN or infinite predictions fail the input and NaN or
infinite attributions fail the method, both as ``invalid_model_output`` (in the modalities).
"""

import json
import threading
import time
from collections import defaultdict
from functools import cached_property
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSEvent, SQSRecord

from explain_core.errors import ExplainError, InputChangedError
from explain_core.model_store import LoadedModel
from explain_core.session import ExplanationSession, Upload, WriteBatch, remaining_millis

logger = Logger(child=True)
tracer = Tracer()
metrics = Metrics()


class PoisonMessageError(Exception):
    """An SQS message that is not an S3 event notification."""


class SqsAdapter:
    """Handles a family's SQS events with the family's explanation session."""

    def __init__(self, session: ExplanationSession):
        self.session = session
        self.family = session.family
        self.settings = session.settings
        self._jobs_lock = threading.Lock()

    @tracer.capture_method
    def handle_sqs_event(self, event: dict, context) -> dict:
        """Process an SQS event; returns Lambda's partial batch response."""
        request_id = getattr(context, "aws_request_id", None)
        retry: dict[str, Exception] = {}
        uploads: list[Upload] = []
        for record in SQSEvent(event).records:
            try:
                uploads.extend(self._uploads_in(record))
            except PoisonMessageError as exc:
                logger.error("message is not an S3 event notification", extra={"message_id": record.message_id})
                retry[record.message_id] = exc

        groups: dict[tuple[str, str], list[Upload]] = defaultdict(list)
        sanity_requests: list[Upload] = []
        for upload in uploads:
            try:
                upload.ref = self.session.keys.parse_input(upload.bucket, upload.key, self.family)
                if self.session.keys.is_sanity_request(upload.ref):
                    sanity_requests.append(upload)
                else:
                    groups[(upload.ref.model, upload.ref.version)].append(upload)
            except ExplainError as exc:
                self._fail(upload, exc, retry, request_id)
        for (model, version), group in groups.items():
            try:
                self._explain_group(model, version, group, retry, context)
            except Exception as exc:  # a bug at group level: only this group's inputs fail
                for upload in group:
                    self._fail(upload, exc, retry, request_id)
        # After the uploads: a sanity check may take minutes and must not eat their time budget.
        for upload in sanity_requests:
            try:
                self._run_sanity_check(upload, context)
            except Exception as exc:
                self._fail(upload, exc, retry, request_id)
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

        def report(record: SQSRecord):
            if record.message_id in retry:
                raise retry[record.message_id]

        return process_partial_response(event=event, record_handler=report, processor=processor, context=context)

    def _uploads_in(self, record: SQSRecord) -> list[Upload]:
        try:
            body = json.loads(record.body)
        except (TypeError, json.JSONDecodeError) as exc:
            raise PoisonMessageError("message body is not JSON") from exc
        if not isinstance(body, dict):
            raise PoisonMessageError("message body is not a JSON object")
        if body.get("Event") == "s3:TestEvent":
            logger.info("skipping s3:TestEvent", extra={"bucket": body.get("Bucket")})
            return []
        uploads = []
        try:
            # Powertools' data class rather than its strict parser model: emulators (and some
            # S3-compatible stores) omit fields such as userIdentity that the handler never reads.
            for s3_record in S3Event(body).records:
                if not s3_record.event_name.startswith("ObjectCreated:"):
                    continue
                bucket = s3_record.s3.bucket.name
                s3_object = s3_record.s3.get_object
                key = unquote_plus(s3_object.key)  # S3 URL-encodes keys in notifications
                etag = s3_object.get("eTag")
                if not self.session.keys.is_input(bucket, key, self.family):
                    # Retrigger guard: never process anything but this family's input prefix.
                    logger.warning("ignoring object outside the input prefix", extra={"bucket": bucket, "key": key})
                    metrics.add_metric(name="IgnoredObjects", unit=MetricUnit.Count, value=1)
                    continue
                uploads.append(Upload(
                    record.message_id, bucket, key, etag, version_id=s3_object.get("versionId") or None,
                    order=_event_order(s3_object.get("sequencer"), s3_record.get("eventTime")),
                    receive_count=int(record.attributes.approximate_receive_count or 1),
                ))
        except (KeyError, TypeError, AttributeError) as exc:
            raise PoisonMessageError(f"message body is not an S3 event notification: {exc!r}") from exc
        return uploads

    def _fail(self, upload: Upload, exc: Exception, retry: dict, request_id: str | None) -> None:
        self.session.release(upload, exc)
        user_error = isinstance(exc, ExplainError)
        last_attempt = upload.receive_count >= self.settings.max_receive_count
        delivery = {}
        if user_error:
            logger.warning("input refused", extra={"key": upload.key, "error": exc.to_dict()})
            error = exc.to_dict()
            metrics.add_metric(name="InputErrors", unit=MetricUnit.Count, value=1)
        else:
            logger.exception("explaining failed; the message will be retried" if not last_attempt else
                             "explaining failed on the last attempt; the message goes to the dead-letter queue",
                             extra={"key": upload.key, "attempt": upload.receive_count})
            error = {"type": type(exc).__name__, "code": "internal_error", "message": str(exc)[:2000], "details": {}}
            retry[upload.message_id] = exc
            metrics.add_metric(name="TransientErrors", unit=MetricUnit.Count, value=1)
            delivery = {"attempt": upload.receive_count, "max_attempts": self.settings.max_receive_count,
                        "dead_lettered": last_attempt}
        if isinstance(exc, InputChangedError) and upload.ref is not None and self.session.has_manifest(upload):
            # The newer version's own event explains it (or did): its result must not be shadowed.
            logger.info("superseded input version skipped", extra={"key": upload.key})
            return
        try:
            self.session.put_error(upload, error, retrying=not user_error and not last_attempt,
                                   request_id=request_id, **delivery)
        except Exception as write_error:  # the record must not be lost: let SQS retry it
            logger.exception("could not write the error record", extra={"key": upload.key})
            retry[upload.message_id] = write_error

    @tracer.capture_method
    def _explain_group(self, model: str, version: str, group: list[Upload], retry: dict, context) -> None:
        request_id = getattr(context, "aws_request_id", None)
        try:
            started = time.perf_counter()
            loaded = self.session.load(model, version)
            model_seconds = time.perf_counter() - started
        except Exception as exc:
            for upload in group:
                self._fail(upload, exc, retry, request_id)
            return

        def prepare(upload: Upload) -> bool:
            """Download, check and lock one input (on the session's I/O threads); True when it is to be explained."""
            upload.timings["model_s"] = model_seconds
            data, metadata = self.session.download(upload, loaded)
            self._record_job_attempt(metadata.get("job-id"), upload, context)
            self.session.accept(upload, loaded, data, metadata)
            if upload.duplicate:
                logger.info("duplicate event: results already exist", extra={"key": upload.key})
                self.session.count("DuplicateEvents")
                return False
            return self.session.lock(upload, loaded, context)

        ready = []
        for upload, to_explain, error in self.session.in_parallel(prepare, group):
            if error is not None:
                self._fail(upload, error, retry, request_id)
            elif to_explain:
                ready.append(upload)
        explained = self._explain_isolated(ready, loaded, context, retry, request_id)
        # The inputs' outputs, manifests and pages side by side; what they share (error records, the
        # model's gallery index) once for all of them after.
        batch = WriteBatch()
        written = []
        for (upload, _), _, error in self.session.in_parallel(
                lambda pair: self.session.write(pair[0], loaded, pair[1], request_id, batch), explained):
            if error is not None:
                self._fail(upload, error, retry, request_id)
            else:
                written.append(upload)
        try:
            self.session.finish(batch)
        except Exception as exc:  # the stale error records stay: the inputs are retried, as one would be alone
            for upload in written:
                self._fail(upload, exc, retry, request_id)

    @tracer.capture_method
    def _run_sanity_check(self, upload: Upload, context) -> None:
        report = self.sanity.handle(upload, context)
        if report is None:
            logger.info("duplicate sanity-check request: its report exists", extra={"key": upload.key})
            metrics.add_metric(name="DuplicateEvents", unit=MetricUnit.Count, value=1)
            return
        logger.info("sanity check", extra={"key": upload.key, "status": report.status, "seconds": report.seconds,
                                           "verdicts": {m.name: m.verdict for m in report.methods}})
        metrics.add_metric(name="SanityChecks", unit=MetricUnit.Count, value=1)

    @cached_property
    def sanity(self):
        from explain_core.sanity import SanityChecks

        return SanityChecks(self.session)

    def _explain_isolated(self, uploads: list[Upload], loaded: LoadedModel, context, retry: dict, request_id):
        """(upload, explained) per input explained. When the batch fails, each input is explained
        alone, so that only the input that causes the failure fails (a modality that does not explain
        in batches gets one input at a time from the start)."""
        if not uploads:
            return []
        if len(uploads) > 1 and not loaded.modality.explains_in_batches:
            return [done for upload in uploads
                    for done in self._explain_isolated([upload], loaded, context, retry, request_id)]
        try:
            return list(zip(uploads, self.session.explain(uploads, loaded, context), strict=True))
        except Exception as exc:
            if len(uploads) == 1:
                self._fail(uploads[0], exc, retry, request_id)
                return []
            logger.warning("a batch failed; explaining its inputs one by one",
                           extra={"inputs": len(uploads), "error": repr(exc)[:500]})
        return [done for upload in uploads
                for done in self._explain_isolated([upload], loaded, context, retry, request_id)]

    def _record_job_attempt(self, job_id: str | None, upload: Upload, context) -> None:
        """An API job's input: its record says when this attempt started and when it must have ended
        (the job status reports a killed attempt as failed)."""
        if not job_id or not self.settings.jobs_table:
            return
        now = time.time()
        try:
            with self._jobs_lock:  # inputs are prepared on several threads; a boto3 resource is not thread-safe
                self.jobs.record_attempt(job_id, attempt=upload.receive_count,
                                         max_attempts=self.settings.max_receive_count, started_at=now,
                                         deadline=now + remaining_millis(context) / 1000)
        except Exception:  # the status is best effort; the explanation is not
            logger.exception("could not record the job's attempt", extra={"job_id": job_id})

    @cached_property
    def jobs(self):
        from explain_core.jobs import JobStore

        return JobStore(self.settings)


def _event_order(sequencer: str | None, event_time: str | None) -> str | None:
    """SOURCE_ORDER of an S3 event: its sequencer (hex, compared after left-padding, as S3 documents),
    else its ISO event time. Events of one key order its versions."""
    if sequencer:
        return "s:" + sequencer.upper().zfill(32)
    return f"t:{event_time}" if event_time else None
