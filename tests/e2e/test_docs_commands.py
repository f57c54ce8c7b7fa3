"""The docs' e2e shell blocks, run as a user pastes them (devtools.docs; markers: docs/testing.md).

``sam-local-invoke``: the walkthrough of docs/containers.md, whole (``make images`` included: the
tier has built the images, so it only checks them), on a docker network, emulator container and
port of its own, which are removed afterwards whatever happens.

``local-api``: the calls of docs/api.md, against this module's ``sam local start-api`` (the tier's
images and emulator container), with ``API`` and ``KEY`` set as ``make local-api`` prints them and
the family queue's jobs run with ``sam local invoke`` as ``make local-api``'s poller runs them.
"""

import shutil
import threading
import uuid

import pytest

from devtools import containers, docs
from devtools.local import aws
from tests.functional.test_queue_path import empty_queue

pytestmark = pytest.mark.e2e

#: The function that runs the jobs of docs/api.md (its job block asks for a perturbation method).
JOB_FUNCTION, JOB_QUEUE = "PerturbationFunction", "PerturbationQueue"


@pytest.fixture(scope="module", autouse=True)
def curl():
    """The blocks call the API with curl: Debian's package, installed if missing as the tier installs docker.io."""
    if shutil.which("curl") is None:
        install = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl"
        containers.run(["bash", "-c", install], timeout=900)


def test_every_e2e_block_has_a_runner():
    setups = {block.setup for block in docs.blocks_of("e2e")}
    assert setups <= docs.SETUPS["e2e"] == {"sam-local-invoke", "local-api"}
    for setup in docs.SETUPS["e2e"]:
        assert docs.blocks_of("e2e", setup), f"no block needs {setup} any more: drop its runner"


def test_sam_local_invoke_walkthrough(built_images):
    """Runs first in this module: its `make images` rewrites .aws-sam/ before this module's SAM API starts."""
    suffix = uuid.uuid4().hex[:8]
    env = {"NET": f"explain-docs-{suffix}", "MOTO": f"explain-docs-moto-{suffix}", "PORT": str(aws.free_port())}
    blocks = docs.blocks_of("e2e", "sam-local-invoke")
    assert len(blocks) == 3  # set up and invoke; check the answer and list the outputs; clean up
    try:
        invoked = docs.run_block(blocks[0], env, timeout=1800)
        listed = docs.run_block(blocks[1], env, timeout=120)
        docs.run_block(blocks[2], env, timeout=120)
    finally:
        containers.run(["docker", "rm", "-f", env["MOTO"]], check=False)
        containers.run(["docker", "network", "rm", env["NET"]], check=False)

    assert '"batchItemFailures": []' in invoked.stdout, invoked.stdout[-3000:]
    keys = listed.stdout.split()
    prefix = "results/gradient/shapes/v1/samples/circle.png/"
    assert prefix + "manifest.json" in keys, listed.stdout  # the names docs/containers.md promises
    outputs = [key for key in keys if key.startswith(prefix + "attempts/")]
    assert any(key.endswith("/GradCAM/0-circle.png") for key in outputs), outputs
    assert any(key.endswith("/GradCAM/0-circle.npy") for key in outputs), outputs
    assert not [key for key in keys if key.startswith("errors/")], keys


@pytest.fixture(scope="module")
def docs_key(container_deployment):
    return container_deployment.register_api_key("docs-reader")


@pytest.fixture(scope="module")
def job_runner(local_api, container_deployment, container_emulator, env_file):
    """The perturbation queue's messages run by ``sam local invoke``, as ``make local-api``'s poller does."""
    empty_queue(container_deployment.client("sqs"), container_deployment.queue_urls[JOB_QUEUE])  # other tests'
    stopping, errors = threading.Event(), []

    def poll():
        while not stopping.is_set():
            try:
                containers.invoke_queued(JOB_FUNCTION, container_deployment, container_emulator, env_file,
                                         wait_seconds=1)
            except Exception as exc:  # reported by the test that waits for the job
                errors.append(exc)
                stopping.wait(2)

    thread = threading.Thread(target=poll, name="docs-job-runner", daemon=True)
    thread.start()
    yield errors
    stopping.set()
    thread.join(timeout=600)


@pytest.mark.parametrize("block", docs.blocks_of("e2e", "local-api"), ids=lambda block: block.where)
def test_local_api_block(block, local_api, docs_key, job_runner):
    completed = docs.run_block(block, {"API": local_api.url, "KEY": docs_key}, timeout=900, check=False)
    assert completed.returncode == 0 and (block.expected_output is None
                                          or completed.stdout == block.expected_output), (
        f"{block.where} failed ({completed.returncode}):\n{block.code}\n--- stdout\n{completed.stdout[-4000:]}\n"
        f"--- stderr\n{completed.stderr[-4000:]}\n--- job runner errors: {job_runner}\n"
        f"--- sam local start-api\n{local_api.logs(tail=4000)}")
