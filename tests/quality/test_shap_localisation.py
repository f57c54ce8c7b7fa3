"""Localisation of the super-pixel Kernel SHAP explanation on the demo model.

The object's segments are the SLIC segments with at least a quarter of their pixels on the
object (the shape's mask); on the 12 held-out images (seed 2024) they are 5.2 % of all
segments. Measured with nb_segments=25, compactness 10, blur fill, nb_samples 500:
- the object's segments hold 48.5 % of the positive SHAP mass on average (9x their share);
- the highest-valued segment lies on the object in 8 of the 12 images.
With the mean-colour fill (shap's VGG16 example) the same share drops to about 28 %: a flat
patch reads as a shape to this model. Thresholds sit a little below the measurements (every
random draw is seeded).
"""

import numpy as np
import pytest
from PIL import Image

from devtools import demo_model, localisation
from explain_core.attribution import build_explainer, preprocess
from explain_core.registry import REGISTRY

pytestmark = [pytest.mark.quality, pytest.mark.slow]

PARAMS = {"nb_segments": 25, "compactness": 10.0, "fill": "blur", "nb_samples": 500}
COUNT = 12


@pytest.fixture(scope="module")
def segment_values():
    """Per image: (SHAP value per segment, object-segment flags), for the predicted class."""
    model, card = localisation.load_model()
    background = preprocess(np.load(demo_model.ensure_demo_model() / "background.npy").astype(np.float32), card)
    images, labels, masks = demo_model.sample_images(COUNT, seed=localisation.DEFAULT_SEED)
    inputs = demo_model.to_model_input(images)
    explainer = build_explainer(REGISTRY["SuperpixelKernelExplainer"], model, card, PARAMS, 64, background)
    found = []
    for i in range(COUNT):
        targets = np.zeros((1, len(card.class_names)), np.float32)
        targets[0, labels[i]] = 1.0
        values = explainer.explain(inputs[i:i + 1], targets)[0].sum(axis=-1)
        segments = explainer.segment(np.clip(explainer.to_pixels(inputs[i]), 0, 255))
        mask = np.asarray(Image.fromarray(masks[i].astype(np.uint8) * 255).resize(
            segments.shape[::-1], Image.NEAREST)) > 127
        count = segments.max() + 1
        sizes = np.bincount(segments.ravel(), minlength=count)
        on_object = np.bincount(segments.ravel(), weights=mask.ravel(), minlength=count) / sizes >= 0.25
        found.append((np.bincount(segments.ravel(), weights=values.ravel(), minlength=count), on_object))
    return found


def positive_share(values: np.ndarray, on_object: np.ndarray) -> float:
    positive = np.clip(values, 0, None)
    return float(positive[on_object].sum() / positive.sum())


def test_object_segments_hold_most_of_the_positive_weight(segment_values):
    shares = [positive_share(values, flags) for values, flags in segment_values]
    segment_share = np.mean([flags.mean() for _, flags in segment_values])
    assert np.mean(shares) >= 0.42  # measured 0.485
    assert np.mean(shares) >= 5 * segment_share  # measured 9x


def test_the_top_segment_is_usually_on_the_object(segment_values):
    top = [flags[np.argmax(values)] for values, flags in segment_values]
    assert sum(top) >= 7  # measured 8 of 12


def test_segment_values_add_up_to_the_explained_difference(segment_values):
    # Each segment's value is spread over its pixels, so summing the map per segment recovers
    # Kernel SHAP's per-segment values; they add up to f(x) - f(everything hidden) (checked in
    # the functional tests); here: no segment value is lost or duplicated (finite, one per segment).
    for values, flags in segment_values:
        assert np.all(np.isfinite(values)) and values.shape == flags.shape
