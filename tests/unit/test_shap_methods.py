"""Unit tests for explain_core.shap_methods on small models made here: exact values where theory gives them."""

import numpy as np
import pytest

from explain_core.attribution import build_explainer
from explain_core.errors import UnsupportedModelError
from explain_core.model_card import ModelCard
from explain_core.registry import REGISTRY, SHAP, methods_of

pytestmark = pytest.mark.slow

FEATURES = ["a", "b", "c", "d"]


def tabular_card(**changes) -> ModelCard:
    return ModelCard(**{"name": "m", "version": "v", "modality": "tabular", "feature_names": FEATURES,
                        "class_names": ["no", "yes"], **changes})


def one_hot(classes, count=2) -> np.ndarray:
    targets = np.zeros((len(classes), count), np.float32)
    targets[np.arange(len(classes)), classes] = 1.0
    return targets


def explainer(name: str, model, card, background=None, **overrides):
    spec = REGISTRY[name]
    return build_explainer(spec, model, card, {**spec.defaults, **overrides}, 32, background)


@pytest.fixture(scope="module")
def linear_model():
    """Two logits, each linear in the features: Shapley values are w_i * (x_i - E[x_i]) exactly."""
    import keras

    inputs = keras.Input((4,))
    layer = keras.layers.Dense(2, name="logits")
    model = keras.Model(inputs, layer(inputs))
    weights = np.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.0], [2.0, 1.0]], np.float32)
    layer.set_weights([weights, np.array([0.3, -0.7], np.float32)])
    return model, weights


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 4)), rng.normal(size=(5, 4))  # background, rows


@pytest.mark.parametrize("method", [spec.name for spec in methods_of(SHAP, tabular_card())])
def test_linear_model_gets_its_exact_shapley_values(method, linear_model, data):
    model, weights = linear_model
    background, rows = data
    classes = [1, 0, 1, 1, 0]
    # Expected gradients samples references from the background: exact only in expectation, so
    # it gets the most samples and a tolerance of a few standard errors (|w| <= 3, 5000 draws).
    overrides = {"nb_samples": 5000} if method == "GradientExplainer" else {}
    found = explainer(method, model, tabular_card(), background, **overrides).explain(rows, one_hot(classes))
    expected = weights[:, classes].T * (rows - background.mean(axis=0))
    np.testing.assert_allclose(found, expected, atol=2e-4 if method != "GradientExplainer" else 0.15)


def test_base_values_are_the_mean_output_over_the_background(linear_model, data):
    model, weights = linear_model
    background, rows = data
    method = explainer("KernelExplainer", model, tabular_card(), background)
    method.explain(rows, one_hot([1, 0, 1, 1, 0]))
    mean_logits = background.mean(axis=0) @ weights + np.array([0.3, -0.7])
    np.testing.assert_allclose(method.base_values, mean_logits[[1, 0, 1, 1, 0]], atol=1e-5)


def test_without_a_background_the_rows_themselves_are_the_background(linear_model, data):
    model, weights = linear_model
    _, rows = data
    found = explainer("KernelExplainer", model, tabular_card()).explain(rows, one_hot([1] * 5))
    np.testing.assert_allclose(found, weights[:, 1] * (rows - rows.mean(axis=0)), atol=2e-4)


@pytest.fixture(scope="module")
def xgb_models():
    import xgboost

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4))
    binary = xgboost.train({"max_depth": 3, "objective": "binary:logistic", "seed": 0},
                           xgboost.DMatrix(x, label=(x[:, 0] + x[:, 1] > 0).astype(int)), num_boost_round=20)
    multi = xgboost.train({"max_depth": 3, "objective": "multi:softprob", "num_class": 3, "seed": 0},
                          xgboost.DMatrix(x, label=np.digitize(x[:, 2], [-0.5, 0.5])), num_boost_round=20)
    return x, binary, multi


@pytest.mark.parametrize("perturbation", ["tree_path_dependent", "interventional"])
def test_tree_values_add_up_to_the_margin_for_both_binary_classes(perturbation, xgb_models):
    import xgboost

    x, binary, _ = xgb_models
    card = tabular_card(model_file="model.json", output="margin")
    method = explainer("TreeExplainer", binary, card, x[:50], feature_perturbation=perturbation)
    margin = binary.predict(xgboost.DMatrix(x[:6]), output_margin=True)
    positive = method.explain(x[:6], one_hot([1] * 6))
    np.testing.assert_allclose(positive.sum(axis=1) + method.base_values, margin, atol=1e-5)
    negative = method.explain(x[:6], one_hot([0] * 6))
    # Class 0's log-odds are the negated margin: values and base value flip sign.
    np.testing.assert_allclose(negative, -positive, atol=1e-6)
    np.testing.assert_allclose(negative.sum(axis=1) + method.base_values, -margin, atol=1e-5)


def test_tree_values_of_a_multiclass_model_explain_the_requested_class(xgb_models):
    import xgboost

    x, _, multi = xgb_models
    card = tabular_card(model_file="model.json", output="margin", class_names=["low", "mid", "high"])
    method = explainer("TreeExplainer", multi, card)
    classes = [0, 1, 2, 2, 1]
    values = method.explain(x[:5], one_hot(classes, 3))
    margin = multi.predict(xgboost.DMatrix(x[:5]), output_margin=True)
    np.testing.assert_allclose(values.sum(axis=1) + method.base_values, margin[np.arange(5), classes], atol=1e-5)
    # Feature c (index 2) decides the class: it carries the largest share of the attribution.
    assert np.all(np.argmax(np.abs(values), axis=1) == 2)


def image_card(**changes) -> ModelCard:
    return ModelCard(**{"name": "m", "version": "v", "input_height": 16, "input_width": 16,
                        "class_names": ["dark", "bright"], **changes})


@pytest.fixture(scope="module")
def max_pooling_cnn():
    """GlobalMaxPooling2D is a TensorFlow Max reduction, which shap's DeepExplainer cannot handle alone."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def test_deep_explainer_is_additive_through_global_max_pooling(max_pooling_cnn):
    rng = np.random.default_rng(2)
    images = rng.normal(size=(3, 16, 16, 3)).astype(np.float32)
    method = explainer("DeepExplainer", max_pooling_cnn, image_card(), rng.normal(size=(4, 16, 16, 3)))
    values = method.explain(images, one_hot([0, 1, 1]))
    logits = np.asarray(max_pooling_cnn.predict_on_batch(images))[np.arange(3), [0, 1, 1]]
    np.testing.assert_allclose(values.sum(axis=(1, 2, 3)) + method.base_values, logits, atol=1e-4)


@pytest.mark.parametrize("activation", ["relu6", "leaky_relu"])
def test_deep_explainer_is_additive_through_relu6_and_leaky_relu(activation):
    """MobileNet's ReLU6 and LeakyReLU have no DeepLIFT rule in shap; the rescale rule is registered."""
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation=activation, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    rng = np.random.default_rng(5)
    rows = rng.normal(scale=3.0, size=(4, 4))
    method = explainer("DeepExplainer", model, tabular_card(), rng.normal(scale=3.0, size=(8, 4)))
    values = method.explain(rows, one_hot([0, 1, 1, 0]))
    logits = np.asarray(model.predict_on_batch(rows.astype(np.float32)))[np.arange(4), [0, 1, 1, 0]]
    np.testing.assert_allclose(values.sum(axis=1) + method.base_values, logits, atol=1e-4)


def test_default_image_background_is_flat_grey_levels(max_pooling_cnn):
    card = image_card(preprocessing={"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3})
    method = explainer("GradientExplainer", max_pooling_cnn, card)
    background = method.background_inputs(np.zeros((1, 16, 16, 3), np.float32))
    assert background.shape == (5, 16, 16, 3)
    np.testing.assert_allclose(background[:, 0, 0, 0], [-1.0, 64 / 127.5 - 1, 128 / 127.5 - 1, 192 / 127.5 - 1, 1.0],
                               atol=1e-6)


@pytest.mark.parametrize("method,params", [
    ("PartitionExplainer", {"max_evals": 100}),
    ("SuperpixelKernelExplainer", {"nb_segments": 8, "nb_samples": 64}),
    ("SuperpixelKernelExplainer", {"nb_segments": 8, "nb_samples": 64, "fill": "mean"}),
])
def test_sampling_image_explainers_are_additive(method, params, max_pooling_cnn):
    rng = np.random.default_rng(3)
    images = rng.uniform(-1, 1, size=(2, 16, 16, 3)).astype(np.float32)
    card = image_card(preprocessing={"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3})
    found = explainer(method, max_pooling_cnn, card, **params)
    values = found.explain(images, one_hot([1, 0]))
    assert values.shape == images.shape
    logits = np.asarray(max_pooling_cnn.predict_on_batch(images))[np.arange(2), [1, 0]]
    np.testing.assert_allclose(values.sum(axis=(1, 2, 3)) + found.base_values, logits, atol=1e-4)


def test_rows_are_grouped_by_class_and_match_one_call_per_class(linear_model, data):
    model, _ = linear_model
    background, rows = data
    method = explainer("KernelExplainer", model, tabular_card(), background)
    mixed = method.explain(rows, one_hot([0, 1, 0, 1, 0]))
    zeros, ones = method.explain(rows, one_hot([0] * 5)), method.explain(rows, one_hot([1] * 5))
    np.testing.assert_allclose(mixed, np.where(np.array([0, 1, 0, 1, 0])[:, None] == 1, ones, zeros), atol=1e-6)


def test_deep_explainer_names_a_layer_without_a_rule():
    import keras

    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, activation="gelu", name="smooth")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    rng = np.random.default_rng(4)
    with pytest.raises(UnsupportedModelError) as info:
        explainer("DeepExplainer", model, tabular_card(), rng.normal(size=(4, 4))).explain(
            rng.normal(size=(2, 4)), one_hot([1, 1]))
    assert info.value.details["layer"] == "smooth"
    assert "layer 'smooth' (Dense)" in info.value.message
    assert info.value.code == "unsupported_model"
    # The failure leaves TensorFlow as it found it: gradients still work in this (warm) process.
    import tensorflow as tf

    x = tf.constant(rng.normal(size=(2, 4)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(model(x))
    assert np.all(np.isfinite(tape.gradient(total, x).numpy()))


def test_deep_explainer_handles_depthwise_convolutions_and_batch_norm():
    """MobileNet's blocks: DepthwiseConv2D, BatchNormalization and ReLU6, through GlobalAveragePooling."""
    import keras

    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.DepthwiseConv2D(3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(max_value=6.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    rng = np.random.default_rng(6)
    images = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    card = ModelCard(name="m", version="v", input_height=8, input_width=8, class_names=["a", "b"])
    method = explainer("DeepExplainer", model, card, rng.normal(size=(4, 8, 8, 3)))
    values = method.explain(images, one_hot([0, 1]))
    logits = np.asarray(model.predict_on_batch(images))[np.arange(2), [0, 1]]
    np.testing.assert_allclose(values.sum(axis=(1, 2, 3)) + method.base_values, logits, atol=1e-4)
