"""Heatmap overlays: a matplotlib colormap over the original image, written as PNG."""

import io

import numpy as np
from PIL import Image


def normalize(heatmap: np.ndarray, clip_percentile: float = 99.5) -> np.ndarray:
    """Absolute attribution scaled to [0, 1], clipping outliers so one pixel cannot wash out the map."""
    magnitude = np.abs(np.nan_to_num(heatmap.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0))
    top = np.percentile(magnitude, clip_percentile)
    if top <= 0:  # a sparse map (under 0.5% non-zero pixels) must not vanish
        top = magnitude.max()
    if top <= 0:
        return np.zeros_like(magnitude)
    return np.clip(magnitude / top, 0.0, 1.0)


def overlay_png(
    image: np.ndarray, heatmap: np.ndarray, *, max_side: int = 1024, alpha: float = 0.7, colormap: str = "jet"
) -> bytes:
    """Blend the colour-mapped heatmap (any size) over ``image`` (uint8 RGB) and encode as PNG.

    The image is shown in grey so the colours belong to the heatmap alone, and each pixel's
    opacity grows with its attribution so weak regions leave the image visible. The output keeps
    the image's aspect ratio, scaled down so that its longer side is at most ``max_side``.
    """
    from matplotlib import colormaps

    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    base = Image.fromarray(image).convert("L")
    base = base.resize(size, Image.BILINEAR) if scale < 1.0 else base
    heat = np.asarray(Image.fromarray(normalize(heatmap)).resize(size, Image.BILINEAR), dtype=np.float32)
    colours = colormaps[colormap](heat)[..., :3]
    opacity = (0.2 + alpha * heat)[..., None]
    grey = np.asarray(base, dtype=np.float32)[..., None] / 255.0
    blended = (1 - opacity) * grey + opacity * colours
    buffer = io.BytesIO()
    Image.fromarray(np.clip(blended * 255.0, 0, 255).astype(np.uint8)).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
