"""Keras v3 models: ``model.keras`` archives, checked before Keras reads them, then ``safe_mode``.

Legacy HDF5 (``.h5``) files and pickles are refused before any Keras call
(:func:`check_keras_archive`); see docs/models.md for the threats each check answers.
"""

import builtins
import json
import weakref
import zipfile

from explain_core.errors import InvalidModelError, UnsafeModelError
from explain_core.frameworks.base import FrameworkHandler

#: Largest config.json read from a .keras archive (uncompressed).
MAX_KERAS_CONFIG_BYTES = 16 * 1024 * 1024
#: The first bytes of an HDF5 file (legacy Keras .h5 models).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Layers refused in any model: they run Python code (Lambda: bytecode, or any function it names,
#: CVE-2024-3660, CVE-2025-1550, CVE-2025-9906) or load a TensorFlow SavedModel (CVE-2026-1462).
UNSAFE_LAYERS = frozenset({"Lambda", "TFSMLayer"})
#: Layers whose ``vocabulary`` may name a file or URL read while loading (CVE-2025-12058).
LOOKUP_LAYERS = frozenset({"StringLookup", "IntegerLookup", "TextVectorization"})
#: Modules a function named in config.json may come from: modeling functions only (activations,
#: losses, metrics, ops), never keras.config, keras.saving, keras.models or keras.utils (whose
#: get_file downloads files: CVE-2025-8747).
FUNCTION_MODULES = ("keras.activations", "keras.losses", "keras.metrics", "keras.ops",
                    "keras.src.activations", "keras.src.losses", "keras.src.metrics", "keras.src.ops")


class KerasHandler(FrameworkHandler):
    name = "keras"
    display_name = "Keras"
    model_files = ("model.keras",)
    outputs = ("logits", "probabilities")
    input_dtype = "float32"

    def load(self, path: str, name: str, version: str, card=None, settings=None):
        # Checked before Keras is even imported: nothing in a refused file reaches Keras.
        check_keras_archive(path, name, version)
        import keras

        try:
            return keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types for a bad archive or an unsafe layer
            raise InvalidModelError(f"model {name}/{version} could not be loaded safely: {exc}", model=name) from exc

    def check(self, model, card) -> None:
        from explain_core.modalities import modality_for

        expected_input = (None, *modality_for(card).model_input_shape(card, self, model))
        input_shape = tuple(model.inputs[0].shape)
        output_shape = tuple(model.outputs[0].shape)
        if input_shape != expected_input:
            raise InvalidModelError(
                f"model input shape {input_shape} does not match the card's {expected_input}", model=card.name
            )
        if len(output_shape) != 2 or output_shape[1] != len(card.class_names):
            raise InvalidModelError(
                f"model output shape {output_shape} does not match the card's {len(card.class_names)} classes",
                model=card.name,
            )
        if card.cam_layer is not None and self.shows_layers(model):
            try:
                model.get_layer(card.cam_layer)
            except ValueError as exc:
                raise InvalidModelError(
                    f"the card's cam_layer {card.cam_layer!r} is not a layer of the model", model=card.name
                ) from exc

    def shows_layers(self, model) -> bool:
        """False for a model whose layers are hidden (a SavedModel): its card's ``cam_layer`` is not checked, the
        methods that read layers refuse it when asked."""
        return True

    def predict(self, model, inputs, card, batch_size: int):
        return KerasOutputs(model, batch_size)(inputs)

    def outputs_function(self, model, batch_size: int) -> "KerasOutputs":
        return KerasOutputs(model, batch_size)

    def feature_count(self, model) -> int:
        return int(model.inputs[0].shape[-1])


class KerasOutputs:
    """Batched, traced forward passes of a Keras model: scores of all classes or of one class."""

    def __init__(self, model, batch_size: int):
        self.model = model
        self.batch_size = batch_size
        self._forward = traced_forward(model)

    def __call__(self, x):
        import numpy as np

        x = np.asarray(x, dtype=self.model.inputs[0].dtype)
        return np.concatenate([
            np.asarray(self._forward(x[start:start + self.batch_size]), dtype=np.float64)
            for start in range(0, len(x), self.batch_size)
        ]) if len(x) else np.zeros((0, int(self.model.outputs[0].shape[-1])))

    def one_class(self, cls: int):
        return lambda x: self(x)[:, cls]

    def class_model(self, cls: int):
        """A Keras model with one output, the class's score (what Deep/Gradient explainers need)."""
        import keras

        output = keras.layers.Lambda(lambda t: t[:, cls:cls + 1], name=f"class_{cls}")(self.model.outputs[0])
        return keras.Model(self.model.inputs, output)


#: Per model: its traced forward pass (:func:`traced_forward`).
_FORWARD: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def traced_forward(model):
    """``model(x, training=False)`` as one ``tf.function`` per model, traced once for any number of rows.

    Not ``model.predict``: it builds a tf.data pipeline per call (0.1-0.3 s, more than a whole Grad-CAM on a
    small model), and the sampling explainers call the model hundreds of times. Not ``predict_on_batch``
    either: its function retraces for each new batch shape (1 image, then 3, then 8 per invocation), and a
    ``None`` batch dimension in the signature traces once. The model's own ``jit_compile`` is not used: no
    XLA (on a CPU, Keras' "auto" already means off; docs/benchmark.md, xla section).
    """
    forward = _FORWARD.get(model)
    if forward is None:
        import tensorflow as tf

        spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), model.inputs[0].dtype)
        weak_model = weakref.ref(model)  # the cache's value must not keep its key alive
        forward = _FORWARD[model] = tf.function(lambda x: weak_model()(x, training=False), input_signature=[spec],
                                                autograph=False, jit_compile=False)
    return forward


def check_keras_archive(path: str, name: str, version: str) -> None:
    """Refuse a model file that is not a plain Keras v3 archive, before any Keras call.

    Legacy HDF5 (``.h5``) models are refused outright: Keras ignores ``safe_mode`` for them
    (CVE-2025-9905) and their Lambda layers carry Python bytecode. In a ``.keras`` archive the
    config.json is walked: every object must come from a Keras module, no Lambda or TFSMLayer
    layer, no serialized Python function (``__lambda__``), functions only from the modeling
    modules, no lookup vocabulary read from a path. Keras (pinned to a release with the published
    safe_mode fixes) then loads it with ``safe_mode=True`` as a second line of defence.
    """
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head == HDF5_SIGNATURE:
        raise UnsafeModelError(
            f"model {name}/{version} is a legacy HDF5 (.h5) model, which is refused: Keras does not apply safe_mode "
            "to HDF5 files. It is not a Keras v3 .keras archive; re-save it with model.save('model.keras')",
            model=name, version=version,
        )
    if not zipfile.is_zipfile(path):
        kind = "a pickle" if head[:1] == b"\x80" else "not a zip archive"
        raise InvalidModelError(
            f"model {name}/{version} is not a Keras v3 .keras archive ({kind}; legacy HDF5 and pickles are refused)",
            model=name, version=version,
        )
    try:
        with zipfile.ZipFile(path) as archive:
            try:
                info = archive.getinfo("config.json")
            except KeyError:
                raise InvalidModelError(
                    f"model {name}/{version} is not a Keras v3 .keras archive (no config.json)", model=name,
                    version=version,
                ) from None
            if info.file_size > MAX_KERAS_CONFIG_BYTES:
                raise InvalidModelError(
                    f"model {name}/{version}: config.json is {info.file_size} bytes; the limit is "
                    f"{MAX_KERAS_CONFIG_BYTES}", model=name, version=version,
                )
            config = json.loads(archive.read(info))
    except (zipfile.BadZipFile, OSError, ValueError, RecursionError) as exc:
        raise InvalidModelError(
            f"model {name}/{version} is not a valid Keras v3 .keras archive: {exc}", model=name, version=version,
        ) from exc
    problem = _unsafe_config(config)
    if problem:
        raise UnsafeModelError(
            f"model {name}/{version} could not be loaded safely: its config.json {problem}; the model is refused "
            "before Keras reads it", model=name, version=version,
        )


def _unsafe_config(node, depth: int = 0) -> str | None:
    """Why a Keras config.json is unsafe to deserialize, or None."""
    if depth > 200:
        return "is nested too deeply"
    if isinstance(node, list):
        for item in node:
            problem = _unsafe_config(item, depth + 1)
            if problem:
                return problem
        return None
    if not isinstance(node, dict):
        return None
    class_name = node.get("class_name")
    module = node.get("module")
    if class_name == "__lambda__" or "bytecode_b64" in node or node.get("function_type") == "lambda":
        return "holds serialized Python bytecode (a lambda function)"
    if class_name in UNSAFE_LAYERS:
        what = "loads a TensorFlow SavedModel" if class_name == "TFSMLayer" else "runs arbitrary Python functions"
        return f"has a {class_name} layer, which {what}"
    if module == "builtins":
        # How Keras names its own built-in functions (losses, metrics): {"module": "builtins", "class_name":
        # "function", "config": "categorical_crossentropy"}. Never a function of Python's builtins module.
        function = node.get("config")
        if class_name != "function" or not isinstance(function, str) or not function.isidentifier() \
                or hasattr(builtins, function):
            return f"names the Python builtin {function if class_name == 'function' else class_name!r}"
    elif module is not None:
        if not isinstance(module, str) or not (module == "keras" or module.startswith("keras.")):
            return f"names the Python module {module!r} (only Keras modules are allowed; custom objects are refused)"
        if class_name == "function" and not any(module == m or module.startswith(m + ".") for m in FUNCTION_MODULES):
            return f"names the function {module}.{node.get('config')}, which is not a modeling function"
    layer_config = node.get("config") if isinstance(node.get("config"), dict) else {}
    if class_name in LOOKUP_LAYERS and isinstance(layer_config.get("vocabulary"), str):
        return f"has a {class_name} layer whose vocabulary is read from a path"
    for value in node.values():
        problem = _unsafe_config(value, depth + 1)
        if problem:
            return problem
    return None
