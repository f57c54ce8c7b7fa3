"""Text uploads through every family's handler: the sentiment demo model, its sample files.

Each family explains review.txt, reviews.jsonl and reviews.csv with every method it has for text;
the tests read the manifest and every output file back and check their values against the
documents (offsets, sums, escaping) and the demo's truth (labels).
"""

import csv
import html
import io
import json
import string
import time
import uuid

import numpy as np
import pytest
from PIL import Image

from devtools import text_demo
from explain_core.model_card import ModelCard
from explain_core.registry import methods_of
from tests.conftest import event_keys, load_event, read_json, upload_event

pytestmark = pytest.mark.slow

FAMILIES = ("gradient", "perturbation", "shap")
#: render_png's default width: every PNG of a text explanation is this wide.
PNG_WIDTH = 900
#: Characters html.escape rewrites: a token holding one must never appear raw in the HTML.
HTML_SPECIAL = set("<>&'\"")



def words(text: str) -> list[str]:
    """The words the card's settings describe, computed independently of the tokenizer: split on whitespace,
    ASCII punctuation removed (TextVectorization's strip set is Python's string.punctuation), lowercased."""
    cleaned = ("".join(c for c in piece if c not in string.punctuation).lower() for piece in text.split())
    return [word for word in cleaned if word]

def text_key(family: str, prefix: str, name: str) -> str:
    return f"incoming/{family}/{text_demo.MODEL}/{text_demo.VERSION}/{prefix}/{name}"


def results_prefix(key: str) -> str:
    return f"results/{key.removeprefix('incoming/')}/"


def manifest_key(key: str) -> str:
    return results_prefix(key) + "manifest.json"


def family_methods(family: str) -> list[str]:
    return [spec.name for spec in methods_of(family, ModelCard.model_validate(text_demo.card()))]


def body(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture(scope="module", params=FAMILIES)
def explained(request, invoke, s3, deployment):
    """One family's handler on the three sample files (every text method): keys, manifests, seconds."""
    family, prefix = request.param, f"t-{uuid.uuid4().hex[:10]}"
    keys, etags = {}, {}
    for name, data in text_demo.sample_files().items():
        key = text_key(family, prefix, name)
        put = s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=data, Metadata={"methods": "all"})
        keys[name], etags[name] = key, put["ETag"].strip('"')
    started = time.perf_counter()
    response = invoke(family, upload_event(*keys.values(), family=family))
    seconds = time.perf_counter() - started
    print(f"\n{family}: 3 sample files ({', '.join(family_methods(family))}) in {seconds:.1f} s")
    results = deployment.bucket("ResultsBucket")
    manifests = {name: read_json(s3, results, manifest_key(key)) for name, key in keys.items()}
    return {"family": family, "response": response, "keys": keys, "etags": etags, "manifests": manifests,
            "seconds": seconds}


def outputs_of(manifest: dict):
    """(method name, output entry) over every method of a manifest."""
    return [(method["name"], output) for method in manifest["methods"] for output in method["outputs"]]


def test_every_method_explains_the_sample_files(explained):
    assert explained["response"] == {"batchItemFailures": []}
    truth = text_demo.sample_truth()
    for name, manifest in explained["manifests"].items():
        assert manifest["status"] == "succeeded", json.dumps(manifest["methods"])[:3000]
        assert [m["name"] for m in manifest["methods"]] == family_methods(explained["family"])
        documents = truth[name]
        assert manifest["input"]["documents"] == len(documents)
        assert manifest["input"]["format"] == name.rsplit(".", 1)[1]
        # Every document of every file is predicted as the demo's generator labelled it.
        predictions = manifest["predictions"]["documents"]
        assert [p["class_name"] for p in predictions] == [d["label"] for d in documents], name
        assert [p["line"] for p in predictions] == [d["line"] for d in documents], name
        assert [p["tokens"] for p in predictions] == [len(words(d["text"])) for d in documents]
        for method in manifest["methods"]:
            # top_k 1: one output per document, for its predicted class.
            assert [(o["document"], o["class_name"]) for o in method["outputs"]] == [
                (p["document"], p["class_name"]) for p in predictions], method["name"]


def test_outputs_live_under_the_inputs_results_prefix_for_the_uploaded_version(explained, s3, deployment):
    for name, manifest in explained["manifests"].items():
        key = explained["keys"][name]
        assert manifest["input"]["key"] == key
        assert manifest["input"]["etag"] == explained["etags"][name]
        head = s3.head_object(Bucket=deployment.bucket("InputBucket"), Key=key)
        assert manifest["input"]["etag"] == head["ETag"].strip('"')
        attempt = f"{results_prefix(key)}attempts/{manifest['attempt']}/"
        written = set(manifest["output_keys"])
        assert written and all(k.startswith(attempt) for k in written), name
        for method, output in outputs_of(manifest):
            files = [output["tokens"], output["html"], output["image"], output["values"]]
            assert all(k.startswith(f"{attempt}{method}/") and k in written for k in files), (method, files)


def test_token_files_slice_the_documents_and_sum_their_values(explained, s3, deployment):
    results, truth = deployment.bucket("ResultsBucket"), text_demo.sample_truth()
    for name, manifest in explained["manifests"].items():
        for method, output in outputs_of(manifest):
            text = truth[name][output["document"]]["text"]
            found = json.loads(body(s3, results, output["tokens"]))
            assert (found["method"], found["class_name"], found["document"], found["line"]) == (
                method, output["class_name"], output["document"], output["line"])
            tokens = found["tokens"]
            assert [t["token"] for t in tokens] == words(text)
            for token in tokens:
                assert text[token["start"]:token["end"]] == token["text"], (method, token)
                # Every sample document is shorter than the model's max_length: every token is seen.
                assert token["seen"] and np.isfinite(token["value"]), (method, token)
            values = np.array([t["value"] for t in tokens])
            assert found["sum_of_values"] == pytest.approx(values.sum(), rel=1e-9, abs=1e-12)
            assert output["sum_of_values"] == pytest.approx(found["sum_of_values"], rel=1e-9, abs=1e-12)
            strongest = sorted(tokens, key=lambda t: -abs(t["value"]))[:len(output["top_tokens"])]
            assert [abs(t["value"]) for t in output["top_tokens"]] == pytest.approx(
                [abs(t["value"]) for t in strongest])
            # Not all zero: the method attributed something to the document.
            assert np.abs(values).max() > 0, (method, name)


def test_values_csv_has_one_row_per_document_and_token_with_the_same_values(explained, s3, deployment):
    results = deployment.bucket("ResultsBucket")
    for name, manifest in explained["manifests"].items():
        for method in manifest["methods"]:
            (values_key,) = {o["values"] for o in method["outputs"]}
            rows = list(csv.DictReader(io.StringIO(body(s3, results, values_key).decode("utf-8"))))
            expected = []
            for output in method["outputs"]:
                found = json.loads(body(s3, results, output["tokens"]))
                expected += [(str(output["document"]), str(output["line"]), output["class_name"], str(t["index"]),
                              t["text"], t["start"], t["end"], t["value"]) for t in found["tokens"]]
            got = [(r["document"], r["line"], r["class_name"], r["token_index"], r["text"], int(r["start"]),
                    int(r["end"]), float(r["value"])) for r in rows]
            # repr() floats round-trip: the CSV holds exactly the JSON's values.
            assert got == expected, (name, method["name"])


def test_html_escapes_and_shows_every_token_and_the_png_decodes(explained, s3, deployment):
    results = deployment.bucket("ResultsBucket")
    for manifest in explained["manifests"].values():
        for method, output in outputs_of(manifest):
            page = body(s3, results, output["html"]).decode("utf-8")
            tokens = json.loads(body(s3, results, output["tokens"]))["tokens"]
            for token in tokens:
                assert html.escape(token["text"]) in page, (method, token["text"])
                if HTML_SPECIAL & set(token["text"]):
                    assert token["text"] not in page, (method, token["text"])
            assert page.count("data-value=") == len(tokens)
            image = Image.open(io.BytesIO(body(s3, results, output["image"])))
            assert image.format == "PNG"
            image.load()
            assert image.width == PNG_WIDTH and image.height > 60, (method, image.size)


def test_the_escaping_check_meets_an_apostrophe():
    """The CSV sample holds "didn't": the raw-text check of the HTML test is exercised."""
    texts = [d["text"] for documents in text_demo.sample_truth().values() for d in documents]
    assert any(HTML_SPECIAL & set(word) for text in texts for word in text.split())


def test_approximation_checks_hold(explained):
    family = explained["family"]
    checked = 0
    for manifest in explained["manifests"].values():
        for method, output in outputs_of(manifest):
            if method == "IntegratedGradients":
                approximation = output["approximation"]
                assert approximation["relative_error"] < 0.05, output
                assert not output.get("warnings"), output
                checked += 1
            elif method == "TextPartitionExplainer":
                assert isinstance(output["base_value"], float) and output["output_kind"] == "logit"
                approximation = output["approximation"]
                # Owen values of a Partition tree are exactly additive: only float error remains.
                assert approximation["absolute_error"] < 1e-4 * max(1.0, abs(approximation["output_gap"])), output
                assert approximation["relative_error"] < 1e-4, output
                checked += 1
    if family in ("gradient", "shap"):
        assert checked == 10  # 1 + 5 + 4 documents


@pytest.mark.parametrize("family", ["perturbation", "shap"])
def test_the_text_upload_event_files_are_explained(invoke, s3, deployment, family):
    """events/<family>-text-upload.json (sam local invoke's events) name a sample file the handler explains."""
    event = load_event(f"{family}-text-upload.json")
    (key,) = event_keys(event)
    name = key.rsplit("/", 1)[1]
    data = text_demo.sample_files()[name]
    assert json.loads(event["Records"][0]["body"])["Records"][0]["s3"]["object"]["size"] == len(data)
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=data)  # the card's default methods

    assert invoke(family, event) == {"batchItemFailures": []}

    manifest = read_json(s3, deployment.bucket("ResultsBucket"), manifest_key(key))
    assert manifest["status"] == "succeeded"
    assert [m["name"] for m in manifest["methods"]] == text_demo.card()["default_methods"][family]
    assert [p["class_name"] for p in manifest["predictions"]["documents"]] == [
        d["label"] for d in text_demo.sample_truth()[name]]


def test_a_document_past_max_length_has_unseen_tokens(invoke, s3, deployment, unique_prefix):
    """Tokens past the model's max_length get no value (null in JSON, empty in CSV), and the sums skip them."""
    results, extra = deployment.bucket("ResultsBucket"), 12
    # 4-word sentences: the model sees 12 of the 15, still a positive review.
    text = " ".join(["What a great film."] * ((text_demo.MAX_LENGTH + extra) // 4))
    assert len(words(text)) == text_demo.MAX_LENGTH + extra
    key = text_key("gradient", unique_prefix, "long review.txt")
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=f"{text}\r\n".encode(),
                  Metadata={"methods": "IntegratedGradients"})
    assert invoke("gradient", upload_event(key, family="gradient")) == {"batchItemFailures": []}

    manifest = read_json(s3, results, manifest_key(key))
    (prediction,) = manifest["predictions"]["documents"]
    assert (prediction["tokens"], prediction["truncated_tokens"]) == (text_demo.MAX_LENGTH + extra, extra)
    assert manifest["input"]["truncated_documents"] == 1
    (output,) = manifest["methods"][0]["outputs"]
    assert output["approximation"]["relative_error"] < 0.05
    found = json.loads(body(s3, results, output["tokens"]))
    tokens = found["tokens"]
    assert [t["seen"] for t in tokens] == [True] * text_demo.MAX_LENGTH + [False] * extra
    assert all(t["value"] is None for t in tokens[text_demo.MAX_LENGTH:])
    assert found["truncated_tokens"] == extra
    seen = [t["value"] for t in tokens[:text_demo.MAX_LENGTH]]
    assert output["sum_of_values"] == pytest.approx(sum(seen), rel=1e-9)
    rows = list(csv.DictReader(io.StringIO(body(s3, results, output["values"]).decode())))
    assert [r["value"] == "" for r in rows] == [False] * text_demo.MAX_LENGTH + [True] * extra
    page = body(s3, results, output["html"]).decode()
    assert page.count('class="unseen"') == extra


def test_offsets_count_characters_not_bytes(invoke, s3, deployment, unique_prefix):
    """Accents, emoji and a byte-order mark before the text: offsets index the document as a string."""
    results = deployment.bucket("ResultsBucket")
    documents = ["Café 🎬 was great, I loved it!", "Naïve — and the plot was awful… truly dull."]
    data = "\ufeff" + "".join(json.dumps({"text": d}, ensure_ascii=False) + "\r\n" for d in documents)
    key = text_key("perturbation", unique_prefix, "unicode.jsonl")
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=data.encode("utf-8"),
                  Metadata={"methods": "WordOcclusion"})
    assert invoke("perturbation", upload_event(key, family="perturbation")) == {"batchItemFailures": []}

    manifest = read_json(s3, results, manifest_key(key))
    assert [p["class_name"] for p in manifest["predictions"]["documents"]] == ["positive", "negative"]
    for output in manifest["methods"][0]["outputs"]:
        text = documents[output["document"]]
        tokens = json.loads(body(s3, results, output["tokens"]))["tokens"]
        assert [t["token"] for t in tokens] == words(text)
        assert all(text[t["start"]:t["end"]] == t["text"] for t in tokens)
        page = body(s3, results, output["html"]).decode("utf-8")
        assert all(html.escape(t["text"]) in page for t in tokens)


def test_a_target_class_is_explained_for_every_document(invoke, s3, deployment, unique_prefix):
    """target=negative: each document is explained for "negative"; the words that decided a document's
    label push toward "negative" when it is negative, away from it when it is positive."""
    results, name = deployment.bucket("ResultsBucket"), "reviews.jsonl"
    key = text_key("perturbation", unique_prefix, name)
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=text_demo.sample_files()[name],
                  Metadata={"methods": "WordOcclusion", "target": "negative"})
    assert invoke("perturbation", upload_event(key, family="perturbation")) == {"batchItemFailures": []}

    manifest = read_json(s3, results, manifest_key(key))
    outputs = manifest["methods"][0]["outputs"]
    truth = text_demo.sample_truth()[name]
    assert [(o["document"], o["class_name"]) for o in outputs] == [(i, "negative") for i in range(len(truth))]
    for output, document in zip(outputs, truth, strict=True):
        tokens = json.loads(body(s3, results, output["tokens"]))["tokens"]
        deciding = [t["value"] for t in tokens
                    if any(start <= t["start"] and t["end"] <= end for start, end in document["polarity_spans"])]
        assert deciding, document
        expected = 1 if document["label"] == "negative" else -1
        assert np.sign(np.mean(deciding)) == expected, (document["text"], deciding)
