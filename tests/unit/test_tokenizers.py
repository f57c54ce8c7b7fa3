"""Unit tests for explain_core.tokenizers: offsets, normalisation, padding, vocabularies, and the same ids
as Keras' TextVectorization."""

import random
import re
from re import _constants as sre_constants
from re import _parser as sre_parse

import numpy as np
import pytest

from explain_core.tokenizers import (
    ASCII_WHITESPACE,
    MAX_SPLIT_PATTERN,
    PUNCTUATION,
    WordTokenizer,
    check_split_pattern,
    parse_vocabulary,
)

VOCABULARY = ["", "[UNK]", "the", "movie", "was", "great", "bboringb", "dont", "café", "école"]


def tokenizer(max_length: int = 6, **options) -> WordTokenizer:
    return WordTokenizer(VOCABULARY, max_length=max_length, **options)


def words(text: str, **options) -> list[str]:
    return [t.text for t in tokenizer(**options).tokens(text)]


# --------------------------------------------------------------------------- tokens and offsets


@pytest.mark.parametrize("text", ["The movie was GREAT!", "  <b>boring</b>\n\tdon't  ", "Café, école; (the) end...",
                                  "", "!!! ... ,,,", "naïve—plot «quoted» 👍 x"])
def test_offsets_slice_the_original_text(text):
    found = tokenizer().tokens(text)
    for token in found:
        raw = text[token.start:token.end]
        assert raw and raw[0] not in PUNCTUATION and raw[-1] not in PUNCTUATION  # the highlight skips them
        assert "".join(c for c in raw if c not in PUNCTUATION).lower() == token.text
        assert token.id == (VOCABULARY.index(token.text) if token.text in VOCABULARY else 1)
    assert all(a.end <= b.start for a, b in zip(found, found[1:], strict=False))  # in order, not overlapping


def test_normalisation_lowercases_and_strips_punctuation_inside_tokens():
    text = "The <b>boring</b> movie: Don't!"
    found = tokenizer().tokens(text)
    assert [t.text for t in found] == ["the", "bboringb", "movie", "dont"]
    assert [t.id for t in found] == [2, 6, 3, 7]
    boring = found[1]
    assert (boring.start, boring.end) == (5, 16) and text[boring.start:boring.end] == "b>boring</b"
    assert text[found[3].start:found[3].end] == "Don't"
    assert words(text, lowercase=False) == ["The", "bboringb", "movie", "Dont"]
    assert words(text, strip_punctuation=False) == ["the", "<b>boring</b>", "movie:", "don't!"]
    assert words("CAFÉ École") == ["café", "école"]  # str.lower for a vocabulary-file tokenizer


def test_tokens_of_punctuation_only_vanish_and_unknown_words_get_the_oov_id():
    found = tokenizer().tokens("the -- zebra ... was")
    assert [(t.text, t.id) for t in found] == [("the", 2), ("zebra", 1), ("was", 4)]
    custom = WordTokenizer(["<pad>", "<oov>", "the"], max_length=3, oov_token="<oov>", padding_token="<pad>")
    assert [t.id for t in custom.tokens("the zebra")] == [2, 1]
    assert custom.encode("the").ids.tolist() == [2, 0, 0]


@pytest.mark.parametrize(("pattern", "text", "expected"), [
    (r"[|]+", "the|movie||was", ["the", "movie", "was"]),
    (r"[\s,;]+", "the,movie; was\tgreat", ["the", "movie", "was", "great"]),
    (ASCII_WHITESPACE, "the\x0bmovie\u00a0was", ["the", "movie\u00a0was"]),
    (r"[^a-z]+", "the1movie--was", ["the", "movie", "was"]),
    (r"[\]\\]+", "the]movie\\was", ["the", "movie", "was"]),
    (r"\s+", "the\u2003movie", ["the", "movie"]),
])
def test_custom_split_pattern(pattern, text, expected):
    assert words(text, split_pattern=pattern) == expected


# --------------------------------------------------------------------------- split patterns that cannot backtrack

#: Patterns with nested or overlapping quantifiers, alternation, groups, lookarounds or zero-width matches.
UNSAFE_PATTERNS = [r"(\s+)+!", r"(\s|\s)+!", r"(?:\s+)+", r"\s+\s+!", r"[ ]+[ ]+!", r"(a|a)*b", r"\s*", "a?",
                   r"\b", r"\s+|,", r"(?=\s)\s+", r"(?<=a)\s+", r"\s+\b", r"[ ]{1,}", r"[ ]+?", r"[ ]++", r"[ ]*",
                   r"\S+", r"\|+", " ", r"[ ]", r"[ ]+$", r"^[ ]+", r"[ ][ ]+", r"[[:space:]]+", r"[^]]+", "", r"\s"]


@pytest.mark.parametrize("pattern", UNSAFE_PATTERNS)
def test_split_patterns_that_could_backtrack_are_refused(pattern):
    with pytest.raises(ValueError, match=r"is not allowed: it must be \\s\+ or one character class followed by \+"):
        check_split_pattern(pattern)
    with pytest.raises(ValueError, match="is not allowed"):
        tokenizer(split_pattern=pattern)


@pytest.mark.parametrize("pattern", [r"[[a]+", r"[a--z]+", r"[ &&x]+", r"[~~]+", r"[||]+"])
def test_classes_python_may_read_as_set_operations_are_refused(pattern):
    with pytest.raises(ValueError, match="inside its class, escape"):
        check_split_pattern(pattern)


def test_escaped_set_characters_are_accepted():
    assert words("the[movie-was", split_pattern=r"[\[\-]+") == ["the", "movie", "was"]
    assert check_split_pattern(r"[a\-\-z]+") == r"[a\-\-z]+"


def _one_repeated_set(pattern: str) -> bool:
    """Whether ``pattern`` parses to one greedy repeat (1 or more) of one character set: no backtracking."""
    ((op, (low, high, body)),) = sre_parse.parse(pattern)
    (item,) = body
    return (op is sre_constants.MAX_REPEAT and (low, high) == (1, sre_constants.MAXREPEAT)
            and item[0] in (sre_constants.IN, sre_constants.CATEGORY, sre_constants.LITERAL, sre_constants.NOT_LITERAL))


def test_every_accepted_split_pattern_is_one_repeated_character_set():
    """Without timing anything: random patterns from regex metacharacters are either refused or, once
    accepted, parse to a single ``set+`` (each match is a maximal run of one set, found in linear time)."""
    rng = random.Random(7)
    alphabet = list("[]\\()|+*?{}^$.,; sSbBw-az1") + [r"\s", r"\]", r"\\", "(?=", "(?:"]
    accepted = 0
    for _ in range(20000):
        pattern = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 9)))
        if rng.random() < 0.5:
            pattern = "[" + pattern + "]+"
        try:
            check_split_pattern(pattern)
        except ValueError:
            continue
        accepted += 1
        assert _one_repeated_set(pattern), pattern
        assert re.compile(pattern).search("") is None  # no zero-width match
    assert accepted > 1000
    for pattern in (r"\s+", ASCII_WHITESPACE, r"[\s,;]+", r"[^\w]+"):
        assert check_split_pattern(pattern) == pattern and _one_repeated_set(pattern)


def test_the_pathological_text_tokenizes_with_an_accepted_pattern():
    text = "a" + " " * 40 + "a"
    for pattern in (r"\s+", r"[\s!]+", ASCII_WHITESPACE):
        assert [t.text for t in WordTokenizer(["", "[UNK]", "a"], max_length=2, split_pattern=pattern).tokens(text)] \
            == ["a", "a"]


# --------------------------------------------------------------------------- stopping at a token limit


def test_tokens_stop_after_limit_plus_one():
    text = "the movie was great dont café"
    assert [t.text for t in tokenizer().tokens(text, limit=2)] == ["the", "movie", "was"]
    assert [t.text for t in tokenizer().tokens(text, limit=0)] == ["the"]
    assert tokenizer().tokens(text, limit=6) == tokenizer().tokens(text) == tokenizer().tokens(text, limit=99)
    assert len(tokenizer().tokens(text, limit=5)) == 6
    # punctuation-only pieces are not tokens: they do not count towards the limit
    assert [t.text for t in tokenizer().tokens("the ... !! movie , was great", limit=1)] == ["the", "movie"]
    # a long text yields limit + 1 tokens whatever its length
    assert len(tokenizer().tokens("word " * 200_000, limit=3)) == 4


def test_encode_with_a_limit():
    encoded = tokenizer(max_length=4).encode("the movie was great dont café", limit=2)
    assert [t.text for t in encoded.tokens] == ["the", "movie", "was"] and encoded.ids.tolist() == [2, 3, 4, 0]
    assert tokenizer(max_length=4).encode("the movie was", limit=3).ids.tolist() == [2, 3, 4, 0]


# --------------------------------------------------------------------------- padding and truncation


def test_padding_and_truncation_post():
    encoded = tokenizer(max_length=4).encode("the movie was great dont café")
    assert encoded.ids.tolist() == [2, 3, 4, 5]
    assert encoded.positions.tolist() == [0, 1, 2, 3, -1, -1]
    assert encoded.seen.tolist() == [0, 1, 2, 3] and encoded.truncated == 2
    short = tokenizer(max_length=4).encode("movie great")
    assert short.ids.tolist() == [3, 5, 0, 0] and short.positions.tolist() == [0, 1] and short.truncated == 0
    assert short.ids.dtype == np.int64


def test_padding_and_truncation_pre():
    encoded = tokenizer(max_length=4, truncation="pre").encode("the movie was great dont café")
    assert encoded.ids.tolist() == [4, 5, 7, 8]
    assert encoded.positions.tolist() == [-1, -1, 0, 1, 2, 3]
    short = tokenizer(max_length=4, padding="pre").encode("movie great")
    assert short.ids.tolist() == [0, 0, 3, 5] and short.positions.tolist() == [2, 3]
    both = tokenizer(max_length=3, padding="pre", truncation="pre").encode("the movie was great")
    assert both.ids.tolist() == [3, 4, 5] and both.positions.tolist() == [-1, 0, 1, 2]
    empty = tokenizer(max_length=3, padding="pre").encode(" ... ")
    assert empty.ids.tolist() == [0, 0, 0] and empty.tokens == () and empty.positions.tolist() == []


def test_every_seen_token_sits_at_its_position():
    rng = random.Random(0)
    for _ in range(50):
        text = " ".join(rng.choice(VOCABULARY[2:] + ["zebra"]) for _ in range(rng.randrange(0, 12)))
        for padding in ("post", "pre"):
            for truncation in ("post", "pre"):
                encoded = tokenizer(max_length=5, padding=padding, truncation=truncation).encode(text)
                for token, position in zip(encoded.tokens, encoded.positions, strict=True):
                    if position >= 0:
                        assert encoded.ids[position] == token.id
                assert (encoded.ids != 0).sum() == len(encoded.seen) == min(5, len(encoded.tokens))


# --------------------------------------------------------------------------- settings refused


@pytest.mark.parametrize(("options", "message"), [
    ({"split_pattern": "[z-a]+"}, "not a valid regular expression"),
    ({"split_pattern": "(unclosed"}, "is not allowed"),
    ({"split_pattern": "[" + "a" * (MAX_SPLIT_PATTERN - 2) + "]+"}, "longer than"),
    ({"padding": "left"}, "'post' or 'pre'"),
    ({"truncation": "middle"}, "'post' or 'pre'"),
    ({"oov_token": "<unk>"}, "out-of-vocabulary token"),
    ({"padding_token": "<pad>"}, "padding token"),
])
def test_bad_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        tokenizer(**options)


def test_a_vocabulary_with_duplicates_is_refused():
    with pytest.raises(ValueError, match="duplicate"):
        WordTokenizer(["", "[UNK]", "a", "a"], max_length=2)


def test_a_split_pattern_at_the_limit_is_accepted():
    pattern = "[" + "a" * (MAX_SPLIT_PATTERN - 3) + "]+"
    assert len(pattern) == MAX_SPLIT_PATTERN and tokenizer(split_pattern=pattern).split.pattern == pattern


# --------------------------------------------------------------------------- vocabulary files


def test_parse_vocabulary_reads_utf8_lines_with_the_empty_first_token():
    assert parse_vocabulary("\n[UNK]\ncafé\n👍\n".encode(), max_tokens=10, source="vocab.txt") == [
        "", "[UNK]", "café", "👍"]
    assert parse_vocabulary(b"\n[UNK]\nthe", max_tokens=10, source="v") == ["", "[UNK]", "the"]  # no final newline
    assert parse_vocabulary(b"\r\n[UNK]\r\nthe\r\n", max_tokens=10, source="v") == ["", "[UNK]", "the"]  # CRLF
    assert parse_vocabulary(b"<pad>\n<oov>\n\n", max_tokens=10, source="v") == ["<pad>", "<oov>", ""]
    vocabulary = parse_vocabulary(b"\n[UNK]\nthe\nmovie\n", max_tokens=10, source="v")
    assert WordTokenizer(vocabulary, max_length=3).encode("the movie").ids.tolist() == [2, 3, 0]  # line i = id i-1


@pytest.mark.parametrize(("data", "message"), [
    (b"\n[UNK]\ncaf\xe9\n", "not UTF-8 text \\(byte offset 10\\)"),
    (b"\n[UNK]\na\x00b\n", "NUL byte"),
    (b"the\n[UNK]\nthe\n", "more than once: \\['the'\\]"),
    (b"\n[UNK]\r\n[UNK]\n", "more than once"),
    (b"", "has 0 tokens"),
    (b"\n", "has 1 tokens"),
    (b"\n[UNK]\na\nb\n", "has 4 tokens; expected 2 to 3"),
])
def test_parse_vocabulary_refusals_name_the_file(data, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_vocabulary(data, max_tokens=3, source="vocab.txt")
    assert "vocab.txt" in str(info.value)


def test_parse_vocabulary_at_the_limit():
    assert len(parse_vocabulary(b"\n[UNK]\na\n", max_tokens=3, source="v")) == 3


# --------------------------------------------------------------------------- the same ids as TextVectorization

CORPUS = [
    "The film's ending was GREAT!", "I didn't like it... at all.", "Café au lait, très bon; naïve plot.",
    "<b>Boring</b> and slow-paced", "Ça va? ÉCOLE Über straße", "well-known actors, (mostly) good",
    "it's   the    best\tfilm\never", "Don't waste your time!!!", "ΑΒΓ δέλτα İstanbul", "A [great] #1 film: 10/10",
    "email@example.com and http://x.y/z?q=1", "don't DON'T Don’t", "it's a film, it's a FILM",
]
PIECES = ["the", "The", "FILM", "film's", "didn't", "Don’t", "café", "CAFÉ", "École", "école", "Über", "straße",
          "<b>boring</b>", "slow-paced", "...", "!!!", "(mostly)", "naïve", "δέλτα", "ΑΒΓ", "İstanbul", "10/10", "#1",
          "zebra", "x_y", "a", "'quoted'", "\"great\"", "👍", "-", "é", "É"]
SEPARATORS = [" ", "  ", "\t", "\n", "\r\n", " \x0b ", "\x0c", "\u00a0", "\u2003", "\x85", "\u2028", ""]
#: Unicode whitespace TextVectorization does not split on (ASCII whitespace only): one token with the words.
NOT_SPLIT = ["x\u00a0y", "x\u2003y", "a\x1cb", "a\u2028b", "a\x85b"]


@pytest.fixture(scope="module")
def vectorizer():
    import keras

    layer = keras.layers.TextVectorization(max_tokens=60, output_mode="int", output_sequence_length=8)
    layer.adapt(CORPUS)
    return layer


def _texts() -> list[str]:
    rng = random.Random(13)
    texts = CORPUS + NOT_SPLIT + ["", "   ", "!!!", "ÉCOLE école", "İstanbul", "one two three four five six seven "
                                 "eight nine ten eleven"]
    for _ in range(300):
        n = rng.randrange(0, 14)
        texts.append("".join(rng.choice(PIECES) + rng.choice(SEPARATORS) for _ in range(n)))
    return texts


def test_from_text_vectorization_gives_the_layers_ids(vectorizer):
    """The layer's own ids for 324 texts, including its two departures from Python's defaults: ASCII-only
    lowercasing ("ÉCOLE" -> "École", a different token from "école") and an ASCII-whitespace split."""
    converted = WordTokenizer.from_text_vectorization(vectorizer)
    assert converted.max_length == 8 and converted.vocabulary == vectorizer.get_vocabulary()
    assert (converted.padding_id, converted.oov_id) == (0, 1)
    texts = _texts()
    expected = np.asarray(vectorizer(texts))
    ours = np.stack([converted.encode(text).ids for text in texts])
    differ = [(text, ours[i].tolist(), expected[i].tolist()) for i, text in enumerate(texts)
              if not np.array_equal(ours[i], expected[i])]
    assert differ == [] and len(texts) == 324
    assert "École" in converted.vocabulary and "bboringb" in converted.vocabulary
    assert [t.text for t in converted.tokens("ÉCOLE x\u00a0y")] == ["École", "x\u00a0y"]


def test_from_text_vectorization_refuses_what_it_cannot_reproduce():
    import keras

    for options, message in (({"output_mode": "multi_hot"}, "output_mode"),
                             ({"split": "character", "output_sequence_length": 4}, "split"),
                             ({"ngrams": 2, "output_sequence_length": 4}, "ngrams"),
                             ({}, "output_sequence_length")):
        layer = keras.layers.TextVectorization(**{"output_mode": "int", **options}, vocabulary=["a", "b"])
        with pytest.raises(ValueError, match=message):
            WordTokenizer.from_text_vectorization(layer)


@pytest.mark.parametrize("standardize", ["lower", "strip_punctuation", None])
def test_other_standardize_modes_match_the_layer(standardize):
    import keras

    layer = keras.layers.TextVectorization(output_mode="int", output_sequence_length=6, standardize=standardize)
    layer.adapt(CORPUS)
    converted = WordTokenizer.from_text_vectorization(layer)
    texts = _texts()[:120]
    assert np.array_equal(np.stack([converted.encode(t).ids for t in texts]), np.asarray(layer(texts)))
