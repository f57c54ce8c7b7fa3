"""Text uploads that cannot be explained, redelivered, or meet a changed vocabulary: typed outcomes in S3."""

import json

import numpy as np
import pytest

from devtools import text_demo
from devtools.samples import encode_image
from explain_core.settings import Settings
from tests.conftest import read_json, upload_event

pytestmark = pytest.mark.slow

FAMILY = "perturbation"  # the cheapest family: the refusals happen before any method runs
DEFAULTS = Settings(input_bucket="", results_bucket="", model_bucket="")


def text_key(prefix: str, name: str, family: str = FAMILY) -> str:
    return f"incoming/{family}/{text_demo.MODEL}/{text_demo.VERSION}/{prefix}/{name}"


def results_prefix(key: str) -> str:
    return f"results/{key.removeprefix('incoming/')}/"


def error_key(key: str) -> str:
    return f"errors/{key.removeprefix('incoming/')}.json"


def listed(s3, bucket: str, prefix: str) -> dict[str, str]:
    """Key -> ETag of every object under ``prefix``."""
    return {obj["Key"]: obj["ETag"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                                            Prefix=prefix)
            for obj in page.get("Contents", [])}


def jsonl(*lines) -> bytes:
    return "".join(line if isinstance(line, str) else json.dumps(line) for line in lines).encode()


def words(count: int) -> str:
    return " ".join(["great"] * count)


def assert_template_defaults(deployment) -> None:
    """The limits the bad inputs are built around are the function's (template.yaml defaults)."""
    env = deployment.function_for_family(FAMILY).environment
    assert int(env["MAX_TEXT_BYTES"]) == DEFAULTS.max_text_bytes
    assert int(env["MAX_DOCUMENTS_PER_FILE"]) == DEFAULTS.max_documents
    assert int(env["MAX_TOKENS_PER_DOCUMENT"]) == DEFAULTS.max_document_tokens


def bad_uploads() -> dict[str, tuple[bytes, str, int | None, str]]:
    """Name -> (body, expected code, expected line or None, a fragment the message must hold)."""
    png = encode_image(np.zeros((8, 8, 3), dtype=np.uint8), "PNG")
    over_tokens = DEFAULTS.max_document_tokens + 1
    return {
        "picture.txt": (png, "invalid_text", 1, "not UTF-8"),
        "latin1.txt": ("Great film.\nThe café was awful.\n".encode("latin-1"), "invalid_text", 2, "not UTF-8"),
        "empty.txt": (b"", "invalid_text", None, "empty"),
        "broken.jsonl": (jsonl({"text": "great"}, "\n", {"text": "awful"}, "\n", '{"text": "good"\n'),
                         "invalid_text", 3, "line 3 is not valid JSON"),
        "no-text.jsonl": (jsonl({"text": "great"}, "\n", {"review": "awful"}, "\n"), "invalid_text", 2,
                          'no "text" field'),
        "no-column.csv": (b"id,review\n1,great film\n", "invalid_text", 1, "no 'text' column"),
        "long.txt": (words(over_tokens).encode(), "document_too_long", 1,
                     f"more than {DEFAULTS.max_document_tokens} tokens"),
        "many.jsonl": (jsonl(*[json.dumps({"text": "good"}) + "\n" for _ in range(DEFAULTS.max_documents + 1)]),
                       "text_too_large", DEFAULTS.max_documents + 1, f"more than {DEFAULTS.max_documents} documents"),
        "review.pdf": (b"%PDF-1.4 great film", "unsupported_text_format", None, ".pdf"),
        "huge.txt": ((words(DEFAULTS.max_text_bytes // 6 + 1)).encode(), "text_too_large", None,
                     f"the limit is {DEFAULTS.max_text_bytes}"),
    }


def test_bad_uploads_get_typed_error_records_and_the_good_ones_in_the_batch_succeed(invoke, s3, deployment,
                                                                                    unique_prefix):
    assert_template_defaults(deployment)
    inputs, results = deployment.bucket("InputBucket"), deployment.bucket("ResultsBucket")
    bad = {text_key(unique_prefix, name): case for name, case in bad_uploads().items()}
    good = {text_key(unique_prefix, "fine.txt"): b"What a great film, I loved it.\n",
            text_key(unique_prefix, "fine.jsonl"): jsonl({"text": "The plot was awful and dull."}, "\n",
                                                         '"<b>Brilliant</b> & charming"\n')}
    for key, (data, *_) in bad.items():
        s3.put_object(Bucket=inputs, Key=key, Body=data, Metadata={"methods": "WordOcclusion"})
    for key, data in good.items():
        s3.put_object(Bucket=inputs, Key=key, Body=data, Metadata={"methods": "WordOcclusion"})
    # The good ones in the first batch, between bad ones; batches as large as the queue's BatchSize.
    (fine_txt, fine_jsonl), bad_keys = good, list(bad)
    keys = [bad_keys[0], fine_txt, bad_keys[1], fine_jsonl, *bad_keys[2:]]
    size = deployment.function_for_family(FAMILY).batch_size
    assert 4 <= size < len(keys)

    responses = [invoke(FAMILY, upload_event(*keys[i:i + size], family=FAMILY)) for i in range(0, len(keys), size)]

    # Bad uploads are final (retrying cannot fix them): no message goes back to the queue.
    assert responses == [{"batchItemFailures": []}] * len(responses)
    for key, (_, code, line, fragment) in bad.items():
        record = read_json(s3, results, error_key(key))
        assert record["status"] == "failed" and record["retrying"] is False, key
        assert record["input"]["key"] == key and record["family"] == FAMILY
        error = record["error"]
        assert error["code"] == code, (key, error)
        assert fragment in error["message"], (key, error["message"])
        if line is not None:
            assert error["details"]["line"] == line, (key, error)
            assert f"line {line}" in error["message"], (key, error["message"])
        assert not listed(s3, results, results_prefix(key)), key
    for key in good:
        manifest = read_json(s3, results, results_prefix(key) + "manifest.json")
        assert manifest["status"] == "succeeded", manifest["methods"]
        assert not listed(s3, results, error_key(key))
    documents = read_json(s3, results, results_prefix(fine_jsonl) + "manifest.json")["predictions"]["documents"]
    assert [d["class_name"] for d in documents] == ["negative", "positive"]
    assert [d["line"] for d in documents] == [1, 2]
    # The document's markup is shown as text, never as markup.
    (occlusion,) = read_json(s3, results, results_prefix(fine_jsonl) + "manifest.json")["methods"]
    page = s3.get_object(Bucket=results, Key=occlusion["outputs"][1]["html"])["Body"].read().decode()
    # The token is "b>Brilliant</b" (its outer punctuation stays outside the highlighted span).
    assert "&lt;<span" in page and "b&gt;Brilliant&lt;/b</span>&gt;" in page
    assert "<b>" not in page and "</b>" not in page


def test_limits_name_what_was_found(s3, deployment, unique_prefix, invoke):
    """The refusals carry the figures a user needs: tokens and limit, the byte offset of bad UTF-8."""
    inputs, results = deployment.bucket("InputBucket"), deployment.bucket("ResultsBucket")
    cases = {name: bad_uploads()[name] for name in ("long.txt", "latin1.txt", "review.pdf")}
    keys = [text_key(unique_prefix, name) for name in cases]
    for key, (data, *_) in zip(keys, cases.values(), strict=True):
        s3.put_object(Bucket=inputs, Key=key, Body=data)
    assert invoke(FAMILY, upload_event(*keys, family=FAMILY)) == {"batchItemFailures": []}
    long, latin1, pdf = (read_json(s3, results, error_key(key))["error"]["details"] for key in keys)
    # Tokenizing stops at the first token over the limit; "great " is 6 characters.
    assert "tokens" not in long and long["offset"] == 6 * DEFAULTS.max_document_tokens
    assert long["limit"] == DEFAULTS.max_document_tokens
    assert latin1["offset"] == len(b"Great film.\nThe caf")
    assert pdf["extension"] == ".pdf" and ".txt" in pdf["supported"]


def test_a_redelivered_upload_keeps_its_one_manifest(invoke, s3, deployment, unique_prefix):
    inputs, results = deployment.bucket("InputBucket"), deployment.bucket("ResultsBucket")
    key = text_key(unique_prefix, "reviews.jsonl")
    s3.put_object(Bucket=inputs, Key=key, Body=text_demo.sample_files()["reviews.jsonl"],
                  Metadata={"methods": "WordOcclusion"})
    assert invoke(FAMILY, upload_event(key, family=FAMILY)) == {"batchItemFailures": []}
    first = read_json(s3, results, results_prefix(key) + "manifest.json")
    written = listed(s3, results, results_prefix(key))

    # S3 and SQS deliver at least once: the same notification again, received a second time.
    assert invoke(FAMILY, upload_event(key, family=FAMILY, receive_count=2)) == {"batchItemFailures": []}

    second = read_json(s3, results, results_prefix(key) + "manifest.json")
    assert (second["attempt"], second["created_at"]) == (first["attempt"], first["created_at"])
    assert listed(s3, results, results_prefix(key)) == written  # no output rewritten, none added
    assert not listed(s3, results, error_key(key))


VOCAB_KEY = f"models/{text_demo.MODEL}/{text_demo.VERSION}/vocab.txt"


@pytest.fixture
def vocabulary(s3, deployment):
    """The published vocab.txt's lines; the original is put back afterwards (the model is session-wide)."""
    bucket = deployment.bucket("ModelBucket")
    stored = s3.get_object(Bucket=bucket, Key=VOCAB_KEY)
    original, etag = stored["Body"].read(), stored["ETag"]

    def publish(lines: list[str]) -> str:
        return s3.put_object(Bucket=bucket, Key=VOCAB_KEY, Body="".join(f"{t}\n" for t in lines).encode())["ETag"]

    yield original.decode("utf-8").split("\n")[:-1], publish
    # The same bytes, the same ETag: later tests' requests fingerprint as before this test.
    assert s3.put_object(Bucket=bucket, Key=VOCAB_KEY, Body=original)["ETag"] == etag


def test_a_replaced_vocabulary_re_explains_and_a_broken_one_is_an_invalid_model(invoke, s3, deployment,
                                                                                unique_prefix, vocabulary):
    inputs, results = deployment.bucket("InputBucket"), deployment.bucket("ResultsBucket")
    lines, publish = vocabulary
    key = text_key(unique_prefix, "review.txt")
    s3.put_object(Bucket=inputs, Key=key, Body=b"The acting was great.\n", Metadata={"methods": "WordOcclusion"})
    assert invoke(FAMILY, upload_event(key, family=FAMILY)) == {"batchItemFailures": []}
    first = read_json(s3, results, results_prefix(key) + "manifest.json")
    assert first["predictions"]["documents"][0]["class_name"] == "positive"

    # Same model and card, a new vocabulary: "great" and "awful" swap ids.
    swapped = list(lines)
    i, j = swapped.index("great"), swapped.index("awful")
    swapped[i], swapped[j] = swapped[j], swapped[i]
    publish(swapped)
    assert invoke(FAMILY, upload_event(key, family=FAMILY, receive_count=2)) == {"batchItemFailures": []}
    second = read_json(s3, results, results_prefix(key) + "manifest.json")
    assert second["attempt"] != first["attempt"] and second["created_at"] != first["created_at"]
    # The model now reads "great" as "awful".
    assert second["predictions"]["documents"][0]["class_name"] == "negative"
    assert listed(s3, results, results_prefix(key)).keys() == {
        results_prefix(key) + "manifest.json", results_prefix(key) + "index.html", *second["output_keys"]}

    # A token listed twice: the vocabulary no longer maps tokens to one id each.
    duplicated = list(lines)
    duplicated[j] = "great"
    publish(duplicated)
    assert invoke(FAMILY, upload_event(key, family=FAMILY, receive_count=3)) == {"batchItemFailures": []}
    record = read_json(s3, results, error_key(key))
    assert record["error"]["code"] == "invalid_model" and record["retrying"] is False, record
    assert "great" in record["error"]["message"] and "vocab.txt" in record["error"]["message"]
    # The last good result stays in place.
    assert read_json(s3, results, results_prefix(key) + "manifest.json")["attempt"] == second["attempt"]


@pytest.mark.parametrize(("family", "method", "fragment"), [("gradient", "GradCAM", "GradCAM"),
                                                            ("shap", "DeepExplainer", "LSTM")])
def test_a_method_that_cannot_explain_text_is_an_unsupported_model(invoke, s3, deployment, unique_prefix, family,
                                                                   method, fragment):
    key = text_key(unique_prefix, "review.txt", family)
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=b"What a great film.\n",
                  Metadata={"methods": method})
    assert invoke(family, upload_event(key, family=family)) == {"batchItemFailures": []}
    results = deployment.bucket("ResultsBucket")
    record = read_json(s3, results, error_key(key))
    assert record["error"]["code"] == "unsupported_model" and record["retrying"] is False, record
    assert fragment in record["error"]["message"] and "text" in record["error"]["message"]
    assert record["error"]["details"]["methods"] == [method]
    assert not listed(s3, results, results_prefix(key))
