"""Unit tests for explain_core.images: decoding real encoded bytes, limits, and resizing."""

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from explain_core.errors import ImageTooLargeError, InvalidImageError, UnsupportedFormatError
from explain_core.images import SUPPORTED_FORMATS, DecodedImage, decode_image, resize
from tests.unit import icc_profiles

LIMITS = {"max_bytes": 10 * 1024 * 1024, "max_pixels": 40_000_000}
HEIGHT, WIDTH = 12, 20  # deliberately not square, so a transposed result is caught


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def flat_colours() -> np.ndarray:
    """Four flat quadrants of pure colours: survives GIF's palette exactly."""
    pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    pixels[: HEIGHT // 2, : WIDTH // 2] = (255, 0, 0)
    pixels[: HEIGHT // 2, WIDTH // 2 :] = (0, 255, 0)
    pixels[HEIGHT // 2 :, : WIDTH // 2] = (0, 0, 255)
    pixels[HEIGHT // 2 :, WIDTH // 2 :] = (255, 255, 255)
    return pixels


@pytest.fixture(scope="module")
def jpeg_bytes(rgb) -> bytes:
    smooth = np.repeat(np.linspace(0, 255, WIDTH, dtype=np.uint8)[None, :, None], HEIGHT, axis=0).repeat(3, axis=2)
    return encode(Image.fromarray(np.ascontiguousarray(smooth)), "JPEG", quality=95)


def check_decoded(decoded: DecodedImage, fmt: str, height: int = HEIGHT, width: int = WIDTH):
    assert isinstance(decoded, DecodedImage)
    assert decoded.format == fmt
    assert (decoded.width, decoded.height) == (width, height)
    assert isinstance(decoded.pixels, np.ndarray)
    assert decoded.pixels.dtype == np.uint8
    assert decoded.pixels.shape == (height, width, 3)


# --------------------------------------------------------------------------- supported formats


@pytest.mark.parametrize(("fmt", "options"), [("PNG", {}), ("BMP", {}), ("WEBP", {"lossless": True})])
def test_lossless_formats_decode_exactly(rgb, fmt, options):
    decoded = decode_image(encode(Image.fromarray(rgb), fmt, **options), **LIMITS)
    check_decoded(decoded, fmt)
    np.testing.assert_array_equal(decoded.pixels, rgb)


def test_gif_decodes_to_rgb(flat_colours):
    data = encode(Image.fromarray(flat_colours), "GIF")
    decoded = decode_image(data, **LIMITS)
    check_decoded(decoded, "GIF")
    np.testing.assert_array_equal(decoded.pixels, flat_colours)


def test_jpeg_decodes_close_to_the_source(jpeg_bytes):
    decoded = decode_image(jpeg_bytes, **LIMITS)
    check_decoded(decoded, "JPEG")
    smooth = np.linspace(0, 255, WIDTH)
    assert np.abs(decoded.pixels.astype(float) - smooth[None, :, None]).mean() < 4.0


def test_lossy_webp_decodes(flat_colours):
    decoded = decode_image(encode(Image.fromarray(flat_colours), "WEBP", quality=90), **LIMITS)
    check_decoded(decoded, "WEBP")
    assert decoded.pixels[1, 1, 0] > 200 and decoded.pixels[1, 1, 2] < 60  # red quadrant stays red


def test_grayscale_becomes_rgb_with_equal_channels():
    gray = np.arange(HEIGHT * WIDTH, dtype=np.uint8).reshape(HEIGHT, WIDTH)
    decoded = decode_image(encode(Image.fromarray(gray, mode="L"), "PNG"), **LIMITS)
    check_decoded(decoded, "PNG")
    for channel in range(3):
        np.testing.assert_array_equal(decoded.pixels[..., channel], gray)


def test_opaque_rgba_keeps_its_colours(rgb):
    rgba = np.dstack([rgb, np.full((HEIGHT, WIDTH), 255, np.uint8)])
    decoded = decode_image(encode(Image.fromarray(rgba, mode="RGBA"), "PNG"), **LIMITS)
    check_decoded(decoded, "PNG")
    np.testing.assert_array_equal(decoded.pixels, rgb)
    assert decoded.description()["conversions"] == {}  # nothing to composite


@pytest.mark.parametrize(("mode", "fmt"), [("LA", "PNG"), ("P", "PNG"), ("1", "PNG"), ("I;16", "PNG"),
                                           ("CMYK", "JPEG"), ("L", "JPEG"), ("RGBA", "WEBP"), ("P", "BMP")])
def test_other_modes_convert_to_rgb(mode, fmt):
    decoded = decode_image(encode(Image.new(mode, (WIDTH, HEIGHT)), fmt), **LIMITS)
    check_decoded(decoded, fmt)


def test_animated_gif_gives_the_first_frame():
    frames = [Image.new("RGB", (WIDTH, HEIGHT), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(data, **LIMITS)
    check_decoded(decoded, "GIF")
    assert (decoded.pixels == (255, 0, 0)).all()


def test_supported_formats():
    assert SUPPORTED_FORMATS == ("JPEG", "PNG", "WEBP", "BMP", "GIF")


def test_multi_picture_jpeg_is_accepted_as_jpeg():
    frames = [Image.new("RGB", (WIDTH, HEIGHT), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "MPO", save_all=True, append_images=frames[1:])
    assert data[:3] == b"\xff\xd8\xff"  # a JPEG file
    decoded = decode_image(data, **LIMITS)
    assert decoded.pixels.shape == (HEIGHT, WIDTH, 3)
    assert decoded.pixels[0, 0, 0] > 200


# --------------------------------------------------------------------------- refused input


def test_empty_bytes():
    with pytest.raises(InvalidImageError, match=r"empty \(0 bytes\)") as info:
        decode_image(b"", **LIMITS)
    assert type(info.value) is InvalidImageError


@pytest.mark.parametrize(
    "data",
    [
        b"this is definitely not an image, just some text" * 20,
        np.random.default_rng(42).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        b"\x00",
        b"{\"json\": true}",
    ],
    ids=["text", "random", "one-byte", "json"],
)
def test_non_image_bytes(data):
    with pytest.raises(InvalidImageError, match="not an image in a known format") as info:
        decode_image(data, **LIMITS)
    assert type(info.value) is InvalidImageError
    assert info.value.code == "invalid_image"
    assert info.value.status == 400


def test_truncated_jpeg(jpeg_bytes):
    with pytest.raises(InvalidImageError, match="corrupt or truncated") as info:
        decode_image(jpeg_bytes[: len(jpeg_bytes) // 2], **LIMITS)
    assert type(info.value) is InvalidImageError


def test_truncated_png(rgb):
    data = encode(Image.fromarray(rgb), "PNG")
    with pytest.raises(InvalidImageError, match="corrupt or truncated") as info:
        decode_image(data[: len(data) // 2], **LIMITS)
    assert type(info.value) is InvalidImageError


def test_truncated_images_are_not_silently_padded():
    # The project must not rely on (or be broken by) Pillow's lenient mode.
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "PPM", "TGA", "JPEG2000"])
def test_unsupported_formats(rgb, fmt):
    data = encode(Image.fromarray(rgb), fmt)
    with pytest.raises(UnsupportedFormatError) as info:
        decode_image(data, **LIMITS)
    assert info.value.message == f"image format {fmt} is not supported; use one of JPEG, PNG, WEBP, BMP, GIF"
    assert info.value.details == {"format": fmt}
    assert info.value.status == 415


def test_object_over_max_bytes(rgb):
    data = encode(Image.fromarray(rgb), "BMP")
    assert decode_image(data, max_bytes=len(data), max_pixels=10**6).width == WIDTH  # at the limit: fine
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(data, max_bytes=len(data) - 1, max_pixels=10**6)
    assert info.value.message == f"the object is {len(data)} bytes; the limit is {len(data) - 1}"
    assert info.value.details == {"size": len(data), "limit": len(data) - 1}
    assert info.value.status == 413


def test_max_pixels_is_inclusive(rgb):
    data = encode(Image.fromarray(rgb), "PNG")
    assert decode_image(data, max_bytes=10**6, max_pixels=HEIGHT * WIDTH).height == HEIGHT
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(data, max_bytes=10**6, max_pixels=HEIGHT * WIDTH - 1)
    assert info.value.message == (
        f"image is {WIDTH}x{HEIGHT} = {WIDTH * HEIGHT} pixels; the limit is {WIDTH * HEIGHT - 1}"
    )
    assert info.value.details == {"width": WIDTH, "height": HEIGHT, "limit": WIDTH * HEIGHT - 1}


# --------------------------------------------------------------------------- decompression bombs


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR is rewritten to claim width x height (CRC fixed)."""
    data = bytearray(encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.fixture
def no_pixel_decoding(monkeypatch):
    """Fail the test if any image's pixels are decoded."""
    calls = []

    def forbidden_load(self):
        calls.append(self.size)
        raise AssertionError(f"pixels of a {self.size} image were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden_load)
    return calls


def test_the_no_pixel_decoding_sentinel_works(no_pixel_decoding, rgb):
    with pytest.raises(AssertionError, match="were decoded"):
        decode_image(encode(Image.fromarray(rgb), "PNG"), **LIMITS)
    assert no_pixel_decoding == [(WIDTH, HEIGHT)]


def test_patched_header_is_a_valid_png():
    image = Image.open(io.BytesIO(png_claiming(300, 200)))
    assert (image.format, image.size) == ("PNG", (300, 200))


def test_header_over_max_pixels_is_refused_before_decoding(no_pixel_decoding):
    # 64 million pixels: under Pillow's own bomb threshold, so the configured limit must catch it.
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(png_claiming(8000, 8000), max_bytes=10**6, max_pixels=40_000_000)
    assert info.value.message == "image is 8000x8000 = 64000000 pixels; the limit is 40000000"
    assert info.value.details == {"width": 8000, "height": 8000, "limit": 40_000_000}
    assert no_pixel_decoding == []


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (10000, 10000), (65535, 65535)])
def test_decompression_bomb_header_is_refused_before_decoding(no_pixel_decoding, width, height):
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(png_claiming(width, height), max_bytes=10**6, max_pixels=40_000_000)
    assert "pixels" in info.value.message
    assert "limit" in info.value.message
    assert f"{width * height}" in info.value.message
    assert info.value.status == 413
    assert no_pixel_decoding == []


def test_decompression_bomb_error_reports_the_configured_limit():
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(png_claiming(20000, 20000), max_bytes=10**6, max_pixels=40_000_000)
    assert "40000000" in info.value.message
    assert info.value.details.get("limit") == 40_000_000


def test_real_tiny_file_with_huge_dimensions_is_refused_before_decoding(no_pixel_decoding):
    data = encode(Image.new("1", (6000, 5000)), "PNG")  # 30 M pixels in a few KB
    assert len(data) < 50_000
    with pytest.raises(ImageTooLargeError, match="image is 6000x5000 = 30000000 pixels; the limit is 1000000"):
        decode_image(data, max_bytes=10**6, max_pixels=1_000_000)
    assert no_pixel_decoding == []


# --------------------------------------------------------------------------- resize


@pytest.mark.parametrize(("height", "width"), [(16, 16), (64, 64), (224, 224), (5, 40), (40, 5)])
def test_resize_output_shape(rgb, height, width):
    out = resize(rgb, height, width)
    assert out.shape == (height, width, 3)
    assert out.dtype == np.uint8


def test_resize_to_the_same_size_returns_the_input(rgb):
    assert resize(rgb, HEIGHT, WIDTH) is rgb


def test_resize_keeps_flat_colours():
    pixels = np.full((30, 50, 3), (12, 200, 77), np.uint8)
    out = resize(pixels, 64, 64)
    assert (out == (12, 200, 77)).all()


def test_resize_keeps_left_right_and_top_bottom(flat_colours):
    out = resize(flat_colours, 64, 64)
    assert tuple(out[2, 2]) == (255, 0, 0)
    assert tuple(out[2, 61]) == (0, 255, 0)
    assert tuple(out[61, 2]) == (0, 0, 255)
    assert tuple(out[61, 61]) == (255, 255, 255)


def test_exif_orientation_is_applied():
    """A phone photo stored sideways with EXIF orientation 6 is explained as displayed."""
    stored = np.zeros((20, 40, 3), dtype=np.uint8)  # 40 wide, 20 high as stored
    stored[:, :20] = (255, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="PNG", exif=exif)

    decoded = decode_image(buffer.getvalue(), **LIMITS)

    assert decoded.pixels.shape == (40, 20, 3)  # displayed 20 wide, 40 high
    assert tuple(decoded.pixels[0, 10]) == (255, 0, 0)  # the red half is now on top
    assert tuple(decoded.pixels[-1, 10]) == (0, 0, 0)


# --------------------------------------------------------------------------- pixels right for every mode
# Each test decodes a real file written here and checks pixel values against colours computed
# independently of the decoder (docs/inputs.md states the rules).


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_16_bit(samples: np.ndarray, colour_type: int) -> bytes:
    """A PNG with 16 bits per sample (Pillow cannot write 16-bit colour): colour type 2 RGB, 6 RGBA."""
    height, width = samples.shape[:2]
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in samples)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(
        b"IEND", b""
    )


def patches(colours, mode: str = "RGB", side: int = 16) -> Image.Image:
    """A row of flat side x side patches (16: whole JPEG blocks, so lossy formats keep them flat)."""
    row = np.concatenate([np.full((side, side, len(colour)), colour, np.uint8) for colour in colours], axis=1)
    return Image.fromarray(row if len(colours[0]) > 1 else row[..., 0], mode=mode)


def patch_colours(pixels: np.ndarray, count: int, side: int = 16) -> np.ndarray:
    """The mean colour of the centre of each patch made by :func:`patches`."""
    centre = slice(side // 4, side - side // 4)
    return np.array([pixels[centre, i * side : (i + 1) * side][:, centre].reshape(-1, 3).mean(axis=0)
                     for i in range(count)])


def blend_on_white(colour, alpha) -> np.ndarray:
    return (np.asarray(colour, float) * alpha + 255 * (255 - alpha)) / 255


# 1. 16-bit and float images are scaled by their range, not clipped at 255


@pytest.mark.parametrize(("low", "high"), [(0, 4095), (30000, 40000), (0, 65535), (100, 101)],
                         ids=["12-bit", "offset", "full", "two-levels"])
def test_16_bit_grayscale_png_is_scaled_by_its_range(low, high):
    values = np.linspace(low, high, HEIGHT * WIDTH).round().astype(np.uint16).reshape(HEIGHT, WIDTH)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"  # what Pillow 13 opens a 16-bit grey PNG as

    decoded = decode_image(data, **LIMITS)

    check_decoded(decoded, "PNG")
    expected = np.rint((values.astype(float) - low) * 255 / (high - low)).astype(np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(decoded.pixels[..., channel], expected)
    assert decoded.pixels.min() == 0 and decoded.pixels.max() == 255
    assert decoded.description()["source_mode"] == "I;16"
    assert decoded.description()["conversions"] == {"scaled_from": [low, high]}


def test_constant_16_bit_image_is_mid_grey():
    decoded = decode_image(encode(Image.fromarray(np.full((HEIGHT, WIDTH), 1000, np.uint16)), "PNG"), **LIMITS)
    assert (decoded.pixels == 128).all()
    assert decoded.description()["conversions"] == {"scaled_from": [1000, 1000]}


def test_16_bit_png_transparent_value_is_background_and_out_of_the_range():
    values = np.full((HEIGHT, WIDTH), 2000, np.uint16)
    values[:, : WIDTH // 2] = 1000
    values[0, :] = 0  # the tRNS value: transparent
    decoded = decode_image(encode(Image.fromarray(values), "PNG", transparency=0), **LIMITS)
    assert (decoded.pixels[0] == 255).all()
    assert (decoded.pixels[1:, : WIDTH // 2] == 0).all()  # 1000 is the lowest visible value
    assert (decoded.pixels[1:, WIDTH // 2 :] == 255).all()
    assert decoded.description()["conversions"] == {"scaled_from": [1000, 2000], "alpha": "composited on white"}


@pytest.mark.parametrize(
    ("image", "expected", "scaled_from"),
    [
        (Image.frombytes("I;16B", (3, 1), np.array([0, 1000, 4000], ">u2").tobytes()), [0, 64, 255], [0, 4000]),
        (Image.frombytes("I;16L", (3, 1), np.array([0, 1000, 4000], "<u2").tobytes()), [0, 64, 255], [0, 4000]),
        (Image.fromarray(np.array([[-100000, 0, 300000]], np.int32)), [0, 64, 255], [-100000, 300000]),
        (Image.fromarray(np.array([[-1.5, 0.0, 2.5]], np.float32)), [0, 96, 255], [-1.5, 2.5]),
    ],
    ids=["I;16B", "I;16L", "I", "F"],
)
def test_other_high_depth_modes_are_scaled_by_their_range(image, expected, scaled_from):
    # No accepted format decodes to these modes today (Pillow opens 16-bit PNG grey as I;16), so the
    # scaling step is checked on Pillow images directly.
    from explain_core.images import _scale_to_8_bit

    conversions = {}
    scaled = _scale_to_8_bit(image, conversions)
    assert scaled.mode == "L"
    assert np.asarray(scaled)[0].tolist() == expected
    assert conversions == {"scaled_from": scaled_from}
    assert all(type(value) is type(scaled_from[0]) for value in conversions["scaled_from"])  # plain int/float


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_image_with_non_finite_values_is_an_invalid_image(bad):
    from explain_core.images import _scale_to_8_bit

    image = Image.fromarray(np.array([[0.0, bad, 1.0]], np.float32))
    assert image.mode == "F"
    with pytest.raises(InvalidImageError, match="non-finite") as info:
        _scale_to_8_bit(image, {})
    assert info.value.status == 400


def test_48_bit_png_keeps_the_high_byte_of_each_channel():
    samples = np.random.default_rng(1).integers(0, 65536, (HEIGHT, WIDTH, 3)).astype(np.uint16)
    data = png_16_bit(samples, colour_type=2)
    assert Image.open(io.BytesIO(data)).mode == "RGB"  # Pillow 13 reduces 16-bit colour itself

    decoded = decode_image(data, **LIMITS)

    check_decoded(decoded, "PNG")
    np.testing.assert_array_equal(decoded.pixels, samples >> 8)  # full-range scaling: 65535 -> 255
    assert decoded.description()["conversions"] == {"reduced_to_8_bit": "16-bit channels, high byte kept"}


def test_64_bit_rgba_png_is_composited_on_white():
    samples = np.zeros((HEIGHT, WIDTH, 4), np.uint16)
    samples[...] = (65535, 0, 0, 0)  # red hidden under full transparency
    samples[:, WIDTH // 2 :] = (65535, 0, 0, 32896)  # alpha 128 in 8 bits: half transparent
    decoded = decode_image(png_16_bit(samples, colour_type=6), **LIMITS)
    assert (decoded.pixels[:, : WIDTH // 2] == 255).all()
    np.testing.assert_allclose(decoded.pixels[:, WIDTH // 2 :], np.broadcast_to(
        blend_on_white((255, 0, 0), 128), (HEIGHT, WIDTH - WIDTH // 2, 3)), atol=1)
    assert decoded.description()["conversions"] == {
        "reduced_to_8_bit": "16-bit channels, high byte kept", "alpha": "composited on white"}


# 2. CMYK and ICC profiles: converted to sRGB


CMYK_PRIMARIES = [(255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 255), (0, 0, 0, 0)]
CMYK_PRIMARIES_AS_RGB = [(0, 255, 255), (255, 0, 255), (255, 255, 0), (0, 0, 0), (255, 255, 255)]


def adobe_app14(data: bytes) -> tuple[int, int]:
    """Start and end of a JPEG's Adobe APP14 segment (marker FFEE)."""
    start = data.index(b"\xff\xee")
    assert data[start + 4 : start + 9] == b"Adobe"
    return start, start + 2 + struct.unpack(">H", data[start + 2 : start + 4])[0]


def test_adobe_inverted_cmyk_jpeg_gives_the_right_colours():
    data = encode(patches(CMYK_PRIMARIES, "CMYK"), "JPEG", quality=95)
    adobe_app14(data)  # libjpeg writes the Adobe marker and Pillow stores the ink inverted, as Photoshop does
    assert Image.open(io.BytesIO(data)).info["adobe"]

    decoded = decode_image(data, **LIMITS)

    check_decoded(decoded, "JPEG", 16, 16 * len(CMYK_PRIMARIES))
    np.testing.assert_allclose(patch_colours(decoded.pixels, 5), CMYK_PRIMARIES_AS_RGB, atol=3)
    assert decoded.description()["source_mode"] == "CMYK"
    assert "without a profile" in decoded.description()["conversions"]["cmyk"]


def test_plain_cmyk_jpeg_without_the_adobe_marker_gives_the_right_colours():
    # Stored ink = 255 - the inverted values Pillow writes; the marker that announces inversion removed.
    inverted = Image.fromarray(255 - np.asarray(patches(CMYK_PRIMARIES, "CMYK")), mode="CMYK")
    data = encode(inverted, "JPEG", quality=95)
    start, end = adobe_app14(data)
    data = data[:start] + data[end:]
    assert "adobe" not in Image.open(io.BytesIO(data)).info

    decoded = decode_image(data, **LIMITS)

    np.testing.assert_allclose(patch_colours(decoded.pixels, 5), CMYK_PRIMARIES_AS_RGB, atol=3)


#: The sRGB colour of 100% cyan, magenta, yellow and black in the toy CMYK profile (process-ink-like).
TOY_INKS = [(0, 160, 230), (230, 0, 126), (255, 237, 0), (35, 31, 32)]


def test_cmyk_jpeg_with_an_icc_profile_is_converted_to_srgb():
    inks = [(255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 255), (0, 0, 0, 0), (255, 255, 0, 0)]
    # Overprinted cyan and magenta: the product of both inks' colours (the profile's model).
    expected = TOY_INKS + [(255, 255, 255), np.multiply(TOY_INKS[0], TOY_INKS[1]) / 255]
    profile = icc_profiles.cmyk_profile(TOY_INKS, "Toy CMYK test profile")
    data = encode(patches(inks, "CMYK"), "JPEG", quality=95, icc_profile=profile)

    decoded = decode_image(data, **LIMITS)

    np.testing.assert_allclose(patch_colours(decoded.pixels, len(inks)), expected, atol=4)
    assert decoded.description()["conversions"] == {
        "icc_profile": "converted to sRGB", "icc_profile_description": "Toy CMYK test profile"}


ADOBE_RGB_SAMPLES = [(200, 60, 60), (40, 90, 200), (0, 200, 0), (128, 128, 128), (255, 255, 255)]


@pytest.mark.parametrize(("fmt", "options", "tolerance"), [
    ("PNG", {}, 1), ("WEBP", {"lossless": True}, 1), ("JPEG", {"quality": 95, "subsampling": 0}, 4)])
def test_rgb_image_with_an_adobe_rgb_profile_is_converted_to_srgb(fmt, options, tolerance):
    expected = icc_profiles.adobe_rgb_to_srgb(ADOBE_RGB_SAMPLES)
    assert np.abs(expected - ADOBE_RGB_SAMPLES).max() > 25  # the profile matters for these colours
    data = encode(patches(ADOBE_RGB_SAMPLES), fmt, icc_profile=icc_profiles.adobe_rgb_like_profile(), **options)

    decoded = decode_image(data, **LIMITS)

    np.testing.assert_allclose(patch_colours(decoded.pixels, len(ADOBE_RGB_SAMPLES)), expected, atol=tolerance)
    assert decoded.description()["conversions"] == {
        "icc_profile": "converted to sRGB", "icc_profile_description": "Adobe RGB (1998)-like test profile"}


def test_grey_image_with_a_linear_grey_profile_is_converted_to_srgb():
    levels = [(0,), (64,), (128,), (255,)]
    data = encode(patches(levels, "L"), "PNG", icc_profile=icc_profiles.linear_grey_profile())

    decoded = decode_image(data, **LIMITS)

    expected = icc_profiles.linear_to_srgb(np.array([0, 64, 128, 255]) / 255)  # 128 -> about 188
    np.testing.assert_allclose(patch_colours(decoded.pixels, 4), np.repeat(expected[:, None], 3, axis=1), atol=1)
    assert decoded.description()["conversions"]["icc_profile"] == "converted to sRGB"


def test_srgb_profile_leaves_pixels_unchanged(rgb):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    decoded = decode_image(encode(Image.fromarray(rgb), "PNG", icc_profile=srgb), **LIMITS)
    np.testing.assert_array_equal(decoded.pixels, rgb)
    assert decoded.description()["conversions"]["icc_profile_description"] == "sRGB built-in"


@pytest.mark.parametrize(("profile", "reason"), [
    (b"not a colour profile" * 10, "ignored: unreadable"),
    ("lab", "ignored: a Lab profile for RGB pixels"),
    (icc_profiles.linear_grey_profile(), "ignored: a GRAY profile for RGB pixels"),
], ids=["garbage", "lab-on-rgb", "grey-on-rgb"])
def test_unusable_icc_profile_is_ignored_and_recorded(rgb, profile, reason):
    if profile == "lab":
        from PIL import ImageCms

        profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    decoded = decode_image(encode(Image.fromarray(rgb), "PNG", icc_profile=profile), **LIMITS)
    np.testing.assert_array_equal(decoded.pixels, rgb)
    assert decoded.description()["conversions"] == {"icc_profile": reason}


# 3. Transparency: composited on white


@pytest.mark.parametrize(("fmt", "options"), [("PNG", {}), ("WEBP", {"lossless": True, "exact": True})])
def test_transparent_pixels_become_white_and_half_transparent_ones_blend(fmt, options):
    rgba = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
    rgba[...] = (255, 0, 0, 0)  # red, fully transparent
    rgba[:, 5:10] = (255, 0, 0, 128)  # red, half transparent
    rgba[:, 10:15] = (0, 0, 255, 64)
    rgba[:, 15:] = (10, 20, 30, 255)  # opaque
    data = encode(Image.fromarray(rgba, mode="RGBA"), fmt, **options)
    assert tuple(np.asarray(Image.open(io.BytesIO(data)))[0, 0]) == (255, 0, 0, 0)  # the file hides red there

    decoded = decode_image(data, **LIMITS)

    check_decoded(decoded, fmt)
    assert (decoded.pixels[:, :5] == 255).all()
    np.testing.assert_allclose(decoded.pixels[:, 5:10], np.broadcast_to(blend_on_white((255, 0, 0), 128),
                                                                         (HEIGHT, 5, 3)), atol=1)
    np.testing.assert_allclose(decoded.pixels[:, 10:15], np.broadcast_to(blend_on_white((0, 0, 255), 64),
                                                                          (HEIGHT, 5, 3)), atol=1)
    assert (decoded.pixels[:, 15:] == (10, 20, 30)).all()
    assert decoded.description()["conversions"] == {"alpha": "composited on white"}


def palette_image() -> Image.Image:
    """Columns of palette entries 0 (red), 1 (green), 2 (blue)."""
    image = Image.fromarray(np.repeat(np.arange(3, dtype=np.uint8), 4)[None, :].repeat(HEIGHT, axis=0), mode="P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    return image


def test_palette_png_with_trns_alpha():
    data = encode(palette_image(), "PNG", transparency=bytes([0, 128, 255]))  # red hidden, green half, blue opaque
    decoded = decode_image(data, **LIMITS)
    assert decoded.description()["source_mode"] == "P"
    assert (decoded.pixels[:, :4] == 255).all()
    np.testing.assert_allclose(decoded.pixels[:, 4:8], np.broadcast_to(blend_on_white((0, 255, 0), 128),
                                                                        (HEIGHT, 4, 3)), atol=1)
    assert (decoded.pixels[:, 8:] == (0, 0, 255)).all()


def test_gif_transparency_index_becomes_white():
    data = encode(palette_image(), "GIF", transparency=0)  # the red entry is transparent
    decoded = decode_image(data, **LIMITS)
    assert (decoded.pixels[:, :4] == 255).all()
    assert (decoded.pixels[:, 4:8] == (0, 255, 0)).all()
    assert (decoded.pixels[:, 8:] == (0, 0, 255)).all()
    assert decoded.description()["conversions"] == {"alpha": "composited on white"}


def test_grey_with_alpha_png_is_composited():
    la = np.zeros((HEIGHT, WIDTH, 2), np.uint8)
    la[...] = (0, 0)  # black, transparent
    la[:, WIDTH // 2 :] = (0, 128)  # black, half transparent
    decoded = decode_image(encode(Image.fromarray(la, mode="LA"), "PNG"), **LIMITS)
    assert (decoded.pixels[:, : WIDTH // 2] == 255).all()
    assert (np.abs(decoded.pixels[:, WIDTH // 2 :].astype(int) - blend_on_white(0, 128)) <= 1).all()


def test_rgb_png_with_a_transparent_colour():
    pixels = np.full((HEIGHT, WIDTH, 3), (255, 0, 0), np.uint8)
    pixels[:, WIDTH // 2 :] = (0, 0, 255)
    decoded = decode_image(encode(Image.fromarray(pixels), "PNG", transparency=(255, 0, 0)), **LIMITS)
    assert (decoded.pixels[:, : WIDTH // 2] == 255).all()
    assert (decoded.pixels[:, WIDTH // 2 :] == (0, 0, 255)).all()


# 4. EXIF orientation: applied, and width and height recorded as displayed


def test_jpeg_with_orientation_6_records_the_displayed_size_and_rotates_the_pixels():
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high as stored
    stored[:10, :10] = (255, 0, 0)  # the stored top-left corner is marked red
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    data = encode(Image.fromarray(stored), "JPEG", quality=95, subsampling=0, exif=exif)

    decoded = decode_image(data, **LIMITS)

    check_decoded(decoded, "JPEG", height=40, width=20)
    assert (decoded.width, decoded.height) == (20, 40)
    # Rotating clockwise takes the top-left corner to the top-right.
    assert np.abs(decoded.pixels[3, 16].astype(int) - (255, 0, 0)).max() < 20
    for row, column in ((3, 3), (36, 3), (36, 16)):
        assert decoded.pixels[row, column].max() < 20
    assert decoded.description() == {"format": "JPEG", "width": 20, "height": 40, "source_mode": "RGB",
                                     "conversions": {"exif_orientation": 6}}


#: How each EXIF orientation displays the stored pixels (EXIF 2.32, tag 0x0112), in numpy terms.
DISPLAYED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored horizontally
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1],  # mirrored vertically
    5: lambda a: np.rot90(a[:, ::-1], 1),  # mirrored horizontally, rotated 270 clockwise
    6: lambda a: np.rot90(a, -1),  # rotated 90 clockwise
    7: lambda a: np.rot90(a[:, ::-1], -1),  # mirrored horizontally, rotated 90 clockwise
    8: lambda a: np.rot90(a, 1),  # rotated 270 clockwise
}


@pytest.mark.parametrize("orientation", sorted(DISPLAYED))
def test_every_exif_orientation(rgb, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_image(encode(Image.fromarray(rgb), "PNG", exif=exif), **LIMITS)
    expected = DISPLAYED[orientation](rgb)
    np.testing.assert_array_equal(decoded.pixels, expected)
    assert (decoded.height, decoded.width) == expected.shape[:2]
    assert decoded.description()["conversions"] == ({} if orientation == 1 else {"exif_orientation": orientation})


# 5. description(): what the manifest records


def test_description_of_a_plain_image(rgb):
    decoded = decode_image(encode(Image.fromarray(rgb), "PNG"), **LIMITS)
    assert decoded.description() == {"format": "PNG", "width": WIDTH, "height": HEIGHT, "source_mode": "RGB",
                                      "conversions": {}}


def test_description_is_strict_json_of_plain_values():
    exif = Image.Exif()
    exif[0x0112] = 8
    inputs = [
        encode(Image.fromarray(np.arange(240, dtype=np.uint16).reshape(12, 20) * 200), "PNG", exif=exif),
        encode(patches(CMYK_PRIMARIES, "CMYK"), "JPEG", icc_profile=icc_profiles.cmyk_profile(TOY_INKS)),
        encode(palette_image(), "GIF", transparency=0),
        encode(patches(ADOBE_RGB_SAMPLES), "WEBP", icc_profile=b"junk" * 40),
    ]
    for data in inputs:
        description = decode_image(data, **LIMITS).description()
        text = json.dumps(description, allow_nan=False)
        assert json.loads(text) == description
        assert set(description) == {"format", "width", "height", "source_mode", "conversions"}


def test_description_is_a_copy(rgb):
    exif = Image.Exif()
    exif[0x0112] = 3
    decoded = decode_image(encode(Image.fromarray(rgb), "PNG", exif=exif), **LIMITS)
    decoded.description()["conversions"]["exif_orientation"] = 1
    assert decoded.description()["conversions"] == {"exif_orientation": 3}
