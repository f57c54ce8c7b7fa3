"""The explanation session: the one public API every entry point uses to explain an input.

Both adapters drive it with the same steps: the SQS adapter (:mod:`explain_core.sqs_adapter`,
S3 uploads) and the API adapter (:mod:`explain_core.explanation_requests`, POST
/explanations/<family>)::

    loaded = session.load(model, version)                # model + card (+ SHAP background), cached
    data, metadata = session.download(upload, loaded)    # the event's version, size-checked first
    session.accept(upload, loaded, data, metadata)       # options, duplicate check, decoding
    session.lock(upload, loaded, context)                # one attempt at a time per input
    seconds = session.estimate_seconds(upload, loaded)   # the API's sync-or-job decision
    explained = session.explain(uploads, loaded, context)
    manifest = session.write(upload, loaded, explained[0], request_id)

What differs between images and tables lives in their modality plug-in
(:mod:`explain_core.modalities`); what differs between Keras and XGBoost in the framework
handler (:mod:`explain_core.frameworks`). The session holds neither branch.

Consistency (S3 and SQS deliver at least once): the object read is the version the event names
(its versionId, else If-Match on its ETag; a deleted or replaced object is a final
``input_deleted`` / ``input_changed``), one attempt at a time explains an input
(:mod:`explain_core.input_lock`), outputs go under a per-attempt prefix, and the manifest is
written last by compare-and-swap, never over a newer version's (:mod:`explain_core.results`).

Inputs of one batch are downloaded, checked, rendered and written side by side on a bounded pool
of threads (:meth:`ExplanationSession.in_parallel`), each through the steps above in their order;
what they share (their stale error records, their model's gallery index) is done once after all
their manifests (:meth:`ExplanationSession.finish`). docs/reliability.md#side-by-side-with-the-same-guarantees.
"""

import hashlib
import platform
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata as importlib_metadata

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from explain_core import __version__
from explain_core.attribution import ExplainerCache
from explain_core.errors import (
    InputChangedError,
    InputDeletedError,
    RequestInProgressError,
    is_missing_object,
    is_precondition_failed,
)
from explain_core.gallery import GalleryWriter, input_preview
from explain_core.input_lock import InputIdentity, InputLock, LockOutcome
from explain_core.keys import InputRef, KeyLayout, new_attempt_id
from explain_core.manifest import BackgroundDescription, Manifest
from explain_core.modalities import Explained
from explain_core.modalities.base import METHOD_OVERHEAD_S
from explain_core.model_store import LoadedModel, ModelStore
from explain_core.quality_metrics import PROBABILITY_MODELS
from explain_core.registry import SHAP
from explain_core.request_options import RequestOptions, parse_options
from explain_core.results import (
    PUT_THREADS,
    REQUEST_FINGERPRINT,
    SOURCE_ETAG,
    SOURCE_ORDER,
    ResultWriter,
    now_iso,
)
from explain_core.settings import Settings

#: Inputs per model call (and per method run) unless a function says otherwise; image models of large
#: inputs get fewer (IMAGE_PIXELS_PER_CALL).
DEFAULT_BATCH_SIZE = 64
#: Image models: at most this many input pixels per model call (rows = this // (height x width), at most
#: the session's batch size). Measured on 2 cores (benchmark section batch-sizes, docs/benchmark.md):
#: MobileNetV2 at 224x224 runs 8-16 images per call at 1.8-2.4x the throughput of one image per call,
#: and 32 or 64 at a third of the best (activations outgrow the caches); the demo CNN (128x128) keeps
#: its throughput up to 64. 16 images of 224x224: MobileNetV2 gets 16, the demo CNN 49.
IMAGE_PIXELS_PER_CALL = 16 * 224 * 224
#: Threads that download, check, render and write the inputs of one batch side by side (S3 and
#: DynamoDB requests wait on the network, Pillow's PNG encoder releases the GIL). 2, 4 and 8 measured
#: alike on 2 cores with the in-process emulator (whose CPU competes for the GIL); 8 for S3's latency.
IO_THREADS = 8

logger = Logger(child=True)
metrics = Metrics()


@dataclass
class Upload:
    """One input (an S3 object) as it moves through the session."""

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
    #: The decoded input, as its modality made it (a DecodedImage, a Table, ...).
    content: object = None
    options: RequestOptions | None = None
    timings: dict = field(default_factory=dict)
    duplicate: bool = False
    #: Outputs of this attempt go under results/.../attempts/<attempt>/.
    attempt: str = field(default_factory=new_attempt_id)
    #: Set while this invocation holds the input's lock.
    identity: InputIdentity | None = None
    #: The duplicate check found no manifest: its first write (and the gallery page's) need not read first.
    manifest_absent: bool = False


@dataclass
class WriteBatch:
    """What the inputs written together share, done once for all of them (:meth:`ExplanationSession.finish`):
    their error records deleted in one request, their entries added to each model's gallery index at once."""

    #: Input keys whose stale error records go (their manifests are written).
    written: list[str] = field(default_factory=list)
    #: GalleryWriter.listing of each input whose page was written.
    listings: list = field(default_factory=list)


@cache
def library_versions() -> dict:
    versions = {"python": platform.python_version(), "explain_core": __version__}
    for package in ("tensorflow-cpu", "keras", "xplique", "shap", "xgboost-cpu", "numpy", "aws-lambda-powertools"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = None
    return versions


class ExplanationSession:
    """A family's explanation service: warm models, explainers and clients, shared by every entry point."""

    def __init__(self, family: str, settings: Settings, s3_client, batch_size: int = DEFAULT_BATCH_SIZE):
        self.family = family
        self.settings = settings
        self.s3 = s3_client
        self.keys = KeyLayout(settings)
        self.store = ModelStore(s3_client, settings, with_background=family == SHAP)
        self.writer = ResultWriter(s3_client, settings)
        self.gallery = GalleryWriter(s3_client, settings)
        self.explainers = ExplainerCache()
        self.batch_size = batch_size
        self._lock = InputLock(settings.idempotency_table, family) if settings.idempotency_table else None
        self._io = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="explain-io")
        self._metrics_lock = threading.Lock()  # Powertools' metric set is not thread-safe

    @classmethod
    def from_environment(cls, family: str) -> "ExplanationSession":
        import boto3
        from botocore.config import Config

        # A connection per thread that may send at once (the inputs' threads and the output PUTs' threads):
        # botocore's default pool of 10 would open and drop connections beyond it.
        s3 = boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 5},
                                              max_pool_connections=IO_THREADS + PUT_THREADS))
        return cls(family, Settings.from_env(), s3)

    # ----------------------------------------------------------------- load, read, accept
    def load(self, model: str, version: str) -> LoadedModel:
        """The model, its card and (shap family) its background; explainers of replaced models are dropped."""
        loaded = self.store.get(model, version)
        live = self.store.models_in_memory()
        self.explainers.retain(live)
        PROBABILITY_MODELS.retain(live)  # the quality metrics' softmax wrappers hold models too
        return loaded

    def download(self, upload: Upload, loaded: LoadedModel) -> tuple[bytes, dict]:
        """The bytes and user metadata of the version the upload names; the size is checked before the body
        is read, against the limit of the model's modality."""
        started = time.perf_counter()
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
        limit, too_large = loaded.modality.size_limit(self.settings)
        if size > limit:
            response["Body"].close()
            raise too_large(f"the object is {size} bytes; the limit is {limit}", size=size, limit=limit)
        data = response["Body"].read()
        upload.etag = response["ETag"].strip('"')
        upload.version_id = response.get("VersionId") if upload.version_id else None
        upload.timings["download_s"] = time.perf_counter() - started
        return data, response.get("Metadata", {})

    def accept(self, upload: Upload, loaded: LoadedModel, data: bytes, metadata: dict | None = None, *,
               options: RequestOptions | None = None) -> None:
        """Take the request options (``options``, else parsed from the S3 ``metadata``), recognise a
        duplicate (``upload.duplicate``), decode the input."""
        upload.options = options if options is not None else parse_options(metadata, loaded.card, self.family)
        existing = self.writer.manifest_metadata(self.manifest_key(upload))
        upload.manifest_absent = existing is None
        if existing and existing.get(SOURCE_ETAG) == upload.etag and existing.get(
            REQUEST_FINGERPRINT
        ) == self._fingerprint(upload, loaded):
            upload.duplicate = True
            return
        started = time.perf_counter()
        upload.content = loaded.modality.decode(data, upload.ref.name, loaded, self.settings)
        upload.timings["decode_s"] = time.perf_counter() - started

    # ----------------------------------------------------------------- one attempt at a time
    @property
    def input_lock(self) -> InputLock | None:
        """The lock on the idempotency table (None without IDEMPOTENCY_TABLE: one process, nothing to share)."""
        return self._lock

    def lock(self, upload: Upload, loaded: LoadedModel, context) -> bool:
        """Hold the input's lock; False when another invocation is explaining it or has explained it."""
        if self._lock is None:
            return True
        identity = InputIdentity(upload.bucket, upload.key, upload.version_id or upload.etag or "",
                                 self._fingerprint(upload, loaded))
        outcome = self._lock.acquire(identity, remaining_millis(context))
        if outcome is LockOutcome.ACQUIRED:
            upload.identity = identity
            return True
        logger.info("input held by another invocation", extra={"key": upload.key, "lock": outcome.value})
        self.count("InputsHeldElsewhere")
        return False

    def count(self, name: str, value: float = 1, unit=MetricUnit.Count) -> None:
        """Add to a metric from any thread."""
        with self._metrics_lock:
            metrics.add_metric(name=name, unit=unit, value=value)

    def in_parallel(self, function: Callable, items: list) -> list[tuple[object, object, Exception | None]]:
        """(item, result, error) of ``function(item)`` for each item, run side by side on the session's
        I/O threads (in this thread for a single item); one item's error never stops the others."""
        if len(items) <= 1:
            done = []
            for item in items:
                try:
                    done.append((item, function(item), None))
                except Exception as exc:
                    done.append((item, None, exc))
            return done
        futures = [self._io.submit(function, item) for item in items]
        done = []
        for item, future in zip(items, futures, strict=True):
            try:
                done.append((item, future.result(), None))
            except Exception as exc:
                done.append((item, None, exc))
        return done

    def release(self, upload: Upload, error: Exception) -> None:
        """Give up the input's lock after ``error`` (the next delivery may try again)."""
        if upload.identity is not None:
            self._lock.release(upload.identity, error)
            upload.identity = None

    # ----------------------------------------------------------------- cost, explain, write
    def batch_size_for(self, card) -> int:
        """Rows per model call (predictions and every explainer) for a model: the session's batch size,
        fewer for an image model of large inputs (IMAGE_PIXELS_PER_CALL)."""
        return rows_per_call(self.batch_size, card)

    def _for_model(self, loaded: LoadedModel) -> "ExplanationSession":
        """The session as a modality sees it for this model: its ``batch_size`` is :meth:`batch_size_for`."""
        batch_size = self.batch_size_for(loaded.card)
        return self if batch_size == self.batch_size else _ModelSession(self, batch_size)

    def estimate_seconds(self, upload: Upload, loaded: LoadedModel) -> float:
        """Predicted seconds to explain one accepted input with every requested method.

        The modality measures the model's pass time on this input (batched, as methods run) and
        prices each method by its registry pass count (times three with a backward pass), and each
        requested quality metric by its passes per map (explain_core.quality_metrics); each
        method adds METHOD_OVERHEAD_S for building the explainer and the outputs.
        """
        seconds = loaded.modality.estimate_seconds(self._for_model(loaded), upload, loaded)
        return seconds + METHOD_OVERHEAD_S * len(upload.options.methods)

    def explain(self, uploads: list[Upload], loaded: LoadedModel, context) -> list[Explained]:
        """Explain accepted inputs of one model together; raises when the batch as a whole fails."""
        return loaded.modality.explain(self._for_model(loaded), uploads, loaded, context)

    def output_key(self, upload: Upload, method: str, class_label: str, ext: str) -> str:
        """Where one output file of this attempt goes (modalities name their files through it)."""
        return self.keys.output_key(upload.ref, upload.attempt, method, class_label, ext)

    def manifest_key(self, upload: Upload) -> str:
        return self.keys.manifest_key(upload.ref)

    def has_manifest(self, upload: Upload) -> bool:
        return bool(self.writer.manifest_metadata(self.manifest_key(upload)))

    def write(self, upload: Upload, loaded: LoadedModel, explained: Explained, request_id: str | None,
              batch: WriteBatch | None = None) -> Manifest:
        """Write the outputs, then the manifest (last, by compare-and-swap), then the gallery page; returns
        the manifest. With ``batch`` (inputs written together, from any thread), the stale error record
        and the model's gallery index wait for :meth:`finish`; without, they are done here."""
        single = batch is None
        batch = WriteBatch() if single else batch
        manifest = self._write_one(upload, loaded, explained, request_id, batch)
        if single:
            self.finish(batch)
        return manifest

    def finish(self, batch: WriteBatch) -> None:
        """After the manifests of a batch: its inputs in their models' gallery indexes (a view: failures
        are logged), then their stale error records deleted, in one request (raises if that fails)."""
        if batch.listings:
            try:
                self.gallery.add_to_indexes(batch.listings)
            except Exception:
                logger.exception("gallery index not updated", extra={"inputs": len(batch.listings)})
                self.count("GalleryPagesFailed")
        self.writer.delete_errors(batch.written)

    def _write_one(self, upload: Upload, loaded: LoadedModel, explained: Explained, request_id: str | None,
                   batch: WriteBatch) -> Manifest:
        manifest = self._manifest(upload, loaded, explained)
        objects = explained.objects
        started = time.perf_counter()
        self.writer.put_many(objects)
        manifest.request_id = request_id
        manifest.created_at = now_iso()
        manifest.timings["write_s"] = round(time.perf_counter() - started, 4)
        manifest.output_keys = [key for key, _, _ in objects]
        manifest_key = self.manifest_key(upload)
        metadata = {SOURCE_ETAG: upload.etag, REQUEST_FINGERPRINT: self._fingerprint(upload, loaded)}
        if upload.order:
            metadata[SOURCE_ORDER] = upload.order
        # The manifest goes last: its presence means every output it lists is in place.
        document = manifest.to_dict()  # once: the manifest's JSON and the gallery page's data
        try:
            replaced = self.writer.put_manifest(manifest_key, document, metadata, seen_absent=upload.manifest_absent)
        except InputChangedError:
            self.writer.delete_many(manifest.output_keys)  # a newer version's manifest stands
            raise
        if replaced:
            self.writer.delete_many(replaced)  # the outputs of the attempt whose manifest this replaced
        batch.written.append(upload.key)  # its stale error record goes (WriteBatch)
        if upload.identity is not None:
            self._lock.complete(upload.identity, manifest_key)
            upload.identity = None
        self._write_gallery(upload, document, objects, batch)
        self.count("ImagesExplained")
        logger.info("explained", extra={"key": upload.key, "status": manifest.status, "outputs": len(objects)})
        return manifest

    def _write_gallery(self, upload: Upload, document: dict, objects: list, batch: WriteBatch) -> None:
        """The input's gallery page (explain_core.gallery) from the manifest just written, its model's index
        entry kept for :meth:`finish`. They are views of it: a failure is logged and counted, never the input's."""
        started = time.perf_counter()
        try:
            written = self.gallery.write_page(document, {key: body for key, body, _ in objects},
                                              preview=input_preview(upload.content),
                                              page_absent=upload.manifest_absent)
            if written:
                batch.listings.append(self.gallery.listing(document))
        except Exception:
            logger.exception("gallery page not written", extra={"key": upload.key})
            self.count("GalleryPagesFailed")
            return
        logger.info("gallery page", extra={"key": upload.key, "written": written,
                                           "seconds": round(time.perf_counter() - started, 3)})

    def read_manifest(self, upload: Upload) -> Manifest:
        """The manifest of an input explained before (a duplicate request)."""
        body = self.s3.get_object(Bucket=self.settings.results_bucket, Key=self.manifest_key(upload))["Body"].read()
        return Manifest.from_json(body)

    def explain_and_write(self, upload: Upload, loaded: LoadedModel, context) -> Manifest:
        """Explain one accepted input now and write its outputs; returns the manifest. Errors propagate."""
        if not self.lock(upload, loaded, context):
            raise RequestInProgressError("the same input is being explained by another request; retry shortly")
        try:
            explained, = self.explain([upload], loaded, context)
            return self.write(upload, loaded, explained, getattr(context, "aws_request_id", None))
        except Exception as exc:
            self.release(upload, exc)
            raise

    def put_error(self, upload: Upload, error: dict, *, retrying: bool, request_id: str | None, **delivery) -> None:
        """The error record of an input the user can find in the results bucket (errors/...)."""
        self.writer.put_error(bucket=upload.bucket, key=upload.key, etag=upload.etag, family=self.family, error=error,
                              retrying=retrying, request_id=request_id, **delivery)

    # ----------------------------------------------------------------- the manifest
    def _manifest(self, upload: Upload, loaded: LoadedModel, explained: Explained) -> Manifest:
        card, modality = loaded.card, loaded.modality
        failed = sum(method.status == "failed" for method in explained.methods)
        status = "succeeded" if not failed else ("failed" if failed == len(explained.methods) else "partial")
        if explained.condition is not None and not explained.condition.explained:
            status = "skipped"  # nothing met the explanation condition: no method ran
        return Manifest(
            status=status,
            family=self.family,
            input=modality.input_type(bucket=upload.bucket, key=upload.key, etag=upload.etag,
                                      version_id=upload.version_id, **explained.input_description),
            model=modality.model_type(name=loaded.name, version=loaded.version, etag=loaded.model_etag,
                                      card_etag=loaded.card_etag, modality=card.modality, framework=card.framework,
                                      **modality.describe_model(loaded), loaded_from=loaded.source),
            predictions=explained.predictions,
            explained_classes=explained.explained_classes,
            methods=explained.methods,
            background=self._background_description(loaded) if self.store.with_background else None,
            rendering=explained.rendering,
            condition=explained.condition,
            timings={**{k: round(v, 4) for k, v in upload.timings.items()}, **explained.timings},
            versions=library_versions(),
            results_prefix=self.keys.results_base(upload.ref),
            attempt=upload.attempt,
        )

    @staticmethod
    def _background_description(loaded: LoadedModel) -> BackgroundDescription:
        """Where the SHAP background came from (see the modality's default_background)."""
        if loaded.background is not None:
            return BackgroundDescription(source="background.npy", rows=len(loaded.background),
                                         etag=loaded.background_etag)
        return BackgroundDescription(source="default", description=loaded.modality.default_background_description)

    @staticmethod
    def _fingerprint(upload: Upload, loaded: LoadedModel) -> str:
        # Everything the results depend on: the request, the model, its card, its SHAP background and its
        # companion files (a text model's vocabulary).
        identity = f"{loaded.model_etag}/{loaded.card_etag}/{loaded.background_etag}"
        identity += "".join(f"/{file}={etag}" for file, etag in sorted(loaded.companion_etags.items()))
        model = hashlib.sha256(identity.encode())
        return f"{upload.options.fingerprint}-{model.hexdigest()[:16]}"


class _ModelSession:
    """A session whose ``batch_size`` is one model's (ExplanationSession.batch_size_for); everything else is
    the session's own (its explainers, clients, threads), so nothing is copied and nothing shared changes."""

    def __init__(self, session: ExplanationSession, batch_size: int):
        self._session = session
        self.batch_size = batch_size

    def __getattr__(self, name: str):
        return getattr(self._session, name)


def rows_per_call(batch_size: int, card) -> int:
    """Rows per model call for a model's card: ``batch_size``, fewer for an image model of large inputs
    (IMAGE_PIXELS_PER_CALL)."""
    if card.modality != "image" or not card.input_height or not card.input_width:
        return batch_size
    return max(1, min(batch_size, IMAGE_PIXELS_PER_CALL // (card.input_height * card.input_width)))


def remaining_millis(context) -> int:
    """Milliseconds left in the invocation (Lambda's maximum when there is no Lambda context)."""
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        return int(context.get_remaining_time_in_millis())
    return 900_000  # Lambda's maximum timeout
