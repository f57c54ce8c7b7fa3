"""Each image under Lambda's conditions: read-only root filesystem, a tmpfs /tmp, the runtime API emulator."""

import pytest

from devtools import containers
from devtools.local import FAMILY_FUNCTIONS
from devtools.local.events import deliver
from tests.conftest import clear_outputs, event_keys, load_event, png_bytes, read_json
from tests.e2e.conftest import upload_metadata

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("family,function", sorted(FAMILY_FUNCTIONS.items()))
def test_function_works_with_a_read_only_root(function, family, container_deployment, container_emulator,
                                               samples):
    s3 = container_deployment.client("s3")
    images, labels, _ = samples
    event = load_event(f"{family}-upload.json")
    (key,) = event_keys(event)
    clear_outputs(s3, container_deployment, family)
    # An image for every family (shap: GradientExplainer on the image demo model).
    s3.put_object(Bucket=container_deployment.bucket("InputBucket"), Key=key, Body=png_bytes(images[1]),
                  Metadata=upload_metadata(family, key))
    environment = container_deployment.functions[function].environment
    event = deliver(event, s3)  # the notification of this upload: its ETag

    with containers.read_only_function(function, environment, container_emulator) as running:
        cold = containers.invoke_url(running.url, event)
        warm = containers.invoke_url(running.url, event)  # duplicate event: recognised, not recomputed
        logs = running.logs()

    assert cold == {"batchItemFailures": []}, logs[-3000:]
    assert warm == {"batchItemFailures": []}, logs[-3000:]
    assert "Read-only file system" not in logs
    manifest = read_json(s3, container_deployment.bucket("ResultsBucket"),
                         f"results/{key.removeprefix('incoming/')}/manifest.json")
    assert manifest["status"] == "succeeded"
    assert manifest["predictions"][0]["class_index"] == labels[1]
    # The model came from S3 into /tmp (the only writable place) on the cold start.
    assert manifest["model"]["loaded_from"] == "s3"
