"""Unit tests for explain_core.attribution on a tiny Keras model (TensorFlow is imported once per module)."""

import json

import numpy as np
import pytest

from explain_core.attribution import (
    BatchAttributions,
    ExplainerCache,
    build_explainer,
    class_scores,
    grid_segmentation,
    preprocess,
    run_method,
)
from explain_core.model_card import ModelCard
from explain_core.registry import GRADIENT, PERTURBATION, REGISTRY, get_method, methods_of

IMAGENET = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def make_card(**changes) -> ModelCard:
    card = {"name": "tiny", "version": "v1", "input_height": 16, "input_width": 16, "class_names": ["a", "b", "c"]}
    card.update(changes)
    return ModelCard.from_json(json.dumps(card), model="tiny", version="v1")


# --------------------------------------------------------------------------- preprocess


def test_preprocess_matches_hand_computed_values():
    card = make_card(preprocessing=IMAGENET)
    pixels = np.array([[[[0, 128, 255]]]], dtype=np.uint8)  # (1, 1, 1, 3)
    out = preprocess(pixels, card)
    assert out.shape == (1, 1, 1, 3)
    assert out.dtype == np.float32
    # (0/255 - 0.485)/0.229, (128/255 - 0.456)/0.224, (255/255 - 0.406)/0.225
    np.testing.assert_allclose(out[0, 0, 0], [-2.1179039, 0.2051821, 2.64], rtol=1e-5)


def test_preprocess_symmetric_scaling():
    card = make_card(preprocessing={"scale": 1.0, "mean": [127.5] * 3, "std": [127.5] * 3})
    pixels = np.array([[[[0, 0, 0], [255, 255, 255]]]], dtype=np.uint8)
    np.testing.assert_allclose(preprocess(pixels, card), [[[[-1, -1, -1], [1, 1, 1]]]])


def test_preprocess_default_card_divides_by_255():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    out = preprocess(pixels, make_card())
    np.testing.assert_allclose(out, pixels / 255.0, rtol=1e-6)
    assert pixels.dtype == np.uint8  # input untouched


# --------------------------------------------------------------------------- class_scores


def logits_model():
    """A Keras model whose logits are its input's first pixel (channels 0-2): canned outputs per row."""
    import keras

    inputs = keras.Input((16, 16, 3), name="pixels")
    dense = keras.layers.Dense(3, name="first_pixel")
    model = keras.Model(inputs, dense(keras.layers.Flatten(name="flat")(inputs)))
    kernel = np.zeros((16 * 16 * 3, 3), np.float32)
    kernel[np.arange(3), np.arange(3)] = 1.0
    dense.set_weights([kernel, np.zeros(3, np.float32)])
    return model


def rows_with(logits) -> np.ndarray:
    inputs = np.zeros((len(logits), 16, 16, 3), np.float32)
    inputs[:, 0, 0, :] = logits
    return inputs


@pytest.fixture
def forward_calls(monkeypatch):
    """Row shapes of each traced forward call the Keras handler makes."""
    from explain_core.frameworks import keras as keras_framework

    calls, traced = [], keras_framework.traced_forward

    def spy(model):
        forward = traced(model)
        return lambda x: calls.append(tuple(x.shape)) or forward(x)

    monkeypatch.setattr(keras_framework, "traced_forward", spy)
    return calls


def test_class_scores_softmax_of_logits(forward_calls):
    scores = class_scores(logits_model(), rows_with([[0.0, 0.0, np.log(2.0)], [1000.0, 0.0, 0.0]]), make_card(),
                          batch_size=8)
    np.testing.assert_allclose(scores, [[0.25, 0.25, 0.5], [1.0, 0.0, 0.0]], atol=1e-7)
    assert scores.dtype == np.float64
    assert forward_calls == [(2, 16, 16, 3)]


def test_class_scores_splits_into_batches(forward_calls):
    logits = np.log(np.arange(1, 16, dtype=np.float64).reshape(5, 3))
    scores = class_scores(logits_model(), rows_with(logits), make_card(), batch_size=2)
    assert forward_calls == [(2, 16, 16, 3), (2, 16, 16, 3), (1, 16, 16, 3)]
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_class_scores_probabilities_pass_through():
    scores = class_scores(logits_model(), rows_with([[0.2, 0.3, 0.5]]), make_card(output="probabilities"), 4)
    np.testing.assert_allclose(scores, [[0.2, 0.3, 0.5]], atol=1e-7)


def test_keras_forward_traces_once_for_any_number_of_rows():
    """predict_on_batch traced its function again for each new batch shape; the handler's forward does not."""
    from explain_core.frameworks.keras import traced_forward

    model = logits_model()
    for rows in (1, 3, 8, 2):
        class_scores(model, rows_with(np.zeros((rows, 3))), make_card(), batch_size=8)
    assert traced_forward(model).experimental_get_tracing_count() == 1


# --------------------------------------------------------------------------- grid_segmentation


def test_grid_segmentation_on_64x64():
    import tensorflow as tf

    segments = grid_segmentation(8)(tf.zeros((64, 64, 3)))
    assert segments.dtype == tf.int32
    labels = segments.numpy()
    assert labels.shape == (64, 64)
    values, counts = np.unique(labels, return_counts=True)
    assert values.tolist() == list(range(64))
    assert (counts == 64).all()
    rows, cols = np.indices((64, 64))
    np.testing.assert_array_equal(labels, (rows // 8) * 8 + cols // 8)


@pytest.mark.parametrize(("grid", "height", "width"), [(2, 64, 64), (7, 224, 224), (3, 10, 7), (4, 16, 16)])
def test_grid_segmentation_label_count(grid, height, width):
    import tensorflow as tf

    labels = grid_segmentation(grid)(tf.zeros((height, width, 3))).numpy()
    assert labels.shape == (height, width)
    assert np.unique(labels).tolist() == list(range(grid * grid))
    # cells are contiguous: labels never decrease along a row or down a column
    assert (np.diff(labels, axis=1) >= 0).all()
    assert (np.diff(labels, axis=0) >= 0).all()


# --------------------------------------------------------------------------- run_method with a fake explainer


class FakeExplainer:
    def __init__(self, result):
        self.result = result
        self.calls = []

    def explain(self, inputs, targets):
        self.calls.append((inputs, targets))
        return self.result


def test_run_method_reduces_channels_by_mean():
    inputs = np.zeros((2, 16, 16, 3), np.float32)
    raw = np.zeros((2, 16, 16, 3), np.float32)
    raw[..., 0], raw[..., 1], raw[..., 2] = 1.0, 2.0, 6.0
    explainer = FakeExplainer(raw)
    targets = np.eye(3, dtype=np.float32)[[0, 2]]
    result = run_method(explainer, inputs, targets)
    assert isinstance(result, BatchAttributions)
    assert explainer.calls[0][0] is inputs and explainer.calls[0][1] is targets
    assert result.attributions.shape == (2, 16, 16, 3)
    assert result.heatmaps.shape == (2, 16, 16)
    assert result.heatmaps.dtype == np.float32
    np.testing.assert_allclose(result.heatmaps, 3.0)
    assert result.seconds >= 0


def test_run_method_resizes_small_maps_to_the_input():
    import tensorflow as tf

    maps = np.zeros((2, 4, 4), np.float32)
    maps[0, :, :2] = 1.0
    result = run_method(FakeExplainer(tf.constant(maps)), np.zeros((2, 16, 16, 3), np.float32), np.eye(3)[:2])
    assert result.attributions.shape == (2, 4, 4)
    assert result.heatmaps.shape == (2, 16, 16)
    assert result.heatmaps[0, 8, 0] == pytest.approx(1.0)
    assert result.heatmaps[0, 8, 15] == pytest.approx(0.0)
    assert not result.heatmaps[1].any()


def test_run_method_resizes_non_square_inputs():
    result = run_method(FakeExplainer(np.ones((1, 3, 5, 1), np.float32)), np.zeros((1, 12, 20, 3), np.float32),
                        np.eye(3)[:1])
    assert result.heatmaps.shape == (1, 12, 20)
    np.testing.assert_allclose(result.heatmaps, 1.0)


# --------------------------------------------------------------------------- real Xplique on a tiny model


@pytest.fixture(scope="module")
def tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])


@pytest.fixture(scope="module")
def batch():
    inputs = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    targets = np.eye(3, dtype=np.float32)[[0, 2]]
    return inputs, targets


def test_cache_returns_the_same_explainer_for_the_same_request(tiny_model):
    cache, card = ExplainerCache(), make_card()
    spec = get_method("IntegratedGradients", GRADIENT)
    first = cache.get(spec, tiny_model, card, {"steps": 4, "baseline_value": 0.0}, 8)
    assert cache.get(spec, tiny_model, card, {"steps": 4, "baseline_value": 0.0}, 8) is first
    # parameter order does not matter
    assert cache.get(spec, tiny_model, card, {"baseline_value": 0.0, "steps": 4}, 8) is first
    from xplique.attributions import IntegratedGradients

    assert isinstance(first, IntegratedGradients)  # the registry's class may be a bounded subclass


def test_cache_builds_a_new_explainer_for_other_params_batch_or_method(tiny_model):
    cache, card = ExplainerCache(), make_card()
    spec = get_method("IntegratedGradients", GRADIENT)
    first = cache.get(spec, tiny_model, card, {"steps": 4, "baseline_value": 0.0}, 8)
    other_params = cache.get(spec, tiny_model, card, {"steps": 5, "baseline_value": 0.0}, 8)
    other_batch = cache.get(spec, tiny_model, card, {"steps": 4, "baseline_value": 0.0}, 16)
    other_method = cache.get(get_method("Saliency", GRADIENT), tiny_model, card, {}, 8)
    explainers = [first, other_params, other_batch, other_method]
    assert len({id(e) for e in explainers}) == 4
    assert type(other_method).__name__ == "Saliency"
    # the earlier entries are still cached
    assert cache.get(spec, tiny_model, card, {"steps": 5, "baseline_value": 0.0}, 8) is other_params


def test_cache_distinguishes_models(tiny_model):
    import keras

    other = keras.models.clone_model(tiny_model)
    cache, card, spec = ExplainerCache(), make_card(), get_method("Saliency", GRADIENT)
    assert cache.get(spec, tiny_model, card, {}, 8) is not cache.get(spec, other, card, {}, 8)


def test_cache_evicts_the_least_recently_used(tiny_model):
    cache, card = ExplainerCache(capacity=2), make_card()
    saliency, gradient_input = get_method("Saliency", GRADIENT), get_method("GradientInput", GRADIENT)
    ig = get_method("IntegratedGradients", GRADIENT)
    a = cache.get(saliency, tiny_model, card, {}, 8)
    b = cache.get(gradient_input, tiny_model, card, {}, 8)
    assert cache.get(saliency, tiny_model, card, {}, 8) is a  # a is now the most recent
    cache.get(ig, tiny_model, card, {"steps": 4, "baseline_value": 0.0}, 8)  # evicts b
    assert len(cache._entries) == 2
    assert cache.get(saliency, tiny_model, card, {}, 8) is a
    assert cache.get(gradient_input, tiny_model, card, {}, 8) is not b
    cache.clear()
    assert cache.get(saliency, tiny_model, card, {}, 8) is not a


def test_run_saliency_on_the_tiny_model(tiny_model, batch):
    inputs, targets = batch
    spec = get_method("Saliency", GRADIENT)
    explainer = ExplainerCache().get(spec, tiny_model, make_card(), spec.resolve(None, (16, 16)), 8)
    result = run_method(explainer, inputs, targets)
    assert result.heatmaps.shape == (2, 16, 16)
    assert result.heatmaps.dtype == np.float32
    assert result.attributions.shape[:3] == (2, 16, 16)
    assert np.isfinite(result.heatmaps).all()
    assert (result.heatmaps >= 0).all()  # absolute gradients
    assert result.heatmaps.max() > 0
    assert result.seconds > 0


@pytest.mark.parametrize(
    ("name", "family", "params"),
    [
        ("GradCAM", GRADIENT, {}),
        ("IntegratedGradients", GRADIENT, {"steps": 4}),
        ("Occlusion", PERTURBATION, {"patch_size": 4, "patch_stride": 4}),
    ],
)
def test_other_methods_give_input_sized_heatmaps(tiny_model, batch, name, family, params):
    inputs, targets = batch
    spec = get_method(name, family)
    card = make_card(cam_layer="conv")
    explainer = build_explainer(spec, tiny_model, card, spec.resolve(params, (16, 16)), 8)
    result = run_method(explainer, inputs, targets)
    assert result.heatmaps.shape == (2, 16, 16)
    assert np.isfinite(result.heatmaps).all()


@pytest.mark.parametrize("name", [spec.name for spec in methods_of(PERTURBATION) if spec.grid_segments])
def test_grid_methods_are_piecewise_constant_on_the_grid(tiny_model, batch, name):
    inputs, targets = batch
    spec = get_method(name, PERTURBATION)
    params = spec.resolve({"grid_size": 4, "nb_samples": 16}, (16, 16))
    result = run_method(build_explainer(spec, tiny_model, make_card(), params, 16), inputs, targets)
    assert result.heatmaps.shape == (2, 16, 16)
    for heatmap in result.heatmaps:
        cells = heatmap.reshape(4, 4, 4, 4)  # (cell row, pixel row, cell col, pixel col)
        np.testing.assert_allclose(cells, cells[:, :1, :, :1].repeat(4, axis=1).repeat(4, axis=3))


def test_build_explainer_does_not_mutate_params(tiny_model):
    spec = get_method("KernelShap", PERTURBATION)
    params = spec.resolve({"grid_size": 4, "nb_samples": 16}, (16, 16))
    build_explainer(spec, tiny_model, make_card(), params, 8)
    assert params == {"nb_samples": 16, "grid_size": 4}


# --------------------------------------------------------------------------- no retracing, no XLA


def test_xplique_functions_not_compiled_with_xla(tiny_model):
    """Set before any Xplique function runs: Sobol's estimators (jit_compile=True in Xplique) run as plain graphs."""
    from xplique.attributions.global_sensitivity_analysis.sobol_estimators import JansenEstimator, SobolEstimator

    ExplainerCache().get(get_method("Saliency", GRADIENT), tiny_model, make_card(), {}, 8)
    for function in (JansenEstimator.__call__, SobolEstimator.split_abc, SobolEstimator.masks_dim):
        assert function._jit_compile is False


@pytest.mark.parametrize(("name", "params"), [
    ("Saliency", {}), ("IntegratedGradients", {"steps": 4}), ("SmoothGrad", {"nb_samples": 4, "noise": 0.0}),
    ("GuidedBackprop", {}), ("GradCAM", {}), ("GradCAMPP", {}), ("Occlusion", {"patch_size": 8, "patch_stride": 4}),
    # steps > the batch of 8: the path chunked by explain_core.bounded_explainers, through the stable gradient.
    ("IntegratedGradients", {"steps": 12}),
])
def test_stable_explainer_equals_xplique_and_traces_the_model_once(tiny_model, name, params, monkeypatch):
    """The session's explainer (its model through one None-batch graph, memory-bounded where Xplique is not)
    gives the attributions of Xplique's own class for 1, 3 and 2 rows, and its model graph is traced once: a
    warm function seeing a new number of images traces nothing."""
    import tensorflow as tf

    from explain_core import bounded_explainers
    from explain_core.attribution import model_functions

    spec, card = REGISTRY[name], make_card(cam_layer="conv")
    params = spec.resolve(params, (16, 16))
    stable = ExplainerCache().get(spec, tiny_model, card, params, 8)
    with monkeypatch.context() as patched:  # Xplique's own class, not the bounded subclass
        patched.setattr(bounded_explainers, "explainer_class", lambda method: method.explainer_class())
        plain = build_explainer(spec, tiny_model, card, params, 8)
    assert type(plain) is spec.explainer_class()
    rng = np.random.default_rng(1)
    for rows in (1, 3, 2):
        inputs = rng.random((rows, 16, 16, 3)).astype(np.float32)
        targets = np.eye(3, dtype=np.float32)[rng.integers(0, 3, rows)]
        tf.random.set_seed(0)
        ours = run_method(stable, inputs, targets).attributions
        tf.random.set_seed(0)
        theirs = run_method(plain, inputs, targets).attributions
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    gradient, scores = model_functions(stable.model)
    if name.startswith("GradCAM"):
        assert stable._gradient.experimental_get_tracing_count() == 1
    else:
        assert (gradient if spec.family == GRADIENT else scores).experimental_get_tracing_count() == 1


def test_an_explainer_xplique_no_longer_lets_us_stabilise_is_warned_about_once(tiny_model, caplog):
    """If Xplique's explainers stop calling its default operator (internals changed), retracing would come back
    silently: the session warns, once per class, and leaves the explainer working as Xplique built it."""
    import tensorflow as tf
    from xplique.attributions import Saliency

    from explain_core import attribution

    def custom_operator(model, inputs, targets):  # stands for a default operator Xplique renamed
        return tf.reduce_sum(model(inputs) * targets, axis=-1)

    attribution._NOT_STABILISED.discard("Saliency")
    with caplog.at_level("WARNING", logger="explain_core.attribution"):
        for _ in range(2):
            explainer = Saliency(tiny_model, batch_size=8, operator=custom_operator)
            assert attribution.stable_model_functions(explainer) is explainer
            assert explainer.inference_function is custom_operator
    warnings = [r for r in caplog.records if "was not given the model's stable functions" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].getMessage().startswith("Saliency ")
    # Xplique's default operator is still stabilised, without a warning.
    caplog.clear()
    with caplog.at_level("WARNING", logger="explain_core.attribution"):
        stabilised = attribution.stable_model_functions(Saliency(tiny_model, batch_size=8))
    assert stabilised.inference_function is not custom_operator and not caplog.records


SOBOL_IN_A_PROCESS = """
import numpy as np, keras
from explain_core.attribution import ExplainerCache, build_explainer, run_method
from explain_core.registry import REGISTRY
from tests.unit.test_attribution import make_card
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(2, 3, name="conv"),
                          keras.layers.GlobalAveragePooling2D(name="pool"), keras.layers.Dense(3, name="dense")])
spec = REGISTRY["SobolAttributionMethod"]
params = spec.resolve({"grid_size": 2, "nb_design": 8}, (16, 16))
get = ExplainerCache().get if SESSION else build_explainer
explainer = get(spec, model, make_card(), params, 8)
run_method(explainer, np.zeros((1, 16, 16, 3), np.float32), np.eye(3, dtype=np.float32)[:1])
"""


@pytest.mark.parametrize("session", [True, False])
def test_sobol_compiles_with_xla_only_outside_the_session(session):
    """TensorFlow logs 'Compiled cluster using XLA!' for Xplique's Sobol estimator; the session's explainer runs
    it without XLA (a fresh process: the setting is per process, before the estimator's first call)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}
    done = subprocess.run([sys.executable, "-c", SOBOL_IN_A_PROCESS.replace("SESSION", str(session))], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("Compiled cluster using XLA" in done.stderr) is not session
