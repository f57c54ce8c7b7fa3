"""Section ``batch-sizes``: model throughput against the batch size, to choose the session's batch size.

For each model (``--models``): images per second of a warm traced forward pass
(``tf.function``, as Xplique and ``KerasOutputs`` call the model) and of a forward+backward
pass (the gradient of the explained class's score with respect to the inputs, as the gradient
methods compute it), for batches of 1 to 64 images. A batch size beyond which the throughput no
longer grows only costs memory: the section names the smallest batch size that reaches
``PLATEAU`` of the best throughput, per model and pass (``explain_core.session.DEFAULT_BATCH_SIZE``
is chosen from these figures: docs/benchmark.md).
"""

import argparse
import time

import numpy as np

from devtools.benchmark.harness import Harness
from devtools.benchmark.report import Column, format_table
from devtools.benchmark.subjects import SUBJECTS
from devtools.benchmark.timing import model_inputs

SECTION = "batch-sizes"
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
#: Share of the best throughput a batch size must reach to be "enough".
PLATEAU = 0.9


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("batch-sizes section")
    group.add_argument("--batch-sizes-min-seconds", type=float, default=0.5,
                       help="seconds timed per (model, pass, batch size), the best call kept (default: 0.5)")


def passes(model):
    """(forward, forward+backward) traced functions of ``model`` on a float32 batch."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    @tf.function(reduce_retracing=True)
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = model(x, training=False)
            score = tf.reduce_sum(tf.reduce_max(outputs, axis=1))
        return tape.gradient(score, x)

    return forward, forward_backward


def seconds_per_call(function, x, min_seconds: float) -> float:
    """Best seconds of a warm call of ``function(x)``, calls repeated for at least ``min_seconds`` (3 at least)."""
    np.asarray(function(x))  # trace for this shape
    best, total, calls = None, 0.0, 0
    while calls < 3 or total < min_seconds:
        started = time.perf_counter()
        np.asarray(function(x))
        elapsed = time.perf_counter() - started
        best = elapsed if best is None else min(best, elapsed)
        total, calls = total + elapsed, calls + 1
    return best


def sweep(subject, min_seconds: float, batch_sizes=BATCH_SIZES) -> list[dict]:
    """Images per second of each pass at each batch size for one model."""
    import tensorflow as tf

    model = subject.model()
    images = model_inputs(subject, subject.images(max(batch_sizes)))
    forward, forward_backward = passes(model)
    rows = []
    for name, function in (("forward", forward), ("forward+backward", forward_backward)):
        for size in batch_sizes:
            x = tf.constant(images[:size])
            seconds = seconds_per_call(function, x, min_seconds)
            rows.append({"model": subject.key, "pass": name, "batch": size, "images_per_s": size / seconds})
        best = max(row["images_per_s"] for row in rows if row["pass"] == name and row["model"] == subject.key)
        enough = min(row["batch"] for row in rows if row["pass"] == name and row["model"] == subject.key
                     and row["images_per_s"] >= PLATEAU * best)
        one = next(row["images_per_s"] for row in rows if row["pass"] == name and row["batch"] == 1)
        for row in rows:
            if row["pass"] == name and row["model"] == subject.key:
                row["vs_batch_1"] = row["images_per_s"] / one
                row["of_best"] = row["images_per_s"] / best
                row["enough"] = row["batch"] == enough
    return rows


def run(harness: Harness, args, results: dict) -> dict:
    rows = []
    for key in args.models:
        print(f"[batch-sizes] {key}", flush=True)
        rows += sweep(SUBJECTS[key](), args.batch_sizes_min_seconds)
    return {"rows": rows}


def tables(section: dict, args) -> list[str]:
    from explain_core.session import DEFAULT_BATCH_SIZE

    columns = [
        Column("model", lambda r: r["model"]),
        Column("pass", lambda r: r["pass"]),
        Column("batch", lambda r: r["batch"]),
        Column("img/s", lambda r: r["images_per_s"], "{:.1f}"),
        Column("vs batch 1", lambda r: r["vs_batch_1"], "{:.2f}x"),
        Column("of best", lambda r: r["of_best"], "{:.0%}"),
        Column("", lambda r: f"smallest batch at {PLATEAU:.0%} of the best" if r["enough"] else ""),
    ]
    notes = [
        "A warm traced call (tf.function) on a batch of the generated images preprocessed for the model, best call",
        f"  of those timed in {args.batch_sizes_min_seconds} s (3 at least); forward+backward: the gradient of the",
        "  top class's score with respect to the inputs (what the gradient methods compute).",
        f"The session's batch size (explain_core.session.DEFAULT_BATCH_SIZE) is {DEFAULT_BATCH_SIZE}: the rows per",
        "  model call of predictions and of every explainer (Xplique's batch_size), capped by memory elsewhere.",
    ]
    return [format_table("Model throughput vs batch size", columns, section["rows"], notes)]
