"""The demo's watch mode, piece by piece: keys from SQS messages, an input's local copy, its status
line, and the functions' output kept off the console."""

import io
import json
import os
import sys

import pytest
from botocore.exceptions import ClientError

from devtools import demo
from devtools.local import lambda_service


def notification(*keys: str, event: str = "ObjectCreated:Put", etag: str = "abc") -> str:
    return json.dumps({"Records": [
        {"eventName": event, "eventTime": "2026-01-02T03:04:05.678Z",
         "s3": {"bucket": {"name": "in"}, "object": {"key": key, "size": 1, "eTag": etag}}}
        for key in keys
    ]})


def test_keys_of_a_batch_are_decoded_and_test_events_name_none():
    messages = [
        {"MessageId": "1", "Body": notification("incoming/gradient/m/v1/my+photo%281%29.png")},
        {"MessageId": "2", "Body": json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "in"})},
        {"MessageId": "3", "Body": "not json"},
        {"MessageId": "4", "Body": notification("incoming/gradient/m/v1/gone.png", event="ObjectRemoved:Delete")},
        {"MessageId": "5", "Body": notification("incoming/gradient/m/v1/my+photo%281%29.png", "a/b%2Bc.png")},
    ]
    objects = lambda_service.notified_objects(messages)
    assert [(o.message_id, o.key) for o in objects] == [
        ("1", "incoming/gradient/m/v1/my photo(1).png"), ("5", "incoming/gradient/m/v1/my photo(1).png"),
        ("5", "a/b+c.png")]
    assert objects[0].etag == "abc" and objects[0].event_time == "2026-01-02T03:04:05.678Z"
    assert lambda_service.notified_keys(messages) == ["incoming/gradient/m/v1/my photo(1).png", "a/b+c.png"]
    # The records of an SQS event (what the handler receives) work too.
    event = lambda_service.sqs_event([{**m, "ReceiptHandle": "r", "MD5OfBody": ""} for m in messages], "arn")
    assert lambda_service.notified_keys(event["Records"]) == lambda_service.notified_keys(messages)


class FakeS3:
    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects

    def get_object(self, Bucket, Key):  # noqa: N803 (boto3's names)
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Key])}


def manifest(key: str, outputs: list[str]) -> dict:
    return {"kind": "manifest", "key": key, "status": "succeeded", "output_keys": outputs}


def test_an_input_copy_holds_its_manifest_and_listed_outputs_only(tmp_path):
    base = "results/gradient/m/v1/cat.png/"
    first = manifest(base + "manifest.json", [base + "attempts/a/Saliency/1-cat.png", base + "attempts/a/x.npy"])
    s3 = FakeS3({base + "manifest.json": json.dumps(first).encode(), **{k: b"1" for k in first["output_keys"]},
                 "results/gradient/m/v1/other.png/manifest.json": b"{}"})
    copied = demo.copy_outcome(s3, "results", first, tmp_path)
    assert copied[-1] == tmp_path / base / "manifest.json"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        [base + "manifest.json", *first["output_keys"]])
    # The gallery pages (the input's, its model's index) are copied when the function wrote them.
    s3.objects.update({base + "index.html": b"<html>", "results/gradient/m/v1/index.html": b"<html>"})
    first.update(family="gradient", model={"name": "m", "version": "v1"})
    copied = demo.copy_outcome(s3, "results", first, tmp_path)
    assert copied[:2] == [tmp_path / base / "index.html", tmp_path / "results/gradient/m/v1/index.html"]
    assert copied[-1] == tmp_path / base / "manifest.json"
    for page in (base + "index.html", "results/gradient/m/v1/index.html"):
        (tmp_path / page).unlink()
        del s3.objects[page]

    # A new attempt replaces the manifest: the outputs of the old one go, with their emptied folders.
    second = manifest(base + "manifest.json", [base + "attempts/b/GradCAM/1-cat.png"])
    s3.objects.update({base + "manifest.json": json.dumps(second).encode(), second["output_keys"][0]: b"2"})
    demo.copy_outcome(s3, "results", second, tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == sorted([
        "results", "results/gradient", "results/gradient/m", "results/gradient/m/v1", base.rstrip("/"),
        base + "manifest.json", base + "attempts", base + "attempts/b", base + "attempts/b/GradCAM",
        second["output_keys"][0]])


def test_an_error_record_is_copied_alone_and_keys_stay_inside_the_output_folder(tmp_path):
    error = {"kind": "error", "key": "errors/gradient/m/v1/x.png.json", "error": {"code": "invalid_image"}}
    s3 = FakeS3({error["key"]: b"{}", "results/../../escape": b"no"})
    assert demo.copy_outcome(s3, "results", error, tmp_path / "out") == [tmp_path / "out" / error["key"]]
    sneaky = manifest("results/a/manifest.json", ["results/../../escape"])
    s3.objects["results/a/manifest.json"] = b"{}"
    demo.copy_outcome(s3, "results", sneaky, tmp_path / "out")
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize(("found", "status"), [
    (None, "no result"),
    ({"kind": "manifest", "status": "succeeded", "methods": [{"name": "Saliency", "status": "succeeded"}]},
     "succeeded"),
    ({"kind": "manifest", "status": "partial", "methods": [
        {"name": "Saliency", "status": "succeeded"},
        {"name": "GradCAM", "status": "failed", "error": {"code": "method_failed"}}]},
     "partial (GradCAM: method_failed)"),
    ({"kind": "error", "error": {"code": "invalid_image"}, "retrying": False}, "failed invalid_image"),
    ({"kind": "error", "error": {"code": "internal_error"}, "retrying": True}, "failed internal_error (will retry)"),
    ({"kind": "error", "error": {"code": "internal_error"}, "dead_lettered": True},
     "failed internal_error (dead-lettered)"),
])
def test_status_of_an_input(found, status):
    assert demo.status_of(found) == status


def test_input_line_names_key_status_prediction_local_copy_and_time(tmp_path):
    found = {"kind": "manifest", "status": "succeeded", "methods": [], "model": {"modality": "image"},
             "predictions": [{"class_name": "circle", "score": 0.987}]}
    line = demo.input_line({"key": "incoming/gradient/m/v1/c.png", "status": "succeeded", "outcome": found,
                            "local": tmp_path / "manifest.json", "seconds": 0.42, "batch": 8, "latency": 3.21})
    assert line == (f"incoming/gradient/m/v1/c.png  succeeded  circle (0.99)  -> {tmp_path / 'manifest.json'}  "
                    "0.4 s (batch of 8), 3.2 s after upload")


def test_burst_progress_counts_done_failed_and_queued():
    burst = demo.Burst()
    burst.add("succeeded", 0.0)
    burst.add("failed invalid_image", 0.0)
    burst.add("partial (GradCAM: method_failed)", 0.0)
    assert burst.line(queued=7).startswith("progress: 3 done (1 failed), 7 queued, ")
    burst.reset()
    assert (burst.done, burst.failed, burst.started) == (0, 0, None)


def test_function_output_goes_to_the_log_and_comes_back(tmp_path):
    from aws_lambda_powertools import Logger

    console = io.StringIO()
    logger = Logger(service="watch-mode-test", stream=console)  # built before: holds the console
    with open(tmp_path / "functions.log", "a", buffering=1) as stream:
        lambda_service.send_function_output_to(stream)
        try:
            with lambda_service.captured_output():
                logger.info("json line")
                print("emf metrics")
                sys.stderr.write("python stderr\n")
                os.write(2, b"c++ log on fd 2\n")
        finally:
            lambda_service.send_function_output_to(None)
    logged = (tmp_path / "functions.log").read_text()
    for text in ('"message":"json line"', "emf metrics", "python stderr", "c++ log on fd 2"):
        assert text in logged
    assert console.getvalue() == ""
    logger.info("after")  # back on the stream it was built with
    assert '"message":"after"' in console.getvalue()
