"""Unit tests for explain_core.request_options.parse_options and RequestOptions."""

import json

import numpy as np
import pytest

from explain_core.errors import InvalidParameterError, InvalidTargetError, UnknownMethodError
from explain_core.model_card import ModelCard
from explain_core.registry import GRADIENT, PERTURBATION, REGISTRY, methods_of
from explain_core.request_options import MAX_TOP_K, RequestOptions, parse_options

CLASSES = ["circle", "square", "triangle", "tabby cat", "7"]


def make_card(**changes) -> ModelCard:
    card = {"name": "shapes", "version": "v1", "input_height": 64, "input_width": 64, "class_names": CLASSES}
    card.update(changes)
    return ModelCard.from_json(json.dumps(card), model="shapes", version="v1")


@pytest.fixture
def card() -> ModelCard:
    return make_card()


def names(options: RequestOptions) -> list[str]:
    return [spec.name for spec, _ in options.methods]


def params_of(options: RequestOptions, method: str) -> dict:
    return next(params for spec, params in options.methods if spec.name == method)


# --------------------------------------------------------------------------- methods


@pytest.mark.parametrize("family", [GRADIENT, PERTURBATION])
@pytest.mark.parametrize("value", ["all", "ALL", " All "])
def test_all_methods_of_the_family(card, family, value):
    options = parse_options({"methods": value}, card, family)
    # "all" means every method of the family that can explain the card's model: an image model here
    assert names(options) == [spec.name for spec in methods_of(family, card)]
    assert all(spec.supports(card) and "image" in spec.modalities for spec, _ in options.methods)
    assert not {"WordOcclusion", "WordLime"} & set(names(options))
    for spec, params in options.methods:
        assert params == spec.defaults


@pytest.mark.parametrize("family", [GRADIENT, PERTURBATION])
def test_no_metadata_and_no_card_default_means_every_method(card, family):
    for metadata in ({}, None, {"methods": ""}, {"methods": "   "}):
        assert names(parse_options(metadata, card, family)) == [spec.name for spec in methods_of(family, card)]


def test_all_for_a_text_model_means_its_word_methods_and_text_methods_are_refused_for_images(card):
    from explain_core.errors import UnsupportedModelError
    from explain_core.registry import SHAP

    text = ModelCard.model_validate({"name": "reviews", "version": "v1", "modality": "text", "class_names": CLASSES,
                                     "text": {"max_length": 16, "vocabulary_file": "vocab.txt"}})
    assert names(parse_options({"methods": "all"}, text, GRADIENT)) == [
        "Saliency", "GradientInput", "IntegratedGradients", "SmoothGrad"]
    assert names(parse_options({}, text, PERTURBATION)) == ["WordOcclusion", "WordLime"]
    assert names(parse_options({"methods": "all"}, text, SHAP)) == ["TextPartitionExplainer"]
    with pytest.raises(UnsupportedModelError, match="shap issues #1490 and #4023"):
        parse_options({"methods": "DeepExplainer"}, text, SHAP)
    with pytest.raises(UnsupportedModelError, match="WordOcclusion cannot explain an image keras model"):
        parse_options({"methods": "WordOcclusion"}, card, PERTURBATION)


def test_explicit_list_is_case_insensitive_ordered_and_deduplicated(card):
    options = parse_options({"methods": " gradcam, SALIENCY,GradCAM ,saliency,, integratedgradients "}, card, GRADIENT)
    assert names(options) == ["GradCAM", "Saliency", "IntegratedGradients"]
    assert all(spec is REGISTRY[spec.name] for spec, _ in options.methods)


def test_metadata_keys_are_case_insensitive(card):
    options = parse_options({"Methods": "Occlusion", "PARAMS": '{"Occlusion": {"patch_size": 8}}'}, card, PERTURBATION)
    assert names(options) == ["Occlusion"]
    assert params_of(options, "Occlusion")["patch_size"] == 8


def test_card_default_methods_are_used_per_family():
    card = make_card(default_methods={"gradient": ["GradCAM", "saliency"], "perturbation": ["Rise"]})
    assert names(parse_options({}, card, GRADIENT)) == ["GradCAM", "Saliency"]
    assert names(parse_options({}, card, PERTURBATION)) == ["Rise"]
    # an explicit request wins over the card
    assert names(parse_options({"methods": "FEM"}, card, GRADIENT)) == ["FEM"]


def test_card_default_for_one_family_only():
    card = make_card(default_methods={"gradient": ["GradCAM"]})
    assert names(parse_options({}, card, PERTURBATION)) == [spec.name for spec in methods_of(PERTURBATION, card)]
    empty = make_card(default_methods={"gradient": []})
    assert names(parse_options({}, empty, GRADIENT)) == [spec.name for spec in methods_of(GRADIENT, empty)]


def test_card_default_methods_are_deduplicated():
    card = make_card(default_methods={"gradient": ["Saliency", "saliency", "GradCAM"]})
    assert names(parse_options({}, card, GRADIENT)) == ["Saliency", "GradCAM"]


def test_card_default_naming_an_unknown_method():
    card = make_card(default_methods={"gradient": ["Occlusion"]})
    with pytest.raises(UnknownMethodError, match="belongs to the perturbation family"):
        parse_options({}, card, GRADIENT)


def test_unknown_method(card):
    with pytest.raises(UnknownMethodError) as info:
        parse_options({"methods": "Saliency,Magic"}, card, GRADIENT)
    assert info.value.message.startswith("unknown gradient method 'Magic'; available: Saliency, GradientInput")
    assert info.value.details == {"method": "Magic", "family": GRADIENT}


@pytest.mark.parametrize(("method", "family", "other"), [("Occlusion", GRADIENT, PERTURBATION),
                                                          ("gradcam", PERTURBATION, GRADIENT)])
def test_method_of_the_other_family(card, method, family, other):
    with pytest.raises(UnknownMethodError, match=f"it belongs to the {other} family"):
        parse_options({"methods": method}, card, family)


def test_only_separators_request_no_method(card):
    with pytest.raises(UnknownMethodError, match="no methods requested") as info:
        parse_options({"methods": " , ,"}, card, GRADIENT)
    assert info.value.details == {"family": GRADIENT}


# --------------------------------------------------------------------------- params


def test_params_are_resolved_against_the_registry(card):
    options = parse_options(
        {"methods": "IntegratedGradients,SmoothGrad,Saliency",
         "params": json.dumps({"integratedgradients": {"steps": 32.0}, "SmoothGrad": {"noise": 1}})},
        card, GRADIENT,
    )
    assert params_of(options, "IntegratedGradients") == {"steps": 32, "baseline_value": 0.0}
    assert type(params_of(options, "IntegratedGradients")["steps"]) is int
    assert params_of(options, "SmoothGrad") == {"nb_samples": 50, "noise": 1.0}
    assert params_of(options, "Saliency") == {}


def test_params_with_all_methods(card):
    options = parse_options({"methods": "all", "params": '{"Occlusion": {"patch_stride": 4}}'}, card, PERTURBATION)
    assert params_of(options, "Occlusion") == {"patch_size": 16, "patch_stride": 4, "occlusion_value": 0.0}


@pytest.mark.parametrize("raw", ["{not json", "{'IntegratedGradients': {}}", "{\"a\": 1,}"])
def test_params_not_json(card, raw):
    with pytest.raises(InvalidParameterError, match="params metadata is not valid JSON"):
        parse_options({"methods": "IntegratedGradients", "params": raw}, card, GRADIENT)


@pytest.mark.parametrize("raw", ["[]", "null", "3", '"steps"', '{"IntegratedGradients": 32}',
                                 '{"IntegratedGradients": [32]}', '{"IntegratedGradients": {"steps": 4}, "x": null}'])
def test_params_not_an_object_of_objects(card, raw):
    with pytest.raises(InvalidParameterError, match=r"params must be a JSON object like"):
        parse_options({"methods": "IntegratedGradients", "params": raw}, card, GRADIENT)


def test_empty_params_are_ignored(card):
    for raw in ("", "{}", '{"IntegratedGradients": {}}'):
        options = parse_options({"methods": "IntegratedGradients", "params": raw}, card, GRADIENT)
        assert params_of(options, "IntegratedGradients") == {"steps": 50, "baseline_value": 0.0}


def test_params_naming_a_method_that_was_not_requested(card):
    with pytest.raises(InvalidParameterError) as info:
        parse_options({"methods": "Saliency", "params": '{"IntegratedGradients": {"steps": 8}, "Rise": {}}'},
                      card, GRADIENT)
    assert info.value.message == "params name methods that were not requested: IntegratedGradients, Rise"
    assert info.value.details == {"methods": ["Saliency"]}


def test_unknown_parameter(card):
    with pytest.raises(InvalidParameterError, match=r"IntegratedGradients has no parameter stepz; it takes"):
        parse_options({"methods": "IntegratedGradients", "params": '{"IntegratedGradients": {"stepz": 8}}'},
                      card, GRADIENT)


@pytest.mark.parametrize(
    ("method", "params", "fragment"),
    [
        ("IntegratedGradients", {"steps": 10**9}, "IntegratedGradients.steps=1000000000: must be <= 512"),
        ("IntegratedGradients", {"steps": 1}, "must be >= 2"),
        ("IntegratedGradients", {"steps": "50"}, "expected an integer"),
        ("IntegratedGradients", {"steps": 2.5}, "expected an integer"),
        ("SmoothGrad", {"noise": -1}, "must be >= 0.0"),
        ("FEM", {"k": True}, "expected a finite number"),
    ],
)
def test_out_of_range_gradient_params(card, method, params, fragment):
    with pytest.raises(InvalidParameterError) as info:
        parse_options({"methods": method, "params": json.dumps({method: params})}, card, GRADIENT)
    assert fragment in info.value.message


def test_nan_float_param_is_refused(card):
    # json.loads accepts NaN; a float parameter refuses it.
    with pytest.raises(InvalidParameterError, match="expected a finite number"):
        parse_options({"methods": "SmoothGrad", "params": '{"SmoothGrad": {"noise": NaN}}'}, card, GRADIENT)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_integer_param_is_a_user_error(card, value):
    with pytest.raises(InvalidParameterError):
        parse_options({"methods": "IntegratedGradients",
                       "params": f'{{"IntegratedGradients": {{"steps": {value}}}}}'}, card, GRADIENT)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"SobolAttributionMethod": {"nb_design": 48}}, "must be a power of two"),
        ({"SobolAttributionMethod": {"grid_size": 16, "nb_design": 1024}}, "passes per image; the limit is 50000"),
        ({"Occlusion": {"patch_size": 65}}, "Occlusion.patch_size=65 is larger than the model input (64x64)"),
        ({"Occlusion": {"patch_size": 1, "patch_stride": 1}}, None),  # 4096 passes at 64x64: allowed
        ({"HsicAttributionMethod": {"perturbation_function": "gaussian"}}, "expected one of"),
    ],
)
def test_perturbation_params_use_the_card_input_size(card, params, fragment):
    metadata = {"methods": ",".join(params), "params": json.dumps(params)}
    if fragment is None:
        assert parse_options(metadata, card, PERTURBATION).methods
    else:
        with pytest.raises(InvalidParameterError) as info:
            parse_options(metadata, card, PERTURBATION)
        assert fragment in info.value.message


def test_cost_limit_depends_on_the_input_size():
    big = make_card(input_height=224, input_width=224)
    with pytest.raises(InvalidParameterError, match="needs 50176 model passes"):
        parse_options({"methods": "Occlusion", "params": '{"Occlusion": {"patch_size": 1, "patch_stride": 1}}'},
                      big, PERTURBATION)


# --------------------------------------------------------------------------- target and top-k


@pytest.mark.parametrize(("raw", "expected"), [("circle", 0), ("tabby cat", 3), ("  triangle ", 2), ("0", 0),
                                               ("4", 4), ("01", 1), ("7", 4)])
def test_target_by_name_or_index(card, raw, expected):
    # "7" is a class *name* (index 4) before it is an index.
    assert parse_options({"methods": "Saliency", "target": raw}, card, GRADIENT).target == expected


@pytest.mark.parametrize("raw", ["dog", "Circle", "5", "-1", "+1", "1.0", "1e0", "0x1", " "])
def test_bad_target(card, raw):
    with pytest.raises(InvalidTargetError) as info:
        parse_options({"methods": "Saliency", "target": raw}, card, GRADIENT)
    assert "is neither a class name nor an index below 5" in info.value.message
    assert info.value.details == {"classes": CLASSES}


def test_bad_target_lists_at_most_50_classes():
    card = make_card(class_names=[f"c{i}" for i in range(200)])
    with pytest.raises(InvalidTargetError) as info:
        parse_options({"methods": "Saliency", "target": "c200"}, card, GRADIENT)
    assert info.value.details["classes"] == [f"c{i}" for i in range(50)]
    assert "index below 200" in info.value.message


def test_superscript_target_is_a_user_error(card):
    with pytest.raises(InvalidTargetError):
        parse_options({"methods": "Saliency", "target": "²"}, card, GRADIENT)


def test_missing_or_empty_target(card):
    assert parse_options({"methods": "Saliency"}, card, GRADIENT).target is None
    assert parse_options({"methods": "Saliency", "target": ""}, card, GRADIENT).target is None


def test_top_k_defaults_to_the_card_policy():
    assert parse_options({"methods": "Saliency"}, make_card(), GRADIENT).top_k == 1
    policy = make_card(target={"mode": "top_k", "k": 3})
    assert parse_options({"methods": "Saliency"}, policy, GRADIENT).top_k == 3
    # k is ignored in "predicted" mode
    assert parse_options({"methods": "Saliency"}, make_card(target={"mode": "predicted", "k": 4}), GRADIENT).top_k == 1


@pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("3", 3), (" 5 ", 5), ("", 1)])
def test_top_k_metadata(card, raw, expected):
    assert parse_options({"methods": "Saliency", "top-k": raw}, card, GRADIENT).top_k == expected


@pytest.mark.parametrize("raw", ["0", "-1", "6"])
def test_top_k_out_of_range_for_five_classes(card, raw):
    with pytest.raises(InvalidTargetError, match="top-k must be between 1 and 5"):
        parse_options({"methods": "Saliency", "top-k": raw}, card, GRADIENT)


def test_top_k_is_capped_at_ten():
    card = make_card(class_names=[f"c{i}" for i in range(100)])
    assert MAX_TOP_K == 10
    assert parse_options({"methods": "Saliency", "top-k": "10"}, card, GRADIENT).top_k == 10
    with pytest.raises(InvalidTargetError, match="top-k must be between 1 and 10"):
        parse_options({"methods": "Saliency", "top-k": "11"}, card, GRADIENT)


@pytest.mark.parametrize("raw", ["three", "2.0", "1e1", "²"])
def test_top_k_not_an_integer(card, raw):
    with pytest.raises(InvalidTargetError, match=f"top-k must be an integer, got {raw!r}"):
        parse_options({"methods": "Saliency", "top-k": raw}, card, GRADIENT)


# --------------------------------------------------------------------------- RequestOptions


def test_classes_to_explain_with_a_target(card):
    options = parse_options({"methods": "Saliency", "target": "square", "top-k": "3"}, card, GRADIENT)
    assert options.classes_to_explain(np.array([0.9, 0.01, 0.03, 0.03, 0.03])) == [1]


def test_classes_to_explain_top_k_orders_by_score(card):
    options = parse_options({"methods": "Saliency", "top-k": "3"}, card, GRADIENT)
    result = options.classes_to_explain(np.array([0.1, 0.4, 0.05, 0.3, 0.15]))
    assert result == [1, 3, 4]
    assert all(type(i) is int for i in result)


def test_classes_to_explain_ties_keep_the_lower_index(card):
    options = parse_options({"methods": "Saliency", "top-k": "2"}, card, GRADIENT)
    assert options.classes_to_explain(np.array([0.1, 0.3, 0.3, 0.3, 0.0])) == [1, 2]


def test_classes_to_explain_predicted(card):
    options = parse_options({"methods": "Saliency"}, card, GRADIENT)
    assert options.classes_to_explain(np.array([0.1, 0.1, 0.1, 0.6, 0.1])) == [3]


def request(**metadata):
    return parse_options({"methods": "IntegratedGradients,Saliency", **metadata}, make_card(), GRADIENT)


def test_fingerprint_is_stable():
    first = request(params='{"IntegratedGradients": {"steps": 32, "baseline_value": 0.5}}', target="circle")
    # same request written differently: key order, number spelling, case, target by index
    second = request(params='{"integratedgradients": {"baseline_value": 0.5, "steps": 32.0}}', target="0")
    assert first.fingerprint == second.fingerprint
    assert first.fingerprint == first.fingerprint
    assert len(first.fingerprint) == 32
    int(first.fingerprint, 16)


@pytest.mark.parametrize(
    "other",
    [
        {"params": '{"IntegratedGradients": {"steps": 33}}'},
        {"params": '{"IntegratedGradients": {"baseline_value": 0.1}}'},
        {"target": "square"},
        {"top-k": "2"},
        {"methods": "IntegratedGradients"},
        {"methods": "IntegratedGradients,GradCAM"},
    ],
)
def test_fingerprint_differs_for_different_requests(other):
    assert request(**other).fingerprint != request().fingerprint


def test_fingerprint_does_not_depend_on_the_card_object():
    a = parse_options({"methods": "Saliency"}, make_card(), GRADIENT)
    b = parse_options({"methods": "Saliency"}, make_card(description="changed"), GRADIENT)
    assert a.fingerprint == b.fingerprint
