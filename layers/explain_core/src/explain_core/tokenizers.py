"""Word tokenizers of text models: tokens with character offsets in the original text, and their ids.

One tokenizer serves both kinds of text model (docs/text.md):

- a model that takes token ids, with its vocabulary in a file beside it (``vocab.txt``: one token
  per line, line 1 is id 0) and the card's settings (lowercase, strip punctuation, split pattern,
  maximum length, out-of-vocabulary and padding tokens);
- a model that takes strings and tokenizes them itself with a Keras ``TextVectorization`` layer:
  its vocabulary and settings are read from the layer (:meth:`WordTokenizer.from_text_vectorization`),
  and the tokens it yields are the layer's (checked in tests against the layer itself).

The tokenizer reproduces ``TextVectorization``'s defaults ("lower_and_strip_punctuation", split on
whitespace) but keeps each token's offsets in the text the user sent, so attributions can be shown
where the words are. Nothing here is unpickled: a vocabulary is UTF-8 text.

Two details of ``TextVectorization`` that Python's defaults do not share, followed by
:meth:`WordTokenizer.from_text_vectorization` (tests/unit/test_tokenizers.py compares with the layer):
its lowercasing (``tf.strings.lower``) changes ASCII letters only ("ÉCOLE" becomes "École"), and
its "whitespace" split breaks on ASCII whitespace only (space, \\t, \\n, \\v, \\f, \\r; not on
U+00A0 or U+2003). A vocabulary-file tokenizer lowercases with ``str.lower`` and splits on the card's
``split_pattern`` (default ``\\s+``, Unicode whitespace).

A card's ``split_pattern`` is a regular expression from the model's owner run on every upload, so only
patterns that cannot backtrack are accepted (:func:`check_split_pattern`): ``\\s+`` or one character
class followed by ``+``. Each match is then a maximal run of one set of characters, found in time
linear in the text; ``(\\s+)+!`` would take exponential time on a run of spaces.
"""

import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the light API image validates cards (check_split_pattern) without NumPy
    import numpy as np

#: Characters TextVectorization strips with "lower_and_strip_punctuation" (its DEFAULT_STRIP_REGEX).
PUNCTUATION = frozenset('!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\'')
#: Longest split pattern a card may give (a regex from the model's owner, compiled once).
MAX_SPLIT_PATTERN = 200
#: The split patterns a card may give: ``\\s+`` or one character class followed by ``+`` (no groups,
#: alternation, lookarounds or zero-width matches: nothing that can backtrack).
SAFE_SPLIT_PATTERN = re.compile(r"(?:\\s|\[(?:[^\]\\]|\\.)+\])\+")
#: TextVectorization's split="whitespace" (tf.strings.split): ASCII whitespace only.
ASCII_WHITESPACE = r"[ \t\n\x0b\x0c\r]+"
#: str.translate table of tf.strings.lower: A-Z only.
_ASCII_LOWER = {code: code + 32 for code in range(ord("A"), ord("Z") + 1)}


@dataclass(frozen=True)
class Token:
    """One word: its normalised form (what the vocabulary holds), its id and where it is in the text."""

    text: str
    start: int
    end: int
    id: int


@dataclass(frozen=True)
class Encoded:
    """A document as the model sees it: ``ids`` of the model's length, and where each token sits in them."""

    #: Every token of the document, in order (including those cut by the model's length).
    tokens: tuple[Token, ...]
    #: (max_length,) int64: the model input (padded or truncated).
    ids: "np.ndarray"
    #: Per token, its position in ``ids``; -1 for a token the model never sees (truncated).
    positions: "np.ndarray"

    @property
    def seen(self) -> "np.ndarray":
        """Indexes (into ``tokens``) of the tokens the model sees; attributions exist for these only."""
        import numpy as np

        return np.flatnonzero(self.positions >= 0)

    @property
    def truncated(self) -> int:
        """Tokens cut by the model's length, never seen by the model."""
        return int((self.positions < 0).sum())


class WordTokenizer:
    """Split text into words, normalise them and map them to vocabulary ids; offsets refer to the raw text."""

    def __init__(self, vocabulary: list[str], *, max_length: int, lowercase: bool = True,
                 strip_punctuation: bool = True, split_pattern: str = r"\s+", oov_token: str = "[UNK]",
                 padding_token: str = "", padding: str = "post", truncation: str = "post",
                 ascii_lowercase: bool = False):
        if padding not in ("post", "pre") or truncation not in ("post", "pre"):
            raise ValueError("padding and truncation must be 'post' or 'pre'")
        self.vocabulary = list(vocabulary)
        self.index = {token: i for i, token in enumerate(self.vocabulary)}
        if len(self.index) != len(self.vocabulary):
            raise ValueError("the vocabulary has duplicate tokens")
        if oov_token not in self.index:
            raise ValueError(f"the out-of-vocabulary token {oov_token!r} is not in the vocabulary")
        if padding_token not in self.index:
            raise ValueError(f"the padding token {padding_token!r} is not in the vocabulary")
        self.split = re.compile(check_split_pattern(split_pattern))
        self.max_length = max_length
        self.lowercase = lowercase
        #: Lowercase A-Z only, as TextVectorization does (non-ASCII capitals stay).
        self.ascii_lowercase = ascii_lowercase
        self.strip_punctuation = strip_punctuation
        self.oov_id = self.index[oov_token]
        self.padding_id = self.index[padding_token]
        self.padding = padding
        self.truncation = truncation

    @classmethod
    def from_text_vectorization(cls, layer) -> "WordTokenizer":
        """The tokenizer of a Keras ``TextVectorization`` layer (int output, default standardize and split)."""
        config = layer.get_config()
        problems = []
        if config.get("output_mode") != "int":
            problems.append(f"output_mode={config.get('output_mode')!r} (only 'int' gives token positions)")
        if config.get("standardize") not in ("lower_and_strip_punctuation", "lower", "strip_punctuation", None):
            problems.append(f"standardize={config.get('standardize')!r}")
        if config.get("split") != "whitespace":
            problems.append(f"split={config.get('split')!r}")
        if (config.get("ngrams") or None) is not None:
            problems.append(f"ngrams={config.get('ngrams')!r}")
        if not config.get("output_sequence_length"):
            problems.append("no output_sequence_length (the model's input length must be fixed)")
        if problems:
            raise ValueError(f"TextVectorization layer {layer.name!r} is not supported: " + "; ".join(problems))
        standardize = config.get("standardize")
        vocabulary = [str(t) for t in layer.get_vocabulary(include_special_tokens=True)]
        return cls(vocabulary, max_length=int(config["output_sequence_length"]),
                   lowercase=standardize in ("lower_and_strip_punctuation", "lower"),
                   strip_punctuation=standardize in ("lower_and_strip_punctuation", "strip_punctuation"),
                   split_pattern=ASCII_WHITESPACE, oov_token=vocabulary[1], padding_token=vocabulary[0],
                   ascii_lowercase=True)

    # ------------------------------------------------------------------ text -> tokens
    def tokens(self, text: str, limit: int | None = None) -> list[Token]:
        """Every token of ``text`` with its offsets (past the model's length too).

        With ``limit``, stops after ``limit + 1`` tokens: enough to tell a document over the limit
        without tokenizing all of it.
        """
        found, position = [], 0
        for separator in self.split.finditer(text):
            self._add(text, position, separator.start(), found)
            position = separator.end()
            if limit is not None and len(found) > limit:
                return found
        self._add(text, position, len(text), found)
        return found

    def _add(self, text: str, start: int, end: int, found: list) -> None:
        piece = text[start:end]
        if self.strip_punctuation:
            kept = [i for i, char in enumerate(piece) if char not in PUNCTUATION]
            if not kept:
                return
            word = "".join(piece[i] for i in kept)
            start, end = start + kept[0], start + kept[-1] + 1  # the highlight skips surrounding punctuation
        else:
            word = piece
        if not word:
            return
        if self.lowercase:
            word = word.translate(_ASCII_LOWER) if self.ascii_lowercase else word.lower()
        found.append(Token(word, start, end, self.index.get(word, self.oov_id)))

    def encode(self, text: str, limit: int | None = None) -> Encoded:
        """The model input of one document and where its tokens sit in it.

        With ``limit``, a document of more than ``limit`` tokens gives its first ``limit + 1`` tokens
        only (see :meth:`tokens`): the caller refuses it, its ids are not the document's.
        """
        tokens = self.tokens(text, limit)
        n = len(tokens)
        cut = max(0, n - self.max_length)
        kept = range(0, n - cut) if self.truncation == "post" else range(cut, n)
        offset = 0 if self.padding == "post" else self.max_length - len(kept)
        import numpy as np

        ids = np.full(self.max_length, self.padding_id, dtype=np.int64)
        positions = np.full(n, -1, dtype=np.int64)
        positions[kept.start:kept.stop] = np.arange(offset, offset + len(kept))
        ids[offset:offset + len(kept)] = [tokens[i].id for i in kept]
        return Encoded(tuple(tokens), ids, positions)

    def describe(self) -> dict:
        """The settings, for the manifest."""
        return {"vocabulary_size": len(self.vocabulary), "max_length": self.max_length,
                "lowercase": ("ascii" if self.ascii_lowercase else True) if self.lowercase else False,
                "strip_punctuation": self.strip_punctuation,
                "split_pattern": self.split.pattern, "oov_token": self.vocabulary[self.oov_id],
                "padding_token": self.vocabulary[self.padding_id], "padding": self.padding,
                "truncation": self.truncation}


def check_split_pattern(pattern: str) -> str:
    """``pattern`` if a card may use it as ``split_pattern`` (see :data:`SAFE_SPLIT_PATTERN`); else ValueError."""
    if len(pattern) > MAX_SPLIT_PATTERN:
        raise ValueError(f"split_pattern is longer than {MAX_SPLIT_PATTERN} characters")
    if SAFE_SPLIT_PATTERN.fullmatch(pattern) is None:
        raise ValueError(
            f"split_pattern {pattern!r} is not allowed: it must be \\s+ or one character class followed by + "
            "(for example [\\s,;]+ or [ \\t\\n]+); groups, alternation, lookarounds and other quantifiers "
            "could make matching take exponential time")
    # Inside a class, an unescaped "[" or a doubled "-", "&", "~", "|" may mean a nested set or a set
    # operation in a later Python (a FutureWarning today): refused, so the pattern means one thing.
    items = re.findall(r"\\.|[^\\]", pattern[1:-2]) if pattern.startswith("[") else []
    if "[" in items or any(a == b and a in "-&~|" for a, b in zip(items, items[1:], strict=False)):
        raise ValueError(f"split_pattern {pattern!r} is not allowed: inside its class, escape '[' and doubled "
                         "'-', '&', '~', '|' (as \\[ or \\-)")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"split_pattern {pattern!r} is not a valid regular expression: {exc}") from exc
    return pattern


def parse_vocabulary(data: bytes, *, max_tokens: int, source: str) -> list[str]:
    """A ``vocab.txt`` (UTF-8, one token per line, line 1 is id 0; an empty line is the empty token)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source} is not UTF-8 text (byte offset {exc.start})") from None
    if "\x00" in text:
        raise ValueError(f"{source} contains a NUL byte: it is not a text vocabulary")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it is not an empty token
    lines = [line.rstrip("\r") for line in lines]
    if not 2 <= len(lines) <= max_tokens:
        raise ValueError(f"{source} has {len(lines)} tokens; expected 2 to {max_tokens}")
    duplicates = sorted(token for token, count in Counter(lines).items() if count > 1)
    if duplicates:
        raise ValueError(f"{source} lists tokens more than once: {duplicates[:10]}")
    return lines
