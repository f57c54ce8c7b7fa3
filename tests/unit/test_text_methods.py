"""Unit tests for explain_core.text_methods on a small Keras text model: each method's values checked
against what it promises (completeness, gradient times input, the occlusion drop, additivity)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from explain_core.modalities import MODALITIES
from explain_core.model_card import ModelCard
from explain_core.registry import REGISTRY
from explain_core.text_methods import EmbeddingAttributions, TextPartitionExplainer, WordLime, WordOcclusion
from explain_core.text_model import text_model

WORDS = ["the", "movie", "was", "great", "boring", "not", "bad", "plot", "good", "slow", "fine", "but"]
VOCABULARY = ["", "[UNK]", *WORDS]
LENGTH = 10
CLASSES = [0, 1]
DOCUMENT = "the movie was great"
TWO_SENTENCES = "The plot was slow!  (But) the movie was fine."
TOO_LONG = "the plot was slow but the movie was fine not bad at all really good"


def _model(mask_zero: bool, recurrent: bool):
    keras.utils.set_random_seed(7)
    layers = [keras.Input((LENGTH,), dtype="int32"),
              # large weights: a clearly non-linear model, so that completeness depends on the steps
              keras.layers.Embedding(len(VOCABULARY), 6, mask_zero=mask_zero,
                                     embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0))]
    if recurrent:
        layers += [keras.layers.LSTM(5)]
    else:
        layers += [keras.layers.Dense(8, activation="tanh", kernel_initializer=keras.initializers.RandomNormal(
            stddev=1.0)), keras.layers.GlobalAveragePooling1D()]
    return keras.Sequential([*layers, keras.layers.Dense(2)])


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return ModelCard.model_validate({"name": "reviews", "version": "v1", "modality": "text",
                                     "class_names": ["negative", "positive"],
                                     "text": {"vocabulary_file": "vocab.txt", "max_length": LENGTH}})


def _text_model(card, mask_zero=True, recurrent=False, model=None):
    model = _model(mask_zero, recurrent) if model is None else model
    return model, text_model(model, card, {"vocab.txt": ("\n".join(VOCABULARY) + "\n").encode()})


@pytest.fixture(scope="module")
def pre_card(card) -> ModelCard:
    """Padding and truncation at the start of the document (Keras' pad_sequences defaults)."""
    return card.model_copy(update={"text": card.text.model_copy(update={"padding": "pre", "truncation": "pre"})})


@pytest.fixture(scope="module")
def masked(card):
    return _text_model(card, mask_zero=True)


@pytest.fixture(scope="module")
def lstm(card):
    return _text_model(card, mask_zero=True, recurrent=True)


def outputs(model, ids) -> np.ndarray:
    return np.asarray(model(np.asarray(ids).reshape(-1, LENGTH)), dtype=np.float64)


def gradient_method(name, explained, card, **params):
    spec = REGISTRY[name]
    return MODALITIES["text"].build_explainer(spec, explained, card, {**spec.defaults, **params}, 16)


# --------------------------------------------------------------------------- gradient methods on the embeddings


@pytest.mark.parametrize("mask_zero", [True, False], ids=["mask_zero", "no_mask"])
def test_integrated_gradients_is_complete(card, mask_zero):
    model, explained = _text_model(card, mask_zero=mask_zero)
    encoded = explained.tokenizer.encode(DOCUMENT)
    found = gradient_method("IntegratedGradients", explained, card, steps=256).explain_document(encoded, DOCUMENT,
                                                                                             CLASSES)
    explained.use_mask(encoded.ids)
    baseline = np.asarray(explained.embeddings_model(np.zeros((1, LENGTH, 6), np.float32)), dtype=np.float64)[0]
    gap = outputs(model, encoded.ids)[0] - baseline
    relative = np.abs(found.sums - gap) / np.abs(gap)
    assert relative.max() < 0.01, (found.sums, gap)
    # the model is non-linear enough for a two-step path to miss by far: the check above can fail
    coarse = gradient_method("IntegratedGradients", explained, card, steps=2).explain_document(encoded, DOCUMENT,
                                                                                             CLASSES)
    assert (np.abs(coarse.sums - gap) / np.abs(gap)).max() > 0.1
    assert found.values.shape == (2, 4) and not np.isnan(found.values).any()
    if mask_zero:  # padding is masked: no gradient, no attribution
        np.testing.assert_allclose(found.padding, 0.0, atol=1e-7)
        np.testing.assert_allclose(found.values.sum(axis=1), found.sums, rtol=1e-6)
    else:
        assert np.abs(found.padding).max() > 1e-6  # padding positions are inputs like any other


def test_gradient_input_is_the_gradient_times_the_embedding_summed_per_token(card, masked):
    _, explained = masked
    encoded = explained.tokenizer.encode(TOO_LONG)
    found = gradient_method("GradientInput", explained, card).explain_document(encoded, TOO_LONG, CLASSES)
    explained.use_mask(encoded.ids)
    embeddings = tf.constant(explained.embed(encoded.ids[None]))
    for row, cls in enumerate(CLASSES):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            score = explained.embeddings_model(embeddings)[:, cls]
        per_position = (tape.gradient(score, embeddings) * embeddings).numpy()[0].sum(axis=-1)
        seen = encoded.seen
        np.testing.assert_allclose(found.values[row, seen], per_position[encoded.positions[seen]], rtol=1e-4,
                                   atol=1e-7)
    # the words past max_length were never seen by the model: no value
    assert encoded.truncated == 5 and np.isnan(found.values[:, ~np.isin(np.arange(15), encoded.seen)]).all()


# --------------------------------------------------------------------------- occlusion


@pytest.mark.parametrize("hide_with", ["padding", "unknown"])
def test_word_occlusion_is_the_drop_when_the_word_is_hidden(card, masked, hide_with):
    model, explained = masked
    hidden_id = 0 if hide_with == "padding" else explained.tokenizer.oov_id
    assert hidden_id == (0 if hide_with == "padding" else 1)
    found = WordOcclusion(explained, 16, 2, hide_with=hide_with).explain_document(
        explained.tokenizer.encode(TOO_LONG), TOO_LONG, CLASSES)
    encoded = explained.tokenizer.encode(TOO_LONG)
    base = outputs(model, encoded.ids)[0]
    for index, token in enumerate(encoded.tokens):
        position = encoded.positions[index]
        if position < 0:
            assert np.isnan(found.values[:, index]).all()
            continue
        ids = encoded.ids.copy()
        ids[position] = hidden_id
        np.testing.assert_allclose(found.values[:, index], base - outputs(model, ids)[0], rtol=1e-5, atol=1e-6,
                                   err_msg=token.text)
    assert np.abs(found.values[:, encoded.seen]).max() > 1e-4


# --------------------------------------------------------------------------- Partition SHAP


def _all_hidden(encoded, hidden_id=0):
    ids = encoded.ids.copy()
    ids[encoded.positions[encoded.seen]] = hidden_id
    return ids


def test_hiding_every_word_must_give_a_finite_output(masked):
    """A masked average over no token is 0/0: the masked GlobalAveragePooling1D model's output with every word
    hidden by padding is NaN, so the methods that evaluate it are refused with the advice to hide by unknown."""
    from explain_core.errors import UnsupportedModelError

    _, explained = masked
    for method in (TextPartitionExplainer, WordLime):
        with pytest.raises(UnsupportedModelError, match='hide_with="unknown"'):
            method(explained, 16, 2, hide_with="padding")


# The masked GlobalAveragePooling1D model hides words with the unknown token here (see the test above).
@pytest.mark.parametrize(("fixture", "hide_with"), [("masked", "unknown"), ("lstm", "padding"), ("lstm", "unknown")])
def test_text_partition_values_add_up_to_the_output(request, fixture, hide_with):
    model, explained = request.getfixturevalue(fixture)
    encoded = explained.tokenizer.encode(TOO_LONG)
    found = TextPartitionExplainer(explained, 16, 2, max_evals=300, hide_with=hide_with).explain_document(
        encoded, TOO_LONG, CLASSES)
    f_x = outputs(model, encoded.ids)[0]
    np.testing.assert_allclose(np.nansum(found.values, axis=1) + found.base_values, f_x, atol=1e-4)
    hidden_id = 0 if hide_with == "padding" else 1
    np.testing.assert_allclose(found.base_values, outputs(model, _all_hidden(encoded, hidden_id))[0], atol=1e-5)
    assert np.abs(f_x - found.base_values).max() > 1e-3  # the words do move the output
    assert found.unit == "word" and len(found.units) == len(encoded.tokens) == 15
    unseen = encoded.positions < 0
    assert np.isnan(found.values[:, unseen]).all() and not np.isnan(found.values[:, ~unseen]).any()


def test_text_partition_by_sentence(masked):
    model, explained = masked
    encoded = explained.tokenizer.encode(TWO_SENTENCES)
    found = TextPartitionExplainer(explained, 16, 2, granularity="sentence", hide_with="unknown").explain_document(
        encoded, TWO_SENTENCES, CLASSES)
    assert found.unit == "sentence" and found.values.shape == (2, 2)
    first, second = found.units
    assert TWO_SENTENCES[first.start:first.end] == first.text == "The plot was slow"
    assert TWO_SENTENCES[second.start:second.end] == second.text == "But) the movie was fine"
    words = encoded.tokens
    assert (first.start, first.end) == (words[0].start, words[3].end)
    assert (second.start, second.end) == (words[4].start, words[-1].end)
    f_x = outputs(model, encoded.ids)[0]
    np.testing.assert_allclose(found.values.sum(axis=1) + found.base_values, f_x, atol=1e-4)
    np.testing.assert_allclose(found.base_values, outputs(model, _all_hidden(encoded, hidden_id=1))[0], atol=1e-5)
    # two players: the Owen values are the exact Shapley values, computed here by hand
    only = []
    for hide in ([4, 5, 6, 7, 8], [0, 1, 2, 3]):
        ids = encoded.ids.copy()
        ids[hide] = 1
        only.append(outputs(model, ids)[0])
    base = found.base_values
    np.testing.assert_allclose(found.values[:, 0], 0.5 * (only[0] - base) + 0.5 * (f_x - only[1]), atol=1e-5)


# --------------------------------------------------------------------------- DeepExplainer: refused, and why


def test_shap_deep_explainer_still_cannot_trace_an_lstm(card, lstm):
    """The registry refuses DeepExplainer for text (MethodSpec.refuses) because shap cannot propagate
    DeepLIFT through TensorFlow 2's LSTM (shap issues #1490, #4023): checked on a real LSTM, so a shap
    release that fixes it fails this test and the refusal can be lifted."""
    import shap

    from explain_core.shap_methods import _restored_gradient_recording

    _, explained = lstm
    encoded = [explained.tokenizer.encode(text) for text in (TOO_LONG, TWO_SENTENCES, "the movie was fine")]
    embeddings = explained.embed(np.stack([e.ids for e in encoded]))
    explained.use_mask(encoded[0].ids)
    with _restored_gradient_recording(), pytest.raises(Exception, match="TensorList|LSTM|while"):
        shap.DeepExplainer(explained.embeddings_model, embeddings[1:]).shap_values(embeddings[:1])
    assert "#1490" in REGISTRY["DeepExplainer"].refusal(card)


# --------------------------------------------------------------------------- a NaN on a seen token is an error


def _document_outputs(name, explained, card, document, encoded, found, classes):
    from explain_core.modalities.text import _document_outputs as outputs_of
    from explain_core.texts import Document

    spec = REGISTRY[name]
    logits = np.asarray(explained.ids_model(encoded.ids[None].astype(np.float32)), dtype=np.float64)[0]
    return outputs_of(spec, spec.defaults, 0, Document(document, 1), encoded, found, classes, logits, logits,
                      explained, card, 16)


def test_a_nan_value_on_a_token_the_model_saw_is_an_invalid_output(card, masked):
    """Hiding the only word of a document leaves only padding: the masked average is 0/0, so the word's occlusion
    value is NaN. That is the model's output, not a word cut by max_length: invalid_model_output, not "unseen"."""
    from explain_core.errors import InvalidModelOutputError

    _, explained = masked
    encoded = explained.tokenizer.encode("great!")
    found = WordOcclusion(explained, 16, 2).explain_document(encoded, "great!", [1])
    assert found.values.shape == (1, 1) and np.isnan(found.values).all()
    with pytest.raises(InvalidModelOutputError, match="WordOcclusion's attributions for class positive") as info:
        _document_outputs("WordOcclusion", explained, card, "great!", encoded, found, [1])
    assert info.value.details["nan"] == 1
    # NaN for the tokens past max_length is what the report shows as unseen: accepted
    encoded = explained.tokenizer.encode(TOO_LONG)
    found = WordOcclusion(explained, 16, 2, hide_with="unknown").explain_document(encoded, TOO_LONG, [1])
    assert np.isnan(found.values).sum() == 5
    [(explanation, _, _)] = _document_outputs("WordOcclusion", explained, card, TOO_LONG, encoded, found, [1])
    assert np.isnan(explanation.values).sum() == 5


# --------------------------------------------------------------------------- token reduction (registry)


class _Fixed:
    """An explainer whose attributions are given: (classes, max_length, dims)."""

    def __init__(self, attributions):
        self.attributions = attributions

    def explain(self, inputs, targets):
        return self.attributions[: len(inputs)]


def test_token_reduction_sum_or_l2(masked):
    _, explained = masked
    encoded = explained.tokenizer.encode(DOCUMENT)
    attributions = np.random.default_rng(0).normal(size=(2, LENGTH, 6))
    summed = EmbeddingAttributions(_Fixed(attributions), explained, 16, 2).explain_document(encoded, DOCUMENT, CLASSES)
    norm = EmbeddingAttributions(_Fixed(attributions), explained, 16, 2, reduction="l2").explain_document(
        encoded, DOCUMENT, CLASSES)
    np.testing.assert_allclose(summed.values, attributions[:, :4].sum(axis=-1))
    np.testing.assert_allclose(norm.values, np.linalg.norm(attributions[:, :4], axis=-1))
    np.testing.assert_allclose(norm.padding, np.linalg.norm(attributions[:, 4:], axis=-1).sum(axis=1))
    with pytest.raises(ValueError, match="reduction"):
        EmbeddingAttributions(_Fixed(attributions), explained, 16, 2, reduction="max")


def test_smoothgrad_is_the_l2_norm_of_the_mean_gradient_per_token(card, masked):
    _, explained = masked
    encoded = explained.tokenizer.encode(TOO_LONG)
    method = gradient_method("SmoothGrad", explained, card, nb_samples=8)
    assert method.reduction == "l2"
    assert gradient_method("IntegratedGradients", explained, card).reduction == "sum"
    tf.random.set_seed(3)
    found = method.explain_document(encoded, TOO_LONG, CLASSES)
    explained.use_mask(encoded.ids)
    tf.random.set_seed(3)
    raw = np.asarray(method.explainer.explain(np.repeat(explained.embed(encoded.ids[None]), 2, axis=0),
                                              _one_hot_targets(CLASSES)))
    seen = encoded.seen
    np.testing.assert_allclose(found.values[:, seen], np.linalg.norm(raw, axis=-1)[:, encoded.positions[seen]],
                               rtol=1e-5, atol=1e-8)
    assert (found.values[:, seen] >= 0).all() and found.values[:, seen].max() > 0


def _one_hot_targets(classes):
    return np.eye(2, dtype=np.float32)[classes]


# --------------------------------------------------------------------------- Partition SHAP: one unit, per class


@pytest.mark.parametrize(("fixture", "hide_with", "text", "granularity"), [
    ("lstm", "padding", "great!", "word"),
    ("masked", "unknown", "great!", "word"),
    ("masked", "unknown", "The movie was great.", "sentence"),
])
def test_text_partition_of_one_unit_is_exact(request, fixture, hide_with, text, granularity):
    """One player: its Owen value is f(x) - f(hidden), the base value f(hidden) (shap's tree needs two units)."""
    model, explained = request.getfixturevalue(fixture)
    encoded = explained.tokenizer.encode(text)
    found = TextPartitionExplainer(explained, 16, 2, granularity=granularity, hide_with=hide_with).explain_document(
        encoded, text, CLASSES)
    f_x = outputs(model, encoded.ids)[0]
    hidden = outputs(model, _all_hidden(encoded, 0 if hide_with == "padding" else 1))[0]
    assert found.unit == granularity and found.values.shape == (2, 1)
    np.testing.assert_allclose(found.base_values, hidden, atol=1e-6)
    np.testing.assert_allclose(found.values[:, 0] + found.base_values, f_x, atol=1e-6)
    assert np.abs(found.values).max() > 1e-4
    if granularity == "sentence":
        assert found.units[0].text == "The movie was great"


def test_text_partition_explains_each_class_on_its_own(card):
    """max_evals is per document and class: explaining class 1 alone, or with class 0, gives the same values. In one
    shap call for both, the tree would be expanded where the larger output (class 0, scaled by 100 here) moves most."""
    model = _model(mask_zero=True, recurrent=True)
    scaled = keras.Sequential([keras.Input((LENGTH,), dtype="int32"), *model.layers,
                               keras.layers.Dense(2, use_bias=False)])
    scaled.layers[-1].set_weights([np.diag([100.0, 1.0]).astype(np.float32)])
    _, explained = _text_model(card, model=scaled)
    encoded = explained.tokenizer.encode(TOO_LONG)
    method = TextPartitionExplainer(explained, 16, 2, max_evals=20, hide_with="padding")
    alone = method.explain_document(encoded, TOO_LONG, [1])
    both = method.explain_document(encoded, TOO_LONG, [1, 0])
    reversed_ = method.explain_document(encoded, TOO_LONG, [0, 1])
    np.testing.assert_array_equal(alone.values[0], both.values[0])
    np.testing.assert_array_equal(alone.values[0], reversed_.values[1])
    np.testing.assert_array_equal(both.values[1], reversed_.values[0])
    assert alone.base_values[0] == both.base_values[0]


# --------------------------------------------------------------------------- LIME


def _linear_model(unknown: float):
    """Class 1's output is the sum over positions of a per-token weight: "great" 3, [UNK] ``unknown``, every other
    token (padding included) 0; class 0's is its opposite. No mask: padding is a token like the others."""
    weights = np.zeros((len(VOCABULARY), 1), np.float32)
    weights[VOCABULARY.index("great")] = 3.0
    weights[VOCABULARY.index("[UNK]")] = unknown
    model = keras.Sequential([keras.Input((LENGTH,), dtype="int32"), keras.layers.Embedding(len(VOCABULARY), 1),
                              keras.layers.Flatten(), keras.layers.Dense(2, use_bias=False)])
    model.layers[0].set_weights([weights])
    model.layers[2].set_weights([np.tile(np.array([[-1.0, 1.0]], np.float32), (LENGTH, 1))])
    return model


@pytest.mark.parametrize("text", [DOCUMENT, "the plot was slow but the movie was great not bad at all"],
                         ids=["padded", "fills_max_length"])
@pytest.mark.parametrize("hide_with", ["padding", "unknown"])
def test_word_lime_finds_the_word_and_never_hides_padding(card, monkeypatch, text, hide_with):
    from xplique.attributions import Lime

    unknown = 0.5
    model, explained = _text_model(card, model=_linear_model(unknown))
    encoded = explained.tokenizer.encode(text)
    samples = []
    apply_masks = Lime._apply_masks

    def recording(original_input, sample_masks, ref_value):
        perturbed = apply_masks(original_input, sample_masks, ref_value)
        samples.append(np.asarray(perturbed))
        return perturbed

    monkeypatch.setattr(Lime, "_apply_masks", staticmethod(recording))
    tf.random.set_seed(0)
    found = WordLime(explained, 64, 2, nb_samples=300, hide_with=hide_with).explain_document(encoded, text, CLASSES)
    # the model is linear: hiding a word changes class 1 by -(weight - hidden weight), so that is its LIME value
    # (within the shrinkage of Xplique's surrogate, a ridge regression with alpha=2)
    hidden = 0.0 if hide_with == "padding" else unknown
    seen = encoded.seen
    expected = np.array([3.0 if encoded.tokens[i].text == "great" else 0.0 for i in seen]) - hidden
    np.testing.assert_allclose(found.values[1, seen], expected, rtol=0.15, atol=0.1)
    np.testing.assert_allclose(found.values[0, seen], -expected, rtol=0.15, atol=0.1)
    assert np.argmax(found.values[1, seen]) == [encoded.tokens[i].text for i in seen].index("great")
    assert np.isnan(found.values[:, encoded.positions < 0]).all()
    # the copies the model saw: padding positions always padding, words kept or hidden, about half of them kept
    copies = np.concatenate(samples).reshape(-1, LENGTH)
    assert len(copies) == 2 * 300
    padding = encoded.ids == explained.tokenizer.padding_id
    assert (copies[:, padding] == explained.tokenizer.padding_id).all()
    words = copies[:, ~padding]
    hidden_id = explained.tokenizer.padding_id if hide_with == "padding" else explained.tokenizer.oov_id
    assert ((words == encoded.ids[~padding]) | (words == hidden_id)).all()
    assert 0.4 < (words == encoded.ids[~padding]).mean() < 0.6


# --------------------------------------------------------------------------- padding and truncation at the start


@pytest.mark.parametrize("method", ["WordOcclusion", "IntegratedGradients"])
def test_pre_padding_and_truncation_put_the_values_on_the_right_tokens(card, pre_card, method):
    """The masked model averages over its unmasked tokens, wherever they sit: the same words give the same value
    per token with padding after them (post) or before them (pre); truncation "pre" cuts the first words."""
    model = _model(mask_zero=True, recurrent=False)
    _, post = _text_model(card, model=model)
    _, pre = _text_model(pre_card, model=model)
    kept = " ".join(TOO_LONG.split()[-LENGTH:])  # what truncation "pre" keeps of TOO_LONG

    def explain(explained, text):
        encoded = explained.tokenizer.encode(text)
        if method == "WordOcclusion":
            return encoded, WordOcclusion(explained, 16, 2, hide_with="unknown").explain_document(encoded, text,
                                                                                                  CLASSES)
        return encoded, gradient_method(method, explained, card).explain_document(encoded, text, CLASSES)

    encoded, values = explain(pre, DOCUMENT)
    assert encoded.ids[-4:].tolist() == [VOCABULARY.index(w) for w in DOCUMENT.split()] and encoded.ids[0] == 0
    np.testing.assert_allclose(values.values, explain(post, DOCUMENT)[1].values, rtol=1e-4, atol=1e-6)
    assert np.abs(values.values).max() > 1e-3
    encoded, values = explain(pre, TOO_LONG)
    assert encoded.positions[:5].tolist() == [-1] * 5 and encoded.positions[5:].tolist() == list(range(LENGTH))
    assert np.isnan(values.values[:, :5]).all()
    np.testing.assert_allclose(values.values[:, 5:], explain(post, kept)[1].values, rtol=1e-4, atol=1e-6)
