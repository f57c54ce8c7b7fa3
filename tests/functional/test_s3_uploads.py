"""The handlers fed with the events in events/ against the local emulator: real outputs in S3."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from devtools import demo_model
from explain_core.model_card import ModelCard
from explain_core.registry import REGISTRY, methods_of
from tests.conftest import clear_outputs, event_keys, load_event, png_bytes, read_json

#: Without a methods option an upload gets its model card's defaults (the demo model's card).
FAMILY_METHODS = demo_model.card()["default_methods"]


@pytest.fixture
def stage(s3, deployment):
    """Upload objects at the keys an event names, after clearing earlier outputs."""

    def _stage(family: str, objects: dict[str, bytes], metadata: dict | None = None):
        clear_outputs(s3, deployment, family)
        for key, body in objects.items():
            s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=body,
                          Metadata=(metadata or {}).get(key, {}))

    return _stage


@pytest.mark.parametrize("family,event_file,label", [
    ("gradient", "gradient-upload.json", 0),
    ("perturbation", "perturbation-upload.json", 1),
])
def test_upload_event_produces_heatmaps_arrays_and_manifest(family, event_file, label, invoke, stage, s3, deployment,
                                                            samples):
    images, labels, _ = samples
    pixels = images[list(labels).index(label)]
    event = load_event(event_file)
    (key,) = event_keys(event)
    stage(family, {key: png_bytes(pixels)})

    response = invoke(family, event)

    assert response == {"batchItemFailures": []}
    results = deployment.bucket("ResultsBucket")
    relative = key.removeprefix("incoming/")
    manifest = read_json(s3, results, f"results/{relative}/manifest.json")
    assert manifest["status"] == "succeeded"
    assert manifest["input"]["key"] == key and manifest["input"]["format"] == "PNG"
    assert (manifest["input"]["width"], manifest["input"]["height"]) == (128, 128)
    assert manifest["model"]["name"] == "shapes" and manifest["model"]["version"] == "v1"
    # The demo model recognises the held-out shape.
    assert manifest["predictions"][0]["class_index"] == label
    assert len(manifest["predictions"]) == 3
    scores = [p["score"] for p in manifest["predictions"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.5 and sum(scores) <= 1 + 1e-6
    assert [c["class_index"] for c in manifest["explained_classes"]] == [label]
    assert [m["name"] for m in manifest["methods"]] == FAMILY_METHODS[family]
    for method in manifest["methods"]:
        assert method["status"] == "succeeded" and method["passes_per_image"] >= 1
        (output,) = method["outputs"]
        heatmap = Image.open(io.BytesIO(s3.get_object(Bucket=results, Key=output["heatmap"])["Body"].read()))
        # Upscaled to the readable minimum of 224 pixels (explain_core.rendering.MIN_OVERLAY_SIDE), with the
        # default colour bar's panel on its right.
        assert heatmap.format == "PNG" and heatmap.height == 224 and 224 + 40 < heatmap.width < 224 + 120
        raw = Image.open(io.BytesIO(s3.get_object(Bucket=results, Key=output["raw_heatmap"])["Body"].read()))
        assert raw.format == "PNG" and raw.size == (64, 64)  # the model's input size
        array = np.load(io.BytesIO(s3.get_object(Bucket=results, Key=output["attributions"])["Body"].read()),
                        allow_pickle=False)
        assert list(array.shape) == output["attributions_shape"]
        assert array.shape[:2] == (64, 64) and np.isfinite(array).all() and np.abs(array).sum() > 0
    assert set(manifest["output_keys"]) == {
        k for m in manifest["methods"] for o in m["outputs"]
        for k in (o["heatmap"], o["raw_heatmap"], o["attributions"])}
    assert manifest["rendering"]["colorbar"] is True  # the default: every overlay has its colour bar
    assert {"download_s", "decode_s", "predict_s", "write_s"} <= set(manifest["timings"])
    assert manifest["versions"]["xplique"] == "2.0.2"


def test_url_encoded_keys_in_one_batch(invoke, stage, s3, deployment, samples):
    images, labels, _ = samples
    event = load_event("gradient-batch-encoded-keys.json")
    keys = event_keys(event)
    assert keys == ["incoming/gradient/shapes/v1/my photos/tri angle.png", "incoming/gradient/shapes/v1/cat+dog.png",
                    "incoming/gradient/shapes/v1/éte/forme ü.png"]
    stage("gradient", {key: png_bytes(images[i]) for i, key in enumerate(keys)},
          metadata={key: {"methods": "GradCAM"} for key in keys})

    response = invoke("gradient", event)

    assert response == {"batchItemFailures": []}
    for i, key in enumerate(keys):
        manifest = read_json(s3, deployment.bucket("ResultsBucket"),
                             f"results/{key.removeprefix('incoming/')}/manifest.json")
        assert manifest["input"]["key"] == key
        assert [m["name"] for m in manifest["methods"]] == ["GradCAM"]
        # Explained together: one batch tensor for the three uploads.
        assert manifest["timings"]["batch_images"] == 3
        assert manifest["predictions"][0]["class_index"] == labels[i]


def test_metadata_selects_methods_parameters_and_top_k(invoke, stage, s3, deployment, samples):
    images, _, _ = samples
    event = load_event("gradient-upload.json")
    (key,) = event_keys(event)
    stage("gradient", {key: png_bytes(images[0])}, metadata={key: {
        "methods": "integratedgradients,GradCAMPP",
        "params": json.dumps({"IntegratedGradients": {"steps": 8}}),
        "top-k": "2",
    }})

    assert invoke("gradient", event) == {"batchItemFailures": []}

    manifest = read_json(s3, deployment.bucket("ResultsBucket"),
                         f"results/{key.removeprefix('incoming/')}/manifest.json")
    methods = {m["name"]: m for m in manifest["methods"]}
    assert set(methods) == {"IntegratedGradients", "GradCAMPP"}
    assert methods["IntegratedGradients"]["params"] == {"steps": 8, "baseline_value": 0.0}
    assert methods["IntegratedGradients"]["passes_per_image"] == 8
    ranked = [p["class_index"] for p in manifest["predictions"][:2]]
    assert [c["class_index"] for c in manifest["explained_classes"]] == ranked
    for method in methods.values():
        assert [o["class_index"] for o in method["outputs"]] == ranked
        assert len({o["heatmap"] for o in method["outputs"]}) == 2


def test_s3_test_event_is_skipped(invoke, s3, deployment):
    clear_outputs(s3, deployment, "gradient")
    assert invoke("gradient", load_event("s3-test-event.json")) == {"batchItemFailures": []}
    listed = s3.list_objects_v2(Bucket=deployment.bucket("ResultsBucket"), Prefix="errors/gradient/")
    assert listed["KeyCount"] == 0


def test_objects_outside_the_family_prefix_are_ignored(invoke, s3, deployment):
    """The retrigger guard: another family's upload and a result object are not processed."""
    clear_outputs(s3, deployment, "gradient")
    assert invoke("gradient", load_event("gradient-outside-prefix.json")) == {"batchItemFailures": []}
    listed = s3.list_objects_v2(Bucket=deployment.bucket("ResultsBucket"))
    written = [o["Key"] for o in listed.get("Contents", [])]
    assert not [key for key in written if key.startswith(("results/gradient/", "errors/gradient/"))]


def test_duplicate_event_is_not_explained_twice(invoke, stage, s3, deployment, samples):
    images, _, _ = samples
    event = load_event("gradient-upload.json")
    (key,) = event_keys(event)
    stage("gradient", {key: png_bytes(images[1])}, metadata={key: {"methods": "Saliency"}})
    manifest_key = f"results/{key.removeprefix('incoming/')}/manifest.json"
    results = deployment.bucket("ResultsBucket")

    invoke("gradient", event)
    first = read_json(s3, results, manifest_key)
    assert invoke("gradient", event) == {"batchItemFailures": []}
    assert read_json(s3, results, manifest_key)["created_at"] == first["created_at"]

    # A new upload at the same key (new ETag) is explained again.
    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[2]),
                  Metadata={"methods": "Saliency"})
    invoke("gradient", event)
    again = read_json(s3, results, manifest_key)
    assert again["created_at"] != first["created_at"] and again["input"]["etag"] != first["input"]["etag"]


def test_error_record_is_removed_once_the_input_succeeds(invoke, stage, s3, deployment, samples):
    images, _, _ = samples
    event = load_event("gradient-upload.json")
    (key,) = event_keys(event)
    results = deployment.bucket("ResultsBucket")
    error_key = f"errors/{key.removeprefix('incoming/')}.json"
    stage("gradient", {key: b"not an image"})
    invoke("gradient", event)
    assert read_json(s3, results, error_key)["error"]["code"] == "invalid_image"

    s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[0]),
                  Metadata={"methods": "Saliency"})
    assert invoke("gradient", event) == {"batchItemFailures": []}
    assert s3.list_objects_v2(Bucket=results, Prefix=error_key)["KeyCount"] == 0


@pytest.mark.parametrize("family", ["gradient", "perturbation"])
def test_every_method_of_the_family_runs_through_the_handler(family, invoke, stage, s3, deployment, samples):
    images, labels, _ = samples
    event = load_event(f"{family}-upload.json")
    (key,) = event_keys(event)
    # Fewer samples for the slowest methods keep this test short; bounds are checked all the same.
    params = {"Rise": {"nb_samples": 256}, "HsicAttributionMethod": {"nb_design": 128},
              "SobolAttributionMethod": {"nb_design": 16}, "Lime": {"nb_samples": 128},
              "KernelShap": {"nb_samples": 128}}
    assert set(params) <= set(REGISTRY), "the reduced parameters name registry methods"
    image_methods = methods_of(family, ModelCard.model_validate(demo_model.card()))
    family_methods = {spec.name for spec in image_methods}
    stage(family, {key: png_bytes(images[0])}, metadata={key: {
        "methods": "all", "params": json.dumps({k: v for k, v in params.items() if k in family_methods})}})

    assert invoke(family, event) == {"batchItemFailures": []}

    manifest = read_json(s3, deployment.bucket("ResultsBucket"),
                         f"results/{key.removeprefix('incoming/')}/manifest.json")
    assert manifest["status"] == "succeeded"
    assert [m["name"] for m in manifest["methods"]] == [spec.name for spec in image_methods]
    for method in manifest["methods"]:
        assert method["status"] == "succeeded", method
        (output,) = method["outputs"]
        array = np.load(io.BytesIO(s3.get_object(Bucket=deployment.bucket("ResultsBucket"),
                                                 Key=output["attributions"])["Body"].read()), allow_pickle=False)
        assert np.isfinite(array).all() and np.abs(array).sum() > 0, method["name"]
