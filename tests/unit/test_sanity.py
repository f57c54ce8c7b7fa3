"""Sanity checks (explain_core.sanity): request files, verdicts, key layout, and the checks on the demo model."""

import json

import numpy as np
import pytest

from explain_core.errors import InvalidKeyError, InvalidSanityRequestError
from explain_core.keys import InputRef, KeyLayout
from explain_core.sanity import (
    MAX_IMAGES,
    MAX_RANDOM_LOGIT_SSIM,
    MAX_RANDOMISED_SPEARMAN,
    MAX_REQUEST_BYTES,
    judge,
    parse_request,
)
from explain_core.settings import Settings

SETTINGS = Settings(input_bucket="in", results_bucket="out", model_bucket="models")


# ----------------------------------------------------------------------------- request files
def test_an_empty_request_file_asks_for_every_method_on_the_background():
    request = parse_request(b"")
    assert request.methods is None and request.params == {}
    assert (request.images.source, request.images.prefix, request.images.count) == ("background", None, 8)
    assert (request.randomised_layers, request.seed) == (0.25, 42)


def test_a_full_request_file_is_read_as_written():
    request = parse_request(json.dumps({
        "methods": ["Saliency", "GradCAM"], "params": {"Rise": {"nb_samples": 500}},
        "images": {"source": "prefix", "prefix": "uploads/abc/", "count": 3}, "randomised_layers": 1.0, "seed": 7,
    }).encode())
    assert request.methods == ["Saliency", "GradCAM"] and request.params == {"Rise": {"nb_samples": 500}}
    assert (request.images.source, request.images.prefix, request.images.count) == ("prefix", "uploads/abc/", 3)
    assert (request.randomised_layers, request.seed) == (1.0, 7)


@pytest.mark.parametrize("document, problem", [
    ("{not json", "<file>"),
    ("[1, 2]", "<file>"),
    ('{"images": {"count": 0}}', "images.count"),
    (f'{{"images": {{"count": {MAX_IMAGES + 1}}}}}', "images.count"),
    ('{"images": {"source": "prefix"}}', "images"),  # a prefix source needs its prefix
    ('{"images": {"prefix": "uploads/x/"}}', "images"),  # and a prefix needs that source
    ('{"images": {"source": "camera"}}', "images.source"),
    ('{"randomised_layers": 0}', "randomised_layers"),
    ('{"randomised_layers": 1.5}', "randomised_layers"),
    ('{"randomised_layers": NaN}', "randomised_layers"),
    ('{"seed": -1}', "seed"),
    ('{"methods": []}', "methods"),
    ('{"method": ["Saliency"]}', "method"),  # a typo is refused, not ignored
])
def test_a_bad_request_file_is_refused_naming_the_field(document, problem):
    with pytest.raises(InvalidSanityRequestError) as raised:
        parse_request(document.encode())
    assert raised.value.code == "invalid_sanity_request"
    assert any(p.startswith(problem) for p in raised.value.details["problems"]), raised.value.details


def test_a_request_file_over_the_size_limit_is_refused_before_parsing():
    with pytest.raises(InvalidSanityRequestError, match="limit"):
        parse_request(b" " * (MAX_REQUEST_BYTES + 1))


# ----------------------------------------------------------------------------- verdicts
def test_maps_that_change_with_the_weights_and_the_class_pass():
    weights, logit, verdict = judge([0.1, -0.1, 0.3], [0.2, 0.1, 0.0])
    assert weights.passed and logit.passed and verdict.startswith("passes:")
    assert weights.mean == pytest.approx(0.1) and weights.per_image == [0.1, -0.1, 0.3]
    assert logit.mean == pytest.approx(0.1) and weights.threshold == MAX_RANDOMISED_SPEARMAN


def test_maps_that_stay_correlated_after_randomisation_fail_with_the_number():
    weights, logit, verdict = judge([0.8, 0.8], [0.1, 0.1])
    assert not weights.passed and logit.passed
    assert verdict == f"fails: maps stay correlated after randomisation (rho=0.80 >= {MAX_RANDOMISED_SPEARMAN})"


def test_maps_blind_to_the_class_fail_the_random_logit_check():
    weights, logit, verdict = judge([0.0], [0.9])
    assert weights.passed and not logit.passed
    assert verdict == f"fails: maps barely change with the explained class (SSIM=0.90 >= {MAX_RANDOM_LOGIT_SSIM})"


def test_the_thresholds_are_strict_bounds():
    weights, logit, _ = judge([MAX_RANDOMISED_SPEARMAN], [MAX_RANDOM_LOGIT_SSIM])
    assert not weights.passed and not logit.passed


# ----------------------------------------------------------------------------- keys
def ref(name: str) -> InputRef:
    return InputRef("in", f"incoming/gradient/shapes/v1/{name}", "gradient", "shapes", "v1", name)


def test_request_files_are_recognised_and_name_their_report_prefix():
    keys = KeyLayout(SETTINGS)
    assert keys.is_sanity_request(ref("sanity-checks/first.json"))
    assert not keys.is_sanity_request(ref("photos/sanity-checks.png"))
    assert keys.sanity_request_id(ref("sanity-checks/first.json")) == "first"
    assert keys.sanity_prefix("gradient", "shapes", "v1", "first") == "results/gradient/shapes/v1/sanity/first/"
    assert keys.sanity_request_key("gradient", "shapes", "v1", "first") == \
        "incoming/gradient/shapes/v1/sanity-checks/first.json"


@pytest.mark.parametrize("name", ["sanity-checks/a/b.json", "sanity-checks/first.txt", "sanity-checks/.json",
                                  "sanity-checks/-x.json"])
def test_a_misnamed_request_file_is_a_key_error(name):
    with pytest.raises(InvalidKeyError):
        KeyLayout(SETTINGS).sanity_request_id(ref(name))


# ----------------------------------------------------------------------------- on the demo model
@pytest.fixture(scope="module")
def demo_report(demo_model_dir):
    """Three gradient methods checked on 8 demo background images, top (logits) layer randomised."""
    from devtools.sanity import run

    request = parse_request(json.dumps({
        "methods": ["GuidedBackprop", "IntegratedGradients", "GradCAM"],
        "params": {"IntegratedGradients": {"steps": 16}}, "images": {"count": 8},
    }).encode())
    return run("gradient", request)


def test_randomisation_changes_the_model(demo_report):
    randomisation = demo_report.randomisation
    assert randomisation.randomised_layers == ["logits"] and randomisation.weight_layers == 4
    assert randomisation.max_output_change > 1.0  # logits, not rounding noise
    assert randomisation.predictions_changed > 0  # the predicted class differs on some images


def test_guided_backprop_maps_stay_correlated_after_randomisation_unlike_gradient_paths_and_grad_cam(demo_report):
    """Adebayo et al. 2018, measured here: after the logits are randomised, Guided Backprop's maps keep
    their ranking while Integrated Gradients' and Grad-CAM's do not."""
    by_name = {method.name: method for method in demo_report.methods}
    assert all(method.status == "succeeded" for method in demo_report.methods), [m.verdict for m in by_name.values()]
    rho = {name: method.model_randomisation.mean for name, method in by_name.items()}
    assert rho["GuidedBackprop"] >= MAX_RANDOMISED_SPEARMAN, rho
    assert rho["IntegratedGradients"] < MAX_RANDOMISED_SPEARMAN and rho["GradCAM"] < MAX_RANDOMISED_SPEARMAN, rho
    assert rho["GuidedBackprop"] > rho["IntegratedGradients"] + 0.3 and rho["GuidedBackprop"] > rho["GradCAM"] + 0.2
    assert not by_name["GuidedBackprop"].model_randomisation.passed
    assert by_name["GradCAM"].model_randomisation.passed and by_name["GradCAM"].random_logit.passed
    for method in demo_report.methods:
        scores = method.model_randomisation.per_image + method.random_logit.per_image
        assert len(scores) == 16 and all(-1.0 <= s <= 1.0 for s in scores)


def test_methods_that_would_outlast_the_invocation_are_skipped_with_the_reason(demo_report):
    from devtools.sanity import run
    from explain_core.modalities.base import TIME_RESERVE_S
    from explain_core.sanity import chart_png

    class AlmostOver:
        def get_remaining_time_in_millis(self):
            return int((TIME_RESERVE_S + 1) * 1000)  # one second left for the checks

    report = run("gradient", parse_request(b'{"methods": ["Saliency", "GradCAM"], "images": {"count": 2}}'),
                 AlmostOver())
    assert report.status == "failed"
    for method in report.methods:
        assert method.status == "skipped" and method.error.code == "over_time_budget"
        assert method.verdict.startswith(f"skipped: {method.name} needs about") and method.estimated_seconds > 1
        assert method.model_randomisation is None and method.seconds is None
    assert chart_png(report).startswith(b"\x89PNG")


def test_xplique_swapping_the_model_would_explain_grad_cam_on_the_trained_model(demo_model_dir):
    """Why explain_core.sanity builds the randomised explainer anew: with Xplique 2.0.2's swap of
    ``explainer.model``, Grad-CAM keeps watching the trained model's layer and returns the same maps."""
    from devtools.sanity import demo_loaded
    from explain_core.attribution import build_explainer
    from explain_core.registry import REGISTRY
    from explain_core.sanity import randomised_copy

    loaded = demo_loaded("gradient")
    inputs = loaded.background[:4]
    targets = np.eye(4, dtype=np.float32)[loaded.model.predict(inputs, verbose=0).argmax(1)]
    explainer = build_explainer(REGISTRY["GradCAM"], loaded.model, loaded.card, {}, 8)
    trained = np.asarray(explainer.explain(inputs, targets))
    randomised, _, _ = randomised_copy(loaded.model, 1.0, 42)
    explainer.model = randomised  # what xplique.metrics.ModelRandomizationMetric does
    assert np.array_equal(np.asarray(explainer.explain(inputs, targets)), trained)
    rebuilt = build_explainer(REGISTRY["GradCAM"], randomised, loaded.card, {}, 8)
    assert not np.allclose(np.asarray(rebuilt.explain(inputs, targets)), trained)
