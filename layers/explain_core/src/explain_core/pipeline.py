"""From an SQS batch of S3 upload notifications to explanations in S3.

One invocation explains the whole batch: uploads are grouped by model, predicted in one
batch tensor, and each method runs once per group of uploads with the same parameters.

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

Consistency (S3 and SQS deliver at least once): the object read is the version the event names
(its versionId, else If-Match on its ETag; a deleted or replaced object is a final
``input_deleted`` / ``input_changed``), one attempt at a time explains an input
(:mod:`explain_core.input_lock`), outputs go under a per-attempt prefix, and the manifest is
written last by compare-and-swap, never over a newer version's (:mod:`explain_core.results`).
Non-finite numbers never reach a result: NaN or infinite predictions fail the input and NaN or
infinite attributions fail the method, both as ``invalid_model_output``.
"""

import hashlib
import json
import platform
import time
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import metadata as importlib_metadata
from urllib.parse import unquote_plus

import numpy as np
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSEvent, SQSRecord
from botocore.exceptions import ClientError

from explain_core import __version__
from explain_core.attribution import (
    ExplainerCache,
    class_scores,
    forward_seconds_per_image,
    probabilities,
    raw_outputs,
    run_method,
    to_model_input,
)
from explain_core.errors import (
    ExplainError,
    ImageTooLargeError,
    InputChangedError,
    InputDeletedError,
    InvalidModelOutputError,
    OverTimeBudgetError,
    RequestInProgressError,
    TableTooLargeError,
    is_missing_object,
    is_precondition_failed,
)
from explain_core.images import DecodedImage, decode_image
from explain_core.input_lock import InputIdentity, InputLock, LockOutcome
from explain_core.keys import InputRef, KeyLayout, class_label, new_attempt_id
from explain_core.model_store import LoadedModel, ModelStore
from explain_core.registry import SHAP, MethodSpec
from explain_core.rendering import npy_bytes, overlay_png
from explain_core.request_options import RequestOptions, parse_options
from explain_core.results import REQUEST_FINGERPRINT, SOURCE_ETAG, SOURCE_ORDER, ResultWriter, now_iso, strict_json
from explain_core.settings import Settings
from explain_core.shap_methods import output_kind
from explain_core.tables import Table, parse_table
from explain_core.tabular_report import TabularExplanation, report_files
from explain_core.tabular_report import summary as tabular_summary

#: A pass with a backward pass (gradient methods) costs about three forward passes.
GRADIENT_PASS_COST = 3.0
#: Seconds kept in reserve at the end of an invocation for writing results.
TIME_RESERVE_S = 20.0
#: Per method, on top of its model passes: building the explainer, tracing, rendering outputs.
METHOD_OVERHEAD_S = 1.0
#: Copies of an input timed together to measure a batched model pass.
TIMING_BATCH = 16

logger = Logger(child=True)
tracer = Tracer()
metrics = Metrics()


class PoisonMessageError(Exception):
    """An SQS message that is not an S3 event notification."""


@dataclass
class Upload:
    """One uploaded object from one SQS message, as it moves through the pipeline."""

    message_id: str
    bucket: str
    key: str
    etag: str | None
    #: The S3 version the event names (versioned buckets only).
    version_id: str | None = None
    #: Orders versions of this key (results.SOURCE_ORDER): the event's sequencer, else its time.
    order: str | None = None
    #: SQS ApproximateReceiveCount of the message: 1 on the first delivery.
    receive_count: int = 1
    ref: InputRef | None = None
    image: DecodedImage | None = None
    table: Table | None = None
    options: RequestOptions | None = None
    timings: dict = field(default_factory=dict)
    duplicate: bool = False
    #: Outputs of this attempt go under results/.../attempts/<attempt>/.
    attempt: str = field(default_factory=new_attempt_id)
    #: Set while this invocation holds the input's lock.
    identity: InputIdentity | None = None


@cache
def library_versions() -> dict:
    versions = {"python": platform.python_version(), "explain_core": __version__}
    for package in ("tensorflow-cpu", "keras", "xplique", "shap", "xgboost-cpu", "numpy", "aws-lambda-powertools"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = None
    return versions


class ExplanationPipeline:
    def __init__(self, family: str, settings: Settings, s3_client, batch_size: int = 64):
        self.family = family
        self.settings = settings
        self.s3 = s3_client
        self.keys = KeyLayout(settings)
        self.store = ModelStore(s3_client, settings, with_background=family == SHAP)
        self.writer = ResultWriter(s3_client, settings)
        self.explainers = ExplainerCache()
        self.batch_size = batch_size
        self.lock = InputLock(settings.idempotency_table, family) if settings.idempotency_table else None

    @classmethod
    def from_environment(cls, family: str) -> "ExplanationPipeline":
        import boto3
        from botocore.config import Config

        s3 = boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 5}))
        return cls(family, Settings.from_env(), s3)

    # ----------------------------------------------------------------- event handling
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
        for upload in uploads:
            try:
                upload.ref = self.keys.parse_input(upload.bucket, upload.key, self.family)
                groups[(upload.ref.model, upload.ref.version)].append(upload)
            except ExplainError as exc:
                self._fail(upload, exc, retry, request_id)
        for (model, version), group in groups.items():
            try:
                self._explain_group(model, version, group, retry, context)
            except Exception as exc:  # a bug at group level: only this group's inputs fail
                for upload in group:
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
                if not self.keys.is_input(bucket, key, self.family):
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
        self._release(upload, exc)
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
        if isinstance(exc, InputChangedError) and self.writer.manifest_metadata(self._manifest_key(upload)):
            # The newer version's own event explains it (or did): its result must not be shadowed.
            logger.info("superseded input version skipped", extra={"key": upload.key})
            return
        try:
            self.writer.put_error(
                bucket=upload.bucket, key=upload.key, etag=upload.etag, family=self.family,
                error=error, retrying=not user_error and not last_attempt, request_id=request_id, **delivery,
            )
        except Exception as write_error:  # the record must not be lost: let SQS retry it
            logger.exception("could not write the error record", extra={"key": upload.key})
            retry[upload.message_id] = write_error

    # ----------------------------------------------------------------- explaining
    @tracer.capture_method
    def _explain_group(self, model: str, version: str, group: list[Upload], retry: dict, context) -> None:
        request_id = getattr(context, "aws_request_id", None)
        try:
            started = time.perf_counter()
            loaded = self.store.get(model, version)
            self.explainers.retain(self.store.models_in_memory())
            model_seconds = time.perf_counter() - started
        except Exception as exc:
            for upload in group:
                self._fail(upload, exc, retry, request_id)
            return
        ready = []
        for upload in group:
            try:
                upload.timings["model_s"] = model_seconds
                self._prepare(upload, loaded, context)
                if upload.duplicate:
                    logger.info("duplicate event: results already exist", extra={"key": upload.key})
                    metrics.add_metric(name="DuplicateEvents", unit=MetricUnit.Count, value=1)
                elif self._lock(upload, loaded, context):
                    ready.append(upload)
            except Exception as exc:
                self._fail(upload, exc, retry, request_id)
        for upload, (objects, manifest) in self._explain_isolated(ready, loaded, context, retry, request_id):
            try:
                self._write(upload, loaded, objects, manifest, request_id)
            except Exception as exc:
                self._fail(upload, exc, retry, request_id)

    def _explain_isolated(self, uploads: list[Upload], loaded: LoadedModel, context, retry: dict,
                          request_id) -> list[tuple[Upload, tuple[list, dict]]]:
        """(upload, (objects, manifest)) per input explained. When the batch fails, each input is
        explained alone, so that only the input that causes the failure fails."""
        if not uploads:
            return []
        try:
            return list(zip(uploads, self._explain_batch(uploads, loaded, context), strict=True))
        except Exception as exc:
            if len(uploads) == 1:
                self._fail(uploads[0], exc, retry, request_id)
                return []
            logger.warning("a batch failed; explaining its inputs one by one",
                           extra={"inputs": len(uploads), "error": repr(exc)[:500]})
        return [done for upload in uploads
                for done in self._explain_isolated([upload], loaded, context, retry, request_id)]

    def _explain_batch(self, uploads: list[Upload], loaded: LoadedModel, context) -> list[tuple[list, dict]]:
        if loaded.card.modality == "tabular":
            return [self._explain_table(upload, loaded, context) for upload in uploads]
        return self._explain(uploads, loaded, context)

    def _prepare(self, upload: Upload, loaded: LoadedModel, context) -> None:
        data, metadata = self._download(upload, loaded)
        self._record_job_attempt(metadata.get("job-id"), upload, context)
        self.accept(upload, loaded, data, metadata)

    def _download(self, upload: Upload, loaded: LoadedModel) -> tuple[bytes, dict]:
        """The bytes and user metadata of the version the event names; the size is checked before the body is read."""
        started = time.perf_counter()
        tabular = loaded.card.modality == "tabular"
        # The event's version: its versionId in a versioned bucket, else its ETag (If-Match).
        version = {"VersionId": upload.version_id} if upload.version_id else (
            {"IfMatch": upload.etag} if upload.etag else {})
        try:
            response = self.s3.get_object(Bucket=upload.bucket, Key=upload.key, **version)
        except ClientError as exc:
            if is_missing_object(exc):
                raise InputDeletedError(
                    f"s3://{upload.bucket}/{upload.key} was deleted after its upload event (nothing to explain)",
                    key=upload.key, etag=upload.etag, version_id=upload.version_id,
                ) from exc
            if is_precondition_failed(exc):
                raise InputChangedError(
                    f"s3://{upload.bucket}/{upload.key} was replaced after its upload event (ETag {upload.etag} is "
                    "gone); the new version's own event explains it",
                    key=upload.key, etag=upload.etag,
                ) from exc
            raise
        size = response["ContentLength"]
        limit = self.settings.max_table_bytes if tabular else self.settings.max_image_bytes
        if size > limit:
            response["Body"].close()
            error = TableTooLargeError if tabular else ImageTooLargeError
            raise error(f"the object is {size} bytes; the limit is {limit}", size=size, limit=limit)
        data = response["Body"].read()
        upload.etag = response["ETag"].strip('"')
        upload.version_id = response.get("VersionId") if upload.version_id else None
        upload.timings["download_s"] = time.perf_counter() - started
        return data, response.get("Metadata", {})

    def _record_job_attempt(self, job_id: str | None, upload: Upload, context) -> None:
        """An API job's input: its record says when this attempt started and when it must have ended
        (the job status reports a killed attempt as failed)."""
        if not job_id or not self.settings.jobs_table:
            return
        now = time.time()
        try:
            self.jobs.record_attempt(job_id, attempt=upload.receive_count,
                                     max_attempts=self.settings.max_receive_count, started_at=now,
                                     deadline=now + _remaining_millis(context) / 1000)
        except Exception:  # the status is best effort; the explanation is not
            logger.exception("could not record the job's attempt", extra={"job_id": job_id})

    @cached_property
    def jobs(self):
        from explain_core.jobs import JobStore

        return JobStore(self.settings)

    def _lock(self, upload: Upload, loaded: LoadedModel, context) -> bool:
        """Hold the input's lock; False when another invocation is explaining it or has explained it."""
        if self.lock is None:
            return True
        identity = InputIdentity(upload.bucket, upload.key, upload.version_id or upload.etag or "",
                                 self._fingerprint(upload, loaded))
        outcome = self.lock.acquire(identity, _remaining_millis(context))
        if outcome is LockOutcome.ACQUIRED:
            upload.identity = identity
            return True
        logger.info("input held by another invocation", extra={"key": upload.key, "lock": outcome.value})
        metrics.add_metric(name="InputsHeldElsewhere", unit=MetricUnit.Count, value=1)
        return False

    def _release(self, upload: Upload, error: Exception) -> None:
        if upload.identity is not None:
            self.lock.release(upload.identity, error)
            upload.identity = None

    def _manifest_key(self, upload: Upload) -> str:
        return self.keys.manifest_key(upload.ref)

    def accept(self, upload: Upload, loaded: LoadedModel, data: bytes, metadata: dict) -> None:
        """Parse the request options, recognise a duplicate, decode the image or parse the table."""
        upload.options = parse_options(metadata, loaded.card, self.family)
        existing = self.writer.manifest_metadata(self.keys.manifest_key(upload.ref))
        if existing and existing.get(SOURCE_ETAG) == upload.etag and existing.get(
            REQUEST_FINGERPRINT
        ) == self._fingerprint(upload, loaded):
            upload.duplicate = True
            return

        started = time.perf_counter()
        if loaded.card.modality == "tabular":
            upload.table = parse_table(data, upload.ref.name, loaded.feature_names, feature_count=loaded.feature_count,
                                       max_bytes=self.settings.max_table_bytes, max_rows=self.settings.max_table_rows)
        else:
            upload.image = decode_image(
                data, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels
            )
        upload.timings["decode_s"] = time.perf_counter() - started

    # ----------------------------------------------------------------- one input, now (the API)
    def estimate_seconds(self, upload: Upload, loaded: LoadedModel) -> float:
        """Predicted seconds to explain one accepted input with every requested method.

        The model's per-input pass time is measured on a batch of copies of the input (methods run
        batched), each method's cost is its registry pass count times that time (times three with a
        backward pass), plus METHOD_OVERHEAD_S per method for building the explainer and the outputs.
        """
        card, options = loaded.card, upload.options
        if card.modality == "tabular":
            table = upload.table
            raw_outputs(loaded.model, table.values[: self.batch_size], card, self.batch_size)  # may trace
            row_seconds = self._row_seconds(loaded, table.values)
            classes = self._table_classes(upload, card)
            seconds = sum(
                self._method_seconds(spec, params, *self._table_passes(spec, loaded, table, classes, row_seconds),
                                     card)
                for spec, params in options.methods
            )
        else:
            inputs = to_model_input([upload.image.pixels] * min(self.batch_size, TIMING_BATCH), card)
            loaded.model.predict_on_batch(inputs)  # the first call may trace
            pass_seconds = forward_seconds_per_image(loaded.model, inputs, self.batch_size)
            classes = 1 if options.target is not None else options.top_k
            seconds = sum(self._method_seconds(spec, params, classes, pass_seconds, card)
                          for spec, params in options.methods)
        return seconds + METHOD_OVERHEAD_S * len(options.methods)

    def explain_and_write(self, upload: Upload, loaded: LoadedModel, context) -> dict:
        """Explain one accepted input and write its outputs; returns the manifest. Errors propagate."""
        if not self._lock(upload, loaded, context):
            raise RequestInProgressError("the same input is being explained by another request; retry shortly")
        try:
            (objects, manifest), = self._explain_batch([upload], loaded, context)
            self._write(upload, loaded, objects, manifest, getattr(context, "aws_request_id", None))
        except Exception as exc:
            self._release(upload, exc)
            raise
        return manifest

    @staticmethod
    def _fingerprint(upload: Upload, loaded: LoadedModel) -> str:
        # Everything the results depend on: the request, the model, its card and its SHAP background.
        model = hashlib.sha256(f"{loaded.model_etag}/{loaded.card_etag}/{loaded.background_etag}".encode())
        return f"{upload.options.fingerprint}-{model.hexdigest()[:16]}"

    @tracer.capture_method
    def _explain(self, uploads: list[Upload], loaded: LoadedModel, context) -> list[tuple[list, dict]]:
        """Predict and run every requested method; returns (objects to write, manifest) per upload."""
        card = loaded.card
        inputs = to_model_input([u.image.pixels for u in uploads], card)
        started = time.perf_counter()
        scores = class_scores(loaded.model, inputs, card, self.batch_size)
        predict_seconds = time.perf_counter() - started
        # A NaN row fails the batch; explained one by one, only the inputs with NaN predictions fail.
        for upload, row in zip(uploads, scores, strict=True):
            _check_finite(row, f"the model's predictions for {upload.key}", key=upload.key)
        pass_seconds = forward_seconds_per_image(loaded.model, inputs, self.batch_size)

        targets = [u.options.classes_to_explain(scores[i]) for i, u in enumerate(uploads)]
        # Rows are (upload index, class): a method runs once over all rows sharing its parameters.
        jobs: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
        for i, upload in enumerate(uploads):
            for spec, params in upload.options.methods:
                for cls in targets[i]:
                    jobs[(spec.name, json.dumps(params, sort_keys=True))].append((i, cls))
        specs = {spec.name: spec for u in uploads for spec, _ in u.options.methods}

        method_results: dict[tuple, dict] = {}
        for (name, params_json), rows in jobs.items():
            spec, params = specs[name], json.loads(params_json)
            batch_inputs = inputs[[i for i, _ in rows]]
            one_hot = np.zeros((len(rows), len(card.class_names)), dtype=np.float32)
            one_hot[np.arange(len(rows)), [cls for _, cls in rows]] = 1.0
            try:
                self._check_time_budget(spec, params, len(rows), pass_seconds, card, context)
                explainer = self.explainers.get(spec, loaded.model, card, params, self.batch_size, loaded.background)
                result = run_method(explainer, batch_inputs, one_hot)
                metrics.add_metric(name=f"{name}Seconds", unit=MetricUnit.Seconds, value=result.seconds)
                for row, (i, cls) in enumerate(rows):
                    problem = _non_finite_attributions(result, row, name, card.class_name(cls))
                    if problem is not None:
                        method_results[(i, name, params_json, cls)] = {"error": self._method_error(problem, name,
                                                                                                    card)}
                        continue
                    method_results[(i, name, params_json, cls)] = {
                        "attributions": result.attributions[row],
                        "heatmap": result.heatmaps[row],
                        "seconds": result.seconds,
                        "rows": len(rows),
                        "base_value": None if result.base_values is None else float(result.base_values[row]),
                    }
            except Exception as exc:  # a method failing on this model must not sink the others
                error = self._method_error(exc, name, card)
                for i, cls in rows:
                    method_results[(i, name, params_json, cls)] = {"error": error}

        return [
            self._outputs_for(i, upload, loaded, scores[i], targets[i], method_results, predict_seconds, len(uploads))
            for i, upload in enumerate(uploads)
        ]

    def _outputs_for(self, i, upload, loaded, scores, classes, method_results, predict_seconds, batch_rows):
        card, ref = loaded.card, upload.ref
        ranked = np.argsort(-scores, kind="stable")[: card.top_k]

        def described(cls: int) -> dict:
            return {"class_index": int(cls), "class_name": card.class_name(int(cls)), "score": float(scores[cls])}

        objects, methods = [], []
        for spec, params in upload.options.methods:
            entry = self._method_entry(spec, params, card)
            for cls in classes:
                found = method_results[(i, spec.name, json.dumps(params, sort_keys=True), cls)]
                if "error" in found:
                    entry["status"] = "failed"
                    entry["error"] = found["error"]
                    continue
                label = class_label(cls, card.class_names)
                heatmap_key = self.keys.output_key(ref, upload.attempt, spec.name, label, "png")
                array_key = self.keys.output_key(ref, upload.attempt, spec.name, label, "npy")
                objects.append((heatmap_key, overlay_png(
                    upload.image.pixels, found["heatmap"], max_side=self.settings.max_overlay_side
                ), "image/png"))
                objects.append((array_key, npy_bytes(found["attributions"]), "application/octet-stream"))
                entry["seconds"] = round(found["seconds"], 4)  # the whole batch
                entry["seconds_per_image"] = round(found["seconds"] / found["rows"], 4)
                entry["batch_rows"] = found["rows"]
                output = {
                    **described(cls),
                    "heatmap": heatmap_key,
                    "attributions": array_key,
                    "attributions_shape": list(found["attributions"].shape),
                }
                if found["base_value"] is not None:
                    # SHAP: the attributions sum to the class's output minus this expected value.
                    output["base_value"] = found["base_value"]
                    output["output_kind"] = output_kind(card)
                entry["outputs"].append(output)
            methods.append(entry)

        manifest = self._manifest(
            upload, loaded, methods,
            input_description=upload.image.description(),
            predictions=[described(c) for c in ranked],
            explained_classes=[described(c) for c in classes],
            timings={"predict_s": round(predict_seconds, 4), "batch_images": batch_rows},
        )
        return objects, manifest

    def _manifest(self, upload: Upload, loaded: LoadedModel, methods: list[dict], *, input_description: dict,
                  predictions, explained_classes: list[dict], timings: dict) -> dict:
        card = loaded.card
        failed = sum(m["status"] == "failed" for m in methods)
        return {
            "status": "succeeded" if not failed else ("failed" if failed == len(methods) else "partial"),
            "family": self.family,
            "input": {"bucket": upload.bucket, "key": upload.key, "etag": upload.etag,
                      **({"version_id": upload.version_id} if upload.version_id else {}), **input_description},
            "model": {
                "name": loaded.name, "version": loaded.version, "etag": loaded.model_etag,
                "card_etag": loaded.card_etag, "modality": card.modality, "framework": card.framework,
                **({"input_size": [card.input_height, card.input_width]} if card.modality == "image"
                   else {"features": loaded.feature_count}),
                "loaded_from": loaded.source,
            },
            "predictions": predictions,
            "explained_classes": explained_classes,
            "methods": methods,
            **({"background": self._background_description(loaded)} if self.family == SHAP else {}),
            "timings": {**{k: round(v, 4) for k, v in upload.timings.items()}, **timings},
            "versions": library_versions(),
            "results_prefix": self.keys.results_base(upload.ref),
            "attempt": upload.attempt,
        }

    def _tabular_files(self, upload: Upload, explanation: TabularExplanation, card) -> tuple[list, dict]:
        """One method's outputs for one class: values CSV, plots and summary JSON; and its manifest entry."""
        label = class_label(explanation.class_index, card.class_names)
        summary = tabular_summary(explanation)
        files = [(self.keys.output_key(upload.ref, upload.attempt, explanation.method, label, f.name), f.body,
                  f.content_type) for f in report_files(explanation)]
        summary_key = self.keys.output_key(upload.ref, upload.attempt, explanation.method, label, "summary.json")
        entry = {
            "output_kind": explanation.output_kind,
            "base_value": summary["base_value"],
            "additivity_max_error": summary["additivity"]["max_abs_error"],
            "summary": summary_key,
            "files": [key for key, _, _ in files],
        }
        return [*files, (summary_key, strict_json(summary), "application/json")], entry

    @staticmethod
    def _background_description(loaded: LoadedModel) -> dict:
        """Where the SHAP background came from (see explain_core.shap_methods for the defaults)."""
        if loaded.background is not None:
            return {"source": "background.npy", "rows": len(loaded.background), "etag": loaded.background_etag}
        if loaded.card.modality == "image":
            return {"source": "default", "description": "flat grey images at levels 0, 64, 128, 192, 255"}
        return {"source": "default", "description": "the uploaded rows (at most 64)"}

    @tracer.capture_method
    def _explain_table(self, upload: Upload, loaded: LoadedModel, context) -> tuple[list, dict]:
        """Every requested method on one tabular upload; values CSV, summary JSON and plots per class."""
        card, table = loaded.card, upload.table
        started = time.perf_counter()
        outputs = raw_outputs(loaded.model, table.values, card, self.batch_size)
        predict_seconds = time.perf_counter() - started
        bad_rows = ~np.all(np.isfinite(outputs), axis=1)
        if bad_rows.any():
            lines = [int(table.line_numbers[i]) for i in np.flatnonzero(bad_rows)[:20]]
            raise InvalidModelOutputError(
                f"the model's outputs for {upload.key} are NaN or infinite on {int(bad_rows.sum())} row(s) "
                f"(lines {', '.join(map(str, lines))})", key=upload.key, lines=lines,
            )
        predicted = np.argmax(probabilities(outputs, card), axis=1)
        classes = self._table_classes(upload, card)
        row_seconds = self._row_seconds(loaded, table.values)  # the call above warmed the model

        def described(cls: int) -> dict:
            return {"class_index": int(cls), "class_name": card.class_name(int(cls))}

        objects, methods = [], []
        for spec, params in upload.options.methods:
            entry = self._method_entry(spec, params, card)
            try:
                self._check_time_budget(spec, params, *self._table_passes(spec, loaded, table, classes, row_seconds),
                                        card, context)
                explainer = self.explainers.get(spec, loaded.model, card, params, self.batch_size, loaded.background)
                seconds = 0.0
                for cls in classes:
                    targets = np.zeros((len(table.values), len(card.class_names)), dtype=np.float32)
                    targets[:, cls] = 1.0
                    method_started = time.perf_counter()
                    values = explainer.explain(table.values, targets)
                    seconds += time.perf_counter() - method_started
                    _check_finite(values, f"{spec.name}'s values for class {card.class_name(cls)}",
                                  method=spec.name, class_name=card.class_name(cls))
                    _check_finite(explainer.base_values, f"{spec.name}'s base value for class "
                                  f"{card.class_name(cls)}", method=spec.name, class_name=card.class_name(cls))
                    explanation = TabularExplanation(
                        method=spec.name, class_index=cls, class_name=card.class_name(cls),
                        output_kind=output_kind(card), feature_names=table.feature_names, data=table.values,
                        values=values, base_values=explainer.base_values, model_output=outputs[:, cls],
                        line_numbers=table.line_numbers, predicted=[card.class_name(int(p)) for p in predicted],
                    )
                    files, output = self._tabular_files(upload, explanation, card)
                    objects += files
                    entry["outputs"].append({**described(cls), **output})
                entry["seconds"] = round(seconds, 4)
                metrics.add_metric(name=f"{spec.name}Seconds", unit=MetricUnit.Seconds, value=seconds)
            except Exception as exc:  # a method failing on this model must not sink the others
                entry["status"] = "failed"
                entry["error"] = self._method_error(exc, spec.name, card)
            methods.append(entry)

        counts = np.bincount(predicted, minlength=len(card.class_names))
        manifest = self._manifest(
            upload, loaded, methods,
            input_description={"format": table.format, "rows": len(table.values), "columns": len(table.feature_names),
                               "feature_names_from": "model" if loaded.feature_names else "upload"},
            predictions={"rows_per_class": {card.class_name(i): int(n) for i, n in enumerate(counts)}},
            explained_classes=[described(c) for c in classes],
            timings={"predict_s": round(predict_seconds, 4), "rows": len(table.values)},
        )
        return objects, manifest

    @staticmethod
    def _method_error(exc: Exception, method: str, card) -> dict:
        """The manifest's error entry of a failed method; a typed error is logged without a trace."""
        if isinstance(exc, ExplainError):
            logger.warning("method refused", extra={"method": method, "model": card.name, "error": exc.to_dict()})
            return exc.to_dict()
        logger.exception("method failed", extra={"method": method, "model": card.name})
        return {"type": type(exc).__name__, "code": "method_failed", "message": str(exc)[:2000]}

    @staticmethod
    def _table_classes(upload: Upload, card) -> list[int]:
        """The classes a tabular upload explains: its target, else the card's."""
        return [upload.options.target] if upload.options.target is not None else card.default_explained_classes()

    def _row_seconds(self, loaded: LoadedModel, values: np.ndarray) -> float:
        """Warm model time per table row (call after the model has run once: the first call may trace)."""
        sample = values[: self.batch_size]
        started = time.perf_counter()
        raw_outputs(loaded.model, sample, loaded.card, self.batch_size)
        return (time.perf_counter() - started) / len(sample)

    @staticmethod
    def _table_passes(spec: MethodSpec, loaded: LoadedModel, table: Table, classes: list[int],
                      row_seconds: float) -> tuple[int, float]:
        """(rows, seconds per pass) of a method on a table, for :meth:`_method_seconds`: each explained
        class is a pass over the rows, and Kernel SHAP evaluates every background row per pass."""
        background_rows = len(loaded.background) if loaded.background is not None else len(table.values)
        evaluations = background_rows if spec.passes_per_background_row else 1
        return len(table.values) * len(classes), row_seconds * evaluations

    @staticmethod
    def _method_seconds(spec: MethodSpec, params: dict, rows: int, pass_seconds: float, card) -> float:
        """Registry cost of a method on ``rows`` inputs at ``pass_seconds`` per model pass."""
        passes = spec.passes(params, (card.input_height, card.input_width))
        return passes * rows * pass_seconds * (GRADIENT_PASS_COST if spec.backward else 1.0)

    @classmethod
    def _check_time_budget(cls, spec: MethodSpec, params: dict, rows: int, pass_seconds: float, card,
                           context) -> None:
        """Refuse a method that would outlast the invocation: a timeout would fail the whole batch."""
        if context is None or not hasattr(context, "get_remaining_time_in_millis"):
            return
        estimate = cls._method_seconds(spec, params, rows, pass_seconds, card)
        available = context.get_remaining_time_in_millis() / 1000 - TIME_RESERVE_S
        if estimate > available:
            passes = spec.passes(params, (card.input_height, card.input_width))
            raise OverTimeBudgetError(
                f"{spec.name} needs about {estimate:.0f} s for {rows} input(s) ({passes} model passes each at "
                f"{pass_seconds * 1000:.1f} ms) but the invocation has {max(0.0, available):.0f} s left; "
                "use fewer samples or upload fewer images at once",
                method=spec.name, estimated_seconds=round(estimate, 1), available_seconds=round(available, 1),
            )

    @staticmethod
    def _method_entry(spec: MethodSpec, params: dict, card) -> dict:
        return {
            "name": spec.name,
            "params": params,
            "passes_per_image": spec.passes(params, (card.input_height, card.input_width)),
            "reference": spec.reference,
            "status": "succeeded",
            "outputs": [],
        }

    def _write(self, upload: Upload, loaded: LoadedModel, objects: list, manifest: dict, request_id) -> None:
        started = time.perf_counter()
        self.writer.put_many(objects)
        manifest["request_id"] = request_id
        manifest["created_at"] = now_iso()
        manifest["timings"]["write_s"] = round(time.perf_counter() - started, 4)
        manifest["output_keys"] = [key for key, _, _ in objects]
        manifest_key = self._manifest_key(upload)
        metadata = {SOURCE_ETAG: upload.etag, REQUEST_FINGERPRINT: self._fingerprint(upload, loaded)}
        if upload.order:
            metadata[SOURCE_ORDER] = upload.order
        # The manifest goes last: its presence means every output it lists is in place.
        try:
            replaced = self.writer.put_manifest(manifest_key, manifest, metadata)
        except InputChangedError:
            self.writer.delete_many(manifest["output_keys"])  # a newer version's manifest stands
            raise
        self.writer.delete_many(replaced)  # the outputs of the attempt whose manifest this replaced
        self.writer.delete_error(upload.key)
        if upload.identity is not None:
            self.lock.complete(upload.identity, manifest_key)
            upload.identity = None
        metrics.add_metric(name="ImagesExplained", unit=MetricUnit.Count, value=1)
        logger.info("explained", extra={"key": upload.key, "status": manifest["status"], "outputs": len(objects)})


def _event_order(sequencer: str | None, event_time: str | None) -> str | None:
    """SOURCE_ORDER of an S3 event: its sequencer (hex, compared after left-padding, as S3 documents),
    else its ISO event time. Events of one key order its versions."""
    if sequencer:
        return "s:" + sequencer.upper().zfill(32)
    return f"t:{event_time}" if event_time else None


def _remaining_millis(context) -> int:
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        return int(context.get_remaining_time_in_millis())
    return 900_000  # Lambda's maximum timeout


def _check_finite(values, what: str, **details) -> None:
    """Raise InvalidModelOutputError naming ``what`` when ``values`` hold NaN or infinity."""
    array = np.asarray(values, dtype=np.float64) if values is not None else np.zeros(0)
    if not np.all(np.isfinite(array)):
        nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
        raise InvalidModelOutputError(f"{what} contain {nan} NaN and {inf} infinite value(s)", nan=nan,
                                      infinite=inf, **details)


def _non_finite_attributions(result, row: int, method: str, class_name: str) -> InvalidModelOutputError | None:
    """The error of one explained row whose attributions, heatmap or base value are not finite."""
    parts = [result.attributions[row], result.heatmaps[row]]
    if result.base_values is not None:
        parts.append(result.base_values[row])
    try:
        for part in parts:
            _check_finite(part, f"{method}'s attributions for class {class_name}", method=method,
                          class_name=class_name)
    except InvalidModelOutputError as exc:
        return exc
    return None
