"""User-facing outputs of a tabular SHAP explanation for one explained class.

From the SHAP values of every uploaded row this module produces a CSV of the values, a JSON
summary (global importance, additivity check, top features per row) and PNG plots drawn by
shap itself (bar, beeswarm, waterfall). ``shap`` imports ``matplotlib.pyplot``, so both are
imported inside the plotting code only, after selecting the non-interactive Agg backend.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np

CSV_LEADING_COLUMNS = ("line", "predicted_class", "base_value", "model_output")

#: Plot text comes from the uploaded file; longer names are shortened in the figures only.
MAX_LABEL_CHARS = 40
DPI = 100
PLOT_WIDTH_INCHES = 9.0
ROW_HEIGHT_INCHES = 0.4


@dataclass
class TabularExplanation:
    method: str  # e.g. "TreeExplainer"
    class_index: int
    class_name: str
    output_kind: str  # what the values explain: "log-odds", "logit" or "probability"
    feature_names: list[str]
    data: np.ndarray  # (n, f) float64 input rows
    values: np.ndarray  # (n, f) SHAP values for this class
    base_values: np.ndarray  # (n,) expected value per row (often all equal)
    model_output: np.ndarray  # (n,) the model's explained output per row (same kind as output_kind)
    line_numbers: list[int]  # 1-based line of each row in the uploaded file
    predicted: list[str]  # predicted class name per row

    def __post_init__(self) -> None:
        self.feature_names = [str(name) for name in self.feature_names]
        self.data = np.asarray(self.data, dtype=np.float64)
        self.values = np.asarray(self.values, dtype=np.float64)
        self.base_values = np.asarray(self.base_values, dtype=np.float64).reshape(-1)
        self.model_output = np.asarray(self.model_output, dtype=np.float64).reshape(-1)
        self.line_numbers = [int(line) for line in self.line_numbers]
        self.predicted = [str(name) for name in self.predicted]
        if self.values.ndim != 2:
            raise ValueError(f"values must be (rows, features), got shape {self.values.shape}")
        rows, features = self.values.shape
        if rows == 0:
            raise ValueError("an explanation needs at least one row")
        if len(self.feature_names) != features:
            raise ValueError(f"{len(self.feature_names)} feature names for {features} value columns")
        if self.data.shape != self.values.shape:
            raise ValueError(f"data shape {self.data.shape} differs from values shape {self.values.shape}")
        for name in ("base_values", "model_output", "line_numbers", "predicted"):
            if len(getattr(self, name)) != rows:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {rows} rows")

    @property
    def rows(self) -> int:
        return self.values.shape[0]


@dataclass
class ReportFile:
    name: str  # "values.csv", "bar.png", "beeswarm.png", "waterfall-line-<line>.png"
    body: bytes
    content_type: str  # "text/csv", "image/png"


# --------------------------------------------------------------------------- numbers


def additivity_errors(expl: TabularExplanation) -> np.ndarray:
    """Per row, how far base value plus the SHAP values land from the model's output."""
    return np.abs(expl.values.sum(axis=1) + expl.base_values - expl.model_output)


def _number(value) -> float | None:
    """A plain float for JSON; NaN and infinities (e.g. missing inputs) become None."""
    value = float(value)
    return value if math.isfinite(value) else None


def _mean_abs_shap(expl: TabularExplanation) -> np.ndarray:
    return np.abs(expl.values).mean(axis=0)


def _descending(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score; ties keep feature order, NaN scores go last."""
    return np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")


def values_csv(expl: TabularExplanation) -> bytes:
    """One row per input row: line, predicted class, base value, model output, then one SHAP value per feature.

    Floats are written with ``repr``, the shortest text that parses back to the same float64.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_LEADING_COLUMNS, *expl.feature_names])
    for i in range(expl.rows):
        writer.writerow(
            [
                expl.line_numbers[i],
                expl.predicted[i],
                repr(float(expl.base_values[i])),
                repr(float(expl.model_output[i])),
                *(repr(value) for value in expl.values[i].tolist()),
            ]
        )
    return buffer.getvalue().encode("utf-8")


def summary(expl: TabularExplanation, top_features: int = 10) -> dict:
    """A JSON-serialisable digest: global importance, additivity and the top features of each row."""
    if top_features < 0:
        raise ValueError("top_features must not be negative")
    errors = additivity_errors(expl)
    importance = _mean_abs_shap(expl)
    rows_detail = []
    for i in range(expl.rows):
        top = _descending(np.abs(expl.values[i]))[:top_features]
        rows_detail.append(
            {
                "line": expl.line_numbers[i],
                "predicted_class": expl.predicted[i],
                "model_output": _number(expl.model_output[i]),
                "base_value": _number(expl.base_values[i]),
                "top_features": [
                    {
                        "feature": expl.feature_names[j],
                        "value": _number(expl.data[i, j]),
                        "shap": _number(expl.values[i, j]),
                    }
                    for j in top
                ],
            }
        )
    return {
        "method": str(expl.method),
        "class_index": int(expl.class_index),
        "class_name": str(expl.class_name),
        "output_kind": str(expl.output_kind),
        "rows": expl.rows,
        "base_value": _number(expl.base_values.mean()),
        "additivity": {
            "max_abs_error": _number(np.max(errors)),
            "mean_abs_error": _number(np.mean(errors)),
        },
        "global_importance": [
            {"feature": expl.feature_names[j], "mean_abs_shap": _number(importance[j])} for j in _descending(importance)
        ],
        "rows_detail": rows_detail,
    }


# --------------------------------------------------------------------------- plots


def _label(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    """Text safe for matplotlib: shortened, with ``$`` escaped so it is never parsed as mathtext."""
    text = str(text)
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return text.replace("$", r"\$")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _render(draw, figsize: tuple[float, float] | None = None) -> bytes:
    """Run ``draw(figure)`` on a fresh figure and return it as PNG; every figure it opened is closed."""
    plt = _pyplot()
    before = set(plt.get_fignums())
    try:
        figure = plt.figure(figsize=figsize)
        draw(figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
        return buffer.getvalue()
    finally:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)


def _plot_height(shown: int) -> float:
    return shown * ROW_HEIGHT_INCHES + 1.5


def _shap_explanation(expl: TabularExplanation):
    import shap

    return shap.Explanation(
        values=expl.values,
        base_values=expl.base_values,
        data=expl.data,
        feature_names=[_label(name) for name in expl.feature_names],
    )


def _class_caption(expl: TabularExplanation) -> str:
    return f"class {_label(expl.class_name)} ({_label(expl.output_kind)})"


def bar_png(expl: TabularExplanation, max_display: int = 12) -> bytes:
    """Global importance: mean |SHAP| of every feature over all rows."""
    _pyplot()
    import shap

    explanation = _shap_explanation(expl)
    shown = min(max_display, len(expl.feature_names))

    def draw(figure):
        ax = figure.add_subplot()
        shap.plots.bar(explanation.abs.mean(0), max_display=max_display, ax=ax, show=False)
        ax.set_title(f"Mean |SHAP| over {expl.rows} row(s), {_class_caption(expl)}")

    return _render(draw, (PLOT_WIDTH_INCHES, _plot_height(shown)))


def beeswarm_png(expl: TabularExplanation, max_display: int = 12) -> bytes:
    """Each row's SHAP value per feature, coloured by the feature's value."""
    _pyplot()
    import shap

    explanation = _shap_explanation(expl)
    shown = min(max_display, len(expl.feature_names))

    def draw(figure):
        ax = figure.add_subplot()
        # The beeswarm jitters points with NumPy's global random state: seed it for a reproducible
        # image and give the caller its state back.
        state = np.random.get_state()
        np.random.seed(0)
        try:
            shap.plots.beeswarm(explanation, max_display=max_display, ax=ax, plot_size=None, show=False)
        finally:
            np.random.set_state(state)
        ax.set_title(f"SHAP values of {expl.rows} rows, {_class_caption(expl)}")

    return _render(draw, (PLOT_WIDTH_INCHES, _plot_height(shown)))


def waterfall_png(expl: TabularExplanation, row: int, max_display: int = 12) -> bytes:
    """How the features move one row's output from the base value to the model's output."""
    plt = _pyplot()
    import shap

    explanation = _shap_explanation(expl)[row]

    def draw(figure):
        # shap.plots.waterfall draws on the current figure and sizes it by the number of features shown.
        shap.plots.waterfall(explanation, max_display=max_display, show=False)
        plt.gca().set_title(
            f"Line {expl.line_numbers[row]}: predicted {_label(expl.predicted[row])}; {_class_caption(expl)}"
        )

    return _render(draw)


def report_files(expl: TabularExplanation, waterfall_rows: int = 3, max_display: int = 12) -> list[ReportFile]:
    """values.csv, bar.png, beeswarm.png (two rows or more) and waterfall plots of the first rows."""
    if max_display < 1:
        raise ValueError("max_display must be at least 1")
    files = [
        ReportFile("values.csv", values_csv(expl), "text/csv"),
        ReportFile("bar.png", bar_png(expl, max_display), "image/png"),
    ]
    if expl.rows > 1:
        files.append(ReportFile("beeswarm.png", beeswarm_png(expl, max_display), "image/png"))
    for row in range(min(max(waterfall_rows, 0), expl.rows)):
        name = f"waterfall-line-{expl.line_numbers[row]}.png"
        files.append(ReportFile(name, waterfall_png(expl, row, max_display), "image/png"))
    return files
