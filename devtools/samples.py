"""Demo inputs as the files a user uploads: images encoded in memory (PNG, JPEG, ...).

Shared by the demo, the API events writer, the container tier, the benchmark and the tests; the
pixels themselves come from :mod:`devtools.demo_model` (images) and :mod:`devtools.tabular_demo`
(table rows, already as CSV or JSON Lines).
"""

import io

from PIL import Image


def encode_image(pixels, image_format: str = "PNG", **options) -> bytes:
    """uint8 RGB pixels encoded as an image file (PNG, JPEG, TIFF, ...) in memory."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format, **options)
    return buffer.getvalue()
