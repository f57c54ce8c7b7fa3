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
#: Most timed calls of one pass measurement: quick passes are repeated until 1 s was timed (a shared CPU).
PASS_RUNS = 30


def model_inputs(subject: Subject, images: np.ndarray) -> np.ndarray:
    """The preprocessed batch the session builds from these images (same resize and preprocessing)."""
    return to_model_input(images, subject.card)


def measure_forward(model, inputs: np.ndarray, batch: int = FORWARD_BATCH, repeats: int = 3) -> dict:
    """Seconds per image of a batched forward pass (best of ``repeats``; warm).

    Timed two ways: a ``tf.function`` graph call (how Xplique calls the model) and
    ``model.predict``; the floor uses the faster. Quick calls are repeated until 1 s was timed.
    """
    import tensorflow as tf

    x = tf.constant(np.take(inputs, np.arange(batch) % len(inputs), axis=0))
    graph = tf.function(lambda t: model(t, training=False))

    def best(call) -> float:
        call()  # trace / build
        return best_of(repeats, lambda: np.asarray(call()), max_runs=PASS_RUNS)[0] / batch

    graph_s = best(lambda: graph(x))
    predict_s = best(lambda: model.predict(x, batch_size=batch, verbose=0))
    return {"batch": batch, "graph_s": graph_s, "predict_s": predict_s, "s_per_image": min(graph_s, predict_s)}


def measure_forward_backward(model, inputs: np.ndarray, batch: int = FORWARD_BATCH, repeats: int = 3) -> float:
    """Seconds per image of a batched forward AND backward pass (best of ``repeats``; warm): what one pass of a
    gradient method costs.

    Times the handler's own gradient graph (``attribution.model_functions``: the gradient of the targets'
    score with respect to the inputs, the graph every stabilised Xplique explainer calls) on a batch of
    ``batch`` images, targets one class.
    """
    import tensorflow as tf

    from explain_core.attribution import model_functions

    gradient = model_functions(model)[0]
    x = tf.constant(np.take(inputs, np.arange(batch) % len(inputs), axis=0), tf.float32)
    targets = tf.one_hot(tf.zeros(batch, tf.int32), model.outputs[0].shape[-1], dtype=tf.float32)
    gradient(x, targets)  # trace (once per model: its signature takes any batch)
    return best_of(repeats, lambda: np.asarray(gradient(x, targets)), max_runs=PASS_RUNS)[0] / batch


class TraceCounter:
    """Counts the TensorFlow graphs traced while it is active (every ``tf.function`` trace, nested ones too).

    ``model`` counts those that capture variables: a model's forward or gradient graph (seconds to trace on
    MobileNetV2), as opposed to small helpers (milliseconds). Uses TensorFlow's concrete-function callbacks
    (``transform.CONCRETE_FUNCTION_CALLBACKS``, TensorFlow 2.20), called once per new traced graph.
    """

    def __init__(self):
        self.names: list[str] = []
        self.model = 0

    def _traced(self, function) -> None:
        self.names.append(function.name.decode() if isinstance(function.name, bytes) else str(function.name))
        self.model += bool(getattr(function, "variables", ()))

    def __enter__(self) -> "TraceCounter":
        from tensorflow.python.eager.polymorphic_function import transform

        transform.CONCRETE_FUNCTION_CALLBACKS.append(self._traced)
        return self

    def __exit__(self, *exc) -> None:
        from tensorflow.python.eager.polymorphic_function import transform

        transform.CONCRETE_FUNCTION_CALLBACKS.remove(self._traced)

    @property
    def count(self) -> int:
        return len(self.names)


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
    """The fast way: the handler's traced forward (``frameworks.keras.traced_forward``); slice with
    ``CountingForward(batch=)``."""
    from explain_core.frameworks.keras import traced_forward as keras_forward

    graph = keras_forward(model)
    return lambda x: graph(np.asarray(x, dtype=np.float32))


def predict_forward(model) -> Callable[[np.ndarray], np.ndarray]:
    """The naive way: ``model.predict`` (a tf.data pipeline per call; verbose=0 only keeps the tables readable)."""
    return lambda x: model.predict(np.asarray(x, dtype=np.float32), verbose=0)
