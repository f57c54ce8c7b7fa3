"""The registry of explanation methods: one entry per method, and the only place to add one.

An entry gives the method's name, family, the Xplique class that computes it, its
user-settable parameters with defaults and bounds, its cost in model passes per image, and
the paper it implements. Parameter validation and cost limits are derived from the entry, so
an upload cannot ask for ``steps=10**9`` and tie a function up for 15 minutes.
"""

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from explain_core.errors import InvalidParameterError, UnknownMethodError, UnknownMetricError

GRADIENT = "gradient"
PERTURBATION = "perturbation"
SHAP = "shap"
FAMILIES = (GRADIENT, PERTURBATION, SHAP)

#: Upper bound on model evaluations one method may spend on one image.
MAX_PASSES_PER_IMAGE = 50_000
#: Approximation checks a method may declare (explain_core.approximation computes them).
APPROXIMATION_CHECKS = ("completeness", "additivity")
#: How a gradient method's per-dimension attributions become one value per token of a text model.
TOKEN_REDUCTIONS = ("sum", "l2")


@dataclass(frozen=True)
class Param:
    """A user-settable parameter: its type, default and inclusive bounds (or allowed choices)."""

    name: str
    kind: type
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple | None = None
    power_of_two: bool = False
    doc: str = ""

    def validate(self, method: str, value: Any, owner: str = "method") -> Any:
        """``value`` checked and converted; ``method`` names the entry it belongs to (a method, or a
        metric with ``owner="metric"``) in the error's details."""

        def fail(reason: str):
            raise InvalidParameterError(
                f"{method}.{self.name}={value!r}: {reason}", **{owner: method}, parameter=self.name,
                bounds=self.describe(),
            )

        if self.kind is bool:
            if not isinstance(value, bool):
                fail("expected true or false")
            return value
        if self.kind is str:
            if not isinstance(value, str):
                fail("expected a string")
        elif self.kind is int:
            # Accept 32.0 from JSON but never 32.5, True, "32", NaN or infinity.
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (isinstance(value, float) and not value.is_integer())
            ):
                fail("expected an integer")
            value = int(value)
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                fail("expected a finite number")
            try:
                value = float(value)  # an int like 10**400 overflows
            except OverflowError:
                fail("expected a finite number")
            if not math.isfinite(value):
                fail("expected a finite number")
        if self.choices is not None and value not in self.choices:
            fail(f"expected one of {list(self.choices)}")
        if self.minimum is not None and value < self.minimum:
            fail(f"must be >= {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            fail(f"must be <= {self.maximum}")
        if self.power_of_two and (value & (value - 1)) != 0:
            fail("must be a power of two")
        return value

    def describe(self) -> dict:
        spec = {"type": self.kind.__name__, "default": self.default}
        for key in ("minimum", "maximum", "choices"):
            if getattr(self, key) is not None:
                spec[key] = list(self.choices) if key == "choices" else getattr(self, key)
        if self.power_of_two:
            spec["power_of_two"] = True
        if self.doc:
            spec["doc"] = self.doc
        return spec


def resolve_params(params: tuple[Param, ...], overrides: Mapping[str, Any] | None, name: str,
                   owner: str = "method") -> dict:
    """The defaults of ``params`` updated with ``overrides``, each checked against its bounds; an
    unknown parameter is refused naming the ``owner`` entry (a method or a metric) ``name``."""
    overrides = dict(overrides or {})
    by_name = {p.name: p for p in params}
    unknown = sorted(set(overrides) - set(by_name))
    if unknown:
        label = name if owner == "method" else f"{owner} {name}"
        raise InvalidParameterError(
            f"{label} has no parameter {', '.join(unknown)}; it takes {sorted(by_name) or 'none'}",
            **{owner: name}, parameters=unknown,
        )
    return {**{p.name: p.default for p in params},
            **{key: by_name[key].validate(name, value, owner) for key, value in overrides.items()}}


def import_dotted(path: str):
    """The class at a dotted path, imported on first use so the registry stays light."""
    module, _, cls = path.rpartition(".")
    return getattr(importlib.import_module(module), cls)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    family: str
    #: Dotted path of the Xplique class; imported on first use so the registry stays light.
    explainer: str
    reference: str
    params: tuple[Param, ...] = ()
    #: Model passes per image for given parameters and input size (height, width).
    passes: Callable[[Mapping[str, Any], tuple[int, int]], int] = lambda params, size: 1
    #: Extra constructor arguments derived from the model card or the parameters.
    uses_cam_layer: bool = False
    #: The method reads or changes the model's layers (a conv layer's maps, ReLU gradients, relevance rules per
    #: layer): a SavedModel, whose layers are hidden, is refused (explain_core.frameworks.sagemaker).
    reads_layers: bool = False
    #: The explainer is built with the model card (``card=``): input bounds from its preprocessing.
    uses_card: bool = False
    #: Parameters that the method takes as a segmentation grid, not as constructor arguments.
    grid_segments: bool = False
    description: str = ""
    #: The models it explains: card modalities ("image", "tabular") and frameworks ("keras", "xgboost").
    modalities: tuple[str, ...] = ("image",)
    frameworks: tuple[str, ...] = ("keras",)
    #: Each pass is a forward and a backward pass (the cost estimate and the benchmark's floor count both).
    #: None: the family's default (gradient methods: True, others: False).
    backward: bool | None = None
    #: Each pass evaluates the model on every background row (Kernel SHAP's coalitions).
    passes_per_background_row: bool = False
    #: Modalities the method refuses on purpose, with the reason the refusal gives (unsupported_model).
    refuses: tuple[tuple[str, str], ...] = ()
    #: The approximation check of every output (explain_core.approximation): "completeness" (the
    #: attributions sum to f(x) - f(baseline)) or "additivity" (SHAP: they sum to f(x) - base value).
    approximation: str | None = None
    #: The parameter that makes the approximation more accurate, named by the warning when the
    #: error exceeds its threshold; None for an exact method (with a check) or no check.
    accuracy_param: str | None = None
    #: Gradient methods on a text model: how a token's per-dimension attributions (over its embedding) become
    #: one value: "sum" (signed; the sum completeness needs, or an L1 norm of absolute values) or "l2" (their
    #: Euclidean norm: an unsigned magnitude).
    token_reduction: str = "sum"
    param_names: frozenset = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "param_names", frozenset(p.name for p in self.params))
        if self.backward is None:
            object.__setattr__(self, "backward", self.family == GRADIENT)
        if self.approximation not in (None, *APPROXIMATION_CHECKS):
            raise ValueError(f"{self.name}: approximation must be one of {APPROXIMATION_CHECKS}")
        if self.accuracy_param is not None and (self.approximation is None or self.accuracy_param not in
                                                self.param_names):
            raise ValueError(f"{self.name}: accuracy_param must be one of its parameters, with a check")
        if self.token_reduction not in TOKEN_REDUCTIONS:
            raise ValueError(f"{self.name}: token_reduction must be one of {TOKEN_REDUCTIONS}")

    def refusal(self, card) -> str | None:
        """Why this method refuses the card's modality on purpose, or None."""
        return dict(self.refuses).get(card.modality)

    def supports(self, card) -> bool:
        """True when this method can explain the card's model (modality and framework)."""
        return card.modality in self.modalities and card.framework in self.frameworks

    @property
    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}

    def explainer_class(self):
        return import_dotted(self.explainer)

    def resolve(self, overrides: Mapping[str, Any] | None, input_size: tuple[int, int]) -> dict:
        """Defaults updated with ``overrides``, each checked; the cost is checked too."""
        params = resolve_params(self.params, overrides, self.name)
        cost = self.passes(params, input_size)
        if cost > MAX_PASSES_PER_IMAGE:
            raise InvalidParameterError(
                f"{self.name} with {params} needs {cost} model passes per image; the limit is {MAX_PASSES_PER_IMAGE}",
                method=self.name,
                passes=cost,
            )
        return params

    def describe(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "reference": self.reference,
            "description": self.description,
            "modalities": list(self.modalities),
            "frameworks": list(self.frameworks),
            "parameters": {p.name: p.describe() for p in self.params},
        }


def _occlusion_passes(params, size):
    height, width = size
    patch, stride = params["patch_size"], params["patch_stride"]
    if patch > min(height, width):
        raise InvalidParameterError(
            f"Occlusion.patch_size={patch} is larger than the model input ({height}x{width})",
            method="Occlusion",
            parameter="patch_size",
        )
    # Xplique places patches at 0, stride, ... while they fit: ceil((side - patch + 1) / stride).
    return math.ceil((height - patch + 1) / stride) * math.ceil((width - patch + 1) / stride)


_STEPS = Param("steps", int, 50, 2, 512, doc="points on the path from the baseline to the input")
_BASELINE = Param("baseline_value", float, 0.0, -10.0, 10.0,
                  doc="value of the baseline: every pixel (model input space) or, for text, every embedding value")
_NB_SAMPLES_GRAD = Param("nb_samples", int, 50, 2, 512, doc="noisy copies of the input")
_NOISE = Param("noise", float, 0.2, 0.0, 2.0,
               doc="standard deviation of the Gaussian noise (model input space; text: on the embeddings)")
_GRID = Param("grid_size", int, 8, 2, 32, doc="the image is split into grid_size x grid_size cells")
_GSA_GRID = Param("grid_size", int, 8, 2, 16, doc="the image is split into grid_size x grid_size cells")
_PERTURBATION = Param(
    "perturbation_function", str, "inpainting", choices=("inpainting", "blurring", "amplitude"),
    doc="how cells are masked",
)


def _per_sample(params, size):
    return params["nb_samples"]


def _partition_passes(params, size):
    if params["masker"] == "blur" and params["blur_kernel"] > min(size):
        raise InvalidParameterError(
            f"PartitionExplainer.blur_kernel={params['blur_kernel']} is larger than the model input "
            f"({size[0]}x{size[1]})",
            method="PartitionExplainer",
            parameter="blur_kernel",
        )
    return params["max_evals"]


_SHAP_NB_SAMPLES = Param("nb_samples", int, 500, 16, 10000, doc="coalitions evaluated (Kernel SHAP)")
_SHAP_REFERENCE = (
    "Lundberg and Lee, A Unified Approach to Interpreting Model Predictions (2017), https://arxiv.org/abs/1705.07874"
)
_SHAP = "explain_core.shap_methods."
_TEXT = "explain_core.text_methods."
_HIDE_WITH = Param("hide_with", str, "padding", choices=("padding", "unknown"),
                   doc="what a hidden word becomes: the padding token (removed, for a model that masks padding) or "
                       "the out-of-vocabulary token")


_GRADIENT_STATS = (_NB_SAMPLES_GRAD, _NOISE)

METHODS: tuple[MethodSpec, ...] = (
    # --- white-box: gradients of the explained class score with respect to the input ---
    MethodSpec(
        "Saliency", GRADIENT, "xplique.attributions.Saliency",
        "Simonyan et al., Deep Inside Convolutional Networks: Visualising Image Classification Models and "
        "Saliency Maps (2013), https://arxiv.org/abs/1312.6034",
        modalities=("image", "text"),
        description="absolute gradient of the class score: its maximum over channels (images), its sum over "
                    "embedding dimensions (text)",
    ),
    MethodSpec(
        "GradientInput", GRADIENT, "xplique.attributions.GradientInput",
        "Shrikumar et al., Not Just a Black Box: Learning Important Features Through Propagating Activation "
        "Differences (2016), https://arxiv.org/abs/1605.01713",
        modalities=("image", "text"), description="gradient times input",
    ),
    MethodSpec(
        "IntegratedGradients", GRADIENT, "xplique.attributions.IntegratedGradients",
        "Sundararajan et al., Axiomatic Attribution for Deep Networks (2017), https://arxiv.org/abs/1703.01365",
        params=(_STEPS, _BASELINE), passes=lambda p, s: p["steps"], approximation="completeness",
        accuracy_param="steps",
        modalities=("image", "text"), description="gradients integrated along a straight path from a baseline",
    ),
    MethodSpec(
        "SmoothGrad", GRADIENT, "xplique.attributions.SmoothGrad",
        "Smilkov et al., SmoothGrad: removing noise by adding noise (2017), https://arxiv.org/abs/1706.03825",
        params=_GRADIENT_STATS, passes=_per_sample, modalities=("image", "text"), token_reduction="l2",
        description="mean gradient over noisy copies (text: its L2 norm over embedding dimensions)",
    ),
    MethodSpec(
        "VarGrad", GRADIENT, "xplique.attributions.VarGrad",
        "Adebayo et al., Local Explanation Methods for Deep Neural Networks Lack Sensitivity to Parameter "
        "Values (2018), https://arxiv.org/abs/1810.03307",
        params=_GRADIENT_STATS, passes=_per_sample, description="variance of gradients over noisy copies",
    ),
    MethodSpec(
        "SquareGrad", GRADIENT, "xplique.attributions.SquareGrad",
        "Hooker et al., A Benchmark for Interpretability Methods in Deep Neural Networks (2019), "
        "https://arxiv.org/abs/1806.10758",
        params=_GRADIENT_STATS, passes=_per_sample, description="mean squared gradient over noisy copies",
    ),
    MethodSpec(
        "GuidedBackprop", GRADIENT, "xplique.attributions.GuidedBackprop",
        "Springenberg et al., Striving for Simplicity: The All Convolutional Net (2014), "
        "https://arxiv.org/abs/1412.6806",
        description="gradient with ReLUs passing only positive gradients of positive activations", reads_layers=True,
    ),
    MethodSpec(
        "DeconvNet", GRADIENT, "xplique.attributions.DeconvNet",
        "Zeiler and Fergus, Visualizing and Understanding Convolutional Networks (2013), "
        "https://arxiv.org/abs/1311.2901",
        description="gradient with ReLUs applied to the backward signal", reads_layers=True,
    ),
    MethodSpec(
        "GradCAM", GRADIENT, "xplique.attributions.GradCAM",
        "Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization "
        "(2016), https://arxiv.org/abs/1610.02391",
        uses_cam_layer=True, reads_layers=True, description="class activation map weighted by pooled gradients",
    ),
    MethodSpec(
        "GradCAMPP", GRADIENT, "xplique.attributions.GradCAMPP",
        "Chattopadhyay et al., Grad-CAM++: Improved Visual Explanations for Deep Convolutional Networks "
        "(2017), https://arxiv.org/abs/1710.11063",
        uses_cam_layer=True, reads_layers=True, description="Grad-CAM with higher-order gradient weights",
    ),
    MethodSpec(
        "FEM", GRADIENT, "xplique.attributions.FEM",
        "Fuad et al., Features Understanding in 3D CNNs for Actions Recognition in Video (2020), "
        "https://doi.org/10.1109/IPTA50016.2020.9286629",
        params=(Param("k", float, 2.0, 0.1, 10.0, doc="standard deviations above the mean that count as salient"),),
        uses_cam_layer=True, reads_layers=True,
        description="feature explanation method: salient feature maps, no gradients",
        backward=False,  # the conv layer's feature maps of a forward pass, no gradients
    ),
    MethodSpec(
        "LRP", GRADIENT, "explain_core.lrp.LRP",
        "Bach et al., On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise Relevance "
        "Propagation (2015), https://doi.org/10.1371/journal.pone.0130140; Montavon et al., Layer-Wise Relevance "
        "Propagation: An Overview (2019), https://doi.org/10.1007/978-3-030-28954-6_10",
        params=(
            Param("rule", str, "gamma", choices=("epsilon", "gamma", "alpha_beta"),
                  doc="rule of the convolution layers (dense layers always use epsilon)"),
            Param("epsilon", float, 0.25, 0.0, 100.0, doc="stabiliser of the epsilon rule (0: LRP-0)"),
            Param("gamma", float, 0.25, 0.0, 100.0, doc="extra weight of positive contributions (gamma rule)"),
            Param("alpha", float, 2.0, 1.0, 10.0, doc="alpha of the alpha-beta rule (beta = alpha - 1)"),
            Param("first_layer", str, "zbox", choices=("zbox", "zplus", "wsquare", "same"),
                  doc="rule of the layer reading the pixels: zbox (bounded by the pixel range), zplus, wsquare "
                      "or the same as the others"),
        ),
        reads_layers=True, uses_card=True,
        description="layer-wise relevance propagation of the class logit, rule by layer (batch norm folded)",
    ),
    MethodSpec(
        "XRAI", GRADIENT, "explain_core.xrai.XRAI",
        "Kapishnikov et al., XRAI: Better Attributions Through Regions (2019), https://arxiv.org/abs/1906.02825",
        params=(
            Param("steps", int, 32, 2, 256, doc="Integrated Gradients path points per baseline (black and white)"),
            Param("top_percent", float, 10.0, 1.0, 100.0, doc="area of the top-regions mask, in % of the image"),
        ),
        passes=lambda p, s: 2 * p["steps"], uses_card=True,
        description="Integrated Gradients (black and white baselines) over Felzenszwalb regions at several "
                    "scales, regions ranked by attribution density; a mask of the top regions",
    ),
    # --- black-box: the model is only evaluated on perturbed copies of the input ---
    MethodSpec(
        "Occlusion", PERTURBATION, "xplique.attributions.Occlusion",
        "Zeiler and Fergus, Visualizing and Understanding Convolutional Networks (2013), "
        "https://arxiv.org/abs/1311.2901",
        params=(
            Param("patch_size", int, 16, 1, 256, doc="side of the square patch hidden each pass (pixels)"),
            Param("patch_stride", int, 8, 1, 256, doc="step between patches (pixels)"),
            Param("occlusion_value", float, 0.0, -10.0, 10.0, doc="value painted in the patch (model input space)"),
        ),
        passes=_occlusion_passes, description="score drop when a patch is hidden",
    ),
    MethodSpec(
        "Rise", PERTURBATION, "xplique.attributions.Rise",
        "Petsiuk et al., RISE: Randomized Input Sampling for Explanation of Black-box Models (2018), "
        "https://arxiv.org/abs/1806.07421",
        params=(
            Param("nb_samples", int, 2000, 16, 20000, doc="random masks"),
            Param("grid_size", int, 7, 2, 32, doc="resolution of the random masks"),
            Param("preservation_probability", float, 0.5, 0.05, 0.95, doc="share of cells kept in a mask"),
            Param("mask_value", float, 0.0, -10.0, 10.0, doc="value of hidden cells (model input space)"),
        ),
        passes=_per_sample, description="score-weighted average of random masks",
    ),
    MethodSpec(
        "Lime", PERTURBATION, "xplique.attributions.Lime",
        "Ribeiro et al., \"Why Should I Trust You?\": Explaining the Predictions of Any Classifier (2016), "
        "https://arxiv.org/abs/1602.04938",
        params=(
            Param("nb_samples", int, 300, 16, 5000, doc="perturbed samples"),
            _GRID,
            Param("kernel_width", float, 45.0, 0.1, 1000.0, doc="width of the similarity kernel"),
            Param("prob", float, 0.5, 0.05, 0.95, doc="probability that a segment is kept"),
        ),
        passes=_per_sample, grid_segments=True, description="local linear surrogate over image cells",
    ),
    MethodSpec(
        "KernelShap", PERTURBATION, "xplique.attributions.KernelShap",
        "Lundberg and Lee, A Unified Approach to Interpreting Model Predictions (2017), "
        "https://arxiv.org/abs/1705.07874",
        params=(Param("nb_samples", int, 300, 16, 5000, doc="coalitions evaluated"), _GRID),
        passes=_per_sample, grid_segments=True, description="Shapley values of image cells (Kernel SHAP)",
    ),
    MethodSpec(
        "SobolAttributionMethod", PERTURBATION, "xplique.attributions.SobolAttributionMethod",
        "Fel et al., Look at the Variance! Efficient Black-box Explanations with Sobol-based Sensitivity "
        "Analysis (2021), https://arxiv.org/abs/2111.04138",
        params=(
            _GSA_GRID,
            Param("nb_design", int, 32, 8, 1024, power_of_two=True, doc="designs of the quasi-Monte Carlo sampler"),
            _PERTURBATION,
        ),
        passes=lambda p, s: p["nb_design"] * (p["grid_size"] ** 2 + 2),
        description="total Sobol indices of image cells",
    ),
    MethodSpec(
        "HsicAttributionMethod", PERTURBATION, "xplique.attributions.HsicAttributionMethod",
        "Novello et al., Making Sense of Dependence: Efficient Black-box Explanations Using Dependence Measure "
        "(2022), https://arxiv.org/abs/2206.06219",
        params=(
            _GSA_GRID,
            Param("nb_design", int, 500, 16, 4000, doc="perturbed samples"),
            _PERTURBATION,
        ),
        passes=lambda p, s: p["nb_design"],
        description="Hilbert-Schmidt independence between cells and the score",
    ),
    # --- text: black-box over words (explain_core.text_methods) ---
    MethodSpec(
        "WordOcclusion", PERTURBATION, _TEXT + "WordOcclusion",
        "Zeiler and Fergus, Visualizing and Understanding Convolutional Networks (2013), "
        "https://arxiv.org/abs/1311.2901; Li et al., Understanding Neural Networks through Representation Erasure "
        "(2016), https://arxiv.org/abs/1612.08220",
        params=(_HIDE_WITH,), passes=lambda p, s: s[1], modalities=("text",),
        description="score drop when one word is hidden, for each word",
    ),
    MethodSpec(
        "WordLime", PERTURBATION, _TEXT + "WordLime",
        "Ribeiro et al., \"Why Should I Trust You?\": Explaining the Predictions of Any Classifier (2016), "
        "https://arxiv.org/abs/1602.04938",
        params=(
            Param("nb_samples", int, 500, 16, 5000, doc="perturbed copies of the document"),
            Param("kernel_width", float, 0.25, 0.01, 10.0, doc="width of the similarity kernel (cosine distance)"),
            Param("prob", float, 0.5, 0.05, 0.95, doc="probability that a word is kept in a copy"),
            _HIDE_WITH,
        ),
        passes=_per_sample, modalities=("text",), description="local linear surrogate over the document's words",
    ),
    # --- SHAP: Shapley values (shap library); image, tabular and text models ---
    MethodSpec(
        "GradientExplainer", SHAP, _SHAP + "GradientExplainer",
        "Erion et al., Improving performance of deep learning models with axiomatic attribution priors and "
        "expected gradients (2021), https://arxiv.org/abs/1906.10670; " + _SHAP_REFERENCE,
        params=(
            Param("nb_samples", int, 200, 8, 5000, doc="background-to-input path samples (expected gradients)"),
            Param("local_smoothing", float, 0.0, 0.0, 1.0, doc="standard deviation of noise added to the input"),
        ),
        passes=_per_sample, backward=True, modalities=("image", "tabular"),
        approximation="additivity", accuracy_param="nb_samples",
        description="expected gradients: gradients averaged over paths from background samples",
    ),
    MethodSpec(
        "DeepExplainer", SHAP, _SHAP + "DeepExplainer",
        "Shrikumar et al., Learning Important Features Through Propagating Activation Differences (2017), "
        "https://arxiv.org/abs/1704.02685; " + _SHAP_REFERENCE,
        params=(Param("nb_background", int, 32, 1, 256, doc="background samples used as DeepLIFT references"),),
        passes=lambda p, s: p["nb_background"], backward=True, modalities=("image", "tabular"),
        refuses=(("text", "shap's DeepExplainer cannot trace TensorFlow 2's recurrent layers (LSTM, GRU: shap issues "
                          "#1490 and #4023; the fix, PR #3419, was closed unmerged) and an Embedding's ids have no "
                          "gradient; use IntegratedGradients on the embeddings (gradient family) or "
                          "TextPartitionExplainer"),),
        approximation="additivity", accuracy_param="nb_background", reads_layers=True,
        description="Deep SHAP: DeepLIFT multipliers averaged over background references",
    ),
    MethodSpec(
        "PartitionExplainer", SHAP, _SHAP + "PartitionExplainer",
        "Owen, Values of Games with a Priori Unions (1977), https://doi.org/10.1007/978-3-642-45494-3_7; "
        "shap's Partition explainer, https://shap.readthedocs.io/en/latest/generated/shap.PartitionExplainer.html",
        params=(
            Param("max_evals", int, 500, 50, 20000, doc="model evaluations per image"),
            Param("masker", str, "blur", choices=("blur", "inpaint_telea", "inpaint_ns"),
                  doc="how hidden regions are filled"),
            Param("blur_kernel", int, 16, 2, 512, doc="blur kernel side in pixels (masker=blur)"),
        ),
        passes=_partition_passes, approximation="additivity", accuracy_param="max_evals",
        description="Owen values of a hierarchy of image regions, hidden by blurring or inpainting",
    ),
    MethodSpec(
        "SuperpixelKernelExplainer", SHAP, _SHAP + "SuperpixelKernelExplainer",
        "Achanta et al., SLIC Superpixels Compared to State-of-the-Art Superpixel Methods (2012), "
        "https://doi.org/10.1109/TPAMI.2012.120; " + _SHAP_REFERENCE,
        params=(
            Param("nb_segments", int, 50, 4, 500, doc="SLIC super-pixels requested"),
            Param("compactness", float, 10.0, 0.01, 1000.0, doc="SLIC: higher gives squarer segments"),
            Param("fill", str, "blur", choices=("blur", "mean"),
                  doc="a hidden segment shows a blurred copy of the image, or the image's mean colour"),
            _SHAP_NB_SAMPLES,
        ),
        passes=_per_sample, approximation="additivity", accuracy_param="nb_samples",
        description="Kernel SHAP over SLIC super-pixels; hidden segments are blurred",
    ),
    MethodSpec(
        "TextPartitionExplainer", SHAP, _TEXT + "TextPartitionExplainer",
        "Owen, Values of Games with a Priori Unions (1977), https://doi.org/10.1007/978-3-642-45494-3_7; "
        "shap's Partition explainer with a Text masker, "
        "https://shap.readthedocs.io/en/latest/example_notebooks/text_examples/sentiment_analysis/"
        "Emotion%20classification%20multiclass%20example.html",
        params=(
            Param("max_evals", int, 500, 20, 20000, doc="model evaluations per document and class"),
            Param("granularity", str, "word", choices=("word", "sentence"), doc="what a value covers"),
            _HIDE_WITH,
        ),
        passes=lambda p, s: p["max_evals"], modalities=("text",), approximation="additivity",
        accuracy_param="max_evals",
        description="Owen values of words (or sentences) over shap's text hierarchy, hidden words replaced",
    ),
    MethodSpec(
        "KernelExplainer", SHAP, _SHAP + "KernelExplainer", _SHAP_REFERENCE,
        params=(_SHAP_NB_SAMPLES,), passes=_per_sample, modalities=("tabular",), passes_per_background_row=True,
        approximation="additivity", accuracy_param="nb_samples",
        description="Kernel SHAP over tabular features against a background sample",
    ),
    MethodSpec(
        "TreeExplainer", SHAP, _SHAP + "TreeExplainer",
        "Lundberg et al., From local explanations to global understanding with explainable AI for trees "
        "(2020), https://doi.org/10.1038/s42256-019-0138-9",
        params=(
            Param("feature_perturbation", str, "tree_path_dependent",
                  choices=("tree_path_dependent", "interventional"),
                  doc="tree_path_dependent needs no background; interventional uses the background"),
        ),
        modalities=("tabular",), frameworks=("xgboost",), approximation="additivity",
        description="exact Shapley values of tree ensembles (XGBoost)",
    ),
)

REGISTRY: dict[str, MethodSpec] = {spec.name: spec for spec in METHODS}


def methods_of(family: str, card=None) -> list[MethodSpec]:
    """The family's methods; with a card, only those that can explain its model."""
    return [spec for spec in METHODS if spec.family == family and (card is None or spec.supports(card))]


def get_method(name: str, family: str) -> MethodSpec:
    """The entry named ``name`` (case-insensitive), which must belong to ``family``."""
    spec = REGISTRY.get(name) or next((s for s in METHODS if s.name.lower() == str(name).lower()), None)
    if spec is None or spec.family != family:
        available = ", ".join(s.name for s in methods_of(family))
        where = f" (it belongs to the {spec.family} family)" if spec else ""
        raise UnknownMethodError(
            f"unknown {family} method {name!r}{where}; available: {available}", method=name, family=family
        )
    return spec


# ====================================================================== quality metrics
# Scores of an explanation (explain_core.quality_metrics computes them): one entry per metric,
# with its parameters, bounds and cost in model passes, like the methods above.
FIDELITY = "fidelity"
STABILITY = "stability"
COMPLEXITY = "complexity"


@dataclass(frozen=True)
class MetricSpec:
    """An Xplique metric that scores one explanation (one image, one class, one method)."""

    name: str
    #: Dotted path of the Xplique class; imported on first use so the registry stays light.
    metric: str
    reference: str
    description: str
    #: fidelity (does the map follow the model?), stability (does it survive noise?) or complexity
    #: (how concentrated is it?; no model pass).
    kind: str
    higher_is_better: bool
    #: The score's range: (minimum, maximum); None where it is unbounded.
    score_range: tuple[float | None, float | None]
    #: What a good score looks like, for people (docs, GET /methods).
    good: str
    params: tuple[Param, ...] = ()
    #: Model passes to score one (image, class) row, for given parameters and the explained method's
    #: passes per image (AverageStability re-runs the method on noisy copies).
    passes: Callable[[Mapping[str, Any], int], int] = lambda params, method_passes: 0
    #: The passes are the explained method's own (a backward pass for gradient methods), not forward passes.
    reruns_method: bool = False
    #: How explain_core.quality_metrics scores rows with the Xplique class: "map" (the maps alone, no
    #: model pass), "curve" (Deletion/Insertion curves), "subsets" (MuFidelity's random cell subsets) or
    #: "rerun" (the method run again on noisy copies).
    scoring: str = "map"
    modalities: tuple[str, ...] = ("image",)
    param_names: frozenset = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "param_names", frozenset(p.name for p in self.params))

    @property
    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}

    def metric_class(self):
        return import_dotted(self.metric)

    def resolve(self, overrides: Mapping[str, Any] | None, input_size: tuple[int, int]) -> dict:
        """Defaults updated with ``overrides``, each checked against its bounds and the input size."""
        params = resolve_params(self.params, overrides, self.name, owner="metric")
        if params.get("grid_size", 0) > min(input_size):
            raise InvalidParameterError(
                f"{self.name}.grid_size={params['grid_size']} is larger than the model input "
                f"({input_size[0]}x{input_size[1]})", metric=self.name, parameter="grid_size",
            )
        return params

    def passes_for(self, params: Mapping[str, Any], method: MethodSpec, method_params: Mapping[str, Any],
                   input_size: tuple[int, int]) -> int:
        """Model passes to score one row explained by ``method``; over MAX_PASSES_PER_IMAGE is refused."""
        cost = self.passes(params, method.passes(method_params, input_size))
        if cost > MAX_PASSES_PER_IMAGE:
            raise InvalidParameterError(
                f"metric {self.name} with {dict(params)} on {method.name} needs {cost} model passes per image; "
                f"the limit is {MAX_PASSES_PER_IMAGE}", metric=self.name, method=method.name, passes=cost,
            )
        return cost

    def describe(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "reference": self.reference,
            "description": self.description,
            "higher_is_better": self.higher_is_better,
            "range": list(self.score_range),
            "good": self.good,
            "modalities": list(self.modalities),
            "parameters": {p.name: p.describe() for p in self.params},
        }


_BHATT = ("Bhatt et al., Evaluating and Aggregating Feature-based Model Explanations (2020), "
          "https://arxiv.org/abs/2005.00631")
_RISE = ("Petsiuk et al., RISE: Randomized Input Sampling for Explanation of Black-box Models (2018), "
         "https://arxiv.org/abs/1806.07421")
_CAUSAL_PARAMS = (
    Param("steps", int, 10, 2, 64, doc="points of the curve after its start (pixels are flipped in this many steps)"),
    Param("max_percentage_perturbed", float, 1.0, 0.05, 1.0, doc="share of the pixels flipped at the last step"),
    Param("baseline_value", float, 0.0, -10.0, 10.0, doc="value of a removed pixel (model input space)"),
)

METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "Deletion", "xplique.metrics.Deletion", _RISE,
        "area under the class probability as the most important pixels are removed first",
        FIDELITY, higher_is_better=False, score_range=(0.0, 1.0),
        good="low: the probability falls fast when the pixels the map ranks first are removed",
        params=_CAUSAL_PARAMS, passes=lambda p, m: p["steps"] + 1, scoring="curve",
    ),
    MetricSpec(
        "Insertion", "xplique.metrics.Insertion", _RISE,
        "area under the class probability as the most important pixels are inserted first into a blank image",
        FIDELITY, higher_is_better=True, score_range=(0.0, 1.0),
        good="high: the probability rises fast when the pixels the map ranks first are put back",
        params=_CAUSAL_PARAMS, passes=lambda p, m: p["steps"] + 1, scoring="curve",
    ),
    MetricSpec(
        "MuFidelity", "xplique.metrics.MuFidelity", _BHATT,
        "Spearman correlation between the attributions of random cell subsets and the probability drop "
        "when those cells are removed",
        FIDELITY, higher_is_better=True, score_range=(-1.0, 1.0),
        good="high (near 1): removing what the map calls important lowers the probability most",
        params=(
            Param("nb_samples", int, 128, 8, 512, doc="random subsets removed (the score's noise falls as 1/sqrt)"),
            Param("grid_size", int, 8, 2, 64, doc="the image is split into grid_size x grid_size cells"),
            Param("subset_percent", float, 0.2, 0.01, 0.99, doc="share of the cells removed in a subset"),
            Param("baseline_value", float, 0.0, -10.0, 10.0, doc="value of a removed cell (model input space)"),
        ),
        passes=lambda p, m: p["nb_samples"] + 1, scoring="subsets",
    ),
    MetricSpec(
        "AverageStability", "xplique.metrics.AverageStability", _BHATT,
        "mean distance between the map and the maps of copies of the input with uniform noise (the method "
        "is run again on each copy)",
        STABILITY, higher_is_better=False, score_range=(0.0, None),
        good="low (0: identical maps); relative_l2 is the distance divided by the map's norm, so 1 means "
             "a change as large as the map",
        params=(
            Param("nb_samples", int, 8, 2, 64, doc="noisy copies explained again"),
            Param("radius", float, 0.1, 0.0, 10.0, doc="largest noise added to each value (model input space)"),
            Param("distance", str, "relative_l2", choices=("relative_l2", "l2", "l1"),
                  doc="relative_l2: |map' - map|_2 / |map|_2; l2 and l1 are Xplique's absolute distances"),
        ),
        passes=lambda p, m: p["nb_samples"] * m, reruns_method=True, scoring="rerun",
    ),
    MetricSpec(
        "Complexity", "xplique.metrics.Complexity", _BHATT,
        "Shannon entropy of the absolute attributions, normalised to sum to 1",
        COMPLEXITY, higher_is_better=False, score_range=(0.0, None),
        good="low: the attribution mass sits on few pixels (the maximum, log of the pixel count, is a "
             "uniform map: 8.3 for 64x64)",
    ),
    MetricSpec(
        "Sparseness", "xplique.metrics.Sparseness",
        "Chalasani et al., Concise Explanations of Neural Networks using Adversarial Training (2020), "
        "https://proceedings.mlr.press/v119/chalasani20a.html",
        "Gini index of the absolute attributions",
        COMPLEXITY, higher_is_better=True, score_range=(0.0, 1.0),
        good="high (near 1): a few pixels hold most of the attribution; 0 is a uniform map",
    ),
)

METRIC_REGISTRY: dict[str, MetricSpec] = {spec.name: spec for spec in METRICS}


def get_metric(name: str) -> MetricSpec:
    """The metric named ``name`` (case-insensitive)."""
    spec = METRIC_REGISTRY.get(name) or next((s for s in METRICS if s.name.lower() == str(name).lower()), None)
    if spec is None:
        raise UnknownMetricError(
            f"unknown metric {name!r}; available: {', '.join(s.name for s in METRICS)}", metric=name,
        )
    return spec
