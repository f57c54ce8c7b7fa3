"""TCAV on the demo model (the issue's demo): the concept "round" against random images, at the demo job's
small settings (devtools.insights_demo: 6 random sets of 60 images, 60 images per class, layer last_conv).

The random sets are random draws of the model's training distribution, the concept set the same draws with
a round thing added (devtools/concept_images). The round concept's TCAV score must be significant for
``circle`` and not for ``square`` (two-sided t-test against the random CAVs' scores, p < 0.05 with
Bonferroni over the two classes tested: p < 0.025). The job seed and the images' seed are the same, as in
the demo; seeds 0, 1 and the demo's 7 are tested.

Measured at these settings over seeds 0-23: circle is significant at every seed (0.72-0.87 vs random
0.46-0.54, p <= 0.012); square is not at 21 of 24 (0.38-0.62 vs 0.44-0.57): seeds 10 (0.38, below random),
19 and 23 (0.61, 0.62) are, as the t-test sees only the random sets' variance, not the concept or class
images' own sampling. At the full settings (10 random sets of 100 images) circle is significant at every
seed 0-23 and square is not at 22 of 24 (seeds 14 and 16: 0.40 and 0.39, below random).
"""

import time
from types import SimpleNamespace

import keras
import pytest

from devtools import concept_images, demo_model, insights_demo
from explain_core.insights.base import PartOutcome, PlanContext
from explain_core.insights.concepts import Tcav, TcavSpec
from explain_core.model_card import ModelCard

pytestmark = [pytest.mark.quality, pytest.mark.slow]

COUNT, RANDOM_SETS = insights_demo.TCAV_IMAGES[True], insights_demo.TCAV_RANDOM_SETS[True]
CLASSES = ["circle", "square"]


@pytest.fixture(scope="module")
def loaded():
    directory = demo_model.ensure_demo_model()
    return SimpleNamespace(model=keras.saving.load_model(directory / "model.keras"),
                           card=ModelCard.model_validate_json((directory / "card.json").read_text()),
                           background=None)


def run_tcav(loaded, seed: int) -> tuple[dict, dict]:
    """The demo's TCAV (its image sets and spec at ``seed``), every part run in this process."""
    sets = {"round/": concept_images.round_concept(COUNT, seed)}
    sets.update({f"random-{i}/": images for i, images in
                 enumerate(concept_images.random_sets(RANDOM_SETS, COUNT, seed))})
    sets.update({f"{name}/": concept_images.class_images(name, COUNT, seed) for name in CLASSES})
    spec = TcavSpec.model_validate({
        "layer": "last_conv", "concept": {"name": "round", "images": {"prefix": "round/", "count": COUNT}},
        "random": [{"prefix": f"random-{i}/", "count": COUNT} for i in range(RANDOM_SETS)],
        "classes": {name: {"prefix": f"{name}/", "count": COUNT} for name in CLASSES}})
    kind, files = Tcav(), {}
    ctx = concept_images.local_context(loaded, sets, seed=seed, files=files)
    parts = kind.plan(spec, PlanContext(loaded, seconds_per_pass=0.002, max_part_seconds=600))
    outcomes = [PartOutcome(id=part.id, kind=kind.name, title=part.title, status="succeeded",
                            summary=kind.run_part(spec, part, ctx), finished_at="now") for part in parts]
    return kind.assemble(spec, outcomes, ctx), files


def test_demo_settings_match_this_test():
    spec = insights_demo.spec(small=True)["tcav"]
    assert len(spec["random"]) == RANDOM_SETS and spec["concept"]["images"]["count"] == COUNT
    assert {image_set["count"] for image_set in [*spec["random"], *spec["classes"].values()]} == {COUNT}
    assert spec.get("layer") in (None, "last_conv") and list(spec["classes"]) == CLASSES


@pytest.mark.parametrize("seed", [0, 1, insights_demo.SEED])
def test_round_is_significant_for_circle_not_for_square(loaded, seed):
    started = time.perf_counter()
    section, files = run_tcav(loaded, seed)
    seconds = time.perf_counter() - started
    rows = {row["class"]: row for row in section["classes"]}
    for name, row in rows.items():
        print(f"seed {seed} {name}: TCAV {row['score_mean']:.3f} ± {row['score_std']:.3f}, random "
              f"{row['random_mean']:.3f} ± {row['random_std']:.3f}, p = {row['p_value']:.3g}, "
              f"significant {row['significant']}")
    print(f"{seconds:.1f} s")
    assert section["bonferroni"] == {"hypotheses": 2, "threshold": 0.025}
    assert rows["circle"]["p_value"] < 0.025 and rows["circle"]["significant"]
    assert rows["circle"]["score_mean"] > rows["circle"]["random_mean"] + 0.15
    assert rows["square"]["p_value"] >= 0.025 and not rows["square"]["significant"]
    assert files[section["chart"]][:8] == b"\x89PNG\r\n\x1a\n"
    assert seconds < 30
