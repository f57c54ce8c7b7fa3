"""Section ``burst``: images through the gradient function, one message per invocation vs
batched as the template's SQS event source batches them (its ``BatchSize``), on the demo CNN and
on MobileNetV2 (224x224) when ``--models`` names it; beside each, the model's own batching gain
measured in the same run: one forward call on ``BatchSize`` images vs that many calls of one."""

import time

import numpy as np

from devtools.benchmark.harness import Harness, failure, upload_metadata
from devtools.benchmark.subjects import SUBJECTS, Subject, profile_of, profile_overrides
from devtools.benchmark.timing import best_of, model_inputs, ratio
from explain_core.registry import GRADIENT, MethodSpec

BURST_SEED = 4343


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


def forward_batching_gain(subject: Subject, batch: int, repeats: int = 3) -> dict:
    """The model's own batching gain: seconds of ``batch`` calls on one image each over one call on
    ``batch`` images (warm traced forward passes, as Xplique calls the model; best of ``repeats``,
    quick ones repeated for 1 s), and the same for a forward+backward pass (the gradient methods' pass)."""
    import tensorflow as tf

    from devtools.benchmark.batch_sizes import passes

    x = tf.constant(model_inputs(subject, subject.images(batch, BURST_SEED)))
    singles = [x[i:i + 1] for i in range(batch)]
    gains = {}
    for name, function in zip(("forward", "forward_backward"), passes(subject.model()), strict=True):
        np.asarray(function(x)), np.asarray(function(singles[0]))  # trace both shapes
        one_call, _ = best_of(repeats, lambda function=function: np.asarray(function(x)))
        many_calls, _ = best_of(repeats, lambda function=function: [np.asarray(function(s)) for s in singles])
        gains[name] = ratio(many_calls, one_call)
    return gains


def burst_subjects(demo: Subject, args) -> list[Subject]:
    """The demo CNN, and MobileNetV2 (224x224 inputs) when ``--models`` names it."""
    return [demo] + [SUBJECTS[key]() for key in args.models if key != demo.key]


def benchmark_burst(harness: Harness, subject: Subject, specs: list[MethodSpec], args) -> list[dict]:
    """Burst throughput of the gradient function: one message per invocation vs the template's BatchSize,
    on ``subject`` (the demo CNN) and the other ``--models``; each model's forward batching gain beside it."""
    template_batch = harness.deployment.function_for_family(GRADIENT).batch_size
    rows = []
    for model in burst_subjects(subject, args):
        harness.publish(model)
        profile = profile_of(model, args)
        gains = forward_batching_gain(model, template_batch)
        for spec in specs:
            overrides = profile_overrides(spec, profile, model.input_size, args.params)
            single = process_burst(harness, model, spec, overrides, args.burst_images, 1)
            batched = process_burst(harness, model, spec, overrides, args.burst_images, template_batch)
            single["mode"], batched["mode"] = "one message per invocation", "template BatchSize"
            single["speedup"], single["wall_speedup"] = 1.0, 1.0
            batched["speedup"] = ratio(single["handler_s"], batched["handler_s"])
            batched["wall_speedup"] = ratio(single["wall_s"], batched["wall_s"])
            for row in (single, batched):
                row["model"] = model.key
                row["forward_gain"], row["forward_backward_gain"] = gains["forward"], gains["forward_backward"]
            batched["speedup_of_forward_gain"] = ratio(batched["speedup"], gains["forward"])
            rows += [single, batched]
            print(f"[burst] {model.key} {spec.name}: {batched['speedup']:.2f}x with batches of {template_batch} "
                  f"(forward pass alone: {gains['forward']:.2f}x)", flush=True)
    return rows
