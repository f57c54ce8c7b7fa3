"""Shared fixtures: the local AWS emulator wired from template.yaml, the demo model, handlers."""

import json
import os
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "ServerlessExplanationsTests")

from devtools import demo_model  # noqa: E402
from devtools.local import aws, lambda_service  # noqa: E402
from devtools.local.events import deliver  # noqa: E402
from devtools.samples import encode_image  # noqa: E402
from explain_core.registry import FAMILIES  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EVENTS = REPO / "events"


@pytest.fixture(scope="session")
def emulator():
    """A moto server on a free loopback port; yields its endpoint URL."""
    server, endpoint = aws.start_emulator()
    saved = {k: os.environ.get(k) for k in aws.aws_environment(endpoint)}
    os.environ.update(aws.aws_environment(endpoint))
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def deployment(emulator):
    """Buckets, queues and notifications created as template.yaml describes them."""
    return aws.deploy(emulator)


@pytest.fixture(scope="session")
def settings(deployment):
    """The functions' settings for the emulator's buckets and tables (what tests read results with)."""
    from explain_core.settings import Settings

    return Settings(input_bucket=deployment.bucket("InputBucket"), results_bucket=deployment.bucket("ResultsBucket"),
                    model_bucket=deployment.bucket("ModelBucket"), jobs_table=deployment.tables["JobsTable"])


@pytest.fixture(scope="session")
def s3(deployment):
    return deployment.client("s3")


@pytest.fixture(scope="session")
def sqs(deployment):
    return deployment.client("sqs")


@pytest.fixture(scope="session")
def demo_model_dir():
    return demo_model.ensure_demo_model()


@pytest.fixture(scope="session")
def published_model(deployment, s3, demo_model_dir):
    """The demo model, as model.keras and as a SageMaker model.tar.gz (shapes-sagemaker/v1)."""
    demo_model.publish(s3, deployment.bucket("ModelBucket"), demo_model_dir)
    demo_model.publish_sagemaker(s3, deployment.bucket("ModelBucket"))
    return demo_model.NAME, demo_model.VERSION


@pytest.fixture(scope="session")
def tabular_models(deployment, s3):
    """The breast-cancer demo models (XGBoost, Keras MLP), trained once and published."""
    from devtools import tabular_demo

    directories = tabular_demo.ensure_tabular_models()
    for name, directory in directories.items():
        tabular_demo.publish(s3, deployment.bucket("ModelBucket"), directory, name)
    return directories


@pytest.fixture(scope="session")
def text_model(deployment, s3):
    """The sentiment demo model (Embedding + LSTM), trained once and published."""
    from devtools import text_demo

    text_demo.build()
    text_demo.publish(s3, deployment.bucket("ModelBucket"))
    return text_demo.MODEL, text_demo.VERSION


@pytest.fixture(scope="session")
def samples():
    """Held-out demo images: (images uint8 N x 128 x 128 x 3, labels, masks)."""
    return demo_model.sample_images(6)


@pytest.fixture(scope="session")
def handlers(deployment, published_model, tabular_models, text_model):
    """The real handlers of every function, imported under their template environment."""
    return {
        family: lambda_service.load_handler(deployment, deployment.function_for_family(family))
        for family in FAMILIES
    }


@pytest.fixture
def lambda_context():
    return lambda_service.LocalLambdaContext("test-function", 3008, 300)


@pytest.fixture(scope="session")
def invoke(deployment, handlers):
    """Invoke a family's handler with an event, under the function's environment."""

    def _invoke(family: str, event: dict, *, as_sent: bool = False):
        """``as_sent``: the event exactly as given; by default its records carry the current ETags of
        their objects, as S3's notification of the staged upload would (devtools.local.events.deliver)."""
        if not as_sent:
            event = deliver(event, deployment.client("s3"))
        return lambda_service.invoke(deployment, deployment.function_for_family(family), handlers[family], event)

    return _invoke


@pytest.fixture
def unique_prefix():
    """A fresh key segment so tests sharing the emulator never see each other's objects."""
    return f"t-{uuid.uuid4().hex[:10]}"


def png_bytes(pixels) -> bytes:
    return encode_image(pixels, "PNG")


def load_event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def upload_event(*keys: str, family: str = "shap", receive_count: int = 1) -> dict:
    """An SQS event with one message per upload (keys URL-encoded as S3 sends them), from the family's
    event file; ``receive_count`` is the messages' SQS ApproximateReceiveCount."""
    from urllib.parse import quote_plus

    event = load_event(f"{family}-upload.json")
    template = event["Records"][0]
    event["Records"] = []
    for i, key in enumerate(keys):
        record = json.loads(json.dumps(template))
        body = json.loads(record["body"])
        body["Records"][0]["s3"]["object"]["key"] = quote_plus(key)
        record["body"], record["messageId"] = json.dumps(body), f"00000000-0000-4000-8000-{i:012d}"
        record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
        event["Records"].append(record)
    return event


class RecordingS3:
    """An S3 client that records ``upload_file`` calls (what a publish step would upload, without S3)."""

    def __init__(self):
        self.uploads = []

    def upload_file(self, filename, bucket, key):
        self.uploads.append((filename, bucket, key))


def read_json(s3, bucket: str, key: str) -> dict:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def event_keys(event: dict) -> list[str]:
    """The decoded object keys an SQS event of S3 notifications names."""
    return lambda_service.notified_keys(event["Records"])


def clear_outputs(s3, deployment, family: str) -> None:
    """Delete a family's results and error records from the results bucket."""
    bucket = deployment.bucket("ResultsBucket")
    for prefix in (f"results/{family}/", f"errors/{family}/"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])


@pytest.fixture(scope="session")
def api_key(deployment):
    """The API key of the events in events/api-*.json, registered in the emulator's clients table."""
    from devtools.local.api_gateway import TEST_API_KEY, TEST_CLIENT

    return deployment.register_api_key(TEST_CLIENT, TEST_API_KEY)


@pytest.fixture(scope="session")
def invoke_function(deployment, handlers):
    """Invoke any function of the template by logical id (family functions share ``handlers``)."""
    loaded = {deployment.function_for_family(family).logical_id: handler for family, handler in handlers.items()}

    def _invoke(logical_id: str, event: dict, context=None):
        wiring = deployment.functions[logical_id]
        if logical_id not in loaded:
            loaded[logical_id] = lambda_service.load_handler(deployment, wiring)
        return lambda_service.invoke(deployment, wiring, loaded[logical_id], event, context)

    return _invoke


#: Files tests leave for a person to look at (screenshots), kept after the run; ignored by git.
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", REPO / "test-artifacts"))


@pytest.fixture(scope="session")
def artifacts_dir():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def page_checker():
    """One headless Debian Chromium for the session's browser tests (installed here when missing)."""
    from devtools.browser import PageChecker

    with PageChecker() as checker:
        yield checker
