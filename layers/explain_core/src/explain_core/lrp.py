"""Layer-wise relevance propagation (LRP) for Keras 3 image classifiers.

LRP explains one class score by handing it back, layer by layer, from the output to the input pixels.
Each neuron ``j`` shares its relevance ``R_j`` among the neurons ``i`` below it in proportion to their
contributions ``z_ij`` to it:

    R_i = sum_j  z_ij / sum_i' z_i'j  *  R_j

so that, layer after layer, the relevance is conserved (up to what biases and stabilisers absorb) and
the input's relevance adds up to the explained score. A *rule* is a choice of the contributions
``z_ij``; which rule suits a layer depends on where it sits (composite LRP, Montavon et al. 2019
sec. 10.3; Kohlbrenner et al. 2020):

- Dense layers, near the output: LRP-epsilon, ``z_ij = a_i w_ij`` and a denominator pushed away from
  zero by ``epsilon``: the few, entangled top neurons give noisy shares, and epsilon absorbs the weak or
  contradictory ones.
- Convolutions, lower down: ``rule``, LRP-gamma by default (``w + gamma w+``): favouring positive
  contributions keeps the maps of deep stacks of filters from turning into noise. Inputs and outputs may
  be negative here (linear bottlenecks, residual sums), so contributions are taken by sign of ``x_i w_ij``
  and, for a negative output, its negative contributions are the boosted ones (Zennit's generalised LRP-gamma): the
  denominator then keeps the output's sign and never crosses zero. LRP-epsilon and LRP-alpha-beta
  (``alpha`` on positive contributions, ``beta = alpha - 1`` on negative ones) are the alternatives;
  alpha-beta conserves relevance only at neurons having contributions of both signs.
- The first linear layer, reading the pixels: ``first_layer``, z^B by default. Its input is not a ReLU
  output (it can be negative, and is bounded by the preprocessing), the case the z^B rule is derived for;
  z+ (the positive contributions ``(x_i w_ij)+``, i.e. ``x+ w+`` and ``x- w-``, bias ignored) and w^2
  (input independent) are the alternatives. Layers that only move or monotonically map the input
  (padding, pooling, ReLU, ...) may come first: the bounds are carried through them.
- ReLU-family activations (ReLU, ReLU6, leaky ReLU, threshold ReLU): the relevance passes unchanged; the
  activation only gates, and the gate is already in the linear layer's contributions.
- BatchNormalization right after a linear layer is folded into it, and the pair's rule applies to the
  fused weights (as a network trained without BatchNormalization would be explained); anywhere else it is
  an elementwise linear layer with the epsilon rule.
- Max pooling gives the relevance to the pooled maxima; average pooling uses the epsilon rule; Add
  splits it in proportion to each input's contribution; Flatten, Reshape, ZeroPadding2D and Concatenate
  only move it; Dropout and noise layers are identities at inference.

The explained score is the output layer's pre-activation: with a softmax or sigmoid on the output (as the
output layer's activation, or as a final Activation/Softmax layer) relevance starts at the target's logit,
since a probability depends on every class's logit and is not a sum of contributions. The starting relevance
is ``logits * targets``: the target's logit for one-hot targets.

Each layer uses the "gradient trick" (Montavon et al. 2019 sec. 10.2.2): with ``z = rho(layer)(a)`` (the
layer with the rule's weights, stabilised), ``s = R / z`` and ``c`` the gradient of ``sum(z * s)`` with ``s``
held constant, the shares are ``R_in = a * c``. One forward pass gives every activation; relevance is then
propagated in reverse topological order, summed where a tensor feeds several layers, in one
``tf.function`` traced once per explainer.

References: Bach et al., On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise
Relevance Propagation (2015), https://doi.org/10.1371/journal.pone.0130140; Montavon et al., Layer-Wise
Relevance Propagation: An Overview (2019), https://doi.org/10.1007/978-3-030-28954-6_10; Kohlbrenner et al.,
Towards Best Practice in Explaining Neural Network Decisions with LRP (2020), https://arxiv.org/abs/1910.09840.
"""

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from explain_core.errors import InvalidParameterError, UnsupportedModelError

RULES = ("epsilon", "gamma", "alpha_beta")
FIRST_LAYER_RULES = ("zbox", "zplus", "wsquare", "same")

#: Added to every denominator, signed like it (sign(0) = 1), so that no share divides by zero.
TINY = 1e-9

_LINEAR = (layers.Dense, layers.Conv2D, layers.DepthwiseConv2D)
_CONVOLUTIONS = (layers.Conv2D, layers.DepthwiseConv2D)
_IDENTITIES = (layers.Dropout, layers.SpatialDropout2D, layers.GaussianNoise, layers.GaussianDropout,
               layers.AlphaDropout)
_RELU_LAYERS = (layers.ReLU, layers.LeakyReLU)
_ROUTING = (layers.Flatten, layers.Reshape, layers.ZeroPadding2D, layers.Concatenate)
_MAX_POOLING = (layers.MaxPooling2D, layers.GlobalMaxPooling2D)
_AVERAGE_POOLING = (layers.AveragePooling2D, layers.GlobalAveragePooling2D)
#: Layers that map an input bounded by [low, high] elementwise to one bounded by their images of low and high
#: (they only move values, or are monotone): z^B bounds are carried through them to the first linear layer.
_BOUND_PRESERVING = _IDENTITIES + _RELU_LAYERS + _MAX_POOLING + _AVERAGE_POOLING + (
    layers.Flatten, layers.Reshape, layers.ZeroPadding2D, layers.Activation)

#: Activations through which relevance passes unchanged.
_GATES = {keras.activations.relu: "relu", keras.activations.relu6: "relu6",
          keras.activations.leaky_relu: "leaky_relu", keras.activations.linear: "linear"}
#: Activations allowed on the output only: relevance starts at their input (the logits).
_SQUASHES = {keras.activations.softmax: "softmax", keras.activations.sigmoid: "sigmoid"}

SUPPORTED = ("Dense, Conv2D and DepthwiseConv2D (activation linear, relu, relu6 or leaky_relu; softmax or sigmoid "
             "on the output layer), BatchNormalization, ReLU, LeakyReLU, Activation (relu, relu6, leaky_relu, "
             "linear; softmax or sigmoid last), Softmax (last), MaxPooling2D, AveragePooling2D, "
             "GlobalAveragePooling2D, GlobalMaxPooling2D, Flatten, Reshape, ZeroPadding2D, Add, Concatenate, "
             "Dropout, SpatialDropout2D, GaussianNoise, GaussianDropout and AlphaDropout, channels last")


@dataclass
class _Step:
    """One layer call of the model, as relevance crosses it (from ``output`` back to ``inputs``)."""

    layer: object
    inputs: list[int]  # indices of the tensors it reads
    output: int  # index of the tensor it writes
    #: A BatchNormalization folded into this linear layer: ``output`` is the normalisation's.
    batch_norm: object = None
    #: A linear layer reading the input (through bound-preserving layers only): ``first_layer`` applies.
    first: bool = False


class LRP:
    """Layer-wise relevance propagation (Bach et al., On Pixel-Wise Explanations for Non-Linear Classifier
    Decisions by Layer-Wise Relevance Propagation (2015), https://doi.org/10.1371/journal.pone.0130140), with
    the composite rules of Montavon et al., Layer-Wise Relevance Propagation: An Overview (2019),
    https://doi.org/10.1007/978-3-030-28954-6_10: epsilon on Dense layers, ``rule`` on convolutions,
    ``first_layer`` on the layer reading the input (see the module's docstring).

    Args:
        model: a functional or sequential Keras model with one image input and one (N, classes) output.
        batch_size: rows propagated at a time.
        card: the model card; its ``preprocessing`` gives the z^B bounds, the images of pixels 0 and 255
            per channel. Without it the bounds are each input's own minimum and maximum per channel (not the
            batch's: an input's map must not depend on the other inputs explained with it).
        rule: "epsilon", "gamma" or "alpha_beta", for Conv2D and DepthwiseConv2D layers.
        epsilon: LRP-epsilon's stabiliser (Dense layers, average pooling, unfolded BatchNormalization and
            convolutions under ``rule="epsilon"``); 0.0 is LRP-0.
        gamma: LRP-gamma's weight on positive contributions.
        alpha: LRP-alpha-beta's weight on positive contributions (>= 1); beta = alpha - 1 on negative ones.
        first_layer: "zbox", "zplus", "wsquare" or "same" (the layer's own rule).

    Raises :class:`~explain_core.errors.UnsupportedModelError` for a model with a layer it cannot propagate
    relevance through, and :class:`~explain_core.errors.InvalidParameterError` for parameters out of range.
    """

    def __init__(self, model, batch_size: int = 32, card=None, rule: str = "gamma", epsilon: float = 0.25,
                 gamma: float = 0.25, alpha: float = 2.0, first_layer: str = "zbox"):
        _check_parameters(batch_size, rule, epsilon, gamma, alpha, first_layer)
        self.model = model
        self.batch_size = int(batch_size)
        self.rule, self.first_layer = rule, first_layer
        self.epsilon, self.gamma = float(epsilon), float(gamma)
        self.alpha, self.beta = float(alpha), float(alpha) - 1.0

        input_tensor, output_tensor = _single_input_and_output(model)
        tensors, steps = _trace_graph(input_tensor, output_tensor)
        self._input_index = 0  # _trace_graph numbers the input first
        self._score_index, self._output_step = _score_source(steps)
        self._steps = _fold_batch_norms(steps, self._score_index)
        self._input_space = _mark_first_layers(self._steps, self._input_index)
        needed = sorted({index for step in self._steps for index in step.inputs} | {self._score_index})
        self._forward_indices = [index for index in needed if index != self._input_index]
        self._forward = keras.Model(input_tensor, [tensors[index] for index in self._forward_indices]) \
            if self._forward_indices else None

        self._card_bounds = _card_bounds(card, int(input_tensor.shape[-1]))
        self._classes = int(output_tensor.shape[-1])
        signature = [tf.TensorSpec((None, *input_tensor.shape[1:]), tf.float32),
                     tf.TensorSpec((None, self._classes), tf.float32)]
        self._relevance = tf.function(self._relevance_of_chunk, input_signature=signature, jit_compile=False)

    def explain(self, inputs, targets) -> np.ndarray:
        """inputs: float32 (N, H, W, C) preprocessed model inputs; targets: one-hot (N, classes).
        Returns float32 relevance (N, H, W, C) at the input."""
        inputs = np.asarray(inputs, dtype=np.float32)
        targets = np.asarray(targets, dtype=np.float32)
        if inputs.ndim != 4:
            raise ValueError(f"LRP explains images (N, H, W, C); got inputs of shape {inputs.shape}")
        if targets.ndim != 2 or len(targets) != len(inputs) or targets.shape[1] != self._classes:
            raise ValueError(f"LRP needs targets of shape ({len(inputs)}, {self._classes}) (one-hot, one row per "
                             f"input); got {targets.shape}")
        chunks = [self._relevance(tf.constant(inputs[start:start + self.batch_size]),
                                  tf.constant(targets[start:start + self.batch_size])).numpy()
                  for start in range(0, len(inputs), self.batch_size)]
        if not chunks:
            return np.zeros(inputs.shape, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ the traced backward pass
    def _relevance_of_chunk(self, inputs, targets):
        activations = self._activations(inputs)
        bounds = self._bounds(inputs) if self.first_layer == "zbox" else {}
        relevance = {self._score_index: self._logits(activations) * targets}
        for step in reversed(self._steps):
            # Every reader of the step's output came later, so its relevance is complete.
            upper = relevance.pop(step.output)
            shares = self._propagate(step, [activations[index] for index in step.inputs], upper, bounds)
            for index, share in zip(step.inputs, shares, strict=True):
                relevance[index] = relevance[index] + share if index in relevance else share
        return relevance.get(self._input_index, tf.zeros_like(inputs))

    def _activations(self, inputs) -> dict:
        """Every tensor the backward pass reads, by index, from one forward pass."""
        activations = {self._input_index: inputs}
        if self._forward is not None:
            outputs = self._forward(inputs, training=False)
            outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
            activations.update((index, tf.cast(output, tf.float32))
                               for index, output in zip(self._forward_indices, outputs, strict=True))
        return activations

    def _logits(self, activations):
        """The explained scores for every class: the output's pre-activation."""
        step = self._output_step
        if step is None:  # a final softmax layer, or an output without activation
            return activations[self._score_index]
        kernel, bias = _weights(step)
        return _affine(step.layer, activations[step.inputs[0]], kernel, bias)

    def _bounds(self, inputs) -> dict:
        """z^B's (low, high) for every tensor of the input space, as full tensors, by index."""
        if self._card_bounds is None:
            low = tf.reduce_min(inputs, axis=(1, 2), keepdims=True) + tf.zeros_like(inputs)
            high = tf.reduce_max(inputs, axis=(1, 2), keepdims=True) + tf.zeros_like(inputs)
        else:  # widened to any input outside the card's range, so that every z^B contribution stays >= 0
            low = tf.minimum(inputs, self._card_bounds[0])
            high = tf.maximum(inputs, self._card_bounds[1])
        bounds = {self._input_index: (low, high)}
        for step in self._steps:
            if step.output in self._input_space:
                low, high = bounds[step.inputs[0]]
                bounds[step.output] = (_call(step.layer, [low]), _call(step.layer, [high]))
        return bounds

    # ------------------------------------------------------------------ rules
    def _propagate(self, step, activations, relevance, bounds) -> list:
        """The shares of ``relevance`` (at the step's output) of each of the step's inputs."""
        layer = step.layer
        if isinstance(layer, _LINEAR):
            return [self._linear_shares(step, activations[0], relevance, bounds)]
        if isinstance(layer, _IDENTITIES + _RELU_LAYERS + (layers.Activation,)):
            return [relevance]
        if isinstance(layer, _ROUTING):
            return _route(layer, activations, relevance)
        if isinstance(layer, _MAX_POOLING):  # the gradient goes to the maxima only: winner takes all
            return _redistribute(lambda a: _call(layer, [a]), activations, relevance)
        if isinstance(layer, _AVERAGE_POOLING):
            return _redistribute(lambda a: _call(layer, [a]), activations, relevance, self.epsilon)
        if isinstance(layer, layers.Add):  # a redistribution with no weights to be noisy: no epsilon
            return _redistribute(lambda *a: tf.add_n(a), activations, relevance)
        if isinstance(layer, layers.BatchNormalization):
            scale, shift = _batch_norm_affine(layer)
            return _redistribute(lambda a: a * scale + shift, activations, relevance, self.epsilon)
        raise AssertionError(f"no rule for {type(layer).__name__}")  # _check_layer refused it already

    def _linear_shares(self, step, a, relevance, bounds):
        """A Dense, Conv2D or DepthwiseConv2D layer (with any folded BatchNormalization) under its rule."""
        kernel, bias = _weights(step)
        positive_kernel, negative_kernel = tf.maximum(kernel, 0.0), tf.minimum(kernel, 0.0)

        def apply(x, weights, offset=None):
            return _affine(step.layer, x, weights, offset)

        def positive_part(x):  # sum_i (x_i w_ij)+: a positive input with a positive weight, or both negative
            return apply(tf.maximum(x, 0.0), positive_kernel) + apply(tf.minimum(x, 0.0), negative_kernel)

        def negative_part(x):  # sum_i (x_i w_ij)-
            return apply(tf.maximum(x, 0.0), negative_kernel) + apply(tf.minimum(x, 0.0), positive_kernel)

        rule = self._rule_of(step)
        if rule == "epsilon":
            return _redistribute(lambda x: apply(x, kernel, bias), [a], relevance, self.epsilon)[0]
        positive_bias = 0.0 if bias is None else tf.maximum(bias, 0.0)
        negative_bias = 0.0 if bias is None else tf.minimum(bias, 0.0)
        if rule == "gamma":
            def boosted(x):
                # z_ij + gamma (z_ij)+ (w + gamma w+ for x >= 0) where z_j >= 0, z_ij + gamma (z_ij)- where z_j < 0:
                # the boosted contributions share z_j's sign, so the denominator never crosses zero (linear
                # layers after BatchNormalization or Add read negative inputs and have negative outputs).
                z = apply(x, kernel, bias)
                same_sign = tf.where(z >= 0.0, positive_part(x) + positive_bias, negative_part(x) + negative_bias)
                return z + self.gamma * same_sign
            return _redistribute(boosted, [a], relevance)[0]
        if rule == "alpha_beta":
            shares = self.alpha * _redistribute(lambda x: positive_part(x) + positive_bias, [a], relevance)[0]
            if self.beta:
                shares -= self.beta * _redistribute(lambda x: negative_part(x) + negative_bias, [a], relevance)[0]
            return shares
        if rule == "zplus":  # the positive contributions only; the bias takes no share
            return _redistribute(positive_part, [a], relevance)[0]
        if rule == "wsquare":  # shares in proportion to w^2, whatever the input
            return _redistribute(lambda ones: apply(ones, tf.square(kernel)), [tf.ones_like(a)], relevance)[0]
        # zbox: z_ij = x_i w_ij - l_i w+_ij - h_i w-_ij >= 0 for l <= x <= h; the shares sum to R exactly
        low, high = bounds[step.inputs[0]]
        return tf.add_n(_redistribute(
            lambda x, lo, hi: apply(x, kernel) - apply(lo, positive_kernel) - apply(hi, negative_kernel),
            [a, low, high], relevance))

    def _rule_of(self, step) -> str:
        if step.first and self.first_layer != "same":
            return self.first_layer
        return self.rule if isinstance(step.layer, _CONVOLUTIONS) else "epsilon"


# ---------------------------------------------------------------------- the gradient trick
def _stabilise(z, epsilon: float = 0.0):
    """``z + (epsilon + TINY) * sign(z)``, with sign(0) = 1."""
    return z + (epsilon + TINY) * tf.where(z >= 0.0, 1.0, -1.0)


def _redistribute(function, sources: list, relevance, epsilon: float = 0.0) -> list:
    """Each source's share of ``relevance`` at ``z = function(*sources)``: ``x * grad(sum(z * R / z))``
    with ``R / z`` held constant, i.e. ``sum_j x_i dz_j/dx_i / z_j * R_j`` per source."""
    with tf.GradientTape() as tape:
        tape.watch(sources)
        z = function(*sources)
    gradients = tape.gradient(z, sources, output_gradients=relevance / _stabilise(z, epsilon),
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return [source * gradient for source, gradient in zip(sources, gradients, strict=True)]


def _route(layer, activations: list, relevance) -> list:
    """Relevance moved back through a layer that only moves values (the transpose of its Jacobian)."""
    with tf.GradientTape() as tape:
        tape.watch(activations)
        output = _call(layer, activations)
    return tape.gradient(output, activations, output_gradients=relevance,
                         unconnected_gradients=tf.UnconnectedGradients.ZERO)


def _call(layer, activations: list):
    """The layer at inference on float32 tensors (a list for Concatenate)."""
    output = layer(activations if isinstance(layer, layers.Concatenate) else activations[0], training=False)
    return tf.cast(output, tf.float32)


# ---------------------------------------------------------------------- linear layers and their weights
def _affine(layer, x, kernel, bias=None):
    """The linear part of a Dense, Conv2D or DepthwiseConv2D layer with the given weights."""
    if isinstance(layer, layers.Dense):
        output = tf.tensordot(x, kernel, axes=1)
    elif isinstance(layer, layers.DepthwiseConv2D):
        output = keras.ops.depthwise_conv(x, kernel, strides=layer.strides, padding=layer.padding,
                                          data_format=layer.data_format, dilation_rate=layer.dilation_rate)
    else:
        output = layer.convolution_op(x, kernel)  # the layer's own strides, padding, dilation and groups
    return output if bias is None else output + bias


def _weights(step) -> tuple:
    """(kernel, bias or None) of a linear step, with its BatchNormalization folded in; read from the
    variables on every trace so that the explainer follows weights changed in place."""
    layer = step.layer
    kernel = tf.cast(tf.convert_to_tensor(layer.kernel), tf.float32)
    bias = tf.cast(tf.convert_to_tensor(layer.bias), tf.float32) if layer.use_bias else None
    if step.batch_norm is None:
        return kernel, bias
    scale, shift = _batch_norm_affine(step.batch_norm)
    # Output channels are the kernel's last axis; a depthwise kernel's are its last two: (in, multiplier).
    kernel = kernel * tf.reshape(scale, kernel.shape[-2:] if isinstance(layer, layers.DepthwiseConv2D) else [-1])
    return kernel, shift if bias is None else bias * scale + shift


def _batch_norm_affine(layer) -> tuple:
    """BatchNormalization at inference as ``x * scale + shift`` per channel."""
    def value(variable, default):
        return default if variable is None else tf.cast(tf.convert_to_tensor(variable), tf.float32)

    mean = value(layer.moving_mean, 0.0)
    scale = value(layer.gamma, 1.0) * tf.math.rsqrt(value(layer.moving_variance, 1.0) + layer.epsilon)
    return scale, value(layer.beta, 0.0) - mean * scale


# ---------------------------------------------------------------------- reading the model's graph
def _check_parameters(batch_size, rule, epsilon, gamma, alpha, first_layer) -> None:
    if rule not in RULES:
        raise InvalidParameterError(f"LRP rule must be one of {', '.join(RULES)}; got {rule!r}", parameter="rule")
    if first_layer not in FIRST_LAYER_RULES:
        raise InvalidParameterError(f"LRP first_layer must be one of {', '.join(FIRST_LAYER_RULES)}; "
                                    f"got {first_layer!r}", parameter="first_layer")
    for name, value, minimum in (("batch_size", batch_size, 1), ("epsilon", epsilon, 0.0), ("gamma", gamma, 0.0),
                                 ("alpha", alpha, 1.0)):
        if not np.isfinite(value) or value < minimum:
            raise InvalidParameterError(f"LRP {name} must be at least {minimum}; got {value!r}", parameter=name)


def _unsupported(layer, why: str = "") -> UnsupportedModelError:
    return UnsupportedModelError(
        f"LRP cannot propagate relevance through layer {layer.name!r} ({type(layer).__name__}){why}; "
        f"it supports {SUPPORTED}", method="LRP", layer=layer.name)


def _single_input_and_output(model) -> tuple:
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not inputs or not outputs:
        raise UnsupportedModelError("LRP needs a functional or sequential Keras model (its graph of layers)",
                                    method="LRP")
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedModelError(f"LRP explains models with one input and one output; this one has "
                                    f"{len(inputs)} and {len(outputs)}", method="LRP")
    if len(inputs[0].shape) != 4 or len(outputs[0].shape) != 2:
        raise UnsupportedModelError(f"LRP explains image classifiers, (N, H, W, C) -> (N, classes); this model is "
                                    f"{tuple(inputs[0].shape)} -> {tuple(outputs[0].shape)}", method="LRP")
    return inputs[0], outputs[0]


def _producer(tensor) -> tuple:
    """(layer, node) of the call that made a symbolic tensor."""
    history = tensor._keras_history
    return history.operation, history.operation._inbound_nodes[history.node_index]


def _trace_graph(input_tensor, output_tensor) -> tuple:
    """The symbolic tensors the output depends on (the input first) and the layer calls making them, each
    after the calls making its inputs; every layer checked."""
    calls, expanded, stack = [], set(), [(output_tensor, False)]
    while stack:  # depth-first, each call listed once its inputs' calls are
        tensor, inputs_done = stack.pop()
        layer, node = _producer(tensor)
        if inputs_done:
            calls.append((layer, node))
        elif id(node) not in expanded:
            expanded.add(id(node))
            stack.append((tensor, True))
            stack.extend((each, False) for each in node.input_tensors)
    tensors, index_of = [input_tensor], {id(input_tensor): 0}

    def index(tensor) -> int:
        if id(tensor) not in index_of:
            index_of[id(tensor)] = len(tensors)
            tensors.append(tensor)
        return index_of[id(tensor)]

    steps, output_layer = [], calls[-1][0]
    for layer, node in calls:
        if isinstance(layer, layers.InputLayer):
            if node.output_tensors[0] is not input_tensor:
                raise UnsupportedModelError("LRP explains models with one input", method="LRP")
            continue
        _check_layer(layer, node, is_output=layer is output_layer)
        if len(node.output_tensors) != 1:
            raise _unsupported(layer, " with several outputs")
        steps.append(_Step(layer, [index(each) for each in node.input_tensors], index(node.output_tensors[0])))
    return tensors, steps


def _activation_name(layer) -> str | None:
    activation = getattr(layer, "activation", None)
    return _GATES.get(activation) or _SQUASHES.get(activation)


def _check_layer(layer, node, is_output: bool) -> None:
    """UnsupportedModelError unless relevance can cross ``layer`` (``is_output``: the model's last layer)."""
    if isinstance(layer, keras.Model):
        raise _unsupported(layer, ", a nested model")
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise _unsupported(layer, " with data_format channels_first")
    if isinstance(layer, layers.BatchNormalization) and layer.axis not in (-1, len(node.input_tensors[0].shape) - 1):
        raise _unsupported(layer, " normalising another axis than the last")
    supported_types = _LINEAR + _IDENTITIES + _RELU_LAYERS + _ROUTING + _MAX_POOLING + _AVERAGE_POOLING + (
        layers.Add, layers.BatchNormalization)
    if type(layer) in supported_types:  # exact types: a subclass may compute something else
        if isinstance(layer, _LINEAR):
            _check_activation(layer, is_output)
        return
    if type(layer) is layers.Activation:
        return _check_activation(layer, is_output)
    if type(layer) is layers.Softmax and is_output:
        return
    raise _unsupported(layer)


def _check_activation(layer, is_output: bool) -> None:
    allowed = {**_GATES, **_SQUASHES} if is_output else _GATES
    if getattr(layer, "activation", None) not in allowed:
        name = getattr(layer.activation, "__name__", repr(layer.activation))
        raise _unsupported(layer, f" with activation {name!r}")


def _score_source(steps: list) -> tuple:
    """(index of the tensor relevance starts at, the output's linear step when its pre-activation must be
    computed) — and the steps lose a final softmax or sigmoid layer."""
    last = steps[-1]
    if isinstance(last.layer, layers.Softmax) or (
            type(last.layer) is layers.Activation and last.layer.activation in _SQUASHES):
        steps.pop()
        return last.inputs[0], None
    if isinstance(last.layer, _LINEAR) and last.layer.activation is not keras.activations.linear:
        return last.output, last
    return last.output, None


def _fold_batch_norms(steps: list, score_index: int) -> list:
    """The steps with each BatchNormalization that directly follows a linear layer with no activation, and is
    its only reader, folded into that layer."""
    readers = {}
    for step in steps:
        for index in step.inputs:
            readers[index] = readers.get(index, 0) + 1
    making = {step.output: step for step in steps}
    folded = []
    for step in steps:
        producer = making.get(step.inputs[0])
        if (isinstance(step.layer, layers.BatchNormalization) and producer is not None
                and isinstance(producer.layer, _LINEAR) and producer.batch_norm is None
                and producer.layer.activation is keras.activations.linear
                and readers[step.inputs[0]] == 1 and step.inputs[0] != score_index):
            producer.batch_norm, producer.output = step.layer, step.output
            making[step.output] = producer
            continue
        folded.append(step)
    return folded


def _mark_first_layers(steps: list, input_index: int) -> set:
    """Flag the linear steps reading the input through bound-preserving layers only; returns the indices of
    the tensors computed from the input by bound-preserving layers (z^B's bounds are carried to them)."""
    input_space = {input_index}
    for step in steps:
        if step.inputs[0] not in input_space or len(step.inputs) != 1:
            continue
        if isinstance(step.layer, _LINEAR):
            step.first = True
        elif isinstance(step.layer, _BOUND_PRESERVING):
            input_space.add(step.output)
    input_space.discard(input_index)
    return input_space


def _card_bounds(card, channels: int):
    """z^B's per-channel (low, high): the preprocessed values of pixels 0 and 255; None without a card."""
    preprocessing = getattr(card, "preprocessing", None)
    if preprocessing is None:
        return None
    mean, std = np.asarray(preprocessing.mean, np.float32), np.asarray(preprocessing.std, np.float32)
    black, white = (0.0 - mean) / std, (255.0 * preprocessing.scale - mean) / std
    low, high = np.minimum(black, white), np.maximum(black, white)
    if len(low) != channels:  # a card written for another channel count: bounds valid for every channel
        low, high = np.full(channels, low.min()), np.full(channels, high.max())
    return tf.constant(low, tf.float32), tf.constant(high, tf.float32)
