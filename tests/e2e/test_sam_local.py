"""``sam build`` and ``sam local invoke`` of every function with every event file, outputs checked in S3."""

import json
from itertools import combinations

import pytest

from devtools import containers, demo_model, text_demo
from devtools.benchmark import images as images_section
from devtools.local import FAMILY_FUNCTIONS
from devtools.local.aws import INSIGHTS_FUNCTION
from devtools.local.events import deliver
from devtools.local.lambda_service import notified_keys
from explain_core.insights.jobs import part_prefix_name
from tests.conftest import EVENTS, clear_outputs, event_keys, load_event, png_bytes, read_json
from tests.e2e.conftest import INSIGHTS_SPEC, TABULAR_METHODS, is_table, upload_metadata

pytestmark = pytest.mark.e2e

#: Layers after the shared ones that differ per function: requirements file, their install, app.py.
FUNCTION_LAYERS = 3
#: Cheap methods per family for the text demo model's uploads.
TEXT_METHODS = {"gradient": "Saliency,IntegratedGradients", "perturbation": "WordOcclusion",
                "shap": "TextPartitionExplainer"}


@pytest.fixture(scope="session")
def container_text_model(container_deployment):
    """The sentiment demo model (devtools.text_demo) published on the emulator container."""
    text_demo.publish(container_deployment.client("s3"), container_deployment.bucket("ModelBucket"))
    return text_demo


def is_text(key: str) -> bool:
    """An upload for the text demo model (its inputs are .txt, .jsonl and .csv files)."""
    return f"/{text_demo.MODEL}/{text_demo.VERSION}/" in key


def event_files(family: str) -> list[str]:
    """Every event file whose records target this family's queue."""
    return sorted(path.name for path in EVENTS.glob("*.json")
                  if f"explain-{family}-queue-local" in path.read_text())


def test_images_are_lean_enough_to_deploy(built_images):
    for function, tag in built_images.items():
        size = containers.image_size(tag)
        # Lambda's limit is 10 GB uncompressed; the naive install of this stack is 7.7 GB.
        assert size < 4e9, f"{function} image is {size / 1e9:.2f} GB"


#: Size budgets (uncompressed bytes): the issue's 1.5 GB per ML image; the shap image's own layer
#: (llvmlite, pandas, numba, XGBoost: all loaded at run time) keeps it above that (docs/containers.md#sizes).
SHAP_IMAGE_BUDGET, LIGHT_IMAGE_BUDGET = 1.8e9, 0.3e9


def test_images_hold_what_their_dockerfiles_install(built_images):
    """The base stand-in is plain Python like AWS's, so sizes measure what an AWS build installs."""
    listed = containers.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "/var/lang/bin/pip",
                             containers.BASE_IMAGE, "list", "--format", "json"]).stdout
    in_base = {package["name"].lower() for package in json.loads(listed)}
    assert not in_base & {"tensorflow-cpu", "numpy", "xplique", "shap", "boto3", "aws-lambda-powertools"}, in_base
    assert "awslambdaric" in in_base
    for function in ("ApiFunction", "AuthorizerFunction"):
        size = containers.image_size(containers.built_image(function))
        assert size < LIGHT_IMAGE_BUDGET, f"{function} image is {size / 1e9:.3f} GB"
    for function, tag in built_images.items():
        size = containers.image_size(tag)
        budget = SHAP_IMAGE_BUDGET if function == "ShapFunction" else images_section.TARGET_BYTES
        assert size <= budget, f"{function} image is {size / 1e9:.3f} GB, over {budget / 1e9} GB"


def test_functions_share_the_heavy_layers(built_images):
    layers = {f: json.loads(containers.run(["docker", "image", "inspect", tag, "--format",
                                            "{{json .RootFS.Layers}}"]).stdout)
              for f, tag in built_images.items()}
    assert len(layers) == len(FAMILY_FUNCTIONS) + 1 >= 4  # the families' and the insights function
    for (first, a), (second, b) in combinations(sorted(layers.items()), 2):
        shared = 0
        while shared < min(len(a), len(b)) and a[shared] == b[shared]:
            shared += 1
        # Base image, shared requirements layer and shared code are identical, in the same order;
        # only the function's own requirements and handler differ (the shap image adds SHAP and
        # XGBoost in its requirements layer, and numba's cache in a layer after its handler).
        assert shared >= min(len(a), len(b)) - FUNCTION_LAYERS, (first, second, shared, len(a), len(b))


@pytest.mark.parametrize("family,function", sorted(FAMILY_FUNCTIONS.items()))
def test_sam_local_invoke_every_event(function, family, container_deployment, env_file, container_emulator,
                                      samples, request, tmp_path):
    s3 = container_deployment.client("s3")
    images, labels, _ = samples
    files = event_files(family)
    assert files, f"no event file for {family}"
    for name in files:
        event = load_event(name)
        clear_outputs(s3, container_deployment, family)
        keys = [key for key in event_keys(event) if key.startswith(f"incoming/{family}/")]
        for i, key in enumerate(keys):
            if is_text(key):
                request.getfixturevalue("container_text_model")
                name = key.rsplit("/", 1)[1]
                files = text_demo.sample_files()
                s3.put_object(Bucket=container_deployment.bucket("InputBucket"), Key=key,
                              Body=files.get(name, files["review.txt"]), Metadata={"methods": TEXT_METHODS[family]})
                continue
            if is_table(key):
                # Only the shap family's tests need the tabular demo models.
                tabular_demo = request.getfixturevalue("tabular_models")
                rows, _ = tabular_demo.sample_rows(4)
                body = (tabular_demo.sample_csv(rows) if key.lower().endswith(".csv")
                        else tabular_demo.sample_jsonl(rows))
            else:
                body = png_bytes(images[i % len(images)])
            s3.put_object(Bucket=container_deployment.bucket("InputBucket"), Key=key, Body=body,
                          Metadata=upload_metadata(family, key))

        delivered = tmp_path / name  # the notification of these uploads: their ETags
        delivered.write_text(json.dumps(deliver(event, s3)))
        invocation = containers.sam_local_invoke(function, delivered, container_emulator, env_file)

        failures = [r["itemIdentifier"] for r in invocation.response.get("batchItemFailures", [])]
        poison = [r["messageId"] for r in event["Records"] if not r["body"].startswith("{")]
        assert invocation.response != {}, invocation.output[-3000:]
        assert failures == poison, invocation.output[-3000:]
        for i, key in enumerate(keys):
            if is_text(key):
                check_text_manifest(s3, container_deployment, key, family)
                continue
            image_model = any(key.startswith(f"incoming/{family}/{model}/v1/") for model in (
                demo_model.NAME, demo_model.SAGEMAKER_NAME)) and not is_table(key)
            tabular_model = is_table(key) and any(key.startswith(f"incoming/{family}/{model}/v1/")
                                                  for model in TABULAR_METHODS)
            if not (image_model or tabular_model):
                continue  # unknown model or no version: error records, checked by the functional tests
            manifest = read_json(s3, container_deployment.bucket("ResultsBucket"),
                                 f"results/{key.removeprefix('incoming/')}/manifest.json")
            assert manifest["status"] == "succeeded", (key, manifest)
            if image_model:
                assert manifest["predictions"][0]["class_index"] == labels[i % len(labels)]
            assert manifest["output_keys"], key
            for output in manifest["output_keys"]:
                head = s3.head_object(Bucket=container_deployment.bucket("ResultsBucket"), Key=output)
                assert head["ContentLength"] > 0


def check_text_manifest(s3, deployment, key: str, family: str) -> None:
    """A text upload's manifest: succeeded, each document predicted as the demo's truth says, its files written."""
    manifest = read_json(s3, deployment.bucket("ResultsBucket"),
                         f"results/{key.removeprefix('incoming/')}/manifest.json")
    assert manifest["status"] == "succeeded", (key, manifest)
    name = key.rsplit("/", 1)[1]
    truth = text_demo.sample_truth().get(name, text_demo.sample_truth()["review.txt"])
    assert [d["class_name"] for d in manifest["predictions"]["documents"]] == [t["label"] for t in truth], key
    assert {m["name"] for m in manifest["methods"]} == set(TEXT_METHODS[family].split(","))
    assert all(m["status"] == "succeeded" for m in manifest["methods"]), manifest["methods"]
    assert manifest["output_keys"], key
    for output in manifest["output_keys"]:
        assert s3.head_object(Bucket=deployment.bucket("ResultsBucket"), Key=output)["ContentLength"] > 0


# ------------------------------------------------------------------------------------------ the insights function
#: Where the demo job's results go: results/insights/<model>/<version>/<job name>/.
INSIGHTS_JOB = "results/insights/shapes/v1/demo-insights/"


def drain(sqs, queue_url: str) -> list[dict]:
    """Every message of a queue, received and deleted (moto delivers synchronously: a short wait suffices)."""
    messages = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                    AttributeNames=["All"]).get("Messages", [])
        if not batch:
            return messages
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        messages += batch


def with_spec_etag(event: dict, etag: str) -> dict:
    """A part event (events/insights-part.json) for the plan of the spec version ``etag``, as the planner sends it."""
    event = json.loads(json.dumps(event))
    for record in event["Records"]:
        body = json.loads(record["body"])
        body["insights_part"]["spec_etag"] = etag
        record["body"] = json.dumps(body)
    return event


@pytest.fixture(scope="module")
def planned_insights_job(container_deployment, env_file, container_emulator, samples, tmp_path_factory):
    """The demo specification uploaded (an image beside it), then ``sam local invoke InsightsFunction`` with
    events/insights-upload.json: (spec key, its ETag, the invocation, what the emulator's queue received before
    the invocation and after it)."""
    s3, sqs = container_deployment.client("s3"), container_deployment.client("sqs")
    inputs, queue_url = container_deployment.bucket("InputBucket"), container_deployment.queue_urls["InsightsQueue"]
    event = load_event("insights-upload.json")
    (key,) = event_keys(event)
    clear_outputs(s3, container_deployment, "insights")
    sqs.purge_queue(QueueUrl=queue_url)
    s3.put_object(Bucket=inputs, Key=key, Body=json.dumps(INSIGHTS_SPEC).encode(), ContentType="application/json")
    images, _, _ = samples
    s3.put_object(Bucket=inputs, Key=key.rsplit("/", 1)[0] + "/images/circle/0.png", Body=png_bytes(images[0]))
    before = drain(sqs, queue_url)  # the emulator's own notifications: the invocation below stands for them
    delivered = tmp_path_factory.mktemp("insights") / "insights-upload.json"
    delivered.write_text(json.dumps(deliver(event, s3)))
    invocation = containers.sam_local_invoke(INSIGHTS_FUNCTION, delivered, container_emulator, env_file)
    etag = s3.head_object(Bucket=inputs, Key=key)["ETag"].strip('"')
    return key, etag, invocation, before, drain(sqs, queue_url)


def test_only_the_specification_notifies_the_insights_queue(planned_insights_job):
    key, _, _, before, _ = planned_insights_job
    assert notified_keys(before) == [key]  # not the image uploaded beside it


def test_sam_local_invoke_insights_upload_plans_the_job_and_queues_its_parts(planned_insights_job,
                                                                             container_deployment):
    key, etag, invocation, _, after = planned_insights_job
    s3 = container_deployment.client("s3")
    assert invocation.response == {"batchItemFailures": []}, invocation.output[-3000:]
    # results/insights/<model>/<version>/<job name>/plan.json, for this version of the specification.
    results = container_deployment.bucket("ResultsBucket")
    plan = read_json(s3, results, INSIGHTS_JOB + "plan.json")
    assert plan["spec_etag"] == etag and plan["job"]["spec_key"] == key
    assert plan["spec"]["feature_visualization"]["steps"] == INSIGHTS_SPEC["feature_visualization"]["steps"]
    assert plan["spec"]["seed"] == INSIGHTS_SPEC["seed"]
    assert (plan["model"]["name"], plan["model"]["version"]) == ("shapes", "v1") and plan["model"]["etag"]
    ids = [part["id"] for part in plan["parts"]]
    assert "fv-00-000" in ids and len(ids) >= len(INSIGHTS_SPEC["feature_visualization"]["objectives"])
    assert {part["kind"] for part in plan["parts"]} == {"feature_visualization"}
    assert all(0 < part["estimated_seconds"] <= plan["max_part_seconds"] for part in plan["parts"])
    assert plan["seconds_per_pass"] > 0
    # One message per part on the function's own queue (INSIGHTS_QUEUE_URL), naming this plan.
    bodies = [json.loads(message["Body"]) for message in after]
    assert all(set(body) == {"insights_part"} for body in bodies), bodies
    parts = [body["insights_part"] for body in bodies]
    assert sorted(part["part"] for part in parts) == sorted(ids)
    assert {(part["spec_key"], part["spec_etag"]) for part in parts} == {(key, etag)}
    # No report yet (no part ran) and no error record.
    for missing in (INSIGHTS_JOB + "report.json", "errors/insights/"):
        assert not s3.list_objects_v2(Bucket=results, Prefix=missing)["KeyCount"], missing


def test_sam_local_invoke_insights_part_runs_it(planned_insights_job, container_deployment, env_file,
                                                container_emulator, tmp_path):
    """events/insights-part.json (the first part of the demo job), with the ETag of the plan above."""
    _, etag, _, _, _ = planned_insights_job
    s3, results = container_deployment.client("s3"), container_deployment.bucket("ResultsBucket")
    event = load_event("insights-part.json")
    (part_id,) = {json.loads(record["body"])["insights_part"]["part"] for record in event["Records"]}
    delivered = tmp_path / "insights-part.json"
    delivered.write_text(json.dumps(with_spec_etag(event, etag)))
    invocation = containers.sam_local_invoke(INSIGHTS_FUNCTION, delivered, container_emulator, env_file)
    assert invocation.response == {"batchItemFailures": []}, invocation.output[-3000:]
    outcome = read_json(s3, results, f"{INSIGHTS_JOB}{part_prefix_name(etag, part_id)}part.json")
    assert (outcome["id"], outcome["status"], outcome["spec_etag"]) == (part_id, "succeeded", etag), outcome
    assert outcome["kind"] == "feature_visualization" and outcome["files"] and outcome["seconds"] > 0
    for key in outcome["files"].values():
        assert key.startswith(f"{INSIGHTS_JOB}{part_prefix_name(etag, part_id)}")
        body = s3.get_object(Bucket=results, Key=key)["Body"].read()
        assert body and (not key.endswith(".png") or body.startswith(b"\x89PNG")), key
    # Another part is still to run: nothing is assembled yet.
    assert not s3.list_objects_v2(Bucket=results, Prefix=INSIGHTS_JOB + "report.json")["KeyCount"]
