"""devtools.local.aws: the emulator wired from template.yaml, tables and API-only functions included."""

import pytest

from devtools.local.aws import load_template, local_name
from devtools.local.lambda_service import SqsEventSource

TABLES = ("JobsTable", "IdempotencyTable", "ApiClientsTable")


def test_deploy_creates_every_table_of_the_template(deployment):
    dynamodb = deployment.client("dynamodb")
    resources = load_template()["Resources"]
    assert deployment.tables == {table: local_name(table) for table in TABLES}
    for logical_id, name in deployment.tables.items():
        props = resources[logical_id]["Properties"]
        table = dynamodb.describe_table(TableName=name)["Table"]
        assert table["KeySchema"] == props["KeySchema"]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if "TimeToLiveSpecification" in props:
            assert ttl["AttributeName"] == props["TimeToLiveSpecification"]["AttributeName"]
            assert ttl["TimeToLiveStatus"] == "ENABLED"
        else:
            assert ttl["TimeToLiveStatus"] == "DISABLED"


def test_functions_name_the_local_tables(deployment):
    functions = deployment.functions
    for wiring in functions.values():
        assert wiring.environment["JOBS_TABLE"] == deployment.tables["JobsTable"]
    for family in ("gradient", "perturbation", "shap"):
        environment = deployment.function_for_family(family).environment
        assert environment["IDEMPOTENCY_TABLE"] == deployment.tables["IdempotencyTable"]
    assert functions["AuthorizerFunction"].environment["API_CLIENTS_TABLE"] == deployment.tables["ApiClientsTable"]


def test_api_only_functions_are_wired_without_a_queue(deployment):
    api = deployment.functions["ApiFunction"]
    assert (api.module, api.queue, api.batch_size, api.batching_window) == ("functions.api.app", None, 0, 0)
    assert sorted(api.api_routes) == [("GET", "/jobs/{job_id}"), ("GET", "/methods"), ("GET", "/models"),
                                      ("GET", "/models/{name}/{version}"),
                                      ("GET", "/sanity-checks/{family}/{name}/{version}/{request_id}"),
                                      ("POST", "/insights"), ("POST", "/sanity-checks"), ("POST", "/uploads")]
    authorizer = deployment.functions["AuthorizerFunction"]
    assert (authorizer.module, authorizer.queue, authorizer.api_routes) == ("functions.authorizer.app", None, [])
    with pytest.raises(ValueError, match="no SQS event"):
        SqsEventSource(deployment, api, handler=lambda event, context: None)


@pytest.mark.parametrize("family", ["gradient", "perturbation", "shap"])
def test_family_functions_keep_their_queue_and_gain_one_route(deployment, family):
    wiring = deployment.function_for_family(family)
    assert wiring.queue == f"{family.capitalize()}Queue"
    assert wiring.queue in deployment.queue_urls and wiring.batch_size > 0
    assert wiring.api_routes == [("POST", f"/explanations/{family}")]
