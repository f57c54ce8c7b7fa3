"""A burst of uploads through the demo's watch mode: 200 images, each explained once, and only their
results copied locally (the code path ``python -m devtools.demo`` runs after the samples)."""

import time
from collections import Counter

import pytest

from devtools import demo, demo_model, shapes
from devtools.local.lambda_service import SqsEventSource
from tests.conftest import png_bytes

pytestmark = pytest.mark.slow

BURST = 200
#: A bound for a hung drain, far above the expected time; the throughput is printed, not asserted.
DRAIN_TIMEOUT_S = 600


def empty_queue(sqs, url: str) -> None:
    """Delete what earlier tests left (PurgeQueue is limited to once a minute)."""
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def test_a_burst_of_uploads_is_explained_once_each_and_only_its_results_are_copied(
        deployment, s3, sqs, handlers, published_model, unique_prefix, tmp_path, capsys):
    source = SqsEventSource(deployment, deployment.function_for_family("gradient"), handler=handlers["gradient"])
    dead_letters = deployment.queue_urls["GradientDeadLetterQueue"]
    empty_queue(sqs, source.queue_url)
    empty_queue(sqs, dead_letters)
    model, version = published_model
    images, labels, _ = demo_model.sample_images(BURST, seed=7)  # distinct held-out images
    keys = [f"incoming/gradient/{model}/{version}/burst-{unique_prefix}/{i:03d} {shapes.CLASSES[label]}.png"
            for i, label in enumerate(labels)]  # a space: notifications carry it URL-encoded
    bucket = deployment.bucket("InputBucket")
    for key, pixels in zip(keys, images, strict=True):
        s3.put_object(Bucket=bucket, Key=key, Body=png_bytes(pixels), Metadata={"methods": "Saliency"})

    layout, burst, lines, processed = demo.key_layout(deployment), demo.Burst(), [], []
    started = time.perf_counter()
    while len(processed) < BURST and time.perf_counter() - started < DRAIN_TIMEOUT_S:
        round_ = demo.watch_once({"gradient": source}, s3, layout, tmp_path, burst=burst, echo=lines.append)
        processed += round_
        if not round_:
            time.sleep(0.2)
    seconds = time.perf_counter() - started
    invocations = round(sum(1 / r["batch"] for r in processed))
    with capsys.disabled():  # a figure for the test log, not an assertion
        print(f"\nburst: {len(processed)} uploads explained and copied in {seconds:.1f} s = "
              f"{len(processed) / seconds:.1f} images/s (Saliency, batches of up to {source.wiring.batch_size}, "
              f"{invocations} invocations)")

    # Each input was delivered to the function, and explained, exactly once.
    assert Counter(r["key"] for r in processed) == Counter(keys)
    assert [r["status"] for r in processed] == ["succeeded"] * BURST, [r["status"] for r in processed][:5]
    manifests = {r["key"]: r["outcome"] for r in processed}
    assert all(m["kind"] == "manifest" and m["input"]["key"] == key for key, m in manifests.items())
    assert len({m["key"] for m in manifests.values()}) == BURST
    assert all(m["request_id"] and [x["name"] for x in m["methods"]] == ["Saliency"] for m in manifests.values())
    # The outputs belong to their own input (no rows mixed up in a batch): the demo model is ~98% right.
    right = sum(manifests[key]["predictions"][0]["class_index"] == label
                for key, label in zip(keys, labels, strict=True))
    assert right >= 0.9 * BURST
    # No error record, nothing left to retry, nothing dead-lettered.
    error_prefix = layout.error_key(keys[0]).rsplit("/", 1)[0] + "/"
    assert s3.list_objects_v2(Bucket=layout.settings.results_bucket, Prefix=error_prefix)["KeyCount"] == 0
    assert source.backlog() == (0, 0)
    dlq = sqs.get_queue_attributes(QueueUrl=dead_letters, AttributeNames=["ApproximateNumberOfMessages"])
    assert dlq["Attributes"]["ApproximateNumberOfMessages"] == "0"

    # The local copy is exactly these inputs' manifests, the outputs they list and their gallery
    # pages (each input's and its model's index): no bucket-wide copy.
    outputs = {key for m in manifests.values() for key in [m["key"], *m["output_keys"]]}
    pages = {page for m in manifests.values() for page in demo.gallery_keys(m)}
    copied = {path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if path.is_file()}
    assert copied == outputs | pages
    assert len(outputs) == BURST * 4  # manifest, heatmap overlay and raw heatmap PNGs, attributions .npy
    assert len(pages) == BURST + 1  # one page per input, one index of the model
    expected = outputs | pages
    assert all((tmp_path / key).stat().st_size > 0 for key in expected)

    # One line per input for people, and the burst's progress down to an empty queue.
    for key in keys:
        line, = [line for line in lines if line.startswith(f"{key}  ")]
        assert "  succeeded  " in line and f"{manifests[key]['key']}  " in line, line
    progress = [line for line in lines if line.startswith("progress: ")]
    assert progress and progress[-1].startswith(f"progress: {BURST} done (0 failed), 0 queued"), progress[-3:]
