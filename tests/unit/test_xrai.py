"""Unit tests for explain_core.xrai (XRAI, Kapishnikov et al. 2019) on small seeded Keras models."""

import json

import numpy as np
import pytest

from explain_core.model_card import ModelCard
from explain_core.xrai import (
    XRAI,
    black_and_white_baselines,
    dilation_radius,
    integrated_gradients,
    min_pixel_diff,
    rank_regions,
    top_area_mask,
)

IMAGENET = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def make_card(size: int, classes: int = 3, **changes) -> ModelCard:
    card = {"name": "tiny", "version": "v1", "input_height": size, "input_width": size,
            "class_names": [f"c{index}" for index in range(classes)]}
    card.update(changes)
    return ModelCard.from_json(json.dumps(card), model="tiny", version="v1")


def one_hot(classes: list[int], count: int) -> np.ndarray:
    return np.eye(count, dtype=np.float32)[classes]


def small_cnn(size: int, classes: int = 3):
    """A seeded random CNN: nonlinear, so its Integrated Gradients depend on the path points."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    hidden = keras.layers.Conv2D(4, 3, activation="tanh", padding="same")(inputs)
    hidden = keras.layers.MaxPooling2D(4)(hidden)
    hidden = keras.layers.Conv2D(8, 3, activation="tanh", padding="same")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    return keras.Model(inputs, keras.layers.Dense(classes)(hidden))


def blobs(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Images (count, size, size, 3) in [0, 1] of smooth colour blobs, which Felzenszwalb splits into regions."""
    import cv2

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = rng.random((6, 6, 3)).astype(np.float32)
        images.append(cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1))
    return np.stack(images).astype(np.float32)


# --------------------------------------------------------------------------- localisation


BOX = (slice(8, 28), slice(36, 56))  # 20x20 = 400 of 64x64 pixels: 9.8 % of the image


def box_model(size: int = 64):
    """Class 0's logit is the sum of the input's values inside BOX, class 1's is 0: fixed weights, no bias."""
    import keras

    inputs = keras.Input((size, size, 3))
    dense = keras.layers.Dense(2, use_bias=False)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    weights = np.zeros((size, size, 3, 2), dtype=np.float32)
    weights[BOX[0], BOX[1], :, 0] = 1.0
    dense.set_weights([weights.reshape(-1, 2)])
    return model


def test_top_regions_find_the_box_the_model_reads():
    size = 64
    rng = np.random.default_rng(1)
    pixels = np.clip(rng.normal(110, 25, (size, size, 3)), 0, 255)  # textured grey background
    pixels[BOX] = np.clip(rng.normal(235, 4, (20, 20, 3)), 0, 255)  # a bright, plain square
    card = make_card(size, classes=2)
    inputs = (pixels / 255.0)[None].astype(np.float32)
    explainer = XRAI(box_model(size), batch_size=16, card=card, steps=8, top_percent=10.0)
    heatmap = explainer.explain(inputs, one_hot([0], 2))[0]
    mask = explainer.region_masks[0]

    box = np.zeros((size, size), dtype=bool)
    box[BOX] = True
    inside = (mask & box).sum() / mask.sum()
    # Baselines of the same area: a centred disc, and a random pixel set (expected share: the box's, 9.8 %).
    rows, cols = np.mgrid[:size, :size]
    distance = np.hypot(rows - size / 2 + 0.5, cols - size / 2 + 0.5)
    disc = distance <= np.sort(distance.reshape(-1))[mask.sum() - 1]
    random = np.zeros(size * size, dtype=bool)
    random[rng.choice(size * size, mask.sum(), replace=False)] = True
    assert inside > 0.7
    assert inside > 3 * (disc & box).sum() / disc.sum()
    assert inside > 3 * (random.reshape(size, size) & box).sum() / mask.sum()
    assert box[np.unravel_index(np.argmax(heatmap), heatmap.shape)]


# --------------------------------------------------------------------------- Integrated Gradients


def smooth_model(size: int = 6):
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((size, size, 3))
    hidden = keras.layers.Dense(5, activation="tanh")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(hidden))


def test_integrated_gradients_complete_for_each_baseline():
    from explain_core.attribution import model_functions

    model = smooth_model()
    gradient, scores = model_functions(model)
    inputs = np.random.default_rng(0).normal(0, 1, (2, 6, 6, 3)).astype(np.float32)
    targets = one_hot([0, 2], 3)
    baselines = black_and_white_baselines(inputs)  # without a card: each image's min and max
    np.testing.assert_allclose(baselines[:, 0, 0, 0, 0], inputs.reshape(2, -1).min(axis=1))
    np.testing.assert_allclose(baselines[:, 1, 0, 0, 0], inputs.reshape(2, -1).max(axis=1))

    attributions = integrated_gradients(gradient, inputs, targets, baselines, steps=48, batch_size=7)
    assert attributions.shape == (2, 2, 6, 6, 3)
    for kind in range(2):
        base = np.broadcast_to(baselines[:, kind], inputs.shape).astype(np.float32)
        expected = np.asarray(scores(inputs, targets)) - np.asarray(scores(base, targets))
        assert np.abs(expected).min() > 0.05  # a meaningful difference to recover
        np.testing.assert_allclose(attributions[:, kind].sum(axis=(1, 2, 3)), expected, rtol=2e-3, atol=1e-4)
    # Chunking the stream of path points changes nothing.
    whole = integrated_gradients(gradient, inputs, targets, baselines, steps=48, batch_size=256)
    np.testing.assert_allclose(attributions, whole, rtol=1e-5, atol=1e-6)


def test_card_baselines_are_black_and_white_pixels_through_the_preprocessing():
    inputs = np.zeros((2, 4, 4, 3), dtype=np.float32)
    baselines = black_and_white_baselines(inputs, make_card(16, preprocessing=IMAGENET))
    assert baselines.shape == (2, 2, 1, 1, 3)
    mean, std = np.array(IMAGENET["mean"]), np.array(IMAGENET["std"])
    np.testing.assert_allclose(baselines[1, 0, 0, 0], -mean / std, rtol=1e-6)
    np.testing.assert_allclose(baselines[1, 1, 0, 0], (1.0 - mean) / std, rtol=1e-6)


# --------------------------------------------------------------------------- heatmaps and masks


@pytest.fixture(scope="module")
def explained():
    """Three 40x40 images through a small CNN with the ImageNet preprocessing."""
    size = 40
    card = make_card(size, preprocessing=IMAGENET)
    inputs = ((blobs(3, size) - np.array(IMAGENET["mean"])) / np.array(IMAGENET["std"])).astype(np.float32)
    targets = one_hot([0, 1, 2], 3)
    model = small_cnn(size)
    explainer = XRAI(model, batch_size=2, card=card, steps=6, top_percent=10.0)
    heatmaps = explainer.explain(inputs, targets)
    return model, card, inputs, targets, explainer, heatmaps


def test_heatmaps_are_constant_per_region_and_ranked(explained):
    _, _, inputs, _, explainer, heatmaps = explained
    assert heatmaps.shape == (3, 40, 40) and heatmaps.dtype == np.float32
    assert np.all(np.isfinite(heatmaps))
    assert explainer.rank_maps.shape == explainer.region_masks.shape == (3, 40, 40)
    for heatmap, ranks in zip(heatmaps, explainer.rank_maps, strict=True):
        assert ranks.min() == 1 and set(np.unique(ranks)) == set(range(1, ranks.max() + 1))
        values = [np.unique(heatmap[ranks == rank]) for rank in range(1, ranks.max() + 1)]
        assert all(len(value) == 1 for value in values)  # a region's new pixels share its gain
        assert ranks.max() > 3
        assert np.all(np.diff([value[0] for value in values]) <= 0)  # rank 1 has the highest value


@pytest.mark.parametrize("top_percent", [10.0, 35.0])
def test_masks_are_the_top_ranked_regions_just_over_the_area(explained, top_percent):
    _, _, _, _, explainer, heatmaps = explained
    target = top_percent / 100 * 40 * 40
    for heatmap, ranks in zip(heatmaps, explainer.rank_maps, strict=True):
        mask = top_area_mask(ranks, top_percent)
        last = ranks[mask].max()
        assert mask.sum() >= target
        assert (ranks < last).sum() < target  # the last region taken crosses the threshold
        assert np.array_equal(mask, ranks <= last)
        assert heatmap[mask].min() >= heatmap[~mask].max()  # the highest values (ties may stay outside)
    assert np.array_equal(explainer.region_masks, np.stack([top_area_mask(r, 10.0) for r in explainer.rank_maps]))


def test_tiny_area_still_takes_one_region():
    ranks = np.array([[1, 1, 2], [2, 3, 3], [3, 3, 4]])
    assert np.array_equal(top_area_mask(ranks, 1e-6), ranks == 1)
    assert top_area_mask(ranks, 100.0).all()


def test_batch_equals_images_one_by_one(explained):
    model, card, inputs, targets, explainer, heatmaps = explained
    for index in range(3):
        single = XRAI(model, batch_size=32, card=card, steps=6, top_percent=10.0)
        np.testing.assert_allclose(single.explain(inputs[index:index + 1], targets[index:index + 1])[0],
                                   heatmaps[index], rtol=1e-4, atol=1e-6)
        assert np.array_equal(single.rank_maps[0], explainer.rank_maps[index])


def test_chunked_path_equals_one_batch(explained):
    model, card, inputs, targets, _, _ = explained
    chunked = XRAI(model, batch_size=4, card=card, steps=20)
    whole = XRAI(model, batch_size=64, card=card, steps=20)
    np.testing.assert_allclose(chunked.explain(inputs[:1], targets[:1]), whole.explain(inputs[:1], targets[:1]),
                               rtol=1e-4, atol=1e-6)
    assert np.array_equal(chunked.region_masks, whole.region_masks)


# --------------------------------------------------------------------------- the greedy search


def reference_xrai(attr, masks, min_pixel_diff):
    """PAIR saliency's ``XRAI._xrai`` (area_perc_th=1.0), transcribed: the direct search rank_regions speeds up."""
    output = -np.inf * np.ones(attr.shape)
    current = np.zeros(attr.shape, dtype=bool)
    remaining = dict(enumerate(masks))
    trace = []
    while True:
        best_gain, best_key, removed = -np.inf, None, []
        for key, mask in remaining.items():
            diff = mask & ~current
            if diff.sum() < min_pixel_diff:
                removed.append(key)
                continue
            gain = attr[diff].mean()
            if gain > best_gain:
                best_gain, best_key = gain, key
        for key in removed:
            del remaining[key]
        if not remaining:
            break
        diff = remaining[best_key] & ~current
        trace.append((diff, best_gain))
        current |= remaining[best_key]
        output[diff] = best_gain
        del remaining[best_key]
    ranks = np.zeros(attr.shape, dtype=int)
    for rank, (diff, _) in enumerate(sorted(trace, key=lambda item: -item[1]), start=1):
        ranks[diff] = rank
    return output, ranks


def test_greedy_search_matches_the_reference_loop():
    rng = np.random.default_rng(5)
    height, width = 30, 24
    attr = rng.normal(0, 1, (height, width))
    masks = []
    for _ in range(60):  # overlapping rectangles that leave some pixels uncovered
        top, left = rng.integers(0, height - 3), rng.integers(0, width - 3)
        mask = np.zeros((height, width), dtype=bool)
        mask[top:top + rng.integers(2, 10), left:left + rng.integers(2, 10)] = True
        masks.append(mask)
    regions = [np.flatnonzero(mask) for mask in masks]
    heatmap, ranks = rank_regions(attr, regions, min_pixel_diff=4)
    expected, expected_ranks = reference_xrai(attr, masks, 4)
    covered = np.isfinite(expected)
    assert 0 < covered.sum() < covered.size
    np.testing.assert_allclose(heatmap[covered], expected[covered], rtol=1e-12)
    assert np.array_equal(ranks[covered], expected_ranks[covered])
    # Leftovers rank last, valued at most the lowest gain.
    assert np.all(ranks[~covered] == ranks.max()) and ranks.max() == expected_ranks.max() + 1
    assert np.all(heatmap[~covered] <= heatmap[covered].min())


def test_constants_scale_down_for_small_images():
    assert (min_pixel_diff(224, 224), dilation_radius(224, 224)) == (50, 5)
    assert (min_pixel_diff(512, 512), dilation_radius(512, 512)) == (50, 5)
    assert (min_pixel_diff(64, 64), dilation_radius(64, 64)) == (4, 1)


# --------------------------------------------------------------------------- validation


def test_invalid_inputs_and_parameters_are_rejected():
    model = smooth_model()
    inputs = np.zeros((1, 6, 6, 3), dtype=np.float32)
    explainer = XRAI(model, steps=2)
    with pytest.raises(ValueError, match="N, H, W, C"):
        explainer.explain(inputs[0], one_hot([0], 3))
    with pytest.raises(ValueError, match="N, H, W, C"):
        explainer.explain(inputs.astype(np.uint8), one_hot([0], 3))
    with pytest.raises(ValueError, match="finite"):
        explainer.explain(np.full_like(inputs, np.nan), one_hot([0], 3))
    with pytest.raises(ValueError, match="one-hot"):
        explainer.explain(inputs, one_hot([0, 1], 3))
    with pytest.raises(ValueError, match="one-hot"):
        explainer.explain(inputs, np.array([[0.5, 0.5, 0.0]], dtype=np.float32))
    for bad in ({"steps": 1}, {"batch_size": 0}, {"top_percent": 0.0}, {"top_percent": 150.0}):
        with pytest.raises(ValueError):
            XRAI(model, **bad)
