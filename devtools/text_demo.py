"""The text demo model: an Embedding + LSTM sentiment classifier trained here, deterministically, on generated reviews.

No data or weights can be downloaded on the machines this project runs on, so the reviews are
generated from templates: neutral filler, positive and negative polarity words, and negations
("not good", "never boring", "wasn't bad") that flip the polarity of the next polarity word. The
label is the sign of the summed polarity (ties are dropped), so every review carries its ground
truth: the character spans of the polarity words that decide the label and of the negations.

The model (``sentiment-lstm`` v1) takes token ids made by ``explain_core.tokenizers.WordTokenizer``
(the same class the functions use) with the vocabulary in ``vocab.txt``. It is published to the
model bucket exactly as a user's would be (``models/sentiment-lstm/v1/`` card.json, model.keras,
vocab.txt).

Run ``python -m devtools.text_demo`` to build it (cached under .cache/text-demo/).
"""

import argparse
import csv
import hashlib
import io
import json
import os
import time
from collections import Counter
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np

from devtools.cached_build import build_once
from explain_core import tokenizers
from explain_core.tokenizers import PUNCTUATION, WordTokenizer

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("TEXT_DEMO_CACHE_DIR", REPO / ".cache" / "text-demo"))
MODEL, VERSION = "sentiment-lstm", "v1"
CLASS_NAMES = ["negative", "positive"]
MAX_LENGTH = 48
MIN_WORDS, MAX_WORDS = 8, 40
TRAIN_COUNT, VALIDATION_COUNT, TRAIN_SEED, TEST_SEED = 4000, 1000, 13, 2026
EMBEDDING_DIM, LSTM_UNITS, EPOCHS, BATCH, LEARNING_RATE, SEED = 24, 24, 8, 32, 5e-3, 1
MODEL_FILES = ("card.json", "model.keras", "vocab.txt")
PADDING_TOKEN, OOV_TOKEN = "", "[UNK]"
#: Libraries whose version can change the trained model.
LIBRARIES = ("numpy", "keras", "tensorflow", "tensorflow-cpu")

# ------------------------------------------------------------------ the lexicon
POSITIVE_ADJECTIVES = ("good", "great", "excellent", "wonderful", "amazing", "enjoyable", "brilliant", "superb",
                       "fantastic", "delightful", "charming", "clever", "beautiful", "gripping")
NEGATIVE_ADJECTIVES = ("bad", "awful", "terrible", "boring", "poor", "dull", "weak", "horrible", "disappointing",
                       "mediocre", "slow", "lame", "predictable", "pointless")
POSITIVE_VERBS_PAST, POSITIVE_VERBS = ("loved", "enjoyed", "liked", "adored"), ("love", "enjoy", "like", "recommend")
NEGATIVE_VERBS_PAST, NEGATIVE_VERBS = ("hated", "disliked", "regretted"), ("hate", "dislike", "regret")
POSITIVE_NOUNS, NEGATIVE_NOUNS = ("masterpiece", "gem", "triumph", "delight"), ("waste", "mess", "disaster", "failure")
#: Lowercased polarity words (the tokenizer's normal form) -> +1 / -1.
POLARITY = {word: +1 for word in POSITIVE_ADJECTIVES + POSITIVE_VERBS_PAST + POSITIVE_VERBS + POSITIVE_NOUNS} | {
    word: -1 for word in NEGATIVE_ADJECTIVES + NEGATIVE_VERBS_PAST + NEGATIVE_VERBS + NEGATIVE_NOUNS}
#: Negations, as the tokenizer normalises them ("wasn't" -> "wasnt"); each flips the next polarity word.
NEGATIONS = frozenset({"not", "never", "wasnt", "didnt", "cant", "hardly"})
INTENSIFIERS = ("really", "very", "so", "quite", "truly", "genuinely")
SUBJECTS = ("the plot", "the acting", "the story", "the ending", "the soundtrack", "the cast", "the dialogue",
            "the script", "this movie", "the film", "the camera work", "the pacing", "the first hour",
            "the product", "the screen", "this phone", "the price", "the battery")
OBJECTS = ("it", "this movie", "the plot", "every minute", "the ending", "the film", "this phone", "the story",
           "the characters", "the whole thing")
NEUTRAL_CLAUSES = ("I watched this movie last night", "we saw it with friends", "I bought this for my brother",
                   "the film runs two hours", "my sister picked it", "it came out last year",
                   "I went in with no expectations", "the cinema was half empty", "I watched it twice",
                   "the delivery took a week", "it arrived on Monday", "we streamed it at home",
                   "I read the book first", "the director also made a sequel")
#: Between clauses: (punctuation ending the clause, words in between, capitalise the next clause).
CONNECTORS = ((".", (), True), ("!", (), True), (",", ("and",), False), ("", ("and",), False),
              (",", ("but",), False), (";", (), False), (".", ("Also,",), False), (".", ("Overall",), False))

#: A review while it is built: (word with any punctuation attached, role) with role "" (filler), "+" or "-"
#: (a polarity word; its sign is the lexicon's) or "~" (a negation).
Words = list[tuple[str, str]]


def _clause(rng: np.random.Generator, sign: int, negated: bool) -> Words:
    """One clause whose polarity word has lexicon sign ``sign``; ``negated`` puts a negation right before it."""
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    fill = lambda text: [(word, "") for word in text.split()]  # noqa: E731
    pol = "+" if sign > 0 else "-"
    adjective = pick(POSITIVE_ADJECTIVES if sign > 0 else NEGATIVE_ADJECTIVES)
    intensifier = fill(pick(INTENSIFIERS)) if rng.random() < 0.3 else []
    kind = int(rng.integers(5))
    if kind == 0 or kind == 1:  # "the plot was (not) (really) good"
        if not negated:
            return fill(pick(SUBJECTS) + " was") + intensifier + [(adjective, pol)]
        if rng.random() < 0.5:
            return fill(pick(SUBJECTS) + " was") + [(pick(("not", "never", "hardly")), "~")] + intensifier + [
                (adjective, pol)]
        return fill(pick(SUBJECTS)) + [("wasn't", "~")] + intensifier + [(adjective, pol)]
    if kind == 2:  # "I (really) loved the plot" / "I didn't enjoy the plot" / "I never liked it"
        past, base = (POSITIVE_VERBS_PAST, POSITIVE_VERBS[:3]) if sign > 0 else (NEGATIVE_VERBS_PAST, NEGATIVE_VERBS)
        obj = fill(pick(OBJECTS))
        if not negated:
            return [("I", "")] + intensifier + [(pick(past), pol)] + obj
        form = int(rng.integers(3))
        if form == 0:
            return [("I", ""), ("didn't", "~"), (pick(base), pol)] + obj
        if form == 1:
            return [("I", ""), ("did", ""), ("not", "~"), (pick(base), pol)] + obj
        return [("I", ""), ("never", "~"), (pick(past), pol)] + obj
    if kind == 3:  # "Great!" / "what a brilliant film" / "NOT good" / "never boring at all"
        if not negated:
            if rng.random() < 0.5:
                return fill("what a") + intensifier + [(adjective, pol), (pick(("film", "movie", "phone")), "")]
            return fill(pick(("simply", "honestly", "just"))) + [(adjective, pol)]
        return [(pick(("not", "never")), "~"), (adjective, pol)] + (fill("at all") if rng.random() < 0.4 else [])
    # "it was a masterpiece" / "it was not a waste of time" / "I would (not) recommend it"
    if sign > 0 and rng.random() < 0.3:
        if negated and rng.random() < 0.5:
            return [("I", ""), ("can't", "~"), ("recommend", "+")] + fill(pick(OBJECTS))
        return fill("I would") + ([("not", "~")] if negated else []) + [("recommend", "+")] + fill(pick(OBJECTS))
    noun = (pick(POSITIVE_NOUNS if sign > 0 else NEGATIVE_NOUNS), pol)
    tail = fill("of time") if noun[0] == "waste" else []
    return fill("it was") + ([(pick(("not", "never")), "~")] if negated else []) + fill("a") + [noun] + tail


def _shout(rng: np.random.Generator, words: Words) -> Words:
    """Random capitalisation of polarity and negation words ("GREAT", "Not"), so normalisation matters."""
    out = []
    for word, role in words:
        if role and rng.random() < 0.12:
            word = word.upper() if rng.random() < 0.6 else word.capitalize()
        out.append((word, role))
    return out


def _review(rng: np.random.Generator) -> Words:
    polar = int(rng.choice([1, 2, 3, 4], p=[0.3, 0.35, 0.25, 0.1]))
    clauses = [_shout(rng, _clause(rng, int(rng.choice([-1, 1])), bool(rng.random() < 0.35))) for _ in range(polar)]
    clauses += [[(word, "") for word in clause.split()]
                for clause in rng.choice(NEUTRAL_CLAUSES, size=int(rng.choice([0, 1, 2], p=[0.4, 0.45, 0.15])),
                                         replace=False)]
    order = rng.permutation(len(clauses))
    words: Words = []
    capital = True
    for i, index in enumerate(order):
        clause = list(clauses[index])
        if capital:
            clause[0] = (clause[0][0][:1].upper() + clause[0][0][1:], clause[0][1])
        last = i == len(order) - 1
        punctuation, between, capital = (
            ((".", "!", "!!", "", "...")[int(rng.integers(5))], (), False) if last
            else CONNECTORS[int(rng.integers(len(CONNECTORS)))])
        clause[-1] = (clause[-1][0] + punctuation, clause[-1][1])
        words += clause + [(word, "") for word in between]
    return words


def _document(words: Words) -> dict | None:
    """Join the words with spaces; the truth from the roles. None when the polarity sums to zero (a tie)."""
    text, spans, pending_negation, total = "", [], False, 0
    for word, role in words:
        if text:
            text += " "
        kept = [i for i, char in enumerate(word) if char not in PUNCTUATION]
        start, end = len(text) + kept[0], len(text) + kept[-1] + 1
        text += word
        normal = "".join(char for char in word if char not in PUNCTUATION).lower()
        if role == "~":
            if normal not in NEGATIONS:
                raise ValueError(f"{word!r} is marked as a negation but is not in NEGATIONS")
            spans.append(("negation", start, end, 0))
            pending_negation = True
        elif role in ("+", "-"):
            sign = POLARITY.get(normal)
            if sign != (1 if role == "+" else -1):
                raise ValueError(f"{word!r} is marked {role} but the lexicon says {sign}")
            effective = -sign if pending_negation else sign
            pending_negation = False
            spans.append(("polarity", start, end, effective))
            total += effective
        elif normal in POLARITY or normal in NEGATIONS:
            raise ValueError(f"{word!r} is a lexicon word used as filler")
    if pending_negation:
        raise ValueError("a negation without a polarity word after it")
    if total == 0:
        return None
    label = 1 if total > 0 else 0
    decides = 1 if label == 1 else -1
    return {"text": text, "label": CLASS_NAMES[label],
            "polarity_spans": [[s, e] for kind, s, e, v in spans if kind == "polarity" and v == decides],
            "opposing_spans": [[s, e] for kind, s, e, v in spans if kind == "polarity" and v != decides],
            "negation_spans": [[s, e] for kind, s, e, _ in spans if kind == "negation"]}


def parse_markup(markup: str) -> dict:
    """A hand-written review: words prefixed "+"/"-" are polarity words, "~" negations; the rest filler.

    ``parse_markup("The ending was ~not -bad.")`` -> text "The ending was not bad.", label positive.
    """
    words = [(piece[1:], piece[0]) if piece[0] in "+-~" else (piece, "") for piece in markup.split(" ")]
    document = _document(words)
    if document is None:
        raise ValueError(f"the polarity of {markup!r} sums to zero")
    return document


def generate_reviews(n: int, seed: int) -> list[dict]:
    """``n`` reviews (8-40 words), half of each class in random order, each with its ground truth.

    Each review: {"line": 1-based index, "text", "label": "negative"/"positive", "polarity_spans": the
    [start, end) character spans of the polarity words that decide the label (counted with their
    negation), "opposing_spans": those of the outvoted polarity words, "negation_spans"}.
    """
    rng = np.random.default_rng(seed)
    reviews = []
    while len(reviews) < n:
        wanted = CLASS_NAMES[int(rng.integers(2))]
        while True:
            words = _review(rng)
            if not MIN_WORDS <= len(words) <= MAX_WORDS:
                continue
            document = _document(words)
            if document is not None and document["label"] == wanted:
                break
        reviews.append({"line": len(reviews) + 1, **document})
    return reviews


@cache
def _training_texts() -> frozenset[str]:
    return frozenset(review["text"] for review in generate_reviews(TRAIN_COUNT, TRAIN_SEED))


def test_reviews(n: int, seed: int = TEST_SEED) -> list[dict]:
    """``n`` held-out reviews with their truth: generated with another seed, none with a training review's text."""
    if seed == TRAIN_SEED:
        raise ValueError("the training seed does not give held-out reviews")
    seen, reviews, batch = _training_texts(), [], max(2 * n, 64)
    while len(reviews) < n:
        reviews = [r for r in generate_reviews(batch, seed) if r["text"] not in seen][:n]
        batch *= 2
    return [{**review, "line": i + 1} for i, review in enumerate(reviews)]


test_reviews.__test__ = False  # not a pytest test, despite its name


def has_negation(review: dict) -> bool:
    return bool(review["negation_spans"])


# ------------------------------------------------------------------ vocabulary and model
def normalise(text: str) -> list[str]:
    """The tokenizer's tokens of ``text`` (lowercased, punctuation stripped, split on whitespace)."""
    return [token.text for token in WordTokenizer([PADDING_TOKEN, OOV_TOKEN], max_length=1).tokens(text)]


def vocabulary(texts) -> list[str]:
    """Padding (id 0), [UNK] (id 1), then the tokens of ``texts`` by frequency, ties alphabetical."""
    counts = Counter(token for text in texts for token in normalise(text))
    counts.pop(PADDING_TOKEN, None)
    counts.pop(OOV_TOKEN, None)
    return [PADDING_TOKEN, OOV_TOKEN] + sorted(counts, key=lambda token: (-counts[token], token))


def tokenizer(vocab: list[str]) -> WordTokenizer:
    text = card()["text"]
    return WordTokenizer(vocab, max_length=text["max_length"], lowercase=text["lowercase"],
                         strip_punctuation=text["strip_punctuation"], split_pattern=text["split_pattern"],
                         oov_token=text["oov_token"], padding_token=text["padding_token"],
                         padding=text["padding"], truncation=text["truncation"])


def encode(vocab: list[str], texts) -> np.ndarray:
    """(len(texts), MAX_LENGTH) int32 token ids, exactly as the functions make them."""
    words = tokenizer(vocab)
    return np.stack([words.encode(text).ids for text in texts]).astype(np.int32)


def card() -> dict:
    return {
        "name": MODEL,
        "version": VERSION,
        "description": "Demo Embedding + LSTM sentiment classifier of short movie and product reviews "
                       "(generated: polarity words, negations such as 'not bad' flip them). Logits.",
        "modality": "text",
        "model_file": "model.keras",
        "output": "logits",
        "class_names": list(CLASS_NAMES),
        "text": {"vocabulary_file": "vocab.txt", "max_length": MAX_LENGTH, "lowercase": True,
                 "strip_punctuation": True, "split_pattern": r"\s+", "oov_token": OOV_TOKEN,
                 "padding_token": PADDING_TOKEN, "padding": "post", "truncation": "post",
                 "embedding_layer": "embedding"},
        "default_methods": {"gradient": ["IntegratedGradients", "Saliency"], "perturbation": ["WordOcclusion"],
                            "shap": ["TextPartitionExplainer"]},
        "top_k": 1,
    }


def build_model(vocabulary_size: int):
    import keras

    inputs = keras.Input((MAX_LENGTH,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(vocabulary_size, EMBEDDING_DIM, mask_zero=True, name="embedding")(inputs)
    x = keras.layers.LSTM(LSTM_UNITS, name="lstm")(x)
    outputs = keras.layers.Dense(len(CLASS_NAMES), name="logits")(x)
    return keras.Model(inputs, outputs, name="sentiment_lstm")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def fingerprint() -> str:
    """Changes when anything that shapes the model changes: this file (data, model, training), the tokenizer,
    the library versions."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(Path(tokenizers.__file__).read_bytes())
    digest.update(repr([(package, _version(package)) for package in LIBRARIES]).encode())
    return digest.hexdigest()[:16]


def _check_card(model_card: dict) -> None:
    """Validate with the project's card type, as the functions will."""
    from explain_core.model_card import ModelCard

    ModelCard.model_validate(model_card)


def train(directory: Path) -> dict:
    """Train and write model.keras, vocab.txt, card.json and, last, metrics.json into ``directory``."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    started = time.perf_counter()
    train_reviews = generate_reviews(TRAIN_COUNT, TRAIN_SEED)
    held_out = test_reviews(VALIDATION_COUNT)
    vocab = vocabulary(review["text"] for review in train_reviews)
    x = encode(vocab, [review["text"] for review in train_reviews])
    y = np.array([CLASS_NAMES.index(review["label"]) for review in train_reviews], dtype=np.int32)
    model = build_model(len(vocab))
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=True, verbose=0)
    seconds = time.perf_counter() - started
    predicted = np.argmax(model.predict(encode(vocab, [r["text"] for r in held_out]), verbose=0), axis=1)
    correct = predicted == np.array([CLASS_NAMES.index(r["label"]) for r in held_out])
    negated = np.array([has_negation(r) for r in held_out])
    model_card = card()
    _check_card(model_card)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model.keras")
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (directory / "card.json").write_text(json.dumps(model_card, indent=2))
    metrics = {"model": MODEL, "version": VERSION, "accuracy": float(correct.mean()),
               "negation_accuracy": float(correct[negated].mean()), "negation_reviews": int(negated.sum()),
               "train_seconds": round(seconds, 2), "train_reviews": TRAIN_COUNT, "test_reviews": len(held_out),
               "epochs": EPOCHS, "vocabulary_size": len(vocab),
               "model_bytes": (directory / "model.keras").stat().st_size}
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def build(force: bool = False) -> Path:
    """The cache directory holding model.keras, vocab.txt, card.json and metrics.json; trains on first use.

    Trained atomically (devtools.cached_build): a concurrent or interrupted build never leaves a
    half-written model in the cache.
    """
    directory = CACHE / fingerprint()
    metrics = build_once(directory, "metrics.json", train, force=force)
    if metrics is not None:
        print(f"trained text demo model: {metrics}", flush=True)
    return directory


def publish(s3, bucket: str, prefix: str = "models/") -> None:
    """Upload card.json, model.keras and vocab.txt to ``<prefix><MODEL>/<VERSION>/``, as a user would."""
    directory = build()
    for filename in MODEL_FILES:
        s3.upload_file(str(directory / filename), bucket, f"{prefix}{MODEL}/{VERSION}/{filename}")


# ------------------------------------------------------------------ sample uploads
#: Hand-written reviews in parse_markup's notation.
_SAMPLE_TXT = ("I watched this movie with my sister last night. The acting was +brilliant and the soundtrack was "
               "truly +wonderful! The ending was ~not -bad either.")
_SAMPLE_JSONL = (
    ("r1", "What a +great film! The plot was +clever and I +loved the cast."),
    ("r2", "The story was ~not +good. Honestly the acting was -awful and the dialogue was -dull."),
    ("r3", "-Boring. I ~never +enjoyed a single scene, what a -waste of time!!"),
    ("r4", "The first hour was -slow, but the ending was +AMAZING and the music was +excellent."),
    ("r5", "~NOT -bad at all! The characters were +charming and I would +recommend it."),
)
_SAMPLE_CSV = (
    ("c1", "The battery was -poor and the screen was -weak. A -disaster."),
    ("c2", "It arrived on Monday. The price was ~not -bad and I +liked the screen."),
    ("c3", "I ~didn't +like the pacing, but the cast was +superb and the script was +gripping!"),
    ("c4", "Simply -awful; I -regretted every minute."),
)


@cache
def _samples() -> tuple[dict, dict]:
    txt = parse_markup(_SAMPLE_TXT)
    jsonl = [parse_markup(markup) | {"id": key} for key, markup in _SAMPLE_JSONL]
    rows = [parse_markup(markup) | {"id": key} for key, markup in _SAMPLE_CSV]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "text"])
    writer.writerows([row["id"], row["text"]] for row in rows)
    files = {
        "review.txt": (txt["text"] + "\n").encode(),
        "reviews.jsonl": "".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in jsonl).encode(),
        "reviews.csv": out.getvalue().encode(),
    }
    # "line": the 1-based line of the file where the document is (the CSV header is line 1).
    truth = {"review.txt": [{"line": 1, **txt}],
             "reviews.jsonl": [{"line": i + 1, **d} for i, d in enumerate(jsonl)],
             "reviews.csv": [{"line": i + 2, **d} for i, d in enumerate(rows)]}
    return files, truth


def sample_files() -> dict[str, bytes]:
    """The demo uploads: review.txt (one positive review with "not bad"), reviews.jsonl, reviews.csv."""
    return dict(_samples()[0])


def sample_truth() -> dict:
    """Filename -> per-document truth ({"line", "id" (jsonl, csv), "text", "label", "polarity_spans",
    "opposing_spans", "negation_spans"}) of :func:`sample_files`."""
    return json.loads(json.dumps(_samples()[1]))  # a fresh copy: the cached one is shared


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="retrain even when the cache holds the model")
    args = parser.parse_args()
    directory = build(force=args.force)
    print(directory)
    print((directory / "metrics.json").read_text())


if __name__ == "__main__":
    main()
