"""Demo concept sets for TCAV on the shapes model (devtools/shapes.py), rendered like its training data.

- :func:`random_sets`: TCAV's random images, as the paper's random ImageNet images: random draws of the
  model's world, i.e. its training distribution (circle, square, triangle or none, each at its training
  rate), nothing picked or left out, one set per TCAV random run.
- :func:`round_concept`: the concept "round": the same random draws, each with a round thing (disc, ring or
  ellipse, random colour) painted on. The concept set then differs from the random sets only by a round
  thing, so the CAV (concept vs random) points at roundness and at nothing else: both sets hold squares,
  triangles and objects at the same rate.
- :func:`class_images`: images of one class of the shapes model (shapes.dataset, filtered).

Why (measured on the demo model at last_conv, job seed = image seed): with round things alone on the
background as the concept, square's score follows whatever else tells the concept set from the random ones.
Against non-round objects (lumpy polygons, stars) the CAV partly reads "smooth blob vs spiky": square 0.47-0.67,
significant at the demo's seed 7, and circle misses significance at 2 seeds in 6 (24 or 40 images). Against
objectless backgrounds it reads "an object": square 0.58-0.70 (24 images). Against training images it reads
"no square": square falls to 0.34-0.41, significant at 7 seeds in 8 (10 sets of 100 images). Earlier layers
(conv2d_1, max_pooling2d) hold no usable "round" direction. With the concept added to the random draws:
circle is significant at 24 seeds of 24 and square is not at 21 of 24 (6 sets of 60 images) or 22 of 24
(10 sets of 100); the rest are small effects either way (square 0.37-0.62) that the t-test, blind to the
concept and class images' own sampling, calls significant (tests/quality/test_insights_tcav_quality.py).
With 24-40 images that sampling moves a class's score by ~0.1 from one seed to the next.

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


def _world(rng: np.random.Generator) -> np.ndarray:
    """A random image of the shapes model's world: one of its training images (any class, ``none`` too)."""
    return shapes.render(int(rng.integers(len(shapes.MODEL_CLASSES))), rng)[0]


def _with_round_thing(base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``base`` with a round thing (disc, ring or ellipse) of a random colour painted over it."""
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
    return _finish(base.astype(np.float32), mask, rng)


def round_concept(count: int, seed: int = 0) -> np.ndarray:
    """``count`` random images of the model's world (as :func:`random_sets`), each with a round thing added."""
    rng = np.random.default_rng([seed, 1])
    return np.stack([_with_round_thing(_world(rng), rng) for _ in range(count)])


def random_sets(n: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` sets of ``count`` random images of the model's world: its training distribution, every class
    (``none`` too) at its training rate, nothing picked or left out."""
    return [np.stack([_world(rng) for _ in range(count)])
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
