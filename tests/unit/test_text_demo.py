"""Unit tests for devtools.text_demo: generated reviews with ground truth and the sentiment LSTM."""

import csv
import io
import json
from collections import Counter

import numpy as np
import pytest

from devtools import text_demo
from explain_core.tokenizers import WordTokenizer, parse_vocabulary
from tests.conftest import RecordingS3

MIN_ACCURACY, MIN_NEGATION_ACCURACY = 0.95, 0.9


@pytest.fixture(scope="module")
def model_dir():
    """Trained on first use (about 15 s on 2 cores), then read from the cache."""
    return text_demo.build()


@pytest.fixture(scope="module")
def vocab(model_dir):
    return parse_vocabulary((model_dir / "vocab.txt").read_bytes(), max_tokens=10_000, source="vocab.txt")


@pytest.fixture(scope="module")
def reviews():
    return text_demo.generate_reviews(1500, seed=5)


def _tokens(text):
    return WordTokenizer(["", "[UNK]"], max_length=64).tokens(text)


def _rederive(text):
    """Label and deciding spans from the words alone: a negation flips the next polarity word."""
    total, signed, negation = 0, [], False
    for token in _tokens(text):
        if token.text in text_demo.NEGATIONS:
            negation = True
        elif token.text in text_demo.POLARITY:
            sign = -text_demo.POLARITY[token.text] if negation else text_demo.POLARITY[token.text]
            negation = False
            signed.append(([token.start, token.end], sign))
            total += sign
    return total, signed


def test_generator_is_deterministic_balanced_and_short(reviews):
    assert text_demo.generate_reviews(40, seed=5) == reviews[:40]
    assert text_demo.generate_reviews(40, seed=6) != reviews[:40]
    labels = Counter(review["label"] for review in reviews)
    assert set(labels) == {"negative", "positive"}
    assert abs(labels["positive"] - labels["negative"]) < 0.1 * len(reviews)
    lengths = [len(_tokens(review["text"])) for review in reviews]
    assert min(lengths) >= 8 and max(lengths) <= 40
    assert [review["line"] for review in reviews] == list(range(1, len(reviews) + 1))
    # Mixed case and punctuation, so the tokenizer's normalisation matters.
    texts = " ".join(review["text"] for review in reviews)
    assert any(word.isupper() and word.lower() in text_demo.POLARITY for word in texts.split())
    assert "NOT" in texts.split() and "!" in texts and "wasn't" in texts
    share_negated = np.mean([text_demo.has_negation(review) for review in reviews])
    assert 0.3 < share_negated < 0.8


def test_spans_point_at_the_polarity_and_negation_words(reviews):
    for review in reviews:
        text = review["text"]
        offsets = {(token.start, token.end): token.text for token in _tokens(text)}
        for key, lexicon in (("polarity_spans", text_demo.POLARITY), ("opposing_spans", text_demo.POLARITY),
                             ("negation_spans", text_demo.NEGATIONS)):
            for start, end in review[key]:
                assert (start, end) in offsets, (text, key, text[start:end])  # a whole token, no punctuation
                assert offsets[start, end] in lexicon, (text, key, text[start:end])
        # Every lexicon word of the text is in exactly one list.
        marked = [tuple(span) for key in ("polarity_spans", "opposing_spans", "negation_spans")
                  for span in review[key]]
        lexical = [span for span, word in offsets.items()
                   if word in text_demo.POLARITY or word in text_demo.NEGATIONS]
        assert sorted(marked) == sorted(lexical), text
        assert review["polarity_spans"], text  # something decides the label


def test_labels_are_the_sign_of_the_summed_polarity_with_negation_flips(reviews):
    flipped_deciders = Counter()
    for review in reviews:
        total, signed = _rederive(review["text"])
        assert total != 0
        assert review["label"] == ("positive" if total > 0 else "negative")
        decides = 1 if total > 0 else -1
        assert review["polarity_spans"] == [span for span, sign in signed if sign == decides]
        assert review["opposing_spans"] == [span for span, sign in signed if sign != decides]
        for start, end in review["polarity_spans"]:
            word = review["text"][start:end].lower()
            if text_demo.POLARITY[word] != decides:
                flipped_deciders[review["label"]] += 1  # decides only because it is negated
    # Negated positives decide negative reviews and negated negatives positive ones.
    assert flipped_deciders["negative"] > 50 and flipped_deciders["positive"] > 50


def test_negation_flips_a_label():
    assert text_demo.parse_markup("The ending was -bad.")["label"] == "negative"
    not_bad = text_demo.parse_markup("The ending was ~not -bad.")
    assert not_bad["label"] == "positive"
    assert not_bad["polarity_spans"] == [[19, 22]] and not_bad["negation_spans"] == [[15, 18]]
    assert text_demo.parse_markup("I +enjoyed it")["label"] == "positive"
    assert text_demo.parse_markup("I ~didn't +enjoy it")["label"] == "negative"
    assert text_demo.parse_markup("~NEVER -boring!")["label"] == "positive"
    with pytest.raises(ValueError):
        text_demo.parse_markup("+good but -bad")  # a tie
    with pytest.raises(ValueError):
        text_demo.parse_markup("the ending was +bad")  # marked against the lexicon


def test_held_out_reviews_are_not_training_reviews():
    held_out = text_demo.test_reviews(300)
    assert held_out == text_demo.test_reviews(300) and len(held_out) == 300
    training = {review["text"] for review in text_demo.generate_reviews(text_demo.TRAIN_COUNT,
                                                                        text_demo.TRAIN_SEED)}
    assert not training & {review["text"] for review in held_out}
    with pytest.raises(ValueError):
        text_demo.test_reviews(5, seed=text_demo.TRAIN_SEED)


def test_vocabulary(model_dir, vocab):
    lines = (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert lines[0] == "" and lines[1] == "[UNK]"
    assert vocab[:2] == ["", "[UNK]"] and len(vocab) == len(set(vocab))
    assert set(text_demo.POLARITY) | set(text_demo.NEGATIONS) <= set(vocab)
    assert all(word == word.lower() and word.strip("!.,;'") == word for word in vocab[2:])
    # Frequency order, ties alphabetical.
    assert text_demo.vocabulary(["b a c", "C! b.", "d"]) == ["", "[UNK]", "b", "c", "a", "d"]


def test_card(model_dir):
    card = json.loads((model_dir / "card.json").read_text())
    assert card == text_demo.card()
    assert card["name"] == "sentiment-lstm" and card["version"] == "v1" and card["modality"] == "text"
    assert card["output"] == "logits" and card["class_names"] == ["negative", "positive"]
    assert card["text"]["max_length"] == text_demo.MAX_LENGTH and card["text"]["embedding_layer"] == "embedding"
    assert card["text"]["vocabulary_file"] == "vocab.txt" and card["model_file"] == "model.keras"
    from explain_core.model_card import ModelCard

    validated = ModelCard.model_validate(card)
    assert validated.modality == "text" and validated.class_names == ["negative", "positive"]


def test_model_loads_safely_and_is_accurate(model_dir, vocab):
    import keras

    model = keras.saving.load_model(model_dir / "model.keras", safe_mode=True)
    assert model.get_layer("embedding").input_dim == len(vocab)
    assert tuple(model.input.shape) == (None, text_demo.MAX_LENGTH) and tuple(model.output.shape) == (None, 2)
    held_out = text_demo.test_reviews(600, seed=77)
    ids = np.stack([WordTokenizer(vocab, max_length=text_demo.MAX_LENGTH).encode(r["text"]).ids for r in held_out])
    assert np.array_equal(ids, text_demo.encode(vocab, [r["text"] for r in held_out]))
    logits = model.predict(ids.astype(np.int32), verbose=0)
    correct = np.argmax(logits, axis=1) == [text_demo.CLASS_NAMES.index(r["label"]) for r in held_out]
    negated = np.array([text_demo.has_negation(r) for r in held_out])
    assert negated.sum() > 150
    assert correct.mean() >= MIN_ACCURACY
    assert correct[negated].mean() >= MIN_NEGATION_ACCURACY
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["accuracy"] >= MIN_ACCURACY and metrics["negation_accuracy"] >= MIN_NEGATION_ACCURACY
    assert 0 < metrics["train_seconds"] < 60
    assert metrics["model_bytes"] == (model_dir / "model.keras").stat().st_size


def test_sample_files_and_their_truth(model_dir, vocab):
    import keras

    files, truth = text_demo.sample_files(), text_demo.sample_truth()
    assert set(files) == set(truth) == {"review.txt", "reviews.jsonl", "reviews.csv"}
    [document] = truth["review.txt"]
    assert files["review.txt"].decode("utf-8").strip() == document["text"]
    assert document["label"] == "positive" and document["negation_spans"]
    jsonl = [json.loads(line) for line in files["reviews.jsonl"].decode("utf-8").splitlines()]
    assert 4 <= len(jsonl) <= 6 and all(set(row) == {"id", "text"} for row in jsonl)
    assert [(row["id"], row["text"]) for row in jsonl] == [(d["id"], d["text"]) for d in truth["reviews.jsonl"]]
    assert any("not good" in row["text"] for row in jsonl)
    assert {d["label"] for d in truth["reviews.jsonl"]} == {"negative", "positive"}
    rows = list(csv.DictReader(io.StringIO(files["reviews.csv"].decode("utf-8"))))
    assert rows and all(set(row) == {"id", "text"} for row in rows)
    assert [(row["id"], row["text"]) for row in rows] == [(d["id"], d["text"]) for d in truth["reviews.csv"]]
    assert [d["line"] for d in truth["reviews.csv"]] == list(range(2, len(rows) + 2))  # line 1 is the header
    documents = [d for docs in truth.values() for d in docs]
    for document in documents:
        total, signed = _rederive(document["text"])
        assert document["label"] == ("positive" if total > 0 else "negative")
    assert json.loads(json.dumps(truth)) == truth
    model = keras.saving.load_model(model_dir / "model.keras", safe_mode=True)
    predicted = np.argmax(model.predict(text_demo.encode(vocab, [d["text"] for d in documents]), verbose=0), axis=1)
    assert [text_demo.CLASS_NAMES[i] for i in predicted] == [d["label"] for d in documents]


def test_publish_uploads_the_three_files(model_dir):
    s3 = RecordingS3()
    text_demo.publish(s3, "model-bucket")
    assert sorted(s3.uploads) == sorted(
        (str(model_dir / name), "model-bucket", f"models/sentiment-lstm/v1/{name}")
        for name in ("card.json", "model.keras", "vocab.txt"))
    s3.uploads.clear()
    text_demo.publish(s3, "other", prefix="custom/")
    assert {key for _, _, key in s3.uploads} == {f"custom/sentiment-lstm/v1/{name}"
                                                  for name in ("card.json", "model.keras", "vocab.txt")}
