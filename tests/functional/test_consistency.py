"""At-least-once delivery: deleted or replaced inputs, concurrent deliveries, batch isolation.

S3 notifies at least once and SQS delivers at least once, so one upload can reach two workers at
the same moment, an event can arrive after its object was replaced or deleted, and one batch holds
uploads that have nothing to do with each other. Each case must end in one consistent result.
"""

import json
import multiprocessing
import random
import threading
import uuid

import numpy as np
import pytest

from devtools.local import lambda_service
from devtools.local.events import deliver
from explain_core.errors import InputChangedError
from explain_core.results import SOURCE_ORDER, ResultWriter
from explain_core.settings import Settings
from tests.conftest import png_bytes, read_json, upload_event

FAMILY = "gradient"


def results_prefix(key: str) -> str:
    return f"results/{key.removeprefix('incoming/')}/"


def error_key(key: str) -> str:
    return f"errors/{key.removeprefix('incoming/')}.json"


def listed(s3, bucket: str, prefix: str) -> set[str]:
    return {obj["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])}


def exists(s3, bucket: str, key: str) -> bool:
    return bool(listed(s3, bucket, key) & {key})


def assert_one_consistent_result(s3, results: str, key: str, etag: str) -> dict:
    """Exactly one manifest, for the version ``etag``, and under its prefix only its own attempt's outputs
    and the gallery page, which shows that manifest's attempt."""
    manifest = read_json(s3, results, results_prefix(key) + "manifest.json")
    assert manifest["input"]["etag"] == etag
    attempt_prefix = f"{results_prefix(key)}attempts/{manifest['attempt']}/"
    assert manifest["output_keys"] and all(k.startswith(attempt_prefix) for k in manifest["output_keys"])
    assert listed(s3, results, results_prefix(key)) == {results_prefix(key) + "manifest.json",
                                                       results_prefix(key) + "index.html", *manifest["output_keys"]}
    page = s3.get_object(Bucket=results, Key=results_prefix(key) + "index.html")["Body"].read().decode()
    assert f"<code>{manifest['attempt']}</code>" in page
    return manifest


def test_an_input_deleted_before_processing_is_a_final_input_deleted_record(invoke, s3, deployment, samples,
                                                                             unique_prefix):
    images, _, _ = samples
    key = f"incoming/{FAMILY}/shapes/v1/{unique_prefix}/gone.png"
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[0]))
    event = deliver(upload_event(key, family=FAMILY), s3)
    s3.delete_object(Bucket=deployment.bucket("InputBucket"), Key=key)

    response = invoke(FAMILY, event, as_sent=True)

    assert response == {"batchItemFailures": []}  # final: not retried into the dead-letter queue
    record = read_json(s3, deployment.bucket("ResultsBucket"), error_key(key))
    assert record["error"]["code"] == "input_deleted" and record["retrying"] is False
    assert not listed(s3, deployment.bucket("ResultsBucket"), results_prefix(key))


def test_a_replaced_input_is_explained_for_its_new_version_only(invoke, s3, deployment, samples, unique_prefix):
    images, labels, _ = samples
    inputs, results = deployment.bucket("InputBucket"), deployment.bucket("ResultsBucket")
    key = f"incoming/{FAMILY}/shapes/v1/{unique_prefix}/replaced.png"
    metadata = {"methods": "Saliency"}
    s3.put_object(Bucket=inputs, Key=key, Body=png_bytes(images[0]), Metadata=metadata)
    old_event = deliver(upload_event(key, family=FAMILY), s3)
    new_etag = s3.put_object(Bucket=inputs, Key=key, Body=png_bytes(images[1]), Metadata=metadata)["ETag"].strip('"')
    new_event = deliver(upload_event(key, family=FAMILY), s3)

    # The old event arrives first: its version is gone, a final typed outcome (the new event will explain).
    assert invoke(FAMILY, old_event, as_sent=True) == {"batchItemFailures": []}
    record = read_json(s3, results, error_key(key))
    assert record["error"]["code"] == "input_changed" and record["retrying"] is False

    assert invoke(FAMILY, new_event, as_sent=True) == {"batchItemFailures": []}
    manifest = assert_one_consistent_result(s3, results, key, new_etag)
    assert manifest["predictions"][0]["class_index"] == labels[1]
    assert not exists(s3, results, error_key(key))  # the stale record went with the new result

    # A redelivery of the old event changes nothing: no record shadows the new version's result.
    written = s3.head_object(Bucket=results, Key=results_prefix(key) + "manifest.json")["ETag"]
    assert invoke(FAMILY, old_event, as_sent=True) == {"batchItemFailures": []}
    assert s3.head_object(Bucket=results, Key=results_prefix(key) + "manifest.json")["ETag"] == written
    assert not exists(s3, results, error_key(key))


def _invoke_in_a_process(deployment, event: dict, barrier, answers) -> None:
    """A separate Lambda execution environment: its own imports, model cache and clients."""
    wiring = deployment.function_for_family(FAMILY)
    handler = lambda_service.load_handler(deployment, wiring)
    session, writes = handler.session, []
    write = session.write

    def counted_write(upload, *args):
        writes.append(upload.key)
        return write(upload, *args)

    session.write = counted_write
    barrier.wait(timeout=300)
    response = lambda_service.invoke(deployment, wiring, handler, event)
    answers.put((response, len(writes)))


def run_concurrently(deployment, events: list[dict]) -> list[tuple[dict, int]]:
    """Invoke the handler in one process per event, released at the same moment; (response, writes) each."""
    spawn = multiprocessing.get_context("spawn")
    barrier, answers = spawn.Barrier(len(events)), spawn.Queue()
    workers = [spawn.Process(target=_invoke_in_a_process, args=(deployment, event, barrier, answers))
               for event in events]
    for worker in workers:
        worker.start()
    outcomes = [answers.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    return outcomes


@pytest.mark.slow
def test_two_processes_on_the_same_event_give_one_result(deployment, s3, published_model, samples, unique_prefix):
    images, labels, _ = samples
    results = deployment.bucket("ResultsBucket")
    key = f"incoming/{FAMILY}/shapes/v1/{unique_prefix}/twice.png"
    etag = s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[2]),
                         Metadata={"methods": "Saliency,GradCAM"})["ETag"].strip('"')
    event = deliver(upload_event(key, family=FAMILY), s3)

    outcomes = run_concurrently(deployment, [event, event])

    assert [response for response, _ in outcomes] == [{"batchItemFailures": []}] * 2
    # One of the two held the input's lock and explained it; the other left it to the holder.
    assert sorted(writes for _, writes in outcomes) == [0, 1]
    manifest = assert_one_consistent_result(s3, results, key, etag)
    assert manifest["predictions"][0]["class_index"] == labels[2]
    assert not exists(s3, results, error_key(key))


@pytest.mark.slow
def test_two_versions_in_quick_succession_give_the_newest_result(deployment, s3, published_model, samples,
                                                                 unique_prefix):
    images, labels, _ = samples
    inputs, results = deployment.bucket("InputBucket"), deployment.bucket("ResultsBucket")
    key = f"incoming/{FAMILY}/shapes/v1/{unique_prefix}/versions.png"
    s3.put_object(Bucket=inputs, Key=key, Body=png_bytes(images[0]), Metadata={"methods": "Saliency"})
    first = deliver(upload_event(key, family=FAMILY), s3)
    newest = s3.put_object(Bucket=inputs, Key=key, Body=png_bytes(images[1]),
                           Metadata={"methods": "Saliency"})["ETag"].strip('"')
    second = deliver(upload_event(key, family=FAMILY), s3)

    outcomes = run_concurrently(deployment, [first, second])

    assert [response for response, _ in outcomes] == [{"batchItemFailures": []}] * 2
    manifest = assert_one_consistent_result(s3, results, key, newest)
    assert manifest["predictions"][0]["class_index"] == labels[1]
    assert not exists(s3, results, error_key(key))


def test_manifest_writes_race_to_the_newest_version(s3, deployment, unique_prefix):
    """Eight attempts at eight versions of one key write their manifests at once: the newest stands,
    and an older version can never replace it afterwards (S3 compare-and-swap on the manifest)."""
    settings = Settings(input_bucket=deployment.bucket("InputBucket"), model_bucket=deployment.bucket("ModelBucket"),
                        results_bucket=deployment.bucket("ResultsBucket"))
    writer = ResultWriter(s3, settings)
    key = f"results/{FAMILY}/shapes/v1/{unique_prefix}/race.png/manifest.json"
    orders = [f"s:{version:032X}" for version in range(1, 9)]
    random.Random(7).shuffle(orders)
    start, refused = threading.Barrier(len(orders)), []

    def attempt(order: str) -> None:
        manifest = {"input": {"key": "k"}, "order": order, "output_keys": [f"{order}/out.npy"]}
        start.wait()
        try:
            writer.put_manifest(key, manifest, {SOURCE_ORDER: order})
        except InputChangedError:
            refused.append(order)

    threads = [threading.Thread(target=attempt, args=(order,)) for order in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    final = read_json(s3, settings.results_bucket, key)
    assert final["order"] == max(orders)
    assert max(orders) not in refused
    with pytest.raises(InputChangedError):
        writer.put_manifest(key, {"input": {"key": "k"}, "output_keys": []}, {SOURCE_ORDER: min(orders)})


def test_one_poison_upload_fails_alone_in_a_batch_of_eight(invoke, s3, deployment, samples, unique_prefix,
                                                             monkeypatch):
    """A batched step that fails because of one input (here a model that crashes on a flat image)
    fails that input only: its neighbours are explained, the poison one alone is retried."""
    from explain_core import attribution

    images, labels, _ = samples
    inputs, results = deployment.bucket("InputBucket"), deployment.bucket("ResultsBucket")
    keys = [f"incoming/{FAMILY}/shapes/v1/{unique_prefix}/batch-{i}.png" for i in range(8)]
    poison = keys[5]
    for i, key in enumerate(keys):
        pixels = np.zeros_like(images[0]) if key == poison else images[i % len(images)]
        s3.put_object(Bucket=inputs, Key=key, Body=png_bytes(pixels), Metadata={"methods": "Saliency"})
    real_raw_outputs = attribution.raw_outputs

    def crashes_on_flat_images(model, batch, card, batch_size):
        if any(np.ptp(row) == 0 for row in batch):
            raise RuntimeError("simulated crash of the model on a flat image")
        return real_raw_outputs(model, batch, card, batch_size)

    monkeypatch.setattr(attribution, "raw_outputs", crashes_on_flat_images)
    event = upload_event(*keys, family=FAMILY)

    response = invoke(FAMILY, event)

    poison_message = event["Records"][keys.index(poison)]["messageId"]
    assert response == {"batchItemFailures": [{"itemIdentifier": poison_message}]}
    for i, key in enumerate(keys):
        if key == poison:
            record = read_json(s3, results, error_key(key))
            assert record["error"]["code"] == "internal_error" and record["retrying"] is True
            assert not exists(s3, results, results_prefix(key) + "manifest.json")
        else:
            manifest = read_json(s3, results, results_prefix(key) + "manifest.json")
            assert manifest["status"] == "succeeded"
            assert manifest["predictions"][0]["class_index"] == labels[i % len(labels)]


def test_a_failure_on_the_last_receive_is_recorded_as_dead_lettered(invoke, s3, deployment, samples, unique_prefix,
                                                                    handlers, monkeypatch):
    """On the queue's last receive nothing will retry: the record says so (an API job reports failed)."""
    images, _, _ = samples
    key = f"incoming/{FAMILY}/shapes/v1/{unique_prefix}/last-try-{uuid.uuid4().hex[:6]}.png"
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[0]))
    store = handlers[FAMILY].session.store

    def unavailable(*args, **kwargs):
        raise ConnectionError("simulated outage of the model bucket")

    monkeypatch.setattr(store, "get", unavailable)
    for receive, retrying in ((1, True), (3, False)):
        event = upload_event(key, family=FAMILY, receive_count=receive)
        response = invoke(FAMILY, event)
        assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
        record = read_json(s3, deployment.bucket("ResultsBucket"), error_key(key))
        assert record["retrying"] is retrying and record["dead_lettered"] is (not retrying)
        assert (record["attempt"], record["max_attempts"]) == (receive, 3)


def versioned_event(key: str, bucket: str, *, etag: str, version_id: str, sequencer: str) -> dict:
    """The notification S3 sends for one version of ``key`` in a versioned bucket."""
    event = upload_event(key, family=FAMILY)
    body = json.loads(event["Records"][0]["body"])
    s3_record = body["Records"][0]["s3"]
    s3_record["bucket"]["name"] = bucket
    s3_record["object"].update({"eTag": etag, "versionId": version_id, "sequencer": sequencer})
    event["Records"][0]["body"] = json.dumps(body)
    return event


def test_in_a_versioned_bucket_each_event_reads_its_version_and_the_newest_result_stands(
        s3, deployment, published_model, samples, unique_prefix, lambda_context):
    """A late event of an older version reads that version (VersionId), but never replaces the
    newer version's manifest (S3 sequencers order the versions of a key)."""
    from explain_core.session import ExplanationSession
    from explain_core.sqs_adapter import SqsAdapter

    images, labels, _ = samples
    bucket = f"explain-versioned-{unique_prefix}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    settings = Settings(input_bucket=bucket, results_bucket=deployment.bucket("ResultsBucket"),
                        model_bucket=deployment.bucket("ModelBucket"))
    uploads = SqsAdapter(ExplanationSession(FAMILY, settings, s3))
    key = f"incoming/{FAMILY}/shapes/v1/{unique_prefix}/versioned.png"
    versions = []
    for i, sequencer in ((0, "0055AED6DCD90281E5"), (1, "0055AED6DCD90281E6")):
        put = s3.put_object(Bucket=bucket, Key=key, Body=png_bytes(images[i]), Metadata={"methods": "Saliency"})
        versions.append(versioned_event(key, bucket, etag=put["ETag"].strip('"'), version_id=put["VersionId"],
                                        sequencer=sequencer))
    old, new = versions
    results = settings.results_bucket

    assert uploads.handle_sqs_event(new, lambda_context) == {"batchItemFailures": []}
    manifest = read_json(s3, results, results_prefix(key) + "manifest.json")
    assert manifest["predictions"][0]["class_index"] == labels[1]
    assert manifest["input"]["version_id"] == json_body(new)["Records"][0]["s3"]["object"]["versionId"]

    # The old version's event arrives late: its version is still readable, but its result is older.
    assert uploads.handle_sqs_event(old, lambda_context) == {"batchItemFailures": []}
    assert_one_consistent_result(s3, results, key, manifest["input"]["etag"])
    assert read_json(s3, results, results_prefix(key) + "manifest.json")["attempt"] == manifest["attempt"]
    assert not exists(s3, results, error_key(key))


def json_body(event: dict) -> dict:
    return json.loads(event["Records"][0]["body"])
