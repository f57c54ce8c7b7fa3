"""Benchmark the explanation methods, the functions' batching and the SHAP family, on the local emulator.

Sections (``--sections``, all by default), printed as plain-text tables and written to
``benchmark-results/benchmark.json``:

``methods``
    For each registry method a model supports (all three families) and each model: the raw
    library call (``explainer.explain()`` on the preprocessed batch, with an explainer built like
    the pipeline builds it -- SHAP methods with the model's background, as ``LoadedModel.background``
    -- and warmed once on the same batch, so TensorFlow tracing and numba compilation are excluded),
    the real handler on an SQS event for uploads that name that single method (warm: a first
    upload warms it, a second one is timed), and the method's floor: model passes per image
    (``MethodSpec.passes``) x measured batched forward time per image. MobileNetV2 has no
    ``background.npy``, so the SHAP methods use their default background there; they stay in
    under ``--quick`` (measured 0.4-2 s per image with ``QUICK_OVERRIDES``; DeepExplainer fails
    on MobileNetV2, which uses Relu6, with a typed error).

``burst``
    Demo images uploaded under ``incoming/gradient/...``, processed one message per invocation
    vs batched as the template's SQS event source does (its ``BatchSize``).

``shap-vs-xplique``
    On the demo CNN, the same images and N model evaluations per image (``--shap-evals``):
    Xplique's KernelShap, our SuperpixelKernelExplainer and PartitionExplainer, and the raw shap
    calls they stand for (Kernel SHAP over SLIC segments as shap's example writes it and written
    for speed; the Partition explainer with ``f = model.predict`` and with a traced function).

``tabular``
    TreeExplainer on ``breast-cancer-xgb``; Kernel, Deep and Gradient explainers on
    ``breast-cancer-mlp``: the raw shap call, ours (via ``build_explainer``), the report's plots
    (``tabular_report.report_files``) and the handler on a CSV upload of the same rows
    (``--tabular-rows``).

``partition-profile``
    Where the Partition explainer's time goes on 4 demo images at max_evals=200 (the issue's
    "6.6 s"): first use in a fresh process, a warm call split into pieces, and variants (model
    function, batch size).

Findings of ``partition-profile`` (2 shared cores; shap 0.51, TensorFlow 2.20, 4 images, 200
evaluations, 3 explained classes; seconds for the 4 images):

    ======================================================  =========  ==============================
    what                                                    seconds    why
    ======================================================  =========  ==============================
    shap's naive call: f = model.predict, batch_size auto   5.1-6.8    92 predict calls of <= 10
                                                                       masks; predict's per-call
                                                                       set-up is ~95% of the time
    first use in a process (cold start), before the call    ~4-5       numba JIT of shap's partition
                                                                       tree (1.6-1.8) and mask matrix
                                                                       (2.3-2.8), not cached on disk
    ... and inside the first call                           1.4-2.1    numba JIT of the output
                                                                       averaging, TF tracing (0.1-0.2)
    PartitionShap, warm                                     0.41-0.51  (floor: 800 rows, 0.13-0.20)
      model forward: traced tf.function, 32 calls           0.19-0.26  44-51%; batches 1, 1, 2, 8,
                                                                       32, 64, 64, 28 per image
      partition tree + mask matrix, rebuilt per class/call  0.07-0.09  14-20%
      owen: priority queue, masks, values                   0.05-0.06  12-13%
      pixels <-> model input round trip per masked batch    0.04-0.05  9-10%
      masking (blur computed once per image, copy per mask) 0.04       8%
      MaskedModel batching and output averaging             0.02       4%
    raw shap with f = tf.function, batch 64                 0.30-0.41  what PartitionShap wraps
    PartitionShap after the two changes below               0.24-0.33  0.55-0.71x the version above
    ======================================================  =========  ==============================

What PartitionShap does about it: a traced tf.function instead of ``model.predict`` (the 14x),
the pipeline's batch_size (64) instead of shap's 10 (1.3x with a traced function), one explained
class per group of rows, and, since this profile: (1) the shap masker and explainer are kept per
image shape (the partition tree and mask matrix were rebuilt for every class on every call), and
(2) with ``masker="blur"`` shap masks the model-space images directly (a box blur commutes with
the card's per-channel affine preprocessing: attributions equal to 2e-9; inpainting still masks
pixels): 0.55-0.71x at 200 evaluations, 0.48x at 500 (1.10 -> 0.53 s for 4 images). A larger
batch_size barely matters now: owen's queue rarely holds more than 64 masks at these budgets, and
changing it changes which regions are refined first (attributions move by up to 5.7e-3). Not
done: the cold start (4-7 s of numba compilation per process) would move to the init phase if
the function compiled shap's numba code at import, e.g. one tiny Partition explanation of an 8x8
image (4.7 s once; the first real call then takes 0.63 s instead of ~7 s), a cost every cold
start of the shap function would pay whether or not it uses PartitionExplainer.

Models: ``demo`` is the project's demo CNN (64x64, a few shape classes, ``devtools.demo_model``);
``mobilenet`` is a MobileNetV2 (224x224, 1000 classes) with random weights, built here and
cached under ``.cache/benchmark/``. Parameter profiles: ``full`` uses the registry defaults,
``quick`` smaller overrides (``QUICK_OVERRIDES``) sent through the upload's ``params`` metadata;
``auto`` (the default) is ``full`` on the demo model and the tabular models, ``quick`` on
MobileNetV2.

Run from the repository root (about 3.5 minutes on 2 cores)::

    PYTHONPATH=.:layers/explain_core/src .venv/bin/python -m devtools.benchmark --models demo --quick
"""

import argparse
import contextlib
import dataclasses
import functools
import gc
import io
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "ServerlessExplanationsBenchmark")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from devtools import demo_model, local_aws, local_lambda, shapes, tabular_demo  # noqa: E402
from devtools.demo import encode_image, key_layout, outcome  # noqa: E402
from explain_core.attribution import (  # noqa: E402
    build_explainer,
    class_scores,
    preprocess,
    raw_outputs,
    run_method,
    to_model_input,
)
from explain_core.errors import ExplainError  # noqa: E402
from explain_core.model_card import ModelCard  # noqa: E402
from explain_core.registry import FAMILIES, GRADIENT, METHODS, PERTURBATION, REGISTRY, SHAP, MethodSpec  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "benchmark"
DEFAULT_OUTPUT = REPO / "benchmark-results" / "benchmark.json"
IMAGE_SEED, BURST_SEED = 4242, 4343
FORWARD_BATCH = 32
SECTIONS = ("methods", "burst", "shap-vs-xplique", "tabular", "partition-profile")

#: Smaller parameters for ``--quick``; Occlusion's patch is derived from the input size instead.
QUICK_OVERRIDES: dict[str, dict] = {
    "IntegratedGradients": {"steps": 8},
    "SmoothGrad": {"nb_samples": 8},
    "VarGrad": {"nb_samples": 8},
    "SquareGrad": {"nb_samples": 8},
    "Rise": {"nb_samples": 64},
    "Lime": {"nb_samples": 32},
    "KernelShap": {"nb_samples": 32},
    "SobolAttributionMethod": {"nb_design": 8, "grid_size": 4},
    "HsicAttributionMethod": {"nb_design": 32},
    "GradientExplainer": {"nb_samples": 16},
    "DeepExplainer": {"nb_background": 4},
    "PartitionExplainer": {"max_evals": 100},
    "SuperpixelKernelExplainer": {"nb_samples": 100},
    "KernelExplainer": {"nb_samples": 100},
}
#: Files a model directory may hold, uploaded as they exist (MobileNetV2 has no SHAP background).
MODEL_FILES = ("model.keras", "card.json", "background.npy")


# ----------------------------------------------------------------------------- models


@dataclasses.dataclass
class Subject:
    """A benchmarked model: where its files are, how it is published and which profile ``auto`` picks."""

    key: str  # command-line name: demo, mobilenet
    name: str
    version: str
    directory: Path  # holds model.keras and card.json
    image_size: int  # side of the generated source images (the handler resizes them)
    auto_profile: str
    _model: object = dataclasses.field(default=None, repr=False)

    @functools.cached_property
    def card(self) -> ModelCard:
        """The model card published beside the model."""
        return ModelCard.model_validate_json((self.directory / "card.json").read_text())

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        card = self.card
        return card.input_height, card.input_width

    def model(self):
        """The model loaded as the model store loads it (Keras v3 archive, safe mode)."""
        if self._model is None:
            import keras

            self._model = keras.saving.load_model(self.directory / "model.keras", compile=False, safe_mode=True)
        return self._model

    def images(self, count: int, seed: int = IMAGE_SEED) -> np.ndarray:
        """``count`` generated source images (uint8, N x S x S x 3), deterministic."""
        return shapes.dataset(count, seed=seed, size=self.image_size)[0]

    def background(self) -> np.ndarray | None:
        """The SHAP background as the model store loads it (``background.npy`` pixels, preprocessed).

        None when the model has none: the SHAP methods then use their default (flat grey images).
        """
        path = self.directory / "background.npy"
        if not path.exists():
            return None
        return preprocess(np.load(path, allow_pickle=False).astype(np.float32), self.card)

    def background_label(self) -> str:
        """How the SHAP background of this model is described in the tables."""
        path = self.directory / "background.npy"
        if not path.exists():
            return "default (5 flat grey images)"
        return f"background.npy ({len(np.load(path, mmap_mode='r'))} images)"


def demo_subject() -> Subject:
    """The demo CNN, trained on first use by :func:`devtools.demo_model.ensure_demo_model`."""
    return Subject("demo", demo_model.NAME, demo_model.VERSION, demo_model.ensure_demo_model(), shapes.IMAGE_SIZE,
                   "full")


MOBILENET_NAME, MOBILENET_VERSION, MOBILENET_SIZE, MOBILENET_CLASSES = "mobilenetv2-random", "v1", 224, 1000


def mobilenet_card() -> dict:
    """Model card of the random-weight MobileNetV2: inputs in [-1, 1], logits, Grad-CAM on ``out_relu``."""
    return {
        "name": MOBILENET_NAME,
        "version": MOBILENET_VERSION,
        "description": "MobileNetV2 with random weights (no download possible): benchmark load, not predictions.",
        "input_height": MOBILENET_SIZE,
        "input_width": MOBILENET_SIZE,
        "preprocessing": {"scale": 2 / 255, "mean": [1.0, 1.0, 1.0], "std": [1.0, 1.0, 1.0]},
        "output": "logits",
        "class_names": [f"class_{i:04d}" for i in range(MOBILENET_CLASSES)],
        "cam_layer": "out_relu",
        "target": {"mode": "predicted", "k": 1},
        "top_k": 3,
    }


def mobilenet_subject() -> Subject:
    """MobileNetV2 (224x224, 1000 classes, random weights) saved as .keras with its card; built once."""
    import keras

    directory = CACHE / f"{MOBILENET_NAME}-keras-{keras.__version__}"
    model_path = directory / "model.keras"
    if not model_path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNetV2(
            weights=None, input_shape=(MOBILENET_SIZE, MOBILENET_SIZE, 3), classes=MOBILENET_CLASSES,
            classifier_activation=None,
        )
        partial = directory / "partial.keras"
        model.save(partial)
        partial.replace(model_path)
        del model
    (directory / "card.json").write_text(json.dumps(mobilenet_card(), indent=2))
    return Subject("mobilenet", MOBILENET_NAME, MOBILENET_VERSION, directory, MOBILENET_SIZE, "quick")


SUBJECTS: dict[str, Callable[[], Subject]] = {"demo": demo_subject, "mobilenet": mobilenet_subject}


# ----------------------------------------------------------------------------- parameters


def profile_overrides(spec: MethodSpec, profile: str, input_size: tuple[int, int], extra: dict) -> dict:
    """Parameter overrides sent with an upload: the profile's, then ``--params`` on top."""
    overrides = {}
    if profile == "quick":
        overrides = dict(QUICK_OVERRIDES.get(spec.name, {}))
        if spec.name == "Occlusion":
            side = min(input_size)  # a 7 x 7 grid of patches whatever the input size
            overrides = {"patch_size": max(1, side // 4), "patch_stride": max(1, side // 8)}
    overrides.update(extra.get(spec.name, {}))
    return overrides


def profile_of(subject: Subject, args) -> str:
    """The parameter profile used for this model: ``--quick``/``--full``, else the model's ``auto`` choice."""
    return subject.auto_profile if args.profile == "auto" else args.profile


def format_params(params: dict) -> str:
    """``name=value`` pairs for a table cell."""
    return " ".join(f"{name}={value}" for name, value in params.items()) or "-"


# ----------------------------------------------------------------------------- local AWS


class TimedHandler:
    """A Lambda handler that records how long each invocation takes.

    Its stdout (Powertools' EMF metric lines) goes to ``log`` so the tables stay readable.
    """

    def __init__(self, handler, log):
        self.handler = handler
        self.log = log
        self.durations: list[float] = []

    def __call__(self, event, context):
        started = time.perf_counter()
        with contextlib.redirect_stdout(self.log):
            response = self.handler(event, context)
        self.durations.append(time.perf_counter() - started)
        return response


class Harness:
    """The moto emulator wired from template.yaml, the published models and the real handlers."""

    def __init__(self, log_level: str, log_path: Path):
        self.server, endpoint = local_aws.start_emulator()
        template = local_aws.load_template()
        # As `sam deploy --parameter-overrides LogLevel=...`: keeps per-image INFO lines out of the tables.
        template["Parameters"]["LogLevel"]["Default"] = log_level
        self.deployment = local_aws.deploy(endpoint, template)
        self.s3 = self.deployment.client("s3")
        self.sqs = self.deployment.client("sqs")
        self.keys = key_layout(self.deployment)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = log_path.open("w")
        self.run_id = uuid.uuid4().hex[:8]
        self._handlers: dict[str, TimedHandler] = {}
        for url in self.deployment.queue_urls.values():  # drop s3:TestEvent notifications
            self.sqs.purge_queue(QueueUrl=url)

    def close(self):
        """Stop the emulator and close the handler log."""
        self.server.stop()
        self.log.close()

    def publish(self, subject: Subject) -> None:
        """Upload the model, its card and its SHAP background if it has one (models/<name>/<version>/)."""
        for filename in MODEL_FILES:
            if (subject.directory / filename).exists():
                self.s3.upload_file(str(subject.directory / filename), self.deployment.bucket("ModelBucket"),
                                    self.keys.model_key(subject.name, subject.version, filename))

    def publish_tabular(self, name: str, directory: Path) -> None:
        """Upload a tabular demo model, its card and its background, as a user would."""
        tabular_demo.publish(self.s3, self.deployment.bucket("ModelBucket"), directory, name)

    def handler(self, family: str) -> TimedHandler:
        """The family's real handler, imported once under its template environment."""
        if family not in self._handlers:
            wiring = self.deployment.function_for_family(family)
            self._handlers[family] = TimedHandler(local_lambda.load_handler(self.deployment, wiring), self.log)
        return self._handlers[family]

    def pipeline_batch_size(self, family: str) -> int:
        """The batch size the family's pipeline gives Xplique (so raw calls match the handler)."""
        import importlib
        import inspect

        from explain_core.pipeline import ExplanationPipeline

        handler = self.handler(family).handler  # imports the module under the function's environment
        module = importlib.import_module(self.deployment.function_for_family(family).module)
        # The handler's pipeline, wherever the handler module keeps it; else the pipeline's default.
        pipeline = getattr(handler, "pipeline", None) or getattr(module, "pipeline", None)
        if pipeline is not None:
            return pipeline.batch_size
        return inspect.signature(ExplanationPipeline).parameters["batch_size"].default

    def batch_sizes(self) -> dict:
        """The template's SQS BatchSize per family."""
        return {family: self.deployment.function_for_family(family).batch_size for family in FAMILIES}

    def source(self, family: str, batch_size: int | None = None) -> local_lambda.SqsEventSource:
        """The family's SQS event source; ``batch_size`` overrides the template's (no batching window then)."""
        wiring = self.deployment.function_for_family(family)
        if batch_size is not None and batch_size != wiring.batch_size:
            wiring = dataclasses.replace(wiring, batch_size=batch_size, batching_window=0)
        return local_lambda.SqsEventSource(self.deployment, wiring, handler=self.handler(family))

    def upload(self, family: str, subject: Subject, label: str, images: np.ndarray, metadata: dict) -> list[str]:
        """PUT the images as PNG under the family's input prefix; returns their keys."""
        files = [(f"{index:03d}.png", encode_image(pixels), "image/png") for index, pixels in enumerate(images)]
        return self.upload_files(family, subject.name, subject.version, label, files, metadata)

    def upload_files(self, family: str, model: str, version: str, label: str, files: list[tuple[str, bytes, str]],
                     metadata: dict) -> list[str]:
        """PUT (file name, body, content type) under incoming/<family>/<model>/<version>/; returns the keys."""
        prefix = f"{self.keys.family_prefix(family)}{model}/{version}/bench-{self.run_id}/{label}"
        keys = []
        for filename, body, content_type in files:
            key = f"{prefix}/{filename}"
            self.s3.put_object(Bucket=self.keys.settings.input_bucket, Key=key, Body=body,
                               ContentType=content_type, Metadata=metadata)
            keys.append(key)
        return keys

    def await_queued(self, family: str, count: int, timeout: float = 60.0) -> None:
        """Wait until the family's queue holds ``count`` visible messages (S3 notifications)."""
        url = self.deployment.queue_urls[self.deployment.function_for_family(family).queue]
        deadline = time.monotonic() + timeout
        while True:
            attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
            if int(attributes["Attributes"]["ApproximateNumberOfMessages"]) >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} notifications did not reach the {family} queue in {timeout:.0f} s")
            time.sleep(0.1)

    def receive(self, family: str, keys: list[str], timeout: float = 60.0) -> list[dict]:
        """The SQS messages announcing ``keys`` (in that order); any other message is deleted."""
        url = self.deployment.queue_urls[self.deployment.function_for_family(family).queue]
        wanted, found = set(keys), {}
        deadline = time.monotonic() + timeout
        while len(found) < len(wanted):
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(found)} of {len(wanted)} notifications arrived in {timeout:.0f} s")
            messages = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                AttributeNames=["All"], MessageAttributeNames=["All"],
            ).get("Messages", [])
            for message in messages:
                key = notified_key(message)
                if key in wanted:
                    found[key] = message
                else:
                    self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return [found[key] for key in keys]

    def outcome(self, key: str) -> dict:
        """The manifest written for an input key, or its error record, or a note that there is neither."""
        found = outcome(self.s3, self.keys, key)
        return found or {"status": "missing", "error": {"message": "no manifest and no error record"}}


def notified_key(message: dict) -> str | None:
    """The object key in an S3 notification message (None for anything else)."""
    return next(iter(local_lambda.notified_keys([message])), None)


def upload_metadata(spec: MethodSpec, overrides: dict) -> dict:
    """Object metadata asking for ``spec`` alone, with ``overrides`` as its parameters."""
    metadata = {"methods": spec.name}
    if overrides:
        metadata["params"] = json.dumps({spec.name: overrides}, separators=(",", ":"))
    return metadata


def failure(outcome: dict) -> str | None:
    """None when a manifest says every method succeeded; otherwise a short reason."""
    if outcome.get("status") == "succeeded":
        return None
    errors = [m.get("error", {}) for m in outcome.get("methods", []) if m.get("status") == "failed"]
    error = errors[0] if errors else outcome.get("error", {})
    return f"{outcome.get('status')}: {error.get('message', error)}"[:300]


# ----------------------------------------------------------------------------- measurements


def model_inputs(subject: Subject, images: np.ndarray) -> np.ndarray:
    """The preprocessed batch the pipeline builds from these images (same resize and preprocessing)."""
    return to_model_input(images, subject.card)


def measure_forward(model, inputs: np.ndarray, batch: int = FORWARD_BATCH, repeats: int = 3) -> dict:
    """Seconds per image of a batched forward pass (best of ``repeats``; warm).

    Timed two ways: a ``tf.function`` graph call (how Xplique calls the model) and
    ``model.predict``; the floor uses the faster.
    """
    import tensorflow as tf

    x = tf.constant(np.take(inputs, np.arange(batch) % len(inputs), axis=0))
    graph = tf.function(lambda t: model(t, training=False))

    def best(call) -> float:
        call()  # trace / build
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            np.asarray(call())
            times.append(time.perf_counter() - started)
        return min(times) / batch

    graph_s = best(lambda: graph(x))
    predict_s = best(lambda: model.predict(x, batch_size=batch, verbose=0))
    return {"batch": batch, "graph_s": graph_s, "predict_s": predict_s, "s_per_image": min(graph_s, predict_s)}


def measure_raw(spec: MethodSpec, subject: Subject, params: dict, inputs, targets, batch_size: int,
                repeats: int = 1, background: np.ndarray | None = None) -> float:
    """Seconds of a warm ``explainer.explain()`` on the batch, best of ``repeats``.

    The explainer is built as the pipeline builds it (SHAP methods: with the model's background,
    as ``LoadedModel.background``) and run once first, so tracing and numba compilation are excluded.
    """
    explainer = build_explainer(spec, subject.model(), subject.card, params, batch_size, background)
    run_method(explainer, inputs, targets)  # warm-up: traces the TF functions for this batch shape
    seconds = min(run_method(explainer, inputs, targets).seconds for _ in range(repeats))
    del explainer
    gc.collect()
    return seconds


def measure_handler(harness: Harness, subject: Subject, spec: MethodSpec, overrides: dict, images,
                    repeats: int = 1) -> dict:
    """Warm handler time for one SQS event holding one message per image, all asking for ``spec``.

    A first upload of the images warms the handler: model load, explainer build, tracing for
    this batch shape. Then ``repeats`` more uploads (other keys, so none is a duplicate) are
    timed, the best kept: the handler call alone, without the uploads or the message deletion.
    """
    source = harness.source(spec.family)
    metadata = upload_metadata(spec, overrides)
    runs = []  # (handler seconds, explain seconds from the manifest, first failure, manifest timings)
    for phase in ["warm"] + [f"timed{i}" for i in range(repeats)]:
        keys = harness.upload(spec.family, subject, f"{phase}-{spec.name}", images, metadata)
        source.invoke(harness.receive(spec.family, keys))
        outcomes = [harness.outcome(key) for key in keys]
        problem = next((reason for reason in map(failure, outcomes) if reason), None)
        explain_s = None if problem else outcomes[0]["methods"][0].get("seconds")
        runs.append((source.handler.durations[-1], explain_s, problem, outcomes[0].get("timings", {})))
    best = min(runs[1:], key=lambda run: run[0])
    explain = [run[1] for run in runs[1:] if run[1] is not None]
    return {
        "warmup_s": runs[0][0], "handler_s": best[0], "in_handler_explain_s": min(explain) if explain else None,
        "error": next((run[2] for run in runs if run[2]), None), "timings": best[3],
    }


def ratio(numerator, denominator):
    """numerator / denominator, or None when either is missing (or the denominator is 0)."""
    return numerator / denominator if numerator is not None and denominator else None


def benchmark_methods(harness: Harness, subject: Subject, specs: list[MethodSpec], args) -> tuple[dict, list[dict]]:
    """One row per method this model supports; also returns the forward-pass measurement."""
    harness.publish(subject)
    card, model = subject.card, subject.model()
    specs = [spec for spec in specs if spec.supports(card)]  # the tabular-only SHAP methods are left out
    background = subject.background()
    images = subject.images(args.images)
    inputs = model_inputs(subject, images)
    # The handler explains the predicted class (the cards' target policy), so the raw call does too.
    predicted = class_scores(model, inputs, card, harness.pipeline_batch_size(GRADIENT)).argmax(axis=1)
    targets = np.zeros((len(predicted), len(card.class_names)), np.float32)
    targets[np.arange(len(predicted)), predicted] = 1.0
    forward = measure_forward(model, inputs)
    profile = profile_of(subject, args)
    print(f"[{subject.key}] forward pass: {forward['s_per_image'] * 1e3:.2f} ms/image "
          f"(batch {forward['batch']}); parameter profile {profile}", flush=True)

    rows = []
    for spec in specs:
        overrides = profile_overrides(spec, profile, subject.input_size, args.params)
        params = spec.resolve(overrides, subject.input_size)
        passes = spec.passes(params, subject.input_size)
        row = {"method": spec.name, "family": spec.family, "model": subject.key, "images": len(images),
               "profile": profile, "params": params, "overrides": overrides, "passes": passes,
               "backward": spec.backward, "forward_s_per_image": forward["s_per_image"],
               "floor_s": passes * forward["s_per_image"],
               "background": subject.background_label() if spec.family == SHAP else None}
        started = time.perf_counter()
        try:
            batch_size = harness.pipeline_batch_size(spec.family)
            raw_s = measure_raw(spec, subject, params, inputs, targets, batch_size, args.repeats,
                                background if spec.family == SHAP else None)
            row["raw_s"] = raw_s / len(images)
        except Exception as exc:  # report and go on: one method failing must not end the benchmark
            row["raw_s"], row["error"] = None, f"raw call: {type(exc).__name__}: {exc}"[:300]
        handler = measure_handler(harness, subject, spec, overrides, images, args.repeats)
        row["handler_s"] = handler["handler_s"] / len(images)
        row["in_handler_explain_s"] = ratio(handler["in_handler_explain_s"], len(images))
        row["handler_warmup_s"] = handler["warmup_s"]
        row["handler_timings"] = handler["timings"]
        row["error"] = row.get("error") or handler["error"]
        row["handler_over_raw"] = ratio(row["handler_s"], row["raw_s"]) if not handler["error"] else None
        row["raw_over_floor"] = ratio(row["raw_s"], row["floor_s"])
        rows.append(row)
        status = f"  FAILED {row['error']}" if row["error"] else ""
        print(f"[{subject.key}] {spec.name}: done in {time.perf_counter() - started:.1f} s{status}", flush=True)
    return forward, rows


def batches_of(count: int, size: int) -> list[int]:
    """Sizes of the invocations that process ``count`` messages ``size`` at a time."""
    return [min(size, count - start) for start in range(0, count, size)]


def process_burst(harness: Harness, subject: Subject, spec: MethodSpec, overrides: dict, count: int,
                  batch_size: int) -> dict:
    """Upload ``count`` images, then let the event source drain them ``batch_size`` messages at a time.

    Every invocation size that occurs is warmed first with other images. Timed: the handler
    calls (``handler_s``) and the whole drain including SQS receive/delete (``wall_s``), not
    the uploads.
    """
    source = harness.source(spec.family, batch_size)
    metadata = upload_metadata(spec, overrides)
    for size in sorted(set(batches_of(count, batch_size))):
        keys = harness.upload(spec.family, subject, f"burst-warm-{spec.name}-{batch_size}-{size}",
                              subject.images(size, BURST_SEED + 1), metadata)
        source.invoke(harness.receive(spec.family, keys))

    keys = harness.upload(spec.family, subject, f"burst-{spec.name}-{batch_size}",
                          subject.images(count, BURST_SEED), metadata)
    harness.await_queued(spec.family, count)
    first_call = len(source.handler.durations)
    started, processed = time.perf_counter(), 0
    while processed < count:
        received, _ = source.poll_once()
        if not received:
            break
        processed += received
    wall = time.perf_counter() - started
    handler_s = sum(source.handler.durations[first_call:])
    failed = [reason for reason in (failure(harness.outcome(key)) for key in keys) if reason]
    return {
        "method": spec.name, "params": spec.resolve(overrides, subject.input_size), "images": count,
        "batch_size": batch_size, "invocations": len(source.handler.durations) - first_call,
        "handler_s": handler_s, "wall_s": wall, "images_per_s": count / handler_s if handler_s else None,
        "wall_images_per_s": count / wall, "failed": len(failed), "error": failed[0] if failed else None,
    }


def benchmark_burst(harness: Harness, subject: Subject, specs: list[MethodSpec], args) -> list[dict]:
    """Burst throughput of the gradient function: one message per invocation vs the template's BatchSize."""
    harness.publish(subject)
    template_batch = harness.deployment.function_for_family(GRADIENT).batch_size
    profile = profile_of(subject, args)
    rows = []
    for spec in specs:
        overrides = profile_overrides(spec, profile, subject.input_size, args.params)
        single = process_burst(harness, subject, spec, overrides, args.burst_images, 1)
        batched = process_burst(harness, subject, spec, overrides, args.burst_images, template_batch)
        single["mode"], batched["mode"] = "one message per invocation", "template BatchSize"
        single["speedup"], single["wall_speedup"] = 1.0, 1.0
        batched["speedup"] = ratio(single["handler_s"], batched["handler_s"])
        batched["wall_speedup"] = ratio(single["wall_s"], batched["wall_s"])
        rows += [single, batched]
        print(f"[burst] {spec.name}: {batched['speedup']:.2f}x with batches of {template_batch}", flush=True)
    return rows


# ----------------------------------------------------------------------------- SHAP vs Xplique


class CountingForward:
    """A model function that records what it is asked: rows per call and seconds spent.

    With ``batch``, larger inputs are cut into slices of ``batch`` rows, each counted as a call.
    """

    def __init__(self, forward: Callable[[np.ndarray], np.ndarray], batch: int | None = None):
        self.forward = forward
        self.batch = batch
        self.sizes: list[int] = []
        self.seconds = 0.0

    def __call__(self, x):
        if self.batch and len(x) > self.batch:
            return np.concatenate([self(x[start:start + self.batch]) for start in range(0, len(x), self.batch)])
        started = time.perf_counter()
        outputs = np.asarray(self.forward(x))
        self.seconds += time.perf_counter() - started
        self.sizes.append(len(x))
        return outputs

    def reset(self) -> None:
        self.sizes, self.seconds = [], 0.0


def traced_forward(model) -> Callable[[np.ndarray], np.ndarray]:
    """The fast way: one traced ``tf.function`` (as KerasOutputs does); slice with ``CountingForward(batch=)``."""
    import tensorflow as tf

    graph = tf.function(lambda t: model(t, training=False), reduce_retracing=True)
    return lambda x: graph(np.asarray(x, dtype=np.float32))


def predict_forward(model) -> Callable[[np.ndarray], np.ndarray]:
    """The naive way: ``model.predict`` (a tf.data pipeline per call; verbose=0 only keeps the tables readable)."""
    return lambda x: model.predict(np.asarray(x, dtype=np.float32), verbose=0)


def to_pixels(inputs: np.ndarray, card: ModelCard) -> np.ndarray:
    """Model-space images back to 0-255 pixels (as the SHAP maskers need)."""
    prep = card.preprocessing
    pixels = (inputs * np.asarray(prep.std, np.float32) + np.asarray(prep.mean, np.float32)) / np.float32(prep.scale)
    return np.clip(pixels, 0, 255)


def slic_segments(pixels: np.ndarray, nb_segments: int, compactness: float) -> np.ndarray:
    """SLIC super-pixels with the parameters SuperpixelKernelExplainer uses."""
    from skimage.segmentation import slic

    return slic(pixels / 255.0, n_segments=nb_segments, compactness=compactness, start_label=0, channel_axis=-1)


def raw_kernel_docs(forward: CountingForward, card: ModelCard, inputs, classes, nsamples: int,
                    nb_segments: int = 50, compactness: float = 10.0) -> CountingForward:
    """shap.KernelExplainer over SLIC segments as shap's image Kernel SHAP example writes it.

    A per-segment masking loop, ``f = model.predict`` of every class, shap's default ``l1_reg``
    (``num_features(10)``: a LARS selection per output).
    """
    import shap

    forward.reset()
    for pixels, _ in zip(to_pixels(inputs, card), classes, strict=True):
        segments = slic_segments(pixels, nb_segments, compactness)

        def f(z, pixels=pixels, segments=segments):
            background = pixels.mean((0, 1))
            out = np.zeros((z.shape[0], *pixels.shape))
            for i in range(z.shape[0]):
                out[i] = pixels
                for j in range(z.shape[1]):
                    if z[i, j] == 0:
                        out[i][segments == j, :] = background
            return forward(preprocess(out, card))

        count = int(segments.max()) + 1
        explainer = shap.KernelExplainer(f, np.zeros((1, count)))
        np.random.seed(0)
        with quiet():
            explainer.shap_values(np.ones((1, count)), nsamples=nsamples, silent=True)
    return forward


def raw_kernel_fast(forward: CountingForward, card: ModelCard, inputs, classes, nsamples: int) -> CountingForward:
    """shap.KernelExplainer over SLIC segments written for speed: vectorised masks, traced forward, one class.

    Segments and fill as SuperpixelKernelExplainer's registry defaults (``fill``: a Gaussian blur
    of sigma a tenth of the side, or the mean colour).
    """
    import cv2
    import shap

    defaults = REGISTRY["SuperpixelKernelExplainer"].defaults
    forward.reset()
    for pixels, cls in zip(to_pixels(inputs, card), classes, strict=True):
        segments = slic_segments(pixels, defaults["nb_segments"], defaults["compactness"])
        if defaults.get("fill", "mean") == "mean":
            fill = np.broadcast_to(pixels.reshape(-1, 3).mean(axis=0), pixels.shape)
        else:
            fill = cv2.GaussianBlur(pixels.astype(np.float32), (0, 0), max(pixels.shape[:2]) / 10)

        def f(z, pixels=pixels, segments=segments, fill=fill, cls=cls):
            masked = np.repeat(pixels[None], len(z), axis=0)
            for row, kept in enumerate(z):
                hidden = np.isin(segments, np.flatnonzero(kept == 0))
                masked[row][hidden] = fill[hidden]
            return forward(preprocess(masked, card))[:, cls]

        count = int(segments.max()) + 1
        explainer = shap.KernelExplainer(f, np.zeros((1, count)))
        np.random.seed(0)
        with quiet():
            explainer.shap_values(np.ones((1, count)), nsamples=nsamples, l1_reg=False, silent=True)
    return forward


def raw_partition(forward: CountingForward, inputs, max_evals: int, batch_size, blur: int = 16) -> CountingForward:
    """shap's Partition explainer with a blur Image masker, explaining each image's top class.

    The masker blurs the model-space images directly (blurring commutes with the card's per-channel
    affine preprocessing, so this equals blurring pixels).
    """
    import shap

    masker = shap.maskers.Image(f"blur({blur},{blur})", inputs.shape[1:])
    explainer = shap.Explainer(forward, masker, algorithm="partition", seed=0)
    with quiet():
        explainer(inputs, max_evals=max_evals, batch_size=batch_size, outputs=shap.Explanation.argsort.flip[:1],
                  silent=True)
    return forward


@contextlib.contextmanager
def quiet():
    """shap's progress bars and Keras' input-name warnings out of the tables."""
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def best_of(repeats: int, run: Callable[[], object], min_total: float = 1.0, max_runs: int = 5) -> tuple[float, object]:
    """(best seconds, last result) of at least ``repeats`` timed calls of ``run``.

    Quick calls are repeated until ``min_total`` seconds were timed (at most ``max_runs`` calls):
    on a shared machine one short timing is mostly noise.
    """
    best, result, total, runs = None, None, 0.0, 0
    while runs < repeats or (total < min_total and runs < max(repeats, max_runs)):
        started = time.perf_counter()
        result = run()
        elapsed = time.perf_counter() - started
        best = elapsed if best is None else min(best, elapsed)
        total, runs = total + elapsed, runs + 1
    return best, result


def predicted_targets(model, inputs, card: ModelCard, batch_size: int) -> np.ndarray:
    """One-hot targets of the predicted classes (the cards' target policy)."""
    predicted = class_scores(model, inputs, card, batch_size).argmax(axis=1)
    targets = np.zeros((len(predicted), len(card.class_names)), np.float32)
    targets[np.arange(len(predicted)), predicted] = 1.0
    return targets


@dataclasses.dataclass
class ShapCase:
    """What every shap-vs-xplique variant is given: the model, the batch, its targets, the batch sizes."""

    subject: Subject
    inputs: np.ndarray
    targets: np.ndarray
    batch: int  # the shap pipeline's batch size
    perturbation_batch: int  # the perturbation pipeline's batch size (Xplique's KernelShap)
    background: np.ndarray | None

    @property
    def classes(self) -> np.ndarray:
        return self.targets.argmax(axis=1)

    def ours(self, name: str, overrides: dict) -> Callable[[], CountingForward | None]:
        """A warm-able run of a registry method built as the pipeline builds it (model rows counted for SHAP)."""
        spec = REGISTRY[name]
        shap_family = spec.family == SHAP
        explainer = build_explainer(spec, self.subject.model(), self.subject.card,
                                    spec.resolve(overrides, self.subject.input_size),
                                    self.batch if shap_family else self.perturbation_batch,
                                    self.background if shap_family else None)
        counter = None
        if shap_family:
            counter = CountingForward(explainer.outputs._forward)
            explainer.outputs._forward = counter

        def run():
            if counter:
                counter.reset()
            run_method(explainer, self.inputs, self.targets)
            return counter

        return run

    def partition(self, forward: CountingForward, evaluations: int, batch_size) -> Callable[[], CountingForward]:
        def run():
            forward.reset()
            return raw_partition(forward, self.inputs, evaluations, batch_size)

        return run

    def variants(self, evaluations: int) -> list[tuple[str, str, Callable, str | None]]:
        """(label, library, run, label of the reference row) for N = ``evaluations``."""
        model, card = self.subject.model(), self.subject.card
        n = evaluations
        # Each model function is made once, so that its tf.function is traced by the warm-up run only.
        predict, traced = CountingForward(predict_forward(model)), CountingForward(traced_forward(model), self.batch)
        return [
            ("KernelShap (grid 8x8)", "xplique", self.ours("KernelShap", {"nb_samples": n, "grid_size": 8}),
             "shap Kernel, fast"),
            ("SuperpixelKernelExplainer", "ours", self.ours("SuperpixelKernelExplainer", {"nb_samples": n}),
             "shap Kernel, fast"),
            ("shap Kernel, docs way", "shap",
             lambda: raw_kernel_docs(predict, card, self.inputs, self.classes, n), "shap Kernel, fast"),
            ("shap Kernel, fast", "shap", lambda: raw_kernel_fast(traced, card, self.inputs, self.classes, n), None),
            ("PartitionExplainer", "ours", self.ours("PartitionExplainer", {"max_evals": n}), "shap Partition, fast"),
            ("shap Partition, naive", "shap", self.partition(predict, n, "auto"), "shap Partition, fast"),
            ("shap Partition, fast", "shap", self.partition(traced, n, self.batch), None),
        ]


def measure_variant(run: Callable[[], CountingForward | None], images: int, repeats: int) -> dict:
    """Seconds per image of a warm run (best of ``repeats``), with the model rows it asked for when counted."""
    run()  # warm-up: tracing, numba compilation
    seconds, counter = best_of(repeats, run)
    measured = {"s_per_image": seconds / images}
    if counter is not None:
        measured["model_rows_per_image"] = sum(counter.sizes) / images
        measured["model_calls_per_image"] = len(counter.sizes) / images
        measured["forward_s_per_image_measured"] = counter.seconds / images
    return measured


def benchmark_shap_vs_xplique(harness: Harness, subject: Subject, args) -> list[dict]:
    """Xplique's KernelShap, our SHAP image explainers and the raw shap calls, at the same evaluation counts."""
    inputs = model_inputs(subject, subject.images(args.images))
    batch = harness.pipeline_batch_size(SHAP)
    case = ShapCase(subject, inputs, predicted_targets(subject.model(), inputs, subject.card, batch), batch,
                    harness.pipeline_batch_size(PERTURBATION), subject.background())
    forward = measure_forward(subject.model(), inputs)
    rows = []
    for evaluations in args.shap_evals:
        measured = {}
        for label, library, run, reference in case.variants(evaluations):
            started = time.perf_counter()
            row = {"evaluations": evaluations, "method": label, "library": library, "images": len(inputs),
                   "reference": reference or "-", "forward_s_per_image": forward["s_per_image"],
                   "floor_s": evaluations * forward["s_per_image"], "s_per_image": None, "error": None}
            try:
                row.update(measure_variant(run, len(inputs), args.repeats))
            except Exception as exc:  # report and go on
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            measured[label] = row
            rows.append(row)
            print(f"[shap-vs-xplique] N={evaluations} {label}: {time.perf_counter() - started:.1f} s", flush=True)
        for row in measured.values():
            row["vs_reference"] = ratio(row["s_per_image"], measured.get(row["reference"], row)["s_per_image"])
            row["over_floor"] = ratio(row["s_per_image"], row["floor_s"])
    return rows


# ----------------------------------------------------------------------------- tabular


#: The tabular demo models and the methods benchmarked on each.
TABULAR_METHODS = {
    tabular_demo.XGB: ("TreeExplainer",),
    tabular_demo.MLP: ("KernelExplainer", "DeepExplainer", "GradientExplainer"),
}


#: A batch size for tabular rows: Kernel SHAP evaluates nb_samples x background rows per row.
TABULAR_WIDE_BATCH = 4096


def load_tabular(name: str, directory: Path):
    """(card, model, background) of a tabular demo model, loaded as the model store loads them."""
    card = ModelCard.model_validate_json((directory / "card.json").read_text())
    if card.framework == "xgboost":
        import xgboost

        model = xgboost.Booster()
        model.load_model(str(directory / card.model_file))
    else:
        import keras

        model = keras.saving.load_model(directory / card.model_file, compile=False, safe_mode=True)
    background = np.load(directory / "background.npy", allow_pickle=False).astype(np.float64)
    return card, model, background


def raw_tabular(spec: MethodSpec, model, background: np.ndarray, rows: np.ndarray, params: dict):
    """The shap call a user would write for this method, on the whole model (every output)."""
    import shap

    if spec.name == "TreeExplainer":
        return shap.TreeExplainer(model).shap_values(rows)
    if spec.name == "KernelExplainer":
        explainer = shap.KernelExplainer(predict_forward(model), background)
        np.random.seed(0)
        return explainer.shap_values(rows, nsamples=params["nb_samples"], l1_reg=False, silent=True)
    if spec.name == "DeepExplainer":
        return shap.DeepExplainer(model, background[: params["nb_background"]].astype(np.float32)).shap_values(
            rows.astype(np.float32))
    if spec.name == "GradientExplainer":
        return shap.GradientExplainer(model, background.astype(np.float32)).shap_values(
            rows.astype(np.float32), nsamples=params["nb_samples"], rseed=0)
    raise ValueError(f"no raw shap call for {spec.name}")


def tabular_explanation(spec: MethodSpec, card: ModelCard, model, rows, values, base_values, cls: int, batch: int):
    """The TabularExplanation the pipeline builds for one explained class."""
    from explain_core.attribution import probabilities
    from explain_core.shap_methods import output_kind
    from explain_core.tabular_report import TabularExplanation

    outputs = raw_outputs(model, rows, card, batch)
    predicted = np.argmax(probabilities(outputs, card), axis=1)
    return TabularExplanation(
        method=spec.name, class_index=cls, class_name=card.class_name(cls), output_kind=output_kind(card),
        feature_names=list(card.feature_names), data=rows, values=np.asarray(values, dtype=np.float64),
        base_values=base_values, model_output=outputs[:, cls], line_numbers=list(range(2, len(rows) + 2)),
        predicted=[card.class_name(int(p)) for p in predicted],
    )


def measure_tabular_handler(harness: Harness, name: str, spec: MethodSpec, overrides: dict, rows: np.ndarray,
                            repeats: int) -> dict:
    """Warm handler time for one CSV upload of ``rows`` asking for ``spec`` (first upload warms it)."""
    source = harness.source(SHAP)
    metadata = upload_metadata(spec, overrides)
    runs = []
    # Plots make a CSV upload take about a second: at least two timed runs, or one is all noise.
    for phase in ["warm"] + [f"timed{i}" for i in range(max(repeats, 2))]:
        files = [(f"rows-{len(rows)}.csv", tabular_demo.sample_csv(rows), "text/csv")]
        keys = harness.upload_files(SHAP, name, tabular_demo.VERSION, f"{phase}-{spec.name}-{len(rows)}", files,
                                    metadata)
        source.invoke(harness.receive(SHAP, keys))
        found = harness.outcome(keys[0])
        runs.append((source.handler.durations[-1], found))
    seconds, found = min(runs[1:], key=lambda run: run[0])
    problem = failure(found)
    method = (found.get("methods") or [{}])[0]
    outputs = method.get("outputs") or [{}]
    return {"handler_s": seconds, "error": problem, "explain_s": method.get("seconds"),
            "additivity": outputs[0].get("additivity_max_error"), "timings": found.get("timings", {})}


def measure_tabular_in_process(spec: MethodSpec, card: ModelCard, model, background, rows, params: dict,
                               batch: int, repeats: int) -> dict:
    """Raw shap call, our explainer and the report (plots), each warm, best of ``repeats``."""
    from explain_core.tabular_report import report_files
    from explain_core.tabular_report import summary as tabular_summary

    cls = card.default_explained_classes()[0]
    targets = np.zeros((len(rows), len(card.class_names)), np.float32)
    targets[:, cls] = 1.0
    with quiet():
        raw_tabular(spec, model, background, rows, params)  # warm-up (tracing)
        raw_s, _ = best_of(repeats, lambda: raw_tabular(spec, model, background, rows, params))
        explainer = build_explainer(spec, model, card, params, batch, background)
        explainer.explain(rows, targets)  # warm-up
        ours_s, values = best_of(repeats, lambda: explainer.explain(rows, targets))
        wide_s = None
        if card.framework == "keras":  # the same explainer with model calls of up to TABULAR_WIDE_BATCH rows
            wide = build_explainer(spec, model, card, params, TABULAR_WIDE_BATCH, background)
            wide.explain(rows, targets)
            wide_s, _ = best_of(repeats, lambda: wide.explain(rows, targets))
    explanation = tabular_explanation(spec, card, model, rows, values, explainer.base_values, cls, batch)
    # Plots take about a second, so one timing would be all noise: at least two.
    report_s, files = best_of(max(repeats, 2), lambda: report_files(explanation))
    return {"raw_s": raw_s, "ours_s": ours_s, "ours_wide_s": wide_s, "report_s": report_s,
            "plots": sum(f.name.endswith(".png") for f in files),
            "additivity": tabular_summary(explanation)["additivity"]["max_abs_error"]}


def benchmark_tabular(harness: Harness, args) -> list[dict]:
    """TreeExplainer on the XGBoost demo model; Kernel, Deep and Gradient explainers on the MLP."""
    directories = tabular_demo.ensure_tabular_models()
    batch = harness.pipeline_batch_size(SHAP)
    profile = "full" if args.profile == "auto" else args.profile
    results = []
    for name, methods in TABULAR_METHODS.items():
        harness.publish_tabular(name, directories[name])
        card, model, background = load_tabular(name, directories[name])
        for spec in (REGISTRY[method] for method in methods):
            overrides = profile_overrides(spec, profile, (0, 0), args.params)
            params = spec.resolve(overrides, (0, 0))
            for count in args.tabular_rows:
                started = time.perf_counter()
                rows = tabular_demo.sample_rows(count)[0]
                row = {"model": name, "method": spec.name, "rows": count, "params": params, "profile": profile,
                       "error": None}
                try:
                    row.update(measure_tabular_in_process(spec, card, model, background, rows, params, batch,
                                                          args.repeats))
                except Exception as exc:  # report and go on
                    row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                handler = measure_tabular_handler(harness, name, spec, overrides, rows, args.repeats)
                row["handler_s"] = handler["handler_s"]
                row["in_handler_explain_s"] = handler["explain_s"]
                row["handler_additivity"] = handler["additivity"]
                row["handler_timings"] = handler["timings"]
                row["error"] = row["error"] or handler["error"]
                row["ours_over_raw"] = ratio(row.get("ours_s"), row.get("raw_s"))
                if row.get("ours_s") is not None:
                    row["handler_other_s"] = row["handler_s"] - row["ours_s"] - row["report_s"]
                results.append(row)
                status = f"  FAILED {row['error']}" if row["error"] else ""
                print(f"[tabular] {name} {spec.name} {count} rows: {time.perf_counter() - started:.1f} s{status}",
                      flush=True)
    return results


# ----------------------------------------------------------------------------- Partition profile

#: The case of the issue: 4 small images, 200 evaluations, the demo CNN.
PROFILE_IMAGES, PROFILE_EVALS = 4, 200


class SelfTimer:
    """Exclusive (self) seconds and call counts of wrapped functions, nested calls subtracted from their callers."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._children: list[float] = []

    def wrap(self, label: str, function: Callable) -> Callable:
        @functools.wraps(function)
        def timed(*args, **kwargs):
            self._children.append(0.0)
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                children = self._children.pop()
                self.seconds[label] = self.seconds.get(label, 0.0) + elapsed - children
                self.calls[label] = self.calls.get(label, 0) + 1
                if self._children:
                    self._children[-1] += elapsed

        return timed

    @contextlib.contextmanager
    def patch(self, owner, name: str, label: str):
        """Time ``owner.name`` (a module, class or instance attribute) while the block runs."""
        own = vars(owner).get(name, _MISSING)
        # A function found on a class stays a plain function, so that it still binds to instances.
        setattr(owner, name, self.wrap(label, getattr(owner, name) if own is _MISSING else own))
        try:
            yield
        finally:
            if own is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, own)


_MISSING = object()

#: What the warm profile times, and the label each piece is reported under.
PROFILE_PIECES = (
    ("model forward (traced tf.function)", "explainer.outputs", "_forward"),
    ("pixels <-> model input (to/from_pixels)", "explainer", "from_pixels"),
    ("pixels <-> model input (to/from_pixels)", "explainer", "to_pixels"),
    ("masking (Image masker: blur once, copy per mask)", "shap.maskers.Image", "__call__"),
    ("partition tree + mask matrix (per explainer)", "shap.maskers.Image", "build_partition_tree"),
    ("partition tree + mask matrix (per explainer)", "shap.explainers._partition", "make_masks"),
    ("MaskedModel: batching, output averaging", "shap.utils._masked_model.MaskedModel", "_full_masking_call"),
    ("owen: priority queue, mask building, values", "shap.explainers._partition.PartitionExplainer", "owen"),
)


COLD_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    clock = time.perf_counter
    started = clock()
    import numpy as np
    import keras
    from explain_core.attribution import build_explainer, run_method, to_model_input
    from explain_core.model_card import ModelCard
    from explain_core.registry import REGISTRY
    from devtools import shapes
    directory, count, evals, seed, batch = sys.argv[1], *map(int, sys.argv[2:])
    times = {"import TensorFlow, Keras, explain_core": clock() - started}
    card = ModelCard.model_validate_json(open(os.path.join(directory, "card.json")).read())
    model = keras.saving.load_model(os.path.join(directory, "model.keras"), compile=False, safe_mode=True)
    inputs = to_model_input(shapes.dataset(count, seed=seed, size=card.input_height)[0], card)
    targets = np.eye(len(card.class_names), dtype=np.float32)[model.predict_on_batch(inputs).argmax(axis=1)]
    step = clock()
    import shap
    times["import shap"] = clock() - step
    spec = REGISTRY["PartitionExplainer"]
    explainer = build_explainer(spec, model, card, spec.resolve({"max_evals": evals}, inputs.shape[1:3]), batch)
    step = clock()
    masker = shap.maskers.Image("blur(16,16)", inputs.shape[1:])
    times["numba: partition tree (first Image masker)"] = clock() - step
    step = clock()
    shap.Explainer(lambda x: np.zeros((len(x), 1)), masker, algorithm="partition")
    times["numba: mask matrix (first Partition explainer)"] = clock() - step
    step = clock()
    for size in (1, 2, batch):  # the traced forward's first shapes (reduce_retracing relaxes them after)
        explainer.outputs(np.zeros((size, *inputs.shape[1:]), np.float32))
    times["TensorFlow tracing of the forward"] = clock() - step
    step = clock()
    run_method(explainer, inputs, targets)
    times["first explain() (numba: output averaging, rest)"] = clock() - step
    step = clock()
    run_method(explainer, inputs, targets)
    times["second explain() (warm)"] = clock() - step
    print(json.dumps(times))
""")


def partition_cold(subject: Subject, batch: int) -> dict:
    """First use in a fresh process (what a cold Lambda start pays), measured in a subprocess."""
    command = [sys.executable, "-c", COLD_SCRIPT, str(subject.directory), str(PROFILE_IMAGES), str(PROFILE_EVALS),
               str(IMAGE_SEED), str(batch)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode:
        raise RuntimeError(f"cold-start probe failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def profile_partition_warm(explainer, inputs, targets) -> dict:
    """Exclusive seconds per piece of one warm explain() (see PROFILE_PIECES), plus the model calls."""
    import importlib

    timer = SelfTimer()
    counter = CountingForward(explainer.outputs._forward)
    explainer.outputs._forward = counter
    owners = {"explainer": explainer, "explainer.outputs": explainer.outputs}
    try:
        with contextlib.ExitStack() as stack:
            for label, where, name in PROFILE_PIECES:
                if where not in owners:
                    module, _, attribute = where.rpartition(".")
                    try:
                        owners[where] = importlib.import_module(where)
                    except ImportError:
                        owners[where] = getattr(importlib.import_module(module), attribute)
                stack.enter_context(timer.patch(owners[where], name, label))
            started = time.perf_counter()
            with quiet():
                run_method(explainer, inputs, targets)
            total = time.perf_counter() - started
    finally:
        explainer.outputs._forward = counter.forward
    pieces = dict(timer.seconds)
    pieces["other (explain_row, lower_credit, Explanation, wrapper)"] = total - sum(pieces.values())
    return {"total_s": total, "pieces": pieces, "calls": timer.calls, "sizes": counter.sizes}


def benchmark_partition_profile(harness: Harness, subject: Subject, args) -> dict:
    """Where PartitionExplainer's time goes on 4 demo images at 200 evaluations: cold, warm split, variants."""
    card, model = subject.card, subject.model()
    inputs = model_inputs(subject, subject.images(PROFILE_IMAGES))
    batch = harness.pipeline_batch_size(SHAP)
    targets = predicted_targets(model, inputs, card, batch)
    spec = REGISTRY["PartitionExplainer"]
    params = spec.resolve({"max_evals": PROFILE_EVALS}, subject.input_size)
    result = {"images": PROFILE_IMAGES, "evaluations": PROFILE_EVALS,
              "classes": sorted({int(c) for c in targets.argmax(axis=1)})}

    started = time.perf_counter()
    try:
        result["cold"] = partition_cold(subject, batch)
    except Exception as exc:  # report and go on
        result["cold"], result["cold_error"] = {}, f"{type(exc).__name__}: {exc}"[:300]
    print(f"[partition-profile] cold start probe: {time.perf_counter() - started:.1f} s", flush=True)

    explainer = build_explainer(spec, model, card, params, batch)
    run_method(explainer, inputs, targets)  # warm-up
    result["warm"] = profile_partition_warm(explainer, inputs, targets)

    variants = [("ours: PartitionShap", batch, lambda b: build_explainer(spec, model, card, params, b)),
                ("ours: PartitionShap", 256, lambda b: build_explainer(spec, model, card, params, b))]
    rows = []
    for label, batch_size, make in variants:
        explainer = make(batch_size)
        counter = CountingForward(explainer.outputs._forward)
        explainer.outputs._forward = counter
        run_method(explainer, inputs, targets)  # warm-up

        def run(explainer=explainer, counter=counter):
            counter.reset()
            return run_method(explainer, inputs, targets).attributions

        seconds, attributions = best_of(args.repeats, run)
        rows.append({"variant": label, "batch_size": batch_size, "seconds": seconds, "calls": len(counter.sizes),
                     "rows": sum(counter.sizes), "forward_s": counter.seconds, "attributions": attributions})
    reference = rows[0]["attributions"]
    for row in rows:
        row["max_abs_diff"] = float(np.max(np.abs(row.pop("attributions") - reference)))
    forwards = {"model.predict": lambda: predict_forward(model),
                "predict_on_batch": lambda: (lambda x: model.predict_on_batch(np.asarray(x, np.float32))),
                "tf.function": lambda: traced_forward(model)}
    for name, batch_size in (("model.predict", "auto"), ("model.predict", batch), ("predict_on_batch", batch),
                             ("tf.function", "auto"), ("tf.function", batch), ("tf.function", 256)):
        counter = CountingForward(forwards[name]())
        raw_partition(counter, inputs[:1], PROFILE_EVALS, batch_size)  # warm-up

        def run(counter=counter, batch_size=batch_size):
            counter.reset()
            return raw_partition(counter, inputs, PROFILE_EVALS, batch_size)

        seconds, _ = best_of(args.repeats, run)
        rows.append({"variant": f"raw shap, f = {name}", "batch_size": batch_size, "seconds": seconds,
                     "calls": len(counter.sizes), "rows": sum(counter.sizes), "forward_s": counter.seconds,
                     "max_abs_diff": None})
    for row in rows:
        row["s_per_image"] = row["seconds"] / PROFILE_IMAGES
        row["vs_ours"] = ratio(row["seconds"], rows[0]["seconds"])
    result["variants"] = rows
    print(f"[partition-profile] done in {time.perf_counter() - started:.1f} s", flush=True)
    return result


# ----------------------------------------------------------------------------- output


@dataclasses.dataclass
class Column:
    """A table column: its header, how to get the value from a row, how to format it."""

    header: str
    value: Callable[[dict], object]
    fmt: str = "{}"


def number(fmt: str):
    """A cell formatter that leaves missing values as '-'."""
    return lambda v: "-" if v is None else fmt.format(v)


def format_table(title: str, columns: list[Column], rows: list[dict], notes: list[str]) -> str:
    """Plain-text table: numbers right-aligned, the last column left-aligned (it may be long)."""
    cells = [[number(c.fmt)(c.value(row)) for c in columns] for row in rows]
    widths = [max([len(c.header)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values):
        last = len(columns) - 1
        aligned = zip(values, widths, strict=True)
        return "  ".join(v.ljust(w) if i in (0, last) else v.rjust(w) for i, (v, w) in enumerate(aligned)).rstrip()

    body = [line([c.header for c in columns]), line(["-" * w for w in widths])] + [line(r) for r in cells]
    return "\n".join([title, "=" * len(title), *body, *[f"  {note}" for note in notes], ""])


METHOD_COLUMNS = [
    Column("method", lambda r: r["method"]),
    Column("family", lambda r: r["family"]),
    Column("model", lambda r: r["model"]),
    Column("N", lambda r: r["images"]),
    Column("passes", lambda r: r["passes"]),
    Column("floor s", lambda r: r["floor_s"], "{:.4f}"),
    Column("raw s", lambda r: r["raw_s"], "{:.4f}"),
    Column("handler s", lambda r: r["handler_s"], "{:.4f}"),
    Column("explain-in-handler s", lambda r: r["in_handler_explain_s"], "{:.4f}"),
    Column("predict-in-handler s", lambda r: ratio(r["handler_timings"].get("predict_s"), r["images"]), "{:.4f}"),
    Column("handler/raw", lambda r: r["handler_over_raw"], "{:.2f}"),
    Column("raw/floor", lambda r: r["raw_over_floor"], "{:.1f}"),
    Column("params used", lambda r: format_params(r["params"]) + (f" bg={r['background']}" if r.get("background")
                                                                  else "")
           + (f"  FAILED {r['error']}" if r["error"] else "")),
]

BURST_COLUMNS = [
    Column("method", lambda r: r["method"]),
    Column("mode", lambda r: r["mode"]),
    Column("batch", lambda r: r["batch_size"]),
    Column("calls", lambda r: r["invocations"]),
    Column("images", lambda r: r["images"]),
    Column("handler s", lambda r: r["handler_s"], "{:.2f}"),
    Column("img/s", lambda r: r["images_per_s"], "{:.1f}"),
    Column("speed-up", lambda r: r["speedup"], "{:.2f}x"),
    Column("wall s", lambda r: r["wall_s"], "{:.2f}"),
    Column("wall img/s", lambda r: r["wall_images_per_s"], "{:.1f}"),
    Column("params used", lambda r: format_params(r["params"]) + (f"  {r['failed']} FAILED: {r['error']}"
                                                                  if r["failed"] else "")),
]


def shap_notes(rows: list[dict]) -> list[str]:
    """What the methods table says about the SHAP rows: backgrounds, and their cost on MobileNetV2."""
    shap_rows = [row for row in rows if row["family"] == SHAP]
    if not shap_rows:
        return []
    notes = ["bg=: the SHAP background the function uses: the model's background.npy (demo: 16 training images),",
             "  else the default, 5 flat grey images (MobileNetV2 has none)."]
    mobilenet = [row for row in shap_rows if row["model"] == "mobilenet" and row["raw_s"] is not None]
    if mobilenet:
        profiles = ", ".join(sorted({row["profile"] for row in mobilenet}))
        notes.append(f"SHAP on MobileNetV2 ({profiles} parameters): {min(r['raw_s'] for r in mobilenet):.1f}-"
                     f"{max(r['raw_s'] for r in mobilenet):.1f} s per image raw, so it stays in the quick profile.")
    return notes


def method_notes(forwards: dict, repeats: int, batch_sizes: dict, rows: list[dict]) -> list[str]:
    """Footnotes of the methods table: what each column measures."""
    measured = "; ".join(
        f"{key}: {f['s_per_image'] * 1e3:.2f} ms/image (graph call {f['graph_s'] * 1e3:.2f}, "
        f"predict {f['predict_s'] * 1e3:.2f})" for key, f in forwards.items()
    )
    return [
        "All times are seconds per image: the batch of N images is processed at once, its time divided by N.",
        "raw s: Xplique explainer.explain() on the preprocessed batch (+ conversion to numpy), explainer built as",
        "  the pipeline builds it (same batch size), already built and warmed once on this batch: tracing excluded.",
        "  shap family: the explain_core.shap_methods explainer that build_explainer gives the pipeline, with the",
        "  model's background (bg=); its first call in a process also compiles shap's numba code (excluded here,",
        "  see partition-profile). The shap library's own calls are compared in shap-vs-xplique and tabular.",
        "handler s: the real handler on one SQS event with N records (uploads with metadata methods=<method>, params=",
        "  <overrides>), warm (second upload after a warm-up invocation); includes S3 I/O on the in-process moto",
        "  emulator: model HEADs, image GET, decode, predict, explain, overlay PNGs and .npy, PUTs, manifest.",
        "  The template's BatchSize (" + ", ".join(f"{family} {size}" for family, size in batch_sizes.items())
        + ") caps what Lambda delivers in one invocation:",
        "  N above it makes a larger event than Lambda would send.",
        "explain-in-handler s, predict-in-handler s: what the handler itself measured (manifest methods[].seconds",
        "  and timings.predict_s, / N); the JSON has the rest of the manifest's timings (model_s, download_s, ...).",
        f"floor s: passes per image (MethodSpec.passes) x forward time per image (batch of {FORWARD_BATCH}, best of",
        f"  graph call and model.predict) -- {measured}.",
        "  For gradient methods, GradientExplainer and DeepExplainer a pass is a forward AND a backward pass, yet",
        "  the floor counts forward time only, so raw/floor of about 2-3 is expected there; FEM needs only a",
        "  forward pass. DeepExplainer's passes are its background references, run as one doubled batch.",
        f"Best of {repeats} timed run(s) per raw and handler cell; on a shared machine differences under ~20%"
        " are noise.",
        *shap_notes(rows),
    ]


def best_note(repeats: int) -> str:
    return f"best of {repeats} run(s), quick ones repeated until 1 s was timed (at most {max(repeats, 5)} runs)"


SHAP_VS_XPLIQUE_COLUMNS = [
    Column("N", lambda r: r["evaluations"]),
    Column("method", lambda r: r["method"]),
    Column("library", lambda r: r["library"]),
    Column("rows/img", lambda r: r.get("model_rows_per_image"), "{:.0f}"),
    Column("calls/img", lambda r: r.get("model_calls_per_image"), "{:.1f}"),
    Column("s/image", lambda r: r["s_per_image"], "{:.4f}"),
    Column("vs ref", lambda r: r.get("vs_reference"), "{:.2f}"),
    Column("floor s", lambda r: r["floor_s"], "{:.4f}"),
    Column("s/floor", lambda r: r.get("over_floor"), "{:.1f}"),
    Column("reference", lambda r: r["reference"] + (f"  FAILED {r['error']}" if r["error"] else "")),
]


def shap_vs_xplique_notes(rows: list[dict], repeats: int) -> list[str]:
    forward = rows[0]["forward_s_per_image"] if rows else 0.0
    return [
        "Demo CNN, the same images for every row, each explaining its predicted class; N = model evaluations per",
        "  image (KernelShap/SuperpixelKernel nb_samples=N, PartitionExplainer max_evals=N).",
        f"s/image: warm (a first run traces and compiles), {best_note(repeats)}.",
        f"floor s: N x {forward * 1e3:.2f} ms, the batched forward time per image. rows/img, calls/img: model rows",
        "  and calls actually made (counted; '-' where Xplique calls the model itself; a call is one model.predict",
        "  or one tf.function call). vs ref: s/image over the reference row's.",
        "xplique KernelShap: the registry's Xplique method (8x8 grid cells, LinearRegression surrogate).",
        "ours: explain_core.shap_methods via build_explainer, as the shap function runs them (batch size of the",
        "  pipeline, one class, the model's background.npy). SuperpixelKernel: registry defaults (SLIC segments,",
        "  fill) with nb_samples=N.",
        "shap Kernel, docs way: shap's image Kernel SHAP example: a per-segment masking loop, f = model.predict of",
        "  every class, mean-colour fill, default l1_reg='num_features(10)'. fast: vectorised masks, the registry's",
        "  fill, traced tf.function, one class, l1_reg=False (what ours does).",
        "shap Partition: shap.Explainer(f, shap.maskers.Image('blur(16,16)', shape), algorithm='partition'),",
        "  outputs=top class; naive: f = model.predict, batch_size='auto' (10 masks per call); fast: f = a traced",
        "  tf.function, batch_size = the pipeline's.",
    ]


TABULAR_COLUMNS = [
    Column("model", lambda r: r["model"]),
    Column("method", lambda r: r["method"]),
    Column("rows", lambda r: r["rows"]),
    Column("raw s", lambda r: r.get("raw_s"), "{:.4f}"),
    Column("ours s", lambda r: r.get("ours_s"), "{:.4f}"),
    Column("ours/raw", lambda r: r.get("ours_over_raw"), "{:.2f}"),
    Column(f"ours s b{TABULAR_WIDE_BATCH}", lambda r: r.get("ours_wide_s"), "{:.4f}"),
    Column("report s", lambda r: r.get("report_s"), "{:.3f}"),
    Column("plots", lambda r: r.get("plots")),
    Column("handler s", lambda r: r.get("handler_s"), "{:.3f}"),
    Column("handler rest s", lambda r: r.get("handler_other_s"), "{:.3f}"),
    Column("additivity", lambda r: r.get("additivity"), "{:.1e}"),
    Column("params used", lambda r: format_params(r["params"]) + (f"  FAILED {r['error']}" if r["error"] else "")),
]


def tabular_notes(repeats: int) -> list[str]:
    return [
        "Seconds for the whole upload (all its rows); rows: held-out breast cancer rows, explained class",
        "  malignant (the cards' explained_classes); background: the published background.npy (32 training rows).",
        f"Warm, {best_note(repeats)}; report and handler: best of at least 2.",
        "raw s: the shap call a user writes, on the whole model: shap.TreeExplainer(booster).shap_values(X)",
        "  (explainer built in the timed call); KernelExplainer(model.predict, background).shap_values(X, nsamples,",
        "  l1_reg=False); DeepExplainer(model, background[:nb_background]); GradientExplainer(model, background)",
        "  .shap_values(X, nsamples). Keras models have 2 outputs, so raw Deep/Gradient explain both classes.",
        "ours s: explain_core.shap_methods via build_explainer (cached explainer, one class, the pipeline's batch",
        f"  size); ours s b{TABULAR_WIDE_BATCH}: the same with batch_size={TABULAR_WIDE_BATCH} (Keras models only).",
        "report s: explain_core.tabular_report.report_files: values.csv + bar, beeswarm and 3 waterfall PNGs",
        "  (plots column). handler s: the real shap handler on one SQS event for a CSV upload of the same rows",
        "  (warm), with S3 I/O on the emulator; handler rest s = handler - ours - report (parsing, predict, summary",
        "  JSON, PUTs, manifest). additivity: max |sum(values) + base - output| of ours.",
    ]


PROFILE_COLD_NOTES = [
    "A fresh Python process (as a cold Lambda start) on the same 4 images: shap's numba functions",
    "  (_jit_build_partition_tree, make_masks' _init_masks/_rec_fill_masks, _build_fixed_multi_output) are",
    "  compiled on first use, per process: shap does not cache them on disk (no cache=True).",
]


def profile_tables(profile: dict, repeats: int) -> list[str]:
    """The three tables of the partition-profile section."""
    images, evals = profile["images"], profile["evaluations"]
    tables = []
    cold = profile.get("cold") or {}
    if cold or profile.get("cold_error"):
        steps = [{"step": step, "s": seconds} for step, seconds in cold.items()]
        notes = PROFILE_COLD_NOTES + ([f"FAILED: {profile['cold_error']}"] if profile.get("cold_error") else [])
        tables.append(format_table(f"Partition explainer, cold: first use in a new process ({images} images, "
                                   f"max_evals={evals})", [Column("step", lambda r: r["step"]),
                                                           Column("seconds", lambda r: r["s"], "{:.3f}")],
                                   steps, notes))
    warm = profile["warm"]
    pieces = sorted(warm["pieces"].items(), key=lambda item: -item[1])
    rows = [{"piece": piece, "s": seconds, "share": seconds / warm["total_s"], "calls": warm["calls"].get(piece)}
            for piece, seconds in pieces]
    sizes = warm["sizes"]
    per_image = len(sizes) // images if images else 0
    tables.append(format_table(
        f"Partition explainer, warm: where {warm['total_s']:.3f} s go ({images} images, max_evals={evals}, "
        f"classes {profile['classes']})",
        [Column("piece (exclusive time)", lambda r: r["piece"]), Column("seconds", lambda r: r["s"], "{:.3f}"),
         Column("share", lambda r: r["share"], "{:.0%}"), Column("calls", lambda r: r["calls"])],
        rows,
        [f"Model calls: {len(sizes)} for {sum(sizes)} rows; batch sizes of the first image: "
         f"{', '.join(map(str, sizes[:per_image]))} (owen's queue widens 1, 2, 8, 32, ... up to batch_size).",
         "One PartitionShap.explain() as the pipeline runs it (warm); each piece timed exclusive of the others."],
    ))
    tables.append(format_table(
        f"Partition explainer variants ({images} images, max_evals={evals}, warm)",
        [Column("variant", lambda r: r["variant"]), Column("batch", lambda r: r["batch_size"]),
         Column("calls", lambda r: r["calls"]), Column("rows", lambda r: r["rows"]),
         Column("forward s", lambda r: r["forward_s"], "{:.3f}"), Column("total s", lambda r: r["seconds"], "{:.3f}"),
         Column("s/image", lambda r: r["s_per_image"], "{:.4f}"), Column("vs ours", lambda r: r["vs_ours"], "{:.2f}"),
         Column("max |diff|", lambda r: r["max_abs_diff"], "{:.1e}")],
        profile["variants"],
        [f"Each row: {best_note(repeats)}.",
         "ours: explain_core PartitionShap (traced tf.function, the pipeline's batch_size, one class per group,",
         "  explainer kept per image shape, model-space blur). raw shap: the top class, model-space blur, f as",
         "  named;",
         "  batch 'auto' is shap's default (10). max |diff|: largest attribution difference from ours' first row.",
         "forward s: time inside the model function (includes model.predict's per-call tf.data set-up)."],
    ))
    return tables


BURST_NOTES = [
    "One message per invocation: the gradient function wired with BatchSize 1 (no batching window);",
    "  template BatchSize: wired as template.yaml says (BatchSize, MaximumBatchingWindowInSeconds).",
    "Images uploaded first (not timed), then drained from the queue by the local SQS event source",
    "  (devtools.local_lambda.SqsEventSource) calling the real gradient handler; each invocation size warmed first.",
    "handler s: sum of handler invocations; wall s adds SQS receive/delete (and any batching-window wait).",
    "speed-up: handler time with one message per invocation / handler time with the template's BatchSize.",
]


def selected_methods(names: str) -> list[MethodSpec]:
    """argparse type: comma-separated registry method names (any case) or ``all``."""
    if names.strip().lower() == "all":
        return list(METHODS)
    by_lower = {name.lower(): spec for name, spec in REGISTRY.items()}
    specs = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name.lower() not in by_lower:
            raise argparse.ArgumentTypeError(f"unknown method {name!r}; known: {', '.join(REGISTRY)}")
        specs.append(by_lower[name.lower()])
    return specs


def comma_list(choices):
    """argparse type: a comma-separated list whose items must be among ``choices``."""

    def parse(value: str) -> list[str]:
        items = [item.strip() for item in value.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(choices)}")
        return items

    return parse


def positive_ints(value: str) -> list[int]:
    """argparse type: comma-separated positive integers."""
    try:
        items = [int(item) for item in value.split(",") if item.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {exc}") from exc
    if not items or min(items) < 1:
        raise argparse.ArgumentTypeError("expected comma-separated positive integers")
    return items


def json_object(value: str) -> dict:
    """argparse type for ``--params``: ``{"<Method>": {"<param>": value}}``, method names normalised."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise argparse.ArgumentTypeError('expected {"<Method>": {"<param>": value}}')
    by_lower = {name.lower(): name for name in REGISTRY}
    unknown = [name for name in parsed if name.lower() not in by_lower]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    return {by_lower[name.lower()]: value for name, value in parsed.items()}


def parse_args(argv=None):
    """The command line (see ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=comma_list(SUBJECTS), default=list(SUBJECTS),
                        help="models to benchmark (default: demo,mobilenet)")
    parser.add_argument("--methods", type=selected_methods, default=list(METHODS),
                        help="comma-separated registry methods of any family, or 'all' (default); methods a model "
                             "cannot explain (tabular-only SHAP methods on image models) are left out")
    parser.add_argument("--images", type=int, default=2,
                        help="images per batch in the methods and shap-vs-xplique sections (default: 2)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs per raw and handler measurement, the best kept (default: 1)")
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--quick", dest="profile", action="store_const", const="quick",
                         help="reduced parameters (nb_samples, nb_design, steps, occlusion grid) on every model")
    profile.add_argument("--full", dest="profile", action="store_const", const="full",
                         help="registry default parameters on every model (MobileNetV2: far beyond 15 minutes)")
    parser.set_defaults(profile="auto")
    parser.add_argument("--params", type=json_object, default={},
                        help='extra overrides on top of the profile, e.g. \'{"Rise": {"nb_samples": 500}}\'')
    parser.add_argument("--sections", type=comma_list(SECTIONS), default=list(SECTIONS),
                        help=f"what to run (default: {','.join(SECTIONS)})")
    parser.add_argument("--shap-evals", type=positive_ints, default=[100, 300],
                        help="model evaluations per image in shap-vs-xplique (default: 100,300)")
    parser.add_argument("--tabular-rows", type=positive_ints, default=[8, 64],
                        help="rows per CSV upload in the tabular section (default: 8,64)")
    parser.add_argument("--burst-images", type=int, default=32, help="images in the burst section (default: 32)")
    parser.add_argument("--burst-methods", type=selected_methods, default="GradCAM,IntegratedGradients",
                        help="gradient methods for the burst section (default: GradCAM,IntegratedGradients)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON results (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="the template's LogLevel for the functions (default: WARNING)")
    args = parser.parse_args(argv)
    if min(args.images, args.burst_images, args.repeats) < 1:
        parser.error("--images, --burst-images and --repeats must be at least 1")
    if any(spec.family != GRADIENT for spec in args.burst_methods):
        parser.error("--burst-methods must be gradient methods (the burst goes through the gradient function)")
    return args


def library_versions() -> dict:
    """Versions of what the timings depend on, for the JSON report: the manifest's, plus the emulator."""
    from importlib import metadata

    from explain_core.pipeline import library_versions as pipeline_versions

    return {**pipeline_versions(), "moto": metadata.version("moto")}


def check_parameters(subjects: dict[str, Subject], args) -> None:
    """Fail before measuring anything if a profile or ``--params`` gives a method a parameter it refuses."""
    plan = [(subjects[key], args.methods) for key in args.models if "methods" in args.sections]
    plan += [(subjects["demo"], args.burst_methods)] if "burst" in args.sections else []
    for subject, specs in plan:
        for spec in (spec for spec in specs if spec.supports(subject.card)):
            try:
                spec.resolve(profile_overrides(spec, profile_of(subject, args), subject.input_size, args.params),
                             subject.input_size)
            except ExplainError as exc:
                raise SystemExit(f"parameters refused for {spec.name} on {subject.key}: {exc}") from exc
    if "shap-vs-xplique" in args.sections:
        for evaluations in args.shap_evals:
            for name, param in (("KernelShap", "nb_samples"), ("SuperpixelKernelExplainer", "nb_samples"),
                                ("PartitionExplainer", "max_evals")):
                try:
                    REGISTRY[name].resolve({param: evaluations}, subjects["demo"].input_size)
                except ExplainError as exc:
                    raise SystemExit(f"--shap-evals {evaluations} refused: {exc}") from exc


def run_sections(harness: Harness, args, results: dict) -> None:
    """Run the requested sections, adding rows to ``results`` as they are measured."""
    demo_sections = {"burst", "shap-vs-xplique", "partition-profile"} & set(args.sections)
    subjects = {key: SUBJECTS[key]() for key in dict.fromkeys(args.models + ["demo"] * bool(demo_sections))}
    check_parameters(subjects, args)
    if "methods" in args.sections:
        for key in args.models:
            results["forward"][key], rows = benchmark_methods(harness, subjects[key], args.methods, args)
            results["methods"] += rows
    if "burst" in args.sections:
        results["burst"] += benchmark_burst(harness, subjects["demo"], args.burst_methods, args)
    if "shap-vs-xplique" in args.sections:
        results["shap_vs_xplique"] += benchmark_shap_vs_xplique(harness, subjects["demo"], args)
    if "tabular" in args.sections:
        results["tabular"] += benchmark_tabular(harness, args)
    if "partition-profile" in args.sections:
        results["partition_profile"] = benchmark_partition_profile(harness, subjects["demo"], args)


def tables_of(results: dict, args) -> list[str]:
    """The plain-text tables of whatever ``results`` holds."""
    tables = []
    if results["methods"]:
        tables.append(format_table(
            f"Explanation methods (N={args.images} images per batch)", METHOD_COLUMNS, results["methods"],
            method_notes(results["forward"], args.repeats, results["environment"]["template_batch_sizes"],
                         results["methods"]),
        ))
    if results["burst"]:
        tables.append(format_table(
            f"Burst: {args.burst_images} demo images through the gradient function", BURST_COLUMNS,
            results["burst"], BURST_NOTES,
        ))
    if results["shap_vs_xplique"]:
        tables.append(format_table(
            f"SHAP vs Xplique on the demo CNN ({args.images} images, same N evaluations per image)",
            SHAP_VS_XPLIQUE_COLUMNS, results["shap_vs_xplique"],
            shap_vs_xplique_notes(results["shap_vs_xplique"], args.repeats),
        ))
    if results["tabular"]:
        tables.append(format_table("Tabular SHAP (breast cancer demo models)", TABULAR_COLUMNS, results["tabular"],
                                   tabular_notes(args.repeats)))
    if results["partition_profile"]:
        tables += profile_tables(results["partition_profile"], args.repeats)
    return tables


def main(argv=None) -> None:
    """Start the emulator, run the sections, print the tables and write the JSON, even after a failure."""
    args = parse_args(argv)
    started = time.perf_counter()
    harness = Harness(args.log_level, args.output.with_name("handler-output.log"))
    results = {
        "arguments": {
            "models": args.models, "methods": [s.name for s in args.methods], "images": args.images,
            "repeats": args.repeats, "profile": args.profile, "params": args.params, "sections": args.sections,
            "burst_images": args.burst_images, "burst_methods": [s.name for s in args.burst_methods],
            "shap_evals": args.shap_evals, "tabular_rows": args.tabular_rows,
        },
        "environment": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "versions": library_versions(),
            "template_batch_sizes": harness.batch_sizes(),
        },
        "forward": {}, "methods": [], "burst": [], "shap_vs_xplique": [], "tabular": [], "partition_profile": {},
    }
    try:
        run_sections(harness, args, results)
    finally:  # on failure too: whatever was measured is printed and saved
        harness.close()
        results["elapsed_s"] = time.perf_counter() - started
        print()
        print("\n".join(tables_of(results, args)))
        print(f"Total elapsed: {results['elapsed_s']:.1f} s")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2, default=str))
        print(f"Results: {args.output}")


if __name__ == "__main__":
    main()
