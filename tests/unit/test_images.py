"""Unit tests for explain_core.images: decoding real encoded bytes, limits, and resizing."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from explain_core.errors import ImageTooLargeError, InvalidImageError, UnsupportedFormatError
from explain_core.images import SUPPORTED_FORMATS, DecodedImage, decode_image, resize

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


def test_rgba_drops_alpha_and_keeps_colour():
    rgba = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
    rgba[...] = (10, 20, 30, 0)  # fully transparent
    rgba[0, 0] = (200, 100, 50, 255)
    decoded = decode_image(encode(Image.fromarray(rgba, mode="RGBA"), "PNG"), **LIMITS)
    check_decoded(decoded, "PNG")
    assert tuple(decoded.pixels[5, 5]) == (10, 20, 30)
    assert tuple(decoded.pixels[0, 0]) == (200, 100, 50)


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
