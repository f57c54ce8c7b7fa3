"""Text uploads through every family's handler: the sentiment demo model, its sample files."""

import json

import pytest

from devtools import text_demo
from tests.conftest import clear_outputs, read_json, upload_event

pytestmark = pytest.mark.slow


def text_key(family: str, name: str) -> str:
    return f"incoming/{family}/{text_demo.MODEL}/{text_demo.VERSION}/functional/{name}"


def manifest_key(key: str) -> str:
    return f"results/{key.removeprefix('incoming/')}/manifest.json"


@pytest.mark.parametrize("family", ["gradient", "perturbation", "shap"])
def test_every_method_explains_the_sample_files(invoke, s3, deployment, family):
    clear_outputs(s3, deployment, family)
    keys = []
    for name, body in text_demo.sample_files().items():
        key = text_key(family, name)
        s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=body, Metadata={"methods": "all"})
        keys.append(key)
    response = invoke(family, upload_event(*keys, family=family))
    assert response == {"batchItemFailures": []}
    for key in keys:
        manifest = read_json(s3, deployment.bucket("ResultsBucket"), manifest_key(key))
        print(json.dumps(manifest)[:3000])
        assert manifest["status"] == "succeeded", manifest
