"""SageMaker training artifacts (``model.tar.gz``) against the emulator: explained like the ``.keras`` model,
unpacked once, and every unsafe archive or graph refused with a typed error that leaves nothing outside the
model cache (tests/unit/test_model_archive.py covers each archive trick)."""

import io
import json
import os
import tarfile
import uuid
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from devtools import demo_model
from devtools.local.events import deliver
from explain_core.errors import InvalidModelError, UnsafeModelError, UnsupportedModelError
from explain_core.model_archive import UNPACKED_MARKER
from explain_core.model_store import ModelStore
from explain_core.settings import Settings
from tests.conftest import clear_outputs, event_keys, load_event, png_bytes, read_json, upload_event

METHODS = ["Saliency", "IntegratedGradients", "SmoothGrad", "XRAI", "GradCAM"]


@pytest.fixture
def store(deployment, s3, tmp_path):
    return ModelStore(s3, settings_for(deployment, tmp_path))


def settings_for(deployment, tmp_path) -> Settings:
    return Settings(input_bucket=deployment.bucket("InputBucket"), results_bucket=deployment.bucket("ResultsBucket"),
                    model_bucket=deployment.bucket("ModelBucket"), model_cache_dir=str(tmp_path / "cache"))


@pytest.fixture
def marker():
    """A path a payload would create; removed afterwards whatever happens."""
    path = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    yield path
    path.unlink(missing_ok=True)


def sagemaker_card(**changes) -> dict:
    return {**demo_model.sagemaker_card(), **changes}


def publish(s3, deployment, name: str, version: str, archive: bytes, card: dict) -> None:
    bucket = deployment.bucket("ModelBucket")
    s3.put_object(Bucket=bucket, Key=f"models/{name}/{version}/model.tar.gz", Body=archive)
    s3.put_object(Bucket=bucket, Key=f"models/{name}/{version}/card.json",
                  Body=json.dumps({**card, "name": name, "version": version}).encode())


def tar_gz(folders: dict[str, Path], files: dict[str, bytes] | None = None) -> bytes:
    """A model.tar.gz holding each folder under its archive name, and the files."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for arcname, folder in folders.items():
            archive.add(folder, arcname=arcname)
        for arcname, data in (files or {}).items():
            info = tarfile.TarInfo(arcname)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def save_serving(folder: Path, keras_model, body) -> Path:
    """A SavedModel of ``keras_model`` whose serving_default signature returns ``body(model, image)`` (a dict)."""

    class Serving(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec((None, 64, 64, 3), tf.float32, name="image")])
        def serve(self, image):
            return body(self.model, image)

    module = Serving(keras_model)
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    return folder


@pytest.fixture(scope="module")
def keras_model(demo_model_dir):
    return keras.saving.load_model(demo_model_dir / "model.keras", compile=False, safe_mode=True)


@pytest.fixture(scope="module")
def saved_model(keras_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export") / "1"
    keras_model.export(folder, format="tf_saved_model", verbose=False)
    return folder


# --------------------------------------------------------------------------- explained like model.keras
def test_an_artifact_is_explained_as_the_keras_model_is(invoke, s3, deployment, samples):
    """The demo model published both ways: same predictions and, to float tolerance, the same attributions;
    Grad-CAM, which reads a layer a SavedModel hides, is refused on the artifact with unsupported_model."""
    images, labels, _ = samples
    event = load_event("gradient-sagemaker-upload.json")
    (key,) = event_keys(event)
    keras_key = key.replace("/shapes-sagemaker/", "/shapes/")
    clear_outputs(s3, deployment, "gradient")
    metadata = {"methods": ",".join(METHODS), "params": json.dumps({"SmoothGrad": {"noise": 0.0, "nb_samples": 4}})}
    pixels = images[list(labels).index(0)]
    for uploaded in (key, keras_key):
        s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=uploaded, Body=png_bytes(pixels), Metadata=metadata)

    assert invoke("gradient", event) == {"batchItemFailures": []}
    assert invoke("gradient", upload_event(keras_key, family="gradient")) == {"batchItemFailures": []}

    results = deployment.bucket("ResultsBucket")
    artifact, reference = (read_json(s3, results, f"results/{k.removeprefix('incoming/')}/manifest.json")
                           for k in (key, keras_key))
    assert artifact["model"]["name"] == "shapes-sagemaker" and reference["model"]["name"] == "shapes"
    assert [p["class_index"] for p in artifact["predictions"]] == [p["class_index"] for p in reference["predictions"]]
    np.testing.assert_allclose([p["score"] for p in artifact["predictions"]],
                               [p["score"] for p in reference["predictions"]], rtol=1e-5, atol=1e-6)
    assert artifact["predictions"][0]["class_index"] == 0

    def method(manifest, name):
        return next(m for m in manifest["methods"] if m["name"] == name)

    def array(output):
        return np.load(io.BytesIO(s3.get_object(Bucket=results, Key=output["attributions"])["Body"].read()))

    for name in ("Saliency", "IntegratedGradients", "SmoothGrad", "XRAI"):
        ours, theirs = method(artifact, name), method(reference, name)
        assert ours["status"] == theirs["status"] == "succeeded", (ours, theirs)
        a, b = array(ours["outputs"][0]), array(theirs["outputs"][0])
        assert a.shape == b.shape and np.isfinite(a).all() and np.abs(b).max() > 0
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * np.abs(b).max(), err_msg=name)
    masks = [np.asarray(Image.open(io.BytesIO(s3.get_object(Bucket=results, Key=method(m, "XRAI")["outputs"][0][
        "region_mask"])["Body"].read()))) for m in (artifact, reference)]
    assert masks[0].shape == (64, 64) and masks[0].any() and (masks[0] == masks[1]).all()

    refused = method(artifact, "GradCAM")
    assert refused["status"] == "failed" and refused["error"]["code"] == "unsupported_model"
    assert "SavedModel" in refused["error"]["message"] and ".keras" in refused["error"]["message"]
    assert method(reference, "GradCAM")["status"] == "succeeded"


def test_the_artifact_is_unpacked_once_into_the_model_cache(deployment, s3, tmp_path, published_model):
    first = ModelStore(s3, settings_for(deployment, tmp_path)).get(demo_model.SAGEMAKER_NAME, demo_model.VERSION)
    assert first.source == "s3"
    (folder,) = (tmp_path / "cache" / demo_model.SAGEMAKER_NAME / demo_model.VERSION).iterdir()  # <etag>/
    assert sorted(os.listdir(folder)) == ["model.tar.gz", "unpacked"]
    marker = folder / "unpacked" / UNPACKED_MARKER
    unpacked_at = marker.stat().st_mtime_ns
    again = ModelStore(s3, settings_for(deployment, tmp_path)).get(demo_model.SAGEMAKER_NAME, demo_model.VERSION)
    assert again.source == "tmp" and marker.stat().st_mtime_ns == unpacked_at
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(again.model(x).numpy(), first.model(x).numpy(), rtol=1e-6)


@pytest.mark.parametrize("layout", ["model/1", "1"])
def test_savedmodel_layouts(layout, store, s3, deployment, saved_model, keras_model, unique_prefix):
    publish(s3, deployment, "layout", unique_prefix, tar_gz({layout: saved_model}), sagemaker_card())
    loaded = store.get("layout", unique_prefix)
    x = np.random.default_rng(1).normal(size=(3, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.model(x).numpy(), keras_model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_the_highest_numbered_version_is_loaded(store, s3, deployment, saved_model, tmp_path, unique_prefix):
    zero = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(4, kernel_initializer="zeros", bias_initializer="zeros")])
    zero.export(tmp_path / "old", format="tf_saved_model", verbose=False)
    publish(s3, deployment, "versions", unique_prefix, tar_gz({"1": tmp_path / "old", "2": saved_model}),
            sagemaker_card())
    x = np.random.default_rng(2).normal(size=(1, 64, 64, 3)).astype(np.float32)
    assert np.abs(store.get("versions", unique_prefix).model(x).numpy()).max() > 0  # 2/, not the zero model in 1/


def test_a_keras_file_inside_keeps_every_method(store, s3, deployment, demo_model_dir, saved_model, unique_prefix):
    keras_bytes = (demo_model_dir / "model.keras").read_bytes()
    card = sagemaker_card(cam_layer="last_conv", artifact=None)
    publish(s3, deployment, "inner-keras", unique_prefix, tar_gz({}, {"model/model.keras": keras_bytes}), card)
    loaded = store.get("inner-keras", unique_prefix)
    assert loaded.model.get_layer("last_conv")  # a Keras model: Grad-CAM's layer is there

    # A SavedModel and a .keras file: ambiguous until the card names one.
    both = tar_gz({"1": saved_model}, {"model.keras": keras_bytes})
    publish(s3, deployment, "both", unique_prefix, both, sagemaker_card())
    with pytest.raises(InvalidModelError, match="one .keras file or one SavedModel.*artifact.path"):
        store.get("both", unique_prefix)
    publish(s3, deployment, "both-named", unique_prefix, both, sagemaker_card(artifact={"path": "1"}))
    assert store.get("both-named", unique_prefix).model.get_layer  # the SavedModel, wrapped
    from explain_core.frameworks.sagemaker import is_saved_model

    assert is_saved_model(store.get("both-named", unique_prefix).model)


def test_signature_outputs_are_named_by_the_card(store, s3, deployment, keras_model, tmp_path, unique_prefix):
    def two_outputs(model, image):
        logits = model(image)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    archive = tar_gz({"1": save_serving(tmp_path / "two", keras_model, two_outputs)})
    publish(s3, deployment, "two-outputs", unique_prefix, archive, sagemaker_card())
    with pytest.raises(InvalidModelError, match=r"returns \['logits', 'probabilities'\].*artifact.output"):
        store.get("two-outputs", unique_prefix)
    publish(s3, deployment, "two-named", unique_prefix, archive,
            sagemaker_card(artifact={"output": "logits", "signature": "serving_default"}))
    x = np.random.default_rng(3).normal(size=(2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(store.get("two-named", unique_prefix).model(x).numpy(), keras_model(x).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_layer_methods_refuse_a_savedmodel_by_name(store, s3, deployment, published_model):
    from explain_core.attribution import build_explainer
    from explain_core.registry import METHODS

    loaded = store.get(demo_model.SAGEMAKER_NAME, demo_model.VERSION)
    refused = []
    for spec in METHODS:
        if not spec.reads_layers or not spec.supports(loaded.card):
            continue
        with pytest.raises(UnsupportedModelError, match="SavedModel"):
            build_explainer(spec, loaded.model, loaded.card, spec.defaults, 4, loaded.background)
        refused.append(spec.name)
    assert {"GradCAM", "GradCAMPP", "FEM", "GuidedBackprop", "DeconvNet", "LRP", "DeepExplainer"} <= set(refused)
    # The insights that read a layer (feature visualization, TCAV, CRAFT, latent examples) as well.
    from explain_core.insights.base import model_layer

    with pytest.raises(UnsupportedModelError, match="layer.*SavedModel"):
        model_layer(loaded.model, loaded.card, "last_conv", "feature_visualization.layer")


# --------------------------------------------------------------------------- unsafe graphs and archives
def evil_saved_model(folder: Path, keras_model, effect) -> Path:
    """A SavedModel whose serving signature runs ``effect()`` (a file operation) before the model."""

    def evil(model, image):
        with tf.control_dependencies([effect()]):
            return {"output_0": tf.identity(model(image))}

    return save_serving(folder, keras_model, evil)


@pytest.mark.parametrize("op, effect", [
    ("WriteFile", lambda marker: tf.io.write_file(str(marker), "pwned")),
    ("ReadFile", lambda marker: tf.io.read_file("/etc/hostname")),
    ("MatchingFiles", lambda marker: tf.io.matching_files("/etc/*")),
])
def test_a_savedmodel_with_file_operations_is_refused_before_tensorflow_loads_it(
        op, effect, store, s3, deployment, keras_model, marker, tmp_path, unique_prefix, monkeypatch):
    folder = evil_saved_model(tmp_path / "evil", keras_model, lambda: effect(marker))
    assert not marker.exists()
    loads = []
    monkeypatch.setattr(tf.saved_model, "load", lambda *a, **k: loads.append(a))
    publish(s3, deployment, "evil-graph", unique_prefix, tar_gz({"1": folder}), sagemaker_card())

    with pytest.raises(UnsafeModelError, match=f"uses the operation {op}, which") as raised:
        store.get("evil-graph", unique_prefix)

    assert raised.value.code == "unsafe_model" and raised.value.details["op"] == op
    assert loads == [] and not marker.exists()


def test_an_unsafe_archive_writes_nothing_outside_the_cache_and_leaves_a_final_error_record(
        s3, deployment, samples, tmp_path, unique_prefix, lambda_context):
    from explain_core.session import ExplanationSession
    from explain_core.sqs_adapter import SqsAdapter

    images, _, _ = samples
    escape = f"escaped-{uuid.uuid4().hex}"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name in ("1/saved_model.pb", f"../../../../../../../../tmp/{escape}"):
            info = tarfile.TarInfo(name)
            info.size = 5
            archive.addfile(info, io.BytesIO(b"pwned"))
        link = tarfile.TarInfo("1/variables")
        link.type, link.linkname = tarfile.SYMTYPE, "/tmp"
        archive.addfile(link)
    name = "unsafe-archive"
    publish(s3, deployment, name, unique_prefix, out.getvalue(), sagemaker_card())
    key = f"incoming/gradient/{name}/{unique_prefix}/circle.png"
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[0]))

    uploads = SqsAdapter(ExplanationSession("gradient", settings_for(deployment, tmp_path), s3))
    response = uploads.handle_sqs_event(deliver(upload_event(key, family="gradient"), s3), lambda_context)

    assert response == {"batchItemFailures": []}  # final: not retried, never dead-lettered
    record = read_json(s3, deployment.bucket("ResultsBucket"), f"errors/{key.removeprefix('incoming/')}.json")
    assert record["retrying"] is False and record["error"]["code"] == "unsafe_model", record
    assert "'..'" in record["error"]["message"] and "nothing was unpacked" in record["error"]["message"]
    assert not Path(f"/tmp/{escape}").exists()
    (folder,) = (tmp_path / "cache" / name / unique_prefix).iterdir()
    assert os.listdir(folder) == ["model.tar.gz"]  # no unpacked or partial folder left in the cache
