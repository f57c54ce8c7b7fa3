"""What every insight kind is: a spec model, a plan of parts, one part at a time, and an assembly.

An insight is a model-level explanation (feature visualization, concepts, example-based): minutes of
optimisation or many forward passes over a set of images. A job (:mod:`explain_core.insights.jobs`)
splits each requested kind into parts that fit one invocation, runs each part from its own SQS message
and, once every part has an outcome, lets the kind assemble the parts into its pictures and its section
of the report.

A kind is one class over :class:`InsightKind` (Xplique's module it uses, the paper in its docstring),
listed once in :mod:`explain_core.insights.kinds`. This module's top level imports no ML library: the
light API image validates job specifications with the kinds' spec models.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from explain_core.errors import InvalidInsightsSpecError, UnsupportedModelError

#: Images read for one image set, at most (each is decoded and resized to the model's input size).
MAX_SET_IMAGES = 256
#: Keys listed under an image prefix, at most, to find its images.
MAX_LISTED_KEYS = 5000
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


class SpecModel(BaseModel):
    """Base of every spec model: unknown fields and non-finite numbers are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ImageSet(SpecModel):
    """A set of images at the model's input size: the card's background, or image files under a prefix.

    With ``labelled``, each image's label is the name of the folder that holds it
    (``<prefix>circle/a.png`` is labelled ``circle``)."""

    source: Literal["background", "prefix"] = Field(
        default="prefix", description="prefix: image files under `prefix` of the input bucket (in key order); "
                                      "background: the first rows of background.npy beside the model")
    prefix: str | None = Field(
        default=None, min_length=1, max_length=512,
        description="With source prefix: a key prefix under incoming/insights/ of the input bucket (its jobs/ "
                    "folder is skipped)")
    count: int = Field(default=32, ge=1, le=MAX_SET_IMAGES, description="Images used, at most")

    @model_validator(mode="after")
    def _prefix_with_its_source(self):
        if (self.source == "prefix") != (self.prefix is not None):
            raise ValueError("give prefix with source prefix, and only then")
        return self


class PartPlan(BaseModel):
    """One part of a job: what a kind computes in one invocation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,95}$", description="Unique in the job; a key segment")
    kind: str
    title: str = Field(description='For people: "channel 3 of last_conv", "TCAV round vs random-2 for circle"')
    params: dict[str, Any] = Field(default_factory=dict, description="What the part computes (strict JSON)")
    estimated_seconds: float = Field(ge=0)


@dataclass
class ImageBatch:
    """Images of an :class:`ImageSet`: model inputs, display pixels, and where each came from."""

    inputs: Any  # float32 (N, H, W, C): the model's input
    pixels: Any  # uint8 (N, H, W, 3): the same images at the input size, for pictures
    keys: list[str] | None = None  # source prefix: the image files, in order
    labels: list[str] | None = None  # labelled sets: each image's folder name
    source: str = "prefix"

    def __len__(self) -> int:
        return len(self.inputs)

    def describe(self) -> dict:
        """The set as the report shows it."""
        described: dict[str, Any] = {"source": self.source, "count": len(self)}
        if self.keys is not None:
            described["keys"] = self.keys
        if self.labels is not None:
            described["labels"] = self.labels
        return described


class _OfALoadedModel:
    loaded: Any  # explain_core.model_store.LoadedModel

    @property
    def model(self):
        return self.loaded.model

    @property
    def card(self):
        return self.loaded.card


@dataclass
class PartContext(_OfALoadedModel):
    """What a part (or the assembly) may use: the model, its images, and where its files go.

    ``put`` writes a file under the part's own folder (the assembly's: the kind's folder) and returns
    its key; ``read`` reads back a key an earlier part returned. Files are written at once, so a part
    killed half-way leaves files but no outcome: it runs again from the start."""

    loaded: Any  # explain_core.model_store.LoadedModel: .model, .card, .background
    seed: int
    batch_size: int
    images: Any  # callable(ImageSet, labelled: bool = False) -> ImageBatch
    put: Any  # callable(name: str, body: bytes, content_type: str) -> key
    read: Any  # callable(key: str) -> bytes
    remaining_seconds: Any  # callable() -> float | None
    seconds_per_pass: float = 0.0  # measured warm forward+backward time of one image
    files: dict[str, str] = field(default_factory=dict)  # name -> key of what ``put`` wrote


@dataclass
class PlanContext(_OfALoadedModel):
    """What planning may use: the model and the time one invocation gives a part."""

    loaded: Any
    seconds_per_pass: float  # measured warm forward+backward time of one image at the model's input size
    max_part_seconds: float  # a part must be estimated below this (the function's timeout, with margin)


class InsightKind(ABC):
    """One kind of insight. Subclasses set the class attributes and implement the three steps."""

    #: The key of the kind in a job specification, and its folder in the results.
    name: ClassVar[str]
    title: ClassVar[str]
    #: The paper (and Xplique's module) the kind implements.
    reference: ClassVar[str]
    #: Its specification (a :class:`SpecModel`); the job spec has one optional field per kind.
    Spec: ClassVar[type[SpecModel]]

    @abstractmethod
    def plan(self, spec: SpecModel, ctx: PlanContext) -> list[PartPlan]:
        """The parts, each estimated below ``ctx.max_part_seconds``; a typed error (ExplainError) when the
        spec cannot run on this model (unknown layer or class, a part that cannot fit)."""

    @abstractmethod
    def run_part(self, spec: SpecModel, part: PartPlan, ctx: PartContext) -> dict:
        """Compute one part: write its files with ``ctx.put`` and return its summary (strict JSON, small)."""

    @abstractmethod
    def assemble(self, spec: SpecModel, parts: list["PartOutcome"], ctx: PartContext) -> dict:
        """The kind's section of the report from its parts' outcomes (some may have failed): write the
        final pictures with ``ctx.put`` and return the section (strict JSON). The job adds ``status``,
        ``failed_parts`` (id, title, error), ``files`` and ``pictures`` (the PNGs written here, then the
        part pictures the section lists under ``pictures``: the report page shows them in that order)."""


class PartOutcome(BaseModel):
    """How a part ended: ``parts/<id>/part.json``, written after its files."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    id: str
    kind: str
    title: str
    status: Literal["succeeded", "failed"]
    summary: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="Name -> key in the results bucket")
    error: dict[str, Any] | None = None
    attempt: int = 1
    seconds: float | None = None
    finished_at: str


# ---------------------------------------------------------------------------------------- the model's parts
def keras_image_model(loaded, what: str):
    """The loaded model, refused with UnsupportedModelError unless it is a Keras model of RGB images."""
    import keras

    model = loaded.model
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(f"{what} needs a Keras model", framework=type(model).__name__)
    shape = tuple(model.inputs[0].shape) if model.inputs else ()
    if len(shape) != 4 or shape[-1] != 3:
        raise UnsupportedModelError(f"{what} needs an RGB image input; the model takes {shape}",
                                    input_shape=str(shape))
    return model


def model_layer(model, card, name: str | None, where: str, *, inner: bool = True):
    """The layer ``name`` (default: the card's cam_layer); InvalidInsightsSpecError naming ``where`` and the
    model's layers when there is none, or (``inner``) when it is the model's input or output layer."""
    import keras

    from explain_core.frameworks.sagemaker import refuse_layer_methods

    refuse_layer_methods(model, f"{where} (an insight reading a layer)")  # a SavedModel hides its layers
    name = name or card.cam_layer
    if name is None:
        raise InvalidInsightsSpecError(f"{where}: name a layer (the card has no cam_layer)", field=where)
    names = [layer.name for layer in model.layers]
    if name not in names:
        raise InvalidInsightsSpecError(
            f"{where}: the model has no layer {name!r} (its layers: {', '.join(names[:40])})", field=where,
            layer=name, layers=names[:100])
    layer = model.get_layer(name)
    if inner and (isinstance(layer, keras.layers.InputLayer) or layer is model.layers[-1]):
        raise InvalidInsightsSpecError(f"{where}: {name!r} is the model's input or output layer; name a layer in "
                                       "between", field=where, layer=name)
    return layer


def class_indexes(card, names: list[str], where: str) -> dict[str, int]:
    """Class name -> index on the card; InvalidInsightsSpecError naming the unknown ones and the card's classes."""
    unknown = [name for name in names if name not in card.class_names]
    if unknown:
        raise InvalidInsightsSpecError(
            f"{where}: unknown class {', '.join(map(repr, unknown))}; the model's classes are "
            f"{', '.join(card.class_names[:20])}", field=where, unknown=unknown, classes=list(card.class_names[:100]))
    return {name: card.class_names.index(name) for name in names}
