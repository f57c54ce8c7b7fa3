"""The whole local path: S3 upload -> notification -> SQS -> event source mapping -> handler -> S3."""

import json

import pytest

from devtools.local.lambda_service import SqsEventSource
from tests.conftest import clear_outputs, png_bytes, read_json


@pytest.fixture
def gradient_source(deployment, handlers, sqs):
    wiring = deployment.function_for_family("gradient")
    source = SqsEventSource(deployment, wiring, handler=handlers["gradient"])
    empty_queue(sqs, source.queue_url)
    return source


def empty_queue(sqs, url: str) -> None:
    """Delete what earlier tests left (PurgeQueue is limited to once a minute)."""
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def drain(source: SqsEventSource, rounds: int = 5) -> list[dict]:
    responses = []
    for _ in range(rounds):
        count, response = source.poll_once()
        if count:
            responses.append(response)
        elif responses:
            break
    return responses


def test_upload_is_delivered_batched_and_explained(gradient_source, deployment, s3, samples, unique_prefix):
    images, labels, _ = samples
    clear_outputs(s3, deployment, "gradient")
    keys = [f"incoming/gradient/shapes/v1/{unique_prefix}/img {i}.png" for i in range(3)]
    for i, key in enumerate(keys):
        s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[i]),
                      Metadata={"methods": "GradCAM"})

    responses = drain(gradient_source)

    assert all(r == {"batchItemFailures": []} for r in responses)
    for i, key in enumerate(keys):
        manifest = read_json(s3, deployment.bucket("ResultsBucket"),
                             f"results/{key.removeprefix('incoming/')}/manifest.json")
        assert manifest["predictions"][0]["class_index"] == labels[i]
    # Messages that succeeded are deleted from the queue.
    attributes = gradient_source.sqs.get_queue_attributes(
        QueueUrl=gradient_source.queue_url, AttributeNames=["ApproximateNumberOfMessages",
                                                            "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def test_result_writes_do_not_retrigger(gradient_source, deployment, s3, samples, unique_prefix):
    """Outputs go to another bucket: after one explanation the queue stays empty."""
    images, _, _ = samples
    key = f"incoming/gradient/shapes/v1/{unique_prefix}/once.png"
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[0]),
                  Metadata={"methods": "Saliency"})
    assert len(drain(gradient_source)) == 1
    assert gradient_source.receive_batch() == []


def test_poison_message_ends_in_the_dead_letter_queue(gradient_source, deployment, sqs):
    sqs.send_message(QueueUrl=gradient_source.queue_url, MessageBody=json.dumps({"not": "an s3 event"}))
    dlq_url = deployment.queue_urls["GradientDeadLetterQueue"]
    empty_queue(sqs, dlq_url)
    for _ in range(3):  # the template's maxReceiveCount
        messages = gradient_source.receive_batch()
        assert len(messages) == 1
        response = gradient_source.invoke(messages)
        assert response["batchItemFailures"] == [{"itemIdentifier": messages[0]["MessageId"]}]
        # Lambda would wait out the visibility timeout; make the retry visible now.
        sqs.change_message_visibility(QueueUrl=gradient_source.queue_url,
                                      ReceiptHandle=messages[0]["ReceiptHandle"], VisibilityTimeout=0)
    assert gradient_source.receive_batch() == []
    dead = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"]) for m in dead] == [{"not": "an s3 event"}]
