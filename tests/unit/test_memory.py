"""Unit tests for explain_core.memory (estimates, batch fitting, the refusal) and explain_core.bounded_explainers
(the same attributions as Xplique's classes, with memory bounded by the batch)."""

import numpy as np
import pytest

from explain_core import memory
from explain_core.errors import OverMemoryBudgetError
from explain_core.memory import MB, MemoryEstimate, fitting_batch_size, method_memory, model_memory
from explain_core.model_card import ModelCard
from explain_core.registry import REGISTRY
from explain_core.settings import Settings

SIZE = 16


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    hidden = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(hidden)
    outputs = keras.layers.Dense(3, name="logits")(pooled)
    return keras.Model(inputs, outputs, name="tiny")


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(0)
    inputs = rng.uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    targets = np.eye(3, dtype=np.float32)[[0, 2]]
    return inputs, targets


def card(size=SIZE) -> ModelCard:
    return ModelCard(name="tiny", version="v1", input_height=size, input_width=size, class_names=["a", "b", "c"])


def settings(limit_mb: int) -> Settings:
    return Settings(input_bucket="i", results_bucket="r", model_bucket="m", memory_limit_mb=limit_mb)


# ---------------------------------------------------------------------------------------- bounded explainers
@pytest.mark.parametrize("steps,batch_size", [(16, 4), (10, 3), (8, 64)])
def test_path_chunked_integrated_gradients_equal_xplique(model, rows, steps, batch_size):
    from xplique.attributions import IntegratedGradients

    from explain_core.bounded_explainers import PathChunkedIntegratedGradients

    inputs, targets = rows
    expected = IntegratedGradients(model, batch_size=batch_size, steps=steps, baseline_value=0.1).explain(
        inputs, targets).numpy()
    chunked = PathChunkedIntegratedGradients(model, batch_size=batch_size, steps=steps, baseline_value=0.1)
    found = chunked.explain(inputs, targets).numpy()
    assert found.shape == expected.shape == (2, SIZE, SIZE, 1)
    assert np.abs(expected).max() > 1e-4  # not trivially equal zeros
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_path_chunked_integrated_gradients_runs_batch_sized_chunks(model, rows):
    from explain_core.bounded_explainers import PathChunkedIntegratedGradients

    explainer = PathChunkedIntegratedGradients(model, batch_size=4, steps=10)
    seen = []
    gradient = explainer.batch_gradient

    def recorded(model, points, targets, batch_size):
        seen.append(len(points))
        return gradient(model, points, targets, batch_size)

    explainer.batch_gradient = recorded
    explainer.explain(*rows)
    assert seen == [4, 4, 2, 4, 4, 2]  # two rows, a 10-point path each, never more than the batch at once


@pytest.mark.parametrize("patch,stride,batch_size", [(4, 2, 5), (3, 3, 64)])
def test_lazy_mask_occlusion_equals_xplique(model, rows, patch, stride, batch_size):
    from xplique.attributions import Occlusion

    from explain_core.bounded_explainers import LazyMaskOcclusion

    inputs, targets = rows
    params = dict(batch_size=batch_size, patch_size=patch, patch_stride=stride, occlusion_value=0.3)
    expected = Occlusion(model, **params).explain(inputs, targets).numpy()
    found = LazyMaskOcclusion(model, **params).explain(inputs, targets).numpy()
    assert found.shape == expected.shape
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-7)


def test_build_explainer_builds_the_bounded_classes(model):
    from xplique.attributions import Rise

    from explain_core.attribution import build_explainer
    from explain_core.bounded_explainers import LazyMaskOcclusion, PathChunkedIntegratedGradients

    def built(name):
        spec = REGISTRY[name]
        return type(build_explainer(spec, model, card(), spec.resolve({}, (SIZE, SIZE)), 8))

    assert built("IntegratedGradients") is PathChunkedIntegratedGradients
    assert built("Occlusion") is LazyMaskOcclusion
    assert built("Rise") is Rise  # bounded by its batch in Xplique already


# ---------------------------------------------------------------------------------------- estimates
def test_model_memory_sums_layer_outputs(model):
    found = model_memory(model, (SIZE, SIZE, 3))
    conv = 4 * SIZE * SIZE * 4
    assert found.input_bytes == 4 * SIZE * SIZE * 3
    assert found.activation_bytes == conv + 4 * 4 + 4 * 3  # conv, pool, logits
    assert found.largest_activation_bytes == conv


def test_backward_factor_covers_a_plain_cnn():
    """The reviewer's six Conv2D(32, relu) at 224 px: 47 MB per row measured (VmHWM slope, batch 4 vs 16) with
    the handler's gradient; the estimate must not be below it."""
    plain = memory.ModelMemory(input_bytes=4 * 224 * 224 * 3, activation_bytes=6 * 4 * 224 * 224 * 32,
                               largest_activation_bytes=4 * 224 * 224 * 32)
    assert plain.backward_row() > 47 * MB


def test_unreadable_layers_count_as_the_largest_read_one(model, caplog):
    import keras

    class Unread(keras.layers.Layer):  # a layer whose output cannot be read, as a layer never called in a graph
        @property
        def output(self):
            raise AttributeError("never called")

    read = model_memory(model, (SIZE, SIZE, 3))
    # A stand-in model holding the tiny model's layers and two unreadable ones.
    holder = type("Holder", (), {"layers": [*model.layers, Unread(name="odd_a"), Unread(name="odd_b")],
                                 "name": "holder"})()
    with caplog.at_level("WARNING", logger="explain_core.memory"):
        found = model_memory(holder, (SIZE, SIZE, 3))
    largest = 4 * SIZE * SIZE * 4  # the conv layer's output
    assert found.activation_bytes == read.activation_bytes + 2 * largest
    assert "2 layer output(s) unreadable (odd_a, odd_b)" in caplog.text
    # Nothing readable at all: each unread layer counts as UNREAD_LAYER_INPUTS inputs, not as nothing.
    nothing = model_memory(type("Holder", (), {"layers": [Unread(name="odd")], "name": "h"})(), (SIZE, SIZE, 3))
    assert nothing.activation_bytes == nothing.largest_activation_bytes == \
        memory.UNREAD_LAYER_INPUTS * 4 * SIZE * SIZE * 3
    empty = model_memory(type("Holder", (), {"layers": [], "name": "h"})(), (SIZE, SIZE, 3))
    assert empty.activation_bytes == memory.UNREAD_LAYER_INPUTS * 4 * SIZE * SIZE * 3


def test_model_memory_cache_keys_on_the_input_shape_and_is_thread_safe(model, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    calls = []

    def counted(model, input_shape):
        calls.append(input_shape)
        return model_memory(model, input_shape)

    monkeypatch.setattr(memory, "model_memory", counted)
    cache = memory.ModelMemoryCache(capacity=2)
    small, large = cache.get(model, (SIZE, SIZE, 3)), cache.get(model, (2 * SIZE, 2 * SIZE, 3))
    assert large.input_bytes == 4 * small.input_bytes  # not the first shape's entry
    assert cache.get(model, (SIZE, SIZE, 3)) is small and len(calls) == 2
    with ThreadPoolExecutor(8) as pool:  # concurrent gets and evictions neither fail nor compute twice per key
        found = list(pool.map(lambda i: cache.get(model, (SIZE + i % 3, SIZE, 3)).input_bytes, range(64)))
    assert found == [4 * (SIZE + i % 3) * SIZE * 3 for i in range(64)]
    assert len(cache._entries) <= 2


def test_estimates_grow_with_the_work_they_materialise():
    mem = memory.ModelMemory(input_bytes=12 * MB, activation_bytes=700 * MB, largest_activation_bytes=48 * MB)
    size = (1024, 1024)
    smooth = method_memory(REGISTRY["SmoothGrad"], REGISTRY["SmoothGrad"].defaults, 1, mem, size)
    rise = method_memory(REGISTRY["Rise"], REGISTRY["Rise"].defaults, 1, mem, size)
    # backward row + perturbed copies
    assert smooth.per_row == pytest.approx(memory.BACKWARD_FACTOR * 700 * MB + 4 * 12 * MB)
    assert rise.per_row < smooth.per_row  # a forward pass keeps fewer activations than a backward pass
    deep = method_memory(REGISTRY["DeepExplainer"], {"nb_background": 32}, 1, mem, size)
    assert not deep.batched and deep.peak(64) == deep.peak(1) > 64 * 2 * (memory.BACKWARD_FACTOR * 700 * MB)
    # Deep SHAP's coefficient carries its safety factor: above the bare references x (2 backward rows + input).
    bare = memory.METHOD_OVERHEAD + 3 * 12 * MB + 64 * (2 * mem.backward_row() + 12 * MB)
    assert deep.fixed == pytest.approx(memory.DEEP_SHAP_SAFETY * (bare - memory.METHOD_OVERHEAD - 3 * 12 * MB)
                                       + memory.METHOD_OVERHEAD + 3 * 12 * MB)
    assert memory.DEEP_SHAP_SAFETY >= 1.1
    few, many = (method_memory(REGISTRY["GradientExplainer"], {"nb_samples": n, "local_smoothing": 0.0}, 1, mem,
                               size) for n in (10, 1000))
    assert many.fixed - few.fixed == pytest.approx(3 * 990 * 12 * MB)
    # A batch never holds more rows than the method evaluates: one-pass Saliency on 2 rows, SmoothGrad's samples.
    saliency = method_memory(REGISTRY["Saliency"], {}, 2, mem, size)
    assert saliency.peak(64) == saliency.peak(2) < saliency.peak(1) + saliency.per_row + 1
    assert smooth.peak(64) == smooth.fixed + 50 * smooth.per_row  # nb_samples=50 noisy copies of one row


# ---------------------------------------------------------------------------------------- fitting and refusing
def test_no_limit_keeps_the_requested_batch(model):
    spec = REGISTRY["SmoothGrad"]
    assert fitting_batch_size(spec, spec.defaults, 2, model, card(), 64, settings(0)) == 64


def test_batch_shrinks_to_a_power_of_two_that_fits(model, monkeypatch):
    spec = REGISTRY["SmoothGrad"]
    estimate = MemoryEstimate(fixed=200 * MB, per_row=100 * MB)
    monkeypatch.setattr(memory, "method_memory", lambda *args: estimate)
    # 3000 MB limit - 1000 MB in use - 300 MB reserve = 1700 MB: (1700 - 200) / 100 = 15 rows -> 8.
    assert fitting_batch_size(spec, spec.defaults, 1, model, card(), 64, settings(3000), in_use_mb=1000) == 8
    assert fitting_batch_size(spec, spec.defaults, 1, model, card(), 4, settings(3000), in_use_mb=1000) == 4
    assert fitting_batch_size(spec, spec.defaults, 1, model, card(), 64, settings(10_000), in_use_mb=1000) == 64


def test_refusal_when_one_row_does_not_fit(model, monkeypatch):
    spec = REGISTRY["SmoothGrad"]
    monkeypatch.setattr(memory, "method_memory", lambda *args: MemoryEstimate(fixed=200 * MB, per_row=1600 * MB))
    with pytest.raises(OverMemoryBudgetError) as caught:
        fitting_batch_size(spec, spec.defaults, 1, model, card(), 64, settings(3000), in_use_mb=1000)
    error = caught.value
    assert error.code == "over_memory_budget" and error.status == 422
    assert error.details == {"method": "SmoothGrad", "estimated_mb": 1800, "available_mb": 1700,
                             "memory_limit_mb": 3000}
    assert "SmoothGrad needs about 1800 MB" in error.message


def test_unbatched_method_is_refused_rather_than_shrunk(model, monkeypatch):
    spec = REGISTRY["DeepExplainer"]
    monkeypatch.setattr(memory, "method_memory",
                        lambda *args: MemoryEstimate(fixed=2000 * MB, per_row=0.0, batched=False))
    with pytest.raises(OverMemoryBudgetError):
        fitting_batch_size(spec, {"nb_background": 32}, 1, model, card(), 64, settings(3000), in_use_mb=1000)
    assert fitting_batch_size(spec, {"nb_background": 32}, 1, model, card(), 64, settings(4000),
                              in_use_mb=1000) == 64


def test_real_estimate_refuses_a_tiny_function(model):
    spec = REGISTRY["SmoothGrad"]
    with pytest.raises(OverMemoryBudgetError):  # METHOD_OVERHEAD alone does not fit in 300 MB with 100 in use
        fitting_batch_size(spec, spec.defaults, 1, model, card(), 64, settings(300), in_use_mb=100)


def test_memory_limit_from_the_environment(monkeypatch):
    base = {"INPUT_BUCKET": "i", "RESULTS_BUCKET": "r", "MODEL_BUCKET": "m"}
    for key, value in base.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", raising=False)
    monkeypatch.delenv("MEMORY_LIMIT_MB", raising=False)
    assert Settings.from_env().memory_limit_mb == 0
    monkeypatch.setenv("MEMORY_LIMIT_MB", "2048")
    assert Settings.from_env().memory_limit_mb == 2048
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3008")  # Lambda's own setting wins
    assert Settings.from_env().memory_limit_mb == 3008


def test_process_memory_reads_proc_status():
    now, peak = memory.process_memory_mb("VmRSS"), memory.process_memory_mb("VmHWM")
    assert 0 < now <= peak
