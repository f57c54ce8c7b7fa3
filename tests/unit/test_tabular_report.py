"""Unit tests for explain_core.tabular_report: CSV, JSON summary and shap's PNG plots."""

import csv
import io
import json
import os
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
from PIL import Image

from explain_core.tabular_report import (
    ReportFile,
    TabularExplanation,
    additivity_errors,
    beeswarm_png,
    report_files,
    summary,
    values_csv,
)

FEATURES = ["mean radius", "mean concave points", 'ratio, "a/b"', "worst texture", "cost $ per $ unit"]


def make_explanation(rows: int = 6, features: int = 5, seed: int = 0, **overrides) -> TabularExplanation:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, features)) * np.linspace(2.0, 0.1, features)
    base_values = np.full(rows, 0.25)
    fields = {
        "method": "TreeExplainer",
        "class_index": 1,
        "class_name": "benign",
        "output_kind": "log-odds",
        "feature_names": FEATURES[:features] if features <= len(FEATURES) else [f"f{i}" for i in range(features)],
        "data": rng.normal(size=(rows, features)) * 10,
        "values": values,
        "base_values": base_values,
        "model_output": values.sum(axis=1) + base_values,
        "line_numbers": [2 + 3 * i for i in range(rows)],  # not 1..n: names must come from the file lines
        "predicted": ["benign" if i % 2 else "malignant" for i in range(rows)],
    }
    fields.update(overrides)
    return TabularExplanation(**fields)


def parse_csv(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8"))))


def decode_png(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    assert image.format == "PNG"
    image.load()
    return image


def assert_real_plot(body: bytes, min_width: int = 300, min_height: int = 150) -> None:
    image = decode_png(body)
    assert image.width >= min_width and image.height >= min_height
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 20, "a blank or single-colour image"
    # some clearly non-white ink (bars, points, text)
    assert (pixels.min(axis=1) < 128).mean() > 0.005


def assert_no_open_figures() -> None:
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []


@pytest.fixture(scope="module")
def explanation() -> TabularExplanation:
    return make_explanation()


@pytest.fixture(scope="module")
def report(explanation) -> dict[str, ReportFile]:
    files = report_files(explanation, waterfall_rows=3, max_display=4)
    return {file.name: file for file in files}


# --------------------------------------------------------------------------- additivity


def test_additivity_errors_with_known_answer():
    expl = make_explanation(
        rows=3,
        features=2,
        values=np.array([[1.0, 2.0], [0.5, 0.5], [-1.0, -0.5]]),
        base_values=np.array([0.25, 0.0, 1.0]),
        model_output=np.array([3.25, 2.0, -1.0]),
        data=np.zeros((3, 2)),
    )
    # rows sum to 3.25, 1.0 and -0.5 with their base values
    np.testing.assert_array_equal(additivity_errors(expl), [0.0, 1.0, 0.5])


def test_additivity_errors_zero_for_exact_explanation(explanation):
    assert additivity_errors(explanation).shape == (explanation.rows,)
    assert additivity_errors(explanation).max() < 1e-12


# --------------------------------------------------------------------------- CSV


def test_csv_header_and_column_order(explanation):
    table = parse_csv(values_csv(explanation))
    assert table[0] == ["line", "predicted_class", "base_value", "model_output", *explanation.feature_names]
    assert len(table) == 1 + explanation.rows
    assert all(len(row) == len(table[0]) for row in table)


def test_csv_round_trips_exactly(explanation):
    table = parse_csv(values_csv(explanation))
    for i, row in enumerate(table[1:]):
        assert int(row[0]) == explanation.line_numbers[i]
        assert row[1] == explanation.predicted[i]
        assert float(row[2]) == explanation.base_values[i]
        assert float(row[3]) == explanation.model_output[i]
        parsed = np.array([float(cell) for cell in row[4:]])
        np.testing.assert_array_equal(parsed, explanation.values[i])  # exact, not approximate


def test_csv_awkward_floats_round_trip():
    values = np.array([[0.1 + 0.2, 1 / 3, -0.0, 1e-300, 123456789.123456789]])
    expl = make_explanation(rows=1, features=5, values=values, model_output=[values.sum() + 0.25])
    row = parse_csv(values_csv(expl))[1]
    parsed = np.array([float(cell) for cell in row[4:]])
    assert parsed.tobytes() == values[0].tobytes()  # bit for bit, including the sign of -0.0
    assert float(row[3]) == expl.model_output[0]


def test_csv_quotes_awkward_feature_names(explanation):
    header = parse_csv(values_csv(explanation))[0]
    assert 'ratio, "a/b"' in header  # the comma and quotes survive the CSV quoting


# --------------------------------------------------------------------------- summary


def known_explanation() -> TabularExplanation:
    values = np.array(
        [
            [0.1, -3.0, 0.5, 0.0],
            [0.3, 1.0, -0.5, 2.0],
        ]
    )  # mean |SHAP|: a 0.2, b 2.0, c 0.5, d 1.0
    data = np.array([[10.0, 20.0, 30.0, 40.0], [11.0, 21.0, 31.0, 41.0]])
    return TabularExplanation(
        method="TreeExplainer",
        class_index=0,
        class_name="yes",
        output_kind="probability",
        feature_names=["a", "b", "c", "d"],
        data=data,
        values=values,
        base_values=np.array([0.5, 0.5]),
        model_output=np.array([-1.9, 3.8]),  # row 0 adds up (-2.4 + 0.5), row 1 is off by 0.5 (2.8 + 0.5)
        line_numbers=[7, 9],
        predicted=["no", "yes"],
    )


def test_summary_global_importance_ranking():
    result = summary(known_explanation())
    ranking = [(item["feature"], item["mean_abs_shap"]) for item in result["global_importance"]]
    assert [name for name, _ in ranking] == ["b", "d", "c", "a"]
    assert [score for _, score in ranking] == pytest.approx([2.0, 1.0, 0.5, 0.2])


def test_summary_top_features_by_absolute_shap():
    result = summary(known_explanation(), top_features=2)
    first, second = result["rows_detail"]
    assert first["line"] == 7 and first["predicted_class"] == "no"
    # a large negative value ranks by magnitude
    assert first["top_features"] == [
        {"feature": "b", "value": 20.0, "shap": -3.0},
        {"feature": "c", "value": 30.0, "shap": 0.5},
    ]
    assert second["top_features"] == [
        {"feature": "d", "value": 41.0, "shap": 2.0},
        {"feature": "b", "value": 21.0, "shap": 1.0},
    ]
    assert first["model_output"] == -1.9 and first["base_value"] == 0.5


def test_summary_top_features_capped_at_feature_count():
    result = summary(known_explanation(), top_features=10)
    assert [f["feature"] for f in result["rows_detail"][1]["top_features"]] == ["d", "b", "c", "a"]
    assert summary(known_explanation(), top_features=0)["rows_detail"][0]["top_features"] == []


def test_summary_ties_keep_feature_order():
    expl = make_explanation(
        rows=1, features=3, values=np.array([[1.0, -1.0, 1.0]]), model_output=[1.25], data=np.zeros((1, 3))
    )
    result = summary(expl, top_features=3)
    names = expl.feature_names
    assert [f["feature"] for f in result["rows_detail"][0]["top_features"]] == names
    assert [f["feature"] for f in result["global_importance"]] == names


def test_summary_header_fields_and_additivity():
    result = summary(known_explanation())
    assert result["method"] == "TreeExplainer"
    assert result["class_index"] == 0
    assert result["class_name"] == "yes"
    assert result["output_kind"] == "probability"
    assert result["rows"] == 2
    assert result["base_value"] == 0.5
    assert result["additivity"]["max_abs_error"] == pytest.approx(0.5)
    assert result["additivity"]["mean_abs_error"] == pytest.approx(0.25)


def plain_types(node) -> bool:
    if isinstance(node, dict):
        return all(type(key) is str and plain_types(value) for key, value in node.items())
    if isinstance(node, list):
        return all(plain_types(item) for item in node)
    return node is None or type(node) in (str, int, float, bool)


def test_summary_is_json_serialisable_with_plain_types(explanation):
    result = summary(explanation)
    json.dumps(result, allow_nan=False)
    assert plain_types(result)
    assert type(result["rows"]) is int and type(result["rows_detail"][0]["line"]) is int


def test_summary_missing_input_values_become_null():
    data = np.array([[np.nan, 1.0], [2.0, np.inf]])
    expl = make_explanation(rows=2, features=2, data=data)
    result = summary(expl, top_features=2)
    text = json.dumps(result, allow_nan=False)
    values = {(row["line"], f["feature"]): f["value"] for row in result["rows_detail"] for f in row["top_features"]}
    assert values[(2, expl.feature_names[0])] is None
    assert values[(5, expl.feature_names[1])] is None
    assert values[(5, expl.feature_names[0])] == 2.0
    assert "NaN" not in text and "Infinity" not in text


def test_summary_rejects_negative_top_features(explanation):
    with pytest.raises(ValueError):
        summary(explanation, top_features=-1)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "override",
    [
        {"feature_names": ["a", "b"]},
        {"data": np.zeros((6, 4))},
        {"base_values": np.zeros(5)},
        {"model_output": np.zeros(7)},
        {"line_numbers": [1, 2]},
        {"predicted": ["x"]},
        {"values": np.zeros(5)},
    ],
)
def test_inconsistent_shapes_are_rejected(override):
    with pytest.raises(ValueError):
        make_explanation(**override)


# --------------------------------------------------------------------------- plots


def test_report_file_names_and_types(report, explanation):
    lines = explanation.line_numbers[:3]
    assert list(report) == [
        "values.csv",
        "bar.png",
        "beeswarm.png",
        *(f"waterfall-line-{line}.png" for line in lines),
    ]
    assert report["values.csv"].content_type == "text/csv"
    assert report["values.csv"].body == values_csv(explanation)
    assert all(file.content_type == "image/png" for name, file in report.items() if name.endswith(".png"))


@pytest.mark.parametrize("name", ["bar.png", "beeswarm.png", "waterfall-line-2.png", "waterfall-line-8.png"])
def test_plots_are_real_pngs(report, name):
    assert_real_plot(report[name].body)


def test_plots_leave_no_figure_open_and_use_agg(report):
    assert_no_open_figures()
    assert matplotlib.get_backend().lower() == "agg"


def test_single_row_has_no_beeswarm():
    expl = make_explanation(rows=1, line_numbers=[42])
    names = [file.name for file in report_files(expl)]
    assert names == ["values.csv", "bar.png", "waterfall-line-42.png"]
    assert_no_open_figures()


def test_waterfall_count_follows_rows_and_request():
    expl = make_explanation(rows=2, features=3)
    names = [file.name for file in report_files(expl, waterfall_rows=5)]
    assert names == ["values.csv", "bar.png", "beeswarm.png", "waterfall-line-2.png", "waterfall-line-5.png"]
    names = [file.name for file in report_files(expl, waterfall_rows=0)]
    assert names == ["values.csv", "bar.png", "beeswarm.png"]
    assert_no_open_figures()


def test_many_features_and_long_names_plot():
    expl = make_explanation(
        rows=4, features=15, feature_names=[f"worst concave points, measurement number {i} $x$" for i in range(15)]
    )
    files = {file.name: file for file in report_files(expl, waterfall_rows=1, max_display=6)}
    for name in ("bar.png", "beeswarm.png", "waterfall-line-2.png"):
        assert_real_plot(files[name].body)
    assert_no_open_figures()


def test_missing_input_values_still_plot():
    data = np.random.default_rng(3).normal(size=(5, 3))
    data[:, 0] = np.nan
    expl = make_explanation(rows=5, features=3, data=data)
    files = {file.name: file for file in report_files(expl, waterfall_rows=1)}
    assert_real_plot(files["beeswarm.png"].body)
    assert_real_plot(files["waterfall-line-2.png"].body)


def test_beeswarm_is_reproducible_and_keeps_global_random_state(explanation):
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    first = beeswarm_png(explanation, max_display=4)
    assert np.random.random() == expected_next
    assert beeswarm_png(explanation, max_display=4) == first


def test_figures_closed_when_plotting_fails(monkeypatch, explanation):
    import shap

    def broken_waterfall(*args, **kwargs):
        import matplotlib.pyplot as plt

        plt.gca().plot([0, 1])
        plt.figure()  # a stray extra figure must be closed too
        raise RuntimeError("plot failed")

    monkeypatch.setattr(shap.plots, "waterfall", broken_waterfall)
    with pytest.raises(RuntimeError, match="plot failed"):
        report_files(explanation, waterfall_rows=1)
    assert_no_open_figures()


def test_import_does_not_load_pyplot_or_shap():
    code = (
        "import sys, explain_core.tabular_report; "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot'; "
        "assert 'shap' not in sys.modules, 'shap'"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.path.join(root, "layers/explain_core/src")])}
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
