"""Lambda's SQS event source mapping, emulated in-process for the local default.

It does what the Lambda service does with an SQS source configured with
``ReportBatchItemFailures``: receive up to BatchSize messages (waiting at most the batching
window), invoke the handler with the exact SQS event shape, delete the messages that succeeded
and leave the failed ones to reappear after the visibility timeout (then the queue's redrive
policy moves them to the dead-letter queue).
"""

import importlib
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

from devtools.local_aws import REGION, Deployment, FunctionWiring, aws_environment


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


@contextmanager
def function_environment(deployment: Deployment, wiring: FunctionWiring):
    """Set the function's environment (as in template.yaml) plus the emulator endpoint."""
    values = {
        **wiring.environment,
        **aws_environment(deployment.endpoint),  # the template's EndpointUrl is empty: use the emulator
        "AWS_LAMBDA_FUNCTION_NAME": wiring.logical_id,
        "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
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

    def receive_batch(self) -> list[dict]:
        """Up to BatchSize messages, waiting at most the batching window for more to arrive."""
        messages, deadline = [], time.monotonic() + self.wiring.batching_window
        while len(messages) < self.wiring.batch_size:
            wait = max(0, min(20, round(deadline - time.monotonic())))
            received = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.wiring.batch_size - len(messages)),
                WaitTimeSeconds=wait if not messages else 0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            messages.extend(received)
            if not received and time.monotonic() >= deadline:
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

    def poll_once(self) -> tuple[int, dict | None]:
        messages = self.receive_batch()
        if not messages:
            return 0, None
        return len(messages), self.invoke(messages)
