"""Unit tests for explain_core.model_card.ModelCard.from_json."""

import json

import pytest

from explain_core.errors import InvalidModelError, ModelCardError
from explain_core.modalities.image import Preprocessing
from explain_core.model_card import ModelCard, TargetPolicy

MINIMAL = {
    "name": "shapes", "version": "v1", "input_height": 64, "input_width": 48, "class_names": ["circle", "square"],
}

FULL = {
    "name": "resnet50",
    "version": "2024.01",
    "description": "ImageNet classifier",
    "input_height": 224,
    "input_width": 224,
    "input_channels": 3,
    "preprocessing": {"scale": 1.0 / 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "output": "probabilities",
    "class_names": ["tench", "goldfish", "great white shark"],
    "cam_layer": "conv5_block3_out",
    "target": {"mode": "top_k", "k": 2},
    "default_methods": {"gradient": ["Saliency", "GradCAM"], "perturbation": ["Occlusion"]},
    "top_k": 5,
}


def load(card: dict, model: str | None = None, version: str | None = None) -> ModelCard:
    return ModelCard.from_json(
        json.dumps(card), model=model or card.get("name", "shapes"), version=version or card.get("version", "v1")
    )


def refused(card, model="shapes", version="v1") -> ModelCardError:
    raw = card if isinstance(card, (str, bytes)) else json.dumps(card)
    with pytest.raises(ModelCardError) as info:
        ModelCard.from_json(raw, model=model, version=version)
    return info.value


def test_full_card():
    card = load(FULL)
    assert card.name == "resnet50" and card.version == "2024.01"
    assert (card.input_height, card.input_width, card.input_channels) == (224, 224, 3)
    assert card.preprocessing.mean == [0.485, 0.456, 0.406]
    assert card.preprocessing.std == [0.229, 0.224, 0.225]
    assert card.preprocessing.scale == pytest.approx(1 / 255)
    assert card.output == "probabilities"
    assert card.cam_layer == "conv5_block3_out"
    assert card.target == TargetPolicy(mode="top_k", k=2)
    assert card.default_methods == {"gradient": ["Saliency", "GradCAM"], "perturbation": ["Occlusion"]}
    assert card.top_k == 5


def test_minimal_card_gets_defaults():
    card = load(MINIMAL)
    assert (card.input_height, card.input_width) == (64, 48)
    assert card.description == ""
    assert card.input_channels == 3
    assert card.preprocessing == Preprocessing(scale=1 / 255, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    assert card.output == "logits"
    assert card.cam_layer is None
    assert card.target.mode == "predicted" and card.target.k == 1
    assert card.default_methods == {}
    assert card.top_k == 3


def test_bytes_are_accepted():
    assert ModelCard.from_json(json.dumps(MINIMAL).encode(), model="shapes", version="v1").name == "shapes"


def test_class_name():
    card = load(MINIMAL)
    assert card.class_name(0) == "circle"
    assert card.class_name(1) == "square"
    assert card.class_name(2) == "2"
    assert card.class_name(-1) == "-1"


@pytest.mark.parametrize("field", ["name", "version", "class_names"])
def test_missing_required_field(field):
    card = {k: v for k, v in MINIMAL.items() if k != field}
    error = refused(card)
    assert error.message == f"model card of shapes/v1 is invalid: {field}: Field required"
    assert error.details == {"model": "shapes"}


@pytest.mark.parametrize("field", ["input_height", "input_width"])
def test_image_card_needs_its_input_size(field):
    card = {k: v for k, v in MINIMAL.items() if k != field}
    error = refused(card)
    assert error.message == ("model card of shapes/v1 is invalid: <card>: Value error, an image model needs "
                             "input_height and input_width")


def test_several_problems_are_all_listed():
    error = refused({"name": "shapes", "version": "v1", "input_height": 4, "class_names": ["a"], "colour": "blue"})
    for part in ("input_height: Input should be greater than or equal to 8", "class_names: List should have at "
                 "least 2 items", "colour: Extra inputs are not permitted"):
        assert part in error.message
    assert error.message.count(";") == 2


TABULAR = {"name": "shapes", "version": "v1", "modality": "tabular", "model_file": "model.json",
           "output": "margin", "feature_names": ["age", "dose"], "class_names": ["no", "yes"]}


def test_tabular_card():
    card = load(TABULAR)
    assert card.framework == "xgboost" and card.input_size is None
    assert card.default_explained_classes() == [1]  # binary: the positive class
    assert load({**TABULAR, "class_names": ["a", "b", "c"]}).default_explained_classes() == [0, 1, 2]
    assert load({**TABULAR, "explained_classes": ["no"]}).default_explained_classes() == [0]


@pytest.mark.parametrize(("change", "message"), [
    ({"feature_names": ["age", "age"]}, "feature_names must be unique"),
    ({"explained_classes": ["maybe"]}, "explained_classes ['maybe'] are not in class_names"),
    ({"model_file": "model.keras"}, 'output "margin" is for XGBoost models'),
    ({"model_file": "model.pkl"},
     "model_file: Input should be 'model.keras', 'model.tar.gz', 'model.json' or 'model.ubj'"),
])
def test_tabular_card_problems(change, message):
    assert message in refused({**TABULAR, **change}).message


def test_tabular_card_may_leave_the_feature_names_to_the_model_or_the_upload():
    assert load({**TABULAR, "feature_names": None}).feature_names is None


def test_image_models_are_keras_only():
    error = refused({**MINIMAL, "model_file": "model.ubj"})
    assert "image models must be Keras models (model.keras, model.tar.gz)" in error.message


@pytest.mark.parametrize(
    ("card", "where"),
    [
        ({**MINIMAL, "colour": "blue"}, "colour"),
        ({**MINIMAL, "preprocessing": {"scale": 1.0, "offset": 3}}, "preprocessing.offset"),
        ({**MINIMAL, "target": {"mode": "predicted", "threshold": 0.5}}, "target.threshold"),
    ],
)
def test_extra_fields_are_refused_with_their_path(card, where):
    assert f"{where}: Extra inputs are not permitted" in refused(card).message


def test_name_mismatch():
    error = refused({**MINIMAL, "name": "other"})
    assert error.message == "model card says other/v1 but is stored as shapes/v1"
    assert error.details == {"model": "shapes"}


def test_version_mismatch():
    assert refused({**MINIMAL, "version": "v2"}).message == "model card says shapes/v2 but is stored as shapes/v1"


def test_name_match_is_case_sensitive():
    assert "but is stored as Shapes/v1" in refused(MINIMAL, model="Shapes").message


@pytest.mark.parametrize("std", [[1.0, 0.0, 1.0], [1.0, 1.0, -0.5], [0, 0, 0]])
def test_std_must_be_positive(std):
    error = refused({**MINIMAL, "preprocessing": {"std": std}})
    assert "preprocessing" in error.message
    assert "std values must be > 0" in error.message


@pytest.mark.parametrize(
    "preprocessing",
    ['{"std": [1, NaN, 1]}', '{"std": [1, Infinity, 1]}', '{"mean": [NaN, 0, 0]}', '{"scale": Infinity}'],
    ids=["std-nan", "std-inf", "mean-nan", "scale-inf"],
)
def test_non_finite_preprocessing_is_refused(preprocessing):
    raw = json.dumps(MINIMAL)[:-1] + f', "preprocessing": {preprocessing}}}'
    refused(raw)


@pytest.mark.parametrize("classes", [[], ["only"]])
def test_fewer_than_two_classes(classes):
    error = refused({**MINIMAL, "class_names": classes})
    assert f"class_names: List should have at least 2 items after validation, not {len(classes)}" in error.message


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"input_height": 4}, "input_height: Input should be greater than or equal to 8"),
        ({"input_width": 2048}, "input_width: Input should be less than or equal to 1024"),
        ({"input_height": "tall"}, "input_height: Input should be a valid integer"),
        ({"input_channels": 1}, "input_channels: Input should be 3"),
        ({"output": "softmax"}, "output: Input should be 'logits', 'probabilities' or 'margin'"),
        ({"preprocessing": {"mean": [0, 0]}}, "preprocessing.mean: List should have at least 3 items"),
        ({"preprocessing": {"std": [1, 1, 1, 1]}}, "preprocessing.std: List should have at most 3 items"),
        ({"target": {"mode": "all"}}, "target.mode: Input should be 'predicted' or 'top_k'"),
        ({"target": {"mode": "top_k", "k": 11}}, "target.k: Input should be less than or equal to 10"),
        ({"target": {"mode": "top_k", "k": 0}}, "target.k: Input should be greater than or equal to 1"),
        ({"top_k": 21}, "top_k: Input should be less than or equal to 20"),
        ({"class_names": "circle,square"}, "class_names: Input should be a valid array"),
        ({"default_methods": ["Saliency"]}, "default_methods: Input should be an object"),
    ],
)
def test_field_constraints(change, fragment):
    error = refused({**MINIMAL, **change})
    assert error.message.startswith("model card of shapes/v1 is invalid: ")
    assert fragment in error.message


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [("not json", "<card>: Invalid JSON"), ("", "<card>: Invalid JSON"), ("[]", "<card>: Input should be an object"),
     ("null", "<card>: Input should be an object")],
)
def test_not_a_json_object(raw, fragment):
    assert fragment in refused(raw).message


def test_error_type():
    error = refused({**MINIMAL, "name": "x"})
    assert isinstance(error, InvalidModelError)
    assert (error.code, error.status) == ("invalid_model_card", 422)
    assert isinstance(refused("nope").__cause__, Exception)


TEXT = {"name": "reviews", "version": "v1", "modality": "text", "class_names": ["negative", "positive"],
        "text": {"vocabulary_file": "vocab.txt", "max_length": 8}}


@pytest.mark.parametrize("pattern", [r"\s+", r"[\s,;]+", r"[ \t\n\x0b\x0c\r]+", r"[^\w]+"])
def test_text_card_accepts_split_patterns_that_cannot_backtrack(pattern):
    card = load({**TEXT, "text": {**TEXT["text"], "split_pattern": pattern}}, model="reviews")
    assert card.text.split_pattern == pattern and "split_pattern" in card.text.model_fields_set
    assert "split_pattern" not in load(TEXT, model="reviews").text.model_fields_set


@pytest.mark.parametrize("pattern", [r"(\s+)+!", r"\s+|,", r"\b", r"(?=a)\s+", r"\s*", r"[ ]+[ ]+"])
def test_text_card_refuses_a_split_pattern_that_could_backtrack(pattern):
    error = refused({**TEXT, "text": {**TEXT["text"], "split_pattern": pattern}}, model="reviews")
    assert error.message.startswith("model card of reviews/v1 is invalid: text.split_pattern: ")
    assert f"split_pattern {pattern!r} is not allowed: it must be \\s+ or one character class followed by +" \
        in error.message


def test_text_card_refuses_an_invalid_character_class():
    error = refused({**TEXT, "text": {**TEXT["text"], "split_pattern": "[z-a]+"}}, model="reviews")
    assert "text.split_pattern: " in error.message and "not a valid regular expression" in error.message
