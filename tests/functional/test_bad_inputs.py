"""Bad input: every case yields a typed error record in S3 and no crash."""

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from devtools.local.events import deliver
from devtools.samples import encode_image
from tests.conftest import clear_outputs, event_keys, load_event, png_bytes, read_json


def huge_header_png(width: int, height: int) -> bytes:
    """A ~70-byte PNG whose header claims width x height pixels (a decompression bomb)."""
    data = png_bytes(np.zeros((1, 1, 3), dtype=np.uint8))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    patched = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    return data[:8] + patched + data[8 + len(patched):]


def jpeg_bytes(pixels) -> bytes:
    return encode_image(pixels, "JPEG", quality=90)


def tiff_bytes(pixels) -> bytes:
    return encode_image(pixels, "TIFF")


@pytest.fixture(scope="module")
def bad_inputs(samples):
    images, _, _ = samples
    good = png_bytes(images[0])
    prefix = "incoming/gradient/shapes/v1/bad/"
    return {
        # key: (body, metadata, expected error code)
        prefix + "not-an-image.png": (b"hello, this is not an image\n" * 20, {}, "invalid_image"),
        prefix + "truncated.jpg": (jpeg_bytes(images[1])[:400], {}, "invalid_image"),
        prefix + "empty.png": (b"", {}, "invalid_image"),
        prefix + "bomb.png": (huge_header_png(8000, 8000), {}, "image_too_large"),
        prefix + "scan.tiff": (tiff_bytes(images[2]), {}, "unsupported_format"),
        "incoming/gradient/no-such-model/v1/bad/circle.png": (good, {}, "unknown_model"),
        prefix + "unknown-method.png": (good, {"methods": "Saliency,NoSuchMethod"}, "unknown_method"),
        prefix + "out-of-range.png": (
            good,
            {"methods": "IntegratedGradients", "params": json.dumps({"IntegratedGradients": {"steps": 10**9}})},
            "invalid_parameter",
        ),
        prefix + "perturbation-method.png": (good, {"methods": "Occlusion"}, "unknown_method"),
        "incoming/gradient/shapes/no-version.png": (good, {}, "invalid_key"),
    }


def test_bomb_header_is_small_but_claims_64_megapixels():
    data = huge_header_png(8000, 8000)
    assert len(data) < 200
    assert Image.open(io.BytesIO(data)).size == (8000, 8000)


def test_every_bad_input_gets_an_error_record_and_the_batch_survives(invoke, s3, deployment, bad_inputs):
    event = load_event("gradient-bad-inputs.json")
    assert sorted(event_keys(event)) == sorted(bad_inputs)
    clear_outputs(s3, deployment, "gradient")
    for key, (body, metadata, _) in bad_inputs.items():
        s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=body, Metadata=metadata)

    response = invoke("gradient", event)

    # Only the message that is not an S3 notification is reported failed (it goes to the DLQ);
    # bad uploads are final: retrying cannot fix them.
    poison = next(r["messageId"] for r in event["Records"] if r["body"].startswith('"'))
    assert response == {"batchItemFailures": [{"itemIdentifier": poison}]}
    results = deployment.bucket("ResultsBucket")
    for key, (_, _, code) in bad_inputs.items():
        record = read_json(s3, results, f"errors/{key.removeprefix('incoming/')}.json")
        assert record["status"] == "failed" and record["retrying"] is False, key
        assert record["error"]["code"] == code, (key, record["error"])
        assert record["error"]["message"], key
        assert record["input"]["key"] == key and record["family"] == "gradient"
    assert s3.list_objects_v2(Bucket=results, Prefix="results/gradient/")["KeyCount"] == 0


def test_error_messages_say_what_is_wrong(s3, deployment):
    results = deployment.bucket("ResultsBucket")
    prefix = "errors/gradient/shapes/v1/bad/"
    assert "40000000" in read_json(s3, results, prefix + "bomb.png.json")["error"]["message"]
    assert "TIFF" in read_json(s3, results, prefix + "scan.tiff.json")["error"]["message"]
    out_of_range = read_json(s3, results, prefix + "out-of-range.png.json")["error"]
    assert "steps" in out_of_range["message"] and out_of_range["details"]["bounds"]["maximum"] == 512
    unknown = read_json(s3, results, prefix + "perturbation-method.png.json")["error"]["message"]
    assert "perturbation family" in unknown and "GradCAM" in unknown


def test_transient_failure_is_retried_with_an_error_record(deployment, samples, s3, lambda_context):
    """An S3 failure (here: a results bucket that does not exist) reports the message for retry."""
    from explain_core.session import ExplanationSession
    from explain_core.settings import Settings
    from explain_core.sqs_adapter import SqsAdapter

    images, _, _ = samples
    event = load_event("gradient-upload.json")
    (key,) = event_keys(event)
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[0]),
                  Metadata={"methods": "Saliency"})
    settings = Settings(input_bucket=deployment.bucket("InputBucket"), results_bucket="explain-missing-bucket",
                        model_bucket=deployment.bucket("ModelBucket"))
    uploads = SqsAdapter(ExplanationSession("gradient", settings, s3))

    response = uploads.handle_sqs_event(deliver(event, s3), lambda_context)

    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}


def test_a_method_that_would_outlast_the_invocation_is_refused(deployment, samples, s3, monkeypatch):
    """With 30 s left, 20,000 RISE passes cannot finish: the method is refused, the others run."""
    from devtools.local.lambda_service import LocalLambdaContext
    from explain_core.session import ExplanationSession
    from explain_core.settings import Settings
    from explain_core.sqs_adapter import SqsAdapter

    images, _, _ = samples
    event = load_event("perturbation-upload.json")
    (key,) = event_keys(event)
    clear_outputs(s3, deployment, "perturbation")
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[0]),
                  Metadata={"methods": "Occlusion,Rise", "params": json.dumps({"Rise": {"nb_samples": 20000}})})
    settings = Settings(input_bucket=deployment.bucket("InputBucket"),
                        results_bucket=deployment.bucket("ResultsBucket"),
                        model_bucket=deployment.bucket("ModelBucket"))
    uploads = SqsAdapter(ExplanationSession("perturbation", settings, s3))
    # Slow the measured forward pass down to a MobileNet-like 40 ms per image.
    context = LocalLambdaContext("budget-test", 3008, timeout_seconds=30)

    monkeypatch.setattr("explain_core.attribution.forward_seconds_per_image", lambda *args: 0.04)

    assert uploads.handle_sqs_event(deliver(event, s3), context) == {"batchItemFailures": []}

    manifest = read_json(s3, deployment.bucket("ResultsBucket"),
                         f"results/{key.removeprefix('incoming/')}/manifest.json")
    methods = {m["name"]: m for m in manifest["methods"]}
    assert manifest["status"] == "partial"
    assert methods["Occlusion"]["status"] == "succeeded"
    assert methods["Rise"]["status"] == "failed"
    assert methods["Rise"]["error"]["code"] == "over_time_budget"
    assert "800 s" in methods["Rise"]["error"]["message"]  # 20,000 passes x 40 ms
