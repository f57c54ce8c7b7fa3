"""The model store against the emulator: caching, ETag reloads, safe loading, card validation."""

import json

import keras
import pytest

from explain_core.errors import InvalidModelError, ModelCardError, UnknownModelError
from explain_core.model_store import ModelStore
from explain_core.settings import Settings


@pytest.fixture
def store(deployment, s3, tmp_path):
    settings = Settings(input_bucket=deployment.bucket("InputBucket"),
                        results_bucket=deployment.bucket("ResultsBucket"),
                        model_bucket=deployment.bucket("ModelBucket"), model_cache_dir=str(tmp_path))
    return ModelStore(s3, settings)


def put_model(s3, deployment, name, version, model_path, card: dict):
    bucket = deployment.bucket("ModelBucket")
    s3.upload_file(str(model_path), bucket, f"models/{name}/{version}/model.keras")
    s3.put_object(Bucket=bucket, Key=f"models/{name}/{version}/card.json", Body=json.dumps(card).encode())


def test_memory_then_tmp_then_reload_on_etag_change(store, s3, deployment, demo_model_dir, tmp_path):
    card = json.loads((demo_model_dir / "card.json").read_text())
    card["version"] = "etag-test"
    put_model(s3, deployment, "shapes", "etag-test", demo_model_dir / "model.keras", card)

    first = store.get("shapes", "etag-test")
    assert first.source == "s3"
    assert store.get("shapes", "etag-test").source == "memory"
    assert store.get("shapes", "etag-test").model is first.model

    # A new execution environment process finds the file in /tmp.
    fresh = ModelStore(s3, store.settings)
    assert fresh.get("shapes", "etag-test").source == "tmp"

    # Replacing the card in S3 takes effect on the next request.
    card["top_k"] = 2
    s3.put_object(Bucket=deployment.bucket("ModelBucket"), Key="models/shapes/etag-test/card.json",
                  Body=json.dumps(card).encode())
    reloaded = store.get("shapes", "etag-test")
    assert reloaded.card.top_k == 2 and reloaded.card_etag != first.card_etag


def test_unknown_model(store):
    with pytest.raises(UnknownModelError, match="nope/v9"):
        store.get("nope", "v9")


def test_invalid_card(store, s3, deployment, demo_model_dir):
    card = json.loads((demo_model_dir / "card.json").read_text())
    card.update(version="bad-card", class_names=["only-one"])
    put_model(s3, deployment, "shapes", "bad-card", demo_model_dir / "model.keras", card)
    with pytest.raises(ModelCardError, match="class_names"):
        store.get("shapes", "bad-card")


def test_card_must_match_the_model(store, s3, deployment, demo_model_dir):
    card = json.loads((demo_model_dir / "card.json").read_text())
    card.update(version="wrong-shape", input_height=32, input_width=32)
    put_model(s3, deployment, "shapes", "wrong-shape", demo_model_dir / "model.keras", card)
    with pytest.raises(InvalidModelError, match="input shape"):
        store.get("shapes", "wrong-shape")


def test_pickles_and_hdf5_are_refused(store, s3, deployment, demo_model_dir, tmp_path):
    card = json.loads((demo_model_dir / "card.json").read_text())
    card["version"] = "pickled"
    fake = tmp_path / "model.keras"
    fake.write_bytes(b"\x80\x04\x95" + b"pickle payload" * 10)
    put_model(s3, deployment, "shapes", "pickled", fake, card)
    with pytest.raises(InvalidModelError, match="not a Keras v3"):
        store.get("shapes", "pickled")


def test_lambda_layers_are_refused_by_safe_mode(store, s3, deployment, demo_model_dir, tmp_path):
    """A Lambda layer carries Python bytecode; safe_mode refuses to deserialise it."""
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    path = tmp_path / "unsafe.keras"
    model.save(path)
    card = json.loads((demo_model_dir / "card.json").read_text())
    card.update(version="unsafe", cam_layer=None)
    put_model(s3, deployment, "shapes", "unsafe", path, card)
    with pytest.raises(InvalidModelError, match="could not be loaded safely"):
        store.get("shapes", "unsafe")


# --------------------------------------------------------------------------- XGBoost and backgrounds


def put_file(s3, deployment, key: str, body: bytes) -> None:
    s3.put_object(Bucket=deployment.bucket("ModelBucket"), Key=key, Body=body)


def npy(array) -> bytes:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=array.dtype == object)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def xgb_files(tabular_models):
    directory = tabular_models["breast-cancer-xgb"]
    return json.loads((directory / "card.json").read_text()), (directory / "model.json").read_bytes()


def test_xgboost_json_and_ubj_models_load_with_their_background(store, s3, deployment, xgb_files, tmp_path):
    import numpy as np
    import xgboost

    card, model_json = xgb_files
    booster = xgboost.Booster()
    booster.load_model(bytearray(model_json))
    booster.save_model(str(tmp_path / "model.ubj"))
    background = np.random.default_rng(0).normal(size=(5, len(card["feature_names"])))
    for version, filename, body in (("json", "model.json", model_json),
                                    ("ubj", "model.ubj", (tmp_path / "model.ubj").read_bytes())):
        put_file(s3, deployment, f"models/xgb/{version}/{filename}", body)
        put_file(s3, deployment, f"models/xgb/{version}/card.json",
                 json.dumps({**card, "name": "xgb", "version": version, "model_file": filename}).encode())
        put_file(s3, deployment, f"models/xgb/{version}/background.npy", npy(background))
        loaded = store.get("xgb", version)
        assert isinstance(loaded.model, xgboost.Booster) and loaded.card.framework == "xgboost"
        assert loaded.model.num_features() == 30
        np.testing.assert_array_equal(loaded.background, background)
        assert store.get("xgb", version).source == "memory"

    # A new background takes effect on the next request (the model is reloaded with it).
    put_file(s3, deployment, "models/xgb/json/background.npy", npy(background[:2]))
    assert len(store.get("xgb", "json").background) == 2


@pytest.mark.parametrize(("array", "problem"), [
    ("object", "not a numeric .npy array"),
    ("wrong-width", "expected (n, 30)"),
    ("nan", "non-finite values"),
    ("not-npy", "not a numeric .npy array"),
])
def test_bad_backgrounds_are_refused(array, problem, store, s3, deployment, xgb_files):
    import numpy as np

    card, model_json = xgb_files
    version = f"bg-{array}"
    body = {
        "object": npy(np.array([{"x": 1}], dtype=object)),
        "wrong-width": npy(np.zeros((4, 29))),
        "nan": npy(np.full((4, 30), np.nan)),
        "not-npy": b"\x80\x04 a pickle, not an array",
    }[array]
    put_file(s3, deployment, f"models/xgb/{version}/model.json", model_json)
    put_file(s3, deployment, f"models/xgb/{version}/card.json",
             json.dumps({**card, "name": "xgb", "version": version}).encode())
    put_file(s3, deployment, f"models/xgb/{version}/background.npy", body)
    with pytest.raises(InvalidModelError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        store.get("xgb", version)


def test_a_corrupt_xgboost_file_or_a_feature_mismatch_is_refused(store, s3, deployment, xgb_files):
    card, model_json = xgb_files
    put_file(s3, deployment, "models/xgb/corrupt/model.json", b'{"learner": "not a model"')
    put_file(s3, deployment, "models/xgb/corrupt/card.json",
             json.dumps({**card, "name": "xgb", "version": "corrupt"}).encode())
    with pytest.raises(InvalidModelError, match="not a valid XGBoost model"):
        store.get("xgb", "corrupt")
    put_file(s3, deployment, "models/xgb/narrow/model.json", model_json)
    put_file(s3, deployment, "models/xgb/narrow/card.json", json.dumps(
        {**card, "name": "xgb", "version": "narrow", "feature_names": card["feature_names"][:5]}).encode())
    with pytest.raises(InvalidModelError, match="30 features but the card names 5"):
        store.get("xgb", "narrow")


def test_image_background_is_preprocessed_like_the_inputs(store, s3, deployment, demo_model_dir):
    import numpy as np

    card = json.loads((demo_model_dir / "card.json").read_text())
    card["version"] = "bg-image"
    put_model(s3, deployment, "shapes", "bg-image", demo_model_dir / "model.keras", card)
    pixels = np.full((2, 64, 64, 3), 255, dtype=np.uint8)
    put_file(s3, deployment, "models/shapes/bg-image/background.npy", npy(pixels))
    loaded = store.get("shapes", "bg-image")
    # The demo card maps pixels p to (p / 255 - 0.5) / 0.5: white is 1.0.
    np.testing.assert_allclose(loaded.background, 1.0, atol=1e-6)
    assert loaded.background.shape == (2, 64, 64, 3)


def test_a_function_without_xgboost_refuses_xgboost_models_clearly(store, s3, deployment, xgb_files, monkeypatch):
    """The gradient and perturbation images do not install XGBoost: a typed error, not a retried ImportError."""
    import sys

    card, model_json = xgb_files
    put_file(s3, deployment, "models/xgb/no-xgboost/model.json", model_json)
    put_file(s3, deployment, "models/xgb/no-xgboost/card.json",
             json.dumps({**card, "name": "xgb", "version": "no-xgboost"}).encode())
    monkeypatch.setitem(sys.modules, "xgboost", None)  # import xgboost now raises ImportError
    with pytest.raises(InvalidModelError, match="explained by the shap family"):
        store.get("xgb", "no-xgboost")


def test_families_without_shap_ignore_the_background(s3, deployment, demo_model_dir, tmp_path):
    """Gradient and perturbation never HEAD or load background.npy, so a bad one cannot break them."""
    card = json.loads((demo_model_dir / "card.json").read_text())
    card["version"] = "bg-ignored"
    put_model(s3, deployment, "shapes", "bg-ignored", demo_model_dir / "model.keras", card)
    put_file(s3, deployment, "models/shapes/bg-ignored/background.npy", b"not an array")
    settings = Settings(input_bucket=deployment.bucket("InputBucket"),
                        results_bucket=deployment.bucket("ResultsBucket"),
                        model_bucket=deployment.bucket("ModelBucket"), model_cache_dir=str(tmp_path))
    loaded = ModelStore(s3, settings, with_background=False).get("shapes", "bg-ignored")
    assert loaded.background is None and loaded.background_etag is None
    with pytest.raises(InvalidModelError, match="not a numeric .npy array"):
        ModelStore(s3, settings).get("shapes", "bg-ignored")
