"""The docs' functional shell blocks, run as a user pastes them (devtools.docs; markers: docs/testing.md).

``demo-upload``: the README's uploads to a running ``make demo``. The emulator here is the
functional tier's own, reached as the demo's is (``LOCAL_AWS_PORT``); the uploads are then
explained by the real handlers, and their results must land where the README says they do.
"""

import json
import re
from urllib.parse import urlparse

import pytest

from devtools import docs
from tests.conftest import read_json, upload_event

#: What the README's "Where the results land" promises for an output key.
OUTPUT_KEY = re.compile(r"^results/(?P<relative>.+)/attempts/[0-9TZ]+-[0-9a-f]{8}/(?P<method>[A-Za-z]+)/"
                        r"(?:values\.csv|(?:(?P<document>\d{3})-)?(?P<index>\d+)-(?P<label>[A-Za-z0-9._-]+?)"
                        r"\.(?P<ext>png|npy|heatmap\.png|values\.csv|summary\.json|bar\.png|beeswarm\.png|"
                        r"waterfall-line-\d+\.png|tokens\.json|html))$")
UPLOADED = re.compile(r"^uploaded s3://(?P<bucket>[^/]+)/(?P<key>\S+?);", re.M)


def test_every_functional_block_has_a_runner():
    setups = {block.setup for block in docs.blocks_of("functional")}
    assert setups <= docs.SETUPS["functional"] == {"demo-upload"}
    assert docs.blocks_of("functional", "demo-upload"), "the README's upload blocks are gone?"


@pytest.mark.parametrize("block", docs.blocks_of("functional", "demo-upload"), ids=lambda block: block.where)
def test_demo_upload_block(block, emulator, deployment, s3, invoke, published_model, tabular_models,
                           text_model):
    completed = docs.run_block(block, {"LOCAL_AWS_PORT": str(urlparse(emulator).port)}, timeout=300)

    uploads = UPLOADED.findall(completed.stdout)
    assert uploads, completed.stdout
    for bucket, key in uploads:
        assert bucket == deployment.bucket("InputBucket")
        family = key.split("/")[1]
        head = s3.head_object(Bucket=bucket, Key=key)
        response = invoke(family, upload_event(key, family=family))  # as the demo's event source would
        assert response == {"batchItemFailures": []}, response

        relative = key.removeprefix("incoming/")
        manifest = read_json(s3, deployment.bucket("ResultsBucket"), f"results/{relative}/manifest.json")
        assert manifest["status"] == "succeeded", manifest
        assert manifest["input"]["etag"].strip('"') == head["ETag"].strip('"')
        requested = head["Metadata"].get("methods")
        if requested:  # the block's --methods
            assert [m["name"] for m in manifest["methods"]] == requested.split(",")
        explained = {(c["class_index"], c["class_name"]) for c in manifest["explained_classes"]}
        for output_key in manifest["output_keys"]:
            match = OUTPUT_KEY.match(output_key)
            assert match, f"{output_key} is not named as the README says"
            assert match["relative"] == relative
            if match["index"] is not None:  # a text method's values.csv covers every document and class
                assert (int(match["index"]), match["label"]) in explained
        for method in manifest["methods"]:
            for output in method["outputs"]:
                if "attributions_shape" in output and family != "shap":
                    # Xplique's maps at the model's input size, one channel (README, docs/api.md).
                    size = manifest["model"]["input_size"]
                    assert output["attributions_shape"] == [*size, 1], (method["name"], output)
        if relative == "gradient/shapes/v1/circle.png":  # README: "For the image above"
            names = {key.rsplit("/", 2)[-2] + "/" + key.rsplit("/", 1)[-1] for key in manifest["output_keys"]}
            assert {"GradCAM/0-circle.png", "GradCAM/0-circle.npy", "IntegratedGradients/0-circle.png",
                    "IntegratedGradients/0-circle.npy"} <= names, names
            steps = {m["name"]: m["params"] for m in manifest["methods"]}["IntegratedGradients"]["steps"]
            assert steps == 32


def test_sam_env_file_is_the_template_wiring(deployment):
    """events/samples/env.json (docs/containers.md) holds every function's variables, as the e2e tier's."""
    assert json.loads(docs.SAM_ENV_FILE.read_text()) == docs.sam_env_vars(deployment), (
        "events/samples/env.json is stale: run `.venv/bin/python -m devtools.docs --sam-env`")
