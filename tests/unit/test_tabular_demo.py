"""Unit tests for devtools.tabular_demo: the breast cancer XGBoost and Keras MLP demo models."""

import csv
import io
import json

import numpy as np
import pytest

from devtools import tabular_demo
from explain_core.model_card import MODEL_FILES, ModelCard
from explain_core.registry import SHAP, get_method
from tests.conftest import RecordingS3

MIN_ACCURACY = 0.93


@pytest.fixture(scope="module")
def model_dirs():
    """Trained on first use (a few seconds), then read from the cache."""
    return tabular_demo.ensure_tabular_models()


@pytest.fixture(scope="module")
def held_out():
    data = tabular_demo.dataset()
    return data["x_test"], data["y_test"]


def test_split_is_deterministic_and_stratified():
    from sklearn.datasets import load_breast_cancer

    data, raw = tabular_demo.dataset(), load_breast_cancer()
    assert tabular_demo.feature_names() == list(raw.feature_names)
    assert len(tabular_demo.feature_names()) == 30
    assert data["x_train"].shape == (398, 30) and data["x_test"].shape == (171, 30)
    assert data["x_train"].dtype == np.float64
    # Stratified: both splits keep the data's share of malignant cases.
    share = np.mean(raw.target == 0)
    for labels in (data["y_train"], data["y_test"]):
        assert abs(np.mean(labels == 0) - share) < 0.01
    # No held-out row was trained on.
    train_rows = {row.tobytes() for row in data["x_train"]}
    assert not any(row.tobytes() in train_rows for row in data["x_test"])


def test_cards_validate_and_match_the_files(model_dirs):
    assert tuple(model_dirs) == tabular_demo.MODELS == ("breast-cancer-xgb", "breast-cancer-mlp")
    expected = {"breast-cancer-xgb": ("model.json", "margin", ["TreeExplainer"]),
                "breast-cancer-mlp": ("model.keras", "logits", ["KernelExplainer", "DeepExplainer",
                                                                "GradientExplainer"])}
    for name, directory in model_dirs.items():
        assert directory == tabular_demo.CACHE / tabular_demo.fingerprint() / name / tabular_demo.VERSION
        raw = (directory / "card.json").read_text()
        assert json.loads(raw) == tabular_demo.card(name)
        card = ModelCard.from_json(raw, model=name, version="v1")
        ModelCard.model_validate(json.loads(raw))
        model_file, output, methods = expected[name]
        assert card.modality == "tabular"
        assert card.model_file == model_file and (directory / model_file).is_file()
        assert card.framework == MODEL_FILES[model_file]
        assert card.output == output
        assert card.default_methods == {"shap": methods}
        assert all(get_method(method, SHAP).supports(card) for method in methods)  # registry methods for it
        assert card.feature_names == tabular_demo.feature_names()
        assert card.class_names == ["malignant", "benign"]
        assert card.explained_classes == ["malignant"] and card.default_explained_classes() == [0]
        assert card.description
        for filename in ("background.npy", "training.json"):
            assert (directory / filename).is_file()
        report = json.loads((directory / "training.json").read_text())
        assert report["model"] == name
        assert report["test_accuracy"] > MIN_ACCURACY
        assert 0 < report["train_seconds"] < 60


def test_xgboost_model_is_json_and_accurate(model_dirs, held_out):
    import xgboost

    path = model_dirs["breast-cancer-xgb"] / "model.json"
    document = json.loads(path.read_text())  # JSON, not a pickle
    assert "learner" in document
    booster = xgboost.Booster()
    booster.load_model(str(path))
    assert booster.num_features() == 30
    assert booster.num_boosted_rounds() == 100
    x_test, y_test = held_out
    margin = booster.predict(xgboost.DMatrix(x_test), output_margin=True)
    assert margin.shape == (len(x_test),)  # binary: one log-odds column, of class 1 (benign)
    accuracy = float(np.mean((margin > 0).astype(int) == y_test))
    assert accuracy > MIN_ACCURACY
    assert accuracy == pytest.approx(json.loads((path.parent / "training.json").read_text())["test_accuracy"])


def test_keras_model_loads_safely_and_is_accurate(model_dirs, held_out):
    import keras

    path = model_dirs["breast-cancer-mlp"] / "model.keras"
    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    assert tuple(model.input_shape) == (None, 30)
    assert tuple(model.output_shape) == (None, 2)
    names = [layer.name for layer in model.layers]
    assert names == ["features", "normalize", "hidden_1", "hidden_2", "logits"]
    assert isinstance(model.get_layer("normalize"), keras.layers.Normalization)
    assert model.get_layer("logits").activation.__name__ == "linear"  # logits, no softmax
    x_test, y_test = held_out
    logits = np.asarray(model.predict(x_test.astype(np.float32), verbose=0))  # raw features in
    assert logits.shape == (len(x_test), 2)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == y_test))
    assert accuracy > MIN_ACCURACY
    assert accuracy == pytest.approx(json.loads((path.parent / "training.json").read_text())["test_accuracy"])


def test_background_is_training_rows(model_dirs):
    train_rows = {row.tobytes() for row in tabular_demo.dataset()["x_train"]}
    for directory in model_dirs.values():
        background = np.load(directory / "background.npy", allow_pickle=False)
        assert background.shape == (32, 30) and background.dtype == np.float64
        assert np.isfinite(background).all()
        assert all(row.tobytes() in train_rows for row in background)
        assert len({row.tobytes() for row in background}) == 32
        np.testing.assert_array_equal(background, tabular_demo.background())


def test_sample_rows_are_held_out():
    rows, labels = tabular_demo.sample_rows()
    assert rows.shape == (8, 30) and rows.dtype == np.float64 and labels.shape == (8,)
    x_test, y_test = tabular_demo.dataset()["x_test"], tabular_demo.dataset()["y_test"]
    np.testing.assert_array_equal(rows, x_test[:8])
    np.testing.assert_array_equal(labels, y_test[:8])
    assert set(labels) <= {0, 1}
    assert tabular_demo.sample_rows(3)[0].shape == (3, 30)
    with pytest.raises(ValueError):
        tabular_demo.sample_rows(0)


def test_sample_csv_round_trips():
    rows, _ = tabular_demo.sample_rows(8)
    raw = tabular_demo.sample_csv(rows)
    assert isinstance(raw, bytes)
    reader = csv.reader(io.StringIO(raw.decode()))
    header = next(reader)
    assert header == tabular_demo.feature_names()
    parsed = np.array([[float(value) for value in line] for line in reader])
    assert parsed.shape == rows.shape
    np.testing.assert_array_equal(parsed, rows)  # exactly: repr precision


def test_sample_jsonl_round_trips():
    rows, _ = tabular_demo.sample_rows(5)
    lines = tabular_demo.sample_jsonl(rows).decode().splitlines()
    assert len(lines) == 5
    names = tabular_demo.feature_names()
    objects = [json.loads(line) for line in lines]
    assert all(list(obj) == names for obj in objects)
    np.testing.assert_array_equal(np.array([[obj[n] for n in names] for obj in objects]), rows)


def test_second_build_is_a_cache_hit(model_dirs, monkeypatch):
    reports = {name: (d / "training.json").stat().st_mtime_ns for name, d in model_dirs.items()}

    def no_training(directory):
        raise AssertionError("the cached model was retrained")

    monkeypatch.setattr(tabular_demo, "TRAINERS", {name: no_training for name in tabular_demo.MODELS})
    assert tabular_demo.fingerprint() == tabular_demo.fingerprint()
    again = tabular_demo.ensure_tabular_models()
    assert again == model_dirs
    assert {name: (d / "training.json").stat().st_mtime_ns for name, d in again.items()} == reports


def test_publish_uploads_card_model_and_background(model_dirs):
    s3 = RecordingS3()
    for name, directory in model_dirs.items():
        tabular_demo.publish(s3, "model-bucket", directory, name)
    assert s3.uploads == [
        (str(model_dirs[name] / filename), "model-bucket", f"models/{name}/v1/{filename}")
        for name, model_file in (("breast-cancer-xgb", "model.json"), ("breast-cancer-mlp", "model.keras"))
        for filename in ("card.json", model_file, "background.npy")
    ]


def test_unknown_model_name_is_refused():
    with pytest.raises(ValueError):
        tabular_demo.card("iris")
