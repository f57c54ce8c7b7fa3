"""Do the text methods find the words that decide the demo LSTM's prediction? Hit rate@k against model-blind rankings.

The demo reviews (devtools/text_demo.py) carry their truth: the polarity words that decide the
label (``polarity_spans``, counted with their negation) and the negations (``negation_spans``). For
each text method this explains the *predicted* class of held-out reviews and measures, per review::

    hit rate@k = share of the k top-ranked tokens that are decisive words

- **decisive** = polarity spans + negation spans: hiding a negation flips the prediction ("not bad"),
  so a faithful method rightly ranks it high (WordOcclusion's top word is a polarity word in about half
  of the reviews, a polarity or negation word in about nine out of ten). ``polarity`` (polarity spans
  only) is reported too.
- **k** = the review's number of decisive (resp. polarity) words, at most ``K_CAP``: a perfect ranking
  scores 1.
- **ranking**: by the value for the explained class, highest first, for methods whose sign means support
  for the class; by |value| for ``UNSIGNED`` methods (Saliency's absolute gradient; SmoothGrad's L2 norm of
  the mean gradient, registry ``token_reduction="l2"``: magnitudes, not contributions). Ties are
  counted at their expectation under random tie-breaking (``hit_rate``), so a constant ranking scores chance.
- **chance** = the expected hit rate of a random ranking: the review's share of decisive tokens.

Chance is too weak a bar: polarity words are rarer than "the" and "was", and an LSTM weighs the last
words most. Each method is therefore compared, on the same reviews, with model-blind rankings and a
model-free copy of itself (``BASELINES``):

- **rarest first** / **most frequent first**: word frequency in the demo's training corpus (an
  out-of-vocabulary word counts 0);
- **last first** / **first first**: position in the review;
- the **same method on a weight-randomised copy** of the model (every layer re-initialised, as
  devtools/localisation.randomised_model), explaining the same class.

A method *beats* a baseline when its mean hit rate (decisive) exceeds the baseline's by ``MARGIN``;
the verdict names the baselines it does not beat.

Also measured: the sign (for reviews predicted and labelled positive, the mean value for the positive
class of their positive polarity words that no negation flips, which should be > 0 for a signed
method), TextPartitionExplainer's additivity (values + base value vs the logit) and Integrated
Gradients' completeness (relative error, as the manifest reports it), and the warm seconds per review.

Run ``python -m devtools.text_quality`` to print the table; tests/quality/test_text_quality.py reuses the
functions below with thresholds chosen from the printed figures.
"""

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from devtools import text_demo
from devtools.localisation import seed_everything

DEFAULT_COUNT = 80
#: Held-out reviews: not the training seed; the same reviews every run.
DEFAULT_SEED = text_demo.TEST_SEED
METHODS = ("Saliency", "GradientInput", "IntegratedGradients", "SmoothGrad", "WordOcclusion", "WordLime",
           "TextPartitionExplainer")
#: Ranked by |value|: their sign does not say whether a word supports the class.
UNSIGNED = frozenset({"Saliency", "SmoothGrad"})
#: Most top-ranked tokens scored per review.
K_CAP = 5
#: How much higher a method's mean hit rate must be to "beat" a baseline: a smaller lead is a tie.
MARGIN = 0.05
DECISIVE, POLARITY = "decisive", "polarity"
RAREST, FREQUENT, LAST, FIRST, RANDOMISED = (
    "rarest first", "most frequent first", "last first", "first first", "randomised model")
MODEL_BLIND = (RAREST, FREQUENT, LAST, FIRST)
BASELINES = (*MODEL_BLIND, RANDOMISED)
POSITIVE = text_demo.CLASS_NAMES.index("positive")


@dataclass
class Document:
    """A held-out review as the model sees it, with its truth per token."""

    review: dict
    encoded: Any  # explain_core.tokenizers.Encoded
    logits: np.ndarray  # (classes,) the trained model's raw outputs
    decisive: np.ndarray  # (tokens,) bool: a polarity span or a negation span
    polarity: np.ndarray  # (tokens,) bool: a polarity span
    positive_words: np.ndarray  # (tokens,) bool: in a positive review, a positive lexicon word no negation flips

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.logits))

    @property
    def label(self) -> int:
        return text_demo.CLASS_NAMES.index(self.review["label"])


@dataclass
class Demo:
    model: Any
    card: Any
    files: dict[str, bytes]
    text_model: Any  # explain_core.text_model.TextModel
    documents: list[Document]


@dataclass
class Measurement:
    """One method on every document, for its predicted class."""

    method: str
    params: dict
    values: list[np.ndarray] = field(repr=False)  # per document (tokens,), NaN for unseen tokens
    base_values: list[float | None] = field(repr=False)
    sums: list[float | None] = field(repr=False)
    seconds: float  # warm seconds per document

    def scores(self) -> list[np.ndarray]:
        """What the ranking sorts by, highest first."""
        return [np.abs(v) for v in self.values] if self.method in UNSIGNED else self.values


@dataclass
class Comparison:
    """A method on the trained model against the model-blind rankings and its randomised copy."""

    measurement: Measurement
    randomised: Measurement
    demo: Demo = field(repr=False)

    def hit_rate(self, which: str = DECISIVE) -> float:
        return mean_hit_rate(self.measurement.scores(), self.demo.documents, which)

    def baselines(self, which: str = DECISIVE) -> dict[str, float]:
        return {**blind_baselines(self.demo.documents, which),
                RANDOMISED: mean_hit_rate(self.randomised.scores(), self.demo.documents, which)}

    @property
    def failed(self) -> list[str]:
        return failed_baselines(self.hit_rate(), self.baselines())

    @property
    def verdict(self) -> str:
        return verdict(self.failed)

    def sign(self) -> tuple[float, float]:
        return positive_word_sign(self.measurement, self.demo.documents)


# ------------------------------------------------------------------ loading
def load_model():
    """(model, card, files) of the demo text model, loaded as the functions load a user's model."""
    import keras

    from explain_core.model_card import ModelCard

    directory = text_demo.build()
    model = keras.saving.load_model(directory / "model.keras", compile=False, safe_mode=True)
    card = ModelCard.model_validate_json((directory / "card.json").read_text())
    return model, card, {"vocab.txt": (directory / "vocab.txt").read_bytes()}


def _span_mask(tokens, spans) -> np.ndarray:
    starts = {(token.start, token.end): i for i, token in enumerate(tokens)}
    mask = np.zeros(len(tokens), bool)
    for start, end in spans:
        if (start, end) not in starts:
            raise ValueError(f"span [{start}, {end}) is not a token")
        mask[starts[(start, end)]] = True
    return mask


def prepare(model, card, files, count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED) -> Demo:
    """``count`` held-out reviews encoded as the session encodes them, with the trained model's logits."""
    from explain_core.text_model import text_model as make_text_model

    text_model = make_text_model(model, card, files)
    reviews = text_demo.test_reviews(count, seed)
    encoded = [text_model.tokenizer.encode(review["text"]) for review in reviews]
    logits = np.asarray(text_model.ids_model(np.stack([e.ids for e in encoded]).astype(np.float32)), np.float64)
    documents = []
    for review, enc, row in zip(reviews, encoded, logits, strict=True):
        polarity = _span_mask(enc.tokens, review["polarity_spans"])
        negation = _span_mask(enc.tokens, review["negation_spans"])
        lexicon = np.array([text_demo.POLARITY.get(token.text, 0) for token in enc.tokens])
        positive = polarity & (lexicon > 0) if review["label"] == "positive" else np.zeros(len(enc.tokens), bool)
        documents.append(Document(review, enc, row, polarity | negation, polarity, positive))
    return Demo(model, card, files, text_model, documents)


def randomised_text_model(demo: Demo, seed: int = 0):
    """The TextModel of a copy of the demo model with every layer re-initialised (as localisation.randomised_model)."""
    from devtools.localisation import randomised_model
    from explain_core.text_model import text_model as make_text_model

    return make_text_model(randomised_model(demo.model, seed), demo.card, demo.files)


# ------------------------------------------------------------------ scoring
def relevant(document: Document, which: str) -> np.ndarray:
    return document.decisive if which == DECISIVE else document.polarity


def k_of(document: Document, which: str = DECISIVE) -> int:
    return min(int(relevant(document, which)[document.encoded.seen].sum()), K_CAP)


def hit_rate(scores: np.ndarray, hits: np.ndarray, k: int) -> float:
    """Expected share of ``hits`` among the ``k`` highest ``scores`` (NaN scores ignored), ties broken at random.

    The tokens strictly above the k-th score are all taken; the remaining slots are filled from the tokens
    tied with it, in proportion to the hits among them.
    """
    scores, hits = np.asarray(scores, dtype=np.float64), np.asarray(hits, bool)
    seen = ~np.isnan(scores)
    scores, hits = scores[seen], hits[seen]
    if k <= 0 or k > len(scores):
        raise ValueError(f"k={k} for {len(scores)} scored tokens")
    kth = np.sort(scores)[::-1][k - 1]
    above, tied = scores > kth, scores == kth
    expected = hits[above].sum() + (k - above.sum()) * hits[tied].mean()
    return float(expected / k)


def hit_rates(scores: Iterable[np.ndarray], documents: list[Document], which: str = DECISIVE) -> np.ndarray:
    """Per document, the hit rate@k of ``scores`` (documents without a relevant token are skipped)."""
    return np.array([hit_rate(s, relevant(d, which), k_of(d, which))
                     for s, d in zip(scores, documents, strict=True) if k_of(d, which)])


def mean_hit_rate(scores, documents, which: str = DECISIVE) -> float:
    return float(np.mean(hit_rates(scores, documents, which)))


def chance(documents: list[Document], which: str = DECISIVE) -> float:
    """The mean hit rate of a random ranking: each document's share of relevant tokens."""
    return float(np.mean([relevant(d, which)[d.encoded.seen].mean() for d in documents if k_of(d, which)]))


@cache
def training_counts() -> Counter:
    """Token counts of the demo's training corpus, normalised as the tokenizer does."""
    return Counter(token for review in text_demo.generate_reviews(text_demo.TRAIN_COUNT, text_demo.TRAIN_SEED)
                   for token in text_demo.normalise(review["text"]))


def blind_scores(document: Document, ranking: str) -> np.ndarray:
    """A model-blind ranking's scores (highest first) for the document's tokens; NaN for unseen tokens."""
    tokens, counts = document.encoded.tokens, training_counts()
    if ranking in (RAREST, FREQUENT):
        frequency = np.array([counts.get(token.text, 0) for token in tokens], dtype=np.float64)
        scores = -frequency if ranking == RAREST else frequency
    elif ranking in (LAST, FIRST):
        position = np.arange(len(tokens), dtype=np.float64)
        scores = position if ranking == LAST else -position
    else:
        raise ValueError(f"unknown ranking {ranking!r}")
    scores[document.encoded.positions < 0] = np.nan
    return scores


def blind_baselines(documents: list[Document], which: str = DECISIVE) -> dict[str, float]:
    return {ranking: mean_hit_rate([blind_scores(d, ranking) for d in documents], documents, which)
            for ranking in MODEL_BLIND}


def positive_word_sign(measurement: Measurement, documents: list[Document]) -> tuple[float, float]:
    """(mean value, share of values > 0) of the positive words of reviews predicted positive, for the positive
    class (the predicted class of those reviews, so the measurement's own values)."""
    values = np.concatenate([v[d.positive_words] for v, d in zip(measurement.values, documents, strict=True)
                             if d.predicted == POSITIVE])
    values = values[~np.isnan(values)]
    return float(values.mean()), float((values > 0).mean())


def failed_baselines(score: float, baselines: Mapping[str, float], margin: float = MARGIN) -> list[str]:
    """The baselines ``score`` does not exceed by ``margin``, in the order given."""
    return [name for name, value in baselines.items() if not score > value + margin]


def verdict(failed: Iterable[str]) -> str:
    failed = list(failed)
    return "beats all" if not failed else "fails " + ", ".join(failed)


# ------------------------------------------------------------------ explaining
def build_explainer(demo: Demo, method: str, overrides: Mapping[str, Any] | None = None, text_model=None):
    """(explainer, params) exactly as the session builds them."""
    from explain_core.modalities import modality_for
    from explain_core.registry import REGISTRY
    from explain_core.session import DEFAULT_BATCH_SIZE

    spec = REGISTRY[method]
    params = spec.resolve(overrides, demo.card.passes_size)
    text_model = demo.text_model if text_model is None else text_model
    return modality_for(demo.card).build_explainer(spec, text_model, demo.card, params, DEFAULT_BATCH_SIZE), params


def measure(demo: Demo, method: str, overrides: Mapping[str, Any] | None = None, seed: int = 0, *,
            text_model=None, classes: Callable[[Document], int] | None = None) -> Measurement:
    """Run ``method`` on every document for its predicted class (``classes`` to choose another), on the trained
    model or ``text_model``; the first document is explained once more before the clock starts (warm-up)."""
    explainer, params = build_explainer(demo, method, overrides, text_model)
    classes = classes or (lambda d: d.predicted)
    first = demo.documents[0]
    explainer.explain_document(first.encoded, first.review["text"], [classes(first)])  # graphs traced, numba compiled
    seed_everything(seed)
    values, base_values, sums = [], [], []
    started = time.perf_counter()
    for document in demo.documents:
        found = explainer.explain_document(document.encoded, document.review["text"], [classes(document)])
        values.append(found.values[0])
        base_values.append(None if found.base_values is None else float(found.base_values[0]))
        sums.append(None if found.sums is None else float(found.sums[0]))
    seconds = (time.perf_counter() - started) / len(demo.documents)
    return Measurement(method, params, values, base_values, sums, seconds)


def compare(demo: Demo, method: str, overrides: Mapping[str, Any] | None = None, seed: int = 0, *,
            random_text_model) -> Comparison:
    return Comparison(measure(demo, method, overrides, seed),
                      measure(demo, method, overrides, seed, text_model=random_text_model), demo)


def additivity_errors(measurement: Measurement, documents: list[Document]) -> np.ndarray:
    """Per document |sum of values + base value - logit| of the explained (predicted) class."""
    return np.array([abs(np.nansum(v) + base - d.logits[d.predicted])
                     for v, base, d in zip(measurement.values, measurement.base_values, documents, strict=True)])


def completeness_errors(demo: Demo, measurement: Measurement) -> np.ndarray:
    """Per document, Integrated Gradients' relative completeness error as the manifest reports it
    (explain_core.approximation.text_check: sum over every position + f(baseline) vs the logit)."""
    from explain_core.approximation import text_check
    from explain_core.registry import REGISTRY
    from explain_core.session import DEFAULT_BATCH_SIZE
    from explain_core.text_methods import TextAttributions

    spec = REGISTRY[measurement.method]
    errors = []
    for document, values, total in zip(demo.documents, measurement.values, measurement.sums, strict=True):
        found = TextAttributions(values[None], document.encoded.tokens, sums=np.array([total]))
        approximation, warnings = text_check(spec, measurement.params, found, 0, document.predicted,
                                             float(document.logits[document.predicted]), document.encoded,
                                             demo.text_model, demo.card, DEFAULT_BATCH_SIZE)
        if approximation is None:
            raise RuntimeError(f"no completeness figure: {warnings}")
        errors.append(approximation.relative_error)
    return np.array(errors)


def compare_all(demo: Demo, methods: Iterable[str] = METHODS, seed: int = 0) -> list[Comparison]:
    random_text_model = randomised_text_model(demo, seed)
    results = []
    for method in methods:
        results.append(compare(demo, method, seed=seed, random_text_model=random_text_model))
        print(f"  {method}: {results[-1].hit_rate():.3f} ({results[-1].measurement.seconds:.3f} s/review), "
              f"{results[-1].verdict}", file=sys.stderr, flush=True)
    return results


def format_table(results: list[Comparison]) -> str:
    """One row per method: hit rate@k (decisive, polarity), the baselines (decisive), the sign figures, the
    approximation error where the method has one, warm seconds per review and the verdict."""
    header = (f"{'method':<24}{'hit@k':>7}{'polar':>7}{'rarest':>8}{'freq':>7}{'last':>7}{'first':>7}{'random':>8}"
              f"{'sign':>9}{'>0':>6}{'approx':>10}{'s/doc':>8}  verdict")
    lines = [header, "-" * (len(header) + 20)]
    for result in results:
        m, base = result.measurement, result.baselines()
        sign, positive = result.sign()
        if m.method == "TextPartitionExplainer":
            approx = f"{additivity_errors(m, result.demo.documents).max():>10.1e}"
        elif m.method == "IntegratedGradients":
            approx = f"{completeness_errors(result.demo, m).max():>10.3f}"
        else:
            approx = f"{'-':>10}"
        lines.append(f"{m.method:<24}{result.hit_rate():>7.3f}{result.hit_rate(POLARITY):>7.3f}{base[RAREST]:>8.3f}"
                     f"{base[FREQUENT]:>7.3f}{base[LAST]:>7.3f}{base[FIRST]:>7.3f}{base[RANDOMISED]:>8.3f}"
                     f"{sign:>9.3f}{positive:>6.2f}{approx}{m.seconds:>8.3f}  {result.verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="held-out reviews (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="review seed (default %(default)s)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), help="registry names (default: %(default)s)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    demo = prepare(*load_model(), args.count, args.seed)
    docs = demo.documents
    accuracy = float(np.mean([d.predicted == d.label for d in docs]))
    blind = {which: blind_baselines(docs, which) for which in (DECISIVE, POLARITY)}
    print(f"{len(docs)} held-out reviews (seed {args.seed}), accuracy {accuracy:.2f}, k = decisive words (at most "
          f"{K_CAP}), mean k {np.mean([k_of(d) for d in docs]):.2f}; a method beats a baseline by more than {MARGIN}")
    for which in (DECISIVE, POLARITY):
        figures = ", ".join(f"{name} {value:.3f}" for name, value in blind[which].items())
        print(f"  {which}: chance {chance(docs, which):.3f}, {figures}")
    results = compare_all(demo, args.methods)
    print("hit@k/polar: hit rate@k, decisive / polarity words; rarest..random: baselines (decisive); sign, >0: mean "
          "value and share > 0 of positive words for the positive class; approx: max additivity error (logit) or "
          "IG completeness relative error")
    print(format_table(results))
    print(f"total {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
