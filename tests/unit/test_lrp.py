"""Unit tests for explain_core.lrp on small seeded Keras models built here.

Conservation is LRP's defining property: on a network without biases, the rules that redistribute without
absorbing (LRP-0, gamma, alpha-beta with alpha - beta = 1, z^B, z+, w^2) give input relevance summing to the
explained logit.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from explain_core.errors import InvalidParameterError, UnsupportedModelError
from explain_core.lrp import LRP
from explain_core.model_card import ModelCard

CLASSES = 3


def images(rows: int, size: int = 8, seed: int = 0) -> np.ndarray:
    """Preprocessed-looking inputs: both signs, like ImageNet-normalised pixels."""
    return np.random.default_rng(seed).normal(size=(rows, size, size, 3)).astype(np.float32)


def one_hot(classes) -> np.ndarray:
    return np.eye(CLASSES, dtype=np.float32)[list(classes)]


def logits(model, inputs) -> np.ndarray:
    """The pre-softmax scores: the model's last Dense layer without its activation."""
    last = model.layers[-1]
    features = keras.Model(model.inputs[0], last.input)(inputs).numpy()
    bias = last.bias.numpy() if last.use_bias else 0.0
    return features @ last.kernel.numpy() + bias


def bias_free_relu_net(seed: int = 0, activation=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        layers.Conv2D(6, 3, use_bias=False, activation="relu"),
        layers.Conv2D(8, 3, use_bias=False, activation="relu", padding="same"),
        layers.Flatten(),
        layers.Dense(CLASSES, use_bias=False, activation=activation),
    ])


def set_batch_norm(layer, rng, centred: bool) -> None:
    """Random statistics; ``centred``: zero mean and offset, so that folding adds no bias."""
    channels = layer.moving_mean.shape[0]
    gamma, variance = rng.uniform(0.5, 1.5, channels), rng.uniform(0.5, 1.5, channels)
    beta, mean = (np.zeros(channels), np.zeros(channels)) if centred else rng.normal(0, 0.5, (2, channels))
    layer.set_weights([gamma, beta, mean, variance])


def branched_net(seed: int = 0):
    """MobileNetV2-like, bias-free: Conv-BN-ReLU6, DepthwiseConv-BN-ReLU, linear bottleneck Conv-BN added to
    the block's input, max pooling, a BatchNormalization that cannot be folded (after pooling), ZeroPadding2D,
    Concatenate, global pooling, Dropout and a softmax Dense."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    block_input = layers.ReLU(max_value=6.0)(x)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False)(block_input)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(8, 1, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Add()([x, block_input])
    x = layers.MaxPooling2D(2)(x)
    x = layers.BatchNormalization(name="unfolded")(x)
    x = layers.ZeroPadding2D(1)(x)
    left = layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False, activation="relu")(x)
    right = layers.AveragePooling2D(2)(layers.Conv2D(4, 1, use_bias=False)(x))
    x = layers.Concatenate()([left, right])
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(CLASSES, use_bias=False, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            set_batch_norm(layer, rng, centred=True)
    return model


def assert_conserves(model, inputs, **params) -> None:
    scores = logits(model, inputs)
    classes = scores.argmax(axis=1)
    relevance = LRP(model, **params).explain(inputs, one_hot(classes))
    np.testing.assert_allclose(relevance.sum(axis=(1, 2, 3)), scores[np.arange(len(inputs)), classes],
                               rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- LRP-0 and conservation


def test_lrp_zero_is_gradient_times_input_on_a_bias_free_relu_network():
    model = bias_free_relu_net()
    inputs, targets = images(4, seed=1), one_hot([0, 1, 2, 0])
    # The identity is exact up to the 1e-9 stabiliser, which shifts the shares of a neuron with a pre-activation
    # within ~1e-5 of zero by more than rtol: these inputs have none.
    hidden = keras.Model(model.inputs[0], [model.layers[0].output, model.layers[1].output])(inputs)
    assert min(np.abs(values.numpy()[values.numpy() > 0]).min() for values in hidden) > 1e-3
    relevance = LRP(model, rule="epsilon", epsilon=0.0, first_layer="same").explain(inputs, targets)
    tensor = tf.constant(inputs)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        score = tf.reduce_sum(model(tensor) * targets)
    np.testing.assert_allclose(relevance, (tape.gradient(score, tensor) * tensor).numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("params", [
    {"rule": "epsilon", "first_layer": "same"},
    {"rule": "gamma", "first_layer": "same"},
    {"rule": "gamma", "first_layer": "zbox"},
    {"rule": "epsilon", "first_layer": "wsquare"},
    {"rule": "gamma", "first_layer": "zplus"},
    {"rule": "alpha_beta", "alpha": 2.0, "first_layer": "same"},
    {"rule": "alpha_beta", "alpha": 1.0, "first_layer": "same"},
], ids=lambda params: "-".join(str(value) for value in params.values()))
def test_rules_conserve_the_logit_on_a_bias_free_network(params):
    assert_conserves(bias_free_relu_net(), images(4), epsilon=0.0, **params)


@pytest.mark.parametrize("rule", ["epsilon", "gamma"])
def test_relevance_of_a_branched_network_with_batch_norms_sums_to_the_logit(rule):
    model = branched_net()
    explainer = LRP(model, rule=rule, epsilon=0.0)
    folded = [step.batch_norm.name for step in explainer._steps if step.batch_norm is not None]
    assert len(folded) == 3 and "unfolded" not in folded
    assert_conserves(model, images(3, size=12), rule=rule, epsilon=0.0)


def test_relevance_starts_at_the_logit_before_a_final_softmax_layer():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(4, 3, use_bias=False, activation="relu"),
                              layers.GlobalMaxPooling2D(), layers.Dense(CLASSES, use_bias=False),
                              layers.Activation("softmax")])
    inputs = images(2)
    scores = keras.Model(model.inputs[0], model.layers[-2].output)(inputs).numpy()
    relevance = LRP(model, rule="epsilon", epsilon=0.0).explain(inputs, one_hot([2, 2]))
    np.testing.assert_allclose(relevance.sum(axis=(1, 2, 3)), scores[:, 2], rtol=1e-4)


def test_epsilon_absorbs_relevance():
    model, inputs = bias_free_relu_net(), images(2)
    scores = logits(model, inputs)[:, 1]
    relevance = LRP(model, rule="epsilon", epsilon=1.0, first_layer="same").explain(inputs, one_hot([1, 1]))
    assert np.all(np.abs(relevance.sum(axis=(1, 2, 3))) < np.abs(scores))


# --------------------------------------------------------------------------- BatchNormalization folding


def test_folded_batch_norm_gives_the_maps_of_the_model_without_it():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 3))
    conv = layers.Conv2D(6, 3, strides=2, padding="same")
    norm = layers.BatchNormalization()
    head = [layers.ReLU(), layers.Flatten(), layers.Dense(CLASSES)]
    x = norm(conv(inputs))
    for layer in head:
        x = layer(x)
    model = keras.Model(inputs, x)
    set_batch_norm(norm, np.random.default_rng(2), centred=False)

    gamma, beta, mean, variance = norm.get_weights()
    scale = gamma / np.sqrt(variance + norm.epsilon)
    fused = layers.Conv2D(6, 3, strides=2, padding="same")
    x = fused(inputs)
    for layer in head:  # the same layers: the same weights
        x = layer(x)
    model_without_norm = keras.Model(inputs, x)
    kernel, bias = conv.get_weights()
    fused.set_weights([kernel * scale, (bias - mean) * scale + beta])

    batch, targets = images(3), one_hot([0, 1, 2])
    np.testing.assert_allclose(model(batch).numpy(), model_without_norm(batch).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(LRP(model).explain(batch, targets), LRP(model_without_norm).explain(batch, targets),
                               rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- refused models


def model_with(bad_layer):
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, activation="relu")(inputs)
    x = bad_layer(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(CLASSES)(x))


@pytest.mark.parametrize("bad_layer", [
    layers.Activation("tanh", name="bad"),
    layers.Conv2D(4, 1, activation="sigmoid", name="bad"),
    layers.Conv2D(4, 1, activation="softmax", name="bad"),
    layers.LayerNormalization(name="bad"),
], ids=["tanh", "sigmoid-conv", "softmax-conv", "layer-norm"])
def test_unsupported_layers_are_refused_at_construction_naming_the_layer(bad_layer):
    with pytest.raises(UnsupportedModelError, match="'bad'") as error:
        LRP(model_with(bad_layer))
    assert error.value.details == {"method": "LRP", "layer": "bad"}


def test_recurrent_layers_are_refused():
    inputs = keras.Input((8, 8, 3))
    x = layers.LSTM(4, name="recurrent")(layers.Reshape((8, 24))(inputs))
    with pytest.raises(UnsupportedModelError, match="'recurrent' \\(LSTM\\)"):
        LRP(keras.Model(inputs, layers.Dense(CLASSES)(x)))


def test_nested_models_and_several_outputs_are_refused():
    inner = bias_free_relu_net()
    inputs = keras.Input((8, 8, 3))
    with pytest.raises(UnsupportedModelError, match="nested model"):
        LRP(keras.Model(inputs, inner(inputs)))
    features = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3)(inputs))
    with pytest.raises(UnsupportedModelError, match="one input and one output"):
        LRP(keras.Model(inputs, [layers.Dense(CLASSES)(features), layers.Dense(2)(features)]))


def test_parameters_and_inputs_are_validated():
    model = bias_free_relu_net()
    with pytest.raises(InvalidParameterError):
        LRP(model, rule="flat")
    with pytest.raises(InvalidParameterError):
        LRP(model, alpha=0.5)
    explainer = LRP(model)
    with pytest.raises(ValueError):
        explainer.explain(images(2)[0], one_hot([0]))
    with pytest.raises(ValueError):
        explainer.explain(images(2), one_hot([0]))


# --------------------------------------------------------------------------- maps, batches and tracing


def test_maps_are_finite_have_the_input_shape_and_depend_on_the_target():
    model, inputs = branched_net(), images(2, size=12)
    explainer = LRP(model)
    first, second = explainer.explain(inputs, one_hot([0, 0])), explainer.explain(inputs, one_hot([1, 1]))
    assert first.shape == inputs.shape and first.dtype == np.float32
    assert np.all(np.isfinite(first)) and np.all(np.isfinite(second))
    assert not np.allclose(first, second)


def test_chunks_give_the_maps_of_rows_explained_one_by_one_with_one_trace():
    model, inputs, targets = branched_net(), images(5, size=12), one_hot([0, 1, 2, 0, 1])
    explainer = LRP(model, batch_size=2)
    in_chunks = explainer.explain(inputs, targets)  # chunks of 2, 2 and 1 rows
    one_by_one = np.concatenate([explainer.explain(inputs[row:row + 1], targets[row:row + 1]) for row in range(5)])
    explainer.batch_size = 5
    at_once = explainer.explain(inputs, targets)
    np.testing.assert_allclose(in_chunks, one_by_one, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(at_once, one_by_one, rtol=1e-4, atol=1e-6)
    assert explainer._relevance.experimental_get_tracing_count() == 1


def test_zbox_bounds_come_from_the_cards_preprocessing():
    card = ModelCard.from_json(json.dumps({
        "name": "tiny", "version": "v1", "input_height": 8, "input_width": 8, "class_names": ["a", "b", "c"],
        "preprocessing": {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}),
        model="tiny", version="v1")
    model = bias_free_relu_net()
    pixels = np.random.default_rng(3).integers(0, 256, (2, 8, 8, 3))
    inputs = ((pixels / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32)
    explainer = LRP(model, card=card, epsilon=0.0)
    low, high = (bound.numpy() for bound in explainer._card_bounds)
    np.testing.assert_allclose(low, [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-6)
    np.testing.assert_allclose(high, [0.515 / 0.229, 0.544 / 0.224, 0.594 / 0.225], rtol=1e-6)
    with_card = explainer.explain(inputs, one_hot([0, 1]))
    without_card = LRP(model, epsilon=0.0).explain(inputs, one_hot([0, 1]))
    assert not np.allclose(with_card, without_card)
    np.testing.assert_allclose(with_card.sum(axis=(1, 2, 3)), without_card.sum(axis=(1, 2, 3)), rtol=1e-4)
