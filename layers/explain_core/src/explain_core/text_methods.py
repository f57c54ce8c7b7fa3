"""Explainers of text models: one document at a time, a value per word (or sentence) per explained class.

Every explainer takes a :class:`explain_core.text_model.TextModel` and returns
:class:`TextAttributions` for one document (:meth:`TextExplainer.explain_document`):

- :class:`EmbeddingAttributions` wraps an Xplique gradient method (Saliency, GradientInput,
  IntegratedGradients, SmoothGrad) built on the model's embedding output and reduces each token's
  attributions over the embedding dimensions (the registry's ``MethodSpec.token_reduction``: their sum,
  or their L2 norm);
- :class:`WordOcclusion` and :class:`WordLime` run Xplique's Occlusion and LIME on the token ids;
- :class:`TextPartitionExplainer` runs shap's Partition explainer with a Text masker over words or
  sentences.

A hidden word is replaced by the padding token (``hide_with="padding"``: removed, for a model whose
embedding masks padding) or the out-of-vocabulary token (``"unknown"``), the same in every method.
"""

import re
from dataclasses import dataclass

import numpy as np

from explain_core.registry import TOKEN_REDUCTIONS
from explain_core.tokenizers import Encoded, Token

#: Sentence ends for sentence granularity: ., ! or ? (repeated, with closing quotes) then whitespace.
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
#: Most documents' outputs shap evaluates per call (batches of masked copies).
SHAP_BATCH = 256


@dataclass
class TextAttributions:
    """One method on one document: per explained class, a value per unit."""

    #: (classes, units) float64; NaN for a token the model never saw (cut by its length).
    values: np.ndarray
    #: The units the values are for: the document's tokens (word granularity) or its sentences.
    units: tuple[Token, ...]
    unit: str = "word"
    #: (classes,) attribution that fell on padding positions (gradient methods); None otherwise.
    padding: np.ndarray | None = None
    #: (classes,) SHAP base value: the output with every unit hidden; None otherwise.
    base_values: np.ndarray | None = None
    #: (classes,) sum over every model position (tokens and padding): what completeness compares.
    sums: np.ndarray | None = None


def _one_hot(classes: list[int], count: int) -> np.ndarray:
    targets = np.zeros((len(classes), count), dtype=np.float32)
    targets[np.arange(len(classes)), classes] = 1.0
    return targets


def _per_token(per_position: np.ndarray, encoded: Encoded) -> np.ndarray:
    """(classes, max_length) -> (classes, tokens), NaN for the tokens the model never saw."""
    values = np.full((len(per_position), len(encoded.tokens)), np.nan, dtype=np.float64)
    seen = encoded.seen
    values[:, seen] = per_position[:, encoded.positions[seen]]
    return values


def _hidden_id(text_model, hide_with: str, hides_every_word: bool = True) -> int:
    """The id a hidden word becomes. A method that evaluates documents with every word hidden (SHAP's base
    value, LIME's samples) is refused when the model's output there is not finite: a mask_zero model that
    averages over its tokens divides by zero when all of them are padding."""
    from explain_core.errors import UnsupportedModelError

    tokenizer = text_model.tokenizer
    hidden = tokenizer.padding_id if hide_with == "padding" else tokenizer.oov_id
    if not hides_every_word:
        return hidden
    ids = np.full((1, tokenizer.max_length), hidden, dtype=np.float32)
    if not np.all(np.isfinite(np.asarray(text_model.ids_model(ids)))):
        raise UnsupportedModelError(
            f"the model's output is not finite when every word is hidden by the {hide_with} token, which these "
            f"methods need; use hide_with=\"{'unknown' if hide_with == 'padding' else 'padding'}\"",
            hide_with=hide_with)
    return hidden


class TextExplainer:
    """The base: one document at a time (a text model's padding mask is per document)."""

    def __init__(self, text_model, batch_size: int, classes: int):
        self.text_model = text_model
        self.batch_size = batch_size
        self.classes = classes

    def explain_document(self, encoded: Encoded, text: str, classes: list[int]) -> TextAttributions:
        raise NotImplementedError


class EmbeddingAttributions(TextExplainer):
    """An Xplique gradient method on the embedding output, reduced over embedding dimensions per token:
    ``reduction="sum"`` (signed; what completeness needs) or ``"l2"`` (the norm: an unsigned magnitude, for
    a mean gradient whose sum would be a derivative along the arbitrary direction (1, ..., 1)).

    Integrated Gradients on embeddings: Sundararajan et al., Axiomatic Attribution for Deep Networks
    (2017), https://arxiv.org/abs/1703.01365 (section 6.3, question classification); the baseline is
    the all-``baseline_value`` embedding sequence, masked like the document.
    """

    def __init__(self, explainer, text_model, batch_size: int, classes: int, reduction: str = "sum"):
        if reduction not in TOKEN_REDUCTIONS:
            raise ValueError(f"reduction must be one of {TOKEN_REDUCTIONS}, not {reduction!r}")
        super().__init__(text_model, batch_size, classes)
        self.explainer, self.reduction = explainer, reduction

    def explain_document(self, encoded, text, classes):
        self.text_model.use_mask(encoded.ids)
        embeddings = np.repeat(self.text_model.embed(encoded.ids[None]), len(classes), axis=0)
        raw = self.explainer.explain(embeddings, _one_hot(classes, self.classes))
        raw = np.asarray(raw.numpy() if hasattr(raw, "numpy") else raw, dtype=np.float64)
        per_position = raw.sum(axis=-1) if self.reduction == "sum" else np.sqrt(np.square(raw).sum(axis=-1))
        padding = encoded.ids == self.text_model.tokenizer.padding_id
        return TextAttributions(_per_token(per_position, encoded), encoded.tokens,
                                padding=per_position[:, padding].sum(axis=1), sums=per_position.sum(axis=1))


class WordOcclusion(TextExplainer):
    """The drop of the class score when one word is hidden, for each word (Xplique's Occlusion with
    one-token patches).

    Zeiler and Fergus, Visualizing and Understanding Convolutional Networks (2013),
    https://arxiv.org/abs/1311.2901; for words: Li et al., Understanding Neural Networks through
    Representation Erasure (2016), https://arxiv.org/abs/1612.08220
    """

    def __init__(self, text_model, batch_size: int, classes: int, hide_with: str = "padding"):
        from xplique.attributions import Occlusion

        super().__init__(text_model, batch_size, classes)
        self.explainer = Occlusion(text_model.ids_model, batch_size=batch_size, patch_size=1, patch_stride=1,
                                   occlusion_value=float(_hidden_id(text_model, hide_with, hides_every_word=False)))

    def explain_document(self, encoded, text, classes):
        ids = np.repeat(encoded.ids[None].astype(np.float32), len(classes), axis=0)
        raw = self.explainer.explain(ids, _one_hot(classes, self.classes))
        return TextAttributions(_per_token(np.asarray(raw, dtype=np.float64), encoded), encoded.tokens)


class WordLime(TextExplainer):
    """A local linear surrogate over the document's words (Xplique's LIME). Padding is never hidden: its
    positions are feature 0, which every sample keeps; the words are features 1..n.

    Ribeiro et al., "Why Should I Trust You?": Explaining the Predictions of Any Classifier (2016),
    https://arxiv.org/abs/1602.04938
    """

    def __init__(self, text_model, batch_size: int, classes: int, nb_samples: int = 500, kernel_width: float = 0.25,
                 prob: float = 0.5, hide_with: str = "padding"):
        from xplique.attributions import Lime

        super().__init__(text_model, batch_size, classes)
        padding_id = float(text_model.tokenizer.padding_id)

        def word_features(ids):
            """Padding positions feature 0 (absent when the document fills max_length), the words 1..n."""
            import tensorflow as tf

            real = tf.cast(tf.not_equal(ids, padding_id), tf.int32)
            return tf.cumsum(real) * real

        def keep_padding(num_features, nb_samples):
            """Xplique's sampling ({0, 1} per feature, 1 = kept with probability ``prob``), but feature 0 (the
            padding) always kept: hiding it by the unknown token would put [UNK] tokens the document lacks."""
            import tensorflow as tf

            count = tf.reshape(tf.cast(num_features, tf.int32), [])
            words = tf.cast(tf.random.uniform([nb_samples, count - 1]) < prob, tf.int32)
            return tf.concat([tf.ones([nb_samples, 1], tf.int32), words], axis=1)

        def similarity(original_input, interp_samples, perturbed_samples):
            """LIME's text kernel over the words: exp(-d² / width²) with d the cosine distance between the copy's
            kept-word vector and the document's (all ones). Xplique's distance_mode="cosine" cannot serve: it uses
            Keras' cosine_similarity loss, which is the negated cosine, so the document itself weighs exp(-64)."""
            import tensorflow as tf

            kept = tf.cast(interp_samples[:, 1:], tf.float32)
            words = tf.maximum(tf.cast(tf.shape(kept)[1], tf.float32), 1.0)
            distance = 1.0 - tf.sqrt(tf.reduce_sum(kept, axis=1) / words)
            return tf.exp(-tf.square(distance) / kernel_width**2)

        self.explainer = Lime(text_model.ids_model, batch_size=batch_size, map_to_interpret_space=word_features,
                              ref_value=float(_hidden_id(text_model, hide_with)), nb_samples=nb_samples,
                              similarity_kernel=similarity, pertub_func=keep_padding)

    def explain_document(self, encoded, text, classes):
        ids = np.repeat(encoded.ids[None].astype(np.float32), len(classes), axis=0)
        raw = self.explainer.explain(ids, _one_hot(classes, self.classes))
        return TextAttributions(_per_token(np.asarray(raw, dtype=np.float64), encoded), encoded.tokens)


class TextPartitionExplainer(TextExplainer):
    """Owen values of the document's words (or sentences) over shap's text hierarchy (Partition explainer
    with a Text masker); the values sum to f(x) - f(every unit hidden). Each class is explained by its own
    shap call (same seed), so ``max_evals`` is per document and class and a class's values do not depend on
    which other classes are explained. One unit: its value is exactly f(x) - f(hidden), without shap.

    Owen, Values of Games with a Priori Unions (1977), https://doi.org/10.1007/978-3-642-45494-3_7;
    Lundberg and Lee, A Unified Approach to Interpreting Model Predictions (2017),
    https://arxiv.org/abs/1705.07874
    """

    def __init__(self, text_model, batch_size: int, classes: int, max_evals: int = 500, granularity: str = "word",
                 hide_with: str = "padding"):
        from explain_core.frameworks.keras import KerasOutputs

        super().__init__(text_model, batch_size, classes)
        self.max_evals, self.granularity = max_evals, granularity
        self.hidden_id = _hidden_id(text_model, hide_with)
        self.outputs = KerasOutputs(text_model.ids_model, max(batch_size, SHAP_BATCH))

    def explain_document(self, encoded, text, classes):
        from explain_core.numba_cache import import_shap
        from explain_core.shap_methods import SEED, quiet

        shap = import_shap()

        units = _sentences(text, encoded) if self.granularity == "sentence" else [
            (token, [i]) for i, token in enumerate(encoded.tokens) if encoded.positions[i] >= 0]
        if not units:
            raise ValueError("the document has no unit the model sees")
        positions = [encoded.positions[members] for _, members in units]

        def outputs(unit_rows):
            """(rows, units) with -1 for a hidden unit -> (rows, classes) model outputs."""
            rows = np.asarray(unit_rows).reshape(len(unit_rows), -1)
            ids = np.repeat(encoded.ids[None], len(rows), axis=0)
            for unit, where in enumerate(positions):
                hidden = rows[:, unit] < 0
                ids[np.ix_(hidden, where)] = self.hidden_id
            return np.asarray(self.outputs(ids.astype(np.float32)), dtype=np.float64)

        if len(units) == 1:  # one player: the Owen value is f(x) - f(hidden); shap's tree needs two
            both = outputs(np.array([[0], [-1]]))[:, classes]
            unit_values, base_values = (both[0] - both[1])[:, None], both[1]
        else:
            masker = shap.maskers.Text(_UnitTokenizer(text, [token for token, _ in units]), mask_token=-1,
                                       collapse_mask_token=False, output_type="token_ids")
            unit_values = np.empty((len(classes), len(units)))
            base_values = np.empty(len(classes))
            for row, cls in enumerate(classes):
                explainer = shap.PartitionExplainer(lambda unit_rows, cls=cls: outputs(unit_rows)[:, cls], masker)
                np.random.seed(SEED)
                with quiet():
                    result = explainer([text], max_evals=self.max_evals, batch_size=SHAP_BATCH, silent=True)
                unit_values[row] = np.asarray(result.values[0], dtype=np.float64).reshape(len(units))
                base_values[row] = float(np.asarray(result.base_values[0], dtype=np.float64).reshape(-1)[0])
        unit_tokens = tuple(token for token, _ in units)
        if self.granularity == "word":  # back to one value per token (NaN for unseen ones)
            values = np.full((len(classes), len(encoded.tokens)), np.nan)
            values[:, [members[0] for _, members in units]] = unit_values
            return TextAttributions(values, encoded.tokens, base_values=base_values, sums=unit_values.sum(axis=1))
        return TextAttributions(unit_values, unit_tokens, unit="sentence", base_values=base_values,
                                sums=unit_values.sum(axis=1))


class _UnitTokenizer:
    """The minimal Hugging Face tokenizer interface shap's Text masker reads (input_ids and
    offset_mapping), over units fixed in advance: their ids are their indexes in the document."""

    def __init__(self, text: str, units: list[Token]):
        self.text, self.units = text, units

    def __call__(self, s, return_offsets_mapping=True):
        if s != self.text:  # shap asks for the empty string's tokens (special tokens): none
            return {"input_ids": [], "offset_mapping": []}
        return {"input_ids": list(range(len(self.units))),
                "offset_mapping": [(unit.start, unit.end) for unit in self.units]}


def _sentences(text: str, encoded: Encoded) -> list[tuple[Token, list[int]]]:
    """The document's sentences the model sees: (a Token spanning the sentence, indexes of its tokens)."""
    bounds, start = [], 0
    for end in SENTENCE_END.finditer(text):
        bounds.append((start, end.start()))
        start = end.end()
    bounds.append((start, len(text)))
    sentences = []
    for first, last in bounds:
        members = [i for i in encoded.seen if first <= encoded.tokens[i].start < last]
        if members:
            start, end = encoded.tokens[members[0]].start, encoded.tokens[members[-1]].end
            sentences.append((Token(text[start:end], start, end, -1), members))
    return sentences
