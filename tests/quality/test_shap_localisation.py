"""Localisation of the super-pixel Kernel SHAP explanation on the demo model, against baselines.

The object's segments are the SLIC segments with at least a quarter of their pixels on the
object (the shape's mask); on the 12 held-out images (seed 2024) they are 5.2 % of all
segments. Measured with nb_segments=25, compactness 10, blur fill, nb_samples 500, explaining
the true class:
- the object's segments hold 48.5 % of the positive SHAP mass on average (9x their share);
- the highest-valued segment lies on the object in 8 of the 12 images.
With the mean-colour fill (shap's VGG16 example) the same share drops to about 28 %: a flat
patch reads as a shape to this model. Thresholds sit a little below the measurements (every
random draw is seeded).

As for the Xplique methods (tests/quality/test_localisation.py, devtools/localisation.py), both
figures are compared, in the same tests, with (a) the centred blob that ignores the input,
summed per segment (its best width of ``localisation.BLOB_SIGMAS``), (b) the same explainer on
the weight-randomised copy of the model and (c) the explanation of a wrong class.
"""

import numpy as np
import pytest
from PIL import Image

from devtools import demo_model, localisation
from explain_core.attribution import build_explainer, preprocess
from explain_core.registry import REGISTRY

pytestmark = [pytest.mark.quality, pytest.mark.slow]

PARAMS = {"nb_segments": 25, "compactness": 10.0, "fill": "blur", "nb_samples": 500}
COUNT, METHOD_SEED = 12, 0


@pytest.fixture(scope="module")
def setting():
    """(model, card, background, model inputs, true labels, masks) of the 12 held-out images."""
    model, card = localisation.load_model()
    background = preprocess(np.load(demo_model.ensure_demo_model() / "background.npy").astype(np.float32), card)
    images, labels, masks = demo_model.sample_images(COUNT, seed=localisation.DEFAULT_SEED)
    return model, card, background, demo_model.to_model_input(images), labels, masks


def explain_segments(model, card, background, inputs, classes, masks):
    """Per image: (SHAP value per segment, object-segment flags, segment map) for ``classes``."""
    explainer = build_explainer(REGISTRY["SuperpixelKernelExplainer"], model, card, PARAMS, 64, background)
    localisation.seed_everything(METHOD_SEED)
    found = []
    for i in range(len(inputs)):
        targets = np.zeros((1, len(card.class_names)), np.float32)
        targets[0, classes[i]] = 1.0
        values = explainer.explain(inputs[i:i + 1], targets)[0].sum(axis=-1)
        segments = explainer.segment(np.clip(explainer.to_pixels(inputs[i]), 0, 255))
        mask = np.asarray(Image.fromarray(masks[i].astype(np.uint8) * 255).resize(
            segments.shape[::-1], Image.NEAREST)) > 127
        count = segments.max() + 1
        sizes = np.bincount(segments.ravel(), minlength=count)
        on_object = np.bincount(segments.ravel(), weights=mask.ravel(), minlength=count) / sizes >= 0.25
        found.append((np.bincount(segments.ravel(), weights=values.ravel(), minlength=count), on_object, segments))
    return found


@pytest.fixture(scope="module")
def segment_values(setting):
    """The trained model explaining the true class."""
    model, card, background, inputs, labels, masks = setting
    return explain_segments(model, card, background, inputs, labels, masks)


@pytest.fixture(scope="module")
def randomised_values(setting):
    """The same explainer on the weight-randomised copy of the model, true class."""
    model, card, background, inputs, labels, masks = setting
    random_model = localisation.randomised_model(model, seed=METHOD_SEED)
    return explain_segments(random_model, card, background, inputs, labels, masks)


@pytest.fixture(scope="module")
def wrong_class_values(setting):
    """The trained model explaining a seeded wrong class."""
    model, card, background, inputs, labels, masks = setting
    wrong = np.argmax(localisation.wrong_class_targets(labels, len(card.class_names), seed=METHOD_SEED), axis=1)
    return explain_segments(model, card, background, inputs, wrong, masks)


def blob_values(found, sigma):
    """The centred blob (input-blind) as segment values: its mass in each segment."""
    result = []
    for _, on_object, segments in found:
        blob = localisation.gaussian_blob(*segments.shape, sigma)
        mass = np.bincount(segments.ravel(), weights=blob.ravel(), minlength=len(on_object))
        result.append((mass, on_object, segments))
    return result


def positive_share(values: np.ndarray, on_object: np.ndarray) -> float:
    positive = np.clip(values, 0, None)
    return float(positive[on_object].sum() / positive.sum()) if positive.sum() > 0 else float(on_object.mean())


def mean_share(found) -> float:
    return float(np.mean([positive_share(values, flags) for values, flags, _ in found]))


def top_on_object(found) -> int:
    return int(sum(flags[np.argmax(values)] for values, flags, _ in found))


@pytest.fixture(scope="module")
def blob_share(segment_values):
    """The best of the blob widths on the segment share (a strong baseline, not a straw man)."""
    return max((mean_share(blob_values(segment_values, sigma)), sigma) for sigma in localisation.BLOB_SIGMAS)


def test_object_segments_hold_most_of_the_positive_weight(
    segment_values, randomised_values, wrong_class_values, blob_share
):
    share = mean_share(segment_values)
    segment_share = np.mean([flags.mean() for _, flags, _ in segment_values])
    baselines = {
        localisation.BLOB: blob_share[0],
        localisation.RANDOMISED: mean_share(randomised_values),
        localisation.WRONG_CLASS: mean_share(wrong_class_values),
    }
    print(f"share {share:.3f}, segment share {segment_share:.3f}, blob sigma {blob_share[1]}, "
          + ", ".join(f"{name} {value:.3f}" for name, value in baselines.items()))
    assert share >= 0.42  # measured 0.485
    assert share >= 5 * segment_share  # measured 9x
    assert localisation.failed_baselines(share, baselines) == [], baselines


def test_the_top_segment_is_usually_on_the_object(segment_values, randomised_values, wrong_class_values, blob_share):
    top = top_on_object(segment_values)
    baselines = {
        localisation.BLOB: top_on_object(blob_values(segment_values, blob_share[1])),
        localisation.RANDOMISED: top_on_object(randomised_values),
        localisation.WRONG_CLASS: top_on_object(wrong_class_values),
    }
    print(f"top on object {top}, " + ", ".join(f"{name} {value}" for name, value in baselines.items()))
    assert top >= 7  # measured 8 of 12
    assert all(top > value for value in baselines.values()), baselines


def test_segment_values_add_up_to_the_explained_difference(segment_values):
    # Each segment's value is spread over its pixels, so summing the map per segment recovers
    # Kernel SHAP's per-segment values; they add up to f(x) - f(everything hidden) (checked in
    # the functional tests); here: no segment value is lost or duplicated (finite, one per segment).
    for values, flags, _ in segment_values:
        assert np.all(np.isfinite(values)) and values.shape == flags.shape
