"""Explain only what is asked (explain_core.explain_condition): a condition on the predictions, from the model
card or the request, parsed strictly, evaluated per record, and recorded in the manifest."""

import json

import numpy as np
import pytest
from pydantic import ValidationError

from explain_core.api_models import ExplanationRequest, ExplanationResult, JobStatus
from explain_core.errors import InvalidParameterError, ModelCardError
from explain_core.explain_condition import ConditionOutcome, skipped_methods
from explain_core.gallery import input_page
from explain_core.manifest import ClassScore, Manifest
from explain_core.modalities.image import ImageInput, ImageModel
from explain_core.model_card import ModelCard
from explain_core.request_options import parse_options

CLASSES = ["circle", "square", "triangle", "none"]


def make_card(**changes) -> ModelCard:
    card = {"name": "shapes", "version": "v1", "input_height": 64, "input_width": 64, "class_names": CLASSES,
            "default_methods": {"gradient": ["Saliency", "GradCAM"]}}
    card.update(changes)
    return ModelCard.from_json(json.dumps(card), model="shapes", version="v1")


def condition_of(metadata: dict, card: ModelCard | None = None):
    return parse_options(metadata, card or make_card(), "gradient").condition


def asked(rule) -> dict:
    return {"explain-if": rule if isinstance(rule, str) else json.dumps(rule)}


# --------------------------------------------------------------------------- parsing
def test_no_condition_anywhere_explains_everything():
    options = parse_options({}, make_card(), "gradient")
    assert options.condition is None
    verdicts = options.verdicts(np.array([[0.1, 0.7, 0.1, 0.1], [0.97, 0.01, 0.01, 0.01]]))
    assert [(v.explain, v.class_index, v.score) for v in verdicts] == [(True, 1, 0.7), (True, 0, 0.97)]


def test_the_card_condition_applies_when_the_request_names_none():
    card = make_card(explain_if={"top_probability_below": 0.9})
    condition = condition_of({}, card)
    assert condition.source == "card" and condition.rule.top_probability_below == 0.9


@pytest.mark.parametrize("rule", [{"top_probability_above": 0.5}, {"predicted_classes": ["square"]}])
def test_a_request_condition_replaces_the_card_s_as_a_whole(rule):
    card = make_card(explain_if={"top_probability_below": 0.9, "predicted_classes": ["circle"]})
    condition = condition_of(asked(rule), card)
    assert condition.source == "request"
    assert condition.shown().to_dict() == rule  # nothing of the card's is merged in


def test_always_turns_the_card_s_condition_off_and_is_nothing_without_one():
    card = make_card(explain_if={"top_probability_below": 0.9})
    condition = condition_of(asked("always"), card)
    assert condition.always and condition.source == "request"
    assert condition.verdicts(np.array([[0.99, 0.01, 0, 0]]))[0].explain
    for raw in ("always", " ALWAYS "):
        assert condition_of(asked(raw)) is None  # the default without a card condition: the same request as none


@pytest.mark.parametrize(("rule", "classes"), [
    ({"predicted_classes": ["square", "circle"]}, {0, 1}),
    ({"predicted_classes": [2, "none"]}, {2, 3}),
    ({"predicted_classes": [3]}, {3}),
])
def test_classes_by_name_or_index(rule, classes):
    assert condition_of(asked(rule)).classes == frozenset(classes)


@pytest.mark.parametrize(("rule", "fragment"), [
    ({"top_probability_below": 0}, "greater than 0"),
    ({"top_probability_below": 1.5}, "less than or equal to 1"),
    ({"top_probability_above": 1}, "less than 1"),
    ({"top_probability_above": -0.1}, "greater than or equal to 0"),
    ({"top_probability_above": 0.6, "top_probability_below": 0.6}, "band only when above < below"),
    ({"top_probability_above": 0.8, "top_probability_below": 0.3}, "band only when above < below"),
    ({"top_probability_below": "0.5"}, "must be a number"),
    ({"top_probability_below": True}, "must be a number"),
    ({"top_probability_below": None}, "give top_probability_below"),
    ({}, "give top_probability_below"),
    ({"predicted_classes": []}, "at least 1"),
    ({"predicted_classes": "circle"}, "list"),
    ({"predicted_classes": [1.0]}, "class names or indices"),
    ({"predicted_classes": [True]}, "class names or indices"),
    ({"predicted_classes": ["hexagon"]}, "'hexagon', neither a class name"),
    ({"predicted_classes": [4]}, "index below 4"),
    ({"predicted_classes": [-1]}, "index below 4"),
    ({"predicted_classes": list(range(51))}, "at most 50"),
    ({"top_probability": 0.5}, "unknown field(s) top_probability"),
])
def test_a_bad_condition_is_the_typed_invalid_parameter_error(rule, fragment):
    with pytest.raises(InvalidParameterError) as raised:
        condition_of(asked(rule))
    assert fragment in raised.value.message and raised.value.details["option"] == "explain-if"
    assert raised.value.code == "invalid_parameter" and raised.value.status == 422


@pytest.mark.parametrize("raw", ["sometimes", "[0.5]", '"always"', "0.5", '{"top_probability_below": NaN}',
                                 '{"top_probability_below": Infinity}'])
def test_metadata_that_is_not_a_condition_object_is_refused(raw):
    with pytest.raises(InvalidParameterError):
        condition_of({"explain-if": raw})


def test_a_card_with_a_bad_condition_is_an_invalid_card():
    with pytest.raises(ModelCardError, match="hexagon"):
        make_card(explain_if={"predicted_classes": ["hexagon"]})
    with pytest.raises(ModelCardError, match="band"):
        make_card(explain_if={"top_probability_above": 0.9, "top_probability_below": 0.1})
    with pytest.raises(ModelCardError, match="unknown field"):
        make_card(explain_if={"below": 0.1})


# --------------------------------------------------------------------------- evaluation
SCORES = np.array([
    [0.95, 0.03, 0.01, 0.01],  # confident circle
    [0.40, 0.35, 0.15, 0.10],  # unsure circle
    [0.10, 0.80, 0.05, 0.05],  # square
    [0.30, 0.30, 0.30, 0.10],  # a tie: the first of equal classes is the top one
])


@pytest.mark.parametrize(("rule", "explained", "reason"), [
    ({"top_probability_below": 0.9}, [False, True, True, True], "top probability 0.95 (circle) is not below 0.9"),
    ({"top_probability_above": 0.5}, [True, False, True, False], "top probability 0.4 (circle) is not above 0.5"),
    ({"top_probability_above": 0.35, "top_probability_below": 0.9}, [False, True, True, False],
     "top probability 0.95 (circle) is not below 0.9"),
    ({"predicted_classes": ["square", "none"]}, [False, False, True, False],
     "top class circle is not one of square, none"),
    ({"predicted_classes": ["circle"], "top_probability_below": 0.9}, [False, True, False, True],
     "top probability 0.95 (circle) is not below 0.9"),
])
def test_verdicts_per_record(rule, explained, reason):
    verdicts = parse_options(asked(rule), make_card(), "gradient").verdicts(SCORES)
    assert [v.explain for v in verdicts] == explained
    assert [v.class_index for v in verdicts] == [0, 0, 1, 0]
    assert [v.score for v in verdicts] == pytest.approx([0.95, 0.40, 0.80, 0.30])
    assert verdicts[explained.index(False)].reason == reason
    assert all((v.reason is None) == v.explain for v in verdicts)


def test_thresholds_are_strict():
    at = np.array([[0.9, 0.1, 0, 0], [0.5, 0.5, 0, 0]])
    assert [v.explain for v in condition_of(asked({"top_probability_below": 0.9})).verdicts(at)] == [False, True]
    assert [v.explain for v in condition_of(asked({"top_probability_above": 0.5})).verdicts(at)] == [True, False]


# --------------------------------------------------------------------------- request form, fingerprint
@pytest.mark.parametrize("rule", [{"top_probability_below": 0.25}, {"predicted_classes": ["triangle", 0]},
                                  {"top_probability_above": 0.1, "top_probability_below": 0.7}, "always"])
def test_the_canonical_metadata_reads_back_to_equal_options(rule):
    card = make_card(explain_if={"top_probability_below": 0.9})
    options = parse_options(asked(rule), card, "gradient")
    metadata = options.to_metadata()
    assert metadata["explain-if"].isascii()
    assert parse_options(metadata, card, "gradient") == options
    if isinstance(rule, dict) and "predicted_classes" in rule:
        assert json.loads(metadata["explain-if"])["predicted_classes"] == [0, 2]  # indices, in order


def test_the_card_s_condition_is_not_written_as_the_request_s():
    card = make_card(explain_if={"top_probability_below": 0.9})
    options = parse_options({}, card, "gradient")
    assert "explain-if" not in options.to_metadata()
    again = parse_options(options.to_metadata(), card, "gradient")
    assert again == options and again.condition.source == "card"


def test_the_fingerprint_depends_on_the_condition_and_is_unchanged_without_one():
    card = make_card()
    plain = parse_options({}, card, "gradient").fingerprint
    assert parse_options(asked("always"), card, "gradient").fingerprint == plain
    prints = {plain} | {parse_options(asked(rule), card, "gradient").fingerprint for rule in (
        {"top_probability_below": 0.9}, {"top_probability_below": 0.8}, {"predicted_classes": ["circle"]})}
    assert len(prints) == 4
    carded = make_card(explain_if={"top_probability_below": 0.9})
    # The card's condition and the same one asked by the request: one outcome, told apart by its source.
    assert parse_options({}, carded, "gradient").fingerprint != \
        parse_options(asked({"top_probability_below": 0.9}), carded, "gradient").fingerprint


def test_the_api_field_becomes_the_same_metadata():
    base = {"model": {"name": "shapes", "version": "v1"}, "input_key": "uploads/" + "0" * 32 + "/x.png"}
    card = make_card(explain_if={"top_probability_below": 0.9})
    request = ExplanationRequest.model_validate({**base, "explain_if": {"predicted_classes": ["square"]}})
    condition = parse_options(request.options_metadata(), card, "gradient").condition
    assert condition.source == "request" and condition.classes == {1}
    for spelled in ("always", "Always", " ALWAYS "):  # any case, as in the upload metadata
        always = ExplanationRequest.model_validate({**base, "explain_if": spelled})
        assert always.explain_if == "always"
        assert parse_options(always.options_metadata(), card, "gradient").condition.always
    assert "explain-if" not in ExplanationRequest.model_validate(base).options_metadata()
    for bad in ({"top_probability_below": 2}, {"below": 0.5}, "never", {"top_probability_below": "0.5"}):
        with pytest.raises(ValidationError):
            ExplanationRequest.model_validate({**base, "explain_if": bad})


# --------------------------------------------------------------------------- the manifest
def skipped_image_manifest() -> Manifest:
    card = make_card(explain_if={"top_probability_below": 0.9})
    options = parse_options({}, card, "gradient")
    (verdict,) = options.verdicts(SCORES[:1])
    return Manifest(
        status="skipped", family="gradient",
        input=ImageInput(bucket="in", key="incoming/gradient/shapes/v1/c.png", etag="e", format="PNG", width=64,
                         height=64, source_mode="RGB", conversions={}),
        model=ImageModel(name="shapes", version="v1", etag="m", card_etag="c", modality="image", framework="keras",
                         input_size=[64, 64], loaded_from="memory"),
        predictions=[ClassScore(class_index=0, class_name="circle", score=0.95)], explained_classes=[],
        methods=skipped_methods(options, card), condition=options.condition.input_outcome(verdict),
        timings={"predict_s": 0.01}, versions={"python": "3.12"}, results_prefix="results/gradient/shapes/v1/c.png/",
        attempt="a",
    )


def test_a_skipped_manifest_carries_the_predictions_and_why_and_reads_back():
    manifest = skipped_image_manifest()
    document = manifest.to_dict()
    assert document["condition"] == {
        "explain_if": {"top_probability_below": 0.9}, "source": "card", "explained": False,
        "predicted": {"class_index": 0, "class_name": "circle", "score": 0.95},
        "reason": "top probability 0.95 (circle) is not below 0.9"}
    assert [(m["name"], m["status"], m["outputs"]) for m in document["methods"]] == [
        ("Saliency", "skipped", []), ("GradCAM", "skipped", [])]
    assert document["output_keys"] == [] and document["explained_classes"] == []
    raw = manifest.to_json_bytes()
    assert Manifest.from_json(raw).to_json_bytes() == raw
    assert isinstance(Manifest.from_json(raw).condition, ConditionOutcome)


def test_records_outcome_lists_each_skipped_row_with_its_line_and_reason():
    options = parse_options(asked({"predicted_classes": ["circle"], "top_probability_below": 0.9}), make_card(),
                            "gradient")
    outcome = options.condition.records_outcome(options.verdicts(SCORES), [2, 3, 5, 9])
    document = outcome.to_dict()
    assert document["explain_if"] == {"top_probability_below": 0.9, "predicted_classes": ["circle"]}
    assert (document["explained"], document["records"], document["explained_records"]) == (True, 4, 2)
    assert document["skipped"] == [
        {"line": 2, "class_index": 0, "class_name": "circle", "score": 0.95,
         "reason": "top probability 0.95 (circle) is not below 0.9"},
        {"line": 5, "class_index": 1, "class_name": "square", "score": 0.8,
         "reason": "top class square is not one of circle"}]
    assert ConditionOutcome.from_dict(document).to_dict() == document
    nothing = options.condition.records_outcome(options.verdicts(SCORES[[0, 2]]), [2, 5], documents=True)
    assert not nothing.explained and [r.document for r in nothing.skipped] == [0, 1]


def test_a_class_name_the_card_repeats_is_shown_by_index():
    card = make_card(class_names=["cat", "cat", "dog"])
    condition = condition_of(asked({"predicted_classes": [1, "dog"]}), card)
    assert condition.shown().predicted_classes == [1, "dog"]


def test_the_api_answer_and_a_job_status_say_skipped():
    manifest = skipped_image_manifest()
    result = ExplanationResult(status=manifest.status, family="gradient", model=manifest.model, input=manifest.input,
                               predictions=manifest.predictions, explained_classes=[], methods=[],
                               manifest_url="u", gallery_url="g", results_prefix="p", urls_expire_in=1,
                               condition=manifest.condition)
    answer = json.loads(result.model_dump_json())
    assert answer["status"] == "skipped" and answer["condition"]["reason"].startswith("top probability 0.95")
    assert ExplanationResult.model_fields["condition"].description == Manifest.model_fields["condition"].description
    status = JobStatus(job_id="0" * 32, status="skipped", family="gradient",
                       model={"name": "shapes", "version": "v1"}, created_at="t", input_key="k", result=result)
    assert status.status == "skipped"


def test_the_gallery_page_says_why_nothing_was_explained():
    page = input_page(skipped_image_manifest(), {})
    assert 'class="status-skipped">skipped<' in page
    assert "Not explained: top probability 0.95 (circle) is not below 0.9" in page
    assert "top_probability_below=0.9" in page and "explain_if (the card's)" in page


def test_the_gallery_page_lists_the_rows_skipped():
    options = parse_options(asked({"predicted_classes": ["circle"]}), make_card(), "gradient")
    document = skipped_image_manifest().to_dict()
    document["condition"] = options.condition.records_outcome(options.verdicts(SCORES), [2, 3, 5, 9]).to_dict()
    page = input_page(document, {})
    assert "<p>3 of 4 explained; 1 skipped:</p>" in page
    assert "<tr><td>5</td><td>square</td><td>0.8</td><td>top class square is not one of circle</td></tr>" in page


def test_the_demo_line_says_why():
    from devtools.demo import status_of

    document = {"kind": "manifest", **skipped_image_manifest().to_dict()}
    assert status_of(document) == "skipped (top probability 0.95 (circle) is not below 0.9)"
    document["condition"] = {"explain_if": {"predicted_classes": ["circle"]}, "source": "request",
                             "explained": True, "records": 8, "explained_records": 5,
                             "skipped": [{"line": 2}, {"line": 3}, {"line": 7}]}
    document["status"] = "succeeded"
    assert status_of(document) == "succeeded (3 of 8 skipped by explain_if)"
