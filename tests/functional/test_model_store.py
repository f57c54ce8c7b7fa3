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
