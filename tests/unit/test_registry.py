"""Unit tests for explain_core.registry: parameter validation, cost limits and every entry."""

import inspect
import json
import math
import re

import pytest

from explain_core import registry
from explain_core.errors import InvalidParameterError, UnknownMethodError
from explain_core.registry import (
    FAMILIES,
    GRADIENT,
    MAX_PASSES_PER_IMAGE,
    METHODS,
    PERTURBATION,
    REGISTRY,
    SHAP,
    MethodSpec,
    Param,
    get_method,
    methods_of,
)

#: A family's methods as the registry declares them, in declaration order (the order of GET /methods).
DECLARED = {family: [spec.name for spec in METHODS if spec.family == family] for family in FAMILIES}
ALL_PARAMS = [(spec, param) for spec in METHODS for param in spec.params]
PAPER = re.compile(r"https://(arxiv\.org/abs/\d{4}\.\d{4,5}|doi\.org/10\.\d{4,9}/\S+)")


def names(specs) -> list[str]:
    return [spec.name for spec in specs]


def _text_only(spec) -> bool:
    """Methods made for text models alone (their explainers live in explain_core.text_methods)."""
    return spec.modalities == ("text",)


def _id(value):
    if isinstance(value, MethodSpec):
        return value.name
    if isinstance(value, Param):
        return value.name
    return None


# --------------------------------------------------------------------------- Param.validate

STEPS = Param("steps", int, 50, 2, 512)
NOISE = Param("noise", float, 0.2, 0.0, 2.0)
FLAG = Param("flag", bool, False)
CHOICE = Param("perturbation_function", str, "inpainting", choices=("inpainting", "blurring", "amplitude"))
DESIGN = Param("nb_design", int, 32, 8, 1024, power_of_two=True)


@pytest.mark.parametrize(("value", "expected"), [(2, 2), (50, 50), (512, 512), (32.0, 32), (2.0, 2)])
def test_int_accepts_integers_and_integral_floats(value, expected):
    result = STEPS.validate("IntegratedGradients", value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize("value", [32.5, True, False, "32", None, [32], 1e-9 + 3])
def test_int_refuses_fractions_bools_strings(value):
    with pytest.raises(InvalidParameterError, match=r"expected an integer") as info:
        STEPS.validate("IntegratedGradients", value)
    assert info.value.details["method"] == "IntegratedGradients"
    assert info.value.details["parameter"] == "steps"
    assert info.value.details["bounds"] == STEPS.describe()


@pytest.mark.parametrize(("value", "reason"), [(1, "must be >= 2"), (0, "must be >= 2"), (-5, "must be >= 2"),
                                               (513, "must be <= 512"), (10**9, "must be <= 512")])
def test_int_bounds_are_inclusive_and_enforced(value, reason):
    with pytest.raises(InvalidParameterError) as info:
        STEPS.validate("IntegratedGradients", value)
    assert info.value.message == f"IntegratedGradients.steps={value!r}: {reason}"


@pytest.mark.parametrize(
    "value", [math.inf, -math.inf, math.nan, 1e400, 10**400], ids=["inf", "-inf", "nan", "1e400", "10**400"]
)
def test_int_refuses_non_finite_and_huge_numbers_with_a_typed_error(value):
    with pytest.raises(InvalidParameterError):
        STEPS.validate("IntegratedGradients", value)


@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), (1, 1.0), (0.2, 0.2), (2.0, 2.0)])
def test_float_accepts_numbers_and_returns_float(value, expected):
    result = NOISE.validate("SmoothGrad", value)
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, True, "0.2", None])
def test_float_refuses_non_finite_bools_strings(value):
    with pytest.raises(InvalidParameterError, match="expected a finite number"):
        NOISE.validate("SmoothGrad", value)


def test_float_refuses_a_huge_integer_with_a_typed_error():
    with pytest.raises(InvalidParameterError):
        NOISE.validate("SmoothGrad", 10**400)


@pytest.mark.parametrize(("value", "reason"), [(-0.1, "must be >= 0.0"), (2.5, "must be <= 2.0")])
def test_float_bounds(value, reason):
    with pytest.raises(InvalidParameterError, match=re.escape(reason)):
        NOISE.validate("SmoothGrad", value)


@pytest.mark.parametrize("value", [True, False])
def test_bool_accepts_bools(value):
    assert FLAG.validate("X", value) is value


@pytest.mark.parametrize("value", [1, 0, "true", None, 1.0])
def test_bool_refuses_anything_else(value):
    with pytest.raises(InvalidParameterError, match="expected true or false"):
        FLAG.validate("X", value)


@pytest.mark.parametrize("value", ["inpainting", "blurring", "amplitude"])
def test_choices_accept_listed_values(value):
    assert CHOICE.validate("SobolAttributionMethod", value) == value


def test_choices_refuse_other_strings_and_list_the_choices():
    with pytest.raises(InvalidParameterError) as info:
        CHOICE.validate("SobolAttributionMethod", "gaussian")
    assert "expected one of ['inpainting', 'blurring', 'amplitude']" in info.value.message
    assert info.value.details["bounds"]["choices"] == ["inpainting", "blurring", "amplitude"]


@pytest.mark.parametrize("value", [3, None, b"inpainting"])
def test_str_refuses_non_strings(value):
    with pytest.raises(InvalidParameterError, match="expected a string"):
        CHOICE.validate("SobolAttributionMethod", value)


@pytest.mark.parametrize("value", [8, 16, 32, 64, 512, 1024, 64.0])
def test_power_of_two_accepts_powers(value):
    assert DESIGN.validate("SobolAttributionMethod", value) == int(value)


@pytest.mark.parametrize("value", [9, 24, 48, 100, 1000, 1023])
def test_power_of_two_refuses_others(value):
    with pytest.raises(InvalidParameterError, match="must be a power of two"):
        DESIGN.validate("SobolAttributionMethod", value)


def test_describe():
    assert STEPS.describe() == {"type": "int", "default": 50, "minimum": 2, "maximum": 512}
    assert DESIGN.describe() == {"type": "int", "default": 32, "minimum": 8, "maximum": 1024, "power_of_two": True}
    assert CHOICE.describe() == {
        "type": "str", "default": "inpainting", "choices": ["inpainting", "blurring", "amplitude"],
    }
    assert Param("k", float, 2.0, doc="hello").describe() == {"type": "float", "default": 2.0, "doc": "hello"}


# --------------------------------------------------------------------------- MethodSpec.resolve


def test_resolve_without_overrides_gives_defaults():
    spec = REGISTRY["IntegratedGradients"]
    assert spec.resolve(None, (64, 64)) == {"steps": 50, "baseline_value": 0.0}
    assert spec.resolve({}, (64, 64)) == {"steps": 50, "baseline_value": 0.0}


def test_resolve_merges_and_coerces_overrides():
    spec = REGISTRY["IntegratedGradients"]
    params = spec.resolve({"steps": 32.0}, (64, 64))
    assert params == {"steps": 32, "baseline_value": 0.0}
    assert type(params["steps"]) is int
    params = spec.resolve({"baseline_value": -1}, (64, 64))
    assert params == {"steps": 50, "baseline_value": -1.0}
    assert type(params["baseline_value"]) is float


def test_resolve_does_not_mutate_the_overrides():
    overrides = {"steps": 32.0}
    REGISTRY["IntegratedGradients"].resolve(overrides, (64, 64))
    assert overrides == {"steps": 32.0}


def test_resolve_refuses_unknown_parameters_and_names_the_valid_ones():
    with pytest.raises(InvalidParameterError) as info:
        REGISTRY["IntegratedGradients"].resolve({"stepz": 3, "alpha": 1}, (64, 64))
    assert info.value.message == (
        "IntegratedGradients has no parameter alpha, stepz; it takes ['baseline_value', 'steps']"
    )
    assert info.value.details == {"method": "IntegratedGradients", "parameters": ["alpha", "stepz"]}


def test_resolve_of_a_method_without_parameters():
    spec = REGISTRY["Saliency"]
    assert spec.resolve(None, (224, 224)) == {}
    with pytest.raises(InvalidParameterError, match="Saliency has no parameter steps; it takes none"):
        spec.resolve({"steps": 10}, (224, 224))


def test_resolve_validates_values():
    with pytest.raises(InvalidParameterError, match=r"IntegratedGradients\.steps=1000000000: must be <= 512"):
        REGISTRY["IntegratedGradients"].resolve({"steps": 10**9}, (64, 64))


def test_resolve_enforces_the_cost_limit():
    spec = REGISTRY["SobolAttributionMethod"]
    # 128 designs x (16*16 + 2) = 33024 passes: allowed; 256 x 258 = 66048: refused.
    assert spec.resolve({"grid_size": 16, "nb_design": 128}, (64, 64))["nb_design"] == 128
    with pytest.raises(InvalidParameterError) as info:
        spec.resolve({"grid_size": 16, "nb_design": 256}, (64, 64))
    assert "needs 66048 model passes per image; the limit is 50000" in info.value.message
    assert info.value.details == {"method": "SobolAttributionMethod", "passes": 66048}


def test_cost_limit_boundary_is_inclusive():
    spec = REGISTRY["Occlusion"]
    # patch 1, stride 1: one pass per pixel.
    tight = {"patch_size": 1, "patch_stride": 1}
    assert spec.passes({**spec.defaults, **tight}, (200, 250)) == MAX_PASSES_PER_IMAGE
    assert spec.resolve(tight, (200, 250))["patch_size"] == 1
    with pytest.raises(InvalidParameterError, match="needs 50250 model passes"):
        spec.resolve(tight, (201, 250))
    with pytest.raises(InvalidParameterError, match="needs 50176 model passes"):
        spec.resolve(tight, (224, 224))


@pytest.mark.parametrize(("size", "expected"), [((64, 64), 49), ((224, 224), 729), ((16, 16), 1), ((32, 64), 21)])
def test_occlusion_passes(size, expected):
    spec = REGISTRY["Occlusion"]
    assert spec.passes(spec.defaults, size) == expected


def test_occlusion_patch_larger_than_input_is_refused():
    spec = REGISTRY["Occlusion"]
    assert spec.resolve({"patch_size": 64}, (64, 64))["patch_size"] == 64
    with pytest.raises(InvalidParameterError) as info:
        spec.resolve({"patch_size": 65}, (64, 64))
    assert info.value.message == "Occlusion.patch_size=65 is larger than the model input (64x64)"
    assert info.value.details == {"method": "Occlusion", "parameter": "patch_size"}
    # the shorter side counts
    with pytest.raises(InvalidParameterError, match=r"larger than the model input \(32x64\)"):
        spec.resolve({"patch_size": 48}, (32, 64))
    # the default patch (16) does not fit an 8x8 model
    with pytest.raises(InvalidParameterError, match="patch_size=16"):
        spec.resolve(None, (8, 8))


@pytest.mark.parametrize(("name", "params", "expected"), [
    ("IntegratedGradients", {"steps": 7}, 7),
    ("SmoothGrad", {"nb_samples": 9}, 9),
    ("Rise", {"nb_samples": 100}, 100),
    ("Lime", {"nb_samples": 20}, 20),
    ("KernelShap", {"nb_samples": 30}, 30),
    ("HsicAttributionMethod", {"nb_design": 64}, 64),
    ("SobolAttributionMethod", {"nb_design": 16, "grid_size": 4}, 16 * 18),
    ("Saliency", {}, 1),
    ("GradCAM", {}, 1),
])
def test_passes_formulae(name, params, expected):
    spec = REGISTRY[name]
    assert spec.passes({**spec.defaults, **params}, (64, 64)) == expected


def test_method_spec_describe_is_json_and_lists_parameters():
    described = REGISTRY["Occlusion"].describe()
    assert json.loads(json.dumps(described)) == described
    assert described["name"] == "Occlusion"
    assert described["family"] == PERTURBATION
    assert set(described["parameters"]) == {"patch_size", "patch_stride", "occlusion_value"}
    assert described["parameters"]["patch_size"]["default"] == 16


# --------------------------------------------------------------------------- lookup


@pytest.mark.parametrize("name", ["Saliency", "saliency", "SALIENCY", "sAlIeNcY"])
def test_get_method_is_case_insensitive(name):
    assert get_method(name, GRADIENT) is REGISTRY["Saliency"]


def test_get_method_for_every_entry():
    for spec in METHODS:
        assert get_method(spec.name, spec.family) is spec
        assert get_method(spec.name.upper(), spec.family) is spec


def test_get_method_of_the_other_family_names_the_family():
    with pytest.raises(UnknownMethodError) as info:
        get_method("occlusion", GRADIENT)
    message = info.value.message
    assert "unknown gradient method 'occlusion'" in message
    assert "(it belongs to the perturbation family)" in message
    assert "available: " + ", ".join(DECLARED[GRADIENT]) in message
    assert info.value.details == {"method": "occlusion", "family": GRADIENT}

    available = re.escape(", ".join(DECLARED[PERTURBATION]))
    with pytest.raises(UnknownMethodError, match=rf"\(it belongs to the gradient family\).*available: {available}"):
        get_method("GradCAM", PERTURBATION)


@pytest.mark.parametrize("name", ["Nope", "", "Saliency ", "Grad-CAM"])
def test_get_method_unknown_name(name):
    with pytest.raises(UnknownMethodError) as info:
        get_method(name, GRADIENT)
    assert f"unknown gradient method {name!r}; available: {', '.join(DECLARED[GRADIENT])}" in info.value.message
    assert "belongs to" not in info.value.message


def test_methods_of():
    for family in FAMILIES:
        assert names(methods_of(family)) == DECLARED[family] and DECLARED[family], family
    assert methods_of("tree") == []


def test_methods_of_a_card_are_those_that_can_explain_it():
    from explain_core.model_card import ModelCard

    image = ModelCard(name="m", version="v", input_height=32, input_width=32, class_names=["a", "b"])
    tabular_keras = ModelCard(name="m", version="v", modality="tabular", feature_names=["x"], class_names=["a", "b"])
    xgboost = tabular_keras.model_copy(update={"model_file": "model.json", "output": "margin"})
    for card, modality, framework in ((image, "image", "keras"), (tabular_keras, "tabular", "keras"),
                                      (xgboost, "tabular", "xgboost")):
        assert (card.modality, card.framework) == (modality, framework)
        expected = [spec.name for spec in METHODS
                    if spec.family == SHAP and modality in spec.modalities and framework in spec.frameworks]
        assert names(methods_of(SHAP, card)) == expected and expected, (modality, framework)
    assert names(methods_of(SHAP, xgboost)) == ["TreeExplainer"]  # the one method for tree models
    assert methods_of(GRADIENT, tabular_keras) == [] and methods_of(GRADIENT, image) == methods_of(GRADIENT)


# --------------------------------------------------------------------------- every entry


def test_registry_is_consistent():
    assert FAMILIES == (GRADIENT, PERTURBATION, SHAP)
    assert list(REGISTRY) == [s.name for s in METHODS]
    assert len({s.name.lower() for s in METHODS}) == len(METHODS), "names must be unique case-insensitively"
    assert sorted(name for family in FAMILIES for name in names(methods_of(family))) == sorted(REGISTRY)


@pytest.mark.parametrize("spec", METHODS, ids=_id)
def test_entry_metadata(spec):
    assert spec.family in FAMILIES
    if _text_only(spec):  # word-level methods of any family wrap their library in explain_core.text_methods
        assert spec.explainer == f"explain_core.text_methods.{spec.name}"
    elif spec.family == SHAP:
        assert spec.explainer.startswith("explain_core.shap_methods.")
    elif spec.name in ("LRP", "XRAI"):  # methods Xplique does not have: one module each in explain_core
        assert spec.explainer == f"explain_core.{spec.name.lower()}.{spec.name}"
    else:
        assert spec.explainer == f"xplique.attributions.{spec.name}"
    assert PAPER.search(spec.reference), f"{spec.name} must cite a paper URL or DOI: {spec.reference!r}"
    assert re.search(r"\((19|20)\d\d\)", spec.reference), "reference should give the year"
    assert spec.description
    assert len(spec.param_names) == len(spec.params), "parameter names must be unique"
    assert spec.param_names == frozenset(spec.defaults)
    if spec.grid_segments:
        assert "grid_size" in spec.param_names
    if spec.uses_cam_layer:
        assert spec.family == GRADIENT


@pytest.mark.parametrize(("spec", "param"), ALL_PARAMS, ids=[f"{s.name}.{p.name}" for s, p in ALL_PARAMS])
def test_defaults_pass_their_own_bounds(spec, param):
    assert param.kind in (int, float, bool, str)
    assert isinstance(param.default, param.kind)
    assert param.validate(spec.name, param.default) == param.default
    if param.minimum is not None and param.maximum is not None:
        assert param.minimum <= param.maximum
    # the bounds themselves are valid values (when they are)
    for bound in (param.minimum, param.maximum):
        if bound is not None and not param.power_of_two:
            assert param.validate(spec.name, param.kind(bound)) == bound


@pytest.mark.parametrize("size", [(64, 64), (224, 224)], ids=["64x64", "224x224"])
@pytest.mark.parametrize("spec", METHODS, ids=_id)
def test_defaults_resolve_and_cost_at_least_one_pass(spec, size):
    params = spec.resolve(None, size)
    assert params == spec.defaults
    passes = spec.passes(params, size)
    assert isinstance(passes, int)
    assert 1 <= passes <= MAX_PASSES_PER_IMAGE


@pytest.fixture(scope="module")
def explainer_classes():
    """Importing xplique (and TensorFlow) is slow: do it once for the module."""
    return {spec.name: spec.explainer_class() for spec in METHODS}


def test_explainer_classes_are_real_xplique_explainers(explainer_classes):
    from xplique.attributions.base import BlackBoxExplainer

    checked = 0
    for spec in METHODS:
        if spec.family == SHAP or _text_only(spec) or spec.name in ("LRP", "XRAI"):  # ours: no Xplique class
            continue
        cls = explainer_classes[spec.name]
        assert inspect.isclass(cls)
        assert cls.__name__ == spec.name
        assert cls.__module__.startswith("xplique.attributions")
        assert issubclass(cls, BlackBoxExplainer)
        checked += 1
    assert checked >= 15


def test_shap_explainer_classes_share_the_base_and_cite_their_paper(explainer_classes):
    from explain_core.shap_methods import ShapMethod

    image_and_tabular = [spec for spec in methods_of(SHAP) if not _text_only(spec)]
    assert len(image_and_tabular) >= 6
    for spec in image_and_tabular:
        cls = explainer_classes[spec.name]
        assert issubclass(cls, ShapMethod) and cls is not ShapMethod
        assert "explain_class" in vars(cls)
        assert PAPER.search(cls.__doc__), f"{cls.__name__} must cite its paper"


def test_text_explainer_classes_share_the_base_and_cite_their_paper(explainer_classes):
    """Text methods (any family) explain one document at a time: TextExplainer subclasses, not ShapMethod
    or Xplique explainers, each citing its paper; the registry's parameters are constructor arguments."""
    from xplique.attributions.base import BlackBoxExplainer

    from explain_core.shap_methods import ShapMethod
    from explain_core.text_methods import TextExplainer

    text_only = [spec for spec in METHODS if _text_only(spec)]
    assert {spec.family for spec in text_only} == {PERTURBATION, SHAP}
    for spec in text_only:
        cls = explainer_classes[spec.name]
        assert inspect.isclass(cls) and cls.__name__ == spec.name
        assert cls.__module__ == "explain_core.text_methods"
        assert issubclass(cls, TextExplainer) and cls is not TextExplainer
        assert not issubclass(cls, (ShapMethod, BlackBoxExplainer))
        assert "explain_document" in vars(cls)
        assert PAPER.search(cls.__doc__ or ""), f"{cls.__name__} must cite its paper"
        accepted = set(inspect.signature(cls.__init__).parameters)
        assert {"text_model", "batch_size", "classes"} | set(spec.param_names) <= accepted, spec.name


def test_explainer_constructors_accept_the_registry_parameters(explainer_classes):
    for spec in METHODS:
        if spec.family == SHAP:  # ShapMethod takes the parameters as keyword arguments (**params)
            continue
        accepted = set(inspect.signature(explainer_classes[spec.name].__init__).parameters)
        passed = set(spec.param_names) | {"batch_size"}
        if spec.grid_segments:
            passed = (passed - {"grid_size"}) | {"map_to_interpret_space"}
        if spec.uses_cam_layer:
            passed.add("conv_layer")
        assert passed <= accepted, f"{spec.name} does not accept {sorted(passed - accepted)}"


def test_explainer_class_of_a_bad_path_fails_loudly():
    spec = MethodSpec("Nope", GRADIENT, "explain_core.registry.NoSuchClass", "ref")
    with pytest.raises(AttributeError):
        spec.explainer_class()
    spec = MethodSpec("Get", GRADIENT, "explain_core.registry.get_method", "ref")
    assert spec.explainer_class() is registry.get_method


@pytest.mark.parametrize(("spec", "param"), ALL_PARAMS, ids=[f"{s.name}.{p.name}" for s, p in ALL_PARAMS])
def test_extreme_values_either_resolve_or_raise_a_typed_error(spec, param):
    """Every bound on its own, at both input sizes: a result within the cost limit or InvalidParameterError."""
    values = [param.minimum, param.maximum] if param.choices is None else list(param.choices)
    for value in values:
        if value is None:
            continue
        for size in ((64, 64), (224, 224)):
            try:
                params = spec.resolve({param.name: param.kind(value)}, size)
            except InvalidParameterError as exc:
                assert exc.details["method"] == spec.name
            else:
                assert params[param.name] == value
                assert 1 <= spec.passes(params, size) <= MAX_PASSES_PER_IMAGE


def test_token_reduction_of_the_text_gradient_methods():
    """How a text model's per-dimension attributions become one value per token: the signed sum where completeness
    needs it (IntegratedGradients, GradientInput), the sum of |gradient| (an L1 norm) for Saliency, and the L2
    norm for SmoothGrad, whose signed sum would be a derivative along (1, ..., 1)."""
    reductions = {spec.name: spec.token_reduction for spec in METHODS if spec.family == GRADIENT
                  and "text" in spec.modalities}
    assert reductions == {"Saliency": "sum", "GradientInput": "sum", "IntegratedGradients": "sum", "SmoothGrad": "l2"}
    assert all(spec.token_reduction in registry.TOKEN_REDUCTIONS for spec in METHODS)
    with pytest.raises(ValueError, match="token_reduction"):
        MethodSpec("Nope", GRADIENT, "xplique.attributions.Saliency", "ref", token_reduction="max")
    # Saliency's description holds for both of its modalities
    assert "channels" in REGISTRY["Saliency"].description and "embedding" in REGISTRY["Saliency"].description
