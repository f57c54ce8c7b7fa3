"""How much of each explanation falls on the object: "energy in mask" on the demo model.

The demo images (devtools/shapes.py) come with the mask of the one shape that decides the
class, so a heatmap that explains the prediction should put most of its mass on that mask.
For every registry method this explains the *predicted* class of held-out images and
measures, per image::

    energy in mask = sum(|heatmap| inside the mask) / sum(|heatmap|)

with the mask resized to the model input (64x64) by nearest neighbour. The mask's own area
share is the chance baseline: a heatmap spread uniformly (or at random) scores about that.

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


def seed_everything(seed: int) -> None:
    """Python, NumPy and TensorFlow/Keras random state (Rise, Lime, KernelShap, SmoothGrad... draw from them)."""
    import keras

    keras.utils.set_random_seed(seed)


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


def measure(demo: Demo, method: str, overrides: Mapping[str, Any] | None = None, seed: int = 0) -> Measurement:
    """Run one registry method (defaults updated with ``overrides``) on ``demo`` and score it."""
    from explain_core.attribution import build_explainer, run_method
    from explain_core.registry import REGISTRY
    from explain_core.session import DEFAULT_BATCH_SIZE

    spec = REGISTRY[method]
    params = spec.resolve(overrides, (demo.card.input_height, demo.card.input_width))
    seed_everything(seed)
    explainer = build_explainer(spec, demo.model, demo.card, params, DEFAULT_BATCH_SIZE)  # the session's
    result = run_method(explainer, demo.inputs, demo.targets)
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


def measure_all(
    demo: Demo, methods: Iterable[str] | None = None, overrides: Mapping[str, Mapping] | None = None, seed: int = 0
) -> list[Measurement]:
    from explain_core.registry import METHODS

    names = list(methods) if methods else [spec.name for spec in METHODS]
    overrides = overrides or {}
    results = []
    for name in names:
        results.append(measure(demo, name, overrides.get(name), seed=seed))
        print(f"  {name}: {results[-1].mean:.3f} in {results[-1].seconds:.1f}s", file=sys.stderr, flush=True)
    return results


def format_table(results: list[Measurement], class_names: Iterable[str] = demo_model.shapes.CLASSES) -> str:
    """One row per method; the per-class columns are the mean energy in mask over images of that true class."""
    class_names = list(class_names)
    per_class = "".join(f"{name[:8]:>9}" for name in class_names)
    header = (
        f"{'method':<24}{'family':<14}{'mean':>7}{'min':>7}{'chance':>8}{'ratio':>7}{'seconds':>9}{per_class}  params"
    )
    lines = [header, "-" * len(header)]
    for m in results:
        params = ", ".join(f"{k}={v}" for k, v in m.params.items())
        classes = "".join(f"{m.class_mean(label):>9.3f}" for label in range(len(class_names)))
        lines.append(
            f"{m.method:<24}{m.family:<14}{m.mean:>7.3f}{m.minimum:>7.3f}{m.mean_chance:>8.3f}"
            f"{m.ratio:>7.2f}{m.seconds:>9.1f}{classes}  {params}"
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
    print(
        f"{args.count} held-out images (seed {args.seed}), accuracy {accuracy:.2f}, "
        f"mask area share {mask_share(demo.masks).mean():.3f}",
        flush=True,
    )
    results = measure_all(demo, args.methods, FAST_OVERRIDES if args.fast else None)
    print(format_table(results, card.class_names))
    print(f"total {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
