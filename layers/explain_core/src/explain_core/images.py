"""Image decoding with limits checked before any pixel is decoded.

Every accepted image becomes 8-bit sRGB pixels, as a browser would display it (docs/inputs.md):

* 16-bit and float single-channel images are scaled by their actual value range, not clipped;
* an embedded ICC profile is applied (conversion to sRGB with LittleCMS through ``PIL.ImageCms``);
* transparent pixels are composited on a white background;
* the EXIF orientation is applied, and width and height are recorded as displayed.

:meth:`DecodedImage.description` says which of these happened, for the result's manifest.
"""

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import ExifTags, Image, ImageChops, ImageCms, UnidentifiedImageError

from explain_core.errors import ImageTooLargeError, InvalidImageError, UnsupportedFormatError

#: Formats we decode. Others (TIFF, PSD, ICO, ...) are refused: their decoders are larger
#: attack surface and no image classifier expects them.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")

#: The colour transparent pixels are composited on (white, as on a web page).
BACKGROUND = 255

#: The value every pixel of a constant 16-bit or float image gets: it has no range to scale (mid-grey).
CONSTANT_IMAGE_VALUE = 128

#: Single-channel modes with more than 8 bits (Pillow's names): 16-bit PNG grayscale opens as "I;16".
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")

#: EXIF orientation -> the transpose that displays the image upright (as PIL.ImageOps.exif_transpose does).
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

#: The ICC colour space (``CmsProfile.xcolor_space``) a profile must have to apply to an image mode.
_PROFILE_SPACE_OF_MODE = {"L": "GRAY", "RGB": "RGB", "CMYK": "CMYK"}


@dataclass
class DecodedImage:
    pixels: np.ndarray  # uint8, (height, width, 3), sRGB
    format: str
    width: int  # as displayed: after the EXIF orientation
    height: int
    #: Pillow's mode of the decoded file, before any conversion ("RGB", "P", "I;16", "CMYK", ...).
    source_mode: str = ""
    #: What was done to reach 8-bit sRGB; see :meth:`description`.
    conversions: dict = field(default_factory=dict)

    def description(self) -> dict:
        """What the manifest records about the decoded input: small, strict-JSON values only.

        ``conversions`` may hold ``scaled_from`` ([min, max] of a 16-bit or float image),
        ``reduced_to_8_bit``, ``icc_profile`` and ``icc_profile_description``, ``cmyk``,
        ``alpha`` and ``exif_orientation`` (docs/inputs.md).
        """
        return {
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "source_mode": self.source_mode,
            "conversions": {key: list(value) if isinstance(value, list) else value
                            for key, value in self.conversions.items()},  # a copy: the manifest may be edited
        }


def read_listed_image(s3, bucket: str, item: dict, settings) -> DecodedImage:
    """An image file listed under a prefix (``item``: a ListObjectsV2 entry), its size checked against the
    upload limit before it is read, decoded with the upload limits."""
    if item["Size"] > settings.max_image_bytes:
        raise ImageTooLargeError(f"{item['Key']} is {item['Size']} bytes; the limit is {settings.max_image_bytes}",
                                 key=item["Key"], size=item["Size"])
    data = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return decode_image(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Decode ``data`` to sRGB uint8 pixels, refusing bad or oversized input with a typed error."""
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
            source_mode = image.mode
            # Phone photos store their rotation in EXIF; explain the image as it is displayed.
            orientation = image.getexif().get(ExifTags.Base.Orientation)
            conversions = {}
            if image_format == "PNG" and _png_bit_depth(data) == 16 and image.mode not in HIGH_DEPTH_MODES:
                # Pillow decodes 16-bit colour (and grey + alpha) PNGs to 8 bits itself, keeping the high byte:
                # the full-range scaling a 16-bit colour photograph expects.
                conversions["reduced_to_8_bit"] = "16-bit channels, high byte kept"
            if image_format == "JPEG" and image.mode == "CMYK" and "adobe" not in image.info:
                image = _uninverted(image)
            rgb = _to_srgb(image, conversions)
            if orientation in _ORIENTATION_TRANSPOSE:
                rgb = rgb.transpose(_ORIENTATION_TRANSPOSE[orientation])
                conversions["exif_orientation"] = orientation
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
    return DecodedImage(
        np.asarray(rgb, dtype=np.uint8), image_format, rgb.width, rgb.height, source_mode, conversions
    )


def _png_bit_depth(data: bytes) -> int:
    """Bits per sample from a PNG's IHDR, the first chunk (after signature 8, length 4, type 4, size 8)."""
    return data[24] if data[12:16] == b"IHDR" else 8


def _uninverted(image: Image.Image) -> Image.Image:
    """A CMYK JPEG without Adobe's APP14 marker, with the ink amounts as stored.

    Pillow reads every CMYK JPEG with Adobe's inverted polarity (what Photoshop writes, always with
    the marker). Other decoders (LittleCMS's jpgicc, Windows Imaging Component) read the ink as
    inverted only when the marker is there, so CMYK files from other writers keep their colours;
    inverting again undoes Pillow's assumption for those.
    """
    plain = ImageChops.invert(image)
    plain.info = dict(image.info)  # keeps the ICC profile
    return plain


def _to_srgb(image: Image.Image, conversions: dict) -> Image.Image:
    """The 8-bit RGB image as displayed (before orientation), recording each conversion in ``conversions``."""
    icc = image.info.get("icc_profile")
    if image.mode in HIGH_DEPTH_MODES:
        image = _scale_to_8_bit(image, conversions)
        if icc:
            # A profile describes the file's encoded values, which the range scaling has replaced.
            conversions["icc_profile"] = "ignored: not applied to range-scaled data"
            icc = None
    else:
        image = _without_alpha(image, conversions)
    if icc:
        converted = _apply_icc_profile(image, icc, conversions)
        if converted is not None:
            return converted
    if image.mode == "CMYK":
        conversions["cmyk"] = "converted without a profile: R = (255 - C) * (255 - K) / 255, ..."
    return image.convert("RGB")


def _scale_to_8_bit(image: Image.Image, conversions: dict) -> Image.Image:
    """Scale a 16-bit or float single-channel image to 8 bits by its actual range: min -> 0, max -> 255.

    ``convert("RGB")`` would clip every value above 255 (a 16-bit scan becomes almost all white),
    and a fixed 65535 -> 255 scaling would leave 10- or 12-bit data nearly black; this keeps the
    image's contrast. A constant image has no range: it becomes :data:`CONSTANT_IMAGE_VALUE`.
    Pixels marked transparent by a PNG tRNS value get the background and stay out of the range.
    """
    values = np.asarray(image, dtype=np.float64)  # float64: exact for every 16- and 32-bit integer
    if not np.isfinite(values).all():
        raise InvalidImageError(f"the image ({image.mode}) has non-finite values (NaN or infinity)", mode=image.mode)
    transparent = np.zeros(values.shape, bool)
    if isinstance(image.info.get("transparency"), int):
        transparent = values == image.info["transparency"]
    opaque = values[~transparent]
    low, high = (opaque.min(), opaque.max()) if opaque.size else (0.0, 0.0)
    if high > low:
        values -= low  # in place: a 40-megapixel image is 320 MB as float64
        values *= 255.0 / (high - low)
        np.rint(values, out=values)
    else:
        values.fill(CONSTANT_IMAGE_VALUE)
    values[transparent] = BACKGROUND
    as_number = float if image.mode == "F" else int
    conversions["scaled_from"] = [as_number(low), as_number(high)]
    if transparent.any():
        conversions["alpha"] = "composited on white"
    return Image.fromarray(values.astype(np.uint8), mode="L")


def _without_alpha(image: Image.Image, conversions: dict) -> Image.Image:
    """The image as "L", "RGB" or "CMYK", any transparency composited on the white background.

    ``convert("RGB")`` just drops alpha, showing whatever colour a transparent pixel hides.
    """
    if image.mode == "1":
        return image.convert("L")
    if image.mode in ("L", "RGB", "CMYK") and "transparency" not in image.info:
        return image
    has_alpha = "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info
    grey = image.mode in ("L", "LA", "La")
    if not has_alpha:  # a palette, or a mode no accepted decoder should give
        return image.convert("L" if grey else "RGB")
    # Pillow applies a palette's or a PNG tRNS transparency (and un-premultiplies RGBa) here.
    image = image.convert("LA" if grey else "RGBA")
    alpha = image.getchannel("A")
    colour = image.convert("L" if grey else "RGB")
    if alpha.getextrema()[0] == 255:  # every pixel opaque: nothing to composite
        return colour
    # paste with a mask blends: out = colour * alpha / 255 + background * (255 - alpha) / 255.
    flattened = Image.new(colour.mode, colour.size, (BACKGROUND,) * len(colour.getbands()))
    flattened.paste(colour, mask=alpha)
    conversions["alpha"] = "composited on white"
    return flattened


def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _apply_icc_profile(image: Image.Image, icc: bytes, conversions: dict) -> Image.Image | None:
    """``image`` converted from its embedded ICC profile to sRGB, or None when the profile cannot apply.

    The conversion is LittleCMS's, through ``PIL.ImageCms.profileToProfile`` with the perceptual
    intent (https://pillow.readthedocs.io/en/stable/reference/ImageCms.html). An unreadable profile,
    or one for another colour space than the pixels, is ignored as browsers do: the image is still
    explained, and the manifest says the profile was ignored.
    """
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
        description = (profile.profile.profile_description or "").strip()[:200]
    except (OSError, ImageCms.PyCMSError):
        conversions["icc_profile"] = "ignored: unreadable"
        return None
    if space != _PROFILE_SPACE_OF_MODE.get(image.mode):
        conversions["icc_profile"] = f"ignored: a {space} profile for {image.mode} pixels"
        return None
    try:
        converted = ImageCms.profileToProfile(image, profile, _srgb_profile(), outputMode="RGB")
    except (OSError, ImageCms.PyCMSError):
        conversions["icc_profile"] = "ignored: LittleCMS cannot convert with it"
        return None
    conversions["icc_profile"] = "converted to sRGB"
    conversions["icc_profile_description"] = description
    return converted


def resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 RGB pixels to the model's input size (bilinear)."""
    if pixels.shape[:2] == (height, width):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.BILINEAR), dtype=np.uint8)
