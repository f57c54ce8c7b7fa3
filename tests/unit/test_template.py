"""template.yaml's REST API, tables and permissions, checked on the parsed template.

``sam validate --lint`` checks that the template is well formed; these check what it is meant to
say: every route behind the authorizer, throttled, typed error bodies, encrypted tables and least
privilege per function.
"""

import json
import re

import pytest

from devtools.local import FAMILY_FUNCTIONS
from devtools.local.aws import load_template
from explain_core.api_models import ErrorResponse
from explain_core.registry import FAMILIES

TABLE_KEYS = {"JobsTable": "job_id", "IdempotencyTable": "id", "ApiClientsTable": "key_hash"}
API_ROUTES = {("GET", "/models"), ("GET", "/models/{name}/{version}"), ("GET", "/methods"), ("POST", "/uploads"),
              ("GET", "/jobs/{job_id}"), ("POST", "/sanity-checks"),
              ("GET", "/sanity-checks/{family}/{name}/{version}/{request_id}")}
S3_WRITES = ("s3:Put", "s3:Delete", "s3:Restore", "s3:*", "*")
GATEWAY_RESPONSES = {  # response type -> (status code, error code)
    "UNAUTHORIZED": ("401", "unauthorized"),
    "ACCESS_DENIED": ("403", "forbidden"),
    "THROTTLED": ("429", "throttled"),
    "REQUEST_TOO_LARGE": ("413", "request_too_large"),
    "INTEGRATION_TIMEOUT": ("504", "timeout"),
}


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template()


@pytest.fixture(scope="module")
def resources(template) -> dict:
    return template["Resources"]


@pytest.fixture(scope="module")
def functions(resources) -> dict:
    return {lid: r for lid, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}


@pytest.fixture(scope="module")
def api(resources) -> dict:
    return resources["ExplanationsApi"]["Properties"]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def statements(function: dict) -> list[dict]:
    policies = function["Properties"].get("Policies", [])
    assert all(isinstance(p, dict) for p in policies), "managed or SAM policy templates hide what is granted"
    return [statement for policy in policies for statement in policy["Statement"]]


def targets(resource) -> tuple[str, str]:
    """(logical id, key pattern) of a policy resource: ``!Sub "${InputBucket.Arn}/uploads/*"`` -> ("InputBucket",
    "uploads/*"); a bare ``!GetAtt X.Arn`` -> ("X", "")."""
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        logical_id, attribute = resource["Fn::GetAtt"]
        assert attribute == "Arn"
        return logical_id, ""
    assert isinstance(resource, dict) and "Fn::Sub" in resource, f"resource not tied to the stack: {resource}"
    match = re.fullmatch(r"\$\{(\w+)\.Arn\}/(.+)", resource["Fn::Sub"])
    assert match, resource
    return match.group(1), match.group(2)


def granted(function: dict, predicate) -> set[tuple[str, str]]:
    """Every (logical id, key pattern) an Allow statement grants an action matching ``predicate`` on."""
    found = set()
    for statement in statements(function):
        assert statement["Effect"] == "Allow"
        if any(predicate(action) for action in as_list(statement["Action"])):
            found |= {targets(resource) for resource in as_list(statement["Resource"])}
    return found


def api_events(function: dict) -> list[dict]:
    return [e["Properties"] for e in function["Properties"].get("Events", {}).values() if e["Type"] == "Api"]


def test_every_family_of_the_registry_has_a_function(functions):
    """FAMILY_FUNCTIONS is read from this template (a function's code directory names its family)."""
    assert list(FAMILY_FUNCTIONS) == list(FAMILIES)
    assert set(FAMILY_FUNCTIONS.values()) <= set(functions)


def test_every_route_is_on_the_explanations_api_behind_its_authorizer(functions):
    routes = {}
    for logical_id, function in functions.items():
        for event in api_events(function):
            assert event["RestApiId"] == {"Ref": "ExplanationsApi"}, logical_id
            assert event.get("Auth", {}).get("Authorizer") != "NONE", (logical_id, event["Path"])
            routes[(event["Method"].upper(), event["Path"])] = logical_id
        assert not [e for e in function["Properties"].get("Events", {}).values() if e["Type"] == "HttpApi"]
    expected = {("POST", f"/explanations/{family}"): f for family, f in FAMILY_FUNCTIONS.items()}
    expected |= {route: "ApiFunction" for route in API_ROUTES}
    assert routes == expected


def test_the_only_api_has_a_token_lambda_authorizer_on_the_authorization_header(resources, api):
    assert [lid for lid, r in resources.items() if r["Type"].endswith(("::Api", "::HttpApi", "::RestApi"))] == [
        "ExplanationsApi"]
    auth = api["Auth"]
    authorizer = auth["Authorizers"][auth["DefaultAuthorizer"]]
    assert authorizer["FunctionPayloadType"] == "TOKEN"
    assert authorizer["FunctionArn"] == {"Fn::GetAtt": ["AuthorizerFunction", "Arn"]}
    assert authorizer["Identity"]["Header"] == "Authorization"
    assert auth["AddDefaultAuthorizerToCorsPreflight"] is False
    assert api["StageName"] == "v1"


def test_the_stage_is_throttled(template, api):
    (setting,) = [s for s in api["MethodSettings"] if s["ResourcePath"] == "/*" and s["HttpMethod"] == "*"]
    assert setting["ThrottlingRateLimit"] == {"Ref": "ApiThrottleRate"}
    assert setting["ThrottlingBurstLimit"] == {"Ref": "ApiThrottleBurst"}
    parameters = template["Parameters"]
    assert 0 < parameters["ApiThrottleRate"]["Default"] <= parameters["ApiThrottleBurst"]["Default"]


@pytest.mark.parametrize("response_type", [*GATEWAY_RESPONSES, "DEFAULT_4XX", "DEFAULT_5XX"])
def test_gateway_refusals_have_typed_json_bodies(api, response_type):
    response = api["GatewayResponses"][response_type]
    # What API Gateway substitutes: $context.error.messageString is a quoted JSON string.
    body = response["ResponseTemplates"]["application/json"].replace("$context.error.messageString", '"message"')
    body = body.replace("$context.requestId", "c6af9ac6-7b61-11e6-9a41-93e8deadbeef")
    # The documented error schema (openapi.json's ErrorResponse) holds for the gateway's refusals too.
    parsed = ErrorResponse.model_validate_json(body)
    assert parsed.request_id and parsed.error.message
    error = json.loads(body)["error"]
    assert set(error) == {"type", "code", "message", "details"}
    if response_type in GATEWAY_RESPONSES:
        status, code = GATEWAY_RESPONSES[response_type]
        assert (str(response["StatusCode"]), error["code"]) == (status, code)


@pytest.mark.parametrize("table", sorted(TABLE_KEYS))
def test_tables_are_encrypted_on_demand_and_keyed_as_the_contract_says(resources, table):
    props = resources[table]["Properties"]
    assert resources[table]["Type"] == "AWS::DynamoDB::Table"
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": TABLE_KEYS[table], "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": TABLE_KEYS[table], "AttributeType": "S"}]


def test_api_clients_can_be_restored(resources):
    assert resources["ApiClientsTable"]["Properties"]["PointInTimeRecoverySpecification"] == {
        "PointInTimeRecoveryEnabled": True}


@pytest.mark.parametrize("family,function", sorted(FAMILY_FUNCTIONS.items()))
def test_a_family_function_writes_only_its_own_prefixes(functions, function, family):
    writes = granted(functions[function], lambda action: action.startswith(S3_WRITES))
    assert writes == {
        ("InputBucket", f"incoming/{family}/*"), ("InputBucket", f"requests/{family}/*"),
        ("ResultsBucket", f"results/{family}/*"), ("ResultsBucket", f"errors/{family}/*"),
    }
    dynamodb = granted(functions[function], lambda action: action.startswith("dynamodb:"))
    assert dynamodb == {("JobsTable", ""), ("IdempotencyTable", "")}
    assert granted(functions[function], lambda action: action.startswith("dynamodb:") and action not in {
        "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}) == set()


def test_the_api_function_writes_only_uploads_and_sanity_check_requests_and_reads_jobs(functions):
    api = functions["ApiFunction"]
    assert granted(api, lambda action: action.startswith(S3_WRITES)) == {
        ("InputBucket", "uploads/*"), ("InputBucket", "incoming/*/sanity-checks/*")}
    assert granted(api, lambda action: action.startswith("dynamodb:")) == {("JobsTable", "")}
    assert granted(api, lambda action: action.startswith("dynamodb:") and action != "dynamodb:GetItem") == set()


def test_the_authorizer_can_only_read_api_clients(functions):
    authorizer = functions["AuthorizerFunction"]
    assert granted(authorizer, lambda action: True) == {("ApiClientsTable", "")}
    assert {action for s in statements(authorizer) for action in as_list(s["Action"])} == {"dynamodb:GetItem"}
    assert not authorizer["Properties"].get("Events")


def test_functions_name_their_tables(template, functions):
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["JOBS_TABLE"] == {"Ref": "JobsTable"}
    assert variables["PRESIGN_ENDPOINT_URL"] == {"Ref": "PresignEndpointUrl"}
    assert template["Parameters"]["PresignEndpointUrl"]["Default"] == ""
    for function in FAMILY_FUNCTIONS.values():
        assert functions[function]["Properties"]["Environment"]["Variables"]["IDEMPOTENCY_TABLE"] == {
            "Ref": "IdempotencyTable"}
    assert functions["AuthorizerFunction"]["Properties"]["Environment"]["Variables"]["API_CLIENTS_TABLE"] == {
        "Ref": "ApiClientsTable"}


def test_api_inputs_expire_and_synchronous_requests_are_not_requeued(resources):
    props = resources["InputBucket"]["Properties"]
    rules = {rule["Id"]: rule for rule in props["LifecycleConfiguration"]["Rules"]}
    assert rules["abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    expiry = {rule["Prefix"]: rule["ExpirationInDays"] for rule in rules.values() if "Prefix" in rule}
    assert expiry == {"uploads/": 1, "requests/": 30}
    prefixes = [rule["Value"] for config in props["NotificationConfiguration"]["QueueConfigurations"]
                for rule in config["Filter"]["S3Key"]["Rules"] if rule["Name"] == "prefix"]
    assert prefixes and all(prefix.startswith("incoming/") for prefix in prefixes)
