"""Unit tests for explain_core.rendering: colour scales, overlays (decoded pixels), sizes, the colour bar,
the raw heatmap, the options (metadata, card default, API request) and their errors."""

import io
import json

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from explain_core.errors import InvalidRenderingError
from explain_core.rendering import (
    BAR_WIDTH,
    COLORMAPS,
    MARGIN,
    MIN_OVERLAY_SIDE,
    ColourScale,
    RenderOptions,
    colour_table,
    npy_bytes,
    overlay_layout,
    parse_rendering,
    render_heatmap,
    rendering_metadata,
    tick_label,
)

ABSOLUTE_ALL = RenderOptions(clip_percentiles=(0, 100))


def overlay_png(image, heatmap, options=None, **sizes) -> bytes:
    """The overlay the function writes (explain_core.rendering.render_heatmap)."""
    return render_heatmap(image, heatmap, options, **sizes).overlay


def decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "RGB"
    return np.asarray(image, dtype=int)


def scaled(heatmap, options=ABSOLUTE_ALL) -> np.ndarray:
    return ColourScale.of(heatmap, options).scaled(heatmap)


def left_right(height=60, width=80, left=1.0, right=0.0) -> tuple[np.ndarray, np.ndarray]:
    """A grey image and a heatmap of ``left`` on its left half, ``right`` on its right half."""
    heatmap = np.full((height, width), right, dtype=np.float64)
    heatmap[:, : width // 2] = left
    return np.full((height, width, 3), 128, np.uint8), heatmap


def is_red(pixel) -> bool:
    return pixel[0] > pixel[2] + 60


def is_blue(pixel) -> bool:
    return pixel[2] > pixel[0] + 60


def is_cold(pixel) -> bool:
    """The colour map's weak end (jet's dark blue) at the blend's lowest opacity over grey."""
    return pixel[2] > pixel[0] + 15


def bar_column(panel) -> np.ndarray:
    """The middle column of the colour bar in the panel right of the picture."""
    return panel[:, MARGIN + BAR_WIDTH // 2]


def saturation(pixels) -> np.ndarray:
    return pixels.max(axis=-1) - pixels.min(axis=-1)


# --------------------------------------------------------------------------- colour scales
def test_absolute_uses_the_magnitude():
    np.testing.assert_allclose(scaled(np.array([[-4.0, 2.0], [0.0, 4.0]])), [[1.0, 0.5], [0.0, 1.0]])


@pytest.mark.parametrize(("polarity", "expected"), [
    ("positive", [[0.0, 0.5], [0.0, 1.0]]),
    ("negative", [[1.0, 0.0], [0.0, 0.0]]),
    ("signed", [[-1.0, 0.5], [0.0, 1.0]]),
])
def test_polarity_chooses_the_sign_shown(polarity, expected):
    options = RenderOptions(polarity=polarity, clip_percentiles=(0, 100))
    np.testing.assert_allclose(scaled(np.array([[-4.0, 2.0], [0.0, 4.0]]), options), expected)


def test_the_default_clips_outliers_at_99_5_percent_of_the_magnitude():
    heatmap = np.ones((20, 20))
    heatmap[0, 0] = 1000.0  # one pixel must not wash out the map
    out = scaled(heatmap, RenderOptions())
    assert out[0, 0] == 1.0 and np.median(out) == pytest.approx(1.0)
    assert scaled(heatmap)[5, 5] == pytest.approx(0.001)


def test_a_low_percentile_drops_weak_attributions_to_the_weakest_colour():
    heatmap = np.arange(100, dtype=np.float64).reshape(10, 10)  # 0 .. 99
    scale = ColourScale.of(heatmap, RenderOptions(clip_percentiles=(50, 100)))
    assert scale.low == pytest.approx(49.5) and scale.high == pytest.approx(99.0)
    out = scale.scaled(heatmap)
    assert (out.ravel()[:50] == 0).all() and out.ravel()[99] == 1.0
    assert out.ravel()[75] == pytest.approx((75 - 49.5) / 49.5)


@pytest.mark.parametrize("shape", [(8, 8), (1, 1), (64, 64)])
def test_zeros_stay_zeros(shape):
    out = scaled(np.zeros(shape), RenderOptions())
    assert out.shape == shape and not out.any() and np.isfinite(out).all()


def test_nan_and_inf_count_as_zero():
    heatmap = np.array([[np.nan, np.inf, -np.inf], [1.0, 2.0, 4.0], [0.5, 1.0, 2.0]])
    out = scaled(heatmap)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[1], [0.25, 0.5, 1.0])
    assert out[0].tolist() == [0.0, 0.0, 0.0]
    assert not scaled(np.full((4, 4), np.nan), RenderOptions()).any()


def test_the_heatmap_is_not_modified():
    heatmap = np.array([[-1.0, np.nan], [2.0, 3.0]])
    copy = heatmap.copy()
    render_heatmap(np.zeros((2, 2, 3), np.uint8), heatmap, RenderOptions(polarity="signed"))
    np.testing.assert_array_equal(heatmap, copy)


def test_a_sparse_heatmap_is_not_erased():
    heatmap = np.zeros((64, 64))
    heatmap[10:12, 20:22] = 3.0  # 4 of 4096 pixels: the 99.5th percentile is 0
    out = scaled(heatmap, RenderOptions())
    assert out[10, 20] == pytest.approx(1.0) and out[0, 0] == 0.0


def test_colour_bar_values_are_attribution_units():
    heatmap = np.linspace(-2.0, 4.0, 100).reshape(10, 10)
    signed = ColourScale.of(heatmap, RenderOptions(polarity="signed", clip_percentiles=(0, 100)))
    assert [signed.value_at(p) for p in (0.0, 0.5, 1.0)] == pytest.approx([-4.0, 0.0, 4.0])
    negative = ColourScale.of(heatmap, RenderOptions(polarity="negative", clip_percentiles=(0, 100)))
    assert [negative.value_at(p) for p in (0.0, 1.0)] == pytest.approx([0.0, -2.0])
    assert [tick_label(v) for v in (0.0, 0.92296, -1.5e-5, 12345.0)] == ["0", "0.923", "-1.5e-5", "1.23e4"]


# --------------------------------------------------------------------------- overlays: decoded pixels
def test_signed_shows_positive_red_and_negative_blue():
    image, heatmap = left_right(left=1.0, right=-1.0)
    for overlay in ("blend", "heatmap-only"):
        pixels = decode(overlay_png(image, heatmap, RenderOptions(polarity="signed", overlay=overlay)))
        assert is_red(pixels[30, 20]) and is_blue(pixels[30, 200]), overlay
    zero = decode(overlay_png(image, np.where(heatmap > 0, heatmap, 0.0),
                              RenderOptions(polarity="signed", overlay="heatmap-only")))
    assert saturation(zero[30, 200]) < 10 and zero[30, 200].min() > 230  # zero: RdBu_r's white middle


def test_absolute_shows_both_signs_alike_and_positive_hides_the_negative_side():
    image, heatmap = left_right(left=1.0, right=-1.0)
    absolute = decode(overlay_png(image, heatmap))
    assert (absolute[30, 20] == absolute[30, 200]).all() and is_red(absolute[30, 20])  # jet's top end
    positive = decode(overlay_png(image, heatmap, RenderOptions(polarity="positive")))
    assert is_red(positive[30, 20]) and is_cold(positive[30, 200])  # jet's bottom end: nothing shown
    negative = decode(overlay_png(image, heatmap, RenderOptions(polarity="negative")))
    assert is_cold(negative[30, 20]) and is_red(negative[30, 200])


def test_clip_percentiles_change_the_saturation():
    image = np.full((64, 64, 3), 128, np.uint8)
    heatmap = np.tile(np.linspace(0.0, 1.0, 64), (64, 1))  # a ramp left to right
    middle = MIN_OVERLAY_SIDE // 2 + 10  # a little past the middle of the ramp
    greys = {}
    for overlay in ("heatmap-only", "blend"):
        full, clipped = (decode(overlay_png(image, heatmap, RenderOptions(
            overlay=overlay, clip_percentiles=clip, colormap="gray", colorbar=False))) for clip in ((0, 100), (0, 50)))
        # Past the 50th percentile the clipped scale is saturated: the strongest colour (white), as at the end.
        assert (clipped[100, middle] == clipped[100, -1]).all() and (clipped[100, -1] == full[100, -1]).all()
        assert clipped[100, middle, 0] > full[100, middle, 0] + 40, overlay
        greys[overlay] = full[100, middle, 0]
    assert 120 < greys["heatmap-only"] < 145  # the full scale: about the middle of the map


def test_heatmap_only_draws_no_image():
    _, heatmap = left_right(64, 64, left=1.0, right=0.2)
    dark = np.zeros((64, 64, 3), np.uint8)
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    only = RenderOptions(overlay="heatmap-only", colorbar=False)  # the bar's white panel is not the map
    first, second = decode(overlay_png(dark, heatmap, only)), decode(overlay_png(noisy, heatmap, only))
    assert (first == second).all()  # the image does not matter
    assert not (saturation(first) == 0).any()  # jet has no grey: no image pixel shows through
    blended = decode(overlay_png(noisy, heatmap, RenderOptions(colorbar=False)))  # the bar's colours don't count
    assert len(np.unique(blended.reshape(-1, 3), axis=0)) > 100  # the blend shows the noisy image


def test_higher_alpha_colours_more():
    image, heatmap = left_right()
    weak = decode(overlay_png(image, heatmap, RenderOptions(alpha=0.2)))
    strong = decode(overlay_png(image, heatmap, RenderOptions(alpha=1.0)))
    assert saturation(strong[30, 20]) > saturation(weak[30, 20]) + 100
    assert (strong[30, 20] == np.rint(np.array(colour_table("jet")[255]) * 255)).all()  # alpha 1: the pure colour


def test_the_default_reproduces_the_previous_blend():
    """Before the options: opacity 0.2 + 0.7 * heat over the grey image, jet, 99.5th percentile."""
    image, heatmap = left_right(224, 224, left=1.0, right=0.0)
    pixels = decode(overlay_png(image, heatmap)).astype(float)
    grey = 128 / 255
    for column, heat in ((20, 1.0), (200, 0.0)):
        opacity = 0.2 + 0.7 * heat
        expected = ((1 - opacity) * grey + opacity * colour_table("jet")[round(heat * 255)]) * 255
        np.testing.assert_allclose(pixels[100, column], expected, atol=1)


def test_the_colormap_is_selectable():
    image, heatmap = left_right()
    grey = decode(overlay_png(image, heatmap, RenderOptions(colormap="gray")))
    assert (saturation(grey) == 0).all()  # no hue at all
    assert grey[30, 20, 0] > grey[30, 200, 0] + 40  # gray: strong is white, weak is black


def test_a_blank_heatmap_is_the_weakest_colour_everywhere():
    pixels = decode(overlay_png(np.full((20, 30, 3), 200, np.uint8), np.zeros((20, 30)), RenderOptions(colorbar=False)))
    assert (pixels == pixels[0, 0]).all()


def test_a_heatmap_of_another_size_is_stretched_over_the_image():
    image = np.full((240, 320, 3), 128, np.uint8)
    heatmap = np.zeros((4, 4))
    heatmap[:, :2] = 5.0
    pixels = decode(overlay_png(image, heatmap, RenderOptions(colorbar=False)))
    assert pixels.shape == (240, 320, 3) and is_red(pixels[120, 5]) and is_cold(pixels[120, 315])


# --------------------------------------------------------------------------- colour bar
def test_the_colour_bar_is_drawn_beside_the_picture_by_default():
    image, heatmap = left_right(224, 224, left=2.0, right=0.0)
    plain = decode(overlay_png(image, heatmap, RenderOptions(colorbar=False)))
    with_bar = decode(overlay_png(image, heatmap))  # the default options: with a colour bar (issue 12)
    assert (with_bar == decode(overlay_png(image, heatmap, RenderOptions(colorbar=True)))).all()
    assert plain.shape == (224, 224, 3) and with_bar.shape[0] == 224 and 260 < with_bar.shape[1] < 340
    assert (with_bar[:, :224] == plain).all()  # the picture is unchanged
    panel = with_bar[:, 224:]
    column = bar_column(panel)
    coloured = column[saturation(column) > 100]
    assert is_red(coloured[0]) and is_blue(coloured[-1])  # the map's end on top, its start at the bottom
    assert len(np.unique(coloured, axis=0)) > 50  # the colours vary along it
    labels = panel[:, MARGIN + BAR_WIDTH + 2:]
    assert (labels.max(axis=-1) < 100).sum() > 100  # dark text: the tick labels


def test_the_colour_bar_of_a_signed_map_is_diverging():
    image, heatmap = left_right(224, 224, left=1.0, right=-1.0)
    panel = decode(overlay_png(image, heatmap, RenderOptions(polarity="signed", colorbar=True)))[:, 224:]
    column = bar_column(panel)
    top, bottom = np.where(column.min(axis=-1) < 250)[0][[0, -1]]  # the bar's ends (its outline)
    assert is_red(column[top + 3]) and is_blue(column[bottom - 3]) and column[(top + bottom) // 2].min() > 230


# --------------------------------------------------------------------------- sizes
@pytest.mark.parametrize(("height", "width", "picture", "canvas"), [
    (1, 1, (224, 224), (224, 224)),  # a single pixel: upscaled to the readable minimum
    (20, 4000, (1024, 5), (1024, 224)),  # a wide strip: capped at 1024, letterboxed onto 224 rows
    (4000, 20, (5, 1024), (224, 1024)),
    (480, 640, (640, 480), (640, 480)),  # an ordinary image: as it is
    (2000, 3000, (1024, 683), (1024, 683)),
    (50, 80, (358, 224), (358, 224)),
    (100, 700, (1024, 146), (1024, 224)),  # more elongated than 1024:224
])
def test_layout_keeps_the_aspect_ratio_within_the_minimum_and_the_cap(height, width, picture, canvas):
    layout = overlay_layout(height, width, max_side=1024)
    assert (layout.picture, layout.canvas) == (picture, canvas)
    assert layout.picture[0] / layout.picture[1] == pytest.approx(width / height, rel=0.25)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (20, 4000), (4000, 20), (480, 640)])
def test_overlay_sizes(height, width):
    image = np.full((height, width, 3), 90, np.uint8)
    heatmap = np.random.default_rng(1).random((64, 64))
    layout = overlay_layout(height, width, max_side=1024)
    pixels = decode(overlay_png(image, heatmap, RenderOptions(colorbar=False), max_side=1024))
    assert pixels.shape[:2] == layout.canvas[::-1]
    # The default adds the colour bar's panel (its width follows the labels) right of the same picture.
    with_bar = decode(overlay_png(image, heatmap, max_side=1024))
    panel_width = with_bar.shape[1] - layout.canvas[0]
    assert with_bar.shape[0] == layout.canvas[1] and 2 * MARGIN + BAR_WIDTH < panel_width <= 100
    assert (with_bar[:, :layout.canvas[0]] == pixels).all()
    if layout.canvas != layout.picture:  # letterboxed: the picture centred, white around it
        left = (layout.canvas[0] - layout.picture[0]) // 2
        top = (layout.canvas[1] - layout.picture[1]) // 2
        inside = pixels[top:top + layout.picture[1], left:left + layout.picture[0]]
        assert (inside != 255).any(axis=-1).all()
        outside = np.ones(pixels.shape[:2], bool)
        outside[top:top + layout.picture[1], left:left + layout.picture[0]] = False
        assert (pixels[outside] == 255).all()


def test_tiny_images_are_upscaled_without_blurring():
    image = np.zeros((2, 2, 3), np.uint8)
    image[0, 0] = image[1, 1] = 255  # a checkerboard
    pixels = decode(overlay_png(image, np.zeros((4, 4)), RenderOptions(colorbar=False)))
    assert pixels.shape == (224, 224, 3)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) == 2  # two colours: blocks, not a blur
    assert (pixels[:112, :112] == pixels[0, 0]).all() and (pixels[0, 0] != pixels[0, 223]).any()


def test_the_cap_comes_from_the_caller():
    pixels = decode(overlay_png(np.zeros((1200, 2400, 3), np.uint8), np.ones((4, 4)), RenderOptions(colorbar=False),
                                max_side=512))
    assert pixels.shape == (256, 512, 3)


# --------------------------------------------------------------------------- the raw heatmap
def test_the_raw_heatmap_is_the_map_alone_at_its_own_size():
    image, heatmap = left_right(64, 64, left=1.0, right=-0.5)
    options = RenderOptions(polarity="signed", clip_percentiles=(0, 100))
    rendered = render_heatmap(np.zeros((300, 500, 3), np.uint8), heatmap, options)
    raw = decode(rendered.raw)
    assert raw.shape == (64, 64, 3)
    table = np.rint(colour_table("RdBu_r") * 255)
    assert (raw[10, 10] == table[255]).all()  # +1: the map's end
    assert (raw[10, 50] == table[round(0.25 * 255)]).all()  # -0.5: a quarter up
    assert rendered.magnitudes == [0.0, 1.0]
    # The raw map does not depend on the image under the overlay.
    assert (decode(render_heatmap(np.full((8, 8, 3), 200, np.uint8), heatmap, options).raw) == raw).all()
    overlay = decode(rendered.overlay)  # the image's size, plus the default colour bar the raw map never has
    assert overlay.shape[0] == 300 and overlay.shape[1] > 500 + 2 * MARGIN + BAR_WIDTH
    alone = decode(overlay_png(np.zeros((300, 500, 3), np.uint8), heatmap,
                               options.model_copy(update={"colorbar": False})))
    assert alone.shape == (300, 500, 3) and (overlay[:, :500] == alone).all()


# --------------------------------------------------------------------------- options
def test_metadata_options_are_parsed_over_the_card_default():
    card_default = RenderOptions.model_validate({"polarity": "signed", "colorbar": False})  # both not the default
    options = parse_rendering({"clip-percentiles": " 1, 99 ", "alpha": "0.5", "overlay": "Heatmap-Only"},
                              card_default)
    assert options == RenderOptions(polarity="signed", colormap="RdBu_r", clip_percentiles=(1.0, 99.0), alpha=0.5,
                                    overlay="heatmap-only", colorbar=False)
    assert parse_rendering({"polarity": "absolute", "colormap": "VIRIDIS", "colorbar": "true"}, card_default) == \
        RenderOptions(colormap="viridis")
    assert RenderOptions().colorbar is True  # every overlay has a colour bar unless asked otherwise
    assert parse_rendering({}) == RenderOptions(colormap="jet")  # the default, colour map named


@pytest.mark.parametrize(("metadata", "says"), [
    ({"polarity": "both"}, "polarity"),
    ({"colormap": "rainbow"}, "colormap 'rainbow' is not one of"),
    ({"polarity": "signed", "colormap": "jet"}, "signed polarity needs a diverging colour map"),
    ({"alpha": "1.5"}, "alpha: Input should be less than or equal to 1"),
    ({"alpha": "0"}, "alpha: Input should be greater than or equal to 0.1"),
    ({"alpha": "half"}, "alpha must be a number"),
    ({"alpha": "nan"}, "alpha must be finite"),
    ({"alpha": "0.5,0.6"}, "alpha must be one number"),
    ({"clip-percentiles": "99,1"}, "needs 0 <= low < high <= 100"),
    ({"clip-percentiles": "5,5"}, "needs 0 <= low < high <= 100"),
    ({"clip-percentiles": "-1,50"}, "needs 0 <= low < high <= 100"),
    ({"clip-percentiles": "1,101"}, "needs 0 <= low < high <= 100"),
    ({"clip-percentiles": "99"}, "must be two numbers"),
    ({"clip-percentiles": "1;99"}, 'must be two numbers "low,high"'),
    ({"overlay": "over"}, "overlay"),
    ({"colorbar": "yes"}, "colorbar must be true or false"),
])
def test_bad_options_are_refused_with_a_typed_error(metadata, says):
    with pytest.raises(InvalidRenderingError) as raised:
        parse_rendering(metadata)
    assert says in raised.value.message
    assert raised.value.to_dict()["code"] == "invalid_rendering"


def test_options_round_trip_through_metadata():
    for options in (RenderOptions().resolved(), RenderOptions(polarity="negative", colormap="magma",
                                                              clip_percentiles=(0.1, 99.9), alpha=0.3,
                                                              overlay="heatmap-only", colorbar=False)):
        metadata = rendering_metadata(options)
        assert set(metadata) == {"polarity", "colormap", "clip-percentiles", "alpha", "overlay", "colorbar"}
        assert all(isinstance(v, str) and v.isascii() for v in metadata.values())
        assert parse_rendering(metadata) == options


def test_every_allowed_colormap_exists_in_matplotlib():
    for name in COLORMAPS:
        assert colour_table(name).shape == (256, 3)


def test_request_options_carry_the_rendering_through_metadata_and_the_fingerprint():
    from explain_core.model_card import ModelCard
    from explain_core.request_options import parse_options

    card = ModelCard(name="m", version="v1", input_height=32, input_width=32, class_names=["a", "b"],
                     rendering={"colorbar": False})
    plain = parse_options({"methods": "Saliency"}, card, "gradient")
    assert plain.rendering == RenderOptions(colormap="jet", colorbar=False)  # the card's default
    asked = parse_options({"methods": "Saliency", "colorbar": "true", "polarity": "signed"}, card, "gradient")
    assert asked.rendering == RenderOptions(polarity="signed", colormap="RdBu_r", colorbar=True)
    # Every option is written out, defaults included, so the card's colorbar=false cannot creep back in.
    assert parse_options(asked.to_metadata(), card, "gradient") == asked
    assert asked.fingerprint != plain.fingerprint
    # The default drawing leaves the fingerprint as it was before rendering options existed.
    default_card = ModelCard(name="m", version="v1", input_height=32, input_width=32, class_names=["a", "b"])
    default = parse_options({"methods": "Saliency"}, default_card, "gradient")
    assert "rendering" not in default.fingerprint and default.rendering == RenderOptions().resolved()
    assert default.fingerprint == type(default)(default.methods, default.target, default.top_k,
                                                default.metrics).fingerprint


def test_a_card_with_bad_rendering_is_refused():
    from explain_core.errors import ModelCardError
    from explain_core.model_card import ModelCard

    card = {"name": "m", "version": "v1", "input_height": 32, "input_width": 32, "class_names": ["a", "b"],
            "rendering": {"polarity": "signed", "colormap": "viridis"}}
    with pytest.raises(ModelCardError, match="rendering"):
        ModelCard.from_json(json.dumps(card), model="m", version="v1")


def test_the_api_request_passes_only_the_options_it_gives():
    from explain_core.api_models import ExplanationRequest

    request = ExplanationRequest(model={"name": "shapes", "version": "v1"}, input_base64="aGk=",
                                 rendering={"polarity": "signed", "clip_percentiles": [2, 98]})
    assert request.options_metadata() == {"polarity": "signed", "clip-percentiles": "2.0,98.0"}
    for bad in ({"alpha": 3}, {"colorbar": "yes"}, {"clip_percentiles": [50]}, {"shade": 1}, {"alpha": True}):
        with pytest.raises(ValidationError):
            ExplanationRequest(model={"name": "shapes", "version": "v1"}, input_base64="aGk=", rendering=bad)


def test_a_manifest_records_the_options_and_reads_a_newer_writer_s():
    from explain_core.manifest import Manifest

    document = json.loads((__import__("pathlib").Path(__file__).parents[1] / "data/manifests/gradient-image-jpeg.json")
                          .read_text())
    document["rendering"] = {**RenderOptions().resolved().model_dump(mode="json"), "gamma": 2.2}
    manifest = Manifest.from_dict(document)
    assert manifest.rendering.colormap_name == "jet" and manifest.rendering.clip_percentiles == (0.0, 99.5)
    assert manifest.to_dict()["rendering"] == document["rendering"]  # the unknown key kept
    written = Manifest.from_dict({**document, "rendering": None}).model_copy(update={"rendering": None})
    written.rendering = RenderOptions().resolved()
    assert written.to_dict()["rendering"] == {"polarity": "absolute", "colormap": "jet",
                                              "clip_percentiles": [0.0, 99.5], "alpha": 0.9, "overlay": "blend",
                                              "colorbar": True}  # every option, defaults included


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
    assert loaded.dtype == array.dtype and loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, array)


def test_npy_bytes_refuses_object_arrays():
    with pytest.raises(ValueError):
        npy_bytes(np.array([{"a": 1}], dtype=object))
