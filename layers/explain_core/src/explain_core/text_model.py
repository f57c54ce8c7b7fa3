"""A Keras text model made explainable: its tokenizer, a model over token ids and one over embeddings.

Gradient methods explain a text model on the output of its embedding layer (token ids have no
gradient) and sum each token's attributions over the embedding dimensions; perturbation and
SHAP methods hide words by replacing their ids. Both need the user's model cut at a layer, which
Keras 3 cannot do with ``keras.Model(layer.output, model.output)`` (an intermediate tensor is not
an input). :class:`_GraphWithOutputs` runs the model's own graph (``Functional._run_through_graph``,
Keras pinned in layers/requirements-ml.txt) with chosen layers' outputs replaced:

- :attr:`TextModel.ids_model`: token ids ``(n, max_length)`` -> outputs. The user's model itself when
  it takes ids; for a model that takes strings, its ``TextVectorization`` output is replaced by the ids.
- :attr:`TextModel.embeddings_model`: embeddings ``(n, max_length, dim)`` -> outputs, the embedding
  layer's output replaced. An embedding with ``mask_zero`` masks the padding: the mask of the
  document being explained is set with :meth:`TextModel.use_mask` (one document per call, so Xplique's
  batches of noisy or interpolated copies of it share one mask).
"""

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras.src import backend

from explain_core.errors import InvalidModelError
from explain_core.tokenizers import WordTokenizer, parse_vocabulary

#: Most tokens a vocabulary file may hold.
MAX_VOCABULARY = 1_000_000
#: Card settings a model that takes strings reads from its TextVectorization layer: a card may not set them.
LAYER_SETTINGS = ("lowercase", "strip_punctuation", "split_pattern", "oov_token", "padding_token", "padding",
                  "truncation")


@dataclass
class TextModel:
    """Everything the text modality needs from a loaded model (LoadedModel.companion)."""

    tokenizer: WordTokenizer
    #: Token ids (n, max_length), as float or int -> raw outputs (n, classes).
    ids_model: object
    #: Embeddings (n, max_length, dim) -> raw outputs; None without an embedding layer.
    embeddings_model: object | None
    #: The model's embedding layer (its weights turn ids into embeddings); None without one.
    embedding_layer: object | None
    #: "ids" or "strings": what the user's model takes.
    takes: str
    #: Why gradient methods cannot explain this model, when they cannot.
    no_gradients_reason: str | None = None
    #: The layer of :attr:`embeddings_model` that holds the explained document's padding mask.
    mask_layer: object = None

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """Embeddings (n, max_length, dim) float32 of token ids."""
        return np.asarray(self.embedding_layer(np.asarray(ids, dtype=np.int64)), dtype=np.float32)

    def use_mask(self, ids: np.ndarray) -> None:
        """Mask the padding of the document ``ids`` (max_length,) in :attr:`embeddings_model`'s next calls."""
        self.mask_layer.mask.assign(np.asarray(ids).reshape(1, -1) != self.tokenizer.padding_id)

    def describe(self) -> dict:
        return {"takes": self.takes, "embedding_layer": getattr(self.embedding_layer, "name", None),
                **self.tokenizer.describe()}


def text_model(model, card, files: dict[str, bytes]) -> TextModel:
    """The :class:`TextModel` of a loaded Keras model and its card; InvalidModelError when they disagree."""
    settings = card.text
    graph = _graph(model, card.name)
    string_input = model.inputs[0].dtype == "string"
    vectorizers = [layer for layer in model.layers if isinstance(layer, keras.layers.TextVectorization)]
    if string_input:
        if len(vectorizers) != 1 or settings.vocabulary_file:
            raise InvalidModelError(
                f"model {card.name} takes strings: it must tokenize them with exactly one TextVectorization layer "
                f"(it has {len(vectorizers)}), and its card must not name a vocabulary_file", model=card.name)
        # Set on the card, they would be silently ignored: the layer tokenizes what the model sees.
        ignored = [name for name in LAYER_SETTINGS if name in settings.model_fields_set]
        if ignored:
            raise InvalidModelError(
                f"model {card.name} takes strings: the card's text settings {', '.join(ignored)} are read from the "
                "TextVectorization layer; remove them from the card", model=card.name, fields=ignored)
        try:
            tokenizer = WordTokenizer.from_text_vectorization(vectorizers[0])
        except ValueError as exc:
            raise InvalidModelError(f"model {card.name}: {exc}", model=card.name) from exc
        if settings.max_length != tokenizer.max_length:
            raise InvalidModelError(
                f"the card's max_length {settings.max_length} differs from the TextVectorization layer's "
                f"output_sequence_length {tokenizer.max_length}", model=card.name)
    else:
        tokenizer = _file_tokenizer(model, card, files)
    embedding, no_gradients = _embedding_layer(model, card)
    source = vectorizers[0] if string_input else keras.layers.InputLayer
    for layer in dict.fromkeys([*([embedding] if embedding is not None else []), *_embeddings_of_ids(graph, source)]):
        _check_input_dim(layer, tokenizer, card.name)
    if embedding is not None and embedding.mask_zero and tokenizer.padding_id != 0:
        raise InvalidModelError(
            f"the embedding layer {embedding.name!r} masks id 0 (mask_zero) but the padding token has id "
            f"{tokenizer.padding_id}", model=card.name)
    length = tokenizer.max_length
    ids_model = _cut(graph, length, (), {vectorizers[0]: "ids"} if string_input else {}, model.inputs[0])
    mask_layer = None
    embeddings_model = None
    if embedding is not None:
        replace = {embedding: "embeddings", **({vectorizers[0]: "mask_ids"} if string_input else {})}
        embeddings_model, mask_layer = _cut(graph, length, (int(embedding.output_dim),), replace, model.inputs[0],
                                            masked=embedding, with_layer=True)
    return TextModel(tokenizer, ids_model, embeddings_model, embedding, "strings" if string_input else "ids",
                     no_gradients, mask_layer)


def _graph(model, name: str):
    """The functional graph of a Sequential or Functional model (subclassed models have none)."""
    graph = model._functional if isinstance(model, keras.Sequential) else model
    if not isinstance(graph, keras.Model) or not hasattr(graph, "_run_through_graph"):
        raise InvalidModelError(f"model {name} must be a Sequential or Functional Keras model (a text model is "
                                "cut at its embedding layer)", model=name)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InvalidModelError(f"model {name} must have one input and one output", model=name)
    return graph


def _file_tokenizer(model, card, files: dict[str, bytes]) -> WordTokenizer:
    """The tokenizer of a model that takes token ids: the card's vocabulary file and settings."""
    settings = card.text
    shape = tuple(model.inputs[0].shape)
    if not settings.vocabulary_file:
        raise InvalidModelError(
            f"model {card.name} takes token ids: its card must name a vocabulary_file beside it (or the model must "
            "take strings through a TextVectorization layer)", model=card.name)
    if len(shape) != 2 or shape[1] != settings.max_length:
        raise InvalidModelError(
            f"model input shape {shape} does not match the card's max_length ({settings.max_length}): a text "
            "model takes (batch, max_length) token ids", model=card.name)
    if "int" not in str(model.inputs[0].dtype):
        raise InvalidModelError(f"model {card.name} takes {model.inputs[0].dtype} inputs; a text model takes "
                                "integer token ids or strings", model=card.name)
    try:
        vocabulary = parse_vocabulary(files[settings.vocabulary_file], max_tokens=MAX_VOCABULARY,
                                      source=settings.vocabulary_file)
        return WordTokenizer(vocabulary, max_length=settings.max_length, lowercase=settings.lowercase,
                             strip_punctuation=settings.strip_punctuation, split_pattern=settings.split_pattern,
                             oov_token=settings.oov_token, padding_token=settings.padding_token,
                             padding=settings.padding, truncation=settings.truncation)
    except ValueError as exc:
        raise InvalidModelError(f"model {card.name}: {exc}", model=card.name) from exc


def _embedding_layer(model, card):
    """(the embedding layer, None), or (None, why gradient methods cannot run) when the model has none."""
    name = card.text.embedding_layer
    if name is not None:
        try:
            layer = model.get_layer(name)
        except ValueError as exc:
            raise InvalidModelError(f"the card's embedding_layer {name!r} is not a layer of the model",
                                    model=card.name) from exc
        if not isinstance(layer, keras.layers.Embedding):
            raise InvalidModelError(f"the card's embedding_layer {name!r} is a {type(layer).__name__}, not an "
                                    "Embedding layer", model=card.name)
        return layer, None
    found = [layer for layer in model.layers if isinstance(layer, keras.layers.Embedding)]
    if len(found) == 1:
        return found[0], None
    return None, (f"the model has {len(found)} Embedding layers; name the one to explain in the card's "
                  "text.embedding_layer" if found else "the model has no Embedding layer")


def _embeddings_of_ids(graph, source) -> list:
    """The Embedding layers of ``graph`` fed directly by the token ids: ``source`` is the TextVectorization
    layer, or the InputLayer class for a model that takes ids (a position embedding, fed otherwise, is not)."""
    def fed_by_source(node) -> bool:
        producers = [tensor._keras_history.operation for tensor in node.input_tensors]
        return any(p is source or (isinstance(source, type) and isinstance(p, source)) for p in producers)

    return [layer for layer in graph.layers if isinstance(layer, keras.layers.Embedding)
            and any(fed_by_source(node) for node in layer._inbound_nodes)]


def _check_input_dim(embedding, tokenizer: WordTokenizer, name: str) -> None:
    """Every id the tokenizer gives must be a row of the embedding (else TensorFlow fails at predict time)."""
    size, rows = len(tokenizer.vocabulary), int(embedding.input_dim)
    if size > rows:
        # The padding and OOV ids index the vocabulary, so they are below input_dim once it fits.
        raise InvalidModelError(
            f"model {name}: the vocabulary has {size} tokens (ids 0 to {size - 1}) but the embedding layer "
            f"{embedding.name!r} has input_dim {rows}: ids from {rows} on have no embedding", model=name,
            vocabulary_size=size, input_dim=rows)


def _cut(graph, length: int, dims: tuple, replace: dict, model_input, masked=None, with_layer=False):
    """A Keras model whose input replaces the outputs of ``replace``'s layers in ``graph``."""
    layer = _GraphWithOutputs(graph, length, replace, model_input.dtype, tuple(model_input.shape[1:]), masked)
    inputs = keras.Input((length, *dims), dtype="float32")
    model = keras.Model(inputs, layer(inputs))
    return (model, layer) if with_layer else model


class _GraphWithOutputs(keras.layers.Layer):
    """Runs ``graph`` with each layer of ``replace`` giving this layer's input ("ids", "embeddings") or the
    explained document's padding mask as ids ("mask_ids") instead of computing its own output."""

    def __init__(self, graph, length, replace, input_dtype, input_shape, masked):
        super().__init__(trainable=False)
        self.graph, self.length, self.replace, self.masked = graph, length, replace, masked
        self.graph_input_dtype, self.graph_input_shape = input_dtype, input_shape
        #: The explained document's padding mask (embeddings only); True where a real token is.
        self.mask = tf.Variable(tf.ones((1, length), tf.bool), trainable=False)

    def call(self, x):
        batch = tf.shape(x)[0]
        mask = tf.broadcast_to(self.mask, [batch, self.length])
        # Ids that give the embedding's own mask: a nonzero id where a token is, 0 on padding.
        mask_ids = tf.cast(mask, tf.int64)
        if self.graph_input_dtype == "string":  # the replaced TextVectorization never reads it
            shape = tf.constant(self.graph_input_shape, dtype=tf.int32, shape=(len(self.graph_input_shape),))
            graph_input = tf.fill(tf.concat([[batch], shape], 0), "")
        elif "embeddings" in self.replace.values():
            graph_input = tf.cast(mask_ids, self.graph_input_dtype)
        else:
            graph_input = tf.cast(x, self.graph_input_dtype)
        replacements = {"ids": lambda: tf.cast(x, tf.int64), "mask_ids": lambda: mask_ids}

        def call_fn(op, *args, **kwargs):
            role = self.replace.get(op)
            if role is None:
                return op(*args, **kwargs)
            if role != "embeddings":
                return replacements[role]()
            out = tf.identity(x)
            if op is self.masked and op.mask_zero:
                backend.set_keras_mask(out, mask)
            return out

        return self.graph._run_through_graph(graph_input, operation_fn=lambda op: op, call_fn=call_fn)
