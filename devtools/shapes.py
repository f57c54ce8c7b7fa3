"""A generated image set whose object pixels are known.

Each image shows one shape (circle, square or triangle) of a random colour and size at a
random place, over a textured, noisy background whose colours are independent of the class.
The shape's mask is kept, so a test can measure how much of an explanation falls on the object.

Training also uses a fourth class, ``none`` (background only): without it a model learns one
shape as the default ("no circle, no square: triangle"), and the evidence for that class is
spread over the whole image instead of sitting on the object.
"""

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")
NONE = "none"
MODEL_CLASSES = (*CLASSES, NONE)
IMAGE_SIZE = 128


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    # Low-frequency colour blobs, a few stripes and pixel noise: texture the model must ignore.
    coarse = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6, 20)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)[..., None]
    base += stripes * rng.uniform(10, 40) + rng.normal(0, 18, (size, size, 3))
    return base


def render(label: int, rng: np.random.Generator, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8, size x size x 3) and its object mask (bool, size x size)."""
    image = _background(rng, size)
    mask_image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask_image)
    radius = rng.uniform(0.12, 0.22) * size
    cx, cy = rng.uniform(radius + 2, size - radius - 2, 2)
    shape = MODEL_CLASSES[label]
    if shape == NONE:
        return np.clip(image, 0, 255).astype(np.uint8), np.zeros((size, size), dtype=bool)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
    elif shape == "square":
        half = radius * 0.9
        draw.rectangle([cx - half, cy - half, cx + half, cy + half], fill=255)
    else:
        turn = rng.uniform(0, 2 * np.pi / 3)
        points = [(cx + radius * np.cos(turn + k * 2 * np.pi / 3), cy + radius * np.sin(turn + k * 2 * np.pi / 3))
                  for k in range(3)]
        draw.polygon(points, fill=255)
    mask = np.asarray(mask_image) > 127
    colour = rng.uniform(0, 255, 3)
    image[mask] = colour + rng.normal(0, 12, (int(mask.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def dataset(count: int, seed: int, size: int = IMAGE_SIZE, with_none: bool = False):
    """``count`` images with balanced labels: (images, labels, masks); ``with_none`` adds background-only images."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(MODEL_CLASSES if with_none else CLASSES)
    rng.shuffle(labels)
    images, masks = zip(*(render(int(label), rng, size) for label in labels), strict=True)
    return np.stack(images), labels, np.stack(masks)
