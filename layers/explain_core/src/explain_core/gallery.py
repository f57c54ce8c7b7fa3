"""Gallery pages: a manifest and its outputs as HTML pages a person can look at.

Two pages, both self-contained (no script, style sheet, font or image fetched from anywhere: every
image is a ``data:`` URI, and a Content-Security-Policy forbids anything else), so they work from
a local folder and through a presigned S3 URL alike, where relative links to sibling objects of
a private bucket cannot. Relative links to the manifest and the raw files are extras for a local
copy.

- ``results/<family>/<model>/<version>/<input>/index.html`` (:func:`input_page`): the input's
  preview, its predictions, per explained class every method's overlay (or a table's SHAP plots
  and top features per row; a text file is laid out per document instead: its highlighted
  snippets and top tokens, see ``BODY_SECTIONS``), per method its time, parameters and any further
  fields the manifest carries (metrics, approximation, warnings, ...), failed methods with their error.
- ``results/<family>/<model>/<version>/index.html`` (:func:`model_index_page`): the most recent
  inputs of the model, with their status and prediction, linking each input's page. Its list is
  kept in the page itself (a JSON data block) and updated by compare-and-swap.

Both are views of the manifest, written after it (:class:`GalleryWriter`, called by
``ExplanationSession.write``): an input's page is only written while the manifest it shows is
the standing one, by a conditional write on the page, so the page that stands is always the
standing manifest's. Every string from the input, the card or the request is HTML-escaped.

Nothing here imports the ML stack; Pillow is imported only to downscale an embedded image.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Mapping
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from explain_core.errors import is_missing_object, is_precondition_failed
from explain_core.keys import GALLERY_PAGE, KeyLayout
from explain_core.settings import Settings

#: Total bytes of images embedded in one page; outputs beyond it are linked, not embedded, and the
#: page says how many were left out.
MAX_EMBEDDED_BYTES = 8 * 1024 * 1024
#: An embedded overlay with a longer side than this is downscaled for the page (the file keeps its size).
EMBED_MAX_SIDE = 512
#: The same for a table's SHAP plots, whose text must stay readable.
PLOT_MAX_SIDE = 1280
#: The input's preview: its longer side at most this many pixels.
PREVIEW_MAX_SIDE = 384
#: Table rows whose top features a page lists (the summary JSON has them all).
MAX_TABLE_ROWS_SHOWN = 50
#: Top features shown per table row.
TOP_FEATURES_SHOWN = 5
#: Documents of a text input a page shows (the values CSV and the tokens JSON files have them all).
MAX_DOCUMENTS_SHOWN = 20
#: Total bytes of highlighted text snippets (text_report.html_snippet) embedded in one page; beyond it
#: a snippet is linked, not embedded, and the page says how many were left out.
MAX_EMBEDDED_TEXT_BYTES = 2 * 1024 * 1024
#: Inputs the per-model index lists, the most recent first.
RECENT_INPUTS = 50
#: Compare-and-swap rounds of a page write before giving up (each lost round means another writer won).
PAGE_WRITE_ATTEMPTS = 8
#: The id of the data block that carries the per-model index's list.
ENTRIES_BLOCK_ID = "gallery-entries"
CONTENT_TYPE = "text/html; charset=utf-8"
#: Nothing is loaded from anywhere: images are data: URIs, styles inline, no scripts at all.
CONTENT_SECURITY_POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
                           "form-action 'none'")
#: API jobs' inputs (explain_core.jobs): ``<model>/<version>/jobs/<job id>/<file>``.
JOB_INPUT = re.compile(r"^jobs/[0-9a-f]{32}/")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#1b1f24;background:#fff}
h1{font-size:1.35rem;word-break:break-all}h2{font-size:1.15rem;margin-top:1.8rem;border-bottom:1px solid #ccd}
h3{font-size:1rem;margin:.2rem 0}table{border-collapse:collapse;margin:.4rem 0}
td,th{border:1px solid #ccd;padding:.2rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}
.card td,td.ref{overflow-wrap:anywhere}
th{background:#f2f4f7}.grid{display:flex;flex-wrap:wrap;gap:1rem}
.card{border:1px solid #ccd;border-radius:6px;padding:.6rem;max-width:540px;overflow-x:auto}.card.wide{max-width:960px}
.images{display:flex;flex-wrap:wrap;gap:.4rem;align-items:flex-start}
.card img,.preview img{display:block;min-width:192px;max-width:512px;height:auto;image-rendering:pixelated}
.plots img{display:block;max-width:100%;min-width:0;height:auto;margin:.3rem 0;image-rendering:auto}
.status-succeeded{color:#176f2c}.status-partial{color:#9a5b00}.status-failed{color:#b42318}.status-skipped{color:#555}
.warn{background:#fff4e5;border-left:4px solid #f79009;padding:.3rem .6rem}
.error{background:#fef3f2;border-left:4px solid #d92d20;padding:.3rem .6rem}
.note{color:#555;font-size:.85rem}code{font-size:.85rem;word-break:break-all}
.snippet{overflow-wrap:anywhere;margin:.3rem 0}.document{border-left:3px solid #ccd;padding-left:.8rem}
.card.text{width:560px;max-width:100%;box-sizing:border-box}
"""


# ------------------------------------------------------------------------------------------ helpers
def esc(value: Any) -> str:
    """Text for HTML content or a quoted attribute."""
    return html.escape(str(value), quote=True)


def href(relative_path: str) -> str:
    """A relative link to ``relative_path`` (a key below the page's folder), escaped for an attribute.

    Percent-encoding keeps ``:``, ``?`` and ``#`` of a key from making the link absolute or cutting it.
    """
    return esc(quote(relative_path, safe="/"))


def image_kind(body: bytes) -> str | None:
    """``image/png`` or ``image/jpeg`` from the bytes, else None."""
    if body.startswith(PNG_MAGIC):
        return "image/png"
    if body.startswith(JPEG_MAGIC):
        return "image/jpeg"
    return None


def input_preview(content) -> bytes | None:
    """A JPEG preview of a decoded image input (its ``pixels``), longer side at most PREVIEW_MAX_SIDE;
    None for an input that is not an image (a table)."""
    pixels = getattr(content, "pixels", None)
    if pixels is None:
        return None
    from PIL import Image

    image = Image.fromarray(pixels).convert("RGB")
    image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE), Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


class _Embedder:
    """Images as data: URIs within a byte budget; counts what it leaves out."""

    def __init__(self, budget: int):
        self.budget = budget
        self.remaining = budget
        self.omitted = 0

    def data_uri(self, body: bytes | None, max_side: int = EMBED_MAX_SIDE) -> str | None:
        if not body:
            return None
        kind = image_kind(body)
        if kind is None:
            return None
        try:
            body, kind = _downscaled(body, kind, max_side)
        except OSError:  # not a readable image after all: linked, not shown
            return None
        encoded = base64.b64encode(body).decode("ascii")
        if len(encoded) > self.remaining:
            self.omitted += 1
            return None
        self.remaining -= len(encoded)
        return f"data:{kind};base64,{encoded}"


class _Fragments:
    """HTML fragments (a text output's snippet) inlined within a byte budget; counts what it leaves out."""

    def __init__(self, budget: int):
        self.budget = budget
        self.remaining = budget
        self.omitted = 0

    def inline(self, body: bytes | None) -> str | None:
        if not body:
            return None
        fragment = sanitized_fragment(body.decode("utf-8", errors="replace"))
        size = len(fragment.encode())
        if size > self.remaining:
            self.omitted += 1
            return None
        self.remaining -= size
        return fragment


#: What a text snippet (explain_core.text_report.html_snippet) is made of; anything else is dropped.
FRAGMENT_TAGS = frozenset({"figure", "figcaption", "div", "span", "strong", "em", "b", "i", "br", "p"})
FRAGMENT_VOID_TAGS = frozenset({"br"})
FRAGMENT_ATTRIBUTES = frozenset({"style", "title", "class", "data-value"})


class _FragmentFilter(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []
        self.skipping = 0  # inside <script> or <style>: their content is dropped

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skipping += 1
            return
        if tag not in FRAGMENT_TAGS:
            return
        kept = "".join(f' {name}="{esc(value)}"' for name, value in attrs
                       if name in FRAGMENT_ATTRIBUTES and value is not None
                       and not (name == "style" and re.search(r"url\(|@import|expression\(", value, re.I)))
        self.out.append(f"<{tag}{kept}>")
        if tag not in FRAGMENT_VOID_TAGS:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.open:  # closes what it opened, and any element left open inside it
            while self.open:
                inner = self.open.pop()
                self.out.append(f"</{inner}>")
                if inner == tag:
                    break

    def handle_data(self, data):
        if not self.skipping:
            self.out.append(esc(data))


def sanitized_fragment(fragment: str) -> str:
    """``fragment`` re-written from its parse: only FRAGMENT_TAGS with FRAGMENT_ATTRIBUTES (style without
    ``url(``), every text and attribute escaped again, every element closed. The snippets are escaped
    by text_report already; this keeps a page safe even from a body that is not one of them."""
    parser = _FragmentFilter()
    parser.feed(fragment)
    parser.close()
    return "".join(parser.out) + "".join(f"</{tag}>" for tag in reversed(parser.open))


def _downscaled(body: bytes, kind: str, max_side: int) -> tuple[bytes, str]:
    """The image with its longer side at most ``max_side`` (re-encoded in its format), else as it is."""
    from PIL import Image

    with Image.open(io.BytesIO(body)) as image:
        if max(image.size) <= max_side:
            return body, kind
        image = image.convert("RGB")
        image.thumbnail((max_side, max_side), Image.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG" if kind == "image/png" else "JPEG")
        return buffer.getvalue(), kind


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return esc(value)
    return esc(f"{value:.4g}")


def _value(value: Any, name: str = "") -> str:
    """Any JSON value of the manifest as HTML: nested tables for objects, lists inline; warnings stand out."""
    if name == "warnings" and value:
        items = value if isinstance(value, list) else [value]
        return '<div class="warn"><ul>' + "".join(f"<li>{_value(item)}</li>" for item in items) + "</ul></div>"
    if isinstance(value, dict):
        if not value:
            return "-"
        if all(isinstance(item, dict) for item in value.values()):
            return _records(value)
        rows = "".join(f"<tr><th>{esc(key)}</th><td>{_value(item, str(key))}</td></tr>"
                       for key, item in value.items())
        return f"<table>{rows}</table>"
    if isinstance(value, list):
        if not value:
            return "-"
        if all(not isinstance(item, (dict, list)) for item in value):
            return esc(", ".join(str(item) if not isinstance(item, float) else f"{item:.4g}" for item in value))
        return "<ul>" + "".join(f"<li>{_value(item)}</li>" for item in value) + "</ul>"
    if value is None:
        return "-"
    return _number(value)


def _records(records: dict[str, dict]) -> str:
    """Named records (e.g. one per quality metric) as one table: a row per name, a column per field."""
    columns = list(dict.fromkeys(key for record in records.values() for key in record))
    head = "".join(f"<th>{esc(column)}</th>" for column in columns)
    rows = "".join(f"<tr><th>{esc(name)}</th>"
                   + "".join(f"<td>{_inline(record.get(column))}</td>" for column in columns) + "</tr>"
                   for name, record in records.items())
    return f"<table><tr><th></th>{head}</tr>{rows}</table>"


def _inline(value: Any) -> str:
    """A value on one line: an object as ``key=value, ...`` (an error as its code and message)."""
    if isinstance(value, dict):
        if "code" in value and "message" in value:
            return f"<code>{esc(value['code'])}</code> {esc(value['message'])}"
        return esc(", ".join(f"{k}={_plain(v)}" for k, v in value.items())) or "-"
    return _value(value)


def _fields(document: dict, skip: set[str]) -> str:
    """The fields of ``document`` not in ``skip``, as a table (nothing when there are none)."""
    rows = "".join(f"<tr><th>{esc(key)}</th><td>{_value(value, key)}</td></tr>"
                   for key, value in document.items() if key not in skip)
    return f"<table>{rows}</table>" if rows else ""


def _page(title: str, body: str, data_block: str = "") -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CONTENT_SECURITY_POLICY)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n{data_block}</body></html>\n"
    )


# ------------------------------------------------------------------------------------------ one input
#: Fields of a method entry and of an output that the page shows in its own way.
METHOD_SHOWN = {"name", "params", "passes_per_image", "reference", "status", "outputs", "error", "seconds",
                "seconds_per_image", "batch_rows"}
OUTPUT_SHOWN = {"class_index", "class_name", "score"}
#: Rows or documents skipped by the explanation condition that the page lists (manifest.json has them all).
MAX_SKIPPED_SHOWN = 100
#: The same for a text output (modalities.text.TextOutput): its files and top tokens are shown in its card.
TEXT_OUTPUT_SHOWN = OUTPUT_SHOWN | {"document", "line", "unit", "tokens", "html", "image", "values", "top_tokens"}


class _InputPage:
    def __init__(self, manifest: dict, objects: Mapping[str, bytes], preview: bytes | None, budget: int,
                 text_budget: int = MAX_EMBEDDED_TEXT_BYTES):
        self.manifest = manifest
        self.objects = objects
        self.preview = preview
        self.images = _Embedder(budget)
        self.snippets = _Fragments(text_budget)
        self.prefix = manifest.get("results_prefix", "")
        self.output_keys = set(manifest.get("output_keys", []))

    def relative(self, key: str) -> str:
        return key[len(self.prefix):] if self.prefix and key.startswith(self.prefix) else key

    def link(self, key: str, text: str | None = None) -> str:
        return f'<a href="{href(self.relative(key))}">{esc(text or self.relative(key).rsplit("/", 1)[-1])}</a>'

    def image(self, key: str, alt: str, max_side: int = EMBED_MAX_SIDE) -> str:
        uri = self.images.data_uri(self.objects.get(key), max_side)
        if uri is None:
            reason = "over the page's size cap" if key in self.objects and image_kind(self.objects[key]) else \
                "not available to the page"
            return f'<p class="note">{esc(alt)}: {reason}; file {self.link(key)}</p>'
        return f'<img src="{uri}" alt="{esc(alt)}" title="{esc(alt)}">'

    def render(self) -> str:
        m = self.manifest
        model, source = m.get("model", {}), m.get("input", {})
        name = source.get("key", "?").rsplit("/", 1)[-1]
        title = f"{name}: {model.get('name', '?')}/{model.get('version', '?')} ({m.get('family', '?')})"
        status = m.get("status", "?")
        parts = [
            f"<h1>{esc(title)}</h1>",
            f'<p>Status <strong class="status-{esc(status)}">{esc(status)}</strong>'
            f" &middot; written {esc(m.get('created_at') or '-')} &middot; attempt <code>{esc(m.get('attempt', '-'))}"
            f"</code> &middot; {self.link(self.prefix + 'manifest.json', 'manifest.json')}</p>",
            self.condition_section(),
            self.input_section(),
        ]
        parts += BODY_SECTIONS.get(model.get("modality"), _class_sections)(self)
        parts += [self.methods_section(), self.details_section()]
        if self.snippets.omitted:
            parts.insert(2, f'<p class="warn">{self.snippets.omitted} highlighted document(s) not embedded: the '
                            f"page holds at most {self.snippets.budget / 1024**2:.3g} MiB of them; their files "
                            "are linked.</p>")
        if self.images.omitted:
            parts.insert(2, f'<p class="warn">{self.images.omitted} image(s) not embedded: the page holds at most '
                            f"{self.images.budget / 1024**2:.3g} MiB of images; their files are linked.</p>")
        return _page(title, "\n".join(parts))

    def condition_section(self) -> str:
        """What the explanation condition (the manifest's ``condition``) decided: why the input, or which rows or
        documents (the first MAX_SKIPPED_SHOWN), were not explained; nothing without a condition."""
        condition = self.manifest.get("condition")
        if not isinstance(condition, dict):
            return ""
        rule = condition.get("explain_if")
        shown = ", ".join(f"{k}={v}" for k, v in rule.items()) if isinstance(rule, dict) else str(rule)
        parts = [f"<h2>Explanation condition</h2><p>explain_if (the {esc(condition.get('source', '?'))}'s): "
                 f"<code>{esc(shown)}</code></p>"]
        if condition.get("reason"):
            parts.append(f'<p class="warn">Not explained: {esc(condition["reason"])}</p>')
        skipped = condition.get("skipped") or []
        if condition.get("records") is not None:
            parts.append(f"<p>{esc(condition.get('explained_records'))} of {esc(condition['records'])} explained; "
                         f"{len(skipped)} skipped{':' if skipped else '.'}</p>")
        if skipped:
            rows = "".join(f"<tr><td>{esc(r.get('line'))}</td><td>{esc(r.get('class_name'))}</td>"
                           f"<td>{_number(r.get('score'))}</td><td>{esc(r.get('reason'))}</td></tr>"
                           for r in skipped[:MAX_SKIPPED_SHOWN])
            more = (f'<p class="note">{len(skipped) - MAX_SKIPPED_SHOWN} more in manifest.json.</p>'
                    if len(skipped) > MAX_SKIPPED_SHOWN else "")
            parts.append(f"<table><tr><th>line</th><th>top class</th><th>probability</th><th>why</th></tr>{rows}"
                         f"</table>{more}")
        return "".join(parts)

    def input_section(self) -> str:
        source = dict(self.manifest.get("input", {}))
        preview = ""
        if self.preview is not None:
            uri = self.images.data_uri(self.preview)
            preview = f'<div class="preview"><img src="{uri}" alt="the input"></div>' if uri else ""
        return f"<h2>Input</h2>{preview}{_fields(source, set())}"

    def predictions_section(self) -> str:
        predictions = self.manifest.get("predictions")
        if isinstance(predictions, list):
            rows = "".join(f"<tr><td>{esc(p.get('class_index'))}</td><td>{esc(p.get('class_name'))}</td>"
                           f"<td>{_number(p.get('score'))}</td></tr>" for p in predictions)
            table = f"<table><tr><th>index</th><th>class</th><th>probability</th></tr>{rows}</table>"
        else:
            table = _value(predictions)
        return f"<h2>Predictions</h2>{table}"

    def outputs_of(self, class_index: int) -> list[tuple[dict, dict]]:
        return [(method, output) for method in self.manifest.get("methods", [])
                for output in method.get("outputs", []) if output.get("class_index") == class_index]

    def class_heading(self, explained: dict) -> str:
        score = explained.get("score")
        scored = f", probability {_number(score)}" if score is not None else ""
        return (f"<h2>Class {esc(explained.get('class_name'))} (index {esc(explained.get('class_index'))}"
                f"{scored})</h2>")

    def method_caption(self, method: dict, level: int = 3, per: str = "image") -> str:
        seconds = method.get("seconds_per_image", method.get("seconds"))
        timing = f"{_number(seconds)} s" + (f" per {per}" if "seconds_per_image" in method else "") \
            if seconds is not None else "-"
        params = ", ".join(f"{k}={v}" for k, v in method.get("params", {}).items()) or "defaults"
        return (f"<h{level}>{esc(method.get('name'))}</h{level}><p class=\"note\">{esc(timing)} &middot; "
                f"{esc(method.get('passes_per_image', '-'))} model passes &middot; {esc(params)}</p>")

    def class_section(self, explained: dict) -> str:
        cards = [self.card(method, output) for method, output in self.outputs_of(explained.get("class_index"))]
        body = "".join(cards) or '<p class="note">No method produced an output for this class.</p>'
        return f'{self.class_heading(explained)}{self.scores(explained)}<div class="grid">{body}</div>'

    def card(self, method: dict, output: dict) -> str:
        """One method's output for one class, from the output's fields (any modality's): the files it names
        are embedded when they are images (its heatmap first, a list of plots after) and linked; its
        other fields are shown as they are; a summary JSON gives the top features per row."""
        name = method.get("name")
        single = {k: v for k, v in output.items() if isinstance(v, str) and v in self.output_keys | {
            output.get("summary")} and k not in ("class_name",)}
        listed = [key for v in output.values() if isinstance(v, list) for key in v
                  if isinstance(key, str) and key in self.output_keys]
        images = [self.image(key, f"{name} {field} for class {output.get('class_name')}")
                  for field, key in sorted(single.items(), key=lambda item: item[0] != "heatmap")
                  if image_kind(self.objects.get(key, b"")) is not None]
        plots = [self.image(key, f"{name} {key.rsplit('/', 1)[-1]}", PLOT_MAX_SIDE) for key in listed
                 if image_kind(self.objects.get(key, b"")) is not None]
        links = [self.link(key, field) for field, key in single.items()] + [self.link(key) for key in listed]
        extras = {k: v for k, v in output.items() if k not in OUTPUT_SHOWN | set(single)
                  and not (isinstance(v, list) and any(item in listed for item in v if isinstance(item, str)))}
        # The scores are in the class's table (scores()); their parameters and cost fold away here.
        metrics = extras.pop("metrics", None)
        folded = f"<details><summary>metrics: parameters and cost</summary>{_value(metrics)}</details>" \
            if metrics else ""
        shape = extras.pop("attributions_shape", None)
        wide = " wide" if plots else ""
        return (
            f'<div class="card{wide}">{self.method_caption(method)}<div class="images">{"".join(images)}</div>'
            f'{_fields(extras, set())}{folded}<div class="plots">{"".join(plots)}</div>'
            f'{self.top_features(output.get("summary"))}<p class="note">files: {" &middot; ".join(links)}'
            f"{' &middot; shape ' + esc(shape) if shape else ''}</p></div>"
        )

    def scores(self, explained: dict) -> str:
        """The methods' quality metrics for one class side by side (outputs' ``metrics``: docs/metrics.md)."""
        scored = [(method.get("name"), output["metrics"]) for method, output in self.outputs_of(
            explained.get("class_index")) if isinstance(output.get("metrics"), dict) and output["metrics"]]
        if not scored:
            return ""
        names = list(dict.fromkeys(name for _, metrics in scored for name in metrics))
        directions = {}
        for _, metrics in scored:
            for name, result in metrics.items():
                if isinstance(result, dict) and "higher_is_better" in result:
                    directions[name] = " (higher is better)" if result["higher_is_better"] else " (lower is better)"
        head = "".join(f"<th>{esc(name)}{esc(directions.get(name, ''))}</th>" for name in names)
        rows = []
        for method, metrics in scored:
            cells = []
            for name in names:
                result = metrics.get(name)
                score = result.get("score") if isinstance(result, dict) else result
                error = (result or {}).get("error") if isinstance(result, dict) else None
                cells.append(f"<td>{_number(score)}</td>" if score is not None else
                             f"<td>{_inline(error) if error else '-'}</td>")
            rows.append(f"<tr><th>{esc(method)}</th>{''.join(cells)}</tr>")
        return f"<h3>Quality metrics</h3><table><tr><th>method</th>{head}</tr>{''.join(rows)}</table>"

    def top_features(self, summary_key: str | None) -> str:
        """The largest contributions of each row, from the method's summary JSON (tabular_report.summary)."""
        body = self.objects.get(summary_key) if summary_key else None
        if not body:
            return ""
        try:
            summary = json.loads(body)
        except ValueError:
            return '<p class="note">The summary JSON could not be read.</p>'
        rows = summary.get("rows_detail", [])
        lines = []
        for row in rows[:MAX_TABLE_ROWS_SHOWN]:
            features = "; ".join(f"{f.get('feature')} = {_plain(f.get('value'))}: {_signed(f.get('shap'))}"
                                 for f in row.get("top_features", [])[:TOP_FEATURES_SHOWN])
            lines.append(f"<tr><td>{esc(row.get('line'))}</td><td>{esc(row.get('predicted_class'))}</td>"
                         f"<td>{_number(row.get('model_output'))}</td><td>{esc(features)}</td></tr>")
        more = (f'<p class="note">{len(rows) - MAX_TABLE_ROWS_SHOWN} more row(s) in the summary JSON.</p>'
                if len(rows) > MAX_TABLE_ROWS_SHOWN else "")
        return (f"<h3>Top features per row</h3><p class=\"note\">feature = value: SHAP value "
                f"({esc(summary.get('output_kind', ''))}), largest |SHAP| first</p>"
                "<table><tr><th>line</th><th>predicted</th><th>model output</th><th>top features</th></tr>"
                f"{''.join(lines)}</table>{more}")

    # -------------------------------------------------------------- text files (see _document_sections)
    def documents_summary(self, documents: list[dict]) -> str:
        """The text file's predictions: documents per class."""
        predictions = self.manifest.get("predictions")
        counts = predictions.get("documents_per_class") if isinstance(predictions, dict) else None
        if not counts:
            return f"<h2>Predictions</h2>{_value(predictions)}"
        rows = "".join(f"<tr><td>{esc(name)}</td><td>{esc(n)}</td></tr>" for name, n in counts.items())
        return (f"<h2>Predictions</h2><p>{esc(len(documents))} document(s), by most probable class:</p>"
                f"<table><tr><th>class</th><th>documents</th></tr>{rows}</table>")

    def document_section(self, document: dict, outputs: list[tuple[dict, dict]]) -> str:
        """One document: its prediction, then per explained class every method's highlighted snippet."""
        index = document.get("document")
        heading = (f"Document {esc(index)} (line {esc(document.get('line', '?'))})"
                   + (f": {esc(document['class_name'])}, probability {_number(document.get('score'))}"
                      if "class_name" in document else ""))
        tokens = document.get("tokens")
        truncated = document.get("truncated_tokens") or 0
        note = (f'<p class="note">{esc(tokens)} token(s)'
                + (f", {esc(truncated)} of them cut by the model's maximum length (grey)" if truncated else "")
                + "</p>") if tokens is not None else ""
        by_class: dict[Any, list[tuple[dict, dict]]] = {}
        for method, output in outputs:
            by_class.setdefault(output.get("class_index"), []).append((method, output))
        classes = []
        for cls, pairs in by_class.items():
            first = pairs[0][1]
            classes.append(f"<h3>Class {esc(first.get('class_name'))} (index {esc(cls)}, probability "
                           f"{_number(first.get('score'))})</h3><div class=\"grid\">"
                           f"{''.join(self.text_card(method, output) for method, output in pairs)}</div>")
        body = "".join(classes) or '<p class="note">No method produced an output for this document.</p>'
        return f'<h2>{heading}</h2><div class="document">{note}{body}</div>'

    def text_card(self, method: dict, output: dict) -> str:
        """One method's explanation of one document for one class: the highlighted document (the output's
        HTML snippet, inlined), its top tokens, the other fields of the output, its files."""
        snippet = self.snippets.inline(self.objects.get(output.get("html")))
        if snippet is None:
            reason = "over the page's size cap" if self.objects.get(output.get("html")) else "not available to the page"
            snippet = f'<p class="note">highlighted document: {reason}; file {self.link(output.get("html", "?"))}</p>'
        unit = output.get("unit") or "word"
        top = output.get("top_tokens") or []
        rows = "".join(f"<tr><td>{esc(token.get('text'))}</td><td>{esc(_signed(token.get('value')))}</td>"
                       f"<td>{esc(token.get('start'))}&ndash;{esc(token.get('end'))}</td></tr>" for token in top)
        tops = (f"<table><tr><th>top {esc(unit)}s</th><th>value</th><th>characters</th></tr>{rows}</table>"
                if rows else "")
        extras = {k: v for k, v in output.items() if k not in TEXT_OUTPUT_SHOWN}
        metrics = extras.pop("metrics", None)
        folded = f"<details><summary>metrics: parameters and cost</summary>{_value(metrics)}</details>" \
            if metrics else ""
        files = [(field, output[field]) for field in ("tokens", "image", "html", "values")
                 if isinstance(output.get(field), str)]
        labels = {"tokens": "tokens JSON", "image": "PNG", "html": "HTML", "values": "values CSV (all documents)"}
        links = " &middot; ".join(self.link(key, labels[field]) for field, key in files)
        return (f'<div class="card text">{self.method_caption(method, 4, "document")}'
                f'<div class="snippet">{snippet}</div>{tops}{_fields(extras, set())}{folded}'
                f'<p class="note">files: {links}</p></div>')

    def methods_section(self) -> str:
        rows, failures = [], []
        for method in self.manifest.get("methods", []):
            params = ", ".join(f"{k}={v}" for k, v in method.get("params", {}).items()) or "-"
            extras = {k: v for k, v in method.items() if k not in METHOD_SHOWN}
            rows.append(
                f"<tr><td>{esc(method.get('name'))}</td><td class=\"status-{esc(method.get('status'))}\">"
                f"{esc(method.get('status'))}</td><td>{_number(method.get('seconds'))}</td>"
                f"<td>{_number(method.get('seconds_per_image'))}</td><td>{esc(method.get('passes_per_image', '-'))}"
                f"</td><td>{esc(params)}</td><td class=\"ref\">{_fields(extras, set()) or '-'}</td>"
                f"<td class=\"ref\">{esc(method.get('reference', ''))}</td></tr>"
            )
            if method.get("status") == "failed":
                error = method.get("error") or {}
                failures.append(
                    f'<div class="error"><strong>{esc(method.get("name"))}</strong> failed: '
                    f"<code>{esc(error.get('code', '?'))}</code> {esc(error.get('message', ''))}"
                    f"{_fields(error.get('details') or {}, set())}</div>"
                )
        failed = f"<h2>Failed methods</h2>{''.join(failures)}" if failures else ""
        return (f"{failed}<h2>Methods</h2><table><tr><th>method</th><th>status</th><th>seconds (batch)</th>"
                "<th>seconds per image</th><th>passes per input</th><th>parameters</th><th>more</th>"
                f"<th>paper</th></tr>{''.join(rows)}</table>")

    def details_section(self) -> str:
        shown = {"status", "family", "input", "predictions", "explained_classes", "methods", "attempt",
                 "created_at", "output_keys", "results_prefix", "condition"}
        return f"<h2>Model, timings, versions</h2>{_fields(self.manifest, shown)}"


def _class_sections(page: _InputPage) -> list[str]:
    """Images and tables: the predictions, then per explained class every method's card."""
    return [page.predictions_section(),
            *(page.class_section(explained) for explained in page.manifest.get("explained_classes", []))]


def _document_sections(page: _InputPage) -> list[str]:
    """Text files: the documents per class, then per document (the first MAX_DOCUMENTS_SHOWN) its
    prediction and every method's highlighted snippet per explained class."""
    predictions = page.manifest.get("predictions")
    documents = list(predictions.get("documents") or []) if isinstance(predictions, dict) else []
    outputs: dict[Any, list[tuple[dict, dict]]] = {}
    for method in page.manifest.get("methods", []):
        for output in method.get("outputs", []):
            outputs.setdefault(output.get("document"), []).append((method, output))
    known = {document.get("document") for document in documents}
    # Outputs of a document the predictions do not list (a manifest cut short) still get a section.
    documents += [{"document": index, "line": pairs[0][1].get("line", "?")} for index, pairs in outputs.items()
                  if index not in known]
    shown = documents[:MAX_DOCUMENTS_SHOWN]
    parts = [page.documents_summary(documents)]
    parts += [page.document_section(document, outputs.get(document.get("document"), [])) for document in shown]
    if len(documents) > len(shown):
        rest = documents[len(shown):]
        parts.append(f'<p class="warn">{len(rest)} more document(s) (lines {esc(rest[0].get("line"))} to '
                     f'{esc(rest[-1].get("line"))}) not shown: the page shows the first {MAX_DOCUMENTS_SHOWN}; '
                     "their predictions are in manifest.json, their attributions in each method's values CSV "
                     "and tokens JSON files.</p>")
    return parts


#: The sections of an input's page between its Input section and its Methods table, per modality
#: (the model's ``modality``); a modality not listed is laid out per explained class.
BODY_SECTIONS = {"text": _document_sections}


def _plain(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _signed(value: Any) -> str:
    return f"{value:+.4g}" if isinstance(value, float) else str(value)


def input_page(manifest, objects: Mapping[str, bytes], *, preview: bytes | None = None,
               max_embedded_bytes: int = MAX_EMBEDDED_BYTES, max_text_bytes: int = MAX_EMBEDDED_TEXT_BYTES) -> str:
    """The HTML page of one explained input.

    ``manifest``: a :class:`explain_core.manifest.Manifest` or its JSON document; ``objects``: the
    bodies of its outputs by key (those missing are linked, not shown); ``preview``: a PNG or
    JPEG of the input (:func:`input_preview`). Images are embedded up to ``max_embedded_bytes``,
    a text file's highlighted snippets up to ``max_text_bytes``.
    """
    document = manifest if isinstance(manifest, dict) else manifest.to_dict()
    return _InputPage(document, objects, preview, max_embedded_bytes, max_text_bytes).render()


# ------------------------------------------------------------------------------------------ the model's index
def index_entry(manifest, model_prefix: str) -> dict:
    """What the per-model index lists of one input (``model_prefix``: results/<family>/<model>/<version>/)."""
    from explain_core.modalities import MODALITIES

    document = manifest if isinstance(manifest, dict) else manifest.to_dict()
    folder = document["results_prefix"].removeprefix(model_prefix)
    try:
        prediction = MODALITIES[document["model"]["modality"]].prediction_summary(document)
    except (KeyError, IndexError, TypeError):
        prediction = "-"
    return {
        "input": folder.rstrip("/"),
        "page": folder + GALLERY_PAGE,
        "status": document.get("status"),
        "prediction": prediction,
        "created_at": document.get("created_at"),
        "methods": [m.get("name") for m in document.get("methods", [])],
        "failed": [m.get("name") for m in document.get("methods", []) if m.get("status") == "failed"],
    }


def merge_entry(entries: list[dict], entry: dict, limit: int = RECENT_INPUTS) -> list[dict]:
    """``entries`` with ``entry`` in place of its input's older one, most recent first, at most ``limit``.

    An entry older than the one listed for its input (a writer that was overtaken) changes nothing.
    """
    current = next((e for e in entries if e.get("input") == entry["input"]), None)
    if current is not None and (current.get("created_at") or "") > (entry.get("created_at") or ""):
        return entries
    others = [e for e in entries if e.get("input") != entry["input"]]
    merged = sorted([entry, *others], key=lambda e: e.get("created_at") or "", reverse=True)
    return merged[:limit]


def links_page(title: str, entries: list[dict], *, note: str = "", data: bool = False) -> str:
    """A page linking input pages: one row per entry (see :func:`index_entry`), in the given order.
    ``data``: carry the entries in the page as a JSON data block (:func:`read_entries`)."""
    rows = []
    for entry in entries:
        failed = entry.get("failed") or []
        status = entry.get("status") or "?"
        rows.append(
            f'<tr><td><a href="{href(entry["page"])}">{esc(entry.get("input"))}</a></td>'
            f'<td class="status-{esc(status)}">{esc(status)}'
            f"{' (' + esc(', '.join(failed)) + ' failed)' if failed else ''}</td>"
            f"<td>{esc(entry.get('prediction', '-'))}</td><td>{esc(', '.join(entry.get('methods') or []))}</td>"
            f"<td>{esc(entry.get('created_at') or '-')}</td></tr>"
        )
    table = ("<table><tr><th>input</th><th>status</th><th>prediction</th><th>methods</th><th>written</th></tr>"
             f"{''.join(rows)}</table>") if rows else '<p class="note">No input explained yet.</p>'
    block = ""
    if data:
        # A data block is never executed; <, > and & are escaped so the JSON cannot close the element.
        payload = json.dumps(entries, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e") \
            .replace("&", "\\u0026")
        block = f'<script type="application/json" id="{ENTRIES_BLOCK_ID}">{payload}</script>\n'
    return _page(title, f"<h1>{esc(title)}</h1>{f'<p class=note>{esc(note)}</p>' if note else ''}{table}", block)


def model_index_page(family: str, model: str, version: str, entries: list[dict]) -> str:
    """The per-model index: the most recent inputs (:func:`merge_entry`), linking each input's page."""
    return links_page(f"{family}: {model}/{version}, recent inputs", entries, data=True,
                      note=f"The {RECENT_INPUTS} most recently explained uploads, newest first; API requests "
                           "are per client and not listed.")


class _EntriesReader(HTMLParser):
    def __init__(self):
        super().__init__()
        self.inside = False
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.inside = tag == "script" and dict(attrs).get("id") == ENTRIES_BLOCK_ID

    def handle_endtag(self, tag):
        self.inside = False

    def handle_data(self, data):
        if self.inside:
            self.text.append(data)


def read_entries(page: str) -> list[dict]:
    """The entries a page of :func:`links_page` carries (``data=True``); [] when it has none or is unreadable."""
    reader = _EntriesReader()
    reader.feed(page)
    try:
        entries = json.loads("".join(reader.text)) if reader.text else []
    except ValueError:
        return []
    return [e for e in entries if isinstance(e, dict) and "input" in e and "page" in e] \
        if isinstance(entries, list) else []


# ------------------------------------------------------------------------------------------ writing
class GalleryWriter:
    """Writes an input's page and updates its model's index, after its manifest (ExplanationSession.write)."""

    def __init__(self, s3_client, settings: Settings):
        self.s3 = s3_client
        self.settings = settings
        self.bucket = settings.results_bucket
        self.keys = KeyLayout(settings)

    def write(self, manifest, objects: Mapping[str, bytes], preview: bytes | None = None) -> bool:
        """Write the input's page, then list it in its model's index; False when a newer manifest
        stands already (its own writer writes the pages)."""
        document = manifest if isinstance(manifest, dict) else manifest.to_dict()
        if not self.write_page(document, objects, preview):
            return False
        self.add_to_indexes([self.listing(document)])
        return True

    def write_page(self, manifest, objects: Mapping[str, bytes], preview: bytes | None = None, *,
                   page_absent: bool = False) -> bool:
        """Write the input's page while ``manifest`` stands; False when a newer manifest stands already.

        ``page_absent``: the input had no manifest, hence no page, when this attempt began: the first
        round writes with ``If-None-Match: *`` and reads nothing (S3 refuses it if a page appeared since,
        and the rounds of :meth:`_put_while_current` follow).
        """
        document = manifest if isinstance(manifest, dict) else manifest.to_dict()
        prefix = document["results_prefix"]
        page = input_page(document, objects, preview=preview).encode()
        return self._put_while_current(prefix + GALLERY_PAGE, page, prefix + "manifest.json", document["attempt"],
                                       page_absent=page_absent)

    def listing(self, manifest) -> tuple[str, object, dict] | None:
        """(model prefix, input ref, index entry) of an input its model's index lists; None for an API
        request's input (requests are per client: no page lists them for others)."""
        document = manifest if isinstance(manifest, dict) else manifest.to_dict()
        ref = self.keys.parse_input(document["input"]["bucket"], document["input"]["key"], document["family"])
        if ref.key.startswith(self.keys.request_prefix(ref.family)) or JOB_INPUT.match(ref.name):
            return None
        model_prefix = self.keys.model_results_prefix(ref.family, ref.model, ref.version)
        return model_prefix, ref, index_entry(document, model_prefix)

    def add_to_indexes(self, listings: list[tuple[str, object, dict] | None]) -> None:
        """List inputs in their models' indexes (:meth:`listing`): one read and one write per model for
        all of its inputs, not one per input."""
        by_model: dict[str, list] = {}
        for listing in filter(None, listings):
            by_model.setdefault(listing[0], []).append(listing)
        for model_prefix, listed in by_model.items():
            self._add_to_index(model_prefix, listed[0][1], [entry for _, _, entry in listed])

    def _put_while_current(self, key: str, body: bytes, manifest_key: str, attempt: str, *,
                           page_absent: bool = False) -> bool:
        """PUT ``body`` at ``key`` unless the manifest is no longer ``attempt``'s.

        The page is written with If-Match on the ETag read before the manifest is checked: a newer
        manifest's writer changes the page after its manifest, so either this write fails (and the
        next round sees the newer manifest) or that writer's own page comes after this one. A first
        write with If-None-Match (``page_absent``) needs no check: it fails if any writer's page
        came first, and any later writer's page replaces it.
        """
        if page_absent and self._put(key, body, {"IfNoneMatch": "*"}):
            return True
        for _ in range(PAGE_WRITE_ATTEMPTS):
            condition = self._condition(key)
            if self._manifest_attempt(manifest_key) != attempt:
                return False
            if self._put(key, body, condition):
                return True
        raise RuntimeError(f"could not write {key}: {PAGE_WRITE_ATTEMPTS} concurrent writers won first")

    def _add_to_index(self, model_prefix: str, ref, new_entries: list[dict]) -> None:
        key = model_prefix + GALLERY_PAGE
        for _ in range(PAGE_WRITE_ATTEMPTS):
            etag, page = self._read(key)
            entries = read_entries(page) if page else []
            merged = entries
            for entry in new_entries:
                merged = merge_entry(merged, entry)
            if merged == entries:
                return  # newer results of these inputs are listed already
            body = model_index_page(ref.family, ref.model, ref.version, merged).encode()
            if self._put(key, body, {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}):
                return
        raise RuntimeError(f"could not update {key}: {PAGE_WRITE_ATTEMPTS} concurrent writers won first")

    def _condition(self, key: str) -> dict:
        try:
            return {"IfMatch": self.s3.head_object(Bucket=self.bucket, Key=key)["ETag"]}
        except ClientError as exc:
            if is_missing_object(exc):
                return {"IfNoneMatch": "*"}
            raise

    def _manifest_attempt(self, manifest_key: str) -> str | None:
        _, body = self._read(manifest_key)
        try:
            return json.loads(body).get("attempt") if body else None
        except ValueError:
            return None

    def _read(self, key: str) -> tuple[str | None, str | None]:
        """(ETag, text) of an object, or (None, None) when there is none."""
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if is_missing_object(exc):
                return None, None
            raise
        return response["ETag"], response["Body"].read().decode("utf-8", errors="replace")

    def _put(self, key: str, body: bytes, condition: dict) -> bool:
        """A conditional PUT; False when the condition did not hold (another writer came first)."""
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=CONTENT_TYPE, **condition)
            return True
        except ClientError as exc:
            if is_precondition_failed(exc):
                return False
            raise
