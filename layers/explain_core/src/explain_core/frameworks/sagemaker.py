"""SageMaker training artifacts: ``model.tar.gz`` holding a TensorFlow SavedModel or a Keras ``.keras`` file.

A SageMaker TensorFlow training job uploads what its script saved under ``/opt/ml/model`` as
``model.tar.gz``: a SavedModel in a numbered folder (``1/saved_model.pb``, TensorFlow Serving's layout),
sometimes under ``model/1/``, or a Keras file. The store downloads it into the /tmp model cache, where it
is unpacked once (:func:`explain_core.model_archive.unpack_archive`: no absolute paths, ``..``, links or
devices; size, member and compression-ratio limits). Then:

- a ``.keras`` file is loaded as any Keras model (:func:`explain_core.frameworks.keras.check_keras_archive`,
  ``safe_mode``): every method works, as with ``model.keras``;
- a SavedModel's graph is read as a protocol buffer (never executed) and every operation of every function
  in it must be on :data:`ALLOWED_OPS`: a SavedModel is a program, and ops such as ReadFile, WriteFile,
  MatchingFiles or PyFunc read the function's files, run Python or reach the network when it runs
  (:class:`UnsafeModelError` names the op). The checkpoint ops (SaveV2, RestoreV2, ...) are allowed only in
  the functions the saver itself calls, which loading does not run. It is then loaded with
  ``keras.layers.TFSMLayer`` on the card's signature (``artifact.signature``, default ``serving_default``)
  and output (``artifact.output``, default its only output), inside a Keras model: inference and gradients
  work, so the gradient and perturbation methods, SHAP and the metrics explain it. Its layers are not
  visible: methods that read or change layers (Grad-CAM, Grad-CAM++ and FEM read a convolution's feature
  maps, Guided Backprop and DeconvNet change ReLU gradients, LRP walks the layers) refuse it with
  ``unsupported_model`` (the registry's ``reads_layers``). Put the ``.keras`` file in the archive for them.
"""

import os
import re

from explain_core.errors import InvalidModelError, UnsafeModelError, UnsupportedModelError
from explain_core.frameworks.keras import KerasHandler

ARCHIVE_FILE = "model.tar.gz"
#: The unpacked archive, beside it in the cache (``<etag>/model.tar.gz`` -> ``<etag>/unpacked/``).
UNPACKED_FOLDER = "unpacked"
SAVED_MODEL_FILE = "saved_model.pb"
#: Largest saved_model.pb parsed (the graph; the weights are in variables/).
MAX_GRAPH_BYTES = 256 * 1024 * 1024

#: Operations a SavedModel's functions may run: tensors, arithmetic, neural-network layers, variables and
#: control flow. Nothing that touches files, processes, the network, Python or queues.
ALLOWED_OPS = frozenset({
    # graph plumbing, variables, calls and control flow
    "Const", "Identity", "IdentityN", "NoOp", "Placeholder", "PlaceholderWithDefault", "StopGradient",
    "PreventGradient", "EnsureShape", "CheckNumerics", "Assert", "VarHandleOp", "ReadVariableOp",
    "AssignVariableOp", "VarIsInitializedOp", "AssignAddVariableOp", "AssignSubVariableOp", "DestroyResourceOp",
    "StatefulPartitionedCall", "PartitionedCall", "If", "StatelessIf", "While", "StatelessWhile", "Case",
    "StatelessCase",
    # arithmetic and comparisons
    "Abs", "Add", "AddN", "AddV2", "Sub", "Mul", "MulNoNan", "Div", "DivNoNan", "RealDiv", "FloorDiv", "FloorMod",
    "TruncateDiv", "Mod", "Neg", "Reciprocal", "Inv", "Square", "SquaredDifference", "Sqrt", "Rsqrt", "Pow", "Exp",
    "Expm1", "Log", "Log1p", "Sign", "Floor", "Ceil", "Round", "Rint", "Maximum", "Minimum", "ClipByValue", "Erf",
    "Erfc", "Sin", "Cos", "Tan", "Atan", "Atan2", "Sinh", "Cosh", "IsNan", "IsInf", "IsFinite", "Equal", "NotEqual",
    "Less", "LessEqual", "Greater", "GreaterEqual", "LogicalAnd", "LogicalOr", "LogicalNot", "Select", "SelectV2",
    "Cast", "Bitcast", "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum", "Cumsum", "Cumprod",
    # reductions
    "Sum", "Mean", "Max", "Min", "Prod", "All", "Any", "ArgMax", "ArgMin", "EuclideanNorm",
    # activations and normalisation
    "Relu", "Relu6", "LeakyRelu", "Elu", "Selu", "Softplus", "Softsign", "Sigmoid", "Tanh", "Softmax",
    "LogSoftmax", "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "BiasAdd", "LRN",
    # convolution and pooling
    "Conv2D", "Conv3D", "Conv2DBackpropInput", "Conv3DBackpropInputV2", "DepthwiseConv2dNative", "MaxPool",
    "MaxPoolV2", "MaxPool3D", "AvgPool", "AvgPool3D", "Dilation2D",
    # shapes, slicing and copies
    "Shape", "ShapeN", "Size", "Rank", "Reshape", "Squeeze", "ExpandDims", "Transpose", "ConjugateTranspose",
    "Pack", "Unpack", "ConcatV2", "Concat", "Split", "SplitV", "Slice", "StridedSlice", "Tile", "Pad", "PadV2",
    "MirrorPad", "Fill", "ZerosLike", "OnesLike", "Range", "Gather", "GatherV2", "GatherNd", "ResourceGather",
    "ScatterNd", "TensorScatterUpdate", "TensorScatterAdd", "BroadcastTo", "BroadcastArgs", "ReverseV2", "Where",
    "OneHot", "TopKV2", "LinSpace", "MatrixBandPart", "DepthToSpace", "SpaceToDepth", "BatchToSpaceND",
    "SpaceToBatchND", "InvertPermutation", "Unique", "SegmentSum", "UnsortedSegmentSum",
    # image resizing inside the model
    "ResizeBilinear", "ResizeNearestNeighbor", "ResizeBicubic", "ResizeArea", "CropAndResize",
})
#: What a TensorFlow 2 saver runs to write and read checkpoints: allowed in the saver's functions only.
CHECKPOINT_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename", "StringJoin",
                            "StaticRegexFullMatch", "DisableCopyOnRead"})
#: Operations named in the refusal for what they do (any op off the list is refused, these with a reason).
DANGEROUS_OPS = {
    "ReadFile": "reads files", "WriteFile": "writes files", "MatchingFiles": "lists files",
    "ImmutableConst": "maps a file into memory", "PyFunc": "runs Python code", "PyFuncStateless": "runs Python code",
    "EagerPyFunc": "runs Python code", "DebugIdentityV2": "writes debug files", "SaveV2": "writes files",
    "RestoreV2": "reads files", "Save": "writes files", "SaveSlices": "writes files", "Restore": "reads files",
    "RestoreSlice": "reads files", "MergeV2Checkpoints": "writes files", "WriteSummary": "writes files",
    "CreateSummaryFileWriter": "writes files", "InitializeTableFromTextFile": "reads files",
    "InitializeTableFromTextFileV2": "reads files", "TFRecordDataset": "reads files",
    "TextLineDataset": "reads files", "FixedLengthRecordDataset": "reads files",
    "DecodeProtoV2": "reads protocol buffers",
    "ParseTensor": "deserialises tensors", "CollectiveGather": "talks to other processes",
}


def is_saved_model(model) -> bool:
    """True for a Keras model wrapping a SavedModel (``TFSMLayer``): its layers are not visible."""
    import keras

    return any(isinstance(layer, keras.layers.TFSMLayer) for layer in getattr(model, "layers", ()))


def refuse_layer_methods(model, method: str) -> None:
    """UnsupportedModelError for a method that reads or changes layers (``reads_layers``) on a SavedModel."""
    if is_saved_model(model):
        raise UnsupportedModelError(
            f"{method} reads or changes the model's layers, and a SavedModel shows only its signature's inputs and "
            "outputs; put the Keras model (a .keras file) in model.tar.gz to use it, or use a method that only needs "
            "gradients or outputs (Saliency, IntegratedGradients, SmoothGrad, Occlusion, Rise, ...)",
            method=method, model_kind="SavedModel",
        )


class SageMakerHandler(KerasHandler):
    """``model.tar.gz``: a SageMaker TensorFlow artifact (SavedModel or ``.keras`` inside)."""

    model_files = (ARCHIVE_FILE,)

    def load(self, path: str, name: str, version: str, card=None, settings=None):
        from explain_core.model_archive import unpack_archive
        from explain_core.settings import Settings

        # Outside the store (devtools, tests): the default model size limit.
        max_bytes = settings.model_size_limit if settings is not None else Settings.max_model_bytes
        root = unpack_archive(path, os.path.join(os.path.dirname(path), UNPACKED_FOLDER), max_bytes=max_bytes,
                              name=name, version=version)
        artifact = getattr(card, "artifact", None)
        found = locate_model(root, getattr(artifact, "path", None), name, version)
        if found.endswith(".keras"):
            return super().load(found, name, version)
        check_saved_model_graph(found, name, version)
        return load_saved_model(found, artifact, name, version)

    def shows_layers(self, model) -> bool:
        return not is_saved_model(model)

    def check(self, model, card) -> None:
        if is_saved_model(model) and card.modality == "text":
            raise InvalidModelError(
                f"model {card.name}/{card.version}: a text model's words are explained through its Embedding layer, "
                "and a SavedModel shows no layers; put the Keras model (a .keras file) in model.tar.gz",
                model=card.name,
            )
        super().check(model, card)


def locate_model(root: str, path: str | None, name: str, version: str) -> str:
    """The model inside an unpacked artifact: the card's ``artifact.path``, else the only ``.keras`` file or the
    only SavedModel (of numbered folders, the highest number, as TensorFlow Serving picks)."""
    if path is not None:
        found = os.path.normpath(os.path.join(root, path))
        if os.path.commonpath([found, root]) != root or not (
                os.path.isfile(found) and found.endswith(".keras")
                or os.path.isfile(os.path.join(found, SAVED_MODEL_FILE))):
            raise InvalidModelError(f"model {name}/{version}: the card's artifact.path {path!r} is not a .keras file "
                                    "or a SavedModel folder in model.tar.gz", model=name, version=version)
        return found
    keras_files, saved_models = [], []
    for directory, folders, files in os.walk(root):
        folders.sort()
        keras_files += [os.path.join(directory, f) for f in sorted(files) if f.endswith(".keras")]
        if SAVED_MODEL_FILE in files:
            saved_models.append(directory)
    if saved_models:
        parents = {os.path.dirname(folder) for folder in saved_models}
        numbered = [folder for folder in saved_models if re.fullmatch(r"\d+", os.path.basename(folder))]
        if len(parents) == 1 and len(numbered) == len(saved_models):
            saved_models = [max(numbered, key=lambda folder: int(os.path.basename(folder)))]
    candidates = keras_files + saved_models
    if len(candidates) != 1:
        listed = ", ".join(os.path.relpath(c, root) for c in candidates) or "none"
        raise InvalidModelError(
            f"model {name}/{version}: model.tar.gz must hold one .keras file or one SavedModel (saved_model.pb, as in "
            f"1/ or model/1/); found {listed}. Name one with the card's artifact.path", model=name, version=version,
        )
    return candidates[0]


def read_saved_model(folder: str, name: str = "", version: str = ""):
    """The SavedModel protocol buffer of ``folder`` (parsed, nothing run), with its one graph."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(folder, SAVED_MODEL_FILE)
    if os.path.getsize(path) > MAX_GRAPH_BYTES:
        raise InvalidModelError(f"model {name}/{version}: saved_model.pb is over {MAX_GRAPH_BYTES} bytes",
                                model=name, version=version)
    saved = saved_model_pb2.SavedModel()
    try:
        with open(path, "rb") as handle:
            saved.ParseFromString(handle.read())
    except DecodeError as exc:
        raise InvalidModelError(f"model {name}/{version}: saved_model.pb is not a SavedModel: {exc}",
                                model=name, version=version) from exc
    if len(saved.meta_graphs) != 1:
        raise InvalidModelError(f"model {name}/{version}: the SavedModel has {len(saved.meta_graphs)} graphs; "
                                "a TensorFlow 2 export has one", model=name, version=version)
    return saved


def _saver_functions(saved) -> tuple[set[str], set[str], dict]:
    """(the saver's graph nodes, names of the functions only they call, every library function by name)."""
    meta_graph = saved.meta_graphs[0]
    graph = meta_graph.graph_def
    functions = {function.signature.name: function for function in graph.library.function}
    saver_nodes = {tensor.split(":")[0].lstrip("^") for tensor in (meta_graph.saver_def.save_tensor_name,
                                                                      meta_graph.saver_def.restore_op_name)}
    saver_only = _reachable([n for n in graph.node if n.name in saver_nodes], functions) - _reachable(
        [n for n in graph.node if n.name not in saver_nodes], functions)
    return saver_nodes, saver_only, functions


def check_saved_model_graph(folder: str, name: str, version: str) -> None:
    """Refuse a SavedModel whose functions use an operation off :data:`ALLOWED_OPS` (read, never run)."""
    saved = read_saved_model(folder, name, version)
    graph = saved.meta_graphs[0].graph_def
    saver_nodes, saver_only, functions = _saver_functions(saved)

    def refuse(op: str, where: str):
        reason = DANGEROUS_OPS.get(op, "is not on the allowlist of tensor, layer and control-flow operations")
        raise UnsafeModelError(f"model {name}/{version}: the SavedModel's {where} uses the operation {op}, which "
                               f"{reason}; the model is refused before TensorFlow loads it", model=name,
                               version=version, op=op)

    for node in graph.node:
        if node.op not in ALLOWED_OPS and not (node.name in saver_nodes and node.op in CHECKPOINT_OPS):
            refuse(node.op, f"graph node {node.name!r}")
    for function_name, function in functions.items():
        allowed = ALLOWED_OPS | CHECKPOINT_OPS if function_name in saver_only else ALLOWED_OPS
        for node in function.node_def:
            if node.op not in allowed and node.op not in functions:  # a call of a library function by name
                refuse(node.op, f"function {function_name!r}")


def row_activation_bytes(folder: str, input_bytes: int) -> list[int]:
    """float32 bytes of each batch-dependent tensor one input row makes in the SavedModel's functions (their
    ``_output_shapes``), for the memory estimate; an unknown dimension counts as large as the input."""
    import math

    _, saver_only, functions = _saver_functions(read_saved_model(folder))
    sizes = []
    for function_name, function in functions.items():
        if function_name in saver_only:
            continue
        for node in function.node_def:
            for shape in node.attr["_output_shapes"].list.shape if "_output_shapes" in node.attr else ():
                dims = [d.size for d in shape.dim]
                if shape.unknown_rank or not dims or dims[0] != -1:  # not per row: weights and constants
                    continue
                sizes.append(input_bytes if any(d < 0 for d in dims[1:]) else 4 * math.prod(dims[1:]))
    return sizes


def _reachable(nodes, functions: dict) -> set[str]:
    """Names of the library functions the ``nodes`` call, directly or through other functions."""
    found, pending = set(), list(nodes)
    while pending:
        node = pending.pop()
        called = [value.func.name for value in node.attr.values() if value.HasField("func")]
        called += [f.name for value in node.attr.values() if value.HasField("list") for f in value.list.func]
        if node.op in functions:
            called.append(node.op)
        for name in called:
            if name in functions and name not in found:
                found.add(name)
                pending.extend(functions[name].node_def)
    return found


def load_saved_model(folder: str, artifact, name: str, version: str):
    """A Keras model calling the SavedModel's signature: ``(None, *input) -> the named output``."""
    import keras

    signature = getattr(artifact, "signature", None) or "serving_default"
    try:
        layer = keras.layers.TFSMLayer(folder, call_endpoint=signature)
    except Exception as exc:  # a missing signature, a graph TensorFlow cannot read
        raise InvalidModelError(f"model {name}/{version}: the SavedModel could not be loaded with signature "
                                f"{signature!r}: {exc}", model=name, version=version) from exc
    function = layer.call_endpoint_fn
    specs = function.structured_input_signature
    inputs = [spec for spec in (*specs[0], *specs[1].values())]
    if len(inputs) != 1 or len(inputs[0].shape) < 2:
        raise InvalidModelError(f"model {name}/{version}: signature {signature!r} takes {len(inputs)} inputs; "
                                "one batched input is explained", model=name, version=version)
    spec = inputs[0]
    outputs = function.structured_outputs
    output_name = getattr(artifact, "output", None)
    if isinstance(outputs, dict):
        if output_name is None and len(outputs) == 1:
            output_name = next(iter(outputs))
        if output_name not in outputs:
            raise InvalidModelError(
                f"model {name}/{version}: signature {signature!r} returns {sorted(outputs)}; name the class scores "
                "with the card's artifact.output", model=name, version=version)
    elif output_name is not None:
        raise InvalidModelError(f"model {name}/{version}: signature {signature!r} returns one unnamed output; "
                                "remove the card's artifact.output", model=name, version=version)
    image = keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype.name, name=spec.name or "input")
    found = layer(image)
    output = found[output_name] if isinstance(found, dict) else found
    return keras.Model(image, output, name=f"{name}_saved_model")
