"""Gallery pages (explain_core.gallery): self-contained HTML, escaped user strings, bounded size, the
model index's list, and writes that only ever show the standing manifest."""

import base64
import copy
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from explain_core import gallery
from explain_core.settings import Settings

STORED = sorted((Path(__file__).resolve().parents[1] / "data" / "manifests").glob("*.json"))
HOSTILE = "<script>alert(1)</script>"


class _Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))


def elements(page: str) -> list[tuple[str, dict]]:
    parser = _Elements()
    parser.feed(page)
    return parser.elements


def page_links(page: str) -> list[str]:
    return [attrs["href"] for tag, attrs in elements(page) if tag == "a"]


def page_images(page: str) -> list[bytes]:
    """The decoded bytes of every <img> of a page, after checking the page loads nothing from anywhere:
    no src or href is absolute (http, https, //, or any other scheme but data: for images), no
    script runs (only the JSON data block of an index), every image is a data: URI of a PNG or JPEG."""
    images = []
    for tag, attrs in elements(page):
        assert tag not in ("link", "iframe", "object", "embed", "base", "form"), tag
        if tag == "script":
            assert attrs == {"type": "application/json", "id": gallery.ENTRIES_BLOCK_ID} and "src" not in attrs
        for name in ("src", "href", "srcset", "action"):
            value = attrs.get(name)
            if value is None:
                continue
            assert not value.startswith("//") and ":" not in value.split("/", 1)[0].split("?")[0] or (
                tag == "img" and name == "src" and value.startswith("data:")), (tag, name, value[:80])
        assert not any(name.startswith("on") for name in attrs), attrs
        if tag == "img":
            kind, _, encoded = attrs["src"].removeprefix("data:").partition(";base64,")
            body = base64.b64decode(encoded, validate=True)
            assert kind == {b"\x89P": "image/png", b"\xff\xd8": "image/jpeg"}[body[:2]]
            Image.open(io.BytesIO(body)).verify()
            images.append(body)
    assert "url(" not in page and "@import" not in page  # nothing fetched by the style sheet either
    return images


def png(width: int, height: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def objects_for(manifest: dict) -> dict[str, bytes]:
    """Output bodies for a stored manifest: a PNG per heatmap and plot, a summary JSON per table output."""
    objects = {}
    for i, key in enumerate(manifest["output_keys"]):
        objects[key] = png(32, 24, i) if key.endswith(".png") else b"\x93NUMPY"
    for method in manifest["methods"]:
        for output in method["outputs"]:
            if "summary" in output:
                objects[output["summary"]] = json.dumps({"output_kind": output["output_kind"], "rows_detail": [
                    {"line": 2, "predicted_class": "benign", "model_output": 1.5, "top_features": [
                        {"feature": "mean radius", "value": 12.5, "shap": -0.75}]}]}).encode()
    return objects


def image_manifest() -> dict:
    return json.loads(next(p for p in STORED if p.stem == "gradient-image-jpeg").read_text())


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.stem)
def test_every_stored_manifest_makes_a_self_contained_page_with_its_outputs_embedded(path):
    manifest = json.loads(path.read_text())
    objects = objects_for(manifest)

    page = gallery.input_page(manifest, objects, preview=png(64, 64))

    images = page_images(page)
    expected = [objects[k] for m in manifest["methods"] for o in m["outputs"]
                for k in ([o["heatmap"]] if "heatmap" in o else [f for f in o["files"] if f.endswith(".png")])]
    assert images == [png(64, 64), *expected]
    for method in manifest["methods"]:
        assert method["name"] in page
        if method["status"] == "failed":
            assert "Failed methods" in page and method["error"]["code"] in page
    if manifest["model"]["modality"] == "tabular":
        assert "mean radius = 12.5: -0.75" in page


def test_user_strings_are_escaped_everywhere():
    manifest = image_manifest()
    manifest["input"]["key"] = f'incoming/gradient/shapes/v1/"><img src=x onerror=alert(1)>{HOSTILE}.png'
    manifest["methods"][0]["params"] = {"steps": HOSTILE}
    for part in (manifest["predictions"], manifest["explained_classes"],
                 [o for m in manifest["methods"] for o in m["outputs"]]):
        for item in part:
            item["class_name"] = HOSTILE
    manifest["methods"][0]["outputs"][0]["warnings"] = [HOSTILE]
    manifest["methods"][1].update(status="failed", error={"type": "E", "code": "method_failed", "message": HOSTILE,
                                                          "details": {HOSTILE: HOSTILE}})

    page = gallery.input_page(manifest, objects_for(manifest))

    assert HOSTILE not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not [tag for tag, _ in elements(page) if tag == "script"]
    page_images(page)

    entries = [{**gallery.index_entry(manifest, "results/gradient/shapes/v1/"), "input": HOSTILE + "</script>"}]
    index = gallery.model_index_page("gradient", "shapes", "v1", entries)
    assert HOSTILE not in index and "</script></script>" not in index
    assert gallery.read_entries(index) == entries  # the data block round-trips the hostile name


def test_fields_other_engineers_add_are_shown_generically():
    manifest = image_manifest()
    output = manifest["methods"][0]["outputs"][0]
    output["metrics"] = {
        "Deletion": {"score": 0.1234567, "higher_is_better": False, "params": {"steps": 10}, "passes": 11},
        "MuFidelity": {"higher_is_better": True, "params": {}, "error": {
            "type": "OverTimeBudgetError", "code": "over_time_budget", "message": "needs 90 s"}}}
    output["warnings"] = ["completeness gap 0.3 over 0.05: raise steps"]
    manifest["methods"][1]["outputs"][0]["warnings"] = [{"code": "approximation_error", "parameter": "nb_samples"}]
    raw = output["heatmap"].replace(".png", ".raw.png")
    output["raw_heatmap"] = raw
    manifest["output_keys"].append(raw)
    manifest["methods"][0]["approximation"] = {"completeness_gap": 0.3}
    objects = objects_for(manifest)

    page = gallery.input_page(manifest, objects)

    # The methods' scores side by side per class, each metric's direction said, a failed one's error shown.
    scores = page.split("<h3>Quality metrics</h3>", 1)[1].split("</table>", 1)[0]
    assert "<th>Deletion (lower is better)</th><th>MuFidelity (higher is better)</th>" in scores
    assert (f"<tr><th>{manifest['methods'][0]['name']}</th><td>0.1235</td><td><code>over_time_budget</code> "
            "needs 90 s</td></tr>") in scores
    assert "steps=10" in page  # and each metric's parameters in the method's card
    assert '<div class="warn"><ul><li>completeness gap 0.3 over 0.05: raise steps</li></ul></div>' in page
    assert "completeness_gap" in page
    assert "<td>approximation_error</td>" in page.split('<div class="warn">')[2]  # a list of records, too
    assert objects[raw] in page_images(page)  # an added image output is embedded, and linked
    assert raw.removeprefix(manifest["results_prefix"]) in page_links(page)


def test_large_images_are_downscaled_and_the_page_size_is_capped():
    manifest = image_manifest()
    objects = {k: png(1024, 512, i) if k.endswith(".png") else b"" for i, k in enumerate(manifest["output_keys"])}
    overlays = [k for k in manifest["output_keys"] if k.endswith(".png")]

    page = gallery.input_page(manifest, objects)
    sizes = [Image.open(io.BytesIO(body)).size for body in page_images(page)]
    assert sizes == [(gallery.EMBED_MAX_SIDE, gallery.EMBED_MAX_SIDE // 2)] * len(overlays)

    two = sum(len(base64.b64encode(body)) for body in page_images(page)[:2])
    capped = gallery.input_page(manifest, objects, max_embedded_bytes=two)
    assert page_images(capped) == page_images(page)[:2]
    assert f"{len(overlays) - 2} image(s) not embedded" in capped
    assert "over the page's size cap" in capped


def test_the_preview_of_an_image_input_is_a_bounded_jpeg_and_tables_have_none():
    class Decoded:
        pixels = np.zeros((1000, 3000, 3), dtype=np.uint8)

    preview = Image.open(io.BytesIO(gallery.input_preview(Decoded())))
    assert preview.format == "JPEG" and preview.size == (gallery.PREVIEW_MAX_SIDE, gallery.PREVIEW_MAX_SIDE // 3)
    assert gallery.input_preview(object()) is None


def entry(name: str, created_at: str, status: str = "succeeded") -> dict:
    return {"input": name, "page": f"{name}/index.html", "status": status, "prediction": "circle (0.9)",
            "created_at": created_at, "methods": ["Saliency"], "failed": []}


def test_the_model_index_keeps_the_most_recent_result_per_input():
    entries = []
    for i in range(gallery.RECENT_INPUTS + 5):
        entries = gallery.merge_entry(entries, entry(f"in-{i}.png", f"2026-01-01T00:00:{i:02d}"))
    assert len(entries) == gallery.RECENT_INPUTS
    assert entries[0]["input"] == f"in-{gallery.RECENT_INPUTS + 4}.png" and entries[-1]["input"] == "in-5.png"

    newer = entry("in-10.png", "2026-01-02T00:00:00", status="partial")
    entries = gallery.merge_entry(entries, newer)
    assert entries[0] == newer and sum(e["input"] == "in-10.png" for e in entries) == 1
    # A writer that was overtaken changes nothing.
    assert gallery.merge_entry(entries, entry("in-10.png", "2026-01-01T12:00:00")) == entries

    page = gallery.model_index_page("gradient", "shapes", "v1", entries)
    assert gallery.read_entries(page) == entries
    assert page_links(page)[0] == "in-10.png/index.html"
    page_images(page)


class ConditionalS3:
    """An in-memory bucket with S3's conditional writes (If-Match, If-None-Match: *)."""

    def __init__(self):
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.puts: list[str] = []
        self.before_put = None

    @staticmethod
    def _error(code: str):
        return ClientError({"Error": {"Code": code}}, "op")

    def head_object(self, Bucket, Key):  # noqa: N803 (boto3's names)
        if Key not in self.objects:
            raise self._error("404")
        return {"ETag": self.objects[Key][1]}

    def get_object(self, Bucket, Key):  # noqa: N803
        if Key not in self.objects:
            raise self._error("NoSuchKey")
        body, etag = self.objects[Key]
        return {"ETag": etag, "Body": io.BytesIO(body)}

    def put_object(self, Bucket, Key, Body, ContentType=None, IfMatch=None, IfNoneMatch=None):  # noqa: N803
        if self.before_put is not None:
            hook, self.before_put = self.before_put, None
            hook()
        current = self.objects.get(Key)
        if (IfNoneMatch == "*" and current) or (IfMatch is not None and (not current or current[1] != IfMatch)):
            raise self._error("PreconditionFailed")
        self.objects[Key] = (Body, f'"{len(self.puts)}"')
        self.puts.append(Key)


def stored_manifest(s3: ConditionalS3, manifest: dict) -> None:
    s3.objects[manifest["results_prefix"] + "manifest.json"] = (json.dumps(manifest).encode(), '"m"')


def test_the_writer_shows_the_standing_manifest_only():
    manifest = image_manifest()
    page_key = manifest["results_prefix"] + "index.html"
    index_key = "results/gradient/shapes/v1/index.html"
    s3 = ConditionalS3()
    writer = gallery.GalleryWriter(s3, Settings(input_bucket="in", results_bucket="out", model_bucket="m"))
    stored_manifest(s3, manifest)

    assert writer.write(manifest, objects_for(manifest))
    assert f"<code>{manifest['attempt']}</code>" in s3.objects[page_key][0].decode()
    (listed,) = gallery.read_entries(s3.objects[index_key][0].decode())
    assert listed["page"] == manifest["results_prefix"].removeprefix("results/gradient/shapes/v1/") + "index.html"

    # An attempt whose manifest was replaced (a loser, or one overtaken) writes nothing.
    newer = copy.deepcopy(manifest)
    newer["attempt"], newer["created_at"] = "20990101T000000-ffffffff", "2099-01-01T00:00:00.000+00:00"
    stored_manifest(s3, newer)
    puts = len(s3.puts)
    assert not writer.write(manifest, objects_for(manifest))
    assert len(s3.puts) == puts

    # The newer manifest's writer lands between a writer's check and its write: that write fails, and the
    # next round sees the newer manifest and stops; the page stands for the newer attempt.
    stored_manifest(s3, manifest)
    s3.before_put = lambda: (stored_manifest(s3, newer), writer.write(newer, objects_for(newer)))
    assert not writer.write(manifest, objects_for(manifest))
    assert f"<code>{newer['attempt']}</code>" in s3.objects[page_key][0].decode()
    (listed,) = gallery.read_entries(s3.objects[index_key][0].decode())
    assert listed["created_at"] == newer["created_at"]


@pytest.mark.parametrize("name", ["gradient-image-api", "shap-table-xgboost-job"])
def test_api_inputs_are_not_listed_in_the_models_index(name):
    manifest = json.loads(next(p for p in STORED if p.stem == name).read_text())
    assert manifest["input"]["key"].startswith("requests/") or "/jobs/" in manifest["input"]["key"]
    s3 = ConditionalS3()
    stored_manifest(s3, manifest)
    writer = gallery.GalleryWriter(s3, Settings(input_bucket=manifest["input"]["bucket"], results_bucket="out",
                                                model_bucket="m"))
    assert writer.write(manifest, objects_for(manifest))
    assert s3.puts == [manifest["results_prefix"] + "index.html"]


# ------------------------------------------------------------------------------------------ text files
TEXT_PREFIX = "results/gradient/sentiment-lstm/v1/reviews.jsonl/"


def text_manifest(texts: list[str], methods=("Saliency", "IntegratedGradients")) -> tuple[dict, dict[str, bytes]]:
    """A text file's manifest (the fields modalities.text writes) and its outputs' bodies: per document and
    method a tokens JSON, a PNG and the HTML snippet explain_core.text_report writes, one values CSV per method."""
    from explain_core.modalities.text import TextOutput
    from explain_core.text_report import DocumentExplanation, html_snippet
    from explain_core.tokenizers import Token

    attempt = f"{TEXT_PREFIX}attempts/a1/"
    classes = ["negative", "positive"]
    documents, entries, objects = [], [], {}
    for d, text in enumerate(texts):
        cls = d % 2
        documents.append({"document": d, "line": d + 1, "class_index": cls, "class_name": classes[cls],
                          "score": 0.75 + d / 1000, "tokens": len(text.split()), "truncated_tokens": 0})
    for m, name in enumerate(methods):
        values_key = f"{attempt}{name}/values.csv"
        objects[values_key] = b"document,line\n"
        outputs = []
        for d, text in enumerate(texts):
            cls = documents[d]["class_index"]
            tokens = [Token(w.group(), w.start(), w.end(), 2 + i) for i, w in enumerate(re.finditer(r"\S+", text))]
            values = np.linspace(-1, 1, len(tokens)) * (m + 1)
            explanation = DocumentExplanation(name, cls, classes[cls], documents[d]["score"], d, d + 1, text,
                                              tokens, values)
            keys = {ext: f"{attempt}{name}/{d:03d}-{cls}-{classes[cls]}.{ext}"
                    for ext in ("tokens.json", "html", "png")}
            objects[keys["html"]] = html_snippet(explanation)
            objects[keys["tokens.json"]] = b"{}"
            objects[keys["png"]] = png(40, 20, d)
            top = sorted(range(len(tokens)), key=lambda i: -abs(values[i]))[:5]
            output = TextOutput(
                class_index=cls, class_name=classes[cls], score=documents[d]["score"], document=d, line=d + 1,
                unit="word", tokens=keys["tokens.json"], html=keys["html"], image=keys["png"], values=values_key,
                top_tokens=[{"text": text[tokens[i].start:tokens[i].end], "start": tokens[i].start,
                             "end": tokens[i].end, "value": float(values[i])} for i in top],
                sum_of_values=float(values.sum()), padding_value=0.0)
            outputs.append(output.model_dump(exclude_none=True))
        entries.append({"name": name, "params": {}, "passes_per_image": 1, "reference": "paper", "status": "succeeded",
                        "outputs": outputs, "seconds": 0.5, "seconds_per_image": 0.1})
    manifest = {
        "status": "succeeded", "family": "gradient",
        "input": {"bucket": "in", "key": "incoming/gradient/sentiment-lstm/v1/reviews.jsonl", "etag": "e",
                  "format": "jsonl", "documents": len(texts), "tokens": sum(len(t.split()) for t in texts),
                  "truncated_documents": 0},
        "model": {"name": "sentiment-lstm", "version": "v1", "modality": "text", "framework": "keras",
                  "tokenizer": {"takes": "ids", "max_length": 48}},
        "predictions": {"documents": documents, "documents_per_class": {
            name: sum(doc["class_index"] == i for doc in documents) for i, name in enumerate(classes)}},
        "explained_classes": [{"class_index": i, "class_name": name} for i, name in enumerate(classes)],
        "methods": entries, "attempt": "a1", "created_at": "2026-12-01T21:00:00Z", "results_prefix": TEXT_PREFIX,
        "output_keys": sorted(objects),
    }
    return manifest, objects


def snippet_body(snippet: bytes) -> str:
    """The highlighted text of a snippet as the page carries it: the <div> of spans after the caption."""
    return snippet.decode().split("</figcaption>", 1)[1].rsplit("</figure>", 1)[0]


def spans_of(page: str) -> list[dict]:
    return [attrs for tag, attrs in elements(page) if tag == "span" and "data-value" in attrs]


def test_a_text_page_shows_each_documents_snippet_prediction_top_tokens_and_files():
    texts = ["A great film, I loved it.", "Dull and far too long.", "Not bad at all, the cast is superb."]
    manifest, objects = text_manifest(texts)
    manifest["methods"][1]["outputs"][0]["approximation"] = {"check": "completeness", "absolute_error": 0.25,
                                                             "relative_error": 0.125, "output_gap": 2.0}
    manifest["methods"][1]["outputs"][0]["warnings"] = [{"code": "approximation_error", "message": "raise steps",
                                                         "parameter": "steps", "value": 16}]

    page = gallery.input_page(manifest, objects)

    assert page_images(page) == []  # the snippet shows the document; its PNG is linked, not embedded twice
    for method in manifest["methods"]:
        for output in method["outputs"]:
            assert snippet_body(objects[output["html"]]) in page  # inline, as text_report wrote it
            for token in output["top_tokens"]:
                assert f"<td>{gallery.esc(token['text'])}</td><td>{token['value']:+.4g}</td>" in page
            links = page_links(page)
            for field in ("tokens", "image", "html", "values"):
                assert gallery.href(output[field].removeprefix(TEXT_PREFIX)) in links
    assert len(spans_of(page)) == 2 * sum(len(t.split()) for t in texts)  # every word of every snippet, twice
    for document in manifest["predictions"]["documents"]:
        assert (f"Document {document['document']} (line {document['line']}): {document['class_name']}, "
                f"probability {document['score']:.4g}") in page
    assert page.index("Document 0 (line 1)") < page.index("Document 1 (line 2)") < page.index("Document 2 (line 3)")
    assert "relative_error" in page and '<div class="warn">' in page and "raise steps" in page
    assert "s per document" in page and "Saliency" in page and "IntegratedGradients" in page
    assert "<td>negative</td><td>2</td>" in page and "<td>positive</td><td>1</td>" in page  # documents per class
    assert gallery.index_entry(manifest, "results/gradient/sentiment-lstm/v1/")["prediction"] == \
        "3 documents: 2 negative, 1 positive"


def test_a_text_page_escapes_the_documents_and_never_trusts_a_snippets_markup():
    manifest, objects = text_manifest([f"{HOSTILE} is <b>bold</b> & \"quoted\"", "fine"])
    for method in manifest["methods"]:
        for output in method["outputs"]:
            output["class_name"] = HOSTILE
            for token in output["top_tokens"]:
                token["text"] = HOSTILE
    manifest["predictions"]["documents"][0]["class_name"] = HOSTILE
    manifest["predictions"]["documents_per_class"] = {HOSTILE: 2}
    tampered = manifest["methods"][0]["outputs"][1]["html"]  # a body that is not text_report's escaped snippet
    objects[tampered] = (b'<figure onclick="x()"><script>alert(2)</script><img src=x onerror=alert(3)>'
                         b'<span style="background:url(http://evil/)" title="t">kept</span><div>open')

    page = gallery.input_page(manifest, objects)

    assert HOSTILE not in page and "<b>bold</b>" not in page and "alert(2)" not in page and "evil" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert not [tag for tag, _ in elements(page) if tag in ("script", "img")]
    assert '<span title="t">kept</span><div>open</div>' in page  # what is left of it is closed and escaped
    page_images(page)


def test_a_text_page_is_bounded_many_documents_and_large_snippets():
    texts = [f"review number {i} was {'good' if i % 2 else 'poor'}" for i in range(gallery.MAX_DOCUMENTS_SHOWN + 7)]
    manifest, objects = text_manifest(texts, methods=("Saliency",))

    page = gallery.input_page(manifest, objects)

    outputs = manifest["methods"][0]["outputs"]
    for output in outputs[:gallery.MAX_DOCUMENTS_SHOWN]:
        assert snippet_body(objects[output["html"]]) in page
    for output in outputs[gallery.MAX_DOCUMENTS_SHOWN:]:
        assert snippet_body(objects[output["html"]]) not in page
    assert (f"7 more document(s) (lines {gallery.MAX_DOCUMENTS_SHOWN + 1} to {len(texts)}) not shown" in page)
    assert f"Document {gallery.MAX_DOCUMENTS_SHOWN} " not in page

    # A byte budget for the snippets: those past it are linked and counted.
    first = len(objects[outputs[0]["html"]])
    capped = gallery.input_page(manifest, objects, max_text_bytes=3 * first)
    assert len(spans_of(capped)) < len(spans_of(page))
    shown = sum(snippet_body(objects[o["html"]]) in capped for o in outputs[:gallery.MAX_DOCUMENTS_SHOWN])
    assert 1 <= shown <= 3
    assert f"{gallery.MAX_DOCUMENTS_SHOWN - shown} highlighted document(s) not embedded" in capped
    assert "highlighted document: over the page's size cap" in capped


def test_a_text_page_without_outputs_or_predictions_still_renders():
    manifest, objects = text_manifest(["one two three"])
    manifest["methods"][0].update(status="failed", outputs=[], error={"code": "unsupported_model", "message": "no"})
    manifest["methods"][1]["outputs"][0]["html"] = TEXT_PREFIX + "missing.html"
    page = gallery.input_page(manifest, objects)
    assert "Failed methods" in page and "highlighted document: not available to the page" in page

    manifest["status"], manifest["predictions"] = "failed", None
    for method in manifest["methods"]:
        method["outputs"] = []
    page = gallery.input_page(manifest, {})
    assert "<h2>Predictions</h2>-" in page and "Document 0" not in page
