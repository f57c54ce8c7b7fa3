"""Run the REST API on this machine: ``python -m devtools.local_api [--port 3000]`` (``make local-api``).

What it sets up, all offline: the Docker engine, the Lambda base stand-in and the emulator image,
``sam build``; then the S3/SQS/DynamoDB emulator in a container on a docker network of its own,
the template's buckets, queues and tables on it, the demo models (image and tabular), an API key
for the client ``local-dev``, and ``sam local start-api`` on 127.0.0.1. It prints the URL, the key
and curl examples, and runs until Ctrl-C or SIGTERM, then removes what it started.

Jobs (``mode: async``, or requests over the time budget) are queued by the API; unless
``--no-jobs`` is given, a poller hands them to the family functions with ``sam local invoke``
(one cold container per batch, as Lambda's SQS event source would), so GET /jobs/<id> ends.
"""

import argparse
import shlex
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from devtools import containers
from devtools.local import FAMILY_FUNCTIONS, aws

CLIENT = "local-dev"
WORK_DIR = containers.REPO / ".cache" / "local-api"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def sample_image(directory: Path) -> Path:
    """A held-out demo image (a shape the demo model knows), to paste into the curl examples."""
    from devtools import demo_model
    from devtools.samples import encode_image

    images, labels, _ = demo_model.sample_images(1)
    path = directory / "image.png"
    path.write_bytes(encode_image(images[0]))
    return path


def instructions(url: str, key: str, image: Path, log_path: Path, jobs: bool) -> str:
    image_arg = shlex.quote(str(image.relative_to(containers.REPO) if image.is_relative_to(containers.REPO)
                                else image))
    body = ('{"model": {"name": "shapes", "version": "v1"}, "methods": ["Saliency"], '
            '"input_base64": "%s"}')
    job_body = ('{"model": {"name": "shapes", "version": "v1"}, "methods": ["Occlusion"], '
                '"mode": "async", "input_base64": "%s"}')
    jobs_note = ("a poller runs queued jobs with `sam local invoke`, a cold start each" if jobs else
                 "started with --no-jobs: jobs stay queued")
    return f"""
The API is running (sam local start-api; its log: {log_path})
  URL: {url}
  API key of client {CLIENT}: {key}

Paste into a shell:
  API={url}
  KEY={key}

  # 1. the explanation methods, with their parameters' defaults and bounds
  curl -s -H "Authorization: Bearer $KEY" "$API/methods?family=gradient"

  # 2. explain an image now (200); printf is a shell builtin, so the image's size is not an argument limit
  IMG=$(base64 -w0 {image_arg})
  printf '{body}' "$IMG" | curl -s -X POST -H "Authorization: Bearer $KEY" \\
       -H "Content-Type: application/json" --data-binary @- "$API/explanations/gradient"

  # 3. or as a job (202 with a job_id), then ask for it until it succeeded ({jobs_note})
  JOB=$(printf '{job_body}' "$IMG" | curl -s -X POST -H "Authorization: Bearer $KEY" \\
       -H "Content-Type: application/json" --data-binary @- "$API/explanations/perturbation" |
       python3 -c 'import json, sys; print(json.load(sys.stdin)["job_id"])')
  curl -s -H "Authorization: Bearer $KEY" "$API/jobs/$JOB"

Presigned links in the answers point at the emulator on this machine: fetch them with curl as they are.
Ctrl-C stops the API, the emulator and the function containers.
"""


class JobPoller(threading.Thread):
    """Lambda's SQS event sources for the family functions, each batch run by ``sam local invoke``."""

    def __init__(self, deployment: aws.Deployment, emulator: containers.Emulator, env_file: Path):
        super().__init__(name="job-poller", daemon=True)
        self.deployment, self.emulator, self.env_file = deployment, emulator, env_file
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for function in FAMILY_FUNCTIONS.values():
                if self.stopping.is_set():
                    return
                try:
                    count, invocation = containers.invoke_queued(function, self.deployment, self.emulator,
                                                                 self.env_file, wait_seconds=1)
                except Exception as exc:  # the emulator going away at shutdown, or a failed invoke
                    if not self.stopping.is_set():
                        log(f"job poller: {function}: {type(exc).__name__}: {str(exc)[-1000:]}")
                        self.stopping.wait(5)
                    continue
                if count:
                    log(f"job poller: {function} ran {count} queued upload(s) in {invocation.seconds:.1f} s: "
                        f"{invocation.response}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=3000, help="loopback port of the API (default 3000)")
    parser.add_argument("--warm-containers", choices=["LAZY", "EAGER"], default="LAZY",
                        help="LAZY: a function's container starts on its first request (default)")
    parser.add_argument("--no-jobs", action="store_true", help="do not run queued jobs (they stay queued)")
    args = parser.parse_args(argv)

    def terminate(signum, frame):
        raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C

    signal.signal(signal.SIGTERM, terminate)
    try:
        log("Docker engine, Lambda base stand-in, emulator image, sam build")
        containers.ensure_engine()
        containers.ensure_base_image()
        containers.ensure_moto_image()
        containers.sam_build()
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        with containers.emulator_on_network() as emulator, tempfile.TemporaryDirectory() as tmp:
            log(f"emulator {emulator.container} on network {emulator.network}: {emulator.host_endpoint}")
            deployment = aws.deploy(emulator.host_endpoint)
            log("publishing the demo models (trained on first use)")
            containers.publish_demo_models(deployment, tabular=True)
            env_file = containers.env_vars_file(deployment, emulator, Path(tmp))
            key = deployment.register_api_key(CLIENT)
            log_path = WORK_DIR / "sam-local-start-api.log"
            log(f"starting sam local start-api on 127.0.0.1:{args.port}")
            with containers.local_api(deployment, emulator, env_file, port=args.port, warm=args.warm_containers,
                                      log_path=log_path) as api:
                print(instructions(api.url, key, sample_image(WORK_DIR), log_path, not args.no_jobs), flush=True)
                poller = None if args.no_jobs else JobPoller(deployment, emulator, env_file)
                if poller:
                    poller.start()
                try:
                    while api.process.poll() is None:
                        time.sleep(1)
                    log(f"sam local start-api exited ({api.process.returncode}); its log ends with:\n"
                        f"{api.logs(tail=3000)}")
                    return 1
                finally:
                    if poller:
                        poller.stopping.set()
                        if poller.is_alive():
                            log("waiting for the job poller (a running `sam local invoke` ends first)")
                        poller.join(timeout=600)
                    log("stopping: sam local start-api, its containers, the emulator")
    except KeyboardInterrupt:
        log("stopped")
        return 0


if __name__ == "__main__":
    sys.exit(main())
