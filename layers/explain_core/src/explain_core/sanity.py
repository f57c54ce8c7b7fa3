"""Sanity checks of a model's explanation methods, on demand (Adebayo et al. 2018).

Adebayo et al., Sanity Checks for Saliency Maps (2018), https://arxiv.org/abs/1810.03292, found
that some methods' maps barely change when the model's weights are randomised (Guided Backprop,
Guided Grad-CAM): they show the input's edges, not what the model learned. Two of Xplique's
metrics test that, per method of one family, over a set of images:

- **model randomisation** (``ModelRandomizationMetric``): the Spearman rank correlation between
  each image's map on the trained model and on a copy whose top layers' weights are randomised
  (Xplique's ``ProgressiveLayerRandomization``, from the logits down, ``randomised_layers`` of the
  weight layers; Xplique's default is the top quarter). A map that depends on the weights has a
  low rho: the check passes when the mean is below MAX_RANDOMISED_SPEARMAN.
- **random logit** (``RandomLogitMetric``): the SSIM between the map of the predicted class and
  that of a random other class. A class-sensitive method has a low SSIM: the check passes below
  MAX_RANDOM_LOGIT_SSIM.

Why the model-randomisation metric is subclassed: Xplique's swaps ``explainer.model`` for a clone
with randomised weights. Measured on the demo model with Xplique 2.0.2, that swap fails for
GuidedBackprop and DeconvNet (Keras cannot clone their overridden ReLU: a TypeError) and is silently
wrong for GradCAM, GradCAMPP and FEM (they keep watching the trained model's convolution layer, so
the "randomised" maps equal the trained ones: rho = 1). Here the perturbed explainer is built anew
through the registry (:func:`explain_core.attribution.build_explainer`) on a randomised copy of the
user's model; Xplique's metric, strategy and similarity do the rest.

A check is requested with a small JSON file (:class:`SanityRequest`) uploaded to
``incoming/<family>/<model>/<version>/sanity-checks/<id>.json`` (the family's queue delivers it,
:mod:`explain_core.sqs_adapter` routes it here), or with ``POST /sanity-checks``, which stores such
a file. The report (:class:`SanityReport`, strict JSON) and a bar chart go to
``results/<family>/<model>/<version>/sanity/<id>/report.json`` and ``chart.png``; a request that
cannot run gets an error record under ``errors/`` like any input. The same request file delivered
twice gives one report: a report whose ``source-etag`` is the file's is not computed again, and the
randomisation and the random classes are seeded (``seed``), so a concurrent duplicate writes the
same numbers.

This module's top level imports no ML library: the light API image validates requests with it.
"""

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from explain_core.errors import InvalidSanityRequestError
from explain_core.manifest_parts import ErrorDetail

REFERENCE = "Adebayo et al., Sanity Checks for Saliency Maps (2018), https://arxiv.org/abs/1810.03292"
#: Mean Spearman rank correlation (trained vs randomised model) below which maps depend on the weights.
MAX_RANDOMISED_SPEARMAN = 0.5
#: Mean SSIM (predicted vs random other class) below which maps depend on the explained class.
MAX_RANDOM_LOGIT_SSIM = 0.5
#: Images a check runs on: default and maximum.
DEFAULT_IMAGES = 8
MAX_IMAGES = 32
#: Largest request file read (bytes).
MAX_REQUEST_BYTES = 64 * 1024
#: Keys listed under an image prefix, at most, to find its images.
MAX_LISTED_KEYS = 1000
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
#: Each method explains every image four times: trained and randomised model, predicted and other class.
EXPLANATIONS_PER_CHECK = 4
REPORT_FILE = "report.json"
CHART_FILE = "chart.png"


# ---------------------------------------------------------------------------------------- the request
class ImageSet(BaseModel):
    """The images the maps are compared on, at the model's input size."""

    model_config = ConfigDict(extra="forbid")
    source: Literal["background", "prefix"] = Field(
        default="background",
        description="background: the first rows of background.npy beside the model; prefix: image files "
                    "under `prefix` in the input bucket (in key order)",
    )
    prefix: str | None = Field(
        default=None, min_length=1, max_length=512,
        description="With source prefix: a key prefix under incoming/<family>/ of the input bucket (the API's "
                    "jobs/ and sanity-checks/ folders are skipped)",
    )
    count: int = Field(default=DEFAULT_IMAGES, ge=1, le=MAX_IMAGES, description="Images used, at most")

    @model_validator(mode="after")
    def _prefix_with_its_source(self):
        if (self.source == "prefix") != (self.prefix is not None):
            raise ValueError("give images.prefix with source prefix, and only then")
        return self


class SanityRequest(BaseModel):
    """A sanity-check request file (``sanity-checks/<id>.json``); every field is optional."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    methods: list[str] | None = Field(
        default=None, min_length=1, max_length=30,
        description='Method names of the family, or ["all"] (the default: every method that can explain the model)',
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description='Per-method parameters, e.g. {"Rise": {"nb_samples": 500}}')
    images: ImageSet = Field(default_factory=ImageSet)
    randomised_layers: float = Field(
        default=0.25, gt=0.0, le=1.0,
        description="Share of the model's weight layers randomised, from the output down (at least one; "
                    "Xplique's default 0.25; 1.0 randomises every layer)",
    )
    seed: int = Field(default=42, ge=0, le=2**31 - 1,
                      description="Seeds the random weights and the random other classes")


def parse_request(data: bytes) -> SanityRequest:
    """A request file's bytes as a :class:`SanityRequest`; InvalidSanityRequestError names what is wrong."""
    if len(data) > MAX_REQUEST_BYTES:
        raise InvalidSanityRequestError(
            f"the request file is {len(data)} bytes; the limit is {MAX_REQUEST_BYTES}", size=len(data),
            limit=MAX_REQUEST_BYTES)
    try:
        return SanityRequest.model_validate_json(data or b"{}")
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or '<file>'}: {e['msg']}" for e in exc.errors()]
        raise InvalidSanityRequestError(
            "the sanity-check request is not valid: " + "; ".join(problems[:10]), problems=problems[:20],
        ) from exc


# ---------------------------------------------------------------------------------------- the report
class _Report(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CheckResult(_Report):
    """One metric of one method: its mean over the images, per image, and what it says."""

    mean: float
    per_image: list[float]
    threshold: float
    passed: bool
    reading: str


class MethodSanity(_Report):
    name: str
    params: dict[str, Any]
    status: Literal["succeeded", "skipped", "failed"]
    verdict: str = Field(description='"passes: ...", "fails: ...", "skipped: <why>" or "failed: <error>"')
    model_randomisation: CheckResult | None = Field(
        default=None, description="Spearman rank correlation of the maps, trained vs randomised model")
    random_logit: CheckResult | None = Field(
        default=None, description="SSIM of the maps, predicted vs a random other class")
    estimated_seconds: float
    seconds: float | None = None
    error: ErrorDetail | None = None


class ImagesUsed(_Report):
    source: Literal["background", "prefix"]
    prefix: str | None = None
    count: int
    keys: list[str] | None = Field(default=None, description="source prefix: the image files, in order")
    predicted: list[str] = Field(description="Per image, the predicted class: the class whose map is compared")


class Randomisation(_Report):
    strategy: str = "xplique.metrics.randomization.ProgressiveLayerRandomization"
    share: float
    randomised_layers: list[str] = Field(description="Layers whose weights were randomised, from the output down")
    weight_layers: int
    seed: int
    predictions_changed: float = Field(description="Share of the images whose predicted class changed")
    max_output_change: float = Field(description="Largest change of a model output (logit or probability)")


class SanityReport(_Report):
    status: Literal["succeeded", "partial", "failed"]
    family: str
    model: dict[str, str]
    request_id: str
    request: SanityRequest
    request_key: str
    images: ImagesUsed
    randomisation: Randomisation
    thresholds: dict[str, float]
    methods: list[MethodSanity]
    chart: str = Field(description="Key of the bar chart (PNG) in the results bucket")
    reference: str = REFERENCE
    created_at: str
    seconds: float


# ---------------------------------------------------------------------------------------- the verdict
def judge(spearman: list[float], ssim: list[float]) -> tuple[CheckResult, CheckResult, str]:
    """Both checks of a method from its per-image scores, and its verdict."""
    rho, similarity = sum(spearman) / len(spearman), sum(ssim) / len(ssim)
    weights = CheckResult(
        mean=round(rho, 4), per_image=[round(v, 4) for v in spearman], threshold=MAX_RANDOMISED_SPEARMAN,
        passed=rho < MAX_RANDOMISED_SPEARMAN,
        reading=(f"maps depend on the weights (rho={rho:.2f} < {MAX_RANDOMISED_SPEARMAN})"
                 if rho < MAX_RANDOMISED_SPEARMAN else
                 f"maps stay correlated after randomisation (rho={rho:.2f} >= {MAX_RANDOMISED_SPEARMAN})"),
    )
    logit = CheckResult(
        mean=round(similarity, 4), per_image=[round(v, 4) for v in ssim], threshold=MAX_RANDOM_LOGIT_SSIM,
        passed=similarity < MAX_RANDOM_LOGIT_SSIM,
        reading=(f"maps depend on the explained class (SSIM={similarity:.2f} < {MAX_RANDOM_LOGIT_SSIM})"
                 if similarity < MAX_RANDOM_LOGIT_SSIM else
                 f"maps barely change with the explained class (SSIM={similarity:.2f} >= {MAX_RANDOM_LOGIT_SSIM})"),
    )
    failed = [check.reading for check in (weights, logit) if not check.passed]
    verdict = ("fails: " + "; ".join(failed)) if failed else f"passes: {weights.reading}; {logit.reading}"
    return weights, logit, verdict


# ---------------------------------------------------------------------------------------- Xplique's metrics
_METRICS: dict = {}


def xplique_metrics():
    """(ModelRandomization, RandomLogit): Xplique's metrics with per-image scores; the first builds its
    perturbed explainer anew on a randomised copy of the model (see the module docstring). Defined on
    first use: Xplique imports TensorFlow."""
    if _METRICS:
        return _METRICS["model"], _METRICS["logit"]
    import numpy as np
    import tensorflow as tf
    from xplique.commons import batch_tensor
    from xplique.metrics import ModelRandomizationMetric, RandomLogitMetric

    class PerImage:
        def per_image(self, explainer) -> np.ndarray:
            """Xplique's ``evaluate`` loop without the mean: one score per image."""
            scores = [
                np.asarray(self._batch_evaluate(tf.convert_to_tensor(inputs, dtype=tf.float32),
                                                tf.convert_to_tensor(targets, dtype=tf.float32), explainer))
                for inputs, targets in batch_tensor((self.inputs, self.targets), self.batch_size or len(self.inputs))
            ]
            return np.concatenate(scores).astype(np.float64)

    class RebuiltModelRandomization(PerImage, ModelRandomizationMetric):
        """Xplique's ModelRandomizationMetric whose perturbed explainer is ``rebuild(randomised_model)``:
        a new explainer of the same method and parameters on the randomised copy (Adebayo et al. 2018,
        https://arxiv.org/abs/1810.03292)."""

        def __init__(self, model, inputs, targets, *, randomised_model, rebuild, batch_size, seed):
            super().__init__(model, inputs, targets, batch_size=batch_size, seed=seed)
            self.randomised_model = randomised_model
            self.rebuild = rebuild

        def _get_perturbed_context(self, inputs, targets, explainer):
            return inputs, targets, self.rebuild(self.randomised_model)

        def _cleanup_perturbed_context(self, explainer, *args):
            """Nothing to restore: the trained model's explainer was never changed."""

    class PerImageRandomLogit(PerImage, RandomLogitMetric):
        """Xplique's RandomLogitMetric with per-image scores (Adebayo et al. 2018,
        https://arxiv.org/abs/1810.03292)."""

    _METRICS.update(model=RebuiltModelRandomization, logit=PerImageRandomLogit)
    return RebuiltModelRandomization, PerImageRandomLogit


def randomised_copy(model, share: float, seed: int):
    """A copy of a Keras model whose top ``share`` of weight layers (at least one) Xplique's
    ProgressiveLayerRandomization re-draws; returns (copy, names of the randomised layers, weight layers)."""
    import keras
    import tensorflow as tf
    from xplique.metrics import ProgressiveLayerRandomization

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    weight_layers = [layer for layer in copy.layers if layer.get_weights()]
    count = max(1, int(len(weight_layers) * share))
    tf.random.set_seed(seed)  # the same request draws the same weights
    ProgressiveLayerRandomization(stop_layer=count).randomize(copy)
    return copy, [layer.name for layer in weight_layers[::-1][:count]], len(weight_layers)


# ---------------------------------------------------------------------------------------- running a check
class SanityChecks:
    """Runs sanity-check requests of a family's function with its explanation session."""

    def __init__(self, session):
        self.session = session
        self.family = session.family

    def handle(self, upload, context) -> "SanityReport | None":
        """Run the request file ``upload`` names and write its report; None for a duplicate delivery.
        Typed errors (a bad request, an unknown model) propagate to the adapter, which records them."""
        from explain_core.results import SOURCE_ETAG

        session, ref = self.session, upload.ref
        request_id = session.keys.sanity_request_id(ref)
        loaded = session.load(ref.model, ref.version)
        data, _ = session.download(upload, loaded)
        request = parse_request(data)
        prefix = session.keys.sanity_prefix(self.family, ref.model, ref.version, request_id)
        existing = session.writer.manifest_metadata(prefix + REPORT_FILE)
        if existing and existing.get(SOURCE_ETAG) == upload.etag:
            return None
        report = self.run(loaded, request, context, request_id=request_id, request_key=upload.key,
                          chart_key=prefix + CHART_FILE)
        session.writer.put_many([(report.chart, chart_png(report), "image/png")])
        # The report goes last: its presence means the chart is in place.
        session.writer.put_json(prefix + REPORT_FILE, report.model_dump(mode="json"), {SOURCE_ETAG: upload.etag})
        session.writer.delete_error(upload.key)
        return report

    def run(self, loaded, request: SanityRequest, context, *, request_id: str, request_key: str,
            chart_key: str) -> SanityReport:
        """Both checks for each requested method of the family on ``loaded``'s model."""
        import numpy as np

        from explain_core.attribution import forward_seconds_per_image, raw_outputs
        from explain_core.errors import InvalidModelError, UnsupportedModelError
        from explain_core.modalities.base import check_finite
        from explain_core.request_options import parse_options
        from explain_core.results import now_iso

        started = time.perf_counter()
        card, batch_size = loaded.card, self.session.batch_size
        if loaded.modality.name != "image":
            raise UnsupportedModelError(
                f"sanity checks compare image heatmaps; {card.name}/{card.version} is a {card.modality} model",
                modality=card.modality)
        methods = parse_options({"methods": ",".join(request.methods or ["all"]),
                                 "params": json.dumps(request.params)}, card, self.family).methods
        inputs, images = self._images(loaded, request.images)
        outputs = raw_outputs(loaded.model, inputs, card, batch_size)
        check_finite(outputs, "the model's outputs on the sanity-check images")
        predicted = outputs.argmax(axis=1)
        targets = np.eye(len(card.class_names), dtype=np.float32)[predicted]
        images.predicted = [card.class_name(int(c)) for c in predicted]

        randomised, layer_names, weight_layers = randomised_copy(loaded.model, request.randomised_layers,
                                                                 request.seed)
        randomised_outputs = raw_outputs(randomised, inputs, card, batch_size)
        change = np.abs(randomised_outputs - outputs)
        if not np.all(np.isfinite(change)) or not change.max() > 0:
            raise InvalidModelError(
                f"randomising the weights of {', '.join(layer_names)} did not change the model's outputs "
                "(or made them non-finite): the check would compare a model with itself", layers=layer_names)
        randomisation = Randomisation(
            share=request.randomised_layers, randomised_layers=layer_names, weight_layers=weight_layers,
            seed=request.seed, predictions_changed=round(float(np.mean(randomised_outputs.argmax(1) != predicted)), 4),
            max_output_change=float(change.max()))

        pass_seconds = forward_seconds_per_image(loaded.model, inputs, card, batch_size)
        results = [self._check(spec, params, loaded, inputs, targets, randomised, request.seed, pass_seconds,
                               context) for spec, params in methods]
        done = sum(result.status == "succeeded" for result in results)
        return SanityReport(
            status="succeeded" if done == len(results) else ("failed" if not done else "partial"),
            family=self.family, model={"name": loaded.name, "version": loaded.version, "etag": loaded.model_etag},
            request_id=request_id, request=request, request_key=request_key, images=images,
            randomisation=randomisation,
            thresholds={"model_randomisation_max_spearman": MAX_RANDOMISED_SPEARMAN,
                        "random_logit_max_ssim": MAX_RANDOM_LOGIT_SSIM},
            methods=results, chart=chart_key, created_at=now_iso(), seconds=round(time.perf_counter() - started, 3),
        )

    def _check(self, spec, params, loaded, inputs, targets, randomised, seed, pass_seconds, context) -> MethodSanity:
        """Both metrics for one method, or why it was skipped or failed."""
        from explain_core.attribution import build_explainer
        from explain_core.errors import OverTimeBudgetError
        from explain_core.modalities.base import (
            METHOD_OVERHEAD_S,
            check_finite,
            method_error,
            method_seconds,
            seconds_available,
        )

        card, batch_size = loaded.card, self.session.batch_size
        estimate = (EXPLANATIONS_PER_CHECK * method_seconds(spec, params, len(inputs), pass_seconds, card)
                    + 2 * METHOD_OVERHEAD_S)  # two explainers: trained and randomised model
        entry = {"name": spec.name, "params": params, "estimated_seconds": round(estimate, 2)}
        available = seconds_available(context)
        if available is not None and estimate > available:
            error = OverTimeBudgetError(
                f"{spec.name} needs about {estimate:.0f} s for {len(inputs)} image(s) but the invocation has "
                f"{max(0.0, available):.0f} s left; ask for fewer images, fewer methods or fewer samples",
                method=spec.name, estimated_seconds=round(estimate, 1), available_seconds=round(available, 1))
            return MethodSanity(**entry, status="skipped", verdict=f"skipped: {error.message}",
                                error=ErrorDetail(**error.to_dict()))
        model_metric, logit_metric = xplique_metrics()
        started = time.perf_counter()
        try:
            explainer = self.session.explainers.get(spec, loaded.model, card, params, batch_size, loaded.background)
            spearman = model_metric(
                loaded.model, inputs, targets, randomised_model=randomised, batch_size=len(inputs), seed=seed,
                rebuild=lambda model: build_explainer(spec, model, card, params, batch_size, loaded.background),
            ).per_image(explainer)
            ssim = logit_metric(loaded.model, inputs, targets, batch_size=len(inputs), seed=seed).per_image(explainer)
            check_finite(spearman, f"{spec.name}'s rank correlations", method=spec.name)
            check_finite(ssim, f"{spec.name}'s SSIM values", method=spec.name)
        except Exception as exc:  # one method failing must not sink the others
            error = method_error(exc, spec.name, card)
            return MethodSanity(**entry, status="failed", verdict=f"failed: {error.message}", error=error,
                                seconds=round(time.perf_counter() - started, 3))
        weights, logit, verdict = judge(spearman.tolist(), ssim.tolist())
        return MethodSanity(**entry, status="succeeded", verdict=verdict, model_randomisation=weights,
                            random_logit=logit, seconds=round(time.perf_counter() - started, 3))

    def _images(self, loaded, images: ImageSet):
        """(model inputs, ImagesUsed): background rows or image files under a prefix, at the input size."""
        if images.source == "background":
            background = self.session.store.stored_background(loaded)
            if background is None:
                raise InvalidSanityRequestError(
                    f"model {loaded.name}/{loaded.version} has no background.npy: send images with source "
                    "prefix instead", model=loaded.name)
            rows = background[: images.count]
            return rows, ImagesUsed(source="background", count=len(rows), predicted=[])
        return self._prefix_images(loaded, images)

    def _prefix_images(self, loaded, images: ImageSet):
        import numpy as np

        from explain_core.attribution import to_model_input
        from explain_core.images import read_listed_image

        session, settings = self.session, self.session.settings
        allowed = session.keys.family_prefix(self.family)
        if not images.prefix.startswith(allowed) or ".." in images.prefix or _private(images.prefix):
            raise InvalidSanityRequestError(
                f"images.prefix must be under {allowed} of the input bucket, outside the API's jobs/ and "
                f"sanity-checks/ folders; got {images.prefix!r}", prefix=images.prefix)
        found = []
        pages = session.s3.get_paginator("list_objects_v2").paginate(
            Bucket=settings.input_bucket, Prefix=images.prefix, PaginationConfig={"MaxItems": MAX_LISTED_KEYS})
        for page in pages:
            found += [item for item in page.get("Contents", [])
                      if item["Key"].lower().endswith(IMAGE_EXTENSIONS) and not _private(item["Key"])]
            if len(found) >= images.count:
                break
        found = found[: images.count]
        if not found:
            raise InvalidSanityRequestError(
                f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under s3://{settings.input_bucket}/{images.prefix}",
                prefix=images.prefix)
        inputs = []
        for item in found:
            pixels = read_listed_image(session.s3, settings.input_bucket, item, settings).pixels
            inputs.append(to_model_input([pixels], loaded.card)[0])  # resized now: one full-size image at a time
        keys = [item["Key"] for item in found]
        return np.stack(inputs), ImagesUsed(source="prefix", prefix=images.prefix,
                                                               count=len(keys), keys=keys, predicted=[])


# ---------------------------------------------------------------------------------------- the API's side
#: S3 user metadata of a request file stored by the API: a hash of the client that asked
#: (explain_core.keys.client_segment); only that client sees its status.
CLIENT_METADATA = "client"
#: Folders of the input prefix that hold API clients' inputs: a sanity check never reads them.
PRIVATE_FOLDERS = ("/jobs/", "/sanity-checks/")


def _private(key: str) -> bool:
    return any(folder in "/" + key for folder in PRIVATE_FOLDERS)


def store_request(s3, settings, request, client_id: str) -> dict:
    """POST /sanity-checks: store ``request`` (explain_core.api_models.SanityCheckRequest) as a request
    file under the family's input prefix, whose upload event starts the check; returns its keys."""
    import uuid

    from explain_core.keys import KeyLayout, client_segment

    keys = KeyLayout(settings)
    request_id = uuid.uuid4().hex
    family, model, version = request.family, request.model.name, request.model.version
    request_key = keys.sanity_request_key(family, model, version, request_id)
    s3.put_object(Bucket=settings.input_bucket, Key=request_key, Body=request.request_file(),
                  ContentType="application/json", Metadata={CLIENT_METADATA: client_segment(client_id)})
    prefix = keys.sanity_prefix(family, model, version, request_id)
    return {"request_id": request_id, "request_key": request_key, "report_key": prefix + REPORT_FILE,
            "chart_key": prefix + CHART_FILE, "error_key": keys.error_key(request_key),
            "status_url": f"/sanity-checks/{family}/{model}/{version}/{request_id}"}


def request_status(s3, links, family: str, model: str, version: str, request_id: str, client_id: str) -> dict:
    """GET /sanity-checks/...: the fields of explain_core.api_models.SanityCheckStatus. A request another
    client stored, or none, is an unknown one (never shown)."""
    from botocore.exceptions import ClientError

    from explain_core.errors import UnknownSanityCheckError, is_missing_object
    from explain_core.jobs import read_optional
    from explain_core.keys import KeyLayout, client_segment

    settings = links.settings
    keys = KeyLayout(settings)
    request_key = keys.sanity_request_key(family, model, version, request_id)
    unknown = UnknownSanityCheckError(f"no sanity check {family}/{model}/{version}/{request_id}",
                                      request_id=request_id)
    try:
        stored = s3.head_object(Bucket=settings.input_bucket, Key=request_key)
    except ClientError as exc:
        # The API's role may not list the input bucket, so S3 answers a missing key with 403, not 404.
        if is_missing_object(exc) or exc.response.get("Error", {}).get("Code") in ("403", "AccessDenied"):
            raise unknown from exc
        raise
    if stored.get("Metadata", {}).get(CLIENT_METADATA) != client_segment(client_id):
        raise unknown
    described = {"request_id": request_id, "family": family, "model": {"name": model, "version": version}}
    prefix = keys.sanity_prefix(family, model, version, request_id)
    body = read_optional(s3, settings.results_bucket, prefix + REPORT_FILE)
    if body is not None:
        report = SanityReport.model_validate_json(body)
        return {**described, "status": report.status, "report": report, "urls_expire_in": links.seconds,
                "report_url": links.result(prefix + REPORT_FILE), "chart_url": links.result(report.chart)}
    body = read_optional(s3, settings.results_bucket, keys.error_key(request_key))
    if body is None:
        return {**described, "status": "queued"}
    record = json.loads(body)
    error = ErrorDetail.from_dict({"details": {}, **record["error"]})
    if record.get("retrying"):
        return {**described, "status": "queued", "retrying": True, "error": error}
    return {**described, "status": "failed", "error": error}


# ---------------------------------------------------------------------------------------- the chart
def chart_png(report: SanityReport) -> bytes:
    """Per method, the mean (bar) and per-image (dots) rank correlation and SSIM, with the thresholds."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [m for m in report.methods if m.status == "succeeded"]
    names = [m.name for m in done] or ["(no method succeeded)"]
    figure, axes = plt.subplots(1, 2, figsize=(9, 1.2 + 0.32 * len(names)), sharey=True, dpi=100)
    panels = (("model_randomisation", "Spearman rho: trained vs randomised model", MAX_RANDOMISED_SPEARMAN),
              ("random_logit", "SSIM: predicted vs random other class", MAX_RANDOM_LOGIT_SSIM))
    for axis, (field, title, threshold) in zip(axes, panels, strict=True):
        for row, method in enumerate(done):
            check = getattr(method, field)
            axis.barh(row, check.mean, color="#4c9a2a" if check.passed else "#c0392b", alpha=0.8)
            axis.plot(check.per_image, [row] * len(check.per_image), "k.", markersize=3)
        axis.axvline(threshold, color="k", linestyle="--", linewidth=1)
        axis.set_xlim(-1, 1)
        axis.set_title(title, fontsize=9)
        axis.tick_params(labelsize=8)
    axes[0].set_yticks(range(len(names)), names)
    axes[0].invert_yaxis()
    figure.suptitle(f"Sanity checks, {report.family} methods of {report.model['name']}/{report.model['version']} "
                    f"({report.images.count} images; green passes, dashed: threshold)", fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
