"""``sam build`` and ``sam local invoke`` of every function with every event file, outputs checked in S3."""

import json
from itertools import combinations

import pytest

from devtools import containers, text_demo
from devtools.local import FAMILY_FUNCTIONS
from devtools.local.events import deliver
from tests.conftest import EVENTS, clear_outputs, event_keys, load_event, png_bytes, read_json
from tests.e2e.conftest import TABULAR_METHODS, is_table, upload_metadata

pytestmark = pytest.mark.e2e

#: Layers after the shared ones that differ per function: requirements file, their install, app.py.
FUNCTION_LAYERS = 3
#: Cheap methods per family for the text demo model's uploads.
TEXT_METHODS = {"gradient": "Saliency,IntegratedGradients", "perturbation": "WordOcclusion",
                "shap": "TextPartitionExplainer"}


@pytest.fixture(scope="session")
def container_text_model(container_deployment):
    """The sentiment demo model (devtools.text_demo) published on the emulator container."""
    text_demo.publish(container_deployment.client("s3"), container_deployment.bucket("ModelBucket"))
    return text_demo


def is_text(key: str) -> bool:
    """An upload for the text demo model (its inputs are .txt, .jsonl and .csv files)."""
    return f"/{text_demo.MODEL}/{text_demo.VERSION}/" in key


def event_files(family: str) -> list[str]:
    """Every event file whose records target this family's queue."""
    return sorted(path.name for path in EVENTS.glob("*.json")
                  if f"explain-{family}-queue-local" in path.read_text())


def test_images_are_lean_enough_to_deploy(built_images):
    for function, tag in built_images.items():
        size = containers.image_size(tag)
        # Lambda's limit is 10 GB uncompressed; the naive install of this stack is 7.7 GB.
        assert size < 4e9, f"{function} image is {size / 1e9:.2f} GB"


def test_functions_share_the_heavy_layers(built_images):
    layers = {f: json.loads(containers.run(["docker", "image", "inspect", tag, "--format",
                                            "{{json .RootFS.Layers}}"]).stdout)
              for f, tag in built_images.items()}
    assert len(layers) == len(FAMILY_FUNCTIONS) >= 3
    for (first, a), (second, b) in combinations(sorted(layers.items()), 2):
        shared = 0
        while shared < min(len(a), len(b)) and a[shared] == b[shared]:
            shared += 1
        # Base image, shared requirements layer and shared code are identical, in the same order;
        # only the function's own requirements and handler differ (the shap image adds SHAP and
        # XGBoost in its requirements layer).
        assert shared >= max(len(a), len(b)) - FUNCTION_LAYERS, (first, second, shared, len(a), len(b))


@pytest.mark.parametrize("family,function", sorted(FAMILY_FUNCTIONS.items()))
def test_sam_local_invoke_every_event(function, family, container_deployment, env_file, container_emulator,
                                      samples, request, tmp_path):
    s3 = container_deployment.client("s3")
    images, labels, _ = samples
    files = event_files(family)
    assert files, f"no event file for {family}"
    for name in files:
        event = load_event(name)
        clear_outputs(s3, container_deployment, family)
        keys = [key for key in event_keys(event) if key.startswith(f"incoming/{family}/")]
        for i, key in enumerate(keys):
            if is_text(key):
                request.getfixturevalue("container_text_model")
                name = key.rsplit("/", 1)[1]
                files = text_demo.sample_files()
                s3.put_object(Bucket=container_deployment.bucket("InputBucket"), Key=key,
                              Body=files.get(name, files["review.txt"]), Metadata={"methods": TEXT_METHODS[family]})
                continue
            if is_table(key):
                # Only the shap family's tests need the tabular demo models.
                tabular_demo = request.getfixturevalue("tabular_models")
                rows, _ = tabular_demo.sample_rows(4)
                body = (tabular_demo.sample_csv(rows) if key.lower().endswith(".csv")
                        else tabular_demo.sample_jsonl(rows))
            else:
                body = png_bytes(images[i % len(images)])
            s3.put_object(Bucket=container_deployment.bucket("InputBucket"), Key=key, Body=body,
                          Metadata=upload_metadata(family, key))

        delivered = tmp_path / name  # the notification of these uploads: their ETags
        delivered.write_text(json.dumps(deliver(event, s3)))
        invocation = containers.sam_local_invoke(function, delivered, container_emulator, env_file)

        failures = [r["itemIdentifier"] for r in invocation.response.get("batchItemFailures", [])]
        poison = [r["messageId"] for r in event["Records"] if not r["body"].startswith("{")]
        assert invocation.response != {}, invocation.output[-3000:]
        assert failures == poison, invocation.output[-3000:]
        for i, key in enumerate(keys):
            if is_text(key):
                check_text_manifest(s3, container_deployment, key, family)
                continue
            image_model = key.startswith(f"incoming/{family}/shapes/v1/") and not is_table(key)
            tabular_model = is_table(key) and any(key.startswith(f"incoming/{family}/{model}/v1/")
                                                  for model in TABULAR_METHODS)
            if not (image_model or tabular_model):
                continue  # unknown model or no version: error records, checked by the functional tests
            manifest = read_json(s3, container_deployment.bucket("ResultsBucket"),
                                 f"results/{key.removeprefix('incoming/')}/manifest.json")
            assert manifest["status"] == "succeeded", (key, manifest)
            if image_model:
                assert manifest["predictions"][0]["class_index"] == labels[i % len(labels)]
            assert manifest["output_keys"], key
            for output in manifest["output_keys"]:
                head = s3.head_object(Bucket=container_deployment.bucket("ResultsBucket"), Key=output)
                assert head["ContentLength"] > 0


def check_text_manifest(s3, deployment, key: str, family: str) -> None:
    """A text upload's manifest: succeeded, each document predicted as the demo's truth says, its files written."""
    manifest = read_json(s3, deployment.bucket("ResultsBucket"),
                         f"results/{key.removeprefix('incoming/')}/manifest.json")
    assert manifest["status"] == "succeeded", (key, manifest)
    name = key.rsplit("/", 1)[1]
    truth = text_demo.sample_truth().get(name, text_demo.sample_truth()["review.txt"])
    assert [d["class_name"] for d in manifest["predictions"]["documents"]] == [t["label"] for t in truth], key
    assert {m["name"] for m in manifest["methods"]} == set(TEXT_METHODS[family].split(","))
    assert all(m["status"] == "succeeded" for m in manifest["methods"]), manifest["methods"]
    assert manifest["output_keys"], key
    for output in manifest["output_keys"]:
        assert s3.head_object(Bucket=deployment.bucket("ResultsBucket"), Key=output)["ContentLength"] > 0
