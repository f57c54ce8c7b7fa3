"""Images: Keras models with a fixed RGB input size; heatmap overlays and attribution arrays.

An upload is decoded to sRGB pixels (:mod:`explain_core.images`), resized and preprocessed as
the card prescribes, predicted in one batch with the other images of its model, and each method
runs once over every (image, class) row that shares its parameters.
"""

import json
import time
from collections import defaultdict
from typing import Annotated, Any, Literal

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field, model_validator

from explain_core.approximation import APPROXIMATION, WARNINGS, Approximation, ExplanationWarning, image_checks
from explain_core.errors import ExplainError, ImageTooLargeError, InvalidModelOutputError
from explain_core.explain_condition import skipped_methods
from explain_core.manifest_parts import (
    ATTRIBUTIONS_SHAPE,
    BASE_VALUE,
    LOADED_FROM,
    METRICS_FIELD,
    OUTPUT_KIND,
    SCORE,
    ClassScore,
    InputLocation,
    MetricScore,
    ModelIdentity,
)
from explain_core.memory import fitting_batch_size
from explain_core.modalities.base import (
    Explained,
    Modality,
    check_finite,
    check_metric_time_budget,
    check_time_budget,
    method_entry,
    method_error,
    method_seconds,
    metric_seconds,
)
from explain_core.quality_metrics import metric_passes, score_rows
from explain_core.rendering import HEATMAP_RANGE, RenderOptions

#: Copies of an input timed together to measure a batched model pass.
TIMING_BATCH = 16
#: SHAP background used when none is stored beside the model (``background.npy``): flat images at
#: these grey levels, i.e. "no object anywhere", preprocessed as the card prescribes.
DEFAULT_BACKGROUND_LEVELS = (0.0, 64.0, 128.0, 192.0, 255.0)

metrics = Metrics()


# ---------------------------------------------------------------------- the card fields of an image model
class Preprocessing(BaseModel):
    """``x = (pixels * scale - mean) / std`` per channel, applied to RGB uint8 pixels."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    scale: float = 1.0 / 255.0
    mean: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0], min_length=3, max_length=3)
    std: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0], min_length=3, max_length=3)

    @model_validator(mode="after")
    def _std_positive(self):
        if any(s <= 0 for s in self.std):
            raise ValueError("preprocessing.std values must be > 0")
        return self


class ImageCardFields(BaseModel):
    """The model card's fields for image models (explain_core.model_card.ModelCard has them all)."""

    #: Image models: the input size.
    input_height: int | None = Field(default=None, ge=8, le=1024)
    input_width: int | None = Field(default=None, ge=8, le=1024)
    input_channels: Literal[3] = 3
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    #: Layer used by Grad-CAM, Grad-CAM++ and FEM; None lets Xplique pick the last conv layer.
    cam_layer: str | None = None
    #: How heatmaps are drawn unless an upload says otherwise (docs/outputs.md#heatmaps-visual-options).
    rendering: RenderOptions = Field(default_factory=RenderOptions)

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) of a model with a fixed input size (images); else None."""
        return None if self.input_height is None or self.input_width is None else (self.input_height, self.input_width)


# ---------------------------------------------------------------------- the manifest's parts of an image
class ImageInput(InputLocation):
    """An image input: where it was read from and what decoding it did (docs/inputs.md)."""

    format: str = Field(description="Image format detected from the bytes (JPEG, PNG, WEBP, BMP, GIF)")
    width: int = Field(description="Width in pixels after EXIF rotation (before resizing to the model)")
    height: int = Field(description="Height in pixels after EXIF rotation (before resizing to the model)")
    source_mode: str = Field(description="Pillow mode of the decoded file (RGB, RGBA, L, P, I;16, CMYK, ...)")
    conversions: dict[str, Any] = Field(
        default_factory=dict,
        description="Conversions applied to reach 8-bit sRGB, empty for an ordinary RGB or greyscale image: "
                    "scaled_from ([min, max] of a 16-bit or float image), reduced_to_8_bit, icc_profile, "
                    "icc_profile_description, cmyk, alpha, exif_orientation (docs/inputs.md)",
    )

    _always = frozenset({"conversions"})


class ImageModel(ModelIdentity):
    """The image model that explained the input."""

    modality: Literal["image"] = Field(description="image")
    input_size: list[int] = Field(description="[height, width] the image was resized to")
    loaded_from: Annotated[str, LOADED_FROM]


class ImageOutput(ClassScore):
    """One explained class of one method on an image: result-bucket keys of its files."""

    score: Annotated[float, SCORE]
    heatmap: str = Field(description="Key of the heatmap overlaid on the image (PNG)")
    raw_heatmap: str | None = Field(
        default=None, description="Key of the heatmap alone at the model's input size, one pixel per model input "
                                  "pixel, coloured as the overlay (PNG); absent from manifests before it existed")
    region_mask: str | None = Field(
        default=None, description="XRAI: key of the mask of its top regions (top_percent of the image, greyscale PNG "
                                  "at the model's input size, 255 inside)")
    heatmap_range: Annotated[list[float] | None, HEATMAP_RANGE] = None
    attributions: str = Field(description="Key of the raw attributions (NumPy .npy)")
    attributions_shape: Annotated[list[int], ATTRIBUTIONS_SHAPE]
    base_value: Annotated[float | None, BASE_VALUE] = None
    output_kind: Annotated[str | None, OUTPUT_KIND] = None
    metrics: Annotated[dict[str, MetricScore] | None, METRICS_FIELD] = None
    approximation: Annotated[Approximation | None, APPROXIMATION] = None
    warnings: Annotated[list[ExplanationWarning] | None, WARNINGS] = None

    def with_links(self, sign) -> dict:
        """The API's view (explain_core.api_models.MethodOutput): file keys as ``sign(key)`` URLs."""
        return {"class_index": self.class_index, "class_name": self.class_name, "score": self.score,
                "heatmap_url": sign(self.heatmap), "attributions_url": sign(self.attributions),
                "raw_heatmap_url": sign(self.raw_heatmap) if self.raw_heatmap else None,
                "region_mask_url": sign(self.region_mask) if self.region_mask else None,
                "heatmap_range": self.heatmap_range,
                "attributions_shape": self.attributions_shape, "base_value": self.base_value,
                "output_kind": self.output_kind, "metrics": self.metrics,
                "approximation": self.approximation, "warnings": self.warnings}


class ImageModality(Modality):
    name = "image"
    frameworks = ("keras",)
    card_fields = ImageCardFields
    input_type = ImageInput
    model_type = ImageModel
    predictions_type = list[ClassScore]
    output_type = ImageOutput
    attribution_dtype = "float32"  # .npy outputs of pixel size
    default_background_is_fixed = True
    default_background_description = "flat grey images at levels 0, 64, 128, 192, 255"

    def check_card(self, card) -> None:
        if card.input_height is None or card.input_width is None:
            raise ValueError("an image model needs input_height and input_width")

    def model_input_shape(self, card, handler, model) -> tuple:
        return (card.input_height, card.input_width, card.input_channels)

    def describe_model(self, loaded) -> dict:
        return {"input_size": [loaded.card.input_height, loaded.card.input_width]}

    def prepare_background(self, array, card):
        import numpy as np

        from explain_core.attribution import preprocess

        return preprocess(array.astype(np.float32), card)

    def default_background(self, card, inputs):
        import numpy as np

        from explain_core.attribution import preprocess

        levels = np.asarray(DEFAULT_BACKGROUND_LEVELS, dtype=np.float32)[:, None, None, None]
        flat = np.broadcast_to(levels, (len(levels), card.input_height, card.input_width, 3))
        return preprocess(flat, card)

    def size_limit(self, settings):
        return settings.max_image_bytes, ImageTooLargeError

    def decode(self, data, filename, loaded, settings):
        from explain_core.images import decode_image

        return decode_image(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)

    def prediction_summary(self, manifest: dict) -> str:
        top = manifest["predictions"][0]
        return f"{top['class_name']} ({top['score']:.2f})"

    # ------------------------------------------------------------------ explaining
    def estimate_seconds(self, session, upload, loaded) -> float:
        from explain_core.attribution import forward_seconds_per_image, probabilities, raw_outputs, to_model_input

        card, options = loaded.card, upload.options
        inputs = to_model_input([upload.content.pixels] * min(session.batch_size, TIMING_BATCH), card)
        outputs = raw_outputs(loaded.model, inputs, card, session.batch_size)  # the first call may trace
        if options.condition is not None and not options.verdicts(probabilities(outputs[:1], card))[0].explain:
            return 0.0  # skipped by its explanation condition: no method will run
        pass_seconds = forward_seconds_per_image(loaded.model, inputs, card, session.batch_size)
        classes = 1 if options.target is not None else options.top_k
        seconds = sum(method_seconds(spec, params, classes, pass_seconds, card) for spec, params in options.methods)
        for spec, params in options.methods:
            for metric, metric_params in options.metrics:
                try:
                    passes = metric_passes(metric, metric_params, spec, params, card)
                except ExplainError:
                    continue  # refused when it would run (an error entry of that metric): costs nothing
                seconds += metric_seconds(metric, passes, spec, classes, pass_seconds)
        return seconds

    def explain(self, session, uploads, loaded, context) -> list[Explained]:
        """Predict the batch, then run each method once over all (image, class) rows sharing its parameters."""
        import numpy as np

        from explain_core.attribution import (
            forward_seconds_per_image,
            probabilities,
            raw_outputs,
            run_method,
            to_model_input,
        )

        card = loaded.card
        inputs = to_model_input([u.content.pixels for u in uploads], card)
        started = time.perf_counter()
        # Raw outputs (logits, ...) are what the approximation checks compare attributions with.
        outputs = raw_outputs(loaded.model, inputs, card, session.batch_size)
        scores = probabilities(outputs, card)
        predict_seconds = time.perf_counter() - started
        # A NaN row fails the batch; explained one by one, only the inputs with NaN predictions fail.
        for upload, row in zip(uploads, scores, strict=True):
            check_finite(row, f"the model's predictions for {upload.key}", key=upload.key)
        # Explain only what is asked: an image that does not meet its condition gets no row, so no method runs on
        # it (its neighbours in the batch are explained as they ask).
        verdicts = [u.options.verdicts(scores[i:i + 1])[0] for i, u in enumerate(uploads)]
        targets = [u.options.classes_to_explain(scores[i]) if verdicts[i].explain else []
                   for i, u in enumerate(uploads)]
        # Only for the time budgets of method runs: a batch where every image is skipped runs none.
        pass_seconds = (forward_seconds_per_image(loaded.model, inputs, card, session.batch_size) if any(targets)
                        else 0.0)
        # Rows are (upload index, class): a method runs once over all rows sharing its parameters.
        jobs: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
        for i, upload in enumerate(uploads):
            for spec, params in upload.options.methods:
                for cls in targets[i]:
                    jobs[(spec.name, json.dumps(params, sort_keys=True))].append((i, cls))
        specs = {spec.name: spec for u in uploads for spec, _ in u.options.methods}

        method_results: dict[tuple, dict] = {}
        for (name, params_json), rows in jobs.items():
            spec, params = specs[name], json.loads(params_json)
            batch_inputs = inputs[[i for i, _ in rows]]
            one_hot = np.zeros((len(rows), len(card.class_names)), dtype=np.float32)
            one_hot[np.arange(len(rows)), [cls for _, cls in rows]] = 1.0
            try:
                check_time_budget(spec, params, len(rows), pass_seconds, card, context)
                # The session's batch, or a smaller one that fits the function's memory (over_memory_budget if none).
                batch_size = fitting_batch_size(spec, params, len(rows), loaded.model, card, session.batch_size,
                                                session.settings)
                explainer = session.explainers.get(spec, loaded.model, card, params, batch_size, loaded.background)
                result = run_method(explainer, batch_inputs, one_hot)
                metrics.add_metric(name=f"{name}Seconds", unit=MetricUnit.Seconds, value=result.seconds)
                approximations = image_checks(spec, params, result.attributions, batch_inputs,
                                              outputs[[i for i, _ in rows]], [cls for _, cls in rows], loaded.model,
                                              card, batch_size, base_values=result.base_values)
                metric_scores = _quality_scores(uploads, rows, spec, params, result, explainer, batch_inputs,
                                                one_hot, loaded, batch_size, pass_seconds, context)
                for row, (i, cls) in enumerate(rows):
                    problem = _non_finite_attributions(result, row, name, card.class_name(cls))
                    if problem is not None:
                        method_results[(i, name, params_json, cls)] = {"error": method_error(problem, name, card)}
                        continue
                    method_results[(i, name, params_json, cls)] = {
                        "metrics": metric_scores[row],
                        "attributions": result.attributions[row],
                        "heatmap": result.heatmaps[row],
                        "seconds": result.seconds,
                        "rows": len(rows),
                        "base_value": None if result.base_values is None else float(result.base_values[row]),
                        "mask": None if result.region_masks is None else result.region_masks[row],
                        "approximation": approximations[row] if approximations else (None, None),
                    }
            except Exception as exc:  # a method failing on this model must not sink the others
                error = method_error(exc, name, card)
                for i, cls in rows:
                    method_results[(i, name, params_json, cls)] = {"error": error}

        return [
            self._outputs_for(session, i, upload, loaded, scores[i], targets[i], method_results, predict_seconds,
                              len(uploads), verdicts[i])
            for i, upload in enumerate(uploads)
        ]

    @staticmethod
    def _outputs_for(session, i, upload, loaded, scores, classes, method_results, predict_seconds,
                     batch_rows, verdict) -> Explained:
        import numpy as np

        from explain_core.keys import class_label
        from explain_core.rendering import mask_png, npy_bytes, render_heatmap
        from explain_core.shap_methods import output_kind

        card = loaded.card
        ranked = np.argsort(-scores, kind="stable")[: card.top_k]

        def described(cls: int) -> dict:
            return {"class_index": int(cls), "class_name": card.class_name(int(cls)), "score": float(scores[cls])}

        def class_score(cls: int) -> ClassScore:
            return ClassScore(**described(cls))

        condition = upload.options.condition.input_outcome(verdict) if upload.options.condition else None
        timings = {"predict_s": round(predict_seconds, 4), "batch_images": batch_rows}
        if not verdict.explain:  # the predictions and why; no method ran, nothing was drawn
            return Explained(objects=[], methods=skipped_methods(upload.options, card),
                             input_description=upload.content.description(),
                             predictions=[class_score(c) for c in ranked], explained_classes=[], timings=timings,
                             condition=condition)

        def draw(found: dict):
            """The overlay and raw heatmap PNGs, the .npy and any region mask PNG of one (method, class): each
            encoded once."""
            return (render_heatmap(upload.content.pixels, found["heatmap"], upload.options.rendering,
                                   max_side=session.settings.max_overlay_side), npy_bytes(found["attributions"]),
                    None if found.get("mask") is None else mask_png(found["mask"]))

        # Every (method, class) of the input drawn side by side: Pillow's PNG encoder releases the GIL.
        started = time.perf_counter()
        results = [method_results[(i, spec.name, json.dumps(params, sort_keys=True), cls)]
                   for spec, params in upload.options.methods for cls in classes]
        drawn = session.in_parallel(draw, [found for found in results if "error" not in found])
        for _, _, error in drawn:
            if error is not None:
                raise error
        files = iter([files for _, files, _ in drawn])
        timings["render_s"] = round(time.perf_counter() - started, 4)
        objects, methods = [], []
        for spec, params in upload.options.methods:
            entry = method_entry(spec, params, card)
            for cls in classes:
                found = method_results[(i, spec.name, json.dumps(params, sort_keys=True), cls)]
                if "error" in found:
                    entry.status = "failed"
                    entry.error = found["error"]
                    continue
                label = class_label(cls, card.class_names)
                heatmap_key = session.output_key(upload, spec.name, label, "png")
                array_key = session.output_key(upload, spec.name, label, "npy")
                raw_heatmap_key = session.output_key(upload, spec.name, label, "heatmap.png")
                rendered, array_bytes, mask_bytes = next(files)
                objects.append((heatmap_key, rendered.overlay, "image/png"))
                objects.append((raw_heatmap_key, rendered.raw, "image/png"))
                objects.append((array_key, array_bytes, "application/octet-stream"))
                mask_key = None
                if mask_bytes is not None:
                    mask_key = session.output_key(upload, spec.name, label, "mask.png")
                    objects.append((mask_key, mask_bytes, "image/png"))
                entry.seconds = round(found["seconds"], 4)  # the whole batch
                entry.seconds_per_image = round(found["seconds"] / found["rows"], 4)
                entry.batch_rows = found["rows"]
                shap = found["base_value"] is not None
                entry.outputs.append(ImageOutput(
                    **described(cls), heatmap=heatmap_key, attributions=array_key,
                    raw_heatmap=raw_heatmap_key, region_mask=mask_key, heatmap_range=rendered.magnitudes,
                    attributions_shape=list(found["attributions"].shape),
                    # SHAP: the attributions sum to the class's output minus this expected value.
                    base_value=found["base_value"], output_kind=output_kind(card) if shap else None,
                    metrics=found["metrics"] or None,
                    # Always, for a method with a check: the error and its warnings (docs/approximation.md).
                    approximation=found["approximation"][0], warnings=found["approximation"][1],
                ))
            methods.append(entry)

        return Explained(
            objects=objects, methods=methods, input_description=upload.content.description(),
            predictions=[class_score(c) for c in ranked], explained_classes=[class_score(c) for c in classes],
            timings=timings, rendering=upload.options.rendering, condition=condition,
        )


def _non_finite_attributions(result, row: int, method: str, class_name: str) -> InvalidModelOutputError | None:
    """The error of one explained row whose attributions, heatmap or base value are not finite."""
    parts = [result.attributions[row], result.heatmaps[row]]
    if result.base_values is not None:
        parts.append(result.base_values[row])
    try:
        for part in parts:
            check_finite(part, f"{method}'s attributions for class {class_name}", method=method,
                         class_name=class_name)
    except InvalidModelOutputError as exc:
        return exc
    return None


def _quality_scores(uploads, rows, spec, params, result, explainer, inputs, one_hot, loaded, batch_size: int,
                    pass_seconds: float, context) -> list[dict]:
    """Each row's quality metrics (the ones its upload asked for), by metric name; rows whose
    attributions are not finite get none (the row is an error)."""
    import numpy as np

    finite = [bool(np.isfinite(result.attributions[row]).all() and np.isfinite(result.heatmaps[row]).all())
              for row in range(len(rows))]
    scored: list[dict] = [{} for _ in rows]
    # Uploads of one batch may ask for different metrics: each (metric, parameters) runs on the rows that asked.
    wanted: dict[tuple, list[int]] = defaultdict(list)
    for row, (i, _) in enumerate(rows):
        for metric, metric_params in uploads[i].options.metrics:
            if finite[row]:
                wanted[(metric, json.dumps(metric_params, sort_keys=True))].append(row)
    for (metric, metric_params_json), selected in wanted.items():
        metric_params = json.loads(metric_params_json)

        def check_budget(metric, metric_params, passes, selected=selected):
            check_metric_time_budget(metric, metric_params, passes, spec, len(selected), pass_seconds, context)

        row_scores = score_rows(
            ((metric, metric_params),), spec, params, model=loaded.model, card=loaded.card, explainer=explainer,
            inputs=inputs[selected], targets=one_hot[selected], attributions=result.attributions[selected],
            heatmaps=result.heatmaps[selected], batch_size=batch_size, check_budget=check_budget,
        )
        for row, found in zip(selected, row_scores, strict=True):
            scored[row].update(found)
    return scored
