"""What an upload asks for: methods, their parameters and the classes to explain.

Read from the object's user metadata (set at upload, e.g. ``aws s3 cp --metadata``):

- ``methods``: comma-separated method names of the function's family, or ``all``;
  default: the model card's ``default_methods`` for the family, else every method of the family
  that can explain the model (``all`` also means only those).
- ``params``: JSON object ``{"<Method>": {"<param>": value}}``; checked against the registry.
- ``target``: a class name or index to explain; default: the card's target policy.
- ``top-k``: explain the k most probable classes instead (1-10; images only: a tabular upload
  explains the card's ``explained_classes`` unless ``target`` names one).
- ``metrics`` and ``metric-params``: quality metrics scoring each explanation
  (:mod:`explain_core.quality_metrics`); default: the card's ``default_metrics``.
- ``polarity``, ``colormap``, ``clip-percentiles``, ``alpha``, ``overlay``, ``colorbar``: how image
  heatmaps are drawn (:mod:`explain_core.rendering`); default: the card's ``rendering``.
- ``explain-if``: explain only inputs (images, table rows and text documents) whose prediction meets a
  condition, JSON like ``{"top_probability_below": 0.9}``, or ``always`` in any case
  (:mod:`explain_core.explain_condition`); default: the card's ``explain_if``.
"""

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from explain_core.errors import (
    InvalidParameterError,
    InvalidTargetError,
    UnknownMethodError,
    UnsupportedModelError,
)
from explain_core.explain_condition import METADATA_KEY as CONDITION_KEY
from explain_core.explain_condition import Condition, Verdict, parse_condition
from explain_core.model_card import ModelCard
from explain_core.quality_metrics import RequestedMetrics, describe_metrics, metrics_metadata, parse_metrics
from explain_core.registry import MethodSpec, get_method, methods_of
from explain_core.rendering import RenderOptions, parse_rendering, rendering_metadata

MAX_TOP_K = 10


@dataclass(frozen=True)
class RequestOptions:
    methods: tuple[tuple[MethodSpec, dict], ...]  # (method, resolved parameters)
    target: int | None
    top_k: int
    #: Quality metrics scoring each explanation: (metric, resolved parameters).
    metrics: RequestedMetrics = ()
    #: How image heatmaps are drawn (the card's default under the upload's options; colour map named).
    rendering: RenderOptions = field(default_factory=lambda: RenderOptions().resolved())
    #: Which inputs are explained (the upload's explain-if, else the card's explain_if); None: every input.
    condition: Condition | None = None

    @property
    def fingerprint(self) -> str:
        """A stable hash of the request, used to recognise a duplicate event."""
        described = {
            "methods": [[spec.name, params] for spec, params in self.methods],
            "target": self.target,
            "top_k": self.top_k,
        }
        if self.metrics:  # absent without metrics: earlier requests keep their fingerprints
            described["metrics"] = describe_metrics(self.metrics)
        if self.rendering != RenderOptions().resolved():  # likewise: absent with the default drawing
            described["rendering"] = self.rendering.model_dump(mode="json")
        if self.condition is not None:  # likewise: absent without a condition
            described["explain_if"] = self.condition.describe()
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]

    def to_metadata(self) -> dict[str, str]:
        """The options in canonical S3 user-metadata form (ASCII only, as S3 requires), which
        :func:`parse_options` reads back to equal options: registry method names, every parameter
        resolved, the target as a class index."""
        metadata = {
            "methods": ",".join(spec.name for spec, _ in self.methods),
            "params": json.dumps({spec.name: params for spec, params in self.methods}, sort_keys=True),
            "top-k": str(self.top_k),
        }
        if self.target is not None:
            metadata["target"] = str(self.target)
        metadata.update(metrics_metadata(self.metrics))
        # Every option, not only those differing from the defaults: the card's default may differ.
        metadata.update(rendering_metadata(self.rendering))
        # The request's condition only: the card's applies again when read back (with the same card, equal
        # options), and the manifest can tell the two apart.
        if self.condition is not None and self.condition.source == "request":
            metadata[CONDITION_KEY] = self.condition.metadata_value()
        return metadata

    def verdicts(self, scores: np.ndarray) -> list[Verdict]:
        """Per row of ``scores`` (records x class probabilities), whether it is explained: the one place every
        modality asks, right after predicting (explain_core.explain_condition)."""
        if self.condition is None:
            return [Verdict(True, int(np.argmax(row)), float(np.max(row))) for row in np.asarray(scores)]
        return self.condition.verdicts(scores)

    def classes_to_explain(self, scores: np.ndarray) -> list[int]:
        if self.target is not None:
            return [self.target]
        return [int(i) for i in np.argsort(-scores, kind="stable")[: self.top_k]]


def parse_options(metadata: dict, card: ModelCard, family: str) -> RequestOptions:
    metadata = {k.lower(): v for k, v in (metadata or {}).items()}
    input_size = card.passes_size

    raw_methods = metadata.get("methods", "").strip()
    if raw_methods.lower() == "all":
        specs = methods_of(family, card)
    elif raw_methods:
        names = [name.strip() for name in raw_methods.split(",") if name.strip()]
        specs = list(dict.fromkeys(get_method(name, family) for name in names))
    else:
        defaults = card.default_methods.get(family)
        specs = (list(dict.fromkeys(get_method(name, family) for name in defaults)) if defaults
                 else methods_of(family, card))
    if not specs:
        requested_none = raw_methods and raw_methods.lower() != "all"
        raise UnknownMethodError("no methods requested" if requested_none else
                                 f"no {family} method can explain this model", family=family)
    unsupported = [spec.name for spec in specs if not spec.supports(card)]
    if unsupported:
        reasons = "".join(f" ({spec.name}: {spec.refusal(card)})" for spec in specs if spec.refusal(card))
        raise UnsupportedModelError(
            f"{', '.join(unsupported)} cannot explain {'an' if card.modality[0] in 'aeiou' else 'a'} {card.modality} "
            f"{card.framework} model{reasons}; methods for "
            f"this model: {', '.join(s.name for s in methods_of(family, card)) or 'none in this family'}",
            methods=unsupported, modality=card.modality, framework=card.framework,
        )

    params = _json_metadata(metadata, "params")
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise InvalidParameterError('params must be a JSON object like {"IntegratedGradients": {"steps": 32}}')
    by_name = {spec.name.lower(): spec for spec in specs}
    stray = [name for name in params if name.lower() not in by_name]
    if stray:
        raise InvalidParameterError(
            f"params name methods that were not requested: {', '.join(stray)}", methods=[s.name for s in specs]
        )
    lowered = {name.lower(): value for name, value in params.items()}
    methods = tuple((spec, spec.resolve(lowered.get(spec.name.lower()), input_size)) for spec in specs)

    target = _parse_target(metadata.get("target"), card)
    top_k = card.target.k if card.target.mode == "top_k" else 1
    if metadata.get("top-k") not in (None, ""):
        try:
            top_k = int(metadata["top-k"])
        except ValueError as exc:
            raise InvalidTargetError(f"top-k must be an integer, got {metadata['top-k']!r}") from exc
        if not 1 <= top_k <= min(MAX_TOP_K, len(card.class_names)):
            raise InvalidTargetError(f"top-k must be between 1 and {min(MAX_TOP_K, len(card.class_names))}")
    return RequestOptions(methods, target, top_k, metrics=parse_metrics(metadata, card),
                          rendering=parse_rendering(metadata, card.rendering),
                          condition=parse_condition(metadata.get(CONDITION_KEY), card))


def _json_metadata(metadata: dict, name: str):
    raw = metadata.get(name)
    if raw in (None, ""):
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidParameterError(f"{name} metadata is not valid JSON: {exc}") from exc


def _parse_target(raw: str | None, card: ModelCard) -> int | None:
    if raw in (None, ""):
        return None
    raw = raw.strip()
    if raw in card.class_names:
        return card.class_names.index(raw)
    if raw.isascii() and raw.isdigit():
        index = int(raw)
        if 0 <= index < len(card.class_names):
            return index
    raise InvalidTargetError(
        f"target {raw!r} is neither a class name nor an index below {len(card.class_names)}",
        classes=card.class_names[:50],
    )
