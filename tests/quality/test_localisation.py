"""Localisation quality: how much of each method's heatmap falls on the object, on the demo model,
against three baselines that a map ignoring the model could pass.

Energy in mask = sum(|heatmap| inside the object mask) / sum(|heatmap|), averaged over the
same 12 held-out images (seed 2024) that ``python -m devtools.localisation --fast`` measures.
Chance (the mask's area share) is 0.081, but a centred Gaussian blob that ignores the input
scores 0.202, so each method is compared, in the same test, with (devtools/localisation.py):
(a) that centred blob, (b) the same method on a weight-randomised copy of the model and (c) the
same method explaining a wrong class; it beats a baseline when its mean exceeds the baseline's
by ``localisation.MARGIN`` (0.02). Thresholds sit about 12 % below the measured means, which
are reproducible run to run (every random draw is seeded), and above the blob.

Rise, SobolAttributionMethod and HsicAttributionMethod run with the reduced sample counts of
``devtools.localisation.FAST_OVERRIDES`` (Rise nb_samples 500 instead of 2000, Sobol nb_design 16
instead of 32, HSIC nb_design 250 instead of 500) to keep this file around a minute on 2
cores; every other method runs with its registry defaults.

Most methods do not beat the wrong class: energy counts |attribution|, and the object is the
evidence for the predicted class and against the others, so a gradient map of a wrong class
lies on the object too. For them the test shows that the map finds the object, not that it
explains the class; they are listed as such (``FINDS_THE_OBJECT``). Methods that do not beat
the blob are only checked to be reported so (``BELOW_BLOB``), not held to the area share.

The demo model has a fourth class, "none" (background only), so that no shape is the default
answer. Triangles are still localised poorly (Grad-CAM 0.087 on triangles against 0.67 and
0.87 on circles and squares): the model's triangle evidence is not concentrated on the object;
the Grad-CAM check below is on circles and squares.
"""

import numpy as np
import pytest

from devtools import localisation
from devtools.localisation import BLOB, RANDOMISED, WRONG_CLASS
from explain_core.registry import REGISTRY, SHAP

pytestmark = [pytest.mark.quality, pytest.mark.slow]

COUNT, SEED, METHOD_SEED = 12, localisation.DEFAULT_SEED, 0

# Measured means (python -m devtools.localisation --fast): energy in mask, then the baselines
# (randomised model, wrong class); the centred blob scores 0.202 (sigma 0.08 of the side).

#: Beat all three baselines: method -> minimum mean energy in mask.
LOCALISES = {
    "GradCAM": 0.47,  # measured 0.542; randomised 0.092, wrong class 0.315
    "DeconvNet": 0.34,  # measured 0.391; randomised 0.059, wrong class 0.301
    "GuidedBackprop": 0.33,  # measured 0.372; randomised 0.053, wrong class 0.281
    "GradCAMPP": 0.23,  # measured 0.262; randomised 0.087, wrong class 0.163
}

#: Beat the blob and the randomised model, not the wrong class (see the module docstring):
#: method -> minimum mean energy in mask.
FINDS_THE_OBJECT = {
    "VarGrad": 0.38,  # measured 0.428; randomised 0.056, wrong class 0.461
    "SquareGrad": 0.37,  # measured 0.419; randomised 0.054, wrong class 0.454
    "GradientInput": 0.34,  # measured 0.384; randomised 0.062, wrong class 0.397
    "Saliency": 0.30,  # measured 0.344; randomised 0.063, wrong class 0.359
    "IntegratedGradients": 0.29,  # measured 0.332; randomised 0.062, wrong class 0.344
    "FEM": 0.245,  # measured 0.276; randomised 0.067, wrong class 0.276
    "SmoothGrad": 0.23,  # measured 0.262; randomised 0.057, wrong class 0.295
    "SobolAttributionMethod": 0.225,  # measured 0.250 (nb_design=16); randomised 0.054, wrong class 0.242
    "LRP": 0.26,  # measured 0.298 (gamma rule, zbox first layer); randomised 0.061, wrong class 0.312
    "XRAI": 0.22,  # measured 0.251; randomised 0.058, wrong class 0.247 (its top-regions mask: see below)
}

#: Do not beat the centred blob: reported by the verdict, no threshold. method -> (measured mean,
#: randomised, wrong class) and why.
BELOW_BLOB = {
    # Coarse 16-pixel patches: most of a patch's effect spreads beyond the object's edge.
    "Occlusion": (0.194, 0.085, 0.136),
    # Maps carry a large constant offset (min/max ~0.5), which |heatmap| energy counts everywhere
    # (nb_samples=500).
    "Rise": (0.132, 0.080, 0.097),
    # Noisy signed cell weights from 300 coalitions for 64 cells.
    "KernelShap": (0.133, 0.075, 0.124),
    # Noisy signed cell weights from 300 samples for 64 cells.
    "Lime": (0.096, 0.059, 0.103),
    # Weak on this model (nb_design=250).
    "HsicAttributionMethod": (0.116, 0.051, 0.126),
}


@pytest.fixture(scope="module")
def demo():
    model, card = localisation.load_model()
    return localisation.prepare(model, card, COUNT, SEED)


@pytest.fixture(scope="module")
def blob(demo):
    return localisation.centred_blob(demo.masks)


@pytest.fixture(scope="module")
def random_model(demo):
    return localisation.randomised_model(demo.model, seed=METHOD_SEED)


@pytest.fixture(scope="module")
def wrong_targets(demo):
    return localisation.wrong_class_targets(demo.predicted, len(demo.card.class_names), seed=METHOD_SEED)


@pytest.fixture(scope="module")
def compared(demo, blob, random_model, wrong_targets):
    """A method (predicted class, trained model) against its three baselines, computed once per module."""
    cache = {}

    def get(method: str) -> localisation.Comparison:
        if method not in cache:
            cache[method] = localisation.compare(
                demo, method, localisation.FAST_OVERRIDES.get(method), METHOD_SEED,
                blob=blob, random_model=random_model, wrong_targets=wrong_targets,
            )
        return cache[method]

    return get


@pytest.fixture(scope="module")
def measured(compared):
    """A method's measurement on the trained model, for the predicted class."""
    return lambda method: compared(method).measurement


def describe(result: localisation.Comparison) -> str:
    baselines = ", ".join(f"{name} {value:.3f}" for name, value in result.baselines.items())
    return f"{result.measurement.method}: mean energy in mask {result.measurement.mean:.3f}; {baselines}"


def test_every_registry_method_has_a_threshold_or_a_report():
    # The shap family's localisation is measured per segment: tests/quality/test_shap_localisation.py.
    # Text methods: tests/quality/test_text_quality.py.
    xplique_methods = {spec.name for spec in REGISTRY.values() if spec.family != SHAP and "image" in spec.modalities}
    lists = [set(LOCALISES), set(FINDS_THE_OBJECT), set(BELOW_BLOB)]
    assert set().union(*lists) == xplique_methods
    assert sum(map(len, lists)) == len(xplique_methods), "a method is in two lists"


def test_images_are_the_measured_ones(demo):
    # The thresholds were chosen on these images: all 12 predicted correctly (on another CPU,
    # whose training gives slightly different weights, one triangle was taken for "none"; its
    # predicted class is the one explained), masks 8.1% of the area.
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


def test_verdict_definition():
    baselines = {BLOB: 0.2, RANDOMISED: 0.05, WRONG_CLASS: 0.3}
    assert localisation.failed_baselines(0.5, baselines) == []
    assert localisation.verdict([]) == "beats all three"
    # A lead smaller than the margin is a tie: not beaten.
    assert localisation.failed_baselines(0.31, baselines) == [WRONG_CLASS]
    assert localisation.failed_baselines(0.21, baselines) == [BLOB, WRONG_CLASS]
    assert localisation.verdict([BLOB, WRONG_CLASS]) == "fails blob, wrong class"


def test_centred_blob_is_a_strong_input_blind_baseline(demo, blob):
    # The best of the widths tried, the same map for every image, scoring 2.5x chance on these
    # images: measured 0.202 at sigma 0.08 of the side (0.05: 0.196, 0.125: 0.188, 0.3: 0.116).
    assert blob.sigma in localisation.BLOB_SIGMAS
    for sigma in localisation.BLOB_SIGMAS:
        assert localisation.centred_blob(demo.masks, [sigma]).mean <= blob.mean
    assert blob.mean == pytest.approx(0.202, abs=0.01)
    assert blob.mean > 2 * localisation.mask_share(demo.masks).mean()
    # Centred: a mask on the middle quarter of the image holds most of it, one on a corner little.
    centre, corner = np.zeros((2, 64, 64), bool)
    centre[16:48, 16:48], corner[:16, :16] = True, True
    assert localisation.energy_in_mask(localisation.gaussian_blob(64, 64, blob.sigma)[None], centre[None])[0] > 0.9
    assert localisation.energy_in_mask(localisation.gaussian_blob(64, 64, blob.sigma)[None], corner[None])[0] < 0.01


def test_randomised_model_has_no_trained_weight_left(demo, random_model):
    trained = [w for layer in demo.model.layers for w in layer.get_weights() if w.ndim > 1]  # kernels
    randomised = [w for layer in random_model.layers for w in layer.get_weights() if w.ndim > 1]
    assert len(trained) == len(randomised) == 4
    for before, after in zip(trained, randomised, strict=True):
        assert before.shape == after.shape and not np.allclose(before, after)
        assert np.corrcoef(before.ravel(), after.ravel())[0, 1] < 0.2
    # Same seed, same weights; the trained model is left as it was.
    again = localisation.randomised_model(demo.model, seed=METHOD_SEED)
    for a, b in zip(random_model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (np.argmax(demo.model.predict(demo.inputs, verbose=0), axis=1) == demo.predicted).all()
    # It no longer recognises the shapes.
    assert np.mean(np.argmax(random_model.predict(demo.inputs, verbose=0), axis=1) == demo.labels) <= 0.5


def test_wrong_class_targets(demo, wrong_targets):
    wrong = np.argmax(wrong_targets, axis=1)
    assert wrong_targets.shape == demo.targets.shape and (wrong_targets.sum(axis=1) == 1).all()
    assert (wrong != demo.predicted).all()
    assert len(set(wrong.tolist())) > 1  # not one fixed class
    again = localisation.wrong_class_targets(demo.predicted, len(demo.card.class_names), seed=METHOD_SEED)
    np.testing.assert_array_equal(again, wrong_targets)


def reaches_its_threshold(result, threshold: float, blob) -> None:
    """The method's mean energy in mask reaches ``threshold``, which the input-blind blob does not."""
    m = result.measurement
    assert threshold > blob.mean, "a threshold the input-blind blob could pass tests nothing"
    assert not np.isnan(m.energy).any(), f"{m.method} returned an all-zero heatmap"
    assert m.mean >= threshold, f"{describe(result)}; threshold {threshold}; per image {np.round(m.energy, 3).tolist()}"


@pytest.mark.parametrize("method", sorted(LOCALISES))
def test_method_localises_and_beats_every_baseline(compared, blob, method):
    result = compared(method)
    reaches_its_threshold(result, LOCALISES[method], blob)
    assert result.failed == [], f"{describe(result)}: {result.verdict}"


@pytest.mark.parametrize("method", sorted(FINDS_THE_OBJECT))
def test_method_finds_the_object_but_not_the_class(compared, blob, method):
    result = compared(method)
    reaches_its_threshold(result, FINDS_THE_OBJECT[method], blob)
    # The report: beats the blob and the randomised model; a wrong class scores about as well. FEM
    # ties and Sobol leads by 0.008, so another CPU's demo model may tip them past the wrong class:
    # that is not asserted either way (if it holds everywhere, the method belongs in LOCALISES).
    assert set(result.failed) <= {WRONG_CLASS}, f"{describe(result)}: {result.verdict}"


@pytest.mark.parametrize("method", sorted(BELOW_BLOB))
def test_method_below_the_blob_is_reported_so(compared, method):
    result = compared(method)
    assert not np.isnan(result.measurement.energy).any(), f"{method} returned an all-zero heatmap"
    # Reported as not beating the input-blind blob; its maps still follow the trained model
    # (they beat the same method on the randomised one).
    assert BLOB in result.failed and result.verdict.startswith("fails blob"), describe(result)
    assert RANDOMISED not in result.failed, describe(result)
    # And it measures what the list says (another CPU's demo model moved these by up to 0.021).
    measured_mean, measured_randomised, measured_wrong = BELOW_BLOB[method]
    assert result.measurement.mean == pytest.approx(measured_mean, abs=0.04), describe(result)
    assert result.baselines[RANDOMISED] == pytest.approx(measured_randomised, abs=0.04), describe(result)
    assert result.baselines[WRONG_CLASS] == pytest.approx(measured_wrong, abs=0.04), describe(result)


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
    # Measured: Grad-CAM 0.542, Grad-CAM++ 0.262, FEM 0.276.
    assert measured("GradCAM").mean > max(measured("GradCAMPP").mean, measured("FEM").mean)


def test_measurement_is_deterministic(demo):
    # Seeded random draws: two runs of a stochastic method give the same heatmaps.
    first = localisation.measure(demo, "SmoothGrad", {"nb_samples": 8}, seed=METHOD_SEED)
    second = localisation.measure(demo, "SmoothGrad", {"nb_samples": 8}, seed=METHOD_SEED)
    np.testing.assert_allclose(first.heatmaps, second.heatmaps, rtol=1e-5, atol=1e-7)


def test_xrai_top_regions_mask_lands_on_the_object(demo, random_model, wrong_targets):
    """XRAI's product is its mask of the top regions (10 % of the image): the share of the mask on the object,
    against a centred square of the same area (input-blind) and XRAI on the weight-randomised model. Measured:
    0.373 (per image 0.05-0.76), centred square 0.212, randomised 0.041; a wrong class 0.426 (it finds the
    object, as the gradients it integrates do: not asserted)."""
    from explain_core.attribution import build_explainer, run_method
    from explain_core.session import DEFAULT_BATCH_SIZE

    spec = REGISTRY["XRAI"]
    params = spec.resolve(None, (64, 64))

    def on_object(model, targets) -> float:
        localisation.seed_everything(METHOD_SEED)
        masks = run_method(build_explainer(spec, model, demo.card, params, DEFAULT_BATCH_SIZE), demo.inputs,
                           targets).region_masks
        assert masks.shape == demo.masks.shape and masks.any(axis=(1, 2)).all()
        assert (masks.mean(axis=(1, 2)) >= params["top_percent"] / 100).all()  # at least the area asked for
        return float(((masks & demo.masks).sum(axis=(1, 2)) / masks.sum(axis=(1, 2))).mean())

    side = round(64 * np.sqrt(params["top_percent"] / 100))
    square = np.zeros((64, 64), bool)
    square[(64 - side) // 2:(64 - side) // 2 + side, (64 - side) // 2:(64 - side) // 2 + side] = True
    centred = float(((square & demo.masks).sum(axis=(1, 2)) / square.sum()).mean())
    trained, randomised = on_object(demo.model, demo.targets), on_object(random_model, demo.targets)
    assert trained >= 0.33, (trained, centred, randomised)
    assert trained > centred + localisation.MARGIN and trained > randomised + localisation.MARGIN, (
        trained, centred, randomised)
