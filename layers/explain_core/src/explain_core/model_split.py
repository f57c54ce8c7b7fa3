"""A Keras image model cut in two at a layer: inputs -> that layer's activations -> outputs.

Concept methods (CRAFT's ``g`` and ``h``) need both halves. The first is an ordinary Keras model
(``keras.Model(model.inputs, layer output)``); the second cannot be built that way in Keras 3, whose
functional models start from ``keras.Input`` tensors only. :class:`_GraphFrom` runs the model's own
graph (the nodes of ``Functional._nodes_by_depth``, Keras pinned in layers/requirements-ml.txt) from
the cut layer's output on, the way ``Functional._run_through_graph`` runs it from the inputs: the
layers before the cut are not run, and no layer gains a node (the model itself is left as it was).
"""

import keras
from keras.src import tree

from explain_core.errors import InvalidModelError, UnsupportedModelError


def functional_graph(model, name: str = "model"):
    """The functional graph of a Sequential or Functional Keras model; UnsupportedModelError otherwise."""
    graph = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    if not isinstance(graph, keras.Model) or not hasattr(graph, "_nodes_by_depth"):
        raise UnsupportedModelError(
            f"model {name} must be a built Sequential or Functional Keras model to be cut at a layer",
            model=name)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedModelError(f"model {name} must have one input and one output to be cut at a layer",
                                    model=name)
    return graph


def _cut_node(graph, layer, name: str):
    """The one node of ``layer`` in ``graph`` (a layer called twice has no single output to cut at)."""
    nodes = [node for depth in graph._nodes_by_depth.values() for node in depth
             if node.operation is layer and not node.is_input]
    if isinstance(layer, keras.layers.InputLayer) or not nodes:
        raise InvalidModelError(f"layer {layer.name!r} of model {name} is its input or not in its graph",
                                model=name, layer=layer.name)
    if len(nodes) != 1 or len(nodes[0].outputs) != 1:
        raise UnsupportedModelError(f"layer {layer.name!r} of model {name} is called more than once or has "
                                    "several outputs: the model cannot be cut there", model=name, layer=layer.name)
    if nodes[0].outputs[0] is graph.outputs[0]:
        raise InvalidModelError(f"layer {layer.name!r} is the output of model {name}: cut at a layer before it",
                                model=name, layer=layer.name)
    return nodes[0]


def _run_from(graph, known: dict, compute: bool = True) -> list | None:
    """``graph``'s outputs computed from ``known`` (id of a graph tensor -> its value), or None when an
    output needs a tensor that does not come from them (a branch that bypasses the cut). Without
    ``compute``, only whether they can be (no layer is called, so none gains a node)."""
    tensors = dict(known)
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if not node.operation or node.is_input or any(id(x) in tensors for x in node.outputs):
                continue
            if any(id(x) not in tensors for x in node.input_tensors):
                continue  # upstream of the cut, or fed by a branch around it
            if not compute:
                tensors.update((id(x), None) for x in node.outputs)
                continue
            args, kwargs = node.arguments.fill_in(tensors)
            for x, y in zip(node.outputs, tree.flatten(node.operation(*args, **kwargs)), strict=True):
                tensors[id(x)] = y
    if any(id(x) not in tensors for x in graph.outputs):
        return None
    return [tensors[id(x)] for x in graph.outputs]


class _GraphFrom(keras.layers.Layer):
    """Runs ``graph`` from ``cut`` (one of its tensors) on: this layer's input replaces it."""

    def __init__(self, graph, cut, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.graph, self.cut = graph, cut

    def call(self, x):
        return _run_from(self.graph, {id(self.cut): x})[0]

    def compute_output_spec(self, x):
        return keras.KerasTensor(self.graph.outputs[0].shape, dtype=self.graph.outputs[0].dtype)


def split_at(model, layer_name: str, name: str = "model"):
    """``(input_to_latent, latent_to_output)``: two Keras models whose composition is ``model``, cut at the
    output of layer ``layer_name``; InvalidModelError for an unknown layer, UnsupportedModelError when the
    model cannot be cut there (a branch bypasses the layer, a subclassed model)."""
    graph = functional_graph(model, name)
    try:
        layer = graph.get_layer(layer_name)
    except ValueError as exc:
        raise InvalidModelError(f"model {name} has no layer {layer_name!r}", model=name, layer=layer_name) from exc
    cut = _cut_node(graph, layer, name).outputs[0]
    if _run_from(graph, {id(cut): None}, compute=False) is None:
        raise UnsupportedModelError(
            f"model {name} has a branch around layer {layer_name!r} (a skip connection or a second path from "
            "the input): its output does not depend on that layer's output alone; choose another layer",
            model=name, layer=layer_name)
    input_to_latent = keras.Model(graph.inputs[0], cut, name=f"{graph.name}_to_{layer.name}")
    latent = keras.Input(tuple(cut.shape[1:]), dtype=cut.dtype, name=f"{layer.name}_activations")
    latent_to_output = keras.Model(latent, _GraphFrom(graph, cut, name=f"{graph.name}_from_{layer.name}")(latent),
                                   name=f"{layer.name}_to_{graph.name}_output")
    return input_to_latent, latent_to_output
