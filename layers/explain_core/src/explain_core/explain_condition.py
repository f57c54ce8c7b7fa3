"""Explain only what is asked: a condition on the model's predictions that decides what is explained.

Like SageMaker Clarify's ``EnableExplanations`` (a JMESPath expression over the prediction, e.g.
explain only records whose top probability is below 0.6), a model card's ``explain_if`` and a
request's (upload metadata ``explain-if``, the API's ``explain_if``) set a condition on the
predicted probabilities::

    {"top_probability_below": 0.9}                                 uncertain predictions only
    {"top_probability_above": 0.5}                                 confident ones only
    {"top_probability_above": 0.4, "top_probability_below": 0.8}   a band
    {"predicted_classes": ["cat", 3]}                              the top class is one of these

Every field given must hold (``below``: strictly less, ``above``: strictly more than the top
probability). A request's condition replaces the card's; ``"always"`` turns the card's off.

The condition is evaluated once per record, right after the model predicted, by
:meth:`Condition.verdicts` (the one place, for every modality): an image upload is one record
(one image of a batch never affects its neighbours), a table's row and a text file's document
are each one record (a CSV of 500 patients explains the rows that meet it; Clarify too evaluates
per record). A record that does not meet it is not explained (no method runs on it); its
predictions stay in the manifest, whose ``condition`` (:class:`ConditionOutcome`) says what was
tested, the value that failed and why; a manifest with nothing explained has status ``skipped``
and every method ``skipped``, with no output file.

Nothing here imports the ML stack at module level: the API image validates requests and cards with it.
"""

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from explain_core.errors import InvalidParameterError
from explain_core.manifest_parts import CLASS_INDEX, CLASS_NAME, ClassScore, ManifestPart

#: Upload metadata key (x-amz-meta-explain-if): the condition as JSON, or ``always``.
METADATA_KEY = "explain-if"
#: The value that explains everything whatever the card's condition.
ALWAYS = "always"
#: Most classes a condition may list (S3 user metadata holds 2 KB in all).
MAX_CONDITION_CLASSES = 50


class ExplainIf(ManifestPart):
    """When an input (an image; a table's row; a text's document) is explained: every field given must hold
    for its most probable class (docs/outputs.md#explain-only-what-is-asked)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    top_probability_below: float | None = Field(
        default=None, gt=0.0, le=1.0,
        description="Explain only when the top class's probability is strictly below this (0 < t <= 1)")
    top_probability_above: float | None = Field(
        default=None, ge=0.0, lt=1.0,
        description="Explain only when the top class's probability is strictly above this (0 <= t < 1); with "
                    "top_probability_below, a band: above < p < below")
    predicted_classes: list[str | int] | None = Field(
        default=None, min_length=1, max_length=MAX_CONDITION_CLASSES,
        description="Explain only when the top class is one of these (class names of the model card, or indices)")

    _known_fields_when_nested = True

    @classmethod
    def _unknown_fields_message(cls, unknown: list[str]) -> str:
        return f"unknown field(s) {', '.join(unknown)}; a condition has {', '.join(cls.model_fields)}"

    @field_validator("top_probability_below", "top_probability_above", mode="before")
    @classmethod
    def _number(cls, value):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"must be a number, got {value!r}")
        return value

    @field_validator("predicted_classes", mode="before")
    @classmethod
    def _names_or_indices(cls, value):
        if isinstance(value, list):
            bad = [item for item in value if isinstance(item, bool) or not isinstance(item, (str, int))]
            if bad:
                raise ValueError(f"must list class names or indices, got {bad[0]!r}")
        return value

    @model_validator(mode="after")
    def _one_meaning(self):
        if self.top_probability_below is None and self.top_probability_above is None and not self.predicted_classes:
            raise ValueError("give top_probability_below, top_probability_above or predicted_classes (or explain "
                             f'"{ALWAYS}")')
        below, above = self.top_probability_below, self.top_probability_above
        if below is not None and above is not None and not above < below:
            raise ValueError(f"top_probability_above ({above:g}) and top_probability_below ({below:g}) make a band "
                             "only when above < below; this one holds for no probability")
        return self


def _always_in_any_case(value: Any) -> Any:
    """``always`` in any case and spacing, as the upload metadata takes it (:func:`parse_condition`)."""
    return ALWAYS if isinstance(value, str) and value.strip().lower() == ALWAYS else value


ExplainIfOption = Annotated[
    ExplainIf | Literal["always"] | None,
    BeforeValidator(_always_in_any_case),
    Field(description='Explain only inputs whose prediction meets this condition, e.g. {"top_probability_below": '
                      '0.9}; "always" explains every input whatever the card\'s explain_if; default: the model '
                      "card's explain_if (docs/outputs.md#explain-only-what-is-asked). Inputs (images, table rows "
                      "and text documents) that do not meet it are not explained; their manifest says why"),
]


# ---------------------------------------------------------------------------------------- the manifest's part
class SkippedRecord(ManifestPart):
    """A table's row or a text's document that the condition left out, with the prediction it was tested on."""

    line: int = Field(description="Line of the file where the row or document starts")
    document: int | None = Field(default=None, description="Texts: 0-based index of the document in the file")
    class_index: Annotated[int, CLASS_INDEX]
    class_name: Annotated[str, CLASS_NAME]
    score: float = Field(description="The top class's probability")
    reason: str = Field(description="Why it was not explained")


class ConditionOutcome(ManifestPart):
    """What the explanation condition (``explain_if``) decided for this input; absent without a condition."""

    explain_if: ExplainIf | Literal["always"] = Field(
        description="The condition applied (classes by name); always: the request turned the card's off")
    source: Literal["card", "request"] = Field(description="Whose condition: the model card's or the request's")
    explained: bool = Field(description="Images: whether the image met it and was explained; tables and texts: "
                                        "whether at least one row or document was")
    predicted: ClassScore | None = Field(default=None, description="Images: the top class and probability tested")
    reason: str | None = Field(default=None, description="Images: why the image was not explained")
    records: int | None = Field(default=None, description="Tables and texts: rows or documents in the file")
    explained_records: int | None = Field(default=None, description="Tables and texts: those explained")
    skipped: list[SkippedRecord] | None = Field(
        default=None, description="Tables and texts: the rows or documents not explained, each with why")

    _always = frozenset({"explained"})


# ---------------------------------------------------------------------------------------- a request's condition
@dataclass(frozen=True)
class Verdict:
    """The condition's decision on one record: its top class and probability, and why it is not explained."""

    explain: bool
    class_index: int
    score: float
    reason: str | None = None


@dataclass(frozen=True)
class Condition:
    """A condition in force for a request, checked against the model's classes (``rule`` None: ``always``)."""

    #: Its classes as sorted indices, so that equal conditions compare equal however they named them.
    rule: ExplainIf | None
    source: Literal["card", "request"]
    #: Class indices of ``rule.predicted_classes`` (empty: no class condition).
    classes: frozenset[int] = frozenset()
    class_names: tuple[str, ...] = ()

    @classmethod
    def resolve(cls, rule: ExplainIf | None, source: str, class_names: list[str]) -> "Condition":
        """``rule`` with its classes looked up in the card's ``class_names``; InvalidParameterError for a class
        the model does not have."""
        classes: set[int] = set()
        for item in (rule.predicted_classes or ()) if rule is not None else ():
            if isinstance(item, str) and item in class_names:
                classes.add(class_names.index(item))
            elif isinstance(item, int) and 0 <= item < len(class_names):
                classes.add(item)
            else:
                raise InvalidParameterError(
                    f"explain_if: predicted_classes names {item!r}, neither a class name of the model nor an index "
                    f"below {len(class_names)}", option=METADATA_KEY, classes=class_names[:50])
        if classes:
            rule = rule.model_copy(update={"predicted_classes": sorted(classes)})
        return cls(rule, source, frozenset(classes), tuple(class_names))

    @property
    def always(self) -> bool:
        return self.rule is None

    def _class_label(self, index: int) -> str | int:
        """A class as the manifest writes it: its name, or its index when the card's names do not say which."""
        names = self.class_names
        return names[index] if index < len(names) and names.index(names[index]) == index else index

    def shown(self) -> ExplainIf | str:
        """The condition as the manifest shows it: classes by name, in index order."""
        if self.rule is None:
            return ALWAYS
        if not self.classes:
            return self.rule
        return self.rule.model_copy(update={"predicted_classes": [self._class_label(i) for i in sorted(self.classes)]})

    def metadata_value(self) -> str:
        """Canonical upload metadata (ASCII JSON, classes as indices) that :func:`parse_condition` reads back."""
        if self.rule is None:
            return ALWAYS
        return json.dumps(self.rule.to_dict(), sort_keys=True)

    def describe(self) -> Any:
        """JSON-ready description for the request fingerprint."""
        return [self.source, json.loads(self.metadata_value()) if self.rule is not None else ALWAYS]

    # ------------------------------------------------------------------ evaluation
    def verdicts(self, scores) -> list[Verdict]:
        """One verdict per row of ``scores`` (records x classes probabilities): its top class (the first of
        equal ones, as the explained classes are ranked) and whether the condition holds for it."""
        import numpy as np

        scores = np.asarray(scores, dtype=np.float64)
        tops = np.argmax(scores, axis=1)
        return [self._verdict(int(top), float(row[top])) for top, row in zip(tops, scores, strict=True)]

    def _verdict(self, top: int, score: float) -> Verdict:
        rule = self.rule
        if rule is None:
            return Verdict(True, top, score)
        name = self.class_names[top] if top < len(self.class_names) else str(top)
        if rule.top_probability_above is not None and not score > rule.top_probability_above:
            return Verdict(False, top, score, f"top probability {score:.4g} ({name}) is not above "
                                              f"{rule.top_probability_above:g}")
        if rule.top_probability_below is not None and not score < rule.top_probability_below:
            return Verdict(False, top, score, f"top probability {score:.4g} ({name}) is not below "
                                              f"{rule.top_probability_below:g}")
        if self.classes and top not in self.classes:
            listed = ", ".join(str(self._class_label(i)) for i in sorted(self.classes))
            return Verdict(False, top, score, f"top class {name} is not one of {listed}")
        return Verdict(True, top, score)

    def input_outcome(self, verdict: Verdict) -> ConditionOutcome:
        """The manifest's ``condition`` of an input explained (or not) as a whole: an image."""
        predicted = ClassScore(class_index=verdict.class_index, class_name=self._name(verdict.class_index),
                               score=verdict.score)
        return ConditionOutcome(explain_if=self.shown(), source=self.source, explained=verdict.explain,
                                predicted=None if self.always else predicted, reason=verdict.reason)

    def records_outcome(self, verdicts: list[Verdict], lines, documents: bool = False) -> ConditionOutcome:
        """The manifest's ``condition`` of a file of records (a table's rows, ``documents``: a text's), ``lines``
        the line of each."""
        skipped = [SkippedRecord(line=int(line), document=index if documents else None,
                                 class_index=v.class_index, class_name=self._name(v.class_index), score=v.score,
                                 reason=v.reason)
                   for index, (line, v) in enumerate(zip(lines, verdicts, strict=True)) if not v.explain]
        explained = len(verdicts) - len(skipped)
        return ConditionOutcome(explain_if=self.shown(), source=self.source, explained=explained > 0,
                                records=len(verdicts), explained_records=explained, skipped=skipped)

    def _name(self, index: int) -> str:
        return self.class_names[index] if 0 <= index < len(self.class_names) else str(index)


def check_card_condition(rule: ExplainIf | None, class_names: list[str]) -> None:
    """Raise ValueError when a card's ``explain_if`` names a class the card does not have."""
    if rule is not None:
        try:
            Condition.resolve(rule, "card", class_names)
        except InvalidParameterError as exc:
            raise ValueError(exc.message) from exc


def parse_condition(raw: str | None, card) -> Condition | None:
    """The condition in force: the upload's ``explain-if`` (JSON, or ``always``), else the card's ``explain_if``;
    None when there is none. InvalidParameterError names what is wrong with a bad one."""
    if raw is None or not str(raw).strip():
        return Condition.resolve(card.explain_if, "card", card.class_names) if card.explain_if is not None else None
    raw = str(raw).strip()
    if raw.lower() == ALWAYS:
        # Without a card condition "always" is the default: nothing to record, the same request as none.
        return Condition(None, "request", class_names=tuple(card.class_names)) if card.explain_if is not None \
            else None
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidParameterError(f'{METADATA_KEY} is neither "{ALWAYS}" nor valid JSON: {exc}',
                                    option=METADATA_KEY) from exc
    if not isinstance(document, dict):
        raise InvalidParameterError(f'{METADATA_KEY} must be a JSON object like {{"top_probability_below": 0.9}} '
                                    f'or "{ALWAYS}", got {raw[:100]!r}', option=METADATA_KEY)
    try:
        rule = ExplainIf(**document)
    except ValidationError as exc:
        problems = "; ".join(("".join(f"{p}: " for p in e["loc"][:1])) + e["msg"].removeprefix("Value error, ")
                             for e in exc.errors())
        raise InvalidParameterError(f"invalid {METADATA_KEY} condition: {problems}", option=METADATA_KEY) from exc
    except TypeError as exc:  # a non-string key
        raise InvalidParameterError(f"invalid {METADATA_KEY} condition: {exc}", option=METADATA_KEY) from exc
    return Condition.resolve(rule, "request", card.class_names)


def skipped_methods(options, card) -> list:
    """The manifest's method entries of an input nothing was explained of: every requested method, skipped."""
    from explain_core.modalities.base import method_entry

    entries = []
    for spec, params in options.methods:
        entry = method_entry(spec, params, card)
        entry.status = "skipped"
        entries.append(entry)
    return entries
