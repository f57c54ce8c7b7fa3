"""Heatmaps as pictures: how attributions become colours (:class:`RenderOptions`), the overlay over the
uploaded image, the raw heatmap at the model's resolution, and the colour bar (docs/outputs.md).

An upload chooses the options with S3 user metadata (:data:`METADATA_KEYS`), an API request with
its ``rendering`` object, a model card with its ``rendering`` default. Nothing here imports the ML
stack at module level: the light API image validates requests with :class:`RenderOptions`.
"""

import io
import math
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from explain_core.errors import InvalidRenderingError
from explain_core.manifest_parts import ManifestPart

#: Colour maps an option may name (matplotlib's names). Sequential maps go from weak to strong;
#: diverging maps have a neutral middle and are the only ones a signed heatmap may use.
SEQUENTIAL_COLORMAPS = ("jet", "turbo", "viridis", "plasma", "inferno", "magma", "cividis", "hot", "gray",
                        "Greys", "Reds", "Blues", "Greens", "Purples", "Oranges")
DIVERGING_COLORMAPS = ("RdBu_r", "RdBu", "bwr", "coolwarm", "seismic", "PiYG", "PRGn", "BrBG", "PuOr", "RdYlBu_r")
COLORMAPS = SEQUENTIAL_COLORMAPS + DIVERGING_COLORMAPS
#: The colour map when none is named: today's jet, and for signed maps red (positive) / blue (negative).
DEFAULT_COLORMAP = "jet"
DEFAULT_SIGNED_COLORMAP = "RdBu_r"

#: Overlays are upscaled until their shorter side has this many pixels (or the longer side reaches
#: the cap); an input more elongated than cap:min is centred on a canvas of at least this size.
MIN_OVERLAY_SIDE = 224
#: Upscaling by this factor or more copies pixels (nearest neighbour): a tiny input stays sharp.
NEAREST_UPSCALE = 4.0
#: Share of ``alpha`` kept where the attribution is weakest, so the colour map's low end still tints.
OPACITY_FLOOR = 2.0 / 9.0
#: Letterbox and colour-bar panel background.
PANEL_COLOUR = (255, 255, 255)
#: zlib level of the PNGs: level 1 encodes an overlay about 3.5x faster than Pillow's default 6 for
#: files about 8% larger (measured on demo overlays); encoding was most of the handler's rendering time.
PNG_COMPRESS_LEVEL = 1

#: S3 user-metadata keys of the options (x-amz-meta-<key>), with the RenderOptions field each sets.
METADATA_KEYS = {"polarity": "polarity", "colormap": "colormap", "clip-percentiles": "clip_percentiles",
                 "alpha": "alpha", "overlay": "overlay", "colorbar": "colorbar"}

#: Descriptions of the manifest's and the API's fields (``Annotated[type, X]``).
RENDERING = Field(description="Images: how the heatmaps were drawn (the upload's options over the card's "
                              "rendering), so that a person knows what the colours mean")
HEATMAP_RANGE = Field(
    description="Images: [low, high], the attribution magnitudes drawn as the weakest and the strongest colour "
                "(of the sign the polarity shows; signed: |a| <= low is the neutral middle); the colour bar's scale")

Polarity = Literal["positive", "negative", "absolute", "signed"]
Overlay = Literal["blend", "heatmap-only"]


class RenderOptions(ManifestPart):
    """How a heatmap is drawn: which attributions are shown, in which colours, over what.

    A part of the manifest (``rendering``), so an unknown field is refused when options are given
    (metadata, card, API request) and kept when a stored manifest is read."""

    model_config = ConfigDict(frozen=True)

    polarity: Polarity = Field(
        default="absolute",
        description="positive: only attributions > 0; negative: only < 0 (drawn by magnitude); absolute: |a|; "
                    "signed: both signs on a diverging colour map centred on zero")
    colormap: str | None = Field(
        default=None,
        description=f"A matplotlib colour map of {', '.join(COLORMAPS)} (signed polarity: a diverging one, "
                    f"{', '.join(DIVERGING_COLORMAPS)}); default {DEFAULT_COLORMAP}, signed {DEFAULT_SIGNED_COLORMAP}")
    clip_percentiles: tuple[float, float] = Field(
        default=(0.0, 99.5),
        description="[low, high] percentiles of the shown magnitudes at the colour map's two ends; above high is "
                    "drawn as high, at or below low as the weakest colour; low 0 starts the scale at zero")
    alpha: float = Field(default=0.9, ge=0.1, le=1.0,
                         description="Opacity of the colours where the attribution is strongest (blend)")
    overlay: Overlay = Field(default="blend",
                             description="blend: colours over the image in grey; heatmap-only: colours alone")
    # On by default: colours without a legend cannot be compared across methods (issue 12).
    colorbar: StrictBool = Field(default=True,
                                 description="Draw a colour bar labelled in attribution units beside the overlay")

    _known_fields_when_nested = True

    @classmethod
    def _unknown_fields_message(cls, unknown: list[str]) -> str:
        return f"unknown rendering option(s) {', '.join(unknown)}; the options are {', '.join(cls.model_fields)}"

    @field_validator("colormap", mode="before")
    @classmethod
    def _known_colormap(cls, value):
        if value is None:
            return None
        canonical = {name.lower(): name for name in COLORMAPS}.get(str(value).lower()) if isinstance(value, str) \
            else None
        if canonical is None:
            raise ValueError(f"colormap {value!r} is not one of {', '.join(COLORMAPS)}")
        return canonical

    @field_validator("alpha", mode="before")
    @classmethod
    def _number(cls, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number, got {value!r}")
        return value

    @field_validator("clip_percentiles", mode="before")
    @classmethod
    def _two_numbers(cls, value):
        if not isinstance(value, (list, tuple)) or len(value) != 2 or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            raise ValueError(f"must be two numbers [low, high], got {value!r}")
        low, high = float(value[0]), float(value[1])
        if not (0.0 <= low < high <= 100.0):
            raise ValueError(f"needs 0 <= low < high <= 100, got [{low:g}, {high:g}]")
        return low, high

    @model_validator(mode="after")
    def _signed_needs_a_diverging_map(self):
        if self.polarity == "signed" and self.colormap_name not in DIVERGING_COLORMAPS:
            raise ValueError(f"signed polarity needs a diverging colour map (zero in the middle): one of "
                             f"{', '.join(DIVERGING_COLORMAPS)}; {self.colormap_name} is sequential")
        return self

    @property
    def colormap_name(self) -> str:
        if self.colormap is not None:
            return self.colormap
        return DEFAULT_SIGNED_COLORMAP if self.polarity == "signed" else DEFAULT_COLORMAP

    def resolved(self) -> "RenderOptions":
        """The same options with the colour map named (what the manifest records)."""
        return self if self.colormap is not None else self.model_copy(update={"colormap": self.colormap_name})

    _always = frozenset({"polarity", "colormap", "clip_percentiles", "alpha", "overlay", "colorbar"})

    def explicit(self) -> dict:
        """The fields that were given (not defaults): what overrides a card's default."""
        return self.model_dump(include=self.model_fields_set)


# ---------------------------------------------------------------------------------------- requests
def parse_rendering(metadata: dict, default: RenderOptions | None = None) -> RenderOptions:
    """The options of an upload: its user metadata (keys lower-cased) over the card's ``default``.

    Raises InvalidRenderingError naming the option, its value and what is allowed.
    """
    given: dict[str, Any] = {}
    for key, field in METADATA_KEYS.items():
        raw = metadata.get(key)
        if raw is None or str(raw).strip() == "":
            continue
        given[field] = _metadata_value(key, str(raw).strip())
    try:
        merged = RenderOptions(**{**(default.explicit() if default is not None else {}), **given})
    except ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors())
        raise InvalidRenderingError(f"invalid rendering options: {problems}",
                                    options=sorted(given), allowed_colormaps=list(COLORMAPS)) from exc
    return merged.resolved()


def _metadata_value(key: str, raw: str):
    lowered = raw.lower()
    if key in ("polarity", "overlay"):
        return lowered
    if key == "colormap":
        return raw
    if key == "colorbar":
        if lowered not in ("true", "false"):
            raise InvalidRenderingError(f"colorbar must be true or false, got {raw!r}", option=key)
        return lowered == "true"
    try:
        numbers = [float(part) for part in raw.split(",")]
    except ValueError as exc:
        expected = 'two numbers "low,high"' if key == "clip-percentiles" else "a number"
        raise InvalidRenderingError(f"{key} must be {expected}, got {raw!r}", option=key) from exc
    if not all(math.isfinite(n) for n in numbers):
        raise InvalidRenderingError(f"{key} must be finite, got {raw!r}", option=key)
    if key == "alpha":
        if len(numbers) != 1:
            raise InvalidRenderingError(f"alpha must be one number, got {raw!r}", option=key)
        return numbers[0]
    return numbers  # clip-percentiles: the model checks there are two, in order


def _problem(error: dict) -> str:
    field = str(error["loc"][0]) if error["loc"] else "rendering"
    key = {name: key for key, name in METADATA_KEYS.items()}.get(field, field)  # as the upload spells it
    return f"{key}: {error['msg'].removeprefix('Value error, ')}"


def rendering_metadata(options: RenderOptions, fields=None) -> dict[str, str]:
    """``options`` as S3 user metadata that :func:`parse_rendering` reads back to equal options
    (every field, or only ``fields``); floats are written so that they parse back exactly."""
    metadata = {}
    for key, name in METADATA_KEYS.items():
        if fields is not None and name not in fields:
            continue
        value = getattr(options, name) if name != "colormap" else options.colormap
        if value is None:
            continue
        if name == "clip_percentiles":
            metadata[key] = ",".join(repr(float(v)) for v in value)
        elif name == "alpha":
            metadata[key] = repr(float(value))
        elif name == "colorbar":
            metadata[key] = "true" if value else "false"
        else:
            metadata[key] = value
    return metadata


# ---------------------------------------------------------------------------------------- colours
@dataclass(frozen=True)
class ColourScale:
    """How one heatmap's values map to the colour map: the magnitudes shown (``low``..``high``,
    from the clip percentiles) and their sign, per polarity."""

    polarity: str
    low: float
    high: float

    @classmethod
    def of(cls, heatmap, options: RenderOptions) -> "ColourScale":
        import numpy as np

        magnitude = _magnitude(_finite(heatmap), options.polarity)
        low_pct, high_pct = options.clip_percentiles
        high = float(np.percentile(magnitude, high_pct))
        if high <= 0:  # a sparse map (under 0.5% non-zero pixels) must not vanish
            high = float(magnitude.max())
        low = float(np.percentile(magnitude, low_pct)) if low_pct > 0 else 0.0
        if low >= high:  # a flat map: its one value is the strongest colour
            low = 0.0
        return cls(options.polarity, low, high)

    def scaled(self, heatmap):
        """Per pixel, the shown magnitude in [0, 1] (signed: with the attribution's sign, in [-1, 1])."""
        import numpy as np

        values = _finite(heatmap)
        if self.high <= 0:
            return np.zeros_like(values)
        strength = np.clip((_magnitude(values, self.polarity) - self.low) / (self.high - self.low), 0.0, 1.0)
        return (np.sign(values) * strength if self.polarity == "signed" else strength).astype(np.float32)

    @staticmethod
    def positions(scaled, polarity: str):
        """Colour-map positions in [0, 1] of scaled values: signed maps put zero in the middle."""
        return (scaled + 1.0) / 2.0 if polarity == "signed" else scaled

    def value_at(self, position: float) -> float:
        """The attribution drawn at a colour-map position (the colour bar's labels)."""
        if self.polarity == "signed":
            s = 2.0 * position - 1.0
            return math.copysign(self.low + abs(s) * (self.high - self.low), s) if s else 0.0
        value = self.low + position * (self.high - self.low)
        return -value if self.polarity == "negative" and value else value


def _finite(heatmap):
    import numpy as np

    return np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def _magnitude(values, polarity: str):
    import numpy as np

    if polarity == "positive":
        return np.maximum(values, 0.0)
    if polarity == "negative":
        return np.maximum(-values, 0.0)
    return np.abs(values)


@cache
def colour_table(colormap: str):
    """The colour map as 256 RGB rows in [0, 1] (matplotlib's own lookup table size)."""
    import numpy as np
    from matplotlib import colormaps

    return np.asarray(colormaps[colormap](np.linspace(0.0, 1.0, 256))[:, :3], dtype=np.float32)


def _colours(positions, table):
    import numpy as np

    return table[np.clip(np.rint(positions * 255.0), 0, 255).astype(np.intp)]


# ---------------------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class Layout:
    """Where the picture goes: its size, the canvas it is centred on (both (width, height))."""

    picture: tuple[int, int]
    canvas: tuple[int, int]
    scale: float


def overlay_layout(height: int, width: int, max_side: int, min_side: int = MIN_OVERLAY_SIDE) -> Layout:
    """Keep the aspect ratio; upscale until the shorter side reaches ``min_side``, never past ``max_side``
    on the longer side; an input too elongated for both is centred on a canvas at least ``min_side`` wide
    and high (a 4000x20 input: a 1024x5 picture on a 1024x224 canvas, not a 1024x5 strip)."""
    min_side = min(min_side, max_side)
    scale = min(max(1.0, min_side / min(height, width)), max_side / max(height, width))
    picture = (max(1, round(width * scale)), max(1, round(height * scale)))
    return Layout(picture, (max(picture[0], min_side), max(picture[1], min_side)), scale)


# ---------------------------------------------------------------------------------------- pictures
@dataclass(frozen=True)
class RenderedHeatmap:
    overlay: bytes  # PNG over the uploaded image (or alone, heatmap-only), with the colour bar if asked
    raw: bytes  # PNG of the heatmap alone at its own (the model's) resolution
    magnitudes: list[float]  # [low, high]: the magnitudes drawn as the weakest and the strongest colour


def render_heatmap(image, heatmap, options: RenderOptions | None = None, *, max_side: int = 1024,
                   min_side: int = MIN_OVERLAY_SIDE) -> RenderedHeatmap:
    """The overlay and the raw heatmap of one (image, class), drawn with the same colour scale.

    The overlay is the colour-mapped heatmap (any size) over ``image`` (uint8 RGB), sized as
    :func:`overlay_layout` says. Blended, the image is shown in grey so the colours belong to the
    heatmap alone, and each pixel's opacity grows with its shown magnitude (up to ``alpha``) so weak
    regions leave the image visible. The raw heatmap is one PNG pixel per heatmap value.
    """
    options = options or RenderOptions()
    scale = ColourScale.of(heatmap, options)
    table = colour_table(options.colormap_name)
    scaled = scale.scaled(heatmap)
    raw = _png(_colours(ColourScale.positions(scaled, scale.polarity), table))
    return RenderedHeatmap(_overlay(image, scaled, scale, table, options, max_side, min_side), raw,
                           [scale.low, scale.high])


def _overlay(image, scaled, scale: ColourScale, table, options: RenderOptions, max_side: int, min_side: int) -> bytes:
    import numpy as np
    from PIL import Image

    height, width = image.shape[:2]
    layout = overlay_layout(height, width, max_side, min_side)
    shown = np.asarray(Image.fromarray(scaled.astype(np.float32), mode="F").resize(layout.picture, Image.BILINEAR),
                       dtype=np.float32)
    colours = _colours(ColourScale.positions(shown, scale.polarity), table)
    if options.overlay == "blend":
        resample = Image.NEAREST if layout.scale >= NEAREST_UPSCALE else Image.BILINEAR
        base = Image.fromarray(image).convert("L")
        if base.size != layout.picture:
            base = base.resize(layout.picture, resample)
        grey = np.asarray(base, dtype=np.float32)[..., None] / 255.0
        opacity = (options.alpha * (OPACITY_FLOOR + (1.0 - OPACITY_FLOOR) * np.abs(shown)))[..., None]
        colours = (1.0 - opacity) * grey + opacity * colours
    picture = Image.fromarray(np.clip(np.rint(colours * 255.0), 0, 255).astype(np.uint8), mode="RGB")
    if layout.canvas != layout.picture:
        canvas = Image.new("RGB", layout.canvas, PANEL_COLOUR)
        canvas.paste(picture, ((layout.canvas[0] - layout.picture[0]) // 2,
                               (layout.canvas[1] - layout.picture[1]) // 2))
        picture = canvas
    if options.colorbar:
        picture = _with_colour_bar(picture, scale, table)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False, compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _png(rgb) -> bytes:
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    picture = Image.fromarray(np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8), mode="RGB")
    picture.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------- colour bar
BAR_WIDTH = 14
TICK_LENGTH = 4
FONT_SIZE = 12
MARGIN = 8


@cache
def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=FONT_SIZE)  # Pillow's bundled font (needs FreeType)
    except (TypeError, OSError):
        return ImageFont.load_default()


def tick_label(value: float) -> str:
    """A short label: three significant digits, zero as 0."""
    if value == 0:
        return "0"
    return f"{value:.3g}".replace("e-0", "e-").replace("e+0", "e")


def _with_colour_bar(picture, scale: ColourScale, table):
    """The picture with a vertical colour bar on its right: the colour map bottom (start) to top (end),
    ticks labelled with the attribution values they show (signed with a dead zone: ±low in the middle)."""
    import numpy as np
    from PIL import Image, ImageDraw

    font = _font()
    ticks = [0.0, 0.25, 0.5, 0.75, 1.0] if picture.height >= 120 else [0.0, 0.5, 1.0]
    labels = [tick_label(scale.value_at(t)) for t in ticks]
    if scale.polarity == "signed" and scale.low > 0:
        labels[len(ticks) // 2] = "±" + tick_label(scale.low)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [measure.textbbox((0, 0), label, font=font) for label in labels]
    text_width = max(box[2] - box[0] for box in boxes)
    text_height = max(box[3] - box[1] for box in boxes)
    panel_width = MARGIN + BAR_WIDTH + TICK_LENGTH + 3 + text_width + MARGIN
    top = MARGIN + text_height // 2
    bar_height = max(2, picture.height - 2 * top)

    out = Image.new("RGB", (picture.width + panel_width, picture.height), PANEL_COLOUR)
    out.paste(picture, (0, 0))
    positions = 1.0 - np.arange(bar_height, dtype=np.float32) / (bar_height - 1)  # top row: the map's end
    bar = np.repeat(_colours(positions, table)[:, None, :], BAR_WIDTH, axis=1)
    bar_left = picture.width + MARGIN
    out.paste(Image.fromarray(np.clip(np.rint(bar * 255.0), 0, 255).astype(np.uint8), mode="RGB"), (bar_left, top))
    draw = ImageDraw.Draw(out)
    draw.rectangle([bar_left - 1, top - 1, bar_left + BAR_WIDTH, top + bar_height], outline=(0, 0, 0))
    for tick, label, box in zip(ticks, labels, boxes, strict=True):
        y = top + round((1.0 - tick) * (bar_height - 1))
        draw.line([bar_left + BAR_WIDTH, y, bar_left + BAR_WIDTH + TICK_LENGTH, y], fill=(0, 0, 0))
        draw.text((bar_left + BAR_WIDTH + TICK_LENGTH + 3, y - (box[1] + box[3]) // 2), label, fill=(0, 0, 0),
                  font=font)
    return out


def mask_png(mask) -> bytes:
    """A boolean (H, W) mask as a greyscale PNG: 255 inside, 0 outside (XRAI's top regions)."""
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8), mode="L").save(
        buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def npy_bytes(array) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
