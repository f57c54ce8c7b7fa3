"""Concept insights: TCAV (a named concept, tested for its influence on classes) and CRAFT (concepts found
in the model's activations, ranked by importance).

Both use Xplique's :mod:`xplique.concepts`: ``Cav`` and ``Tcav`` work on Keras 3 as they are (``Cav``
builds ``keras.Model(model.inputs, layer.output)``, which Keras 3 allows; ``Tcav`` watches the layer's
output on the whole model). ``CraftTf`` needs the model cut in two at a layer, which Keras 3 cannot do
from an intermediate tensor: :func:`explain_core.model_split.split_at` does it.
"""

import contextlib
import io
import time
import warnings
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from explain_core.errors import (
    InvalidInsightsSpecError,
    InvalidModelError,
    OverTimeBudgetError,
    UnsupportedModelError,
)
from explain_core.insights.base import (
    ImageSet,
    InsightKind,
    PartContext,
    PartOutcome,
    PartPlan,
    PlanContext,
    SpecModel,
    class_indexes,
    keras_image_model,
    model_layer,
)

#: Classes one TCAV or CRAFT spec may test.
MAX_CLASSES = 20
#: Random counter-example sets of a TCAV spec (the paper uses tens to hundreds; each costs CAVs and scores).
MAX_RANDOM_SETS = 20
#: An image set needs this many images: Cav holds out 20 % for its test split and SGD needs both sets in
#: its training split.
MIN_SET_IMAGES = 5
#: A part is planned to use at most this share of ``max_part_seconds`` (estimates are rough).
PART_TIME_SHARE = 0.8
#: Per part: model warm-up, tf.function traces, reading the image sets (seconds).
PART_OVERHEAD_SECONDS = 5.0
#: Fitting one CAV (SGD on the flattened activations) besides its forward passes (seconds).
CAV_FIT_SECONDS = 0.3
#: A forward pass relative to ``seconds_per_pass`` (a forward and a backward pass).
FORWARD_SHARE = 0.5
#: Fitting CRAFT's NMF, besides the forward passes (seconds).
NMF_SECONDS = 5.0

ClassName = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class ConceptSet(SpecModel):
    """A named concept and its example images."""

    name: str = Field(min_length=1, max_length=60, pattern=r"^[^\x00-\x1f]+$", description='"round", "striped"')
    images: ImageSet = Field(description="Images showing the concept")


class TcavSpec(SpecModel):
    """Test one concept's influence on classes (Kim et al. 2018)."""

    layer: str | None = Field(default=None, min_length=1, max_length=200,
                              description="The layer whose activations hold the concept; default the card's cam_layer")
    concept: ConceptSet
    random: list[ImageSet] = Field(
        min_length=2, max_length=MAX_RANDOM_SETS,
        description="Random counter-example sets (prefixes of random images, without the concept): a CAV of the "
                    "concept against each, and CAVs of each against the next, give the two samples of the t-test")
    classes: dict[ClassName, ImageSet] = Field(
        min_length=1, max_length=MAX_CLASSES, description="Class name (of the card) -> images of that class")
    alpha: float = Field(default=0.05, gt=0, le=0.5, description="Significance level, before Bonferroni's correction")
    runs: int = Field(default=1, ge=1, le=5, description="CAVs trained per random set, each with its own seed "
                                                         "(train/test split and SGD order)")


class Tcav(InsightKind):
    """Testing with Concept Activation Vectors: the share of a class's images whose class score rises when
    the layer's activations move towards the concept, tested against random concepts.

    Ref. Kim et al., Interpretability Beyond Feature Attribution: Quantitative Testing with Concept
    Activation Vectors (TCAV), ICML 2018. https://arxiv.org/abs/1711.11279

    A CAV is trained of the concept against each random set, and of each random set ``i`` against the
    next one (``i + 1``, cyclically): the TCAV scores of both groups on a class are compared by a two-sided
    t-test (``scipy.stats.ttest_ind``, as the paper's implementation). One hypothesis is tested per class,
    so the paper's Bonferroni correction applies: a class is significant when ``p < alpha / classes``.
    """

    name = "tcav"
    title = "Concept testing (TCAV)"
    reference = "Kim et al., TCAV, ICML 2018; xplique.concepts.Cav, Tcav"
    Spec = TcavSpec

    # ------------------------------------------------------------------ plan
    def plan(self, spec: TcavSpec, ctx: PlanContext) -> list[PartPlan]:
        model = keras_image_model(ctx.loaded, "concept insights")
        layer = model_layer(model, ctx.card, spec.layer, "tcav.layer").name
        labels = class_indexes(ctx.card, list(spec.classes), "tcav.classes")
        budget = ctx.max_part_seconds * PART_TIME_SHARE
        parts = []
        for number, (name, images) in enumerate(spec.classes.items()):
            batches = _random_batches(spec, images.count, ctx.seconds_per_pass, budget)
            for batch in batches:
                estimate = tcav_seconds(spec, batch, images.count, ctx.seconds_per_pass)
                where = f"random sets {batch[0]}-{batch[-1]}" if len(batches) > 1 else f"{len(batch)} random sets"
                parts.append(PartPlan(
                    id=f"tcav-{number:02d}-{len(parts):03d}", kind=self.name,
                    title=f"TCAV {spec.concept.name} vs {where} for {name}",
                    params={"class": name, "label": labels[name], "layer": layer, "random": batch},
                    estimated_seconds=round(estimate, 3)))
        return parts

    # ------------------------------------------------------------------ run
    def run_part(self, spec: TcavSpec, part: PartPlan, ctx: PartContext) -> dict:
        import numpy as np
        from sklearn.linear_model import SGDClassifier
        from xplique.concepts import Cav
        from xplique.concepts import Tcav as XpliqueTcav

        from explain_core.modalities.base import check_finite

        started = time.perf_counter()
        model = keras_image_model(ctx.loaded, "concept insights")
        layer, label = part.params["layer"], part.params["label"]
        count = len(spec.random)

        def images(image_set: ImageSet, what: str):
            batch = ctx.images(image_set)
            if len(batch) < MIN_SET_IMAGES:
                raise InvalidInsightsSpecError(f"tcav: {what} has {len(batch)} images; it needs {MIN_SET_IMAGES}",
                                               images=len(batch), minimum=MIN_SET_IMAGES)
            return batch.inputs

        concept = images(spec.concept.images, f"concept {spec.concept.name!r}")
        tested = images(spec.classes[part.params["class"]], f"class {part.params['class']!r}")

        # One Cav for the part: each Cav builds its own bottleneck model, whose first predict traces a new
        # function (~0.4 s a CAV); only its classifier changes from one CAV to the next.
        extractor = Cav(model, layer, batch_size=ctx.batch_size)

        def cav(positive, negative, role: int, index: int, run: int):
            seed = _seed(ctx.seed, role, index, run)
            # Cav's train/test split draws from NumPy's global generator: seeded, a redelivered part trains the
            # same CAV. The classifier is Xplique's default (the paper's SGD parameters), seeded.
            np.random.seed(seed)
            extractor.classifier = SGDClassifier(alpha=0.01, max_iter=1_000, tol=1e-3, random_state=seed)
            with contextlib.redirect_stdout(io.StringIO()):  # Cav's predict calls print Keras progress bars
                return extractor(positive, negative)

        tcav = XpliqueTcav(model, layer, batch_size=ctx.batch_size)
        concept_scores, random_scores, pairs = [], [], []
        for index in part.params["random"]:
            negative = images(spec.random[index], f"random set {index}")
            following = images(spec.random[(index + 1) % count], f"random set {(index + 1) % count}")
            for run in range(spec.runs):
                concept_scores.append(float(_score(tcav, tested, label, cav(concept, negative, 0, index, run))))
                random_scores.append(float(_score(tcav, tested, label, cav(negative, following, 1, index, run))))
                pairs.append([index, (index + 1) % count, run])
        check_finite(concept_scores + random_scores, "TCAV scores", part=part.id)
        return {"class": part.params["class"], "layer": layer, "images": int(len(tested)),
                "concept_scores": concept_scores, "random_scores": random_scores, "pairs": pairs,
                "seconds": round(time.perf_counter() - started, 3)}

    # ------------------------------------------------------------------ assemble
    def assemble(self, spec: TcavSpec, parts: list[PartOutcome], ctx: PartContext) -> dict:
        import json

        hypotheses = len(spec.classes)
        threshold = spec.alpha / hypotheses
        rows = []
        for number, name in enumerate(spec.classes):
            mine = sorted((p for p in parts if p.id.startswith(f"tcav-{number:02d}-")), key=lambda p: p.id)
            failed = [p for p in mine if p.status == "failed"]
            if failed or not mine:
                rows.append({"class": name, "status": "failed",
                             "errors": [{"id": p.id, "error": p.error} for p in failed]})
                continue
            concept = [s for p in mine for s in p.summary["concept_scores"]]
            random = [s for p in mine for s in p.summary["random_scores"]]
            p_value = tcav_p_value(concept, random)
            rows.append({"class": name, "status": "succeeded", **_stats(concept, "score"),
                         "scores": [round(s, 6) for s in concept], **_stats(random, "random"),
                         "random_scores": [round(s, 6) for s in random], "p_value": p_value,
                         "significant": p_value < threshold, "images": mine[0].summary["images"]})
        layer = next((p.summary["layer"] for p in parts if p.status == "succeeded"), spec.layer)
        section = {
            "kind": self.name, "title": self.title, "reference": self.reference, "layer": layer,
            "concept": spec.concept.name, "random_sets": len(spec.random), "runs": spec.runs, "alpha": spec.alpha,
            "bonferroni": {"hypotheses": hypotheses, "threshold": threshold},
            "classes": rows,
        }
        section["scores"] = ctx.put("scores.json", json.dumps(section, indent=2, allow_nan=False).encode(),
                                    "application/json")
        if any(row["status"] == "succeeded" for row in rows):
            section["chart"] = ctx.put("tcav.png", tcav_chart(rows, spec.concept.name, layer, threshold), "image/png")
        return section


def _score(tcav, inputs, label: int, cav) -> float:
    """Xplique's TCAV score; the layer is unwatched again if it raised (the model stays loaded for the next part)."""
    try:
        return tcav.score(inputs, label, cav)
    finally:
        layer = tcav.target_layer
        if hasattr(layer, "result"):  # Tcav.directional_derivative raised between watch and end_watch
            from xplique.commons import end_watch_layer

            end_watch_layer(layer)


def _seed(seed: int, role: int, index: int, run: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence([seed, role, index, run]).generate_state(1)[0] % (2**31 - 1))


def _stats(values: list[float], prefix: str) -> dict:
    import numpy as np

    return {f"{prefix}_mean": round(float(np.mean(values)), 6), f"{prefix}_std": round(float(np.std(values)), 6)}


def tcav_p_value(concept_scores: list[float], random_scores: list[float]) -> float:
    """Two-sided t-test of the concept's TCAV scores against the random CAVs' (equal variances, as the paper's
    implementation). Two constant samples have no variance: p is 1 when they are equal, 0 otherwise."""
    import numpy as np
    from scipy import stats

    if len(concept_scores) < 2 or len(random_scores) < 2:
        raise ValueError("a t-test needs two scores on each side")
    if np.ptp(concept_scores) == 0 and np.ptp(random_scores) == 0:  # t is 0/0 or infinite
        return 1.0 if concept_scores[0] == random_scores[0] else 0.0
    with warnings.catch_warnings():
        # One constant sample (every image's derivative positive) is fine with the pooled variance.
        warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        return float(stats.ttest_ind(concept_scores, random_scores).pvalue)


def tcav_seconds(spec: TcavSpec, batch: list[int], class_images: int, seconds_per_pass: float) -> float:
    """Estimated time of a part: per random set and run, two CAVs (each a forward pass of both its sets and
    a fit) and two scores (Xplique's Tcav takes a gradient of every class image per CAV)."""
    count = len(spec.random)
    forward = sum(spec.concept.images.count + 2 * spec.random[i].count + spec.random[(i + 1) % count].count
                  for i in batch)
    passes = spec.runs * (forward * FORWARD_SHARE + 2 * len(batch) * class_images)
    return PART_OVERHEAD_SECONDS + passes * seconds_per_pass + 2 * spec.runs * len(batch) * CAV_FIT_SECONDS


def _random_batches(spec: TcavSpec, class_images: int, seconds_per_pass: float, budget: float) -> list[list[int]]:
    """The random sets in consecutive batches, each part's estimate within ``budget``."""
    batches: list[list[int]] = [[]]
    for index in range(len(spec.random)):
        if tcav_seconds(spec, [index], class_images, seconds_per_pass) > budget:
            raise OverTimeBudgetError(
                f"tcav: one random set's CAVs and scores are estimated at "
                f"{tcav_seconds(spec, [index], class_images, seconds_per_pass):.0f} s; a part has {budget:.0f} s: "
                "use fewer images or runs", max_part_seconds=budget)
        if batches[-1] and tcav_seconds(spec, [*batches[-1], index], class_images, seconds_per_pass) > budget:
            batches.append([])
        batches[-1].append(index)
    return batches


def tcav_chart(rows: list[dict], concept: str, layer: str, threshold: float) -> bytes:
    """Bars of the concept's mean TCAV score and the random CAVs' per class (error bars: std over runs),
    a star over each significant class."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    done = [row for row in rows if row["status"] == "succeeded"]
    figure = Figure(figsize=(max(4.0, 1.2 * len(done) + 2), 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = range(len(done))
    axes.bar([x - 0.2 for x in positions], [r["score_mean"] for r in done], 0.4, yerr=[r["score_std"] for r in done],
             capsize=3, color="#1f77b4", label=concept[:30])
    axes.bar([x + 0.2 for x in positions], [r["random_mean"] for r in done], 0.4,
             yerr=[r["random_std"] for r in done], capsize=3, color="#b0b0b0", label="random")
    for x, row in zip(positions, done, strict=True):
        if row["significant"]:
            axes.text(x - 0.2, min(1.0, row["score_mean"] + row["score_std"]) + 0.03, "*", ha="center", fontsize=14)
    axes.set_xticks(list(positions), [r["class"][:16] for r in done])
    axes.set_ylim(0, 1.15)
    axes.axhline(0.5, color="black", linewidth=0.6, linestyle=":")
    axes.set_ylabel("TCAV score")
    axes.set_title(f"TCAV of {concept[:30]!r} at {layer} (* p < {threshold:.3g})", fontsize=10)
    axes.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# ====================================================================== CRAFT
class CraftSpec(SpecModel):
    """Concepts of classes found by factorising the activations of image crops (Fel et al. 2023)."""

    classes: list[ClassName] = Field(min_length=1, max_length=MAX_CLASSES, description="Class names of the card")
    images: ImageSet = Field(
        default_factory=lambda: ImageSet(source="background", count=16),
        description="Images to find each class's concepts in (those the model predicts as the class are used); "
                    "default the card's background")
    class_images: dict[ClassName, ImageSet] | None = Field(
        default=None, max_length=MAX_CLASSES,
        description="Class name -> images of that class, used whole instead of `images`")
    layer: str | None = Field(default=None, min_length=1, max_length=200,
                              description="Cut the model at this layer (its activations must be non-negative, "
                                          "e.g. after a ReLU); default the card's cam_layer")
    number_of_concepts: int = Field(default=5, ge=2, le=20, description="Concepts per class (NMF components)")
    patch_size: int | None = Field(default=None, ge=4, le=1024,
                                   description="Side of the crops in input pixels; default half the input size")
    nb_design: int = Field(default=32, ge=4, le=256, description="Sobol designs of the importance estimate")
    crops: int = Field(default=6, ge=1, le=16, description="Crops shown per concept")

    @model_validator(mode="after")
    def _images_of_asked_classes(self):
        extra = sorted(set(self.class_images or {}) - set(self.classes))
        if extra:
            raise ValueError(f"class_images names classes not in classes: {', '.join(extra)}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes are repeated")
        return self


class Craft(InsightKind):
    """CRAFT: concepts of a class as the non-negative factors of its crops' activations (NMF), ranked by
    their total Sobol index on the class score, each shown by the crops that hold it most.

    Ref. Fel et al., CRAFT: Concept Recursive Activation FacTorization for Explainability, CVPR 2023.
    https://arxiv.org/abs/2211.10154
    """

    name = "craft"
    title = "Concept extraction (CRAFT)"
    reference = "Fel et al., CRAFT, CVPR 2023; xplique.concepts.CraftTf"
    Spec = CraftSpec

    def plan(self, spec: CraftSpec, ctx: PlanContext) -> list[PartPlan]:
        model = keras_image_model(ctx.loaded, "concept insights")
        layer = model_layer(model, ctx.card, spec.layer, "craft.layer").name
        _split(model, layer, ctx.card.name)
        labels = class_indexes(ctx.card, spec.classes, "craft.classes")
        patch = _patch_size(spec, ctx.card)
        budget = ctx.max_part_seconds * PART_TIME_SHARE
        parts = []
        for number, name in enumerate(spec.classes):
            images = (spec.class_images or {}).get(name, spec.images)
            estimate = craft_seconds(spec, images.count, patch, ctx.card, ctx.seconds_per_pass,
                                     _share_after(model, layer))
            if estimate > budget:
                raise OverTimeBudgetError(
                    f"craft: class {name!r} is estimated at {estimate:.0f} s; a part has {budget:.0f} s: use fewer "
                    "images or designs, or larger patches", estimated_seconds=round(estimate, 1),
                    max_part_seconds=budget)
            parts.append(PartPlan(
                id=f"craft-{number:02d}", kind=self.name, title=f"CRAFT concepts of {name} at {layer}",
                params={"class": name, "label": labels[name], "layer": layer, "patch_size": patch,
                        "filter": name not in (spec.class_images or {})},
                estimated_seconds=round(estimate, 3)))
        return parts

    def run_part(self, spec: CraftSpec, part: PartPlan, ctx: PartContext) -> dict:
        import json

        import numpy as np
        from xplique.concepts import CraftTf

        from explain_core.attribution import raw_outputs, xplique_without_xla
        from explain_core.insights.pictures import display_pixels, image_grid
        from explain_core.modalities.base import check_finite

        xplique_without_xla()  # CRAFT's importance runs Xplique's Sobol estimator: no XLA compilation
        started = time.perf_counter()
        model = keras_image_model(ctx.loaded, "concept insights")
        name, label, layer = part.params["class"], part.params["label"], part.params["layer"]
        batch = ctx.images((spec.class_images or {}).get(name, spec.images))
        inputs = np.asarray(batch.inputs, np.float32)
        if part.params["filter"]:
            # As Xplique's CraftManager: a class's concepts come from the images the model gives that class.
            predicted = np.argmax(raw_outputs(model, inputs, ctx.card, ctx.batch_size), axis=1)
            inputs = inputs[predicted == label]
        if len(inputs) < 1:
            raise InvalidInsightsSpecError(
                f"craft: no image of the set is predicted as {name!r}; give its images in class_images", cls=name)
        input_to_latent, latent_to_output = _split(model, layer, ctx.card.name)
        craft = CraftTf(input_to_latent, latent_to_output, number_of_concepts=spec.number_of_concepts,
                        batch_size=ctx.batch_size, patch_size=part.params["patch_size"])
        # NMF falls back to a random initialisation (NumPy's global generator) with fewer crops than concepts.
        np.random.seed(_seed(ctx.seed, 2, part.params["label"], 0))
        try:
            with warnings.catch_warnings():
                # Xplique's NMF keeps sklearn's 200 iterations; an unconverged factorisation is still usable.
                warnings.filterwarnings("ignore", message="Maximum number of iterations")
                crops, crops_u, _ = craft.fit(inputs, class_id=label)
        except AssertionError as exc:  # Xplique asserts non-negative activations
            raise UnsupportedModelError(
                f"craft: layer {layer!r} has negative activations; CRAFT factorises non-negative ones (cut after a "
                "ReLU)", layer=layer) from exc
        importances = np.asarray(craft.estimate_importance(nb_design=spec.nb_design), np.float64)
        check_finite(importances, "CRAFT importances", part=part.id)
        check_finite(crops_u, "CRAFT concept values", part=part.id)
        order = np.argsort(importances)[::-1]
        pixels = display_pixels(np.asarray(crops), ctx.card)
        shown = min(spec.crops, len(pixels))
        cells, captions, row_labels, concepts = [], [], [], []
        for rank, concept in enumerate(order):
            best = np.argsort(crops_u[:, concept])[::-1][:shown]
            cells += [pixels[i] for i in best]
            captions += [f"u={crops_u[i, concept]:.3g}" for i in best]
            row_labels.append(f"#{concept} {importances[concept]:.3f}")
            concepts.append({"concept": int(concept), "rank": rank, "importance": round(float(importances[concept]), 6),
                             "best_crops": [int(i) for i in best]})
        grid = ctx.put("crops.png", image_grid(
            cells, captions, columns=shown, row_labels=row_labels,
            title=f"CRAFT concepts of {name} at {layer}: best crops (row: concept, importance)"), "image/png")
        chart = ctx.put("importance.png", importance_chart(concepts, f"CRAFT concept importance for {name}"),
                        "image/png")
        summary = {"class": name, "layer": layer, "images": int(len(inputs)), "crops": int(len(crops)),
                   "patch_size": part.params["patch_size"], "concepts": concepts, "grid": grid, "chart": chart,
                   "seconds": round(time.perf_counter() - started, 3)}
        ctx.put("concepts.json", json.dumps(summary, indent=2, allow_nan=False).encode(), "application/json")
        return summary

    def assemble(self, spec: CraftSpec, parts: list[PartOutcome], ctx: PartContext) -> dict:
        rows = []
        for number, name in enumerate(spec.classes):
            part = next((p for p in parts if p.id == f"craft-{number:02d}"), None)
            if part is None or part.status == "failed":
                rows.append({"class": name, "status": "failed", "error": part.error if part else None})
            else:
                rows.append({"status": "succeeded", **part.summary})
        return {"kind": self.name, "title": self.title, "reference": self.reference,
                "settings": spec.model_dump(mode="json", include={"number_of_concepts", "patch_size", "nb_design",
                                                                  "crops", "layer"}),
                "classes": rows,
                "pictures": [key for row in rows if row["status"] == "succeeded"
                             for key in (row["grid"], row["chart"])]}


def craft_seconds(spec: CraftSpec, images: int, patch: int, card, seconds_per_pass: float,
                  second_half: float = 1.0) -> float:
    """Estimated time of a class: the crops' forward passes, then (images x designs x (concepts + 2)) passes
    of the model's second half for the Sobol indices, ``second_half`` being its share of the model's layers
    (counted as whole forward passes, they made MobileNetV2's estimate 36 times the measured time)."""
    stride = max(1, int(patch * 0.8))
    crops = ((card.input_height - patch) // stride + 1) * ((card.input_width - patch) // stride + 1) * images
    designs = images * spec.nb_design * (spec.number_of_concepts + 2)
    return (PART_OVERHEAD_SECONDS + NMF_SECONDS
            + (crops + 2 * images + designs * second_half) * FORWARD_SHARE * seconds_per_pass)


def _share_after(model, layer: str) -> float:
    """The share of the model's layers after ``layer`` (at least 5 %): what CRAFT's second half costs."""
    names = [each.name for each in model.layers]
    return max(0.05, (len(names) - 1 - names.index(layer)) / max(1, len(names) - 1))


def importance_chart(concepts: list[dict], title: str) -> bytes:
    """Bars of the concepts' importance (total Sobol index), most important first."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(4.0, 0.5 * len(concepts) + 2), 3.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.bar(range(len(concepts)), [c["importance"] for c in concepts], color="#1f77b4")
    axes.set_xticks(range(len(concepts)), [f"#{c['concept']}" for c in concepts])
    axes.set_xlabel("concept")
    axes.set_ylabel("importance (Sobol total index)")
    axes.set_title(title[:80], fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# ---------------------------------------------------------------------- shared checks
def _patch_size(spec: CraftSpec, card) -> int:
    side = min(card.input_height, card.input_width)
    patch = spec.patch_size or max(4, side // 2)
    if patch > side:
        raise InvalidInsightsSpecError(f"craft.patch_size {patch} is larger than the model's input ({side} px)",
                                       patch_size=patch, input_size=side)
    return patch


def _split(model, layer: str, name: str):
    from explain_core.model_split import split_at

    try:
        return split_at(model, layer, name)
    except InvalidModelError as exc:  # a layer CRAFT cannot cut at: the spec's choice
        raise InvalidInsightsSpecError(f"craft.layer: {exc.args[0]}", layer=layer) from exc
