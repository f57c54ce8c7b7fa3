"""Feature visualization: images optimised to excite a neuron, a channel, a layer or a direction of the model.

Xplique's :mod:`xplique.features_visualizations` (``Objective``, ``optimize``) does the optimisation; this
module resolves the spec against the model, splits the images into parts that fit one invocation, records
how the objective rose over the steps and assembles the images into one grid and one chart.
"""

import itertools
import math
import re
import time
import warnings
from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from explain_core.errors import InvalidInsightsSpecError, OverTimeBudgetError
from explain_core.insights.base import (
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

#: Images one objective may ask for (an objective with several indexes, or a sum of such, gives one image
#: per index combination).
MAX_IMAGES_PER_OBJECTIVE = 64
#: Checkpoints on an objective's curve, at most (steps / save_every).
MAX_CHECKPOINTS = 64
#: Checkpoints are all held in memory until ``optimize`` returns: float32 bytes of one part's checkpoints.
MAX_CHECKPOINT_BYTES = 256 * 1024 * 1024
#: A part is planned to use at most this share of ``max_part_seconds`` (estimates are rough).
PART_TIME_SHARE = 0.8
#: Per part: building the objective's model and tracing Xplique's step (1.5 s warm, 4 s cold on the demo model).
PART_OVERHEAD_SECONDS = 4.0
#: Per optimisation step, whatever the batch: Python, tf.function call, optimizer (measured about 2 ms on 2 CPUs).
STEP_OVERHEAD_SECONDS = 0.002
#: Cost of a step with the standard transformations relative to none (measured 1.3 on the demo model).
TRANSFORMATION_FACTOR = {"standard": 1.5, "none": 1.0}
#: The part of a spec's regularizers passed to Xplique, by field name.
REGULARIZERS = ("l1", "l2", "total_variation")


class ObjectiveTerm(SpecModel):
    """One of Xplique's objectives: a neuron, a channel, a whole layer or a direction of a layer."""

    layer: str | None = Field(default=None, min_length=1, max_length=200, description="A layer's name")
    class_: str | None = Field(
        default=None, alias="class", min_length=1, max_length=200,
        description="A class name of the card: the neuron of that class in the model's last layer (its logit, "
                    "or its probability for a model that outputs probabilities)")
    type: Literal["neuron", "channel", "layer", "direction"] | None = Field(
        default=None, description="neuron: one activation (an index into the layer's flattened output); channel: "
                                  "the channel's mean activation; layer: the mean squared activation; direction: "
                                  "dot x cosine^2 with `direction` at every position. Default neuron with `class`")
    index: int | None = Field(default=None, ge=0, le=2**31 - 1, description="The neuron or channel")
    indexes: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] | None = Field(
        default=None, min_length=1, max_length=MAX_IMAGES_PER_OBJECTIVE,
        description="Several neurons or channels: one image each")
    direction: list[float] | None = Field(
        default=None, min_length=1, max_length=8192, description="A vector of the layer's channel count")
    weight: float = Field(default=1.0, ge=-100, le=100, description="Its weight in a sum")
    label: str | None = Field(default=None, min_length=1, max_length=60, description="Its caption")

    @model_validator(mode="after")
    def _consistent(self):
        if (self.layer is None) == (self.class_ is None):
            raise ValueError("name a layer or a class, one of them")
        if self.class_ is not None and self.type not in (None, "neuron"):
            raise ValueError("a class is a neuron of the last layer: give no other type")
        kind = self.kind
        if self.index is not None and self.indexes is not None:
            raise ValueError("give index or indexes, not both")
        has_index = self.index is not None or self.indexes is not None
        if kind in ("neuron", "channel") and self.class_ is None and not has_index:
            raise ValueError(f"a {kind} objective needs index or indexes")
        if (kind in ("layer", "direction") or self.class_ is not None) and has_index:
            raise ValueError(f"a {'class' if self.class_ else kind} objective takes no index")
        if (kind == "direction") != (self.direction is not None):
            raise ValueError("give direction with type direction, and only then")
        if self.indexes is not None and len(set(self.indexes)) != len(self.indexes):
            raise ValueError("indexes repeat")
        if self.weight == 0:
            raise ValueError("a weight of 0 removes the term")
        return self

    @property
    def kind(self) -> str:
        return self.type or "neuron"

    def index_list(self) -> list[int | None]:
        """The indexes this term takes, one image each (None: the term has no index)."""
        if self.indexes is not None:
            return list(self.indexes)
        return [self.index]


class SumObjective(SpecModel):
    """A weighted sum of objectives, optimised in one image (Xplique's ``+``). Terms with several indexes
    give one image per combination of their indexes (Xplique's product: 3 channels + 2 neurons = 6 images)."""

    sum: list[ObjectiveTerm] = Field(min_length=2, max_length=4)
    label: str | None = Field(default=None, min_length=1, max_length=60, description="Its caption")


def _objective_form(value) -> str:
    return "sum" if isinstance(value, SumObjective) or (isinstance(value, dict) and "sum" in value) else "term"


#: A term, or a sum of terms (told apart by the ``sum`` key, so that errors name one form's problems).
Objective = Annotated[Annotated[ObjectiveTerm, Tag("term")] | Annotated[SumObjective, Tag("sum")],
                      Discriminator(_objective_form)]


class Regularizers(SpecModel):
    """Xplique's image regularizers, subtracted from the objective with these weights (0: off)."""

    l1: float = Field(default=0.0, ge=0, le=10, description="Mean |pixel| (l1_reg)")
    l2: float = Field(default=0.0, ge=0, le=10, description="Root mean squared pixel (l2_reg)")
    total_variation: float = Field(
        default=0.0, ge=0, le=1, description="Total variation, summed over the image (total_variation_reg): "
                                             "weights around 1e-5..1e-3")


class FeatureVisualizationSpec(SpecModel):
    """Which objectives to visualise, and how long and how to optimise them."""

    objectives: list[Objective] = Field(
        min_length=1, max_length=16, description="Each a term or {\"sum\": [terms]}; one part (or more) each")
    steps: int = Field(default=256, ge=8, le=2048, description="Gradient ascent steps")
    learning_rate: float = Field(default=0.05, gt=0, le=1, description="Adam's learning rate")
    use_fft: bool = Field(default=True, description="Fourier (decorrelated) parameterisation of the image")
    fft_decay: float = Field(default=0.85, ge=0.1, le=2.0, description="High-frequency damping of the FFT "
                                                                         "parameterisation")
    init_std: float = Field(default=0.01, gt=0, le=1, description="Std of the random initial image")
    transformations: Literal["standard", "none"] = Field(
        default="standard", description="standard: Xplique's robustness transformations (pad, jitters, scale, "
                                        "blur, flip) at a strength that keeps the model's input size in view")
    image_size: int | None = Field(default=None, ge=32, le=512, description="Side of the optimised images "
                                                                            "(default: the model's input size)")
    regularizers: Regularizers = Field(default_factory=Regularizers)
    warmup_steps: int = Field(default=0, ge=0, le=256, description="Steps first run with ReLU gradients open")
    save_every: int | None = Field(
        default=None, ge=1, le=2048,
        description=f"Steps between the curve's checkpoints (default: about 32 checkpoints; at most "
                    f"{MAX_CHECKPOINTS})")

    @model_validator(mode="after")
    def _bounded(self):
        if self.save_every is not None and math.ceil(self.steps / self.save_every) > MAX_CHECKPOINTS:
            raise ValueError(f"save_every {self.save_every} gives more than {MAX_CHECKPOINTS} checkpoints")
        for number, objective in enumerate(self.objectives):
            if image_count(objective) > MAX_IMAGES_PER_OBJECTIVE:
                raise ValueError(f"objective {number} asks for {image_count(objective)} images; at most "
                                 f"{MAX_IMAGES_PER_OBJECTIVE}")
        return self

    def checkpoint_every(self) -> int:
        return self.save_every or max(1, math.ceil(self.steps / 32))


def terms_of(objective) -> list[ObjectiveTerm]:
    return objective.sum if isinstance(objective, SumObjective) else [objective]


def image_count(objective) -> int:
    return math.prod(len(term.index_list()) for term in terms_of(objective))


class FeatureVisualization(InsightKind):
    """Feature visualization by gradient ascent on the input (Olah et al., "Feature Visualization", Distill
    2017), with Xplique's ``features_visualizations`` (``Objective``, ``optimize``)."""

    name = "feature_visualization"
    title = "Feature visualization"
    reference = "Olah et al., Feature Visualization, Distill 2017; xplique.features_visualizations"
    Spec = FeatureVisualizationSpec

    # ------------------------------------------------------------------ plan
    def plan(self, spec: FeatureVisualizationSpec, ctx: PlanContext) -> list[PartPlan]:
        model = keras_image_model(ctx.loaded, "feature visualization")
        side = spec.image_size or ctx.card.input_height
        checkpoints = math.ceil(spec.steps / spec.checkpoint_every())
        per_image = image_seconds(spec, ctx.seconds_per_pass, side, ctx.card.input_height)
        fixed = PART_OVERHEAD_SECONDS + (spec.steps + spec.warmup_steps) * STEP_OVERHEAD_SECONDS
        budget = ctx.max_part_seconds * PART_TIME_SHARE
        if fixed + per_image > budget:
            raise OverTimeBudgetError(
                f"one feature visualization image ({spec.steps} steps at {side}px) is estimated at "
                f"{fixed + per_image:.0f} s; a part has {budget:.0f} s", estimated_seconds=round(fixed + per_image, 1),
                max_part_seconds=ctx.max_part_seconds)
        capacity = min(int((budget - fixed) // per_image),
                       max(1, MAX_CHECKPOINT_BYTES // (checkpoints * side * side * 3 * 4)))
        parts = []
        for number, objective in enumerate(spec.objectives):
            resolved = [resolve_term(model, ctx.card, term, f"objectives.{number}") for term in terms_of(objective)]
            for grid in split_grid([term.index_list() for term in terms_of(objective)], capacity):
                count = math.prod(len(indexes) for indexes in grid)
                labels = combination_labels(objective, resolved, grid)
                parts.append(PartPlan(
                    id=f"fv-{number:02d}-{len(parts):03d}", kind=self.name,
                    title=labels[0] if count == 1 else f"{labels[0]} … ({count} images)",
                    params={"objective": number, "grid": grid, "labels": labels, "index": len(parts)},
                    estimated_seconds=round(fixed + count * per_image, 3)))
        return parts

    # ------------------------------------------------------------------ run
    def run_part(self, spec: FeatureVisualizationSpec, part: PartPlan, ctx: PartContext) -> dict:
        import keras
        import numpy as np
        from xplique.features_visualizations import optimize

        from explain_core.insights.pictures import png_bytes
        from explain_core.modalities.base import check_finite

        started = time.perf_counter()
        model = keras_image_model(ctx.loaded, "feature visualization")
        objective = spec.objectives[part.params["objective"]]
        terms = terms_of(objective)
        resolved = [resolve_term(model, ctx.card, term, f"objectives.{part.params['objective']}") for term in terms]
        side = spec.image_size or ctx.card.input_height
        every = spec.checkpoint_every()
        # A redelivered part redoes the same draws: the job seed, shifted per part.
        keras.utils.set_random_seed(ctx.seed + part.params["index"])
        xplique_objective = build_objective(model, terms, resolved, part.params["grid"])
        with warnings.catch_warnings():
            # Keras 3 warns on every call of a model with a named input given a plain tensor (Xplique's way).
            warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
            checkpoints, _ = optimize(
                xplique_objective, keras.optimizers.Adam(spec.learning_rate), nb_steps=spec.steps,
                use_fft=spec.use_fft, fft_decay=spec.fft_decay, std=spec.init_std,
                regularizers=regularizers(spec) or None, image_normalizer="sigmoid", values_range=(0.0, 1.0),
                transformations=transformations(spec, side, ctx.card), warmup_steps=spec.warmup_steps or False,
                custom_shape=(side, side), save_every=every)
            evaluate = objective_evaluator(xplique_objective, ctx.card)
            values = np.stack([evaluate(images) for images in checkpoints], axis=1)
        steps = [min(spec.steps, every * (i + 1)) for i in range(len(checkpoints))]
        check_finite(values, "feature visualization objective values", part=part.id)
        final = np.asarray(checkpoints[-1])
        check_finite(final, "feature visualization images", part=part.id)
        images = []
        for number, label in enumerate(part.params["labels"]):
            # Numbered: labels are the user's, and two may slug alike or name the curve's file.
            key = ctx.put(f"image-{number:02d}-{slug(label)}.png", png_bytes(final[number]), "image/png")
            curve = [[step, round(float(value), 6)] for step, value in zip(steps, values[number], strict=True)]
            images.append({"label": label, "image": key, "values": curve})
        curve = ctx.put("curve.png", curves_chart([(image["label"], image["values"]) for image in images],
                                                  title=part.title), "image/png")
        return {"objective": part.params["objective"], "images": images, "curve": curve, "image_size": side,
                "steps": spec.steps, "seconds": round(time.perf_counter() - started, 3)}

    # ------------------------------------------------------------------ assemble
    def assemble(self, spec: FeatureVisualizationSpec, parts: list[PartOutcome], ctx: PartContext) -> dict:
        from explain_core.insights.pictures import decode_png, image_grid

        succeeded = sorted((p for p in parts if p.status == "succeeded"), key=lambda p: p.id)
        rows, pixels, captions = [], [], []
        for part in succeeded:
            for image in part.summary["images"]:
                values = [value for _, value in image["values"]]
                rows.append({"label": image["label"], "objective": part.summary["objective"], "part": part.id,
                             "image": image["image"], "values": image["values"], "first": values[0],
                             "last": values[-1], "max": max(values), "rise": round(values[-1] - values[0], 6)})
                pixels.append(decode_png(ctx.read(image["image"])))
                captions.append(f"{image['label']}\n{values[0]:.3g} -> {values[-1]:.3g}")
        section = {
            "kind": self.name, "title": self.title, "reference": self.reference,
            "settings": spec.model_dump(mode="json", by_alias=True, include={
                "steps", "learning_rate", "use_fft", "fft_decay", "transformations", "image_size", "regularizers",
                "warmup_steps", "save_every"}),
            "images": rows,
        }
        if rows:
            section["grid"] = ctx.put("grid.png", image_grid(
                pixels, captions, columns=min(6, len(pixels)),
                title=f"Feature visualization ({spec.steps} steps; objective first -> last)"), "image/png")
            section["curves"] = ctx.put("curves.png", curves_chart(
                [(row["label"], row["values"]) for row in rows], title="Objective value over the steps"), "image/png")
        return section


# ---------------------------------------------------------------------- resolving the spec on the model
def resolve_term(model, card, term: ObjectiveTerm, where: str) -> dict:
    """The term's layer name, output shape and index bound on this model; InvalidInsightsSpecError if not there."""
    if term.class_ is not None:
        class_indexes(card, [term.class_], where)
        layer = model.layers[-1]
    else:
        layer = model_layer(model, card, term.layer, where, inner=False)
    shape = tuple(int(d) for d in layer.output.shape[1:])
    size = {"neuron": math.prod(shape), "channel": shape[-1] if shape else 0}.get(term.kind)
    if term.class_ is not None:
        if math.prod(shape) != len(card.class_names):
            raise InvalidInsightsSpecError(
                f"{where}: the last layer {layer.name!r} has {math.prod(shape)} outputs but the card names "
                f"{len(card.class_names)} classes", field=where, layer=layer.name, size=math.prod(shape))
    elif term.kind == "channel" and len(shape) < 2:
        raise InvalidInsightsSpecError(f"{where}: layer {layer.name!r} has no channels (output {shape})",
                                       field=where, layer=layer.name, shape=list(shape))
    elif size is not None and any(index >= size for index in term.index_list()):
        raise InvalidInsightsSpecError(
            f"{where}: index {max(term.index_list())} is out of layer {layer.name!r}: it has {size} "
            f"{term.kind}s (0..{size - 1})", field=where, layer=layer.name, size=size, type=term.kind)
    elif term.kind == "direction" and len(term.direction) != shape[-1]:
        raise InvalidInsightsSpecError(
            f"{where}: the direction has {len(term.direction)} values but layer {layer.name!r} has {shape[-1]} "
            f"channels", field=where, layer=layer.name, size=shape[-1])
    resolved = {"layer": layer.name, "shape": list(shape)}
    if term.class_ is not None:
        resolved["class_index"] = card.class_names.index(term.class_)
        resolved["output"] = "probability" if card.output == "probabilities" else "logit"
    return resolved


def term_labels(term: ObjectiveTerm, resolved: dict) -> list[str]:
    """One caption per index of the term: "circle logit", "last_conv ch 3", "conv2d layer"."""
    if term.class_ is not None:
        return [term.label or f"{term.class_} {resolved['output']}"]
    if term.kind in ("layer", "direction"):
        return [term.label or f"{resolved['layer']} {term.kind}"]
    short = {"neuron": "n", "channel": "ch"}[term.kind]
    base = term.label or f"{resolved['layer']} {short}"
    return [f"{base} {index}" if term.label is None or len(term.index_list()) > 1 else base
            for index in term.index_list()]


def combination_labels(objective, resolved: list[dict], grid: list[list]) -> list[str]:
    """Captions of the grid's images, in Xplique's order (itertools.product of the terms' indexes)."""
    terms = terms_of(objective)
    per_term = []
    for term, info, indexes in zip(terms, resolved, grid, strict=True):
        labels = dict(zip(term.index_list(), term_labels(term, info), strict=True))
        weight = "" if abs(term.weight) == 1 or len(terms) == 1 else f"{abs(term.weight):g}×"
        sign = (" - " if term.weight < 0 else " + ") if per_term else ("-" if term.weight < 0 else "")
        per_term.append([sign + weight + labels[index] for index in indexes])
    labels = ["".join(parts) for parts in itertools.product(*per_term)]
    if isinstance(objective, SumObjective) and objective.label:
        labels = [objective.label if len(labels) == 1 else f"{objective.label} {n}" for n in range(len(labels))]
    return labels


def split_grid(index_lists: list[list], capacity: int) -> list[list[list]]:
    """Sub-grids (one index list per term) of at most ``capacity`` combinations covering the product of
    ``index_lists`` in its order: Xplique optimises the product of the objectives it adds."""
    if not index_lists:
        return [[]]
    first, rest = index_lists[0], index_lists[1:]
    rest_count = math.prod(len(indexes) for indexes in rest)
    if rest_count <= capacity:
        step = max(1, capacity // rest_count)
        return [[first[i:i + step], *rest] for i in range(0, len(first), step)]
    return [[[index], *sub] for index in first for sub in split_grid(rest, capacity)]


def image_seconds(spec: FeatureVisualizationSpec, seconds_per_pass: float, side: int, input_side: int) -> float:
    """Estimated seconds of one image of a part: its steps (forward + backward, scaled by the image's area and
    the transformations), and the forward passes on its checkpoints."""
    area = max(1.0, (side / input_side) ** 2)
    steps = spec.steps + spec.warmup_steps
    checkpoints = math.ceil(spec.steps / spec.checkpoint_every())
    return seconds_per_pass * (steps * area * TRANSFORMATION_FACTOR[spec.transformations] + checkpoints)


# ---------------------------------------------------------------------- Xplique
def build_objective(model, terms: list[ObjectiveTerm], resolved: list[dict], grid: list[list]):
    """Xplique's Objective for the grid's combinations: each term from Xplique's factory, then summed.

    Two changes around Xplique 2.0.2: its ``compile`` multiplies the running sum by each term's multiplier
    (a + 2b becomes 2a + 2b), so weights go into the terms' functions and multipliers stay 1; and its
    ``layer`` and ``direction`` losses reduce over the whole batch (``direction`` also fails to broadcast a
    (N, C) mask on (N, H, W, C) outputs), so these two are replaced by per-image versions of the same
    quantities, which lets one batch optimise several images and gives each image its own value."""
    import numpy as np
    from xplique.features_visualizations import Objective

    combined = None
    for term, info, indexes in zip(terms, resolved, grid, strict=True):
        layer = info["layer"]
        if term.class_ is not None:
            built = Objective.neuron(model, layer, [info["class_index"]])
        elif term.kind == "neuron":
            built = Objective.neuron(model, layer, list(indexes))
        elif term.kind == "channel":
            built = Objective.channel(model, layer, list(indexes))
        elif term.kind == "layer":
            built = Objective.layer(model, layer, reducer="magnitude")
            built.funcs = [_layer_magnitude]
        else:
            built = Objective.direction(model, layer, [np.asarray(term.direction, np.float32)])
            built.funcs = [_direction_dot_cossim]
        # Xplique's neuron and channel losses are means over the whole layer output (a logit / 4 on a 4-class
        # model); scaled back to the activation (the logit, the channel's mean) so that a term's value reads as
        # the model's own number and the weights of a sum compare such numbers.
        shape = info["shape"]
        scale = {"neuron": math.prod(shape), "channel": shape[-1]}.get("neuron" if term.class_ else term.kind, 1)
        built.funcs = [_weighted(func, term.weight * scale) for func in built.funcs]
        combined = built if combined is None else combined + built
    return combined


def _weighted(func, weight: float):
    if weight == 1:
        return func

    def weighted(outputs, masks):
        return weight * func(outputs, masks)

    return weighted


def _layer_magnitude(outputs, masks):
    import tensorflow as tf

    return tf.reduce_mean((outputs * masks) ** 2, axis=list(range(1, len(outputs.shape))))


def _direction_dot_cossim(outputs, masks, cossim_pow: float = 2.0):
    """Xplique's dot_cossim (Lucid's: dot product times cosine^2, cosine floored at 0.1), per image."""
    import tensorflow as tf

    axes = list(range(1, len(outputs.shape)))
    masks = tf.reshape(masks, (-1,) + (1,) * (len(outputs.shape) - 2) + (outputs.shape[-1],))
    masks = masks * tf.ones_like(outputs)
    cosine = tf.reduce_sum(tf.nn.l2_normalize(outputs, axis=axes) * tf.nn.l2_normalize(masks, axis=axes), axis=axes)
    return tf.reduce_sum(outputs * masks, axis=axes) * tf.maximum(cosine, 0.1) ** cossim_pow


def objective_evaluator(objective, card):
    """images -> the objective (without regularizers or transformations) of each image: images in [0, 1] at
    any size, resized to the model's input and preprocessed as the card says; one per combination, in order."""
    import numpy as np
    import tensorflow as tf

    model, function, _, input_shape = objective.compile()

    def evaluate(images):
        batch = tf.image.resize(images, input_shape[1:3]).numpy()
        outputs = model(_preprocess(batch, card), training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return np.asarray(function(list(outputs)), dtype=np.float64).reshape(-1)

    return evaluate


def _preprocess(images01, card):
    import numpy as np

    prep = card.preprocessing
    x = images01.astype(np.float32) * np.float32(255.0 * prep.scale)
    return (x - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)


def transformations(spec: FeatureVisualizationSpec, side: int, card):
    """What ``optimize`` applies before the model: Xplique's standard transformations (or none), then the
    card's preprocessing, so that the optimised images are pixels in [0, 1] whatever the model's range.

    Xplique sizes its standard transformations for 512-px images of 224-px models (the model sees a random
    crop of about 35 % of the image); at the model's input size that crop is a zoomed corner and, measured on
    the demo model, the class logits do not rise at all. Their strength unit (Xplique: side / 16) is reduced
    so that the crop stays above about 85 % of the model's input size (none but scale, blur and flip on images
    much smaller than 48 px)."""
    import numpy as np
    import tensorflow as tf
    from xplique.features_visualizations.transformations import (
        compose_transformations,
        generate_standard_transformations,
    )

    prep = card.preprocessing
    scale = np.float32(255.0 * prep.scale)
    mean, std = (tf.constant(np.asarray(v, np.float32)) for v in (prep.mean, prep.std))

    def preprocess(images):
        return (images * scale - mean) / std

    steps = [preprocess]
    if spec.transformations == "standard":
        # The model sees about (side - 10 unit) * 0.94 px of the image (pad 8 units, jitters 18, scale 0.94).
        unit = max(0, min(side // 16, round((side - 0.9 * card.input_height) / 10)))
        steps.insert(0, generate_standard_transformations(size=16 * unit, channels=3))
    return compose_transformations(steps)


def regularizers(spec: FeatureVisualizationSpec) -> list:
    from xplique.features_visualizations.regularizers import l1_reg, l2_reg, total_variation_reg

    made = {"l1": l1_reg, "l2": l2_reg, "total_variation": total_variation_reg}
    return [made[name](weight) for name in REGULARIZERS if (weight := getattr(spec.regularizers, name)) > 0]


# ---------------------------------------------------------------------- pictures
def slug(label: str) -> str:
    """A file name from a caption: "circle logit" -> "circle-logit"."""
    text = label.lower().replace("×", "x").replace(" + ", " plus ").replace(" - ", " minus ")
    text = re.sub(r"[^a-z0-9._-]+", "-", text).strip("-._")
    return text[:80] or "image"


def curves_chart(curves: list[tuple[str, list]], title: str) -> bytes:
    """One line per image: the objective's value at each checkpoint."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    try:
        colours = plt.get_cmap("tab20").colors
        for number, (label, values) in enumerate(curves):
            axes.plot([step for step, _ in values], [value for _, value in values], label=label, linewidth=1.4,
                      color=colours[number % len(colours)])
        axes.set_xlabel("step")
        axes.set_ylabel("objective")
        axes.set_title(title[:80], fontsize=10)
        axes.grid(alpha=0.3)
        if len(curves) <= 12:
            axes.legend(fontsize=7, loc="best")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)
