"""The insights job engine's pure parts: key layout, the registry-built spec, outcomes, pictures, the page."""

import json

import numpy as np
import pytest

from explain_core.errors import InvalidInsightsSpecError, InvalidKeyError
from explain_core.insights import pictures
from explain_core.insights.base import ImageSet, PartOutcome, PartPlan
from explain_core.insights.jobs import (
    PARTS_DIR,
    _current_outcome,
    _spread,
    api_spec_key,
    job_ref,
    part_message,
)
from explain_core.insights.kinds import BY_NAME, KINDS
from explain_core.insights.pictures import display_pixels
from explain_core.insights.report_page import report_page
from explain_core.insights.spec import MAX_SPEC_BYTES, InsightsSpec, parse_spec
from explain_core.keys import KeyLayout
from explain_core.model_card import ModelCard
from explain_core.settings import Settings

KEYS = KeyLayout(Settings(input_bucket="in", results_bucket="out", model_bucket="models"))


def test_a_spec_key_names_its_job_and_results_folder():
    job = job_ref(KEYS, "incoming/insights/shapes/v1/demo.json")
    assert (job.model, job.version, job.name, job.job_id) == ("shapes", "v1", "demo", None)
    assert job.results_prefix == "results/insights/shapes/v1/demo/"
    assert job.part_prefix('"9e1a"', "fv-0") == f"results/insights/shapes/v1/demo/{PARTS_DIR}9e1a/fv-0/"
    # A replaced spec's plan never shares its parts' folder (its ETag names it; a multipart ETag's "-2" kept).
    assert job.parts_prefix("9e1a5c-2") == f"results/insights/shapes/v1/demo/{PARTS_DIR}9e1a5c-2/"
    api = job_ref(KEYS, api_spec_key(KEYS, "shapes", "v1", "abc123"))
    assert api.spec_key == "incoming/insights/shapes/v1/jobs/abc123.json"
    assert (api.name, api.job_id) == ("jobs/abc123", "abc123")
    assert api.results_prefix == "results/insights/shapes/v1/jobs/abc123/"


@pytest.mark.parametrize("key", [
    "incoming/insights/shapes/v1/demo.txt",  # not a spec file
    "incoming/insights/shapes/v1/concepts/round/demo.json",  # a spec sits at the version's top or in jobs/
    "incoming/insights/shapes/v1/../demo.json",
    "incoming/insights/shapes/v1/.json",
    "incoming/insights/shapes/demo.json",  # no version
    "incoming/gradient/shapes/v1/demo.json",  # another family's prefix
    "incoming/insights/shapes/v1/jobs.json",  # its results would hold every API job's folder
])
def test_other_keys_are_refused_with_a_typed_error(key):
    with pytest.raises(InvalidKeyError):
        job_ref(KEYS, key)


def test_part_messages_name_the_plan_they_belong_to():
    job = job_ref(KEYS, "incoming/insights/shapes/v1/demo.json")
    body = json.loads(part_message(job, "etag1", "fv-0"))
    assert body == {"insights_part": {"spec_key": job.spec_key, "spec_etag": "etag1", "part": "fv-0"}}


def test_the_job_spec_has_one_optional_field_per_registered_kind():
    assert set(BY_NAME) == {kind.name for kind in KINDS}
    fields = InsightsSpec.model_fields
    for kind in KINDS:
        assert kind.name in fields and fields[kind.name].default is None
    assert {"seed", "title"} <= set(fields)


@pytest.mark.parametrize("body, problem", [
    (b"{}", "at least one insight"),
    (b"not json", "<file>"),
    (b'{"seed": -1, "feature_visualization": null}', "seed"),
    (b'{"unknown_kind": {}}', "unknown_kind"),
    (b'{"title": "x", "seed": 1e400}', "seed"),
])
def test_bad_specs_are_typed_errors_naming_the_problem(body, problem):
    with pytest.raises(InvalidInsightsSpecError) as caught:
        parse_spec(body)
    assert problem in caught.value.message
    assert caught.value.code == "invalid_insights_spec" and caught.value.status == 422


def test_a_spec_over_the_size_limit_is_refused_before_parsing():
    with pytest.raises(InvalidInsightsSpecError, match="limit"):
        parse_spec(b" " * (MAX_SPEC_BYTES + 1))


def test_image_sets_need_their_prefix_with_source_prefix_only():
    assert ImageSet(prefix="incoming/insights/shapes/v1/cases/").count == 32
    assert ImageSet(source="background").prefix is None
    with pytest.raises(ValueError):
        ImageSet(source="prefix")
    with pytest.raises(ValueError):
        ImageSet(source="background", prefix="incoming/insights/x/")
    with pytest.raises(ValueError):
        ImageSet(prefix="incoming/insights/x/", count=10_000)


def test_an_outcome_of_another_plan_is_not_this_plans():
    outcome = PartOutcome(id="fv-0", kind="feature_visualization", title="t", status="succeeded",
                          finished_at="2026-12-01T00:00:00+00:00")
    document = {**outcome.model_dump(mode="json"), "spec_etag": "new"}
    assert _current_outcome(document, "new") == outcome
    assert _current_outcome(document, "old") is None
    assert _current_outcome({**outcome.model_dump(mode="json")}, "new") is None  # no etag: not trusted
    assert _current_outcome(None, "new") is None


def test_part_ids_are_key_segments():
    PartPlan(id="tcav-circle.0", kind="tcav", title="t", estimated_seconds=1.0)
    for bad in ("../x", "a/b", "", "UPPER"):
        with pytest.raises(ValueError):
            PartPlan(id=bad, kind="tcav", title="t", estimated_seconds=1.0)


def test_sets_larger_than_asked_are_spread_over_every_folder():
    items = [f"cases/{label}/{i}.png" for label in ("circle", "square", "triangle") for i in range(10)]
    chosen = _spread(items, 6)
    assert len(chosen) == 6 and {c.split("/")[1] for c in chosen} == {"circle", "square", "triangle"}
    assert _spread(items[:4], 6) == items[:4]


def test_display_pixels_undo_the_cards_preprocessing():
    card = ModelCard.model_validate({"name": "m", "version": "v", "input_height": 8, "input_width": 8,
                                     "class_names": ["a", "b"],
                                     "preprocessing": {"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3}})
    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    inputs = (pixels.astype(np.float32) / 255 - 0.5) / 0.5
    assert np.array_equal(display_pixels(inputs, card), pixels)


def test_an_image_grid_shows_every_image_where_its_cell_is():
    red, blue = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    grid = pictures.decode_png(pictures.image_grid([red, blue], ["red", "blue"], columns=2, title="two"))
    side = pictures.MIN_CELL
    top = pictures.TITLE_HEIGHT + pictures.GAP
    first = grid[top + side // 2, pictures.GAP + side // 2]
    second = grid[top + side // 2, 2 * pictures.GAP + side + side // 2]
    assert tuple(first) == (255, 0, 0) and tuple(second) == (0, 0, 255)
    with pytest.raises(ValueError):
        pictures.image_grid([red], ["a", "b"])


def test_the_report_page_escapes_what_the_user_wrote():
    prefix = "results/insights/m/v/j/"
    report = {
        "job": {"results_prefix": prefix}, "model": {"name": "m", "version": "v"},
        "title": "<script>alert(1)</script>", "status": "partial", "seconds": {"parts": 3.0},
        "kinds": {"feature_visualization": {"status": "partial", "pictures": [prefix + "fv/grid.png"]}},
        "parts": [{"id": "p", "kind": "feature_visualization", "title": "<b>x</b>", "status": "failed",
                   "error": {"message": "<img src=x onerror=1>"}}],
        "spec": {"title": "<script>"},
    }
    page = report_page(report).decode()
    assert "<script>" not in page and "<img src=x" not in page and "<b>x</b>" not in page
    assert "src='fv/grid.png'" in page  # relative to the job's folder
