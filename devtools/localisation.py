"""How much of each explanation falls on the object: "energy in mask" on the demo model.

The demo images (devtools/shapes.py) come with the mask of the one shape that decides the
class, so a heatmap that explains the prediction should put most of its mass on that mask.
For every registry method this explains the *predicted* class of held-out images and
measures, per image::

    energy in mask = sum(|heatmap| inside the mask) / sum(|heatmap|)

with the mask resized to the model input (64x64) by nearest neighbour. The mask's own area
share is the chance level: a heatmap spread uniformly (or at random) scores about that.

Chance is too weak a bar: the objects lie around the centre, so a map that ignores the input
does better. Each method is therefore compared with three baselines, on the same images:

- a **centred blob** that ignores the input: a Gaussian centred in the image, with the width
  (of ``BLOB_SIGMAS``) that scores best on the images measured, so the baseline is not a straw
  man (about 0.2 on the demo images, 2.5x chance);
- the **same method on a weight-randomised copy** of the model (``randomised_model``): every
  layer re-initialised, Adebayo et al. 2018's full randomisation; a map that follows the input's
  edges rather than the model scores as well with random weights;
- the **explanation of a wrong class** (``wrong_class_targets``): a map that finds "the object"
  whatever class is asked scores as well for a class the model did not predict.

A method *beats* a baseline when its mean energy exceeds the baseline's by ``MARGIN``; the
verdict names the baselines it does not beat.

Run ``python -m devtools.localisation`` to print the table; tests/quality/test_localisation.py
reuses the functions below with thresholds chosen from the printed figures.
"""

import argparse
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from devtools import demo_model

#: Held-out seed: the demo model trained on seed 1 and was scored on seed 2.
DEFAULT_SEED = 2024
DEFAULT_COUNT = 12
#: Cheaper-than-default settings for the slowest perturbation methods, for quick runs/tests.
FAST_OVERRIDES: dict[str, dict[str, Any]] = {
    "Rise": {"nb_samples": 500},
    "SobolAttributionMethod": {"nb_design": 16},
    "HsicAttributionMethod": {"nb_design": 250},
}
#: Widths tried for the centred blob: the Gaussian's sigma as a fraction of the image side. The
#: objects' radii are 12-22 % of the side, their centres spread over the image. On the demo
#: images' pixels 0.08 scores best (0.202; 0.02 to 0.125 score 0.188-0.198, 0.3 only 0.116); on
#: their super-pixel segments (tests/quality/test_shap_localisation.py) 0.05 does.
BLOB_SIGMAS = (0.02, 0.035, 0.05, 0.08, 0.1, 0.125, 0.15, 0.2, 0.3)
#: How much higher a method's mean energy in mask must be to "beat" a baseline (a quarter of the
#: chance level): a smaller lead is a tie, reported as not beating it.
MARGIN = 0.02
BLOB, RANDOMISED, WRONG_CLASS = "blob", "randomised model", "wrong class"


@dataclass
class Demo:
    """The demo model, its card and a batch of held-out images ready for explaining."""

    model: Any
    card: Any
    inputs: np.ndarray  # (N, 64, 64, 3) float32, preprocessed
    masks: np.ndarray  # (N, 64, 64) bool, object masks at the model input size
    labels: np.ndarray  # (N,) true classes
    predicted: np.ndarray  # (N,) predicted classes (the ones explained)
    targets: np.ndarray  # (N, classes) one-hot of ``predicted``


@dataclass
class Measurement:
    method: str
    family: str
    params: dict
    energy: np.ndarray  # (N,) energy in mask per image
    chance: np.ndarray  # (N,) mask area share per image
    labels: np.ndarray  # (N,) true classes, for the per-class breakdown
    seconds: float
    heatmaps: np.ndarray = field(repr=False)

    @property
    def mean(self) -> float:
        return float(np.mean(self.energy))

    @property
    def minimum(self) -> float:
        return float(np.min(self.energy))

    @property
    def mean_chance(self) -> float:
        return float(np.mean(self.chance))

    @property
    def ratio(self) -> float:
        return self.mean / self.mean_chance

    def class_mean(self, label: int) -> float:
        selected = self.energy[self.labels == label]
        return float(np.mean(selected)) if len(selected) else float("nan")

    @property
    def baseline_mean(self) -> float:
        """Mean energy as a baseline: an all-zero map (Grad-CAM of a random model) prefers no
        pixel, like a uniform one, so it scores the chance level instead of being dropped."""
        return float(np.mean(np.where(np.isnan(self.energy), self.chance, self.energy)))


@dataclass
class Blob:
    """The centred-blob baseline: the best of ``BLOB_SIGMAS`` on the images measured."""

    sigma: float  # fraction of the image side
    energy: np.ndarray  # (N,) energy in mask per image

    @property
    def mean(self) -> float:
        return float(np.mean(self.energy))


@dataclass
class Comparison:
    """A method on the trained model, for the predicted class, against the three baselines."""

    measurement: Measurement
    blob: Blob
    randomised: Measurement  # the same method and parameters on ``randomised_model``
    wrong_class: Measurement  # the same method on the trained model, for ``wrong_class_targets``

    @property
    def baselines(self) -> dict[str, float]:
        return {
            BLOB: self.blob.mean,
            RANDOMISED: self.randomised.baseline_mean,
            WRONG_CLASS: self.wrong_class.baseline_mean,
        }

    @property
    def failed(self) -> list[str]:
        return failed_baselines(self.measurement.mean, self.baselines)

    @property
    def verdict(self) -> str:
        return verdict(self.failed)


def seed_everything(seed: int) -> None:
    """Python, NumPy and TensorFlow/Keras random state (Rise, Lime, KernelShap, SmoothGrad... draw from them).

    Xplique draws Rise's masks and SmoothGrad's noise inside class-level ``tf.function``s, whose random ops
    take their seeds when first traced and then keep their state across calls: a measurement would depend on
    what ran before it in the process (the test suite runs the handlers first). They are traced again after
    the seed is set, so every measurement draws what a fresh process draws.
    """
    import sys

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    polymorphic = tf.types.experimental.PolymorphicFunction
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("xplique."):
            continue
        for cls in list(vars(module).values()):
            if not (isinstance(cls, type) and cls.__module__ == name):
                continue
            for attribute, member in list(vars(cls).items()):
                static = isinstance(member, staticmethod)
                function = member.__func__ if static else member
                if isinstance(function, polymorphic):
                    fresh = tf.function(function.python_function, input_signature=function.input_signature,
                                        jit_compile=getattr(function, "_jit_compile", None))
                    setattr(cls, attribute, staticmethod(fresh) if static else fresh)


def load_model():
    """(model, card) of the demo model, loaded as the functions load a user's model."""
    import keras

    from explain_core.model_card import ModelCard

    directory = demo_model.ensure_demo_model()
    model = keras.saving.load_model(directory / "model.keras", compile=False, safe_mode=True)
    card = ModelCard.model_validate_json((directory / "card.json").read_text())
    return model, card


def masks_to_input(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean masks (N, H, W) resized to (N, height, width) by nearest neighbour."""
    from PIL import Image

    return np.stack(
        [
            np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)) > 127
            for mask in masks
        ]
    )


def prepare(model, card, count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED) -> Demo:
    """``count`` held-out images, resized and preprocessed as the session does, with their masks."""
    from explain_core.attribution import class_scores, to_model_input
    from explain_core.session import DEFAULT_BATCH_SIZE

    images, labels, masks = demo_model.sample_images(count, seed=seed)
    height, width = card.input_height, card.input_width
    inputs = to_model_input(images, card)
    scores = class_scores(model, inputs, card, DEFAULT_BATCH_SIZE)
    predicted = np.argmax(scores, axis=1)
    targets = np.eye(len(card.class_names), dtype=np.float32)[predicted]
    return Demo(model, card, inputs, masks_to_input(masks, height, width), labels, predicted, targets)


def energy_in_mask(heatmaps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of sum(|heatmap|) inside the mask, per image; NaN for an all-zero heatmap."""
    energy = np.abs(np.asarray(heatmaps, dtype=np.float64))
    if energy.shape != masks.shape:
        raise ValueError(f"heatmaps {energy.shape} and masks {masks.shape} differ in shape")
    total = energy.sum(axis=(1, 2))
    inside = (energy * masks).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def mask_share(masks: np.ndarray) -> np.ndarray:
    """Area share of each mask: the energy in mask of a uniform heatmap (chance level)."""
    return masks.reshape(len(masks), -1).mean(axis=1)


def measure(
    demo: Demo,
    method: str,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    *,
    model: Any = None,
    targets: np.ndarray | None = None,
) -> Measurement:
    """Run one registry method (defaults updated with ``overrides``) on ``demo`` and score it.

    ``model`` (default: the demo's) and ``targets`` (one-hot, default: the predicted classes)
    replace the demo's for the randomised-model and wrong-class baselines.
    """
    from explain_core.attribution import build_explainer, run_method
    from explain_core.registry import REGISTRY
    from explain_core.session import DEFAULT_BATCH_SIZE

    spec = REGISTRY[method]
    params = spec.resolve(overrides, (demo.card.input_height, demo.card.input_width))
    seed_everything(seed)
    model = demo.model if model is None else model
    explainer = build_explainer(spec, model, demo.card, params, DEFAULT_BATCH_SIZE)  # the session's
    result = run_method(explainer, demo.inputs, demo.targets if targets is None else targets)
    return Measurement(
        method=spec.name,
        family=spec.family,
        params=params,
        energy=energy_in_mask(result.heatmaps, demo.masks),
        chance=mask_share(demo.masks),
        labels=demo.labels,
        seconds=result.seconds,
        heatmaps=result.heatmaps,
    )


def gaussian_blob(height: int, width: int, sigma: float) -> np.ndarray:
    """A Gaussian (peak 1) centred in a ``height`` x ``width`` image; ``sigma`` is a fraction of the shorter side."""
    yy, xx = np.mgrid[0:height, 0:width]
    spread = sigma * min(height, width)
    return np.exp(-((yy - (height - 1) / 2) ** 2 + (xx - (width - 1) / 2) ** 2) / (2 * spread**2))


def centred_blob(masks: np.ndarray, sigmas: Iterable[float] = BLOB_SIGMAS) -> Blob:
    """The same centred Gaussian for every image, of the width in ``sigmas`` that scores best on ``masks``."""
    _, height, width = masks.shape
    candidates = [
        Blob(sigma, energy_in_mask(np.broadcast_to(gaussian_blob(height, width, sigma), masks.shape), masks))
        for sigma in sigmas
    ]
    return max(candidates, key=lambda blob: blob.mean)


def randomised_model(model, seed: int = 0):
    """A copy of ``model`` with every layer's weights re-drawn from the layer's own initialiser.

    Adebayo et al. 2018, "Sanity checks for saliency maps" (NeurIPS), full cascading
    randomisation: all layers, drawn as at the start of training. Xplique's
    ``ProgressiveLayerRandomization`` draws U[0, 1) weights instead: all positive, they saturate
    this network (logits of 1e6, one class for every image) and its maps score below chance,
    a weaker baseline than a network that could have been trained.
    """
    import keras

    keras.utils.set_random_seed(seed)
    return keras.models.clone_model(model)  # a clone is built from the config: fresh weights


def wrong_class_targets(predicted: np.ndarray, class_count: int, seed: int = 0) -> np.ndarray:
    """One-hot targets (N, class_count) of a class other than ``predicted``, drawn uniformly with ``seed``."""
    if class_count < 2:
        raise ValueError("a wrong class needs at least two classes")
    shift = np.random.default_rng(seed).integers(1, class_count, len(predicted))
    return np.eye(class_count, dtype=np.float32)[(np.asarray(predicted) + shift) % class_count]


def failed_baselines(score: float, baselines: Mapping[str, float], margin: float = MARGIN) -> list[str]:
    """The baselines ``score`` does not exceed by ``margin``, in the order given."""
    return [name for name, value in baselines.items() if not score > value + margin]


def verdict(failed: Iterable[str]) -> str:
    failed = list(failed)
    return "beats all three" if not failed else "fails " + ", ".join(failed)


def compare(
    demo: Demo,
    method: str,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    *,
    blob: Blob,
    random_model: Any,
    wrong_targets: np.ndarray,
) -> Comparison:
    """``method`` on ``demo`` and its three baselines (the blob and the randomised model are shared by methods)."""
    return Comparison(
        measurement=measure(demo, method, overrides, seed),
        blob=blob,
        randomised=measure(demo, method, overrides, seed, model=random_model),
        wrong_class=measure(demo, method, overrides, seed, targets=wrong_targets),
    )


def compare_all(
    demo: Demo, methods: Iterable[str] | None = None, overrides: Mapping[str, Mapping] | None = None, seed: int = 0
) -> list[Comparison]:
    from explain_core.registry import METHODS, SHAP

    # The shap family needs a background and is measured per segment: tests/quality/test_shap_localisation.py.
    names = list(methods) if methods else [spec.name for spec in METHODS if spec.family != SHAP]
    overrides = overrides or {}
    blob = centred_blob(demo.masks)
    random_model = randomised_model(demo.model, seed)
    wrong_targets = wrong_class_targets(demo.predicted, demo.targets.shape[1], seed)
    results = []
    for name in names:
        results.append(compare(demo, name, overrides.get(name), seed, blob=blob, random_model=random_model,
                               wrong_targets=wrong_targets))
        m = results[-1].measurement
        print(f"  {name}: {m.mean:.3f} in {m.seconds:.1f}s, {results[-1].verdict}", file=sys.stderr, flush=True)
    return results


def format_table(results: list[Comparison], class_names: Iterable[str] = demo_model.shapes.CLASSES) -> str:
    """One row per method: mean energy in mask, its three baselines and the verdict; the per-class
    columns are the mean energy in mask over images of that true class."""
    class_names = list(class_names)
    per_class = "".join(f"{name[:8]:>9}" for name in class_names)
    header = (
        f"{'method':<24}{'family':<14}{'mean':>7}{'min':>7}{'chance':>8}{'blob':>7}{'random':>8}{'wrong':>7}"
        f"{'seconds':>9}{per_class}  {'verdict':<40}params"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        m, baselines = result.measurement, result.baselines
        params = ", ".join(f"{k}={v}" for k, v in m.params.items())
        classes = "".join(f"{m.class_mean(label):>9.3f}" for label in range(len(class_names)))
        lines.append(
            f"{m.method:<24}{m.family:<14}{m.mean:>7.3f}{m.minimum:>7.3f}{m.mean_chance:>8.3f}"
            f"{baselines[BLOB]:>7.3f}{baselines[RANDOMISED]:>8.3f}{baselines[WRONG_CLASS]:>7.3f}"
            f"{m.seconds:>9.1f}{classes}  {result.verdict:<40}{params}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="held-out images (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="image seed (default %(default)s)")
    parser.add_argument("--methods", nargs="*", help="registry names (default: all, both families)")
    parser.add_argument(
        "--fast", action="store_true", help=f"reduced sample counts for the slowest methods: {FAST_OVERRIDES}"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    model, card = load_model()
    demo = prepare(model, card, args.count, args.seed)
    accuracy = float(np.mean(demo.predicted == demo.labels))
    blob = centred_blob(demo.masks)
    print(
        f"{args.count} held-out images (seed {args.seed}), accuracy {accuracy:.2f}, "
        f"mask area share {mask_share(demo.masks).mean():.3f}, centred blob {blob.mean:.3f} (sigma {blob.sigma} "
        f"of the side); a method beats a baseline by more than {MARGIN}",
        flush=True,
    )
    results = compare_all(demo, args.methods, FAST_OVERRIDES if args.fast else None)
    print(format_table(results))  # the held-out images show shapes: no "none" column
    print(f"total {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
