"""Demo concept sets for TCAV on the shapes model (devtools/shapes.py), rendered like its training data.

- :func:`round_concept`: round things (discs, rings, ellipses) of random colours on the shapes' textured
  background: the concept "round".
- :func:`random_sets`: random counter-examples: the same textured background with one filled non-round
  object (a lumpy polygon or a spiky star; no square or triangle), sometimes a stroke, one set per TCAV
  random run. An object in every image, as in the concept's: otherwise the CAV learns "an object" (which
  raises the square score too) rather than "round".
- :func:`class_images`: images of one class of the shapes model (shapes.dataset, filtered).

Every set is a pure function of its arguments (uint8 (count, IMAGE_SIZE, IMAGE_SIZE, 3)), so the
quality test and the demo job get the same images. ``python -m devtools.concept_images DIR`` writes
them as PNG files, laid out as a TCAV job's prefixes (``round/``, ``random-0/``..., ``circle/``...).
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from devtools import shapes

SIZE = shapes.IMAGE_SIZE


def _finish(base: np.ndarray, mask_image: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """``base`` with the mask's pixels painted one random colour (with the shapes' noise)."""
    mask = np.asarray(mask_image) > 127
    base[mask] = rng.uniform(0, 255, 3) + rng.normal(0, 12, (int(mask.sum()), 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def _round_thing(rng: np.random.Generator) -> np.ndarray:
    base = shapes._background(rng, SIZE)
    mask = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(mask)
    radius = rng.uniform(0.12, 0.24) * SIZE
    kind = rng.integers(3)  # disc, ring or ellipse
    rx, ry = (radius, radius) if kind < 2 else (radius, radius * rng.uniform(0.6, 0.85))
    if rng.random() < 0.5:
        rx, ry = ry, rx
    cx, cy = rng.uniform(max(rx, ry) + 2, SIZE - max(rx, ry) - 2, 2)
    box = [cx - rx, cy - ry, cx + rx, cy + ry]
    if kind == 1:
        draw.ellipse(box, outline=255, width=int(rng.integers(5, 10)))
    else:
        draw.ellipse(box, fill=255)
    return _finish(base, mask, rng)


def _random_thing(rng: np.random.Generator) -> np.ndarray:
    base = shapes._background(rng, SIZE)
    mask = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(mask)
    # One filled object the size of the shapes in every image, as in the concept's: a lumpy polygon or a
    # spiky star (no square, triangle or round thing), so that "an object" is not what the CAV learns.
    radius = rng.uniform(0.14, 0.26) * SIZE
    cx, cy = rng.uniform(radius + 2, SIZE - radius - 2, 2)
    if rng.random() < 0.5:
        corners = int(rng.integers(5, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
        radii = radius * rng.uniform(0.7, 1.0, corners)
    else:
        spikes = int(rng.integers(4, 8))
        angles = rng.uniform(0, 2 * np.pi) + np.arange(2 * spikes) * np.pi / spikes
        radii = np.tile([1.0, rng.uniform(0.3, 0.55)], spikes) * radius * rng.uniform(0.8, 1.0, 2 * spikes)
    draw.polygon([(cx + r * np.cos(a), cy + r * np.sin(a)) for r, a in zip(radii, angles, strict=True)], fill=255)
    if rng.random() < 0.3:  # and sometimes strokes
        points = [tuple(rng.uniform(0, SIZE, 2)) for _ in range(int(rng.integers(2, 4)))]
        draw.line(points, fill=255, width=int(rng.integers(3, 9)))
    return _finish(base, mask, rng)


def round_concept(count: int, seed: int = 0) -> np.ndarray:
    """``count`` images of one round thing each (disc, ring or ellipse) on the textured background."""
    rng = np.random.default_rng([seed, 1])
    return np.stack([_round_thing(rng) for _ in range(count)])


def random_sets(n: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` sets of ``count`` random counter-examples (no round thing, no class shape)."""
    return [np.stack([_random_thing(rng) for _ in range(count)])
            for rng in (np.random.default_rng([seed, 2, index]) for index in range(n))]


def class_images(name: str, count: int, seed: int = 0) -> np.ndarray:
    """``count`` images of class ``name`` of the shapes model (circle, square, triangle or none)."""
    label = shapes.MODEL_CLASSES.index(name)
    images, labels, _ = shapes.dataset(count * len(shapes.MODEL_CLASSES), seed=seed + 1000, with_none=True)
    return images[labels == label][:count]


def local_context(loaded, sets: dict[str, np.ndarray], seed: int = 0, batch_size: int = 64, files=None):
    """A PartContext over in-memory image sets (prefix -> uint8 images) and a dict as the results bucket,
    to run a kind's parts without S3 (tests, notebooks)."""
    from explain_core.attribution import to_model_input
    from explain_core.insights.base import ImageBatch, PartContext

    files = {} if files is None else files

    def images(image_set, labelled: bool = False) -> ImageBatch:
        from explain_core.images import resize
        from explain_core.insights.pictures import display_pixels

        card = loaded.card
        if image_set.source == "background":  # LoadedModel.background is in the model's input space
            inputs = np.asarray(loaded.background, np.float32)[:image_set.count]
            return ImageBatch(inputs=inputs, pixels=display_pixels(inputs, card), source="background")
        pixels = np.asarray(sets[image_set.prefix])[:image_set.count]
        pixels = np.stack([resize(image, card.input_height, card.input_width) for image in pixels])
        return ImageBatch(inputs=to_model_input(pixels, card), pixels=pixels, source=image_set.source)

    def put(name: str, body: bytes, content_type: str) -> str:
        key = f"local/{len(files):04d}-{name}"
        files[key] = body
        return key

    return PartContext(loaded=loaded, seed=seed, batch_size=batch_size, images=images, put=put,
                       read=files.__getitem__, remaining_seconds=lambda: None)


def write_sets(directory: Path, count: int = 40, randoms: int = 8, seed: int = 0) -> dict[str, int]:
    """The demo's sets as PNG files under ``directory``: round/, random-<i>/, and one folder per class."""
    sets = {"round": round_concept(count, seed)}
    sets.update({f"random-{index}": images for index, images in enumerate(random_sets(randoms, count, seed))})
    sets.update({name: class_images(name, count, seed) for name in shapes.MODEL_CLASSES})
    for folder, images in sets.items():
        (directory / folder).mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(images):
            Image.fromarray(image).save(directory / folder / f"{index:03d}.png")
    return {folder: len(images) for folder, images in sets.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--randoms", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_sets(args.directory, args.count, args.randoms, args.seed))


if __name__ == "__main__":
    main()
