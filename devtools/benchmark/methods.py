"""Section ``methods``: each registry method a model supports, as the raw library call, through the
real handler, and against its floor (model passes per image x the measured time of one pass per image:
forward and backward for methods that need gradients, forward only for the others)."""

import gc
import time

import numpy as np

from devtools.benchmark.harness import Harness, failure, upload_metadata
from devtools.benchmark.subjects import Subject, profile_of, profile_overrides
from devtools.benchmark.timing import (
    TraceCounter,
    measure_forward,
    measure_forward_backward,
    model_inputs,
    predicted_targets,
    ratio,
)
from explain_core.attribution import build_explainer, run_method
from explain_core.registry import GRADIENT, SHAP, MethodSpec


def measure_raw(spec: MethodSpec, subject: Subject, params: dict, inputs, targets, batch_size: int,
                repeats: int = 1, background: np.ndarray | None = None) -> float:
    """Seconds of a warm ``explainer.explain()`` on the batch, best of ``repeats``.

    The explainer is built as the session builds it (SHAP methods: with the model's background,
    as ``LoadedModel.background``) and run once first, so tracing and numba compilation are excluded.
    """
    explainer = build_explainer(spec, subject.model(), subject.card, params, batch_size, background)
    run_method(explainer, inputs, targets)  # warm-up: traces the TF functions for this batch shape
    seconds = min(run_method(explainer, inputs, targets).seconds for _ in range(repeats))
    del explainer
    gc.collect()
    return seconds


def measure_handler(harness: Harness, subject: Subject, spec: MethodSpec, overrides: dict, images,
                    repeats: int = 1, warm_images=None) -> dict:
    """Warm handler time for one SQS event holding one message per image, all asking for ``spec``.

    A first upload warms the handler: model load, explainer build, tracing. It holds ``warm_images``
    (another number of images than the timed uploads, as a warm Lambda sees 1, then 3, then 8 uploads per
    invocation), or the images themselves. Then ``repeats`` more uploads (other keys, so none is a duplicate)
    are timed, the best kept: the handler call alone, without the uploads or the message deletion. The
    TensorFlow graphs traced during the timed calls are counted (all, and the model's own).
    """
    source = harness.source(spec.family)
    metadata = upload_metadata(spec, overrides)
    runs = []  # (handler seconds, explain seconds from the manifest, first failure, manifest timings, traces)
    for phase in ["warm"] + [f"timed{i}" for i in range(repeats)]:
        uploaded = warm_images if phase == "warm" and warm_images is not None else images
        keys = harness.upload(spec.family, subject, f"{phase}-{spec.name}", uploaded, metadata)
        messages = harness.receive(spec.family, keys)
        with TraceCounter() as traces:
            source.invoke(messages)
        outcomes = [harness.outcome(key) for key in keys]
        problem = next((reason for reason in map(failure, outcomes) if reason), None)
        explain_s = None if problem else outcomes[0]["methods"][0].get("seconds")
        runs.append((source.handler.durations[-1], explain_s, problem, outcomes[0].get("timings", {}), traces))
    best = min(runs[1:], key=lambda run: run[0])
    explain = [run[1] for run in runs[1:] if run[1] is not None]
    return {
        "warmup_s": runs[0][0], "handler_s": best[0], "in_handler_explain_s": min(explain) if explain else None,
        "error": next((run[2] for run in runs if run[2]), None), "timings": best[3],
        "warm_traces": max(run[4].count for run in runs[1:]),
        "warm_model_traces": max(run[4].model for run in runs[1:]),
        "warm_traced": sorted({name for run in runs[1:] for name in run[4].names}),
    }


def benchmark_methods(harness: Harness, subject: Subject, specs: list[MethodSpec], args) -> tuple[dict, list[dict]]:
    """One row per method this model supports; also returns the forward-pass measurement."""
    harness.publish(subject)
    card, model = subject.card, subject.model()
    specs = [spec for spec in specs if spec.supports(card)]  # the tabular-only SHAP methods are left out
    background = subject.background()
    images = subject.images(args.images)
    inputs = model_inputs(subject, images)
    # The handler explains the predicted class (the cards' target policy), so the raw call does too.
    targets = predicted_targets(model, inputs, card, harness.session_batch_size(GRADIENT))
    forward = measure_forward(model, inputs)
    forward["backward_s_per_image"] = measure_forward_backward(model, inputs)
    forward["backward_over_forward"] = ratio(forward["backward_s_per_image"], forward["s_per_image"])
    profile = profile_of(subject, args)
    print(f"[{subject.key}] forward pass: {forward['s_per_image'] * 1e3:.2f} ms/image, forward+backward "
          f"{forward['backward_s_per_image'] * 1e3:.2f} ms/image (batch {forward['batch']}); parameter profile "
          f"{profile}", flush=True)
    # The handler is warmed with one image more than it is timed with: a new number of images must not retrace.
    warm_images = subject.images(len(images) + 1)

    rows = []
    for spec in specs:
        overrides = profile_overrides(spec, profile, subject.input_size, args.params)
        params = spec.resolve(overrides, subject.input_size)
        passes = spec.passes(params, subject.input_size)
        # One pass: forward and backward for the methods that need gradients (the registry's backward flag).
        pass_s = forward["backward_s_per_image"] if spec.backward else forward["s_per_image"]
        row = {"method": spec.name, "family": spec.family, "model": subject.key, "images": len(images),
               "profile": profile, "params": params, "overrides": overrides, "passes": passes,
               "backward": spec.backward, "forward_s_per_image": forward["s_per_image"], "pass_s": pass_s,
               "floor_s": passes * pass_s,
               "background": subject.background_label() if spec.family == SHAP else None}
        started = time.perf_counter()
        try:
            batch_size = harness.session_batch_size(spec.family, card)
            raw_s = measure_raw(spec, subject, params, inputs, targets, batch_size, args.repeats,
                                background if spec.family == SHAP else None)
            row["raw_s"] = raw_s / len(images)
        except Exception as exc:  # report and go on: one method failing must not end the benchmark
            row["raw_s"], row["error"] = None, f"raw call: {type(exc).__name__}: {exc}"[:300]
        handler = measure_handler(harness, subject, spec, overrides, images, args.repeats, warm_images)
        row["handler_s"] = handler["handler_s"] / len(images)
        row.update({key: handler[key] for key in ("warm_traces", "warm_model_traces", "warm_traced")})
        row["in_handler_explain_s"] = ratio(handler["in_handler_explain_s"], len(images))
        row["handler_warmup_s"] = handler["warmup_s"]
        row["handler_timings"] = handler["timings"]
        row["error"] = row.get("error") or handler["error"]
        row["handler_over_raw"] = ratio(row["handler_s"], row["raw_s"]) if not handler["error"] else None
        row["raw_over_floor"] = ratio(row["raw_s"], row["floor_s"])
        row["handler_over_floor"] = ratio(row["handler_s"], row["floor_s"]) if not handler["error"] else None
        row["in_handler_over_raw"] = ratio(row["in_handler_explain_s"], row["raw_s"])
        rows.append(row)
        status = f"  FAILED {row['error']}" if row["error"] else ""
        print(f"[{subject.key}] {spec.name}: done in {time.perf_counter() - started:.1f} s{status}", flush=True)
    return forward, rows
