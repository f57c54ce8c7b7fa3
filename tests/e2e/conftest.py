"""The container tier: images built by ``sam build``, run by ``sam local invoke`` and by Docker.

Nothing here is skipped: if the engine cannot start, the fixtures fail with the reason.
"""

import pytest

from devtools import containers, demo_model, local_aws


@pytest.fixture(scope="session")
def built_images():
    containers.ensure_engine()
    containers.ensure_base_image()
    containers.ensure_moto_image()
    containers.sam_build()
    return {function: containers.built_image(function) for function in containers.FUNCTIONS}


@pytest.fixture(scope="session")
def container_emulator(built_images):
    with containers.emulator_on_network() as emulator:
        yield emulator


@pytest.fixture(scope="session")
def container_deployment(container_emulator, demo_model_dir):
    """The template's wiring on the emulator container, with the demo model published."""
    deployment = local_aws.deploy(container_emulator.host_endpoint)
    demo_model.publish(deployment.client("s3"), deployment.bucket("ModelBucket"), demo_model_dir)
    return deployment


@pytest.fixture(scope="session")
def env_file(container_deployment, container_emulator, tmp_path_factory):
    return containers.env_vars_file(container_deployment, container_emulator, tmp_path_factory.mktemp("sam"))
