"""devtools/benchmark/timing.py: the trace counter the retracing checks rely on.

``TraceCounter`` hooks TensorFlow's private ``CONCRETE_FUNCTION_CALLBACKS``; if a TensorFlow upgrade stops
calling it, every "no retracing" check would pass with zero traces. These tests fail then.
"""

import numpy as np
import tensorflow as tf

from devtools.benchmark.timing import TraceCounter


def test_a_fresh_function_touching_a_variable_is_one_model_trace():
    weight = tf.Variable(2.0, name="trace_counter_weight")
    scaled = tf.function(lambda x: x * weight)
    with TraceCounter() as counter:
        first = scaled(tf.constant([1.0, 2.0]))
        scaled(tf.constant([3.0, 4.0]))  # same signature: no new trace
    np.testing.assert_allclose(first.numpy(), [2.0, 4.0])
    assert counter.model == 1
    assert counter.count >= 1


def test_a_new_shape_is_a_new_trace_and_helpers_are_not_model_traces():
    weight = tf.Variable(3.0, name="trace_counter_weight_2")
    scaled = tf.function(lambda x: x * weight)
    helper = tf.function(lambda x: x + 1.0)
    with TraceCounter() as counter:
        scaled(tf.constant([1.0]))
        scaled(tf.constant([1.0, 2.0]))  # another shape: traced again
        helper(tf.constant([1.0]))
    assert counter.model == 2
    assert counter.count >= 3
    # Outside the block nothing is counted.
    scaled(tf.constant([1.0, 2.0, 3.0]))
    assert counter.model == 2


def test_a_small_keras_model_called_in_a_function_is_one_model_trace():
    import keras

    inputs = keras.Input((4,), name="trace_counter_in")
    outputs = keras.layers.Dense(3, name="trace_counter_dense")(inputs)
    model = keras.Model(inputs, outputs, name="trace_counter_model")
    forward = tf.function(lambda x: model(x, training=False))
    x = tf.constant(np.ones((2, 4), np.float32))
    with TraceCounter() as counter:
        forward(x)
        forward(x)
    assert counter.model == 1
