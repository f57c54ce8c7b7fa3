"""The benchmark's AWS side: the local emulator wired from template.yaml (``devtools.local``), the
published models, the real handlers (timed) and the uploads and SQS messages that feed them."""

import contextlib
import dataclasses
import json
import time
import uuid
from pathlib import Path

import numpy as np

from devtools import tabular_demo, text_demo
from devtools.benchmark.subjects import Subject
from devtools.demo import key_layout, outcome
from devtools.local import aws, lambda_service
from devtools.samples import encode_image
from explain_core.registry import FAMILIES, MethodSpec

#: Files a model directory may hold, uploaded as they exist (MobileNetV2 has no SHAP background).
MODEL_FILES = ("model.keras", "card.json", "background.npy")


class TimedHandler:
    """A Lambda handler that records how long each invocation takes.

    Its stdout (Powertools' EMF metric lines) goes to ``log`` so the tables stay readable.
    """

    def __init__(self, handler, log):
        self.handler = handler
        self.log = log
        self.durations: list[float] = []
        #: Context-manager factories entered around every invocation, outside the timing (e.g. the
        #: cost section's ``RequestCounter.invocation``: which API calls the handler made).
        self.around: list = []

    def __call__(self, event, context):
        with contextlib.ExitStack() as observers:
            for enter in self.around:
                observers.enter_context(enter())
            started = time.perf_counter()
            with contextlib.redirect_stdout(self.log):
                response = self.handler(event, context)
            self.durations.append(time.perf_counter() - started)
        return response


class Harness:
    """The moto emulator wired from template.yaml, the published models and the real handlers."""

    def __init__(self, log_level: str, log_path: Path):
        # In a process of its own: on AWS, S3 and SQS do not run on the function's CPU.
        self.server, endpoint = aws.start_emulator_process()
        template = aws.load_template()
        # As `sam deploy --parameter-overrides LogLevel=...`: keeps per-image INFO lines out of the tables.
        template["Parameters"]["LogLevel"]["Default"] = log_level
        self.deployment = aws.deploy(endpoint, template)
        self.s3 = self.deployment.client("s3")
        self.sqs = self.deployment.client("sqs")
        self.keys = key_layout(self.deployment)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = log_path.open("w")
        self.run_id = uuid.uuid4().hex[:8]
        self._handlers: dict[str, TimedHandler] = {}
        for url in self.deployment.queue_urls.values():  # drop s3:TestEvent notifications
            self.sqs.purge_queue(QueueUrl=url)

    def close(self):
        """Stop the emulator and close the handler log."""
        self.server.stop()
        self.log.close()

    def publish(self, subject: Subject) -> None:
        """Upload the model, its card and its SHAP background if it has one (models/<name>/<version>/)."""
        for filename in MODEL_FILES:
            if (subject.directory / filename).exists():
                self.s3.upload_file(str(subject.directory / filename), self.deployment.bucket("ModelBucket"),
                                    self.keys.model_key(subject.name, subject.version, filename))

    def publish_tabular(self, name: str, directory: Path) -> None:
        """Upload a tabular demo model, its card and its background, as a user would."""
        tabular_demo.publish(self.s3, self.deployment.bucket("ModelBucket"), directory, name)

    def publish_text(self) -> None:
        """Upload the text demo model, its card and its vocabulary, as a user would."""
        text_demo.publish(self.s3, self.deployment.bucket("ModelBucket"))

    def handler(self, family: str) -> TimedHandler:
        """The family's real handler, imported once under its template environment."""
        if family not in self._handlers:
            wiring = self.deployment.function_for_family(family)
            self._handlers[family] = TimedHandler(lambda_service.load_handler(self.deployment, wiring), self.log)
        return self._handlers[family]

    def session_batch_size(self, family: str, card=None) -> int:
        """The batch size the family's session gives the explainers (so raw calls match the handler); with a
        model ``card``, the one it gives that model (image models of large inputs get fewer rows per call)."""
        from explain_core.session import DEFAULT_BATCH_SIZE

        # The session family_lambda_handler built when the module was imported under its environment.
        session = getattr(self.handler(family).handler, "session", None)
        if session is None:
            return DEFAULT_BATCH_SIZE
        return session.batch_size_for(card) if card is not None and hasattr(session, "batch_size_for") \
            else session.batch_size

    def batch_sizes(self) -> dict:
        """The template's SQS BatchSize per family."""
        return {family: self.deployment.function_for_family(family).batch_size for family in FAMILIES}

    def source(self, family: str, batch_size: int | None = None) -> lambda_service.SqsEventSource:
        """The family's SQS event source; ``batch_size`` overrides the template's (no batching window then)."""
        wiring = self.deployment.function_for_family(family)
        if batch_size is not None and batch_size != wiring.batch_size:
            wiring = dataclasses.replace(wiring, batch_size=batch_size, batching_window=0)
        return lambda_service.SqsEventSource(self.deployment, wiring, handler=self.handler(family))

    def upload(self, family: str, subject: Subject, label: str, images: np.ndarray, metadata: dict) -> list[str]:
        """PUT the images as PNG under the family's input prefix; returns their keys."""
        files = [(f"{index:03d}.png", encode_image(pixels), "image/png") for index, pixels in enumerate(images)]
        return self.upload_files(family, subject.name, subject.version, label, files, metadata)

    def upload_files(self, family: str, model: str, version: str, label: str, files: list[tuple[str, bytes, str]],
                     metadata: dict) -> list[str]:
        """PUT (file name, body, content type) under incoming/<family>/<model>/<version>/; returns the keys."""
        prefix = f"{self.keys.family_prefix(family)}{model}/{version}/bench-{self.run_id}/{label}"
        keys = []
        for filename, body, content_type in files:
            key = f"{prefix}/{filename}"
            self.s3.put_object(Bucket=self.keys.settings.input_bucket, Key=key, Body=body,
                               ContentType=content_type, Metadata=metadata)
            keys.append(key)
        return keys

    def await_queued(self, family: str, count: int, timeout: float = 60.0) -> None:
        """Wait until the family's queue holds ``count`` visible messages (S3 notifications)."""
        url = self.deployment.queue_urls[self.deployment.function_for_family(family).queue]
        deadline = time.monotonic() + timeout
        while True:
            attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
            if int(attributes["Attributes"]["ApproximateNumberOfMessages"]) >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} notifications did not reach the {family} queue in {timeout:.0f} s")
            time.sleep(0.1)

    def receive(self, family: str, keys: list[str], timeout: float = 60.0) -> list[dict]:
        """The SQS messages announcing ``keys`` (in that order); any other message is deleted."""
        url = self.deployment.queue_urls[self.deployment.function_for_family(family).queue]
        wanted, found = set(keys), {}
        deadline = time.monotonic() + timeout
        while len(found) < len(wanted):
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(found)} of {len(wanted)} notifications arrived in {timeout:.0f} s")
            messages = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                AttributeNames=["All"], MessageAttributeNames=["All"],
            ).get("Messages", [])
            for message in messages:
                key = notified_key(message)
                if key in wanted:
                    found[key] = message
                else:
                    self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return [found[key] for key in keys]

    def outcome(self, key: str) -> dict:
        """The manifest written for an input key, or its error record, or a note that there is neither."""
        found = outcome(self.s3, self.keys, key)
        return found or {"status": "missing", "error": {"message": "no manifest and no error record"}}


def notified_key(message: dict) -> str | None:
    """The object key in an S3 notification message (None for anything else)."""
    return next(iter(lambda_service.notified_keys([message])), None)


def upload_metadata(spec: MethodSpec, overrides: dict) -> dict:
    """Object metadata asking for ``spec`` alone, with ``overrides`` as its parameters."""
    metadata = {"methods": spec.name}
    if overrides:
        metadata["params"] = json.dumps({spec.name: overrides}, separators=(",", ":"))
    return metadata


def failure(outcome: dict) -> str | None:
    """None when a manifest says every method succeeded; otherwise a short reason."""
    if outcome.get("status") == "succeeded":
        return None
    errors = [m.get("error", {}) for m in outcome.get("methods", []) if m.get("status") == "failed"]
    error = errors[0] if errors else outcome.get("error", {})
    return f"{outcome.get('status')}: {error.get('message', error)}"[:300]
