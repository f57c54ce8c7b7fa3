"""Example-based insights on the demo model, against a model-blind baseline measured in the same test.

Case base: 120 held-out shapes images (seed 77, never trained on), 30 per class of circle, square,
triangle and none, labelled by their folder. Queries: the 12 demo images (``demo_model.sample_images``).

Similar examples: the share of the k=5 nearest cases whose label is the query's true class. Chance is
1/4 (a balanced case base of 4 classes). The baseline is the same search on the raw model input
(``projection: none``, pixels), which ignores the model: textured backgrounds dominate pixel distances.
Measured: 0.867 in last_conv (max-pooled, as the model pools it), 0.233 in pixels (chance). Thresholds
sit about 12 % below the measured figures, which are reproducible run to run (no random draw).

Prototypes (ProtoGreedy, 4 per class, last_conv, RBF gamma by the median heuristic): (1) the case base
labelled by the model's predictions (the choice for an unlabelled set such as the card's background), so
a class's prototypes are of that class only if the model and the search agree with the truth: measured,
all carry the class's true label but one of the four triangle prototypes (mean 0.94); (2) they represent
their class: their weighted MMD to the class is below that of 91-100 % of random 4-case subsets (with
Xplique's default gamma, 1 / number of features, only 36 % for circles: see examples._median_gamma);
(3) they summarise it: 80 held-out images (seed 2025) classified by their nearest prototype (folder labels)
are right 0.900 of the time in last_conv against 0.250 (chance) with prototypes found in pixel space.
"""

import time

import numpy as np
import pytest

from devtools import demo_model, shapes
from devtools.sanity import demo_loaded
from explain_core.insights.base import ImageBatch, PartContext, PartOutcome, PlanContext
from explain_core.insights.examples import Prototypes, SimilarExamples, _projection

pytestmark = [pytest.mark.quality, pytest.mark.slow]

CASES, CASES_SEED, QUERIES, K = 120, 77, 12, 5
HELD_OUT, HELD_OUT_SEED = 80, 2025
CHANCE = 1 / len(shapes.MODEL_CLASSES)


@pytest.fixture(scope="module")
def demo():
    from explain_core.attribution import to_model_input
    from explain_core.images import resize

    loaded = demo_loaded("gradient")
    size = loaded.card.input_height

    def batch(images, labels, prefix):
        pixels = np.stack([resize(image, size, size) for image in images])
        names = [shapes.MODEL_CLASSES[label] for label in labels]
        keys = [f"{prefix}{name}/{index}.png" for index, name in enumerate(names)]
        return ImageBatch(inputs=to_model_input(pixels, loaded.card), pixels=pixels, keys=keys, labels=names)

    case_images, case_labels, _ = shapes.dataset(CASES, seed=CASES_SEED, with_none=True)
    query_images, query_labels, _ = demo_model.sample_images(QUERIES)
    held_out_images, held_out_labels, _ = shapes.dataset(HELD_OUT, seed=HELD_OUT_SEED, with_none=True)
    sets = {"cases/": batch(case_images, case_labels, "cases/"),
            "queries/": batch(query_images, query_labels, "queries/"),
            "held-out/": batch(held_out_images, held_out_labels, "held-out/")}
    return loaded, sets


class Run:
    """Plans, runs every part and assembles one kind, as the job does, with files kept in memory."""

    def __init__(self, loaded, sets):
        self.loaded, self.sets, self.files = loaded, sets, {}

    def context(self, folder):
        def images(image_set, labelled=False):
            found = self.sets[image_set.prefix]
            return found if labelled else ImageBatch(found.inputs, found.pixels, found.keys)

        def put(name, body, content_type):
            self.files[f"{folder}/{name}"] = body
            return f"{folder}/{name}"

        return PartContext(loaded=self.loaded, seed=0, batch_size=32, images=images, put=put,
                           read=self.files.__getitem__, remaining_seconds=lambda: None, seconds_per_pass=0.003)

    def __call__(self, kind, spec):
        outcomes = []
        for part in kind.plan(spec, PlanContext(self.loaded, seconds_per_pass=0.003, max_part_seconds=600)):
            summary = kind.run_part(spec, part, self.context(part.id))
            files = {key.split("/", 1)[1]: key for key in self.files if key.startswith(part.id + "/")}
            outcomes.append(PartOutcome(id=part.id, kind=kind.name, title=part.title, status="succeeded",
                                        summary=summary, files=files, finished_at="now"))
        return kind.assemble(spec, outcomes, self.context(kind.name))


def _true_label(key: str) -> str:
    return key.split("/")[1]


def test_similar_examples_share_the_query_class_far_above_chance_and_pixels(demo):
    loaded, sets = demo
    scores, seconds = {}, {}
    for projection in ("latent", "none"):
        spec = SimilarExamples.Spec.model_validate({
            "queries": {"prefix": "queries/", "count": QUERIES}, "cases": {"prefix": "cases/", "count": CASES},
            "k": K, "projection": projection})
        started = time.perf_counter()
        section = Run(loaded, sets)(SimilarExamples(), spec)
        seconds[projection] = time.perf_counter() - started
        assert len(section["queries"]) == QUERIES
        scores[projection] = float(np.mean([[e["label"] == _true_label(q["key"]) for e in q["examples"]]
                                            for q in section["queries"]]))
    print(f"\nsimilar examples, share of the {K} nearest of the query's class (chance {CHANCE:.2f}): "
          f"last_conv {scores['latent']:.3f}, pixels {scores['none']:.3f}; seconds {seconds}")
    assert scores["latent"] >= 0.75
    assert scores["latent"] >= scores["none"] + 0.4
    assert scores["none"] < 0.5  # the baseline really is blind: near chance


def test_prototypes_are_of_their_class_and_summarise_it(demo):
    loaded, sets = demo
    run = Run(loaded, sets)
    started = time.perf_counter()
    predicted = run(Prototypes(), Prototypes.Spec.model_validate(
        {"cases": {"prefix": "cases/", "count": CASES}, "labels": "predicted", "nb_prototypes": 4}))
    seconds = time.perf_counter() - started
    assert len(predicted["classes"]) == len(shapes.MODEL_CLASSES)
    purity = {c["class"]: float(np.mean([_true_label(p["key"]) == c["class"] for p in c["prototypes"]]))
              for c in predicted["classes"]}
    print(f"\nprototypes (predicted labels): share of each class's prototypes truly of that class {purity}; "
          f"{seconds:.1f} s")
    assert min(purity.values()) >= 0.5 and np.mean(list(purity.values())) >= 0.8

    # Prototypes represent their class better (lower MMD under the same kernel) than random cases of it.
    spec = Prototypes.Spec.model_validate({"cases": {"prefix": "cases/", "count": CASES}, "labels": "predicted",
                                           "nb_prototypes": 4})
    features = np.asarray(_projection(spec, run.context("features"))[0](sets["cases/"].inputs), dtype=np.float64)
    rng = np.random.default_rng(0)
    beaten = {}
    for section in predicted["classes"]:
        members = np.flatnonzero(_predicted_labels(loaded, sets) == section["class"])
        random_mmd = [_mmd(features[members], features[rng.choice(members, 4, replace=False)], np.full(4, 0.25),
                           section["gamma"]) for _ in range(100)]
        beaten[section["class"]] = float(np.mean(section["mmd"] < np.asarray(random_mmd)))
    print(f"share of 100 random 4-case subsets of a class whose MMD is above its prototypes': {beaten}; "
          f"kernel means {[round(c['kernel_mean'], 2) for c in predicted['classes']]}")
    assert min(beaten.values()) >= 0.8

    accuracy = {}
    queries = sets["held-out/"]
    for projection in ("latent", "none"):
        spec = Prototypes.Spec.model_validate({"cases": {"prefix": "cases/", "count": CASES}, "nb_prototypes": 4,
                                               "projection": projection})
        section = run(Prototypes(), spec)
        indices = [p["index"] for c in section["classes"] for p in c["prototypes"]]
        classes = [c["class"] for c in section["classes"] for _ in c["prototypes"]]
        project = _projection(spec, run.context("features"))[0]
        prototypes = np.asarray(project(sets["cases/"].inputs[indices]))
        features = np.asarray(project(queries.inputs))
        nearest = np.argmin(((features[:, None] - prototypes[None]) ** 2).sum(-1), axis=1)
        accuracy[projection] = float(np.mean([classes[n] == label for n, label in zip(nearest, queries.labels,
                                                                                     strict=True)]))
    print(f"{HELD_OUT} held-out images classified by their nearest prototype: last_conv {accuracy['latent']:.3f}, "
          f"pixels {accuracy['none']:.3f} (chance {CHANCE:.2f})")
    assert accuracy["latent"] >= 0.75 and accuracy["latent"] >= accuracy["none"] + 0.3


def _predicted_labels(loaded, sets):
    from explain_core.attribution import raw_outputs

    outputs = raw_outputs(loaded.model, sets["cases/"].inputs, loaded.card, 32)
    return np.asarray([loaded.card.class_name(int(i)) for i in np.argmax(outputs, axis=1)])


def _mmd(cases, prototypes, weights, gamma):
    def kernel(a, b):
        return np.exp(-gamma * ((a[:, None] - b[None]) ** 2).sum(-1))

    return kernel(cases, cases).mean() - 2 * kernel(cases, prototypes).mean(0) @ weights + \
        weights @ kernel(prototypes, prototypes) @ weights
