"""template.yaml's REST API, tables and permissions, checked on the parsed template.

``sam validate --lint`` checks that the template is well formed; these check what it is meant to
say: every route behind the authorizer, throttled, typed error bodies, encrypted tables and least
privilege per function.
"""

import json
import re

import pytest

from devtools.local import FAMILY_FUNCTIONS
from devtools.local.aws import INSIGHTS_FUNCTION, load_template, local_name
from devtools.local.lambda_service import notified_keys
from explain_core.api_models import ErrorResponse
from explain_core.registry import FAMILIES

TABLE_KEYS = {"JobsTable": "job_id", "IdempotencyTable": "id", "ApiClientsTable": "key_hash"}
API_ROUTES = {("GET", "/models"), ("GET", "/models/{name}/{version}"), ("GET", "/methods"), ("POST", "/uploads"),
              ("GET", "/jobs/{job_id}"), ("POST", "/sanity-checks"),
              ("GET", "/sanity-checks/{family}/{name}/{version}/{request_id}"), ("POST", "/insights")}
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


def test_the_api_function_writes_only_uploads_sanity_check_requests_and_insights_jobs(functions):
    api = functions["ApiFunction"]
    assert granted(api, lambda action: action.startswith(S3_WRITES)) == {
        ("InputBucket", "uploads/*"), ("InputBucket", "incoming/*/sanity-checks/*"),
        ("InputBucket", "incoming/insights/*/jobs/*")}
    assert granted(api, lambda action: action.startswith("dynamodb:")) == {("JobsTable", ""), ("IdempotencyTable", "")}
    # GET /jobs reads job records; POST /insights creates one (and removes it if its specification is not stored);
    # its idempotency records make a retried POST one job.
    jobs = [s for s in statements(api) if "JobsTable" in json.dumps(s["Resource"])]
    assert {action for s in jobs for action in as_list(s["Action"]) if action.startswith("dynamodb:")} == {
        "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"}
    # Nothing but PutObject on the insights specifications: no read, no delete, no other prefix of incoming/insights/.
    assert granted(api, lambda action: action != "s3:PutObject") & {
        ("InputBucket", "incoming/insights/*/jobs/*")} == set()


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


# ------------------------------------------------------------------------------------------ the insights function
#: Every (action, resource, s3:prefix condition) InsightsFunction is granted; nothing else.
INSIGHTS_GRANTS = {
    ("s3:GetObject", ("InputBucket", "incoming/insights/*"), None),
    ("s3:GetObjectVersion", ("InputBucket", "incoming/insights/*"), None),
    ("s3:ListBucket", ("InputBucket", ""), ("incoming/insights/*",)),
    ("s3:GetObject", ("ModelBucket", "models/*"), None),
    ("s3:ListBucket", ("ModelBucket", ""), ("models/*",)),
    *((action, ("ResultsBucket", prefix), None) for action in ("s3:PutObject", "s3:GetObject")
      for prefix in ("results/insights/*", "errors/insights/*")),
    ("s3:DeleteObject", ("ResultsBucket", "errors/insights/*"), None),  # stale error records only, no result
    ("s3:ListBucket", ("ResultsBucket", ""), ("errors/insights/*", "results/insights/*")),
    ("sqs:SendMessage", ("InsightsQueue", ""), None),
    ("dynamodb:UpdateItem", ("JobsTable", ""), None),
    *((f"dynamodb:{action}", ("IdempotencyTable", ""), None) for action in ("GetItem", "PutItem", "UpdateItem",
                                                                           "DeleteItem")),
}


def sqs_sources(function: dict) -> list[dict]:
    return [e["Properties"] for e in function["Properties"].get("Events", {}).values() if e["Type"] == "SQS"]


def grants(function: dict) -> set[tuple]:
    """(action, (logical id, key pattern), sorted s3:prefix values or None) of every Allow statement."""
    found = set()
    for statement in statements(function):
        assert statement["Effect"] == "Allow" and set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        condition = statement.get("Condition")
        if condition is not None:
            assert list(condition) == ["StringLike"] and list(condition["StringLike"]) == ["s3:prefix"], condition
            condition = tuple(sorted(as_list(condition["StringLike"]["s3:prefix"])))
        for action in as_list(statement["Action"]):
            found |= {(action, targets(resource), condition) for resource in as_list(statement["Resource"])}
    return found


def test_the_insights_function_is_found_by_its_code_directory_and_is_no_explanation_family(functions):
    assert INSIGHTS_FUNCTION == "InsightsFunction"
    assert functions[INSIGHTS_FUNCTION]["Metadata"]["Dockerfile"] == "functions/insights/Dockerfile"
    assert INSIGHTS_FUNCTION not in FAMILY_FUNCTIONS.values() and "insights" not in FAMILIES


def test_the_insights_function_has_least_privilege(functions):
    function = functions[INSIGHTS_FUNCTION]
    found = grants(function)
    assert not [g for g in found if "*" in g[0]], "wildcard actions"
    assert found == INSIGHTS_GRANTS
    # No write outside its results; in particular nothing on the input bucket (it would notify itself).
    assert granted(function, lambda action: action.startswith(S3_WRITES)) == {
        ("ResultsBucket", "results/insights/*"), ("ResultsBucket", "errors/insights/*")}


def test_the_insights_function_takes_one_message_at_a_time_from_its_own_queue(template, resources, functions):
    function = functions[INSIGHTS_FUNCTION]["Properties"]
    (source,) = sqs_sources(functions[INSIGHTS_FUNCTION])
    assert source["Queue"] == {"Fn::GetAtt": ["InsightsQueue", "Arn"]}
    assert source["BatchSize"] == 1 and source["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 2 <= source["ScalingConfig"]["MaximumConcurrency"] <= 1000  # Lambda's bounds
    assert (function["PackageType"], function["Timeout"], function["MemorySize"]) == ("Image", 900, 4928)
    variables = {**template["Globals"]["Function"]["Environment"]["Variables"], **function["Environment"]["Variables"]}
    # The queue it sends its parts to is the one it is triggered by.
    assert variables["INSIGHTS_QUEUE_URL"] == {"Ref": "InsightsQueue"}
    assert variables["JOBS_TABLE"] == {"Ref": "JobsTable"}
    assert variables["POWERTOOLS_SERVICE_NAME"] == "explain-insights"
    assert not api_events(functions[INSIGHTS_FUNCTION])  # POST /insights is the light API's route


def test_only_json_specifications_under_incoming_insights_start_insights_jobs(resources):
    configs = resources["InputBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    insights = [c for c in configs if c["Queue"] == {"Fn::GetAtt": ["InsightsQueue", "Arn"]}]
    assert len(insights) == 1 and insights[0]["Event"] == "s3:ObjectCreated:*"
    rules = {rule["Name"]: rule["Value"] for rule in insights[0]["Filter"]["S3Key"]["Rules"]}
    assert rules == {"prefix": "incoming/insights/", "suffix": ".json"}
    # No other queue hears about incoming/insights/ (an image set there would start an explanation).
    others = [rule["Value"] for c in configs if c not in insights for rule in c["Filter"]["S3Key"]["Rules"]
              if rule["Name"] == "prefix"]
    assert others and not [p for p in others if p.startswith("incoming/insights") or "incoming/insights/".startswith(p)]


@pytest.mark.parametrize("function", sorted([*FAMILY_FUNCTIONS.values(), INSIGHTS_FUNCTION]))
def test_queues_outlast_their_function_and_dead_letter_after_max_receive_count(template, resources, functions,
                                                                               function):
    (source,) = sqs_sources(functions[function])
    queue = source["Queue"]["Fn::GetAtt"][0]
    props = resources[queue]["Properties"]
    timeout = functions[function]["Properties"].get("Timeout", template["Globals"]["Function"]["Timeout"])
    # Lambda's advice for SQS sources: a message stays invisible six times the function's timeout,
    # so a retried batch never runs twice at once.
    assert props["VisibilityTimeout"] >= 6 * timeout, (queue, props["VisibilityTimeout"], timeout)
    redrive = props["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    dead_letter = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert resources[dead_letter]["Type"] == "AWS::SQS::Queue"
    assert resources[dead_letter]["Properties"]["MessageRetentionPeriod"] == 1209600  # 14 days, SQS's maximum
    assert template["Outputs"][f"{dead_letter}Url"]["Value"] == {"Ref": dead_letter}


def test_the_input_bucket_waits_for_the_policy_of_every_queue_it_notifies(resources):
    """S3 checks it may send to a queue when the notification is set: the queue policies come first."""
    bucket = resources["InputBucket"]
    notified = {c["Queue"]["Fn::GetAtt"][0] for c in bucket["Properties"]["NotificationConfiguration"][
        "QueueConfigurations"]}
    policies = {lid: r["Properties"] for lid, r in resources.items() if r["Type"] == "AWS::SQS::QueuePolicy"}
    by_queue = {queue["Ref"]: lid for lid, props in policies.items() for queue in props["Queues"]}
    assert notified == set(by_queue) and "InsightsQueue" in notified
    assert set(bucket["DependsOn"]) == {by_queue[queue] for queue in notified}
    for queue in notified:
        (statement,) = policies[by_queue[queue]]["PolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "s3.amazonaws.com"} and statement["Action"] == "sqs:SendMessage"
        assert statement["Resource"] == {"Fn::GetAtt": [queue, "Arn"]}
        assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}


def test_the_local_wiring_notifies_the_insights_queue_of_specifications_only(deployment):
    """On the emulator (devtools.local.aws, wired from this template): a specification reaches the
    insights queue, an image uploaded beside it does not."""
    wiring = deployment.insights_function()
    assert (wiring.logical_id, wiring.module, wiring.family) == (INSIGHTS_FUNCTION, "functions.insights.app", None)
    assert (wiring.queue, wiring.batch_size, wiring.timeout) == ("InsightsQueue", 1, 900)
    assert wiring.environment["INSIGHTS_QUEUE_URL"].endswith("/" + local_name("InsightsQueue"))
    assert wiring.environment["JOBS_TABLE"] == deployment.tables["JobsTable"]
    sqs, s3 = deployment.client("sqs"), deployment.client("s3")
    queue_url = deployment.queue_urls["InsightsQueue"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert int(attributes["VisibilityTimeout"]) >= 6 * wiring.timeout
    assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"] == deployment.queue_arns[
        "InsightsDeadLetterQueue"]
    # The function sends its parts to INSIGHTS_QUEUE_URL: the same queue as the notifications.
    part = json.dumps({"insights_part": {"test": "unit-template"}})
    sqs.send_message(QueueUrl=wiring.environment["INSIGHTS_QUEUE_URL"], MessageBody=part)
    prefix = "incoming/insights/shapes/v1/unit-template/"
    spec, image = prefix + "job.json", prefix + "images/circle/a.png"
    for key in (spec, image, prefix + "notes.JSON.txt"):
        s3.put_object(Bucket=deployment.bucket("InputBucket"), Key=key, Body=b"{}")
    received = []
    for _ in range(5):  # moto delivers notifications synchronously; a few polls gather every message
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        received += batch
        if not batch:
            break
    mine = [m for m in received if m["Body"] == part or any(k.startswith(prefix) for k in notified_keys([m]))]
    try:
        assert notified_keys(mine) == [spec]
        assert [m["Body"] for m in mine].count(part) == 1
    finally:
        for message in received:  # other tests' messages (same emulator) are made visible again
            if message in mine:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            else:
                sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"],
                                              VisibilityTimeout=0)
