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

from explain_core.errors import ImageTooLargeError, InvalidModelOutputError
from explain_core.manifest_parts import (
    ATTRIBUTIONS_SHAPE,
    BASE_VALUE,
    LOADED_FROM,
    OUTPUT_KIND,
    SCORE,
    ClassScore,
    InputLocation,
    ModelIdentity,
)
from explain_core.modalities.base import (
    Explained,
    Modality,
    check_finite,
    check_time_budget,
    method_entry,
    method_error,
    method_seconds,
)

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
    attributions: str = Field(description="Key of the raw attributions (NumPy .npy)")
    attributions_shape: Annotated[list[int], ATTRIBUTIONS_SHAPE]
    base_value: Annotated[float | None, BASE_VALUE] = None
    output_kind: Annotated[str | None, OUTPUT_KIND] = None

    def with_links(self, sign) -> dict:
        """The API's view (explain_core.api_models.MethodOutput): file keys as ``sign(key)`` URLs."""
        return {"class_index": self.class_index, "class_name": self.class_name, "score": self.score,
                "heatmap_url": sign(self.heatmap), "attributions_url": sign(self.attributions),
                "attributions_shape": self.attributions_shape, "base_value": self.base_value,
                "output_kind": self.output_kind}


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
        from explain_core.attribution import forward_seconds_per_image, raw_outputs, to_model_input

        card, options = loaded.card, upload.options
        inputs = to_model_input([upload.content.pixels] * min(session.batch_size, TIMING_BATCH), card)
        raw_outputs(loaded.model, inputs, card, session.batch_size)  # the first call may trace
        pass_seconds = forward_seconds_per_image(loaded.model, inputs, card, session.batch_size)
        classes = 1 if options.target is not None else options.top_k
        return sum(method_seconds(spec, params, classes, pass_seconds, card) for spec, params in options.methods)

    def explain(self, session, uploads, loaded, context) -> list[Explained]:
        """Predict the batch, then run each method once over all (image, class) rows sharing its parameters."""
        import numpy as np

        from explain_core.attribution import class_scores, forward_seconds_per_image, run_method, to_model_input

        card = loaded.card
        inputs = to_model_input([u.content.pixels for u in uploads], card)
        started = time.perf_counter()
        scores = class_scores(loaded.model, inputs, card, session.batch_size)
        predict_seconds = time.perf_counter() - started
        # A NaN row fails the batch; explained one by one, only the inputs with NaN predictions fail.
        for upload, row in zip(uploads, scores, strict=True):
            check_finite(row, f"the model's predictions for {upload.key}", key=upload.key)
        pass_seconds = forward_seconds_per_image(loaded.model, inputs, card, session.batch_size)

        targets = [u.options.classes_to_explain(scores[i]) for i, u in enumerate(uploads)]
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
                explainer = session.explainers.get(spec, loaded.model, card, params, session.batch_size,
                                                   loaded.background)
                result = run_method(explainer, batch_inputs, one_hot)
                metrics.add_metric(name=f"{name}Seconds", unit=MetricUnit.Seconds, value=result.seconds)
                for row, (i, cls) in enumerate(rows):
                    problem = _non_finite_attributions(result, row, name, card.class_name(cls))
                    if problem is not None:
                        method_results[(i, name, params_json, cls)] = {"error": method_error(problem, name, card)}
                        continue
                    method_results[(i, name, params_json, cls)] = {
                        "attributions": result.attributions[row],
                        "heatmap": result.heatmaps[row],
                        "seconds": result.seconds,
                        "rows": len(rows),
                        "base_value": None if result.base_values is None else float(result.base_values[row]),
                    }
            except Exception as exc:  # a method failing on this model must not sink the others
                error = method_error(exc, name, card)
                for i, cls in rows:
                    method_results[(i, name, params_json, cls)] = {"error": error}

        return [
            self._outputs_for(session, i, upload, loaded, scores[i], targets[i], method_results, predict_seconds,
                              len(uploads))
            for i, upload in enumerate(uploads)
        ]

    @staticmethod
    def _outputs_for(session, i, upload, loaded, scores, classes, method_results, predict_seconds,
                     batch_rows) -> Explained:
        import numpy as np

        from explain_core.keys import class_label
        from explain_core.rendering import npy_bytes, overlay_png
        from explain_core.shap_methods import output_kind

        card = loaded.card
        ranked = np.argsort(-scores, kind="stable")[: card.top_k]

        def described(cls: int) -> dict:
            return {"class_index": int(cls), "class_name": card.class_name(int(cls)), "score": float(scores[cls])}

        def class_score(cls: int) -> ClassScore:
            return ClassScore(**described(cls))

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
                objects.append((heatmap_key, overlay_png(
                    upload.content.pixels, found["heatmap"], max_side=session.settings.max_overlay_side
                ), "image/png"))
                objects.append((array_key, npy_bytes(found["attributions"]), "application/octet-stream"))
                entry.seconds = round(found["seconds"], 4)  # the whole batch
                entry.seconds_per_image = round(found["seconds"] / found["rows"], 4)
                entry.batch_rows = found["rows"]
                shap = found["base_value"] is not None
                entry.outputs.append(ImageOutput(
                    **described(cls), heatmap=heatmap_key, attributions=array_key,
                    attributions_shape=list(found["attributions"].shape),
                    # SHAP: the attributions sum to the class's output minus this expected value.
                    base_value=found["base_value"], output_kind=output_kind(card) if shap else None,
                ))
            methods.append(entry)

        return Explained(
            objects=objects, methods=methods, input_description=upload.content.description(),
            predictions=[class_score(c) for c in ranked], explained_classes=[class_score(c) for c in classes],
            timings={"predict_s": round(predict_seconds, 4), "batch_images": batch_rows},
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
