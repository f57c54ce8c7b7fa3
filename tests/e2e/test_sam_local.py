"""``sam build`` and ``sam local invoke`` of every function with every event file, outputs checked in S3."""

import json

import pytest

from devtools import containers
from tests.conftest import EVENTS, clear_outputs, event_keys, load_event, png_bytes, read_json

pytestmark = pytest.mark.e2e

SAMPLE_LABEL = {"gradient-upload.json": 0, "perturbation-upload.json": 1}


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
    layers = {f: containers.run(["docker", "image", "inspect", tag, "--format", "{{json .RootFS.Layers}}"]).stdout
              for f, tag in built_images.items()}
    gradient, perturbation = (json.loads(v) for v in layers.values())
    shared = [a for a, b in zip(gradient, perturbation, strict=False) if a == b]
    # Base image and the shared requirements layers are identical; only the function's code differs.
    assert len(shared) >= len(gradient) - 3


@pytest.mark.parametrize("function,family", sorted(containers.FUNCTIONS.items()))
def test_sam_local_invoke_every_event(function, family, container_deployment, env_file, container_emulator,
                                      samples, tmp_path):
    s3 = container_deployment.client("s3")
    images, labels, _ = samples
    files = event_files(family)
    assert files, f"no event file for {family}"
    for name in files:
        event = load_event(name)
        clear_outputs(s3, container_deployment, family)
        keys = [key for key in event_keys(event) if key.startswith(f"incoming/{family}/")]
        for i, key in enumerate(keys):
            # Cheap methods keep the tier fast; the functional tests cover every method.
            s3.put_object(Bucket=container_deployment.bucket("InputBucket"), Key=key,
                          Body=png_bytes(images[i % len(images)]),
                          Metadata={"methods": "GradCAM,Saliency" if family == "gradient" else "Occlusion"})

        invocation = containers.sam_local_invoke(function, EVENTS / name, container_emulator, env_file)

        failures = [r["itemIdentifier"] for r in invocation.response.get("batchItemFailures", [])]
        poison = [r["messageId"] for r in event["Records"] if not r["body"].startswith("{")]
        assert invocation.response != {}, invocation.output[-3000:]
        assert failures == poison, invocation.output[-3000:]
        for i, key in enumerate(keys):
            if not key.startswith(f"incoming/{family}/shapes/v1/"):
                continue  # unknown model or no version: error records, checked by the functional tests
            manifest = read_json(s3, container_deployment.bucket("ResultsBucket"),
                                 f"results/{key.removeprefix('incoming/')}/manifest.json")
            assert manifest["status"] == "succeeded"
            assert manifest["predictions"][0]["class_index"] == labels[i % len(labels)]
            for output in manifest["output_keys"]:
                head = s3.head_object(Bucket=container_deployment.bucket("ResultsBucket"), Key=output)
                assert head["ContentLength"] > 0
