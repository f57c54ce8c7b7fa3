"""The container tier: images built by ``sam build``, run by ``sam local invoke`` and by Docker.

Nothing here is skipped: if the engine cannot start, the fixtures fail with the reason.
"""

import json
from pathlib import PurePosixPath

import pytest

from devtools import containers, demo_model
from devtools.local import FAMILY_FUNCTIONS, aws
from devtools.local.aws import INSIGHTS_FUNCTION

#: Cheap methods per family and per model keep the tier fast; the functional tests cover every method.
IMAGE_METHODS = {
    "gradient": {"methods": "GradCAM,Saliency"},
    "perturbation": {"methods": "Occlusion"},
    "shap": {"methods": "GradientExplainer", "params": {"GradientExplainer": {"nb_samples": 16}}},
}
#: The demo model from a SageMaker model.tar.gz (a SavedModel): a gradient and a region method through it.
SAGEMAKER_METHODS = {"methods": "Saliency,XRAI", "params": {"XRAI": {"steps": 8}}}
TABULAR_METHODS = {  # shap family, by model name (devtools.tabular_demo)
    "breast-cancer-xgb": {"methods": "TreeExplainer"},
    "breast-cancer-mlp": {"methods": "KernelExplainer", "params": {"KernelExplainer": {"nb_samples": 64}}},
}
TABLE_SUFFIXES = (".csv", ".jsonl")
#: The job events/insights-upload.json names (incoming/insights/shapes/v1/demo-insights.json): cheap feature
#: visualizations of the image demo model (8 steps at 32 px), two objectives; the functional tests cover the kinds.
INSIGHTS_SPEC = {
    "title": "Shapes CNN (e2e)",
    "seed": 7,
    "feature_visualization": {
        "objectives": [{"class": "circle"}, {"layer": "last_conv", "type": "channel", "indexes": [0, 1]}],
        "steps": 8, "image_size": 32,
    },
}


def is_table(key: str) -> bool:
    return PurePosixPath(key).suffix.lower() in TABLE_SUFFIXES


def upload_metadata(family: str, key: str) -> dict:
    """S3 user metadata (``x-amz-meta-*``) asking for the cheap methods for this upload."""
    model = key.split("/")[2] if key.count("/") >= 3 else ""
    choice = (TABULAR_METHODS[model] if is_table(key) and model in TABULAR_METHODS
              else SAGEMAKER_METHODS if model == demo_model.SAGEMAKER_NAME else IMAGE_METHODS[family])
    return {name: value if isinstance(value, str) else json.dumps(value) for name, value in choice.items()}


@pytest.fixture(scope="session")
def built_images():
    containers.ensure_engine()
    containers.ensure_base_image()
    containers.ensure_moto_image()
    containers.sam_build()
    return {function: containers.built_image(function) for function in [*FAMILY_FUNCTIONS.values(), INSIGHTS_FUNCTION]}


@pytest.fixture(scope="session")
def container_emulator(built_images):
    with containers.emulator_on_network() as emulator:
        yield emulator


@pytest.fixture(scope="session")
def container_deployment(container_emulator, demo_model_dir):
    """The template's wiring on the emulator container, with the image demo model published."""
    deployment = aws.deploy(container_emulator.host_endpoint)
    demo_model.publish(deployment.client("s3"), deployment.bucket("ModelBucket"), demo_model_dir)
    demo_model.publish_sagemaker(deployment.client("s3"), deployment.bucket("ModelBucket"))
    return deployment


@pytest.fixture(scope="session")
def tabular_models(container_deployment):
    """The tabular demo models (shap family) published next to the image one; returns the module.

    Imported here rather than at the top so that the image families' tests do not depend on it.
    """
    from devtools import tabular_demo

    s3, bucket = container_deployment.client("s3"), container_deployment.bucket("ModelBucket")
    for name, directory in tabular_demo.ensure_tabular_models().items():
        tabular_demo.publish(s3, bucket, directory, name, tabular_demo.VERSION)
    return tabular_demo


@pytest.fixture(scope="session")
def env_file(container_deployment, container_emulator, tmp_path_factory):
    return containers.env_vars_file(container_deployment, container_emulator, tmp_path_factory.mktemp("sam"))


#: Clients registered in the emulator's ApiClientsTable for the REST API tests (tests/e2e/test_api.py).
API_CLIENT, OTHER_API_CLIENT = "e2e-client", "e2e-other-client"


@pytest.fixture(scope="session")
def api_keys(container_deployment, container_emulator):
    """Client id -> API key, registered in the emulator's clients table (only the keys' hashes are stored)."""
    return {client: container_deployment.register_api_key(client) for client in (API_CLIENT, OTHER_API_CLIENT)}


@pytest.fixture(scope="module")
def local_api(container_deployment, container_emulator, env_file, tabular_models, tmp_path_factory):
    """``sam local start-api`` on a loopback port, its functions on the emulator's network, every demo model
    published; stopped (and its function containers removed) after the module."""
    log_path = tmp_path_factory.mktemp("local-api") / "sam-local-start-api.log"
    with containers.local_api(container_deployment, container_emulator, env_file, log_path=log_path) as api:
        yield api
