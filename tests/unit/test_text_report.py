"""Unit tests for explain_core.text_report: tokens JSON, values CSV, HTML snippet and PNG of a text explanation."""

import csv
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from explain_core.text_report import (
    MAX_HEIGHT,
    DocumentExplanation,
    html_snippet,
    render_png,
    summary_line,
    token_boxes,
    tokens_json,
    values_csv,
)
from explain_core.tokenizers import Token, WordTokenizer

VOCABULARY = ["", "[UNK]", "i", "loved", "this", "film", "great", "acting", "but", "boring", "ending", "a"]
REVIEW = "I loved this film! Great acting,\nbut a boring ending... Café au lait, 😀 日本語 ok"


def explain(text: str = REVIEW, values=None, *, max_length: int = 50, tokenizer=None, **overrides):
    """A DocumentExplanation over ``text`` tokenized for real; ``values`` maps token index -> value (rest 0)."""
    tokenizer = tokenizer or WordTokenizer(VOCABULARY, max_length=max_length)
    encoded = tokenizer.encode(text)
    array = np.full(len(encoded.tokens), np.nan)
    array[encoded.seen] = 0.0
    for index, value in (values or {}).items():
        array[index] = value
    fields = {"method": "WordOcclusion", "class_index": 1, "class_name": "positive", "score": 0.97,
              "document": 0, "line": 1, "text": text, "tokens": encoded.tokens, "values": array}
    fields.update(overrides)
    return DocumentExplanation(**fields)


def strict_loads(body: bytes):
    def refuse(constant):
        raise ValueError(f"non-strict JSON constant {constant}")

    return json.loads(body, parse_constant=refuse)


# --------------------------------------------------------------------------- dataclass


def test_explanation_checks_its_inputs():
    tokens = WordTokenizer(VOCABULARY, max_length=5).tokens("loved it")
    with pytest.raises(ValueError, match="values for"):
        DocumentExplanation("m", 0, "c", 0.5, 0, 1, "loved it", tokens, [1.0])
    with pytest.raises(ValueError, match="finite"):
        DocumentExplanation("m", 0, "c", 0.5, 0, 1, "loved it", tokens, [1.0, np.inf])
    with pytest.raises(ValueError, match="outside the text"):
        DocumentExplanation("m", 0, "c", 0.5, 0, 1, "loved", tokens, [1.0, 2.0])
    with pytest.raises(ValueError, match="unit"):
        DocumentExplanation("m", 0, "c", 0.5, 0, 1, "loved it", tokens, [1.0, 2.0], unit="char")


# --------------------------------------------------------------------------- JSON


def test_tokens_json_is_strict_and_offsets_round_trip():
    expl = explain(values={1: 1.25, 4: 0.5, 8: -0.75}, max_length=9, base_value=0.1, padding_value=np.nan)
    document = strict_loads(tokens_json(expl))
    assert document["method"] == "WordOcclusion"
    assert document["class_name"] == "positive" and document["class_index"] == 1
    assert document["score"] == 0.97 and document["line"] == 1 and document["unit"] == "word"
    assert document["base_value"] == 0.1 and document["padding_value"] is None
    tokens = document["tokens"]
    assert [t["index"] for t in tokens] == list(range(len(expl.tokens)))
    for t in tokens:
        assert REVIEW[t["start"]:t["end"]] == t["text"]
    assert tokens[4]["token"] == "great" and tokens[4]["text"] == "Great"
    cafe = next(t for t in tokens if t["token"] == "café")
    assert cafe["text"] == "Café"
    # max_length=9: tokens 9.. were cut, so they are null and unseen
    assert all(t["seen"] and t["value"] is not None for t in tokens[:9])
    assert all(not t["seen"] and t["value"] is None for t in tokens[9:])
    assert document["truncated_tokens"] == len(tokens) - 9
    assert document["sum_of_values"] == pytest.approx(1.25 + 0.5 - 0.75)
    assert tokens[1]["value"] == 1.25 and tokens[8]["value"] == -0.75


def test_top_tokens_are_the_largest_absolute_seen_values_in_order():
    values = {0: 0.1, 1: 2.0, 2: -5.0, 3: 0.7, 4: -0.7, 5: 1.5, 6: 0.05, 7: 0.3}
    expl = explain(values=values, max_length=8)
    expl.values[9] = np.nan  # unseen anyway; a huge value there would never be seen
    top = strict_loads(tokens_json(expl))["top_tokens"]
    assert [t["index"] for t in top] == [2, 1, 5, 3, 4]  # |value| order; ties (3, 4) keep text order
    assert [t["value"] for t in top] == [-5.0, 2.0, 1.5, 0.7, -0.7]
    assert top[1]["text"] == "loved"


def test_top_tokens_skip_unseen_tokens():
    expl = explain("boring boring", values={0: -1.0, 1: 0.0})
    expl.values[1] = np.nan
    assert [t["index"] for t in strict_loads(tokens_json(expl))["top_tokens"]] == [0]


# --------------------------------------------------------------------------- CSV


def test_values_csv_parses_back_with_the_values():
    first = explain(values={1: 1.25, 8: -0.1 / 3}, max_length=9)
    second = explain("great acting", values={0: 0.5, 1: 0.25}, document=1, line=3, class_name="negative")
    rows = list(csv.DictReader(io.StringIO(values_csv([first, second]).decode("utf-8"))))
    assert len(rows) == len(first.tokens) + 2
    assert rows[1]["token"] == "loved" and float(rows[1]["value"]) == 1.25
    assert float(rows[8]["value"]) == -0.1 / 3  # repr round-trips exactly
    assert rows[9]["value"] == "" and rows[9]["token"] == "ending"
    for row in rows[: len(first.tokens)]:
        assert REVIEW[int(row["start"]):int(row["end"])] == row["text"]
        assert row["document"] == "0" and row["line"] == "1" and row["class_name"] == "positive"
    assert rows[-1] == {"document": "1", "line": "3", "class_name": "negative", "token_index": "1",
                       "token": "acting", "text": "acting", "start": "6", "end": "12", "value": "0.25"}


def test_values_csv_defuses_formulas_but_not_numbers():
    tokenizer = WordTokenizer(VOCABULARY, max_length=10, strip_punctuation=False)
    expl = explain("=SUM(A1) @cmd +1 -2 plain", values={0: 0.5, 3: -0.25}, tokenizer=tokenizer,
                   class_name="-neg")
    rows = list(csv.DictReader(io.StringIO(values_csv([expl]).decode("utf-8"))))
    assert [r["text"] for r in rows] == ["'=SUM(A1)", "'@cmd", "'+1", "'-2", "plain"]
    assert rows[0]["class_name"] == "'-neg"
    assert rows[3]["value"] == "-0.25"  # numeric column: never prefixed


def test_values_csv_of_no_documents_is_a_header():
    assert values_csv([]).decode() == "document,line,class_name,token_index,token,text,start,end,value\n"


# --------------------------------------------------------------------------- summary


def test_summary_line_lists_the_strongest_units_signed():
    expl = explain(values={1: 1.2, 4: 0.8, 8: -1.0, 2: 0.1}, max_length=9)
    assert summary_line(expl) == "positive 0.97: +loved (1.2), -boring (-1), +great (0.8)"
    assert summary_line(expl, k=1) == "positive 0.97: +loved (1.2)"
    unseen = explain("loved it", values={}, max_length=1)
    unseen.values[:] = np.nan
    assert summary_line(unseen) == "positive 0.97: no attributions"


# --------------------------------------------------------------------------- HTML


class SpanCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.spans, self.tags, self._open = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "span" and "title" in dict(attrs):
            self._open = dict(attrs) | {"text": ""}
            self.spans.append(self._open)

    def handle_endtag(self, tag):
        if tag == "span":
            self._open = None

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data


def _rgba(style: str):
    match = re.search(r"rgba\((\d+),(\d+),(\d+),([\d.]+)\)", style)
    return tuple(float(v) for v in match.groups())


def test_html_escapes_the_document_and_has_no_scripts():
    text = "<script>alert(1)</script> loved it & \"quoted\""
    expl = explain(text, values={0: 1.0}, class_name="<img src=x onerror=alert(2)>")
    body = html_snippet(expl).decode("utf-8")
    assert "<script" not in body.lower() and "<img" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in re.sub(r"</?span[^>]*>", "", body)
    assert "&lt;img src=x onerror=alert(2)&gt;" in body
    assert "http" not in body and "src=" not in body.replace("src=x", "")  # no external resources
    parser = SpanCollector()
    parser.feed(body)
    assert set(parser.tags) <= {"figure", "figcaption", "strong", "br", "div", "span"}
    # the spans hold the original substrings, once unescaped
    assert [s["text"] for s in parser.spans] == [text[t.start:t.end] for t in expl.tokens]


def test_html_colours_follow_the_sign_and_size_of_values():
    expl = explain(values={1: 2.0, 4: 1.0, 8: -2.0}, max_length=9)
    parser = SpanCollector()
    parser.feed(html_snippet(expl).decode("utf-8"))
    by_text = {s["text"]: s for s in parser.spans}
    loved, great, boring = (_rgba(by_text[w]["style"]) for w in ("loved", "Great", "boring"))
    assert loved[0] > loved[2] and boring[2] > boring[0]  # red for +, blue for -
    assert loved[3] == pytest.approx(0.8) and boring[3] == pytest.approx(0.8)
    assert great[3] == pytest.approx(0.4)  # alpha proportional to |value| / max |value|
    assert by_text["loved"]["title"] == "loved: +2"
    ending = by_text["ending"]  # beyond max_length=9
    assert "not seen" in ending["title"] and "rgba" not in ending["style"]
    body = html_snippet(expl).decode("utf-8")
    # the text between tokens is kept as is
    assert "</span>! <span" in body and "</span>,\n<span" in body


# --------------------------------------------------------------------------- PNG


def _decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB")).astype(int)


def _mean_rgb(pixels: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return pixels[y0 + 3:y1 - 3, x0 + 1:x1 - 1].reshape(-1, 3).mean(axis=0)


def test_png_colours_positive_words_red_and_negative_words_blue():
    expl = explain(values={1: 2.0, 8: -2.0}, max_length=9)
    pixels = _decode(render_png(expl, width=700))
    assert pixels.shape[1] == 700
    boxes = token_boxes(expl, width=700)
    loved, boring, film = _mean_rgb(pixels, boxes[1][0]), _mean_rgb(pixels, boxes[8][0]), _mean_rgb(pixels, boxes[3][0])
    assert loved[0] > loved[2] + 60 and loved[0] > loved[1] + 60, loved
    assert boring[2] > boring[0] + 60, boring
    assert film[0] == pytest.approx(film[2], abs=15)  # zero value: no tint, just black on white
    # The same word at value 0 leaves its box untinted: the boxes are where the colour goes.
    neutral = _decode(render_png(explain(values={8: -2.0}, max_length=9), width=700))
    plain = _mean_rgb(neutral, boxes[1][0])
    assert abs(plain[0] - plain[2]) < 15 and plain.mean() > loved.mean()


def test_png_wraps_long_text_and_caps_its_height():
    short = _decode(render_png(explain("loved it", values={0: 1.0})))
    text = " ".join(["great acting but boring"] * 400)
    long_expl = explain(text, values={0: 1.0, 3: -1.0}, max_length=40)
    long_png = _decode(render_png(long_expl, width=500))
    assert MAX_HEIGHT - 60 < long_png.shape[0] <= MAX_HEIGHT and long_png.shape[1] == 500 and short.shape[0] < 300
    boxes = token_boxes(long_expl, width=500)
    assert max(box[2] for runs in boxes.values() for box in runs) <= 500 - 16  # wrapped inside the margin
    assert max(box[3] for runs in boxes.values() for box in runs) < MAX_HEIGHT
    assert len({runs[0][1] for runs in boxes.values()}) > 50  # many lines
    assert len(boxes) < len(long_expl.tokens)  # the rest was cut


def test_png_grows_with_the_text():
    one = _decode(render_png(explain("loved it", values={0: 1.0}), width=400))
    many = _decode(render_png(explain(" ".join(["loved it"] * 60), values={0: 1.0}), width=400))
    assert many.shape[0] > one.shape[0] + 100 and many.shape[1] == one.shape[1] == 400


def test_png_renders_unicode_emoji_controls_and_a_lone_surrogate():
    text = "Café naïve 😀🎬 日本語 한국어 Ελληνικά שלום\tend\x00\x07 bad\ud800 ok"
    expl = explain(text, values={0: 1.0, 3: -1.0})
    pixels = _decode(render_png(expl, width=600))
    assert pixels.shape[1] == 600
    cafe = _mean_rgb(pixels, token_boxes(expl, width=600)[0][0])
    assert cafe[0] > cafe[2] + 60  # "café" tinted red
    assert "\ufffd" in html_snippet(expl).decode("utf-8")  # lone surrogate replaced, valid UTF-8
    assert values_csv([expl]).decode("utf-8")


def test_png_of_a_long_unbroken_word_and_of_sentences():
    blob = "x" * 3000
    expl = explain(blob, values={0: 1.0})
    boxes = token_boxes(expl, width=400)
    assert len(boxes[0]) > 5 and all(box[2] <= 400 - 16 for box in boxes[0])  # broken over lines
    text = "I loved it. It was long and boring!\nGreat acting though."
    sentences = (Token("i loved it", 0, 11, -1), Token("it was long and boring", 12, 35, -1),
                 Token("great acting though", 36, len(text), -1))
    expl = DocumentExplanation("TextPartitionExplainer", 1, "positive", 0.6, 2, 4, text, sentences,
                               np.array([0.9, -0.6, 0.3]), unit="sentence", output_kind="probability",
                               base_value=0.5)
    boxes = token_boxes(expl, width=400)
    pixels = _decode(render_png(expl, width=400))
    assert _mean_rgb(pixels, boxes[0][0])[0] > _mean_rgb(pixels, boxes[0][0])[2] + 60
    assert _mean_rgb(pixels, boxes[1][0])[2] > _mean_rgb(pixels, boxes[1][0])[0] + 40
    assert boxes[2][0][1] > boxes[1][0][1]  # the newline starts a new line
    document = strict_loads(tokens_json(expl))
    assert document["unit"] == "sentence" and document["tokens"][1]["text"] == "It was long and boring!"


def test_png_rejects_silly_widths():
    with pytest.raises(ValueError, match="width"):
        render_png(explain("loved", values={0: 1.0}), width=10)
