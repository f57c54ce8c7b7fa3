"""The Lambda service, emulated in-process: handlers invoked as Lambda invokes them, and the SQS
event source mapping.

A function's handler is imported and invoked under its environment from template.yaml, with a
context object (:func:`load_handler`, :func:`invoke`). :class:`SqsEventSource` does what the
Lambda service does with an SQS source configured with ``ReportBatchItemFailures``: receive up
to BatchSize messages (waiting at most the batching window), invoke the handler with the exact
SQS event shape, delete the messages that succeeded and leave the failed ones to reappear after
the visibility timeout (then the queue's redrive policy moves them to the dead-letter queue).

What the functions print (Powertools' JSON log lines and EMF metrics on stdout, TensorFlow's and
absl's C++ logs on file descriptor 2, Python warnings) can be sent to a file rather than the
console with :func:`send_function_output_to`; the demo does, so its console stays readable.
"""

import contextlib
import importlib
import json
import logging
import os
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO
from urllib.parse import unquote_plus

from devtools.local.aws import REGION, Deployment, FunctionWiring, aws_environment

#: Where the functions' output goes while they load and run; None: wherever it goes anyway (the console).
_function_output: TextIO | None = None
#: Powertools handlers moved to ``_function_output``, with the stream each had before.
_rerouted: dict[logging.StreamHandler, TextIO] = {}


@dataclass
class LocalLambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    timeout_seconds: int
    aws_request_id: str = ""
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"

    def __post_init__(self):
        self.aws_request_id = self.aws_request_id or str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:{self.function_name}"
        self._deadline = time.monotonic() + self.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def send_function_output_to(stream: TextIO | None) -> None:
    """Send everything the functions write while they load and run to ``stream`` (a file opened for
    writing, ideally in append mode); None sends it back to the console.

    Covers Powertools loggers (their handlers keep the stream they were built with, so existing
    ones are pointed at ``stream`` too), ``print`` (EMF metrics), Python warnings and logging on
    stderr, and C++ code writing to file descriptor 2 (TensorFlow, XLA, absl).
    """
    global _function_output
    previous, _function_output = _function_output, stream
    if previous is not None and stream is None:  # back to the console, also for loggers built meanwhile
        for handler in _powertools_stream_handlers():
            if handler.stream is previous:
                handler.setStream(_rerouted.get(handler, sys.stdout))
        _rerouted.clear()


def _powertools_stream_handlers() -> list[logging.StreamHandler]:
    """The stream handlers of Powertools loggers (one logger per service name)."""
    return [
        handler
        for logger in list(logging.Logger.manager.loggerDict.values())
        if isinstance(logger, logging.Logger) and getattr(logger, "powertools_handler", None) is not None
        for handler in logger.handlers
        if type(handler) is logging.StreamHandler
    ]


def _reroute_powertools_loggers(stream: TextIO) -> None:
    """Point Powertools loggers built with another stream (the console) at ``stream``."""
    for handler in _powertools_stream_handlers():
        if handler.stream is not stream:
            _rerouted.setdefault(handler, handler.stream)
            handler.setStream(stream)


@contextmanager
def captured_output():
    """Inside: stdout, stderr and file descriptor 2 go where :func:`send_function_output_to` said (if
    it did). Every function loads and runs inside; so can other code whose output belongs with theirs."""
    stream = _function_output
    if stream is None:
        yield
        return
    _reroute_powertools_loggers(stream)
    console_err = sys.stderr
    for console in (sys.stdout, console_err):
        console.flush()
    saved_fd = os.dup(2)
    os.dup2(stream.fileno(), 2)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield
    finally:
        with contextlib.suppress(Exception):  # handlers built earlier may hold the console's stderr
            console_err.flush()
        stream.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)


@contextmanager
def function_environment(deployment: Deployment, wiring: FunctionWiring):
    """Set the function's environment (as in template.yaml) plus the emulator endpoint; its output
    goes where :func:`send_function_output_to` said."""
    values = {
        **wiring.environment,
        **aws_environment(deployment.endpoint),  # the template's EndpointUrl is empty: use the emulator
        "AWS_LAMBDA_FUNCTION_NAME": wiring.logical_id,
        "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        with captured_output():
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def load_handler(deployment: Deployment, wiring: FunctionWiring):
    """Import the function's module under its own environment and return its handler."""
    with function_environment(deployment, wiring):
        module = importlib.import_module(wiring.module)
        # The module builds its clients at import; a fresh import per deployment keeps them
        # pointed at this deployment's endpoint.
        module = importlib.reload(module)
    return module.lambda_handler


def invoke(deployment: Deployment, wiring: FunctionWiring, handler, event: dict, context=None):
    """Call a handler as Lambda does: with a context (fresh unless given) in the function's environment."""
    context = context or LocalLambdaContext(wiring.logical_id, wiring.memory, wiring.timeout)
    with function_environment(deployment, wiring):
        return handler(event, context)


def sqs_event(messages: list[dict], queue_arn: str) -> dict:
    """The event Lambda builds from received SQS messages."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


@dataclass(frozen=True)
class NotifiedObject:
    """An object an S3 event notification in an SQS message names (its key decoded)."""

    message_id: str
    bucket: str
    key: str
    etag: str | None
    event_name: str
    event_time: str | None


def notified_objects(messages: list[dict]) -> list[NotifiedObject]:
    """The objects created that the S3 notifications in these messages name, in order.

    ``messages`` are SQS messages as ReceiveMessage returns them (``MessageId``, ``Body``) or the
    records of an SQS event (``messageId``, ``body``). S3 URL-encodes keys in notifications
    (``my+photo.png`` for ``my photo.png``); the keys here are decoded. Test events
    (``s3:TestEvent``), other events and bodies that are no S3 notification name nothing.
    """
    objects = []
    for message in messages:
        message_id = message.get("MessageId", message.get("messageId", ""))
        try:
            body = json.loads(message.get("Body", message.get("body")) or "")
        except (TypeError, ValueError):
            continue
        if not isinstance(body, dict) or not isinstance(body.get("Records"), list):
            continue  # s3:TestEvent, or not a notification
        for record in body["Records"]:
            try:
                event_name = record.get("eventName", "")
                if not event_name.startswith("ObjectCreated:"):
                    continue
                s3 = record["s3"]
                objects.append(NotifiedObject(
                    message_id=message_id, bucket=s3["bucket"]["name"], key=unquote_plus(s3["object"]["key"]),
                    etag=s3["object"].get("eTag"), event_name=event_name, event_time=record.get("eventTime"),
                ))
            except (AttributeError, KeyError, TypeError):
                continue
    return objects


def notified_keys(messages: list[dict]) -> list[str]:
    """The decoded keys of the objects the S3 notifications in these messages name, each once, in order."""
    return list(dict.fromkeys(obj.key for obj in notified_objects(messages)))


@dataclass
class Batch:
    """One invocation by the event source: the messages it received and what the handler answered."""

    messages: list[dict]
    response: dict | None
    seconds: float  # wall time of the invocation (the handler, then deleting the messages that succeeded)
    objects: list[NotifiedObject] = field(init=False)

    def __post_init__(self):
        self.objects = notified_objects(self.messages)

    @property
    def keys(self) -> list[str]:
        """The decoded input keys this batch's notifications name, each once."""
        return list(dict.fromkeys(obj.key for obj in self.objects))

    @property
    def failed_message_ids(self) -> set[str]:
        """Messages the handler reported as failed: they stay in the queue for a retry."""
        return {item["itemIdentifier"] for item in (self.response or {}).get("batchItemFailures", [])}


class SqsEventSource:
    def __init__(self, deployment: Deployment, wiring: FunctionWiring, handler=None):
        if wiring.queue is None:
            raise ValueError(f"{wiring.logical_id} has no SQS event in template.yaml")
        self.deployment = deployment
        self.wiring = wiring
        self.sqs = deployment.client("sqs")
        self.queue_url = deployment.queue_urls[wiring.queue]
        self.queue_arn = deployment.queue_arns[wiring.queue]
        self.handler = handler or load_handler(deployment, wiring)

    def receive_batch(self, wait: bool = True) -> list[dict]:
        """Up to BatchSize messages, waiting at most the batching window for more to arrive.

        ``wait=False`` returns at once when the queue has nothing visible (no long poll): for a
        caller that polls several queues in turn, as Lambda's pollers do in parallel.
        """
        messages, deadline = [], time.monotonic() + self.wiring.batching_window
        while len(messages) < self.wiring.batch_size:
            wait_seconds = max(0, min(20, round(deadline - time.monotonic()))) if wait else 0
            received = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.wiring.batch_size - len(messages)),
                WaitTimeSeconds=wait_seconds if not messages else 0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            messages.extend(received)
            if not received and (time.monotonic() >= deadline or not (wait or messages)):
                break
            if not received:
                time.sleep(0.2)
        return messages

    def invoke(self, messages: list[dict]) -> dict:
        """Invoke the handler with these messages, then delete the ones that succeeded."""
        response = invoke(self.deployment, self.wiring, self.handler, sqs_event(messages, self.queue_arn))
        failed = {item["itemIdentifier"] for item in (response or {}).get("batchItemFailures", [])}
        for message in messages:
            if message["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return response

    def poll(self, wait: bool = True) -> Batch | None:
        """Receive a batch and invoke the handler with it; None when no message came."""
        messages = self.receive_batch(wait)
        if not messages:
            return None
        started = time.perf_counter()
        response = self.invoke(messages)
        return Batch(messages, response, time.perf_counter() - started)

    def poll_once(self) -> tuple[int, dict | None]:
        """(messages received, the handler's response) of one poll; (0, None) when no message came."""
        batch = self.poll()
        return (len(batch.messages), batch.response) if batch else (0, None)

    def backlog(self) -> tuple[int, int]:
        """(messages waiting in the queue, messages in flight: received and not yet deleted)."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])
