"""User-facing outputs of a text explanation: tokens JSON, values CSV, an HTML snippet and a PNG.

One :class:`DocumentExplanation` holds the attributions of one document for one method and class,
per unit (word or sentence) with the unit's offsets in the text as uploaded. The document is
untrusted input: the HTML escapes every piece of it, the CSV defuses spreadsheet formulas, and
the PNG is drawn with Pillow (no markup, no matplotlib figure) in matplotlib's DejaVu Sans, whose
missing glyphs (emoji, CJK) are drawn as boxes rather than failing.
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
import re
import unicodedata
from dataclasses import dataclass
from functools import cache

import numpy as np

from explain_core.results import strict_json

UNITS = ("word", "sentence")
OUTPUT_KINDS = ("logit", "probability")
CSV_COLUMNS = ("document", "line", "class_name", "token_index", "token", "text", "start", "end", "value")
#: Cells a spreadsheet would read as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
TOP_TOKENS = 5

#: Diverging colours (matplotlib's tab:red / tab:blue): positive values red, negative blue.
POSITIVE_RGB = (214, 39, 40)
NEGATIVE_RGB = (31, 119, 180)
#: The strongest unit gets this opacity, so black text stays readable over its background.
MAX_ALPHA = 0.8
UNSEEN_RGB = (150, 150, 150)
TEXT_RGB = (20, 20, 20)

FONT_SIZE = 18
TITLE_FONT_SIZE = 16
SMALL_FONT_SIZE = 13
LINE_HEIGHT = 28
MARGIN = 16
MIN_WIDTH = 300
MAX_WIDTH = 4000
#: PNGs never grow past this height; the text is cut (and the image says so).
MAX_HEIGHT = 4000
COLOUR_BAR_WIDTH = 220
COLOUR_BAR_HEIGHT = 12
MAX_LABEL_CHARS = 60


@dataclass
class DocumentExplanation:
    method: str
    class_index: int
    class_name: str
    score: float  # the model's probability of the class for this document
    document: int  # 0-based index of the document in its file
    line: int  # 1-based line of the document in its file (1 for .txt)
    text: str  # the document as uploaded
    tokens: tuple  # explain_core.tokenizers.Token per unit, offsets into text
    values: np.ndarray  # float64 per token; NaN for a token the model never saw
    unit: str = "word"  # "word" or "sentence"
    output_kind: str = "logit"  # what the values explain: "logit" or "probability"
    base_value: float | None = None  # SHAP: the model output with every unit hidden
    padding_value: float | None = None  # gradient methods: attribution that fell on padding positions

    def __post_init__(self) -> None:
        self.text = str(self.text)
        self.tokens = tuple(self.tokens)
        self.values = np.asarray(self.values, dtype=np.float64).reshape(-1)
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {self.unit!r}")
        if self.output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output_kind must be one of {OUTPUT_KINDS}, got {self.output_kind!r}")
        if len(self.values) != len(self.tokens):
            raise ValueError(f"{len(self.values)} values for {len(self.tokens)} tokens")
        if np.isinf(self.values).any():
            raise ValueError("attribution values must be finite (NaN marks an unseen token)")
        previous_end = 0
        for i, token in enumerate(self.tokens):
            if not 0 <= token.start <= token.end <= len(self.text):
                raise ValueError(f"token {i} has offsets {token.start}:{token.end} outside the text")
            if token.start < previous_end:
                raise ValueError(f"token {i} starts at {token.start}, before the previous token ends")
            previous_end = token.end

    @property
    def seen(self) -> np.ndarray:
        """Per token, whether the model saw it (it has a value)."""
        return ~np.isnan(self.values)

    def substring(self, index: int) -> str:
        token = self.tokens[index]
        return self.text[token.start:token.end]

    def max_abs(self) -> float:
        """The largest |value| over seen tokens (0 when none): the colour scale of the document."""
        seen = self.values[self.seen]
        return float(np.max(np.abs(seen))) if seen.size else 0.0


# --------------------------------------------------------------------------- numbers


def _number(value) -> float | None:
    """A plain float for JSON; None, NaN and infinities become None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _signed(value: float) -> str:
    return f"{value:+.3g}"


def _short(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    """One line of at most ``limit`` characters (whitespace collapsed)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def top_token_indexes(expl: DocumentExplanation, k: int = TOP_TOKENS) -> list[int]:
    """Indexes of the ``k`` seen tokens with the largest |value| (the manifest's and the JSON's top tokens);
    ties keep text order."""
    candidates = [i for i in range(len(expl.tokens)) if expl.seen[i]]
    return sorted(candidates, key=lambda i: -abs(expl.values[i]))[:k]


# --------------------------------------------------------------------------- JSON / CSV / summary


def tokens_json(explanation: DocumentExplanation) -> bytes:
    """Strict JSON of one document's attributions; an unseen token has ``"value": null, "seen": false``."""
    expl = explanation
    seen = expl.seen
    tokens = [
        {
            "index": i,
            "token": token.text,
            "text": expl.substring(i),
            "start": int(token.start),
            "end": int(token.end),
            "value": float(expl.values[i]) if seen[i] else None,
            "seen": bool(seen[i]),
        }
        for i, token in enumerate(expl.tokens)
    ]
    document = {
        "method": str(expl.method),
        "class_index": int(expl.class_index),
        "class_name": str(expl.class_name),
        "score": _number(expl.score),
        "document": int(expl.document),
        "line": int(expl.line),
        "unit": expl.unit,
        "output_kind": expl.output_kind,
        "base_value": _number(expl.base_value),
        "padding_value": _number(expl.padding_value),
        "truncated_tokens": int((~seen).sum()),
        "sum_of_values": float(expl.values[seen].sum()),
        "tokens": tokens,
        "top_tokens": [
            {"index": i, "text": expl.substring(i), "value": float(expl.values[i])}
            for i in top_token_indexes(expl)
        ],
    }
    return strict_json(document)


def _csv_text(value: str) -> str:
    """A text cell a spreadsheet will not run as a formula; lone surrogates (JSON input) become U+FFFD."""
    value = _valid_unicode(str(value))
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def values_csv(explanations: list[DocumentExplanation]) -> bytes:
    """One row per (document, token); ``value`` is empty for a token the model never saw.

    Floats are written with ``repr`` (round-trips exactly); text cells starting with = + - @ are
    prefixed with a single quote so spreadsheets show them as text.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for expl in explanations:
        seen = expl.seen
        for i, token in enumerate(expl.tokens):
            writer.writerow(
                [
                    int(expl.document),
                    int(expl.line),
                    _csv_text(expl.class_name),
                    i,
                    _csv_text(token.text),
                    _csv_text(expl.substring(i)),
                    int(token.start),
                    int(token.end),
                    repr(float(expl.values[i])) if seen[i] else "",
                ]
            )
    return buffer.getvalue().encode("utf-8")


def summary_line(explanation: DocumentExplanation, k: int = 3) -> str:
    """``positive 0.97: +loved (1.2), +great (0.8), -boring (-0.3)``: the k strongest units, signed."""
    expl = explanation
    parts = []
    for i in top_token_indexes(expl, k):
        value = float(expl.values[i])
        parts.append(f"{'+' if value >= 0 else '-'}{_short(expl.tokens[i].text, 40)} ({value:.3g})")
    head = f"{_short(expl.class_name)} {float(expl.score):.2f}"
    return f"{head}: {', '.join(parts)}" if parts else f"{head}: no attributions"


# --------------------------------------------------------------------------- colours


def _alpha(value: float, max_abs: float) -> float:
    return MAX_ALPHA * min(1.0, abs(value) / max_abs) if max_abs > 0 else 0.0


def _rgb_for(value: float) -> tuple[int, int, int]:
    return POSITIVE_RGB if value >= 0 else NEGATIVE_RGB


def _blend(rgb: tuple[int, int, int], alpha: float) -> tuple[int, int, int]:
    """``rgb`` at opacity ``alpha`` over white."""
    return tuple(round(255 * (1 - alpha) + c * alpha) for c in rgb)


def _segments(expl: DocumentExplanation):
    """(start, end, token index or None) covering the whole text: tokens and the text between them."""
    position = 0
    for i, token in enumerate(expl.tokens):
        if token.start > position:
            yield position, token.start, None
        yield token.start, token.end, i
        position = token.end
    if position < len(expl.text):
        yield position, len(expl.text), None


# --------------------------------------------------------------------------- HTML


def _caption(expl: DocumentExplanation) -> str:
    return (
        f"{expl.method} \u00b7 class {expl.class_name} (index {int(expl.class_index)}) \u00b7 "
        f"score {float(expl.score):.3f} \u00b7 document {int(expl.document)}, line {int(expl.line)}"
    )


def html_snippet(explanation: DocumentExplanation) -> bytes:
    """A self-contained ``<figure>``: the document with each unit coloured by its value (inline styles only)."""
    expl = explanation
    esc = html.escape
    max_abs = expl.max_abs()
    seen = expl.seen
    body = []
    for start, end, i in _segments(expl):
        piece = esc(_valid_unicode(expl.text[start:end]))
        if i is None:
            body.append(piece)
            continue
        label = esc(_valid_unicode(_short(expl.tokens[i].text)))
        if not seen[i]:
            title = f"{label}: not seen by the model (cut by its maximum length)"
            body.append(f'<span class="unseen" style="color:#969696" title="{title}">{piece}</span>')
            continue
        value = float(expl.values[i])
        r, g, b = _rgb_for(value)
        alpha = _alpha(value, max_abs)
        style = f"background-color:rgba({r},{g},{b},{alpha:.3f});border-radius:3px"
        title = f"{label}: {esc(_signed(value))}"
        body.append(f'<span style="{style}" title="{title}" data-value="{value!r}">{piece}</span>')

    pr, pg, pb = POSITIVE_RGB
    nr, ng, nb = NEGATIVE_RGB
    legend = (
        f'<span style="background-color:rgba({pr},{pg},{pb},{MAX_ALPHA})">&nbsp;red&nbsp;</span> positive, '
        f'<span style="background-color:rgba({nr},{ng},{nb},{MAX_ALPHA})">&nbsp;blue&nbsp;</span> negative '
        f"attribution to the {esc(expl.output_kind)} of class {esc(_valid_unicode(str(expl.class_name)))}; "
        f"opacity \u221d |value| per {esc(expl.unit)}, strongest |value| = {esc(f'{max_abs:.3g}')}."
    )
    unseen = int((~seen).sum())
    if unseen:
        legend += (
            f' <span style="color:#969696">Grey: {unseen} {esc(expl.unit)}(s) cut by the model&#x27;s maximum length, '
            "never seen by it.</span>"
        )
    if expl.padding_value is not None and math.isfinite(float(expl.padding_value)):
        legend += f" Attribution on padding: {esc(_signed(float(expl.padding_value)))}."
    if expl.base_value is not None and math.isfinite(float(expl.base_value)):
        legend += f" Base value (every {esc(expl.unit)} hidden): {esc(f'{float(expl.base_value):.3g}')}."
    fragment = (
        '<figure class="text-attributions" style="margin:0 0 1em 0;font-family:sans-serif">'
        '<figcaption style="font-size:0.85em;color:#333;margin-bottom:0.5em">'
        f"<strong>{esc(_valid_unicode(_caption(expl)))}</strong><br>{legend}</figcaption>"
        '<div style="white-space:pre-wrap;line-height:1.8;font-size:1em">'
        f"{''.join(body)}</div></figure>\n"
    )
    return fragment.encode("utf-8")


# --------------------------------------------------------------------------- PNG

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_ATOM = re.compile(r"\r\n|\r|\n|[^\S\r\n]+|[^\s]+")


def _valid_unicode(text: str) -> str:
    """Lone surrogates (possible from JSON ``\\ud800`` escapes) replaced one for one by U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def _displayable(text: str) -> str:
    """Text Pillow can draw: control characters and lone surrogates become U+FFFD, tabs four spaces."""
    out = []
    for char in _valid_unicode(text):
        if char == "\t":
            out.append("    ")
        elif unicodedata.category(char) in ("Cc", "Cs"):
            out.append("\ufffd")
        else:
            out.append(char)
    return "".join(out)


def font_path(bold: bool = False) -> str:
    """matplotlib's DejaVu Sans (wide Unicode coverage, shipped with matplotlib in every image)."""
    import matplotlib

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name)
    if os.path.exists(path):
        return path
    from matplotlib import font_manager

    return font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal"))


@cache
def _font(size: int, bold: bool = False):
    from PIL import ImageFont

    return ImageFont.truetype(font_path(bold), size)


@dataclass
class _Placed:
    x: float
    y: int
    text: str
    token: int | None
    width: float


@dataclass
class _Layout:
    placed: list[_Placed]
    lines: int
    cut_at: int | None  # character offset where the text was cut (None: all shown)
    top: int


def _fit(text: str, available: float, font) -> int:
    """Longest prefix length of ``text`` that fits ``available`` pixels (at least one character)."""
    low, high = 1, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if font.getlength(text[:middle]) <= available:
            low = middle
        else:
            high = middle - 1
    return low


def _header_height() -> int:
    return MARGIN + TITLE_FONT_SIZE + 10 + SMALL_FONT_SIZE + COLOUR_BAR_HEIGHT + 22


def _layout(expl: DocumentExplanation, width: int) -> _Layout:
    """Word-wrap the document; stops (``cut_at``) when the next line would push the image past MAX_HEIGHT."""
    font = _font(FONT_SIZE)
    left, right = MARGIN, width - MARGIN
    top = _header_height()
    footer = MARGIN + 2 * (SMALL_FONT_SIZE + 8)  # room for both notes, whether or not they are needed
    max_lines = max(1, (MAX_HEIGHT - top - footer) // LINE_HEIGHT)
    placed: list[_Placed] = []
    line, x, wrapped = 0, float(left), False

    def new_line(by_wrap: bool) -> bool:
        nonlocal line, x, wrapped
        if line + 1 >= max_lines:
            return False
        line, x, wrapped = line + 1, float(left), by_wrap
        return True

    for start, end, token in _segments(expl):
        for match in _ATOM.finditer(expl.text, start, end):
            atom, offset = match.group(), match.start()
            if atom in ("\n", "\r", "\r\n"):
                if not new_line(False):
                    return _Layout(placed, line + 1, offset, top)
                continue
            shown = _displayable(atom)
            if atom.isspace():
                if wrapped and x == left:
                    continue  # spaces that fall at a wrapped line's start are not drawn
                shown = " " * len(shown)
                w = font.getlength(shown)
                if x + w > right:
                    if not new_line(True):
                        return _Layout(placed, line + 1, offset, top)
                    continue
                placed.append(_Placed(x, line, shown, token, w))
                x += w
                continue
            while shown:
                w = font.getlength(shown)
                if x + w <= right:
                    placed.append(_Placed(x, line, shown, token, w))
                    x += w
                    break
                if x > left:  # try the word on a fresh line first
                    if not new_line(True):
                        return _Layout(placed, line + 1, offset, top)
                    continue
                n = _fit(shown, right - left, font)  # longer than a line: break it
                placed.append(_Placed(x, line, shown[:n], token, font.getlength(shown[:n])))
                shown = shown[n:]
                offset += n  # approximate past tabs/controls; only used for the "cut" note
                if shown and not new_line(True):
                    return _Layout(placed, line + 1, min(offset, end), top)
    return _Layout(placed, line + 1, None, top)


def token_boxes(explanation: DocumentExplanation, *, width: int = 900) -> dict[int, list[tuple[int, int, int, int]]]:
    """Where :func:`render_png` draws each token: token index -> (x0, y0, x1, y1) boxes, one per line it spans."""
    _check_width(width)
    layout = _layout(explanation, width)
    boxes: dict[int, list[list[float]]] = {}
    for piece in layout.placed:
        if piece.token is None:
            continue
        y0 = layout.top + piece.y * LINE_HEIGHT
        runs = boxes.setdefault(piece.token, [])
        if runs and runs[-1][1] == y0 and abs(runs[-1][2] - piece.x) < 1:
            runs[-1][2] = piece.x + piece.width
        else:
            runs.append([piece.x, y0, piece.x + piece.width, y0 + LINE_HEIGHT])
    return {i: [(math.floor(a), b, math.ceil(c), d) for a, b, c, d in runs] for i, runs in boxes.items()}


def _check_width(width: int) -> None:
    if not MIN_WIDTH <= int(width) <= MAX_WIDTH:
        raise ValueError(f"width must be between {MIN_WIDTH} and {MAX_WIDTH} pixels, got {width}")


def _ellipsize(text: str, available: float, font) -> str:
    if font.getlength(text) <= available:
        return text
    return text[: max(0, _fit(text, available - font.getlength("\u2026"), font) - 1)] + "\u2026"


def render_png(explanation: DocumentExplanation, *, width: int = 900) -> bytes:
    """The document word-wrapped with each unit's background coloured by its value, a title and a colour bar."""
    from PIL import Image, ImageDraw

    _check_width(width)
    expl = explanation
    font, small, title_font = _font(FONT_SIZE), _font(SMALL_FONT_SIZE), _font(TITLE_FONT_SIZE, bold=True)
    layout = _layout(expl, width)
    unseen = int((~expl.seen).sum())
    notes = []
    if unseen:
        notes.append(f"Grey: {unseen} {expl.unit}(s) cut by the model's maximum length, never seen by it.")
    if layout.cut_at is not None:
        notes.append(
            f"\u2026 text cut at character {layout.cut_at} of {len(expl.text)}: the image shows {layout.lines} lines."
        )
    body_bottom = layout.top + layout.lines * LINE_HEIGHT
    height = min(MAX_HEIGHT, body_bottom + 8 + len(notes) * (SMALL_FONT_SIZE + 8) + MARGIN)

    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    usable = width - 2 * MARGIN

    # Header: title, legend text, colour bar from -max to +max.
    draw.text((MARGIN, MARGIN), _ellipsize(_displayable(_caption(expl)), usable, title_font), fill=TEXT_RGB,
              font=title_font)
    max_abs = expl.max_abs()
    legend_y = MARGIN + TITLE_FONT_SIZE + 10
    legend = (f"red positive, blue negative attribution to the {expl.output_kind} of class "
              f"{_displayable(_short(expl.class_name))}; "
              f"opacity \u221d |value| per {expl.unit}")
    bar_x = width - MARGIN - COLOUR_BAR_WIDTH
    draw.text((MARGIN, legend_y), _ellipsize(legend, bar_x - MARGIN - 12, small), fill=TEXT_RGB, font=small)
    for column in range(COLOUR_BAR_WIDTH):
        position = column / (COLOUR_BAR_WIDTH - 1) * 2 - 1  # -1 .. +1
        colour = _blend(_rgb_for(position), MAX_ALPHA * abs(position))
        draw.line([bar_x + column, legend_y, bar_x + column, legend_y + COLOUR_BAR_HEIGHT], fill=colour)
    draw.rectangle([bar_x - 1, legend_y - 1, bar_x + COLOUR_BAR_WIDTH, legend_y + COLOUR_BAR_HEIGHT],
                   outline=(0, 0, 0))
    tick_y = legend_y + COLOUR_BAR_HEIGHT + 2
    for label, x, anchor in ((f"{-max_abs:.3g}", bar_x, "la"), ("0", bar_x + COLOUR_BAR_WIDTH // 2, "ma"),
                             (f"+{max_abs:.3g}", bar_x + COLOUR_BAR_WIDTH, "ra")):
        draw.text((x, tick_y), label, fill=TEXT_RGB, font=small, anchor=anchor)

    # Body: backgrounds first, then the text over them.
    for piece in layout.placed:
        if piece.token is None or not expl.seen[piece.token]:
            continue
        value = float(expl.values[piece.token])
        y0 = layout.top + piece.y * LINE_HEIGHT
        colour = _blend(_rgb_for(value), _alpha(value, max_abs))
        draw.rectangle([piece.x, y0 + 1, piece.x + piece.width, y0 + LINE_HEIGHT - 2], fill=colour)
    for piece in layout.placed:
        if not piece.text.strip():
            continue
        colour = UNSEEN_RGB if piece.token is not None and not expl.seen[piece.token] else TEXT_RGB
        draw.text((piece.x, layout.top + piece.y * LINE_HEIGHT + LINE_HEIGHT // 2), piece.text, fill=colour,
                  font=font, anchor="lm")

    y = body_bottom + 8
    for note in notes:
        draw.text((MARGIN, y), _ellipsize(note, usable, small), fill=(90, 90, 90), font=small)
        y += SMALL_FONT_SIZE + 8

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
