"""Unsafe model files against the emulator: published to the model bucket, loaded by ModelStore.get.

Each file here would run code (or reach files) while loading with a Keras release that lacks the
published safe_mode fixes; the payloads reproduce the shapes of the advisories:

- CVE-2025-9905: a legacy HDF5 (.h5) model whose Lambda layer carries Python bytecode: Keras
  < 3.11.3 ignores ``safe_mode`` for HDF5 files and runs it.
- CVE-2025-1550: config.json names an arbitrary module function (``os.system``, ``builtins.exec``)
  as the function of a Lambda layer, and its argument: Keras < 3.9 imports and calls it.
- CVE-2025-9906: a Lambda layer calls Keras' own ``set_global_attribute`` to turn safe mode off,
  a second one ``keras.models.load_model(..., safe_mode=False)`` on a planted model whose
  bytecode Lambda then runs (Keras < 3.11).
- CVE-2025-8747: a Lambda layer calls ``keras.utils.get_file`` to plant a file (Keras < 3.11).
- CVE-2025-12058 (StringLookup vocabulary read from a path) and CVE-2026-1462 (TFSMLayer loading
  an external SavedModel).
- A plain Lambda layer with a Python lambda (CVE-2024-3660), refused by ``safe_mode`` itself.

(The CVE-2025-1550, -9906 and -9905 payloads were checked to create their marker file when loaded
with ``safe_mode=True`` by Keras 3.8.0 / 3.10.0.) The store must refuse every one with a typed,
final error (never retried), before any Keras call, and no marker file may exist afterwards.
"""

import base64
import importlib.metadata
import io
import json
import marshal
import os
import re
import uuid
import zipfile
from pathlib import Path

import keras
import pytest

from devtools.local.events import deliver
from explain_core.errors import ExplainError, InvalidModelError, ModelCardError, UnsafeModelError
from explain_core.model_store import ModelStore
from explain_core.settings import Settings
from tests.conftest import png_bytes, read_json, upload_event

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture
def store(deployment, s3, tmp_path):
    settings = Settings(input_bucket=deployment.bucket("InputBucket"),
                        results_bucket=deployment.bucket("ResultsBucket"),
                        model_bucket=deployment.bucket("ModelBucket"), model_cache_dir=str(tmp_path / "cache"))
    return ModelStore(s3, settings)


@pytest.fixture
def keras_loads(monkeypatch) -> list:
    """Every call of keras.saving.load_model (still performed): refused files must never reach it."""
    calls, original = [], keras.saving.load_model

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(keras.saving, "load_model", spy)
    return calls


@pytest.fixture
def marker():
    """A path that a payload would create; removed afterwards whatever happens."""
    path = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def card(demo_model_dir) -> dict:
    return {**json.loads((demo_model_dir / "card.json").read_text()), "cam_layer": None}


def tiny_model(lambda_body: str | None = None):
    """A model the demo card fits (64x64 RGB in, 4 logits out); with a Lambda layer running ``lambda_body``."""
    inputs = keras.Input((64, 64, 3), name="image")
    x = inputs
    if lambda_body:
        x = keras.layers.Lambda(eval(f"lambda t: ({lambda_body}, t)[1]"), name="evil")(x)  # noqa: S307
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


def create(path) -> str:
    """Python source that creates ``path``."""
    return f"open({str(path)!r}, 'w').close()"


@pytest.fixture(scope="module")
def clean_archive(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("clean") / "model.keras"
    tiny_model().save(path)
    return path.read_bytes()


def publish(s3, deployment, name: str, version: str, body: bytes, card: dict, filename: str = "model.keras"):
    bucket = deployment.bucket("ModelBucket")
    s3.put_object(Bucket=bucket, Key=f"models/{name}/{version}/{filename}", Body=body)
    s3.put_object(Bucket=bucket, Key=f"models/{name}/{version}/card.json",
                  Body=json.dumps({**card, "name": name, "version": version}).encode())


def edited(archive: bytes, edit) -> bytes:
    """The .keras archive with its config.json edited by ``edit(config)``, every other entry kept."""
    source = zipfile.ZipFile(io.BytesIO(archive))
    config = json.loads(source.read("config.json"))
    edit(config)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = json.dumps(config).encode() if info.filename == "config.json" else source.read(info.filename)
            target.writestr(info.filename, data)
    return out.getvalue()


def function(module: str, name: str) -> dict:
    """How config.json names a function (Keras' own serialization of function objects)."""
    return {"module": module, "class_name": "function", "config": name, "registered_name": "function"}


def lambda_layer(name: str, fn: dict, argument, arguments: dict | None = None) -> dict:
    """A Lambda layer calling ``fn(argument, **arguments)`` when the model is rebuilt during loading."""
    return {"module": "keras.layers", "class_name": "Lambda",
            "config": {"name": name, "trainable": True, "function": fn, "arguments": arguments or {}},
            "registered_name": None, "name": name,
            # A plain value passed as keyword "inputs": Functional.from_config calls layer(inputs=...).
            "inbound_nodes": [{"args": [], "kwargs": {"inputs": argument}}]}


def insert_layers(*layers):
    def edit(config):
        config["config"]["layers"][1:1] = list(layers)
    return edit


def assert_refused_before_keras(info, calls, *markers):
    error = info.value
    assert isinstance(error, ExplainError) and isinstance(error, InvalidModelError)  # final: never retried
    assert error.status == 422
    assert calls == [], "the file reached keras.saving.load_model"
    for path in markers:
        assert not os.path.exists(path), f"{path} was created: the payload ran"


# --------------------------------------------------------------------------- (a) legacy HDF5
@pytest.fixture
def hdf5_model(tmp_path, marker) -> bytes:
    """A real legacy HDF5 model whose Lambda layer creates the marker (the CVE-2025-9905 shape)."""
    path = tmp_path / "x.h5"
    tiny_model(create(marker)).save(path)  # Keras 3 still writes legacy HDF5 for a .h5 name
    marker.unlink()  # building the model ran the lambda once: start clean
    body = path.read_bytes()
    assert body.startswith(b"\x89HDF\r\n\x1a\n")
    return body


def test_a_legacy_hdf5_model_is_refused_before_any_keras_call(store, s3, deployment, card, hdf5_model, marker,
                                                              keras_loads, unique_prefix):
    publish(s3, deployment, "hdf5", unique_prefix, hdf5_model, card)  # the h5 bytes named model.keras

    with pytest.raises(UnsafeModelError, match=r"legacy HDF5 \(\.h5\).*not a Keras v3 \.keras archive") as info:
        store.get("hdf5", unique_prefix)

    assert_refused_before_keras(info, keras_loads, marker)
    assert info.value.code == "unsafe_model"
    assert not list((Path(store.settings.model_cache_dir) / "hdf5").rglob("*.part"))


def test_a_card_naming_an_hdf5_file_is_refused(store, s3, deployment, card, hdf5_model, marker, keras_loads,
                                               unique_prefix):
    publish(s3, deployment, "hdf5-card", unique_prefix, hdf5_model, {**card, "model_file": "model.h5"},
            filename="model.h5")

    with pytest.raises(ModelCardError, match="model_file") as info:
        store.get("hdf5-card", unique_prefix)

    assert_refused_before_keras(info, keras_loads, marker)


# --------------------------------------------------------------------------- (b) crafted config.json
def cve_2025_1550_os_system(marker, tmp_path):
    return insert_layers(lambda_layer("pwn", function("os", "system"), f"touch {marker}"))


def cve_2025_1550_builtins_exec(marker, tmp_path):
    return insert_layers(lambda_layer("pwn", function("builtins", "exec"), create(marker)))


def cve_2025_9906_safe_mode_off(marker, tmp_path):
    planted = tmp_path / "planted.keras"  # as if downloaded by an earlier gadget (CVE-2025-8747)
    tiny_model(create(marker)).save(planted)
    marker.unlink()
    return insert_layers(
        lambda_layer("unlock", function("keras.src.backend.common.global_state", "set_global_attribute"),
                     "safe_mode_saving", {"value": False}),
        lambda_layer("load", function("keras.models", "load_model"), str(planted), {"safe_mode": False}),
    )


def cve_2025_8747_get_file(marker, tmp_path):
    payload = tmp_path / "payload.py"
    payload.write_text("import os\n")
    (tmp_path / "planted").mkdir()
    return insert_layers(lambda_layer("fetch", function("keras.utils", "get_file"), "payload.py",
                                      {"origin": payload.as_uri(), "cache_dir": str(tmp_path / "planted")}))


def cve_2025_12058_vocabulary_file(marker, tmp_path):
    return insert_layers({"module": "keras.layers", "class_name": "StringLookup",
                          "config": {"name": "vocab", "vocabulary": "/etc/hostname"},
                          "registered_name": None, "name": "vocab", "inbound_nodes": []})


def cve_2026_1462_tfsm_layer(marker, tmp_path):
    return insert_layers({"module": "keras.layers", "class_name": "TFSMLayer",
                          "config": {"name": "saved", "filepath": str(tmp_path / "saved_model")},
                          "registered_name": None, "name": "saved", "inbound_nodes": []})


def arbitrary_module_activation(marker, tmp_path):
    """No Lambda at all: a Dense layer whose activation names os.system."""
    def edit(config):
        dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
        dense["config"]["activation"] = function("os", "system")
    return edit


def keras_non_modeling_function(marker, tmp_path):
    """An allowed module but not a modeling function: keras.utils.get_file as an activation."""
    def edit(config):
        dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
        dense["config"]["activation"] = function("keras.utils", "get_file")
    return edit


def marshalled_bytecode(marker, tmp_path):
    """Serialized Python bytecode outside a Lambda layer: as a Dense layer's activation."""
    code = base64.b64encode(marshal.dumps(compile(create(marker), "<payload>", "exec"))).decode()

    def edit(config):
        dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
        dense["config"]["activation"] = {"class_name": "__lambda__",
                                         "config": {"code": code, "defaults": None, "closure": None}}
    return edit


PAYLOADS = {
    "cve-2025-1550-os-system": (cve_2025_1550_os_system, "Lambda layer"),
    "cve-2025-1550-builtins-exec": (cve_2025_1550_builtins_exec, "Lambda layer"),
    "cve-2025-9906-safe-mode-off": (cve_2025_9906_safe_mode_off, "Lambda layer"),
    "cve-2025-8747-get-file": (cve_2025_8747_get_file, "Lambda layer"),
    "cve-2025-12058-vocabulary-file": (cve_2025_12058_vocabulary_file, "vocabulary is read from a path"),
    "cve-2026-1462-tfsm-layer": (cve_2026_1462_tfsm_layer, "TFSMLayer layer"),
    "arbitrary-module-activation": (arbitrary_module_activation, "Python module 'os'"),
    "keras-non-modeling-function": (keras_non_modeling_function, "keras.utils.get_file, which is not a modeling"),
    "marshalled-bytecode": (marshalled_bytecode, "serialized Python bytecode"),
}


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_crafted_config_json_is_refused_before_keras(payload, store, s3, deployment, card, clean_archive, marker,
                                                     keras_loads, tmp_path, unique_prefix):
    make, reason = PAYLOADS[payload]
    body = edited(clean_archive, make(marker, tmp_path))
    publish(s3, deployment, payload, unique_prefix, body, card)

    with pytest.raises(UnsafeModelError, match=re.escape(reason)) as info:
        store.get(payload, unique_prefix)

    assert "could not be loaded safely" in info.value.message and info.value.code == "unsafe_model"
    assert_refused_before_keras(info, keras_loads, marker, tmp_path / "planted" / "datasets" / "payload.py")

    # Second line of defence: the pinned Keras refuses the same file with safe_mode=True on its own.
    path = tmp_path / f"{payload}.keras"
    path.write_bytes(body)
    with pytest.raises(Exception):  # noqa: B017 (Keras raises ValueError or TypeError)
        keras.saving.load_model(path, compile=False, safe_mode=True)
    assert not marker.exists()
    assert not (tmp_path / "planted" / "datasets").exists()


def test_the_clean_archive_the_payloads_start_from_loads(store, s3, deployment, card, clean_archive, keras_loads,
                                                         unique_prefix):
    """The refusals above come from the payloads: the untouched archive (rewritten the same way) loads."""
    publish(s3, deployment, "clean-base", unique_prefix, edited(clean_archive, lambda config: None), card)
    loaded = store.get("clean-base", unique_prefix)
    assert [layer.name for layer in loaded.model.layers] == ["image", "pool", "logits"]
    assert len(keras_loads) == 1


# --------------------------------------------------------------------------- (c) a real Lambda layer
def test_a_lambda_layer_with_python_code_is_refused(store, s3, deployment, card, marker, keras_loads, tmp_path,
                                                    unique_prefix):
    path = tmp_path / "lambda.keras"
    tiny_model(create(marker)).save(path)
    marker.unlink()
    publish(s3, deployment, "python-lambda", unique_prefix, path.read_bytes(), card)

    with pytest.raises(UnsafeModelError, match="could not be loaded safely.*Lambda layer") as info:
        store.get("python-lambda", unique_prefix)

    assert_refused_before_keras(info, keras_loads, marker)
    # Keras' safe_mode refuses it as well.
    with pytest.raises(ValueError, match="Lambda"):
        keras.saving.load_model(path, compile=False, safe_mode=True)
    assert not marker.exists()


# --------------------------------------------------------------------------- no retry, the keras pin
def test_an_unsafe_model_gets_a_final_error_record_through_the_queue_path(s3, deployment, card, clean_archive, marker,
                                                                          samples, tmp_path, unique_prefix,
                                                                          lambda_context):
    from explain_core.session import ExplanationSession
    from explain_core.sqs_adapter import SqsAdapter

    images, _, _ = samples
    name = "unsafe-queue"
    publish(s3, deployment, name, unique_prefix, edited(clean_archive, cve_2025_1550_os_system(marker, tmp_path)),
            card)
    key = f"incoming/gradient/{name}/{unique_prefix}/circle.png"
    event = upload_event(key, family="gradient")
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[0]))
    settings = Settings(input_bucket=deployment.bucket("InputBucket"),
                        results_bucket=deployment.bucket("ResultsBucket"),
                        model_bucket=deployment.bucket("ModelBucket"), model_cache_dir=str(tmp_path / "cache"))

    uploads = SqsAdapter(ExplanationSession("gradient", settings, s3))
    response = uploads.handle_sqs_event(deliver(event, s3), lambda_context)

    assert response == {"batchItemFailures": []}  # not retried, never dead-lettered
    record = read_json(s3, deployment.bucket("ResultsBucket"), f"errors/{key.removeprefix('incoming/')}.json")
    assert record["retrying"] is False and record["error"]["code"] == "unsafe_model", record
    assert not marker.exists()


def test_keras_is_pinned_to_the_installed_release_with_the_safe_mode_fixes():
    requirements = (REPO / "layers" / "requirements-ml.txt").read_text()
    (pinned,) = re.findall(r"^keras==(\S+)$", requirements, flags=re.MULTILINE)
    assert importlib.metadata.version("keras") == pinned
    major, minor, patch = (int(part) for part in pinned.split("."))
    assert (major, minor, patch) >= (3, 14, 0)  # CVE-2025-1550, -8747, -9905, -9906, -12058, CVE-2026-0897, -1462
    for cve in ("CVE-2025-1550", "CVE-2025-9905", "CVE-2025-9906", "CVE-2025-8747", "CVE-2026-1462"):
        assert cve in requirements
