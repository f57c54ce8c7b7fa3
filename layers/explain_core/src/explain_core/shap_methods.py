"""SHAP explainers behind the same interface as Xplique's: ``explain(inputs, targets)``.

One class per method over a small shared base, named as its registry entry, so the registry,
the explainer cache, the time budget and the session treat them like any other method. Each
call explains one output per row (the class in ``targets``, one-hot) and leaves the matching
expected values in ``base_values``: for every row, ``attributions.sum() + base_value`` is the
explained model output (additivity).

Inputs are what the session gives every method: preprocessed image batches ``(N, H, W, 3)`` in
the model's input space, or tabular rows ``(N, features)``. The explained output is the class's
logit (``output: logits``), probability, or XGBoost margin (log-odds).

Rows are grouped by target class and each group is explained through a one-output view of the
model: SHAP explainers otherwise explain every class (a 1000-class model would cost 1000x).
"""

import contextlib
import io
import re

import numpy as np

from explain_core.errors import UnsupportedModelError
from explain_core.frameworks import handler_for
from explain_core.modalities import modality_for
from explain_core.numba_cache import import_shap

#: Fixed seed for the sampling explainers, so one upload always yields the same values.
SEED = 0



def output_kind(card) -> str:
    return {"logits": "logit", "probabilities": "probability", "margin": "log-odds"}[card.output]


# --------------------------------------------------------------------------- base class


class ShapMethod:
    """Shared base: group rows by target class, explain each group, keep base values.

    Subclasses implement :meth:`explain_class` for one class; their registry entries say which
    modalities and frameworks they support (checked against the model card before they run).
    """

    def __init__(self, model, batch_size: int = 64, *, card, background: np.ndarray | None = None, **params):
        self.model = model
        self.card = card
        self.batch_size = batch_size
        self.params = params
        self.background = background
        self.base_values = np.zeros(0)
        self.modality, self.framework = modality_for(card), handler_for(card)
        #: The model's raw outputs, batched as the modality prefers (large batches for tables).
        self.outputs = self.framework.outputs_function(model, self.modality.forward_batch(batch_size))
        self._explainers: dict = {}

    def explain(self, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        inputs = np.asarray(inputs, dtype=self.framework.input_dtype)
        classes = np.argmax(np.asarray(targets), axis=1)
        attributions = np.zeros(inputs.shape, dtype=np.float64)
        base_values = np.zeros(len(inputs), dtype=np.float64)
        for cls in np.unique(classes):
            rows = np.flatnonzero(classes == cls)
            values, base = self.explain_class(inputs[rows], int(cls))
            attributions[rows] = values.reshape(inputs[rows].shape)
            base_values[rows] = base
        self.base_values = base_values
        return attributions.astype(self.modality.attribution_dtype)

    def explain_class(self, inputs: np.ndarray, cls: int) -> tuple[np.ndarray, np.ndarray | float]:
        raise NotImplementedError

    # -- helpers shared by the subclasses
    def shap_explainer(self, cls: int, inputs: np.ndarray, build):
        """``build(background)`` once per class while the background is fixed (traced graphs are reused)."""
        background = self.background_inputs(inputs)
        fixed = self.background is not None or self.modality.default_background_is_fixed
        if not fixed:  # the background is the upload itself: nothing to reuse
            return build(background)
        if cls not in self._explainers:
            self._explainers[cls] = build(background)
        return self._explainers[cls]

    def background_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """The background in the model's input space: the stored one, else the modality's default."""
        if self.background is not None:
            return self.background
        return self.modality.default_background(self.card, inputs)

    def to_pixels(self, inputs: np.ndarray) -> np.ndarray:
        return to_pixels(inputs, self.card)

    def from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        from explain_core.attribution import preprocess

        return preprocess(np.asarray(pixels, dtype=np.float32), self.card)


# --------------------------------------------------------------------------- methods


class GradientExplainer(ShapMethod):
    """Expected gradients: SHAP values as gradients averaged over background-to-input paths.

    Erion et al., Improving performance of deep learning models with axiomatic attribution
    priors and expected gradients (2021), https://arxiv.org/abs/1906.10670 ; Lundberg and Lee,
    A Unified Approach to Interpreting Model Predictions (2017), https://arxiv.org/abs/1705.07874
    """

    def explain_class(self, inputs, cls):
        shap = import_shap()

        def build(background):
            background = background.astype(np.float32)
            explainer = shap.GradientExplainer(self.outputs.class_model(cls), background, batch_size=self.batch_size,
                                               local_smoothing=self.params["local_smoothing"])
            # GradientExplainer reports no expected value: it is the mean output over the background.
            return explainer, float(np.mean(self.outputs(background)[:, cls]))

        explainer, base = self.shap_explainer(cls, inputs, build)
        with quiet():
            values = explainer.shap_values(inputs, nsamples=self.params["nb_samples"], rseed=SEED)
        return np.asarray(values, dtype=np.float64).reshape(inputs.shape), base


class DeepExplainer(ShapMethod):
    """DeepLIFT's rescale rule averaged over a background set (Deep SHAP).

    Lundberg and Lee, A Unified Approach to Interpreting Model Predictions (2017),
    https://arxiv.org/abs/1705.07874 ; Shrikumar et al., Learning Important Features Through
    Propagating Activation Differences (2017), https://arxiv.org/abs/1704.02685
    """

    def explain_class(self, inputs, cls):
        shap = import_shap()

        _patch_deep_rules()

        def build(background):
            return shap.DeepExplainer(self.outputs.class_model(cls),
                                      background[: self.params["nb_background"]].astype(np.float32))

        try:
            with quiet(), _restored_gradient_recording():
                explainer = self.shap_explainer(cls, inputs, build)
                values = explainer.shap_values(inputs, check_additivity=True)
        except Exception as exc:  # shap fails deep inside TensorFlow: name the layer instead
            raise unsupported_layer_error(self.model, exc) from exc
        values = np.asarray(values, dtype=np.float64).reshape(inputs.shape)
        return values, float(np.asarray(explainer.expected_value).reshape(-1)[0])


class PartitionExplainer(ShapMethod):
    """Owen values over a hierarchy of image regions, masked by blurring or inpainting.

    Owen, Values of Games with a Priori Unions (1977), https://doi.org/10.1007/978-3-642-45494-3_7 ;
    shap's Partition explainer with ``shap.maskers.Image``,
    https://shap.readthedocs.io/en/latest/generated/shap.PartitionExplainer.html
    """

    def explain_class(self, inputs, cls):
        shap = import_shap()

        # The masker and explainer (partition tree, mask matrix: 15-20 % of a warm call) are built
        # once per image shape and reused across classes and invocations; the class is an attribute.
        self._class = cls
        shape = inputs.shape[1:]
        if shape not in self._explainers:
            self._explainers[shape] = shap.Explainer(self._score, shap.maskers.Image(self.mask_value(), shape),
                                                     algorithm="partition")
        # A blur is linear, so it commutes with the card's per-channel affine preprocessing: blur in
        # model space directly. Inpainting (OpenCV, 8-bit) needs pixels.
        images = inputs if self.params["masker"] == "blur" else to_pixels(inputs, self.card)
        with quiet():
            result = self._explainers[shape](images, max_evals=self.params["max_evals"], batch_size=self.batch_size,
                                             silent=True)
        return np.asarray(result.values, dtype=np.float64), np.asarray(result.base_values, dtype=np.float64)

    def _score(self, masked: np.ndarray) -> np.ndarray:
        inputs = masked if self.params["masker"] == "blur" else self.from_pixels(masked)
        return self.outputs(inputs)[:, self._class]

    def mask_value(self) -> str:
        masker = self.params["masker"]
        if masker == "blur":
            size = self.params["blur_kernel"]
            return f"blur({size},{size})"
        return masker


class SuperpixelKernelExplainer(ShapMethod):
    """Kernel SHAP over SLIC super-pixels: a segment is present, or replaced by a blur of the image.

    A hidden segment is filled from a heavily blurred copy of the image (``fill="blur"``, sigma a
    tenth of the image side) or with its mean colour (``fill="mean"``, shap's VGG16 example). On
    the demo model a flat fill reads as a shape, which spreads weight over background segments;
    the blur keeps colours without creating edges (see tests/quality/test_shap_localisation.py).

    Lundberg and Lee, A Unified Approach to Interpreting Model Predictions (2017),
    https://arxiv.org/abs/1705.07874 ; Achanta et al., SLIC Superpixels Compared to
    State-of-the-Art Superpixel Methods (2012), https://doi.org/10.1109/TPAMI.2012.120
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.segment_counts: list[int] = []

    def segment(self, pixels: np.ndarray) -> np.ndarray:
        return slic_segments(pixels, self.params["nb_segments"], self.params["compactness"])

    def fill_image(self, pixels: np.ndarray) -> np.ndarray:
        return fill_image(pixels, self.params["fill"])

    def explain_class(self, inputs, cls):
        shap = import_shap()

        score = self.outputs.one_class(cls)
        values, bases = np.zeros(inputs.shape[:3]), np.zeros(len(inputs))
        for i, image in enumerate(inputs):
            pixels = np.clip(to_pixels(image, self.card), 0, 255)
            segments = self.segment(pixels)
            count = int(segments.max()) + 1
            self.segment_counts.append(count)
            fill = self.fill_image(pixels)

            def coalitions_to_score(z, pixels=pixels, segments=segments, fill=fill):
                return score(self.from_pixels(mask_segments(z, pixels, segments, fill)))

            explainer = shap.KernelExplainer(coalitions_to_score, np.zeros((1, count)))
            np.random.seed(SEED)  # KernelExplainer samples coalitions from numpy's global generator
            with quiet():
                phi = np.asarray(explainer.shap_values(np.ones((1, count)), nsamples=self.params["nb_samples"],
                                                       l1_reg=False, silent=True), dtype=np.float64).reshape(-1)
            # Spread each segment's value over its pixels, so the map still sums to the output.
            sizes = np.bincount(segments.ravel(), minlength=count)
            values[i] = (phi / np.maximum(sizes, 1))[segments]
            bases[i] = float(np.asarray(explainer.expected_value).reshape(-1)[0])
        # One value per pixel, shared by its three channels: the 2-D map is the attribution.
        return np.repeat(values[..., None] / 3.0, 3, axis=-1), bases


class KernelExplainer(ShapMethod):
    """Kernel SHAP on tabular features: weighted linear regression over feature coalitions.

    Lundberg and Lee, A Unified Approach to Interpreting Model Predictions (2017),
    https://arxiv.org/abs/1705.07874
    """

    def explain_class(self, inputs, cls):
        shap = import_shap()

        explainer = self.shap_explainer(
            cls, inputs, lambda background: shap.KernelExplainer(self.outputs.one_class(cls),
                                                                 background.astype(np.float64)))
        np.random.seed(SEED)
        with quiet():
            values = explainer.shap_values(inputs.astype(np.float64), nsamples=self.params["nb_samples"],
                                           l1_reg=False, silent=True)
        return np.asarray(values, dtype=np.float64), float(np.asarray(explainer.expected_value).reshape(-1)[0])


class TreeExplainer(ShapMethod):
    """Exact SHAP values of tree ensembles in polynomial time (XGBoost models).

    Lundberg et al., From local explanations to global understanding with explainable AI for
    trees (2020), https://doi.org/10.1038/s42256-019-0138-9
    """

    def explain_class(self, inputs, cls):
        shap = import_shap()

        interventional = self.params["feature_perturbation"] == "interventional"
        # Class-independent: one explainer serves every class (key 0).
        explainer = self.shap_explainer(0, inputs, lambda background: shap.TreeExplainer(
            self.model, data=background if interventional else None,
            feature_perturbation=self.params["feature_perturbation"],
        ))
        with quiet():
            values = np.asarray(explainer.shap_values(inputs, check_additivity=True), dtype=np.float64)
        expected = np.asarray(explainer.expected_value, dtype=np.float64).reshape(-1)
        if values.ndim == 2:  # binary: values explain class 1's log-odds; class 0's are the negation
            sign = 1.0 if cls == 1 else -1.0
            return sign * values, sign * float(expected[0])
        return values[..., cls], float(expected[cls])


# --------------------------------------------------------------------------- image helpers


def to_pixels(inputs: np.ndarray, card) -> np.ndarray:
    """Model-space images back to 0-255 pixels, unclipped (SLIC and OpenCV's inpainting work on pixels)."""
    prep = card.preprocessing
    return (inputs * np.asarray(prep.std, np.float32) + np.asarray(prep.mean, np.float32)) / np.float32(prep.scale)


def slic_segments(pixels: np.ndarray, nb_segments: int, compactness: float) -> np.ndarray:
    """SLIC super-pixel labels 0..n-1 of one image (0-255 pixels, (H, W, 3))."""
    from skimage.segmentation import slic

    return slic(pixels / 255.0, n_segments=nb_segments, compactness=compactness, start_label=0, channel_axis=-1)


def fill_image(pixels: np.ndarray, fill: str) -> np.ndarray:
    """What hidden segments show: a blurred copy of the image (``"blur"``), or its mean colour (``"mean"``)."""
    if fill == "mean":
        return np.broadcast_to(pixels.reshape(-1, 3).mean(axis=0), pixels.shape)
    import cv2

    return cv2.GaussianBlur(pixels.astype(np.float32), (0, 0), max(pixels.shape[:2]) / 10)


def mask_segments(z: np.ndarray, pixels: np.ndarray, segments: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """One image per coalition row of ``z``: segments whose entry is 0 show ``fill``."""
    masked = np.repeat(pixels[None], len(z), axis=0)
    for row, kept in enumerate(z):
        hidden = np.isin(segments, np.flatnonzero(kept == 0))
        masked[row][hidden] = fill[hidden]
    return masked


# --------------------------------------------------------------------------- Deep SHAP support


def _reduce_max(explainer, op, *grads):
    """DeepLIFT's max rule for reductions (GlobalMaxPooling), as shap applies it to MaxPool.

    shap maps TensorFlow's ``Max`` to an element-wise rule, which fails on a reduction
    (shape mismatch); this routes the output difference to the arg-max of input and reference.
    """
    import tensorflow as tf

    xin, rin = tf.split(op.inputs[0], 2)
    xout, rout = tf.split(op.outputs[0], 2)
    delta = xin - rin
    tile = [2] + [1] * (len(delta.shape) - 1)
    cross_max = tf.maximum(xout, rout)
    diffs = tf.concat([cross_max - rout, xout - cross_max], 0)
    if op.type.startswith("shap_"):
        op.type = op.type[5:]
    grad_in = explainer.orig_grads[op.type](op, grads[0] * diffs)
    x_part, r_part = tf.split(grad_in[0], 2)
    multiplier = tf.where(tf.abs(delta) < 1e-7, tf.zeros_like(delta), (x_part + r_part) / delta)
    return [tf.tile(multiplier, tile), None]


@contextlib.contextmanager
def _restored_gradient_recording():
    """Undo shap's process-wide patch of TensorFlow's gradient recording, even when it fails.

    DeepExplainer swaps ``tensorflow.python.eager.execute.record_gradient`` for its own and puts
    it back only on success: after one failure (a layer it cannot handle) every later gradient in
    the warm Lambda process would look for ``shap_<op>`` gradients and fail.
    """
    from tensorflow.python.eager import execute

    original = execute.record_gradient
    try:
        yield
    finally:
        execute.record_gradient = original


def _patch_deep_rules() -> None:
    """DeepLIFT rules shap lacks or gets wrong under Keras 3 / TensorFlow 2.

    - ``Max`` (GlobalMaxPooling2D): the max rule above instead of an element-wise one;
    - ``Relu6`` (MobileNet's ReLU(max_value=6)) and ``LeakyRelu``: element-wise nonlinearities,
      so DeepLIFT's rescale rule applies as it does to ``Relu``;
    - ``DepthwiseConv2dNative`` (MobileNet, EfficientNet): linear in its input, like ``Conv2D``.
      (Keras 3's BatchNormalization is plain Mul/Add/Rsqrt arithmetic, which shap handles.)
    """
    from shap.explainers._deep import deep_tf

    deep_tf.op_handlers["Max"] = _reduce_max
    for op_type in ("Relu6", "LeakyRelu"):
        deep_tf.op_handlers.setdefault(op_type, deep_tf.nonlinearity_1d(0))
    deep_tf.op_handlers.setdefault("DepthwiseConv2dNative", deep_tf.linearity_1d(0))


_OP_TYPE = re.compile(r"(?:no entry for: (?:shap_)?|KeyError: '|^')(\w+)'?")
_NODE = re.compile(r"node ([\w./-]+)")


def unsupported_layer_error(model, exc: Exception) -> UnsupportedModelError:
    """A typed error naming the layer (and TensorFlow operation) DeepExplainer cannot handle."""
    message = str(exc)
    layers = [layer.name for layer in model.layers]
    op_type, culprit = None, None
    if isinstance(exc, AssertionError) or "do not sum up" in message:
        reason = "its attributions do not add up to the model output"
    else:
        found = _OP_TYPE.search(message)
        op_type = found.group(1) if found else None
        node = _NODE.search(message)
        culprit = _layer_in_name(node.group(1), layers) if node else None
        if culprit is None and op_type:
            culprit = _layer_with_op(model, op_type)
        reason = f"it has no rule for TensorFlow operation {op_type!r}" if op_type else "it failed"
    where = f" in layer {culprit!r} ({type(model.get_layer(culprit)).__name__})" if culprit else ""
    return UnsupportedModelError(
        f"DeepExplainer cannot explain this model: {reason}{where}. Use GradientExplainer or a "
        "sampling explainer (PartitionExplainer, SuperpixelKernelExplainer, KernelExplainer) for this model",
        method="DeepExplainer", layer=culprit, operation=op_type, cause=message[:500],
    )


def _layer_in_name(name: str, layers: list[str]) -> str | None:
    for part in name.split("/"):
        for candidate in (part, re.sub(r"_\d+$", "", part)):
            if candidate in layers:
                return candidate
    return None


def _layer_with_op(model, op_type: str) -> str | None:
    """The first layer whose traced forward pass contains an operation of ``op_type``."""
    import tensorflow as tf

    layers = [layer.name for layer in model.layers]
    spec = tf.TensorSpec([1, *model.inputs[0].shape[1:]], tf.float32)
    graph = tf.function(lambda x: model(x, training=False), autograph=False).get_concrete_function(spec).graph
    for op in graph.get_operations():
        if op.type == op_type:
            found = _layer_in_name(op.name, layers)
            if found:
                return found
    return None


@contextlib.contextmanager
def quiet():
    """Keep the function's logs clean: shap prints progress bars, Keras warns about input names on
    every call and TensorFlow about retracing (each class's explainer traces its own graph)."""
    import logging
    import warnings

    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        tf_logger.setLevel(level)
