"""Pictures of insights: labelled image grids (PNG), shared by every kind."""

import io

#: Grid cells are shown at least this many pixels wide (small model inputs are enlarged, nearest-neighbour).
MIN_CELL = 96
#: And at most this wide (large inputs are reduced).
MAX_CELL = 224
CAPTION_HEIGHT = 30
TITLE_HEIGHT = 26
GAP = 6


def png_bytes(pixels) -> bytes:
    """uint8 RGB (H, W, 3), or floats in [0, 1], as PNG bytes."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.rint(np.nan_to_num(pixels.astype(np.float64)) * 255.0), 0, 255).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def display_pixels(inputs, card):
    """Model inputs back to uint8 pixels: the card's preprocessing undone (x * std + mean, / scale)."""
    import numpy as np

    prep = card.preprocessing
    pixels = np.asarray(inputs, np.float32) * np.asarray(prep.std, np.float32) + np.asarray(prep.mean, np.float32)
    return np.clip(np.rint(pixels / np.float32(prep.scale)), 0, 255).astype(np.uint8)


def decode_png(data: bytes):
    """PNG bytes written by :func:`png_bytes` as uint8 RGB."""
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _cell_side(height: int, width: int) -> int:
    return int(min(MAX_CELL, max(MIN_CELL, max(height, width))))


def image_grid(images, captions: list[str], *, columns: int | None = None, title: str | None = None,
               row_labels: list[str] | None = None) -> bytes:
    """One PNG of ``images`` (uint8 RGB or floats in [0, 1], any sizes) in rows of ``columns``, each with
    its caption (two short lines at most) under it, ``title`` on top and, per row, an optional label."""
    import numpy as np
    from PIL import Image, ImageDraw

    from explain_core.rendering import _font

    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if not images:
        raise ValueError("an image grid needs at least one image")
    columns = max(1, min(columns or int(np.ceil(np.sqrt(len(images)))), len(images)))
    rows = -(-len(images) // columns)
    side = max(_cell_side(*np.asarray(image).shape[:2]) for image in images)
    font = _font()
    label_width = 0
    if row_labels:
        label_width = max(int(font.getlength(label)) for label in row_labels) + 2 * GAP
    top = TITLE_HEIGHT if title else 0
    width = label_width + columns * (side + GAP) + GAP
    height = top + rows * (side + CAPTION_HEIGHT + GAP) + GAP
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((GAP, GAP), title, fill="black", font=font)
    for index, (image, caption) in enumerate(zip(images, captions, strict=True)):
        row, column = divmod(index, columns)
        decoded = Image.open(io.BytesIO(png_bytes(image))).convert("RGB")
        scale = side / max(decoded.size)
        size = (max(1, round(decoded.width * scale)), max(1, round(decoded.height * scale)))
        resample = Image.NEAREST if scale >= 1 else Image.LANCZOS
        x = label_width + GAP + column * (side + GAP)
        y = top + GAP + row * (side + CAPTION_HEIGHT + GAP)
        canvas.paste(decoded.resize(size, resample), (x, y))
        for line_number, line in enumerate(caption.split("\n")[:2]):
            text = line if font.getlength(line) <= side else _shortened(line, side, font)
            draw.text((x, y + side + 2 + 13 * line_number), text, fill="black", font=font)
    for row, label in enumerate(row_labels or []):
        draw.text((GAP, top + GAP + row * (side + CAPTION_HEIGHT + GAP) + side // 2), label, fill="black", font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def _shortened(text: str, width: int, font) -> str:
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"
