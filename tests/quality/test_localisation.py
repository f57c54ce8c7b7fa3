"""Localisation quality: how much of each method's heatmap falls on the object, on the demo model.

Energy in mask = sum(|heatmap| inside the object mask) / sum(|heatmap|), averaged over the
same 12 held-out images (seed 2024) that ``python -m devtools.localisation --fast`` measures;
the chance level is the mean mask area share (0.081 on these images). Thresholds sit a bit
below the measured means, which are reproducible run to run (every random draw is seeded).

Rise, SobolAttributionMethod and HsicAttributionMethod run with the reduced sample counts of
``devtools.localisation.FAST_OVERRIDES`` (Rise nb_samples 500 instead of 2000, Sobol nb_design 16
instead of 32, HSIC nb_design 250 instead of 500) to keep this file around a minute on 2
cores; every other method runs with its registry defaults. Full-default figures: Rise 0.092,
Sobol 0.255, HSIC 0.127 (reduced: 0.111, 0.272, 0.115).

The demo model has a fourth class, "none" (background only), so that no shape is the default
answer. Triangles are still localised poorly (Grad-CAM 0.090 on triangles against about 0.77
on circles and squares): the model's triangle evidence is not concentrated on the object, so
the per-class means stay near chance for triangles; the Grad-CAM check below is on circles
and squares.
"""

import numpy as np
import pytest

from devtools import localisation
from explain_core.registry import REGISTRY, SHAP

pytestmark = [pytest.mark.quality, pytest.mark.slow]

COUNT, SEED, METHOD_SEED = 12, localisation.DEFAULT_SEED, 0

#: method -> minimum mean energy in mask for methods that localise well on this model
#: (measured mean in the comment; chance is 0.081 on these images).
LOCALISES = {
    "GradCAM": 0.47,  # measured 0.540 (6.7x chance); 0.765 on circles and squares
    "VarGrad": 0.41,  # measured 0.478
    "SquareGrad": 0.40,  # measured 0.466
    "DeconvNet": 0.32,  # measured 0.372
    "GradCAMPP": 0.24,  # measured 0.279
    "GuidedBackprop": 0.32,  # measured 0.376
    "GradientInput": 0.31,  # measured 0.366
    "Saliency": 0.27,  # measured 0.320
    "IntegratedGradients": 0.29,  # measured 0.342
    "SmoothGrad": 0.24,  # measured 0.280
    "SobolAttributionMethod": 0.23,  # measured 0.272 (nb_design=16)
    "FEM": 0.22,  # measured 0.261
    "Occlusion": 0.15,  # measured 0.185
}
#: A "localises well" threshold must be at least this many times the chance level.
MIN_RATIO = 1.7

#: Methods that measure poorly here; only "above chance" is asserted (measured mean, chance 0.081).
ABOVE_CHANCE_ONLY = {
    # Rise maps carry a large constant offset (min/max ~0.5), which |heatmap| energy counts
    # everywhere. Measured 0.111 (nb_samples=500).
    "Rise": 0.111,
    # Noisy signed cell weights from 300 coalitions for 64 cells. Measured 0.136.
    "KernelShap": 0.136,
    # Noisy signed cell weights from 300 samples for 64 cells. Measured 0.099.
    "Lime": 0.099,
    # Weak on this model. Measured 0.115 (nb_design=250).
    "HsicAttributionMethod": 0.115,
}


@pytest.fixture(scope="module")
def demo():
    model, card = localisation.load_model()
    return localisation.prepare(model, card, COUNT, SEED)


@pytest.fixture(scope="module")
def measured(demo):
    """Measurement of a method, computed once per module."""
    cache = {}

    def get(method: str) -> localisation.Measurement:
        if method not in cache:
            overrides = localisation.FAST_OVERRIDES.get(method)
            cache[method] = localisation.measure(demo, method, overrides, seed=METHOD_SEED)
        return cache[method]

    return get


def test_every_registry_method_has_a_threshold():
    # The shap family's localisation is measured per segment: tests/quality/test_shap_localisation.py.
    xplique_methods = {spec.name for spec in REGISTRY.values() if spec.family != SHAP}
    assert set(LOCALISES) | set(ABOVE_CHANCE_ONLY) == xplique_methods
    assert not set(LOCALISES) & set(ABOVE_CHANCE_ONLY)


def test_images_are_the_measured_ones(demo):
    # The thresholds were chosen on these images: 11 of 12 predicted correctly (one triangle is
    # taken for "none"; its predicted class is the one explained), masks 8.1% of the area.
    assert (demo.predicted == demo.labels).sum() >= 11
    assert localisation.mask_share(demo.masks).mean() == pytest.approx(0.081, abs=0.001)


def test_energy_in_mask_definition():
    masks = np.zeros((3, 4, 4), bool)
    masks[:, :2, :] = True  # half of the image
    heatmaps = np.stack([np.ones((4, 4)), np.where(masks[0], -2.0, 0.0), np.zeros((4, 4))])
    heatmaps[2, 3, 3] = 5.0
    energy = localisation.energy_in_mask(heatmaps, masks)
    assert energy == pytest.approx([0.5, 1.0, 0.0])
    assert localisation.mask_share(masks) == pytest.approx([0.5, 0.5, 0.5])
    assert np.isnan(localisation.energy_in_mask(np.zeros((1, 4, 4)), masks[:1]))[0]


@pytest.mark.parametrize("method", sorted(LOCALISES))
def test_method_localises(measured, method):
    m = measured(method)
    threshold = LOCALISES[method]
    assert threshold >= MIN_RATIO * m.mean_chance, "a 'localises well' threshold must be well above chance"
    assert not np.isnan(m.energy).any(), f"{method} returned an all-zero heatmap"
    assert m.mean >= threshold, (
        f"{method}: mean energy in mask {m.mean:.3f} < {threshold} (chance {m.mean_chance:.3f}); "
        f"per image {np.round(m.energy, 3).tolist()}"
    )


@pytest.mark.parametrize("method", sorted(ABOVE_CHANCE_ONLY))
def test_method_beats_chance(measured, method):
    m = measured(method)
    assert not np.isnan(m.energy).any(), f"{method} returned an all-zero heatmap"
    assert m.mean > m.mean_chance, (
        f"{method}: mean energy in mask {m.mean:.3f} <= chance {m.mean_chance:.3f} "
        f"(measured {ABOVE_CHANCE_ONLY[method]} when the threshold was set)"
    )


def test_gradcam_localises_circles_and_squares(measured, demo):
    # Where the model's evidence is the object (circles, squares), Grad-CAM puts most of its
    # energy on it: measured 0.765 mean, worst image 0.640, chance 0.105 on these 8 images. The
    # demo model is trained at setup, and another CPU (other oneDNN kernels) trains slightly
    # different weights: on an AVX-512 machine the same images measured 0.770 mean, worst 0.428.
    m = measured("GradCAM")
    on_object = demo.labels != 2  # triangles: see the module docstring
    energy = m.energy[on_object]
    assert energy.mean() >= 0.70
    assert energy.min() >= 0.40
    assert energy.mean() >= 5 * m.chance[on_object].mean()


def test_gradcam_beats_the_other_cam_methods(measured):
    # Measured: Grad-CAM 0.540, Grad-CAM++ 0.279, FEM 0.261.
    assert measured("GradCAM").mean > max(measured("GradCAMPP").mean, measured("FEM").mean)


def test_measurement_is_deterministic(demo):
    # Seeded random draws: two runs of a stochastic method give the same heatmaps.
    first = localisation.measure(demo, "SmoothGrad", {"nb_samples": 8}, seed=METHOD_SEED)
    second = localisation.measure(demo, "SmoothGrad", {"nb_samples": 8}, seed=METHOD_SEED)
    np.testing.assert_allclose(first.heatmaps, second.heatmaps, rtol=1e-5, atol=1e-7)
