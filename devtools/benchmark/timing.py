"""Measurements every section uses: forward-pass time, best-of-N timing, model functions that count
what they are asked (rows, calls, seconds)."""

import time
from collections.abc import Callable

import numpy as np

from devtools.benchmark.subjects import Subject
from explain_core.attribution import class_scores, to_model_input
from explain_core.model_card import ModelCard

#: Images per batch of the forward-pass timing (the floor of the methods section).
FORWARD_BATCH = 32


def model_inputs(subject: Subject, images: np.ndarray) -> np.ndarray:
    """The preprocessed batch the session builds from these images (same resize and preprocessing)."""
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


def ratio(numerator, denominator):
    """numerator / denominator, or None when either is missing (or the denominator is 0)."""
    return numerator / denominator if numerator is not None and denominator else None


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
