"""Benchmark the explanation methods and the functions' batching, on the local emulator.

Two sections, both printed as plain-text tables and written to ``benchmark-results/benchmark.json``:

``methods``
    For each registry method (both families) and each model: the raw Xplique call
    (``explainer.explain()`` on the preprocessed batch, with an explainer built like the
    pipeline builds it and warmed once on the same batch, so TensorFlow tracing is excluded),
    the real handler on an SQS event for uploads that name that single method (warm: a first
    upload warms it, a second one is timed), and the method's floor: model passes per image
    (``MethodSpec.passes``) x measured batched forward time per image.

``burst``
    Demo images uploaded under ``incoming/gradient/...``, processed one message per invocation
    vs batched as the template's SQS event source does (its ``BatchSize``).

Models: ``demo`` is the project's demo CNN (64x64, a few shape classes, ``devtools.demo_model``);
``mobilenet`` is a MobileNetV2 (224x224, 1000 classes) with random weights, built here and
cached under ``.cache/benchmark/``. Parameter profiles: ``full`` uses the registry defaults,
``quick`` smaller overrides (``QUICK_OVERRIDES``) sent through the upload's ``params`` metadata;
``auto`` (the default) is ``full`` on the demo model and ``quick`` on MobileNetV2.

Run from the repository root::

    PYTHONPATH=.:layers/explain_core/src .venv/bin/python -m devtools.benchmark --models demo --images 2 --quick
"""

import argparse
import contextlib
import dataclasses
import functools
import gc
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
    from urllib.parse import unquote_plus

    try:
        return unquote_plus(json.loads(message["Body"])["Records"][0]["s3"]["object"]["key"])
    except (KeyError, IndexError, TypeError, json.JSONDecodeError):
        return None


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


def method_notes(forwards: dict, repeats: int, batch_sizes: dict) -> list[str]:
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
    ]


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
                        help="comma-separated registry methods of either family, or 'all' (default)")
    parser.add_argument("--images", type=int, default=2, help="images per batch in the methods section (default: 2)")
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
    parser.add_argument("--sections", type=comma_list(("methods", "burst")), default=["methods", "burst"],
                        help="what to run (default: methods,burst)")
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


def run_sections(harness: Harness, args, results: dict) -> None:
    """Run the requested sections, adding rows to ``results`` as they are measured."""
    subjects = {key: SUBJECTS[key]() for key in dict.fromkeys(args.models + ["demo"] * ("burst" in args.sections))}
    check_parameters(subjects, args)
    if "methods" in args.sections:
        for key in args.models:
            results["forward"][key], rows = benchmark_methods(harness, subjects[key], args.methods, args)
            results["methods"] += rows
    if "burst" in args.sections:
        results["burst"] += benchmark_burst(harness, subjects["demo"], args.burst_methods, args)


def tables_of(results: dict, args) -> list[str]:
    """The plain-text tables of whatever ``results`` holds."""
    tables = []
    if results["methods"]:
        tables.append(format_table(
            f"Explanation methods (N={args.images} images per batch)", METHOD_COLUMNS, results["methods"],
            method_notes(results["forward"], args.repeats, results["environment"]["template_batch_sizes"]),
        ))
    if results["burst"]:
        tables.append(format_table(
            f"Burst: {args.burst_images} demo images through the gradient function", BURST_COLUMNS,
            results["burst"], BURST_NOTES,
        ))
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
        },
        "environment": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "versions": library_versions(),
            "template_batch_sizes": harness.batch_sizes(),
        },
        "forward": {}, "methods": [], "burst": [],
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
