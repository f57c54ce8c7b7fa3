"""The container tier: Docker engine, Lambda base stand-in, ``sam build`` and ``sam local invoke``.

Everything runs offline: the engine is Debian's docker.io started with ``--ip-masq=false --dns
127.0.0.1`` (containers reach nothing outside this machine), the Lambda base image is a local
stand-in tagged with the public name, and the S3/SQS emulator runs as a container on a docker
network this module creates, so function containers reach it by name while the host reaches it
on a loopback port.

``python -m devtools.containers figures`` builds everything and prints the README's figures:
image sizes, cold and warm ``sam local invoke`` durations next to the in-process handler time;
``api-figures`` does the same for the REST API through ``sam local start-api`` (:func:`local_api`).
"""

import argparse
import http.server
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from devtools.local import FAMILY_FUNCTIONS, aws

REPO = Path(__file__).resolve().parent.parent
DOCKER_DIR = REPO / "devtools" / "docker"
MOTO_IMAGE = "explain-moto:local"
MOTO_PORT_IN_NETWORK = 5000
#: One cheap method per family for the figures: each explains a PNG of the image demo model.
FIGURE_METHODS = {"gradient": "GradCAM", "perturbation": "Occlusion", "shap": "GradientExplainer"}
SAM_ENV = {"SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": aws.REGION, "AWS_REGION": aws.REGION,
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
        with serving_wheelhouse():  # the base's pip.conf names it; the wheels come from the context
            run(["docker", "build", "--quiet", "-t", MOTO_IMAGE, context], timeout=900)


BASE_IMAGE = "public.ecr.aws/lambda/python:3.11"
#: Where ``lambda-base.sh`` downloads the pinned wheels (ignored by git).
WHEELHOUSE = REPO / ".cache" / "wheelhouse"


def wheelhouse_url() -> str:
    """Where the base stand-in's /etc/pip.conf sends pip: its ``explain.wheelhouse`` label."""
    url = run(["docker", "image", "inspect", BASE_IMAGE, "--format",
               '{{ index .Config.Labels "explain.wheelhouse" }}']).stdout.strip()
    if not url.startswith("http://") or not urlsplit(url).hostname:
        raise RuntimeError(f"{BASE_IMAGE} has no usable explain.wheelhouse label ({url!r}): "
                           "run devtools/docker/lambda-base.sh")
    return url


@contextmanager
def serving_wheelhouse():
    """Serve .cache/wheelhouse at the address the base stand-in's pip.conf names, for one build.

    That address is the default bridge's gateway: docker's classic builder (what ``sam build``
    uses) runs RUN steps on the default bridge, and the gateway is this machine's own end of it,
    so pip reaches the wheelhouse and nothing else. An exclusive lock serialises concurrent builds
    (they would need the same port and build the same images).
    """
    import fcntl
    import functools
    import threading

    address = urlsplit(wheelhouse_url())
    handler = functools.partial(_QuietFiles, directory=str(WHEELHOUSE))
    WHEELHOUSE.parent.mkdir(parents=True, exist_ok=True)
    with open(WHEELHOUSE.parent / "wheelhouse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        server = http.server.ThreadingHTTPServer((address.hostname, address.port), handler)
        thread = threading.Thread(target=server.serve_forever, name="wheelhouse", daemon=True)
        thread.start()
        try:
            yield
        finally:
            server.shutdown()
            server.server_close()


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    """A static file server for the wheelhouse that does not log every request to stderr."""

    def log_message(self, format, *args):  # noqa: A002 (the base class's signature)
        pass


def sam_build() -> None:
    """``sam build`` of every function, pip fed from the wheelhouse (offline)."""
    with serving_wheelhouse():
        run([sam_executable(), "build"], env=SAM_ENV, timeout=3600)


def built_image(function: str) -> str:
    """The image tag ``sam build`` produced for a function (from .aws-sam/build/template.yaml)."""
    template = aws.load_template(REPO / ".aws-sam" / "build" / "template.yaml")
    return template["Resources"][function]["Properties"]["ImageUri"]


def image_functions() -> list[str]:
    """Every container-image function of the built template (ML and light), in template order."""
    template = aws.load_template(REPO / ".aws-sam" / "build" / "template.yaml")
    return [name for name, resource in template["Resources"].items()
            if resource.get("Type") == "AWS::Serverless::Function" and "ImageUri" in resource.get("Properties", {})]


def image_size(tag: str) -> int:
    """Docker's uncompressed size of an image, in bytes."""
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
        port = aws.free_port()
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


def env_vars_file(deployment: aws.Deployment, emulator: Emulator, directory: Path) -> Path:
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
    port = aws.free_port()
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

    from devtools import demo_model
    from devtools.local import lambda_service
    from devtools.local.events import deliver
    from devtools.samples import encode_image

    model_dir = demo_model.ensure_demo_model()
    images, _, _ = demo_model.sample_images(6)
    rows = ["| function (event) | image size | `sam local invoke` wall | its REPORT Duration (init + invoke) "
            "| read-only container: cold / warm | in-process handler, warm |",
            "| --- | --- | --- | --- | --- | --- |"]
    with emulator_on_network() as emulator, tempfile.TemporaryDirectory() as tmp:
        deployment = aws.deploy(emulator.host_endpoint)
        s3 = deployment.client("s3")
        demo_model.publish(s3, deployment.bucket("ModelBucket"), model_dir)
        env_file = env_vars_file(deployment, emulator, Path(tmp))
        for family, function in FAMILY_FUNCTIONS.items():
            event = json.loads((REPO / "events" / f"{family}-upload.json").read_text())
            key = unquote_plus(json.loads(event["Records"][0]["body"])["Records"][0]["s3"]["object"]["key"])
            methods = FIGURE_METHODS[family]

            def stage(key=key, methods=methods, template=event, uploads=iter(range(1, 10**6))) -> dict:
                """A fresh version of the upload (one pixel differs, so a new ETag) and its notification:
                every call explains instead of finding the input explained (lock, manifest) already."""
                pixels = images[0].copy()
                pixels[0, 0, 0] = next(uploads) % 256
                s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=encode_image(pixels),
                              Metadata={"methods": methods})
                return deliver(template, s3)

            def timed(call):
                staged = stage()
                started = time.perf_counter()
                call(staged)
                return time.perf_counter() - started

            event_file = Path(tmp) / f"{family}-upload.json"
            event_file.write_text(json.dumps(stage()))
            cold = sam_local_invoke(function, event_file, emulator, env_file)
            with read_only_function(function, deployment.functions[function].environment, emulator) as running:
                url = running.url
                container_cold = timed(lambda staged, url=url: invoke_url(url, staged))
                container_warm = min(timed(lambda staged, url=url: invoke_url(url, staged)) for _ in range(3))
            wiring = deployment.functions[function]
            handler = lambda_service.load_handler(deployment, wiring)

            def in_process(staged, handler=handler, wiring=wiring):
                lambda_service.invoke(deployment, wiring, handler, staged)

            timed(in_process)  # warm-up: imports were paid by load_handler, the model load here
            warm = min(timed(in_process) for _ in range(3))
            size = image_size(built_image(function)) / 1e9
            # The emulator's REPORT line has no separate Init Duration: the handler module is
            # imported during the first invocation, so Duration holds init and invoke.
            duration = (cold.duration_ms or 0) + (cold.init_ms or 0)
            rows.append(f"| {function} ({methods}, 1 image) | {size:.2f} GB | {cold.seconds:.1f} s "
                        f"| {duration / 1000:.2f} s | {container_cold:.2f} s / {container_warm:.2f} s | {warm:.2f} s |")
    return "\n".join(rows)


# ------------------------------------------------------------------------------------ the REST API
#: The label ``sam local`` puts on every function container it creates (samcli.local.docker.lambda_container).
SAM_CONTAINER_LABEL = "sam.cli.container.type=lambda"
#: The request the latency figures time: one cheap method on one image of the image demo model.
LATENCY_METHODS = ["Saliency"]


def sam_containers(network: str) -> set[str]:
    """Ids of the function containers ``sam local`` created on this docker network (running or not)."""
    completed = run(["docker", "ps", "-a", "-q", "--no-trunc", "--filter", f"label={SAM_CONTAINER_LABEL}",
                     "--filter", f"network={network}"], check=False)
    return set(completed.stdout.split())


@dataclass
class ApiResponse:
    status: int
    headers: dict  # lower-case names
    body: bytes
    seconds: float

    def json(self):
        return json.loads(self.body)

    def text(self, limit: int = 2000) -> str:
        return self.body[:limit].decode(errors="replace")


@dataclass
class LocalApi:
    """``sam local start-api`` running on a loopback port: ``url`` for clients, ``logs()`` for failures."""

    url: str
    log_path: Path
    process: subprocess.Popen
    deployment: aws.Deployment
    emulator: Emulator
    env_file: Path
    removed: list[str] = field(default_factory=list)  # function containers SAM left behind, removed on exit

    def logs(self, tail: int | None = None) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text if tail is None else text[-tail:]

    def request(self, method: str, path: str, *, key: str | None = None, body=None, data: bytes | None = None,
                headers: dict | None = None, timeout: float = 600) -> ApiResponse:
        """One HTTP request; ``body`` is sent as JSON, ``data`` as is. Error statuses are returned, not raised."""
        headers = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, answer, content = response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            status, answer, content = exc.code, exc.headers, exc.read()
        return ApiResponse(status, {k.lower(): v for k, v in answer.items()}, content,
                           time.perf_counter() - started)


def _wait_for_api(api: LocalApi, timeout: float) -> None:
    """Until the API answers HTTP at all (GET /methods without a key: 401 from SAM, no function runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.process.poll() is not None:
            raise RuntimeError(f"sam local start-api exited ({api.process.returncode}):\n{api.logs(tail=4000)}")
        try:
            urllib.request.urlopen(api.url + "/methods", timeout=5).read()
            return
        except urllib.error.HTTPError:
            return  # any status is an answer
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"sam local start-api did not answer on {api.url} within {timeout} s:\n{api.logs(tail=4000)}")


def _stop(process: subprocess.Popen, grace: float = 60) -> None:
    if process.poll() is not None:
        return
    process.terminate()  # SIGTERM: SAM stops its warm containers and exits
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


@contextmanager
def local_api(deployment: aws.Deployment, emulator: Emulator, env_file: Path, *, port: int | None = None,
              warm: str = "LAZY", log_path: Path | None = None, timeout: float = 180):
    """``sam local start-api`` of the built template on 127.0.0.1, its functions on the emulator's network.

    Yields a :class:`LocalApi` once SAM answers HTTP. (SAM CLI 1.170 stamps every REST event's
    ``requestTimeEpoch`` with the time it started; explain_core.api does not trust the stamp under
    SAM, which sets ``AWS_SAM_LOCAL``, and uses its own clock.)

    On exit SAM is terminated (SIGTERM, then SIGKILL) and any function container it left behind is
    removed: only containers with SAM's label, on this emulator's network, that did not exist before
    this call, so the emulator and other runs are never touched.
    """
    missing = [f for f, w in deployment.functions.items()
               if (w.api_routes or f == "AuthorizerFunction") and f not in json.loads(env_file.read_text())]
    if missing:
        raise ValueError(f"{env_file} has no variables for {missing}")
    port = port or aws.free_port()
    if log_path is None:
        log_path = Path(tempfile.mkdtemp(prefix="explain-local-api-")) / "sam-local-start-api.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    before = sam_containers(emulator.network)
    command = [sam_executable(), "local", "start-api", "--docker-network", emulator.network,
               "--env-vars", str(env_file), "--parameter-overrides", "LogLevel=WARNING",
               "--warm-containers", warm, "--host", "127.0.0.1", "--port", str(port), "--skip-pull-image"]
    with open(log_path, "wb") as log:
        # Its own session: a Ctrl-C in the terminal reaches our process, which then stops SAM in order.
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **SAM_ENV}, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    api = LocalApi(f"http://127.0.0.1:{port}", log_path, process, deployment, emulator, env_file)
    try:
        _wait_for_api(api, timeout)
        yield api
    finally:
        _stop(process)
        api.removed = sorted(sam_containers(emulator.network) - before)
        if api.removed:
            run(["docker", "rm", "-f", *api.removed], check=False)


def publish_demo_models(deployment: aws.Deployment, *, tabular: bool = True) -> None:
    """The image demo model and, with ``tabular``, the tabular ones (shap family), in the model bucket."""
    from devtools import demo_model

    s3, bucket = deployment.client("s3"), deployment.bucket("ModelBucket")
    demo_model.publish(s3, bucket, demo_model.ensure_demo_model())
    if tabular:
        from devtools import tabular_demo

        for name, directory in tabular_demo.ensure_tabular_models().items():
            tabular_demo.publish(s3, bucket, directory, name, tabular_demo.VERSION)


def is_test_event(body: str) -> bool:
    """S3's ``s3:TestEvent``, sent to a queue when a notification configuration is set; not an upload."""
    try:
        return json.loads(body).get("Event") == "s3:TestEvent"
    except (ValueError, AttributeError):
        return False


def invoke_queued(function: str, deployment: aws.Deployment, emulator: Emulator, env_file: Path, *,
                  wait_seconds: int = 5) -> tuple[int, Invocation | None]:
    """What Lambda's SQS event source does, once, through ``sam local invoke``.

    Receives up to the function's batch size from its queue on the emulator, drops S3 test events,
    invokes the function with the SQS event and deletes the messages it did not report as failed.
    Returns (messages invoked with, the invocation or None when the queue had no upload).
    """
    from devtools.local.lambda_service import sqs_event

    wiring = deployment.functions[function]
    sqs = deployment.client("sqs")
    queue_url, queue_arn = deployment.queue_urls[wiring.queue], deployment.queue_arns[wiring.queue]
    received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=min(10, wiring.batch_size),
                                   WaitTimeSeconds=wait_seconds, AttributeNames=["All"],
                                   MessageAttributeNames=["All"]).get("Messages", [])
    messages = []
    for message in received:
        if is_test_event(message["Body"]):
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        else:
            messages.append(message)
    if not messages:
        return 0, None
    with tempfile.TemporaryDirectory() as tmp:
        event_path = Path(tmp) / "sqs-event.json"
        event_path.write_text(json.dumps(sqs_event(messages, queue_arn)))
        invocation = sam_local_invoke(function, event_path, emulator, env_file)
    failed = {item["itemIdentifier"] for item in invocation.response.get("batchItemFailures", [])}
    if invocation.response:  # no response at all: the invocation failed, Lambda would retry every message
        for message in messages:
            if message["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return len(messages), invocation


def explanation_body(png: bytes, methods: list[str] | None = None, **fields) -> dict:
    """The JSON body of POST /explanations/{family} for an inline image of the image demo model."""
    import base64

    from devtools import demo_model

    body = {"model": {"name": demo_model.NAME, "version": demo_model.VERSION},
            "input_base64": base64.b64encode(png).decode()}
    if methods:
        body["methods"] = list(methods)
    return {**body, **fields}


@dataclass
class ApiLatency:
    """Wall times of POST /explanations/gradient through ``sam local start-api``, and of the handler in-process."""

    cold: float
    cold_status: int
    warm: list[float]
    cached: float
    cached_flag: bool
    in_process: list[float]
    methods: list[str]

    def table(self) -> str:
        methods = ", ".join(self.methods)
        return "\n".join([
            f"| POST /explanations/gradient ({methods}, one 128x128 PNG) | wall time | what it includes |",
            "| --- | --- | --- |",
            f"| cold: the first request, through `sam local start-api` | {self.cold:.2f} s | authorizer, a new "
            f"function container (SAM adds its emulator layer, starts it), TensorFlow import, model load from S3, "
            f"the explanation (HTTP {self.cold_status}) |",
            f"| warm: a new image each time, best of {len(self.warm)} | {min(self.warm):.2f} s | authorizer, "
            "decode, predict, explain, write the outputs, presign the links |",
            f"| cached: the last warm request again | {self.cached:.2f} s | authorizer, answered from the "
            f"stored manifest (cached: {str(self.cached_flag).lower()}) |",
            f"| in-process handler, warm: a new image each time, best of {len(self.in_process)} "
            f"| {min(self.in_process):.2f} s | the same handler and event, without HTTP, SAM or a container |",
        ])


def measure_api_latency(api: LocalApi, key: str, *, warm_count: int = 3, seed: int = 4242) -> ApiLatency:
    """Time the first (cold) request, warm and cached ones, and the in-process handler with the same request.

    It must send the first request to the gradient function of this ``api`` for the cold figure to
    be one. Every timed explanation has an image of its own (new bytes: never a cached result).
    """
    from devtools import demo_model
    from devtools.local import lambda_service
    from devtools.local.api_gateway import explain_event
    from devtools.samples import encode_image

    images, _, _ = demo_model.sample_images(2 + 2 * warm_count, seed=seed)
    pngs = [encode_image(image) for image in images]

    def post(png: bytes) -> ApiResponse:
        response = api.request("POST", "/explanations/gradient", key=key,
                               body=explanation_body(png, LATENCY_METHODS))
        if response.status not in (200, 202):
            raise RuntimeError(f"POST /explanations/gradient answered {response.status}: {response.text()}\n"
                               f"{api.logs(tail=4000)}")
        return response

    cold = post(pngs[0])
    warm = [post(png) for png in pngs[1:1 + warm_count]]
    cached = post(pngs[warm_count])  # the same bytes and options as the last warm request

    # The log level SAM runs the functions with (LogLevel=WARNING); no metric lines around the figures.
    wiring = api.deployment.functions["GradientFunction"]
    wiring = replace(wiring, environment={**wiring.environment, "POWERTOOLS_LOG_LEVEL": "WARNING",
                                          "POWERTOOLS_METRICS_DISABLED": "true"})
    handler = lambda_service.load_handler(api.deployment, wiring)

    def in_process(png: bytes) -> float:
        event = explain_event("gradient", explanation_body(png, LATENCY_METHODS))
        event["requestContext"]["requestTimeEpoch"] = int(time.time() * 1000)
        started = time.perf_counter()
        response = lambda_service.invoke(api.deployment, wiring, handler, event)
        seconds = time.perf_counter() - started
        if response["statusCode"] != 200:
            raise RuntimeError(f"in-process handler answered {response['statusCode']}: {response['body'][:2000]}")
        return seconds

    in_process(pngs[1 + warm_count])  # warm-up: the import was paid by load_handler, the model load here
    return ApiLatency(
        cold=cold.seconds, cold_status=cold.status, warm=[r.seconds for r in warm], cached=cached.seconds,
        cached_flag=bool(cached.status == 200 and cached.json().get("cached")),
        in_process=[in_process(png) for png in pngs[2 + warm_count:]], methods=list(LATENCY_METHODS),
    )


def api_figures(*, warm_count: int = 3) -> str:
    """The latency table of the REST API on a fresh emulator (``python -m devtools.containers api-figures``)."""
    with emulator_on_network() as emulator, tempfile.TemporaryDirectory() as tmp:
        deployment = aws.deploy(emulator.host_endpoint)
        publish_demo_models(deployment, tabular=False)
        env_file = env_vars_file(deployment, emulator, Path(tmp))
        key = deployment.register_api_key("api-figures")
        with local_api(deployment, emulator, env_file, log_path=Path(tmp) / "sam-local-start-api.log") as api:
            return measure_api_latency(api, key, warm_count=warm_count).table()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "figures", "api-figures"])
    args = parser.parse_args(argv)
    ensure_engine()
    ensure_base_image()
    ensure_moto_image()
    sam_build()
    for function in image_functions():
        print(f"{function}: {built_image(function)} {image_size(built_image(function)) / 1e9:.3f} GB", flush=True)
    if args.command == "figures":
        print(figures())
    elif args.command == "api-figures":
        print(api_figures())
    return 0


if __name__ == "__main__":
    sys.exit(main())
