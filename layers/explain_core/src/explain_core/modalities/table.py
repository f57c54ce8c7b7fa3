"""Tables: Keras or XGBoost models over named numeric features; SHAP values, plots and summaries.

An upload is a CSV or JSON Lines file (:mod:`explain_core.tables`); its columns are matched to
the card's features by name. Every requested method explains every row (that meets the explanation
condition, if any: :mod:`explain_core.explain_condition`) for each explained class (the upload's
target, else the card's ``explained_classes``) and writes a values CSV, plots and a summary JSON per
class (:mod:`explain_core.tabular_report`).
"""

import posixpath
import time
from dataclasses import replace
from typing import Annotated, Literal

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, Field

from explain_core.approximation import (
    APPROXIMATION,
    WARNINGS,
    ExplanationWarning,
    TableApproximation,
    table_check,
)
from explain_core.errors import InvalidModelOutputError, TableTooLargeError
from explain_core.explain_condition import skipped_methods
from explain_core.manifest_parts import (
    ADDITIVITY_MAX_ERROR,
    BASE_VALUE,
    CLASS_INDEX,
    CLASS_NAME,
    LOADED_FROM,
    OUTPUT_KIND,
    ClassScore,
    InputLocation,
    ManifestPart,
    ModelIdentity,
)
from explain_core.modalities.base import (
    Explained,
    Modality,
    check_finite,
    check_time_budget,
    method_entry,
    method_error,
    method_seconds,
)

#: Tables without a stored SHAP background: the explained rows themselves, at most this many
#: (SHAP's advice is a sample of the training data; the upload is the only data we have).
MAX_UPLOAD_BACKGROUND_ROWS = 64
#: Rows per model call in SHAP's samplers: Kernel SHAP on a table evaluates nb_samples x
#: background rows per explained row, and calls of a few thousand rows are 7-10x faster than 64.
TABULAR_FORWARD_BATCH = 4096
#: Most features a tabular model card may name.
MAX_FEATURES = 2000

metrics = Metrics()


# ---------------------------------------------------------------------- the card fields of a tabular model
class TableCardFields(BaseModel):
    """The model card's fields for tabular models (explain_core.model_card.ModelCard has them all)."""

    #: Tabular models: the features, in the model's column order. Uploaded files may order their
    #: columns freely; they are matched by name. Without them, an XGBoost model's stored names are
    #: used, else the upload's (CSV header, JSON keys) in the file's order.
    feature_names: list[str] | None = Field(default=None, min_length=1, max_length=MAX_FEATURES)
    #: Tabular models: the classes explained when the upload names no target; default: the
    #: positive class (index 1) of a binary model, every class of a multi-class one.
    explained_classes: list[str] | None = Field(default=None, min_length=1, max_length=50)

    def default_explained_classes(self) -> list[int]:
        """Tabular: the class indices explained when the upload names no target."""
        if self.explained_classes:
            return [self.class_names.index(c) for c in self.explained_classes]
        return [1] if len(self.class_names) == 2 else list(range(len(self.class_names)))


# ---------------------------------------------------------------------- the manifest's parts of a table
class TableInput(InputLocation):
    """A tabular input (CSV or JSON Lines): where it was read from and its shape."""

    format: Literal["csv", "jsonl"] = Field(description="csv or jsonl (from the file's extension)")
    rows: int = Field(description="Data rows in the file (all explained unless the manifest's condition lists "
                                  "rows it skipped)")
    columns: int = Field(description="Feature columns")
    feature_names_from: Literal["model", "upload"] = Field(
        description="Where the feature names came from: the model (its card or model file) or the upload's header")


class TableModel(ModelIdentity):
    """The tabular model that explained the input."""

    modality: Literal["tabular"] = Field(description="tabular")
    features: int = Field(description="Number of input features")
    loaded_from: Annotated[str, LOADED_FROM]


class TablePredictions(ManifestPart):
    """A table's predictions: how many rows the model assigns to each class."""

    rows_per_class: dict[str, int] = Field(description="Class name -> rows whose most probable class it is")


class TableOutput(ManifestPart):
    """One explained class of one method on a table: result-bucket keys of its files."""

    class_index: Annotated[int, CLASS_INDEX]
    class_name: Annotated[str, CLASS_NAME]
    output_kind: Annotated[str, OUTPUT_KIND]
    base_value: Annotated[float, BASE_VALUE]
    additivity_max_error: Annotated[float, ADDITIVITY_MAX_ERROR]
    summary: str = Field(description="Key of the summary JSON (per-feature statistics)")
    files: list[str] = Field(description="Keys of the values CSV and the plots (PNG)")
    approximation: Annotated[TableApproximation | None, APPROXIMATION] = None
    warnings: Annotated[list[ExplanationWarning] | None, WARNINGS] = None

    def with_links(self, sign) -> dict:
        """The API's view (explain_core.api_models.MethodOutput): file keys as ``sign(key)`` URLs."""
        return {"class_index": self.class_index, "class_name": self.class_name, "output_kind": self.output_kind,
                "base_value": self.base_value, "summary_url": sign(self.summary),
                "additivity_max_error": self.additivity_max_error,
                "approximation": self.approximation, "warnings": self.warnings,
                "files": {posixpath.basename(key): sign(key) for key in self.files}}


class TableModality(Modality):
    name = "tabular"
    frameworks = ("keras", "xgboost")
    card_fields = TableCardFields
    input_type = TableInput
    model_type = TableModel
    predictions_type = TablePredictions
    output_type = TableOutput
    attribution_dtype = "float64"  # kept for the values CSV
    default_background_is_fixed = False
    default_background_description = "the uploaded rows (at most 64)"
    explains_in_batches = False

    def check_card(self, card) -> None:
        if card.feature_names and len(set(card.feature_names)) != len(card.feature_names):
            raise ValueError("feature_names must be unique")
        unknown = [c for c in card.explained_classes or () if c not in card.class_names]
        if unknown:
            raise ValueError(f"explained_classes {unknown} are not in class_names")

    def model_input_shape(self, card, handler, model) -> tuple:
        return (len(card.feature_names) if card.feature_names else handler.feature_count(model),)

    def describe_model(self, loaded) -> dict:
        return {"features": loaded.feature_count}

    def prepare_background(self, array, card):
        import numpy as np

        return array.astype(np.float64)

    def default_background(self, card, inputs):
        return inputs[:MAX_UPLOAD_BACKGROUND_ROWS]

    def size_limit(self, settings):
        return settings.max_table_bytes, TableTooLargeError

    def decode(self, data, filename, loaded, settings):
        from explain_core.tables import parse_table

        return parse_table(data, filename, loaded.feature_names, feature_count=loaded.feature_count,
                           max_bytes=settings.max_table_bytes, max_rows=settings.max_table_rows)

    def forward_batch(self, batch_size: int) -> int:
        return max(batch_size, TABULAR_FORWARD_BATCH)

    def prediction_summary(self, manifest: dict) -> str:
        counts = manifest["predictions"]["rows_per_class"]
        return f"{manifest['input']['rows']} rows: " + ", ".join(f"{n} {name}" for name, n in counts.items())

    # ------------------------------------------------------------------ explaining
    def estimate_seconds(self, session, upload, loaded) -> float:
        from explain_core.attribution import raw_outputs

        table = upload.content
        raw_outputs(loaded.model, table.values[: session.batch_size], loaded.card, session.batch_size)  # may trace
        row_seconds = _row_seconds(session, loaded, table.values)
        classes = _classes(upload, loaded.card)
        return sum(method_seconds(spec, params, *_passes(spec, loaded, table, classes, row_seconds), loaded.card)
                   for spec, params in upload.options.methods)

    def explain(self, session, uploads, loaded, context) -> list[Explained]:
        return [self._explain_table(session, upload, loaded, context) for upload in uploads]

    @staticmethod
    def _explain_table(session, upload, loaded, context) -> Explained:
        """Every requested method on one table; values CSV, summary JSON and plots per class."""
        import numpy as np

        from explain_core.attribution import probabilities, raw_outputs
        from explain_core.shap_methods import output_kind
        from explain_core.tabular_report import TabularExplanation

        card, table = loaded.card, upload.content
        started = time.perf_counter()
        outputs = raw_outputs(loaded.model, table.values, card, session.batch_size)
        predict_seconds = time.perf_counter() - started
        bad_rows = ~np.all(np.isfinite(outputs), axis=1)
        if bad_rows.any():
            lines = [int(table.line_numbers[i]) for i in np.flatnonzero(bad_rows)[:20]]
            raise InvalidModelOutputError(
                f"the model's outputs for {upload.key} are NaN or infinite on {int(bad_rows.sum())} row(s) "
                f"(lines {', '.join(map(str, lines))})", key=upload.key, lines=lines,
            )
        scores = probabilities(outputs, card)
        predicted = np.argmax(scores, axis=1)
        classes = _classes(upload, card)
        # Explain only what is asked: each row is a record, explained when its prediction meets the condition; the
        # others keep their prediction and the reason, and cost no method run.
        verdicts = upload.options.verdicts(scores)
        condition = (upload.options.condition.records_outcome(verdicts, table.line_numbers)
                     if upload.options.condition else None)
        kept = np.flatnonzero([verdict.explain for verdict in verdicts])
        counts = np.bincount(predicted, minlength=len(card.class_names))
        description = {"format": table.format, "rows": len(table.values), "columns": len(table.feature_names),
                       "feature_names_from": "model" if loaded.feature_names else "upload"}
        predictions = TablePredictions(rows_per_class={card.class_name(i): int(n) for i, n in enumerate(counts)})
        timings = {"predict_s": round(predict_seconds, 4), "rows": len(table.values)}
        if not len(kept):
            return Explained(objects=[], methods=skipped_methods(upload.options, card), input_description=description,
                             predictions=predictions, explained_classes=[], timings=timings, condition=condition)
        # The default SHAP background stays the uploaded rows, skipped ones included: explaining some rows must not
        # change what their values are relative to.
        background = loaded.background
        if len(kept) < len(table.values):
            if background is None:
                background = loaded.modality.default_background(card, table.values)
            table = replace(table, values=table.values[kept], line_numbers=[table.line_numbers[i] for i in kept])
            outputs, predicted = outputs[kept], predicted[kept]
        row_seconds = _row_seconds(session, loaded, table.values)  # the call above warmed the model

        def described(cls: int) -> dict:
            return {"class_index": int(cls), "class_name": card.class_name(int(cls))}

        objects, methods = [], []
        for spec, params in upload.options.methods:
            entry = method_entry(spec, params, card)
            try:
                check_time_budget(spec, params, *_passes(spec, loaded, table, classes, row_seconds, background), card,
                                  context)
                if background is loaded.background:
                    explainer = session.explainers.get(spec, loaded.model, card, params, session.batch_size,
                                                       loaded.background)
                else:  # this upload's own background: not an explainer to keep for other uploads
                    explainer = loaded.modality.build_explainer(spec, loaded.model, card, params,
                                                                session.batch_size, background)
                seconds = 0.0
                for cls in classes:
                    targets = np.zeros((len(table.values), len(card.class_names)), dtype=np.float32)
                    targets[:, cls] = 1.0
                    method_started = time.perf_counter()
                    values = explainer.explain(table.values, targets)
                    seconds += time.perf_counter() - method_started
                    check_finite(values, f"{spec.name}'s values for class {card.class_name(cls)}",
                                 method=spec.name, class_name=card.class_name(cls))
                    check_finite(explainer.base_values, f"{spec.name}'s base value for class "
                                 f"{card.class_name(cls)}", method=spec.name, class_name=card.class_name(cls))
                    explanation = TabularExplanation(
                        method=spec.name, class_index=cls, class_name=card.class_name(cls),
                        output_kind=output_kind(card), feature_names=table.feature_names, data=table.values,
                        values=values, base_values=explainer.base_values, model_output=outputs[:, cls],
                        line_numbers=table.line_numbers, predicted=[card.class_name(int(p)) for p in predicted],
                    )
                    files, output = _report_files(session, upload, explanation, card)
                    objects += files
                    approximation, warnings = table_check(spec, params, explanation)
                    if approximation is not None or warnings:  # always, for a method with a check
                        output.update(approximation=approximation, warnings=warnings)
                    entry.outputs.append(TableOutput(**described(cls), **output))
                entry.seconds = round(seconds, 4)
                metrics.add_metric(name=f"{spec.name}Seconds", unit=MetricUnit.Seconds, value=seconds)
            except Exception as exc:  # a method failing on this model must not sink the others
                entry.status = "failed"
                entry.error = method_error(exc, spec.name, card)
            methods.append(entry)

        return Explained(
            objects=objects, methods=methods, input_description=description, predictions=predictions,
            explained_classes=[ClassScore(**described(c)) for c in classes], timings=timings, condition=condition,
        )


def _report_files(session, upload, explanation, card) -> tuple[list, dict]:
    """One method's outputs for one class: values CSV, plots and summary JSON; and its manifest entry."""
    from explain_core.keys import class_label
    from explain_core.results import strict_json
    from explain_core.tabular_report import report_files, summary

    label = class_label(explanation.class_index, card.class_names)
    described = summary(explanation)
    files = [(session.output_key(upload, explanation.method, label, f.name), f.body, f.content_type)
             for f in report_files(explanation)]
    summary_key = session.output_key(upload, explanation.method, label, "summary.json")
    entry = {
        "output_kind": explanation.output_kind,
        "base_value": described["base_value"],
        "additivity_max_error": described["additivity"]["max_abs_error"],
        "summary": summary_key,
        "files": [key for key, _, _ in files],
    }
    return [*files, (summary_key, strict_json(described), "application/json")], entry


def _classes(upload, card) -> list[int]:
    """The classes a table explains: its target, else the card's."""
    return [upload.options.target] if upload.options.target is not None else card.default_explained_classes()


def _row_seconds(session, loaded, values) -> float:
    """Warm model time per table row (call after the model has run once: the first call may trace)."""
    from explain_core.attribution import raw_outputs

    sample = values[: session.batch_size]
    started = time.perf_counter()
    raw_outputs(loaded.model, sample, loaded.card, session.batch_size)
    return (time.perf_counter() - started) / len(sample)


def _passes(spec, loaded, table, classes: list[int], row_seconds: float, background=None) -> tuple[int, float]:
    """(rows, seconds per pass) of a method on a table, for :func:`method_seconds`: each explained
    class is a pass over the rows, and Kernel SHAP evaluates every background row per pass (``background``:
    the one it runs with, when not the stored one)."""
    background = loaded.background if background is None else background
    background_rows = len(background) if background is not None else len(table.values)
    evaluations = background_rows if spec.passes_per_background_row else 1
    return len(table.values) * len(classes), row_seconds * evaluations
