"""Unit tests for explain_core.rendering: normalisation, PNG overlays and .npy payloads."""

import io

import numpy as np
import pytest
from PIL import Image

from explain_core.rendering import normalize, npy_bytes, overlay_png


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return image


# --------------------------------------------------------------------------- normalize


def test_normalize_range_and_shape():
    heatmap = np.random.default_rng(0).normal(size=(32, 48))
    out = normalize(heatmap)
    assert out.shape == (32, 48)
    assert out.dtype == np.float32
    assert out.min() >= 0.0
    assert out.max() == pytest.approx(1.0)


def test_normalize_uses_magnitude():
    out = normalize(np.array([[-4.0, 2.0], [0.0, 4.0]]), clip_percentile=100)
    np.testing.assert_allclose(out, [[1.0, 0.5], [0.0, 1.0]])


def test_normalize_clips_outliers_at_the_percentile():
    heatmap = np.ones((20, 20))
    heatmap[0, 0] = 1000.0  # one pixel must not wash out the map
    out = normalize(heatmap)
    assert out[0, 0] == 1.0
    assert np.median(out) == pytest.approx(1.0)
    assert normalize(heatmap, clip_percentile=100)[5, 5] == pytest.approx(0.001)


@pytest.mark.parametrize("shape", [(8, 8), (1, 1), (64, 64)])
def test_zeros_stay_zeros(shape):
    out = normalize(np.zeros(shape))
    assert out.shape == shape
    assert not out.any()
    assert np.isfinite(out).all()


def test_nan_and_inf_are_handled():
    heatmap = np.array([[np.nan, np.inf, -np.inf], [1.0, 2.0, 4.0], [0.5, 1.0, 2.0]])
    out = normalize(heatmap, clip_percentile=100)
    assert np.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0
    # finite values are scaled as if the non-finite ones were absent
    np.testing.assert_allclose(out[1], [0.25, 0.5, 1.0])
    assert out[0, 0] == 0.0


def test_all_nan_gives_zeros():
    out = normalize(np.full((4, 4), np.nan))
    assert np.isfinite(out).all()
    assert not out.any()


def test_normalize_accepts_integer_and_float64_input():
    assert normalize(np.array([[0, 5], [10, 10]], dtype=np.int64), clip_percentile=100).dtype == np.float32
    np.testing.assert_allclose(normalize(np.array([[0, 5], [10, 10]]), clip_percentile=100), [[0, 0.5], [1, 1]])


def test_normalize_does_not_modify_its_input():
    heatmap = np.array([[-1.0, np.nan], [2.0, 3.0]])
    copy = heatmap.copy()
    normalize(heatmap)
    np.testing.assert_array_equal(heatmap, copy)


def test_sparse_heatmap_is_not_erased():
    heatmap = np.zeros((64, 64))
    heatmap[10:12, 20:22] = 3.0  # 4 of 4096 pixels
    out = normalize(heatmap)
    assert out[10, 20] == pytest.approx(1.0)
    assert out[0, 0] == 0.0


# --------------------------------------------------------------------------- overlay_png


@pytest.mark.parametrize(
    ("height", "width", "max_side", "expected"),
    [
        (64, 64, 1024, (64, 64)),
        (150, 300, 100, (100, 50)),
        (300, 150, 100, (50, 100)),
        (480, 640, 320, (320, 240)),
        (1000, 10, 100, (1, 100)),
        (2000, 3000, 1024, (1024, 683)),
        (100, 200, 200, (200, 100)),  # exactly at the cap: unchanged
        (50, 80, 1024, (80, 50)),  # never scaled up
    ],
)
def test_overlay_size_keeps_aspect_and_is_capped(height, width, max_side, expected):
    image = np.zeros((height, width, 3), np.uint8)
    png = overlay_png(image, np.random.default_rng(1).random((7, 7)), max_side=max_side)
    out = decode(png)
    assert out.size == expected
    assert out.mode == "RGB"
    assert max(out.size) <= max_side


def test_overlay_default_cap_is_1024():
    out = decode(overlay_png(np.zeros((1200, 2400, 3), np.uint8), np.ones((4, 4))))
    assert out.size == (1024, 512)


def hot_left_cold_right(height=60, width=80) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((height, width, 3), 128, np.uint8)
    heatmap = np.zeros((height, width))
    heatmap[:, : width // 2] = 1.0
    return image, heatmap


def saturation(pixel) -> int:
    return int(max(pixel)) - int(min(pixel))


def test_overlay_pixels_differ_where_the_heatmap_is_hot():
    image, heatmap = hot_left_cold_right()
    pixels = np.asarray(decode(overlay_png(image, heatmap)), dtype=int)
    hot, cold = pixels[30, 5], pixels[30, 75]
    # jet: hot is red, cold is blue
    assert hot[0] > hot[2] + 40
    assert cold[2] > cold[0]
    assert np.abs(hot - cold).sum() > 60
    # each side is uniform
    assert (pixels[:, :35] == hot).all()
    assert (pixels[:, 45:] == cold).all()


def test_overlay_heatmap_of_another_size_is_stretched_over_the_image():
    image = np.full((60, 80, 3), 128, np.uint8)
    heatmap = np.zeros((4, 4))
    heatmap[:, :2] = 5.0  # left half hot, at a much lower resolution
    pixels = np.asarray(decode(overlay_png(image, heatmap)), dtype=int)
    assert pixels.shape == (60, 80, 3)
    assert pixels[30, 2, 0] > pixels[30, 2, 2]
    assert pixels[30, 77, 2] > pixels[30, 77, 0]


def test_overlay_higher_alpha_colours_hot_regions_more():
    image, heatmap = hot_left_cold_right()
    weak = np.asarray(decode(overlay_png(image, heatmap, alpha=0.2)), dtype=int)
    strong = np.asarray(decode(overlay_png(image, heatmap, alpha=0.8)), dtype=int)
    assert saturation(strong[30, 5]) > saturation(weak[30, 5]) + 20


def test_overlay_colormap_is_selectable():
    image, heatmap = hot_left_cold_right()
    grey = np.asarray(decode(overlay_png(image, heatmap, colormap="gray")), dtype=int)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()  # no hue at all
    assert grey[30, 5, 0] > grey[30, 75, 0] + 40  # gray colormap: hot is white, cold is black
    with pytest.raises(KeyError):
        overlay_png(image, heatmap, colormap="no-such-colormap")


def test_overlay_shows_the_image_where_the_heatmap_is_cold():
    _, heatmap = hot_left_cold_right()
    dark = np.asarray(decode(overlay_png(np.full((60, 80, 3), 20, np.uint8), heatmap)), dtype=int)
    bright = np.asarray(decode(overlay_png(np.full((60, 80, 3), 235, np.uint8), heatmap)), dtype=int)
    assert (bright[30, 75] - dark[30, 75]).min() > 60


def test_overlay_of_a_blank_heatmap_is_the_cold_colour_everywhere():
    image = np.full((20, 30, 3), 200, np.uint8)
    pixels = np.asarray(decode(overlay_png(image, np.zeros((20, 30)))))
    assert (pixels == pixels[0, 0]).all()


def test_overlay_downscaled_keeps_hot_cold_sides():
    image, heatmap = hot_left_cold_right(600, 800)
    pixels = np.asarray(decode(overlay_png(image, heatmap, max_side=80)), dtype=int)
    assert pixels.shape == (60, 80, 3)
    assert pixels[30, 5, 0] > pixels[30, 5, 2]
    assert pixels[30, 75, 2] > pixels[30, 75, 0]


# --------------------------------------------------------------------------- npy_bytes


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(2).normal(size=(3, 16, 16)).astype(np.float32),
        np.arange(12, dtype=np.int64).reshape(3, 4),
        np.array([[np.nan, np.inf], [-0.0, 1e-30]], dtype=np.float64),
        np.zeros((0, 5), np.float32),
    ],
    ids=["float32", "int64", "special-values", "empty"],
)
def test_npy_bytes_round_trip(array):
    data = npy_bytes(array)
    assert data[:6] == b"\x93NUMPY"
    loaded = np.load(io.BytesIO(data), allow_pickle=False)
    assert loaded.dtype == array.dtype
    assert loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, array)


def test_npy_bytes_refuses_object_arrays():
    with pytest.raises(ValueError):
        npy_bytes(np.array([{"a": 1}], dtype=object))
