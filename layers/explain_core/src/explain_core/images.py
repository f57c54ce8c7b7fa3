"""Image decoding with limits checked before any pixel is decoded."""

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from explain_core.errors import ImageTooLargeError, InvalidImageError, UnsupportedFormatError

#: Formats we decode. Others (TIFF, PSD, ICO, ...) are refused: their decoders are larger
#: attack surface and no image classifier expects them.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")


@dataclass
class DecodedImage:
    pixels: np.ndarray  # uint8, (height, width, 3)
    format: str
    width: int
    height: int


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Decode ``data`` to RGB uint8 pixels, refusing bad or oversized input with a typed error."""
    if not data:
        raise InvalidImageError("the object is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLargeError(
            f"the object is {len(data)} bytes; the limit is {max_bytes}", size=len(data), limit=max_bytes
        )
    try:
        # Image.open reads the header only; the pixel count is checked before load().
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image_format = image.format
            if image_format == "MPO":  # a JPEG with a multi-picture index (phones): decode the first picture
                image_format = "JPEG"
            width, height = image.size
            if image_format not in SUPPORTED_FORMATS:
                raise UnsupportedFormatError(
                    f"image format {image_format} is not supported; use one of {', '.join(SUPPORTED_FORMATS)}",
                    format=image_format,
                )
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
                    width=width,
                    height=height,
                    limit=max_pixels,
                )
            image.load()
            # Phone photos store their rotation in EXIF; explain the image as it is displayed.
            rgb = ImageOps.exif_transpose(image).convert("RGB")
    except (InvalidImageError, ImageTooLargeError):
        raise
    except UnidentifiedImageError as exc:
        raise InvalidImageError("the object is not an image in a known format") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(
            f"image refused before decoding: more than the limit of {max_pixels} pixels ({exc})", limit=max_pixels
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Truncated or corrupt data surfaces as one of these from Pillow's decoders.
        raise InvalidImageError(f"the image data is corrupt or truncated: {exc}") from exc
    return DecodedImage(np.asarray(rgb, dtype=np.uint8), image_format, width, height)


def resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 RGB pixels to the model's input size (bilinear)."""
    if pixels.shape[:2] == (height, width):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.BILINEAR), dtype=np.uint8)
