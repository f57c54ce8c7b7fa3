"""Feature visualization insight: spec validation, planning against a model, one tiny run, assembly."""

import itertools
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from explain_core.errors import InvalidInsightsSpecError, OverTimeBudgetError, UnsupportedModelError
from explain_core.insights import feature_visualization as fv
from explain_core.insights.base import PartContext, PartOutcome, PlanContext
from explain_core.insights.feature_visualization import FeatureVisualization, split_grid
from explain_core.insights.pictures import decode_png
from explain_core.model_card import ModelCard

KIND = FeatureVisualization()
CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def loaded():
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(len(CLASSES), name="out")(x)
    card = ModelCard.model_validate({
        "name": "tiny", "version": "v1", "input_height": 16, "input_width": 16, "class_names": CLASSES,
        "preprocessing": {"scale": 1 / 255, "mean": [0.5, 0.4, 0.3], "std": [0.5, 0.6, 0.7]}})
    return SimpleNamespace(model=keras.Model(inputs, outputs), card=card)


def spec(**fields):
    return KIND.Spec.model_validate({"objectives": [{"class": "a"}], "steps": 8, **fields})


def plan_ctx(loaded, max_part_seconds=600.0, seconds_per_pass=0.001):
    return PlanContext(loaded=loaded, seconds_per_pass=seconds_per_pass, max_part_seconds=max_part_seconds)


class Store:
    def __init__(self):
        self.files = {}

    def ctx(self, loaded, prefix, seed=5):
        def put(name, body, content_type):
            assert content_type == "image/png" and body.startswith(b"\x89PNG")
            self.files[prefix + name] = body
            return prefix + name

        return PartContext(loaded=loaded, seed=seed, batch_size=8, images=None, put=put, read=self.files.__getitem__,
                           remaining_seconds=lambda: None, seconds_per_pass=0.001)


# ---------------------------------------------------------------- spec
def test_a_full_spec_parses_with_defaults():
    parsed = KIND.Spec.model_validate({"objectives": [
        {"class": "a"},
        {"layer": "conv", "type": "channel", "indexes": [0, 1, 2]},
        {"layer": "conv", "type": "neuron", "index": 7, "label": "one neuron"},
        {"layer": "conv", "type": "layer"},
        {"layer": "conv", "type": "direction", "direction": [1, 0, 0, -1]},
        {"sum": [{"class": "b"}, {"layer": "conv", "type": "channel", "indexes": [0, 1], "weight": 0.5}],
         "label": "b and conv"},
    ]})
    assert parsed.steps == 256 and parsed.use_fft and parsed.transformations == "standard"
    assert parsed.image_size is None and parsed.checkpoint_every() == 8
    assert [fv.image_count(o) for o in parsed.objectives] == [1, 3, 1, 1, 1, 2]
    assert parsed.model_dump(by_alias=True)["objectives"][0]["class"] == "a"


@pytest.mark.parametrize("objective, message", [
    ({"type": "neuron", "index": 1}, "name a layer or a class"),
    ({"layer": "conv", "class": "a"}, "name a layer or a class"),
    ({"layer": "conv", "type": "neuron"}, "needs index or indexes"),
    ({"layer": "conv", "type": "channel", "index": 1, "indexes": [2]}, "not both"),
    ({"layer": "conv", "type": "layer", "index": 1}, "takes no index"),
    ({"class": "a", "index": 1}, "takes no index"),
    ({"class": "a", "type": "channel"}, "no other type"),
    ({"layer": "conv", "type": "direction"}, "give direction"),
    ({"layer": "conv", "type": "channel", "index": 1, "direction": [1.0]}, "give direction"),
    ({"layer": "conv", "type": "channel", "indexes": [1, 1]}, "repeat"),
    ({"layer": "conv", "type": "channel", "indexes": [-1]}, "greater than or equal"),
    ({"layer": "conv", "type": "channel", "index": 0, "weight": 0}, "weight of 0"),
    ({"layer": "conv", "type": "kernel", "index": 0}, "type"),
    ({"layer": "conv", "type": "channel", "index": 0, "colour": 1}, "Extra inputs"),
    ({"sum": [{"class": "a"}]}, "at least 2"),
    ({"sum": [{"layer": "conv", "type": "channel", "indexes": list(range(10))},
              {"layer": "conv", "type": "neuron", "indexes": list(range(10))}]}, "asks for 100 images"),
])
def test_bad_objectives_are_refused(objective, message):
    with pytest.raises(ValidationError, match=message):
        KIND.Spec.model_validate({"objectives": [objective]})


@pytest.mark.parametrize("fields, message", [
    ({"steps": 4}, "greater than or equal to 8"), ({"steps": 5000}, "less than or equal"),
    ({"image_size": 16}, "greater than or equal to 32"), ({"image_size": 1024}, "less than"),
    ({"steps": 1024, "save_every": 8}, "more than 64 checkpoints"), ({"learning_rate": 0}, "greater than 0"),
    ({"regularizers": {"total_variation": 5}}, "less than or equal"), ({"regularizers": {"l3": 1}}, "Extra"),
    ({"fft_decay": float("nan")}, "finite"), ({"objectives": []}, "at least 1"),
    ({"objectives": [{"class": "a"}] * 17}, "at most 16"), ({"transformations": "random"}, "standard"),
])
def test_bad_settings_are_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        spec(**fields)


# ---------------------------------------------------------------- plan
@pytest.mark.parametrize("objective, expected", [
    ({"layer": "dense"}, "no layer 'dense'"),
    ({"class": "zebra"}, "unknown class 'zebra'"),
    ({"layer": "conv", "type": "channel", "indexes": [0, 4]}, "it has 4 channels"),
    ({"layer": "out", "type": "neuron", "index": 3}, "it has 3 neurons"),
    ({"layer": "conv", "type": "neuron", "index": 16 * 16 * 4}, "it has 1024 neurons"),
    ({"layer": "out", "type": "channel", "index": 0}, "has no channels"),
    ({"layer": "conv", "type": "direction", "direction": [1.0, 2.0]}, "has 4 channels"),
])
def test_planning_names_what_the_model_lacks(loaded, objective, expected):
    bad = {"type": "layer", **objective} if set(objective) == {"layer"} else objective
    with pytest.raises(InvalidInsightsSpecError, match=expected) as caught:
        KIND.plan(spec(objectives=[{"class": "a"}, bad]), plan_ctx(loaded))
    assert caught.value.details["field"] == "objectives.1"
    if "size" in caught.value.details:
        assert caught.value.details["layer"] in ("conv", "out")


def test_plan_gives_one_part_per_objective_and_estimates_steps_times_images(loaded):
    parsed = spec(steps=64, objectives=[{"class": "b"}, {"layer": "conv", "type": "channel", "indexes": [0, 1, 3]}])
    parts = KIND.plan(parsed, plan_ctx(loaded, seconds_per_pass=0.01))
    assert [p.params["labels"] for p in parts] == [["b logit"], ["conv ch 0", "conv ch 1", "conv ch 3"]]
    assert [p.params["grid"] for p in parts] == [[[None]], [[0, 1, 3]]]
    assert len({p.id for p in parts}) == 2 and [p.params["index"] for p in parts] == [0, 1]
    checkpoints = math.ceil(64 / parsed.checkpoint_every())
    one = 0.01 * (64 * fv.TRANSFORMATION_FACTOR["standard"] + checkpoints)
    fixed = fv.PART_OVERHEAD_SECONDS + 64 * fv.STEP_OVERHEAD_SECONDS
    assert parts[0].estimated_seconds == pytest.approx(fixed + one, abs=1e-3)
    assert parts[1].estimated_seconds == pytest.approx(fixed + 3 * one, abs=1e-3)
    # Twice the side: four times the area.
    bigger = KIND.plan(spec(steps=64, image_size=32, transformations="none"), plan_ctx(loaded, seconds_per_pass=0.01))
    assert bigger[0].estimated_seconds == pytest.approx(fixed + 0.01 * (64 * 4 + checkpoints), abs=1e-3)


def test_plan_splits_indexes_to_fit_a_part_and_refuses_what_cannot(loaded):
    parsed = spec(steps=100, transformations="none", objectives=[
        {"layer": "conv", "type": "channel", "indexes": [0, 1, 2, 3]}])
    fixed = fv.PART_OVERHEAD_SECONDS + 100 * fv.STEP_OVERHEAD_SECONDS
    one = 0.01 * (100 + math.ceil(100 / parsed.checkpoint_every()))
    # Room for two images per part.
    parts = KIND.plan(parsed, plan_ctx(loaded, (fixed + 2.5 * one) / fv.PART_TIME_SHARE, 0.01))
    assert [p.params["grid"] for p in parts] == [[[0, 1]], [[2, 3]]]
    assert all(p.estimated_seconds <= (fixed + 2.5 * one) for p in parts)
    with pytest.raises(OverTimeBudgetError, match="one feature visualization image"):
        KIND.plan(parsed, plan_ctx(loaded, (fixed + 0.5 * one) / fv.PART_TIME_SHARE, 0.01))


def test_split_grid_keeps_xplique_product_order():
    grid = [[0, 1, 2], [5, 6]]
    for capacity in (1, 2, 3, 4, 6, 100):
        parts = split_grid(grid, capacity)
        assert all(math.prod(len(indexes) for indexes in part) <= capacity for part in parts)
        combos = [combo for part in parts for combo in itertools.product(*part)]
        assert combos == list(itertools.product(*grid))
    assert split_grid(grid, 3) == [[[0], [5, 6]], [[1], [5, 6]], [[2], [5, 6]]]
    assert split_grid(grid, 4) == [[[0, 1], [5, 6]], [[2], [5, 6]]]
    assert split_grid([[0, 1], [5, 6, 7]], 2) == [[[0], [5, 6]], [[0], [7]], [[1], [5, 6]], [[1], [7]]]


def test_a_model_that_is_not_keras_is_unsupported(loaded):
    other = SimpleNamespace(model=object(), card=loaded.card)
    with pytest.raises(UnsupportedModelError):
        KIND.plan(spec(), plan_ctx(other))


# ---------------------------------------------------------------- run and assemble
def test_a_tiny_run_writes_images_and_finite_curves_and_repeats_exactly(loaded):
    parsed = spec(steps=12, save_every=4, objectives=[
        {"class": "b"},
        {"sum": [{"class": "a"}, {"layer": "conv", "type": "channel", "indexes": [1, 2], "weight": -0.5}]},
        {"layer": "conv", "type": "direction", "direction": [1, -1, 0.5, 0]},
        {"layer": "conv", "type": "layer"}])
    parts = KIND.plan(parsed, plan_ctx(loaded))
    store = Store()
    summaries = [KIND.run_part(parsed, part, store.ctx(loaded, f"parts/{part.id}/")) for part in parts]
    labels = [image["label"] for s in summaries for image in s["images"]]
    assert labels == ["b logit", "a logit - 0.5×conv ch 1", "a logit - 0.5×conv ch 2", "conv direction",
                      "conv layer"]
    for summary in summaries:
        json.dumps(summary, allow_nan=False)
        assert summary["curve"] in store.files
        for image in summary["images"]:
            assert [step for step, _ in image["values"]] == [4, 8, 12]
            assert all(np.isfinite(value) for _, value in image["values"])
            assert decode_png(store.files[image["image"]]).shape == (16, 16, 3)
    assert summaries[1]["images"][0]["image"].endswith("/image-00-a-logit-minus-0.5xconv-ch-1.png")
    # The class term's value is the logit itself, evaluated on the saved image.
    image = decode_png(store.files[summaries[0]["images"][0]["image"]]) / 255.0
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.5, 0.6, 0.7])
    logit = float(loaded.model(((image - mean) / std)[None].astype(np.float32))[0, 1])
    assert summaries[0]["images"][0]["values"][-1][1] == pytest.approx(logit, abs=0.05 + 0.05 * abs(logit))
    again = KIND.run_part(parsed, parts[1], Store().ctx(loaded, "x/"))
    assert [i["values"] for i in again["images"]] == [i["values"] for i in summaries[1]["images"]]


def test_assembly_grids_what_succeeded_and_lists_what_failed(loaded):
    # Xplique's other options on the way: warm-up with open ReLU gradients, regularizers, no FFT.
    parsed = spec(steps=8, warmup_steps=2, use_fft=False, regularizers={"l1": 0.1, "l2": 0.1, "total_variation": 1e-4},
                  objectives=[{"class": "a"}, {"class": "c"}, {"layer": "conv", "type": "channel", "indexes": [0, 1]}])
    parts = KIND.plan(parsed, plan_ctx(loaded))
    store = Store()
    outcomes = []
    for part in parts[:2]:
        summary = KIND.run_part(parsed, part, store.ctx(loaded, f"parts/{part.id}/"))
        outcomes.append(PartOutcome(id=part.id, kind=part.kind, title=part.title, status="succeeded",
                                    summary=summary, finished_at="2026-01-01T00:00:00Z"))
    outcomes.append(PartOutcome(id=parts[2].id, kind=parts[2].kind, title=parts[2].title, status="failed",
                                error={"code": "over_time_budget"}, finished_at="2026-01-01T00:00:00Z"))
    section = KIND.assemble(parsed, outcomes, store.ctx(loaded, "feature_visualization/"))
    json.dumps(section, allow_nan=False)
    assert [row["label"] for row in section["images"]] == ["a logit", "c logit"]
    for row in section["images"]:
        values = [value for _, value in row["values"]]
        assert (row["first"], row["last"], row["max"]) == (values[0], values[-1], max(values))
        assert row["rise"] == pytest.approx(values[-1] - values[0])
    grid = decode_png(store.files[section["grid"]])
    assert grid.shape[1] > 2 * fv_cell() and section["curves"] in store.files
    nothing = KIND.assemble(parsed, outcomes[2:], store.ctx(loaded, "empty/"))
    assert nothing["images"] == [] and "grid" not in nothing


def fv_cell():
    from explain_core.insights.pictures import MIN_CELL

    return MIN_CELL
