"""Running registry methods on a batch of images with Xplique."""

import logging
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from explain_core.frameworks import handler_for
from explain_core.model_card import ModelCard
from explain_core.registry import SHAP, MethodSpec

logger = logging.getLogger(__name__)


def preprocess(pixels: np.ndarray, card: ModelCard) -> np.ndarray:
    """uint8 RGB (N, H, W, 3) -> float32 model input, as the card prescribes."""
    prep = card.preprocessing
    x = pixels.astype(np.float32) * np.float32(prep.scale)
    return (x - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)


def to_model_input(images, card: ModelCard) -> np.ndarray:
    """uint8 RGB images of any sizes -> the model's input batch: resized, stacked, preprocessed."""
    from explain_core.images import resize

    return preprocess(np.stack([resize(image, card.input_height, card.input_width) for image in images]), card)


def raw_outputs(model, inputs: np.ndarray, card: ModelCard, batch_size: int) -> np.ndarray:
    """The model's outputs (N, classes) as the card describes them: logits, probabilities or margins
    (see the framework handler's ``predict``)."""
    return handler_for(card).predict(model, inputs, card, batch_size)


def probabilities(outputs: np.ndarray, card: ModelCard) -> np.ndarray:
    """Class probabilities from :func:`raw_outputs`."""
    if card.output == "probabilities":
        return outputs
    if card.output == "margin" and outputs.shape[1] == 2:  # binary XGBoost: a sigmoid of the log-odds
        positive = 1.0 / (1.0 + np.exp(-outputs[:, 1]))
        return np.stack([1.0 - positive, positive], axis=1)
    outputs = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return outputs / outputs.sum(axis=1, keepdims=True)


def class_scores(model, inputs: np.ndarray, card: ModelCard, batch_size: int) -> np.ndarray:
    """Class probabilities (N, classes) for preprocessed inputs."""
    return probabilities(raw_outputs(model, inputs, card, batch_size), card)


def forward_seconds_per_image(model, inputs: np.ndarray, card: ModelCard, batch_size: int) -> float:
    """Time of one warm forward pass per input, batched (call after the model has run once)."""
    batch = inputs[:batch_size]
    started = time.perf_counter()
    raw_outputs(model, batch, card, batch_size)
    return (time.perf_counter() - started) / len(batch)


def grid_segmentation(grid_size: int):
    """Map each pixel to one of grid_size x grid_size square cells (Lime/Kernel SHAP features).

    Xplique's default (quickshift) costs seconds per image and gives a different number of
    segments per image; a grid is fast, deterministic and matches Sobol/HSIC's grid.
    """
    import tensorflow as tf

    def to_segments(image):
        height, width = int(image.shape[0]), int(image.shape[1])
        rows = np.minimum(np.arange(height) * grid_size // height, grid_size - 1)
        cols = np.minimum(np.arange(width) * grid_size // width, grid_size - 1)
        return tf.constant(rows[:, None] * grid_size + cols[None, :], dtype=tf.int32)

    return to_segments


@dataclass
class BatchAttributions:
    """One method's run over a batch of images."""

    attributions: np.ndarray  # as returned by Xplique, per image
    heatmaps: np.ndarray  # (N, H, W) float32, channel-reduced
    seconds: float
    #: SHAP methods: the expected value per image (attributions sum to output - base value).
    base_values: np.ndarray | None = None
    #: Region methods (XRAI): the top regions per image, (N, H, W) booleans at the model's input size.
    region_masks: np.ndarray | None = None


class ExplainerCache:
    """Xplique explainers kept across warm invocations.

    Building an explainer traces TensorFlow functions (and for GuidedBackprop/DeconvNet clones
    the model); reusing it for the same model object and parameters saves that on every call.
    """

    def __init__(self, capacity: int = 32):
        self.capacity = capacity
        self._entries: OrderedDict = OrderedDict()

    def get(self, spec: MethodSpec, model, card: ModelCard, params: dict, batch_size: int, background=None):
        # The store reloads the model when its background changes, so id(model) covers both.
        key = (id(model), spec.name, tuple(sorted(params.items())), batch_size)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key][1]
        from explain_core.modalities import modality_for

        xplique_without_xla()
        explainer = stable_model_functions(
            modality_for(card).build_explainer(spec, model, card, params, batch_size, background))
        # Keep the model referenced so id(model) cannot be reused by another object.
        self._entries[key] = (model, explainer)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return explainer

    def retain(self, live_models) -> None:
        """Drop explainers of models the store no longer holds (replaced in S3 or evicted)."""
        live = {id(model) for model in live_models}
        for key in [key for key, (model, _) in self._entries.items() if id(model) not in live]:
            del self._entries[key]

    def clear(self):
        self._entries.clear()


#: Xplique's XLA-compiled functions were set to plain graph execution (:func:`xplique_without_xla`).
_XPLIQUE_WITHOUT_XLA = False


def xplique_without_xla() -> None:
    """Once per process, before any Xplique function runs: none of Xplique's ``tf.function`` compiles with XLA.

    Xplique's Sobol estimators are ``@tf.function(jit_compile=True)`` (the Sobol attribution method, CRAFT's
    concept importance): XLA compiles them on their first call ("Compiled cluster using XLA!"), seconds of a
    first request for a computation on a few thousand numbers that plain graph execution runs as fast, with
    the same values (the ``xla`` benchmark section measures both). TensorFlow reads the setting
    (``Function._jit_compile``, TensorFlow 2.20) when a function is first called, so it is set before;
    ``tests/unit/test_attribution.py`` checks it. Xplique's other settings are kept: relaxing their shapes
    (``reduce_retracing``) breaks helpers that read static shapes (Occlusion's ``masks.shape[0]``).
    """
    global _XPLIQUE_WITHOUT_XLA
    if _XPLIQUE_WITHOUT_XLA:
        return
    import sys

    import tensorflow as tf
    import xplique  # noqa: F401  (imports every Xplique module: attributions, concepts, metrics, ...)

    polymorphic = tf.types.experimental.PolymorphicFunction
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "xplique" or name.startswith("xplique.")):
            continue
        found = list(vars(module).values())
        for value in list(found):
            if isinstance(value, type) and value.__module__ == name:
                found += [getattr(member, "__func__", member) for member in vars(value).values()]
        for function in found:
            if isinstance(function, polymorphic) and getattr(function, "_jit_compile", None):
                function._jit_compile = False
    _XPLIQUE_WITHOUT_XLA = True


#: Per model: its traced gradient and score functions, one graph for any number of rows (see below).
_MODEL_FUNCTIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def model_functions(model) -> tuple:
    """(gradient, scores) of ``model``: ``f(inputs, targets)`` with a ``None`` batch dimension in their signature.

    Xplique's own take the model as a Python argument and trace once per number of rows; with the signature a
    model is traced once, whatever the rows, and every explainer of the model shares the two graphs (as
    Xplique's shared its per-shape ones). The operator is Xplique's default: the targets' score.
    """
    found = _MODEL_FUNCTIONS.get(model)
    if found is None:
        import tensorflow as tf
        from xplique.commons.operators import predictions_operator

        signature = [tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32),
                     tf.TensorSpec((None, model.outputs[0].shape[-1]), tf.float32)]
        # A weak reference: the functions are the cache's values, a strong one would keep the model (its key)
        # alive after the store dropped it. Traced graphs hold the model's variables, not the model.
        weak_model = weakref.ref(model)

        @tf.function(input_signature=signature)
        def gradient(inputs, targets):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                scores = predictions_operator(weak_model(), inputs, targets)
            return tape.gradient(scores, inputs)

        @tf.function(input_signature=signature)
        def scores(inputs, targets):
            return predictions_operator(weak_model(), inputs, targets)

        found = _MODEL_FUNCTIONS[model] = (gradient, scores)
    return found


#: Explainer classes :func:`stable_model_functions` could not stabilise, warned about once each.
_NOT_STABILISED: set[str] = set()


def _warn_not_stabilised(name: str) -> None:
    if name not in _NOT_STABILISED:
        _NOT_STABILISED.add(name)
        logger.warning("%s was not given the model's stable functions (its inference or gradient function is "
                       "not Xplique's default any more): it traces its model again for every new number of rows",
                       name)


def stable_model_functions(explainer):
    """An Xplique explainer calling its model through :func:`model_functions` (others are returned as they are).

    Its results are Xplique's: the same operator on the same model, one graph instead of one per row count.
    """
    from xplique.attributions import GradCAM
    from xplique.attributions.base import BlackBoxExplainer, WhiteBoxExplainer
    from xplique.commons.operators import predictions_operator
    from xplique.commons.operators_operations import operator_batching

    model = getattr(explainer, "model", None)
    # SHAP and text explainers, FEM (no inference function: it reads feature maps): left alone.
    if not isinstance(explainer, BlackBoxExplainer) or not hasattr(model, "inputs") \
            or getattr(explainer, "inference_function", None) is None:
        return explainer
    if explainer.inference_function is not predictions_operator \
            or (isinstance(explainer, WhiteBoxExplainer) and not hasattr(explainer, "batch_gradient")):
        # The registry passes no operator: Xplique's internals changed and retracing would come back unseen.
        _warn_not_stabilised(type(explainer).__name__)
        return explainer
    gradient, scores = model_functions(model)

    def bound(function):
        def call(called_model, inputs, targets):
            if called_model is not model:  # never: every Xplique explainer calls self.model
                raise ValueError("an explainer called another model than its own")
            return function(inputs, targets)
        return call

    explainer.inference_function = bound(scores)
    explainer.batch_inference_function = operator_batching(explainer.inference_function)
    if isinstance(explainer, WhiteBoxExplainer):
        explainer.gradient = bound(gradient)
        explainer.batch_gradient = operator_batching(explainer.gradient)
    if isinstance(explainer, GradCAM):  # Grad-CAM and Grad-CAM++: the conv layer's maps and their gradients
        import functools

        import tensorflow as tf

        explainer._gradient = tf.function(functools.partial(type(explainer)._gradient.python_function, explainer),
                                          input_signature=[tf.TensorSpec((None, *model.inputs[0].shape[1:])),
                                                           tf.TensorSpec((None, model.outputs[0].shape[-1]))])
    return explainer


def build_explainer(spec: MethodSpec, model, card: ModelCard, params: dict, batch_size: int, background=None):
    if spec.reads_layers:
        from explain_core.frameworks.sagemaker import refuse_layer_methods

        refuse_layer_methods(model, spec.name)
    if spec.family == SHAP:
        return spec.explainer_class()(model, batch_size, card=card, background=background, **params)
    kwargs = dict(params)
    if spec.uses_cam_layer and card.cam_layer:
        kwargs["conv_layer"] = card.cam_layer
    if spec.grid_segments:
        kwargs["map_to_interpret_space"] = grid_segmentation(kwargs.pop("grid_size"))
    if spec.uses_card:
        kwargs["card"] = card
    from explain_core.bounded_explainers import explainer_class  # memory bounded by the batch where Xplique's is not

    return explainer_class(spec)(model, batch_size=batch_size, **kwargs)


def run_method(explainer, inputs: np.ndarray, targets: np.ndarray) -> BatchAttributions:
    """Explain ``targets`` (one-hot, (N, classes)) for preprocessed ``inputs`` (N, H, W, C)."""
    started = time.perf_counter()
    raw = explainer.explain(inputs, targets)
    attributions = np.asarray(raw.numpy() if hasattr(raw, "numpy") else raw, dtype=np.float32)
    seconds = time.perf_counter() - started
    heatmaps = attributions
    if heatmaps.ndim == 4:
        heatmaps = heatmaps.mean(axis=-1)
    heatmaps = _resize_maps(heatmaps, inputs.shape[1:3])
    # ``region_masks``, not ``masks``: Xplique's Sobol explainer keeps its perturbation masks as ``masks``.
    base_values, masks = getattr(explainer, "base_values", None), getattr(explainer, "region_masks", None)
    return BatchAttributions(attributions, heatmaps.astype(np.float32), seconds,
                             None if base_values is None else np.array(base_values, dtype=np.float64),
                             None if masks is None else _resize_masks(np.asarray(masks, dtype=bool),
                                                                      inputs.shape[1:3]))


def _resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if masks.shape[1:3] == tuple(size):
        return masks
    return _resize_maps(masks.astype(np.float32), size) >= 0.5


def _resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if maps.shape[1:3] == tuple(size):
        return maps
    import cv2

    return np.stack([cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for m in maps])
