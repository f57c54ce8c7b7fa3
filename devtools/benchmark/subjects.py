"""The benchmarked image models and the parameter profiles they run with.

``demo`` is the project's demo CNN (``devtools.demo_model``); ``mobilenet`` a MobileNetV2 with
random weights, built here and cached under ``.cache/benchmark/``. ``full`` runs the registry's
default parameters, ``quick`` the smaller ``QUICK_OVERRIDES``; ``auto`` picks per model.
"""

import dataclasses
import functools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from devtools import demo_model, shapes
from explain_core.frameworks import handler_for
from explain_core.modalities import modality_for
from explain_core.model_card import ModelCard
from explain_core.registry import MethodSpec

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "benchmark"
IMAGE_SEED = 4242


#: Smaller parameters for ``--quick``; Occlusion's patch is derived from the input size instead.
QUICK_OVERRIDES: dict[str, dict] = {
    "IntegratedGradients": {"steps": 8},
    "SmoothGrad": {"nb_samples": 8},
    "VarGrad": {"nb_samples": 8},
    "SquareGrad": {"nb_samples": 8},
    "Rise": {"nb_samples": 64},
    "Lime": {"nb_samples": 32},
    "KernelShap": {"nb_samples": 32},
    "SobolAttributionMethod": {"nb_design": 8, "grid_size": 4},
    "HsicAttributionMethod": {"nb_design": 32},
    "GradientExplainer": {"nb_samples": 16},
    "DeepExplainer": {"nb_background": 4},
    "PartitionExplainer": {"max_evals": 100},
    "SuperpixelKernelExplainer": {"nb_samples": 100},
    "KernelExplainer": {"nb_samples": 100},
}


@dataclasses.dataclass
class Subject:
    """A benchmarked model: where its files are, how it is published and which profile ``auto`` picks."""

    key: str  # command-line name: demo, mobilenet
    name: str
    version: str
    directory: Path  # holds model.keras and card.json
    image_size: int  # side of the generated source images (the handler resizes them)
    auto_profile: str
    _model: object = dataclasses.field(default=None, repr=False)

    @functools.cached_property
    def card(self) -> ModelCard:
        """The model card published beside the model."""
        return ModelCard.model_validate_json((self.directory / "card.json").read_text())

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        card = self.card
        return card.input_height, card.input_width

    def model(self):
        """The model loaded as the model store loads it (its framework's handler: a checked Keras v3 archive)."""
        if self._model is None:
            self._model = handler_for(self.card).load(str(self.directory / self.card.model_file), self.name,
                                                      self.version)
        return self._model

    def images(self, count: int, seed: int = IMAGE_SEED) -> np.ndarray:
        """``count`` generated source images (uint8, N x S x S x 3), deterministic."""
        return shapes.dataset(count, seed=seed, size=self.image_size)[0]

    def background(self) -> np.ndarray | None:
        """The SHAP background as the model store loads it (``background.npy`` pixels, preprocessed).

        None when the model has none: the SHAP methods then use their default (flat grey images).
        """
        path = self.directory / "background.npy"
        if not path.exists():
            return None
        return modality_for(self.card).prepare_background(np.load(path, allow_pickle=False), self.card)

    def background_label(self) -> str:
        """How the SHAP background of this model is described in the tables."""
        path = self.directory / "background.npy"
        if not path.exists():
            return "default (5 flat grey images)"
        return f"background.npy ({len(np.load(path, mmap_mode='r'))} images)"


def demo_subject() -> Subject:
    """The demo CNN, trained on first use by :func:`devtools.demo_model.ensure_demo_model`."""
    return Subject("demo", demo_model.NAME, demo_model.VERSION, demo_model.ensure_demo_model(), shapes.IMAGE_SIZE,
                   "full")


MOBILENET_NAME, MOBILENET_VERSION, MOBILENET_SIZE, MOBILENET_CLASSES = "mobilenetv2-random", "v1", 224, 1000


def mobilenet_card() -> dict:
    """Model card of the random-weight MobileNetV2: inputs in [-1, 1], logits, Grad-CAM on ``out_relu``."""
    return {
        "name": MOBILENET_NAME,
        "version": MOBILENET_VERSION,
        "description": "MobileNetV2 with random weights (no download possible): benchmark load, not predictions.",
        "input_height": MOBILENET_SIZE,
        "input_width": MOBILENET_SIZE,
        "preprocessing": {"scale": 2 / 255, "mean": [1.0, 1.0, 1.0], "std": [1.0, 1.0, 1.0]},
        "output": "logits",
        "class_names": [f"class_{i:04d}" for i in range(MOBILENET_CLASSES)],
        "cam_layer": "out_relu",
        "target": {"mode": "predicted", "k": 1},
        "top_k": 3,
    }


def mobilenet_subject() -> Subject:
    """MobileNetV2 (224x224, 1000 classes, random weights) saved as .keras with its card; built once."""
    import keras

    directory = CACHE / f"{MOBILENET_NAME}-keras-{keras.__version__}"
    model_path = directory / "model.keras"
    if not model_path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNetV2(
            weights=None, input_shape=(MOBILENET_SIZE, MOBILENET_SIZE, 3), classes=MOBILENET_CLASSES,
            classifier_activation=None,
        )
        partial = directory / "partial.keras"
        model.save(partial)
        partial.replace(model_path)
        del model
    (directory / "card.json").write_text(json.dumps(mobilenet_card(), indent=2))
    return Subject("mobilenet", MOBILENET_NAME, MOBILENET_VERSION, directory, MOBILENET_SIZE, "quick")


SUBJECTS: dict[str, Callable[[], Subject]] = {"demo": demo_subject, "mobilenet": mobilenet_subject}


def profile_overrides(spec: MethodSpec, profile: str, input_size: tuple[int, int], extra: dict) -> dict:
    """Parameter overrides sent with an upload: the profile's, then ``--params`` on top."""
    overrides = {}
    if profile == "quick":
        overrides = dict(QUICK_OVERRIDES.get(spec.name, {}))
        if spec.name == "Occlusion":
            side = min(input_size)  # a 7 x 7 grid of patches whatever the input size
            overrides = {"patch_size": max(1, side // 4), "patch_stride": max(1, side // 8)}
    overrides.update(extra.get(spec.name, {}))
    return overrides


def profile_of(subject: Subject, args) -> str:
    """The parameter profile used for this model: ``--quick``/``--full``, else the model's ``auto`` choice."""
    return subject.auto_profile if args.profile == "auto" else args.profile
