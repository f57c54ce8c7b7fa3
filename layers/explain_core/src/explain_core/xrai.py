"""XRAI: region attributions ranked by their Integrated Gradients density, for Keras image models.

XRAI (Kapishnikov et al., XRAI: Better Attributions Through Regions (2019), https://arxiv.org/abs/1906.02825)
turns a pixel attribution into a ranking of image regions. For each image:

1. Integrated Gradients (Sundararajan et al. (2017), https://arxiv.org/abs/1703.01365) of the target's score
   from two baselines, a black and a white image, averaged, then reduced over channels by their maximum;
2. Felzenszwalb segmentations (Felzenszwalb and Huttenlocher, Efficient Graph-Based Image Segmentation (2004))
   of the image at six scales, every segment of every scale dilated into an overlapping candidate region;
3. a greedy ranking: the region whose not-yet-covered pixels have the highest mean attribution (its gain, an
   attribution density) is taken next, until the image is covered. Every pixel's heatmap value is the gain of
   the step that covered it, so a higher value means a region ranked earlier; ``region_masks`` is the union of the
   top regions covering ``top_percent`` % of the image (the paper's "top-k% regions").

This follows PAIR's reference implementation (``saliency/core/xrai.py`` with ``algorithm="full"``,
``area_threshold=1.0``; github.com/PAIR-code/saliency) step for step, with these deviations:

- Baselines: black and white images of the model's input space, ``(0 * scale - mean) / std`` and
  ``(255 * scale - mean) / std`` per channel, as the card's preprocessing maps pixels; without a card, each
  image's own minimum and maximum (the reference's default). Per image rather than per batch, so an image's
  explanation does not depend on the batch it came in.
- Integration: the reference's ``steps`` points ``linspace(0, 1, steps)`` (both ends included), weighted by the
  trapezoid rule (1/(steps-1), halved at both ends) where the reference averages them uniformly (1/steps): the
  same model passes, and the attributions then sum to ``f(x) - f(baseline)`` up to an O(1/steps^2) error
  instead of O(1/steps); as :class:`explain_core.bounded_explainers.PathChunkedIntegratedGradients` does.
- Segmentation input: the image is recovered from the model input through the card's preprocessing inverse
  (the reference segments whatever it is given), then min-max normalised to [-1, 1] and resized to 224x224 as
  the reference does, with OpenCV (bicubic up, area down) instead of scikit-image's bicubic with anti-aliasing:
  10x faster, close values. Segments come back to the input size by nearest neighbour, as in the reference.
- Sizes: the reference's constants are for images of about 224x224 and larger. For smaller inputs the
  dilation radius (5 px) and ``min_pixel_diff`` (50 px: a region adding fewer new pixels is dropped) shrink
  with the image: ``f = sqrt(H * W) / 224`` (at most 1), radius ``max(1, round(5 f))`` and
  ``min_pixel_diff = max(1, round(50 f^2))`` (64x64: radius 1, 4 px), so a segment and its leftovers keep
  their share of the image.
- Greedy search: the same choices (first region of highest density, regions adding fewer than
  ``min_pixel_diff`` new pixels dropped for good) computed incrementally: each region's uncovered pixel count
  and attribution sum are updated from the pixels each step covers, rather than recomputed over the whole image
  for every region at every step (the reference's O(steps x regions x pixels) takes seconds per image).
- Pixels no region covers (leftovers smaller than ``min_pixel_diff``): the reference gives them their own
  attribution density, which may exceed some regions' gains though it ranks them last; here they get the
  lower of that density and the lowest gain, so they rank last on the heatmap too.

Cost: ``2 * steps`` forward and backward passes per image, ``batch_size`` path points at a time (memory bounded
by ``batch_size`` whatever ``steps`` is), through the model's traced gradient function
(:func:`explain_core.attribution.model_functions`: no retracing); then six Felzenszwalb segmentations of a
224x224 image whatever the input size (50-70 ms each on one core; run in threads, 0.2-0.4 s in all on two) and
the greedy ranking (5-30 ms) on the CPU.
"""

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: Felzenszwalb's parameters in the reference: scales, Gaussian pre-smoothing, minimum segment size (in pixels of
#: the segmentation size below); the image is normalised to [-1, 1] first, as the reference does.
FELZENSZWALB_SCALES = (50, 100, 150, 250, 500, 1200)
FELZENSZWALB_SIGMA = 0.8
FELZENSZWALB_MIN_SIZE = 150
#: The segmentation runs on the image resized to this square, so the parameters above mean the same at any size.
SEGMENTATION_SIZE = 224
#: Each segment is dilated by a disk of this radius (pixels of a >= 224x224 input) to include its edges.
DILATION_RADIUS = 5
#: Regions adding fewer new pixels than this (>= 224x224 inputs) are dropped from the greedy search.
MIN_PIXEL_DIFF = 50


class XRAI:
    """XRAI (Kapishnikov et al., XRAI: Better Attributions Through Regions (2019), https://arxiv.org/abs/1906.02825)
    for Keras image models; see the module docstring for the steps and the deviations from PAIR's reference.

    ``explain`` returns the region-ranked heatmaps (N, H, W) and leaves ``region_masks`` (N, H, W) bool, the top
    ``top_percent`` % of each image's area in rank order, and ``rank_maps`` (N, H, W) int, each pixel's region
    rank (1 = first; the uncovered leftovers, if any, rank last).
    """

    def __init__(self, model, batch_size: int = 32, card=None, steps: int = 32, top_percent: float = 10.0):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size!r}")
        if int(steps) < 2:
            raise ValueError(f"steps must be >= 2 (the path's two ends), not {steps!r}")
        if not 0.0 < float(top_percent) <= 100.0:
            raise ValueError(f"top_percent must be in (0, 100], not {top_percent!r}")
        self.model = model
        self.batch_size = int(batch_size)
        self.card = card
        self.steps = int(steps)
        self.top_percent = float(top_percent)
        self.region_masks: np.ndarray | None = None
        self.rank_maps: np.ndarray | None = None

    def explain(self, inputs, targets) -> np.ndarray:
        """inputs: float32 (N, H, W, C) preprocessed model inputs; targets: one-hot (N, classes).

        Returns float32 (N, H, W): the region-ranked heatmap (each pixel holds the attribution density of the
        region that covered it when it was selected; higher = ranked earlier).
        """
        from explain_core.attribution import model_functions

        inputs, targets = _validated(inputs, targets)
        gradient, _ = model_functions(self.model)
        baselines = black_and_white_baselines(inputs, self.card)
        per_baseline = integrated_gradients(gradient, inputs, targets, baselines, self.steps, self.batch_size)
        # Averaged over the baselines, then the channels' maximum: the reference's _attr_aggregation_max.
        attributions = per_baseline.mean(axis=1).max(axis=-1)
        images = segmentation_images(inputs, self.card)
        heatmaps, masks, ranks = [], [], []
        for image, attribution in zip(images, attributions, strict=True):
            regions = felzenszwalb_regions(image)
            heatmap, rank_map = rank_regions(attribution, regions, min_pixel_diff(*attribution.shape))
            heatmaps.append(heatmap)
            ranks.append(rank_map)
            masks.append(top_area_mask(rank_map, self.top_percent))
        self.region_masks = np.stack(masks)
        self.rank_maps = np.stack(ranks)
        return np.stack(heatmaps).astype(np.float32)


def _validated(inputs, targets) -> tuple[np.ndarray, np.ndarray]:
    inputs = np.asarray(inputs.numpy() if hasattr(inputs, "numpy") else inputs)
    targets = np.asarray(targets.numpy() if hasattr(targets, "numpy") else targets)
    if inputs.ndim != 4 or not np.issubdtype(inputs.dtype, np.floating):
        raise ValueError(f"XRAI explains float image batches (N, H, W, C), not {inputs.dtype} {inputs.shape}")
    if len(inputs) == 0 or not np.all(np.isfinite(inputs)):
        raise ValueError("XRAI needs at least one image, with finite values")
    if targets.ndim != 2 or len(targets) != len(inputs):
        raise ValueError(f"targets must be one-hot rows (N={len(inputs)}, classes), not {targets.shape}")
    if not (np.all((targets == 0) | (targets == 1)) and np.all(targets.sum(axis=1) == 1)):
        raise ValueError("targets must be one-hot: a single 1 per row")
    return inputs.astype(np.float32), targets.astype(np.float32)


# --------------------------------------------------------------------------- Integrated Gradients


def black_and_white_baselines(inputs: np.ndarray, card=None) -> np.ndarray:
    """The two baselines (N, 2, 1, 1, C) of every image, broadcastable to its shape: black and white.

    With a card, pixels 0 and 255 through its preprocessing ``(p * scale - mean) / std`` (per channel); without,
    each image's minimum and maximum over all its values (the reference's default baselines).
    """
    count, channels = len(inputs), inputs.shape[-1]
    if card is not None:
        prep = card.preprocessing
        mean, std = np.asarray(prep.mean, np.float64), np.asarray(prep.std, np.float64)
        if len(mean) != channels:
            raise ValueError(f"the card's preprocessing has {len(mean)} channels, the inputs {channels}")
        black, white = (0.0 - mean) / std, (255.0 * prep.scale - mean) / std
        pair = np.stack([black, white]).astype(np.float32)  # (2, C)
        return np.broadcast_to(pair[None, :, None, None, :], (count, 2, 1, 1, channels))
    low = inputs.reshape(count, -1).min(axis=1)
    high = inputs.reshape(count, -1).max(axis=1)
    pair = np.stack([low, high], axis=1).astype(np.float32)  # (N, 2)
    return np.broadcast_to(pair[:, :, None, None, None], (count, 2, 1, 1, channels))


def integrated_gradients(gradient, inputs: np.ndarray, targets: np.ndarray, baselines: np.ndarray, steps: int,
                         batch_size: int) -> np.ndarray:
    """Integrated Gradients (N, B, H, W, C) of every image from each of its B baselines.

    ``gradient(points, targets)`` is d(targets . model(points)) / d(points) (:func:`model_functions`);
    ``baselines`` (N, B, ...) broadcast to each input's shape. The path points of all images and baselines form
    one stream evaluated ``batch_size`` rows at a time, so memory is bounded by ``batch_size`` and no call is
    left half empty between images; each point's gradient is accumulated with its trapezoid weight.
    """
    import tensorflow as tf

    from explain_core.bounded_explainers import trapezoid_weights

    count, kinds = len(inputs), baselines.shape[1]
    alphas = np.linspace(0.0, 1.0, steps, dtype=np.float32)
    weights = trapezoid_weights(steps).astype(np.float32)
    totals = np.zeros((count, kinds, *inputs.shape[1:]), dtype=np.float32)
    per_image = kinds * steps
    for start in range(0, count * per_image, batch_size):
        stream = np.arange(start, min(start + batch_size, count * per_image))
        image, kind, step = stream // per_image, (stream // steps) % kinds, stream % steps
        base = baselines[image, kind]
        alpha = alphas[step].reshape(-1, 1, 1, 1)
        points = (base + alpha * (inputs[image] - base)).astype(np.float32)
        grads = gradient(tf.constant(points), tf.constant(targets[image])).numpy()
        np.add.at(totals, (image, kind), grads * weights[step].reshape(-1, 1, 1, 1))  # rows in order, as a loop
    return (inputs[:, None] - baselines) * totals


# --------------------------------------------------------------------------- segmentation


def _size_factor(height: int, width: int) -> float:
    """The image's side relative to the reference's 224 px (at most 1): the constants' scale for small images."""
    return min(1.0, math.sqrt(height * width) / SEGMENTATION_SIZE)


def dilation_radius(height: int, width: int) -> int:
    return max(1, round(DILATION_RADIUS * _size_factor(height, width)))


def min_pixel_diff(height: int, width: int) -> int:
    return max(1, round(MIN_PIXEL_DIFF * _size_factor(height, width) ** 2))


def segmentation_images(inputs: np.ndarray, card=None) -> np.ndarray:
    """The images Felzenszwalb segments (N, H, W, C) float32: pixels recovered from the model inputs through the
    card's preprocessing inverse (0-255, clipped), or the inputs themselves without a card."""
    if card is None:
        return inputs.astype(np.float32)
    prep = card.preprocessing
    pixels = (inputs * np.asarray(prep.std, np.float32) + np.asarray(prep.mean, np.float32)) / np.float32(prep.scale)
    return np.clip(pixels, 0.0, 255.0).astype(np.float32)


def _normalised(image: np.ndarray) -> np.ndarray:
    """The reference's _normalize_image: min-max to [-1, 1], resized to the segmentation size."""
    import cv2

    low, high = float(image.min()), float(image.max())
    image = (image - low) / (high - low) * 2.0 - 1.0 if high > low else np.zeros_like(image)
    height, width = image.shape[:2]
    if (height, width) != (SEGMENTATION_SIZE, SEGMENTATION_SIZE):
        shrinking = height * width > SEGMENTATION_SIZE ** 2
        image = cv2.resize(image.astype(np.float32), (SEGMENTATION_SIZE, SEGMENTATION_SIZE),
                           interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
        if image.ndim == 2:  # OpenCV drops a single channel
            image = image[..., None]
    return image


def felzenszwalb_regions(image: np.ndarray) -> list[np.ndarray]:
    """XRAI's candidate regions of one image (H, W, C): every segment of Felzenszwalb's segmentation at each of
    the reference's scales, dilated by a disk, as sorted flat pixel indices (segmentations in scale order,
    segments in label order, as the reference's ``_unpack_segs_to_masks``)."""
    import cv2
    from scipy.ndimage import find_objects
    from skimage.morphology import disk
    from skimage.segmentation import felzenszwalb

    height, width = image.shape[:2]
    normalised = _normalised(image)
    # Nearest neighbour back to the input size: the segmentation pixel under each input pixel's centre.
    rows = np.minimum(((np.arange(height) + 0.5) * SEGMENTATION_SIZE / height).astype(int), SEGMENTATION_SIZE - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * SEGMENTATION_SIZE / width).astype(int), SEGMENTATION_SIZE - 1)
    radius = dilation_radius(height, width)
    kernel = disk(radius).astype(np.uint8)

    def segment(scale):
        return felzenszwalb(normalised, scale=scale, sigma=FELZENSZWALB_SIGMA, min_size=FELZENSZWALB_MIN_SIZE,
                            channel_axis=-1)

    # Scikit-image releases the GIL for parts of the work: two threads take about 2/3 of the serial time.
    workers = min(len(FELZENSZWALB_SCALES), os.cpu_count() or 1)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            segmentations = list(pool.map(segment, FELZENSZWALB_SCALES))
    else:
        segmentations = [segment(scale) for scale in FELZENSZWALB_SCALES]
    regions = []
    for segments in segmentations:
        labels = segments[rows[:, None], cols[None, :]]
        # Each segment is dilated within its bounding box grown by the radius, not over the whole image.
        for label, box in enumerate(find_objects(labels + 1)):
            if box is None:  # a segment no input pixel samples (small inputs): the reference's empty mask
                continue
            top, left = max(0, box[0].start - radius), max(0, box[1].start - radius)
            bottom, right = min(height, box[0].stop + radius), min(width, box[1].stop + radius)
            crop = (labels[top:bottom, left:right] == label).astype(np.uint8)
            ys, xs = np.nonzero(cv2.dilate(crop, kernel))
            regions.append((ys + top) * width + (xs + left))
    return regions


# --------------------------------------------------------------------------- greedy ranking


def rank_regions(attribution: np.ndarray, regions: list[np.ndarray], min_pixel_diff: int) -> tuple:
    """The reference's ``_xrai`` (area_perc_th=1.0): (heatmap (H, W) float64, rank map (H, W) int).

    Repeatedly takes the region whose uncovered pixels have the highest mean attribution (ties: the first),
    dropping for good every region that would add fewer than ``min_pixel_diff`` pixels, until none is left; the
    pixels a step covers get its gain. Ranks order the steps by gain, highest first (ties: the earlier step), as
    the reference's rank map does; leftover pixels rank last, valued at most the lowest gain.
    """
    height, width = attribution.shape
    flat = attribution.reshape(-1).astype(np.float64)
    pixel_count = height * width
    # Which regions hold each pixel (a CSC matrix by hand): the pixels covered at a step update exactly the
    # regions holding them, so the whole search touches each (region, pixel) pair once.
    owners = np.concatenate([np.full(len(pixels), index) for index, pixels in enumerate(regions)] or [[]])
    pixels_all = np.concatenate(regions or [[]]).astype(np.int64)
    order = np.argsort(pixels_all, kind="stable")
    owners_by_pixel = owners[order].astype(np.int64)
    starts_by_pixel = np.concatenate([[0], np.cumsum(np.bincount(pixels_all, minlength=pixel_count))])

    counts = np.array([len(pixels) for pixels in regions], dtype=np.int64)
    sums = np.array([flat[pixels].sum() for pixels in regions], dtype=np.float64)
    alive = np.ones(len(regions), dtype=bool)
    covered = np.zeros(pixel_count, dtype=bool)
    steps = []  # (newly covered pixels, gain)
    while True:
        alive &= counts >= min_pixel_diff
        if not alive.any():
            break
        gains = np.where(alive, sums / np.maximum(counts, 1), -np.inf)
        best = int(np.argmax(gains))
        new = regions[best][~covered[regions[best]]]
        gain = float(flat[new].mean())  # exact, not the running sums' estimate
        steps.append((new, gain))
        covered[new] = True
        alive[best] = False
        starts = starts_by_pixel[new]
        lengths = starts_by_pixel[new + 1] - starts
        positions = np.arange(lengths.sum()) + np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        holders = owners_by_pixel[positions]
        counts -= np.bincount(holders, minlength=len(regions))
        sums -= np.bincount(holders, weights=np.repeat(flat[new], lengths), minlength=len(regions))

    heatmap = np.empty(pixel_count, dtype=np.float64)
    rank_map = np.zeros(pixel_count, dtype=np.int64)
    ranked = sorted(range(len(steps)), key=lambda index: -steps[index][1])
    for rank, index in enumerate(ranked, start=1):
        new, gain = steps[index]
        heatmap[new] = gain
        rank_map[new] = rank
    leftover = ~covered
    if leftover.any():
        density = float(flat[leftover].mean())
        heatmap[leftover] = min(density, min(gain for _, gain in steps)) if steps else density
        rank_map[leftover] = len(steps) + 1
    return heatmap.reshape(height, width), rank_map.reshape(height, width)


def top_area_mask(rank_map: np.ndarray, top_percent: float) -> np.ndarray:
    """The union of the ranked regions, best first, until it covers ``top_percent`` % of the image (at least one
    region; the last one taken crosses the threshold)."""
    target = top_percent / 100.0 * rank_map.size
    areas = np.cumsum(np.bincount(rank_map.reshape(-1))[1:])
    last = int(np.searchsorted(areas, target - 1e-9)) + 1  # the first rank whose cumulated area reaches it
    return rank_map <= min(last, len(areas))
