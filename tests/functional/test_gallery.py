"""Gallery pages through the handlers: an upload's index.html beside its manifest, its model's index,
a table's page, and the API answer's presigned gallery_url (explain_core.gallery)."""

import base64
import io
import json
import re
import urllib.request

from PIL import Image

from explain_core.gallery import read_entries
from tests.conftest import load_event, png_bytes, read_json, upload_event
from tests.unit.test_gallery import page_images, page_links

MODEL_INDEX = "results/gradient/shapes/v1/index.html"


def get_text(s3, bucket: str, key: str) -> str:
    response = s3.get_object(Bucket=bucket, Key=key)
    assert response["ContentType"] == "text/html; charset=utf-8"
    return response["Body"].read().decode("utf-8")


def overlays_of(s3, bucket: str, manifest: dict) -> dict[str, bytes]:
    """Heatmap bytes by method name (one explained class)."""
    return {m["name"]: s3.get_object(Bucket=bucket, Key=m["outputs"][0]["heatmap"])["Body"].read()
            for m in manifest["methods"]}


def test_an_upload_gets_a_page_beside_its_manifest_and_a_line_in_its_models_index(invoke, s3, deployment, samples,
                                                                                   unique_prefix):
    images, labels, _ = samples
    inputs, results = deployment.bucket("InputBucket"), deployment.bucket("ResultsBucket")
    key = f"incoming/gradient/shapes/v1/{unique_prefix}/look at me.png"
    s3.put_object(Bucket=inputs, Key=key, Body=png_bytes(images[1]), Metadata={"methods": "Saliency,GradCAM"})

    assert invoke("gradient", upload_event(key, family="gradient")) == {"batchItemFailures": []}

    prefix = f"results/{key.removeprefix('incoming/')}/"
    manifest = read_json(s3, results, prefix + "manifest.json")
    page = get_text(s3, results, prefix + "index.html")
    embedded = page_images(page)  # data: URIs only (checked there), decoded
    # The input's preview (JPEG, at its size: 128 px is under the preview cap), then one overlay per method,
    # embedded byte for byte as the function wrote it.
    preview = Image.open(io.BytesIO(embedded[0]))
    assert preview.format == "JPEG" and preview.size == (manifest["input"]["width"], manifest["input"]["height"])
    pngs = [s3.get_object(Bucket=results, Key=k)["Body"].read() for k in manifest["output_keys"] if k.endswith(".png")]
    assert sorted(embedded[1:]) == sorted(pngs)  # every PNG output (overlays, raw heatmaps), nothing else
    for overlay in overlays_of(s3, results, manifest).values():
        assert overlay in embedded
    assert manifest["attempt"] in page and manifest["predictions"][0]["class_name"] in page
    # Relative links reach the manifest and the raw files of a local copy.
    assert "manifest.json" in page_links(page)
    assert {k.removeprefix(prefix).replace(" ", "%20") for k in manifest["output_keys"]} <= set(page_links(page))

    # The model's index lists the input, newest first, with its status and prediction, linking its page.
    entries = read_entries(get_text(s3, results, MODEL_INDEX))
    (entry,) = [e for e in entries if e["input"] == f"{unique_prefix}/look at me.png"]
    assert entry["page"] == f"{unique_prefix}/look at me.png/index.html"
    assert entry["status"] == "succeeded" and entry["methods"] == ["Saliency", "GradCAM"]
    assert entry["prediction"].startswith(manifest["predictions"][0]["class_name"])
    assert entries[0] == entry  # the most recent
    assert labels[1] == manifest["predictions"][0]["class_index"]


def test_a_tables_page_embeds_the_shap_plots_and_lists_top_features_per_row(invoke, s3, deployment, tabular_models,
                                                                              unique_prefix):
    inputs, results = deployment.bucket("InputBucket"), deployment.bucket("ResultsBucket")
    key = f"incoming/shap/breast-cancer-xgb/v1/{unique_prefix}/rows.csv"
    s3.put_object(Bucket=inputs, Key=key, Body=_sample_csv(), Metadata={"methods": "TreeExplainer"})

    assert invoke("shap", upload_event(key, family="shap")) == {"batchItemFailures": []}

    prefix = f"results/{key.removeprefix('incoming/')}/"
    manifest = read_json(s3, results, prefix + "manifest.json")
    page = get_text(s3, results, prefix + "index.html")
    (output,) = manifest["methods"][0]["outputs"]
    plots = [s3.get_object(Bucket=results, Key=k)["Body"].read() for k in output["files"] if k.endswith(".png")]
    assert plots and page_images(page) == plots  # bar, beeswarm, waterfalls: SHAP's own figures
    summary = read_json(s3, results, output["summary"])
    for row in summary["rows_detail"]:
        top = row["top_features"][0]
        assert f"{top['feature']} = " in page and f"{top['shap']:+.4g}" in page


def _sample_csv() -> bytes:
    from devtools import tabular_demo

    rows, _ = tabular_demo.sample_rows(4)
    return tabular_demo.sample_csv(rows)


def explain_through_the_api(invoke_function, image, name: str) -> dict:
    """The answer of POST /explanations/gradient (GradCAM) for ``image``, asserted 200."""
    event = load_event("api-explain-gradient.json")
    request = json.loads(event["body"])
    request.update(methods=["GradCAM"], filename=f"{name}.png",
                   input_base64=base64.b64encode(png_bytes(image)).decode())
    event["body"] = json.dumps(request)
    response = invoke_function("GradientFunction", event)
    assert response["statusCode"] == 200, response["body"][:2000]
    return json.loads(response["body"])


def test_the_api_answer_links_the_gallery_page(invoke_function, published_model, api_key, samples, unique_prefix):
    images, _, _ = samples
    result = explain_through_the_api(invoke_function, images[2], unique_prefix)
    with urllib.request.urlopen(result["gallery_url"], timeout=30) as answer:  # presigned, from the emulator
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
        page = answer.read().decode()
    with urllib.request.urlopen(result["methods"][0]["outputs"][0]["heatmap_url"], timeout=30) as answer:
        heatmap = answer.read()
    assert heatmap in page_images(page)[1:]
    assert result["results_prefix"] in result["gallery_url"].split("?")[0].replace("%2F", "/")


def test_a_text_files_page_shows_every_documents_highlighted_explanations(invoke, s3, deployment, text_model,
                                                                          unique_prefix):
    from devtools import text_demo

    inputs, results = deployment.bucket("InputBucket"), deployment.bucket("ResultsBucket")
    body = text_demo.sample_files()["reviews.jsonl"]
    key = f"incoming/gradient/{text_demo.MODEL}/{text_demo.VERSION}/{unique_prefix}/reviews.jsonl"
    s3.put_object(Bucket=inputs, Key=key, Body=body, Metadata={"methods": "Saliency,IntegratedGradients"})

    assert invoke("gradient", upload_event(key, family="gradient")) == {"batchItemFailures": []}

    prefix = f"results/{key.removeprefix('incoming/')}/"
    manifest = read_json(s3, results, prefix + "manifest.json")
    assert manifest["status"] == "succeeded" and manifest["model"]["modality"] == "text"
    page = get_text(s3, results, prefix + "index.html")
    assert page_images(page) == []  # self-contained: the snippets are inline HTML, the PNGs linked
    documents = manifest["predictions"]["documents"]
    assert len(documents) == len(body.decode().splitlines()) > 1
    for document in documents:
        assert f"Document {document['document']} (line {document['line']}): {document['class_name']}" in page
    for method in manifest["methods"]:
        assert len(method["outputs"]) == len(documents)
        for output in method["outputs"]:
            snippet = s3.get_object(Bucket=results, Key=output["html"])["Body"].read().decode()
            assert snippet.split("</figcaption>", 1)[1].rsplit("</figure>", 1)[0] in page  # every word's span
            for field in ("tokens", "image", "values"):
                assert output[field].removeprefix(prefix) in page_links(page)
    # The document texts are in the page through their snippets (escaped by text_report).
    for line in body.decode().splitlines():
        text = json.loads(line)
        text = text["text"] if isinstance(text, dict) else text
        assert all(word in page for word in re.findall(r"\w+", text))

    entries = read_entries(get_text(s3, results, f"results/gradient/{text_demo.MODEL}/{text_demo.VERSION}/index.html"))
    (entry,) = [e for e in entries if e["input"] == f"{unique_prefix}/reviews.jsonl"]
    counts = manifest["predictions"]["documents_per_class"]
    assert entry["prediction"] == f"{len(documents)} documents: " + ", ".join(
        f"{n} {name}" for name, n in counts.items() if n)
    assert entry["status"] == "succeeded" and entry["page"] == f"{unique_prefix}/reviews.jsonl/index.html"
