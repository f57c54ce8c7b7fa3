"""Example-based insights (explain_core.insights.examples): specs, planning, a tiny run of each kind on a
small random Keras model, determinism, and the assembly when a part failed."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from explain_core.errors import InvalidInsightsSpecError, OverTimeBudgetError
from explain_core.insights.base import ImageBatch, PartContext, PartOutcome, PlanContext
from explain_core.insights.examples import MAX_QUERIES, Prototypes, SimilarExamples

REPO = Path(__file__).resolve().parents[2]
SIDE = 16
CLASSES = ["dark", "light"]


@pytest.fixture(scope="module")
def loaded():
    """A small random CNN whose last conv is max-pooled, as the demo model's is."""
    import keras

    from explain_core.model_card import ModelCard

    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIDE, SIDE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    outputs = keras.layers.Dense(len(CLASSES), name="logits")(x)
    card = ModelCard.model_validate({"name": "tiny", "version": "v1", "input_height": SIDE, "input_width": SIDE,
                                     "class_names": CLASSES, "cam_layer": "last_conv"})
    return SimpleNamespace(model=keras.Model(inputs, outputs), card=card)


def _images():
    """Two folders of flat-ish images: dark (low values) and light (high values)."""
    rng = np.random.default_rng(0)
    pixels, labels = [], []
    for index in range(10):
        label = CLASSES[index % 2]
        base = 40 if label == "dark" else 210
        pixels.append(np.clip(base + rng.normal(0, 25, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8))
        labels.append(label)
    pixels = np.stack(pixels)
    keys = [f"cases/{label}/{index}.png" for index, label in enumerate(labels)]
    return ImageBatch(inputs=(pixels / 127.5 - 1).astype(np.float32), pixels=pixels, keys=keys, labels=labels)


class Store:
    def __init__(self):
        self.files = {}

    def context(self, loaded, folder, remaining=None):
        cases = _images()
        queries = ImageBatch(cases.inputs[[1, 2, 5]], cases.pixels[[1, 2, 5]], [cases.keys[i] for i in (1, 2, 5)])

        def images(image_set, labelled=False):
            if image_set.prefix == "queries/":
                return queries
            return cases if labelled else ImageBatch(cases.inputs, cases.pixels, cases.keys)

        def put(name, body, content_type):
            key = f"{folder}/{name}"
            self.files[key] = body
            return key

        return PartContext(loaded=loaded, seed=0, batch_size=4, images=images, put=put, read=self.files.__getitem__,
                           remaining_seconds=lambda: remaining, seconds_per_pass=0.001)

    def outcome(self, part, summary, status="succeeded"):
        files = {key.split("/", 1)[1]: key for key in self.files if key.startswith(part.id + "/")}
        error = {"code": "over_time_budget", "message": "killed"} if status == "failed" else None
        return PartOutcome(id=part.id, kind=part.kind, title=part.title, status=status, summary=summary,
                           files=files if status == "succeeded" else {}, error=error, finished_at="now")


def _similar_spec(**changes):
    spec = {"queries": {"prefix": "queries/", "count": 3}, "cases": {"prefix": "cases/", "count": 10}, "k": 3}
    return SimilarExamples.Spec.model_validate({**spec, **changes})


def _prototypes_spec(**changes):
    return Prototypes.Spec.model_validate({"cases": {"prefix": "cases/", "count": 10}, "nb_prototypes": 2,
                                           **changes})


def test_top_level_imports_no_ml_library():
    code = ("import sys, explain_core.insights.examples; "
            "print([m for m in ('numpy', 'tensorflow', 'keras', 'xplique', 'PIL', 'matplotlib') if m in sys.modules])")
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'layers/explain_core/src'}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("changes, problem", [
    ({"queries": {"prefix": "q/", "count": MAX_QUERIES + 1}}, "less than or equal"),
    ({"cases": {"source": "background"}}, "labelled prefix"),
    ({"k": 0}, "greater than or equal"),
    ({"k": 21}, "less than or equal"),
    ({"distance": "hamming"}, "euclidean"),
    ({"projection": "none", "layer": "conv"}, "only with projection latent"),
    ({"pooling": "median"}, "auto"),
    ({"surprise": 1}, "Extra inputs"),
])
def test_similar_examples_spec_refuses(changes, problem):
    with pytest.raises(ValidationError, match=problem):
        _similar_spec(**changes)


@pytest.mark.parametrize("changes, problem", [
    ({"cases": {"source": "background"}}, "use labels predicted"),
    ({"nb_prototypes": 33}, "less than or equal"),
    ({"gamma": 0}, "greater than or equal"),
    ({"gamma": 1e4}, "less than or equal"),
    ({"classes": ["dark", "dark"]}, "must not repeat"),
    ({"classes": []}, "at least 1"),
    ({"method": "KMeans"}, "ProtoGreedy"),
])
def test_prototypes_spec_refuses(changes, problem):
    with pytest.raises(ValidationError, match=problem):
        _prototypes_spec(**changes)


def test_spec_defaults():
    spec = _similar_spec()
    assert (spec.projection, spec.layer, spec.pooling, spec.distance) == ("latent", None, "auto", "euclidean")
    minimal = SimilarExamples.Spec.model_validate({"queries": {"prefix": "q/"}, "cases": {"prefix": "c/"}})
    assert minimal.queries.count == 8 and minimal.k == 5
    background = _prototypes_spec(cases={"source": "background", "count": 16}, labels="predicted")
    assert background.method == "ProtoGreedy" and background.gamma is None


def test_similar_examples_plan_splits_queries(loaded):
    plan_ctx = PlanContext(loaded, seconds_per_pass=0.01, max_part_seconds=600)
    parts = SimilarExamples().plan(_similar_spec(queries={"prefix": "queries/", "count": 10}), plan_ctx)
    assert [p.params for p in parts] == [{"first": 0, "count": 4}, {"first": 4, "count": 4},
                                         {"first": 8, "count": 2}]
    assert len({p.id for p in parts}) == 3 and all(0 < p.estimated_seconds < 600 for p in parts)
    # A slow model gets fewer queries per part, and a part that cannot fit is refused at planning.
    slow = SimilarExamples().plan(_similar_spec(queries={"prefix": "q/", "count": 4}),
                                  PlanContext(loaded, seconds_per_pass=1.0, max_part_seconds=40))
    assert [p.params["count"] for p in slow] == [2, 2]
    with pytest.raises(OverTimeBudgetError):
        SimilarExamples().plan(_similar_spec(), PlanContext(loaded, seconds_per_pass=5.0, max_part_seconds=60))
    with pytest.raises(InvalidInsightsSpecError, match="no layer"):
        SimilarExamples().plan(_similar_spec(layer="nope"), plan_ctx)
    with pytest.raises(InvalidInsightsSpecError, match="no layer"):
        Prototypes().plan(_prototypes_spec(layer="nope"), plan_ctx)


def test_prototypes_plan_one_part_per_class(loaded):
    plan_ctx = PlanContext(loaded, seconds_per_pass=0.01, max_part_seconds=600)
    parts = Prototypes().plan(_prototypes_spec(), plan_ctx)
    assert [p.params["class"] for p in parts] == CLASSES and len({p.id for p in parts}) == 2
    assert [p.params["class"] for p in Prototypes().plan(_prototypes_spec(classes=["light"]), plan_ctx)] == ["light"]
    with pytest.raises(InvalidInsightsSpecError, match="unknown classes"):
        Prototypes().plan(_prototypes_spec(classes=["purple"]), plan_ctx)
    with pytest.raises(OverTimeBudgetError):
        Prototypes().plan(_prototypes_spec(), PlanContext(loaded, seconds_per_pass=5.0, max_part_seconds=60))


def test_pooling_follows_the_model(loaded):
    from explain_core.insights.examples import _pooling

    assert _pooling(loaded.model, loaded.model.get_layer("last_conv"), "auto") == "max"
    assert _pooling(loaded.model, loaded.model.get_layer("conv"), "auto") == "average"
    assert _pooling(loaded.model, loaded.model.get_layer("conv"), "max") == "max"


@pytest.mark.parametrize("projection", ["latent", "none"])
def test_similar_examples_tiny_run(loaded, projection):
    from explain_core.insights.pictures import decode_png

    kind, store = SimilarExamples(), Store()
    spec = _similar_spec(projection=projection)
    part = kind.plan(spec, PlanContext(loaded, 0.001, 600))[0]
    summary = kind.run_part(spec, part, store.context(loaded, part.id))
    assert summary["queries"] == 3 and set(summary) >= {"mean_label_agreement", "mean_prediction_agreement"}
    results = json.loads(store.files[f"{part.id}/examples.json"])
    cases = _images()
    for result, index in zip(results, (1, 2, 5), strict=True):
        # Each query is in the case base: it is its own nearest case, at distance 0.
        first = result["examples"][0]
        assert first["index"] == index and first["key"] == cases.keys[index] and first["distance"] < 1e-3
        assert [e["distance"] for e in result["examples"]] == sorted(e["distance"] for e in result["examples"])
        assert len(result["examples"]) == 3 and result["predicted"] in CLASSES
        assert {e["label"] for e in result["examples"]} <= set(CLASSES)
        picture = decode_png(store.files[result["picture"]])
        assert picture.ndim == 3 and picture.shape[1] > 4 * 96
    if projection == "none":
        # In pixel space the dark and light folders are far apart: every neighbour is from the query's folder.
        for result in results:
            query_label = result["key"].split("/")[1]
            assert [e["label"] for e in result["examples"]] == [query_label] * 3
    thumbnails = np.load(io.BytesIO(store.files[f"{part.id}/thumbnails.npy"]), allow_pickle=False)
    assert thumbnails.shape == (3, 4, SIDE, SIDE, 3) and thumbnails.dtype == np.uint8


def test_similar_examples_part_is_deterministic(loaded):
    kind, spec = SimilarExamples(), _similar_spec(distance="cosine")
    part = kind.plan(spec, PlanContext(loaded, 0.001, 600))[0]
    runs = []
    for _ in range(2):
        store = Store()
        runs.append((kind.run_part(spec, part, store.context(loaded, part.id)),
                     store.files[f"{part.id}/examples.json"]))
    assert runs[0] == runs[1]


def test_similar_examples_refuses_a_part_without_time(loaded):
    kind, spec = SimilarExamples(), _similar_spec()
    part = kind.plan(spec, PlanContext(loaded, 0.001, 600))[0]
    with pytest.raises(OverTimeBudgetError):
        kind.run_part(spec, part, Store().context(loaded, part.id, remaining=1.0))


def test_similar_examples_assembly_with_a_failed_part(loaded):
    from explain_core.insights.pictures import decode_png

    kind, store = SimilarExamples(), Store()
    spec = _similar_spec(queries={"prefix": "queries/", "count": 6}, k=2)
    parts = kind.plan(spec, PlanContext(loaded, 0.001, 600))
    assert len(parts) == 2
    # The second part asks for queries 5-6 of a prefix holding 3: it succeeds with nothing to show.
    outcomes = [store.outcome(parts[0], kind.run_part(spec, parts[0], store.context(loaded, parts[0].id))),
                store.outcome(parts[1], {}, status="failed")]
    section = kind.assemble(spec, outcomes, store.context(loaded, kind.name))
    json.dumps(section, allow_nan=False)
    assert [q["query"] for q in section["queries"]] == [0, 1, 2]
    assert section["space"] == "last_conv, max-pooled" and 0 <= section["mean_label_agreement"] <= 1
    overview = decode_png(store.files[section["overview"]])
    assert overview.shape[0] > 3 * 96 and section["overview"].startswith(kind.name + "/")
    empty = kind.run_part(spec, parts[1], store.context(loaded, parts[1].id))
    assert empty == {"queries": 0, "first": 4}


@pytest.mark.parametrize("method", ["ProtoGreedy", "MMDCritic", "ProtoDash"])
def test_prototypes_tiny_run(loaded, method):
    kind, store = Prototypes(), Store()
    spec = _prototypes_spec(method=method, nb_prototypes=3)
    part = kind.plan(spec, PlanContext(loaded, 0.001, 600))[1]
    summary = kind.run_part(spec, part, store.context(loaded, part.id))
    assert summary["class"] == "light" and summary["cases"] == 5 and summary["prototypes"] == 3
    assert np.isfinite(summary["mmd"]) and summary["mmd"] >= -1e-6 and 0 < summary["kernel_mean"] <= 1
    prototypes = json.loads(store.files[f"{part.id}/prototypes.json"])
    assert len({p["index"] for p in prototypes}) == 3 and all(p["label"] == "light" for p in prototypes)
    assert all(p["index"] % 2 == 1 for p in prototypes)  # the light images are the odd ones
    assert sum(p["weight"] for p in prototypes) == pytest.approx(1.0, abs=1e-5)
    assert all(p["weight"] >= 0 for p in prototypes)
    assert f"{part.id}/prototypes.png" in store.files


def test_prototypes_with_predicted_labels_and_fewer_cases_than_asked(loaded):
    kind, store = Prototypes(), Store()
    spec = _prototypes_spec(labels="predicted", nb_prototypes=32)
    outcomes = []
    for part in kind.plan(spec, PlanContext(loaded, 0.001, 600)):
        try:
            summary = kind.run_part(spec, part, store.context(loaded, part.id))
        except InvalidInsightsSpecError:  # the random model may predict one class only
            outcomes.append(store.outcome(part, {}, status="failed"))
            continue
        assert summary["prototypes"] == summary["cases"] and summary["predicted_as_class"] == 1.0
        outcomes.append(store.outcome(part, summary))
    assert sum(o.status == "succeeded" for o in outcomes) >= 1
    assert sum(o.summary.get("cases", 0) for o in outcomes) == 10


def test_prototypes_assembly_with_a_failed_part(loaded):
    from explain_core.insights.pictures import decode_png

    kind, store = Prototypes(), Store()
    spec = _prototypes_spec(nb_prototypes=2)
    parts = kind.plan(spec, PlanContext(loaded, 0.001, 600))
    outcomes = [store.outcome(parts[0], {}, status="failed"),
                store.outcome(parts[1], kind.run_part(spec, parts[1], store.context(loaded, parts[1].id)))]
    section = kind.assemble(spec, outcomes, store.context(loaded, kind.name))
    json.dumps(section, allow_nan=False)
    assert [c["class"] for c in section["classes"]] == ["light"] and len(section["classes"][0]["prototypes"]) == 2
    assert decode_png(store.files[section["overview"]]).ndim == 3
    nothing = kind.assemble(spec, [store.outcome(p, {}, status="failed") for p in parts],
                            store.context(loaded, kind.name))
    assert nothing["classes"] == [] and "overview" not in nothing


def test_search_batches_shrink_in_large_spaces_without_changing_results(loaded, monkeypatch):
    from explain_core.insights import examples

    kind, spec = SimilarExamples(), _similar_spec(projection="none")
    part = kind.plan(spec, PlanContext(loaded, 0.001, 600))[0]
    runs = []
    for limit in (examples.MAX_SEARCH_FLOATS, 3 * SIDE * SIDE * 3 * 2):  # batches of 4, then of 2 cases
        monkeypatch.setattr(examples, "MAX_SEARCH_FLOATS", limit)
        store = Store()
        kind.run_part(spec, part, store.context(loaded, part.id))
        runs.append(json.loads(store.files[f"{part.id}/examples.json"]))
    assert [[e["index"] for e in r["examples"]] for r in runs[0]] == [[e["index"] for e in r["examples"]]
                                                                      for r in runs[1]]


def test_kernel_matrix_by_blocks():
    import tensorflow as tf

    from explain_core.insights.examples import _KernelMatrix

    def rbf(a, b):
        return tf.exp(-0.1 * tf.reduce_sum((a[:, None] - b[None]) ** 2, axis=-1))

    first = tf.random.stateless_normal((7, 3), seed=(1, 2))
    second = tf.random.stateless_normal((5, 3), seed=(3, 4))
    np.testing.assert_allclose(_KernelMatrix(rbf, 2).matrix(first, second), rbf(first, second).numpy(), rtol=1e-6)


def test_unlabelled_case_base_is_refused(loaded):
    kind, spec, store = SimilarExamples(), _similar_spec(), Store()
    part = kind.plan(spec, PlanContext(loaded, 0.001, 600))[0]
    ctx = store.context(loaded, part.id)
    unlabelled = ctx.images
    ctx.images = lambda image_set, labelled=False: unlabelled(image_set)
    with pytest.raises(InvalidInsightsSpecError, match="label folders"):
        kind.run_part(spec, part, ctx)
    with pytest.raises(InvalidInsightsSpecError, match="label folders"):
        Prototypes().run_part(_prototypes_spec(), Prototypes().plan(_prototypes_spec(), PlanContext(
            loaded, 0.001, 600))[0], ctx)


def test_median_gamma():
    from explain_core.insights.examples import _median_gamma

    # Points 0, 2 and 4 on a line: squared distances 4, 16 and 4, median 4.
    assert _median_gamma(np.asarray([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]])) == pytest.approx(0.25)
    assert _median_gamma(np.ones((3, 5))) == pytest.approx(1 / 5)  # identical cases: Xplique's default
    assert _median_gamma(np.ones((1, 4))) == pytest.approx(1 / 4)
