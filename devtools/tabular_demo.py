"""The tabular demo models: XGBoost and a Keras MLP, trained here, deterministically, on breast cancer data.

No data can be downloaded on the machines this project runs on, so the demo uses scikit-learn's
bundled Wisconsin breast cancer set (569 rows, 30 numeric features, malignant/benign). Two models
are published to the model bucket exactly as a user's would be (``models/<name>/v1/card.json`` +
the model file + ``background.npy``), and loaded by the same store:

- ``breast-cancer-xgb``: gradient-boosted trees, saved in XGBoost's JSON format (never a pickle);
- ``breast-cancer-mlp``: a small Keras MLP whose first layer normalises, so both take raw features.

Run ``python -m devtools.tabular_demo`` to build them (cached under .cache/tabular-demo/).
"""

import argparse
import hashlib
import inspect
import io
import json
import os
import time
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np

from devtools.cached_build import build_once

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("TABULAR_DEMO_CACHE_DIR", REPO / ".cache" / "tabular-demo"))
XGB, MLP = "breast-cancer-xgb", "breast-cancer-mlp"
MODELS = (XGB, MLP)
VERSION = "v1"
MODEL_FILES = {XGB: "model.json", MLP: "model.keras"}
#: sklearn's target order: 0 = malignant, 1 = benign.
CLASS_NAMES = ["malignant", "benign"]
TEST_FRACTION, SPLIT_SEED, SEED = 0.3, 0, 1
BACKGROUND_SIZE = 32
MLP_EPOCHS, MLP_BATCH, MLP_LEARNING_RATE = 40, 32, 3e-3
#: Libraries whose version can change a trained model.
LIBRARIES = ("numpy", "scikit-learn", "xgboost", "keras", "tensorflow", "tensorflow-cpu")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


@cache
def dataset() -> dict:
    """The deterministic stratified split: x_train, y_train, x_test, y_test (float64 rows, int labels)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data.astype(np.float64), data.target.astype(np.int64),
        test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=data.target,
    )
    for array in (x_train, x_test, y_train, y_test):
        array.flags.writeable = False  # shared by every caller of this cached function
    return {"feature_names": [str(name) for name in data.feature_names],
            "x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def feature_names() -> list[str]:
    return list(dataset()["feature_names"])


def fingerprint() -> str:
    """Changes when anything that shapes the trained models changes (data, models, training, cards, libraries)."""
    data = dataset()
    digest = hashlib.sha256()
    for key in ("x_train", "y_train", "x_test", "y_test"):
        digest.update(np.ascontiguousarray(data[key]).tobytes())
    for part in (inspect.getsource(dataset), inspect.getsource(background), inspect.getsource(build_mlp),
                 inspect.getsource(train_xgb), inspect.getsource(train_mlp), inspect.getsource(_save),
                 json.dumps([card(name) for name in MODELS], sort_keys=True),
                 repr((TEST_FRACTION, SPLIT_SEED, SEED, BACKGROUND_SIZE, MLP_EPOCHS, MLP_BATCH, MLP_LEARNING_RATE)),
                 repr([(package, _version(package)) for package in LIBRARIES])):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


def card(name: str) -> dict:
    if name not in MODELS:
        raise ValueError(f"unknown tabular demo model {name!r}; expected one of {MODELS}")
    common = {
        "name": name,
        "version": VERSION,
        "modality": "tabular",
        "model_file": MODEL_FILES[name],
        "feature_names": feature_names(),
        "explained_classes": ["malignant"],
        "class_names": list(CLASS_NAMES),
    }
    if name == XGB:
        return common | {
            "description": "Demo XGBoost classifier (100 trees of depth 3): is a breast mass malignant or benign, "
                           "from 30 measurements of its cell nuclei (Wisconsin diagnostic data). Raw log-odds output.",
            "output": "margin",
            "default_methods": {"shap": ["TreeExplainer"]},
        }
    return common | {
        "description": "Demo Keras MLP (normalisation, 32 and 16 ReLU units): is a breast mass malignant or "
                       "benign, from 30 raw measurements of its cell nuclei (Wisconsin diagnostic data). Logits.",
        "output": "logits",
        "default_methods": {"shap": ["KernelExplainer", "DeepExplainer", "GradientExplainer"]},
    }


def background() -> np.ndarray:
    """SHAP's background: 32 training rows drawn at random with a fixed seed, float64 (32, 30).

    A uniform sample of real rows, rather than k-means centres: the background is read as an
    unweighted set whose mean prediction is SHAP's base value, and a plain array of centres would
    drop the cluster sizes (shap.kmeans keeps them as weights), over-weighting the rare, malignant
    clusters. Real rows also stay on the data manifold, and each one is an input both models saw.
    """
    x_train = dataset()["x_train"]
    rows = np.random.default_rng(SEED).choice(len(x_train), size=BACKGROUND_SIZE, replace=False)
    return np.array(x_train[np.sort(rows)], dtype=np.float64)


def build_mlp(x_train: np.ndarray):
    """Raw features in, two logits out: the normalisation is part of the model."""
    import keras

    inputs = keras.Input((x_train.shape[1],), name="features")
    normalize = keras.layers.Normalization(name="normalize")
    normalize.adapt(x_train.astype(np.float32))
    x = normalize(inputs)
    x = keras.layers.Dense(32, activation="relu", name="hidden_1")(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden_2")(x)
    outputs = keras.layers.Dense(len(CLASS_NAMES), name="logits")(x)
    return keras.Model(inputs, outputs, name="breast_cancer_mlp")


def train_xgb(directory: Path) -> dict:
    import xgboost

    data = dataset()
    started = time.perf_counter()
    model = xgboost.XGBClassifier(n_estimators=100, max_depth=3, learning_rate=0.1, n_jobs=2, random_state=0,
                                  tree_method="hist")
    model.fit(data["x_train"], data["y_train"])
    accuracy = float(np.mean(model.predict(data["x_test"]) == data["y_test"]))
    seconds = time.perf_counter() - started
    return _save(directory, XGB, lambda path: model.get_booster().save_model(str(path)), accuracy, seconds)


def train_mlp(directory: Path) -> dict:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    data = dataset()
    started = time.perf_counter()
    x, x_test = data["x_train"].astype(np.float32), data["x_test"].astype(np.float32)
    model = build_mlp(x)
    model.compile(
        optimizer=keras.optimizers.Adam(MLP_LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, data["y_train"], batch_size=MLP_BATCH, epochs=MLP_EPOCHS, shuffle=True, verbose=0)
    accuracy = float(np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == data["y_test"]))
    seconds = time.perf_counter() - started
    return _save(directory, MLP, model.save, accuracy, seconds, epochs=MLP_EPOCHS)


def _save(directory: Path, name: str, save_model, accuracy: float, seconds: float, **extra) -> dict:
    """Write the model, its validated card, the background and, last, the training report."""
    from explain_core.model_card import ModelCard

    model_card = card(name)
    ModelCard.model_validate(model_card)
    data = dataset()
    directory.mkdir(parents=True, exist_ok=True)
    save_model(directory / MODEL_FILES[name])
    (directory / "card.json").write_text(json.dumps(model_card, indent=2))
    np.save(directory / "background.npy", background(), allow_pickle=False)
    report = {"model": name, "test_accuracy": accuracy, "train_seconds": round(seconds, 2),
              "train_rows": len(data["x_train"]), "test_rows": len(data["x_test"]), **extra}
    (directory / "training.json").write_text(json.dumps(report, indent=2))
    return report


TRAINERS = {XGB: train_xgb, MLP: train_mlp}


def model_directory(name: str) -> Path:
    return CACHE / fingerprint() / name / VERSION


def ensure_tabular_models() -> dict[str, Path]:
    """Model name -> directory holding card.json, the model file, background.npy and training.json.

    Trains a model on first use; trained into a scratch directory that is then renamed, so a
    concurrent build, or one interrupted, never leaves a half-written model in the cache.
    """
    directories = {}
    for name in MODELS:
        directory = model_directory(name)
        report = build_once(directory, "training.json", TRAINERS[name])
        if report is not None:
            print(f"trained tabular demo model: {report}", flush=True)
        directories[name] = directory
    return directories


def sample_rows(count: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Held-out rows (never trained on), float64 (count, 30), with their labels (0 malignant, 1 benign)."""
    data = dataset()
    if not 1 <= count <= len(data["x_test"]):
        raise ValueError(f"count must be between 1 and {len(data['x_test'])}")
    return np.array(data["x_test"][:count]), np.array(data["y_test"][:count])


def sample_csv(rows: np.ndarray) -> bytes:
    """CSV with the feature names as header; floats written with repr precision, so they parse back exactly."""
    import csv

    rows = np.asarray(rows, dtype=np.float64).reshape(-1, len(feature_names()))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(feature_names())
    writer.writerows([repr(float(v)) for v in row] for row in rows)
    return out.getvalue().encode()


def sample_jsonl(rows: np.ndarray) -> bytes:
    """JSON lines: one object of feature name -> value per row."""
    names = feature_names()
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, len(names))
    return "".join(json.dumps(dict(zip(names, map(float, row), strict=True))) + "\n" for row in rows).encode()


def publish(s3_client, bucket: str, directory: Path, name: str, version: str = VERSION) -> None:
    """Upload a model, its card and its SHAP background to the model bucket, as a user would."""
    model_file = json.loads((directory / "card.json").read_text())["model_file"]
    for filename in ("card.json", model_file, "background.npy"):
        s3_client.upload_file(str(directory / filename), bucket, f"models/{name}/{version}/{filename}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    for name, directory in ensure_tabular_models().items():
        print(name, directory)
        print((directory / "training.json").read_text())


if __name__ == "__main__":
    main()
