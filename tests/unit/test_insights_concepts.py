"""Unit tests for the concept insights (TCAV, CRAFT) and explain_core.model_split, on a tiny random CNN."""

import json
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf
from pydantic import ValidationError
from scipy import stats

from devtools import concept_images
from explain_core.attribution import preprocess
from explain_core.errors import (
    InvalidInsightsSpecError,
    InvalidModelError,
    OverTimeBudgetError,
    UnsupportedModelError,
)
from explain_core.insights.base import PartOutcome, PlanContext
from explain_core.insights.concepts import (
    Craft,
    CraftSpec,
    Tcav,
    TcavSpec,
    tcav_p_value,
)
from explain_core.insights.pictures import decode_png
from explain_core.insights.spec import parse_spec
from explain_core.model_card import ModelCard
from explain_core.model_split import split_at

SIDE, CLASSES = 32, ["circle", "square", "triangle", "none"]


def tiny_cnn(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIDE, SIDE, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.Conv2D(6, 1, name="linear_conv")(x)  # no ReLU: negative activations
    # Named: Keras numbers unnamed layers per process, so the full suite would call it ..._1.
    x = keras.layers.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
    return keras.Model(inputs, keras.layers.Dense(len(CLASSES), name="logits")(x))


@pytest.fixture(scope="module")
def loaded():
    card = ModelCard.model_validate({
        "name": "tiny", "version": "v1", "input_height": SIDE, "input_width": SIDE, "class_names": CLASSES,
        "preprocessing": {"scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        "output": "logits", "cam_layer": "last_conv"})
    background = preprocess(concept_images.class_images("circle", 4, 0)[:, ::4, ::4], card)
    return SimpleNamespace(model=tiny_cnn(), card=card, background=background)


def image_sets(count: int = 8, randoms: int = 3) -> dict:
    sets = {"round/": concept_images.round_concept(count, 0)}
    sets.update({f"random-{i}/": images for i, images in enumerate(concept_images.random_sets(randoms, count, 0))})
    sets.update({f"{name}/": concept_images.class_images(name, count, 0) for name in ("circle", "square")})
    return sets


def tcav_spec(count: int = 8, randoms: int = 3, **changes) -> TcavSpec:
    return TcavSpec.model_validate({
        "concept": {"name": "round", "images": {"prefix": "round/", "count": count}},
        "random": [{"prefix": f"random-{i}/", "count": count} for i in range(randoms)],
        "classes": {name: {"prefix": f"{name}/", "count": count} for name in ("circle", "square")}, **changes})


def outcome(kind, part, summary=None, error=None) -> PartOutcome:
    return PartOutcome(id=part.id, kind=kind.name, title=part.title, status="failed" if error else "succeeded",
                       summary=summary or {}, error=error, finished_at="2026-12-01T00:00:00Z")


# ---------------------------------------------------------------------- model_split
def test_split_halves_compose_to_the_model(loaded):
    model = loaded.model
    x = np.random.default_rng(0).normal(size=(3, SIDE, SIDE, 3)).astype(np.float32)
    nodes = [len(layer._inbound_nodes) for layer in model.layers]
    for layer in ("conv", "last_conv", "linear_conv", "global_average_pooling2d"):
        first, second = split_at(model, layer)
        assert first.output.shape[1:] == model.get_layer(layer).output.shape[1:]
        np.testing.assert_allclose(second(first(x)), model(x), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(second.predict(first.predict(x, verbose=0), verbose=0), model(x), atol=1e-5)
    assert [len(layer._inbound_nodes) for layer in model.layers] == nodes  # the model is left as it was


def test_split_sequential_and_refusals():
    keras.utils.set_random_seed(0)
    sequential = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="a"), keras.layers.Dense(3, name="b"),
                                   keras.layers.Dense(2, name="c")])
    x = np.ones((2, 6), np.float32)
    first, second = split_at(sequential, "b")
    np.testing.assert_allclose(second(first(x)), sequential(x), atol=1e-6)
    with pytest.raises(InvalidModelError, match="no layer"):
        split_at(sequential, "nope")
    with pytest.raises(InvalidModelError, match="is the output"):
        split_at(sequential, "c")
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(6, name="hidden")(inputs)
    residual = keras.Model(inputs, keras.layers.Add()([keras.layers.Dense(6)(hidden), inputs]))
    with pytest.raises(UnsupportedModelError, match="branch around"):
        split_at(residual, "hidden")


def test_xplique_tcav_matches_the_gradient_through_the_split_halves(loaded):
    """Xplique's Tcav (which watches the layer inside the whole model) agrees with the split models."""
    from xplique.concepts import Tcav as XpliqueTcav

    model = loaded.model
    x = np.random.default_rng(1).normal(size=(16, SIDE, SIDE, 3)).astype(np.float32)
    first, second = split_at(model, "last_conv")
    cav = tf.constant(np.random.default_rng(2).normal(size=first.output.shape[1:]).astype(np.float32))
    latent = tf.constant(first(x))
    with tf.GradientTape() as tape:
        tape.watch(latent)
        score = second(latent)[:, 1]
    derivative = tf.reduce_sum(tape.gradient(score, latent) * cav, axis=(1, 2, 3)).numpy()
    assert XpliqueTcav(model, "last_conv").score(x, 1, cav) == pytest.approx(np.mean(derivative > 0))


# ---------------------------------------------------------------------- the t-test
def test_p_value_on_known_numbers():
    concept, random = [0.8, 0.9, 1.0], [0.4, 0.5, 0.6]
    # pooled variance 0.01, t = 0.4 / sqrt(0.01 * (1/3 + 1/3)) on 4 degrees of freedom
    t = 0.4 / np.sqrt(0.01 * 2 / 3)
    assert tcav_p_value(concept, random) == pytest.approx(2 * stats.t.sf(t, 4), rel=1e-9)
    assert tcav_p_value(concept, random) == pytest.approx(0.00805, abs=1e-4)
    assert tcav_p_value([0.5, 0.6, 0.4], [0.6, 0.4, 0.5]) == pytest.approx(1.0)
    assert tcav_p_value([1.0, 1.0], [1.0, 1.0]) == 1.0  # no variance, same scores
    assert tcav_p_value([1.0, 1.0], [0.5, 0.5]) == 0.0  # no variance, different scores
    with pytest.raises(ValueError):
        tcav_p_value([0.9], [0.5, 0.4])


# ---------------------------------------------------------------------- specs
@pytest.mark.parametrize("changes, message", [
    ({"random": [{"prefix": "r/"}]}, "at least 2"),
    ({"random": [{"prefix": f"r{i}/"} for i in range(21)]}, "at most 20"),
    ({"alpha": 0}, "greater than 0"),
    ({"alpha": 0.6}, "less than or equal"),
    ({"runs": 6}, "less than or equal"),
    ({"classes": {}}, "at least 1"),
    ({"bonferroni": False}, "Extra inputs"),
])
def test_tcav_spec_bounds(changes, message):
    with pytest.raises(ValidationError, match=message):
        tcav_spec(**changes)


def test_craft_spec_bounds_and_default():
    spec = CraftSpec.model_validate({"classes": ["circle"]})
    assert spec.images.source == "background" and spec.number_of_concepts == 5
    for bad in ({"classes": []}, {"classes": ["circle"], "number_of_concepts": 21},
                {"classes": ["circle"], "nb_design": 1000}, {"classes": ["circle", "circle"]},
                {"classes": ["circle"], "class_images": {"square": {"prefix": "s/"}}}):
        with pytest.raises(ValidationError):
            CraftSpec.model_validate(bad)


def test_job_spec_takes_both_kinds():
    spec = parse_spec(json.dumps({"tcav": tcav_spec().model_dump(mode="json"),
                                  "craft": {"classes": ["circle"], "patch_size": 16}, "seed": 3}).encode())
    assert spec.tcav.concept.name == "round" and spec.craft.patch_size == 16


# ---------------------------------------------------------------------- plans
def test_tcav_plan(loaded):
    kind, spec = Tcav(), tcav_spec(randoms=4)
    parts = kind.plan(spec, PlanContext(loaded, seconds_per_pass=0.001, max_part_seconds=600))
    assert [p.params["class"] for p in parts] == ["circle", "square"]
    assert all(p.params["random"] == [0, 1, 2, 3] and p.params["layer"] == "last_conv" for p in parts)
    assert all(0 < p.estimated_seconds < 480 for p in parts)
    # A slow model: each class's random sets in several parts, each estimated within the budget.
    budget = 30
    split = kind.plan(spec, PlanContext(loaded, seconds_per_pass=0.2, max_part_seconds=budget))
    assert len(split) > 2 and all(p.estimated_seconds <= 0.8 * budget for p in split)
    assert sorted(i for p in split if p.params["class"] == "circle" for i in p.params["random"]) == [0, 1, 2, 3]
    assert len({p.id for p in split}) == len(split)
    with pytest.raises(OverTimeBudgetError):
        kind.plan(spec, PlanContext(loaded, seconds_per_pass=10, max_part_seconds=60))
    with pytest.raises(InvalidInsightsSpecError, match="'oval'"):
        kind.plan(tcav_spec(classes={"oval": {"prefix": "o/"}}), PlanContext(loaded, 0.001, 600))
    with pytest.raises(InvalidInsightsSpecError, match="no layer"):
        kind.plan(tcav_spec(layer="nope"), PlanContext(loaded, 0.001, 600))
    with pytest.raises(InvalidInsightsSpecError, match="input or output"):
        kind.plan(tcav_spec(layer="logits"), PlanContext(loaded, 0.001, 600))


def test_craft_plan(loaded):
    kind = Craft()
    parts = kind.plan(CraftSpec.model_validate({"classes": ["square", "circle"]}), PlanContext(loaded, 0.001, 600))
    assert [(p.id, p.params["class"], p.params["label"], p.params["patch_size"]) for p in parts] == [
        ("craft-00", "square", 1, 16), ("craft-01", "circle", 0, 16)]
    with pytest.raises(InvalidInsightsSpecError, match="larger than the model's input"):
        kind.plan(CraftSpec.model_validate({"classes": ["circle"], "patch_size": 64}), PlanContext(loaded, 0.001, 600))
    with pytest.raises(OverTimeBudgetError):
        kind.plan(CraftSpec.model_validate({"classes": ["circle"], "nb_design": 256}), PlanContext(loaded, 1, 60))


# ---------------------------------------------------------------------- runs and assembly
def test_tcav_run_is_deterministic_and_assembles_with_a_failed_part(loaded):
    kind, spec, files = Tcav(), tcav_spec(), {}
    ctx = concept_images.local_context(loaded, image_sets(), seed=5, files=files)
    parts = kind.plan(spec, PlanContext(loaded, seconds_per_pass=0.001, max_part_seconds=600))
    summary = kind.run_part(spec, parts[0], ctx)
    assert summary["class"] == "circle" and summary["pairs"] == [[0, 1, 0], [1, 2, 0], [2, 0, 0]]
    assert len(summary["concept_scores"]) == len(summary["random_scores"]) == 3
    assert all(0 <= s <= 1 for s in summary["concept_scores"] + summary["random_scores"])
    again = kind.run_part(spec, parts[0], ctx)  # a redelivered part gives the same numbers
    assert (again["concept_scores"], again["random_scores"]) == (summary["concept_scores"], summary["random_scores"])
    failed = outcome(kind, parts[1], error={"code": "invalid_model_output", "message": "NaN"})
    section = kind.assemble(spec, [outcome(kind, parts[0], summary), failed], ctx)
    circle, square = section["classes"]
    assert circle["status"] == "succeeded" and square["status"] == "failed"
    assert square["errors"][0]["id"] == parts[1].id
    assert circle["score_mean"] == pytest.approx(np.mean(summary["concept_scores"]), abs=1e-6)
    assert circle["p_value"] == pytest.approx(tcav_p_value(summary["concept_scores"], summary["random_scores"]))
    assert circle["significant"] == (circle["p_value"] < 0.025)  # Bonferroni over the two classes
    assert section["bonferroni"] == {"hypotheses": 2, "threshold": 0.025}
    assert json.loads(files[section["scores"]])["classes"][0]["class"] == "circle"
    assert decode_png(files[section["chart"]]).shape[2] == 3
    json.dumps(section, allow_nan=False)


def test_tcav_refuses_a_set_too_small(loaded):
    kind, spec = Tcav(), tcav_spec(count=3)
    ctx = concept_images.local_context(loaded, image_sets(count=3))
    part = kind.plan(spec, PlanContext(loaded, 0.001, 600))[0]
    with pytest.raises(InvalidInsightsSpecError, match="needs 5"):
        kind.run_part(spec, part, ctx)


def test_craft_run_and_assembly(loaded):
    kind, files = Craft(), {}
    spec = CraftSpec.model_validate({"classes": ["circle", "square"], "number_of_concepts": 3, "nb_design": 8,
                                     "crops": 4, "class_images": {"circle": {"prefix": "circle/", "count": 6}}})
    ctx = concept_images.local_context(loaded, image_sets(), files=files)
    parts = kind.plan(spec, PlanContext(loaded, 0.001, 600))
    summary = kind.run_part(spec, parts[0], ctx)
    assert summary["images"] == 6 and summary["crops"] == 6 * 4  # 16 px patches, stride 12, on 32 px
    importances = [c["importance"] for c in summary["concepts"]]
    assert len(importances) == 3 and importances == sorted(importances, reverse=True)
    assert all(np.isfinite(importances))
    grid = decode_png(files[summary["grid"]])
    assert grid.shape[0] > 3 * 96 and decode_png(files[summary["chart"]]).ndim == 3
    assert kind.run_part(spec, parts[0], ctx)["concepts"] == summary["concepts"]  # deterministic
    section = kind.assemble(spec, [outcome(kind, parts[0], summary),
                                   outcome(kind, parts[1], error={"code": "x", "message": "y"})], ctx)
    assert [row["status"] for row in section["classes"]] == ["succeeded", "failed"]
    json.dumps(section, allow_nan=False)


def test_craft_refuses_negative_activations(loaded):
    kind = Craft()
    spec = CraftSpec.model_validate({"classes": ["circle"], "layer": "linear_conv", "number_of_concepts": 2,
                                     "nb_design": 4, "class_images": {"circle": {"prefix": "circle/", "count": 4}}})
    part = kind.plan(spec, PlanContext(loaded, 0.001, 600))[0]
    with pytest.raises(UnsupportedModelError, match="negative activations"):
        kind.run_part(spec, part, concept_images.local_context(loaded, image_sets()))


def test_concept_images_are_deterministic():
    np.testing.assert_array_equal(concept_images.round_concept(3, 7), concept_images.round_concept(3, 7))
    first, second = concept_images.random_sets(2, 3, 7)
    assert first.shape == (3, 128, 128, 3) and not np.array_equal(first, second)
    assert len(concept_images.class_images("square", 5)) == 5
