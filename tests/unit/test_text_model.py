"""Unit tests for explain_core.text_model: a Keras text model cut at its TextVectorization and Embedding
layers gives the model's own outputs, and disagreements between model and card are refused."""

import keras
import numpy as np
import pytest

from explain_core.errors import InvalidModelError, UnsupportedModelError
from explain_core.modalities import MODALITIES
from explain_core.model_card import ModelCard
from explain_core.registry import REGISTRY
from explain_core.text_model import TextModel, text_model

WORDS = ["the", "movie", "was", "great", "boring", "not", "bad", "plot", "good", "slow"]
VOCABULARY = ["", "[UNK]", *WORDS]
FILES = {"vocab.txt": ("\n".join(VOCABULARY) + "\n").encode()}
LENGTH = 8
DOCUMENTS = ["the movie was great", "not bad", "boring", "the plot was slow not good at all but the movie was fine"]
CORPUS = ["The movie was GREAT!", "not bad, not bad at all", "boring... so boring", "a slow plot", "good film"]


def card(**text) -> ModelCard:
    return ModelCard.model_validate({"name": "reviews", "version": "v1", "modality": "text",
                                     "class_names": ["negative", "positive"], "text": {"max_length": LENGTH, **text}})


def ids_model(mask_zero: bool, pooling: str = "average", seed: int = 0) -> "keras.Model":
    keras.utils.set_random_seed(seed)
    pool = keras.layers.GlobalAveragePooling1D() if pooling == "average" else keras.layers.LSTM(4)
    return keras.Sequential([keras.Input((LENGTH,), dtype="int32"),
                             keras.layers.Embedding(len(VOCABULARY), 5, mask_zero=mask_zero, name="embedding"),
                             pool, keras.layers.Dense(2, name="dense")])


def string_model(recurrent: bool) -> "keras.Model":
    keras.utils.set_random_seed(1)
    vectorizer = keras.layers.TextVectorization(max_tokens=30, output_mode="int", output_sequence_length=LENGTH)
    vectorizer.adapt(CORPUS)
    inputs = keras.Input((1,), dtype="string")
    x = keras.layers.Embedding(vectorizer.vocabulary_size(), 6, mask_zero=True)(vectorizer(inputs))
    x = keras.layers.LSTM(4)(x) if recurrent else keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def ids_of(explained: TextModel, documents=DOCUMENTS) -> np.ndarray:
    return np.stack([explained.tokenizer.encode(d).ids for d in documents])


def through_embeddings(explained: TextModel, ids: np.ndarray, embeddings=None) -> np.ndarray:
    """The embeddings model on each document, with that document's mask."""
    embeddings = explained.embed(ids) if embeddings is None else embeddings
    rows = []
    for row, document in zip(embeddings, ids, strict=True):
        explained.use_mask(document)
        rows.append(np.asarray(explained.embeddings_model(row[None]))[0])
    return np.stack(rows)


# --------------------------------------------------------------------------- the cut models match the model


@pytest.mark.parametrize("pooling", ["average", "lstm"])
def test_ids_model_with_mask_zero_gives_the_models_outputs(pooling):
    model = ids_model(mask_zero=True, pooling=pooling)
    explained = text_model(model, card(vocabulary_file="vocab.txt"), FILES)
    assert explained.takes == "ids" and explained.embedding_layer is model.get_layer("embedding")
    assert explained.no_gradients_reason is None and explained.embeddings_model is not None
    ids = ids_of(explained)
    assert len({int((row != 0).sum()) for row in ids}) == 4  # documents of different lengths (one truncated)
    expected = np.asarray(model(ids))
    np.testing.assert_allclose(np.asarray(explained.ids_model(ids.astype(np.float32))), expected, atol=1e-6)
    np.testing.assert_allclose(through_embeddings(explained, ids), expected, atol=1e-5)
    # under the mask, whatever sits at padding positions does not reach the output
    noisy = explained.embed(ids) + np.random.default_rng(0).normal(0, 3, (len(ids), LENGTH, 5)).astype(np.float32) \
        * (ids == 0)[..., None]
    np.testing.assert_allclose(through_embeddings(explained, ids, noisy), expected, atol=1e-5)
    # and without the document's mask it would: the mask is what keeps padding out
    explained.use_mask(np.ones(LENGTH, dtype=np.int64))
    unmasked = np.asarray(explained.embeddings_model(noisy[1:2]))[0]
    assert not np.allclose(unmasked, expected[1], atol=1e-3)


def test_ids_model_without_mask_zero_gives_the_models_outputs():
    model = ids_model(mask_zero=False)
    explained = text_model(model, card(vocabulary_file="vocab.txt"), FILES)
    ids = ids_of(explained)
    expected = np.asarray(model(ids))
    np.testing.assert_allclose(np.asarray(explained.ids_model(ids.astype(np.float32))), expected, atol=1e-6)
    np.testing.assert_allclose(through_embeddings(explained, ids), expected, atol=1e-5)
    # nothing is masked: padding embeddings are part of the input
    shifted = explained.embed(ids) + 2.0 * (ids == 0)[..., None]
    assert not np.allclose(through_embeddings(explained, ids, shifted)[1], expected[1], atol=1e-3)


@pytest.mark.parametrize("recurrent", [False, True], ids=["average", "lstm"])
def test_string_model_through_text_vectorization_gives_the_models_outputs(recurrent):
    model = string_model(recurrent)
    explained = text_model(model, card(), {})
    assert explained.takes == "strings" and explained.tokenizer.max_length == LENGTH
    documents = DOCUMENTS + CORPUS + ["ÉCOLE, café!", ""]
    expected = np.asarray(model(np.array(documents)[:, None]))
    ids = ids_of(explained, documents)
    np.testing.assert_allclose(np.asarray(explained.ids_model(ids.astype(np.float32))), expected, atol=1e-5)
    np.testing.assert_allclose(through_embeddings(explained, ids), expected, atol=1e-5)
    assert explained.describe()["takes"] == "strings"


# --------------------------------------------------------------------------- refusals


def _refused(model, model_card, files, match):
    with pytest.raises(InvalidModelError, match=match) as info:
        text_model(model, model_card, files)
    assert info.value.code == "invalid_model" and info.value.status == 422


def test_an_ids_model_needs_a_vocabulary_file():
    _refused(ids_model(True), card(), FILES, "takes token ids: its card must name a vocabulary_file")


def test_a_string_model_must_not_name_a_vocabulary_file():
    _refused(string_model(False), card(vocabulary_file="vocab.txt"), FILES, "must not name a vocabulary_file")


def test_max_length_must_match_the_model():
    _refused(ids_model(True), card(vocabulary_file="vocab.txt", max_length=LENGTH + 1), FILES,
             "does not match the card's max_length")
    _refused(string_model(False), card(max_length=LENGTH - 1), {}, "differs from the TextVectorization layer's")


def test_embedding_layer_must_name_an_embedding_layer():
    model = ids_model(True)
    _refused(model, card(vocabulary_file="vocab.txt", embedding_layer="dense"), FILES,
             "'dense' is a Dense, not an Embedding layer")
    _refused(model, card(vocabulary_file="vocab.txt", embedding_layer="nowhere"), FILES,
             "'nowhere' is not a layer of the model")


def test_mask_zero_needs_padding_id_zero():
    files = {"vocab.txt": "\n".join(["[UNK]", "", *WORDS]).encode()}
    _refused(ids_model(True), card(vocabulary_file="vocab.txt"), files, "masks id 0 .* padding token has id 1")
    explained = text_model(ids_model(False), card(vocabulary_file="vocab.txt"), files)  # no mask: any padding id
    assert explained.tokenizer.padding_id == 1 and explained.tokenizer.encode("great").ids.tolist()[:2] == [5, 1]


def test_a_bad_vocabulary_file_is_an_invalid_model():
    _refused(ids_model(True), card(vocabulary_file="vocab.txt"), {"vocab.txt": b"\n[UNK]\nthe\nthe\n"},
             "more than once")
    _refused(ids_model(True), card(vocabulary_file="vocab.txt", oov_token="<unk>"), FILES, "out-of-vocabulary")


def test_two_unnamed_embeddings_leave_gradient_methods_out():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((LENGTH,), dtype="int32")
    words = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(len(VOCABULARY), 4, name="words")(inputs))
    other = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(len(VOCABULARY), 3, name="other")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Concatenate()([words, other])))
    model_card = card(vocabulary_file="vocab.txt")
    explained = text_model(model, model_card, FILES)
    assert explained.embeddings_model is None and explained.embedding_layer is None
    assert "2 Embedding layers" in explained.no_gradients_reason
    ids = ids_of(explained)
    np.testing.assert_allclose(np.asarray(explained.ids_model(ids.astype(np.float32))), np.asarray(model(ids)),
                               atol=1e-6)
    modality = MODALITIES["text"]
    for name in ("Saliency", "IntegratedGradients"):
        spec = REGISTRY[name]
        with pytest.raises(UnsupportedModelError, match="2 Embedding layers; name the one"):
            modality.build_explainer(spec, explained, model_card, dict(spec.defaults), 4)
    # perturbation methods only need the ids model
    occlusion = REGISTRY["WordOcclusion"]
    assert modality.build_explainer(occlusion, explained, model_card, dict(occlusion.defaults), 4) is not None
    # naming one of them brings gradients back
    named = text_model(model, card(vocabulary_file="vocab.txt", embedding_layer="words"), FILES)
    assert named.embedding_layer is model.get_layer("words") and named.no_gradients_reason is None


# --------------------------------------------------------------------------- card settings a string model ignores


@pytest.mark.parametrize("settings", [{"lowercase": False}, {"strip_punctuation": True}, {"split_pattern": r"\s+"},
                                      {"oov_token": "[UNK]"}, {"padding_token": ""}, {"padding": "pre"},
                                      {"truncation": "post"}, {"lowercase": True, "padding": "post"}])
def test_a_string_model_refuses_card_settings_its_layer_decides(settings):
    """Even set to the defaults: the card says something the model does not do."""
    with pytest.raises(InvalidModelError, match="are read from the TextVectorization layer; remove them from the "
                                                "card") as info:
        text_model(string_model(False), card(**settings), {})
    assert info.value.details["fields"] == [name for name in ("lowercase", "strip_punctuation", "split_pattern",
                                                              "oov_token", "padding_token", "padding", "truncation")
                                            if name in settings]
    assert ", ".join(settings) in info.value.message


def test_a_string_model_accepts_max_length_and_embedding_layer():
    model = string_model(False)
    name = next(layer.name for layer in model.layers if isinstance(layer, keras.layers.Embedding))
    assert text_model(model, card(embedding_layer=name), {}).embedding_layer is model.get_layer(name)


def test_an_ids_model_takes_the_cards_settings():
    explained = text_model(ids_model(True), card(vocabulary_file="vocab.txt", lowercase=False, padding="pre",
                                                 split_pattern="[,]+"), FILES)
    assert explained.tokenizer.encode("the,Movie,great").ids.tolist() == [0] * 5 + [2, 1, 5]  # "Movie": OOV


# --------------------------------------------------------------------------- vocabulary vs the embedding's rows


def test_a_vocabulary_larger_than_the_embedding_is_refused():
    keras.utils.set_random_seed(0)
    small = keras.Sequential([keras.Input((LENGTH,), dtype="int32"),
                              keras.layers.Embedding(len(VOCABULARY) - 1, 5, mask_zero=True, name="embedding"),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)])
    with pytest.raises(InvalidModelError, match=f"the vocabulary has {len(VOCABULARY)} tokens .* 'embedding' has "
                                                f"input_dim {len(VOCABULARY) - 1}") as info:
        text_model(small, card(vocabulary_file="vocab.txt"), FILES)
    assert info.value.details["vocabulary_size"] == len(VOCABULARY)
    assert info.value.details["input_dim"] == len(VOCABULARY) - 1
    # the vocabulary exactly fills the embedding: loads, and the last id predicts
    explained = text_model(ids_model(True), card(vocabulary_file="vocab.txt"), FILES)
    assert np.isfinite(np.asarray(explained.ids_model(np.full((1, LENGTH), len(VOCABULARY) - 1, np.float32)))).all()


def test_a_string_models_vocabulary_larger_than_its_embedding_is_refused():
    vectorizer = keras.layers.TextVectorization(output_mode="int", output_sequence_length=LENGTH)
    vectorizer.adapt(CORPUS)
    inputs = keras.Input((1,), dtype="string")
    x = keras.layers.Embedding(vectorizer.vocabulary_size() - 2, 4)(vectorizer(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(x)))
    _refused(model, card(), {}, f"vocabulary has {vectorizer.vocabulary_size()} tokens")


def test_every_embedding_fed_the_ids_is_checked_and_a_position_embedding_is_not():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((LENGTH,), dtype="int32")
    words = keras.layers.Embedding(len(VOCABULARY), 4, name="words")(inputs)
    positions = keras.layers.Embedding(LENGTH, 4, name="positions")(keras.ops.arange(LENGTH)[None])
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Add()([words, positions]))
    model = keras.Model(inputs, keras.layers.Dense(2)(pooled))
    assert LENGTH < len(VOCABULARY)  # the position embedding is smaller than the vocabulary: not checked
    explained = text_model(model, card(vocabulary_file="vocab.txt", embedding_layer="words"), FILES)
    assert explained.embedding_layer is model.get_layer("words")
    # two embeddings of the ids, none named (no gradients): the small one is still refused
    other = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(3, 4, name="other")(inputs))
    two = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Concatenate()(
        [keras.layers.GlobalAveragePooling1D()(words), other])))
    _refused(two, card(vocabulary_file="vocab.txt"), FILES, "'other' has input_dim 3")
