"""Memory: each method's estimated peak, the batch size that fits, and the ``over_memory_budget`` refusal.

An image method's peak above what the process already holds is, in bytes,

    fixed + batch x per_row

``fixed`` is what it materialises once whatever the batch (its rows and outputs, SHAP's sample copies of
one input, Deep SHAP's references, which shap does not batch), ``per_row`` what one row of a model batch
costs: the model's activations (:class:`ModelMemory`, measured once per model from its layers' output
shapes: a backward pass keeps every activation, a forward pass only a few at a time) and the method's
perturbed copies of the input. Xplique's methods keep their perturbations within ``batch_size`` except
IntegratedGradients (a whole path per input) and Occlusion (every mask at the input's resolution), which
:mod:`explain_core.bounded_explainers` bounds. The coefficients are checked against measured peaks by the
benchmark's ``memory`` section (docs/benchmark.md#memory).

:func:`fitting_batch_size` is what callers ask: the largest batch (a power of two, at most the requested
one) whose estimate fits the function's memory (Lambda's AWS_LAMBDA_FUNCTION_MEMORY_SIZE, else
MEMORY_LIMIT_MB; none: no limit) minus the process's current RSS and a reserve; when not even one row fits
it raises :class:`~explain_core.errors.OverMemoryBudgetError` before the method runs (an out-of-memory kill
would fail every input of the invocation).

Light: no NumPy or TensorFlow at import (the API image imports the modalities).
"""

import contextlib
import logging
import math
import resource
import threading
from dataclasses import dataclass

from explain_core.errors import OverMemoryBudgetError

LOGGER = logging.getLogger(__name__)
MB = 1024**2
FLOAT = 4  # float32 bytes
#: Per-row slope of the handler's gradient call (``attribution.model_functions``) in peak RSS (VmHWM, batch 4
#: vs 16, or 32 vs 256 for the small demo CNN), less twice the input, over the sum of the layers' outputs:
#: MobileNetV2 224 px 0.30 (26.8 MB/row; fused batch norms and in-place ReLU6 keep no copy), six
#: Conv2D(32, relu) at 224 px 1.27 (47.7 MB/row: a layer's pre-activation is kept beside its output), the
#: demo CNN 1.96 (0.62 MB/row). The factor covers the largest with a 1.12 margin, so it is about 7x
#: conservative on MobileNetV2. A forward pass keeps about 3.5 of its largest output (MobileNetV2, 224 and
#: 1024 px; the plain CNN 13.4 MB/row measured vs 22 estimated). docs/benchmark.md#memory.
BACKWARD_FACTOR = 2.2
FORWARD_LARGEST = 3.5
#: Deep SHAP's references: its coefficient (twice a backward pass) matched the measured peak with no margin
#: (MobileNetV2 1024 px: 4694 MB estimated, 4684 measured with a 0.35 backward factor).
DEEP_SHAP_SAFETY = 1.25
#: LRP's fixed working memory: its relevance pass, one traced graph over every layer (measured: see _method_memory).
LRP_GRAPH_BYTES = 320 * MB
#: A layer output that cannot be read, when none can, counts as this many inputs (a CNN's early feature maps
#: are several times its input).
UNREAD_LAYER_INPUTS = 16
#: Per method whatever the batch: its traced functions and TensorFlow's working buffers.
METHOD_OVERHEAD = 150 * MB
#: shap's PartitionExplainer over an image: its partition tree and Owen-value arrays, per input feature
#: (H x W x C), whatever the batch (MobileNetV2 at 1024 px held 380 bytes a feature above the batch's own part;
#: 512 covers it and the 224 px rows with a 1.1 margin, docs/benchmark.md#memory).
PARTITION_BYTES_PER_FEATURE = 512
#: SuperpixelKernelExplainer: SLIC's float64 working copies of the image, per input feature (MobileNetV2 at
#: 1024 px: 113 bytes a feature above the estimate's other parts).
SLIC_BYTES_PER_FEATURE = 128
#: Kept free for what follows a method (rendering PNGs, encoding .npy files, the metrics' copies).
RESERVE_SHARE, RESERVE_MIN_MB = 0.10, 128


# ---------------------------------------------------------------------------------------- the process
def process_memory_mb(field: str = "VmRSS") -> float:
    """This process's memory from /proc/self/status in MB: ``VmRSS`` (now) or ``VmHWM`` (its high-water mark).

    Not ru_maxrss for the peak: Linux carries the parent's RSS over fork and exec into a child's ru_maxrss."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: the best there is


# ---------------------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class ModelMemory:
    """Bytes one input row costs a model: its input, all its activations, the largest one."""

    input_bytes: int
    activation_bytes: int
    largest_activation_bytes: int

    def forward_row(self) -> float:
        return FORWARD_LARGEST * self.largest_activation_bytes + self.input_bytes

    def backward_row(self) -> float:
        return BACKWARD_FACTOR * self.activation_bytes + 2 * self.input_bytes


def model_memory(model, input_shape: tuple) -> ModelMemory:
    """The float32 sizes of one row's activations: every layer's outputs (nested models' layers included).

    ``input_shape`` (without the batch axis) stands in for the layers' unknown dimensions. A layer whose output
    cannot be read (never called in a graph) counts as large as the largest one read, or as
    ``UNREAD_LAYER_INPUTS`` inputs when none was read: an estimate may be too high, never silently too low."""
    input_bytes = FLOAT * math.prod(input_shape)
    sizes: list[int] = []
    unread: list[str] = []

    def walk(layers):
        for layer in layers:
            if hasattr(layer, "layers") and layer.layers:
                walk(layer.layers)
                continue
            if type(layer).__name__ == "InputLayer":
                continue
            if type(layer).__name__ == "TFSMLayer":  # a SavedModel: the tensors of its graph's functions
                from explain_core.frameworks.sagemaker import row_activation_bytes

                sizes.extend(row_activation_bytes(layer.filepath, input_bytes))
                continue
            try:
                outputs = layer.output
            except (AttributeError, ValueError):  # a layer never called in a graph
                unread.append(getattr(layer, "name", type(layer).__name__))
                continue
            for output in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
                dims = [d for d in tuple(output.shape)[1:]]
                if any(d is None for d in dims):  # dynamic: as large as the input
                    sizes.append(input_bytes)
                else:
                    sizes.append(FLOAT * math.prod(dims))

    walk(getattr(model, "layers", []))
    if unread or not sizes:
        assumed = max(sizes, default=UNREAD_LAYER_INPUTS * input_bytes)
        sizes.extend([assumed] * (len(unread) or 1))
        LOGGER.warning("memory estimate of %s: %d layer output(s) unreadable (%s); each counted as %.0f MB",
                       getattr(model, "name", type(model).__name__), len(unread), ", ".join(unread[:5]) or "no layers",
                       assumed / MB)
    return ModelMemory(input_bytes, sum(sizes), max(sizes))


class ModelMemoryCache:
    """:func:`model_memory` once per (model object, input shape), kept referenced so its id is not reused.

    Thread-safe: the session explains methods in threads. The warning for unreadable layers is thus logged
    once per model and shape."""

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self._entries: dict[tuple[int, tuple], tuple[object, ModelMemory]] = {}
        self._lock = threading.Lock()

    def get(self, model, input_shape: tuple) -> ModelMemory:
        key = (id(model), tuple(input_shape))
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                found = self._entries[key] = (model, model_memory(model, tuple(input_shape)))
                while len(self._entries) > self.capacity:
                    self._entries.pop(next(iter(self._entries)))
            return found[1]


MODEL_MEMORY = ModelMemoryCache()


# ---------------------------------------------------------------------------------------- the methods
@dataclass(frozen=True)
class MemoryEstimate:
    """A method's bytes above what the process holds: ``fixed + batch * per_row``."""

    fixed: float
    per_row: float
    #: False when the method takes no batch size (Deep SHAP): only ``fixed`` counts and it cannot shrink.
    batched: bool = True
    #: Model rows the method evaluates in all (its rows x passes): a batch never holds more.
    max_rows: float = math.inf

    def rows_at_once(self, batch: int) -> float:
        return min(batch, self.max_rows)

    def peak(self, batch: int) -> float:
        return self.fixed + (self.rows_at_once(batch) * self.per_row if self.batched else 0.0)


def method_memory(spec, params: dict, rows: int, memory: ModelMemory, size: tuple[int, int]) -> MemoryEstimate:
    """Estimated working memory of an image method on ``rows`` (image, class) rows of ``size`` (H, W)."""
    import dataclasses

    estimate = _method_memory(spec, params, rows, memory, size)
    return dataclasses.replace(estimate, max_rows=rows * spec.passes(params, size))


def _method_memory(spec, params: dict, rows: int, memory: ModelMemory, size: tuple[int, int]) -> MemoryEstimate:
    name, image, pixels = spec.name, memory.input_bytes, FLOAT * size[0] * size[1]
    # Every method holds its rows, a tf.data copy of them and its attributions (a map per row).
    base = METHOD_OVERHEAD + 3 * rows * image
    if name == "DeepExplainer":  # shap: the input tiled over the references, with them, in one pass per input;
        # its DeepLIFT gradient rules keep about twice a plain backward pass (measured: docs/benchmark.md#memory)
        references = 2 * params["nb_background"]
        return MemoryEstimate(base + DEEP_SHAP_SAFETY * references * (2 * memory.backward_row() + image), 0.0,
                              batched=False)
    if name == "GradientExplainer":  # shap: nb_samples path copies and their deltas and gradients per input
        return MemoryEstimate(base + 3 * params["nb_samples"] * image, memory.backward_row() + image)
    features = image // FLOAT
    if name == "SuperpixelKernelExplainer":  # every coalition's masked image at once (pixels, then preprocessed)
        return MemoryEstimate(base + 2 * params["nb_samples"] * image + SLIC_BYTES_PER_FEATURE * features,
                              memory.forward_row())
    if name == "PartitionExplainer":  # the partition tree and value arrays; per row, the masker's float64 masked
        # copies and blurred background (16 inputs' worth covers the 224 px rows measured, 515-636 MB at 16 rows)
        return MemoryEstimate(base + 2 * image + PARTITION_BYTES_PER_FEATURE * features,
                              memory.forward_row() + 16 * image)
    if name == "LRP":  # a backward pass per row, and a fixed part: its one relevance graph of every layer's rule
        # (measured 320-410 MB over the baseline at 16 rows on the VGG-style CNN and MobileNetV2 at 224 px, whose
        # backward rows the estimate puts at 3-20 MB; docs/benchmark.md#memory)
        return MemoryEstimate(base + LRP_GRAPH_BYTES, memory.backward_row() + 2 * image)
    if spec.backward:  # Xplique gradient methods (IntegratedGradients' path chunked by bounded_explainers)
        return MemoryEstimate(base, memory.backward_row() + 2 * image)
    if name == "FEM":  # a model returning its feature maps keeps every layer's output of the row: measured at
        # 1024 px (MobileNetV2) twice what a forward pass alone keeps
        return MemoryEstimate(base, memory.forward_row() + memory.activation_bytes)
    if name in ("SobolAttributionMethod", "HsicAttributionMethod"):  # masks at grid resolution, all at once
        grid = params["grid_size"] ** 2
        return MemoryEstimate(base + 2 * FLOAT * spec.passes(params, size) * grid,
                              memory.forward_row() + 2 * image + pixels)
    # Occlusion (masks made per batch by bounded_explainers), Rise, Lime, KernelShap: a batch of masked
    # copies, their upsampled masks and the model's forward pass.
    return MemoryEstimate(base, memory.forward_row() + 2 * image + 2 * pixels)


# ---------------------------------------------------------------------------------------- the budget
def available_bytes(settings, in_use_mb: float | None = None) -> float | None:
    """Bytes a method may still take: the function's memory minus the current RSS and a reserve; None: no limit."""
    limit = settings.memory_limit_mb
    if not limit:
        return None
    in_use = process_memory_mb() if in_use_mb is None else in_use_mb
    reserve = max(RESERVE_MIN_MB, RESERVE_SHARE * limit)
    return (limit - in_use - reserve) * MB


def largest_power_of_two(value: float) -> int:
    """The largest power of two at most ``value`` (>= 1)."""
    return 1 << max(0, int(math.floor(math.log2(max(1.0, value)))))


def fitting_batch_size(spec, params: dict, rows: int, model, card, requested: int, settings,
                       in_use_mb: float | None = None) -> int:
    """The batch size to build ``spec``'s explainer with: ``requested``, or the largest power of two below it
    whose estimated peak fits; OverMemoryBudgetError when not even a batch of one fits.

    Powers of two keep the explainers (cached per batch size) and their traced functions few."""
    available = available_bytes(settings, in_use_mb)
    if available is None:
        return requested
    size = (card.input_height, card.input_width)
    estimate = method_memory(spec, params, rows, MODEL_MEMORY.get(model, (*size, card.input_channels)), size)
    if estimate.peak(requested) <= available:
        return requested
    if estimate.batched and estimate.per_row > 0 and estimate.peak(1) <= available:
        return min(requested, largest_power_of_two((available - estimate.fixed) / estimate.per_row))
    needed = estimate.peak(1)
    raise OverMemoryBudgetError(
        f"{spec.name} needs about {needed / MB:.0f} MB for {rows} input(s) at {size[0]}x{size[1]} even one model "
        f"pass at a time, but the function has {max(0.0, available) / MB:.0f} MB left of its "
        f"{settings.memory_limit_mb} MB; use fewer samples, a smaller model input or a function with more memory",
        method=spec.name, estimated_mb=round(needed / MB), available_mb=round(max(0.0, available) / MB),
        memory_limit_mb=settings.memory_limit_mb,
    )
