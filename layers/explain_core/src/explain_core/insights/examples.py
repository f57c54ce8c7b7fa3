"""Example-based insights with Xplique's ``example_based`` module: the cases most similar to a query
(case-based reasoning) and the prototypes that summarise each class.

Both search a space where distances mean something for the model: the activations of one layer
(``projection: latent``; a spatial layer is pooled into one vector per image, so that two images are
close when the same features fire, wherever they fire) or, as a model-blind baseline, the raw model input
(``projection: none``). Cases are labelled by their folder's name (``<prefix><label>/<image>``) or, for
prototypes, by the model's predicted class (the card's background has no folders).
"""

from typing import Literal

from pydantic import Field, model_validator

from explain_core.errors import InvalidInsightsSpecError, OverTimeBudgetError
from explain_core.insights.base import (
    ImageSet,
    InsightKind,
    PartContext,
    PartOutcome,
    PartPlan,
    PlanContext,
    SpecModel,
    model_layer,
)

#: Query images of one similar-examples job, at most.
MAX_QUERIES = 16
#: Query images explained in one part, at most (each part projects the whole case base again).
QUERIES_PER_PART = 4
#: Classes of one prototypes job, at most (one part each).
MAX_CLASSES = 32
#: Fixed cost of a part: loading images, building Xplique's search and tracing its graphs (seconds).
PART_OVERHEAD_SECONDS = 15.0
#: Xplique's prototype search, per case and per prototype (seconds): measured 5e-4 to 9e-4 on 2 shared CPU
#: cores (256 cases of 48 or 12288 features, 8 or 32 prototypes), with margin.
SEARCH_SECONDS_PER_CASE_PROTOTYPE = 2e-3
#: Side of the thumbnails the parts keep for the assembly's overview picture (pixels, at most).
THUMBNAIL_SIDE = 96
#: Floats in the largest intermediate of Xplique's searches: its KNN compares (queries, batch, features) at once
#: and its RBF kernel (batch, batch, features); the batch is cut so that pixel spaces stay within memory.
MAX_SEARCH_FLOATS = 32_000_000
#: Xplique's distances (xplique.example_based.search_methods.common).
DISTANCES = ("euclidean", "cosine", "manhattan", "chebyshev")


class _SearchSpace(SpecModel):
    """Where the cases are compared: a layer's activations, or the raw model input."""

    projection: Literal["latent", "none"] = Field(
        default="latent", description="latent: the activations of `layer`, pooled (an Xplique Projection of the "
                                      "model cut there); none: the raw model input (pixels), a baseline that "
                                      "ignores the model")
    layer: str | None = Field(default=None, min_length=1, max_length=200,
                              description="With projection latent: the layer; default the card's cam_layer")
    pooling: Literal["auto", "average", "max"] = Field(
        default="auto", description="How a spatial layer becomes one vector per image: auto pools as the model "
                                    "does right after that layer (its global max or average pooling), else average")


class QuerySet(ImageSet):
    """The images a similar-examples job explains: an image set of at most :data:`MAX_QUERIES` images."""

    count: int = Field(default=8, ge=1, le=MAX_QUERIES, description="Images explained, at most")


class SimilarExamplesSpec(_SearchSpace):
    """Options of :class:`SimilarExamples`."""

    queries: QuerySet = Field(description=f"The images to explain (at most {MAX_QUERIES})")
    cases: ImageSet = Field(description="The case base, labelled: each image's label is its folder's name")
    k: int = Field(default=5, ge=1, le=20, description="Nearest examples shown per query")
    distance: Literal[DISTANCES] = Field(default="euclidean",  # type: ignore[valid-type]
                                         description="Xplique's distance in the search space")

    @model_validator(mode="after")
    def _consistent(self):
        if self.cases.source != "prefix":
            raise ValueError("the case base must be a labelled prefix (one folder per label)")
        if self.projection == "none" and self.layer is not None:
            raise ValueError("give layer only with projection latent")
        return self


class PrototypesSpec(_SearchSpace):
    """Options of :class:`Prototypes`."""

    method: Literal["ProtoGreedy", "MMDCritic", "ProtoDash"] = Field(
        default="ProtoGreedy", description="Xplique's prototype search: ProtoGreedy (weighted), MMDCritic "
                                           "(equal weights), ProtoDash (non-negative weights)")
    cases: ImageSet = Field(description="The images prototypes are chosen from")
    labels: Literal["folders", "predicted"] = Field(
        default="folders", description="A case's class: its folder's name, or the model's predicted class "
                                       "(the only choice for the card's background, which has no folders)")
    classes: list[str] | None = Field(default=None, min_length=1, max_length=MAX_CLASSES,
                                      description="Class names of the card; default all (when at most "
                                                  f"{MAX_CLASSES})")
    nb_prototypes: int = Field(default=8, ge=1, le=32, description="Prototypes per class")
    gamma: float | None = Field(
        default=None, ge=1e-8, le=1e3,
        description="Spread of Xplique's RBF kernel exp(-gamma |a-b|^2); default 1 / the median squared distance "
                    "between the class's cases in the search space (Xplique's own default, 1 / number of "
                    "features, suits unit-variance features, which a layer's activations are not)")

    @model_validator(mode="after")
    def _consistent(self):
        if self.cases.source == "background" and self.labels != "predicted":
            raise ValueError("the background has no folders: use labels predicted")
        if self.projection == "none" and self.layer is not None:
            raise ValueError("give layer only with projection latent")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must not repeat")
        return self


class SimilarExamples(InsightKind):
    """The k cases of a labelled case base nearest to each query in the model's latent space: what the
    model considers alike (case-based reasoning), with Xplique's ``SimilarExamples`` (a KNN search).

    References:
    Hanawa, Yokoi, Hara & Inui, "Evaluation of similarity-based explanations", ICLR 2021
    (https://arxiv.org/abs/2006.04528); Xplique's example_based.SimilarExamples."""

    name = "similar_examples"
    title = "Similar examples"
    reference = "Hanawa et al. 2021, Evaluation of similarity-based explanations (Xplique SimilarExamples)"
    Spec = SimilarExamplesSpec

    def plan(self, spec: SimilarExamplesSpec, ctx: PlanContext) -> list[PartPlan]:
        _check_layer(spec, ctx.loaded)
        per_part = QUERIES_PER_PART
        while per_part > 1 and _similar_seconds(spec, per_part, ctx) >= ctx.max_part_seconds:
            per_part -= 1
        estimated = _similar_seconds(spec, min(per_part, spec.queries.count), ctx)
        if estimated >= ctx.max_part_seconds:
            raise OverTimeBudgetError(
                f"one query against {spec.cases.count} cases is estimated at {estimated:.0f} s, over the "
                f"{ctx.max_part_seconds:.0f} s of a part: use fewer cases", estimated_seconds=round(estimated, 1),
                limit_seconds=ctx.max_part_seconds)
        parts = []
        for first in range(0, spec.queries.count, per_part):
            count = min(per_part, spec.queries.count - first)
            parts.append(PartPlan(
                id=f"similar-examples-{first // per_part}", kind=self.name,
                title=f"{spec.k} nearest cases of queries {first + 1}-{first + count}",
                params={"first": first, "count": count}, estimated_seconds=_similar_seconds(spec, count, ctx)))
        return parts

    def run_part(self, spec: SimilarExamplesSpec, part: PartPlan, ctx: PartContext) -> dict:
        import json

        import numpy as np
        from xplique.example_based import SimilarExamples as XpliqueSimilarExamples

        from explain_core.insights.pictures import image_grid
        from explain_core.modalities.base import check_finite
        from explain_core.rendering import npy_bytes

        first, count = part.params["first"], part.params["count"]
        queries = ctx.images(spec.queries)
        chosen = slice(first, min(first + count, len(queries)))
        query_inputs, query_pixels = queries.inputs[chosen], queries.pixels[chosen]
        if len(query_inputs) == 0:  # the prefix holds fewer images than queries.count
            return {"queries": 0, "first": first}
        cases = ctx.images(spec.cases, labelled=True)
        _check_labelled(cases, spec.cases)
        if len(cases) < spec.k:
            raise InvalidInsightsSpecError(f"the case base has {len(cases)} images, fewer than k={spec.k}",
                                           cases=len(cases), k=spec.k)
        names = sorted(set(cases.labels))
        label_ids = np.asarray([names.index(label) for label in cases.labels], dtype=np.int32)
        _check_time(ctx, _similar_seconds(spec, len(query_inputs), ctx))
        projection, features = _projection(spec, ctx)
        batch_size = max(1, min(ctx.batch_size, MAX_SEARCH_FLOATS // (len(query_inputs) * features)))
        search = XpliqueSimilarExamples(
            cases.inputs, labels_dataset=label_ids, k=spec.k, projection=projection,
            case_returns=["indices", "distances", "labels"], batch_size=batch_size, distance=spec.distance)
        found = search.explain(query_inputs)
        # Xplique indexes a case by (batch, position in the batch) of its batched case base.
        indices = found["indices"].numpy()
        nearest = indices[..., 0] * search.batch_size + indices[..., 1]
        distances = found["distances"].numpy().astype(np.float64)
        check_finite(distances, "distances to the nearest cases", distance=spec.distance)
        query_predicted = _predicted(ctx, query_inputs)
        case_predicted = _predicted(ctx, cases.inputs)
        results, thumbnails = [], []
        for row in range(len(query_inputs)):
            number = first + row
            examples = [{"index": int(j), "key": _key(cases, j), "label": cases.labels[j],
                         "distance": float(d), "predicted": ctx.card.class_name(int(case_predicted[j]))}
                        for j, d in zip(nearest[row], distances[row], strict=True)]
            predicted = ctx.card.class_name(int(query_predicted[row]))
            result = {"query": number, "key": _key(queries, number), "predicted": predicted, "examples": examples,
                      "label_agreement": float(np.mean([e["label"] == predicted for e in examples])),
                      "prediction_agreement": float(np.mean([e["predicted"] == predicted for e in examples]))}
            images = [query_pixels[row]] + [cases.pixels[j] for j in nearest[row]]
            captions = [f"query {number + 1}\nmodel: {predicted}"] + [
                f"{e['label']}  d={e['distance']:.3g}\nmodel: {e['predicted']}" for e in examples]
            picture = image_grid(images, captions, columns=min(len(images), 6),
                                 title=f"{spec.k} nearest cases of query {number + 1} ({_space(spec, ctx)}, "
                                       f"{spec.distance})")
            result["picture"] = ctx.put(f"query-{number:02d}.png", picture, "image/png")
            results.append(result)
            thumbnails.append(np.stack([_thumbnail(image) for image in images]))
        ctx.put("examples.json", json.dumps(results).encode(), "application/json")
        ctx.put("thumbnails.npy", npy_bytes(np.stack(thumbnails)), "application/octet-stream")
        return {"queries": len(results), "first": first,
                "mean_label_agreement": float(np.mean([r["label_agreement"] for r in results])),
                "mean_prediction_agreement": float(np.mean([r["prediction_agreement"] for r in results]))}

    def assemble(self, spec: SimilarExamplesSpec, parts: list[PartOutcome], ctx: PartContext) -> dict:
        import io
        import json

        import numpy as np

        from explain_core.insights.pictures import image_grid

        results, rows = [], []
        for outcome in sorted(parts, key=lambda p: p.summary.get("first", 0) if p.summary else 0):
            if outcome.status != "succeeded":
                continue
            if "examples.json" not in outcome.files:
                continue  # a part whose queries were missing from the prefix
            results.extend(json.loads(ctx.read(outcome.files["examples.json"])))
            rows.extend(np.load(io.BytesIO(ctx.read(outcome.files["thumbnails.npy"])), allow_pickle=False))
        section = {"kind": self.name, "title": self.title, "reference": self.reference,
                   "space": _space(spec, ctx), "distance": spec.distance, "k": spec.k, "queries": results}
        if results:
            section["mean_label_agreement"] = float(np.mean([r["label_agreement"] for r in results]))
            section["mean_prediction_agreement"] = float(np.mean([r["prediction_agreement"] for r in results]))
            images = [image for row in rows for image in row]
            captions = [("query" if column == 0 else f"{r['examples'][column - 1]['label']}")
                        + (f"\nmodel: {r['predicted']}" if column == 0 else
                           f"\nd={r['examples'][column - 1]['distance']:.3g}")
                        for r in results for column in range(spec.k + 1)]
            section["overview"] = ctx.put("similar_examples.png", image_grid(
                images, captions, columns=spec.k + 1, row_labels=[f"query {r['query'] + 1}" for r in results],
                title=f"Nearest cases ({_space(spec, ctx)}, {spec.distance})"), "image/png")
        return section


class Prototypes(InsightKind):
    """A few weighted cases per class whose kernel mean is closest (MMD) to the class's cases in the
    model's latent space, with Xplique's ``ProtoGreedy``, ``MMDCritic`` or ``ProtoDash``.

    References:
    Gurumoorthy, Dhurandhar, Cecchi & Aggarwal, "Efficient Data Representation by Selecting Prototypes with
    Importance Weights", ICDM 2019 (https://arxiv.org/abs/1707.01212); Kim, Khanna & Koyejo, "Examples are not
    enough, learn to criticize! Criticism for interpretability", NeurIPS 2016."""

    name = "prototypes"
    title = "Prototypes"
    reference = "Gurumoorthy et al. 2019 (ProtoGreedy, ProtoDash); Kim et al. 2016 (MMD-critic); Xplique prototypes"
    Spec = PrototypesSpec

    def plan(self, spec: PrototypesSpec, ctx: PlanContext) -> list[PartPlan]:
        _check_layer(spec, ctx.loaded)
        names = list(ctx.card.class_names)
        classes = spec.classes
        if classes is None:
            if len(names) > MAX_CLASSES:
                raise InvalidInsightsSpecError(
                    f"the model has {len(names)} classes: name at most {MAX_CLASSES} in classes",
                    classes=len(names), limit=MAX_CLASSES)
            classes = names
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise InvalidInsightsSpecError(f"unknown classes {unknown}; the card's classes are {names[:20]}",
                                           unknown=unknown)
        estimated = _prototypes_seconds(spec, ctx)
        if estimated >= ctx.max_part_seconds:
            raise OverTimeBudgetError(
                f"one class is estimated at {estimated:.0f} s, over the {ctx.max_part_seconds:.0f} s of a part: "
                "use fewer cases or prototypes", estimated_seconds=round(estimated, 1),
                limit_seconds=ctx.max_part_seconds)
        return [PartPlan(id=f"prototypes-{index:03d}", kind=self.name,
                         title=f"{spec.nb_prototypes} {spec.method} prototypes of {name}",
                         params={"class": name, "index": index}, estimated_seconds=estimated)
                for index, name in enumerate(classes)]

    def run_part(self, spec: PrototypesSpec, part: PartPlan, ctx: PartContext) -> dict:
        import json

        import numpy as np
        import xplique.example_based as example_based

        from explain_core.insights.pictures import image_grid
        from explain_core.modalities.base import check_finite
        from explain_core.rendering import npy_bytes

        name = part.params["class"]
        cases = ctx.images(spec.cases, labelled=spec.labels == "folders")
        if spec.labels == "folders":
            _check_labelled(cases, spec.cases)
        _check_time(ctx, _prototypes_seconds(spec, ctx))
        predicted = _predicted(ctx, cases.inputs)
        labels = cases.labels if spec.labels == "folders" else [ctx.card.class_name(int(p)) for p in predicted]
        members = np.asarray([i for i, label in enumerate(labels) if label == name], dtype=np.int64)
        if len(members) == 0:
            raise InvalidInsightsSpecError(f'no case of class "{name}" in the case base ({spec.labels} labels)',
                                           label=name, cases=len(cases))
        count = min(spec.nb_prototypes, len(members))
        projection, features = _projection(spec, ctx)
        batch_size = max(1, min(ctx.batch_size, int(np.sqrt(MAX_SEARCH_FLOATS / features))))
        member_features = _project(projection, cases.inputs[members], ctx.batch_size)
        check_finite(member_features, "the cases' features", method=spec.method)
        gamma = spec.gamma if spec.gamma is not None else _median_gamma(member_features)
        search = getattr(example_based, spec.method)(
            cases.inputs[members], nb_global_prototypes=count, projection=projection, batch_size=batch_size,
            gamma=gamma)
        found = search.get_global_prototypes()
        # Xplique indexes a case by (batch, position in the batch) of its batched case base.
        indices = found["prototypes_indices"].numpy()
        chosen = members[indices[:, 0] * search.batch_size + indices[:, 1]]
        weights = found["prototypes_weights"].numpy().astype(np.float64)
        check_finite(weights, "prototype weights", method=spec.method)
        kernel = _KernelMatrix(search.global_prototypes_search_method.kernel_fn, batch_size)
        prototype_features = member_features[np.searchsorted(members, chosen)]
        kernel_mean = float(np.mean(kernel.matrix(member_features, member_features)))
        # Squared MMD between the class's cases and the weighted prototypes: how well they represent it.
        mmd = (kernel_mean - 2 * np.mean(kernel.matrix(member_features, prototype_features), axis=0) @ weights
               + weights @ kernel.matrix(prototype_features, prototype_features) @ weights)
        check_finite([mmd, kernel_mean], "the prototypes' MMD", method=spec.method)
        prototypes = [{"index": int(i), "key": _key(cases, i), "weight": float(w), "label": labels[i],
                       "predicted": ctx.card.class_name(int(predicted[i]))}
                      for i, w in zip(chosen, weights, strict=True)]
        picture = image_grid(
            [cases.pixels[i] for i in chosen],
            [f"weight {p['weight']:.3f}\nmodel: {p['predicted']}" for p in prototypes],
            columns=min(count, 8), title=f"{spec.method} prototypes of {name} ({_space(spec, ctx)})")
        ctx.put("prototypes.png", picture, "image/png")
        ctx.put("prototypes.json", json.dumps(prototypes).encode(), "application/json")
        ctx.put("thumbnails.npy", npy_bytes(np.stack([_thumbnail(cases.pixels[i]) for i in chosen])),
                "application/octet-stream")
        # kernel_mean near 0 (every case unlike every other) or 1 (all alike): gamma does not suit the space.
        return {"class": name, "cases": len(members), "prototypes": count, "mmd": float(mmd),
                "kernel_mean": kernel_mean, "gamma": float(gamma),
                "predicted_as_class": float(np.mean([p["predicted"] == name for p in prototypes]))}

    def assemble(self, spec: PrototypesSpec, parts: list[PartOutcome], ctx: PartContext) -> dict:
        import io
        import json

        import numpy as np

        from explain_core.insights.pictures import image_grid

        classes, images, captions, row_labels = [], [], [], []
        columns = max([p.summary.get("prototypes", 1) for p in parts if p.status == "succeeded"] or [1])
        for outcome in sorted(parts, key=lambda p: p.id):
            if outcome.status != "succeeded":
                continue
            prototypes = json.loads(ctx.read(outcome.files["prototypes.json"]))
            thumbnails = np.load(io.BytesIO(ctx.read(outcome.files["thumbnails.npy"])), allow_pickle=False)
            classes.append({**outcome.summary, "picture": outcome.files["prototypes.png"], "prototypes": prototypes})
            blank = np.full_like(thumbnails[0], 255)
            for column in range(columns):  # short rows padded so that each class starts a row
                images.append(thumbnails[column] if column < len(thumbnails) else blank)
                captions.append(f"w={prototypes[column]['weight']:.3f}" if column < len(prototypes) else "")
            row_labels.append(outcome.summary["class"])
        section = {"kind": self.name, "title": self.title, "reference": self.reference, "method": spec.method,
                   "space": _space(spec, ctx), "labels": spec.labels, "classes": classes}
        if classes:
            section["overview"] = ctx.put("prototypes.png", image_grid(
                images, captions, columns=columns, row_labels=row_labels,
                title=f"{spec.method} prototypes per class ({_space(spec, ctx)})"), "image/png")
        return section


def _check_layer(spec: _SearchSpace, loaded) -> None:
    """A typed error at planning when the latent layer does not exist or has no activations per image."""
    if spec.projection != "latent":
        return
    layer = model_layer(loaded.model, loaded.card, spec.layer, "layer")
    if len(layer.output.shape) not in (2, 3, 4):
        raise InvalidInsightsSpecError(f'layer "{layer.name}" outputs {tuple(layer.output.shape)}: use a layer with '
                                       "an image's features (N, F) or feature maps (N, H, W, C)", layer=layer.name)

def _pooling(model, layer, choice: str) -> str:
    """auto: the global pooling the model applies right after ``layer`` (the demo CNN max-pools its last
    conv: pooling it otherwise puts other classes among the neighbours), else average."""
    if choice != "auto":
        return choice
    import keras

    for other in model.layers:
        if isinstance(other, keras.layers.GlobalMaxPooling2D | keras.layers.GlobalMaxPooling1D) \
                and other.input is layer.output:
            return "max"
    return "average"


def _projection(spec: _SearchSpace, ctx: PartContext):
    """Xplique's projection into the search space, and the number of features: a flat vector per image
    (Xplique's prototype searches need 2-D cases, and flat feature maps would compare positions, not features)."""
    import keras
    import tensorflow as tf
    from xplique.example_based.projections import Projection

    if spec.projection == "none":
        size = int(ctx.card.input_height * ctx.card.input_width * ctx.card.input_channels)
        return Projection(space_projection=lambda inputs: tf.reshape(inputs, (-1, size))), size
    model = ctx.model
    layer = model_layer(model, ctx.card, spec.layer, "layer")
    features = layer.output
    if len(features.shape) > 2:
        pooling = _pooling(model, layer, spec.pooling)
        spatial = len(features.shape) == 4
        pool = {("max", True): keras.layers.GlobalMaxPooling2D, ("max", False): keras.layers.GlobalMaxPooling1D,
                ("average", True): keras.layers.GlobalAveragePooling2D,
                ("average", False): keras.layers.GlobalAveragePooling1D}[pooling, spatial]
        features = pool(name="insights_pool")(features)
    # The model split by hand, as Xplique recommends: its own split (latent_layer=...) keeps the feature maps.
    extractor = keras.Model(model.inputs, features, name="features_extractor")
    # Traced: called eagerly, a Keras 3 model keeps every intermediate activation of the batch (measured on
    # MobileNetV2: 64 images took +5.7 GB and 10 s eagerly, +0.94 GB and 0.33 s traced).
    traced = tf.function(lambda inputs: extractor(inputs, training=False))
    # Not mappable: the case base is projected once, up front; mapped, it would be projected again each time
    # a search reads it (ProtoGreedy reads it once per prototype, and pairwise for its kernel's column means).
    return Projection(space_projection=traced, mappable=False), int(features.shape[-1])


def _space(spec: _SearchSpace, ctx) -> str:
    if spec.projection == "none":
        return "model input"
    layer = model_layer(ctx.model, ctx.card, spec.layer, "layer")
    if len(layer.output.shape) > 2:
        return f"{layer.name}, {_pooling(ctx.model, layer, spec.pooling)}-pooled"
    return layer.name


def _predicted(ctx: PartContext, inputs):
    import numpy as np

    from explain_core.attribution import raw_outputs
    from explain_core.modalities.base import check_finite

    outputs = raw_outputs(ctx.model, inputs, ctx.card, ctx.batch_size)
    check_finite(outputs, "the model's outputs")
    return np.argmax(outputs, axis=1)


def _project(projection, inputs, batch_size: int):
    """The search-space features of ``inputs`` (float32, one row per image), a batch at a time."""
    import numpy as np

    return np.concatenate([np.asarray(projection(inputs[start:start + batch_size]), dtype=np.float32)
                           for start in range(0, len(inputs), batch_size)])


def _median_gamma(features) -> float:
    """1 / the median squared distance between distinct cases (the median heuristic): the RBF kernel sees
    pairs neither all unrelated nor all alike. On the demo's last_conv, Xplique's 1 / number of features gives
    a mean kernel of 0.07 and circle prototypes closer (MMD) to the class than only 36 % of random subsets
    of circles; this gives 0.4 and 100 % (tests/quality/test_insights_examples_quality.py)."""
    import numpy as np

    features = np.asarray(features, dtype=np.float64)
    norms = np.sum(features**2, axis=1)
    squared = np.maximum(norms[:, None] + norms[None] - 2 * features @ features.T, 0)
    distinct = squared[np.triu_indices(len(features), 1)]
    median = float(np.median(distinct)) if len(distinct) else 0.0
    if not np.isfinite(median) or median <= 0:  # one case, or identical ones: any spread will do
        return 1.0 / features.shape[1]
    return float(np.clip(1.0 / median, 1e-8, 1e3))


class _KernelMatrix:
    """Xplique's kernel matrix between two sets, by blocks (its RBF holds (rows, columns, features) at once)."""

    def __init__(self, kernel_fn, block: int):
        self.kernel_fn, self.block = kernel_fn, block

    def matrix(self, first, second):
        import numpy as np

        step = self.block
        return np.block([[np.asarray(self.kernel_fn(first[i:i + step], second[j:j + step]), dtype=np.float64)
                          for j in range(0, len(second), step)] for i in range(0, len(first), step)])


def _similar_seconds(spec: SimilarExamplesSpec, queries: int, ctx) -> float:
    # Each part projects the case base and predicts its classes (2 passes per case), same for the queries.
    return PART_OVERHEAD_SECONDS + 2 * ctx.seconds_per_pass * (spec.cases.count + queries)


def _prototypes_seconds(spec: PrototypesSpec, ctx) -> float:
    # The model's predictions, then the class's cases projected twice (median distance, then Xplique's search).
    passes = 3 * ctx.seconds_per_pass * spec.cases.count
    return PART_OVERHEAD_SECONDS + passes + SEARCH_SECONDS_PER_CASE_PROTOTYPE * spec.cases.count * spec.nb_prototypes


def _check_time(ctx: PartContext, needed: float) -> None:
    remaining = ctx.remaining_seconds()
    if remaining is not None and remaining < needed:
        raise OverTimeBudgetError(f"the part needs about {needed:.0f} s; {remaining:.0f} s remain",
                                  estimated_seconds=round(needed, 1), remaining_seconds=round(remaining, 1))


def _check_labelled(batch, image_set) -> None:
    if batch.labels is None or not all(batch.labels):
        raise InvalidInsightsSpecError(f"the images under {image_set.prefix} are not all in label folders "
                                       "(<prefix><label>/<image>)", prefix=image_set.prefix)


def _key(batch, index: int) -> str | None:
    return batch.keys[index] if batch.keys is not None else None


def _thumbnail(pixels):
    import numpy as np
    from PIL import Image

    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    if max(image.size) > THUMBNAIL_SIDE:
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.LANCZOS)
        canvas = Image.new("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE), "white")
        canvas.paste(image, (0, 0))
        image = canvas
    return np.asarray(image, dtype=np.uint8)

