"""The container tier: Docker engine, Lambda base stand-in, ``sam build`` and ``sam local invoke``.

Everything runs offline: the engine is Debian's docker.io started with ``--ip-masq=false --dns
127.0.0.1`` (containers reach nothing outside this machine), the Lambda base image is a local
stand-in tagged with the public name, and the S3/SQS emulator runs as a container on a docker
network this module creates, so function containers reach it by name while the host reaches it
on a loopback port.

``python -m devtools.containers figures`` builds everything and prints the README's figures:
image sizes, cold and warm ``sam local invoke`` durations next to the in-process handler time.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devtools import local_aws

REPO = Path(__file__).resolve().parent.parent
DOCKER_DIR = REPO / "devtools" / "docker"
MOTO_IMAGE = "explain-moto:local"
MOTO_PORT_IN_NETWORK = 5000
#: The family functions (one image each per explanation family); ApiFunction and AuthorizerFunction explain nothing.
FUNCTIONS = {"GradientFunction": "gradient", "PerturbationFunction": "perturbation", "ShapFunction": "shap"}
#: One cheap method per family for the figures: each explains a PNG of the image demo model.
FIGURE_METHODS = {"gradient": "GradCAM", "perturbation": "Occlusion", "shap": "GradientExplainer"}
SAM_ENV = {"SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": local_aws.REGION, "AWS_REGION": local_aws.REGION,
           "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


def run(command: list[str], *, timeout: float = 3600, env: dict | None = None, check: bool = True,
        cwd: Path = REPO) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        command, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:4])} ... failed ({completed.returncode}):\n"
            f"{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}"
        )
    return completed


def sam_executable() -> str:
    local = Path(sys.executable).parent / "sam"
    return str(local) if local.exists() else "sam"


def ensure_engine() -> None:
    """Install and start the Docker engine if needed; raises with the reason if it cannot start."""
    run(["bash", str(DOCKER_DIR / "engine.sh")], timeout=600)


def ensure_base_image() -> None:
    run(["bash", str(DOCKER_DIR / "lambda-base.sh")], timeout=1800)


def ensure_moto_image() -> None:
    """The emulator image, with wheels built on the host (builds cannot download)."""
    if run(["docker", "image", "inspect", MOTO_IMAGE], check=False).returncode == 0:
        return
    with tempfile.TemporaryDirectory() as context:
        run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", f"{context}/wheels",
             "moto[server,s3,sqs,dynamodb]==5.2.5"], timeout=900)
        shutil.copy(DOCKER_DIR / "moto.Dockerfile", f"{context}/Dockerfile")
        run(["docker", "build", "--quiet", "-t", MOTO_IMAGE, context], timeout=900)


def sam_build() -> None:
    run([sam_executable(), "build"], env=SAM_ENV, timeout=3600)


def built_image(function: str) -> str:
    """The image tag ``sam build`` produced for a function (from .aws-sam/build/template.yaml)."""
    template = local_aws.load_template(REPO / ".aws-sam" / "build" / "template.yaml")
    return template["Resources"][function]["Properties"]["ImageUri"]


def image_size(tag: str) -> int:
    return int(run(["docker", "image", "inspect", tag, "--format", "{{.Size}}"]).stdout.strip())


@dataclass
class Emulator:
    """The S3/SQS emulator container: ``host_endpoint`` for the host, ``network_endpoint`` for containers."""

    network: str
    container: str
    host_endpoint: str
    network_endpoint: str


@contextmanager
def emulator_on_network():
    """A fresh docker network with the emulator container on it; both removed afterwards."""
    suffix = uuid.uuid4().hex[:8]
    network, container = f"explain-e2e-{suffix}", f"explain-moto-{suffix}"
    run(["docker", "network", "create", network])
    try:
        port = local_aws.free_port()
        run(["docker", "run", "-d", "--rm", "--name", container, "--network", network, "--network-alias", "moto",
             "-p", f"127.0.0.1:{port}:{MOTO_PORT_IN_NETWORK}", MOTO_IMAGE])
        endpoint = f"http://127.0.0.1:{port}"
        _wait_for_http(endpoint)
        yield Emulator(network, container, endpoint, f"http://moto:{MOTO_PORT_IN_NETWORK}")
    finally:
        run(["docker", "rm", "-f", container], check=False)
        run(["docker", "network", "rm", network], check=False)


def _wait_for_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def env_vars_file(deployment: local_aws.Deployment, emulator: Emulator, directory: Path) -> Path:
    """``sam local invoke|start-api --env-vars``: every function's variables with local names and the emulator.

    Presigned upload URLs go to clients on the host, so they name the emulator's host endpoint.
    """
    path = directory / "env-vars.json"
    path.write_text(json.dumps({
        function: {**wiring.environment, "AWS_ENDPOINT_URL": emulator.network_endpoint,
                   "PRESIGN_ENDPOINT_URL": emulator.host_endpoint}
        for function, wiring in deployment.functions.items()
    }, indent=2))
    return path


REPORT = re.compile(r"REPORT RequestId: \S+\s+Init Duration: ([\d.]+) ms\s+Duration: ([\d.]+) ms|"
                    r"REPORT RequestId: \S+\s+Duration: ([\d.]+) ms")


@dataclass
class Invocation:
    response: dict
    seconds: float  # wall time of the sam command
    init_ms: float | None
    duration_ms: float | None
    output: str


def sam_local_invoke(function: str, event: Path, emulator: Emulator, env_file: Path) -> Invocation:
    started = time.perf_counter()
    completed = run(
        [sam_executable(), "local", "invoke", function, "--event", str(event), "--docker-network", emulator.network,
         "--env-vars", str(env_file), "--parameter-overrides", "LogLevel=WARNING", "--skip-pull-image"],
        env=SAM_ENV, timeout=1200,
    )
    seconds = time.perf_counter() - started
    init_ms = duration_ms = None
    for match in REPORT.finditer(completed.stderr + completed.stdout):
        init_ms = float(match.group(1)) if match.group(1) else None
        duration_ms = float(match.group(2) or match.group(3))
    lines = [line for line in completed.stdout.splitlines() if line.strip().startswith("{")]
    response = json.loads(lines[-1]) if lines else {}
    return Invocation(response, seconds, init_ms, duration_ms, completed.stdout + completed.stderr)


def rie_binary() -> Path:
    """SAM CLI's bundled Lambda runtime interface emulator."""
    import samcli

    return Path(samcli.__file__).parent / "local" / "rapid" / "aws-lambda-rie-x86_64"


@dataclass
class RunningFunction:
    url: str  # the runtime interface emulator's invocation URL, on a loopback port
    container: str

    def logs(self) -> str:
        completed = run(["docker", "logs", self.container], check=False)
        return completed.stdout + completed.stderr


@contextmanager
def read_only_function(function: str, environment: dict, emulator: Emulator):
    """Run a function image as Lambda does: read-only root filesystem, tmpfs /tmp, the RIE in front."""
    name = f"explain-ro-{uuid.uuid4().hex[:8]}"
    port = local_aws.free_port()
    command = ["docker", "run", "-d", "--rm", "--name", name, "--read-only", "--tmpfs", "/tmp:rw,size=1024m",
               "--network", emulator.network, "-p", f"127.0.0.1:{port}:8080",
               "-v", f"{rie_binary()}:/aws-lambda-rie:ro", "--entrypoint", "/aws-lambda-rie"]
    for key, value in {**SAM_ENV, **environment, "AWS_ENDPOINT_URL": emulator.network_endpoint}.items():
        command += ["-e", f"{key}={value}"]
    command += [built_image(function), "/var/lang/bin/python", "-m", "awslambdaric", "app.lambda_handler"]
    run(command)
    try:
        yield RunningFunction(f"http://127.0.0.1:{port}/2015-03-31/functions/function/invocations", name)
    finally:
        run(["docker", "rm", "-f", name], check=False)


def invoke_url(url: str, event: dict, timeout: float = 900) -> dict:
    """POST an event to the runtime interface emulator, retrying while the container starts."""
    deadline = time.monotonic() + 60
    while True:
        try:
            request = urllib.request.Request(url, data=json.dumps(event).encode(), method="POST")
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except (ConnectionError, urllib.error.URLError) as exc:
            starting = isinstance(exc, ConnectionError) or isinstance(getattr(exc, "reason", None), ConnectionError)
            if not starting or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def figures() -> str:
    """Image sizes, cold/warm durations in containers and in-process handler time, as a Markdown table."""
    from urllib.parse import unquote_plus

    from devtools import demo_model, local_lambda
    from devtools.demo import encode_image

    model_dir = demo_model.ensure_demo_model()
    images, _, _ = demo_model.sample_images(6)
    png = encode_image(images[0])
    rows = ["| function (event) | image size | `sam local invoke` wall | its REPORT Duration (init + invoke) "
            "| read-only container: cold / warm | in-process handler, warm |",
            "| --- | --- | --- | --- | --- | --- |"]
    with emulator_on_network() as emulator, tempfile.TemporaryDirectory() as tmp:
        deployment = local_aws.deploy(emulator.host_endpoint)
        s3 = deployment.client("s3")
        demo_model.publish(s3, deployment.bucket("ModelBucket"), model_dir)
        env_file = env_vars_file(deployment, emulator, Path(tmp))
        for function, family in FUNCTIONS.items():
            event_path = REPO / "events" / f"{family}-upload.json"
            event = json.loads(event_path.read_text())
            key = unquote_plus(json.loads(event["Records"][0]["body"])["Records"][0]["s3"]["object"]["key"])
            methods = FIGURE_METHODS[family]

            def stage(key=key, methods=methods):
                """A fresh upload (no manifest yet), so every call explains instead of skipping a duplicate."""
                s3.delete_object(Bucket=deployment.bucket("ResultsBucket"),
                                 Key=f"results/{key.removeprefix('incoming/')}/manifest.json")
                s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=png,
                              Metadata={"methods": methods})

            def timed(call):
                stage()
                started = time.perf_counter()
                call()
                return time.perf_counter() - started

            stage()
            cold = sam_local_invoke(function, event_path, emulator, env_file)
            with read_only_function(function, deployment.functions[function].environment, emulator) as running:
                url = running.url
                container_cold = timed(lambda url=url, event=event: invoke_url(url, event))
                container_warm = min(timed(lambda url=url, event=event: invoke_url(url, event)) for _ in range(3))
            wiring = deployment.functions[function]
            handler = local_lambda.load_handler(deployment, wiring)

            def in_process(handler=handler, wiring=wiring, event=event):
                context = local_lambda.LocalLambdaContext(wiring.logical_id, wiring.memory, wiring.timeout)
                with local_lambda.function_environment(deployment, wiring):
                    handler(event, context)

            timed(in_process)  # warm-up: imports were paid by load_handler, the model load here
            warm = min(timed(in_process) for _ in range(3))
            size = image_size(built_image(function)) / 1e9
            # The emulator's REPORT line has no separate Init Duration: the handler module is
            # imported during the first invocation, so Duration holds init and invoke.
            duration = (cold.duration_ms or 0) + (cold.init_ms or 0)
            rows.append(f"| {function} ({methods}, 1 image) | {size:.2f} GB | {cold.seconds:.1f} s "
                        f"| {duration / 1000:.2f} s | {container_cold:.2f} s / {container_warm:.2f} s | {warm:.2f} s |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "figures"])
    args = parser.parse_args(argv)
    ensure_engine()
    ensure_base_image()
    ensure_moto_image()
    sam_build()
    for function in FUNCTIONS:
        print(f"{function}: {built_image(function)} {image_size(built_image(function)) / 1e9:.2f} GB", flush=True)
    if args.command == "figures":
        print(figures())
    return 0


if __name__ == "__main__":
    sys.exit(main())
