"""Unit tests for explain_core.text_methods on a small Keras text model: each method's values checked
against what it promises (completeness, gradient times input, the occlusion drop, additivity)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from explain_core.modalities import MODALITIES
from explain_core.model_card import ModelCard
from explain_core.registry import REGISTRY
from explain_core.text_methods import TextPartitionExplainer, WordOcclusion
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


def _text_model(card, mask_zero=True, recurrent=False):
    model = _model(mask_zero, recurrent)
    return model, text_model(model, card, {"vocab.txt": ("\n".join(VOCABULARY) + "\n").encode()})


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
    from explain_core.text_methods import WordLime

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
