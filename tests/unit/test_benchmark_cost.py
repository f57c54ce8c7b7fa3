"""The cost section's arithmetic (devtools/benchmark/cost.py) and its request counter on the emulator."""

import math

import numpy as np
import pytest
from botocore.exceptions import ClientError

from devtools.benchmark.cost import (
    PRICES,
    Prices,
    Usage,
    clarify_synthetic_rows,
    cost_per_thousand,
    count_kernel_rows,
    poller_requests,
    s3_tier,
    sqs_billed,
)
from devtools.benchmark.requests import RequestCounter, dynamodb_item_bytes, operation_counts


def test_cost_per_thousand_matches_a_hand_computed_case():
    usage = Usage(invocation_s=1.0, batch=8, memory_mb=2048, ephemeral_mb=512, s3_tier1=6, s3_tier2=2,
                  sqs_requests=1.25, dynamodb_write_units=2, dynamodb_read_units=0.5)
    cost = cost_per_thousand(usage, Prices())
    # 1000 / 8 = 125 invocations of 1 s at 2 GB = 250 GB-s; /tmp at the free 512 MB costs nothing.
    assert cost["invocations"] == 125
    assert cost["gb_seconds"] == pytest.approx(250.0)
    assert cost["lambda_compute"] == pytest.approx(250 * 0.0000166667)
    assert cost["lambda_requests"] == pytest.approx(125 * 0.20 / 1e6)
    assert cost["s3"] == pytest.approx(1000 * (6 * 0.005 / 1000 + 2 * 0.0004 / 1000))  # 0.0308
    assert cost["sqs"] == pytest.approx(1000 * 1.25 * 0.40 / 1e6)  # 0.0005
    assert cost["dynamodb"] == pytest.approx(1000 * (2 * 0.625 + 0.5 * 0.125) / 1e6)  # 0.0013125
    assert cost["total"] == pytest.approx(0.004166675 + 0.000025 + 0.0308 + 0.0005 + 0.0013125)


def test_lambda_duration_is_rounded_up_to_the_millisecond_and_tmp_above_512_mb_is_billed():
    usage = Usage(invocation_s=0.0101, batch=1, memory_mb=1024, ephemeral_mb=2048)
    cost = cost_per_thousand(usage, Prices())
    billed = 1000 * 0.011  # 1000 invocations of 11 ms, not 10.1
    assert cost["gb_seconds"] == pytest.approx(billed * 1.0)
    assert cost["lambda_compute"] == pytest.approx(billed * 0.0000166667 + billed * 1.5 * 0.0000000309)
    exact = cost_per_thousand(Usage(invocation_s=0.011, batch=1, memory_mb=1024), Prices())
    assert exact["gb_seconds"] == pytest.approx(11.0)  # a whole millisecond is not rounded up once more


def test_arm64_functions_use_the_arm_price():
    x86 = cost_per_thousand(Usage(invocation_s=1.0, batch=1, memory_mb=1024), PRICES)
    arm = cost_per_thousand(Usage(invocation_s=1.0, batch=1, memory_mb=1024, architecture="arm64"), PRICES)
    assert arm["lambda_compute"] / x86["lambda_compute"] == pytest.approx(0.0000133334 / 0.0000166667)


def test_clarify_synthetic_dataset_sizes_are_the_documented_ones():
    assert clarify_synthetic_rows(10, 1) == 1022  # the documentation's example
    assert clarify_synthetic_rows(20, 1) == 2088  # 2 x 20 + 2^11, below 2^20 - 2
    assert clarify_synthetic_rows(10, 1, number_of_samples=500) == 500
    assert clarify_synthetic_rows(10, 1, number_of_samples=5000) == 1022
    assert clarify_synthetic_rows(30, 32) == 32 * (60 + 2048)


def test_sqs_requests_are_billed_per_64_kb_chunk():
    assert sqs_billed(0) == 1
    assert sqs_billed(64 * 1024) == 1
    assert sqs_billed(64 * 1024 + 1) == 2
    assert poller_requests(8, 536) == {"receive": 1, "delete": 1}
    # 12 messages: two receives (10 + 2 messages); the first returns 100,000 bytes: 2 chunks.
    assert poller_requests(12, 10_000) == {"receive": 3, "delete": 2}


def test_dynamodb_item_size_counts_names_and_values():
    assert dynamodb_item_bytes({"id": {"S": "abc"}, "n": {"N": "123"}}) == (2 + 3) + (1 + 3)
    assert dynamodb_item_bytes({"m": {"M": {"k": {"BOOL": True}}}}) == 1 + 3 + (1 + 1)


def test_s3_operations_fall_in_their_pricing_tier():
    assert [s3_tier(op) for op in ("PutObject", "CopyObject", "ListObjectsV2", "CompleteMultipartUpload")] == [1] * 4
    assert [s3_tier(op) for op in ("GetObject", "HeadObject", "GetObjectTagging")] == [2] * 3
    assert [s3_tier(op) for op in ("DeleteObject", "DeleteObjects")] == [0, 0]


def test_request_counter_counts_every_call_of_clients_created_before_it(deployment):
    s3, sqs = deployment.client("s3"), deployment.client("sqs")  # created before the counter is installed
    dynamodb = deployment.client("dynamodb")
    bucket, table = deployment.bucket("ResultsBucket"), deployment.tables["IdempotencyTable"]
    queue_url = next(iter(deployment.queue_urls.values()))
    sqs.purge_queue(QueueUrl=queue_url)
    counter = RequestCounter()
    with counter.installed():
        s3.put_object(Bucket=bucket, Key="cost-test/outside.txt", Body=b"12345")
        with counter.invocation():
            s3.put_object(Bucket=bucket, Key="cost-test/a.json", Body=b"x" * 300)
            s3.head_object(Bucket=bucket, Key="cost-test/a.json")
            with pytest.raises(ClientError):
                s3.head_object(Bucket=bucket, Key="cost-test/missing.json")  # a 404: billed, so counted
            s3.get_object(Bucket=bucket, Key="cost-test/a.json")["Body"].read()
            dynamodb.put_item(TableName=table, Item={"id": {"S": "cost-test"}})
            dynamodb.get_item(TableName=table, Key={"id": {"S": "cost-test"}}, ConsistentRead=True)
        sqs.send_message(QueueUrl=queue_url, MessageBody="m" * 100)
        received = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", [])
    s3.head_object(Bucket=bucket, Key="cost-test/a.json")  # uninstalled: not counted

    assert counter.last_invocation == 0
    inside = counter.of_invocation(0)
    assert operation_counts(inside) == {"dynamodb:GetItem": 1, "dynamodb:PutItem": 1, "s3:GetObject": 1,
                                        "s3:HeadObject": 2, "s3:PutObject": 1}
    assert [c.request_bytes for c in inside if c.operation == "PutObject"] == [300]
    assert [c.read_units for c in inside if c.operation == "GetItem"] == [1.0]
    assert [c.item_bytes for c in inside if c.operation == "PutItem"] == [len("id") + len("cost-test")]
    assert {c.target for c in inside if c.service == "s3"} == {bucket}
    outside = counter.outside_handlers()
    assert operation_counts(outside) == {"s3:PutObject": 1, "sqs:ReceiveMessage": 1, "sqs:SendMessage": 1}
    assert [c.request_bytes for c in outside if c.operation == "SendMessage"] == [100]
    assert len(received) == 1
    assert [c.messages for c in outside if c.operation == "ReceiveMessage"] == [[(received[0]["MessageId"], 100)]]
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=received[0]["ReceiptHandle"])


def test_kernel_explainer_rows_are_counted_and_capped_at_every_coalition():
    import keras

    from explain_core.model_card import ModelCard

    features, background_rows = 4, 3
    inputs = keras.Input((features,), name="features")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(hidden), name="cost_test_mlp")
    card = ModelCard.model_validate({
        "name": "cost-test", "version": "v1", "modality": "tabular", "model_file": "model.keras",
        "feature_names": [f"f{i}" for i in range(features)], "class_names": ["no", "yes"],
        "explained_classes": ["yes"], "output": "logits",
    })
    rng = np.random.default_rng(0)
    background = rng.normal(size=(background_rows, features))
    records = rng.normal(size=(2, features)) + 5.0  # every feature differs from the background: all vary
    counted = count_kernel_rows(model, card, background, records, 64, nb_samples=None)  # default 500
    coalitions = 2 ** features - 2  # 14 < 500: shap enumerates them all
    assert counted["nb_samples"] == 500
    assert counted["coalitions"] == coalitions
    assert counted["rows_per_record"] == coalitions * background_rows + 1
    assert counted["first_call_extra_rows"] == background_rows  # the expected value, scored once
    assert math.isclose(counted["rows_per_record"] / clarify_synthetic_rows(features, background_rows),
                        (coalitions * background_rows + 1) / (coalitions * background_rows))
