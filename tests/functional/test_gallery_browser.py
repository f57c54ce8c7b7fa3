"""Gallery pages (explain_core.gallery) in headless Chromium (devtools/browser.py), as a person opens
them: produced by the real handlers on the emulator, then opened from a local copy of the results
folder and through a presigned URL on the emulator. No console error, nothing fetched from outside,
every image loads and is the output it stands for; full-page screenshots under the test artifacts."""

import base64
import csv
import io
import json
import re
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from devtools import demo_model, tabular_demo, text_demo
from explain_core import text_report
from explain_core.gallery import EMBED_MAX_SIDE, PLOT_MAX_SIDE
from explain_core.keys import GALLERY_PAGE
from tests.conftest import EVENTS, clear_outputs, png_bytes, read_json, upload_event
from tests.functional.test_gallery import explain_through_the_api

pytestmark = pytest.mark.browser

IMAGE_METHODS = ("GradCAM", "Saliency", "IntegratedGradients")
IMAGE_METRICS = ("Deletion", "Sparseness")  # cheap: 11 model passes and none
IMAGE_MODEL = f"gradient/{demo_model.NAME}/{demo_model.VERSION}/"
TABLE_MODEL = f"shap/breast-cancer-xgb/{tabular_demo.VERSION}/"
TABLE_ROWS = 4


def download(s3, bucket: str, prefix: str, folder):
    """Every object under ``prefix`` into ``folder``, at its key (what `make demo` does to local-results/)."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            target = folder / item["Key"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())


def explain(invoke, s3, deployment, family: str, key: str, body: bytes, metadata: dict) -> dict:
    """Upload, invoke the family's handler, and return the manifest (which must have succeeded)."""
    clear_outputs(s3, deployment, family)
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=body, Metadata=metadata)
    assert invoke(family, upload_event(key, family=family)) == {"batchItemFailures": []}
    relative = key.removeprefix("incoming/")
    manifest = read_json(s3, deployment.bucket("ResultsBucket"), f"results/{relative}/manifest.json")
    assert manifest["status"] == "succeeded", manifest
    return manifest


@pytest.fixture(scope="module")
def image_gallery(invoke, s3, deployment, samples, tmp_path_factory):
    """A triangle explained for its two most probable classes; the model's results folder copied locally."""
    images, labels, _ = samples
    index = list(labels).index(2)
    key = f"incoming/{IMAGE_MODEL}browser/triangle {index}.png"
    manifest = explain(invoke, s3, deployment, "gradient", key, png_bytes(images[index]),
                       {"methods": ",".join(IMAGE_METHODS), "top-k": "2", "metrics": ",".join(IMAGE_METRICS)})
    local = tmp_path_factory.mktemp("image-gallery")
    download(s3, deployment.bucket("ResultsBucket"), f"results/{IMAGE_MODEL}", local)
    return manifest, local


@pytest.fixture(scope="module")
def table_gallery(invoke, s3, deployment, tabular_models, tmp_path_factory):
    """A few patients explained by TreeExplainer; the model's results folder copied locally."""
    lines = (EVENTS / "samples" / "patients.csv").read_text().splitlines()[:TABLE_ROWS + 1]
    key = f"incoming/{TABLE_MODEL}browser/patients.csv"
    manifest = explain(invoke, s3, deployment, "shap", key, ("\n".join(lines) + "\n").encode(),
                       {"methods": "TreeExplainer"})
    local = tmp_path_factory.mktemp("table-gallery")
    download(s3, deployment.bucket("ResultsBucket"), f"results/{TABLE_MODEL}", local)
    return manifest, local, list(csv.DictReader(io.StringIO("\n".join(lines))))


def embedded(image) -> bytes:
    assert image.src.startswith("data:image/"), image.src[:80]
    return base64.b64decode(image.src.split(",", 1)[1])


def other_problems(report) -> list[str]:
    """The report's problems but its dead links (checked on their own)."""
    return [line for line in report.problems if not line.startswith("broken link: ")]


def check_image_page(report, manifest, s3, results_bucket, dead_links=()):
    """The page shows the input, the predictions, and per explained class every method's own overlay;
    nothing goes wrong in the browser, and only ``dead_links`` lead nowhere."""
    assert other_problems(report) == [], "\n".join(other_problems(report))
    assert sorted(report.broken_links) == sorted(dead_links)
    preview = report.images[0]  # the input, at its size (128 x 128: under the preview's cap)
    assert preview.loaded and (preview.natural_width, preview.natural_height) == (
        manifest["input"]["width"], manifest["input"]["height"])
    # Class by class, every method's output: its overlay, then any other PNG file it names (the raw heatmap).
    outputs = [(m["name"], o) for explained in manifest["explained_classes"] for m in manifest["methods"]
               for o in m["outputs"] if o["class_index"] == explained["class_index"]]
    assert len(outputs) == len(IMAGE_METHODS) * 2  # top-k 2: two classes, every method
    expected = [(name, key) for name, output in outputs for key in output.values()
                if isinstance(key, str) and key.endswith(".png") and key in manifest["output_keys"]]
    assert len(report.images) == 1 + len(expected), [image.alt for image in report.images]
    for image, (name, key) in zip(report.images[1:], expected, strict=True):
        assert name in image.alt and image.loaded
        stored = s3.get_object(Bucket=results_bucket, Key=key)["Body"].read()
        with Image.open(io.BytesIO(stored)) as heatmap:
            size = heatmap.size
        assert max(size) <= EMBED_MAX_SIDE  # embedded as written, not re-encoded
        assert embedded(image) == stored and (image.natural_width, image.natural_height) == size, key
    for prediction in manifest["predictions"]:
        assert prediction["class_name"] in report.text
    assert f"{manifest['predictions'][0]['score']:.4g}" in report.text
    for name in IMAGE_METHODS:
        assert name in report.text
    assert "steps=" in report.text  # IntegratedGradients' parameters are shown
    for _, output in outputs:  # each explanation's quality scores
        assert sorted(output["metrics"]) == sorted(IMAGE_METRICS)
        for name, scored in output["metrics"].items():
            # A score, or the error entry's code (GradCAM of the second class may be zero everywhere: empty_map).
            shown = f"{scored['score']:.4g}" if "score" in scored else scored["error"]["code"]
            assert name in report.text and shown in report.text, (name, scored)
    assert not report.screenshot.blank


def test_image_page_from_the_local_results_folder(image_gallery, page_checker, s3, deployment, artifacts_dir):
    manifest, local = image_gallery
    page = local / manifest["results_prefix"] / GALLERY_PAGE
    report = page_checker.check(page.as_uri(), screenshot=artifacts_dir / "gallery-image-local.png")
    check_image_page(report, manifest, s3, deployment.bucket("ResultsBucket"))
    assert report.requests == [page.as_uri()]  # self-contained: every image is embedded
    assert report.links >= 1 + len(manifest["output_keys"])  # the manifest and every output file, all there


def test_image_page_through_a_presigned_url(image_gallery, page_checker, s3, deployment, artifacts_dir):
    manifest, _ = image_gallery
    url = s3.generate_presigned_url("get_object", ExpiresIn=600, Params={
        "Bucket": deployment.bucket("ResultsBucket"), "Key": manifest["results_prefix"] + GALLERY_PAGE})
    assert "X-Amz-Signature=" in url or "Signature=" in url
    report = page_checker.check(url, screenshot=artifacts_dir / "gallery-image-presigned.png")
    # The page's relative links to its files are unsigned: a private bucket (and the emulator) refuses them,
    # as explain_core.gallery documents (they serve a local copy). Only those may be dead here.
    file_links = ["manifest.json", *(key.removeprefix(manifest["results_prefix"]) for key in manifest["output_keys"])]
    check_image_page(report, manifest, s3, deployment.bucket("ResultsBucket"), [quote(link) for link in file_links])
    assert report.status == 200 and report.content_type.startswith("text/html")
    # Nothing but the signed page itself: unsigned relative fetches would fail on a private bucket.
    assert report.requests == [url]


def test_model_index_links_the_input_page(image_gallery, page_checker, s3, deployment, artifacts_dir):
    manifest, local = image_gallery
    page = local / "results" / IMAGE_MODEL / GALLERY_PAGE
    report = page_checker.check(page.as_uri(), screenshot=artifacts_dir / "gallery-model-index.png")
    assert report.problems == [] and report.links == 1 and not report.screenshot.blank
    input_name = manifest["results_prefix"].removeprefix(f"results/{IMAGE_MODEL}").rstrip("/")
    assert input_name in report.text and manifest["predictions"][0]["class_name"] in report.text

    url = s3.generate_presigned_url("get_object", ExpiresIn=600, Params={
        "Bucket": deployment.bucket("ResultsBucket"), "Key": f"results/{IMAGE_MODEL}{GALLERY_PAGE}"})
    presigned = page_checker.check(url)
    assert presigned.broken_links == [quote(f"{input_name}/{GALLERY_PAGE}")]  # unsigned: see above
    assert other_problems(presigned) == [] and presigned.requests == [url] and input_name in presigned.text


def test_table_page_from_the_local_results_folder(table_gallery, page_checker, s3, deployment, artifacts_dir):
    manifest, local, rows = table_gallery
    page = local / manifest["results_prefix"] / GALLERY_PAGE
    report = page_checker.check(page.as_uri(), screenshot=artifacts_dir / "gallery-table-local.png")
    assert report.problems == [] and report.requests == [page.as_uri()] and not report.screenshot.blank
    (method,) = manifest["methods"]
    plots = [key for output in method["outputs"] for key in output["files"] if key.endswith(".png")]
    assert plots and len(report.images) == len(plots)  # every SHAP plot, no input preview for a table
    for image, key in zip(report.images, plots, strict=True):
        assert image.loaded and "TreeExplainer" in image.alt
        stored = s3.get_object(Bucket=deployment.bucket("ResultsBucket"), Key=key)["Body"].read()
        with Image.open(io.BytesIO(stored)) as plot:
            if max(plot.size) <= PLOT_MAX_SIDE:
                assert embedded(image) == stored and (image.natural_width, image.natural_height) == plot.size
            else:  # downscaled for the page, aspect kept
                assert max(image.natural_width, image.natural_height) == PLOT_MAX_SIDE
                assert abs(image.natural_width / image.natural_height - plot.width / plot.height) < 0.02
    assert "Top features per row" in report.text
    summary = json.loads(s3.get_object(Bucket=deployment.bucket("ResultsBucket"),
                                       Key=method["outputs"][0]["summary"])["Body"].read())
    top = summary["rows_detail"][0]["top_features"][0]
    assert top["feature"] in report.text and len(summary["rows_detail"]) == len(rows)


def test_the_api_answers_gallery_url_opens(invoke_function, published_model, api_key, samples, unique_prefix,
                                           page_checker, artifacts_dir):
    """The link a REST API client gets (POST /explanations/gradient) is a page that works in a browser."""
    import urllib.request

    images, _, _ = samples
    result = explain_through_the_api(invoke_function, images[2], unique_prefix)

    report = page_checker.check(result["gallery_url"], screenshot=artifacts_dir / "gallery-api.png")
    assert other_problems(report) == [], "\n".join(other_problems(report))
    assert report.status == 200 and report.requests == [result["gallery_url"]] and not report.screenshot.blank
    with urllib.request.urlopen(result["methods"][0]["outputs"][0]["heatmap_url"], timeout=30) as answer:
        heatmap = answer.read()  # through the answer's own presigned link
    assert heatmap in [embedded(image) for image in report.images[1:]]
    assert all(image.loaded for image in report.images) and "GradCAM" in report.text


TEXT_METHODS = ("Saliency", "IntegratedGradients")
HOSTILE_REVIEW = "<script>alert(1)</script> a truly great film, not bad at all"
SPAN_STYLE = re.compile(r"background-color:rgba\((\d+),(\d+),(\d+),([0-9.]+)\)")


@pytest.fixture(scope="module")
def text_gallery(invoke, s3, deployment, text_model, tmp_path_factory):
    """The demo's reviews plus one with markup in it, explained by two gradient methods; copied locally."""
    body = text_demo.sample_files()["reviews.jsonl"] + (json.dumps({"text": HOSTILE_REVIEW}) + "\n").encode()
    model = f"gradient/{text_demo.MODEL}/{text_demo.VERSION}/"
    manifest = explain(invoke, s3, deployment, "gradient", f"incoming/{model}browser/reviews.jsonl", body,
                       {"methods": ",".join(TEXT_METHODS)})
    local = tmp_path_factory.mktemp("text-gallery")
    download(s3, deployment.bucket("ResultsBucket"), f"results/{model}", local)
    texts = [json.loads(line) for line in body.decode().splitlines()]
    return manifest, local, [t["text"] if isinstance(t, dict) else t for t in texts]


def span_colours(page_html: str) -> list[tuple[int, int, int]]:
    """The on-screen colour (over the white page) of every highlighted token whose opacity is strictly between
    faint and the legend's (MAX_ALPHA: the legend's swatches have it, so finding it would prove nothing)."""
    colours = []
    for r, g, b, alpha in SPAN_STYLE.findall("".join(re.findall(r"<span [^>]*data-value[^>]*>", page_html))):
        alpha = float(alpha)
        if 0.2 <= alpha < text_report.MAX_ALPHA - 0.02:
            colours.append(tuple(round(255 * (1 - alpha) + int(c) * alpha) for c in (r, g, b)))
    return colours


def test_text_page_from_the_local_results_folder(text_gallery, page_checker, artifacts_dir):
    manifest, local, texts = text_gallery
    page = local / manifest["results_prefix"] / GALLERY_PAGE
    report = page_checker.check(page.as_uri(), screenshot=artifacts_dir / "gallery-text-local.png")
    assert report.problems == [], "\n".join(report.problems)  # no console error, overflow or dead link
    assert report.requests == [page.as_uri()] and report.images == [] and not report.screenshot.blank
    assert report.links >= 1 + len(manifest["output_keys"])  # the manifest and every file, all there
    # Every document, as written: the markup of the last one is shown as text, never run.
    for document, text in zip(manifest["predictions"]["documents"], texts, strict=True):
        assert f"Document {document['document']} (line {document['line']}): {document['class_name']}" in report.text
        assert text in report.text
    assert HOSTILE_REVIEW in report.text and report.page_errors == []
    for name in TEXT_METHODS:
        assert report.text.count(name) >= len(texts)

    # The highlighted tokens are drawn: the colours of their backgrounds are on the screenshot.
    colours = span_colours(page.read_text())
    assert len(colours) >= len(texts)
    with Image.open(report.screenshot.path) as shot:
        pixels = np.asarray(shot.convert("RGB")).reshape(-1, 3).astype(int)
    found = [int((np.abs(pixels - colour).max(axis=1) <= 2).sum()) for colour in colours]
    assert sum(n >= 40 for n in found) >= 0.9 * len(colours), list(zip(colours, found, strict=True))
