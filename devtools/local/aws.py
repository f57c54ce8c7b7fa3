"""The AWS side on loopback: a moto server wired as template.yaml describes.

Buckets, queues (with their dead-letter redrive), DynamoDB tables, the input bucket's S3 -> SQS
notifications, each function's SQS event source (batch size, batching window), API routes and
environment are read from template.yaml, so the local wiring cannot drift from what is deployed.
Local names are derived from logical ids: ``InputBucket`` -> ``explain-input-bucket-local``.

The family functions are read from it too (:data:`FAMILY_FUNCTIONS`): a function explains the
family its code directory is named after (``functions/gradient/`` -> ``gradient``). The insights
function (``functions/insights/``, :data:`INSIGHTS_FUNCTION`) is no explanation family: its wiring
has ``family`` None and :meth:`Deployment.insights_function` finds it.

    python -m devtools.local [--port 5055]    # the emulator in the foreground, for manual use (main)
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import yaml

from explain_core.insights import INSIGHTS
from explain_core.registry import FAMILIES

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation short-form tags as {"Fn": value} dicts."""


def _tag(name):
    def construct(loader, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if name == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {"Ref" if name == "Ref" else f"Fn::{name}": value}

    return construct


for _name in ("Ref", "Sub", "GetAtt", "Join", "If", "Select", "Split", "Equals", "Not", "And", "Or",
              "FindInMap", "ImportValue", "Base64", "Condition", "GetAZs"):
    _CfnLoader.add_constructor(f"!{_name}", _tag(_name))


def load_template(path: Path = TEMPLATE) -> dict:
    return yaml.load(path.read_text(), Loader=_CfnLoader)


def _code_directory(resource: dict) -> Path:
    """The directory of a function's code and Dockerfile (``functions/gradient``)."""
    return Path(resource["Metadata"]["Dockerfile"]).parent


def family_of(resource: dict) -> str | None:
    """The explanation family a template resource's function explains; None for anything else
    (the API and authorizer functions, other resources)."""
    if resource.get("Type") != "AWS::Serverless::Function" or "Dockerfile" not in resource.get("Metadata", {}):
        return None
    name = _code_directory(resource).name
    return name if name in FAMILIES else None


def family_functions(template: dict) -> dict[str, str]:
    """Family -> logical id of the function that explains it, in the registry's family order."""
    by_family = {family_of(resource): logical_id for logical_id, resource in template["Resources"].items()}
    return {family: by_family[family] for family in FAMILIES if family in by_family}


def insights_function(template: dict) -> str | None:
    """Logical id of the insights function (its code is ``functions/insights/``); None if the template has none."""
    return next((logical_id for logical_id, resource in template["Resources"].items()
                 if resource.get("Type") == "AWS::Serverless::Function"
                 and "Dockerfile" in resource.get("Metadata", {}) and _code_directory(resource).name == INSIGHTS),
                None)


_TEMPLATE = load_template()
#: Family -> logical id of its function in template.yaml: {"gradient": "GradientFunction", ...}.
FAMILY_FUNCTIONS: dict[str, str] = family_functions(_TEMPLATE)
#: Logical id of the insights function in template.yaml ("InsightsFunction").
INSIGHTS_FUNCTION: str | None = insights_function(_TEMPLATE)


def local_name(logical_id: str) -> str:
    return "explain-" + re.sub(r"(?<!^)(?=[A-Z])", "-", logical_id).lower() + "-local"


@dataclass
class FunctionWiring:
    logical_id: str
    module: str  # the handler module, e.g. functions.gradient.app
    queue: str | None  # logical id of its SQS source; None for API-only functions
    batch_size: int  # 0 without an SQS source
    batching_window: int
    timeout: int
    memory: int
    environment: dict = field(default_factory=dict)
    api_routes: list[tuple[str, str]] = field(default_factory=list)  # (METHOD, path) of its Api events
    family: str | None = None  # the explanation family it explains (family_of); None: API, authorizer


@dataclass
class Deployment:
    endpoint: str
    buckets: dict  # logical id -> bucket name
    queue_urls: dict  # logical id -> queue URL
    queue_arns: dict
    functions: dict  # logical id -> FunctionWiring
    tables: dict  # logical id -> table name

    def client(self, service: str):
        return client(service, self.endpoint)

    def table(self, logical_id: str):
        """A DynamoDB Table resource of the template's table on the emulator."""
        return _session(self.endpoint).resource("dynamodb", endpoint_url=self.endpoint).Table(self.tables[logical_id])

    def register_api_key(self, client_id: str, key: str | None = None) -> str:
        """Register an API client in the clients table (only the key's hash is stored); returns the key."""
        from explain_core.authorizer import register_client

        return register_client(self.table("ApiClientsTable"), client_id, key)

    def bucket(self, logical_id: str) -> str:
        return self.buckets[logical_id]

    def function_for_family(self, family: str) -> FunctionWiring:
        return next(f for f in self.functions.values() if f.family == family)

    def insights_function(self) -> FunctionWiring:
        """The insights function's wiring (its SQS source takes job specifications and part messages)."""
        if INSIGHTS_FUNCTION is None or INSIGHTS_FUNCTION not in self.functions:
            raise KeyError("template.yaml has no insights function (functions/insights/)")
        return self.functions[INSIGHTS_FUNCTION]

    def to_json(self) -> str:
        return json.dumps(self, default=lambda o: o.__dict__, indent=2)


def aws_environment(endpoint: str) -> dict:
    """What any process needs to talk to the emulator through the standard boto3 settings."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }


def _session(endpoint: str) -> boto3.Session:
    env = aws_environment(endpoint)
    return boto3.Session(region_name=REGION, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                         aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def client(service: str, endpoint: str):
    return _session(endpoint).client(service, endpoint_url=endpoint)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_emulator(host: str = "127.0.0.1", port: int | None = None):
    """Start a moto server thread on loopback; returns (server, endpoint URL)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = port or free_port()
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    return server, f"http://{host}:{port}"


class EmulatorProcess:
    """A moto server in a process of its own (``stop()`` ends it)."""

    def __init__(self, host: str, port: int):
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection((host, port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the moto server on {host}:{port} did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except Exception:
            self.process.kill()


def start_emulator_process(host: str = "127.0.0.1", port: int | None = None):
    """Start a moto server in its own process on loopback; returns (server, endpoint URL).

    For measurements: S3 and SQS run elsewhere on AWS, so the emulator's own CPU time (about 3 ms a
    request) must not count against the handler by sharing its interpreter lock."""
    port = port or free_port()
    return EmulatorProcess(host, port), f"http://{host}:{port}"


def _resolve(value, names: dict, arns: dict, parameters: dict):
    """Resolve !Ref / !GetAtt X.Arn / !Sub against local names; other values pass through."""
    if isinstance(value, dict) and len(value) == 1:
        (kind, arg), = value.items()
        if kind == "Ref":
            return names.get(arg, parameters.get(arg, arg))
        if kind == "Fn::GetAtt" and arg[1] == "Arn":
            return arns[arg[0]]
        if kind == "Fn::Sub" and isinstance(arg, str):
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(names.get(m.group(1), parameters.get(m.group(1), ""))), arg)
    return value


def deploy(endpoint: str, template: dict | None = None) -> Deployment:
    """Create the template's buckets, queues, tables, notifications on the emulator; describe the functions."""
    template = template or load_template()
    resources = template["Resources"]
    parameters = {name: spec.get("Default") for name, spec in template.get("Parameters", {}).items()}
    s3, sqs, dynamodb = client("s3", endpoint), client("sqs", endpoint), client("dynamodb", endpoint)
    names, arns, queue_urls = {}, {}, {}
    tables = {
        logical_id: _create_table(dynamodb, local_name(logical_id), resource.get("Properties", {}))
        for logical_id, resource in resources.items()
        if resource["Type"] == "AWS::DynamoDB::Table"
    }
    for logical_id, name in tables.items():
        names[logical_id] = name
        arns[logical_id] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"

    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::S3::Bucket":
            names[logical_id] = local_name(logical_id)
            arns[logical_id] = f"arn:aws:s3:::{names[logical_id]}"
    # Dead-letter queues first: the main queues' redrive policies point at them.
    queues = [lid for lid, r in resources.items() if r["Type"] == "AWS::SQS::Queue"]
    queues.sort(key=lambda lid: "RedrivePolicy" in resources[lid].get("Properties", {}))
    for logical_id in queues:
        props = resources[logical_id].get("Properties", {})
        name = local_name(logical_id)
        attributes = {}
        for key in ("VisibilityTimeout", "MessageRetentionPeriod"):
            if key in props:
                attributes[key] = str(props[key])
        if "RedrivePolicy" in props:
            redrive = props["RedrivePolicy"]
            attributes["RedrivePolicy"] = json.dumps({
                "deadLetterTargetArn": _resolve(redrive["deadLetterTargetArn"], names, arns, parameters),
                "maxReceiveCount": str(_resolve(redrive["maxReceiveCount"], names, arns, parameters)),
            })
        queue_urls[logical_id] = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        # A queue's !Ref (INSIGHTS_QUEUE_URL) is the URL AWS gives, not the emulator's: boto3 sends to
        # AWS_ENDPOINT_URL whatever the URL's host and the emulator finds the queue by name, so the value
        # holds from this process and from containers that reach the emulator under another name.
        names[logical_id] = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"
        arns[logical_id] = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"

    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::S3::Bucket":
            continue
        props, bucket = resource.get("Properties", {}), names[logical_id]
        s3.create_bucket(Bucket=bucket)
        if "PublicAccessBlockConfiguration" in props:
            s3.put_public_access_block(
                Bucket=bucket, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
            )
        if "BucketEncryption" in props:
            # CloudFormation and the S3 API spell the default-encryption rule differently.
            rules = [
                {"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}
                for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            ]
            s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": rules})
        queue_configs = props.get("NotificationConfiguration", {}).get("QueueConfigurations", [])
        if queue_configs:
            s3.put_bucket_notification_configuration(
                Bucket=bucket,
                NotificationConfiguration={"QueueConfigurations": [
                    {
                        "QueueArn": _resolve(config["Queue"], names, arns, parameters),
                        "Events": [config["Event"]],
                        "Filter": {"Key": {"FilterRules": config["Filter"]["S3Key"]["Rules"]}},
                    }
                    for config in queue_configs
                ]},
            )

    globals_fn = template.get("Globals", {}).get("Function", {})
    functions = {}
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        environment = {
            **globals_fn.get("Environment", {}).get("Variables", {}),
            **props.get("Environment", {}).get("Variables", {}),
        }
        environment = {k: str(_resolve(v, names, arns, parameters)) for k, v in environment.items()}
        events = list(props.get("Events", {}).values())
        source = next((e["Properties"] for e in events if e["Type"] == "SQS"), None)
        module = str(_code_directory(resource) / "app").replace("/", ".")
        functions[logical_id] = FunctionWiring(
            logical_id=logical_id,
            module=module,
            queue=source["Queue"]["Fn::GetAtt"][0] if source else None,
            batch_size=int(source.get("BatchSize", 10)) if source else 0,
            batching_window=int(source.get("MaximumBatchingWindowInSeconds", 0)) if source else 0,
            timeout=int(props.get("Timeout", globals_fn.get("Timeout", 3))),
            memory=int(props.get("MemorySize", globals_fn.get("MemorySize", 128))),
            environment=environment,
            api_routes=[(e["Properties"]["Method"].upper(), e["Properties"]["Path"]) for e in events
                        if e["Type"] == "Api"],
            family=family_of(resource),
        )
    return Deployment(
        endpoint=endpoint,
        buckets={lid: names[lid] for lid, r in resources.items() if r["Type"] == "AWS::S3::Bucket"},
        queue_urls=queue_urls,
        queue_arns={lid: arns[lid] for lid in queue_urls},
        functions=functions,
        tables=tables,
    )


def _create_table(dynamodb, name: str, props: dict) -> str:
    """Create a table as its AWS::DynamoDB::Table properties describe it (kept if it already exists)."""
    arguments = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if "SSESpecification" in props:  # CloudFormation says SSEEnabled, the API Enabled
        arguments["SSESpecification"] = {"Enabled": bool(props["SSESpecification"].get("SSEEnabled", False))}
    try:
        dynamodb.create_table(**arguments)
    except dynamodb.exceptions.ResourceInUseException:
        return name  # a second deploy() on the same emulator
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification={
            "AttributeName": ttl["AttributeName"], "Enabled": bool(ttl.get("Enabled", True)),
        })
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr:
        dynamodb.update_continuous_backups(TableName=name, PointInTimeRecoverySpecification={
            "PointInTimeRecoveryEnabled": bool(pitr.get("PointInTimeRecoveryEnabled", False)),
        })
    return name


def main():
    """Run the emulator in the foreground, wired from the template (for manual use)."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("LOCAL_AWS_PORT", 5055)))
    args = parser.parse_args()
    server, endpoint = start_emulator(port=args.port)
    deployment = deploy(endpoint)
    print(deployment.to_json(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
